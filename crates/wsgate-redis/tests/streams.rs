//! Two server instances in one process linked by the Redis Streams broker, with connection
//! state recovery on, on a `redis-server` this test starts on a free port: emits numbered by
//! the stream, a session recovered on the other instance, an outage that loses nothing.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{OwnRedis, RoomGateway, until_connected};

use wsgate::adapter::{Inbound, OutboundRx, to_payload};
use wsgate::{App, AppConfig, Connection, Handshake, Recovery, Server, SessionRequest};
use wsgate_redis::{RedisStreamsBroker, StreamsConfig};

async fn own_redis(test: &str) -> Option<OwnRedis> {
    OwnRedis::ready_on_free_port(test).await
}

async fn instance(url: &str) -> App {
    let broker = RedisStreamsBroker::connect_with(url, StreamsConfig::default()).await.unwrap();
    let config = AppConfig { recovery: Some(Recovery::default()), ..AppConfig::default() };
    App::builder()
        .server(Server::with_broker(broker))
        .config(config)
        .gateway(RoomGateway)
        .build()
        .await
        .unwrap()
}

async fn open(app: &App, session: SessionRequest) -> (Connection, OutboundRx) {
    let mut hs = Handshake::new("/", "test");
    hs.session = session;
    app.handshake(hs).await.unwrap().open().await
}

async fn join(app: &App, conn: &Connection, room: &str) {
    app.dispatch(conn, Inbound::new("join", to_payload(room).unwrap())).await;
}

/// The events received within `wait`: (event, data, offset).
async fn drain(rx: &mut OutboundRx, wait: Duration) -> Vec<(String, String, String)> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(item) = tokio::time::timeout_at(deadline, rx.recv()).await {
        for e in item.emissions() {
            let offset = e.offset().unwrap_or_default().to_owned();
            got.push((e.event().to_string(), e.data().get().to_owned(), offset));
        }
    }
    got
}

#[tokio::test]
async fn emits_numbered_by_the_stream_reach_every_instance_once_with_the_same_offsets() {
    let Some(redis) = own_redis("streams_numbering").await else { return };
    let (a, b) = (instance(&redis.url()).await, instance(&redis.url()).await);
    until_connected(&[&a, &b], true).await;
    let (on_a, mut a_rx) = open(&a, SessionRequest::New).await;
    let (on_b, mut b_rx) = open(&b, SessionRequest::New).await;
    join(&a, &on_a, "room").await;
    join(&b, &on_b, "room").await;
    for n in 0..10 {
        let from = if n % 2 == 0 { &a } else { &b };
        from.server().to("room").emit("n", &n).unwrap();
    }
    let got_a = drain(&mut a_rx, Duration::from_millis(700)).await;
    let got_b = drain(&mut b_rx, Duration::from_millis(100)).await;
    assert_eq!(got_a.len(), 10, "{got_a:?}");
    assert_eq!(got_a, got_b, "the same events, in the same order, with the same offsets");
    let mut sorted = got_a.clone();
    sorted.sort_by_key(|(_, _, o)| wsgate::Offset::parse_log(o).unwrap());
    assert_eq!(got_a, sorted, "in the stream's order");
    // Each instance's own emits in the order it made them.
    let evens: Vec<_> =
        got_a.iter().map(|(_, d, _)| d.parse::<u32>().unwrap()).filter(|n| n % 2 == 0).collect();
    assert_eq!(evens, [0, 2, 4, 6, 8]);
    redis.stop();
}

