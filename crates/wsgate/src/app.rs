//! The app: gateways routed by namespace and event, and the session API adapters drive.

use std::collections::hash_map::Entry;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use http::StatusCode;
use serde_json::json;
use tracing::Instrument;

use crate::args::Extras;
use crate::connection::{Connection, OutboundRx, Setup};
use crate::describe::{Description, HandlerDescription, NamespaceDescription, PushDescription};
use crate::exception::{ExceptionContext, ExceptionFilter, WsError, WsException, render};
use crate::extract::MessageContext;
use crate::gateway::{DynGateway, Gateway, Routes};
use crate::guard::DynGuard;
use crate::handler::ErasedHandler;
use crate::handshake::{ConnectMiddleware, DynMiddleware, Handshake, Refusal};
use crate::interceptor::{DynInterceptor, Interceptor, Next};
use crate::limit::{Admission, PeerSlot, RateLimit, TOO_MANY_CONNECTIONS};
use crate::message::{CloseReason, Direct, Inbound, Outbound, to_payload};
use crate::names::{ConnectionId, EventName, Namespace};
use crate::observe::{Observer, Outcome};
use crate::presence::{DiffFormat, PresenceConfig, PresenceDiff};
use crate::recovery::{Recovery, SessionRequest};
use crate::reply::Reply;
use crate::server::Server;

/// Settings shared by every adapter.
#[derive(Clone, Debug)]
pub struct AppConfig {
    /// Capacity of each connection's outbound queue. Replies wait for room; emits and
    /// broadcasts that find it full disconnect the client as too slow. Default 256.
    pub outbound_capacity: usize,
    /// The message rate each connection may keep; `None` for no limit. Default 100 per
    /// second with bursts of 200 ([`RateLimit`]).
    pub rate_limit: Option<RateLimit>,
    /// How long the connection middleware may take (a token check that waits on a database,
    /// say) before the handshake is refused with 503 `Handshake timed out.`. Default 10 s.
    pub handshake_timeout: Duration,
    /// How many connections one peer address may hold at once (handshakes under way
    /// included); more are refused with 429 `Too many connections from this address.`.
    /// `None` for no limit. Default 256. Behind a reverse proxy every connection comes from
    /// the proxy's address: raise it or turn it off there, and limit at the proxy.
    pub max_connections_per_peer: Option<usize>,
    /// How many rooms one connection may be in; [`Connection::join`] past it is an
    /// exception. `None` for no limit. Default 100.
    pub max_rooms_per_connection: Option<usize>,
    /// How long a closing connection waits for the messages it is handling to finish before
    /// it closes anyway. Default 10 s.
    pub drain_timeout: Duration,
    /// Connection state recovery: `Some` keeps each namespace's recent emissions and the
    /// sessions of dropped connections, so that a client that comes back within the window
    /// gets its connection id, its rooms and every event it missed, in order, once
    /// ([`Recovery`]; Socket.IO clients always, plain WebSocket clients that connect with
    /// `session=new`). Default `None` (off).
    pub recovery: Option<Recovery>,
    /// Presence: how often diffs and changes go out, how often instances say they are alive,
    /// and how long a silent one keeps its entries ([`PresenceConfig`]).
    pub presence: PresenceConfig,
}

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            outbound_capacity: 256,
            rate_limit: Some(RateLimit::default()),
            handshake_timeout: Duration::from_secs(10),
            max_connections_per_peer: Some(256),
            max_rooms_per_connection: Some(100),
            drain_timeout: Duration::from_secs(10),
            recovery: None,
            presence: PresenceConfig::default(),
        }
    }
}

/// The exception a message over the rate gets.
pub const TOO_MANY_MESSAGES: &str = "Too many messages.";

/// The exception a message gets when it arrives on a closing connection.
pub const CONNECTION_CLOSING: &str = "The connection is closing.";

/// The refusal of handshakes once the server is shutting down.
pub const SHUTTING_DOWN: &str = "The server is shutting down.";

