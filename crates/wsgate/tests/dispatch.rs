//! The core's message path driven in memory, as an adapter drives it: handshake, open,
//! dispatch, and the outbound queue read back.
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use wsgate::adapter::{Direct, Inbound, Outbound, OutboundRx, to_payload};
use wsgate::broker::Broker;
use wsgate::{
    AckId, App, ConnectMiddleware, Connection, Data, ExceptionContext, Ext, Gateway,
    GatewayOptions, Handshake, MessageContext, Namespace, Refusal, Routes, Server, Valid, WsError,
    WsException, WsResponse, gateway,
};

#[derive(Clone, Debug, PartialEq)]
struct User {
    id: i64,
}

#[derive(Deserialize, validator::Validate)]
struct Show {
    #[validate(range(min = 1, message = "Missing entry id."))]
    #[serde(rename = "entryId", default)]
    entry_id: i64,
}

/// Counts what the hooks saw.
#[derive(Default)]
struct Counters {
    init: AtomicUsize,
    connected: AtomicUsize,
    disconnected: AtomicUsize,
}

struct EntryGateway {
    counters: Arc<Counters>,
}

#[gateway]
impl EntryGateway {
    #[subscribe_message("showEntry")]
    async fn show(&self, Valid(show): Valid<Show>) -> WsResponse<Value> {
        WsResponse::new("showEntry", json!({ "id": show.entry_id }))
    }

    #[subscribe_message("whoami")]
    async fn whoami(&self, Ext(user): Ext<User>) -> i64 {
        user.id
    }

    #[subscribe_message("fail")]
    async fn fail(&self) -> Result<(), WsError> {
        Err(std::io::Error::other("disk on fire"))?;
        Ok(())
    }

    #[subscribe_message("panic")]
    async fn panics(&self) {
        panic!("handler bug");
    }

    #[subscribe_message("admin")]
    #[use_guards(|ctx: &MessageContext| match ctx.extension::<User>() {
        Some(u) if u.id == 1 => Ok(()),
        _ => Err(WsException::new("Forbidden.")),
    })]
    async fn admin(&self) -> &'static str {
        "welcome"
    }

    #[subscribe_message("join")]
    fn join(&self, conn: Connection, Data(room): Data<String>) -> Result<(), WsException> {
        conn.join(room)
    }

    #[after_init]
    async fn init(&self, _server: &Server) {
        self.counters.init.fetch_add(1, Ordering::SeqCst);
    }

    #[on_connect]
    async fn connected(&self, _conn: &Connection) {
        self.counters.connected.fetch_add(1, Ordering::SeqCst);
    }

    #[on_disconnect]
    async fn disconnected(&self, _conn: &Connection) {
        self.counters.disconnected.fetch_add(1, Ordering::SeqCst);
    }
}

/// A gateway written without the macros, on a namespace of its own.
struct ChatGateway;

impl Gateway for ChatGateway {
    fn options(&self) -> GatewayOptions {
        GatewayOptions::new()
            .namespace("/chat")
            .guard(|ctx: &MessageContext| {
                if ctx.event().as_str() == "blocked" {
                    Err(WsException::new("Blocked by the gateway guard."))
                } else {
                    Ok(())
                }
            })
            .filter(|err: &WsError, cx: &ExceptionContext<'_>| match err {
                WsError::Exception(e) if e.message() == Some("teapot") => {
                    Some(json!({ "status": "error", "message": "I am a teapot", "event": cx.pattern.as_str() }))
                }
                _ => None,
            })
    }

    fn register(routes: &mut Routes<Self>) {
        routes.on("say", |_gw: Arc<Self>, Data(text): Data<String>| async move {
            WsResponse::new("said", text)
        });
        routes.on("blocked", |_gw: Arc<Self>| async {});
        routes.on("teapot", |_gw: Arc<Self>| async { Err::<(), _>(WsException::new("teapot")) });
    }
}

/// Attaches a user from the `user` query parameter; refuses without one.
struct QueryUser;

impl ConnectMiddleware for QueryUser {
    async fn handle(&self, hs: &mut Handshake) -> Result<(), Refusal> {
        let id = hs.query_param("user").and_then(|v| v.parse().ok());
        let id = id.ok_or_else(|| Refusal::unauthorized("Missing authentication token."))?;
        hs.extensions.insert(User { id });
        Ok(())
    }
}

