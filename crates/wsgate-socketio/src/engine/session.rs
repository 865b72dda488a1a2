//! One Engine.IO session: its namespaces, their packets, the heartbeat, over whichever
//! transport carries it (a websocket, or long-polling until the client upgrades).
//!
//! One task per session, as the plain WebSocket adapter's: frames are read ahead of writing,
//! answers go through each connection's outbound queue and leave in batches, and an idle
//! session holds little more than its transport. Several namespaces may share it
//! (`io("/")` and `io("/chat")` of one client): each is a wsgate connection with its own queue.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tracing::Instrument;
use wsgate::adapter::{Outbound, OutboundRx};
use wsgate::{AckId, App, CloseReason, Connection, Handshake, Namespace};
use wsgate_ws::parts::{InFlight, WRITE_BATCH, Work, deadline, write_batch};

pub(crate) use wsgate_ws::SessionEnd as End;

use super::polling::{self, Control, Polling};
use super::{EngineConfig, Origin, Registered};
use crate::TRANSPORT;
use crate::message::decode;
use crate::packet::{self, EventFrames, Packet};

/// How long a closing websocket waits for the client's close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// What carries a session's packets.
pub(crate) enum Transport {
    WebSocket(Box<Socket>),
    Polling(Box<Polling>),
}

/// A frame from the client, whichever the transport.
enum Incoming {
    Text(Utf8Bytes),
    Binary(Bytes),
    /// A control frame: nothing to do.
    Nothing,
    /// Over long-polling: a poll, or the upgrade completed.
    Control(Control),
}

impl Transport {
    /// What comes next from the client: a frame (only when `read`), or over long-polling
    /// a poll or a step of the upgrade.
    async fn next(&mut self, read: bool) -> Result<Incoming, End> {
        match self {
            Self::WebSocket(_) if !read => std::future::pending().await,
            Self::WebSocket(ws) => match ws.next().await {
                Some(Ok(Message::Text(text))) => Ok(Incoming::Text(text)),
                Some(Ok(Message::Binary(data))) => Ok(Incoming::Binary(data)),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                    Ok(Incoming::Nothing)
                }
                Some(Ok(Message::Close(_))) | None => Err(End::ClientClosed),
                Some(Err(WsError::Capacity(e))) => {
                    tracing::debug!(error = %e, "frame over max_payload");
                    Err(End::Close(CloseReason::TooBig))
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "websocket read failed");
                    Err(End::Broken)
                }
            },
            Self::Polling(polling) => match polling.next_event(read).await {
                polling::Event::Packet(packet) => match packet? {
                    polling::Packet::Text(text) => Ok(Incoming::Text(text)),
                    polling::Packet::Binary(data) => Ok(Incoming::Binary(data)),
                },
                polling::Event::Control(control) => Ok(Incoming::Control(control?)),
            },
        }
    }

    /// Sends one packet of the engine's own (a ping, a namespace's answer); over long-polling
    /// it waits for the next poll.
    async fn send(&mut self, text: String) -> Result<(), End> {
        match self {
            Self::WebSocket(ws) => ws.send(Message::text(text)).await.map_err(|_| End::Broken),
            Self::Polling(polling) => {
                polling.push(Bytes::from(text))?;
                polling.flush();
                Ok(())
            }
        }
    }

    /// Whether queued items can be written now: always over a websocket, while a poll waits
    /// over long-polling (otherwise they stay in their queues, which are bounded).
    fn writable(&self) -> bool {
        match self {
            Self::WebSocket(_) => true,
            Self::Polling(polling) => polling.is_polled(),
        }
    }
}

/// One namespace connected over the session.
struct Joined {
    conn: Connection,
    rx: OutboundRx,
    /// The namespace as the client wrote it, and the prefix its packets carry (`/chat,`).
    ns: Box<str>,
    prefix: Box<str>,
}

/// Resolves when the server closes a namespace connection, once the messages it is handling
/// are answered (at most the drain timeout). Kept beside [`Joined`], index for index, so that
/// it is polled while the queues are.
type Ending = Pin<Box<dyn Future<Output = CloseReason> + Send>>;

/// A binary event waiting for its attachments.
struct Assembling {
    ns: Box<str>,
    ack: Option<u64>,
    body: String,
    expected: usize,
    attachments: Vec<Bytes>,
    size: usize,
}

