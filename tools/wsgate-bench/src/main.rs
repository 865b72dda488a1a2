//! Load generator for wsgate servers.
//!
//! `wsgate-bench idle --url ws://127.0.0.1:3000/?token=… -n 10000 --pid <server pid>` opens
//! `n` WebSocket connections, sends each one message and waits for its reply (so every
//! connection is fully set up), lets the server settle, and prints the server's resident memory
//! per connection, read from `/proc/<pid>/status` before and after.
//!
//! With `--protocol socketio`, the URL is a Socket.IO websocket endpoint
//! (`ws://127.0.0.1:3000/socket.io/?EIO=4&transport=websocket`): each connection opens the
//! root namespace with `--auth` as its auth payload, emits `--hello` as an event array and waits
//! for an event back, and answers the server's pings while it waits.
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

/// What each connection speaks.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Protocol {
    /// Plain WebSocket with JSON frames.
    Ws,
    /// Socket.IO v5 over the websocket transport.
    Socketio,
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
        /// The protocol spoken on each connection.
        #[arg(long, value_enum, default_value_t = Protocol::Ws)]
        protocol: Protocol,
        /// Socket.IO only: the auth payload of the namespace connect, as JSON.
        #[arg(long, default_value = "{}")]
        auth: String,
    },
    /// Serves a plain axum WebSocket echo with default settings (the comparison peer).
    AxumEcho {
        /// Port on 127.0.0.1.
        #[arg(long, default_value_t = 3100)]
        port: u16,
    },
    /// Serves a bare socketioxide echo with default settings (the Socket.IO comparison peer):
    /// every event is emitted back to its sender.
    SocketioxideEcho {
        /// Port on 127.0.0.1.
        #[arg(long, default_value_t = 3101)]
        port: u16,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        match cli.command {
            Command::Idle { url, connections, concurrency, hello, pid, settle, protocol, auth } => {
                let client = Client { url, hello, protocol, auth };
                idle(client, connections, concurrency, pid, settle).await
            }
            Command::AxumEcho { port } => axum_echo(port).await,
            Command::SocketioxideEcho { port } => socketioxide_echo(port).await,
        }
    })
}

/// How each connection is opened.
#[derive(Clone, Debug)]
struct Client {
    url: String,
    hello: String,
    protocol: Protocol,
    auth: String,
}

async fn idle(
    client: Client,
    n: usize,
    concurrency: usize,
    pid: Option<u32>,
    settle: u64,
) -> anyhow::Result<()> {
    let before = pid.map(rss_kib).transpose()?;
    let started = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let client = std::sync::Arc::new(client);
    let results: Vec<_> = stream::iter(0..n)
        .map(|_| {
            let (client, stop) = (client.clone(), stop_rx.clone());
            async move {
                let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
                let task = tokio::spawn(hold(client, ready_tx, stop));
                match ready_rx.await {
                    Ok(Ok(())) => Ok(task),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(anyhow::anyhow!("connection task ended early")),
                }
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut tasks = Vec::with_capacity(n);
    for r in results {
        tasks.push(r?);
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
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens one connection, reports when it is set up, then keeps it alive until told to stop.
async fn hold(
    client: std::sync::Arc<Client>,
    ready: tokio::sync::oneshot::Sender<anyhow::Result<()>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let phase = std::sync::Mutex::new("connecting");
    let opened = tokio::time::timeout(Duration::from_secs(15), open(&client, &phase)).await;
    let mut ws = match opened {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            let _ = ready.send(Err(e));
            return;
        }
        Err(_) => {
            let phase = *phase.lock().unwrap_or_else(|e| e.into_inner());
            let _ = ready.send(Err(anyhow::anyhow!("connection not set up within 15 s: {phase}")));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            frame = ws.next() => match frame {
                // Engine.IO ping: answer, or the server drops the connection.
                Some(Ok(Message::Text(t))) if t.as_str() == "2" => {
                    if ws.send(Message::text("3")).await.is_err() {
                        break;
                    }
                }
                Some(Ok(_)) => {}
                _ => break,
            },
        }
    }
    let _ = ws.close(None).await;
}

async fn open(client: &Client, phase: &std::sync::Mutex<&'static str>) -> anyhow::Result<Socket> {
    let set = |p| *phase.lock().unwrap_or_else(|e| e.into_inner()) = p;
    let (mut ws, _) = tokio_tungstenite::connect_async(&client.url).await.context("connect")?;
    set("waiting for the first reply");
    match client.protocol {
        Protocol::Ws => {
            if !client.hello.is_empty() {
                ws.send(Message::text(client.hello.as_str())).await?;
                next_text(&mut ws, |_| true).await?;
            }
        }
        Protocol::Socketio => {
            next_text(&mut ws, |t| t.starts_with('0')).await.context("engine.io open")?;
            set("namespace connect");
            ws.send(Message::text(format!("40{}", client.auth))).await?;
            let reply = next_text(&mut ws, |t| t.starts_with("40") || t.starts_with("44"))
                .await
                .context("namespace connect")?;
            if reply.starts_with("44") {
                bail!("namespace connect refused: {reply}");
            }
            if !client.hello.is_empty() {
                set("hello event");
                ws.send(Message::text(format!("42{}", client.hello))).await?;
                next_text(&mut ws, |t| t.starts_with("42") || t.starts_with("43"))
                    .await
                    .context("reply to the hello event")?;
            }
        }
    }
    Ok(ws)
}

/// The next text frame that `wanted` accepts; Engine.IO pings on the way are answered.
async fn next_text(ws: &mut Socket, wanted: impl Fn(&str) -> bool) -> anyhow::Result<String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.as_str() == "2" => ws.send(Message::text("3")).await?,
            Some(Ok(Message::Text(t))) if wanted(t.as_str()) => return Ok(t.as_str().to_owned()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => bail!("closed before replying"),
        }
    }
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

async fn socketioxide_echo(port: u16) -> anyhow::Result<()> {
    use socketioxide::SocketIo;
    use socketioxide::extract::{Data, Event, SocketRef};
    let (layer, io) = SocketIo::new_layer();
    io.ns("/", async |socket: SocketRef| {
        socket.on_fallback(
            async |socket: SocketRef, Event(event): Event, Data(data): Data<serde_json::Value>| {
                let _ = socket.emit(event.as_str(), &data);
            },
        );
    });
    let router = axum::Router::new().layer(layer);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("socketioxide echo on ws://127.0.0.1:{port}/socket.io/");
    axum::serve(listener, router).await?;
    Ok(())
}
