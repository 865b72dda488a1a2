//! What the plain WebSocket test binaries share: a server's fixture, a client, and sending
//! and reading JSON frames.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use wsgate::{JwtKeys, Server};

pub(crate) type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A server on a loopback port: its address, handle, JWT keys, and the disconnects its
/// gateway counted.
pub(crate) struct Fixture {
    pub(crate) addr: SocketAddr,
    pub(crate) server: Server,
    pub(crate) keys: JwtKeys,
    pub(crate) disconnects: Arc<AtomicUsize>,
}

impl Fixture {
    pub(crate) fn token(&self, id: u64) -> String {
        self.keys.sign(id.to_string(), Duration::from_secs(60)).unwrap()
    }

    pub(crate) fn url(&self, path: &str, id: u64) -> String {
        format!("ws://{}{path}?token={}", self.addr, self.token(id))
    }

    /// User `id`'s connection on `path`.
    pub(crate) async fn connect(&self, path: &str, id: u64) -> Client {
        connect_async(self.url(path, id)).await.unwrap().0
    }
}

pub(crate) async fn send(ws: &mut Client, value: Value) {
    ws.send(Message::text(value.to_string())).await.unwrap();
}

/// The next text frame as JSON, within 5 s; pings on the way are answered (tungstenite does,
/// as it reads).
pub(crate) async fn recv(ws: &mut Client) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a reply within 5 s")
            .expect("the connection is open")
            .unwrap();
        match msg {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Reads until the server's close frame (each frame within `within`): the text frames before
/// it, as JSON, and the close frame.
pub(crate) async fn until_close(ws: &mut Client, within: Duration) -> (Vec<Value>, CloseFrame) {
    let mut texts = Vec::new();
    loop {
        match tokio::time::timeout(within, ws.next()).await.unwrap() {
            Some(Ok(Message::Close(frame))) => {
                return (texts, frame.expect("a close frame with a code"));
            }
            Some(Ok(Message::Text(text))) => texts.push(serde_json::from_str(&text).unwrap()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected frames then a close, got {other:?}"),
        }
    }
}