/// Runs a session until it ends, then ends its namespace connections. `registered` is the
/// long-polling session's entry in the engine's table, dropped when the session moves to a
/// websocket or ends.
pub(crate) async fn run(
    app: App,
    origin: Box<Origin>,
    transport: Transport,
    config: std::sync::Arc<EngineConfig>,
    registered: Option<Registered>,
    span: tracing::Span,
) {
    let mut session = Session {
        app: &app,
        origin,
        config: &config,
        transport,
        registered,
        joined: Vec::new(),
        endings: Vec::new(),
    };
    let end = session.drive().instrument(span.clone()).await;
    let Session { transport, joined, registered, .. } = session;
    drop(registered);
    match transport {
        // Boxed: closing is rare, and its state would otherwise enlarge every session's task.
        Transport::WebSocket(ws) => {
            Box::pin(wsgate_ws::finish(*ws, end, CLOSE_TIMEOUT).instrument(span)).await;
        }
        Transport::Polling(mut polling) => polling.end(end),
    }
    for joined in joined {
        app.disconnect(&joined.conn).await;
    }
}

/// The open packet: the session's id and settings.
pub(crate) fn open_packet(sid: &str, upgrades: &str, config: &EngineConfig) -> String {
    format!(
        r#"0{{"sid":"{sid}","upgrades":[{upgrades}],"pingInterval":{},"pingTimeout":{},"maxPayload":{}}}"#,
        config.ping_interval.as_millis(),
        config.ping_timeout.as_millis(),
        config.max_payload
    )
}

struct Session<'a> {
    app: &'a App,
    /// Boxed: kept for the handshakes to come, it need not take room in the task's future.
    origin: Box<Origin>,
    config: &'a EngineConfig,
    transport: Transport,
    registered: Option<Registered>,
    joined: Vec<Joined>,
    endings: Vec<Ending>,
}

