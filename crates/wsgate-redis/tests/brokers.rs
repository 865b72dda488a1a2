//! One broker test suite for both Redis brokers (pub/sub and Streams), with connection state
//! recovery off and on: two instances in one process on a `redis-server` of the test's own;
//! room broadcasts, emits to one connection on the other instance, and emits to everyone reach
//! every recipient once, from either instance.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{OwnRedis, RoomGateway, until_connected};

use wsgate::adapter::{Inbound, OutboundRx, to_payload};
use wsgate::{App, AppConfig, Connection, Handshake, Recovery, Server, SessionRequest, gateway};
use wsgate_redis::{RedisBroker, RedisStreamsBroker, StreamsConfig};

#[gateway(namespace = "/chat")]
impl ChatGateway {
    #[subscribe_message("noop")]
    async fn noop(&self) {}
}

struct ChatGateway;

#[derive(Clone, Copy, Debug)]
enum Kind {
    PubSub,
    Streams,
}

async fn broker(kind: Kind, url: &str) -> Box<dyn FnOnce() -> Server> {
    match kind {
        Kind::PubSub => {
            let b = RedisBroker::connect_with(url, "suite").await.unwrap();
            Box::new(move || Server::with_broker(b))
        }
        Kind::Streams => {
            let b = RedisStreamsBroker::connect_with(url, StreamsConfig::default()).await.unwrap();
            Box::new(move || Server::with_broker(b))
        }
    }
}

async fn instance(kind: Kind, url: &str, recovery: bool) -> App {
    let server = (broker(kind, url).await)();
    let config = AppConfig { recovery: recovery.then(Recovery::default), ..AppConfig::default() };
    App::builder()
        .server(server)
        .config(config)
        .gateway(RoomGateway)
        .gateway(ChatGateway)
        .build()
        .await
        .unwrap()
}

async fn open(app: &App, ns: &str) -> (Connection, OutboundRx) {
    let mut hs = Handshake::new(ns, "test");
    hs.session = SessionRequest::New;
    app.handshake(hs).await.unwrap().open().await
}

/// The events received within `wait`, sorted: emits of two instances have no order between
/// them (each instance's own keep theirs). Several arguments and attachments are written
/// after the data.
async fn events(rx: &mut OutboundRx, wait: Duration) -> Vec<String> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(item) = tokio::time::timeout_at(deadline, rx.recv()).await {
        for e in item.emissions() {
            let extras = e.extras();
            let extras = match extras.is_plain() {
                true => String::new(),
                false => format!(" {:?} {:?}", extras.arity, extras.binary),
            };
            got.push(format!("{}={}{extras}", e.event(), e.data().get()));
        }
    }
    got.sort();
    got
}

async fn suite(kind: Kind, recovery: bool) {
    let Some(redis) = OwnRedis::ready_on_free_port("broker suite").await else { return };
    let url = redis.url();
    let (a, b) = (instance(kind, &url, recovery).await, instance(kind, &url, recovery).await);
    until_connected(&[&a, &b], true).await;
    let what = format!("{kind:?}, recovery {recovery}");

    let (a1, mut a1_rx) = open(&a, "/").await;
    let (b1, mut b1_rx) = open(&b, "/").await;
    let (_b2, mut b2_rx) = open(&b, "/").await;
    let (_chat, mut chat_rx) = open(&a, "/chat").await;
    for (app, conn) in [(&a, &a1), (&b, &b1)] {
        app.dispatch(conn, Inbound::new("join", to_payload("room").unwrap())).await;
    }

    // A room, from both instances; the sender left out.
    a.server().to("room").emit("r", &1).unwrap();
    b.server().to("room").except(a1.id()).emit("r", &2).unwrap();
    // One connection, on the other instance.
    a.server().emit_to(b1.id(), "direct", &3).unwrap();
    // Everyone, every namespace.
    b.server().emit("all", &4).unwrap();
    // Several arguments with an attachment, to the room, from the other instance.
    let file = wsgate::Args(("f", bytes::Bytes::from_static(&[1, 2])));
    b.server().to("room").except(b1.id()).emit("file", &file).unwrap();

    let wait = Duration::from_millis(800);
    let file = r#"file=["f",{"_placeholder":true,"num":0}] Several [b"\x01\x02"]"#;
    assert_eq!(events(&mut a1_rx, wait).await, ["all=4", file, "r=1"], "{what}: a1");
    let b1_got = events(&mut b1_rx, Duration::from_millis(100)).await;
    assert_eq!(b1_got, ["all=4", "direct=3", "r=1", "r=2"], "{what}: b1");
    assert_eq!(events(&mut b2_rx, Duration::from_millis(100)).await, ["all=4"], "{what}: b2");
    assert_eq!(events(&mut chat_rx, Duration::from_millis(100)).await, ["all=4"], "{what}: /chat");
    let status = a.server().broker_status().unwrap();
    assert_eq!(status.dropped, 0, "{what}");

    // Presence and volatile emits travel as signals, beside the broker's envelopes (with
    // recovery on too: neither is logged).
    a1.track("room", "ada", &"from a").unwrap();
    b1.track("room", "bob", &"from b").unwrap();
    let keys = |app: &App| -> Vec<String> {
        app.server().presence("room").into_iter().map(|e| e.key).collect()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while keys(&a) != ["ada", "bob"] || keys(&b) != ["ada", "bob"] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: presence {:?} / {:?}",
            keys(&a),
            keys(&b)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.server().to("room").except(a1.id()).volatile().emit("v", &5).unwrap();
    assert_eq!(events(&mut b1_rx, wait).await, ["v=5"], "{what}: a volatile emit");
    assert!(events(&mut a1_rx, Duration::from_millis(100)).await.is_empty(), "{what}");
}

#[tokio::test]
async fn pubsub_without_recovery() {
    suite(Kind::PubSub, false).await;
}

#[tokio::test]
async fn pubsub_with_recovery() {
    suite(Kind::PubSub, true).await;
}

#[tokio::test]
async fn streams_without_recovery() {
    suite(Kind::Streams, false).await;
}

#[tokio::test]
async fn streams_with_recovery() {
    suite(Kind::Streams, true).await;
}
