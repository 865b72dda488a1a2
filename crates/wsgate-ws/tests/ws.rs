//! The plain WebSocket adapter served by a real axum server on a loopback port, driven by a
//! real WebSocket client: every behaviour of DESIGN.md section 4.
#![allow(missing_docs, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{WebSocketStream, connect_async};
use wsgate::{
    Ack, App, Args, Claims, Connection, Data, Ext, JwtAuth, JwtKeys, Server, Valid, WsException,
    WsResponse, gateway,
};
use wsgate_ws::WsAdapter;

mod common;
use common::{Client, Fixture, recv, send, until_close};

#[derive(Clone, Debug)]
struct User {
    id: u64,
}

#[derive(Deserialize, validator::Validate)]
#[serde(rename_all = "camelCase")]
struct ShowComment {
    #[validate(required(message = "Missing entry id."))]
    entry_id: Option<i64>,
    #[validate(required(message = "Missing comment id."))]
    comment_id: Option<i64>,
}

struct CommentGateway {
    disconnects: Arc<AtomicUsize>,
}

#[gateway]
impl CommentGateway {
    #[subscribe_message("showComment")]
    async fn show(&self, Valid(q): Valid<ShowComment>) -> WsResponse<Value> {
        WsResponse::new("showComment", json!({ "entryId": q.entry_id, "id": q.comment_id }))
    }

    #[subscribe_message("whoami")]
    async fn whoami(&self, Ext(user): Ext<User>) -> u64 {
        user.id
    }

    #[subscribe_message("forbidden")]
    async fn forbidden(&self) -> Result<(), WsException> {
        Err(WsException::new("Forbidden."))
    }

    #[subscribe_message("join")]
    async fn join(&self, conn: Connection, Data(room): Data<String>) -> Result<bool, WsException> {
        conn.join(room)?;
        Ok(true)
    }

    /// Answers after `ms` milliseconds: a message still in flight when the server closes.
    #[subscribe_message("slow")]
    async fn slow(&self, Data(ms): Data<u64>) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }

    /// `[name, file]`: both back through the ack, the file as a binary frame.
    #[subscribe_message("upload")]
    async fn upload(
        &self,
        Args((name, file)): Args<(String, Bytes)>,
    ) -> Ack<Args<(String, Bytes)>> {
        Ack(Args((name, file)))
    }

    /// Emits `file` with one argument holding bytes, and asks nothing.
    #[subscribe_message("download")]
    async fn download(&self, conn: Connection, Data(name): Data<String>) {
        let content = Bytes::from(name.clone().into_bytes());
        conn.emit("file", &json!({ "name": name, "size": content.len() })).unwrap();
        conn.emit("file", &Args((name, content))).unwrap();
    }

    /// Emits `n` events to `room` in one poll: held, then queued to each member as one item.
    #[subscribe_message("burst")]
    async fn burst(&self, server: Server, Data((room, n)): Data<(String, usize)>) {
        for i in 0..n {
            // Every frame length form: 7 bits, 16 bits, 64 bits.
            let pad = "x".repeat([0, 200, 70_000][i % 3]);
            server.to(room.as_str()).emit("n", &json!({ "i": i, "pad": pad })).unwrap();
        }
    }

    #[subscribe_message("panics")]
    async fn panics(&self) -> u64 {
        panic!("the handler failed");
    }

    #[on_disconnect]
    async fn gone(&self, _conn: &Connection) {
        self.disconnects.fetch_add(1, Ordering::SeqCst);
    }
}

/// A gateway whose `on_connect` hook panics.
struct FragileGateway;

#[gateway(namespace = "/fragile")]
impl FragileGateway {
    #[on_connect]
    async fn connected(&self, _conn: &Connection) {
        panic!("the on_connect hook failed");
    }
}

struct ChatGateway;

#[gateway(namespace = "/chat")]
impl ChatGateway {
    #[subscribe_message("say")]
    async fn say(&self, Data(text): Data<String>) -> WsResponse<String> {
        WsResponse::new("said", text)
    }
}

impl Fixture {
    /// User `id`'s connection on `/`, in `room`.
    async fn connect_in(&self, room: &str, id: u64) -> Client {
        let mut ws = self.connect("/", id).await;
        send(&mut ws, json!({ "event": "join", "data": room, "id": 1 })).await;
        assert_eq!(recv(&mut ws).await["data"], true);
        ws
    }