async fn app(counters: Arc<Counters>) -> App {
    App::builder()
        .middleware(QueryUser)
        .gateway(EntryGateway { counters })
        .gateway(ChatGateway)
        .build()
        .await
        .unwrap()
}

async fn connect(app: &App, ns: &str, user: i64) -> (Connection, OutboundRx) {
    let mut hs = Handshake::new(ns, "test");
    hs.query = Some(format!("user={user}"));
    app.handshake(hs).await.unwrap().open().await
}

fn msg(event: &str, data: Value) -> Inbound {
    Inbound::new(event, to_payload(&data).unwrap())
}

/// The next outbound item as JSON: `{event, data}`, `{ack, data}` or `{exception, id, data}`.
fn next(rx: &mut OutboundRx) -> Value {
    match rx.try_recv().expect("an outbound item") {
        Outbound::Event(e) => {
            json!({ "event": e.event().as_str(), "data": serde_json::from_str::<Value>(e.data().get()).unwrap() })
        }
        Outbound::Direct(d) => match *d {
            Direct::Ack { id, data } => {
                json!({ "ack": id, "data": serde_json::from_str::<Value>(data.get()).unwrap() })
            }
            Direct::Exception { id, data } => {
                json!({ "exception": id, "data": serde_json::from_str::<Value>(data.get()).unwrap() })
            }
        },
    }
}

#[tokio::test]
async fn ws_response_is_emitted_and_values_go_to_the_ack() {
    let app = app(Arc::default()).await;
    let (conn, mut rx) = connect(&app, "/", 5).await;

    app.dispatch(&conn, msg("showEntry", json!({ "entryId": 2 }))).await;
    assert_eq!(next(&mut rx), json!({ "event": "showEntry", "data": { "id": 2 } }));

    app.dispatch(&conn, msg("whoami", Value::Null).with_ack(AckId::Number(9))).await;
    assert_eq!(next(&mut rx), json!({ "ack": 9, "data": 5 }));

    // Without an ack id, a plain value has nowhere to go.
    app.dispatch(&conn, msg("whoami", Value::Null)).await;
    assert!(rx.try_recv().is_none());
}

#[tokio::test]
async fn validation_and_unknown_events_are_exceptions() {
    let app = app(Arc::default()).await;
    let (conn, mut rx) = connect(&app, "/", 5).await;

    app.dispatch(&conn, msg("showEntry", json!({}))).await;
    assert_eq!(
        next(&mut rx),
        json!({ "exception": null, "data": {
            "status": "error", "message": "Missing entry id.",
            "cause": { "pattern": "showEntry", "data": {} } } })
    );

    app.dispatch(
        &conn,
        msg("showEntry", json!({ "entryId": "x" })).with_ack(AckId::Text("a".into())),
    )
    .await;
    let reply = next(&mut rx);
    assert_eq!(reply["exception"], "a");
    assert_eq!(
        reply["data"]["message"],
        "Invalid entryId: invalid type: string \"x\", expected i64"
    );

    app.dispatch(&conn, msg("nope", json!(1))).await;
    assert_eq!(next(&mut rx)["data"]["message"], "There is no handler for event 'nope'.");
}

#[tokio::test]
async fn internal_errors_and_panics_are_not_leaked() {
    let app = app(Arc::default()).await;
    let (conn, mut rx) = connect(&app, "/", 5).await;
    for event in ["fail", "panic"] {
        app.dispatch(&conn, msg(event, Value::Null)).await;
        let reply = next(&mut rx);
        assert_eq!(reply["data"]["message"], "Internal server error", "{event}");
        assert_eq!(reply["data"]["cause"]["pattern"], event);
    }
    // The connection still works.
    app.dispatch(&conn, msg("whoami", Value::Null).with_ack(AckId::Number(1))).await;
    assert_eq!(next(&mut rx)["data"], 5);
}

