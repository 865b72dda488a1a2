//! Connection state recovery in the core, driven in memory as an adapter drives it: sessions
//! opened, dropped and recovered, the history's replay, and exactly-once delivery while
//! emits race a recovery.
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wsgate::adapter::{Departure, Outbound, OutboundRx};
use wsgate::{
    App, AppConfig, ConnectMiddleware, Connection, Handshake, Recovery, Refusal, SessionRequest,
    gateway,
};

/// Records what each `on_connect` hook saw: whether the connection was recovered.
#[derive(Default)]
struct Quiet {
    connects: std::sync::Mutex<Vec<bool>>,
}

impl Quiet {
    fn connected(&self, conn: &Connection) {
        self.connects.lock().unwrap().push(conn.recovered());
    }
}

/// Takes the identity from the query (`user=…`), as authentication middleware would.
struct QueryIdentity;

impl ConnectMiddleware for QueryIdentity {
    async fn handle(&self, hs: &mut Handshake) -> Result<(), Refusal> {
        match hs.query_param("user") {
            Some(user) if user != "nobody" => {
                hs.identity = Some(user.into_owned());
                Ok(())
            }
            _ => Err(Refusal::unauthorized("Invalid token.")),
        }
    }
}

async fn app(recovery: Option<Recovery>) -> App {
    app_with(recovery, Arc::new(Quiet::default())).await
}

/// A gateway shared with the test, to read what its hooks saw.
struct Shared(Arc<Quiet>);

#[gateway]
impl Shared {
    #[subscribe_message("noop")]
    async fn noop(&self) {}

    #[on_connect]
    async fn connected(&self, conn: &Connection) {
        self.0.connected(conn);
    }
}

async fn app_with(recovery: Option<Recovery>, quiet: Arc<Quiet>) -> App {
    // Room for every event the racing test emits while nobody reads.
    let config = AppConfig {
        recovery,
        rate_limit: None,
        outbound_capacity: 1 << 20,
        ..AppConfig::default()
    };
    App::builder()
        .config(config)
        .middleware(QueryIdentity)
        .gateway(Shared(quiet))
        .build()
        .await
        .unwrap()
}

async fn open(app: &App, user: &str, session: SessionRequest) -> (Connection, OutboundRx) {
    let mut hs = Handshake::new("/", "test");
    hs.query = Some(format!("user={user}"));
    hs.session = session;
    app.handshake(hs).await.unwrap().open().await
}

fn resume(id: &str, offset: Option<&str>) -> SessionRequest {
    SessionRequest::Resume { id: id.to_owned(), offset: offset.map(str::to_owned) }
}

/// Every event queued: (event, offset, data).
fn drain(rx: &mut OutboundRx) -> Vec<(String, Option<String>, String)> {
    let mut out = Vec::new();
    while let Some(item) = rx.try_recv() {
        for e in item.emissions() {
            out.push((e.event().to_string(), e.offset().map(str::to_owned), e.data().to_string()));
        }
    }
    out
}

#[tokio::test]
async fn a_dropped_session_recovers_its_id_rooms_and_missed_events_once() {
    let hooks = Arc::new(Quiet::default());
    let app = app_with(Some(Recovery::default()), hooks.clone()).await;
    let server = app.server().clone();
    let (conn, mut rx) = open(&app, "u1", SessionRequest::New).await;
    let session = conn.session_id().unwrap().to_owned();
    assert!(!conn.recovered());
    conn.join("a").unwrap();
    conn.join("b").unwrap();
    server.to("a").emit("seen", &1).unwrap();
    let seen = drain(&mut rx);
    let offset = seen[0].1.clone().unwrap();

    // Queued but never written when the transport dropped: it must come back.
    server.to("a").emit("unwritten", &2).unwrap();
    app.disconnect_with(&conn, Departure::Lost).await;
    drop(rx);
    server.to("b").emit("missed", &3).unwrap();
    server.to("c").emit("other room", &4).unwrap();
    // Closed for now, and kept for its session all the same.
    assert!(matches!(conn.emit("direct", &5), Err(wsgate::SendError::Closed)));
    server.of("/").emit("everyone", &6).unwrap();

    let (again, mut rx) = open(&app, "u1", resume(&session, Some(&offset))).await;
    assert!(again.recovered());
    assert_eq!(again.id(), conn.id());
    assert_eq!(again.session_id(), Some(session.as_str()));
    let mut rooms = again.rooms();
    rooms.sort();
    assert_eq!(rooms, ["a".into(), "b".into()]);
    let replayed: Vec<_> = drain(&mut rx).into_iter().map(|(e, _, d)| (e, d)).collect();
    let expected = [("unwritten", "2"), ("missed", "3"), ("direct", "5"), ("everyone", "6")];
    assert_eq!(replayed, expected.map(|(e, d)| (e.to_owned(), d.to_owned())));

    server.to("a").emit("live", &7).unwrap();
    assert_eq!(drain(&mut rx).len(), 1, "live events once, through the restored room");
    assert_eq!(server.recovery_stats().unwrap().recovered, 1);
    assert_eq!(*hooks.connects.lock().unwrap(), [false, true], "on_connect hooks know");
}

