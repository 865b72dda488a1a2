//! The HTTP side of a connection: recognising and accepting WebSocket upgrades, what a request
//! tells the handshake, and a refusal as an HTTP response.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
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

    /// The same, packed for a session to keep until its handshakes come
    /// ([`PackedOrigin::handshake`]).
    #[must_use]
    pub fn pack(self) -> PackedOrigin {
        PackedOrigin::new(&self)
    }

    /// A handshake for `namespace` over `transport` with what this request told, moved in.
    pub fn into_handshake(self, namespace: Namespace, transport: &'static str) -> Handshake {
        let mut handshake = Handshake::new(namespace, transport);
        handshake.headers = self.headers;
        handshake.query = self.query;
        handshake.peer = self.peer;
        handshake
    }
}

/// An [`Origin`] kept by a session for the namespace handshakes that may come later (Socket.IO
/// `CONNECT`s): its headers and query in one buffer, read again into a [`Handshake`] when one
/// comes. A `HeaderMap` would hold a table and an entry per header for the session's life
/// (1 KiB for five headers); and hyper's header values point into the buffer the request was
/// read into (8 KiB or more), which keeping them would keep too.
///
/// The peer's address is in the buffer too (7 bytes for IPv4, where a `SocketAddr` takes 32
/// beside it): 24 B in all besides the buffer.
#[derive(Clone, Debug, Default)]
pub struct PackedOrigin {
    /// The peer's address ([`put_peer`]), then `name:value\n` for each header in order
    /// (`name;value\n` for a sensitive value: `;` is not allowed in a name, nor `\n` in a
    /// value), then the query.
    block: Box<[u8]>,
    /// Where the query starts in `block`, if the request had one.
    query_at: Option<u32>,
}

/// What [`put_peer`] writes for an IPv4 address, and for an IPv6 one.
const PEER_V4: usize = 1 + 4 + 2;
const PEER_V6: usize = 1 + 16 + 2 + 4 + 4;

/// `4`, the IPv4 address and the port; `6`, the IPv6 address, the port, the flow info and the
/// scope id; nothing for no address.
fn put_peer(block: &mut Vec<u8>, peer: Option<SocketAddr>) {
    match peer {
        Some(SocketAddr::V4(v4)) => {
            block.push(4);
            block.extend_from_slice(&v4.ip().octets());
            block.extend_from_slice(&v4.port().to_be_bytes());
        }
        Some(SocketAddr::V6(v6)) => {
            block.push(6);
            block.extend_from_slice(&v6.ip().octets());
            block.extend_from_slice(&v6.port().to_be_bytes());
            block.extend_from_slice(&v6.flowinfo().to_be_bytes());
            block.extend_from_slice(&v6.scope_id().to_be_bytes());
        }
        None => {}
    }
}

/// The peer's address [`put_peer`] wrote at the start of `block`, and where the headers start.
fn peer_of(block: &[u8]) -> (Option<SocketAddr>, usize) {
    fn array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
        let mut out = [0; N];
        out.copy_from_slice(&bytes[at..at + N]);
        out
    }
    match block.first() {
        Some(4) if block.len() >= PEER_V4 => {
            let ip = std::net::Ipv4Addr::from(array::<4>(block, 1));
            (Some(SocketAddr::from((ip, u16::from_be_bytes(array(block, 5))))), PEER_V4)
        }
        Some(6) if block.len() >= PEER_V6 => {
            let ip = std::net::Ipv6Addr::from(array::<16>(block, 1));
            let port = u16::from_be_bytes(array(block, 17));
            let flowinfo = u32::from_be_bytes(array(block, 19));
            let scope_id = u32::from_be_bytes(array(block, 23));
            (Some(std::net::SocketAddrV6::new(ip, port, flowinfo, scope_id).into()), PEER_V6)
        }
        _ => (None, 0),
    }
}

