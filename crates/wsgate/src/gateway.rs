//! Gateways (Nest's `@WebSocketGateway()` classes): options, handler registration, hooks.

use std::future::Future;
use std::sync::Arc;

use crate::connection::Connection;
use crate::describe::{Answer, HandlerDescription, PushDescription, Schema};
use crate::exception::ExceptionFilter;
use crate::guard::{DynGuard, Guard};
use crate::handler::{Bound, ErasedHandler, Handler};
use crate::handshake::{BoxFuture, ConnectMiddleware, DynMiddleware};
use crate::interceptor::{DynInterceptor, Interceptor};
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
    pub(crate) pattern: Option<String>,
    pub(crate) port: Option<u16>,
    pub(crate) middlewares: Vec<Arc<dyn DynMiddleware>>,
    pub(crate) guards: Vec<Arc<dyn DynGuard>>,
    pub(crate) interceptors: Vec<Arc<dyn DynInterceptor>>,
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

    /// Serves this gateway on a port of its own (Nest's `@WebSocketGateway(81)`), over the
    /// transports mounted on [`App::on_port`](crate::App::on_port)`(port)`, not on the app's
    /// main port. The server handle, rooms and broker are shared with the rest of the app.
    #[must_use]
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Serves every namespace whose name matches `pattern`, a regular expression (Socket.IO's
    /// dynamic namespaces, Nest's `namespace: /^\/entry-\d+$/`): `^/entry-\d+$` serves
    /// `/entry-1`, `/entry-2`… Each is a namespace of its own (its rooms, its emits); handlers
    /// read which from [`Connection::namespace`]. Exact namespaces are tried first, then the
    /// patterns in the order the gateways were added; gateways giving the same pattern share
    /// it. An invalid pattern fails [`AppBuilder::build`](crate::AppBuilder::build).
    /// Connection state recovery and the [description](crate::describe) cover exact
    /// namespaces only.
    #[must_use]
    pub fn namespace_pattern(mut self, pattern: impl Into<String>) -> Self {
        self.pattern = Some(pattern.into());
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

    /// An interceptor around every handler of this gateway, inside the server-wide ones and
    /// outside each handler's own ([`Interceptor`]).
    #[must_use]
    pub fn interceptor(mut self, interceptor: impl Interceptor) -> Self {
        self.interceptors.push(Arc::new(interceptor));
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
            .field("pattern", &self.pattern)
            .field("port", &self.port)
            .field("middlewares", &self.middlewares.len())
            .field("guards", &self.guards.len())
            .field("interceptors", &self.interceptors.len())
            .field("filters", &self.filters.len())
            .finish()
    }
}

/// The handlers of one gateway, filled in by [`Gateway::register`].
pub struct Routes<G> {
    gateway: Arc<G>,
    pub(crate) routes: Vec<Route>,
    pub(crate) fallback: Option<Route>,
    pub(crate) pushes: Vec<PushDescription>,
}

impl<G: Send + Sync + 'static> Routes<G> {
    pub(crate) fn new(gateway: Arc<G>) -> Self {
        Self { gateway, routes: Vec::new(), fallback: None, pushes: Vec::new() }
    }

    /// Handles `event` with `handler` (Nest's `@SubscribeMessage(event)`).
    pub fn on<H, T>(&mut self, event: impl Into<EventName>, handler: H) -> &mut Route
    where
        H: Handler<G, T>,
        T: 'static,
    {
        let route = self.route(event.into(), handler);
        self.routes.push(route);
        let last = self.routes.len() - 1;
        &mut self.routes[last]
    }

    /// Handles the events no route of this namespace serves (Socket.IO's `onAny` for the
    /// rest), before they would be the `There is no handler for event …` exception; take the
    /// event's name with the `EventName` extractor. One per namespace. The gateway's guards,
    /// interceptors and filters apply. `#[fallback]` on a method of a `#[gateway]` writes it.
    /// Not part of the [description](crate::describe): it serves no event of its own.
    pub fn fallback<H, T>(&mut self, handler: H) -> &mut Route
    where
        H: Handler<G, T>,
        T: 'static,
    {
        let route = self.route(EventName::from("*"), handler);
        self.fallback.insert(route)
    }

    fn route<H, T>(&self, event: EventName, handler: H) -> Route
    where
        H: Handler<G, T>,
        T: 'static,
    {
        let bound =
            Bound { gateway: self.gateway.clone(), handler, _args: std::marker::PhantomData };
        Route {
            doc: HandlerDescription::new(event.clone()),
            event,
            handler: Arc::new(bound),
            guards: Vec::new(),
            interceptors: Vec::new(),
        }
    }

    /// Declares an event this gateway pushes on its own (to a room, to everyone), with its
    /// data's schema, for the [description](crate::describe). `#[gateway(pushes("e": T))]`
    /// writes it.
    pub fn pushes<T: utoipa::ToSchema>(&mut self, event: impl Into<EventName>) -> &mut Self {
        self.push_schema(event, Schema::of::<T>())
    }

    /// As [`Routes::pushes`], with the schema given.
    pub fn push_schema(&mut self, event: impl Into<EventName>, payload: Schema) -> &mut Self {
        self.pushes.push(PushDescription { event: event.into(), summary: None, payload });
        self
    }

    /// The gateway, for handlers written as closures.
    pub fn gateway(&self) -> &Arc<G> {
        &self.gateway
    }
}

