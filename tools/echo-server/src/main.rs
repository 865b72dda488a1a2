//! `echo-server`: the server the benchmarks measure. One `echo` gateway that answers
//! `{event: "echo", data}` with the data it was sent, over plain WebSocket (`/ws`, JSON frames)
//! and Socket.IO (`/socket.io/`) on one port, behind `JwtAuth` (HS256, signature and `exp`
//! checked) as the blog's gateways are.
//!
//! For the broadcast benchmark, `join` puts the connection in the room `broadcast` (its ack is
//! `true`) and `shout` emits `news` with the data it was sent to every member of that room,
//! over both transports.
//!
//! `JWT_SECRET` (required) signs the tokens; `PORT` (default 3000) and `HOST` (default
//! 127.0.0.1) say where to listen; `RECOVERY=1` turns connection state recovery on (its
//! defaults: 2 minutes, 10 000 events per namespace); `HIBERNATE_AFTER_MS` says after how
//! long quiet connections sleep (the adapters' default, 15 s, when unset; `0`: never). A
//! token's subject becomes the connection's user; no database is involved, so the figures are
//! the framework's own.
//!
//! `EXIT_AFTER_SECS=N` ends the process N seconds after it starts, at once, closing nothing:
//! for a heap profiler that reports what is live when the process exits (DHAT's bytes at the
//! end), with the connections still held (docs/PERFORMANCE.md).
//!
//! `REDIS_URL` links the room through Redis pub/sub (channel `echo`), as the blog's instances
//! are; `PROCESSES=N` (default 1) serves the port from N processes (`SO_REUSEPORT`, see
//! `wsgate::processes`), which needs `REDIS_URL` and a fixed `PORT`.

use anyhow::Context;
use axum::Router;
use serde_json::value::RawValue;
use wsgate::{
    Ack, App, AppConfig, Claims, Connection, Data, JwtAuth, JwtKeys, RateLimit, Server,
    WsException, WsResponse, gateway,
};

/// As the blog: jemalloc rather than glibc's malloc, its background threads giving freed
/// memory back on a timer (built so by .cargo/config.toml; docs/PERFORMANCE.md).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

struct EchoGateway;

/// The room of the broadcast benchmark.
const ROOM: &str = "broadcast";

#[gateway]
impl EchoGateway {
    #[subscribe_message("echo")]
    async fn echo(&self, Data(data): Data<Box<RawValue>>) -> WsResponse<Box<RawValue>> {
        WsResponse::new("echo", data)
    }

    #[subscribe_message("join")]
    async fn join(&self, conn: Connection) -> Result<Ack<bool>, WsException> {
        conn.join(ROOM)?;
        Ok(Ack(true))
    }

    #[subscribe_message("shout")]
    async fn shout(
        &self,
        server: Server,
        Data(data): Data<Box<RawValue>>,
    ) -> Result<(), WsException> {
        server.to(ROOM).emit("news", &data).map_err(|e| WsException::new(e.to_string()))?;
        Ok(())
    }
}

// The runtime of `wsgate::runtime`: workers linger before they sleep when clients pipeline
// (`WSGATE_LINGER_US`, default 20, `0`: off; up to `WSGATE_LINGER_MAX_US`, default 320).
fn main() -> anyhow::Result<()> {
    wsgate::runtime::builder().build()?.block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let secret = std::env::var("JWT_SECRET").context("JWT_SECRET must be set")?;
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p.parse().context("PORT must be a port number")?,
        Err(_) => 3000,
    };
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let auth = JwtAuth::new(JwtKeys::hs256(secret.as_bytes()), |claims: Claims| async move {
        // The subject is the connection's user: no database to ask.
        Ok::<_, std::convert::Infallible>(Some(claims.sub))
    });
    // Load tests send thousands of messages per second per connection: the rate limit stays
    // on (its cost is part of what is measured), far above the load.
    let config = AppConfig {
        rate_limit: Some(RateLimit { per_second: 1e9, burst: 1_000_000 }),
        // Load comes from a few loopback addresses.
        max_connections_per_peer: None,
        recovery: std::env::var("RECOVERY").is_ok_and(|v| v == "1").then(wsgate::Recovery::default),
        ..AppConfig::default()
    };
    let processes: usize = match std::env::var("PROCESSES") {
        Ok(p) => p.parse().context("PROCESSES must be a number")?,
        Err(_) => 1,
    };
    let redis_url = std::env::var("REDIS_URL").ok().filter(|u| !u.trim().is_empty());
    if processes > 1 && redis_url.is_none() {
        anyhow::bail!("PROCESSES > 1 needs REDIS_URL: the processes' rooms are linked through it");
    }
    if processes > 1 && port == 0 {
        anyhow::bail!("PROCESSES > 1 needs a fixed PORT: with 0 each process would get its own");
    }
    let server = match &redis_url {
        Some(url) => {
            Server::with_broker(wsgate_redis::RedisBroker::connect_with(url, "echo").await?)
        }
        None => Server::new(),
    };
    let app = App::builder()
        .server(server)
        .config(config)
        .middleware(auth)
        .gateway(EchoGateway)
        .build()
        .await?;
    let (mut ws, mut sio) = (wsgate_ws::WsAdapter::new(), wsgate_socketio::SocketIoAdapter::new());
    // HIBERNATE_AFTER_MS: quiet connections sleep after that long (0: never; unset: the
    // adapters' default, 15 s).
    if let Ok(ms) = std::env::var("HIBERNATE_AFTER_MS") {
        let ms: u64 = ms.parse().context("HIBERNATE_AFTER_MS must be milliseconds")?;
        let after = (ms > 0).then(|| std::time::Duration::from_millis(ms));
        (ws, sio) = (ws.hibernate_after(after), sio.hibernate_after(after));
    }
    // PING_INTERVAL_MS: how often plain WebSocket connections are pinged (default 25 s), to
    // measure what heartbeats cost, awake and asleep.
    if let Ok(ms) = std::env::var("PING_INTERVAL_MS") {
        let ms: u64 = ms.parse().context("PING_INTERVAL_MS must be milliseconds")?;
        ws = ws.ping_interval(std::time::Duration::from_millis(ms));
    }
    if let Ok(secs) = std::env::var("EXIT_AFTER_SECS") {
        let secs: u64 = secs.parse().context("EXIT_AFTER_SECS must be a number of seconds")?;
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
            std::process::exit(0);
        });
    }
    let router = app.mount(Router::new(), ws);
    let router = app.mount(router, sio);
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .next()
        .with_context(|| format!("resolving {host}"))?;
    let listener = if processes > 1 {
        wsgate::processes::bind_reuseport(addr)
    } else {
        tokio::net::TcpListener::bind(addr).await
    }
    .with_context(|| format!("binding {host}:{port}"))?;
    let copies = wsgate::processes::Copies::start(processes)?;
    println!(
        "echo-server listening on http://{} (pid {})",
        listener.local_addr()?,
        std::process::id()
    );
    wsgate_ws::serve(listener, router).with_graceful_shutdown(shutdown()).await?;
    copies.stop().await;
    Ok(())
}

/// Ctrl-C or, on Unix, SIGTERM.
async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
