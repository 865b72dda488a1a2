//! The HTTP side: recognising upgrade requests, the handshake, and the 101 (or refusal) answer.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use futures_util::future::Either;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tower::{Layer, Service};
use wsgate::{App, Handshake, Namespace, Refusal};

use crate::session::{self, Opening};
use crate::{TRANSPORT, WsConfig};

/// A tower layer answering WebSocket upgrades for an [`App`] and passing every other request to
/// the service it wraps.
#[derive(Clone, Debug)]
pub struct WsLayer {
    app: App,
    config: Arc<WsConfig>,
}

impl WsLayer {
    pub(crate) fn new(app: App, config: Arc<WsConfig>) -> Self {
        Self { app, config }
    }
}

impl<S> Layer<S> for WsLayer {
    type Service = WsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WsService { app: self.app.clone(), config: self.config.clone(), inner }
    }
}

/// The service of [`WsLayer`].
#[derive(Clone, Debug)]
pub struct WsService<S> {
    app: App,
    config: Arc<WsConfig>,
    inner: S,
}

type UpgradeFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl<S> Service<Request<Body>> for WsService<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, UpgradeFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if !is_upgrade(&req) {
            return Either::Left(self.inner.call(req));
        }
        let Some(namespace) = namespace_of(&self.app, req.uri().path()) else {
            return Either::Left(self.inner.call(req));
        };
        let app = self.app.clone();
        let config = self.config.clone();
        Either::Right(Box::pin(async move { Ok(accept(app, config, namespace, req).await) }))
    }
}

/// Whether the request asks for a WebSocket (`GET` with `Upgrade: websocket`).
pub fn is_upgrade(req: &Request<Body>) -> bool {
    req.method() == Method::GET
        && req
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The namespace a path serves: `/` and `/ws` the root, `/ws/<ns>` and `/<ns>` a gateway's.
fn namespace_of(app: &App, path: &str) -> Option<Namespace> {
    let path = path.trim_end_matches('/');
    let namespace = match path {
        "" | "/ws" => Namespace::root(),
        _ => match path.strip_prefix("/ws/") {
            Some(rest) => Namespace::from(rest),
            None => Namespace::from(path),
        },
    };
    // `/ws/<unknown>` is ours to refuse; any other unknown path belongs to the router.
    (app.has_namespace(&namespace) || path.starts_with("/ws/")).then_some(namespace)
}

async fn accept(
    app: App,
    config: Arc<WsConfig>,
    namespace: Namespace,
    mut req: Request<Body>,
) -> Response {
    let (response, on_upgrade) = match switch_protocols(&mut req) {
        Ok(switch) => switch,
        Err(refusal) => return refuse(&refusal),
    };
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let (parts, _body) = req.into_parts();
    let mut handshake = Handshake::new(namespace, TRANSPORT);
    handshake.query = parts.uri.query().map(str::to_owned);
    handshake.headers = parts.headers;
    handshake.peer = peer;

    let accepted = match app.handshake(handshake).await {
        Ok(accepted) => accepted,
        Err(refusal) => {
            tracing::debug!(status = %refusal.status, reason = %refusal.message, "websocket handshake refused");
            return refuse(&refusal);
        }
    };

    tokio::spawn(session::run(app, Box::new(Opening { accepted, on_upgrade }), config));

    response
}

/// Takes a WebSocket upgrade request: checks its headers (RFC 6455) and returns the
/// `101 Switching Protocols` response to send back and the upgrade to await once it is sent,
/// or why the request cannot be upgraded. For adapters that run their own session over the
/// upgraded connection (as `wsgate-socketio`'s websocket transport does).
pub fn switch_protocols(
    req: &mut Request<Body>,
) -> Result<(Response, hyper::upgrade::OnUpgrade), Refusal> {
    let Some(accept_key) = check_headers(req.headers()) else {
        return Err(Refusal::new(StatusCode::BAD_REQUEST, "Invalid WebSocket handshake."));
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        // Only HTTP/1.1 connections served with upgrades enabled (axum::serve) can upgrade.
        return Err(Refusal::new(StatusCode::UPGRADE_REQUIRED, "WebSocket upgrade unavailable."));
    };
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept_key);
    Ok((response, on_upgrade))
}

/// Checks the upgrade headers of RFC 6455 and returns the `Sec-WebSocket-Accept` value.
fn check_headers(headers: &HeaderMap) -> Option<HeaderValue> {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    let version_13 = headers.get(header::SEC_WEBSOCKET_VERSION).is_some_and(|v| v == "13");
    let key = headers.get(header::SEC_WEBSOCKET_KEY)?;
    if !connection_upgrade || !version_13 {
        return None;
    }
    HeaderValue::from_str(&derive_accept_key(key.as_bytes())).ok()
}

fn refuse(refusal: &Refusal) -> Response {
    (refusal.status, axum::Json(refusal.body())).into_response()
}
