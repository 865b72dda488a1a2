//! The adapter over the raw Engine.IO v4 / Socket.IO v5 protocol, on a real loopback server,
//! over a websocket and over HTTP long-polling: what a client may do that `socket.io-client`
//! rarely does fast enough to show.

use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use wsgate::{
    Ack, App, AppConfig, Args, Binary, CloseReason, Connection, ConnectionId, Data, Server,
    WsException, WsResponse, gateway,
};
use wsgate_socketio::SocketIoAdapter;

/// A gateway whose connect hook is slow, as one that loads data for the user would be.
struct SlowGreeter;

#[gateway]
impl SlowGreeter {
    #[subscribe_message("ping")]
    async fn ping(&self) -> &'static str {
        "pong"
    }

    /// Emits `first`, then answers `second`: the client must see them in that order.
    #[subscribe_message("twice")]
    async fn twice(&self, conn: Connection, Data(n): Data<u32>) -> WsResponse<u32> {
        conn.emit("first", &n).expect("queued");
        WsResponse::new("second", n)
    }

    /// Emits `first`, then fails: the exception comes after it.
    #[subscribe_message("then_fail")]
    async fn then_fail(&self, conn: Connection, Data(n): Data<u32>) -> Result<(), WsException> {
        conn.emit("first", &n).expect("queued");
        Err(WsException::new(format!("failed {n}")))
    }

    #[subscribe_message("echo")]
    async fn echo(&self, Data(text): Data<String>) -> WsResponse<String> {
        WsResponse::new("echo", text)
    }

    #[subscribe_message("join")]
    async fn join(&self, conn: Connection, Data(room): Data<String>) -> bool {
        conn.join(room).is_ok()
    }

    /// Emits `n` events to `room` in one poll: held, then queued to each member as one item.
    #[subscribe_message("burst")]
    async fn burst(&self, server: Server, Data((room, n)): Data<(String, usize)>) {
        burst(&server, "/", &room, n, "x");
    }

    #[on_connect]
    async fn load(&self, _conn: &Connection) {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A second namespace, to share the engine connection with the root one.
struct Chat;

#[gateway(namespace = "/chat")]
impl Chat {
    #[subscribe_message("echo")]
    async fn echo(&self, Data(text): Data<String>) -> WsResponse<String> {
        WsResponse::new("echo", text)
    }

    #[subscribe_message("join")]
    async fn join(&self, conn: Connection, Data(room): Data<String>) -> bool {
        conn.join(room).is_ok()
    }

    /// As the root namespace's `burst`, in this one's room.
    #[subscribe_message("burst")]
    async fn burst(&self, server: Server, Data((room, n)): Data<(String, usize)>) {
        burst(&server, "/chat", &room, n, "y");
    }

    /// The sizes of the binary attachments, through the ack.
    #[subscribe_message("sizes")]
    async fn sizes(&self, Binary(parts): Binary) -> serde_json::Value {
        parts.iter().map(|p| p.len()).collect()
    }

    /// `upload(name, file)`: the same arguments back through the ack, the file as an
    /// attachment again.
    #[subscribe_message("upload")]
    async fn upload(
        &self,
        Args((name, file)): Args<(String, Bytes)>,
    ) -> Ack<Args<(String, Bytes)>> {
        Ack(Args((name, file)))
    }

    /// `{name, file}`: emits `stored` with three arguments, the last one binary.
    #[subscribe_message("store")]
    async fn store(&self, Data(file): Data<File>) -> WsResponse<Args<(String, usize, Bytes)>> {
        WsResponse::new("stored", Args((file.name, file.content.len(), file.content)))
    }

    /// `[gate, n]`: waits for a permit of gate `gate`, then answers `n`: a handler kept in
    /// flight at will.
    #[subscribe_message("gated")]
    async fn gated(&self, Data((gate, n)): Data<(usize, u32)>) -> u32 {
        if let Some(gate) = GATES.get(gate)
            && let Ok(permit) = gate.acquire().await
        {
            permit.forget();
        }
        n
    }
}

/// Emits `n` events `{i, pad}` to `room` of `namespace` in one poll, their pads of `pad` in
/// every frame length form (7 bits, 16 bits, 64 bits).
fn burst(server: &Server, namespace: &str, room: &str, n: usize, pad: &str) {
    for i in 0..n {
        let data = serde_json::json!({ "i": i, "pad": pad.repeat([0, 200, 70_000][i % 3]) });
        server.of(namespace).to(room).emit("n", &data).expect("emitted");
    }
}

#[derive(serde::Deserialize)]
struct File {
    name: String,
    content: Bytes,
}

/// The gates of the `gated` handler, one per test that uses it (tests run at once).
static GATES: [tokio::sync::Semaphore; 2] =
    [tokio::sync::Semaphore::const_new(0), tokio::sync::Semaphore::const_new(0)];

async fn serve() -> std::net::SocketAddr {
    serve_with(AppConfig::default()).await.0
}

async fn serve_with(config: AppConfig) -> (std::net::SocketAddr, App) {
    serve_adapter(config, SocketIoAdapter::new()).await
}

async fn serve_adapter(config: AppConfig, adapter: SocketIoAdapter) -> (std::net::SocketAddr, App) {
    let app = App::builder()
        .config(config)
        .gateway(SlowGreeter)
        .gateway(Chat)
        .build()
        .await
        .expect("app");
    let router = app.mount(Router::new(), adapter);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { wsgate_socketio::serve(listener, router).await });
    (addr, app)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_text(ws: &mut Ws) -> String {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s")
            .expect("open")
            .expect("a frame");
        match frame {
            // Engine.IO heartbeat: answered, not returned.
            Message::Text(text) if text.as_str() == "2" => {
                ws.send(Message::text("3")).await.expect("pong");
            }
            Message::Text(text) => return text.as_str().to_owned(),
            _ => {}
        }
    }
}

