//! Two server instances in one process, linked by real Redis: the machine's (`REDIS_URL`,
//! default `redis://127.0.0.1:6379`) for delivery, and a `redis-server` this test starts on a
//! free port for the outage, so that stopping it touches nothing else.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use wsgate::adapter::{Inbound, OutboundRx, to_payload};
use wsgate::{App, Connection, Handshake, Server};
use wsgate_redis::RedisBroker;

use common::{OwnRedis, RoomGateway, free_port, unavailable, until_connected};

/// A channel no other test run uses.
fn channel(test: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("wsgate-test:{test}:{}:{nanos}", std::process::id())
}

async fn instance(url: &str, channel: &str) -> App {
    let broker = RedisBroker::connect_with(url, channel).await.unwrap();
    App::builder().server(Server::with_broker(broker)).gateway(RoomGateway).build().await.unwrap()
}

async fn join(app: &App, room: &str) -> (Connection, OutboundRx) {
    let (conn, rx) = app.handshake(Handshake::new("/", "test")).await.unwrap().open().await;
    app.dispatch(&conn, Inbound::new("join", to_payload(room).unwrap())).await;
    (conn, rx)
}

/// The events received within `wait`, as `{event, data}`.
async fn drain(rx: &mut OutboundRx, wait: Duration) -> Vec<Value> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(item) = tokio::time::timeout_at(deadline, rx.recv()).await {
        for e in item.emissions() {
            let data: Value = serde_json::from_str(e.data().get()).unwrap();
            got.push(json!({ "event": e.event().as_str(), "data": data }));
        }
    }
    got
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

#[tokio::test]
async fn broadcasts_reach_every_instance_exactly_once() {
    let url = redis_url();
    if RedisBroker::connect(&url).await.is_err() {
        return unavailable(
            "broadcasts_reach_every_instance_exactly_once",
            &format!(
                "Redis is not reachable at {url}. Start one (`redis-server --daemonize yes`, or \
                 `docker run -d -p 6379:6379 redis:7`) or set REDIS_URL."
            ),
        );
    }
    let channel = channel("once");
    let (a, b) = (instance(&url, &channel).await, instance(&url, &channel).await);
    until_connected(&[&a, &b], true).await;
    let (_a1, mut a1_rx) = join(&a, "entry:1").await;
    let (b1_conn, mut b1_rx) = join(&b, "entry:1").await;
    let (_b2, mut b2_rx) = join(&b, "entry:2").await;

    for n in 0..100 {
        let from = if n % 2 == 0 { &a } else { &b };
        from.server().to("entry:1").emit("commentCreated", &json!({ "n": n })).unwrap();
    }
    let expected: Vec<Value> =
        (0..100).map(|n| json!({ "event": "commentCreated", "data": { "n": n } })).collect();
    let mut a1 = drain(&mut a1_rx, Duration::from_millis(500)).await;
    let mut b1 = drain(&mut b1_rx, Duration::from_millis(100)).await;
    // Local deliveries come at once and remote ones through Redis: order per source only.
    a1.sort_by_key(|v| v["data"]["n"].as_i64());
    b1.sort_by_key(|v| v["data"]["n"].as_i64());
    assert_eq!(a1, expected, "each broadcast once on instance A");
    assert_eq!(b1, expected, "each broadcast once on instance B");
    assert!(drain(&mut b2_rx, Duration::from_millis(50)).await.is_empty(), "other room");

    // An emit to a connection of the other instance.
    assert!(!a.server().emit_to(b1_conn.id(), "direct", &"hello").unwrap());
    assert_eq!(
        drain(&mut b1_rx, Duration::from_millis(300)).await,
        [json!({ "event": "direct", "data": "hello" })]
    );
    let status = a.server().broker_status().unwrap();
    assert_eq!((status.published, status.received, status.dropped), (51, 50, 0));
}

#[tokio::test]
async fn instances_survive_a_redis_outage_and_resume() {
    let port = free_port();
    let redis = match OwnRedis::start(port) {
        Ok(redis) => redis,
        Err(e) => {
            return unavailable(
                "instances_survive_a_redis_outage_and_resume",
                &format!(
                    "cannot run redis-server ({e}); install it (`apt-get install redis-server`)."
                ),
            );
        }
    };
    redis.ready().await;
    let url = redis.url();
    let channel = channel("outage");
    let (a, b) = (instance(&url, &channel).await, instance(&url, &channel).await);
    until_connected(&[&a, &b], true).await;
    let (_a1, mut a1_rx) = join(&a, "room").await;
    let (_a2, mut a2_rx) = join(&a, "room").await;
    let (_b1, mut b1_rx) = join(&b, "room").await;
    b.server().to("room").emit("before", &1).unwrap();
    for rx in [&mut a1_rx, &mut a2_rx] {
        assert_eq!(
            drain(rx, Duration::from_millis(300)).await,
            [json!({ "event": "before", "data": 1 })]
        );
    }

    redis.stop();
    until_connected(&[&a, &b], false).await;
    // Each instance still serves its own clients.
    assert_eq!(a.server().to("room").emit("during", &2).unwrap(), 2);
    for rx in [&mut a1_rx, &mut a2_rx] {
        assert_eq!(
            drain(rx, Duration::from_millis(100)).await,
            [json!({ "event": "during", "data": 2 })]
        );
    }
    // B's clients got `before` (local) and nothing of the outage.
    assert_eq!(
        drain(&mut b1_rx, Duration::from_millis(100)).await,
        [json!({ "event": "before", "data": 1 })]
    );
    assert!(a.server().broker_status().unwrap().dropped >= 1, "the lost envelope is counted");

    // Redis comes back on the same port: both reconnect and broadcasts resume.
    let redis = Arc::new(OwnRedis::start(port).unwrap());
    redis.ready().await;
    until_connected(&[&a, &b], true).await;
    b.server().to("room").emit("after", &3).unwrap();
    for rx in [&mut a1_rx, &mut a2_rx, &mut b1_rx] {
        assert_eq!(
            drain(rx, Duration::from_millis(300)).await,
            [json!({ "event": "after", "data": 3 })]
        );
    }
    assert!(a.server().broker_status().unwrap().reconnects >= 1);
}
