//! Corked polls ([`wsgate::adapter::cork`], what the adapters' sessions run in): room
//! broadcasts are held and delivered together, and nothing anyone receives is reordered:
//! replies, emits to one connection, joins and leaves made after a held broadcast, on the
//! same task or another.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{Value, json};
use wsgate::adapter::cork;
use wsgate::testing::{Received, TestClient};
use wsgate::{App, gateway};

struct Nothing;

#[gateway]
impl Nothing {}

/// The events a client has received by now (after held broadcasts had time to go), as
/// `event:data`.
async fn received(client: &mut TestClient) -> Vec<String> {
    let mut all = Vec::new();
    while let Some(item) = client.next_within(Duration::from_millis(100)).await {
        if let Received::Event { event, data, .. } = item {
            all.push(format!("{event}:{data}"));
        }
    }
    all
}

/// `n` clients, each in room `r`.
async fn members_of_r(app: &App, n: usize) -> Vec<TestClient> {
    let mut members = Vec::with_capacity(n);
    for _ in 0..n {
        let client = TestClient::builder(app).connect().await.unwrap();
        client.connection().join("r").unwrap();
        members.push(client);
    }
    members
}

fn names(events: &[&str]) -> Vec<String> {
    events.iter().map(ToString::to_string).collect()
}

#[tokio::test]
async fn held_broadcasts_keep_their_place_among_emits_joins_and_leaves() {
    let app = App::builder().gateway(Nothing).build().await.unwrap();
    let server = app.server().clone();
    let mut a = TestClient::builder(&app).connect().await.unwrap();
    let mut b = TestClient::builder(&app).connect().await.unwrap();
    let mut c = TestClient::builder(&app).connect().await.unwrap();
    a.connection().join("r").unwrap();
    b.connection().join("r").unwrap();

    let (a_conn, b_conn, c_conn) =
        (a.connection().clone(), b.connection().clone(), c.connection().clone());
    let held = cork(async {
        // Counted as the members they are for, and held: nobody has them yet.
        assert_eq!(server.to("r").emit("e", &1).unwrap(), 2);
        assert_eq!(server.to("r").except(b_conn.id()).emit("e", &2).unwrap(), 1);
        assert_eq!(server.to("r").emit("e", &3).unwrap(), 2);
        let nothing_yet = (a.drain().len(), b.drain().len());
        // An emit to one member: the held ones go first.
        a_conn.emit("direct", &4).unwrap();
        server.to("r").emit("e", &5).unwrap();
        // A join: the held broadcast was not for it.
        c_conn.join("r").unwrap();
        server.to("r").emit("e", &6).unwrap();
        // A leave: the held broadcast was still for it.
        b_conn.leave("r");
        server.to("r").emit("e", &7).unwrap();
        nothing_yet
    })
    .await;
    assert_eq!(held, (0, 0), "held while the corked poll ran");

    assert_eq!(
        received(&mut a).await,
        names(&["e:1", "e:2", "e:3", "direct:4", "e:5", "e:6", "e:7"])
    );
    assert_eq!(received(&mut b).await, names(&["e:1", "e:3", "e:5", "e:6"]));
    assert_eq!(received(&mut c).await, names(&["e:6", "e:7"]));
}

#[tokio::test]
async fn outside_a_corked_poll_an_emit_is_queued_at_once() {
    let app = App::builder().gateway(Nothing).build().await.unwrap();
    let mut a = TestClient::builder(&app).connect().await.unwrap();
    a.connection().join("r").unwrap();
    assert_eq!(app.server().to("r").emit("e", &1).unwrap(), 1);
    assert_eq!(a.drain().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_task_emitting_after_a_held_broadcast_comes_after_it() {
    let app = App::builder().gateway(Nothing).build().await.unwrap();
    let server = app.server().clone();
    let mut members = members_of_r(&app, 50).await;
    for round in 0..20 {
        let conns: Vec<_> = members.iter().map(|m| m.connection().clone()).collect();
        let (told, heard) = tokio::sync::oneshot::channel::<()>();
        // Another task, likely on the other worker, emits to each member once told.
        let other = tokio::spawn(async move {
            heard.await.unwrap();
            for conn in conns {
                conn.emit("after", &round).unwrap();
            }
        });
        let server = server.clone();
        cork(async move {
            server.to("r").emit("room", &round).unwrap();
            told.send(()).unwrap();
            // The poll goes on while the other task runs.
            std::thread::sleep(Duration::from_millis(2));
        })
        .await;
        other.await.unwrap();
        for member in &mut members {
            let mut got: Vec<(String, Value)> = Vec::new();
            while got.len() < 2 {
                match member.next_within(Duration::from_secs(2)).await {
                    Some(Received::Event { event, data, .. }) => got.push((event, data)),
                    Some(_) => {}
                    None => panic!("round {round}: only {got:?}"),
                }
            }
            assert_eq!(
                got,
                vec![("room".to_string(), json!(round)), ("after".to_string(), json!(round))],
                "round {round}"
            );
        }
    }
}

#[tokio::test]
async fn a_burst_reaches_a_large_room_whole_and_in_order() {
    let app = App::builder().gateway(Nothing).build().await.unwrap();
    let server = app.server().clone();
    let mut members = members_of_r(&app, 200).await;
    // Bursts one after the other: each is held while the members still take the last one.
    for burst in 0..5 {
        let server = server.clone();
        cork(async move {
            for i in 0..10 {
                server.to("r").emit("n", &(burst * 10 + i)).unwrap();
            }
        })
        .await;
    }
    for member in &mut members {
        for i in 0..50 {
            assert_eq!(member.event("n").await, Some(json!(i)));
        }
        assert!(member.drain().is_empty(), "each once");
    }
}

#[tokio::test]
async fn held_broadcasts_take_the_queue_room_of_each_event() {
    // Room for 4 events a connection: held broadcasts go as one item, counted per event.
    let config = wsgate::AppConfig { outbound_capacity: 4, ..wsgate::AppConfig::default() };
    let app = App::builder().config(config).gateway(Nothing).build().await.unwrap();
    let server = app.server().clone();
    let mut fits = TestClient::builder(&app).connect().await.unwrap();
    let slow = TestClient::builder(&app).connect().await.unwrap();
    fits.connection().join("four").unwrap();
    slow.connection().join("four").unwrap();
    slow.connection().join("five").unwrap();

    cork(async {
        for n in 1..=4 {
            server.to("four").emit("e", &n).unwrap();
        }
    })
    .await;
    let (fits_conn, slow_conn) = (fits.connection().clone(), slow.connection().clone());
    // The four fill both queues to the brim: one more event is one too many.
    cork(async {
        server.to("five").emit("e", &5).unwrap();
    })
    .await;
    let closed = tokio::time::timeout(Duration::from_secs(2), slow_conn.closed()).await;
    assert_eq!(closed.ok(), Some(wsgate::CloseReason::SlowConsumer), "the fifth did not fit");
    assert_eq!(received(&mut fits).await, names(&["e:1", "e:2", "e:3", "e:4"]));
    assert!(!fits_conn.is_closing(), "four fit in a queue of four");
}
