//! The adapter over the raw Socket.IO v5 protocol on a websocket, on a real loopback server:
//! what a client may do that `socket.io-client` rarely does fast enough to show.

use std::time::Duration;

use axum::Router;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use wsgate::{App, Connection, gateway};
use wsgate_socketio::SocketIoAdapter;

/// A gateway whose connect hook is slow, as one that loads data for the user would be.
struct SlowGreeter;

#[gateway]
impl SlowGreeter {
    #[subscribe_message("ping")]
    async fn ping(&self) -> &'static str {
        "pong"
    }

    #[on_connect]
    async fn load(&self, _conn: &Connection) {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn serve() -> std::net::SocketAddr {
    let app = App::builder().gateway(SlowGreeter).build().await.expect("app");
    let router = app.mount(Router::new(), SocketIoAdapter::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
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

#[tokio::test]
async fn events_sent_right_after_connect_wait_for_the_connect_hooks() {
    let addr = serve().await;
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("websocket");
    assert!(next_text(&mut ws).await.starts_with('0'), "engine.io open");
    ws.send(Message::text("40")).await.expect("send connect");
    assert!(next_text(&mut ws).await.starts_with("40"), "namespace connected");
    // At once, while the connect hook is still running: the event must not be lost.
    ws.send(Message::text(r#"421["ping"]"#)).await.expect("send event");
    assert_eq!(next_text(&mut ws).await, r#"431["pong"]"#);
}