/// A start-up mistake in the gateways.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Two handlers for the same event in one namespace.
    #[error("event `{event}` has two handlers in namespace `{namespace}`")]
    DuplicateEvent {
        /// The namespace.
        namespace: Namespace,
        /// The event.
        event: EventName,
    },
    /// A namespace pattern that is not a regular expression.
    #[error("namespace pattern `{pattern}`: {error}")]
    NamespacePattern {
        /// The pattern.
        pattern: String,
        /// What is wrong with it.
        error: String,
    },
    /// Gateways of one namespace on different ports.
    #[error("namespace `{namespace}` has gateways on different ports")]
    PortConflict {
        /// The namespace.
        namespace: Namespace,
    },
    /// Two fallback handlers in one namespace.
    #[error("namespace `{namespace}` has two fallback handlers")]
    DuplicateFallback {
        /// The namespace.
        namespace: Namespace,
    },
}

/// The gateways of a server, ready for adapters. Cheap to clone.
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
    /// The port this view serves the gateways of: `None` for the gateways without a port of
    /// their own ([`App::on_port`]).
    port: Option<u16>,
}

/// The namespace and route tables: fixed once the app is built and looked up for every
/// message, so with a fast hash (lookups of client-chosen names insert nothing, so there is
/// no table for a flood to degrade).
type HashMap<K, V> = foldhash::HashMap<K, V>;

struct Inner {
    server: Server,
    config: AppConfig,
    middlewares: Vec<Arc<dyn DynMiddleware>>,
    filters: Vec<Arc<dyn ExceptionFilter>>,
    observers: Vec<Arc<dyn Observer>>,
    namespaces: HashMap<Namespace, NamespaceEntry>,
    /// Gateways of every namespace matching a pattern (`GatewayOptions::namespace_pattern`),
    /// tried in order after the exact namespaces.
    patterns: Vec<(regex::Regex, NamespaceEntry)>,
}

impl Inner {
    /// The gateways serving `namespace`: its own, or the first pattern's that matches it.
    fn entry(&self, namespace: &Namespace) -> Option<&NamespaceEntry> {
        self.namespaces.get(namespace).or_else(|| {
            self.patterns.iter().find(|(re, _)| re.is_match(namespace.as_str())).map(|(_, e)| e)
        })
    }
}

/// What registration fills in: the exact namespaces, and the patterns (by their text).
#[derive(Default)]
struct Tables {
    namespaces: HashMap<Namespace, NamespaceEntry>,
    patterns: Vec<(String, NamespaceEntry)>,
}

#[derive(Default)]
struct NamespaceEntry {
    middlewares: Vec<Arc<dyn DynMiddleware>>,
    gateways: Vec<Arc<dyn DynGateway>>,
    routes: HashMap<EventName, RouteEntry>,
    /// The handler of events no route serves, if a gateway gave one.
    fallback: Option<RouteEntry>,
    /// The port of its own its gateways are served on, if they have one.
    port: Option<u16>,
    /// Whether a gateway was registered (the first one sets the port).
    registered: bool,
    handlers: Vec<HandlerDescription>,
    pushes: Vec<PushDescription>,
}

struct RouteEntry {
    handler: Arc<dyn ErasedHandler>,
    guards: Vec<Arc<dyn DynGuard>>,
    /// Server-wide, the gateway's, the handler's: outermost first.
    interceptors: Vec<Arc<dyn DynInterceptor>>,
    filters: Vec<Arc<dyn ExceptionFilter>>,
}

type Registration =
    Box<dyn FnOnce(&mut Tables, &[Arc<dyn DynInterceptor>]) -> Result<(), BuildError> + Send>;

/// Builds an [`App`] from gateways, middleware and filters.
#[derive(Default)]
pub struct AppBuilder {
    server: Server,
    config: AppConfig,
    middlewares: Vec<Arc<dyn DynMiddleware>>,
    filters: Vec<Arc<dyn ExceptionFilter>>,
    observers: Vec<Arc<dyn Observer>>,
    registrations: Vec<Registration>,
    presence_format: Option<DiffFormat>,
    interceptors: Vec<Arc<dyn DynInterceptor>>,
}

impl AppBuilder {
    /// Uses this server handle, so that services built earlier can hold it.
    #[must_use]
    pub fn server(mut self, server: Server) -> Self {
        self.server = server;
        self
    }

    /// Replaces the settings.
    #[must_use]
    pub fn config(mut self, config: AppConfig) -> Self {
        self.config = config;
        self
    }

    /// Connection middleware for every namespace, run before the gateways' own.
    #[must_use]
    pub fn middleware(mut self, middleware: impl ConnectMiddleware) -> Self {
        self.middlewares.push(Arc::new(middleware));
        self
    }

