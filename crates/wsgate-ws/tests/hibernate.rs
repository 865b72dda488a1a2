//! Quiet connections sleep (`WsAdapter::hibernate_after`) and wake for everything that
//! concerns them: a frame, an item queued, the server's close, the heartbeat, the client's
//! close. A real server (`wsgate_transport::serve`) on a loopback port and real clients. In
//! a test binary of its own: the count of sleeping sessions is the process's.
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use wsgate::{App, Claims, Connection, Data, JwtAuth, JwtKeys, WsException, gateway};
use wsgate_transport::rest::resting;
use wsgate_ws::WsAdapter;

mod common;
use common::{Fixture, recv, send, until_close};

struct Gateway {
    disconnects: Arc<AtomicUsize>,
}

#[gateway]
impl Gateway {
    #[subscribe_message("echo")]
    async fn echo(&self, Data(data): Data<Value>) -> Value {
        data
    }

    #[subscribe_message("join")]
    async fn join(&self, conn: Connection, Data(room): Data<String>) -> Result<bool, WsException> {
        conn.join(room)?;
        Ok(true)
    }

    #[on_disconnect]
    async fn gone(&self, _conn: &Connection) {
        self.disconnects.fetch_add(1, Ordering::SeqCst);
    }
}

async fn start(adapter: WsAdapter) -> Fixture {
    let keys = JwtKeys::hs256(b"a test secret that is long enough");
    let disconnects = Arc::new(AtomicUsize::new(0));
    let auth =
        JwtAuth::new(keys.clone(), |claims: Claims| async move { Ok::<_, &str>(Some(claims.sub)) });
    let app = App::builder()
        .middleware(auth)
        .gateway(Gateway { disconnects: disconnects.clone() })
        .build()
        .await
        .unwrap();
    let server = app.server().clone();
    let router = app.mount(Router::new(), adapter);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { wsgate_transport::serve(listener, router).await.unwrap() });
    Fixture { addr, server, keys, disconnects }
}

/// Waits until `n` sessions sleep.
async fn until_resting(n: usize, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while resting() != n {
        assert!(tokio::time::Instant::now() < deadline, "{what}: {} asleep, not {n}", resting());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn quiet_connections_sleep_and_wake_for_everything_that_concerns_them() {
    let adapter = WsAdapter::new()
        .hibernate_after(Some(Duration::from_millis(100)))
        .ping_interval(Duration::from_millis(300))
        .idle_timeout(Duration::from_millis(3000))
        // b reads its close long after it was sent: the server waits for b's answer.
        .close_timeout(Duration::from_secs(30));
    let f = start(adapter).await;
    let mut a = f.connect("/", 1).await;
    let mut b = f.connect("/", 2).await;
    send(&mut a, json!({ "event": "join", "data": "news", "id": 1 })).await;
    assert_eq!(recv(&mut a).await["data"], true);
    until_resting(2, "both quiet connections sleep").await;

    // A frame wakes its connection, which answers it.
    send(&mut a, json!({ "event": "echo", "data": { "n": 1 }, "id": 2 })).await;
    assert_eq!(recv(&mut a).await, json!({ "event": "ack", "id": 2, "data": { "n": 1 } }));
    until_resting(2, "the connection sleeps again once quiet").await;

    // What the server queues for a sleeping connection wakes it: a room's broadcast, one
    // connection's emit, each in order.
    assert_eq!(f.server.to("news").emit("headline", &1).unwrap(), 1);
    assert_eq!(recv(&mut a).await, json!({ "event": "headline", "data": 1 }));
    until_resting(2, "asleep after the broadcast").await;
    for i in 0..3 {
        f.server.emit("all", &i).unwrap();
    }
    for ws in [&mut a, &mut b] {
        for i in 0..3 {
            assert_eq!(recv(ws).await, json!({ "event": "all", "data": i }));
        }
    }
    until_resting(2, "asleep after the emits").await;

    // Pings still come to sleeping connections, which a reading client answers: past its idle
    // timeout, it stays open, and it sleeps between pings.
    let mut pings = 0;
    let mut slept_between = false;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(4500);
    while tokio::time::Instant::now() < deadline {
        // Read for 20 ms at a time, and look in between: both asleep at some point.
        let look = (tokio::time::Instant::now() + Duration::from_millis(20)).min(deadline);
        match tokio::time::timeout_at(look, a.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(other) => panic!("the reading client got {other:?}"),
            Err(_) => {}
        }
        slept_between |= resting() == 2;
    }
    assert!(pings >= 10, "pinged every 300 ms: {pings} pings in 4.5 s");
    assert!(slept_between, "asleep between pings");
    send(&mut a, json!({ "event": "echo", "data": "still here", "id": 3 })).await;
    assert_eq!(recv(&mut a).await["data"], "still here");

    // b read nothing meanwhile, so it answered no ping: closed at its idle timeout, woken
    // by its heartbeat, with its disconnect hook run.
    let (texts, close) = until_close(&mut b, Duration::from_secs(5)).await;
    assert_eq!(texts, Vec::<Value>::new(), "pings, then the close");
    assert_eq!((close.code, close.reason.as_str()), (CloseCode::Away, "idle timeout"));
    assert_eq!(f.disconnects.load(Ordering::SeqCst), 1);
    until_resting(1, "a asleep again").await;

    // The client's close wakes a sleeping connection, which lets go of it.
    a.close(None).await.unwrap();
    until_resting(0, "nobody asleep").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while f.server.connection_count() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "a's disconnect ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(f.disconnects.load(Ordering::SeqCst), 2);

    // The server's close wakes a sleeping connection, which closes with the reason's code.
    let mut c = f.connect("/", 3).await;
    until_resting(1, "c asleep").await;
    assert_eq!(f.server.close_all(wsgate::CloseReason::GoingAway, Duration::from_secs(5)).await, 0);
    let (texts, close) = until_close(&mut c, Duration::from_secs(5)).await;
    assert_eq!(texts, Vec::<Value>::new(), "pings, then the close");
    assert_eq!(close.code, CloseCode::Away);
    until_resting(0, "c let go").await;
}
