//! wsgate's Engine.IO v4 server: HTTP long-polling, websocket, and the upgrade from one to
//! the other, at `/socket.io/`.
//!
//! This module is the HTTP side: it reads each request's query (`EIO`, `transport`, `sid`),
//! opens sessions, and hands polls, posts and upgrades to the session they belong to
//! (`session.rs` runs a session whatever its transport; `polling.rs` is long-polling's part).
//! Malformed requests get Engine.IO's errors: 400 with `{"code":…,"message":…}`.

mod polling;
mod session;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::future::Either;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tower::{Layer, Service};
use wsgate::App;
use wsgate_ws::parts::WRITE_BUFFER;

use futures_util::SinkExt;
use polling::{Handle, Polling, Post};
use session::{Socket, Transport};

/// The settings of the engine, taken from the adapter's.
#[derive(Clone, Debug)]
pub(crate) struct EngineConfig {
    pub(crate) ping_interval: Duration,
    pub(crate) ping_timeout: Duration,
    pub(crate) max_payload: usize,
    pub(crate) read_buffer_size: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_in_flight: usize,
}

/// Takes the requests for `/socket.io/` and passes every other one on to the service it wraps.
#[derive(Clone, Debug)]
pub(crate) struct EngineLayer {
    engine: Arc<Engine>,
}

impl EngineLayer {
    pub(crate) fn new(app: App, config: EngineConfig) -> Self {
        let engine = Engine { app, config: Arc::new(config), sessions: Arc::default() };
        Self { engine: Arc::new(engine) }
    }
}

impl<S> Layer<S> for EngineLayer {
    type Service = EngineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        EngineService { engine: self.engine.clone(), inner }
    }
}

/// The service of [`EngineLayer`].
#[derive(Clone, Debug)]
pub(crate) struct EngineService<S> {
    engine: Arc<Engine>,
    inner: S,
}

type Answering = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl<S> Service<Request<Body>> for EngineService<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, Answering>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if !matches!(req.uri().path(), "/socket.io/" | "/socket.io") {
            return Either::Left(self.inner.call(req));
        }
        let engine = self.engine.clone();
        Either::Right(Box::pin(async move { Ok(engine.answer(req).await) }))
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
    sessions: Arc<Sessions>,
}

/// A long-polling session's entry in the table, removed when this drops.
pub(crate) struct Registered {
    sessions: Arc<Sessions>,
    sid: Box<str>,
}

impl Registered {
    /// The session moved to a websocket: its channels go, its id stays taken.
    pub(crate) fn upgraded(&self) {
        lock(&self.sessions).insert(self.sid.clone(), Entry::Upgraded);
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

/// What the request that opened a session carried, for the handshakes of the namespaces
/// connected over it.
pub(crate) struct Origin {
    pub(crate) headers: HeaderMap,
    pub(crate) query: Option<String>,
    pub(crate) peer: Option<SocketAddr>,
}

impl Origin {
    fn of(req: &Request<Body>) -> Box<Self> {
        Box::new(Self {
            query: req.uri().query().map(str::to_owned),
            headers: owned(req.headers()),
            peer: req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0),
        })
    }
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
            (Some("polling"), None) if req.method() == Method::GET => self.open_polling(&req),
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
            (Some("websocket"), _) if !wsgate_ws::is_upgrade(&req) => {
                EngineError::BadRequest.into_response()
            }
            (Some("websocket"), None) => self.open_websocket(req),
            (Some("websocket"), Some(sid)) => self.upgrade(&sid, req),
            _ => EngineError::UnknownTransport.into_response(),
        }
    }

    /// `GET ?transport=polling` without a session: opens one, answered with its open packet.
    fn open_polling(&self, req: &Request<Body>) -> Response {
        let sid = engine_sid();
        let (handle, polling) = Polling::new();
        lock(&self.sessions).insert(sid.as_str().into(), Entry::Polling(handle));
        let registered = Registered { sessions: self.sessions.clone(), sid: sid.as_str().into() };
        let open = session::open_packet(&sid, r#""websocket""#, &self.config);
        let span = tracing::debug_span!("socket.io", sid = %sid);
        tokio::spawn(session::run(
            self.app.clone(),
            Origin::of(req),
            Transport::Polling(Box::new(polling)),
            self.config.clone(),
            Some(registered),
            span,
        ));
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
        let (response, on_upgrade) = match wsgate_ws::switch_protocols(&mut req) {
            Ok(switch) => switch,
            Err(refusal) => return (refusal.status, axum::Json(refusal.body())).into_response(),
        };
        let origin = Origin::of(&req);
        drop(req);
        let (app, config) = (self.app.clone(), self.config.clone());
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(e) => return tracing::debug!(error = %e, "socket.io websocket upgrade failed"),
            };
            let mut ws = websocket(upgraded, &config).await;
            let sid = engine_sid();
            let open = session::open_packet(&sid, "", &config);
            if ws.send(Message::text(open)).await.is_err() {
                return;
            }
            let span = tracing::debug_span!("socket.io", sid = %sid);
            let transport = Transport::WebSocket(Box::new(ws));
            session::run(app, origin, transport, config, None, span).await;
        });
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
        let (response, on_upgrade) = match wsgate_ws::switch_protocols(&mut req) {
            Ok(switch) => switch,
            Err(refusal) => return (refusal.status, axum::Json(refusal.body())).into_response(),
        };
        drop(req);
        let config = self.config.clone();
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let ws = Box::new(websocket(upgraded, &config).await);
                    let refused = match handle {
                        Some(handle) => handle.upgrades.send(ws).await.err().map(|e| e.0),
                        None => Some(ws),
                    };
                    // The session is gone, or on a websocket already: this one is closed.
                    if let Some(mut ws) = refused {
                        let closing = WebSocketStream::close(&mut *ws, None);
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

async fn websocket(upgraded: hyper::upgrade::Upgraded, config: &EngineConfig) -> Socket {
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(config.read_buffer_size)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(Some(config.max_payload))
        .max_frame_size(Some(config.max_payload));
    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(ws_config)).await
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

/// A fresh engine session id: unique within the process, unpredictable across processes.
fn engine_sid() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(n);
    format!("{:016x}{n:x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

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
