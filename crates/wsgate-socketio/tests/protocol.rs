//! The adapter over the raw Socket.IO v5 protocol on a websocket, on a real loopback server:
//! what a client may do that `socket.io-client` rarely does fast enough to show.

use std::time::Duration;

use axum::Router;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use wsgate::{App, AppConfig, Connection, Data, WsException, WsResponse, gateway};
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

    #[on_connect]
    async fn load(&self, _conn: &Connection) {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn serve() -> std::net::SocketAddr {
    serve_with(AppConfig::default()).await.0
}

async fn serve_with(config: AppConfig) -> (std::net::SocketAddr, App) {
    let app = App::builder().config(config).gateway(SlowGreeter).build().await.expect("app");
    let router = app.mount(Router::new(), SocketIoAdapter::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, router).await });
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

/// Answers are written from the message's task into socketioxide's buffer, not the
/// connection's queue; that buffer is bounded too: a client that sends and never reads is
/// disconnected once it is full, and its answers are not held forever.
#[tokio::test]
async fn a_client_that_never_reads_is_disconnected() {
    // No rate limit: the answers, not the refusals, are what piles up.
    let (addr, app) = serve_with(AppConfig { rate_limit: None, ..AppConfig::default() }).await;
    let mut ws = connected_to(addr).await;
    assert_eq!(app.server().connection_count(), 1);
    // 16 KiB answers: the kernel's socket buffers fill first, then socketioxide's 1 024 packets.
    let frame = format!(r#"42["echo","{}"]"#, "x".repeat(16 * 1024));
    let flood = async {
        for _ in 0..4_000 {
            if ws.feed(Message::text(frame.as_str())).await.is_err() {
                return;
            }
        }
        let _ = ws.flush().await;
    };
    tokio::time::timeout(Duration::from_secs(30), flood).await.expect("sent within 30 s");
    // At once, not at the next heartbeat (socketioxide would end it there, some 20 s later).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while app.server().connection_count() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the client that never reads is still connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
