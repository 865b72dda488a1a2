//! wsgate's Engine.IO v4 server: HTTP long-polling, websocket, and the upgrade from one to
//! the other, at `/socket.io/`.
//!
//! This module is the HTTP side: it reads each request's query (`EIO`, `transport`, `sid`),
//! opens sessions, and hands polls, posts and upgrades to the session they belong to. A
//! session is run by the session driver of `wsgate-transport` whatever its transport, with
//! Engine.IO as its protocol (`protocol.rs`) and, over long-polling, `polling.rs` as its link.
//! Malformed requests get Engine.IO's errors: 400 with `{"code":…,"message":…}`.

mod polling;
mod protocol;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::SinkExt;
use http::{HeaderValue, Method, Request, StatusCode, header};
use tokio_tungstenite::tungstenite::Message;
use wsgate::App;
use wsgate_transport::parts::in_span;
use wsgate_transport::{
    BoxFuture, Endpoint, Heartbeat, Link, Negotiated, Origin, PackedOrigin, SessionConfig, Setup,
    Socket, Switched, is_upgrade, open_socket, refuse, switch_protocols,
};

use polling::{Handle, Polling, Post};

/// The settings of the engine, taken from the adapter's.
#[derive(Clone, Debug)]
pub(crate) struct EngineConfig {
    pub(crate) ping_interval: Duration,
    pub(crate) ping_timeout: Duration,
    pub(crate) max_payload: usize,
    pub(crate) read_buffer_size: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_in_flight: usize,
    pub(crate) compression: Option<wsgate_transport::Compression>,
    pub(crate) hibernate_after: Option<std::time::Duration>,
}

impl EngineConfig {
    /// The session driver's settings.
    fn session(&self) -> SessionConfig {
        SessionConfig {
            heartbeat: Heartbeat::Packet {
                ping: Bytes::from_static(b"2"),
                interval: self.ping_interval,
                timeout: self.ping_timeout,
            },
            max_in_flight: self.max_in_flight,
            unjoined_timeout: Some(self.connect_timeout),
            close_timeout: protocol::CLOSE_TIMEOUT,
            hibernate_after: self.hibernate_after,
        }
    }
}

/// The engine as an [`Endpoint`]: the requests for `/socket.io/`.
#[derive(Clone, Debug)]
pub(crate) struct EngineEndpoint {
    engine: Arc<Engine>,
}

impl EngineEndpoint {
    pub(crate) fn new(app: App, config: EngineConfig) -> Self {
        let session = Arc::new(config.session());
        let engine = Engine { app, config: Arc::new(config), session, sessions: Arc::default() };
        Self { engine: Arc::new(engine) }
    }
}

impl Endpoint for EngineEndpoint {
    type Claim = ();

    fn claim(&self, req: &Request<Body>) -> Option<()> {
        matches!(req.uri().path(), "/socket.io/" | "/socket.io").then_some(())
    }

    fn answer(&self, (): (), req: Request<Body>) -> BoxFuture<'static, Response> {
        let engine = self.engine.clone();
        Box::pin(async move { engine.answer(req).await })
    }
}

/// The sessions opened by long-polling, by id, until they end. Sessions opened on a websocket
/// are not in it: no request names them.
type Sessions = Mutex<HashMap<Box<str>, Entry>>;

/// A session in the table.
#[derive(Clone, Debug)]
enum Entry {
    /// On long-polling: where its requests go.
    Polling(Handle),
    /// Moved to a websocket: requests naming it are refused (a websocket is accepted, then
    /// closed, as Engine.IO's reference server does).
    Upgraded,
}

#[derive(Debug)]
struct Engine {
    app: App,
    config: Arc<EngineConfig>,
    /// Made once; each session's task borrows it.
    session: Arc<SessionConfig>,
    sessions: Arc<Sessions>,
}

/// A long-polling session's entry in the table, removed when this drops.
pub(crate) struct Registered {
    sessions: Arc<Sessions>,
    sid: Box<str>,
}