impl<'a> Session<'a> {
    async fn drive(&mut self) -> End {
        let app = self.app;
        let config = self.config;
        let mut in_flight = InFlight::<'a>::new();
        // Boxed: rare, and large for a connection's task to hold room for.
        let mut assembling = None::<Box<Assembling>>;
        // Until a namespace is connected, and again whenever none is.
        let mut connect_deadline = Some(Box::pin(tokio::time::sleep(config.connect_timeout)));
        // The heartbeat: a ping every interval, and a pong due within the timeout.
        let mut ping_sent = None::<Instant>;
        let heartbeat = tokio::time::sleep(config.ping_interval);
        tokio::pin!(heartbeat);
        loop {
            let busy = in_flight.len();
            let writable = self.transport.writable();
            tokio::select! {
                biased;
                (index, reason) = ending(&mut self.endings) => {
                    if let Err(end) = Box::pin(self.end_namespace(index, reason)).await {
                        return end;
                    }
                    if self.joined.is_empty() {
                        connect_deadline = Some(Box::pin(tokio::time::sleep(config.connect_timeout)));
                    }
                }
                () = deadline(&mut connect_deadline) => {
                    tracing::debug!("no namespace connected in time");
                    return End::Close(CloseReason::IdleTimeout);
                }
                () = in_flight.next_done(), if busy > 0 => {}
                frame = self.transport.next(busy < config.max_in_flight) => {
                    let text = match frame {
                        Ok(Incoming::Text(text)) => text,
                        Ok(Incoming::Binary(data)) => {
                            let Some(mut event) = assembling.take() else {
                                tracing::debug!("binary frame without a binary event");
                                return End::Close(CloseReason::PolicyViolation);
                            };
                            event.size += data.len();
                            if event.size > config.max_payload {
                                return End::Close(CloseReason::TooBig);
                            }
                            event.attachments.push(data);
                            if event.attachments.len() < event.expected {
                                assembling = Some(event);
                                continue;
                            }
                            if let Some(work) = self.event(&event.ns, event.ack, &event.body, event.attachments) {
                                in_flight.start(work).await;
                            }
                            continue;
                        }
                        Ok(Incoming::Nothing) => continue,
                        Ok(Incoming::Control(control)) => {
                            if let Err(end) = Box::pin(self.on_control(control)).await {
                                return end;
                            }
                            continue;
                        }
                        Err(end) => return end,
                    };
                    if assembling.is_some() {
                        tracing::debug!("text frame while binary attachments were due");
                        return End::Close(CloseReason::PolicyViolation);
                    }
                    match text.as_bytes().first() {
                        Some(b'4') => {}
                        Some(b'3') => {
                            // The pong: the next ping is due one interval after the last.
                            if let Some(sent) = ping_sent.take() {
                                heartbeat.as_mut().reset(sent + config.ping_interval);
                            }
                            continue;
                        }
                        // A client's ping (`2probe`) is answered in kind.
                        Some(b'2') => {
                            let pong = format!("3{}", &text.as_str()[1..]);
                            if let Err(end) = self.transport.send(pong).await {
                                return end;
                            }
                            continue;
                        }
                        // The client ends the session: over a websocket, the server closes it.
                        Some(b'1') => {
                            return match self.transport {
                                Transport::WebSocket(_) => End::Close(CloseReason::Normal),
                                Transport::Polling(_) => End::ClientClosed,
                            };
                        }
                        // Noop, and an upgrade on a transport that is not being upgraded.
                        Some(b'5' | b'6') => continue,
                        _ => {
                            tracing::debug!("not an Engine.IO packet");
                            return End::Close(CloseReason::PolicyViolation);
                        }
                    }
                    let packet = match packet::parse(&text.as_str()[1..]) {
                        Ok(packet) => packet,
                        Err(error) => {
                            tracing::debug!(error, "unreadable Socket.IO packet");
                            return End::Close(CloseReason::PolicyViolation);
                        }
                    };
                    match packet {
                        Packet::Event { ns, ack, attachments: 0, body } => {
                            if let Some(work) = self.event(ns, ack, body, Vec::new()) {
                                in_flight.start(work).await;
                            }
                        }
                        Packet::Event { ns, ack, attachments, body } => {
                            assembling = Some(Box::new(Assembling {
                                ns: ns.into(),
                                ack,
                                body: body.to_owned(),
                                expected: attachments,
                                attachments: Vec::with_capacity(attachments),
                                size: text.as_str().len(),
                            }));
                        }
                        Packet::Connect { ns, auth } => {
                            // Boxed, as the other rare paths: their state would otherwise
                            // enlarge every connection's task.
                            if let Err(end) = Box::pin(self.connect(ns, auth)).await {
                                return end;
                            }
                            if !self.joined.is_empty() {
                                connect_deadline = None;
                            }
                        }
                        Packet::Disconnect { ns } => {
                            if let Some(index) = self.joined.iter().position(|j| *j.ns == *ns) {
                                let joined = self.joined.swap_remove(index);
                                drop(self.endings.swap_remove(index));
                                tracing::debug!(conn = %joined.conn.id(), "namespace left");
                                Box::pin(app.disconnect(&joined.conn)).await;
                                if self.joined.is_empty() {
                                    connect_deadline = Some(Box::pin(tokio::time::sleep(config.connect_timeout)));
                                }
                            }
                        }
                        // wsgate's server never asks for acks.
                        Packet::Ack { .. } => {}
                    }
                }
                // After the frames: a pong already received is read before the timeout is.
                () = &mut heartbeat => {
                    if ping_sent.is_some() {
                        // Not reading (every slot busy), the pong may be waiting unread.
                        if busy >= config.max_in_flight {
                            heartbeat.as_mut().reset(Instant::now() + config.ping_timeout);
                            continue;
                        }
                        tracing::debug!("no pong within the ping timeout");
                        return End::Close(CloseReason::IdleTimeout);
                    }
                    let now = Instant::now();
                    if let Err(end) = self.transport.send("2".to_owned()).await {
                        return end;
                    }
                    ping_sent = Some(now);
                    heartbeat.as_mut().reset(now + config.ping_timeout);
                }
                // Last: frames already received are handled first, so that the answers to a
                // pipelined batch leave in one write.
                (index, item) = next_outbound(&mut self.joined), if writable => {
                    // Boxed: a write's state is large, and an idle connection's task would
                    // otherwise hold room for it (one allocation per batch, not per item).
                    if let Err(end) = Box::pin(self.write(index, item)).await {
                        return end;
                    }
                }
            }
        }
    }

    /// What the polling side reported: a poll to answer, or the move to a websocket.
    async fn on_control(&mut self, control: Control) -> Result<(), End> {
        match control {
            Control::Polled => {
                self.fill_poll();
                Ok(())
            }
            Control::Upgraded(socket, waiting) => {
                tracing::debug!("upgraded to websocket");
                // From now on, requests with this session's id are refused.
                if let Some(registered) = &self.registered {
                    registered.upgraded();
                }
                self.transport = Transport::WebSocket(socket);
                let Transport::WebSocket(ws) = &mut self.transport else { return Ok(()) };
                for packet in waiting {
                    let text = Utf8Bytes::try_from(packet).map_err(|_| End::Broken)?;
                    ws.feed(Message::Text(text)).await.map_err(|_| End::Broken)?;
                }
                ws.flush().await.map_err(|_| End::Broken)
            }
        }
    }

