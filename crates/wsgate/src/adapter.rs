//! The `Adapter` trait: how a transport carries gateways (Nest's `WebSocketAdapter`).
//!
//! An adapter needs only the public API:
//! 1. build a [`Handshake`](crate::Handshake) from the upgrade request and call
//!    [`App::handshake`]; a [`Refusal`](crate::Refusal) is answered in the transport's terms;
//! 2. after the upgrade, [`Accepted::open`](crate::Accepted::open) gives the
//!    [`Connection`](crate::Connection) and its outbound queue;
//! 3. decode each frame into an [`Inbound`](crate::Inbound) and call [`App::dispatch`], or
//!    [`App::reject`] for frames that don't decode; a transport that writes answers from the
//!    message's own task calls [`App::dispatch_answer`] instead, writing an answer itself only
//!    when [`Connection::all_written`](crate::Connection::all_written) (reporting what it
//!    writes from the queue with [`OutboundRx::written`](crate::OutboundRx::written)), and
//!    queueing it otherwise;
//! 4. write what the queue yields: [`Outbound`](crate::Outbound) events (encoded once per
//!    format with [`Emission::encoded`](crate::Emission::encoded)), acks, exceptions, closes;
//!    and close when [`Connection::closed`](crate::Connection::closed) resolves;
//! 5. call [`App::disconnect`] when the socket ends.

use crate::app::App;

/// Mounts a transport on a target, such as an axum `Router`.
pub trait Adapter<Target> {
    /// Returns `target` serving `app`'s gateways over this transport.
    fn mount(self, app: App, target: Target) -> Target;
}
