//! The core's message path driven in memory: gateways through `wsgate::testing::TestClient`,
//! and what only an adapter does (a handshake accepted but not yet opened, a session's
//! outbound queue aborted or dropped) through the adapter's API.
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use wsgate::broker::Broker;
use wsgate::testing::{Received, TestClient};
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

/// A client of `app` in namespace `ns`, signed in as `user` (through `QueryUser`).
async fn connect_as(app: &App, ns: &str, user: i64) -> TestClient {
    TestClient::builder(app).namespace(ns).query(format!("user={user}")).connect().await.unwrap()
}

#[tokio::test]
async fn ws_response_is_emitted_and_values_go_to_the_ack() {
    let app = app(Arc::default()).await;
    let mut client = connect_as(&app, "/", 5).await;

    client.emit("showEntry", json!({ "entryId": 2 })).await;
    assert_eq!(client.next().await, Some(Received::event("showEntry", json!({ "id": 2 }))));

    client.emit_with_ack_id("whoami", Value::Null, AckId::Number(9)).await;
    assert_eq!(client.next().await, Some(Received::Ack { id: AckId::Number(9), data: json!(5) }));

    // Without an ack id, a plain value has nowhere to go.
    client.emit("whoami", Value::Null).await;
    assert!(client.drain().is_empty());
}

#[tokio::test]
async fn validation_and_unknown_events_are_exceptions() {
    let app = app(Arc::default()).await;
    let mut client = connect_as(&app, "/", 5).await;

    client.emit("showEntry", json!({})).await;
    assert_eq!(
        client.next().await,
        Some(Received::Exception {
            id: None,
            data: json!({
                "status": "error", "message": "Missing entry id.",
                "cause": { "pattern": "showEntry", "data": {} } }),
        })
    );

    client.emit_with_ack_id("showEntry", json!({ "entryId": "x" }), AckId::Text("a".into())).await;
    let Some(Received::Exception { id, data }) = client.next().await else {
        panic!("an exception")
    };
    assert_eq!(id, Some(AckId::Text("a".into())));
    assert_eq!(data["message"], "Invalid entryId: invalid type: string \"x\", expected i64");

    client.emit("nope", json!(1)).await;
    let Some(Received::Exception { data, .. }) = client.next().await else {
        panic!("an exception")
    };
    assert_eq!(data["message"], "There is no handler for event 'nope'.");
}

#[tokio::test]
async fn internal_errors_and_panics_are_not_leaked() {
    let app = app(Arc::default()).await;
    let mut client = connect_as(&app, "/", 5).await;
    for event in ["fail", "panic"] {
        client.emit(event, Value::Null).await;
        let Some(Received::Exception { data, .. }) = client.next().await else {
            panic!("an exception for {event}")
        };
        assert_eq!(data["message"], "Internal server error", "{event}");
        assert_eq!(data["cause"]["pattern"], event);
    }
    // The connection still works.
    assert_eq!(client.request("whoami", Value::Null).await, Ok(json!(5)));
}

#[tokio::test]
async fn guards_run_per_handler_and_per_gateway() {
    let app = app(Arc::default()).await;
    let mut user = connect_as(&app, "/", 5).await;
    let mut admin = connect_as(&app, "/", 1).await;

    assert_eq!(user.request("admin", Value::Null).await.unwrap_err()["message"], "Forbidden.");
    admin.emit_with_ack_id("admin", Value::Null, AckId::Number(1)).await;
    assert_eq!(
        admin.next().await,
        Some(Received::Ack { id: AckId::Number(1), data: json!("welcome") })
    );

    let mut chat = connect_as(&app, "/chat", 5).await;
    chat.emit("blocked", Value::Null).await;
    let Some(Received::Exception { data, .. }) = chat.next().await else { panic!("an exception") };
    assert_eq!(data["message"], "Blocked by the gateway guard.");
    chat.emit("say", json!("hi")).await;
    assert_eq!(chat.next().await, Some(Received::event("said", json!("hi"))));
}

#[tokio::test]
async fn gateway_filters_come_before_the_default() {
    let app = app(Arc::default()).await;
    let mut chat = connect_as(&app, "/chat", 5).await;
    chat.emit("teapot", Value::Null).await;
    let Some(Received::Exception { data, .. }) = chat.next().await else { panic!("an exception") };
    assert_eq!(data, json!({ "status": "error", "message": "I am a teapot", "event": "teapot" }));
    // Events of the root namespace do not exist in /chat.
    chat.emit("whoami", Value::Null).await;
    let Some(Received::Exception { data, .. }) = chat.next().await else { panic!("an exception") };
    assert_eq!(data["message"], "There is no handler for event 'whoami'.");
}

