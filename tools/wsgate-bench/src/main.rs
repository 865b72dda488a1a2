//! Load generator for wsgate servers.
//!
//! `wsgate-bench idle --url ws://127.0.0.1:3000/?token=… -n 10000 --pid <server pid>` opens
//! `n` WebSocket connections, sends each one message and waits for its reply (so every
//! connection is fully set up), lets the server settle, and prints the server's resident memory
//! per connection, read from `/proc/<pid>/status` before and after.
//!
//! `wsgate-bench axum-echo --port 3100` serves a hand-written axum WebSocket echo with axum's
//! default buffers: the peer that wsgate's per-connection memory is compared with.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt, stream};
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
#[command(about = "Load generator for wsgate servers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Opens many idle connections and reports the server's memory per connection.
    Idle {
        /// WebSocket URL, token included.
        #[arg(long)]
        url: String,
        /// Number of connections.
        #[arg(short = 'n', long, default_value_t = 10_000)]
        connections: usize,
        /// Connections opened at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Text sent on each connection once open; the connection counts when a reply arrives.
        #[arg(long, default_value = r#"{"event":"ping","id":1}"#)]
        hello: String,
        /// The server's process id, to read its resident memory.
        #[arg(long)]
        pid: Option<u32>,
        /// Seconds to wait before measuring, and to keep the connections open after.
        #[arg(long, default_value_t = 3)]
        settle: u64,
    },
    /// Serves a plain axum WebSocket echo with default settings (the comparison peer).
    AxumEcho {
        /// Port on 127.0.0.1.
        #[arg(long, default_value_t = 3100)]
        port: u16,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        match cli.command {
            Command::Idle { url, connections, concurrency, hello, pid, settle } => {
                idle(&url, connections, concurrency, &hello, pid, settle).await
            }
            Command::AxumEcho { port } => axum_echo(port).await,
        }
    })
}

async fn idle(
    url: &str,
    n: usize,
    concurrency: usize,
    hello: &str,
    pid: Option<u32>,
    settle: u64,
) -> anyhow::Result<()> {
    let before = pid.map(rss_kib).transpose()?;
    let started = Instant::now();
    let results: Vec<_> = stream::iter(0..n)
        .map(|_| open(url, hello))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut sockets = Vec::with_capacity(n);
    for r in results {
        sockets.push(r?);
    }
    println!("opened {n} connections in {:.2?}", started.elapsed());
    tokio::time::sleep(Duration::from_secs(settle)).await;
    if let (Some(pid), Some(before)) = (pid, before) {
        let after = rss_kib(pid)?;
        let per = (after.saturating_sub(before)) as f64 / n as f64;
        println!("server rss: {before} KiB before, {after} KiB with {n} idle connections");
        println!("per connection: {per:.2} KiB");
    }
    tokio::time::sleep(Duration::from_secs(settle)).await;
    drop(sockets);
    Ok(())
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(url: &str, hello: &str) -> anyhow::Result<Socket> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.context("connect")?;
    if !hello.is_empty() {
        ws.send(Message::text(hello)).await?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(_))) => break,
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
                None => bail!("closed before replying"),
            }
        }
    }
    Ok(ws)
}

/// Resident memory of a process in KiB, from `/proc/<pid>/status`.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS line")?;
    let kib = line.split_whitespace().nth(1).context("malformed VmRSS line")?;
    Ok(kib.parse()?)
}

async fn axum_echo(port: u16) -> anyhow::Result<()> {
    use axum::extract::ws::{WebSocket, WebSocketUpgrade};
    async fn echo(mut socket: WebSocket) {
        while let Some(Ok(msg)) = socket.recv().await {
            if matches!(msg, axum::extract::ws::Message::Text(_)) && socket.send(msg).await.is_err()
            {
                break;
            }
        }
    }
    let router = axum::Router::new()
        .route("/", axum::routing::get(|ws: WebSocketUpgrade| async move { ws.on_upgrade(echo) }));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("axum echo on ws://127.0.0.1:{port}/");
    axum::serve(listener, router).await?;
    Ok(())
}
