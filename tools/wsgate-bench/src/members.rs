//! `wsgate-bench members` and `wsgate-bench shout`: one broadcast to very many room members,
//! timed at each member, where the members may be held by several load processes.
//!
//! `members` opens `n` plain WebSocket connections to the echo-server, has each `join` its room
//! (acknowledged), writes `--ready-file` once all have joined, then waits for one `news` event
//! on each. `shout` sends one `shout` whose data carries the wall-clock time it was sent (`t`,
//! microseconds since the Unix epoch); each member's delivery time is its receipt time minus
//! `t`, so processes on the same machine measure against one clock. `members` prints the
//! members held, those that received the event, and the p50/p99/max delivery time.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt, stream};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use crate::echo::connect_from;

/// What `members` runs.
#[derive(Clone, Debug)]
pub(crate) struct MembersSetup {
    /// Plain WebSocket URL, token included.
    pub(crate) url: String,
    /// Members to hold.
    pub(crate) members: usize,
    /// Connections being set up at once.
    pub(crate) concurrency: usize,
    /// The first source address is 127.0.0.`first_source`.
    pub(crate) first_source: u8,
    /// Source addresses used, from the first.
    pub(crate) sources: u8,
    /// Written (with the number of members) once all have joined.
    pub(crate) ready_file: Option<PathBuf>,
    /// How long to wait for the broadcast once ready.
    pub(crate) wait: Duration,
    /// Also write the report as JSON here.
    pub(crate) json: Option<PathBuf>,
}

/// What `members` reports.
#[derive(Debug, Serialize)]
struct MembersReport {
    members: usize,
    received: usize,
    lost: usize,
    join_seconds: f64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
}

/// Microseconds since the Unix epoch: the clock every load process shares.
fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Holds the members, waits for the broadcast, prints (and optionally writes) the report.
pub(crate) async fn members(setup: MembersSetup) -> anyhow::Result<()> {
    let setup = Arc::new(setup);
    let started = Instant::now();
    let times = Arc::new(Mutex::new(Vec::with_capacity(setup.members)));
    // Each member reads from the moment it has joined: one that waited unread for the others
    // would miss the server's pings and be dropped.
    let joined: Vec<anyhow::Result<_>> = stream::iter(0..setup.members)
        .map(|i| {
            let (setup, times) = (setup.clone(), times.clone());
            async move {
                let last = usize::from(setup.sources.max(1));
                let octet = usize::from(setup.first_source.max(1)) + i % last;
                let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, octet.min(254) as u8));
                let mut ws = connect_from(&setup.url, source).await?;
                ws.send(Message::text(r#"{"event":"join","id":1}"#)).await?;
                let reply =
                    crate::next_text(&mut ws, |t| !t.starts_with(r#"{"event":"session""#)).await?;
                if !reply.contains("true") {
                    bail!("join refused: {reply}");
                }
                Ok(tokio::spawn(receive(ws, times)))
            }
        })
        .buffer_unordered(setup.concurrency.max(1))
        .collect()
        .await;
    let join_seconds = started.elapsed().as_secs_f64();
    let mut tasks = Vec::with_capacity(setup.members);
    let mut failed = 0;
    for task in joined {
        match task {
            Ok(task) => tasks.push(task),
            Err(e) => {
                if failed == 0 {
                    eprintln!("a member could not join: {e:#}");
                }
                failed += 1;
            }
        }
    }
    let held = tasks.len();
    eprintln!("{held} members joined in {join_seconds:.1} s ({failed} failed)");
    if let Some(path) = &setup.ready_file {
        std::fs::write(path, held.to_string())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let deadline = Instant::now() + setup.wait;
    let mut first = None;
    loop {
        let received = times.lock().map_or(0, |t| t.len());
        let lost = tasks.iter().filter(|t| t.is_finished()).count();
        if received > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        // Done when every live member has it, or 10 s after the first receipt at the latest.
        let late = first.is_some_and(|f| f.elapsed() > Duration::from_secs(10));
        if received + lost >= held || Instant::now() > deadline || late {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lost = tasks.iter().filter(|t| t.is_finished()).count();
    let times = times.lock().map(|t| t.clone()).unwrap_or_default();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for &t in &times {
        histogram.record(t.clamp(1, 600_000_000))?;
    }
    let report = MembersReport {
        members: held,
        received: times.len(),
        lost,
        join_seconds,
        p50_us: histogram.value_at_quantile(0.5),
        p99_us: histogram.value_at_quantile(0.99),
        max_us: histogram.max(),
    };
    println!(
        "{} members, {} received the broadcast ({} lost): delivery p50 {} us, p99 {} us, max {} us",
        report.members, report.received, report.lost, report.p50_us, report.p99_us, report.max_us
    );
    if let Some(path) = &setup.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    for task in tasks {
        task.abort();
    }
    Ok(())
}

/// A member: answers pings (tungstenite does, while read) and records the broadcast's delivery
/// time; returns only if the connection ends.
async fn receive(mut ws: crate::echo::Socket, times: Arc<Mutex<Vec<u64>>>) {
    while let Some(Ok(frame)) = ws.next().await {
        let Message::Text(text) = frame else { continue };
        if text.as_str().starts_with(r#"{"event":"news""#) {
            let received = now_us();
            let sent = serde_json::from_str::<serde_json::Value>(text.as_str())
                .ok()
                .and_then(|v| v["data"]["t"].as_u64());
            if let (Some(sent), Ok(mut times)) = (sent, times.lock()) {
                times.push(received.saturating_sub(sent));
            }
        }
    }
}

/// Sends one `shout` carrying the time it was sent (`{"t": µs since the epoch}`).
pub(crate) async fn shout(url: &str) -> anyhow::Result<()> {
    let mut ws = connect_from(url, IpAddr::V4(Ipv4Addr::LOCALHOST)).await?;
    let message = serde_json::json!({ "event": "shout", "data": { "t": now_us() } });
    ws.send(Message::text(message.to_string())).await.context("shouting")?;
    // Let the server read it before the connection closes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = ws.send(Message::Close(None)).await;
    Ok(())
}
