//! One connection's task: frames in, dispatch, outbound queue out, close.

use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::Instrument;
use wsgate::adapter::{Accepted, Emission, Outbound, OutboundRx};
use wsgate::{App, CloseReason, Connection};

use crate::WsConfig;
use crate::codec::{self, Decoded, JsonFrames};
use crate::parts::{InFlight, WRITE_BUFFER, Work, deadline, write_batch};

type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// What a connection is opened from: its accepted handshake and the upgrade to come.
pub(crate) struct Opening {
    pub(crate) accepted: Accepted,
    pub(crate) on_upgrade: OnUpgrade,
}

/// A connection's task. What opening it takes is boxed and gone once it is open: the
/// arguments of an async fn keep their room in its future for as long as it runs, and every
/// idle connection would hold them.
pub(crate) async fn run(app: App, opening: Box<Opening>, config: Arc<WsConfig>) {
    let Some((mut ws, conn, mut rx)) = Box::pin(open(opening, &config)).await else {
        return;
    };
    let span = tracing::debug_span!("ws", conn = %conn.id(), ns = %conn.namespace());
    let end = drive(&app, &conn, &mut ws, &mut rx, &config).instrument(span.clone()).await;
    // The close handshake comes before the connection is let go: whoever waits for it to go
    // (`Server::close_all` at shutdown) knows its close frame was written.
    // Boxed: closing is rare, and its state would otherwise enlarge every connection's task.
    Box::pin(finish(ws, end, config.close_timeout).instrument(span)).await;
    app.disconnect(&conn).await;
    drop(rx);
}

/// Waits for the upgrade, then registers the connection.
async fn open(
    opening: Box<Opening>,
    config: &WsConfig,
) -> Option<(Socket, Connection, OutboundRx)> {
    let Opening { accepted, on_upgrade } = *opening;
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            tracing::debug!(error = %e, "websocket upgrade failed");
            return None;
        }
    };
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(config.read_buffer_size)
        // Frames fed in one batch are written together at its flush (or when this much is
        // waiting): one system call for a pipelined batch of answers, not one per frame.
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(Some(config.max_message_size))
        .max_frame_size(Some(config.max_message_size));
    let ws =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(ws_config))
            .await;
    let (conn, rx) = accepted.open().await;
    Some((ws, conn, rx))
}

