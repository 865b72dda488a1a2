//! The server that the official Socket.IO protocol test suite
//! (`socketio/socket.io-protocol`, directory `test-suite/`) expects on port 3000, written
//! with wsgate: namespaces `/` and `/custom`, an `auth` event on connect, `message` echoed as
//! `message-back`, and `message-with-ack` answered through the ack.
//!
//! `cargo run -p wsgate-socketio --example protocol_suite`, then `npm ci && npm test` in a
//! checkout of the suite. The suite's timings (ping every 300 ms, 200 ms to answer, 1 s to
//! connect) are set here.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use serde_json::Value;
use wsgate::{App, ConnectMiddleware, Connection, Data, Handshake, Refusal, WsResponse, gateway};
use wsgate_socketio::SocketIoAdapter;

/// The Socket.IO `auth` payload, kept on the connection.
#[derive(Clone, Debug)]
struct Auth(Value);

/// Keeps the handshake's auth payload; refuses nobody.
struct KeepAuth;

impl ConnectMiddleware for KeepAuth {
    async fn handle(&self, hs: &mut Handshake) -> Result<(), Refusal> {
        let auth = hs.auth.clone().unwrap_or(Value::Object(Default::default()));
        hs.extensions.insert(Auth(auth));
        Ok(())
    }
}

fn emit_auth(conn: &Connection) {
    if let Some(Auth(auth)) = conn.extension::<Auth>() {
        let _ = conn.emit("auth", auth);
    }
}

struct Main;

#[gateway]
impl Main {
    #[subscribe_message("message")]
    async fn message(&self, Data(data): Data<Value>) -> WsResponse<Value> {
        WsResponse::new("message-back", data)
    }

    #[subscribe_message("message-with-ack")]
    async fn message_with_ack(&self, Data(data): Data<Value>) -> Value {
        data
    }

    #[on_connect]
    async fn connected(&self, conn: &Connection) {
        emit_auth(conn);
    }
}

struct Custom;

#[gateway(namespace = "/custom")]
impl Custom {
    #[on_connect]
    async fn connected(&self, conn: &Connection) {
        emit_auth(conn);
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(3000);
    let app = App::builder().middleware(KeepAuth).gateway(Main).gateway(Custom).build().await?;
    let adapter = SocketIoAdapter::new()
        .ping_interval(Duration::from_millis(300))
        .ping_timeout(Duration::from_millis(200))
        .connect_timeout(Duration::from_secs(1))
        .max_payload(1_000_000);
    let router = app.mount(Router::new(), adapter);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>()).await?;
    Ok(())
}
