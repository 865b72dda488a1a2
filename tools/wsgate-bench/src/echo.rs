//! `wsgate-bench echo`: request/reply throughput and latency against an `echo` gateway, over
//! plain WebSocket or Socket.IO, with the server's CPU time per reply.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt, stream};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::Protocol;

/// What to run.
#[derive(Clone, Debug)]
pub(crate) struct EchoSetup {
    pub(crate) target: crate::Target,
    pub(crate) connections: usize,
    pub(crate) window: usize,
    pub(crate) run: crate::RunArgs,
    pub(crate) rate: Option<u64>,
    pub(crate) sources: u8,
    pub(crate) sample_every: Option<Duration>,
    pub(crate) report: crate::ReportArgs,
}

/// The outcome, as printed and as JSON.
#[derive(Debug, Serialize)]
pub(crate) struct EchoReport {
    label: String,
    protocol: String,
    connections: usize,
    window: usize,
    payload_bytes: usize,
    seconds: f64,
    replies: u64,
    replies_per_sec: f64,
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
    server_cpu_us_per_reply: Option<f64>,
    /// The kernel's part of `server_cpu_us_per_reply` (system time: the socket calls).
    server_kernel_us_per_reply: Option<f64>,
    errors: u64,
    /// Soak runs: the servers' memory over time, from the end of the warm-up.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    samples: Vec<Sample>,
    /// Soak runs: growth of the servers' memory from the first sample to the last, in percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    rss_growth_percent: Option<f64>,
}

/// One soak sample.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sample {
    seconds: u64,
    rss_kib: u64,
    replies: u64,
    errors: u64,
}

pub(crate) type Socket = WebSocketStream<TcpStream>;

/// Opens a WebSocket to `url` from the source address `source`.
pub(crate) async fn connect_from(url: &str, source: IpAddr) -> anyhow::Result<Socket> {
    let uri: http::Uri = url.parse().context("parsing the URL")?;
    let host = uri.host().context("the URL has no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let addr: SocketAddr = tokio::net::lookup_host((host, port))
        .await?
        .find(SocketAddr::is_ipv4)
        .context("no IPv4 address for the host")?;
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0)).context("binding the source address")?;
    let stream = socket.connect(addr).await.context("connecting")?;
    stream.set_nodelay(true)?;
    // tungstenite zero-fills its read buffer's free room (up to this size) before every read:
    // with its default of 128 KiB, the load generator spent a tenth of its time in memset.
    let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .context("upgrading")?;
    Ok(ws)
}

/// Connection `i`'s source address: 127.0.0.1, 127.0.0.2, … up to `sources`, so that more
/// connections fit than one source address has ports.
pub(crate) fn source(i: usize, sources: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % usize::from(sources.max(1))) as u8))
}

/// Socket.IO: the Engine.IO open packet, then the namespace connect with `auth`.
pub(crate) async fn socketio_handshake(ws: &mut Socket, auth: &str) -> anyhow::Result<()> {
    crate::next_text(ws, |t| t.starts_with('0')).await.context("engine.io open")?;
    ws.send(Message::text(format!("40{auth}"))).await?;
    let reply = crate::next_text(ws, |t| t.starts_with("40") || t.starts_with("44")).await?;
    if reply.starts_with("44") {
        bail!("namespace connect refused: {reply}");
    }
    Ok(())
}

/// Shared counters, read by the progress display.
#[derive(Default)]
struct Progress {
    replies: AtomicU64,
    errors: AtomicU64,
}

