//! Quiet Socket.IO sessions over a websocket sleep (`SocketIoAdapter::hibernate_after`) and
//! wake for what concerns them: a packet, an emit, the ping (awake until its pong, which does
//! not keep them awake), the client's close. A real server (`wsgate_socketio::serve`) on a
//! loopback port and a websocket client speaking Engine.IO v4. In a test binary of its own:
//! the count of sleeping sessions is the process's.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use axum::Router;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use wsgate::{App, Data, Server, WsResponse, gateway};
use wsgate_socketio::SocketIoAdapter;
use wsgate_transport::rest::resting;

struct Echo;

#[gateway]
impl Echo {
    #[subscribe_message("echo")]
    async fn echo(&self, Data(text): Data<String>) -> WsResponse<String> {
        WsResponse::new("echo", text)
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn start() -> (std::net::SocketAddr, Server) {
    let app = App::builder().gateway(Echo).build().await.unwrap();
    let server = app.server().clone();
    let adapter = SocketIoAdapter::new()
        // Longer than the ping interval: a session that counted pongs as messages would
        // never sleep again once pinged.
        .hibernate_after(Some(Duration::from_millis(1000)))
        .ping_interval(Duration::from_millis(300))
        .ping_timeout(Duration::from_millis(2000));
    let router = app.mount(Router::new(), adapter);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { wsgate_socketio::serve(listener, router).await.unwrap() });
    (addr, server)
}

/// A client on the root namespace: the open packet read, `40` sent and answered.
async fn connect(addr: std::net::SocketAddr) -> Ws {
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert!(next(&mut ws, true).await.starts_with("0{"));
    ws.send(Message::text("40")).await.unwrap();
    assert!(next(&mut ws, true).await.starts_with("40{"));
    ws
}

/// The next packet but pings, each answered when `pong`.
async fn next(ws: &mut Ws, pong: bool) -> String {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s")
            .expect("open")
            .unwrap();
        match frame {
            Message::Text(text) if text.as_str() == "2" => {
                if pong {
                    ws.send(Message::text("3")).await.unwrap();
                }
            }
            Message::Text(text) => return text.to_string(),
            Message::Close(_) => return "closed".into(),
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

async fn until_resting(n: usize, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while resting() != n {
        assert!(tokio::time::Instant::now() < deadline, "{what}: {} asleep, not {n}", resting());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `n` sessions sleep, answering `ws`'s pings meanwhile, as a client does.
async fn until_resting_reading(ws: &mut Ws, n: usize, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while resting() != n {
        assert!(tokio::time::Instant::now() < deadline, "{what}: {} asleep, not {n}", resting());
        let look = tokio::time::Instant::now() + Duration::from_millis(10);
        match tokio::time::timeout_at(look, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) if text.as_str() == "2" => {
                ws.send(Message::text("3")).await.unwrap();
            }
            Ok(other) => panic!("{what}: expected pings, got {other:?}"),
            Err(_) => {}
        }
    }
}

#[tokio::test]
async fn quiet_socket_io_sessions_sleep_and_wake_for_what_concerns_them() {
    let (addr, server) = start().await;
    let mut a = connect(addr).await;
    until_resting_reading(&mut a, 1, "the quiet session sleeps").await;

    // A packet wakes it, and is answered.
    a.send(Message::text(r#"42["echo","hi"]"#)).await.unwrap();
    assert_eq!(next(&mut a, true).await, r#"42["echo","hi"]"#);
    until_resting_reading(&mut a, 1, "asleep again").await;

    // An emit wakes it.
    server.emit("news", &1).unwrap();
    assert_eq!(next(&mut a, true).await, r#"42["news",1]"#);
    until_resting_reading(&mut a, 1, "asleep after the emit").await;

    // Pings every 300 ms, each answered: the session stays, and sleeps between them (the
    // pong is not a message), from its pong on: it waits awake for the pong (one wake-up
    // per ping), and does not stay awake after it. Past its ping timeout, still answered.
    let mut slept_after_pong = 0;
    let mut ponged = None;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(3500);
    while tokio::time::Instant::now() < deadline {
        // Read for 10 ms at a time, and look in between.
        let look = (tokio::time::Instant::now() + Duration::from_millis(10)).min(deadline);
        match tokio::time::timeout_at(look, a.next()).await {
            Ok(Some(Ok(Message::Text(text)))) if text.as_str() == "2" => {
                a.send(Message::text("3")).await.unwrap();
                ponged = Some(tokio::time::Instant::now());
            }
            Ok(other) => panic!("expected pings, got {other:?}"),
            Err(_) => {}
        }
        if resting() == 1
            && let Some(at) = ponged.take()
            && at.elapsed() < Duration::from_millis(150)
        {
            slept_after_pong += 1;
        }
    }
    assert!(
        slept_after_pong >= 5,
        "asleep within 150 ms of its pong, {slept_after_pong} of ~11 pings"
    );
    a.send(Message::text(r#"42["echo","still here"]"#)).await.unwrap();
    assert_eq!(next(&mut a, true).await, r#"42["echo","still here"]"#);

    // The client's close wakes a sleeping session, which ends.
    until_resting_reading(&mut a, 1, "a asleep").await;
    a.close(None).await.unwrap();
    until_resting(0, "nobody asleep").await;
    until_no_connection(&server).await;

    // A client that answers no ping is dropped at the ping timeout (awake meanwhile: a session
    // does not sleep while its pong is due).
    let mut b = connect(addr).await;
    let dropped = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(Message::Text(_))) = b.next().await {}
    })
    .await;
    assert!(dropped.is_ok(), "the silent client is dropped after its ping timeout");
    until_resting(0, "b gone").await;
    until_no_connection(&server).await;
}

async fn until_no_connection(server: &Server) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.connection_count() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "every session ended");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
