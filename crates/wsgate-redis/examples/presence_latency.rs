//! How long a join on one instance takes to be seen on another, through Redis: two servers in
//! one process, each with its own broker (as two processes would have), presence at its
//! default settings (changes go out every 100 ms, diffs too). For each of `ROUNDS` joins on
//! instance A: the time until instance B lists the key (`Server::presence`), and until a
//! watcher on B receives its `presenceDiff`. Then the member leaves, and the next round starts.
//!
//! `REDIS_URL=redis://127.0.0.1:6379 cargo run --release -p wsgate-redis --example presence_latency`

use std::time::{Duration, Instant};

use wsgate::adapter::{Inbound, Outbound, to_payload};
use wsgate::{App, Connection, Data, Handshake, Server, gateway};
use wsgate_redis::{RedisBroker, RedisStreamsBroker, StreamsConfig};

const ROUNDS: usize = 200;

struct Lobby;

#[gateway]
impl Lobby {
    #[subscribe_message("enter")]
    async fn enter(
        &self,
        conn: Connection,
        Data(key): Data<String>,
    ) -> Result<(), wsgate::WsError> {
        conn.track("r", key, &serde_json::json!({}))?;
        conn.watch_presence("r");
        Ok(())
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(at).copied().unwrap_or_default()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    for kind in ["pubsub", "streams"] {
        let server = || async {
            let server = match kind {
                "pubsub" => Server::with_broker(RedisBroker::connect_with(&url, "latency").await?),
                _ => {
                    let config =
                        StreamsConfig { prefix: "latency".into(), ..StreamsConfig::default() };
                    Server::with_broker(RedisStreamsBroker::connect_with(&url, config).await?)
                }
            };
            let app = App::builder().server(server).gateway(Lobby).build().await?;
            Ok::<App, Box<dyn std::error::Error>>(app)
        };
        let (a, b) = (server().await?, server().await?);
        let open = |app: &App| {
            let app = app.clone();
            async move { app.handshake(Handshake::new("/", "bench")).await.map(|h| h.open()) }
        };
        let (watcher, mut watcher_rx) = open(&b).await.map_err(|r| r.message)?.await;
        b.dispatch(&watcher, Inbound::new("enter", to_payload("watcher")?)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        while watcher_rx.try_recv().is_some() {}

        let (mut listed, mut told) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let key = format!("member{round}");
            // At any point of the instances' 100 ms intervals, as joins come (a fixed stride
            // of 37 ms walks through them; the previous round ended right after a tick).
            tokio::time::sleep(Duration::from_millis((round as u64 * 37) % 100)).await;
            let (member, _rx) = open(&a).await.map_err(|r| r.message)?.await;
            let started = Instant::now();
            a.dispatch(&member, Inbound::new("enter", to_payload(&key)?)).await;
            let (mut seen, mut diff) = (None, None);
            while seen.is_none() || diff.is_none() {
                if started.elapsed() > Duration::from_secs(10) {
                    return Err(format!("{kind}: round {round} never seen on B").into());
                }
                if seen.is_none() && b.server().presence("r").iter().any(|e| e.key == key) {
                    seen = Some(started.elapsed());
                }
                while let Some(item) = watcher_rx.try_recv() {
                    if let Outbound::Event(e) = item
                        && e.event().as_str() == "presenceDiff"
                        && e.data().get().contains(&format!("\"{key}\""))
                    {
                        diff.get_or_insert(started.elapsed());
                    }
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            listed.extend(seen);
            told.extend(diff);
            a.disconnect(&member).await;
            while b.server().presence("r").iter().any(|e| e.key == key) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            while watcher_rx.try_recv().is_some() {}
        }
        listed.sort();
        told.sort();
        println!(
            "{kind}: a join on A, {ROUNDS} rounds: listed on B p50 {:.1?} p99 {:.1?} max {:.1?}; \
             presenceDiff to a watcher on B p50 {:.1?} p99 {:.1?} max {:.1?}",
            percentile(&listed, 0.5),
            percentile(&listed, 0.99),
            listed.last().copied().unwrap_or_default(),
            percentile(&told, 0.5),
            percentile(&told, 0.99),
            told.last().copied().unwrap_or_default(),
        );
    }
    Ok(())
}
