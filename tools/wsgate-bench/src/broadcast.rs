//! `wsgate-bench broadcast`: a stream of events, each emitted to every member of one room,
//! measured at the members: deliveries per second and the server's CPU per delivery.
//!
//! `n` subscribers join the room (`join`, acknowledged); one publisher sends `shout` messages,
//! each of which the server emits as `news` to the whole room. The publisher keeps at most
//! `window` events ahead of what the room has received in total, so that no member's queue
//! overflows: the run measures how fast the server delivers, not how much it can buffer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt, stream};
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use crate::Protocol;
use crate::echo::{connect_from, socketio_handshake, source};

/// What to run.
#[derive(Clone, Debug)]
pub(crate) struct BroadcastSetup {
    pub(crate) target: crate::Target,
    pub(crate) subscribers: usize,
    pub(crate) window: usize,
    pub(crate) run: crate::RunArgs,
    pub(crate) sources: u8,
    pub(crate) report: crate::ReportArgs,
}

/// The outcome, as printed and as JSON.
#[derive(Debug, Serialize)]
pub(crate) struct BroadcastReport {
    label: String,
    protocol: String,
    subscribers: usize,
    window: usize,
    payload_bytes: usize,
    seconds: f64,
    events: u64,
    deliveries: u64,
    deliveries_per_sec: f64,
    server_cpu_us_per_delivery: Option<f64>,
    /// The kernel's part of `server_cpu_us_per_delivery` (system time: the socket calls).
    server_kernel_us_per_delivery: Option<f64>,
    /// Subscribers whose connection ended during the run.
    lost_subscribers: usize,
}

/// Shared between the subscribers and the publisher.
#[derive(Default)]
struct Tally {
    delivered: AtomicU64,
    /// Notified each time the room's total reaches another whole event.
    progressed: tokio::sync::Notify,
    lost: AtomicUsize,
}

/// Runs the benchmark and prints (and optionally writes) its report.
pub(crate) async fn run(setup: BroadcastSetup) -> anyhow::Result<BroadcastReport> {
    let setup = Arc::new(setup);
    let n = setup.subscribers.max(1);
    let (join, needle) = match setup.target.protocol {
        Protocol::Ws => (r#"{"event":"join","id":1}"#, r#"{"event":"news""#),
        Protocol::Socketio => (r#"421["join"]"#, r#"42["news""#),
    };
    let opened = Instant::now();
    let subscribers: Vec<anyhow::Result<_>> = stream::iter(0..n)
        .map(|i| {
            let setup = setup.clone();
            async move {
                let mut ws = connect_from(&setup.target.url, source(i, setup.sources)).await?;
                if matches!(setup.target.protocol, Protocol::Socketio) {
                    socketio_handshake(&mut ws, &setup.target.auth).await?;
                }
                ws.send(Message::text(join)).await?;
                // A plain WebSocket recovery session (`session=new`) opens with its frame.
                let reply =
                    crate::next_text(&mut ws, |t| !t.starts_with(r#"{"event":"session""#)).await?;
                if !reply.contains("true") {
                    bail!("join refused: {reply}");
                }
                Ok(ws)
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let tally = Arc::new(Tally::default());
    let mut tasks = Vec::with_capacity(n);
    for ws in subscribers {
        let (mut ws, tally) = (ws.context("setting up a subscriber")?, tally.clone());
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(frame)) = ws.next().await {
                let Message::Text(text) = frame else { continue };
                if text.as_str().starts_with(needle) {
                    let total = tally.delivered.fetch_add(1, Ordering::AcqRel) + 1;
                    if total % n as u64 == 0 {
                        tally.progressed.notify_one();
                    }
                } else if text.as_str() == "2" && ws.send(Message::text("3")).await.is_err() {
                    break;
                }
            }
            tally.lost.fetch_add(1, Ordering::AcqRel);
        }));
    }
    eprintln!("{n} subscribers joined in {:.2?}", opened.elapsed());

    let mut publisher = connect_from(&setup.target.url, source(0, 1)).await?;
    if matches!(setup.target.protocol, Protocol::Socketio) {
        socketio_handshake(&mut publisher, &setup.target.auth).await?;
    }
    let data = serde_json::json!({ "pad": "x".repeat(setup.run.payload) });
    let shout = match setup.target.protocol {
        Protocol::Ws => serde_json::json!({ "event": "shout", "data": data }).to_string(),
        Protocol::Socketio => format!("42{}", serde_json::json!(["shout", data])),
    };
    let window = setup.window.max(1) as u64;
    let started = Instant::now();
    let measure_from = started + setup.run.warmup();
    let end = measure_from + setup.run.duration();
    let mut sent = 0u64;
    let mut start_mark = None;
    while Instant::now() < end {
        if start_mark.is_none() && Instant::now() >= measure_from {
            let cpu = crate::cpu_split_total(&setup.report.pid)?;
            start_mark = Some((Instant::now(), tally.delivered.load(Ordering::Acquire), sent, cpu));
        }
        if tally.lost.load(Ordering::Acquire) > 0 {
            break;
        }
        // At most `window` events beyond what the whole room has received.
        let progressed = tally.progressed.notified();
        let allowed = window + tally.delivered.load(Ordering::Acquire) / n as u64;
        if sent >= allowed {
            // Bounded, so that a stalled room still ends the run at its end.
            let _ = tokio::time::timeout(Duration::from_millis(200), progressed).await;
            continue;
        }
        // Several at once, flushed together.
        let room_for = (allowed - sent).min(8);
        for _ in 0..room_for {
            publisher.feed(Message::text(shout.as_str())).await.context("publishing")?;
        }
        publisher.flush().await.context("publishing")?;
        sent += room_for;
    }
    let (t0, delivered0, sent0, cpu0) =
        start_mark.context("the run ended before it was measured")?;
    let seconds = t0.elapsed().as_secs_f64();
    let deliveries = tally.delivered.load(Ordering::Acquire) - delivered0;
    let cpu = crate::cpu_split_total(&setup.report.pid)?.since(cpu0);
    // The server's CPU, when it was watched and something was delivered.
    let measured = (!setup.report.pid.is_empty() && deliveries > 0).then_some(cpu);
    let lost = tally.lost.load(Ordering::Acquire);
    for task in &tasks {
        task.abort();
    }
    let report = BroadcastReport {
        label: setup.report.label.clone(),
        protocol: format!("{:?}", setup.target.protocol).to_lowercase(),
        subscribers: n,
        window: window as usize,
        payload_bytes: setup.run.payload,
        seconds,
        events: sent - sent0,
        deliveries,
        deliveries_per_sec: deliveries as f64 / seconds,
        server_cpu_us_per_delivery: measured.map(|cpu| cpu.total() as f64 / deliveries as f64),
        server_kernel_us_per_delivery: measured.map(|cpu| cpu.kernel as f64 / deliveries as f64),
        lost_subscribers: lost,
    };
    println!(
        "{}: {} deliveries/s to {} subscribers ({} events in {:.1} s), server CPU {} us/delivery ({} in the kernel), {} subscribers lost",
        report.label,
        report.deliveries_per_sec.round(),
        n,
        report.events,
        seconds,
        report.server_cpu_us_per_delivery.map_or("-".into(), |c| format!("{c:.3}")),
        report.server_kernel_us_per_delivery.map_or("-".into(), |c| format!("{c:.3}")),
        lost
    );
    if let Some(path) = &setup.report.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if lost > 0 {
        bail!("{lost} subscribers lost their connection during the run");
    }
    Ok(report)
}
