//! The handshake and connection middleware (Nest's gateway middleware / `handleConnection` auth).

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use http::{HeaderMap, StatusCode};

use crate::names::Namespace;

/// What an adapter knows of a connection before it is accepted.
#[derive(Debug, Default)]
pub struct Handshake {
    /// The namespace asked for (Socket.IO namespace or WebSocket path).
    pub namespace: Namespace,
    /// The adapter's transport name, such as `"ws"`.
    pub transport: &'static str,
    /// The HTTP headers of the upgrade or polling request.
    pub headers: HeaderMap,
    /// The raw query string, without `?`.
    pub query: Option<String>,
    /// The Socket.IO `auth` payload, when the transport has one.
    pub auth: Option<serde_json::Value>,
    /// The peer's address.
    pub peer: Option<SocketAddr>,
    /// Typed values attached by middleware; they become the connection's extensions.
    pub extensions: crate::Extensions,
    /// Who the client is, as authentication middleware established it (`JwtAuth`: the
    /// token's subject). A recovered session must present the identity that opened it.
    pub identity: Option<String>,
    /// What the client asks of connection state recovery, as the adapter read it.
    pub session: crate::recovery::SessionRequest,
}

impl Handshake {
    /// A handshake for `namespace` over `transport`, with nothing else known yet.
    pub fn new(namespace: impl Into<Namespace>, transport: &'static str) -> Self {
        Self { namespace: namespace.into(), transport, ..Self::default() }
    }

    /// The first value of query parameter `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<Cow<'_, str>> {
        let query = self.query.as_deref()?;
        form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// A header's value, if it is valid text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A refused connection: the status (plain WebSocket answers the upgrade with it) and a reason
/// for the client (`connect_error` message over Socket.IO).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct Refusal {
    /// The HTTP status: 401 for authentication, 403 for a forbidden origin, and so on.
    pub status: StatusCode,
    /// The reason, sent to the client.
    pub message: String,
}

impl Refusal {
    /// A refusal with a status and a reason.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }

    /// 401 with `message`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// The JSON body of a refused plain WebSocket upgrade: `{status:"error", message}`.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "status": "error", "message": self.message })
    }
}

/// Runs at the handshake, before a connection exists: it may attach extensions or refuse.
///
/// Server-wide middleware runs first, then the gateway's, in the order they were added.
#[diagnostic::on_unimplemented(
    note = "connection middleware is a type implementing `wsgate::ConnectMiddleware`, e.g. `wsgate::JwtAuth`"
)]
pub trait ConnectMiddleware: Send + Sync + 'static {
    /// Inspects the handshake; `Err` refuses the connection with that reason.
    fn handle(&self, handshake: &mut Handshake)
    -> impl Future<Output = Result<(), Refusal>> + Send;
}

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub(crate) trait DynMiddleware: Send + Sync + 'static {
    fn handle<'a>(&'a self, hs: &'a mut Handshake) -> BoxFuture<'a, Result<(), Refusal>>;
}

impl<M: ConnectMiddleware> DynMiddleware for M {
    fn handle<'a>(&'a self, hs: &'a mut Handshake) -> BoxFuture<'a, Result<(), Refusal>> {
        Box::pin(ConnectMiddleware::handle(self, hs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_decoded() {
        let mut hs = Handshake::new("/", "test");
        hs.query = Some("a=1&token=x%2By&token=second".into());
        assert_eq!(hs.query_param("token").as_deref(), Some("x+y"));
        assert_eq!(hs.query_param("a").as_deref(), Some("1"));
        assert_eq!(hs.query_param("missing"), None);
    }
}