#[tokio::test]
async fn a_session_recovers_on_another_instance_even_if_its_own_died_silently() {
    let Some(redis) = own_redis("streams_failover").await else { return };
    let (a, b) = (instance(&redis.url()).await, instance(&redis.url()).await);
    until_connected(&[&a, &b], true).await;
    let (conn, mut rx) = open(&a, SessionRequest::New).await;
    let session = conn.session_id().unwrap().to_owned();
    join(&a, &conn, "room").await;
    b.server().to("room").emit("seen", &1).unwrap();
    let seen = drain(&mut rx, Duration::from_millis(500)).await;
    assert_eq!(seen.len(), 1);
    let offset = seen[0].2.clone();
    // A "dies": nothing of its connection is released; B goes on emitting.
    std::mem::forget(rx);
    b.server().to("room").emit("missed", &2).unwrap();
    b.server().to("other").emit("not for it", &3).unwrap();
    b.server().to("room").emit("missed", &4).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let resume = SessionRequest::Resume { id: session.clone(), offset: Some(offset) };
    let (again, mut rx) = open(&b, resume).await;
    assert!(again.recovered(), "recovered on the other instance");
    assert_eq!(again.id(), conn.id());
    assert_eq!(again.rooms(), ["room".into()]);
    let missed: Vec<_> =
        drain(&mut rx, Duration::from_millis(300)).await.into_iter().map(|(_, d, _)| d).collect();
    assert_eq!(missed, ["2", "4"]);
    a.server().to("room").emit("live", &5).unwrap();
    let live = drain(&mut rx, Duration::from_millis(500)).await;
    assert_eq!(live.len(), 1, "live events reach it on its new instance");
    redis.stop();
}

