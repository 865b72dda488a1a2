//! `wsgate-bench connect`: how fast a server accepts authenticated connections.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt, stream};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use crate::Protocol;
use crate::echo::{connect_from, socketio_handshake, source};

/// What to run.
#[derive(Clone, Debug)]
pub(crate) struct ConnectSetup {
    pub(crate) target: crate::Target,
    pub(crate) connections: usize,
    pub(crate) concurrency: usize,
    pub(crate) sources: u8,
    pub(crate) report: crate::ReportArgs,
}

#[derive(Debug, Serialize)]
struct ConnectReport {
    label: String,
    protocol: String,
    connections: usize,
    concurrency: usize,
    failed: usize,
    seconds: f64,
    connects_per_sec: f64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
    server_cpu_us_per_connect: Option<f64>,
}

/// Opens `connections` connections, `concurrency` at a time; each is set up (WebSocket upgrade
/// with the token, and for Socket.IO the namespace connect with `auth`), then closed.
pub(crate) async fn run(setup: ConnectSetup) -> anyhow::Result<()> {
    let setup = Arc::new(setup);
    let cpu_before = crate::cpu_micros_total(&setup.report.pid)?;
    let started = Instant::now();
    let results: Vec<anyhow::Result<Duration>> = stream::iter(0..setup.connections)
        .map(|i| {
            let setup = setup.clone();
            async move {
                let begun = Instant::now();
                let mut ws = connect_from(&setup.target.url, source(i, setup.sources)).await?;
                if matches!(setup.target.protocol, Protocol::Socketio) {
                    socketio_handshake(&mut ws, &setup.target.auth).await?;
                }
                let took = begun.elapsed();
                let _ = ws.send(Message::Close(None)).await;
                // Let the server see the close before the socket goes.
                let _ = tokio::time::timeout(Duration::from_secs(1), ws.next()).await;
                Ok(took)
            }
        })
        .buffer_unordered(setup.concurrency.max(1))
        .collect()
        .await;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = crate::cpu_micros_total(&setup.report.pid)? - cpu_before;
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut failed = 0;
    let mut first_error = None;
    for r in results {
        match r {
            Ok(took) => histogram.record((took.as_micros() as u64).max(1))?,
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        eprintln!("{failed} connections failed; the first: {e:#}");
    }
    let ok = setup.connections - failed;
    let report = ConnectReport {
        label: setup.report.label.clone(),
        protocol: format!("{:?}", setup.target.protocol).to_lowercase(),
        connections: setup.connections,
        concurrency: setup.concurrency,
        failed,
        seconds,
        connects_per_sec: ok as f64 / seconds,
        p50_us: histogram.value_at_quantile(0.5),
        p99_us: histogram.value_at_quantile(0.99),
        max_us: histogram.max(),
        server_cpu_us_per_connect: (!setup.report.pid.is_empty() && ok > 0)
            .then(|| cpu as f64 / ok as f64),
    };
    let cpu = report.server_cpu_us_per_connect.map_or_else(|| "-".into(), |c| format!("{c:.1}"));
    println!(
        "| {:<12} | {:<8} | {:>6} | {:>6} | {:>11} | {:>8} | {:>8} | {:>16} |",
        "label", "protocol", "conns", "failed", "connects/s", "p50 us", "p99 us", "CPU us/connect"
    );
    println!(
        "| {:<12} | {:<8} | {:>6} | {:>6} | {:>11.0} | {:>8} | {:>8} | {:>16} |",
        report.label,
        report.protocol,
        report.connections,
        report.failed,
        report.connects_per_sec,
        report.p50_us,
        report.p99_us,
        cpu
    );
    if let Some(path) = &setup.report.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}