#[tokio::test]
async fn middleware_refuses_and_unknown_namespaces_are_refused() {
    let app = app(Arc::default()).await;
    let err = TestClient::builder(&app).connect().await.unwrap_err();
    assert_eq!(err, Refusal::unauthorized("Missing authentication token."));
    assert_eq!(
        err.body(),
        json!({ "status": "error", "message": "Missing authentication token." })
    );

    let nowhere = TestClient::builder(&app).namespace("/nowhere").query("user=1").connect().await;
    assert_eq!(nowhere.unwrap_err().status, http::StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn hooks_run_at_init_connect_and_disconnect() {
    let counters = Arc::new(Counters::default());
    let app = app(counters.clone()).await;
    assert_eq!(counters.init.load(Ordering::SeqCst), 1);
    let client = connect_as(&app, "/", 5).await;
    let _other = connect_as(&app, "/chat", 5).await;
    assert_eq!(counters.connected.load(Ordering::SeqCst), 1, "only the gateway's namespace");
    assert_eq!(app.server().connection_count(), 2);
    client.disconnect().await;
    assert_eq!(counters.disconnected.load(Ordering::SeqCst), 1);
    assert_eq!(app.server().connection_count(), 1);
}

#[tokio::test]
async fn rooms_and_broadcasts_reach_members_once() {
    let app = app(Arc::default()).await;
    let mut a = connect_as(&app, "/", 1).await;
    let mut b = connect_as(&app, "/", 2).await;
    let mut c = connect_as(&app, "/", 3).await;
    a.emit("join", json!("entry:1")).await;
    b.emit("join", json!("entry:1")).await;
    b.emit("join", json!("entry:1")).await;

    let server = app.server();
    assert_eq!(server.to("entry:1").emit("commentCreated", &json!({ "id": 7 })).unwrap(), 2);
    for client in [&mut a, &mut b] {
        assert_eq!(
            client.next().await,
            Some(Received::event("commentCreated", json!({ "id": 7 })))
        );
        assert!(client.drain().is_empty(), "delivered once");
    }
    assert!(c.drain().is_empty());

    assert_eq!(server.to("entry:1").except(a.connection().id()).emit("x", &1).unwrap(), 1);
    assert!(a.drain().is_empty());
    assert_eq!(b.next().await, Some(Received::event("x", json!(1))));

    b.connection().leave("entry:1");
    a.disconnect().await;
    assert_eq!(server.to("entry:1").emit("y", &1).unwrap(), 0);
    assert_eq!(server.emit("all", &1).unwrap(), 2);
    assert_eq!(c.next().await, Some(Received::event("all", json!(1))));
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
    assert!(TestClient::builder(&app).connect().await.is_err());
    let mut client = connect_as(&app, "/", 1).await;
    client.emit("showEntry", json!({ "entryId": 2 })).await;
    client.emit("showEntry", json!({})).await;
    client.emit("panic", Value::Null).await;
    client.emit("made-up-by-a-client", Value::Null).await;
    // A frame that does not decode is reported by its adapter: a client sends only messages.
    app.reject(client.connection(), "Invalid JSON.", None).await;
    client.disconnect().await;
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
    let mut client = connect_as(&app, "/", 1).await;
    client.emit("whoami", Value::Null).await;
    client.emit("whoami", Value::Null).await;
    let mut other = connect_as(&app, "/", 2).await;
    other.connection().close(wsgate::CloseReason::GoingAway);
    other.emit("whoami", Value::Null).await;
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
    let mut a = connect_as(&one, "/", 1).await;
    let mut b = connect_as(&two, "/", 2).await;
    let mut c = connect_as(&two, "/", 3).await;
    let mut chat = connect_as(&two, "/chat", 4).await;
    let (a_id, b_id) = (a.connection().id(), b.connection().id());
    assert_ne!(a_id, b_id, "connection ids are unique across instances");
    a.emit("join", json!("entry:1")).await;
    b.emit("join", json!("entry:1")).await;

    // A room broadcast from instance one reaches the member on each instance, once.
    let local = one.server().to("entry:1").emit("commentCreated", &json!({ "id": 7 })).unwrap();
    assert_eq!(local, 1, "the count is of this instance's recipients");
    for client in [&mut a, &mut b] {
        assert_eq!(
            client.next().await,
            Some(Received::event("commentCreated", json!({ "id": 7 })))
        );
        assert!(client.drain().is_empty(), "delivered once");
    }
    assert!(c.drain().is_empty(), "not a member");

    // `except` names a connection of another instance.
    two.server().to("entry:1").except(a_id).emit("x", &1).unwrap();
    assert!(a.drain().is_empty());
    assert_eq!(b.next().await, Some(Received::event("x", json!(1))));

    // Namespaces hold across instances; `emit` reaches everyone everywhere.
    one.server().of("/chat").emit("chat", &"hi").unwrap();
    assert_eq!(chat.next().await, Some(Received::event("chat", json!("hi"))));
    assert!(b.drain().is_empty() && a.drain().is_empty());
    one.server().emit("all", &1).unwrap();
    for client in [&mut a, &mut b, &mut c, &mut chat] {
        assert_eq!(client.next().await, Some(Received::event("all", json!(1))));
        assert!(client.drain().is_empty());
    }

    // An emit to a connection of the other instance finds it there.
    assert!(!one.server().emit_to(b_id, "direct", &json!({ "to": "b" })).unwrap());
    assert_eq!(b.next().await, Some(Received::event("direct", json!({ "to": "b" }))));
    assert!(a.drain().is_empty() && c.drain().is_empty());

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
    let mut client = connect_as(&app, "/", 1).await;
    let mut other = connect_as(&app, "/", 2).await;
    for _ in 0..3 {
        client.emit_with_ack_id("whoami", Value::Null, AckId::Number(1)).await;
        assert_eq!(
            client.next().await,
            Some(Received::Ack { id: AckId::Number(1), data: json!(1) })
        );
    }
    // Over the rate: refused, with the ack id, and the handler does not run.
    client.emit_with_ack_id("whoami", Value::Null, AckId::Number(2)).await;
    assert_eq!(
        client.next().await,
        Some(Received::Exception {
            id: Some(AckId::Number(2)),
            data: json!({ "status": "error", "message": "Too many messages." }),
        })
    );
    let conn = client.connection().clone();
    assert!(!conn.is_closing());
    // Another connection has its own bucket.
    other.emit_with_ack_id("whoami", Value::Null, AckId::Number(3)).await;
    assert_eq!(other.next().await, Some(Received::Ack { id: AckId::Number(3), data: json!(2) }));
    // Going on regardless: after `burst` refusals in a row, the connection is closed (1008).
    client.emit("whoami", Value::Null).await;
    // A frame that does not decode is reported by its adapter: a client sends only messages.
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
    let refusal = TestClient::builder(&app).namespace("/chat").connect().await.unwrap_err();
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

// Low-level: a handshake accepted but not yet opened holds a slot, and TestClient opens at once.
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
    let mut client = connect_as(&app, "/", 1).await;
    for room in ["a", "b", "b"] {
        client.emit_with_ack_id("join", json!(room), AckId::Number(1)).await;
        assert!(client.drain().is_empty(), "joining {room} is answered with nothing");
    }
    client.emit_with_ack_id("join", json!("c"), AckId::Number(2)).await;
    assert_eq!(
        client.next().await,
        Some(Received::Exception {
            id: Some(AckId::Number(2)),
            data: json!({
                "status": "error",
                "message": "Too many rooms: a connection may be in at most 2.",
                "cause": { "pattern": "join", "data": "c" },
            }),
        })
    );
    let conn = client.connection();
    assert_eq!(conn.rooms().len(), 2);
    conn.leave("a");
    assert!(conn.join("c").is_ok(), "a room left makes room");
}

#[tokio::test]
async fn a_closing_server_refuses_handshakes_and_closing_connections_refuse_messages() {
    let app = app(Arc::default()).await;
    let mut client = connect_as(&app, "/", 1).await;
    let server = app.server().clone();
    let closing = tokio::spawn(async move {
        server.close_all(wsgate::CloseReason::GoingAway, std::time::Duration::from_secs(5)).await
    });
    assert_eq!(client.connection().closed().await, wsgate::CloseReason::GoingAway);
    let late = TestClient::builder(&app).query("user=2").peer("10.0.0.1:1".parse().unwrap());
    let refusal = late.connect().await.unwrap_err();
    assert_eq!(refusal.status, http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refusal.message, wsgate::SHUTTING_DOWN);
    // A message that still arrives is refused, with its ack id: not handled, and said so.
    client.emit_with_ack_id("whoami", Value::Null, AckId::Number(4)).await;
    assert_eq!(
        client.next().await,
        Some(Received::Exception {
            id: Some(AckId::Number(4)),
            data: json!({ "status": "error", "message": "The connection is closing." }),
        })
    );
    client.disconnect().await;
    assert_eq!(closing.await.unwrap(), 0, "close_all returns once every connection is gone");
}

// Low-level: an adapter's session task, owning the outbound queue, is what is aborted here.
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

// Low-level: the adapter's part (seeing the close, then dropping its queue) is what is tested.
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

/// A relay: the data passed on unread, as an event and as an ack.
struct Relay;

#[gateway]
impl Relay {
    #[subscribe_message("relay")]
    async fn relay(
        &self,
        Data(data): Data<Box<serde_json::value::RawValue>>,
    ) -> WsResponse<Box<serde_json::value::RawValue>> {
        WsResponse::new("relayed", data)
    }

    #[subscribe_message("ackRaw")]
    async fn ack_raw(
        &self,
        Data(data): Data<Box<serde_json::value::RawValue>>,
    ) -> wsgate::Ack<Box<serde_json::value::RawValue>> {
        wsgate::Ack(data)
    }
}

// Raw JSON goes through untouched, text for text: taken as it came, sent as it is (not read
// or written again); with attachments, its placeholders stay as the client sent them.
#[tokio::test]
async fn raw_json_data_is_relayed_as_it_came() {
    use wsgate::adapter::{Inbound, Outbound};
    let app = App::builder().gateway(Relay).build().await.unwrap();
    let (conn, mut rx) = app.handshake(Handshake::new("/", "test")).await.unwrap().open().await;
    let texts = [
        r#"{"b":[1,2.50,"\u00e9é"],"a":null}"#,
        r#""x""#,
        "1e3",
        r#"{"file":{"_placeholder":true,"num":0}}"#,
    ];
    for (n, text) in texts.iter().enumerate() {
        let data = serde_json::value::RawValue::from_string((*text).to_owned()).unwrap();
        let mut message = Inbound::new("relay", data.clone());
        if n == 3 {
            message.binary = vec![bytes::Bytes::from_static(b"\x01")];
        }
        app.dispatch(&conn, message).await;
        let item = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap();
        let Some(emission) = item.emissions().first() else { panic!("{item:?}") };
        assert_eq!(emission.event().as_str(), "relayed");
        assert_eq!(emission.data().get(), *text);

        let mut message = Inbound::new("ackRaw", data);
        message.ack = Some(AckId::Number(n as u64));
        app.dispatch(&conn, message).await;
        let item = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap();
        let Outbound::Direct(direct) = item else { panic!("{item:?}") };
        let wsgate::adapter::Direct::Ack { id, data, .. } = *direct else { panic!("{direct:?}") };
        assert_eq!(id, AckId::Number(n as u64));
        assert_eq!(data.get(), *text);
    }
}

struct AtOnce;

#[gateway]
impl AtOnce {
    #[subscribe_message("now")]
    async fn now(&self, Data(n): Data<u32>) -> WsResponse<u32> {
        WsResponse::new("now", n)
    }

    #[subscribe_message("later")]
    async fn later(&self, Data(n): Data<u32>) -> WsResponse<u32> {
        tokio::time::sleep(Duration::from_millis(20)).await;
        WsResponse::new("later", n)
    }

    #[subscribe_message("boom")]
    async fn boom(&self) -> u32 {
        panic!("boom")
    }
}

fn event_of(item: &wsgate::adapter::Outbound) -> (String, String) {
    use wsgate::adapter::{Direct, Outbound};
    match item {
        Outbound::Direct(direct) => match &**direct {
            Direct::Exception { data, .. } => ("exception".into(), data.get().to_owned()),
            other => panic!("{other:?}"),
        },
        _ => {
            let emission = &item.emissions()[0];
            (emission.event().as_str().to_owned(), emission.data().get().to_owned())
        }
    }
}

// A handler done at once is answered within `dispatch_now` (no future left to poll); one that
// waits leaves the rest of its work; a reply that finds its connection's queue full waits for
// room, in order, and is never dropped; a handler that panics is answered at once too.
#[tokio::test]
async fn dispatch_now_answers_at_once_or_leaves_the_rest() {
    use std::task::{Context, Poll, Waker};
    use wsgate::adapter::Inbound;
    let config = wsgate::AppConfig { outbound_capacity: 2, ..wsgate::AppConfig::default() };
    let app = App::builder().config(config).gateway(AtOnce).build().await.unwrap();
    let (conn, mut rx) = app.handshake(Handshake::new("/", "test")).await.unwrap().open().await;
    let mut cx = Context::from_waker(Waker::noop());
    let message =
        |event: &str, n: u32| Inbound::new(event, wsgate::adapter::to_payload(&n).unwrap());

    assert!(app.dispatch_now(&conn, message("now", 1), &mut cx).is_none());
    assert_eq!(event_of(&rx.try_recv().unwrap()), ("now".into(), "1".into()));

    assert!(app.dispatch_now(&conn, message("boom", 0), &mut cx).is_none());
    let (event, data) = event_of(&rx.try_recv().unwrap());
    assert_eq!(event, "exception");
    assert!(data.contains("Internal server error"), "{data}");

    let rest = app.dispatch_now(&conn, message("later", 2), &mut cx).expect("it waits");
    assert!(rx.try_recv().is_none());
    assert_eq!(rest.await, conn.id());
    assert_eq!(event_of(&rx.try_recv().unwrap()), ("later".into(), "2".into()));

    // Two fit in the queue; the third waits for room.
    assert!(app.dispatch_now(&conn, message("now", 3), &mut cx).is_none());
    assert!(app.dispatch_now(&conn, message("now", 4), &mut cx).is_none());
    let mut rest = app.dispatch_now(&conn, message("now", 5), &mut cx).expect("no room");
    assert!(rest.as_mut().poll(&mut cx).is_pending());
    assert_eq!(event_of(&rx.try_recv().unwrap()), ("now".into(), "3".into()));
    assert!(matches!(rest.as_mut().poll(&mut cx), Poll::Ready(id) if id == conn.id()));
    assert_eq!(event_of(&rx.try_recv().unwrap()), ("now".into(), "4".into()));
    assert_eq!(event_of(&rx.try_recv().unwrap()), ("now".into(), "5".into()));
    assert!(rx.try_recv().is_none());
}

struct Emits;

#[gateway]
impl Emits {
    #[subscribe_message("now")]
    async fn now(&self, Data(n): Data<u32>) -> WsResponse<u32> {
        WsResponse::new("now", n)
    }

    // Emits to its own connection, then answers.
    #[subscribe_message("tell")]
    async fn tell(&self, conn: Connection, Data(n): Data<u32>) -> WsResponse<u32> {
        conn.emit("told", &n).unwrap();
        WsResponse::new("now", n)
    }
}

// `dispatch_into` offers the answer of a handler done at once to its writer when nothing is
// queued ahead of it: taken, it skips the queue; refused, it is queued as usual; with anything
// queued ahead of it (here, what its handler emitted), it is not offered and keeps its place.
#[tokio::test]
async fn dispatch_into_writes_an_answer_only_when_nothing_is_queued_ahead() {
    use std::task::{Context, Waker};
    use wsgate::adapter::{Inbound, Outbound};
    let app = App::builder().gateway(Emits).build().await.unwrap();
    let (conn, mut rx) = app.handshake(Handshake::new("/", "test")).await.unwrap().open().await;
    let mut cx = Context::from_waker(Waker::noop());
    let message =
        |event: &str, n: u32| Inbound::new(event, wsgate::adapter::to_payload(&n).unwrap());

    let mut written: Vec<(String, String)> = Vec::new();
    let mut take = |answer: &Outbound| {
        written.push(event_of(answer));
        true
    };
    assert!(app.dispatch_into(&conn, message("now", 1), &mut cx, &mut take).is_none());
    assert_eq!(written, [("now".to_owned(), "1".to_owned())]);
    assert!(rx.try_recv().is_none(), "taken: not queued");

    let mut offered = 0;
    let mut refuse = |_: &Outbound| {
        offered += 1;
        false
    };
    assert!(app.dispatch_into(&conn, message("now", 2), &mut cx, &mut refuse).is_none());
    assert_eq!(offered, 1);
    assert_eq!(event_of(&rx.try_recv().unwrap()), ("now".into(), "2".into()), "refused: queued");

    let mut offered = 0;
    let mut take = |_: &Outbound| {
        offered += 1;
        true
    };
    assert!(app.dispatch_into(&conn, message("tell", 3), &mut cx, &mut take).is_none());
    assert_eq!(offered, 0, "what the handler emitted is queued ahead of the answer");
    assert_eq!(event_of(&rx.try_recv().unwrap()), ("told".into(), "3".into()));
    assert_eq!(event_of(&rx.try_recv().unwrap()), ("now".into(), "3".into()));
    assert!(rx.try_recv().is_none());
}
