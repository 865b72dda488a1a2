//! Plain WebSocket adapter for [wsgate]: JSON frames on the axum server's own port.
//!
//! Browsers connect with `new WebSocket("ws://localhost:3000?token=…")` (or `/ws`, or
//! `/ws/<namespace>` for a gateway's namespace) and talk JSON:
//!
//! - inbound, Nest.js format: `{"event":"showComment","data":{"entryId":2,"commentId":1}}`
//! - inbound, chapter format: `{"type":"showComment","entryId":2,"commentId":1}` (every field
//!   but `type` is the data)
//! - an optional `"id"` (number or string) asks for an ack: `{"event":"ack","id":…,"data":…}`,
//!   or an `exception` carrying the same `id`
//! - outbound: `{"event":E,"data":D}`; errors: `{"event":"exception","data":{"status":"error",…}}`
//!
//! A frame that is not JSON, lacks `event`/`type`, or names an unknown event gets an
//! `exception` and the connection stays open; a frame over the size limit closes it with 1009.
//! A refused handshake is answered with its status (401 for a bad token) and a JSON body
//! `{"status":"error","message":…}`. Requests that are not WebSocket upgrades pass through to
//! the router untouched, so `GET /` still serves a page.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use wsgate::{App, Data, WsResponse, gateway};
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
//! let router = Router::new().route("/", get(|| async { "hello over HTTP" }));
//! let router = app.mount(router, WsAdapter::new());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! // As axum::serve; and quiet connections can sleep (`WsAdapter::hibernate_after`).
//! wsgate_ws::serve(listener, router).await?;
//! # Ok(()) }
//! ```
//!
//! Each connection is one task, run by the session driver of `wsgate-transport` with
//! [`JsonProtocol`]. Its messages are dispatched in arrival order, and up to
//! [`WsAdapter::max_in_flight`] of them run concurrently: acks may complete out of order,
//! replies are never dropped. Past that number the adapter stops reading the socket until a
//! handler finishes, so a flooding client is slowed by TCP backpressure, not buffered.

pub mod codec;
mod session;
mod upgrade;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use wsgate::App;
use wsgate::adapter::Adapter;

pub use codec::{JsonFrames, SessionFrames};
pub use session::{JsonChannel, JsonProtocol};
pub use upgrade::{WsEndpoint, WsLayer, WsService};
/// permessage-deflate's setting ([`WsAdapter::compression`]).
pub use wsgate_transport::rest::resting;
pub use wsgate_transport::{Compression, Serve, serve};

/// The transport name connections of this adapter report.
pub const TRANSPORT: &str = "ws";

/// The plain WebSocket adapter and its limits.
#[derive(Clone, Debug)]
pub struct WsAdapter {
    config: Arc<WsConfig>,
}

#[derive(Clone, Debug)]
pub(crate) struct WsConfig {
    /// The session driver's settings, made from the others when the adapter is mounted: each
    /// connection's task borrows them instead of holding a copy.
    pub(crate) session: wsgate_transport::SessionConfig,
    pub(crate) max_message_size: usize,
    pub(crate) read_buffer_size: usize,
    pub(crate) max_in_flight: usize,
    pub(crate) close_timeout: Duration,
    pub(crate) ping_interval: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) hibernate_after: Option<Duration>,
    pub(crate) compression: Option<wsgate_transport::Compression>,
}

/// After how long quiet a connection sleeps, unless the adapter says otherwise
/// ([`WsAdapter::hibernate_after`]): 15 s, Phoenix's, the same for the Socket.IO adapter.
pub use wsgate_transport::DEFAULT_HIBERNATE_AFTER;

impl Default for WsAdapter {
    fn default() -> Self {
        Self::new()
    }
}

impl WsAdapter {
    /// The adapter with its defaults: 64 KiB messages, 512-byte read buffer, 16 handlers in
    /// flight per connection, a ping every 25 s and a 60 s idle timeout; connections sleep
    /// after 15 s of quiet ([`Self::hibernate_after`]).
    pub fn new() -> Self {
        Self {
            config: Arc::new(WsConfig {
                session: wsgate_transport::SessionConfig {
                    heartbeat: wsgate_transport::Heartbeat::Ping {
                        interval: Duration::ZERO,
                        idle_timeout: Duration::ZERO,
                    },
                    max_in_flight: 0,
                    unjoined_timeout: None,
                    close_timeout: Duration::ZERO,
                    hibernate_after: None,
                },
                max_message_size: 64 * 1024,
                read_buffer_size: 512,
                max_in_flight: 16,
                close_timeout: Duration::from_secs(2),
                ping_interval: Duration::from_secs(25),
                idle_timeout: Duration::from_secs(60),
                hibernate_after: Some(DEFAULT_HIBERNATE_AFTER),
                compression: None,
            }),
        }
    }