#[tokio::test]
async fn guards_run_per_handler_and_per_gateway() {
    let app = app(Arc::default()).await;
    let (user, mut user_rx) = connect(&app, "/", 5).await;
    let (admin, mut admin_rx) = connect(&app, "/", 1).await;

    app.dispatch(&user, msg("admin", Value::Null).with_ack(AckId::Number(1))).await;
    assert_eq!(next(&mut user_rx)["data"]["message"], "Forbidden.");
    app.dispatch(&admin, msg("admin", Value::Null).with_ack(AckId::Number(1))).await;
    assert_eq!(next(&mut admin_rx), json!({ "ack": 1, "data": "welcome" }));

    let (chat, mut chat_rx) = connect(&app, "/chat", 5).await;
    app.dispatch(&chat, msg("blocked", Value::Null)).await;
    assert_eq!(next(&mut chat_rx)["data"]["message"], "Blocked by the gateway guard.");
    app.dispatch(&chat, msg("say", json!("hi"))).await;
    assert_eq!(next(&mut chat_rx), json!({ "event": "said", "data": "hi" }));
}

#[tokio::test]
async fn gateway_filters_come_before_the_default() {
    let app = app(Arc::default()).await;
    let (chat, mut rx) = connect(&app, "/chat", 5).await;
    app.dispatch(&chat, msg("teapot", Value::Null)).await;
    assert_eq!(
        next(&mut rx)["data"],
        json!({ "status": "error", "message": "I am a teapot", "event": "teapot" })
    );
    // Events of the root namespace do not exist in /chat.
    app.dispatch(&chat, msg("whoami", Value::Null)).await;
    assert_eq!(next(&mut rx)["data"]["message"], "There is no handler for event 'whoami'.");
}

