//! The HTTP side of a connection: recognising and accepting WebSocket upgrades, what a request
//! tells the handshake, and a refusal as an HTTP response.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use hyper::upgrade::OnUpgrade;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use wsgate::{Handshake, Namespace, Refusal};

use crate::compression::{Compression, Negotiated};

/// Whether the request asks for a WebSocket (`GET` with `Upgrade: websocket`).
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.method() == Method::GET
        && req
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// An accepted upgrade: the response to send, the upgrade to await once it is sent, and the
/// compression agreed.
#[derive(Debug)]
pub struct Switched {
    /// `101 Switching Protocols`.
    pub response: Response,
    /// The connection, once the response is sent.
    pub on_upgrade: OnUpgrade,
    /// permessage-deflate, when the setting was on and the client offered it.
    pub deflate: Option<Negotiated>,
}

/// Takes a WebSocket upgrade request: checks its headers (RFC 6455), negotiates
/// permessage-deflate when `compression` is set, and returns the `101 Switching Protocols`
/// response to send back and the upgrade to await once it is sent, or why the request cannot
/// be upgraded.
pub fn switch_protocols<B>(
    req: &mut Request<B>,
    compression: Option<&Compression>,
) -> Result<Switched, Refusal> {
    let Some(accept_key) = check_headers(req.headers()) else {
        return Err(Refusal::new(StatusCode::BAD_REQUEST, "Invalid WebSocket handshake."));
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<OnUpgrade>() else {
        // Only HTTP/1.1 connections served with upgrades enabled (axum::serve) can upgrade.
        return Err(Refusal::new(StatusCode::UPGRADE_REQUIRED, "WebSocket upgrade unavailable."));
    };
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept_key);
    let negotiated = compression.and_then(|c| c.negotiate(req.headers()));
    let deflate = negotiated.map(|(value, negotiated)| {
        headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, value);
        negotiated
    });
    Ok(Switched { response, on_upgrade, deflate })
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

/// A refused handshake as an HTTP response: its status and `{"status":"error","message":…}`.
pub fn refuse(refusal: &Refusal) -> Response {
    (refusal.status, axum::Json(refusal.body())).into_response()
}

/// What the request that opens a session tells its handshakes: headers, query and peer.
#[derive(Clone, Debug, Default)]
pub struct Origin {
    /// The request's headers.
    pub headers: HeaderMap,
    /// The raw query string, without `?`.
    pub query: Option<String>,
    /// The peer's address, when the server was made with `ConnectInfo<SocketAddr>`.
    pub peer: Option<SocketAddr>,
}

impl Origin {
    /// What `req` tells, its headers moved out of it.
    pub fn take<B>(req: &mut Request<B>) -> Self {
        Self {
            query: req.uri().query().map(str::to_owned),
            headers: std::mem::take(req.headers_mut()),
            peer: req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0),
        }
    }

    /// The same, with header values copied: hyper's point into the buffer the request was read
    /// into (8 KiB or more), which a session that keeps its origin would otherwise keep too.
    #[must_use]
    pub fn detached(self) -> Self {
        let mut headers = HeaderMap::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            let mut copy = HeaderValue::from_maybe_shared(Bytes::copy_from_slice(value.as_bytes()))
                .unwrap_or_else(|_| HeaderValue::from_static(""));
            copy.set_sensitive(value.is_sensitive());
            headers.append(name.clone(), copy);
        }
        Self { headers, ..self }
    }

    /// A handshake for `namespace` over `transport` with what this request told, moved in.
    pub fn into_handshake(self, namespace: Namespace, transport: &'static str) -> Handshake {
        let mut handshake = Handshake::new(namespace, transport);
        handshake.headers = self.headers;
        handshake.query = self.query;
        handshake.peer = self.peer;
        handshake
    }

    /// The same, keeping this origin for the next handshake.
    pub fn handshake(&self, namespace: Namespace, transport: &'static str) -> Handshake {
        self.clone().into_handshake(namespace, transport)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detached_headers_are_copies_with_every_value() {
        let buffer = Bytes::from_static(b"Bearer abc; 1; 2");
        let mut req = Request::get("/socket.io/?EIO=4&x=1").body(()).unwrap();
        let headers = req.headers_mut();
        let mut auth = HeaderValue::from_maybe_shared(buffer.slice(..10)).unwrap();
        auth.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, auth);
        headers.append("x-n", HeaderValue::from_maybe_shared(buffer.slice(12..13)).unwrap());
        headers.append("x-n", HeaderValue::from_maybe_shared(buffer.slice(15..)).unwrap());
        let expected = req.headers().clone();
        let origin = Origin::take(&mut req).detached();
        assert_eq!(origin.headers, expected);
        assert!(origin.headers[header::AUTHORIZATION].is_sensitive());
        let values: Vec<_> = origin.headers.get_all("x-n").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(origin.query.as_deref(), Some("EIO=4&x=1"));
        let handshake = origin.handshake(Namespace::root(), "test");
        assert_eq!(handshake.query_param("x").as_deref(), Some("1"));
        assert_eq!(handshake.header("x-n"), Some("1"));
    }

    #[test]
    fn only_get_with_upgrade_websocket_is_an_upgrade() {
        let upgrade = |method: &str, value: &str| {
            let req = Request::builder().method(method).header(header::UPGRADE, value);
            is_upgrade(&req.body(()).unwrap())
        };
        assert!(upgrade("GET", "websocket"));
        assert!(upgrade("GET", "WebSocket"));
        assert!(!upgrade("POST", "websocket"));
        assert!(!upgrade("GET", "h2c"));
    }
}
