//! The blog: users, entries and comments over a REST API and live wsgate gateways, on
//! SQLite or PostgreSQL, with JWT authentication shared by both.
//!
//! [`open`] connects and migrates the database and loads the signing keys into an
//! [`AppState`]; [`router`] builds the whole HTTP service from it; [`run`] serves it on a
//! listener until shutdown; [`serve`] does all three for the `blog` binary.

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;
use wsgate::{AllowedOrigins, CloseReason, JwtKeys, Server};

mod admin_ui;
pub mod asyncapi;
pub mod auth;
mod comments;
pub mod config;
pub mod db;
pub mod domain;
mod entries;
pub mod error;
mod extract;
pub mod gateways;
mod health;
pub mod metrics;
pub mod models;
pub mod openapi;
mod password;
mod secret;
pub mod seed;
pub mod store;
mod users;
mod web;

pub use auth::AuthUser;
pub use config::{Cli, Command, Config};
pub use error::AppError;
pub use metrics::Metrics;
pub use store::{Comment, Entry, Store, StoreError, User};

/// The Redis channel the blog's instances share.
const REDIS_CHANNEL: &str = "blog";

/// How long shutdown waits for closing connections beyond the drain timeout (close
/// handshakes, writes to slow clients).
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// What every handler and gateway shares. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Users, entries and comments.
    pub store: Store,
    /// Signs and verifies the tokens of the REST API and the gateways.
    pub jwt: JwtKeys,
    /// The live connections: rooms and emits, e.g. `commentCreated` to `entry:{id}`.
    pub server: Server,
    /// Prometheus metrics, served at `/metrics`.
    pub metrics: Metrics,
    /// Origins whose pages may use the API and the gateways besides the blog's own.
    pub origins: AllowedOrigins,
    /// The gateways' limits (connections per address, rooms, rates, drain timeout).
    pub gateway_config: wsgate::AppConfig,
    /// permessage-deflate on the websockets, when on.
    pub compression: Option<wsgate_ws::Compression>,
    /// After how long quiet websocket connections sleep; `None`: they stay awake.
    pub hibernate_after: Option<std::time::Duration>,
    /// With `--admin-ui`: who may log in to the Socket.IO Admin UI, and whether it is
    /// read-only.
    pub admin_ui: Option<(wsgate_admin::Credentials, bool)>,
}

impl AppState {
    /// The users service.
    pub fn users(&self) -> domain::Users {
        domain::Users::new(self.store.clone())
    }

    /// The entries service.
    pub fn entries(&self) -> domain::Entries {
        domain::Entries::new(self.store.clone())
    }

    /// The comments service, pushing through the state's server handle.
    pub fn comments(&self) -> domain::Comments {
        domain::Comments::new(self.store.clone(), self.server.clone())
    }
}

/// Connects to the database, applies pending migrations and loads the JWT secret
/// (generating one in the data directory if none is configured).
pub async fn open(config: &Config) -> anyhow::Result<AppState> {
    let pool = db::connect(&config.database_url).await?;
    db::migrate(&pool, &config.database_url).await?;
    let data_dir = db::data_dir(&config.database_url);
    let secret = secret::jwt_secret(config.jwt_secret.as_deref(), &data_dir)?;
    // An empty REDIS_URL (as `REDIS_URL= blog`) means none.
    let server = match config.redis_url.as_deref().filter(|url| !url.trim().is_empty()) {
        None => Server::new(),
        Some(url) => match config.redis_broker {
            config::RedisBrokerKind::Streams => {
                let settings = wsgate_redis::StreamsConfig {
                    prefix: REDIS_CHANNEL.to_owned(),
                    max_len: config.recovery_history.max(1000),
                    buffer: config.redis_buffer.max(1),
                };
                let broker = wsgate_redis::RedisStreamsBroker::connect_with(url, settings).await?;
                tracing::info!(
                    prefix = REDIS_CHANNEL,
                    "sharing rooms and broadcasts through Redis Streams"
                );
                Server::with_broker(broker)
            }
            config::RedisBrokerKind::Pubsub => {
                let broker = wsgate_redis::RedisBroker::connect_with(url, REDIS_CHANNEL).await?;
                tracing::info!(
                    channel = REDIS_CHANNEL,
                    "sharing rooms and broadcasts through Redis pub/sub"
                );
                Server::with_broker(broker)
            }
        },
    };
    Ok(AppState {
        store: Store::new(pool),
        jwt: JwtKeys::hs256(&secret),
        metrics: Metrics::new(&server),
        server,
        origins: AllowedOrigins::parse(&config.allowed_origins),
        gateway_config: config.gateway_config(),
        compression: config.compression(),
        hibernate_after: (config.hibernate_after > 0)
            .then(|| std::time::Duration::from_secs(config.hibernate_after)),
        admin_ui: config.admin_ui_credentials()?.map(|c| (c, config.admin_ui_readonly)),
    })
}

/// The REST API: every resource module's routes, merged here and nowhere else. Unknown
/// paths and methods are answered in the API's JSON error format too.
pub fn rest_router(state: AppState) -> Router {
    Router::new()
        .merge(health::router())
        .merge(web::router())
        .merge(auth::router())
        .merge(entries::router())
        .merge(comments::router())
        .merge(users::router())
        .merge(metrics::router())
        .merge(openapi::router())
        .fallback(|| async { AppError::NotFound("Not found.".into()) })
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
        .layer(axum::middleware::from_fn_with_state(state.metrics.clone(), metrics::track))
        .layer(cors(&state.origins))
        .with_state(state)
}