    /// Waits for the first disconnect.
    async fn until_disconnect(&self, within: Duration, what: &str) {
        let deadline = tokio::time::Instant::now() + within;
        while self.disconnects.load(Ordering::SeqCst) == 0 {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn start(adapter: WsAdapter) -> Fixture {
    start_with(adapter, wsgate::AppConfig::default()).await
}

async fn start_with(adapter: WsAdapter, config: wsgate::AppConfig) -> Fixture {
    let (router, mut fixture) = app_router(adapter, config).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    fixture.addr = listener.local_addr().unwrap();
    tokio::spawn(async move { wsgate_ws::serve(listener, router).await.unwrap() });
    fixture
}

/// The app's router, and its fixture (whose address is for the caller to fill in).
async fn app_router(adapter: WsAdapter, config: wsgate::AppConfig) -> (Router, Fixture) {
    let keys = JwtKeys::hs256(b"a test secret that is long enough");
    let disconnects = Arc::new(AtomicUsize::new(0));
    let auth = JwtAuth::new(keys.clone(), |claims: Claims| async move {
        let id: u64 = claims.sub.parse().map_err(|_| "bad subject")?;
        Ok::<_, &str>((id != 404).then_some(User { id }))
    });
    let app = App::builder()
        .config(config)
        .middleware(auth)
        .gateway(CommentGateway { disconnects: disconnects.clone() })
        .gateway(ChatGateway)
        .gateway(FragileGateway)
        .build()
        .await
        .unwrap();
    let server = app.server().clone();
    let router = Router::new().route("/", get(|| async { "home page" }));
    let router = app.mount(router, adapter);
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    (router, Fixture { addr, server, keys, disconnects })
}

#[tokio::test]
async fn plain_http_still_reaches_the_router() {
    let f = start(WsAdapter::new()).await;
    let body = reqwest_get(f.addr, "/").await;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.ends_with("home page"), "{body}");
}

/// A minimal HTTP/1.1 GET, so that the test needs no HTTP client crate.
async fn reqwest_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn both_inbound_formats_on_root_and_ws_paths() {
    let f = start(WsAdapter::new()).await;
    for path in ["/", "/ws"] {
        let mut ws = f.connect(path, 1).await;
        // The chapter's client, verbatim in spirit.
        send(&mut ws, json!({ "type": "showComment", "entryId": 2, "commentId": 1 })).await;
        assert_eq!(
            recv(&mut ws).await,
            json!({ "event": "showComment", "data": { "entryId": 2, "id": 1 } })
        );
        send(&mut ws, json!({ "event": "showComment", "data": { "entryId": 3, "commentId": 4 } }))
            .await;
        assert_eq!(recv(&mut ws).await["data"], json!({ "entryId": 3, "id": 4 }));
    }
}

async fn recv_binary(ws: &mut Client) -> Bytes {
    let msg = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap();
    match msg.unwrap() {
        Message::Binary(data) => data,
        other => panic!("a binary frame, not {other:?}"),
    }
}

#[tokio::test]
async fn attachments_are_binary_frames_after_the_frame_that_counts_them() {
    let f = start(WsAdapter::new()).await;
    let mut ws = f.connect("/", 1).await;
    let placeholder = json!({ "_placeholder": true, "num": 0 });

    // Several arguments are an array `data`; the attachment follows its frame.
    send(
        &mut ws,
        json!({ "event": "upload", "data": ["a.bin", placeholder], "id": 1, "attachments": 1 }),
    )
    .await;
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(
        recv(&mut ws).await,
        json!({ "event": "ack", "id": 1, "data": ["a.bin", placeholder], "attachments": 1 })
    );
    assert_eq!(recv_binary(&mut ws).await, [1u8, 2, 3][..]);

    // Events from the server handle: plain JSON, then bytes as an attachment.
    send(&mut ws, json!({ "event": "download", "data": "hi" })).await;
    assert_eq!(
        recv(&mut ws).await,
        json!({ "event": "file", "data": { "name": "hi", "size": 2 } })
    );
    assert_eq!(
        recv(&mut ws).await,
        json!({ "event": "file", "data": ["hi", placeholder], "attachments": 1 })
    );
    assert_eq!(recv_binary(&mut ws).await, b"hi"[..]);

    // A text frame where an attachment was due: both are dropped, with an exception.
    send(
        &mut ws,
        json!({ "event": "upload", "data": ["b", placeholder], "id": 2, "attachments": 1 }),
    )
    .await;
    send(&mut ws, json!({ "event": "whoami", "id": 3 })).await;
    let exception = recv(&mut ws).await;
    assert_eq!(exception["id"], 2);
    assert_eq!(
        exception["data"]["message"],
        "Binary attachments were due: this frame and the message they belong to are dropped."
    );
    // Attachments over the message size limit close the connection, as a large frame does.
    let f = start(WsAdapter::new().max_message_size(1024)).await;
    let mut ws = f.connect("/", 1).await;
    let frame = json!({ "event": "upload", "data": ["c", placeholder], "attachments": 2 });
    send(&mut ws, frame).await;
    ws.send(Message::binary(vec![0u8; 600])).await.unwrap();
    ws.send(Message::binary(vec![0u8; 600])).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap() {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1009),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn acks_by_id_numbers_and_strings() {
    let f = start(WsAdapter::new()).await;
    let mut ws = f.connect("/", 7).await;
    send(&mut ws, json!({ "event": "whoami", "id": 1 })).await;
    assert_eq!(recv(&mut ws).await, json!({ "event": "ack", "id": 1, "data": 7 }));
    send(&mut ws, json!({ "type": "whoami", "id": "abc" })).await;
    assert_eq!(recv(&mut ws).await, json!({ "event": "ack", "id": "abc", "data": 7 }));
    // An exception answers the same id.
    send(&mut ws, json!({ "event": "forbidden", "id": 2 })).await;
    assert_eq!(
        recv(&mut ws).await,
        json!({ "event": "exception", "id": 2, "data": {
            "status": "error", "message": "Forbidden.", "cause": { "pattern": "forbidden", "data": null } } })
    );
}

#[tokio::test]
async fn bad_frames_get_exceptions_and_the_connection_stays_open() {
    let f = start(WsAdapter::new()).await;
    let mut ws = f.connect("/", 1).await;

    ws.send(Message::text("not json")).await.unwrap();
    assert_eq!(
        recv(&mut ws).await,
        json!({ "event": "exception", "data": { "status": "error", "message": "Invalid JSON: expected ident" } })
    );
    send(&mut ws, json!({ "data": 1 })).await;
    let reply = recv(&mut ws).await;
    assert_eq!(reply["event"], "exception");
    assert!(reply["data"]["message"].as_str().unwrap().contains("\"event\""), "{reply}");

    send(&mut ws, json!({ "event": "nope", "data": {} })).await;
    assert_eq!(
        recv(&mut ws).await["data"],
        json!({ "status": "error", "message": "There is no handler for event 'nope'.",
                "cause": { "pattern": "nope", "data": {} } })
    );

    send(&mut ws, json!({ "type": "showComment", "commentId": 1 })).await;
    assert_eq!(recv(&mut ws).await["data"]["message"], "Missing entry id.");
    send(&mut ws, json!({ "type": "showComment", "entryId": 1 })).await;
    assert_eq!(recv(&mut ws).await["data"]["message"], "Missing comment id.");
    send(&mut ws, json!({ "type": "showComment", "entryId": "two", "commentId": 1 })).await;
    let message = recv(&mut ws).await["data"]["message"].as_str().unwrap().to_owned();
    assert!(message.starts_with("Invalid entryId: invalid type: string \"two\""), "{message}");

    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(
        recv(&mut ws).await["data"]["message"],
        "A binary frame must follow a JSON frame that announces it (\"attachments\":N)."
    );

    // Still open and working.
    send(&mut ws, json!({ "event": "whoami", "id": 9 })).await;
    assert_eq!(recv(&mut ws).await["data"], 1);
}

#[tokio::test]
async fn oversized_messages_close_with_1009() {
    let f = start(WsAdapter::new().max_message_size(1024)).await;
    let mut ws = f.connect("/", 1).await;
    let big = "x".repeat(200_000);
    send(&mut ws, json!({ "event": "whoami", "data": big })).await;
    let close = match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap() {
        Some(Ok(Message::Close(frame))) => frame,
        Some(Ok(other)) => panic!("unexpected {other:?}"),
        Some(Err(e)) => panic!("the close frame was lost: {e}"),
        None => panic!("closed without a close frame"),
    };
    assert_eq!(close.unwrap().code, CloseCode::Size);
    // A message just under the limit is fine on a new connection.
    let mut ws = f.connect("/", 1).await;
    send(&mut ws, json!({ "event": "whoami", "id": 1, "data": "y".repeat(900) })).await;
    assert_eq!(recv(&mut ws).await["data"], 1);
}

#[tokio::test]
async fn missing_bad_and_unknown_tokens_are_refused_with_401() {
    let f = start(WsAdapter::new()).await;
    let cases = [
        (format!("ws://{}/", f.addr), "Missing authentication token."),
        (format!("ws://{}/?token=garbage", f.addr), "Invalid token."),
        (f.url("/", 404), "Unknown user."),
    ];
    for (url, message) in cases {
        match connect_async(url).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401);
                let body: Value =
                    serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
                assert_eq!(body, json!({ "status": "error", "message": message }));
            }
            other => panic!("expected a 401, got {other:?}"),
        }
    }
    // A bearer header works as well as the query.
    let mut req =
        tungstenite::client::IntoClientRequest::into_client_request(format!("ws://{}/ws", f.addr))
            .unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {}", f.token(3)).parse().unwrap());
    let (mut ws, _) = connect_async(req).await.unwrap();
    send(&mut ws, json!({ "event": "whoami", "id": 1 })).await;
    assert_eq!(recv(&mut ws).await["data"], 3);
}