/// A raw websocket client of a new server, connected to the root namespace.
async fn connected() -> Ws {
    connected_to(serve().await).await
}

async fn connected_to(addr: std::net::SocketAddr) -> Ws {
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("websocket");
    assert!(next_text(&mut ws).await.starts_with('0'), "engine.io open");
    ws.send(Message::text("40")).await.expect("send connect");
    assert!(next_text(&mut ws).await.starts_with("40"), "namespace connected");
    ws
}

#[tokio::test]
async fn events_sent_right_after_connect_wait_for_the_connect_hooks() {
    let mut ws = connected().await;
    // At once, while the connect hook is still running: the event must not be lost.
    ws.send(Message::text(r#"421["ping"]"#)).await.expect("send event");
    assert_eq!(next_text(&mut ws).await, r#"431["pong"]"#);
}

/// Answers are written from the message's task when nothing is waiting in the connection's
/// queue, and queued behind it otherwise: an event the handler emitted before answering always
/// arrives first.
#[tokio::test]
async fn an_answer_never_overtakes_what_its_handler_emitted_before_it() {
    let mut ws = connected().await;
    // Fewer than the outbound queue holds: all of them wait for the connect hook, then run at once.
    const N: u32 = 100;
    for n in 0..N {
        let event = if n % 2 == 0 { "twice" } else { "then_fail" };
        ws.feed(Message::text(format!(r#"42["{event}",{n}]"#))).await.expect("send");
    }
    ws.flush().await.expect("flush");
    let mut first_seen = vec![false; N as usize];
    let mut answered = 0;
    while answered < N {
        let text = next_text(&mut ws).await;
        let body: serde_json::Value =
            serde_json::from_str(text.strip_prefix("42").expect("an event")).expect("JSON");
        let n = match (body[0].as_str(), &body[1]) {
            (Some("first"), n) => {
                first_seen[n.as_u64().expect("n") as usize] = true;
                continue;
            }
            (Some("second"), n) => n.as_u64().expect("n"),
            (Some("exception"), e) => {
                let message = e["message"].as_str().expect("message");
                message.strip_prefix("failed ").expect("ours").parse().expect("n")
            }
            other => panic!("unexpected {other:?}"),
        };
        assert!(first_seen[n as usize], "the answer to {n} came before the event it emitted first");
        answered += 1;
    }
}

/// Replies wait for room in the connection's queue, and the queue for the socket: a client
/// that sends and never reads stops being read once all of that is full, and is dropped when
/// it has taken nothing for the ping timeout (it could not have answered a ping either).
#[tokio::test]
async fn a_client_that_never_reads_is_disconnected() {
    // No rate limit: the answers, not the refusals, are what piles up.
    let adapter = SocketIoAdapter::new().ping_timeout(Duration::from_secs(2));
    let (addr, app) =
        serve_adapter(AppConfig { rate_limit: None, ..AppConfig::default() }, adapter).await;
    let mut ws = connected_to(addr).await;
    assert_eq!(app.server().connection_count(), 1);
    // 16 KiB answers: the kernel's socket buffers fill first, then the queue (1 024 items).
    let frame = format!(r#"42["echo","{}"]"#, "x".repeat(16 * 1024));
    let flood = async {
        for _ in 0..4_000 {
            if ws.feed(Message::text(frame.as_str())).await.is_err() {
                return;
            }
        }
        let _ = ws.flush().await;
    };
    // The flood stalls once the server stops reading, until the server lets the client go.
    let _ = tokio::time::timeout(Duration::from_secs(15), flood).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while app.server().connection_count() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the client that never reads is still connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The events of a connection whose namespace was joined with `0`, as `(prefix, ack id, body)`.
async fn open_engine(addr: std::net::SocketAddr) -> (Ws, serde_json::Value) {
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("websocket");
    let open = next_text(&mut ws).await;
    let open: serde_json::Value =
        serde_json::from_str(open.strip_prefix('0').expect("engine.io open")).expect("JSON");
    (ws, open)
}

#[tokio::test]
async fn the_engine_opens_with_its_settings_and_no_upgrades() {
    let adapter = SocketIoAdapter::new()
        .ping_interval(Duration::from_millis(1500))
        .ping_timeout(Duration::from_millis(700))
        .max_payload(32_000);
    let (addr, _app) = serve_adapter(AppConfig::default(), adapter).await;
    let (_ws, open) = open_engine(addr).await;
    assert!(open["sid"].as_str().is_some_and(|sid| !sid.is_empty()), "{open}");
    assert_eq!(open["upgrades"], serde_json::json!([]));
    assert_eq!(open["pingInterval"], 1500);
    assert_eq!(open["pingTimeout"], 700);
    assert_eq!(open["maxPayload"], 32_000);
}

#[tokio::test]
async fn two_namespaces_share_one_websocket() {
    let (addr, app) = serve_with(AppConfig::default()).await;
    let (mut ws, _) = open_engine(addr).await;
    ws.send(Message::text("40")).await.expect("send");
    ws.send(Message::text("40/chat,")).await.expect("send");
    let mut sids = Vec::new();
    for prefix in ["40{", "40/chat,{"] {
        let text = next_text(&mut ws).await;
        assert!(text.starts_with(prefix), "{text}");
        let body: serde_json::Value =
            serde_json::from_str(&text[prefix.len() - 1..]).expect("JSON");
        sids.push(body["sid"].as_str().expect("sid").parse::<u64>().expect("a connection id"));
    }
    assert_eq!(app.server().connection_count(), 2);

    // Each namespace answers on its own prefix; an unknown one is refused without harm.
    ws.send(Message::text(r#"42/chat,["echo","in chat"]"#)).await.expect("send");
    assert_eq!(next_text(&mut ws).await, r#"42/chat,["echo","in chat"]"#);
    ws.send(Message::text("40/nowhere,")).await.expect("send");
    let refused = next_text(&mut ws).await;
    assert!(refused.starts_with(r#"44/nowhere,{"message":"#), "{refused}");
    ws.send(Message::text(r#"427["ping"]"#)).await.expect("send");
    assert_eq!(next_text(&mut ws).await, r#"437["pong"]"#);

    // The client leaves /chat: the root namespace stays.
    ws.send(Message::text("41/chat,")).await.expect("send");
    ws.send(Message::text(r#"428["ping"]"#)).await.expect("send");
    assert_eq!(next_text(&mut ws).await, r#"438["pong"]"#);
    assert_eq!(app.server().connection_count(), 1);
    // Events for a namespace not joined are ignored.
    ws.send(Message::text(r#"42/chat,["echo","gone"]"#)).await.expect("send");
    ws.send(Message::text(r#"429["ping"]"#)).await.expect("send");
    assert_eq!(next_text(&mut ws).await, r#"439["pong"]"#);

    // The server ends the root namespace: `41`, and the engine closes once none is left.
    let root = app.server().connection(ConnectionId(sids[0])).expect("root connection");
    root.close(CloseReason::Normal);
    assert_eq!(next_text(&mut ws).await, "41");
    assert_eq!(app.server().connection_count(), 0);
}

#[tokio::test]
async fn binary_attachments_reach_the_handler() {
    let (addr, _app) = serve_with(AppConfig::default()).await;
    let (mut ws, _) = open_engine(addr).await;
    ws.send(Message::text("40/chat,")).await.expect("send");
    assert!(next_text(&mut ws).await.starts_with("40/chat,"));
    ws.send(Message::text(
        r#"452-/chat,5["sizes",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
    ))
    .await
    .expect("send");
    ws.send(Message::binary(vec![1u8, 2, 3])).await.expect("send");
    ws.send(Message::binary(vec![0u8; 1000])).await.expect("send");
    assert_eq!(next_text(&mut ws).await, "43/chat,5[[3,1000]]");
}

async fn next_binary(ws: &mut Ws) -> Bytes {
    let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("a frame within 5 s")
        .expect("open")
        .expect("a frame");
    match frame {
        Message::Binary(data) => data,
        other => panic!("a binary frame, not {other:?}"),
    }
}

#[tokio::test]
async fn several_arguments_and_attachments_go_back_as_binary_frames() {
    let (addr, _app) = serve_with(AppConfig::default()).await;
    let (mut ws, _) = open_engine(addr).await;
    ws.send(Message::text("40/chat,")).await.expect("send");
    assert!(next_text(&mut ws).await.starts_with("40/chat,"));
    let placeholder = r#"{"_placeholder":true,"num":0}"#;

    // Read as `Args<(String, Bytes)>`, answered through the ack with both.
    ws.send(Message::text(format!(r#"451-/chat,7["upload","a.bin",{placeholder}]"#)))
        .await
        .expect("send");
    ws.send(Message::binary(vec![1u8, 2, 3])).await.expect("send");
    assert_eq!(next_text(&mut ws).await, format!(r#"461-/chat,7["a.bin",{placeholder}]"#));
    assert_eq!(next_binary(&mut ws).await, [1u8, 2, 3][..]);

    // A `Bytes` field of `Data<File>` reads its attachment; the event has three arguments.
    let file = format!(r#"{{"name":"b.bin","content":{placeholder}}}"#);
    ws.send(Message::text(format!(r#"451-/chat,["store",{file}]"#))).await.expect("send");
    ws.send(Message::binary(vec![9u8; 4])).await.expect("send");
    assert_eq!(
        next_text(&mut ws).await,
        format!(r#"451-/chat,["stored","b.bin",4,{placeholder}]"#)
    );
    assert_eq!(next_binary(&mut ws).await, [9u8; 4][..]);

    // Bytes read from a JSON array of numbers as well, and go out as an attachment.
    ws.send(Message::text(r#"42/chat,8["upload","c",[1,2]]"#)).await.expect("send");
    assert_eq!(next_text(&mut ws).await, format!(r#"461-/chat,8["c",{placeholder}]"#));
    assert_eq!(next_binary(&mut ws).await, [1u8, 2][..]);
    // What is no bytes is named.
    ws.send(Message::text(r#"42/chat,8["upload","c",5]"#)).await.expect("send");
    let exception = next_text(&mut ws).await;
    assert!(exception.starts_with(r#"42/chat,["exception",{"#), "{exception}");
    assert!(
        exception.contains(r#""message":"Invalid [1]: invalid type: integer `5`"#),
        "{exception}"
    );

    // A placeholder without its attachment is named.
    ws.send(Message::text(r#"451-/chat,9["upload","d",{"_placeholder":true,"num":1}]"#))
        .await
        .expect("send");
    ws.send(Message::binary(vec![0u8])).await.expect("send");
    let exception = next_text(&mut ws).await;
    assert!(
        exception
            .contains(r#""message":"Invalid [1]: no binary attachment 1 (the message has 1)""#),
        "{exception}"
    );
}

/// The next close frame's code, within 5 s; the pings before it are left unanswered.
async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("closed within 5 s");
        match frame {
            Some(Ok(Message::Close(frame))) => return frame.map_or(1005, |f| f.code.into()),
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    }
}

#[tokio::test]
async fn bad_packets_close_the_websocket_with_1008() {
    let addr = serve().await;
    for bad in ["4abc", "x", "45x-[]", "4299999999999999999999[\"ping\"]"] {
        let mut ws = connected_to(addr).await;
        ws.send(Message::text(bad)).await.expect("send");
        assert_eq!(close_code(&mut ws).await, 1008, "{bad}");
    }
    // An event that is not JSON gets an exception; the connection stays.
    let mut ws = connected_to(addr).await;
    ws.send(Message::text(r#"42["ping""#)).await.expect("send");
    let exception = next_text(&mut ws).await;
    assert!(exception.starts_with(r#"42["exception",{"#), "{exception}");
    ws.send(Message::text(r#"421["ping"]"#)).await.expect("send");
    assert_eq!(next_text(&mut ws).await, r#"431["pong"]"#);
    // A binary frame nobody announced.
    let mut ws = connected_to(addr).await;
    ws.send(Message::binary(vec![1u8])).await.expect("send");
    assert_eq!(close_code(&mut ws).await, 1008);
    // An auth payload that is not an object is refused, and the engine stays open.
    let (mut ws, _) = open_engine(addr).await;
    ws.send(Message::text(r#"40"token""#)).await.expect("send");
    assert_eq!(
        next_text(&mut ws).await,
        r#"44{"message":"The auth payload must be a JSON object."}"#
    );
    ws.send(Message::text("40")).await.expect("send");
    assert!(next_text(&mut ws).await.starts_with("40{"));
}

#[tokio::test]
async fn oversized_messages_close_with_1009() {
    let adapter = SocketIoAdapter::new().max_payload(1000);
    let (addr, app) = serve_adapter(AppConfig::default(), adapter).await;
    let mut ws = connected_to(addr).await;
    ws.send(Message::text(format!(r#"42["echo","{}"]"#, "x".repeat(2000)))).await.expect("send");
    assert_eq!(close_code(&mut ws).await, 1009);
    // Attachments count towards the limit as a whole.
    let mut ws = connected_to(addr).await;
    ws.send(Message::text(r#"451-["echo",{"_placeholder":true,"num":0}]"#)).await.expect("send");
    let _ = ws.send(Message::binary(vec![0u8; 990])).await;
    assert_eq!(close_code(&mut ws).await, 1009);
    drop(ws);
    gone(&app).await;
}

#[tokio::test]
async fn heartbeat_connect_timeout_and_client_close() {
    let adapter = SocketIoAdapter::new()
        .ping_interval(Duration::from_millis(300))
        .ping_timeout(Duration::from_millis(200))
        .connect_timeout(Duration::from_millis(500));
    let (addr, app) = serve_adapter(AppConfig::default(), adapter).await;

    // Pings answered (by next_text) keep the session: three of them, and it still answers.
    let mut ws = connected_to(addr).await;
    let _ = tokio::time::timeout(Duration::from_millis(1000), next_text(&mut ws)).await;
    ws.send(Message::text(r#"421["ping"]"#)).await.expect("send");
    assert_eq!(next_text(&mut ws).await, r#"431["pong"]"#);
    // Pings left unanswered: closed as idle (1001).
    let mut silent = connected_to(addr).await;
    assert_eq!(close_code(&mut silent).await, 1001);
    // No namespace joined within the connect timeout: closed too.
    let (mut unjoined, _) = open_engine(addr).await;
    let started = tokio::time::Instant::now();
    loop {
        match unjoined.next().await {
            Some(Ok(Message::Text(ping))) if ping.as_str() == "2" => {
                unjoined.send(Message::text("3")).await.expect("pong");
            }
            Some(Ok(Message::Close(frame))) => {
                assert_eq!(frame.map(|f| u16::from(f.code)), Some(1001));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(started.elapsed() >= Duration::from_millis(400), "closed before the connect timeout");
    // The client's Engine.IO close packet: the server closes the websocket.
    let mut leaving = connected_to(addr).await;
    leaving.send(Message::text("1")).await.expect("send");
    assert_eq!(close_code(&mut leaving).await, 1000);
    drop((ws, silent, unjoined, leaving));
    gone(&app).await;
}

/// Waits (at most 5 s) for every connection to be gone.
async fn gone(app: &App) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while app.server().connection_count() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "connections left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A raw Engine.IO long-polling client: one `GET` or `POST` at a time, as `socket.io-client`.
struct Polling {
    http: reqwest::Client,
    url: String,
}

impl Polling {
    /// Opens a session: the open packet's settings.
    async fn open(addr: std::net::SocketAddr) -> (Self, serde_json::Value) {
        let http = reqwest::Client::new();
        let base = format!("http://{addr}/socket.io/?EIO=4&transport=polling");
        let response = http.get(&base).send().await.expect("handshake");
        assert_eq!(response.status(), 200);
        let text = response.text().await.expect("body");
        let open: serde_json::Value =
            serde_json::from_str(text.strip_prefix('0').expect("open packet")).expect("JSON");
        let url = format!("{base}&sid={}", open["sid"].as_str().expect("sid"));
        (Self { http, url }, open)
    }

    async fn post(&self, body: impl Into<String>) -> (u16, String) {
        let response = self.http.post(&self.url).body(body.into()).send().await.expect("post");
        (response.status().as_u16(), response.text().await.expect("body"))
    }

    /// One poll's answer, as its packets.
    async fn poll(&self) -> (u16, Vec<String>) {
        let poll = self.http.get(&self.url).send();
        let response = tokio::time::timeout(Duration::from_secs(5), poll)
            .await
            .expect("answered")
            .expect("get");
        let status = response.status().as_u16();
        let body = response.text().await.expect("body");
        (status, body.split('\u{1e}').map(str::to_owned).collect())
    }

    /// The next packets that are not pings (which are answered).
    async fn packets(&self) -> Vec<String> {
        loop {
            let (status, packets) = self.poll().await;
            assert_eq!(status, 200, "{packets:?}");
            let (pings, packets): (Vec<_>, Vec<_>) = packets.into_iter().partition(|p| p == "2");
            if !pings.is_empty() {
                assert_eq!(self.post("3").await.0, 200);
            }
            if !packets.is_empty() {
                return packets;
            }
        }
    }
}

#[tokio::test]
async fn long_polling_connects_namespaces_and_carries_events_acks_and_attachments() {
    let (addr, app) = serve_with(AppConfig::default()).await;
    let (client, open) = Polling::open(addr).await;
    assert_eq!(open["upgrades"], serde_json::json!(["websocket"]));
    assert_eq!(open["pingInterval"], 25_000);
    // Two namespaces in one body; an event sent with them waits for the connect hook.
    assert_eq!(client.post("40\u{1e}40/chat,\u{1e}421[\"ping\"]").await, (200, "ok".into()));
    let mut packets = client.packets().await;
    while packets.len() < 3 {
        packets.extend(client.packets().await);
    }
    assert!(packets[0].starts_with("40{\"sid\":"), "{packets:?}");
    assert!(packets[1].starts_with("40/chat,{\"sid\":"), "{packets:?}");
    assert_eq!(packets[2], r#"431["pong"]"#);
    assert_eq!(app.server().connection_count(), 2);
    // Binary attachments come base64-encoded (`b…`) in the body.
    let body = "451-/chat,5[\"sizes\",{\"_placeholder\":true,\"num\":0}]\u{1e}bAQID";
    assert_eq!(client.post(body).await.0, 200);
    assert_eq!(client.packets().await, ["43/chat,5[[3]]"]);
    // And go back the same way, after the packet that announces them.
    let body = "451-/chat,6[\"upload\",\"a\",{\"_placeholder\":true,\"num\":0}]\u{1e}bAQID";
    assert_eq!(client.post(body).await.0, 200);
    let mut packets = client.packets().await;
    while packets.len() < 2 {
        packets.extend(client.packets().await);
    }
    assert_eq!(packets, ["461-/chat,6[\"a\",{\"_placeholder\":true,\"num\":0}]", "bAQID"]);
    // An unknown namespace is refused; an unreadable event gets an exception.
    assert_eq!(client.post("40/nowhere,\u{1e}42[\"ping\"").await.0, 200);
    let packets = client.packets().await;
    assert!(packets[0].starts_with("44/nowhere,{\"message\":"), "{packets:?}");
    assert!(packets.last().is_some_and(|p| p.starts_with(r#"42["exception",{"#)), "{packets:?}");
    // The client leaves: a waiting poll is answered with a no-op, the session is gone.
    let waiting = tokio::spawn({
        let client = Polling { http: client.http.clone(), url: client.url.clone() };
        async move { client.poll().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(client.post("1").await.0, 200);
    assert_eq!(waiting.await.expect("poll"), (200, vec!["6".to_owned()]));
    gone(&app).await;
    assert_eq!(client.poll().await.0, 400, "the session is gone");
}

/// Over long-polling, the `POST` is the backpressure: while as many messages as allowed are
/// in flight, the rest of its body is not read and it is not answered.
#[tokio::test]
async fn long_polling_holds_the_post_while_the_handlers_in_flight_are_at_the_limit() {
    let adapter = SocketIoAdapter::new().max_in_flight(1);
    let (addr, _app) = serve_adapter(AppConfig::default(), adapter).await;
    let (client, _) = Polling::open(addr).await;
    client.post("40/chat,").await;
    assert!(client.packets().await[0].starts_with("40/chat,"));
    let post = tokio::spawn({
        let client = Polling { http: client.http.clone(), url: client.url.clone() };
        async move { client.post("42/chat,1[\"gated\",[0,1]]\u{1e}42/chat,2[\"gated\",[0,2]]").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!post.is_finished(), "the POST was answered with a handler in flight");
    GATES[0].add_permits(2);
    assert_eq!(post.await.expect("post"), (200, "ok".to_owned()));
    let mut acks = client.packets().await;
    if acks.len() < 2 {
        acks.extend(client.packets().await);
    }
    assert_eq!(acks, ["43/chat,1[1]", "43/chat,2[2]"]);
}

#[tokio::test]
async fn long_polling_errors_limits_and_heartbeat() {
    let adapter = SocketIoAdapter::new()
        .ping_interval(Duration::from_millis(300))
        .ping_timeout(Duration::from_millis(200))
        .max_payload(1000);
    let (addr, app) = serve_adapter(AppConfig::default(), adapter).await;
    let http = reqwest::Client::new();
    let url = |query: &str| format!("http://{addr}/socket.io/?{query}");
    for (method, query, code) in [
        ("GET", "transport=polling", 5),
        ("GET", "EIO=3&transport=polling", 5),
        ("GET", "EIO=4&transport=carrier-pigeon", 0),
        ("POST", "EIO=4&transport=polling", 2),
        ("GET", "EIO=4&transport=polling&sid=nope", 1),
        ("GET", "EIO=4&transport=websocket", 3),
    ] {
        let request = http.request(method.parse().expect("method"), url(query));
        let response = request.send().await.expect("answer");
        assert_eq!(response.status(), 400, "{method} {query}");
        let body: serde_json::Value = response.json().await.expect("JSON");
        assert_eq!(body["code"], code, "{method} {query}: {body}");
    }
    // Pings come in polls; answered, the session lives.
    let (client, _) = Polling::open(addr).await;
    client.post("40").await;
    for _ in 0..3 {
        let (status, packets) = client.poll().await;
        assert_eq!(status, 200);
        if packets == ["2"] {
            assert_eq!(client.post("3").await.0, 200);
        }
    }
    assert_eq!(app.server().connection_count(), 1);
    // Two polls at once: the second is refused and the session ends.
    let first = tokio::spawn({
        let client = Polling { http: client.http.clone(), url: client.url.clone() };
        async move { client.poll().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(client.poll().await.0, 400);
    let _ = first.await;
    gone(&app).await;
    // A body over max_payload: 413, and the session ends.
    let (client, _) = Polling::open(addr).await;
    client.post("40").await;
    assert_eq!(client.post(format!(r#"42["echo","{}"]"#, "x".repeat(2000))).await.0, 413);
    gone(&app).await;
    assert_eq!(client.poll().await.0, 400);
    // Pings left unanswered end the session.
    let (client, _) = Polling::open(addr).await;
    client.post("40").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    gone(&app).await;
    assert_eq!(client.poll().await.0, 400);
}

#[tokio::test]
async fn long_polling_upgrades_to_websocket_without_losing_anything() {
    let (addr, app) = serve_with(AppConfig::default()).await;
    let (client, open) = Polling::open(addr).await;
    client.post("40").await;
    let connected = client.packets().await.remove(0);
    let connected: serde_json::Value =
        serde_json::from_str(connected.strip_prefix("40").expect("connected")).expect("JSON");
    let id = connected["sid"].as_str().and_then(|s| s.parse().ok()).expect("a connection id");
    // A poll waits while the websocket is opened and probed: the probe releases it.
    let waiting = tokio::spawn({
        let client = Polling { http: client.http.clone(), url: client.url.clone() };
        async move { client.poll().await }
    });
    let sid = open["sid"].as_str().expect("sid");
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket&sid={sid}");
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.expect("websocket");
    ws.send(Message::text("2probe")).await.expect("probe");
    assert_eq!(next_text(&mut ws).await, "3probe");
    assert_eq!(waiting.await.expect("poll"), (200, vec!["6".to_owned()]));
    // A poll that arrives once the probe is answered ends at once too: the client completes
    // the upgrade only when its poll has ended.
    assert_eq!(client.poll().await, (200, vec!["6".to_owned()]));
    // Emitted while the client pauses polling: it comes over the websocket once upgraded.
    let conn = app.server().connection(ConnectionId(id)).expect("the connection");
    conn.emit("meanwhile", &1).expect("queued");
    ws.send(Message::text("5")).await.expect("upgrade");
    assert_eq!(next_text(&mut ws).await, r#"42["meanwhile",1]"#);
    ws.send(Message::text(r#"427["ping"]"#)).await.expect("send");
    assert_eq!(next_text(&mut ws).await, r#"437["pong"]"#);
    // Polls and other websockets naming the session are refused from now on.
    assert_eq!(client.poll().await.0, 400);
    let (mut other, _) =
        tokio_tungstenite::connect_async(&url).await.expect("accepted, then closed");
    assert!(matches!(other.next().await, Some(Ok(Message::Close(_))) | None | Some(Err(_))));
    drop(ws);
    gone(&app).await;
}

/// Closing the server over long-polling: the message in flight is answered, then `41` comes in
/// a poll, and the session is gone.
#[tokio::test]
async fn long_polling_closes_gracefully_after_answering_what_is_in_flight() {
    let (addr, app) = serve_with(AppConfig::default()).await;
    let (client, _) = Polling::open(addr).await;
    client.post("40/chat,").await;
    assert!(client.packets().await[0].starts_with("40/chat,"));
    // A handler in flight when the server starts closing.
    client.post("42/chat,9[\"gated\",[1,9]]").await;
    let server = app.server().clone();
    let closing = tokio::spawn(async move {
        server.close_all(CloseReason::GoingAway, Duration::from_secs(5)).await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!closing.is_finished(), "the message in flight holds the close");
    GATES[1].add_permits(1);
    let mut packets = client.packets().await;
    if packets.len() < 2 {
        packets.extend(client.packets().await);
    }
    assert_eq!(packets, ["43/chat,9[9]", "41/chat,"]);
    assert_eq!(closing.await.expect("close_all"), 0);
}

#[tokio::test]
async fn broadcasts_held_in_a_namespace_reach_its_members_whole_in_order_and_prefixed() {
    // Rooms of the same name in two namespaces, on the same websockets: each namespace's run
    // of frames is made once, with its own prefix, and reaches that namespace's members alone.
    let addr = serve().await;
    let mut members = Vec::new();
    for _ in 0..3 {
        let mut ws = connected_to(addr).await;
        ws.send(Message::text("40/chat,")).await.expect("connect /chat");
        assert!(next_text(&mut ws).await.starts_with("40/chat,"));
        ws.send(Message::text(r#"42/chat,1["join","run"]"#)).await.expect("join");
        assert_eq!(next_text(&mut ws).await, "43/chat,1[true]");
        ws.send(Message::text(r#"422["join","run"]"#)).await.expect("join");
        assert_eq!(next_text(&mut ws).await, "432[true]");
        members.push(ws);
    }
    // A member of the root namespace's room alone.
    let mut root_only = connected_to(addr).await;
    root_only.send(Message::text(r#"423["join","run"]"#)).await.expect("join");
    assert_eq!(next_text(&mut root_only).await, "433[true]");

    let mut sender = connected_to(addr).await;
    sender.send(Message::text("40/chat,")).await.expect("connect /chat");
    assert!(next_text(&mut sender).await.starts_with("40/chat,"));
    sender.send(Message::text(r#"42/chat,["burst",["run",7]]"#)).await.expect("burst");
    sender.send(Message::text(r#"42["burst",["run",4]]"#)).await.expect("burst");
    let check = |events: &[serde_json::Value], pad: &str| {
        for (i, body) in events.iter().enumerate() {
            assert_eq!(body[0], "n");
            assert_eq!(body[1]["i"], i);
            assert_eq!(body[1]["pad"].as_str().expect("pad"), pad.repeat([0, 200, 70_000][i % 3]));
        }
    };
    for ws in &mut members {
        let (mut chat, mut root) = (Vec::new(), Vec::new());
        while chat.len() + root.len() < 11 {
            let text = next_text(ws).await;
            let (list, body) = match text.strip_prefix("42/chat,") {
                Some(body) => (&mut chat, body.to_owned()),
                None => (&mut root, text.strip_prefix("42").expect("an event").to_owned()),
            };
            list.push(serde_json::from_str::<serde_json::Value>(&body).expect("JSON"));
        }
        assert_eq!((chat.len(), root.len()), (7, 4));
        check(&chat, "y");
        check(&root, "x");
    }
    let mut root = Vec::new();
    for _ in 0..4 {
        let text = next_text(&mut root_only).await;
        let body = text.strip_prefix("42").expect("an event");
        assert!(!body.starts_with('/'), "{text}");
        root.push(serde_json::from_str::<serde_json::Value>(body).expect("JSON"));
    }
    check(&root, "x");
    // Nothing from /chat, which it did not join.
    let more = tokio::time::timeout(Duration::from_millis(200), next_text(&mut root_only)).await;
    assert!(more.is_err(), "{more:?}");
}

#[tokio::test]
async fn broadcasts_held_in_one_poll_reach_every_member_whole_and_in_order() {
    // Written to each member as one run of frames made once (and so the same bytes for all).
    let addr = serve().await;
    let mut members = Vec::new();
    for _ in 0..3 {
        let mut ws = connected_to(addr).await;
        ws.send(Message::text(r#"421["join","run"]"#)).await.expect("join");
        assert_eq!(next_text(&mut ws).await, "431[true]");
        members.push(ws);
    }
    let mut sender = connected_to(addr).await;
    sender.send(Message::text(r#"42["burst",["run",7]]"#)).await.expect("burst");
    for ws in &mut members {
        for i in 0..7 {
            let text = next_text(ws).await;
            let body: serde_json::Value =
                serde_json::from_str(text.strip_prefix("42").expect("an event")).expect("JSON");
            assert_eq!(body[0], "n");
            assert_eq!(body[1]["i"], i);
            let pad = body[1]["pad"].as_str().expect("pad");
            assert_eq!(pad.len(), [0, 200, 70_000][i % 3]);
        }
    }
}
