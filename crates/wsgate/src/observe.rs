//! Observers: what metrics and audit code see of connections and messages.

use std::time::Duration;

use crate::connection::Connection;
use crate::handshake::Refusal;
use crate::names::EventName;

/// How a message ended, as an [`Observer`] sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The handler ran and its reply (or nothing) was delivered.
    Ok,
    /// A guard, an extractor or the handler failed; the client got an `exception`.
    Error,
    /// No handler serves the event in the connection's namespace.
    Unrouted,
    /// The frame could not be decoded into a message (not JSON, no event name).
    Undecodable,
    /// The message was refused unhandled: over the connection's rate, or the connection was
    /// closing. The client got an `exception` saying which.
    Refused,
}

impl Outcome {
    /// A short lowercase name, for metric labels: `ok`, `error`, `unrouted`, `undecodable`,
    /// `refused`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Unrouted => "unrouted",
            Self::Undecodable => "undecodable",
            Self::Refused => "refused",
        }
    }
}

/// Sees the life of connections and messages, for metrics or audit logs.
///
/// Registered with [`AppBuilder::observer`](crate::AppBuilder::observer); every method has an
/// empty default. The methods run inline on the connection's task, so they must be quick and
/// must not block: count, don't do I/O.
///
/// Event names come from clients. [`Observer::message`] receives the event only when a handler
/// serves it (`Some`), so an observer that labels metrics by event cannot be made to create a
/// series per name a client invents.
pub trait Observer: Send + Sync + 'static {
    /// A handshake passed the middleware and the connection is open.
    fn connection_opened(&self, conn: &Connection) {
        let _ = conn;
    }

    /// A connection closed, whatever the reason.
    fn connection_closed(&self, conn: &Connection) {
        let _ = conn;
    }

    /// A handshake over `transport` was refused by middleware (or named no namespace).
    fn handshake_refused(&self, transport: &'static str, refusal: &Refusal) {
        let _ = (transport, refusal);
    }

    /// A message was handled: `event` is `None` when no handler serves it (or it could not be
    /// decoded); `elapsed` spans guards, extraction, the handler and the exception filters,
    /// not the queueing or writing of the answer.
    fn message(
        &self,
        conn: &Connection,
        event: Option<&EventName>,
        outcome: Outcome,
        elapsed: Duration,
    ) {
        let _ = (conn, event, outcome, elapsed);
    }
}
