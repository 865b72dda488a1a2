//! What wsgate's adapters share, so that a third adapter has it too: the HTTP upgrade, the
//! handshake from an HTTP request, and one session driver for every transport.
//!
//! - [`upgrade`]: [`is_upgrade`], [`switch_protocols`] (RFC 6455's `101`), [`refuse`] (a
//!   refused handshake as an HTTP response), [`Origin`] (what a request tells a handshake).
//! - [`endpoint`]: an adapter in front of a router ([`Endpoint`], [`EndpointLayer`]): the
//!   requests it takes, the rest passed on.
//! - [`session`]: the driver. A [`Protocol`] reads frames into [`Action`]s and encodes
//!   queued items; the driver owns the rest: the messages in flight, batched writes and the
//!   stall guard, draining before close, the heartbeat and the close codes, over a websocket
//!   or a [`PollLink`]. `wsgate-ws` (JSON frames) and `wsgate-socketio` (Engine.IO and
//!   Socket.IO, with long-polling) are two protocols over it.
//! - [`parts`]: the pieces it is made of, for an adapter with a driver of its own.
//! - [`timer`]: the coarse timer every session's heartbeat waits on ([`timer::Deadline`],
//!   16 B, where a `tokio::time::Sleep` takes 112).
//! - [`serve`](serve()): a router on a TCP listener, as `axum::serve`, with each websocket
//!   over the TCP stream itself.
//! - [`rest`]: quiet sessions asleep with no task of their own, on one thread of the
//!   process ([`Asleep`], [`SessionConfig::hibernate_after`]).
//! - [`websocket`]: the server's side of RFC 6455 framing the sessions run on, holding no
//!   buffer while idle, with [`compression`] (permessage-deflate, RFC 7692).

pub mod compression;
pub mod endpoint;
pub mod parts;
pub mod rest;
mod serve;
pub mod session;
pub mod timer;
pub mod upgrade;
pub mod websocket;

pub use compression::{Compression, Negotiated};
pub use endpoint::{Endpoint, EndpointLayer, EndpointService};
pub use serve::{Serve, serve};
pub use session::{
    Action, Asleep, BoxFuture, Channels, DEFAULT_HIBERNATE_AFTER, Heartbeat, Incoming, Link,
    LinkEvent, PollLink, Protocol, SessionConfig, SessionEnd, Setup, Socket, Wire, finish,
    open_socket, resume, run,
};
pub use upgrade::{Origin, PackedOrigin, Switched, is_upgrade, refuse, switch_protocols};
pub use websocket::WebSocket;