/// Runs the benchmark and prints (and optionally writes) its report.
pub(crate) async fn run(setup: EchoSetup) -> anyhow::Result<EchoReport> {
    let setup = Arc::new(setup);
    let progress = Arc::new(Progress::default());
    let opened = Instant::now();
    let sockets: Vec<anyhow::Result<Socket>> = stream::iter(0..setup.connections)
        .map(|i| {
            let setup = setup.clone();
            async move {
                let mut ws = connect_from(&setup.target.url, source(i, setup.sources)).await?;
                if matches!(setup.target.protocol, Protocol::Socketio) {
                    socketio_handshake(&mut ws, &setup.target.auth).await?;
                }
                Ok(ws)
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let sockets = sockets.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    eprintln!("{} connections open in {:.2?}", sockets.len(), opened.elapsed());

    let start = Instant::now();
    let measure_from = start + setup.run.warmup();
    let end = measure_from + setup.run.duration();
    let bar = progress_bar(setup.run.warmup() + setup.run.duration());
    let ticker = {
        let (progress, bar) = (progress.clone(), bar.clone());
        tokio::spawn(async move {
            let mut last = 0;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let now = progress.replies.load(Ordering::Relaxed);
                bar.set_message(format!("{} replies/s", now - last));
                bar.set_position(start.elapsed().as_millis() as u64);
                last = now;
            }
        })
    };
    let tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, ws)| {
            let (setup, progress) = (setup.clone(), progress.clone());
            tokio::spawn(async move { drive(ws, i, &setup, &progress, measure_from, end).await })
        })
        .collect();
    // The server's CPU time is read when the warm-up ends, and again when the tasks are done.
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_before = crate::cpu_split_total(&setup.report.pid).ok();
    let sampler = setup.sample_every.filter(|_| !setup.report.pid.is_empty()).map(|every| {
        let (setup, progress) = (setup.clone(), progress.clone());
        tokio::spawn(async move { sample(&setup.report.pid, &progress, every, end).await })
    });
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut replies = 0;
    for task in tasks {
        let (h, n) = task.await??;
        histogram.add(&h)?;
        replies += n;
    }
    let cpu_after = crate::cpu_split_total(&setup.report.pid).ok();
    let samples = match sampler {
        Some(task) => task.await?,
        None => Vec::new(),
    };
    let rss_growth_percent = match (samples.first(), samples.last()) {
        (Some(first), Some(last)) if samples.len() > 1 && first.rss_kib > 0 => {
            Some((last.rss_kib as f64 - first.rss_kib as f64) * 100.0 / first.rss_kib as f64)
        }
        _ => None,
    };
    ticker.abort();
    bar.finish_and_clear();
    let seconds = setup.run.duration().as_secs_f64();
    let cpu = match (cpu_before, cpu_after) {
        (Some(before), Some(after)) if replies > 0 && !setup.report.pid.is_empty() => {
            Some(after.since(before))
        }
        _ => None,
    };
    let report = EchoReport {
        label: setup.report.label.clone(),
        protocol: format!("{:?}", setup.target.protocol).to_lowercase(),
        connections: setup.connections,
        window: setup.window,
        payload_bytes: setup.run.payload,
        seconds,
        replies,
        replies_per_sec: replies as f64 / seconds,
        p50_us: histogram.value_at_quantile(0.50),
        p90_us: histogram.value_at_quantile(0.90),
        p99_us: histogram.value_at_quantile(0.99),
        p999_us: histogram.value_at_quantile(0.999),
        max_us: histogram.max(),
        server_cpu_us_per_reply: cpu.map(|c| c.total() as f64 / replies as f64),
        server_kernel_us_per_reply: cpu.map(|c| c.kernel as f64 / replies as f64),
        errors: progress.errors.load(Ordering::Relaxed),
        samples,
        rss_growth_percent,
    };
    print_report(&report);
    if let Some(path) = &setup.report.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

/// Records the servers' memory, replies and errors every `every` until `end` (and once at it).
async fn sample(pids: &[u32], progress: &Progress, every: Duration, end: Instant) -> Vec<Sample> {
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut next = start;
    loop {
        tokio::time::sleep_until(next.min(end).into()).await;
        samples.push(Sample {
            seconds: start.elapsed().as_secs(),
            rss_kib: pids.iter().filter_map(|&p| crate::rss_kib(p).ok()).sum(),
            replies: progress.replies.load(Ordering::Relaxed),
            errors: progress.errors.load(Ordering::Relaxed),
        });
        if Instant::now() >= end {
            return samples;
        }
        next += every;
    }
}

fn progress_bar(total: Duration) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total.as_millis() as u64);
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr_with_hz(2));
    if let Ok(style) = indicatif::ProgressStyle::with_template("{elapsed:>4} [{bar:40}] {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// One connection: keeps `window` echoes in flight (paced by `rate` if set) until `end`;
/// returns the latencies of the replies received after `measure_from`.
async fn drive(
    ws: Socket,
    index: usize,
    setup: &EchoSetup,
    progress: &Progress,
    measure_from: Instant,
    end: Instant,
) -> anyhow::Result<(Histogram<u64>, u64)> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut sink, mut frames) = ws.split();
    let padding = "x".repeat(setup.run.payload);
    // Send times by sequence number modulo the window; replies name their sequence number.
    let window = setup.window.max(1);
    let mut sent_at = vec![Instant::now(); window];
    let mut next_seq: u64 = 0;
    let mut in_flight = 0usize;
    let mut measured = 0u64;
    let per_connection_rate = setup.rate.map(|r| (r as f64 / setup.connections as f64).max(0.001));
    let mut pace = per_connection_rate.map(|r| {
        // Stagger the connections so their sends do not land together.
        let period = Duration::from_secs_f64(1.0 / r);
        let offset = period.mul_f64((index % 97) as f64 / 97.0);
        tokio::time::interval_at((Instant::now() + offset).into(), period)
    });
    let frame = |seq: u64| match setup.target.protocol {
        Protocol::Ws => format!(r#"{{"event":"echo","data":"{seq}:{padding}"}}"#),
        Protocol::Socketio => format!(r#"42["echo","{seq}:{padding}"]"#),
    };
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let may_send = in_flight < window;
        tokio::select! {
            biased;
            reply = frames.next() => {
                let text = match reply {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        progress.errors.fetch_add(1, Ordering::Relaxed);
                        return Err(e.into());
                    }
                    None => bail!("the server closed the connection"),
                };
                if text.as_str() == "2" {
                    sink.send(Message::text("3")).await?;
                    continue;
                }
                let Some(seq) = sequence(text.as_str()) else {
                    progress.errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                in_flight = in_flight.saturating_sub(1);
                let sent = sent_at[(seq % window as u64) as usize];
                let received = Instant::now();
                progress.replies.fetch_add(1, Ordering::Relaxed);
                if sent >= measure_from && received <= end {
                    let micros = received.duration_since(sent).as_micros() as u64;
                    histogram.record(micros.max(1))?;
                    measured += 1;
                }
            }
            _ = async {
                if let Some(interval) = pace.as_mut() {
                    interval.tick().await;
                }
            }, if may_send => {
                sent_at[(next_seq % window as u64) as usize] = Instant::now();
                sink.send(Message::text(frame(next_seq))).await?;
                next_seq += 1;
                in_flight += 1;
            }
            () = tokio::time::sleep_until(end.into()) => break,
        }
    }
    let _ = sink.close().await;
    Ok((histogram, measured))
}

