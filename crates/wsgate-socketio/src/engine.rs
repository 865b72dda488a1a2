//! wsgate's own Engine.IO v4 websocket transport, for clients that open a websocket directly
//! (`transports: ["websocket"]`, and every client whose first request is a websocket
//! upgrade). Long-polling, and upgrades from it, stay with socketioxide.
//!
//! One task per engine connection, as the plain WebSocket adapter's: frames are read ahead of
//! writing, answers go through each connection's outbound queue and leave in batches, and an
//! idle connection holds little more than its socket. Several namespaces may share the engine
//! connection (`io("/")` and `io("/chat")` of one client): each is a wsgate connection with
//! its own queue.

use std::convert::Infallible;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::future::Either;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Request};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tower::{Layer, Service};
use tracing::Instrument;
use wsgate::{AckId, App, CloseReason, Connection, Handshake, Namespace, Outbound, OutboundRx};
use wsgate_ws::SessionEnd as End;
use wsgate_ws::parts::{InFlight, WRITE_BUFFER, Work, deadline, write_batch};

use crate::TRANSPORT;
use crate::message::decode;
use crate::packet::{self, EventFrames, Packet};

/// How long a closing connection waits for the client's close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The settings of the transport, taken from the adapter's.
#[derive(Clone, Debug)]
pub(crate) struct EngineConfig {
    pub(crate) ping_interval: Duration,
    pub(crate) ping_timeout: Duration,
    pub(crate) max_payload: usize,
    pub(crate) read_buffer_size: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_in_flight: usize,
}

/// Takes the websocket requests of Engine.IO v4 clients that carry no session id, and passes
/// every other request on (to socketioxide's layer and the router).
#[derive(Clone, Debug)]
pub(crate) struct EngineLayer {
    pub(crate) app: App,
    pub(crate) config: Arc<EngineConfig>,
}

impl<S> Layer<S> for EngineLayer {
    type Service = EngineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        EngineService { app: self.app.clone(), config: self.config.clone(), inner }
    }
}

/// The service of [`EngineLayer`].
#[derive(Clone, Debug)]
pub(crate) struct EngineService<S> {
    app: App,
    config: Arc<EngineConfig>,
    inner: S,
}

type Accepting = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl<S> Service<Request<Body>> for EngineService<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, Accepting>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if !is_direct_websocket(&req) {
            return Either::Left(self.inner.call(req));
        }
        let (app, config) = (self.app.clone(), self.config.clone());
        Either::Right(Box::pin(async move { Ok(accept(app, config, req)) }))
    }
}

/// `GET /socket.io/?EIO=4&transport=websocket` with an upgrade and no `sid`.
fn is_direct_websocket(req: &Request<Body>) -> bool {
    if !matches!(req.uri().path(), "/socket.io/" | "/socket.io") || !wsgate_ws::is_upgrade(req) {
        return false;
    }
    let (mut eio4, mut websocket) = (false, false);
    for pair in req.uri().query().unwrap_or("").split('&') {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("EIO", v) => eio4 = v == "4",
            ("transport", v) => websocket = v == "websocket",
            ("sid", _) => return false,
            _ => {}
        }
    }
    eio4 && websocket
}

/// What the upgrade request carried, for the handshakes of the namespaces connected over it.
struct Origin {
    headers: HeaderMap,
    query: Option<String>,
    peer: Option<SocketAddr>,
}

fn accept(app: App, config: Arc<EngineConfig>, mut req: Request<Body>) -> Response {
    let (response, on_upgrade) = match wsgate_ws::switch_protocols(&mut req) {
        Ok(switch) => switch,
        Err(refusal) => return (refusal.status, axum::Json(refusal.body())).into_response(),
    };
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let (parts, _body) = req.into_parts();
    let origin = Box::new(Origin {
        query: parts.uri.query().map(str::to_owned),
        headers: owned(&parts.headers),
        peer,
    });
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => run(app, origin, upgraded, config).await,
            Err(e) => tracing::debug!(error = %e, "socket.io websocket upgrade failed"),
        }
    });
    response
}