impl PackedOrigin {
    fn new(origin: &Origin) -> Self {
        let size = PEER_V6
            + origin.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 2).sum::<usize>()
            + origin.query.as_ref().map_or(0, String::len);
        let mut block = Vec::with_capacity(size);
        put_peer(&mut block, origin.peer);
        for (name, value) in &origin.headers {
            block.extend_from_slice(name.as_str().as_bytes());
            block.push(if value.is_sensitive() { b';' } else { b':' });
            block.extend_from_slice(value.as_bytes());
            block.push(b'\n');
        }
        // A header block over 4 GiB is not a request hyper would have read.
        let query_at = origin.query.as_ref().and_then(|_| u32::try_from(block.len()).ok());
        if query_at.is_some()
            && let Some(query) = &origin.query
        {
            block.extend_from_slice(query.as_bytes());
        }
        Self { block: block.into_boxed_slice(), query_at }
    }

    /// The request's headers, query and peer, as [`Origin::take`] read them.
    pub fn origin(&self) -> Origin {
        let end = self.query_at.map_or(self.block.len(), |at| at as usize);
        let (peer, start) = peer_of(&self.block);
        // One copy of the headers for the handshake's values to share.
        let shared = Bytes::copy_from_slice(&self.block[start..end]);
        let end = shared.len();
        let mut headers = HeaderMap::with_capacity(shared.iter().filter(|&&b| b == b'\n').count());
        let mut at = 0;
        while at < end {
            let line_end = shared[at..].iter().position(|&b| b == b'\n').map_or(end, |i| at + i);
            let line = &shared[at..line_end];
            if let Some(split) = line.iter().position(|&b| b == b':' || b == b';')
                && let Ok(name) = HeaderName::from_bytes(&line[..split])
                && let Ok(mut value) =
                    HeaderValue::from_maybe_shared(shared.slice(at + split + 1..line_end))
            {
                value.set_sensitive(line[split] == b';');
                headers.append(name, value);
            }
            at = line_end + 1;
        }
        let query = self
            .query_at
            .map(|at| String::from_utf8_lossy(&self.block[at as usize..]).into_owned());
        Origin { headers, query, peer }
    }

    /// A handshake for `namespace` over `transport` with what the request told.
    pub fn handshake(&self, namespace: Namespace, transport: &'static str) -> Handshake {
        self.origin().into_handshake(namespace, transport)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packed_origin_gives_every_header_and_the_query_back() {
        let buffer = Bytes::from_static(b"Bearer abc; 1; 2");
        let mut req = Request::get("/socket.io/?EIO=4&x=1").body(()).unwrap();
        let headers = req.headers_mut();
        let mut auth = HeaderValue::from_maybe_shared(buffer.slice(..10)).unwrap();
        auth.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, auth);
        headers.append("x-n", HeaderValue::from_maybe_shared(buffer.slice(12..13)).unwrap());
        headers.append("x-n", HeaderValue::from_maybe_shared(buffer.slice(15..)).unwrap());
        headers.insert("x-colon", HeaderValue::from_static("a:b;c"));
        headers.insert("x-empty", HeaderValue::from_static(""));
        let expected = req.headers().clone();
        let peer: SocketAddr = "192.0.2.7:54321".parse().unwrap();
        req.extensions_mut().insert(ConnectInfo(peer));
        let packed = Origin::take(&mut req).pack();
        let origin = packed.origin();
        assert_eq!(origin.headers, expected);
        assert_eq!(origin.peer, Some(peer));
        assert!(origin.headers[header::AUTHORIZATION].is_sensitive());
        let values: Vec<_> = origin.headers.get_all("x-n").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(origin.query.as_deref(), Some("EIO=4&x=1"));
        assert!(!origin.headers["x-colon"].is_sensitive());
        // Once per namespace: each handshake gets them all.
        for _ in 0..2 {
            let handshake = packed.handshake(Namespace::root(), "test");
            assert_eq!(handshake.headers, expected);
            assert_eq!(handshake.query_param("x").as_deref(), Some("1"));
            assert_eq!(handshake.header("x-n"), Some("1"));
        }
        let bare = Origin::take(&mut Request::get("/").body(()).unwrap()).pack().origin();
        assert!(bare.headers.is_empty() && bare.query.is_none() && bare.peer.is_none());
    }

    #[test]
    fn a_packed_origin_keeps_every_kind_of_peer_address() {
        let peers = [
            None,
            Some("10.0.0.1:80".parse().unwrap()),
            Some("[::1]:443".parse().unwrap()),
            Some(std::net::SocketAddrV6::new("fe80::1".parse().unwrap(), 8080, 7, 3).into()),
        ];
        for peer in peers {
            let mut req = Request::get("/?q=1").header("x-a", "b").body(()).unwrap();
            if let Some(peer) = peer {
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            }
            let origin = Origin::take(&mut req).pack().origin();
            assert_eq!(origin.peer, peer);
            assert_eq!(origin.headers["x-a"], "b");
            assert_eq!(origin.query.as_deref(), Some("q=1"));
        }
        assert!(size_of::<PackedOrigin>() <= 24, "{} B", size_of::<PackedOrigin>());
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