#[tokio::test]
async fn namespaces_are_paths() {
    let f = start(WsAdapter::new()).await;
    for path in ["/ws/chat", "/chat"] {
        let mut ws = f.connect(path, 1).await;
        send(&mut ws, json!({ "event": "say", "data": "hi" })).await;
        assert_eq!(recv(&mut ws).await, json!({ "event": "said", "data": "hi" }));
        send(&mut ws, json!({ "event": "whoami" })).await;
        assert_eq!(
            recv(&mut ws).await["data"]["message"],
            "There is no handler for event 'whoami'."
        );
    }
    match connect_async(f.url("/ws/nowhere", 1)).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 404),
        other => panic!("expected a 404, got {other:?}"),
    }
}

#[tokio::test]
async fn server_handle_reaches_rooms_and_disconnect_runs_hooks() {
    let f = start(WsAdapter::new()).await;
    let mut a = f.connect("/", 1).await;
    let mut b = f.connect("/", 2).await;
    let mut c = f.connect("/", 3).await;
    for ws in [&mut a, &mut b] {
        send(ws, json!({ "event": "join", "data": "entry:1", "id": 1 })).await;
        assert_eq!(recv(ws).await["data"], true);
    }
    let sent = f.server.to("entry:1").emit("commentCreated", &json!({ "id": 5 })).unwrap();
    assert_eq!(sent, 2);
    for ws in [&mut a, &mut b] {
        assert_eq!(recv(ws).await, json!({ "event": "commentCreated", "data": { "id": 5 } }));
    }
    f.server.emit("hello", &"all").unwrap();
    for ws in [&mut a, &mut b, &mut c] {
        assert_eq!(recv(ws).await, json!({ "event": "hello", "data": "all" }));
    }

    assert_eq!(f.server.connection_count(), 3);
    a.close(None).await.unwrap();
    drop(b);
    for _ in 0..100 {
        if f.disconnects.load(Ordering::SeqCst) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(f.disconnects.load(Ordering::SeqCst), 2);
    assert_eq!(f.server.connection_count(), 1);
    assert_eq!(f.server.to("entry:1").emit("x", &1).unwrap(), 0);
}

#[tokio::test]
async fn many_messages_in_flight_all_get_their_replies() {
    // 500 at once is past the default rate: this test is about concurrency, not the rate.
    let config = wsgate::AppConfig { rate_limit: None, ..wsgate::AppConfig::default() };
    let f = start_with(WsAdapter::new().max_in_flight(4), config).await;
    let mut ws = f.connect("/", 1).await;
    for id in 0..500 {
        send(&mut ws, json!({ "event": "whoami", "id": id })).await;
    }
    let mut seen = vec![false; 500];
    for _ in 0..500 {
        let reply = recv(&mut ws).await;
        assert_eq!(reply["event"], "ack", "{reply}");
        seen[reply["id"].as_u64().unwrap() as usize] = true;
    }
    assert!(seen.iter().all(|s| *s));
}

#[tokio::test]
async fn close_all_sends_going_away() {
    let f = start(WsAdapter::new()).await;
    let mut a = f.connect("/", 1).await;
    let mut b = f.connect("/ws/chat", 2).await;
    assert_eq!(f.server.close_all(wsgate::CloseReason::GoingAway, Duration::from_secs(5)).await, 0);
    for ws in [&mut a, &mut b] {
        let (texts, close) = until_close(ws, Duration::from_secs(5)).await;
        assert_eq!((texts.len(), close.code), (0, CloseCode::Away));
    }
    assert_eq!(f.server.connection_count(), 0);
}

#[tokio::test]
async fn silent_connections_are_pinged_and_closed_after_the_idle_timeout() {
    let adapter = WsAdapter::new()
        .ping_interval(Duration::from_millis(100))
        .idle_timeout(Duration::from_millis(350));
    let f = start(adapter).await;

    // A client that reads answers every ping (tungstenite does it while reading): it stays.
    let mut alive = f.connect("/", 1).await;
    // A client that never reads never answers: it is closed with 1001 `idle timeout`.
    let mut silent = f.connect("/", 2).await;

    let mut pings = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(900);
    while let Ok(frame) = tokio::time::timeout_at(deadline, alive.next()).await {
        match frame {
            Some(Ok(Message::Ping(_))) => pings += 1,
            other => panic!("the reading client got {other:?}"),
        }
    }
    assert!(pings >= 5, "pinged every 100 ms: {pings} pings in 900 ms");
    send(&mut alive, json!({ "event": "whoami", "id": 1 })).await;
    assert_eq!(recv(&mut alive).await["data"], 1, "still open after 900 ms");

    // The silent client now reads what the server sent meanwhile: pings, then the close.
    let (texts, close) = until_close(&mut silent, Duration::from_secs(5)).await;
    assert_eq!(texts, Vec::<Value>::new(), "pings, then the close");
    assert_eq!((close.code, close.reason.as_str()), (CloseCode::Away, "idle timeout"));
}

#[tokio::test]
async fn a_client_that_does_not_read_is_closed_as_too_slow_with_1008() {
    let f = start(WsAdapter::new()).await;
    let mut slow = f.connect_in("busy", 1).await;
    let mut fast = f.connect("/", 2).await;

    // Big emits fill the socket buffers, then the 256-item queue: the emit that finds it full
    // closes the connection instead of buffering without bound.
    let chunk = "x".repeat(60 * 1024);
    let mut emitted = 0;
    while f.server.to("busy").emit("chunk", &chunk).unwrap() == 1 {
        emitted += 1;
        assert!(emitted < 10_000, "the queue never filled");
    }
    assert!(emitted >= 256, "at least the queue's capacity went out: {emitted}");

    // Others are not affected.
    send(&mut fast, json!({ "event": "whoami", "id": 2 })).await;
    assert_eq!(recv(&mut fast).await["data"], 2);

    // The slow client, reading at last, gets what was queued, then the close.
    let (_, close) = until_close(&mut slow, Duration::from_secs(10)).await;
    assert_eq!((close.code, close.reason.as_str()), (CloseCode::Policy, "outbound queue full"));
}

#[tokio::test]
async fn a_client_past_its_message_rate_gets_exceptions_then_1008() {
    let limit = wsgate::RateLimit { per_second: 1.0, burst: 5 };
    let config = wsgate::AppConfig { rate_limit: Some(limit), ..wsgate::AppConfig::default() };
    let f = start_with(WsAdapter::new().max_in_flight(1), config).await;
    let mut ws = f.connect("/", 1).await;
    for id in 0..5 {
        send(&mut ws, json!({ "event": "whoami", "id": id })).await;
        assert_eq!(recv(&mut ws).await, json!({ "event": "ack", "id": id, "data": 1 }));
    }
    send(&mut ws, json!({ "event": "whoami", "id": 5 })).await;
    assert_eq!(
        recv(&mut ws).await,
        json!({ "event": "exception", "id": 5, "data": { "status": "error", "message": "Too many messages." } })
    );
    for id in 6..20 {
        send(&mut ws, json!({ "event": "whoami", "id": id })).await;
    }
    let (_, close) = until_close(&mut ws, Duration::from_secs(5)).await;
    assert_eq!((close.code, close.reason.as_str()), (CloseCode::Policy, "policy violation"));
}

#[tokio::test]
async fn closing_answers_the_messages_in_flight_first_within_the_drain_timeout() {
    let config =
        wsgate::AppConfig { drain_timeout: Duration::from_millis(800), ..Default::default() };
    let f = start_with(WsAdapter::new(), config).await;
    let mut quick = f.connect("/", 1).await;
    let mut stuck = f.connect("/", 2).await;
    send(&mut quick, json!({ "event": "slow", "data": 300, "id": 1 })).await;
    send(&mut stuck, json!({ "event": "slow", "data": 5000, "id": 2 })).await;
    // Both handlers are running when the server starts closing.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let server = f.server.clone();
    let closing = tokio::spawn(async move {
        server.close_all(wsgate::CloseReason::GoingAway, Duration::from_secs(5)).await
    });

    // A message that arrives meanwhile is refused, not handled.
    tokio::time::sleep(Duration::from_millis(50)).await;
    send(&mut stuck, json!({ "event": "whoami", "id": 3 })).await;

    // Finished within the drain timeout: answered, then closed with 1001.
    let (texts, close) = until_close(&mut quick, Duration::from_secs(5)).await;
    assert_eq!(close.code, CloseCode::Away);
    assert_eq!(texts, vec![json!({ "event": "ack", "id": 1, "data": 300 })]);
    // Still running at the end of it: closed without an answer.
    let started = tokio::time::Instant::now();
    let (texts, close) = until_close(&mut stuck, Duration::from_secs(5)).await;
    assert_eq!(close.code, CloseCode::Away);
    let refused = json!({ "event": "exception", "id": 3, "data": {
        "status": "error", "message": "The connection is closing." } });
    assert_eq!(texts, vec![refused], "no answer from a handler cut off");
    assert!(started.elapsed() < Duration::from_secs(2), "bounded by the drain timeout");
    assert_eq!(closing.await.unwrap(), 0);

    // New connections are refused from then on.
    match connect_async(f.url("/", 3)).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("expected a 503, got {other:?}"),
    }
}