/// The headers with their values copied: hyper's point into the buffer the request was read
/// into (8 KiB or more), which would otherwise be kept as long as the connection.
fn owned(headers: &HeaderMap) -> HeaderMap {
    let mut owned = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let mut copy = HeaderValue::from_maybe_shared(Bytes::copy_from_slice(value.as_bytes()))
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        copy.set_sensitive(value.is_sensitive());
        owned.append(name.clone(), copy);
    }
    owned
}

type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// One namespace connected over the engine connection.
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

async fn run(app: App, origin: Box<Origin>, upgraded: Upgraded, config: Arc<EngineConfig>) {
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(config.read_buffer_size)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(Some(config.max_payload))
        .max_frame_size(Some(config.max_payload));
    let mut ws =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(ws_config))
            .await;
    let sid = engine_sid();
    let span = tracing::debug_span!("socket.io", sid = %sid);
    let open = format!(
        r#"0{{"sid":"{sid}","upgrades":[],"pingInterval":{},"pingTimeout":{},"maxPayload":{}}}"#,
        config.ping_interval.as_millis(),
        config.ping_timeout.as_millis(),
        config.max_payload
    );
    if ws.send(Message::text(open)).await.is_err() {
        return;
    }
    let mut session =
        Session { app: &app, origin, config: &config, joined: Vec::new(), endings: Vec::new() };
    let end = session.drive(&mut ws).instrument(span.clone()).await;
    Box::pin(wsgate_ws::finish(ws, end, CLOSE_TIMEOUT).instrument(span)).await;
    for joined in std::mem::take(&mut session.joined) {
        app.disconnect(&joined.conn).await;
    }
}

/// A fresh engine session id: unique within the process, unpredictable across processes.
fn engine_sid() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(n);
    format!("{:016x}{n:x}", hasher.finish())
}

struct Session<'a> {
    app: &'a App,
    /// Boxed: kept for the handshakes to come, it need not take room in the task's future.
    origin: Box<Origin>,
    config: &'a EngineConfig,
    joined: Vec<Joined>,
    endings: Vec<Ending>,
}