#[tokio::test]
async fn sessions_are_not_recovered_by_another_identity_after_a_goodbye_or_with_junk() {
    let app = app(Some(Recovery::default())).await;
    let (conn, rx) = open(&app, "u1", SessionRequest::New).await;
    let session = conn.session_id().unwrap().to_owned();
    conn.join("a").unwrap();
    app.server().to("a").emit("x", &1).unwrap();
    app.disconnect(&conn).await;
    drop(rx);

    for junk in
        [Some("1"), Some("-1"), Some("zz-zz"), Some("ffffffff-ffffffffffffffffff"), Some("")]
    {
        let (other, _rx) = open(&app, "u2", resume(&session, junk)).await;
        assert!(!other.recovered(), "another user, offset {junk:?}");
        assert_ne!(other.session_id(), Some(session.as_str()));
        assert!(other.rooms().is_empty());
    }
    let stats = app.server().recovery_stats().unwrap();
    assert_eq!((stats.refused, stats.sessions), (5, 1), "the owner's session is still there");

    // The owner, with an offset from the future: refused, and the session is spent.
    let (owner, _rx) = open(&app, "u1", resume(&session, Some("0-ffff"))).await;
    assert!(!owner.recovered());
    let (owner, rx) = open(&app, "u1", resume(&session, None)).await;
    assert!(!owner.recovered(), "a session is recovered once at most");

    // A goodbye ends a session for good.
    let id = owner.session_id().unwrap().to_owned();
    app.disconnect_with(&owner, Departure::Farewell).await;
    drop(rx);
    let (after, _rx) = open(&app, "u1", resume(&id, None)).await;
    assert!(!after.recovered());

    for id in ["", "x", &"f".repeat(10_000)] {
        let (c, _rx) = open(&app, "u1", resume(id, Some(&"9".repeat(10_000)))).await;
        assert!(!c.recovered());
    }
}

#[tokio::test]
async fn without_recovery_nothing_changes() {
    let app = app(None).await;
    let (conn, mut rx) = open(&app, "u1", SessionRequest::New).await;
    assert_eq!(conn.session_id(), None);
    conn.join("a").unwrap();
    app.server().to("a").emit("x", &1).unwrap();
    assert_eq!(drain(&mut rx)[0].1, None, "no offsets");
    assert!(app.server().recovery_stats().is_none());
}

#[tokio::test]
async fn a_client_back_before_the_server_noticed_takes_its_session_over() {
    let app = app(Some(Recovery::default())).await;
    let (conn, rx) = open(&app, "u1", SessionRequest::New).await;
    conn.join("a").unwrap();
    let session = conn.session_id().unwrap().to_owned();
    // The old connection's adapter lets it go once the server closes it.
    let old = tokio::spawn({
        let app = app.clone();
        let conn = conn.clone();
        async move {
            let reason = conn.closed().await;
            app.disconnect(&conn).await;
            drop(rx);
            reason
        }
    });
    let (again, _rx) = open(&app, "u1", resume(&session, None)).await;
    assert!(again.recovered());
    assert_eq!(again.id(), conn.id());
    assert_eq!(again.rooms(), ["a".into()]);
    assert_eq!(old.await.unwrap(), wsgate::CloseReason::Replaced);
    // The recovered connection is the one registered, and stays in the room.
    assert_eq!(app.server().connection(conn.id()), Some(again.clone()));
    assert_eq!(app.server().room_members(&"/".into(), &"a".into()), [again.id()]);
}