    /// An exception filter for every gateway, tried after the gateways' own.
    #[must_use]
    pub fn filter(mut self, filter: impl ExceptionFilter) -> Self {
        self.filters.push(Arc::new(filter));
        self
    }

    /// An observer of connections and messages, e.g. for metrics.
    #[must_use]
    pub fn observer(mut self, observer: impl Observer) -> Self {
        self.observers.push(Arc::new(observer));
        self
    }

    /// An interceptor around every handler, outside the gateways' own ([`Interceptor`]).
    #[must_use]
    pub fn interceptor(mut self, interceptor: impl Interceptor) -> Self {
        self.interceptors.push(Arc::new(interceptor));
        self
    }

    /// Shapes the presence diffs watchers receive: the event and its data for a room's
    /// diff, or `None` to send nothing. Default: `presenceDiff` with `{room, joins, leaves}`
    /// ([`PresenceDiff::to_json`]).
    #[must_use]
    pub fn presence_diff(
        mut self,
        format: impl Fn(&PresenceDiff) -> Option<(EventName, serde_json::Value)> + Send + Sync + 'static,
    ) -> Self {
        self.presence_format = Some(Arc::new(format));
        self
    }

    /// Adds a gateway. Two gateways may share a namespace if their events differ.
    #[must_use]
    pub fn gateway<G: Gateway>(mut self, gateway: G) -> Self {
        self.registrations.push(Box::new(move |tables, global| {
            let options = gateway.options();
            let gateway = Arc::new(gateway);
            let mut routes = Routes::new(gateway.clone());
            G::register(&mut routes);
            let entry = match &options.pattern {
                None => tables.namespaces.entry(options.namespace.clone()).or_default(),
                Some(pattern) => {
                    let at = match tables.patterns.iter().position(|(p, _)| p == pattern) {
                        Some(at) => at,
                        None => {
                            tables.patterns.push((pattern.clone(), NamespaceEntry::default()));
                            tables.patterns.len() - 1
                        }
                    };
                    &mut tables.patterns[at].1
                }
            };
            if entry.registered && entry.port != options.port {
                return Err(BuildError::PortConflict { namespace: options.namespace });
            }
            entry.registered = true;
            entry.port = options.port;
            entry.middlewares.extend(options.middlewares);
            entry.gateways.push(gateway);
            entry.pushes.extend(routes.pushes);
            let slot = |route: crate::gateway::Route| {
                let mut guards = options.guards.clone();
                guards.extend(route.guards);
                let mut interceptors = global.to_vec();
                interceptors.extend(options.interceptors.iter().cloned());
                interceptors.extend(route.interceptors);
                let filters = options.filters.clone();
                RouteEntry { handler: route.handler, guards, interceptors, filters }
            };
            if let Some(fallback) = routes.fallback {
                if entry.fallback.is_some() {
                    return Err(BuildError::DuplicateFallback { namespace: options.namespace });
                }
                entry.fallback = Some(slot(fallback));
            }
            for mut route in routes.routes {
                entry.handlers.push(std::mem::replace(
                    &mut route.doc,
                    HandlerDescription::new(route.event.clone()),
                ));
                let event = route.event.clone();
                let slot = slot(route);
                match entry.routes.entry(event) {
                    Entry::Vacant(v) => {
                        v.insert(slot);
                    }
                    Entry::Occupied(o) => {
                        return Err(BuildError::DuplicateEvent {
                            namespace: options.namespace,
                            event: o.key().clone(),
                        });
                    }
                }
            }
            Ok(())
        }));
        self
    }

    /// Registers every gateway and runs their `after_init` hooks.
    pub async fn build(self) -> Result<App, BuildError> {
        let mut tables = Tables::default();
        for register in self.registrations {
            register(&mut tables, &self.interceptors)?;
        }
        let mut patterns = Vec::with_capacity(tables.patterns.len());
        for (pattern, entry) in tables.patterns {
            match regex::Regex::new(&pattern) {
                Ok(re) => patterns.push((re, entry)),
                Err(e) => {
                    return Err(BuildError::NamespacePattern { pattern, error: e.to_string() });
                }
            }
        }
        let app = App {
            port: None,
            inner: Arc::new(Inner {
                server: self.server,
                config: self.config,
                middlewares: self.middlewares,
                filters: self.filters,
                observers: self.observers,
                namespaces: tables.namespaces,
                patterns,
            }),
        };
        app.inner.server.set_namespaces(app.inner.namespaces.keys().cloned().collect());
        app.inner.server.set_observers(app.inner.observers.clone());
        if let Some(recovery) = &app.inner.config.recovery {
            app.inner.server.enable_recovery(recovery.clone(), app.inner.namespaces.keys());
        }
        app.inner.server.enable_presence(app.inner.config.presence.clone(), self.presence_format);
        let patterns = app.inner.patterns.iter().map(|(_, entry)| entry);
        for entry in app.inner.namespaces.values().chain(patterns) {
            for gateway in &entry.gateways {
                gateway.after_init(&app.inner.server).await;
            }
        }
        Ok(app)
    }
}