impl<'a> Session<'a> {
    async fn drive(&mut self, ws: &mut Socket) -> End {
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
            tokio::select! {
                biased;
                (index, reason) = ending(&mut self.endings) => {
                    if let Err(end) = Box::pin(self.end_namespace(ws, index, reason)).await {
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
                frame = ws.next(), if busy < config.max_in_flight => {
                    let text = match frame {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Binary(data))) => {
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
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                        Some(Ok(Message::Close(_))) | None => return End::ClientClosed,
                        Some(Err(WsError::Capacity(e))) => {
                            tracing::debug!(error = %e, "frame over max_payload");
                            return End::Close(CloseReason::TooBig);
                        }
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "websocket read failed");
                            return End::Broken;
                        }
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
                        // A client's probe (`2probe`) is answered in kind.
                        Some(b'2') => {
                            let pong = format!("3{}", &text.as_str()[1..]);
                            if ws.send(Message::text(pong)).await.is_err() {
                                return End::Broken;
                            }
                            continue;
                        }
                        // The client ends the session: the server closes the websocket.
                        Some(b'1') => return End::Close(CloseReason::Normal),
                        // Noop and upgrade: nothing to do on a websocket opened directly.
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
                            if let Err(end) = Box::pin(self.connect(ws, ns, auth)).await {
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
                    if ws.send(Message::text("2")).await.is_err() {
                        return End::Broken;
                    }
                    ping_sent = Some(now);
                    heartbeat.as_mut().reset(now + config.ping_timeout);
                }
                // Last: frames already received are handled first, so that the answers to a
                // pipelined batch leave in one write.
                (index, item) = next_outbound(&mut self.joined) => {
                    // Boxed: a write's state is large, and an idle connection's task would
                    // otherwise hold room for it (one allocation per batch, not per item).
                    let writing = write(ws, &mut self.joined[index], item, config.ping_timeout, &mut self.endings);
                    if let Err(end) = Box::pin(writing).await {
                        return end;
                    }
                }
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
    async fn connect(&mut self, ws: &mut Socket, ns: &str, auth: Option<&str>) -> Result<(), End> {
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
                return send(
                    ws,
                    packet::refused(&prefix, "The auth payload must be a JSON object."),
                )
                .await;
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
                return send(ws, packet::refused(&prefix, &refusal.message)).await;
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
        send(ws, packet::connected(&prefix, &sid)).await
    }

    /// The server closed a namespace connection: what is queued is written, then `41`. A
    /// client too slow or sending too much loses the whole engine connection.
    async fn end_namespace(
        &mut self,
        ws: &mut Socket,
        index: usize,
        reason: CloseReason,
    ) -> Result<(), End> {
        let mut joined = self.joined.swap_remove(index);
        drop(self.endings.swap_remove(index));
        tracing::debug!(conn = %joined.conn.id(), ?reason, "closing the namespace connection");
        let result = async {
            if matches!(reason, CloseReason::SlowConsumer | CloseReason::TooBig) {
                return Err(End::Close(reason));
            }
            while let Some(item) = joined.rx.try_recv() {
                write(ws, &mut joined, item, self.config.ping_timeout, &mut self.endings).await?;
            }
            send(ws, packet::disconnect(&joined.prefix)).await
        }
        .await;
        self.app.disconnect(&joined.conn).await;
        result
    }
}

async fn send(ws: &mut Socket, text: String) -> Result<(), End> {
    ws.send(Message::text(text)).await.map_err(|_| End::Broken)
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

/// Writes `first` and whatever else the namespace has queued, then flushes once. A client that
/// takes nothing for `stall` (the ping timeout: it could not answer a ping either) is gone; so
/// is one whose queue overflows meanwhile (a namespace connection ended as too slow).
async fn write(
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
        // The namespace connection ends; the engine connection stays.
        Ok(Some(reason)) => {
            joined.conn.close(reason);
            Ok(())
        }
        Err(_) => Err(End::Broken),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, upgrade: bool) -> Request<Body> {
        let mut req = Request::get(uri);
        if upgrade {
            req = req.header("upgrade", "websocket").header("connection", "Upgrade");
        }
        req.body(Body::empty()).unwrap()
    }

    #[test]
    fn only_direct_websockets_of_engine_io_4_are_taken() {
        assert!(is_direct_websocket(&request("/socket.io/?EIO=4&transport=websocket", true)));
        assert!(is_direct_websocket(&request("/socket.io?transport=websocket&EIO=4&t=x", true)));
        for (uri, upgrade) in [
            ("/socket.io/?EIO=4&transport=websocket", false),
            ("/socket.io/?EIO=4&transport=websocket&sid=abc", true),
            ("/socket.io/?EIO=3&transport=websocket", true),
            ("/socket.io/?EIO=4&transport=polling", true),
            ("/other/?EIO=4&transport=websocket", true),
        ] {
            assert!(!is_direct_websocket(&request(uri, upgrade)), "{uri} {upgrade}");
        }
    }

    #[test]
    fn kept_headers_are_copies_with_every_value() {
        let buffer = Bytes::from_static(b"Bearer abc; 1; 2");
        let mut headers = HeaderMap::new();
        let mut auth = HeaderValue::from_maybe_shared(buffer.slice(..10)).unwrap();
        auth.set_sensitive(true);
        headers.insert(http::header::AUTHORIZATION, auth);
        headers.append("x-n", HeaderValue::from_maybe_shared(buffer.slice(12..13)).unwrap());
        headers.append("x-n", HeaderValue::from_maybe_shared(buffer.slice(15..)).unwrap());
        let owned = owned(&headers);
        assert_eq!(owned, headers);
        assert!(owned[http::header::AUTHORIZATION].is_sensitive());
        let values: Vec<_> = owned.get_all("x-n").iter().collect();
        assert_eq!(values, ["1", "2"]);
    }

    #[test]
    fn engine_sids_differ() {
        assert_ne!(engine_sid(), engine_sid());
    }
}
