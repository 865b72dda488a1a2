//! Socket.IO adapter for [wsgate]: the same gateways for `socket.io-client` 4.x, over HTTP
//! long-polling and websocket, at `/socket.io/` of the axum server that serves your REST API
//! (and, beside it, the plain WebSocket adapter).
//!
//! - **Transports.** wsgate's own Engine.IO v4 server: HTTP long-polling (the client's
//!   default start), websocket (opened directly with `transports: ["websocket"]`, or upgraded
//!   to from long-polling). One task per session whatever its transport: answers written in
//!   batches, a few KiB per idle connection, the same limits over every transport.
//! - **Handshake.** The connection middleware sees the Socket.IO `auth` payload, the query
//!   (`auth_token=…`), the headers and the peer. A refusal reaches the client as
//!   `connect_error` with the reason as its message.
//! - **Namespaces.** Each gateway namespace is a Socket.IO namespace; others are refused
//!   (`connect_error` `Invalid namespace`). Several namespaces share one session.
//! - **Messages.** `socket.emit("indexComment", data)` calls the handler with `data` (with
//!   several arguments, their array, as Nest's `IoAdapter` does; [`wsgate::Args`] reads them
//!   as a tuple whatever their count). A `Buffer` is a binary attachment: a `bytes::Bytes`
//!   field reads it in place, [`wsgate::Binary`] lists them all. A `WsResponse` is
//!   emitted as its event; a plain value goes to the client's ack callback
//!   (`emitWithAck` resolves with it); errors are `exception` events, as in Nest's `IoAdapter`.
//!   Outbound, `Args((a, b))` is several arguments and each `Bytes` a binary attachment
//!   (`45<n>-`/`46<n>-` packets and binary frames, `b<base64>` packets over long-polling),
//!   in events, acks and the server's requests.
//! - **Server handle.** Emits to connections, rooms and everyone reach Socket.IO clients and
//!   plain WebSocket clients alike: rooms live in wsgate's core.
//!
//! ```no_run
//! use axum::Router;
//! use wsgate::{App, Data, WsResponse, gateway};
//! use wsgate_socketio::SocketIoAdapter;
//! use wsgate_ws::WsAdapter;
//!
//! struct EchoGateway;
//!
//! #[gateway]
//! impl EchoGateway {
//!     #[subscribe_message("echo")]
//!     async fn echo(&self, Data(text): Data<String>) -> WsResponse<String> {
//!         WsResponse::new("echo", text)
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let app = App::builder().gateway(EchoGateway).build().await?;
//! // Both transports on one port: `io("http://host")` and `new WebSocket("ws://host/")`.
//! let router = app.mount(Router::new(), WsAdapter::new());
//! let router = app.mount(router, SocketIoAdapter::new());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, router).await?;
//! # Ok(()) }
//! ```
//!
//! The handlers of one connection run concurrently; acks correlate by id, and replies are never
//! dropped. At most [`SocketIoAdapter::max_in_flight`] messages of a session are handled at
//! once: over a websocket the socket is not read meanwhile (TCP backpressure), over
//! long-polling the `POST` that carries the next one is not answered (the client posts one at
//! a time). A client that takes nothing for the ping timeout is dropped; over long-polling,
//! one that stops polling fills its outbound queue and is disconnected as too slow.

mod engine;
mod message;
mod packet;

use std::time::Duration;

use axum::Router;
use wsgate::App;
use wsgate::adapter::Adapter;

/// permessage-deflate's setting ([`SocketIoAdapter::compression`]).
pub use wsgate_transport::Compression;
/// After how long quiet a session over a websocket sleeps unless the adapter says otherwise
/// ([`SocketIoAdapter::hibernate_after`]): 15 s, the same for the plain WebSocket adapter.
pub use wsgate_transport::DEFAULT_HIBERNATE_AFTER;
/// How many sessions of the process are asleep, as of the resting thread's last turn.
pub use wsgate_transport::rest::resting;
pub use wsgate_transport::{Serve, serve};

/// The transport name connections of this adapter report.
pub const TRANSPORT: &str = "socket.io";

/// The Socket.IO adapter and its settings.
#[derive(Clone, Debug)]
pub struct SocketIoAdapter {
    ping_interval: Duration,
    ping_timeout: Duration,
    max_payload: u64,
    ws_read_buffer_size: usize,
    connect_timeout: Duration,
    max_in_flight: usize,
    compression: Option<wsgate_transport::Compression>,
    hibernate_after: Option<Duration>,
}

