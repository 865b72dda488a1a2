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
//! `wsgate-bench echo --url ws://127.0.0.1:3000/ws?token=… -c 64 -w 8 -d 10 --pid <server>`
//! keeps `w` `echo` messages in flight on each of `c` connections (plain WebSocket, or
//! `--protocol socketio`), optionally paced by `--rate`, spread over `--sources` loopback
//! addresses, with a live progress bar; it prints replies/s, latency percentiles from an HDR
//! histogram and the server's CPU microseconds per reply (`--json` writes the same).
//!
//! `wsgate-bench fanout --url ws://127.0.0.1:3000/?token=… [--url ws://127.0.0.1:3001/?token=…]
//! -n 10000 --subscribe '{"type":"subscribeEntry","entryId":1,"id":1}' --trigger-url
//! http://127.0.0.1:3000/entries/1/comments --trigger-token …` opens `n` plain WebSocket
//! connections spread over the URLs (several server instances), subscribes each, then, round
//! after round, POSTs the trigger request (which makes the server broadcast one event to every
//! subscriber) and times until every connection has received it: deliveries per second.
//!
//! `wsgate-bench broadcast --url ws://127.0.0.1:3000/ws?token=… -n 10000 -w 32 -d 10 --pid
//! <server>` has `n` subscribers join the echo-server's room and one publisher `shout` into it,
//! at most `w` events ahead of the room: deliveries/s, measured at the subscribers, and the
//! server's CPU per delivery.
//!
//! `wsgate-bench members --url ws://127.0.0.1:3000/ws?token=… -n 16000 --first-source 2
//! --sources 1 --ready-file F` holds `n` members of the echo-server's room and times one
//! broadcast to them, sent by `wsgate-bench shout --url …`: several `members` processes (over
//! distinct source addresses) hold more connections than one process may open (`bench/scale`).
//!
//! `wsgate-bench axum-echo --port 3100` serves a hand-written axum WebSocket echo with axum's
//! default buffers: the peer that wsgate's per-connection memory is compared with.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt, stream};
use tokio_tungstenite::tungstenite::Message;

mod broadcast;
mod connect;
mod echo;
mod floor;
mod members;
mod polling;

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

/// Where each connection goes and what it speaks.
#[derive(clap::Args, Clone, Debug)]
struct Target {
    /// WebSocket URL, token included (Socket.IO: `ws://host/socket.io/?EIO=4&transport=websocket`).
    #[arg(long)]
    url: String,
    /// The protocol spoken on each connection.
    #[arg(long, value_enum, default_value_t = Protocol::Ws)]
    protocol: Protocol,
    /// Socket.IO only: the auth payload of the namespace connect, as JSON.
    #[arg(long, default_value = "{}")]
    auth: String,
}

/// How long a run lasts and what each message carries.
#[derive(clap::Args, Clone, Debug)]
struct RunArgs {
    /// Seconds measured.
    #[arg(short = 'd', long, default_value_t = 10)]
    duration: u64,
    /// Seconds of warm-up before measuring.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Bytes of padding in each message's data.
    #[arg(long, default_value_t = 32)]
    payload: usize,
}

impl RunArgs {
    /// The measured time.
    fn duration(&self) -> Duration {
        Duration::from_secs(self.duration)
    }

    /// The warm-up before it.
    fn warmup(&self) -> Duration {
        Duration::from_secs(self.warmup)
    }
}

