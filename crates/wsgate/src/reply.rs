//! What handlers return: `WsResponse`, ack values, nothing, or an error.

use std::sync::Arc;

use serde::Serialize;

use crate::args::{Extras, raw_payload, to_args};
use crate::exception::{WsError, WsException};
use crate::message::{Emission, Payload};
use crate::names::EventName;

/// A handler's outcome, as the core delivers it.
#[derive(Debug)]
pub enum Reply {
    /// Nothing is sent.
    Nothing,
    /// Sent to the client's acknowledgement, if it asked for one; otherwise dropped.
    Ack(Payload),
    /// As [`Reply::Ack`], with several arguments ([`Args`](crate::Args)) or binary
    /// attachments.
    AckWith(Payload, Extras),
    /// Emitted to the client as an event.
    Event(Arc<Emission>),
    /// Goes through the exception filters.
    Error(WsError),
}

/// Turns a handler's return value into a [`Reply`] (axum's `IntoResponse`).
///
/// What goes to the client's acknowledgement: any value wrapped in [`Ack`], and, unwrapped,
/// the values serde serialises out of the box: `serde_json::Value`, strings, numbers, `bool`,
/// `char`, and `Vec`, `VecDeque`, slices in a `Box`, arrays, `HashMap`, `BTreeMap`,
/// `HashSet` and `BTreeSet` of serializable values. A type of your own goes to the ack as
/// `Ack(value)` (Rust's coherence rules keep a blanket impl for every `Serialize` type from
/// living beside the impls for `()`, `Result` and `Option`).
#[diagnostic::on_unimplemented(
    note = "a handler returns `()`, `WsResponse<T>`, `Ack<T>` (any serializable `T`), a string, number, `bool`, `serde_json::Value`, a collection (`Vec<T>`, maps, sets) of serializable values, `WsException`, or a `Result` or `Option` of those"
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

/// `data` may be [`Args`](crate::Args) (several arguments) and hold `Bytes` (binary
/// attachments). Raw JSON (`Box<RawValue>`, a relay's data) is sent as it is, not serialised
/// again.
impl<T: Serialize + 'static> IntoReply for WsResponse<T> {
    fn into_reply(self) -> Reply {
        let made = match raw_payload(self.data) {
            Ok(raw) => Ok(Emission::new(self.event, raw)),
            Err(data) => Emission::serialize(self.event, &data),
        };
        match made {
            Ok(emission) => Reply::Event(emission),
            Err(e) => Reply::Error(e.into()),
        }
    }
}

/// A value for the client's acknowledgement (Socket.IO `emitWithAck`, or `id` over WebSocket).
///
/// `Ack(Args((a, b)))` answers with several arguments (Socket.IO's `callback(a, b)`); `Bytes`
/// in the value are binary attachments.
#[derive(Clone, Debug, PartialEq)]
pub struct Ack<T>(pub T);

fn ack_of<T: Serialize + ?Sized>(value: &T) -> Reply {
    match to_args(value) {
        Ok((data, extras)) if extras.is_plain() => Reply::Ack(data),
        Ok((data, extras)) => Reply::AckWith(data, extras),
        Err(e) => Reply::Error(e.into()),
    }
}

/// Raw JSON (`Box<RawValue>`) is sent as it is.
impl<T: Serialize + 'static> IntoReply for Ack<T> {
    fn into_reply(self) -> Reply {
        match raw_payload(self.0) {
            Ok(raw) => Reply::Ack(raw),
            Err(value) => ack_of(&value),
        }
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
ack_values!(serde_json::Value, String, &'static str, std::borrow::Cow<'static, str>, bool, char);
ack_values!(i8, i16, i32, i64, i128, isize, u8, u16, u32, u64, u128, usize, f32, f64);

macro_rules! ack_collections {
    ($($t:ty => [$($bound:tt)*]),* $(,)?) => {$(
        impl<$($bound)*> IntoReply for $t {
            fn into_reply(self) -> Reply {
                ack_of(&self)
            }
        }
    )*};
}
ack_collections!(
    Vec<T> => [T: Serialize],
    Box<[T]> => [T: Serialize],
    std::collections::VecDeque<T> => [T: Serialize],
    std::collections::BTreeSet<T> => [T: Serialize],
    std::collections::HashSet<T, S> => [T: Serialize, S],
    std::collections::BTreeMap<K, V> => [K: Serialize, V: Serialize],
    std::collections::HashMap<K, V, S> => [K: Serialize, V: Serialize, S],
);

/// Several arguments for the ack: `callback(a, b)`.
impl<T: Serialize> IntoReply for crate::Args<T> {
    fn into_reply(self) -> Reply {
        ack_of(&self)
    }
}

/// Bytes for the ack, as a binary attachment.
impl IntoReply for bytes::Bytes {
    fn into_reply(self) -> Reply {
        ack_of(&self)
    }
}

impl<T: Serialize, const N: usize> IntoReply for [T; N] {
    fn into_reply(self) -> Reply {
        ack_of(&self[..])
    }
}

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
        for (reply, json) in [
            (vec![1u32, 2].into_reply(), "[1,2]"),
            ([true; 2].into_reply(), "[true,true]"),
            (7u32.into_reply(), "7"),
            ('x'.into_reply(), "\"x\""),
            (std::collections::BTreeMap::from([("a", 1)]).into_reply(), r#"{"a":1}"#),
        ] {
            match reply {
                Reply::Ack(p) => assert_eq!(p.get(), json),
                other => panic!("{other:?}"),
            }
        }
        match crate::Args((1, bytes::Bytes::from_static(b"x"))).into_reply() {
            Reply::AckWith(p, extras) => {
                assert_eq!(p.get(), r#"[1,{"_placeholder":true,"num":0}]"#);
                assert_eq!(extras.arity, crate::args::Arity::Several);
                assert_eq!(extras.binary, [bytes::Bytes::from_static(b"x")]);
            }
            other => panic!("{other:?}"),
        }
        let err: Result<(), WsException> = Err(WsException::new("no"));
        assert!(matches!(err.into_reply(), Reply::Error(WsError::Exception(_))));
    }
}