#[tokio::test]
async fn middleware_refuses_and_unknown_namespaces_are_refused() {
    let app = app(Arc::default()).await;
    let err = app.handshake(Handshake::new("/", "test")).await.unwrap_err();
    assert_eq!(err, Refusal::unauthorized("Missing authentication token."));
    assert_eq!(
        err.body(),
        json!({ "status": "error", "message": "Missing authentication token." })
    );

    let mut hs = Handshake::new("/nowhere", "test");
    hs.query = Some("user=1".into());
    assert_eq!(app.handshake(hs).await.unwrap_err().status, http::StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn hooks_run_at_init_connect_and_disconnect() {
    let counters = Arc::new(Counters::default());
    let app = app(counters.clone()).await;
    assert_eq!(counters.init.load(Ordering::SeqCst), 1);
    let (conn, _rx) = connect(&app, "/", 5).await;
    let (_other, _rx2) = connect(&app, "/chat", 5).await;
    assert_eq!(counters.connected.load(Ordering::SeqCst), 1, "only the gateway's namespace");
    assert_eq!(app.server().connection_count(), 2);
    app.disconnect(&conn).await;
    assert_eq!(counters.disconnected.load(Ordering::SeqCst), 1);
    assert_eq!(app.server().connection_count(), 1);
}

#[tokio::test]
async fn rooms_and_broadcasts_reach_members_once() {
    let app = app(Arc::default()).await;
    let (a, mut a_rx) = connect(&app, "/", 1).await;
    let (b, mut b_rx) = connect(&app, "/", 2).await;
    let (_c, mut c_rx) = connect(&app, "/", 3).await;
    app.dispatch(&a, msg("join", json!("entry:1"))).await;
    app.dispatch(&b, msg("join", json!("entry:1"))).await;
    app.dispatch(&b, msg("join", json!("entry:1"))).await;

    let server = app.server();
    assert_eq!(server.to("entry:1").emit("commentCreated", &json!({ "id": 7 })).unwrap(), 2);
    for rx in [&mut a_rx, &mut b_rx] {
        assert_eq!(next(rx), json!({ "event": "commentCreated", "data": { "id": 7 } }));
        assert!(rx.try_recv().is_none(), "delivered once");
    }
    assert!(c_rx.try_recv().is_none());

    assert_eq!(server.to("entry:1").except(a.id()).emit("x", &1).unwrap(), 1);
    assert!(a_rx.try_recv().is_none());
    assert_eq!(next(&mut b_rx)["event"], "x");

    b.leave("entry:1");
    app.disconnect(&a).await;
    assert_eq!(server.to("entry:1").emit("y", &1).unwrap(), 0);
    assert_eq!(server.emit("all", &1).unwrap(), 2);
    assert_eq!(next(&mut c_rx)["event"], "all");
}

#[tokio::test]
async fn duplicate_events_fail_at_build() {
    let err = App::builder().gateway(ChatGateway).gateway(ChatGateway).build().await.unwrap_err();
    assert_eq!(err.to_string(), "event `say` has two handlers in namespace `/chat`");
}

#[test]
fn building_an_app_can_happen_on_any_thread() {
    fn assert_send<T: Send>(_: &T) {}
    let build = App::builder().middleware(QueryUser).gateway(ChatGateway).build();
    assert_send(&build);
}

/// Records what an observer is told, as `kind:detail` lines.
#[derive(Clone, Default)]
struct Recorder(Arc<std::sync::Mutex<Vec<String>>>);

impl wsgate::Observer for Recorder {
    fn connection_opened(&self, conn: &Connection) {
        self.0.lock().unwrap().push(format!("open:{}", conn.transport()));
    }
    fn connection_closed(&self, conn: &Connection) {
        self.0.lock().unwrap().push(format!("close:{}", conn.transport()));
    }
    fn handshake_refused(&self, transport: &'static str, refusal: &Refusal) {
        self.0.lock().unwrap().push(format!("refused:{transport}:{}", refusal.status.as_u16()));
    }
    fn message(
        &self,
        _conn: &Connection,
        event: Option<&wsgate::EventName>,
        outcome: wsgate::Outcome,
        _elapsed: std::time::Duration,
    ) {
        let event = event.map_or("-", wsgate::EventName::as_str);
        self.0.lock().unwrap().push(format!("message:{event}:{}", outcome.as_str()));
    }
}

/// The entry gateway behind `QueryUser`, watched by a recorder.
async fn observed_app(config: wsgate::AppConfig) -> (App, Recorder) {
    let recorder = Recorder::default();
    let app = App::builder()
        .config(config)
        .middleware(QueryUser)
        .observer(recorder.clone())
        .gateway(EntryGateway { counters: Arc::default() })
        .build()
        .await
        .unwrap();
    (app, recorder)
}

#[tokio::test]
async fn observers_see_connections_and_messages_but_not_invented_event_names() {
    let (app, recorder) = observed_app(wsgate::AppConfig::default()).await;
    assert!(app.handshake(Handshake::new("/", "test")).await.is_err());
    let (conn, _rx) = connect(&app, "/", 1).await;
    app.dispatch(&conn, msg("showEntry", json!({ "entryId": 2 }))).await;
    app.dispatch(&conn, msg("showEntry", json!({}))).await;
    app.dispatch(&conn, msg("panic", Value::Null)).await;
    app.dispatch(&conn, msg("made-up-by-a-client", Value::Null)).await;
    app.reject(&conn, "Invalid JSON.", None).await;
    app.disconnect(&conn).await;
    assert_eq!(
        *recorder.0.lock().unwrap(),
        [
            "refused:test:401",
            "open:test",
            "message:showEntry:ok",
            "message:showEntry:error",
            "message:panic:error",
            "message:-:unrouted",
            "message:-:undecodable",
            "close:test",
        ]
    );
}

#[tokio::test]
async fn observers_see_messages_refused_by_the_rate_or_a_closing_connection() {
    let config = wsgate::AppConfig {
        rate_limit: Some(wsgate::RateLimit { per_second: 0.001, burst: 1 }),
        ..wsgate::AppConfig::default()
    };
    let (app, recorder) = observed_app(config).await;
    let (conn, _rx) = connect(&app, "/", 1).await;
    app.dispatch(&conn, msg("whoami", Value::Null)).await;
    app.dispatch(&conn, msg("whoami", Value::Null)).await;
    let (other, _other_rx) = connect(&app, "/", 2).await;
    other.close(wsgate::CloseReason::GoingAway);
    app.dispatch(&other, msg("whoami", Value::Null)).await;
    let seen = recorder.0.lock().unwrap().clone();
    assert_eq!(
        seen,
        ["open:test", "message:whoami:ok", "message:-:refused", "open:test", "message:-:refused"]
    );
}

/// Two instances linked by a [`wsgate::broker::MemoryBroker`], each with its own server and clients.
async fn linked_apps() -> (App, App, wsgate::broker::MemoryBroker) {
    let broker = wsgate::broker::MemoryBroker::new();
    let mut apps = Vec::new();
    for _ in 0..2 {
        let app = App::builder()
            .server(Server::with_broker(broker.clone()))
            .middleware(QueryUser)
            .gateway(EntryGateway { counters: Arc::default() })
            .gateway(ChatGateway)
            .build()
            .await
            .unwrap();
        apps.push(app);
    }
    let b = apps.pop().unwrap();
    (apps.pop().unwrap(), b, broker)
}

#[tokio::test]
async fn a_broker_carries_broadcasts_to_other_instances_once() {
    let (one, two, broker) = linked_apps().await;
    assert_ne!(one.server().node(), two.server().node());
    let (a, mut a_rx) = connect(&one, "/", 1).await;
    let (b, mut b_rx) = connect(&two, "/", 2).await;
    let (_c, mut c_rx) = connect(&two, "/", 3).await;
    let (_chat, mut chat_rx) = connect(&two, "/chat", 4).await;
    assert_ne!(a.id(), b.id(), "connection ids are unique across instances");
    one.dispatch(&a, msg("join", json!("entry:1"))).await;
    two.dispatch(&b, msg("join", json!("entry:1"))).await;

    // A room broadcast from instance one reaches the member on each instance, once.
    let local = one.server().to("entry:1").emit("commentCreated", &json!({ "id": 7 })).unwrap();
    assert_eq!(local, 1, "the count is of this instance's recipients");
    for rx in [&mut a_rx, &mut b_rx] {
        assert_eq!(next(rx), json!({ "event": "commentCreated", "data": { "id": 7 } }));
        assert!(rx.try_recv().is_none(), "delivered once");
    }
    assert!(c_rx.try_recv().is_none(), "not a member");

    // `except` names a connection of another instance.
    two.server().to("entry:1").except(a.id()).emit("x", &1).unwrap();
    assert!(a_rx.try_recv().is_none());
    assert_eq!(next(&mut b_rx)["event"], "x");

    // Namespaces hold across instances; `emit` reaches everyone everywhere.
    one.server().of("/chat").emit("chat", &"hi").unwrap();
    assert_eq!(next(&mut chat_rx), json!({ "event": "chat", "data": "hi" }));
    assert!(b_rx.try_recv().is_none() && a_rx.try_recv().is_none());
    one.server().emit("all", &1).unwrap();
    for rx in [&mut a_rx, &mut b_rx, &mut c_rx, &mut chat_rx] {
        assert_eq!(next(rx)["event"], "all");
        assert!(rx.try_recv().is_none());
    }

    // An emit to a connection of the other instance finds it there.
    assert!(!one.server().emit_to(b.id(), "direct", &json!({ "to": "b" })).unwrap());
    assert_eq!(next(&mut b_rx), json!({ "event": "direct", "data": { "to": "b" } }));
    assert!(a_rx.try_recv().is_none() && c_rx.try_recv().is_none());

    let status = broker.status();
    assert!(status.connected);
    assert_eq!((status.published, status.received), (5, 5));
}

#[tokio::test]
async fn a_connection_over_its_rate_gets_exceptions_then_is_closed() {
    let config = wsgate::AppConfig {
        rate_limit: Some(wsgate::RateLimit { per_second: 0.5, burst: 3 }),
        ..wsgate::AppConfig::default()
    };
    let app = limited_app(config).await;
    let (conn, mut rx) = connect(&app, "/", 1).await;
    let (other, mut other_rx) = connect(&app, "/", 2).await;
    for _ in 0..3 {
        app.dispatch(&conn, msg("whoami", Value::Null).with_ack(AckId::Number(1))).await;
        assert_eq!(next(&mut rx), json!({ "ack": 1, "data": 1 }));
    }
    // Over the rate: refused, with the ack id, and the handler does not run.
    app.dispatch(&conn, msg("whoami", Value::Null).with_ack(AckId::Number(2))).await;
    assert_eq!(
        next(&mut rx),
        json!({ "exception": 2, "data": { "status": "error", "message": "Too many messages." } })
    );
    assert!(!conn.is_closing());
    // Another connection has its own bucket.
    app.dispatch(&other, msg("whoami", Value::Null).with_ack(AckId::Number(3))).await;
    assert_eq!(next(&mut other_rx), json!({ "ack": 3, "data": 2 }));
    // Going on regardless: after `burst` refusals in a row, the connection is closed (1008).
    app.dispatch(&conn, msg("whoami", Value::Null)).await;
    app.reject(&conn, "Invalid JSON.", None).await;
    assert!(conn.is_closing());
    assert_eq!(conn.closed().await, wsgate::CloseReason::PolicyViolation);
}

/// Middleware that never finishes, as a token check waiting on a database that hangs.
struct Hangs;

impl ConnectMiddleware for Hangs {
    async fn handle(&self, _: &mut Handshake) -> Result<(), Refusal> {
        std::future::pending().await
    }
}

#[tokio::test(start_paused = true)]
async fn a_handshake_whose_middleware_hangs_is_refused_after_the_timeout() {
    let app = App::builder().middleware(Hangs).gateway(ChatGateway).build().await.unwrap();
    let started = tokio::time::Instant::now();
    let refusal = app.handshake(Handshake::new("/chat", "test")).await.unwrap_err();
    assert_eq!(refusal.status, http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refusal.message, "Handshake timed out.");
    assert_eq!(started.elapsed(), std::time::Duration::from_secs(10), "the default timeout");
    assert_eq!(app.server().connection_count(), 0);
}

async fn limited_app(config: wsgate::AppConfig) -> App {
    App::builder()
        .config(config)
        .middleware(QueryUser)
        .gateway(EntryGateway { counters: Arc::default() })
        .build()
        .await
        .unwrap()
}

fn from(peer: &str, user: i64) -> Handshake {
    let mut hs = Handshake::new("/", "test");
    hs.query = Some(format!("user={user}"));
    hs.peer = Some(peer.parse().unwrap());
    hs
}

#[tokio::test]
async fn one_address_holds_at_most_its_share_of_connections() {
    let config = wsgate::AppConfig { max_connections_per_peer: Some(2), ..Default::default() };
    let app = limited_app(config).await;
    let (a, _a_rx) = app.handshake(from("10.0.0.1:1000", 1)).await.unwrap().open().await;
    let pending = app.handshake(from("10.0.0.1:1001", 1)).await.unwrap();
    // A handshake under way counts already: the third is refused before its middleware runs.
    let refusal = app.handshake(from("10.0.0.1:1002", 1)).await.unwrap_err();
    assert_eq!(refusal.status, http::StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refusal.message, wsgate::TOO_MANY_CONNECTIONS);
    // Other addresses, and the same address on another port, are counted apart / together.
    let (_b, _b_rx) = app.handshake(from("10.0.0.2:1000", 2)).await.unwrap().open().await;
    assert!(app.handshake(from("[::1]:1000", 3)).await.is_ok());
    let ip = "10.0.0.1".parse().unwrap();
    assert_eq!(app.server().connections_from(ip), 2);

    // A handshake given up (the client left before opening) gives its slot back...
    drop(pending);
    assert_eq!(app.server().connections_from(ip), 1);
    let (c, _c_rx) = app.handshake(from("10.0.0.1:1003", 1)).await.unwrap().open().await;
    assert!(app.handshake(from("10.0.0.1:1004", 1)).await.is_err());
    // ...and so does a connection that ends, even while something still holds its handle.
    let held = a.clone();
    app.disconnect(&a).await;
    drop(a);
    assert_eq!(app.server().connections_from(ip), 1);
    assert!(held.server().connection(held.id()).is_none());
    assert!(app.handshake(from("10.0.0.1:1005", 1)).await.is_ok());
    app.disconnect(&c).await;

    // A middleware refusal gives the slot back too.
    let mut anonymous = from("10.0.0.9:1", 0);
    anonymous.query = None;
    for _ in 0..3 {
        assert_eq!(app.handshake(anonymous_clone(&anonymous)).await.unwrap_err().status, 401);
    }
    assert_eq!(app.server().connections_from("10.0.0.9".parse().unwrap()), 0);

    // Without a limit, or without a known peer, nothing is counted.
    let open =
        limited_app(wsgate::AppConfig { max_connections_per_peer: None, ..Default::default() })
            .await;
    for _ in 0..5 {
        let _kept = open.handshake(from("10.0.0.1:1", 1)).await.unwrap().open().await;
    }
    assert_eq!(open.server().connections_from(ip), 0);
}

fn anonymous_clone(hs: &Handshake) -> Handshake {
    let mut copy = Handshake::new("/", "test");
    copy.peer = hs.peer;
    copy
}

#[tokio::test]
async fn a_connection_may_join_only_so_many_rooms() {
    let config = wsgate::AppConfig { max_rooms_per_connection: Some(2), ..Default::default() };
    let app = limited_app(config).await;
    let (conn, mut rx) = connect(&app, "/", 1).await;
    for room in ["a", "b", "b"] {
        app.dispatch(&conn, msg("join", json!(room)).with_ack(AckId::Number(1))).await;
        assert!(rx.try_recv().is_none(), "joining {room} is answered with nothing");
    }
    app.dispatch(&conn, msg("join", json!("c")).with_ack(AckId::Number(2))).await;
    assert_eq!(
        next(&mut rx),
        json!({ "exception": 2, "data": {
            "status": "error",
            "message": "Too many rooms: a connection may be in at most 2.",
            "cause": { "pattern": "join", "data": "c" },
        } })
    );
    assert_eq!(conn.rooms().len(), 2);
    conn.leave("a");
    assert!(conn.join("c").is_ok(), "a room left makes room");
}

#[tokio::test]
async fn a_closing_server_refuses_handshakes_and_closing_connections_refuse_messages() {
    let app = app(Arc::default()).await;
    let (conn, mut rx) = connect(&app, "/", 1).await;
    let server = app.server().clone();
    let closing = tokio::spawn(async move {
        server.close_all(wsgate::CloseReason::GoingAway, std::time::Duration::from_secs(5)).await
    });
    assert_eq!(conn.closed().await, wsgate::CloseReason::GoingAway);
    let refusal = app.handshake(from("10.0.0.1:1", 2)).await.unwrap_err();
    assert_eq!(refusal.status, http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refusal.message, wsgate::SHUTTING_DOWN);
    // A message that still arrives is refused, with its ack id: not handled, and said so.
    app.dispatch(&conn, msg("whoami", Value::Null).with_ack(AckId::Number(4))).await;
    assert_eq!(
        next(&mut rx),
        json!({ "exception": 4, "data": { "status": "error", "message": "The connection is closing." } })
    );
    app.disconnect(&conn).await;
    assert_eq!(closing.await.unwrap(), 0, "close_all returns once every connection is gone");
}

#[tokio::test]
async fn an_aborted_session_releases_its_rooms_maps_and_slot() {
    let app = limited_app(wsgate::AppConfig::default()).await;
    let ip = "10.0.0.7".parse().unwrap();
    let (conn, rx) = app.handshake(from("10.0.0.7:1", 1)).await.unwrap().open().await;
    conn.join("lobby").unwrap();
    assert_eq!(app.server().room_members(&Namespace::root(), &"lobby".into()).len(), 1);
    // A session task that never calls `App::disconnect`, aborted while it holds the queue.
    let session = tokio::spawn(async move {
        let _rx = rx;
        std::future::pending::<()>().await;
    });
    session.abort();
    assert!(session.await.unwrap_err().is_cancelled());
    assert_eq!(app.server().connection_count(), 0);
    assert_eq!(app.server().connections_from(ip), 0);
    assert!(app.server().room_members(&Namespace::root(), &"lobby".into()).is_empty());
    // A handler that outlives its session joins nothing: no room keeps it alive.
    conn.join("late").unwrap();
    assert!(conn.rooms().is_empty());
    assert!(app.server().room_members(&Namespace::root(), &"late".into()).is_empty());
    assert!(matches!(conn.emit("x", &1), Err(wsgate::SendError::Closed)));
}

#[tokio::test]
async fn close_all_returns_when_the_last_connection_is_let_go() {
    let app = limited_app(wsgate::AppConfig::default()).await;
    let (conn, rx) = app.handshake(from("10.0.0.8:1", 1)).await.unwrap().open().await;
    let server = app.server().clone();
    let closing = tokio::spawn(async move {
        server.close_all(wsgate::CloseReason::GoingAway, Duration::from_secs(3600)).await
    });
    // The adapter sees the close, then lets the connection go by dropping its queue.
    let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
    assert_eq!(
        closed.expect("close_all asks the connection to close"),
        wsgate::CloseReason::GoingAway
    );
    drop(rx);
    let left = tokio::time::timeout(Duration::from_secs(5), closing)
        .await
        .expect("close_all returns once nothing is open, not at its timeout")
        .unwrap();
    assert_eq!(left, 0);
}
