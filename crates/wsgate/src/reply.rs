//! What handlers return: `WsResponse`, ack values, nothing, or an error.

use std::sync::Arc;

use serde::Serialize;

use crate::exception::{WsError, WsException};
use crate::message::{Emission, Payload, to_payload};
use crate::names::EventName;

/// A handler's outcome, as the core delivers it.
#[derive(Debug)]
pub enum Reply {
    /// Nothing is sent.
    Nothing,
    /// Sent to the client's acknowledgement, if it asked for one; otherwise dropped.
    Ack(Payload),
    /// Emitted to the client as an event.
    Event(Arc<Emission>),
    /// Goes through the exception filters.
    Error(WsError),
}

/// Turns a handler's return value into a [`Reply`] (axum's `IntoResponse`).
#[diagnostic::on_unimplemented(
    note = "a handler returns `()`, `WsResponse<T>`, `Ack<T>`, `serde_json::Value`, `WsException`, or a `Result` or `Option` of those"
)]
pub trait IntoReply {
    /// Converts the value.
    fn into_reply(self) -> Reply;
}

impl IntoReply for Reply {
    fn into_reply(self) -> Reply {
        self
    }
}

impl IntoReply for () {
    fn into_reply(self) -> Reply {
        Reply::Nothing
    }
}

/// An event to emit back to the client: Nest's `WsResponse { event, data }`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WsResponse<T> {
    /// The event name the client listens to.
    pub event: EventName,
    /// The data.
    pub data: T,
}

impl<T> WsResponse<T> {
    /// A response of `event` with `data`.
    pub fn new(event: impl Into<EventName>, data: T) -> Self {
        Self { event: event.into(), data }
    }
}

impl<T: Serialize> IntoReply for WsResponse<T> {
    fn into_reply(self) -> Reply {
        match to_payload(&self.data) {
            Ok(data) => Reply::Event(Emission::new(self.event, data)),
            Err(e) => Reply::Error(e.into()),
        }
    }
}

/// A value for the client's acknowledgement (Socket.IO `emitWithAck`, or `id` over WebSocket).
#[derive(Clone, Debug, PartialEq)]
pub struct Ack<T>(pub T);

fn ack_of<T: Serialize + ?Sized>(value: &T) -> Reply {
    match to_payload(value) {
        Ok(data) => Reply::Ack(data),
        Err(e) => Reply::Error(e.into()),
    }
}

impl<T: Serialize> IntoReply for Ack<T> {
    fn into_reply(self) -> Reply {
        ack_of(&self.0)
    }
}

macro_rules! ack_values {
    ($($t:ty),*) => {$(
        impl IntoReply for $t {
            fn into_reply(self) -> Reply {
                ack_of(&self)
            }
        }
    )*};
}
ack_values!(serde_json::Value, String, &'static str, bool, i64, u64, f64);

impl IntoReply for WsException {
    fn into_reply(self) -> Reply {
        Reply::Error(self.into())
    }
}

impl IntoReply for WsError {
    fn into_reply(self) -> Reply {
        Reply::Error(self)
    }
}

impl<T: IntoReply, E: IntoReply> IntoReply for Result<T, E> {
    fn into_reply(self) -> Reply {
        match self {
            Ok(v) => v.into_reply(),
            Err(e) => e.into_reply(),
        }
    }
}

impl<T: IntoReply> IntoReply for Option<T> {
    fn into_reply(self) -> Reply {
        self.map_or(Reply::Nothing, IntoReply::into_reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_by_type() {
        assert!(matches!(().into_reply(), Reply::Nothing));
        assert!(matches!(None::<WsResponse<u8>>.into_reply(), Reply::Nothing));
        match WsResponse::new("x", vec![1, 2]).into_reply() {
            Reply::Event(e) => {
                assert_eq!(e.event().as_str(), "x");
                assert_eq!(e.data().get(), "[1,2]");
            }
            other => panic!("{other:?}"),
        }
        match Ack(3).into_reply() {
            Reply::Ack(p) => assert_eq!(p.get(), "3"),
            other => panic!("{other:?}"),
        }
        let err: Result<(), WsException> = Err(WsException::new("no"));
        assert!(matches!(err.into_reply(), Reply::Error(WsError::Exception(_))));
    }
}