    fn config_mut(&mut self) -> &mut WsConfig {
        Arc::make_mut(&mut self.config)
    }

    /// The largest message accepted, in bytes; a larger one closes the connection with 1009.
    #[must_use]
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.config_mut().max_message_size = bytes.max(1);
        self
    }

    /// permessage-deflate (RFC 7692) for clients that offer it (browsers and `ws` do): messages
    /// from [`Compression::threshold`](wsgate_transport::Compression::threshold) bytes up are
    /// compressed, and compressed messages read. Off by default. See
    /// [`wsgate_transport::compression`] for the context takeover choices and their memory.
    #[must_use]
    pub fn compression(mut self, compression: Compression) -> Self {
        self.config_mut().compression = Some(compression);
        self
    }

    /// How many bytes a connection reads straight into a buffer of its own when a frame is
    /// known to be larger than what came (default 512). Otherwise connections read through
    /// their thread's 16 KiB buffer, one system call for a burst of small frames, and keep a
    /// copy of what came. A connection's buffer is released once its frames are taken: an
    /// idle connection holds none. Above 16 KiB, every read is straight into the
    /// connection's own buffer of this size: for traffic of large messages.
    #[must_use]
    pub fn read_buffer_size(mut self, bytes: usize) -> Self {
        self.config_mut().read_buffer_size = bytes.max(64);
        self
    }

    /// How many messages of one connection may be handled at once (at least 1). Default 16.
    /// With 1, each message's reply is sent before the next message is read.
    #[must_use]
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.config_mut().max_in_flight = n.max(1);
        self
    }

    /// How long a closing connection waits for the client's close frame. Default 2 s.
    #[must_use]
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.config_mut().close_timeout = timeout;
        self
    }

    /// How often the server pings each connection. Default 25 s (as Socket.IO). Browsers and
    /// WebSocket libraries answer pings on their own; the traffic also keeps proxies from
    /// dropping quiet connections.
    #[must_use]
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.config_mut().ping_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// How long a connection may stay silent (no message, no pong) before the server closes it
    /// with 1001 `idle timeout`: half-open connections (a client that vanished without a FIN)
    /// don't pile up. Checked at each ping, so the close comes at most one ping interval
    /// later. Default 60 s. A write to a client that takes nothing for this long drops the
    /// connection too.
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.config_mut().idle_timeout = timeout;
        self
    }

    /// After how long with no message either way a connection sleeps: its task ends, and its
    /// state and socket wait on the process's resting thread until the client sends, the
    /// server queues something for it or closes it, or its ping is due; then a new task goes
    /// on with it, and the client sees no difference. A sleeping connection holds no task
    /// (512 B) and no registration with tokio's reactor (256 B), and about 220 B of sleeping
    /// state instead (its own, a slot and a waker on the resting thread). It sleeps after one
    /// to two of these of quiet; woken by its ping alone, it waits awake for the pong and
    /// sleeps again. 15 s by default,
    /// as Phoenix's `hibernate_after`; `None` keeps every connection awake.
    ///
    /// What the sleepers free goes back to the system as the allocator gives it back: glibc's
    /// malloc and jemalloc with its background threads (the blog's) do; mimalloc keeps it until
    /// its thread allocates again, for the connections that come or wake later
    /// (docs/PERFORMANCE.md). A wake-up costs two `epoll_ctl` and a task spawned. Only
    /// connections served by [`wsgate_transport::serve`] can sleep (it hands the TCP stream to
    /// the websocket itself); over `axum::serve` this does nothing.
    #[must_use]
    pub fn hibernate_after(mut self, after: Option<Duration>) -> Self {
        self.config_mut().hibernate_after = after;
        self
    }

    /// The tower layer serving `app` over this adapter, for services other than a `Router`.
    pub fn layer(mut self, app: App) -> WsLayer {
        let config = self.config_mut();
        config.session = wsgate_transport::SessionConfig {
            heartbeat: wsgate_transport::Heartbeat::Ping {
                interval: config.ping_interval,
                idle_timeout: config.idle_timeout,
            },
            max_in_flight: config.max_in_flight,
            unjoined_timeout: None,
            close_timeout: config.close_timeout,
            hibernate_after: config.hibernate_after,
        };
        WsLayer::new(WsEndpoint::new(app, self.config))
    }
}

impl Adapter<Router> for WsAdapter {
    /// Serves WebSocket upgrades on `/`, `/ws` and `/ws/<namespace>` (and on `/<namespace>`
    /// for the namespaces the gateways declare); every other request goes to `router`.
    fn mount(self, app: App, router: Router) -> Router {
        let service = tower::Layer::layer(&self.layer(app), router);
        Router::new().fallback_service(service)
    }
}
