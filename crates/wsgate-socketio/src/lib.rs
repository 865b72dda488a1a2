//! Socket.IO adapter for [wsgate], built on [socketioxide]: the same gateways for
//! `socket.io-client` 4.x, over HTTP long-polling and websocket, at `/socket.io/` of the axum
//! server that serves your REST API (and, beside it, the plain WebSocket adapter).
//!
//! - **Handshake.** The connection middleware sees the Socket.IO `auth` payload, the query
//!   (`auth_token=…`), the headers and the peer. A refusal reaches the client as
//!   `connect_error` with the reason as its message.
//! - **Namespaces.** Each gateway namespace is a Socket.IO namespace; others are refused with
//!   socketioxide's `Invalid namespace`.
//! - **Messages.** `socket.emit("indexComment", data)` calls the handler with `data` (with
//!   several arguments, their array, as Nest's `IoAdapter` does) and binary attachments as
//!   [`wsgate::Binary`]. A `WsResponse` is
//!   emitted as its event; a plain value goes to the client's ack callback
//!   (`emitWithAck` resolves with it); errors are `exception` events, as in Nest's `IoAdapter`.
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
//! socketioxide runs each message's handler as its own task, so the handlers of one Socket.IO
//! connection run concurrently, without the per-connection bound of the plain WebSocket
//! adapter; acks correlate by id, and replies are never dropped.

mod message;
mod session;

use std::time::Duration;

use axum::Router;
use socketioxide::SocketIo;
use socketioxide::handler::ConnectHandler;
use wsgate::{Adapter, App};

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
    max_buffer_size: usize,
}

impl Default for SocketIoAdapter {
    fn default() -> Self {
        Self::new()
    }
}

impl SocketIoAdapter {
    /// The adapter with Socket.IO's usual timings (ping every 25 s, 20 s to answer), 64 KiB
    /// messages, a 512-byte websocket read buffer and 1 024 packets buffered per connection.
    pub fn new() -> Self {
        Self {
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
            max_payload: 64 * 1024,
            ws_read_buffer_size: 512,
            connect_timeout: Duration::from_secs(45),
            max_buffer_size: 1024,
        }
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

    /// The largest packet accepted, in bytes; a larger one disconnects the client.
    #[must_use]
    pub fn max_payload(mut self, bytes: u64) -> Self {
        self.max_payload = bytes;
        self
    }

    /// The websocket transport's read buffer per connection.
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

    /// How many packets may wait to be written to one connection; past that, the client counts
    /// as too slow and is disconnected. socketioxide's default (128) is too small for a client
    /// that pipelines: a burst of 100 messages whose handlers each emit one event and answer
    /// with another overflows it. The buffer grows as used, so an idle connection holds none.
    #[must_use]
    pub fn max_buffer_size(mut self, packets: usize) -> Self {
        self.max_buffer_size = packets;
        self
    }

    /// Builds the socketioxide instance serving `app`'s namespaces.
    fn build(&self, app: &App) -> (socketioxide::layer::SocketIoLayer, SocketIo) {
        let (layer, io) = SocketIo::builder()
            .ping_interval(self.ping_interval)
            .ping_timeout(self.ping_timeout)
            .max_payload(self.max_payload)
            .ws_read_buffer_size(self.ws_read_buffer_size)
            .connect_timeout(self.connect_timeout)
            .max_buffer_size(self.max_buffer_size)
            .build_layer();
        for namespace in app.namespaces() {
            let on_connect = session::on_connect(app.clone());
            let middleware = session::middleware(app.clone(), namespace.clone(), self.max_payload);
            io.ns(namespace.as_str().to_owned(), on_connect.with(middleware));
        }
        (layer, io)
    }
}

impl Adapter<Router> for SocketIoAdapter {
    /// Serves Socket.IO at `/socket.io/`; every other request goes to `router`.
    fn mount(self, app: App, router: Router) -> Router {
        let (layer, _io) = self.build(&app);
        router.layer(layer)
    }
}