impl Registered {
    /// What marks the session upgraded.
    pub(crate) fn marker(&self) -> UpgradeMarker {
        UpgradeMarker { sessions: self.sessions.clone(), sid: self.sid.clone() }
    }
}

/// Marks a long-polling session as moved to a websocket: its channels go, its id stays taken
/// (requests naming it are refused) until the session ends.
pub(crate) struct UpgradeMarker {
    sessions: Arc<Sessions>,
    sid: Box<str>,
}

impl UpgradeMarker {
    pub(crate) fn mark(self) {
        lock(&self.sessions).insert(self.sid, Entry::Upgraded);
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.sessions).remove(&self.sid);
    }
}

fn lock(sessions: &Sessions) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Entry>> {
    // Plain inserts and removes: the table stays consistent across a panic.
    sessions.lock().unwrap_or_else(|e| e.into_inner())
}

/// Engine.IO's errors, as its reference server answers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EngineError {
    UnknownTransport,
    UnknownSid,
    BadHandshakeMethod,
    BadRequest,
    UnsupportedProtocolVersion,
}

impl IntoResponse for EngineError {
    fn into_response(self) -> Response {
        let (code, message) = match self {
            Self::UnknownTransport => (0, "Transport unknown"),
            Self::UnknownSid => (1, "Session ID unknown"),
            Self::BadHandshakeMethod => (2, "Bad handshake method"),
            Self::BadRequest => (3, "Bad request"),
            Self::UnsupportedProtocolVersion => (5, "Unsupported protocol version"),
        };
        let body = serde_json::json!({ "code": code, "message": message });
        (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
    }
}

/// The query parameters Engine.IO reads.
#[derive(Debug, Default, PartialEq, Eq)]
struct EngineQuery<'a> {
    eio: Option<&'a str>,
    transport: Option<&'a str>,
    sid: Option<&'a str>,
}

impl<'a> EngineQuery<'a> {
    fn parse(query: &'a str) -> Self {
        let mut parsed = Self::default();
        for pair in query.split('&') {
            match pair.split_once('=').unwrap_or((pair, "")) {
                ("EIO", v) => parsed.eio = Some(v),
                ("transport", v) => parsed.transport = Some(v),
                ("sid", v) => parsed.sid = Some(v),
                _ => {}
            }
        }
        parsed
    }
}

impl Engine {
    async fn answer(&self, req: Request<Body>) -> Response {
        let query = EngineQuery::parse(req.uri().query().unwrap_or(""));
        if query.eio != Some("4") {
            return EngineError::UnsupportedProtocolVersion.into_response();
        }
        let sid = query.sid.map(str::to_owned);
        match (query.transport, sid) {
            (Some("polling"), None) if req.method() == Method::GET => self.open_polling(req),
            (Some("polling"), None) => EngineError::BadHandshakeMethod.into_response(),
            (Some("polling"), Some(sid)) => {
                let handle = match lock(&self.sessions).get(sid.as_str()) {
                    Some(Entry::Polling(handle)) => handle.clone(),
                    // On another transport now.
                    Some(Entry::Upgraded) => return EngineError::BadRequest.into_response(),
                    None => return EngineError::UnknownSid.into_response(),
                };
                match *req.method() {
                    Method::GET => poll(&handle).await,
                    Method::POST => self.post(&handle, req).await,
                    _ => EngineError::BadRequest.into_response(),
                }
            }
            (Some("websocket"), _) if !is_upgrade(&req) => EngineError::BadRequest.into_response(),
            (Some("websocket"), None) => self.open_websocket(req),
            (Some("websocket"), Some(sid)) => self.upgrade(&sid, req),
            _ => EngineError::UnknownTransport.into_response(),
        }
    }

