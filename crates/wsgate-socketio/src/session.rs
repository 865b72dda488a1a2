//! One Socket.IO connection: the handshake middleware, the connect handler, messages, and
//! the task that writes the connection's outbound queue to the socket.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use serde_json::Value;
use socketioxide::extract::{AckSender, Data, SocketRef};
use socketioxide::socket::DisconnectReason;
use wsgate::{
    Accepted, App, CloseReason, Connection, Direct, Handshake, Namespace, Outbound, OutboundRx,
};

use crate::TRANSPORT;
use crate::message::RawMessage;

type BoxFuture<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send>>;

/// A refusal as Socket.IO shows it: `connect_error` with this message.
#[derive(Debug)]
pub(crate) struct Refused(String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The connect middleware: runs wsgate's handshake and keeps the accepted connection on the
/// socket until the connect handler opens it.
pub(crate) fn middleware(
    app: App,
    namespace: Namespace,
) -> impl FnOnce(SocketRef, Data<Value>) -> BoxFuture<Result<(), Refused>> + Clone + Send + Sync + 'static
{
    move |socket: SocketRef, Data(auth): Data<Value>| {
        Box::pin(async move {
            let parts = socket.req_parts();
            let mut handshake = Handshake::new(namespace, TRANSPORT);
            handshake.headers = parts.headers.clone();
            handshake.query = parts.uri.query().map(str::to_owned);
            handshake.peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
            handshake.auth = Some(auth);
            match app.handshake(handshake).await {
                Ok(accepted) => {
                    socket.extensions.insert(accepted);
                    Ok(())
                }
                Err(refusal) => {
                    tracing::debug!(status = %refusal.status, reason = %refusal.message, "socket.io handshake refused");
                    Err(Refused(refusal.message))
                }
            }
        })
    }
}

/// The connect handler: opens the connection, routes its events, and starts its writer.
pub(crate) fn on_connect(
    app: App,
) -> impl FnOnce(SocketRef) -> BoxFuture<()> + Clone + Send + Sync + 'static {
    move |socket: SocketRef| Box::pin(connected(app, socket))
}

async fn connected(app: App, socket: SocketRef) {
    let Some(accepted) = socket.extensions.remove::<Accepted>() else {
        // Only the middleware above lets sockets through, and it always leaves this.
        tracing::error!("socket.io connection without a handshake");
        let _ = socket.disconnect();
        return;
    };
    let (conn, rx) = accepted.open().await;
    tracing::debug!(conn = %conn.id(), sid = %socket.id, ns = %conn.namespace(), "socket.io connected");

    socket.on_fallback({
        let (app, conn) = (app.clone(), conn.clone());
        move |RawMessage(inbound): RawMessage, ack: AckSender| async move {
            // `Some` only when the client asked for an ack.
            if let Some(data) = app.dispatch_for_ack(&conn, inbound).await {
                // The client may have gone; its ack has nowhere to go then.
                let _ = ack.send(&*data);
            }
        }
    });
    socket.on_disconnect({
        let (app, conn) = (app.clone(), conn.clone());
        move |reason: DisconnectReason| async move {
            tracing::debug!(conn = %conn.id(), ?reason, "socket.io disconnected");
            conn.close(CloseReason::Normal);
            app.disconnect(&conn).await;
        }
    });
    tokio::spawn(write(socket, conn, rx));
}

/// Writes the connection's outbound queue to the socket until either side closes.
async fn write(socket: SocketRef, conn: Connection, mut rx: OutboundRx) {
    loop {
        let item = tokio::select! {
            biased;
            _ = conn.closed() => break,
            item = rx.recv() => item,
        };
        let sent = match item {
            Outbound::Event(emission) => socket.emit(emission.event().as_str(), emission.data()),
            Outbound::Direct(direct) => match *direct {
                Direct::Exception { data, .. } => socket.emit("exception", &*data),
                // Socket.IO acks go straight to the message's callback (`dispatch_for_ack`).
                Direct::Ack { .. } => Ok(()),
            },
            Outbound::Close(_) => break,
        };
        if let Err(e) = sent {
            tracing::debug!(conn = %conn.id(), error = %e, "socket.io emit failed, disconnecting");
            break;
        }
    }
    // Ends the namespace connection; its disconnect handler unregisters it.
    let _ = socket.disconnect();
}