/// One registered handler, to which guards and its [description](crate::describe) can be
/// added.
pub struct Route {
    pub(crate) event: EventName,
    pub(crate) handler: Arc<dyn ErasedHandler>,
    pub(crate) guards: Vec<Arc<dyn DynGuard>>,
    pub(crate) interceptors: Vec<Arc<dyn DynInterceptor>>,
    pub(crate) doc: HandlerDescription,
}

impl Route {
    /// A guard for this handler only, run after the gateway's guards.
    pub fn guard(&mut self, guard: impl Guard) -> &mut Self {
        self.guards.push(Arc::new(guard));
        self
    }

    /// An interceptor around this handler only, inside the gateway's and the server-wide
    /// ones ([`Interceptor`]).
    pub fn interceptor(&mut self, interceptor: impl Interceptor) -> &mut Self {
        self.interceptors.push(Arc::new(interceptor));
        self
    }

    /// What the handler does, for people: the first paragraph is its summary.
    pub fn describe(&mut self, text: &str) -> &mut Self {
        let text = text.trim();
        if !text.is_empty() {
            let summary = text.split("\n\n").next().unwrap_or(text);
            self.doc.summary = Some(summary.split_whitespace().collect::<Vec<_>>().join(" "));
            self.doc.description = Some(text.to_owned());
        }
        self
    }

    /// The handler reads data of type `T`.
    pub fn data<T: utoipa::ToSchema>(&mut self) -> &mut Self {
        self.data_schema(Schema::of::<T>())
    }

    /// The handler reads data of this schema.
    pub fn data_schema(&mut self, schema: Schema) -> &mut Self {
        self.doc.data = Some(schema);
        self
    }

    /// The handler replies with `event` carrying a `T` (a `WsResponse`).
    pub fn replies<T: utoipa::ToSchema>(&mut self, event: impl Into<EventName>) -> &mut Self {
        self.answer(Answer::Event { event: event.into(), payload: Schema::of::<T>() })
    }

    /// The handler answers the client's acknowledgement with a `T`.
    pub fn acks<T: utoipa::ToSchema>(&mut self) -> &mut Self {
        self.answer(Answer::Ack { payload: Schema::of::<T>() })
    }

    /// What the handler sends back.
    pub fn answer(&mut self, answer: Answer) -> &mut Self {
        self.doc.answer = answer;
        self
    }

    /// The handler may fail with an exception of this message.
    pub fn throws(&mut self, message: impl Into<String>) -> &mut Self {
        self.doc.exceptions.push(message.into());
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
