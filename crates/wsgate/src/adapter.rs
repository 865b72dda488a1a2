//! What a transport implements: the [`Adapter`] trait and the session API it drives (Nest's
//! `WebSocketAdapter`). Gateway authors need none of it; the crate root is theirs.
//!
//! An adapter needs only this public API:
//! 1. build a [`Handshake`](crate::Handshake) from the upgrade request and call
//!    [`App::handshake`]; a [`Refusal`](crate::Refusal) is answered in the transport's terms;
//! 2. after the upgrade, [`Accepted::open`] gives the [`Connection`](crate::Connection) and
//!    its outbound queue, the [`OutboundRx`]; dropping it lets the connection go, whatever
//!    ended the session (its rooms, its place in the server's maps, its address's slot);
//! 3. decode each frame into an [`Inbound`] and call [`App::dispatch`], or [`App::reject`]
//!    for frames that don't decode;
//! 4. write what the queue yields, each [`Outbound`] item: events (encoded once per wire
//!    format with [`Emission::encoded`]; [`Outbound::emissions`] lists them, several for a
//!    room's held broadcasts), the [`Direct`] answers to one message (its ack or its
//!    exception); and close when
//!    [`Connection::closed`](crate::Connection::closed) resolves;
//! 5. call [`App::disconnect`] when the socket ends, for the `on_disconnect` hooks;
//! 6. optionally, poll the session inside [`cork`]: a client's burst of broadcasts to a room
//!    then reaches each member in one go (one wake-up, one write) instead of one by one.
//! 7. optionally, handle the frames of one read inside [`in_read_batch`]: their rate limit
//!    then reads the clock once for all of them.
//!
//! A message's outcome travels one way: the handler's return value becomes a
//! [`Reply`](crate::Reply) ([`IntoReply`](crate::IntoReply)), which the core queues as one
//! [`Outbound`] item (or nothing).

pub use crate::app::{Accepted, Departure, Dispatching};
pub use crate::args::{Arity, Extras, to_args};
pub use crate::connection::OutboundRx;
pub use crate::cork::{Corked, cork};
pub use crate::extract::json_error_message;
pub use crate::limit::in_read_batch;
pub use crate::message::{
    Direct, Emission, Events, Inbound, Outbound, Payload, WireFormat, json_str_len, null_payload,
    push_json_str, to_payload,
};

use crate::app::App;

/// Mounts a transport on a target, such as an axum `Router`.
pub trait Adapter<Target> {
    /// Returns `target` serving `app`'s gateways over this transport.
    fn mount(self, app: App, target: Target) -> Target;
}
