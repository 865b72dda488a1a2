//! One Socket.IO connection: the handshake middleware, the connect handler, messages, and
//! the task that writes the connection's outbound queue to the socket.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use serde_json::Value;
use socketioxide::extract::{AckSender, Data, SocketRef};
use socketioxide::socket::DisconnectReason;
use tokio::sync::watch;
use wsgate::{
    Accepted, Answer, App, CloseReason, Connection, Direct, Handshake, Namespace, Outbound,
    OutboundRx,
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

/// What the middleware leaves on the socket for the connect handler.
#[derive(Clone)]
struct Pending {
    accepted: Accepted,
    /// Publishes the connection to the message handler once it is open.
    opened: watch::Sender<Option<Connection>>,
}

/// The connect middleware: runs wsgate's handshake and registers the message handler.
///
/// The handler is registered here, before socketioxide acknowledges the connect: its connect
/// handler runs as a separate task after the acknowledgement, and a client that emits on
/// `connect` (as the chapter's client does) would otherwise race it and lose events. Messages
/// that arrive before the connection is open wait for it.
pub(crate) fn middleware(
    app: App,
    namespace: Namespace,
    max_payload: u64,
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
            let accepted = match app.handshake(handshake).await {
                Ok(accepted) => accepted,
                Err(refusal) => {
                    tracing::debug!(status = %refusal.status, reason = %refusal.message, "socket.io handshake refused");
                    return Err(Refused(refusal.message));
                }
            };
            let (opened, connection) = watch::channel(None::<Connection>);
            socket.on_fallback(move |socket: SocketRef, RawMessage(inbound, size): RawMessage, ack: AckSender| {
                let (app, mut connection) = (app.clone(), connection.clone());
                async move {
                    let conn = match connection.wait_for(Option::is_some).await {
                        Ok(conn) => conn.clone(),
                        // The connection never opened: nobody to answer.
                        Err(_) => return,
                    };
                    let Some(conn) = conn else { return };
                    // Polling enforces `max_payload` itself; socketioxide's websocket transport
                    // does not, so a message over it ends the connection here, as over polling.
                    if size as u64 > max_payload {
                        tracing::debug!(conn = %conn.id(), size, max_payload, "socket.io message over max_payload");
                        conn.close(CloseReason::TooBig);
                        return;
                    }
                    // Held until the answer is sent: a closing connection waits for it.
                    let _handling = conn.handling();
                    // Written from this task, as socketioxide's own handlers do: waking the
                    // connection's writer for every reply would double the wake-ups.
                    let sent = match app.dispatch_answer(&conn, inbound).await {
                        None => Ok(()),
                        // The client may have gone; its ack has nowhere to go then.
                        Some(Answer::Ack { data, .. }) => {
                            let _ = ack.send(&*data);
                            Ok(())
                        }
                        // Behind what the handler queued (a `conn.emit`), if the writer has
                        // not written it yet: the client sees them in the order they were made.
                        Some(answer) if !conn.all_written() => {
                            // A closed connection has nobody to answer.
                            let _ = conn.send(answer.into()).await;
                            Ok(())
                        }
                        Some(Answer::Event(emission)) => {
                            socket.emit(emission.event().as_str(), emission.data())
                        }
                        Some(Answer::Exception { data, .. }) => socket.emit("exception", &*data),
                    };
                    if let Err(e) = sent {
                        tracing::debug!(conn = %conn.id(), error = %e, "socket.io emit failed, disconnecting");
                        conn.close(CloseReason::SlowConsumer);
                    }
                }
            });
            socket.extensions.insert(Pending { accepted, opened });
            Ok(())
        })
    }
}

/// The connect handler: opens the connection (running the `on_connect` hooks), lets waiting
/// messages through, and writes the outbound queue to the socket until either side closes.
pub(crate) fn on_connect(
    app: App,
) -> impl FnOnce(SocketRef) -> BoxFuture<()> + Clone + Send + Sync + 'static {
    move |socket: SocketRef| Box::pin(connected(app, socket))
}

async fn connected(app: App, socket: SocketRef) {
    let Some(Pending { accepted, opened }) = socket.extensions.remove::<Pending>() else {
        // Only the middleware above lets sockets through, and it always leaves this.
        tracing::error!("socket.io connection without a handshake");
        let _ = socket.disconnect();
        return;
    };
    let (conn, rx) = accepted.open().await;
    tracing::debug!(conn = %conn.id(), sid = %socket.id, ns = %conn.namespace(), "socket.io connected");
    socket.on_disconnect({
        let conn = conn.clone();
        move |reason: DisconnectReason| async move {
            tracing::debug!(conn = %conn.id(), ?reason, "socket.io disconnected");
            conn.close(CloseReason::Normal);
        }
    });
    if !socket.connected() {
        // It went away before the disconnect handler was in place.
        conn.close(CloseReason::Normal);
    }
    opened.send_replace(Some(conn.clone()));
    write(&socket, &conn, rx, app.config().drain_timeout).await;
    app.disconnect(&conn).await;
    // Ends the namespace connection if the server closed it; harmless if the client did.
    let _ = socket.disconnect();
}

/// Writes the connection's outbound queue to the socket until either side closes. When the
/// server closes it, the messages being handled finish first (at most `drain_timeout`) and
/// their answers are written.
async fn write(socket: &SocketRef, conn: &Connection, mut rx: OutboundRx, drain_timeout: Duration) {
    let reason = loop {
        let item = tokio::select! {
            biased;
            reason = conn.closed() => break reason,
            item = rx.recv() => item,
        };
        if !emit(socket, conn, &rx, item) {
            return;
        }
    };
    if !reason.drains() || !socket.connected() {
        return;
    }
    let drained = tokio::time::timeout(drain_timeout, async {
        loop {
            tokio::select! {
                biased;
                () = conn.settled() => return true,
                item = rx.recv() => if !emit(socket, conn, &rx, item) { return false },
            }
        }
    })
    .await;
    if drained == Ok(true) {
        while let Some(item) = rx.try_recv() {
            if !emit(socket, conn, &rx, item) {
                return;
            }
        }
    } else {
        tracing::debug!(conn = %conn.id(), in_flight = conn.in_flight(), "closing with messages in flight");
    }
}

/// Writes one item (and reports it written); `false` when the connection should end.
fn emit(socket: &SocketRef, conn: &Connection, rx: &OutboundRx, item: Outbound) -> bool {
    let written = emit_item(socket, conn, item);
    rx.written(1);
    written
}

fn emit_item(socket: &SocketRef, conn: &Connection, item: Outbound) -> bool {
    let sent = match item {
        Outbound::Event(emission) => socket.emit(emission.event().as_str(), emission.data()),
        Outbound::Direct(direct) => match *direct {
            Direct::Exception { data, .. } => socket.emit("exception", &*data),
            // Socket.IO acks go straight to the message's callback (`dispatch_answer`).
            Direct::Ack { .. } => Ok(()),
        },
        Outbound::Close(_) => return false,
    };
    if let Err(e) = sent {
        tracing::debug!(conn = %conn.id(), error = %e, "socket.io emit failed, disconnecting");
        return false;
    }
    true
}
