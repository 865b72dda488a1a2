//! The server side of the [Socket.IO Admin UI](https://github.com/socketio/socket.io-admin-ui)
//! (`@socket.io/admin-ui`) for a wsgate app: its UI, logged in to the `/admin` namespace,
//! shows the servers, the sockets of both transports, their rooms and the events in both
//! directions, on every instance of a deployment.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use wsgate_admin::{AdminUi, Credentials};
//!
//! let admin = AdminUi::new(Credentials::new("admin", "$2b$10$heqvAkYMez.Va6Et2uXInOnkCT6/uQj1brkrbyG3LpopDklcq7ZOS")?);
//! let builder = wsgate::App::builder()
//!     // Connection middleware of the app's own gateways does not apply to the admin namespace.
//!     .middleware(admin.skip(wsgate::AllowedOrigins::any()));
//! let app = admin.install(builder).build().await?;
//! # let _ = app; Ok(()) }
//! ```
//!
//! What it serves, as the UI's own server (`instrument(io, {auth: {type: "basic", …}})`):
//! - **Login**: `auth: {username, password}` checked against a bcrypt hash; a UI that logged
//!   in gets a `session` id to reconnect with (`auth: {sessionId}`), signed with a key drawn
//!   from the credentials: every instance given the same settings accepts it, for
//!   [`SESSION_LIFETIME`]. Anything else is refused with `invalid credentials`.
//! - **On connect**: `config` (the features offered), `all_sockets` (this instance's), then
//!   each other instance's sockets as `socket_connected`.
//! - **Live**: `socket_connected`, `socket_disconnected`, `room_joined`, `room_left`,
//!   `event_received`, `event_sent` from every instance, and every two seconds each
//!   instance's `server_stats`. Between instances they travel on the broker's signal
//!   channel ([`wsgate::Server::signal`]): never logged or replayed.
//! - **Operations**: `join`, `leave`, `_disconnect` (on every instance) and `emit`; refused
//!   when [`AdminUi::readonly`].
//!
//! A socket's transport is `websocket` or `polling` for Socket.IO (as the client opened it: an
//! upgrade later is not seen), `ws` for a plain WebSocket. Tokens in headers and query strings
//! are shown as `[redacted]`. The UI is a window, not a brake: while no UI is connected to any
//! instance nothing is observed (instances with UIs say so every two seconds), and notices
//! beyond a bounded queue (8 192) are dropped and counted in the logs.

mod auth;
mod gateway;
mod socket;
mod watch;

use wsgate::{AppBuilder, ConnectMiddleware, Handshake, Namespace, Refusal};

pub use auth::{Credentials, CredentialsError, INVALID_CREDENTIALS, SESSION_LIFETIME};
pub use gateway::READ_ONLY;

/// The namespace the UI connects to unless told otherwise.
pub const NAMESPACE: &str = "/admin";

/// The admin namespace, ready to be installed in an app.
#[derive(Debug)]
pub struct AdminUi {
    credentials: Credentials,
    namespace: Namespace,
    server_id: Option<String>,
    readonly: bool,
}

impl AdminUi {
    /// The admin namespace at [`NAMESPACE`], behind `credentials`.
    pub fn new(credentials: Credentials) -> Self {
        Self { credentials, namespace: Namespace::new(NAMESPACE), server_id: None, readonly: false }
    }

    /// Serves it at another namespace (the UI's "Admin namespace" field).
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<Namespace>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// This instance's name in the UI's server list. Default: `hostname#pid`.
    #[must_use]
    pub fn server_id(mut self, id: impl Into<String>) -> Self {
        self.server_id = Some(id.into());
        self
    }

    /// Shows everything, changes nothing: the UI's operations are refused.
    #[must_use]
    pub fn readonly(mut self, readonly: bool) -> Self {
        self.readonly = readonly;
        self
    }

    /// Wraps server-wide connection middleware (the app's authentication) so that it does
    /// not run for the admin namespace, which has its own login.
    pub fn skip<M: ConnectMiddleware>(&self, middleware: M) -> Skip<M> {
        Skip { namespace: self.namespace.clone(), inner: middleware }
    }

    /// Adds the admin namespace to `builder`: its gateway, and the middleware and observer
    /// that see every connection of the app. Add the app's own middleware first (wrapped in
    /// [`AdminUi::skip`]).
    pub fn install(self, builder: AppBuilder) -> AppBuilder {
        let watch = watch::Watch::new(self.namespace, self.server_id);
        let auth = auth::AdminAuth { credentials: self.credentials };
        builder
            .middleware(socket::Snapshot)
            .observer(watch::Watcher(watch.clone()))
            .gateway(gateway::AdminGateway { watch, auth, readonly: self.readonly })
    }
}

/// Server-wide connection middleware that lets the admin namespace through
/// ([`AdminUi::skip`]).
#[derive(Debug)]
pub struct Skip<M> {
    namespace: Namespace,
    inner: M,
}

impl<M: ConnectMiddleware> ConnectMiddleware for Skip<M> {
    async fn handle(&self, handshake: &mut Handshake) -> Result<(), Refusal> {
        if handshake.namespace == self.namespace {
            return Ok(());
        }
        self.inner.handle(handshake).await
    }
}

#[cfg(test)]
mod tests {
    use wsgate::testing::TestClient;
    use wsgate::{App, Gateway, Routes};

    use super::*;

    struct Quiet;

    impl Gateway for Quiet {
        fn register(_routes: &mut Routes<Self>) {}
    }

    /// The app's own authentication, which refuses everyone.
    struct Nobody;

    impl ConnectMiddleware for Nobody {
        async fn handle(&self, _handshake: &mut Handshake) -> Result<(), Refusal> {
            Err(Refusal::unauthorized("No token."))
        }
    }

    #[tokio::test]
    async fn the_app_middleware_skips_the_admin_namespace_which_has_its_own_login() {
        let admin = AdminUi::new(Credentials::with_cost("admin", "pw", 4).unwrap());
        let builder = App::builder().middleware(admin.skip(Nobody)).gateway(Quiet);
        let app = admin.install(builder).build().await.unwrap();
        let refused = TestClient::builder(&app).connect().await.unwrap_err();
        assert_eq!(refused.message, "No token.");
        // Past the app's middleware, to the admin's: Socket.IO only (this client is none).
        let refused = TestClient::builder(&app)
            .namespace(NAMESPACE)
            .auth(serde_json::json!({"username": "admin", "password": "pw"}))
            .connect()
            .await
            .unwrap_err();
        assert_eq!(refused.message, "The admin namespace is served over Socket.IO only.");
    }
}