impl Default for SocketIoAdapter {
    fn default() -> Self {
        Self::new()
    }
}

impl SocketIoAdapter {
    /// The adapter with Socket.IO's usual timings (ping every 25 s, 20 s to answer), 64 KiB
    /// messages, a 512-byte websocket read buffer and 16 messages in flight per session;
    /// sessions over a websocket sleep after 15 s of quiet ([`Self::hibernate_after`]).
    pub fn new() -> Self {
        Self {
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
            max_payload: 64 * 1024,
            ws_read_buffer_size: 512,
            connect_timeout: Duration::from_secs(45),
            max_in_flight: 16,
            compression: None,
            hibernate_after: Some(DEFAULT_HIBERNATE_AFTER),
        }
    }

    /// After how long with no message either way a session over a websocket sleeps, as
    /// `wsgate_ws::WsAdapter::hibernate_after` (pings and pongs do not count): its task ends,
    /// its state and socket wait on the process's resting thread until the client sends, the
    /// server queues something for one of its namespaces, or its ping is due. 15 s by
    /// default; `None` keeps every session awake. See the plain WebSocket adapter's setting for
    /// what it saves and costs. Only sessions served by [`serve`] sleep, and only over a websocket
    /// (opened directly or upgraded to); long-polling sessions stay awake.
    #[must_use]
    pub fn hibernate_after(mut self, after: Option<Duration>) -> Self {
        self.hibernate_after = after;
        self
    }

    /// How often the server pings each client.
    #[must_use]
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval;
        self
    }

    /// How long a client has to answer a ping before it is disconnected.
    #[must_use]
    pub fn ping_timeout(mut self, timeout: Duration) -> Self {
        self.ping_timeout = timeout;
        self
    }

    /// The largest packet accepted, in bytes (binary attachments included; over long-polling,
    /// the body of one `POST`); a larger one disconnects the client.
    #[must_use]
    pub fn max_payload(mut self, bytes: u64) -> Self {
        self.max_payload = bytes;
        self
    }

    /// permessage-deflate (RFC 7692) on the websocket transport, for clients that offer it
    /// (`socket.io-client` in browsers and on Node.js does, through `ws`'s
    /// `perMessageDeflate`), as the plain WebSocket adapter's `compression` does. Off by default.
    /// Long-polling bodies are not compressed here (HTTP compression is the router's).
    #[must_use]
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = Some(compression);
        self
    }

    /// How many bytes the websocket transport reads straight into a connection's own buffer
    /// when a frame is known to be larger than what came (default 512); otherwise reads go
    /// through the thread's 16 KiB buffer, and above 16 KiB always straight in. Released once
    /// read, so that an idle connection holds no buffer (as
    /// `wsgate_ws::WsAdapter::read_buffer_size`).
    #[must_use]
    pub fn ws_read_buffer_size(mut self, bytes: usize) -> Self {
        self.ws_read_buffer_size = bytes;
        self
    }

    /// How long a client has to connect to a namespace once its transport is open.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How many messages of one session (all its namespaces together) may be handled at once
    /// (at least 1); past that, the adapter reads nothing more of the client until a handler
    /// finishes (over long-polling, the `POST` carrying the next message waits). Default 16,
    /// as the plain WebSocket adapter.
    #[must_use]
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }
}

impl Adapter<Router> for SocketIoAdapter {
    /// Serves Socket.IO at `/socket.io/`; every other request goes to `router`.
    fn mount(self, app: App, router: Router) -> Router {
        let engine = engine::EngineEndpoint::new(
            app,
            engine::EngineConfig {
                ping_interval: self.ping_interval,
                ping_timeout: self.ping_timeout,
                max_payload: usize::try_from(self.max_payload).unwrap_or(usize::MAX),
                read_buffer_size: self.ws_read_buffer_size,
                connect_timeout: self.connect_timeout,
                max_in_flight: self.max_in_flight,
                compression: self.compression,
                hibernate_after: self.hibernate_after,
            },
        );
        let layer = wsgate_transport::EndpointLayer::new(engine);
        Router::new().fallback_service(tower::Layer::layer(&layer, router))
    }
}