    /// Over long-polling, with a poll waiting: everything queued goes in its answer, the
    /// engine's packets first (up to a batch per namespace).
    fn fill_poll(&mut self) {
        let Transport::Polling(polling) = &mut self.transport else { return };
        if !polling.is_polled() {
            return;
        }
        for joined in &mut self.joined {
            for _ in 0..WRITE_BATCH {
                let Some(item) = joined.rx.try_recv() else { break };
                match encode(item, &joined.prefix) {
                    Ok(packet) => {
                        if polling.push(packet).is_err() {
                            joined.conn.close(CloseReason::SlowConsumer);
                            break;
                        }
                    }
                    Err(reason) => {
                        joined.conn.close(reason);
                        break;
                    }
                }
            }
        }
        polling.flush();
    }

    /// Writes `first`, an item of namespace `index`, and whatever else is queued.
    async fn write(&mut self, index: usize, first: Outbound) -> Result<(), End> {
        match &mut self.transport {
            Transport::WebSocket(ws) => {
                write_ws(
                    ws,
                    &mut self.joined[index],
                    first,
                    self.config.ping_timeout,
                    &mut self.endings,
                )
                .await
            }
            Transport::Polling(polling) => {
                let joined = &self.joined[index];
                match encode(first, &joined.prefix) {
                    Ok(packet) => polling.push(packet)?,
                    Err(reason) => joined.conn.close(reason),
                }
                self.fill_poll();
                Ok(())
            }
        }
    }

    /// The work of one event: its dispatch, or its refusal when it cannot be read. `None`
    /// when its namespace is not connected (ignored, as Socket.IO servers do).
    fn event(
        &self,
        ns: &str,
        ack: Option<u64>,
        body: &str,
        binary: Vec<Bytes>,
    ) -> Option<Work<'a>> {
        let app = self.app;
        let Some(joined) = self.joined.iter().find(|j| *j.ns == *ns) else {
            tracing::debug!(ns, "event for a namespace not connected");
            return None;
        };
        let conn = joined.conn.clone();
        let ack = ack.map(AckId::Number);
        Some(match decode(body) {
            Ok(mut inbound) => {
                inbound.ack = ack;
                inbound.binary = binary;
                Box::pin(async move { app.dispatch(&conn, inbound).await })
            }
            Err(e) => {
                let message = e.to_string();
                Box::pin(async move { app.reject(&conn, &message, ack).await })
            }
        })
    }

    /// `0[/ns,][auth]`: runs the handshake and answers `40` or `44`.
    async fn connect(&mut self, ns: &str, auth: Option<&str>) -> Result<(), End> {
        let prefix = packet::prefix(ns);
        if self.joined.iter().any(|j| *j.ns == *ns) {
            tracing::debug!(ns, "namespace connected twice");
            return Ok(());
        }
        let auth = match auth.map(serde_json::from_str::<serde_json::Value>) {
            // As the reference server: no payload is an empty one.
            None => serde_json::Value::Object(serde_json::Map::new()),
            Some(Ok(auth @ serde_json::Value::Object(_))) => auth,
            Some(_) => {
                let refused = packet::refused(&prefix, "The auth payload must be a JSON object.");
                return self.transport.send(refused).await;
            }
        };
        let mut handshake = Handshake::new(Namespace::new(ns), TRANSPORT);
        handshake.headers = self.origin.headers.clone();
        handshake.query = self.origin.query.clone();
        handshake.peer = self.origin.peer;
        handshake.auth = Some(auth);
        let accepted = match self.app.handshake(handshake).await {
            Ok(accepted) => accepted,
            Err(refusal) => {
                tracing::debug!(status = %refusal.status, reason = %refusal.message, "socket.io handshake refused");
                return self.transport.send(packet::refused(&prefix, &refusal.message)).await;
            }
        };
        let (conn, rx) = accepted.open().await;
        tracing::debug!(conn = %conn.id(), ns = %conn.namespace(), "socket.io connected");
        let drain = self.app.config().drain_timeout;
        let ending = Box::pin({
            let conn = conn.clone();
            async move {
                let reason = conn.closed().await;
                if reason.drains() {
                    // Its answers are written meanwhile by the session.
                    let _ = tokio::time::timeout(drain, conn.settled()).await;
                }
                reason
            }
        });
        let sid = conn.id().to_string();
        self.joined.push(Joined { conn, rx, ns: ns.into(), prefix: prefix.clone().into() });
        self.endings.push(ending);
        self.transport.send(packet::connected(&prefix, &sid)).await
    }

    /// The server closed a namespace connection: what is queued is written, then `41`. A
    /// client too slow or sending too much loses the whole session.
    async fn end_namespace(&mut self, index: usize, reason: CloseReason) -> Result<(), End> {
        let mut joined = self.joined.swap_remove(index);
        drop(self.endings.swap_remove(index));
        tracing::debug!(conn = %joined.conn.id(), ?reason, "closing the namespace connection");
        let result = async {
            if matches!(reason, CloseReason::SlowConsumer | CloseReason::TooBig) {
                return Err(End::Close(reason));
            }
            while let Some(item) = joined.rx.try_recv() {
                match &mut self.transport {
                    Transport::WebSocket(ws) => {
                        write_ws(
                            ws,
                            &mut joined,
                            item,
                            self.config.ping_timeout,
                            &mut self.endings,
                        )
                        .await?;
                    }
                    Transport::Polling(polling) => {
                        // What was queued before the close still goes out: a close in the
                        // queue ends nothing more than this connection, already ending.
                        if let Ok(packet) = encode(item, &joined.prefix) {
                            polling.push(packet)?;
                        }
                    }
                }
            }
            self.transport.send(packet::disconnect(&joined.prefix)).await
        }
        .await;
        self.app.disconnect(&joined.conn).await;
        result
    }
}

