//! Gateways (Nest's `@WebSocketGateway()` classes): options, handler registration, hooks.

use std::future::Future;
use std::sync::Arc;

use crate::connection::Connection;
use crate::exception::ExceptionFilter;
use crate::guard::{DynGuard, Guard};
use crate::handler::{Bound, ErasedHandler, Handler};
use crate::handshake::{BoxFuture, ConnectMiddleware, DynMiddleware};
use crate::names::{EventName, Namespace};
use crate::server::Server;

/// A struct holding its services, with one handler per event.
///
/// `register` lists the handlers (`#[gateway]` writes it from `#[subscribe_message]` methods);
/// the hooks are Nest's `afterInit`, `handleConnection` and `handleDisconnect`.
pub trait Gateway: Send + Sync + Sized + 'static {
    /// Namespace, middleware, guards and filters of this gateway. Default: namespace `/`.
    fn options(&self) -> GatewayOptions {
        GatewayOptions::default()
    }

    /// Registers the handlers.
    fn register(routes: &mut Routes<Self>);

    /// Runs once when the app is built (Nest's `afterInit`).
    fn after_init(&self, _server: &Server) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Runs when a connection to this gateway's namespace is accepted.
    fn on_connect(&self, _conn: &Connection) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Runs when a connection to this gateway's namespace ends.
    fn on_disconnect(&self, _conn: &Connection) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Nest's `GatewayMetadata`, all optional.
#[derive(Default)]
pub struct GatewayOptions {
    pub(crate) namespace: Namespace,
    pub(crate) middlewares: Vec<Arc<dyn DynMiddleware>>,
    pub(crate) guards: Vec<Arc<dyn DynGuard>>,
    pub(crate) filters: Vec<Arc<dyn ExceptionFilter>>,
}

impl GatewayOptions {
    /// Default options: namespace `/`, nothing else.
    pub fn new() -> Self {
        Self::default()
    }

    /// The namespace (Socket.IO namespace; the path of plain WebSocket connections).
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<Namespace>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Connection middleware for this gateway's namespace, after the server-wide chain.
    #[must_use]
    pub fn middleware(mut self, middleware: impl ConnectMiddleware) -> Self {
        self.middlewares.push(Arc::new(middleware));
        self
    }

    /// A guard for every handler of this gateway.
    #[must_use]
    pub fn guard(mut self, guard: impl Guard) -> Self {
        self.guards.push(Arc::new(guard));
        self
    }

    /// An exception filter for this gateway's handlers, tried before the server-wide ones.
    #[must_use]
    pub fn filter(mut self, filter: impl ExceptionFilter) -> Self {
        self.filters.push(Arc::new(filter));
        self
    }
}

impl std::fmt::Debug for GatewayOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayOptions")
            .field("namespace", &self.namespace)
            .field("middlewares", &self.middlewares.len())
            .field("guards", &self.guards.len())
            .field("filters", &self.filters.len())
            .finish()
    }
}

/// The handlers of one gateway, filled in by [`Gateway::register`].
pub struct Routes<G> {
    gateway: Arc<G>,
    pub(crate) routes: Vec<Route>,
}

impl<G: Send + Sync + 'static> Routes<G> {
    pub(crate) fn new(gateway: Arc<G>) -> Self {
        Self { gateway, routes: Vec::new() }
    }

    /// Handles `event` with `handler` (Nest's `@SubscribeMessage(event)`).
    pub fn on<H, T>(&mut self, event: impl Into<EventName>, handler: H) -> &mut Route
    where
        H: Handler<G, T>,
        T: 'static,
    {
        let bound =
            Bound { gateway: self.gateway.clone(), handler, _args: std::marker::PhantomData };
        self.routes.push(Route {
            event: event.into(),
            handler: Arc::new(bound),
            guards: Vec::new(),
        });
        let last = self.routes.len() - 1;
        &mut self.routes[last]
    }

    /// The gateway, for handlers written as closures.
    pub fn gateway(&self) -> &Arc<G> {
        &self.gateway
    }
}

/// One registered handler, to which guards can be added.
pub struct Route {
    pub(crate) event: EventName,
    pub(crate) handler: Arc<dyn ErasedHandler>,
    pub(crate) guards: Vec<Arc<dyn DynGuard>>,
}

impl Route {
    /// A guard for this handler only, run after the gateway's guards.
    pub fn guard(&mut self, guard: impl Guard) -> &mut Self {
        self.guards.push(Arc::new(guard));
        self
    }
}

/// A gateway with its type erased, for the hooks.
pub(crate) trait DynGateway: Send + Sync + 'static {
    fn after_init<'a>(&'a self, server: &'a Server) -> BoxFuture<'a, ()>;
    fn on_connect<'a>(&'a self, conn: &'a Connection) -> BoxFuture<'a, ()>;
    fn on_disconnect<'a>(&'a self, conn: &'a Connection) -> BoxFuture<'a, ()>;
}

impl<G: Gateway> DynGateway for G {
    fn after_init<'a>(&'a self, server: &'a Server) -> BoxFuture<'a, ()> {
        Box::pin(Gateway::after_init(self, server))
    }
    fn on_connect<'a>(&'a self, conn: &'a Connection) -> BoxFuture<'a, ()> {
        Box::pin(Gateway::on_connect(self, conn))
    }
    fn on_disconnect<'a>(&'a self, conn: &'a Connection) -> BoxFuture<'a, ()> {
        Box::pin(Gateway::on_disconnect(self, conn))
    }
}