    /// `GET ?transport=polling` without a session: opens one, answered with its open packet.
    fn open_polling(&self, mut req: Request<Body>) -> Response {
        let sid = engine_sid();
        let registered = Registered { sessions: self.sessions.clone(), sid: sid.as_str().into() };
        let (handle, polling) = Polling::new(Some(registered.marker()));
        lock(&self.sessions).insert(sid.as_str().into(), Entry::Polling(handle));
        let open = protocol::open_packet(&sid, r#""websocket""#, &self.config);
        let span = tracing::debug_span!(parent: None, "socket.io", sid = %sid);
        let origin = Origin::take(&mut req).pack();
        let link = Link::Polling(Box::new(polling));
        let setup = protocol::setup(origin, link, Some(registered), &self.config);
        tokio::spawn(protocol::run(self.app.clone(), setup, self.session.clone(), span));
        text(Bytes::from(open))
    }

    /// A `POST`: its packets go to the session; answered `ok` once it has read them all.
    async fn post(&self, handle: &Handle, req: Request<Body>) -> Response {
        let max = self.config.max_payload;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let body = match declared {
            Some(len) if len > max => None,
            _ => axum::body::to_bytes(req.into_body(), max).await.ok(),
        };
        let Some(body) = body else {
            tracing::debug!(max, "long-polling body over max_payload");
            // The session ends; if it is busy, the ping timeout ends it.
            let _ = handle.posts.try_send(Post::TooBig);
            return StatusCode::PAYLOAD_TOO_LARGE.into_response();
        };
        let (done, read) = tokio::sync::oneshot::channel();
        if handle.posts.send(Post::Body(body, done)).await.is_err() || read.await.is_err() {
            return EngineError::UnknownSid.into_response();
        }
        text(Bytes::from_static(b"ok"))
    }

    /// A websocket opened directly: a session of its own, on it from the start.
    fn open_websocket(&self, mut req: Request<Body>) -> Response {
        let switched = match switch_protocols(&mut req, self.config.compression.as_ref()) {
            Ok(switched) => switched,
            Err(refusal) => return refuse(&refusal),
        };
        let Switched { response, on_upgrade, deflate } = switched;
        let origin = Box::new(Origin::take(&mut req).pack());
        drop(req);
        let config = self.config.clone();
        let opening = Box::new(Opening { origin, on_upgrade, deflate, config });
        tokio::spawn(run_websocket(self.app.clone(), opening, self.session.clone()));
        response
    }

    /// A websocket opened with a long-polling session's id: handed to the session, which
    /// answers its probe and moves to it when the client completes the upgrade.
    fn upgrade(&self, sid: &str, mut req: Request<Body>) -> Response {
        let handle = match lock(&self.sessions).get(sid) {
            Some(Entry::Polling(handle)) => Some(handle.clone()),
            Some(Entry::Upgraded) => None,
            None => return EngineError::UnknownSid.into_response(),
        };
        let switched = match switch_protocols(&mut req, self.config.compression.as_ref()) {
            Ok(switched) => switched,
            Err(refusal) => return refuse(&refusal),
        };
        let Switched { response, on_upgrade, deflate } = switched;
        drop(req);
        let config = self.config.clone();
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let ws = Box::new(websocket(upgraded, &config, deflate));
                    let refused = match handle {
                        Some(handle) => handle.upgrades.send(ws).await.err().map(|e| e.0),
                        None => Some(ws),
                    };
                    // The session is gone, or on a websocket already: this one is closed.
                    if let Some(mut ws) = refused {
                        let closing = wsgate_transport::WebSocket::close(&mut *ws, None);
                        let _ = tokio::time::timeout(Duration::from_secs(2), closing).await;
                    }
                }
                Err(e) => tracing::debug!(error = %e, "socket.io websocket upgrade failed"),
            }
        });
        response
    }
}

/// A `GET`: answered with the session's next packets, as soon as it has some.
async fn poll(handle: &Handle) -> Response {
    let (answer, answered) = tokio::sync::oneshot::channel();
    if handle.polls.send(answer).await.is_err() {
        return EngineError::UnknownSid.into_response();
    }
    match answered.await {
        Ok(Some(body)) => text(body),
        // Two polls at once, or the session ended without an answer.
        Ok(None) | Err(_) => EngineError::BadRequest.into_response(),
    }
}

fn text(body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=UTF-8"));
    response
}