#[tokio::test]
async fn an_address_over_its_connection_limit_is_refused_with_429() {
    let config = wsgate::AppConfig { max_connections_per_peer: Some(3), ..Default::default() };
    let f = start_with(WsAdapter::new(), config).await;
    let mut open = Vec::new();
    for id in 1..=3 {
        open.push(f.connect("/", id).await);
    }
    match connect_async(f.url("/", 4)).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["message"], "Too many connections from this address.");
        }
        other => panic!("expected a 429, got {other:?}"),
    }
    // Those open still work; one that leaves makes room.
    send(&mut open[0], json!({ "event": "whoami", "id": 1 })).await;
    assert_eq!(recv(&mut open[0]).await["data"], 1);
    let mut gone = open.pop().unwrap();
    gone.close(None).await.unwrap();
    while gone.next().await.is_some() {}
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while f.server.connection_count() > 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut again = f.connect("/", 5).await;
    send(&mut again, json!({ "event": "whoami", "id": 1 })).await;
    assert_eq!(recv(&mut again).await["data"], 5);
}

#[tokio::test]
async fn a_long_queue_is_written_whole_and_in_order() {
    // Far more than one write batch (64) queued at once: every item arrives, once, in order.
    let config = wsgate::AppConfig { outbound_capacity: 2000, ..wsgate::AppConfig::default() };
    let f = start_with(WsAdapter::new(), config).await;
    let mut ws = f.connect_in("burst", 1).await;
    for n in 0..1000 {
        f.server.to("burst").emit("n", &n).unwrap();
    }
    for n in 0..1000 {
        assert_eq!(recv(&mut ws).await, json!({ "event": "n", "data": n }));
    }
}