/// A handshake that passed every middleware; [`Accepted::open`] makes it a connection. For
/// adapters ([`crate::adapter`]).
#[derive(Clone, Debug)]
pub struct Accepted {
    app: App,
    namespace: Namespace,
    transport: &'static str,
    extensions: crate::Extensions,
    peer: Option<std::net::SocketAddr>,
    /// Shared by clones; the connection takes it over.
    peer_slot: Option<Arc<PeerSlot>>,
    identity: Option<String>,
    session: SessionRequest,
}

impl Accepted {
    /// Registers the connection, runs the `on_connect` hooks, and returns it with the
    /// receiving end of its outbound queue, which the adapter drains to the socket.
    ///
    /// With recovery on and a session asked for ([`Handshake::session`]), the connection has
    /// a session ([`Connection::session_id`]); a recovered one has its old id, its rooms, and
    /// the events it missed already queued ([`Connection::recovered`]).
    ///
    /// A hook that panics is contained: the hooks after it do not run, and the connection
    /// is asked to close with [`CloseReason::InternalError`](crate::CloseReason) (1011).
    /// The registration is released when the adapter drops the [`OutboundRx`].
    pub async fn open(self) -> (Connection, OutboundRx) {
        let inner = &self.app.inner;
        let setup = Setup {
            namespace: self.namespace,
            transport: self.transport,
            extensions: self.extensions,
            peer: self.peer,
            peer_slot: self.peer_slot,
            capacity: inner.config.outbound_capacity,
            // None, or past u32::MAX rooms: no limit is reached.
            max_rooms: inner
                .config
                .max_rooms_per_connection
                .map_or(u32::MAX, |m| u32::try_from(m).unwrap_or(u32::MAX)),
            session: None,
        };
        if let SessionRequest::Resume { id, .. } = &self.session {
            // Kept by another instance (with a log broker)?
            inner.server.fetch_session(&setup.namespace, id, self.identity.as_deref()).await;
            // Its old connection may still be open here, dead without the server knowing.
            let within = inner.config.drain_timeout.min(Duration::from_secs(3));
            inner.server.take_over(&setup.namespace, id, self.identity.as_deref(), within).await;
        }
        let (conn, rx) = inner.server.open(setup, self.session, self.identity);
        tracing::debug!(conn = %conn.id(), ns = %conn.namespace(), transport = conn.transport(), recovered = conn.recovered(), "connected");
        for observer in &inner.observers {
            observer.connection_opened(&conn);
        }
        if let Some(entry) = inner.entry(conn.namespace()) {
            for gateway in &entry.gateways {
                if AssertUnwindSafe(gateway.on_connect(&conn)).catch_unwind().await.is_err() {
                    // The hooks after it do not run; the adapter closes it with 1011.
                    tracing::error!(conn = %conn.id(), "an on_connect hook panicked; closing");
                    conn.close(crate::message::CloseReason::InternalError);
                    break;
                }
            }
        }
        (conn, rx)
    }

    /// A typed value middleware attached, such as the user.
    pub fn extension<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.extensions.get::<T>()
    }
}

impl App {
    /// Starts building an app.
    pub fn builder() -> AppBuilder {
        AppBuilder::default()
    }

    /// The server handle.
    pub fn server(&self) -> &Server {
        &self.inner.server
    }

    /// The settings.
    pub fn config(&self) -> &AppConfig {
        &self.inner.config
    }

    /// The gateways of `namespace`, if this view serves them (their port is its port).
    fn served(&self, namespace: &Namespace) -> Option<&NamespaceEntry> {
        self.inner.entry(namespace).filter(|entry| entry.port == self.port)
    }