async fn drive(
    app: &App,
    conn: &Connection,
    ws: &mut Socket,
    rx: &mut OutboundRx,
    config: &WsConfig,
) -> SessionEnd {
    let mut in_flight = InFlight::new();
    // Made once: re-creating it every turn would register and drop a waiter per message.
    let closed = conn.closed();
    tokio::pin!(closed);
    // Set when the server closes the connection while messages are being handled: no more
    // are read, those finish and are answered, then the connection closes.
    let mut draining = None::<CloseReason>;
    // Boxed and made only then: an open connection's task stays small.
    let mut drain_deadline = None::<std::pin::Pin<Box<tokio::time::Sleep>>>;
    // When the client was last heard from, as of the last ping: frames only set `heard`, so
    // that a message does not cost a clock read (the idle check is made at each ping anyway).
    let mut last_seen = Instant::now();
    let mut heard = false;
    let heartbeat = tokio::time::sleep(config.ping_interval);
    tokio::pin!(heartbeat);
    loop {
        let busy = in_flight.len();
        tokio::select! {
            biased;
            reason = &mut closed, if draining.is_none() => {
                // A client that does not read would not take the answers either.
                if busy == 0 || !reason.drains() {
                    return Box::pin(close_after_queued(ws, conn, rx, reason, config)).await;
                }
                tracing::debug!(busy, ?reason, "closing once the messages in flight are answered");
                draining = Some(reason);
                drain_deadline = Some(Box::pin(tokio::time::sleep(app.config().drain_timeout)));
            }
            () = deadline(&mut drain_deadline), if draining.is_some() => {
                tracing::debug!(busy, "messages still in flight at the end of the drain timeout");
                return SessionEnd::Close(draining.unwrap_or(CloseReason::GoingAway));
            }
            () = &mut heartbeat => {
                let now = Instant::now();
                if std::mem::take(&mut heard) {
                    last_seen = now;
                }
                // A connection whose handlers are still running is not idle.
                if busy == 0 && now.duration_since(last_seen) >= config.idle_timeout {
                    return SessionEnd::Close(CloseReason::IdleTimeout);
                }
                if ws.send(Message::Ping(Default::default())).await.is_err() {
                    return SessionEnd::Broken;
                }
                heartbeat.as_mut().reset(now + config.ping_interval);
            }
            () = in_flight.next_done(), if busy > 0 => {
                if let Some(reason) = draining.filter(|_| in_flight.is_empty()) {
                    return Box::pin(close_after_queued(ws, conn, rx, reason, config)).await;
                }
            }
            // Reading comes before writing (below); at most `max_in_flight` messages are read
            // ahead of their answers, so writes are never starved.
            frame = ws.next(), if busy < config.max_in_flight && draining.is_none() => {
                heard = true;
                let mut frame = frame;
                // The frames already received are all handled before anything else is polled
                // again: one turn of this loop per batch, not per frame.
                loop {
                    match work(app, conn, frame) {
                        Ok(Some(work)) => in_flight.start(work).await,
                        Ok(None) => {}
                        Err(end) => return end,
                    }
                    if in_flight.len() >= config.max_in_flight {
                        break;
                    }
                    match std::future::poll_fn(|cx| Poll::Ready(ws.poll_next_unpin(cx))).await {
                        Poll::Ready(next) => frame = next,
                        Poll::Pending => break,
                    }
                }
            }
            // Last: frames already received are read and handled first, so that the answers to
            // a pipelined batch leave in one write instead of one system call each.
            // Boxed, as closing above: a write's state is large, and an idle connection's task
            // would otherwise hold room for it (one allocation per batch, not per item).
            item = rx.recv() => {
                if let Err(end) = Box::pin(write(ws, conn, item, rx, config)).await {
                    return end;
                }
            }
        }
    }
}

/// The work of one frame read from the client: a message's dispatch, or its refusal; none for
/// control frames. A close or a failure ends the session. Not async: the frame, large, is gone
/// before anything waits, and takes no room in the connection's task.
fn work<'a>(
    app: &'a App,
    conn: &'a Connection,
    frame: Option<Result<Message, WsError>>,
) -> Result<Option<Work<'a>>, SessionEnd> {
    let decoded = match frame {
        Some(Ok(Message::Text(text))) => codec::decode(&text),
        Some(Ok(Message::Binary(_))) => {
            Decoded::Invalid { message: BINARY_REFUSED.to_owned(), ack: None }
        }
        // Pings are answered by tungstenite itself.
        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => return Ok(None),
        Some(Ok(Message::Close(_))) | None => return Err(SessionEnd::ClientClosed),
        Some(Err(WsError::Capacity(e))) => {
            tracing::debug!(error = %e, "message over the size limit");
            return Err(SessionEnd::Close(CloseReason::TooBig));
        }
        Some(Err(e)) => {
            tracing::debug!(error = %e, "websocket read failed");
            return Err(SessionEnd::Broken);
        }
    };
    Ok(Some(match decoded {
        Decoded::Message(inbound) => Box::pin(app.dispatch(conn, inbound)),
        Decoded::Invalid { message, ack } => {
            Box::pin(async move { app.reject(conn, &message, ack).await })
        }
    }))
}

const BINARY_REFUSED: &str = "Binary frames are not supported: send JSON text.";

/// Writes what is queued (answers to messages already handled), then ends with `reason`.
async fn close_after_queued(
    ws: &mut Socket,
    conn: &Connection,
    rx: &mut OutboundRx,
    reason: CloseReason,
    config: &WsConfig,
) -> SessionEnd {
    if reason.drains() {
        while let Some(item) = rx.try_recv() {
            if let Err(end) = write(ws, conn, item, rx, config).await {
                return end;
            }
        }
    }
    SessionEnd::Close(reason)
}