#[tokio::test]
async fn text_items_and_items_with_attachments_queued_together_arrive_in_order() {
    // Text items are framed into the socket's buffer and flushed at the next poll; an item with
    // attachments is written by the session's write, after what is framed before it.
    let f = start(WsAdapter::new()).await;
    let mut ws = f.connect_in("mixed", 1).await;
    for n in 0..20 {
        f.server.to("mixed").emit("n", &n).unwrap();
        if n % 3 == 0 {
            let file = Bytes::from(vec![n as u8; 3]);
            f.server.to("mixed").emit("file", &Args((n, file))).unwrap();
        }
    }
    let placeholder = json!({ "_placeholder": true, "num": 0 });
    for n in 0..20 {
        assert_eq!(recv(&mut ws).await, json!({ "event": "n", "data": n }));
        if n % 3 == 0 {
            assert_eq!(
                recv(&mut ws).await,
                json!({ "event": "file", "data": [n, placeholder], "attachments": 1 })
            );
            assert_eq!(recv_binary(&mut ws).await, vec![n as u8; 3][..]);
        }
    }
}

#[tokio::test]
async fn answers_to_a_pipeline_read_only_later_arrive_whole_and_in_order() {
    // Answers go straight to the socket while nothing is queued and its buffer has room, then
    // through the queue once the client stops reading and the socket fills; then the server
    // stops reading too. 16 MB of answers, far past the socket buffers: each arrives, once, in
    // order, when the client reads at last.
    let config = wsgate::AppConfig { rate_limit: None, ..wsgate::AppConfig::default() };
    let f = start_with(WsAdapter::new(), config).await;
    let ws = f.connect("/chat", 1).await;
    let (mut tx, mut rx) = ws.split();
    const N: usize = 1000;
    let pad = "x".repeat(16 * 1024);
    let sender = tokio::spawn(async move {
        for n in 0..N {
            let text = json!({ "event": "say", "data": format!("{n}:{pad}") }).to_string();
            tx.send(Message::text(text)).await.unwrap();
        }
        tx
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    for n in 0..N {
        let msg = tokio::time::timeout(Duration::from_secs(10), rx.next())
            .await
            .expect("an answer within 10 s")
            .expect("the connection is open")
            .unwrap();
        let Message::Text(text) = msg else { panic!("{msg:?}") };
        let reply: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(reply["event"], "said");
        let data = reply["data"].as_str().unwrap();
        assert_eq!(
            data.split_once(':').map(|(i, _)| i),
            Some(n.to_string().as_str()),
            "answer {n}"
        );
        assert_eq!(data.len(), n.to_string().len() + 1 + 16 * 1024);
    }
    let _tx = sender.await.unwrap();
    assert_eq!(f.server.connection_count(), 1);
}

#[tokio::test]
async fn a_write_the_client_takes_nothing_of_ends_at_the_idle_timeout() {
    // A queue that never overflows and pings too rare to matter: only the stalled write itself
    // can end this connection.
    let config = wsgate::AppConfig { outbound_capacity: 100_000, ..wsgate::AppConfig::default() };
    let adapter = WsAdapter::new()
        .ping_interval(Duration::from_secs(3600))
        .idle_timeout(Duration::from_millis(500));
    let f = start_with(adapter, config).await;
    let ws = f.connect_in("stalled", 1).await;

    // 30 MiB, more than the socket buffers hold, to a client that reads no more of it: the
    // session's write waits for room that never comes.
    let chunk = "x".repeat(60 * 1024);
    for _ in 0..512 {
        assert_eq!(f.server.to("stalled").emit("chunk", &chunk).unwrap(), 1);
    }
    f.until_disconnect(Duration::from_secs(10), "the stalled connection was kept").await;
    assert_eq!(f.server.connection_count(), 0);
    drop(ws);
}

#[tokio::test]
async fn one_item_the_client_takes_nothing_of_ends_at_the_idle_timeout() {
    // One broadcast, framed into the socket's buffer and flushed at the session's next poll,
    // larger than the socket buffers, nothing queued behind it, and pings too rare to matter:
    // the flush that has to wait has the stall guard of any write.
    let adapter = WsAdapter::new()
        .ping_interval(Duration::from_secs(3600))
        .idle_timeout(Duration::from_millis(500));
    let f = start(adapter).await;
    let ws = f.connect_in("stalled", 1).await;
    let chunk = "x".repeat(32 * 1024 * 1024);
    assert_eq!(f.server.to("stalled").emit("chunk", &chunk).unwrap(), 1);
    f.until_disconnect(Duration::from_secs(10), "the stalled connection was kept").await;
    assert_eq!(f.server.connection_count(), 0);
    drop(ws);
}

#[tokio::test]
async fn a_stalled_write_ends_as_soon_as_the_queue_overflows() {
    // The default idle timeout (60 s) is far off: the overflow ends the connection at once.
    let f = start(WsAdapter::new()).await;
    let ws = f.connect_in("stalled", 1).await;

    // Emitted one at a time, the session writing each as it comes: its write stalls once the
    // socket buffers are full, and the queue then fills behind it.
    let chunk = "x".repeat(60 * 1024);
    let mut emitted = 0;
    while f.server.to("stalled").emit("chunk", &chunk).unwrap() == 1 {
        emitted += 1;
        assert!(emitted < 10_000, "the queue never filled");
        tokio::task::yield_now().await;
    }
    assert!(emitted > 256, "the write stalled before the queue filled: {emitted} emitted");
    f.until_disconnect(Duration::from_secs(10), "the overflowing connection was kept").await;
    drop(ws);
}

#[tokio::test]
async fn a_panicking_handler_answers_internal_server_error_and_the_connection_stays_usable() {
    let f = start(WsAdapter::new()).await;
    let mut ws = f.connect("/", 7).await;
    for id in 1..=3 {
        send(&mut ws, json!({ "event": "panics", "id": id })).await;
        let reply = recv(&mut ws).await;
        assert_eq!(reply["event"], "exception", "{reply}");
        assert_eq!(reply["id"], id, "{reply}");
        assert_eq!(reply["data"]["message"], "Internal server error", "{reply}");
        send(&mut ws, json!({ "event": "whoami", "id": 10 + id })).await;
        assert_eq!(recv(&mut ws).await, json!({ "event": "ack", "id": 10 + id, "data": 7 }));
    }
    assert_eq!(f.server.connection_count(), 1);
}

#[tokio::test]
async fn a_panicking_on_connect_closes_with_1011_and_leaks_nothing() {
    // 500 connections from one address in waves of 100, under the default limit of 256 per
    // address: a slot that leaked would refuse the third wave with 429.
    let f = start(WsAdapter::new()).await;
    let ip = "127.0.0.1".parse().unwrap();
    let f = &f;
    for wave in 0..5 {
        let clients = (0..100).map(|i| async move {
            let mut ws = f.connect("/fragile", 1000 + wave * 100 + i).await;
            let (_, close) = until_close(&mut ws, Duration::from_secs(5)).await;
            assert_eq!(close.code, CloseCode::Error, "wave {wave}");
        });
        futures_util::future::join_all(clients).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while (f.server.connection_count() > 0 || f.server.connections_from(ip) > 0)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(f.server.connection_count(), 0, "wave {wave}: registrations left");
        assert_eq!(f.server.connections_from(ip), 0, "wave {wave}: address slots left");
    }
    // The on_disconnect hooks of the namespace ran for each; the server still serves.
    let mut ws = f.connect_in("after", 1).await;
    send(&mut ws, json!({ "event": "whoami", "id": 2 })).await;
    assert_eq!(recv(&mut ws).await, json!({ "event": "ack", "id": 2, "data": 1 }));
}

/// A text frame as a client sends it (masked), of fewer than 126 bytes.
fn masked_text(text: &str) -> Vec<u8> {
    let mask = [0x1f, 0x2e, 0x3d, 0x4c];
    let mut frame = vec![0x81, 0x80 | u8::try_from(text.len()).unwrap()];
    frame.extend(mask);
    frame.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// A client may send its first frames right behind its upgrade request, before the `101`:
/// what the HTTP server read past the request is read first, not lost.
#[tokio::test]
async fn frames_sent_with_the_upgrade_request_are_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = start(WsAdapter::new()).await;
    let mut tcp = TcpStream::connect(f.addr).await.unwrap();
    let request = format!(
        "GET /?token={} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        f.token(7),
        f.addr
    );
    let mut bytes = request.into_bytes();
    bytes.extend(masked_text(r#"{"event":"whoami","id":1}"#));
    tcp.write_all(&bytes).await.unwrap();
    // The response's head byte by byte, so that nothing after it is read with it.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.unwrap());
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    let mut ws =
        WebSocketStream::from_raw_socket(tcp, tungstenite::protocol::Role::Client, None).await;
    let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("the frame sent with the request is answered")
        .unwrap()
        .unwrap();
    let reply: Value = serde_json::from_str(reply.to_text().unwrap()).unwrap();
    assert_eq!(reply, json!({ "event": "ack", "id": 1, "data": 7 }));
}

/// Over any connection hyper serves (here an in-memory pipe, as a TLS stream would be), not
/// only axum's TCP.
/// `router` served over an in-memory connection that holds at most `max_buf` bytes each way:
/// the client's end.
fn serve_duplex(router: Router, max_buf: usize) -> tokio::io::DuplexStream {
    use tower::ServiceExt;
    let (client, server) = tokio::io::duplex(max_buf);
    tokio::spawn(async move {
        let service = hyper::service::service_fn(move |request| router.clone().oneshot(request));
        hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(server), service)
            .with_upgrades()
            .await
    });
    client
}

#[tokio::test]
async fn a_connection_other_than_tcp_is_served_too() {
    let (router, f) = app_router(WsAdapter::new(), wsgate::AppConfig::default()).await;
    let client = serve_duplex(router, 64 * 1024);
    let url = format!("ws://localhost/?token={}", f.token(7));
    let (mut ws, _) = tokio_tungstenite::client_async(url, client).await.unwrap();
    ws.send(Message::text(json!({ "event": "whoami", "id": 1 }).to_string())).await.unwrap();
    let reply = ws.next().await.unwrap().unwrap();
    let reply: Value = serde_json::from_str(reply.to_text().unwrap()).unwrap();
    assert_eq!(reply, json!({ "event": "ack", "id": 1, "data": 7 }));
}

#[tokio::test]
async fn answers_left_unwritten_by_a_full_connection_go_once_the_client_reads() {
    // A connection that takes 8 KiB at most: the answers to the last frames read do not all
    // fit, and the rest waits in the websocket's buffer, with nothing queued behind it and
    // nothing more coming from the client. It leaves as soon as the client reads, not at the
    // next ping.
    let (router, f) = app_router(WsAdapter::new(), wsgate::AppConfig::default()).await;
    let client = serve_duplex(router, 8 * 1024);
    let url = format!("ws://localhost/chat?token={}", f.token(7));
    let (mut ws, _) = tokio_tungstenite::client_async(url, client).await.unwrap();
    let pad = "x".repeat(1000);
    for n in 0..12 {
        let text = json!({ "event": "say", "data": format!("{n}:{pad}") }).to_string();
        ws.send(Message::text(text)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for n in 0..12 {
        let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("an answer within 5 s")
            .expect("the connection is open")
            .unwrap();
        let reply: Value = serde_json::from_str(reply.to_text().unwrap()).unwrap();
        assert_eq!(reply["event"], "said");
        assert_eq!(reply["data"], format!("{n}:{pad}"), "answer {n}");
    }
}

#[tokio::test]
async fn broadcasts_held_in_one_poll_reach_every_member_whole_and_in_order() {
    // Written to each member as one run of frames made once (and so the same bytes for all).
    let f = start(WsAdapter::new()).await;
    let mut members = Vec::new();
    for id in 1..=3 {
        members.push(f.connect_in("run", id).await);
    }
    let mut sender = f.connect("/", 9).await;
    send(&mut sender, json!({ "event": "burst", "data": ["run", 7] })).await;
    for ws in &mut members {
        for i in 0..7 {
            let event = recv(ws).await;
            assert_eq!(event["event"], "n");
            assert_eq!(event["data"]["i"], i);
            assert_eq!(event["data"]["pad"].as_str().unwrap().len(), [0, 200, 70_000][i % 3]);
        }
    }
}