/// The sequence number of an echo reply: the digits after the data's opening quote.
fn sequence(text: &str) -> Option<u64> {
    let data = match text.find(r#""data":""#) {
        Some(at) => &text[at + 8..],
        None => &text[text.find(r#"",""#)? + 3..],
    };
    let digits = data.split(':').next()?;
    digits.parse().ok()
}

fn print_report(r: &EchoReport) {
    if !r.samples.is_empty() {
        println!("| {:>7} | {:>10} | {:>12} | {:>6} |", "seconds", "RSS KiB", "replies", "errors");
        for s in &r.samples {
            println!(
                "| {:>7} | {:>10} | {:>12} | {:>6} |",
                s.seconds, s.rss_kib, s.replies, s.errors
            );
        }
        if let Some(growth) = r.rss_growth_percent {
            println!("RSS growth from the first sample to the last: {growth:+.2} %");
        }
    }
    let cpu = r.server_cpu_us_per_reply.map_or_else(|| "-".to_owned(), |c| format!("{c:.2}"));
    let kernel = r.server_kernel_us_per_reply.map_or_else(|| "-".to_owned(), |c| format!("{c:.2}"));
    println!(
        "| {:<12} | {:<8} | {:>5} | {:>6} | {:>12} | {:>8} | {:>8} | {:>8} | {:>14} | {:>15} | {:>6} |",
        "label",
        "protocol",
        "conns",
        "window",
        "replies/s",
        "p50 us",
        "p99 us",
        "max us",
        "CPU us/reply",
        "of it kernel us",
        "errors"
    );
    println!(
        "| {:<12} | {:<8} | {:>5} | {:>6} | {:>12.0} | {:>8} | {:>8} | {:>8} | {:>14} | {:>15} | {:>6} |",
        r.label,
        r.protocol,
        r.connections,
        r.window,
        r.replies_per_sec,
        r.p50_us,
        r.p99_us,
        r.max_us,
        cpu,
        kernel,
        r.errors
    );
}

#[cfg(test)]
mod tests {
    use super::sequence;

    #[test]
    fn sequence_numbers_are_read_from_both_formats() {
        assert_eq!(sequence(r#"{"event":"echo","data":"42:xxxx"}"#), Some(42));
        assert_eq!(sequence(r#"42["echo","7:xx"]"#), Some(7));
        assert_eq!(sequence(r#"{"event":"exception","data":{}}"#), None);
    }
}