/// Writes `first` and whatever else is queued ([`write_batch`]). A client that takes nothing
/// for the idle timeout is gone, and so is one whose queue overflows meanwhile (closed as too
/// slow): a stalled write does not hold the connection for as long as TCP would.
async fn write(
    ws: &mut Socket,
    conn: &Connection,
    first: Outbound,
    rx: &mut OutboundRx,
    config: &WsConfig,
) -> Result<(), SessionEnd> {
    let writing = write_batch(ws, first, rx, Emission::encoded::<JsonFrames>, codec::encode_direct);
    tokio::pin!(writing);
    // Nearly always done at once; only a write that has to wait gets a timer (boxed, as its
    // state would otherwise enlarge every connection's task).
    let written = match std::future::poll_fn(|cx| Poll::Ready(writing.as_mut().poll(cx))).await {
        Poll::Ready(written) => written,
        Poll::Pending => Box::pin(within_stall(writing, conn, config.idle_timeout)).await?,
    };
    match written {
        Ok(None) => Ok(()),
        Ok(Some(reason)) => Err(SessionEnd::Close(reason)),
        Err(_) => Err(SessionEnd::Broken),
    }
}

/// Finishes a write that had to wait, unless the client takes nothing for `stall` or its
/// connection is closed as too slow meanwhile.
async fn within_stall<F: Future>(
    mut writing: std::pin::Pin<&mut F>,
    conn: &Connection,
    stall: Duration,
) -> Result<F::Output, SessionEnd> {
    let stalled = tokio::time::sleep(stall);
    tokio::pin!(stalled);
    let closed = conn.closed();
    tokio::pin!(closed);
    let mut watch_close = true;
    loop {
        tokio::select! {
            written = &mut writing => return Ok(written),
            () = &mut stalled => {
                tracing::debug!(?stall, "the client takes nothing: dropping it");
                return Err(SessionEnd::Broken);
            }
            reason = &mut closed, if watch_close => {
                if !reason.drains() {
                    return Err(SessionEnd::Close(reason));
                }
                // Any other close is handled once this write is done.
                watch_close = false;
            }
        }
    }
}

/// How a server's WebSocket session ended, for [`finish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// The client sent a close frame or went away.
    ClientClosed,
    /// The socket failed; nothing more can be written.
    Broken,
    /// The server closes the connection for this reason.
    Close(CloseReason),
}

/// Ends a server's side of a WebSocket conversation politely, within `close_timeout`: the
/// close frame for [`SessionEnd::Close`] (after an oversized message, the rest of it read and
/// discarded, so that the close frame is not lost to a reset), then the client's; for an
/// adapter that runs its own session over [`switch_protocols`](crate::switch_protocols).
pub async fn finish<S>(mut ws: WebSocketStream<S>, end: SessionEnd, close_timeout: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let reason = match end {
        SessionEnd::Broken => return,
        SessionEnd::ClientClosed => {
            // Reading on flushes tungstenite's close reply and ends at the client's EOF.
            let _ = tokio::time::timeout(close_timeout, ws.next()).await;
            return;
        }
        SessionEnd::Close(reason) => reason,
    };
    tracing::debug!(code = reason.code(), reason = reason.text(), "closing");
    let frame = CloseFrame { code: reason.code().into(), reason: reason.text().into() };
    let closing = async {
        if ws.close(Some(frame)).await.is_err() {
            return;
        }
        if reason == CloseReason::TooBig {
            // The rest of the oversized message is still arriving; it is read and discarded,
            // because closing with unread data would reset the connection and the client
            // could lose the close frame.
            // On the heap: a buffer held across an await would enlarge every connection's task.
            let mut sink = vec![0u8; 4096];
            while matches!(ws.get_mut().read(&mut sink).await, Ok(n) if n > 0) {}
        } else {
            while let Some(Ok(_)) = ws.next().await {}
        }
    };
    let _ = tokio::time::timeout(close_timeout, closing).await;
}
