//! The HTTP side: which upgrade requests are ours, the handshake, and the 101 (or refusal).

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use http::Request;
use wsgate::{App, Handshake, Namespace, SessionRequest};
use wsgate_transport::{
    BoxFuture, Endpoint, EndpointLayer, EndpointService, Origin, Switched, is_upgrade, refuse,
    switch_protocols,
};

use crate::session::{self, Opening};
use crate::{TRANSPORT, WsConfig};

/// The adapter's [`Endpoint`]: WebSocket upgrades on its paths, for an [`App`].
#[derive(Clone, Debug)]
pub struct WsEndpoint {
    app: App,
    config: Arc<WsConfig>,
}

/// A tower layer answering WebSocket upgrades for an [`App`] and passing every other request to
/// the service it wraps.
pub type WsLayer = EndpointLayer<WsEndpoint>;

/// The service of [`WsLayer`].
pub type WsService<S> = EndpointService<WsEndpoint, S>;

impl WsEndpoint {
    pub(crate) fn new(app: App, config: Arc<WsConfig>) -> Self {
        Self { app, config }
    }
}

impl Endpoint for WsEndpoint {
    type Claim = Namespace;

    fn claim(&self, req: &Request<Body>) -> Option<Namespace> {
        if !is_upgrade(req) {
            return None;
        }
        namespace_of(&self.app, req.uri().path())
    }

    fn answer(&self, namespace: Namespace, req: Request<Body>) -> BoxFuture<'static, Response> {
        Box::pin(accept(self.app.clone(), self.config.clone(), namespace, req))
    }
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

/// What the query asks of connection state recovery: `session=new`, or `session=<id>` with
/// `offset=<last offset received>` to recover; nothing without `session`.
fn session_request(handshake: &Handshake) -> SessionRequest {
    match handshake.query_param("session").as_deref() {
        None | Some("") => SessionRequest::None,
        Some("new") => SessionRequest::New,
        Some(id) => SessionRequest::Resume {
            id: id.to_owned(),
            offset: handshake.query_param("offset").filter(|o| !o.is_empty()).map(Into::into),
        },
    }
}

async fn accept(
    app: App,
    config: Arc<WsConfig>,
    namespace: Namespace,
    mut req: Request<Body>,
) -> Response {
    let switched = match switch_protocols(&mut req, config.compression.as_ref()) {
        Ok(switched) => switched,
        Err(refusal) => return refuse(&refusal),
    };
    let Switched { response, on_upgrade, deflate } = switched;
    let mut handshake = Origin::take(&mut req).into_handshake(namespace, TRANSPORT);
    drop(req);
    handshake.session = session_request(&handshake);
    let accepted = match app.handshake(handshake).await {
        Ok(accepted) => accepted,
        Err(refusal) => {
            tracing::debug!(status = %refusal.status, reason = %refusal.message, "websocket handshake refused");
            return refuse(&refusal);
        }
    };

    tokio::spawn(session::run(app, Box::new(Opening { accepted, on_upgrade, deflate }), config));

    response
}