/// An outbound item as the text of its packet for a namespace (`prefix`), or the reason of a
/// close the connection asked for.
fn encode(item: Outbound, prefix: &str) -> Result<Bytes, CloseReason> {
    match item {
        Outbound::Event(emission) => {
            Ok(packet::for_namespace(emission.encoded::<EventFrames>(), prefix))
        }
        Outbound::Direct(direct) => Ok(packet::encode_direct(&direct, prefix)),
        Outbound::Close(reason) => Err(reason),
    }
}

/// The first namespace connection the server closes, and why.
async fn ending(endings: &mut [Ending]) -> (usize, CloseReason) {
    std::future::poll_fn(|cx| {
        for (index, ending) in endings.iter_mut().enumerate() {
            if let Poll::Ready(reason) = ending.as_mut().poll(cx) {
                return Poll::Ready((index, reason));
            }
        }
        Poll::Pending
    })
    .await
}

/// The next item of any namespace's queue.
async fn next_outbound(joined: &mut [Joined]) -> (usize, Outbound) {
    match joined {
        [] => std::future::pending().await,
        [only] => (0, only.rx.recv().await),
        many => {
            let receiving: Vec<_> = many
                .iter_mut()
                .enumerate()
                .map(|(i, j)| Box::pin(async move { (i, j.rx.recv().await) }))
                .collect();
            futures_util::future::select_all(receiving).await.0
        }
    }
}

/// Writes `first` and whatever else the namespace has queued to a websocket, then flushes
/// once. A client that takes nothing for `stall` (the ping timeout: it could not answer a
/// ping either) is gone; so is one whose queue overflows meanwhile (a namespace connection
/// ended as too slow).
async fn write_ws(
    ws: &mut Socket,
    joined: &mut Joined,
    first: Outbound,
    stall: Duration,
    endings: &mut [Ending],
) -> Result<(), End> {
    let writing = write_batch_of(ws, joined, first);
    tokio::pin!(writing);
    // Nearly always done at once; only a write that has to wait gets a timer.
    let first = std::future::poll_fn(|cx| Poll::Ready(writing.as_mut().poll(cx))).await;
    if let Poll::Ready(result) = first {
        return result;
    }
    let stalled = tokio::time::sleep(stall);
    tokio::pin!(stalled);
    let mut watch_endings = true;
    loop {
        tokio::select! {
            result = &mut writing => return result,
            () = &mut stalled => {
                tracing::debug!(?stall, "the client takes nothing: dropping it");
                return Err(End::Broken);
            }
            (index, reason) = ending(endings), if watch_endings => {
                if !reason.drains() || reason == CloseReason::TooBig {
                    return Err(End::Close(reason));
                }
                // Any other ending is handled once this write is done.
                endings[index] = Box::pin(std::future::ready(reason));
                watch_endings = false;
            }
        }
    }
}

async fn write_batch_of(ws: &mut Socket, joined: &mut Joined, first: Outbound) -> Result<(), End> {
    let prefix = &joined.prefix;
    let written = write_batch(
        ws,
        first,
        &mut joined.rx,
        |emission| packet::for_namespace(emission.encoded::<EventFrames>(), prefix),
        |direct| packet::encode_direct(direct, prefix),
    )
    .await;
    match written {
        Ok(None) => Ok(()),
        // The namespace connection ends; the session stays.
        Ok(Some(reason)) => {
            joined.conn.close(reason);
            Ok(())
        }
        Err(_) => Err(End::Broken),
    }
}