    /// The ports of their own that gateways asked for ([`GatewayOptions::port`]), sorted:
    /// serve each with [`App::on_port`] on a listener of its own.
    ///
    /// [`GatewayOptions::port`]: crate::GatewayOptions::port
    pub fn ports(&self) -> Vec<u16> {
        let patterns = self.inner.patterns.iter().map(|(_, entry)| entry);
        let mut ports: Vec<u16> =
            self.inner.namespaces.values().chain(patterns).filter_map(|e| e.port).collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// The same app, serving the gateways of `port` only (Nest's `@WebSocketGateway(port)`):
    /// mount adapters on it for that port's listener. The server handle, rooms, broker and
    /// settings are shared; the app itself serves the gateways without a port.
    pub fn on_port(&self, port: u16) -> App {
        App { inner: self.inner.clone(), port: Some(port) }
    }

    /// Whether some gateway serves `namespace`.
    pub fn has_namespace(&self, namespace: &Namespace) -> bool {
        self.served(namespace).is_some()
    }

    /// The namespaces served.
    pub fn namespaces(&self) -> impl Iterator<Item = &Namespace> {
        self.inner.namespaces.keys()
    }

    /// What the gateways serve, described from their code: the source of an AsyncAPI
    /// document ([`crate::asyncapi`]) and of typed clients ([`crate::typescript`]).
    pub fn description(&self) -> Description {
        let namespaces =
            self.inner.namespaces.iter().map(|(namespace, entry)| NamespaceDescription {
                namespace: namespace.clone(),
                handlers: entry.handlers.clone(),
                pushes: entry.pushes.clone(),
            });
        Description::new(namespaces.collect())
    }

    /// Mounts an adapter on `target` (for the shipped adapters, an axum `Router`).
    pub fn mount<T, A: crate::adapter::Adapter<T>>(&self, target: T, adapter: A) -> T {
        adapter.mount(self.clone(), target)
    }

    /// Runs the connection middleware: server-wide, then the namespace's gateways'.
    pub async fn handshake(&self, handshake: Handshake) -> Result<Accepted, Refusal> {
        let transport = handshake.transport;
        let timeout = self.inner.config.handshake_timeout;
        let accepted = match tokio::time::timeout(timeout, self.run_middleware(handshake)).await {
            Ok(accepted) => accepted,
            Err(_) => {
                tracing::warn!(?timeout, transport, "connection middleware timed out");
                Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "Handshake timed out."))
            }
        };
        if let Err(refusal) = &accepted {
            for observer in &self.inner.observers {
                observer.handshake_refused(transport, refusal);
            }
        }
        accepted
    }

    async fn run_middleware(&self, mut handshake: Handshake) -> Result<Accepted, Refusal> {
        if !self.inner.server.is_accepting() {
            return Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, SHUTTING_DOWN));
        }
        let Some(entry) = self.served(&handshake.namespace) else {
            return Err(Refusal::new(StatusCode::NOT_FOUND, "Invalid namespace"));
        };
        // Taken before the middleware runs, so that a flood from one address cannot keep the
        // middleware (and what it waits on) busy either.
        let peer_slot = match (handshake.peer, self.inner.config.max_connections_per_peer) {
            (Some(peer), Some(max)) => {
                match self.inner.server.peer_counts().acquire(peer.ip(), max) {
                    Some(slot) => Some(Arc::new(slot)),
                    None => {
                        tracing::debug!(%peer, max, "connection limit of the address reached");
                        return Err(Refusal::new(
                            StatusCode::TOO_MANY_REQUESTS,
                            TOO_MANY_CONNECTIONS,
                        ));
                    }
                }
            }
            _ => None,
        };
        for middleware in self.inner.middlewares.iter().chain(&entry.middlewares) {
            middleware.handle(&mut handshake).await?;
        }
        Ok(Accepted {
            app: self.clone(),
            namespace: handshake.namespace,
            transport: handshake.transport,
            extensions: handshake.extensions,
            peer: handshake.peer,
            peer_slot,
            identity: handshake.identity,
            session: handshake.session,
        })
    }

    /// A client's answer to the server's request `id` ([`Connection::emit_with_ack`]), for an
    /// adapter that decoded one: wakes the request waiting for it. Returns `false` when none
    /// waits (answered after its timeout, or never asked): such an answer is dropped.
    pub fn answered(&self, conn: &Connection, id: u64, data: crate::message::Payload) -> bool {
        conn.answer(id, data)
    }

    /// Routes one message: handler lookup, guards, extractors, handler, reply.
    ///
    /// The answer is queued on the connection, waiting for room: it is never dropped. A
    /// handler that panics is contained here: the client gets `Internal server error`.
    pub async fn dispatch(&self, conn: &Connection, message: Inbound) {
        let mut message = Some(message);
        let mut rest = None;
        std::future::poll_fn(|cx| {
            if let Some(message) = message.take() {
                rest = self.dispatch_now(conn, message, cx);
            }
            match &mut rest {
                None => Poll::Ready(()),
                Some(rest) => rest.as_mut().poll(cx).map(drop),
            }
        })
        .await;
    }

    /// Routes one message as [`Self::dispatch`] does, with no future of its own when it need
    /// not wait: the handler of a route without guards or interceptors is called and polled
    /// once, with `cx`, and its reply queued at once when it is done, as a handler that waits
    /// on nothing is. `None`: the message is handled and its answer queued. Otherwise the
    /// rest of its work, to poll until it resolves (with the connection's id); its first poll
    /// may poll the handler again.
    ///
    /// For adapters that drive many messages from one task: the usual message then costs
    /// no allocation for its own state, nor a copy of it.
    pub fn dispatch_now<'a>(
        &'a self,
        conn: &Connection,
        message: Inbound,
        cx: &mut Context<'_>,
    ) -> Option<Dispatching<'a>> {
        self.dispatch_into(conn, message, cx, &mut |_| false)
    }

    /// [`Self::dispatch_now`], with the answer of a handler done at once offered to `write`
    /// first when nothing is queued for the connection ahead of it: `write` puts it on the
    /// transport (buffered, to flush once the batch of messages read is handled) and returns
    /// `true`, or returns `false` and it is queued as usual. The answer then skips the queue:
    /// no push, no pop, no wake-up of the connection's writer. Broadcasts held back are
    /// delivered before it is offered, so that it never overtakes what its handler emitted.
    ///
    /// For adapters that read and write a connection from one task: `write` may refuse
    /// whenever its buffer is full, and what it refuses keeps its order through the queue.
    pub fn dispatch_into<'a>(
        &'a self,
        conn: &Connection,
        message: Inbound,
        cx: &mut Context<'_>,
        write: &mut dyn FnMut(&Outbound) -> bool,
    ) -> Option<Dispatching<'a>> {
        // Not handled, and said so: a message is either handled and answered or refused.
        let refusal = if conn.is_closing() {
            Some(CONNECTION_CLOSING)
        } else if !self.admit(conn) {
            Some(TOO_MANY_MESSAGES)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            let conn = conn.clone();
            return Some(Box::pin(async move {
                send_error(&conn, refusal, message.ack).await;
                for observer in &self.inner.observers {
                    observer.message(&conn, None, Outcome::Refused, Duration::ZERO);
                }
                conn.id()
            }));
        }
        let started = (!self.inner.observers.is_empty()).then(Instant::now);
        let Inbound { event, data, ack, binary, arity } = message;
        for observer in &self.inner.observers {
            observer.event_received(conn, &event, &data);
        }
        let route = self
            .inner
            .entry(conn.namespace())
            .and_then(|ns| ns.routes.get(event.as_str()).or(ns.fallback.as_ref()));
        let ctx = MessageContext { conn: conn.clone(), event, data, ack, binary, arity };
        let Some(route) = route else {
            let reply = Reply::Error(
                WsException::new(format!(
                    "There is no handler for event '{}'.",
                    crate::extract::shorten(ctx.event.as_str(), 60, 0)
                ))
                .into(),
            );
            return self.answer_now(ctx, None, reply, started, write);
        };
        let span = tracing::debug_span!("message", conn = %conn.id(), event = %ctx.event);
        if !route.guards.is_empty() || !route.interceptors.is_empty() {
            return Some(Box::pin(async move {
                let reply =
                    AssertUnwindSafe(run(route, &ctx)).catch_unwind().instrument(span).await;
                self.finish(ctx, Some(route), reply.unwrap_or_else(|_| panicked()), started).await
            }));
        }
        let polled = {
            let _entered = span.enter();
            std::panic::catch_unwind(AssertUnwindSafe(|| {
                let mut handler = route.handler.call(&ctx);
                match handler.as_mut().poll(cx) {
                    Poll::Ready(reply) => Ok(reply),
                    Poll::Pending => Err(handler),
                }
            }))
        };
        match polled {
            Ok(Ok(reply)) => self.answer_now(ctx, Some(route), reply, started, write),
            Ok(Err(handler)) => Some(Box::pin(async move {
                let reply = AssertUnwindSafe(handler).catch_unwind().instrument(span).await;
                self.finish(ctx, Some(route), reply.unwrap_or_else(|_| panicked()), started).await
            })),
            Err(_) => self.answer_now(ctx, Some(route), panicked(), started, write),
        }
    }

    /// Answers a message whose handler is done, without waiting unless its connection's
    /// queue is full: through `write` when it takes the answer ([`Self::dispatch_into`]).
    fn answer_now<'a>(
        &'a self,
        ctx: MessageContext,
        route: Option<&RouteEntry>,
        reply: Reply,
        started: Option<Instant>,
        write: &mut dyn FnMut(&Outbound) -> bool,
    ) -> Option<Dispatching<'a>> {
        let answer = self.settle(&ctx, route, reply, started)?;
        match ctx.conn.send_now_or(answer, write) {
            Ok(None) => None,
            Ok(Some(answer)) => Some(Box::pin(async move {
                if ctx.conn.send_later(answer).await.is_err() {
                    tracing::debug!(conn = %ctx.conn.id(), "reply dropped: connection closed");
                }
                ctx.conn.id()
            })),
            Err(_) => {
                tracing::debug!(conn = %ctx.conn.id(), "reply dropped: connection closed");
                None
            }
        }
    }

    /// Answers a message whose handler is done, waiting for room in its connection's queue.
    async fn finish(
        &self,
        ctx: MessageContext,
        route: Option<&RouteEntry>,
        reply: Reply,
        started: Option<Instant>,
    ) -> ConnectionId {
        let id = ctx.conn.id();
        match self.answer_now(ctx, route, reply, started, &mut |_| false) {
            Some(rest) => rest.await,
            None => id,
        }
    }

    /// What answers a handled message, if anything; its outcome logged and observed.
    fn settle(
        &self,
        ctx: &MessageContext,
        route: Option<&RouteEntry>,
        reply: Reply,
        started: Option<Instant>,
    ) -> Option<Outbound> {
        let filters = route.map_or(&[][..], |r| &r.filters[..]);
        let outcome = match (&reply, route) {
            (_, None) => Outcome::Unrouted,
            (Reply::Error(_), Some(_)) => Outcome::Error,
            _ => Outcome::Ok,
        };
        let answer = self.answer(ctx, filters, reply);
        // The event's name and outcome, never its data (it may carry anything).
        tracing::debug!(conn = %ctx.conn.id(), event = %crate::extract::shorten(ctx.event.as_str(), 60, 0), ?outcome, "message");
        if let Some(started) = started {
            let event = route.is_some().then_some(&ctx.event);
            let elapsed = started.elapsed();
            for observer in &self.inner.observers {
                observer.message(&ctx.conn, event, outcome, elapsed);
            }
        }
        answer
    }

    /// The item that answers `reply`, if any; errors go through the exception filters.
    fn answer(
        &self,
        ctx: &MessageContext,
        filters: &[Arc<dyn ExceptionFilter>],
        reply: Reply,
    ) -> Option<Outbound> {
        let direct = match reply {
            Reply::Nothing => return None,
            Reply::Ack(data) => {
                Direct::Ack { id: ctx.ack.clone()?, data, extras: Extras::default() }
            }
            Reply::AckWith(data, extras) => Direct::Ack { id: ctx.ack.clone()?, data, extras },
            Reply::Event(emission) => return Some(Outbound::Event(emission)),
            Reply::Error(error) => {
                let chain: Vec<&dyn ExceptionFilter> =
                    filters.iter().chain(&self.inner.filters).map(|f| &**f).collect();
                let exception = ExceptionContext { pattern: &ctx.event, data: &ctx.data };
                let data = render(&chain, &error, &exception);
                Direct::Exception { id: ctx.ack.clone(), data }
            }
        };
        Some(Outbound::Direct(Box::new(direct)))
    }

    /// Whether the connection's rate allows one more message; closes it (1008) when the
    /// client keeps going past its rate.
    fn admit(&self, conn: &Connection) -> bool {
        let Some(limit) = &self.inner.config.rate_limit else { return true };
        match conn.bucket(limit).admit(limit) {
            Admission::Admit => true,
            Admission::Refuse => false,
            Admission::Close => {
                tracing::debug!(conn = %conn.id(), "message rate exceeded; closing");
                conn.close(crate::message::CloseReason::PolicyViolation);
                false
            }
        }
    }

    /// Sends an `exception` `{status:"error", message}` about a message that could not be
    /// decoded (not JSON, no event name); the connection stays open. Such frames count
    /// against the connection's rate too.
    pub async fn reject(&self, conn: &Connection, message: &str, ack: Option<crate::AckId>) {
        let message = if self.admit(conn) { message } else { TOO_MANY_MESSAGES };
        send_error(conn, message, ack).await;
        for observer in &self.inner.observers {
            observer.message(conn, None, Outcome::Undecodable, Duration::ZERO);
        }
    }

    /// Ends a connection whose client is gone without a goodbye (a dropped transport):
    /// [`Self::disconnect_with`] with [`Departure::Lost`].
    pub async fn disconnect(&self, conn: &Connection) {
        self.disconnect_with(conn, Departure::Lost).await;
    }

    /// Ends a connection: it leaves its rooms and the `on_disconnect` hooks run (a hook that
    /// panics is logged; the others still run). An adapter that never calls it still leaks
    /// nothing: dropping the [`OutboundRx`] releases the registration, without the hooks.
    ///
    /// With recovery on, the session of a connection that was [`Departure::Lost`] is kept for
    /// the window, unless the server closed it for misbehaving (a policy violation, an
    /// oversized message), for an internal error, or on the application's request.
    pub async fn disconnect_with(&self, conn: &Connection, departure: Departure) {
        let rooms = self.inner.server.unregister(conn);
        let recoverable = departure == Departure::Lost
            && conn.close_reason().is_none_or(|reason| {
                matches!(
                    reason,
                    CloseReason::GoingAway
                        | CloseReason::SlowConsumer
                        | CloseReason::IdleTimeout
                        | CloseReason::Replaced
                )
            });
        if recoverable {
            self.inner.server.keep_session(conn, rooms);
        } else {
            self.inner.server.end_session(conn);
        }
        tracing::debug!(conn = %conn.id(), "disconnected");
        for observer in &self.inner.observers {
            observer.connection_closed(conn);
        }
        if let Some(entry) = self.inner.entry(conn.namespace()) {
            for gateway in &entry.gateways {
                if AssertUnwindSafe(gateway.on_disconnect(conn)).catch_unwind().await.is_err() {
                    tracing::error!(conn = %conn.id(), "an on_disconnect hook panicked");
                }
            }
        }
    }
}