/// Emits race the drop and the recovery: the client receives every event once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emits_racing_a_recovery_arrive_exactly_once_in_order() {
    for round in 0..20 {
        let app = app(Some(Recovery::default())).await;
        let server = app.server().clone();
        let (conn, mut rx) = open(&app, "u1", SessionRequest::New).await;
        conn.join("room").unwrap();
        let session = conn.session_id().unwrap().to_owned();
        let stop = Arc::new(AtomicBool::new(false));
        let emitter = std::thread::spawn({
            let server = server.clone();
            let stop = stop.clone();
            move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) || n < 200 {
                    n += 1;
                    server.to("room").emit("n", &n).unwrap();
                    if n.is_multiple_of(16) {
                        std::thread::yield_now();
                    }
                }
                n
            }
        });
        tokio::time::sleep(Duration::from_micros(200 + round * 50)).await;
        // The client took part of what was queued, then its transport dropped.
        let mut received: Vec<(u64, String)> = Vec::new();
        for _ in 0..(round as usize * 3) {
            if let Some(Outbound::Event(e)) = rx.try_recv() {
                received.push((e.data().get().parse().unwrap(), e.offset().unwrap().to_owned()));
            }
        }
        app.disconnect(&conn).await;
        drop(rx);
        let offset = received.last().map(|(_, o)| o.clone());
        let (again, mut rx) = open(&app, "u1", resume(&session, offset.as_deref())).await;
        assert!(again.recovered(), "round {round}");
        stop.store(true, Ordering::Relaxed);
        let last = emitter.join().unwrap();
        while let Some(item) = rx.try_recv() {
            if let Outbound::Event(e) = item {
                received.push((e.data().get().parse().unwrap(), e.offset().unwrap().to_owned()));
            }
        }
        let numbers: Vec<u64> = received.iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, (1..=last).collect::<Vec<_>>(), "round {round}: each once, in order");
    }
}

/// A room's events from before the connection joined it are not replayed, with an offset or
/// without one: the client had them from elsewhere (a fetch), or was not to have them.
#[tokio::test]
async fn events_of_a_room_from_before_the_join_are_not_replayed() {
    let app = app(Some(Recovery::default())).await;
    let server = app.server().clone();
    let (conn, mut rx) = open(&app, "u1", SessionRequest::New).await;
    let session = conn.session_id().unwrap().to_owned();
    conn.join("a").unwrap();
    server.to("a").emit("a1", &1).unwrap();
    let offset = drain(&mut rx)[0].1.clone();
    server.to("b").emit("b-before-join", &2).unwrap();
    conn.join("b").unwrap();
    conn.join("a").unwrap(); // joining again keeps the first join's offset
    server.to("b").emit("b-after-join", &3).unwrap();
    server.to("c").emit("c-left", &4).unwrap();
    conn.join("c").unwrap();
    conn.leave("c");
    server.to("c").emit("c-after-leave", &5).unwrap();
    drain(&mut rx);
    app.disconnect(&conn).await;
    drop(rx);
    server.to("a").emit("a2", &6).unwrap();

    for offset in [offset, None] {
        let (again, mut rx) = open(&app, "u1", resume(&session, offset.as_deref())).await;
        assert!(again.recovered());
        let events: Vec<_> = drain(&mut rx).into_iter().map(|(e, _, _)| e).collect();
        let expected = if offset.is_some() {
            vec!["b-after-join", "a2"]
        } else {
            vec!["a1", "b-after-join", "a2"]
        };
        assert_eq!(events, expected, "offset {offset:?}");
        app.disconnect(&again).await;
    }
}

#[tokio::test]
async fn missed_events_come_back_with_their_arguments_and_attachments() {
    let app = app(Some(Recovery::default())).await;
    let server = app.server().clone();
    let (conn, mut rx) = open(&app, "u1", SessionRequest::New).await;
    let session = conn.session_id().unwrap().to_owned();
    conn.join("a").unwrap();
    server.to("a").emit("seen", &1).unwrap();
    let offset = drain(&mut rx)[0].1.clone().unwrap();
    app.disconnect_with(&conn, Departure::Lost).await;
    drop(rx);
    let file = wsgate::Args(("f.bin", bytes::Bytes::from_static(&[7, 8, 9])));
    server.to("a").emit("file", &file).unwrap();

    let (_again, mut rx) = open(&app, "u1", resume(&session, Some(&offset))).await;
    let Some(Outbound::Event(e)) = rx.try_recv() else { panic!("the missed event") };
    assert_eq!(e.event().as_str(), "file");
    assert_eq!(e.data().get(), r#"["f.bin",{"_placeholder":true,"num":0}]"#);
    assert_eq!(e.extras().arity, wsgate::adapter::Arity::Several);
    assert_eq!(e.extras().binary, [bytes::Bytes::from_static(&[7, 8, 9])]);
    assert!(e.offset().is_some(), "replayed at its offset");
}
