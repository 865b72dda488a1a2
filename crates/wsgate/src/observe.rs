//! Observers: what metrics and audit code see of connections and messages.

use std::time::Duration;

use serde_json::value::RawValue;

use crate::connection::Connection;
use crate::handshake::Refusal;
use crate::message::Emission;
use crate::names::{EventName, RoomId};
use crate::server::Server;

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
/// series per name a client invents. [`Observer::event_received`] and
/// [`Observer::event_sent`] see every event with its data, for tools that show traffic (an
/// admin console): an observer that keeps them must bound what it keeps.
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

    /// A client sent `event` with `data`, before it is routed (an unrouted event too; not a
    /// frame that could not be decoded, nor a message refused over the rate).
    fn event_received(&self, conn: &Connection, event: &EventName, data: &RawValue) {
        let _ = (conn, event, data);
    }

    /// An event is queued for `conn` (or dropped, if it was volatile and the queue full): an emit to it, to one of its rooms or namespace, or an
    /// event a handler answered with. Acks and exceptions are answers, not events: not seen.
    fn event_sent(&self, conn: &Connection, emission: &Emission) {
        let _ = (conn, emission);
    }

    /// `conn` joined `room`.
    fn room_joined(&self, conn: &Connection, room: &RoomId) {
        let _ = (conn, room);
    }

    /// `conn` left `room` (a connection that closes leaves its rooms without this call).
    fn room_left(&self, conn: &Connection, room: &RoomId) {
        let _ = (conn, room);
    }

    /// Another instance sent `data` on `topic` with [`Server::signal`].
    fn signal(&self, server: &Server, topic: &str, data: &RawValue) {
        let _ = (server, topic, data);
    }
}