/// The rest of a message's work once it has to wait ([`App::dispatch_now`]): resolves with
/// its connection's id once the message is answered.
pub type Dispatching<'a> = Pin<Box<dyn Future<Output = ConnectionId> + Send + 'a>>;

/// How a connection's client left, for [`App::disconnect_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Departure {
    /// The transport dropped, or closed without the protocol's goodbye: the client may come
    /// back and recover its session.
    Lost,
    /// The client said goodbye in its protocol's terms (Socket.IO's namespace `DISCONNECT`,
    /// a plain WebSocket close with code 1000): its session ends with it.
    Farewell,
}

/// Sends an `exception` `{status:"error", message}` about a message that was not handled.
async fn send_error(conn: &Connection, message: &str, ack: Option<crate::AckId>) {
    let data = to_payload(&json!({ "status": "error", "message": message }))
        .unwrap_or_else(|_| crate::message::null_payload());
    // A closed connection has nobody to tell.
    let _ = conn.reply(Direct::Exception { id: ack, data }).await;
}

/// What a handler that panicked answers.
fn panicked() -> Reply {
    Reply::Error(WsError::internal("the handler panicked"))
}

async fn run(route: &RouteEntry, ctx: &MessageContext) -> Reply {
    for guard in &route.guards {
        if let Err(e) = guard.check(ctx).await {
            return Reply::Error(e);
        }
    }
    if route.interceptors.is_empty() {
        return route.handler.call(ctx).await;
    }
    Next::new(ctx, &route.interceptors, &*route.handler).run().await
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("namespaces", &self.inner.namespaces.keys().collect::<Vec<_>>())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}