/// CORS for the REST API: the allowed origins may call it with a bearer token. With none
/// configured, only the blog's own pages can (browsers need no CORS for those).
fn cors(origins: &AllowedOrigins) -> CorsLayer {
    use axum::http::{HeaderValue, Method, header};
    let allow_origin = match origins.origins() {
        None => AllowOrigin::any(),
        Some(list) => AllowOrigin::list(list.iter().filter_map(|o| HeaderValue::from_str(o).ok())),
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
}

/// The whole HTTP service: the REST API and, on the same port, the gateways over plain
/// WebSocket (`/` and `/ws`) and Socket.IO (`/socket.io/`).
pub async fn router(state: AppState) -> anyhow::Result<Router> {
    let app = gateways::app(&state).await?;
    // `/asyncapi.json` describes the gateways this router serves.
    let (mut ws, mut sio) = (wsgate_ws::WsAdapter::new(), wsgate_socketio::SocketIoAdapter::new());
    if let Some(compression) = &state.compression {
        ws = ws.compression(compression.clone());
        sio = sio.compression(compression.clone());
    }
    ws = ws.hibernate_after(state.hibernate_after);
    sio = sio.hibernate_after(state.hibernate_after);
    let mut rest = rest_router(state.clone()).merge(asyncapi::router(app.description()));
    if state.admin_ui.is_some() {
        rest = rest.merge(admin_ui::router().with_state(state));
    }
    let router = app.mount(rest, ws);
    Ok(app.mount(router, sio))
}

/// The gateways' description (`wsgate::describe`), from an app over an in-memory database:
/// nothing is written, no service is needed. What `blog types` and `blog asyncapi` print.
pub async fn description() -> anyhow::Result<wsgate::Description> {
    let mut config = Config::new("sqlite::memory:");
    config.jwt_secret = Some("only the description is made, nothing is signed".into());
    config.redis_url = None;
    let state = open(&config).await?;
    Ok(gateways::app(&state).await?.description())
}

/// Serves the app on `listener` until `shutdown` completes, then finishes in-flight requests.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Request spans name the path only: query strings can carry tokens (`?token=`).
    let trace = TraceLayer::new_for_http().make_span_with(|request: &axum::extract::Request| {
        tracing::info_span!("request", method = %request.method(), path = request.uri().path())
    });
    let app = router(state.clone()).await?.layer(trace);
    let addr = listener.local_addr().context("reading the listening address")?;
    tracing::info!(pid = std::process::id(), "listening on http://{addr}");
    // On shutdown axum stops accepting and finishes the HTTP requests in flight while, beside
    // it, the live connections stop reading, answer the messages they are handling, and close
    // with 1001 (or a Socket.IO disconnect). Handshakes that still come are refused (503).
    let timeout = state.gateway_config.drain_timeout + CLOSE_GRACE;
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    let started = std::sync::Arc::new(tokio::sync::Notify::new());
    let shutdown = {
        let started = started.clone();
        async move {
            shutdown.await;
            started.notify_one();
            tokio::spawn(async move {
                let left = state.server.close_all(CloseReason::GoingAway, timeout).await;
                let _ = closed_tx.send(left);
            });
        }
    };
    // wsgate's serve: as axum::serve, and quiet websockets can sleep.
    let serving = wsgate_ws::serve(listener, app).with_graceful_shutdown(shutdown);
    // HTTP requests get the same bound as messages: one waiting on a database that hangs does
    // not keep the process from exiting.
    let deadline = async {
        started.notified().await;
        tokio::time::sleep(timeout).await;
    };
    tokio::select! {
        served = serving => served.context("serving HTTP")?,
        () = deadline => {
            tracing::warn!(?timeout, "HTTP requests still in flight at the end of the shutdown timeout");
            return Ok(());
        }
    }
    // Absent when serving ended without a shutdown.
    if let Ok(left) = closed_rx.await
        && left > 0
    {
        tracing::warn!(connections = left, "connections still open at shutdown");
    }
    Ok(())
}

/// `blog serve`: opens the app, binds `host:port` and serves until Ctrl-C or SIGTERM. With
/// `--processes N`, N processes serve the port (`wsgate::processes`): this one starts the
/// other N-1 once the database is migrated, and stops them (SIGTERM) when it stops.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let processes = config.processes.max(1);
    if processes > 1 {
        if config.redis_url.as_deref().is_none_or(|url| url.trim().is_empty()) {
            anyhow::bail!(
                "--processes {processes} needs --redis-url (REDIS_URL): each process holds its own \
                 connections, and rooms and broadcasts reach the others only through Redis"
            );
        }
        if config.port == 0 {
            anyhow::bail!(
                "--processes {processes} needs a fixed --port (PORT): with port 0 each process \
                 would listen on a port of its own"
            );
        }
    }
    let state = open(&config).await?;
    let listener = if processes > 1 {
        let addr = tokio::net::lookup_host((config.host.as_str(), config.port))
            .await?
            .next()
            .with_context(|| format!("resolving {}", config.host))?;
        wsgate::processes::bind_reuseport(addr)
    } else {
        TcpListener::bind((config.host.as_str(), config.port)).await
    }
    .with_context(|| format!("binding {}:{}", config.host, config.port))?;
    // After the migrations, so that the copies find the database ready.
    let copies = wsgate::processes::Copies::start(processes).context("starting the copies")?;
    let served = run(listener, state, shutdown_signal()).await;
    copies.stop().await;
    served?;
    tracing::info!("shut down");
    Ok(())
}

/// `blog migrate`: applies pending migrations and returns.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let pool = db::connect(&config.database_url).await?;
    db::migrate(&pool, &config.database_url).await?;
    pool.close().await;
    tracing::info!("database is up to date");
    Ok(())
}

/// Completes on Ctrl-C or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