/// What a websocket opened directly starts from: boxed, and gone once its session runs (what
/// a task is given keeps its room in the task for as long as it runs).
struct Opening {
    origin: Box<PackedOrigin>,
    on_upgrade: hyper::upgrade::OnUpgrade,
    deflate: Option<Negotiated>,
    config: Arc<EngineConfig>,
}

/// The task of a websocket opened directly: a session of its own, on it from the start. Not
/// an async fn, which would keep its arguments twice (as given, and moved into its body).
#[allow(clippy::manual_async_fn)]
fn run_websocket(
    app: App,
    opening: Box<Opening>,
    session: Arc<SessionConfig>,
) -> impl Future<Output = ()> {
    async move {
        let Some((setup, span)) = Box::pin(open_websocket(opening)).await else { return };
        if let Some(asleep) = in_span(wsgate_transport::run(&app, setup, &session), span).await {
            asleep.sleep_with(app, session, |session| session);
        }
    }
}

/// Waits for the upgrade and sends the open packet: the session's setup, and its span.
async fn open_websocket(
    opening: Box<Opening>,
) -> Option<(Box<Setup<protocol::EngineProtocol>>, tracing::Span)> {
    let Opening { origin, on_upgrade, deflate, config } = *opening;
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            tracing::debug!(error = %e, "socket.io websocket upgrade failed");
            return None;
        }
    };
    let link = Link::WebSocket(websocket(upgraded, &config, deflate));
    let mut setup = protocol::setup(*origin, link, None, &config);
    let sid = engine_sid();
    let open = protocol::open_packet(&sid, "", &config);
    if let Link::WebSocket(ws) = &mut setup.link
        && ws.send(Message::text(open)).await.is_err()
    {
        return None;
    }
    Some((setup, tracing::debug_span!(parent: None, "socket.io", sid = %sid)))
}

fn websocket(
    upgraded: hyper::upgrade::Upgraded,
    config: &EngineConfig,
    deflate: Option<Negotiated>,
) -> Socket {
    open_socket(upgraded, config.read_buffer_size, config.max_payload, deflate)
}

/// A fresh engine session id: 128 bits from the operating system's generator (whoever knows
/// it may poll and post for the session), as hex. Without a generator, a process-unique id
/// from the standard library's randomly keyed hasher, logged as weaker.
fn engine_sid() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_ok() {
        return bytes.iter().map(|b| format!("{b:02x}")).collect();
    }
    tracing::error!("no random generator: engine session ids are weaker");
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(n);
    format!("{:016x}{n:x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<A, B, C, F>(_: fn(A, B, C) -> F) -> usize {
        size_of::<F>()
    }

    /// Every idle connection holds its task: tokio's task cell is the future and 104 bytes of
    /// its own, in steps of 128; at most 408 B of future, the cell is 512 B (see
    /// docs/PERFORMANCE.md, idle connection).
    #[test]
    fn a_websocket_session_task_fits_in_512_bytes() {
        assert!(future_size(run_websocket) <= 408, "{} B", future_size(run_websocket));
    }

    /// Asleep, a session holds this, with the adapter's handles (three words) beside it: its
    /// websocket at rest, without buffers; 152 B in all, in jemalloc's 160 B class (224 B
    /// before).
    #[test]
    fn a_sleeping_session_is_small() {
        let size = size_of::<wsgate_transport::Asleep<protocol::EngineProtocol>>();
        assert!(size <= 128, "{size} B");
    }

    #[test]
    fn the_query_is_read_for_version_transport_and_session() {
        assert_eq!(
            EngineQuery::parse("EIO=4&transport=websocket&sid=abc&t=x"),
            EngineQuery { eio: Some("4"), transport: Some("websocket"), sid: Some("abc") }
        );
        assert_eq!(EngineQuery::parse(""), EngineQuery::default());
        assert_eq!(EngineQuery::parse("EIO").eio, Some(""));
    }

    #[test]
    fn engine_sids_differ() {
        let (a, b) = (engine_sid(), engine_sid());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
    }
}