#[tokio::test]
async fn emits_wait_through_a_redis_outage_and_arrive_once_in_order() {
    let Some(redis) = own_redis("streams_outage").await else { return };
    let port = redis.port;
    let (a, b) = (instance(&redis.url()).await, instance(&redis.url()).await);
    until_connected(&[&a, &b], true).await;
    let (on_a, mut a_rx) = open(&a, SessionRequest::New).await;
    let (on_b, mut b_rx) = open(&b, SessionRequest::New).await;
    join(&a, &on_a, "room").await;
    join(&b, &on_b, "room").await;
    a.server().to("room").emit("n", &0).unwrap();
    assert_eq!(drain(&mut b_rx, Duration::from_millis(500)).await.len(), 1);
    assert_eq!(drain(&mut a_rx, Duration::from_millis(50)).await.len(), 1);

    redis.stop();
    until_connected(&[&a, &b], false).await;
    for n in 1..=10 {
        let from = if n % 2 == 0 { &a } else { &b };
        from.server().to("room").emit("n", &n).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let redis = OwnRedis::start(port).unwrap();
    redis.ready().await;
    until_connected(&[&a, &b], true).await;
    let got_a: Vec<u32> = drain(&mut a_rx, Duration::from_secs(3))
        .await
        .iter()
        .map(|(_, d, _)| d.parse().unwrap())
        .collect();
    let got_b: Vec<u32> = drain(&mut b_rx, Duration::from_millis(200))
        .await
        .iter()
        .map(|(_, d, _)| d.parse().unwrap())
        .collect();
    let mut all = got_a.clone();
    all.sort_unstable();
    assert_eq!(all, (1..=10).collect::<Vec<_>>(), "every emit of the outage, once: {got_a:?}");
    assert_eq!(got_a, got_b, "the same order on both instances");
    let from_a: Vec<u32> = got_a.iter().copied().filter(|n| n % 2 == 0).collect();
    assert_eq!(from_a, [2, 4, 6, 8, 10], "each instance's emits in its order");
    assert_eq!(a.server().broker_status().unwrap().dropped, 0);
    redis.stop();
}

#[tokio::test]
async fn emits_lost_past_the_outage_buffer_are_a_gap_no_session_recovers_across() {
    let Some(redis) = own_redis("streams_gap").await else { return };
    let port = redis.port;
    let small = StreamsConfig { buffer: 3, ..StreamsConfig::default() };
    let broker = RedisStreamsBroker::connect_with(&redis.url(), small).await.unwrap();
    let config = AppConfig { recovery: Some(Recovery::default()), ..AppConfig::default() };
    let a = App::builder()
        .server(Server::with_broker(broker))
        .config(config)
        .gateway(RoomGateway)
        .build()
        .await
        .unwrap();
    let b = instance(&redis.url()).await;
    until_connected(&[&a, &b], true).await;
    let (conn, mut rx) = open(&b, SessionRequest::New).await;
    let session = conn.session_id().unwrap().to_owned();
    join(&b, &conn, "room").await;
    a.server().to("room").emit("n", &0).unwrap();
    let seen = drain(&mut rx, Duration::from_millis(500)).await;
    let offset = seen[0].2.clone();
    b.disconnect(&conn).await;
    drop(rx);

    redis.stop();
    until_connected(&[&a], false).await;
    for n in 1..=6 {
        a.server().to("room").emit("n", &n).unwrap();
    }
    assert_eq!(a.server().broker_status().unwrap().dropped, 3, "the oldest past the buffer");
    let redis = OwnRedis::start(port).unwrap();
    redis.ready().await;
    until_connected(&[&a, &b], true).await;
    let (watcher, mut watch_rx) = open(&b, SessionRequest::New).await;
    join(&b, &watcher, "room").await;
    a.server().to("room").emit("n", &7).unwrap();
    let after: Vec<String> =
        drain(&mut watch_rx, Duration::from_secs(2)).await.into_iter().map(|(_, d, _)| d).collect();
    assert_eq!(after, ["7"], "what survived the outage came before this watcher joined");

    let resume = SessionRequest::Resume { id: session, offset: Some(offset) };
    let (again, _rx) = open(&b, resume).await;
    assert!(!again.recovered(), "events it should have had were lost: it must fetch again");
    redis.stop();
}

/// A session's record is written at each change (opened, joined, dropped, recovered): what
/// Redis holds is the last one written, whatever the order the runtime's threads run in.
/// A record written late over a newer one would recover the session without its rooms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_records_land_in_the_order_they_were_written() {
    use wsgate::broker::Broker;
    let Some(redis) = own_redis("streams_session_order").await else { return };
    let broker = RedisStreamsBroker::connect(&redis.url()).await.unwrap();
    let ns = wsgate::Namespace::from("/");
    let ttl = Duration::from_secs(60);
    let ids: Vec<String> = (0..2000).map(|n| format!("s{n}")).collect();
    for (n, id) in ids.iter().enumerate() {
        // Opened with no room, then joined; every third dropped (kept), every fifth ended.
        broker.hold_session(&ns, id, b"opened".to_vec(), ttl);
        broker.hold_session(&ns, id, b"joined".to_vec(), ttl);
        if n % 3 == 0 {
            broker.keep_session(&ns, id, b"dropped".to_vec(), ttl);
        }
        if n % 5 == 0 {
            broker.forget_session(&ns, id);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut wrong = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let expected: Option<&[u8]> = if n % 5 == 0 {
            None
        } else if n % 3 == 0 {
            Some(b"dropped")
        } else {
            Some(b"joined")
        };
        let got = broker.take_session(&ns, id).await;
        if got.as_deref() != expected {
            wrong.push((id.clone(), got.map(|r| String::from_utf8_lossy(&r).into_owned())));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} records stale: {:?}",
        wrong.len(),
        ids.len(),
        &wrong[..wrong.len().min(5)]
    );
    redis.stop();
}

/// A session dropped while Redis is away is kept when it comes back (restarted empty), and
/// so is a live one: no emit is needed for the broker to find Redis again.
#[tokio::test]
async fn session_records_written_during_an_outage_land_when_redis_is_back() {
    use wsgate::broker::Broker;
    let Some(redis) = own_redis("streams_session_outage").await else { return };
    let port = redis.port;
    let broker = RedisStreamsBroker::connect(&redis.url()).await.unwrap();
    let ns = wsgate::Namespace::from("/");
    let ttl = Duration::from_secs(60);
    broker.hold_session(&ns, "live", b"live".to_vec(), ttl);
    tokio::time::sleep(Duration::from_millis(200)).await;
    redis.stop();
    broker.keep_session(&ns, "dropped", b"dropped".to_vec(), ttl);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let redis = OwnRedis::start(port).unwrap();
    redis.ready().await;
    let mut got = (None, None);
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        got = (broker.take_session(&ns, "live").await, broker.take_session(&ns, "dropped").await);
        if got.0.is_some() && got.1.is_some() {
            break;
        }
        // Taken: written back for the next look.
        if let Some(record) = got.0.take() {
            broker.hold_session(&ns, "live", record, ttl);
        }
        if let Some(record) = got.1.take() {
            broker.keep_session(&ns, "dropped", record, ttl);
        }
    }
    assert_eq!(got, (Some(b"live".to_vec()), Some(b"dropped".to_vec())));
    redis.stop();
}