/// How a run reports.
#[derive(clap::Args, Clone, Debug)]
struct ReportArgs {
    /// Server process ids (repeatable), for the server's CPU time from /proc.
    #[arg(long)]
    pid: Vec<u32>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// A name for the report's row.
    #[arg(long, default_value = "server")]
    label: String,
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
        /// Socket.IO over HTTP long-polling (`--url http://…/socket.io/?EIO=4&transport=polling`),
        /// a poll waiting on each session, instead of a websocket.
        #[arg(long)]
        polling: bool,
    },
    /// Echo throughput and latency: each connection keeps `window` `echo` messages in flight
    /// for `duration` seconds (after a warm-up); prints replies/s, latency percentiles (HDR
    /// histogram) and, with `--pid`, the server's CPU time per reply.
    Echo {
        #[command(flatten)]
        target: Target,
        /// Connections.
        #[arg(short = 'c', long, default_value_t = 64)]
        connections: usize,
        /// Messages in flight per connection.
        #[arg(short = 'w', long, default_value_t = 8)]
        window: usize,
        #[command(flatten)]
        run: RunArgs,
        /// Total messages per second over all connections (open loop); unlimited when absent.
        #[arg(long)]
        rate: Option<u64>,
        /// Spread the connections over 127.0.0.1 … 127.0.0.N.
        #[arg(long, default_value_t = 1)]
        sources: u8,
        /// A soak run: every this many seconds, record the servers' resident memory (`--pid`),
        /// replies and errors so far; the report lists them and the memory's growth.
        #[arg(long)]
        sample_every: Option<u64>,
        #[command(flatten)]
        report: ReportArgs,
    },
    /// Connect rate: opens `n` authenticated connections, `concurrency` at a time, each set
    /// up (upgrade with the token; Socket.IO: namespace connect with `--auth`) then closed;
    /// prints connects/s, set-up latency and the server's CPU per connect.
    Connect {
        #[command(flatten)]
        target: Target,
        /// Connections in all.
        #[arg(short = 'n', long, default_value_t = 10_000)]
        connections: usize,
        /// Connections being set up at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Spread the connections over 127.0.0.1 … 127.0.0.N.
        #[arg(long, default_value_t = 4)]
        sources: u8,
        #[command(flatten)]
        report: ReportArgs,
    },
    /// Broadcast throughput: `n` subscribers join the room of the echo-server's `join`; a
    /// publisher's `shout` messages are emitted to all of them as `news`, at most `window`
    /// events ahead of the room; prints deliveries/s and the server's CPU per delivery.
    Broadcast {
        #[command(flatten)]
        target: Target,
        /// Subscribers (room members).
        #[arg(short = 'n', long, default_value_t = 10_000)]
        subscribers: usize,
        /// Events published beyond what the whole room has received.
        #[arg(short = 'w', long, default_value_t = 32)]
        window: usize,
        #[command(flatten)]
        run: RunArgs,
        /// Spread the subscribers over 127.0.0.1 … 127.0.0.N.
        #[arg(long, default_value_t = 4)]
        sources: u8,
        #[command(flatten)]
        report: ReportArgs,
    },
    /// Holds `n` members of the echo-server's room (plain WebSocket) and times one broadcast
    /// to them (sent by `shout`): delivery time p50/p99 at the members.
    Members {
        /// Plain WebSocket URL, token included.
        #[arg(long)]
        url: String,
        /// Members.
        #[arg(short = 'n', long, default_value_t = 10_000)]
        members: usize,
        /// Connections set up at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// The first source address: 127.0.0.N.
        #[arg(long, default_value_t = 1)]
        first_source: u8,
        /// Source addresses, from the first (each has about 28 000 ports to one server port).
        #[arg(long, default_value_t = 1)]
        sources: u8,
        /// Written with the number of members once all have joined.
        #[arg(long)]
        ready_file: Option<std::path::PathBuf>,
        /// Seconds to wait for the broadcast once ready.
        #[arg(long, default_value_t = 600)]
        wait: u64,
        /// Also write the report as JSON to this file.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// Sends one `shout` to the echo-server, carrying the time it was sent (for `members`).
    Shout {
        /// Plain WebSocket URL, token included.
        #[arg(long)]
        url: String,
    },
    /// Times the broadcast of one event to many subscribers, over one or several instances.
    Fanout {
        /// WebSocket URL, token included; repeat it for several instances (connections are
        /// spread evenly).
        #[arg(long, required = true)]
        url: Vec<String>,
        /// Number of subscribers.
        #[arg(short = 'n', long, default_value_t = 10_000)]
        connections: usize,
        /// Connections opened at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Text each connection sends to subscribe; it is subscribed when a reply arrives.
        #[arg(long)]
        subscribe: String,
        /// URL POSTed to make the server broadcast once (e.g. a comment's creation).
        #[arg(long)]
        trigger_url: String,
        /// Bearer token of the trigger request.
        #[arg(long)]
        trigger_token: Option<String>,
        /// JSON body of the trigger request.
        #[arg(long, default_value = r#"{"body":"fan-out"}"#)]
        trigger_body: String,
        /// The event every subscriber receives.
        #[arg(long, default_value = "commentCreated")]
        event: String,
        /// Broadcasts to time.
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        /// Process ids of the servers (repeat for several), to report their CPU time per
        /// delivery, read from `/proc`.
        #[arg(long)]
        pid: Vec<u32>,
    },
    /// Prints an HS256 token for `sub`, valid `ttl` seconds, signed with `JWT_SECRET`.
    Token {
        /// The subject.
        #[arg(long, default_value = "bench")]
        sub: String,
        /// Seconds of validity.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Serves a bare tokio-tungstenite echo with default settings: every text frame is sent
    /// back as it came (the floor a plain WebSocket framework is compared with).
    TungsteniteEcho {
        /// Port on 127.0.0.1.
        #[arg(long, default_value_t = 3102)]
        port: u16,
    },
    /// Serves the floor of a plain WebSocket echo: one thread on epoll, every text frame sent
    /// back as it came, nothing else (no runtime, no authentication, no JSON read): what the
    /// echo benchmark's system calls cost when the server's own work is next to nothing. It
    /// lingers before each wait as wsgate's runtime does (`WSGATE_LINGER_US`, 0: off, and
    /// `WSGATE_LINGER_MAX_US`).
    FloorEcho {
        /// Port on 127.0.0.1.
        #[arg(long, default_value_t = 3104)]
        port: u16,
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
    if let Command::FloorEcho { port } = cli.command {
        return floor::serve(port);
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        match cli.command {
            Command::Idle {
                url,
                connections,
                concurrency,
                hello,
                pid,
                settle,
                protocol,
                auth,
                polling,
            } => {
                let client =
                    Client { url, hello, protocol, auth, polling, http: reqwest::Client::new() };
                idle(client, connections, concurrency, pid, settle).await
            }
            Command::Fanout {
                url,
                connections,
                concurrency,
                subscribe,
                trigger_url,
                trigger_token,
                trigger_body,
                event,
                rounds,
                pid,
            } => {
                let trigger =
                    Trigger { url: trigger_url, token: trigger_token, body: trigger_body };
                let pids = pid;
                let setup = Fanout { urls: url, connections, concurrency, subscribe, event, pids };
                fanout(setup, trigger, rounds).await
            }
            Command::Echo {
                target,
                connections,
                window,
                run,
                rate,
                sources,
                sample_every,
                report,
            } => {
                let setup = echo::EchoSetup {
                    target,
                    connections,
                    window,
                    run,
                    rate,
                    sources,
                    sample_every: sample_every.map(Duration::from_secs),
                    report,
                };
                echo::run(setup).await.map(|_| ())
            }
            Command::Broadcast { target, subscribers, window, run, sources, report } => {
                let setup =
                    broadcast::BroadcastSetup { target, subscribers, window, run, sources, report };
                broadcast::run(setup).await.map(|_| ())
            }
            Command::Members {
                url,
                members,
                concurrency,
                first_source,
                sources,
                ready_file,
                wait,
                json,
            } => {
                let wait = Duration::from_secs(wait);
                let setup = members::MembersSetup {
                    url,
                    members,
                    concurrency,
                    first_source,
                    sources,
                    ready_file,
                    wait,
                    json,
                };
                members::members(setup).await
            }
            Command::Shout { url } => members::shout(&url).await,
            Command::AxumEcho { port } => axum_echo(port).await,
            Command::Connect { target, connections, concurrency, sources, report } => {
                let setup =
                    connect::ConnectSetup { target, connections, concurrency, sources, report };
                connect::run(setup).await
            }
            Command::Token { sub, ttl } => {
                let secret = std::env::var("JWT_SECRET").context("JWT_SECRET must be set")?;
                let keys = wsgate::JwtKeys::hs256(secret.as_bytes());
                println!("{}", keys.sign(sub, Duration::from_secs(ttl))?);
                Ok(())
            }
            Command::TungsteniteEcho { port } => tungstenite_echo(port).await,
            Command::FloorEcho { .. } => unreachable!("served without a runtime"),
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
    /// Socket.IO over long-polling.
    polling: bool,
    /// For long-polling: one pool of HTTP connections.
    http: reqwest::Client,
}

async fn idle(
    client: Client,
    n: usize,
    concurrency: usize,
    pid: Option<u32>,
    settle: u64,
) -> anyhow::Result<()> {
    let before = pid.map(rss_kib).transpose()?;
    let anon_before = pid.map(|pid| status_kib(pid, "RssAnon")).transpose()?;
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
    if let (Some(pid), Some(before)) = (pid, anon_before) {
        // Anonymous memory alone: what the kernel can evict (the program's file pages) counts
        // in VmRSS and not here.
        let after = status_kib(pid, "RssAnon")?;
        let per = (after.saturating_sub(before)) as f64 / n as f64;
        println!("anonymous (RssAnon) per connection: {per:.2} KiB");
    }
    tokio::time::sleep(Duration::from_secs(settle)).await;
    // A held connection's task runs until told to stop: one that ended lost its connection.
    let lost = tasks.iter().filter(|t| t.is_finished()).count();
    println!("held: {} of {n} connections still open", n - lost);
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    if lost > 0 {
        bail!("{lost} of {n} connections were lost while held");
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
    if client.polling {
        let opened =
            polling::Session::open(client.http.clone(), &client.url, &client.auth, &client.hello);
        match tokio::time::timeout(Duration::from_secs(15), opened).await {
            Ok(Ok(session)) => {
                let _ = ready.send(Ok(()));
                if let Err(e) = session.hold(stop).await {
                    eprintln!("a long-polling session was lost: {e:#}");
                }
            }
            Ok(Err(e)) => drop(ready.send(Err(e))),
            Err(_) => drop(ready.send(Err(anyhow::anyhow!("session not set up within 15 s")))),
        }
        return;
    }
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
pub(crate) async fn next_text<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    wanted: impl Fn(&str) -> bool,
) -> anyhow::Result<String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
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

/// The subscribers of a fan-out run.
struct Fanout {
    urls: Vec<String>,
    connections: usize,
    concurrency: usize,
    subscribe: String,
    event: String,
    pids: Vec<u32>,
}

/// The request that makes the server broadcast.
struct Trigger {
    url: String,
    token: Option<String>,
    body: String,
}

/// Deliveries counted across every subscriber, and a signal when a round is complete.
#[derive(Default)]
struct Tally {
    received: std::sync::atomic::AtomicUsize,
    target: std::sync::atomic::AtomicUsize,
    done: tokio::sync::Notify,
    /// When the round's first delivery arrived, in microseconds since `epoch` (0: not yet).
    first: std::sync::atomic::AtomicU64,
    epoch: std::sync::OnceLock<Instant>,
}

async fn fanout(setup: Fanout, trigger: Trigger, rounds: usize) -> anyhow::Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    let n = setup.connections;
    let tally = Arc::new(Tally::default());
    let needle = Arc::new(format!(r#""event":"{}""#, setup.event));
    let started = Instant::now();
    let opened: Vec<_> = stream::iter(0..n)
        .map(|i| {
            let client = Client {
                url: setup.urls[i % setup.urls.len()].clone(),
                hello: setup.subscribe.clone(),
                protocol: Protocol::Ws,
                auth: String::new(),
                polling: false,
                http: reqwest::Client::new(),
            };
            async move {
                let phase = std::sync::Mutex::new("connecting");
                tokio::time::timeout(Duration::from_secs(15), open(&client, &phase))
                    .await
                    .map_err(|_| anyhow::anyhow!("subscriber not set up within 15 s"))?
            }
        })
        .buffer_unordered(setup.concurrency.max(1))
        .collect()
        .await;
    let mut tasks = Vec::with_capacity(n);
    for ws in opened {
        let (ws, tally, needle) = (ws?, tally.clone(), needle.clone());
        tasks.push(tokio::spawn(async move {
            let (_sink, mut frames) = ws.split();
            while let Some(Ok(frame)) = frames.next().await {
                if let Message::Text(text) = frame
                    && text.as_str().contains(needle.as_str())
                {
                    let now = tally.received.fetch_add(1, Ordering::AcqRel) + 1;
                    if tally.first.load(Ordering::Acquire) == 0
                        && let Some(epoch) = tally.epoch.get()
                    {
                        let at = u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
                        let _ = tally.first.compare_exchange(
                            0,
                            at.max(1),
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        );
                    }
                    if now == tally.target.load(Ordering::Acquire) {
                        tally.done.notify_one();
                    }
                }
            }
        }));
    }
    println!(
        "{n} subscribers over {} instance(s), set up in {:.2?}",
        setup.urls.len(),
        started.elapsed()
    );
    let http = reqwest::Client::new();
    let mut rates = Vec::with_capacity(rounds);
    let mut firsts = Vec::with_capacity(rounds);
    let mut lasts = Vec::with_capacity(rounds);
    let epoch = *tally.epoch.get_or_init(Instant::now);
    let cpu_before = cpu_micros_total(&setup.pids)?;
    for round in 1..=rounds {
        tally.target.store(n * round, Ordering::Release);
        tally.first.store(0, Ordering::Release);
        let mut request = http
            .post(&trigger.url)
            .header("content-type", "application/json")
            .body(trigger.body.clone());
        if let Some(token) = &trigger.token {
            request = request.bearer_auth(token);
        }
        let sent = Instant::now();
        let done = tally.done.notified();
        let response = request.send().await.context("trigger request")?;
        if !response.status().is_success() {
            bail!("trigger answered {}: {}", response.status(), response.text().await?);
        }
        if tally.received.load(Ordering::Acquire) < n * round {
            tokio::time::timeout(Duration::from_secs(30), done).await.with_context(|| {
                let got = tally.received.load(Ordering::Acquire) - n * (round - 1);
                format!("round {round}: {got} of {n} deliveries within 30 s")
            })?;
        }
        let elapsed = sent.elapsed();
        let rate = n as f64 / elapsed.as_secs_f64();
        let sent_at = u64::try_from(sent.duration_since(epoch).as_micros()).unwrap_or(0);
        let first = tally.first.load(Ordering::Acquire).saturating_sub(sent_at);
        println!(
            "round {round:>3}: {n} deliveries in {elapsed:>9.2?}  {rate:>12.0} deliveries/s  \
             first after {:.2} ms",
            first as f64 / 1000.0
        );
        rates.push(rate);
        firsts.push(first);
        lasts.push(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cpu = cpu_micros_total(&setup.pids)? - cpu_before;
    // Late duplicates would show up now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let total = tally.received.load(Ordering::Acquire);
    if total != n * rounds {
        bail!("{total} deliveries for {rounds} broadcasts to {n} subscribers: some doubled");
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    let best = rates[rates.len() - 1];
    firsts.sort_unstable();
    lasts.sort_unstable();
    let pct = |v: &[u64], p: f64| {
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[i.min(v.len() - 1)] as f64 / 1000.0
    };
    println!(
        "latency from the trigger request: first delivery p50 {:.2} ms, p99 {:.2} ms; last \
         delivery p50 {:.2} ms, p99 {:.2} ms",
        pct(&firsts, 0.5),
        pct(&firsts, 0.99),
        pct(&lasts, 0.5),
        pct(&lasts, 0.99)
    );
    println!(
        "median {median:.0} deliveries/s, best {best:.0} (from the trigger request sent to the \
         last subscriber's receipt; {total} deliveries in all, none missing, none doubled)"
    );
    if !setup.pids.is_empty() {
        // Includes each round's REST request and database write, and the 100 ms pauses.
        let per = cpu as f64 / total as f64;
        println!("server CPU: {per:.2} us per delivery ({} ms in all)", cpu / 1000);
    }
    for task in tasks {
        task.abort();
    }
    Ok(())
}

/// The CPU time of several processes together, in microseconds.
pub(crate) fn cpu_micros_total(pids: &[u32]) -> anyhow::Result<u64> {
    Ok(cpu_split_total(pids)?.total())
}

/// CPU time in microseconds, split between user space and the kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Cpu {
    pub(crate) user: u64,
    pub(crate) kernel: u64,
}

impl Cpu {
    pub(crate) fn total(self) -> u64 {
        self.user + self.kernel
    }

    /// The time spent since `before`.
    pub(crate) fn since(self, before: Cpu) -> Cpu {
        Cpu {
            user: self.user.saturating_sub(before.user),
            kernel: self.kernel.saturating_sub(before.kernel),
        }
    }
}

/// The user and kernel CPU time of several processes together.
pub(crate) fn cpu_split_total(pids: &[u32]) -> anyhow::Result<Cpu> {
    pids.iter().try_fold(Cpu::default(), |sum, &p| {
        let cpu = cpu_micros(p)?;
        Ok(Cpu { user: sum.user + cpu.user, kernel: sum.kernel + cpu.kernel })
    })
}

/// User and system CPU time of a process in microseconds, from `/proc/<pid>/stat`.
fn cpu_micros(pid: u32) -> anyhow::Result<Cpu> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let user: u64 = fields.get(11).context("no utime")?.parse()?;
    let kernel: u64 = fields.get(12).context("no stime")?.parse()?;
    // Linux reports in clock ticks of USER_HZ, 100 per second on every mainstream platform.
    Ok(Cpu { user: user * 10_000, kernel: kernel * 10_000 })
}

/// Resident memory of a process in KiB, from `/proc/<pid>/status`.
pub(crate) fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmRSS")
}

/// A field in KiB of `/proc/<pid>/status` (`VmRSS`, `RssAnon`, ...).
fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|rest| rest.starts_with(':')))
        .with_context(|| format!("no {field} line"))?;
    let kib = line.split_whitespace().nth(1).with_context(|| format!("malformed {field} line"))?;
    Ok(kib.parse()?)
}

async fn tungstenite_echo(port: u16) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("tokio-tungstenite echo on ws://127.0.0.1:{port}/");
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return };
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_text() && ws.send(msg).await.is_err() {
                    break;
                }
            }
        });
    }
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
