//! The server that the official Socket.IO protocol test suite
//! (`socketio/socket.io-protocol`, directory `test-suite/`) expects on port 3000, written
//! with wsgate: namespaces `/` and `/custom`, an `auth` event on connect, `message` echoed as
//! `message-back`, and `message-with-ack` answered through the ack, with the same arguments
//! and binary attachments.
//!
//! `cargo run -p wsgate-socketio --example protocol_suite`, then `npm ci && npm test` in a
//! checkout of the suite. The suite's timings (ping every 300 ms, 200 ms to answer, 1 s to
//! connect) are set here.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use wsgate::{
    Ack, App, Args, Binary, ConnectMiddleware, Connection, Handshake, Refusal, WsResponse, gateway,
};
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

/// One argument as it came: JSON, or a binary attachment.
#[derive(Serialize)]
#[serde(untagged)]
enum Arg {
    Json(Value),
    Binary(Bytes),
}

/// The arguments as they came, whatever their kind: each placeholder read as JSON
/// (`Args<Vec<Value>>`) is given its attachment back, which goes out as an attachment again.
fn same(args: Vec<Value>, Binary(binary): Binary) -> Args<Vec<Arg>> {
    let arg = |value: Value| {
        let num = value.get("_placeholder").and(value.get("num")).and_then(Value::as_u64);
        match num.and_then(|n| binary.get(usize::try_from(n).ok()?)) {
            Some(bytes) => Arg::Binary(bytes.clone()),
            None => Arg::Json(value),
        }
    };
    Args(args.into_iter().map(arg).collect())
}

struct Main;

#[gateway]
impl Main {
    #[subscribe_message("message")]
    async fn message(
        &self,
        Args(args): Args<Vec<Value>>,
        binary: Binary,
    ) -> WsResponse<Args<Vec<Arg>>> {
        WsResponse::new("message-back", same(args, binary))
    }

    #[subscribe_message("message-with-ack")]
    async fn message_with_ack(
        &self,
        Args(args): Args<Vec<Value>>,
        binary: Binary,
    ) -> Ack<Args<Vec<Arg>>> {
        Ack(same(args, binary))
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
