//! `GET /asyncapi.json`: the gateways as an AsyncAPI 3.0 document, made from their own
//! description (`wsgate::describe`: handler signatures, `#[throws]`, `pushes`) with the same
//! schemas as `/openapi.json`; `GET /asyncapi`: a page that renders it with AsyncAPI's React
//! component (vendored, Apache-2.0, served from the binary: no CDN). Both public, like `/docs`.
//!
//! `blog types` writes the TypeScript the same description gives (`apps/blog/web/gateways.ts`).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse, Json};
use axum::routing::get;
use serde_json::{Value, json};
use wsgate::Description;
use wsgate::asyncapi::AsyncApi;

/// Where the document says the servers are when a request names no host.
const DEFAULT_HOST: &str = "localhost:3000";

/// The header of the generated TypeScript.
pub const TYPES_HEADER: &str = "The blog's gateways as TypeScript: event maps for socket.io-client and a typed plain\n\
WebSocket client. Generated from the gateways' description by `cargo run -p blog -- types`\n\
(`scripts/types` writes this file); do not edit.";

/// The AsyncAPI document of `description`, with servers at `host`.
pub fn document(description: &Description, host: &str) -> Value {
    let security = |schemes: &[&str]| -> Value {
        schemes
            .iter()
            .map(|s| json!({ "$ref": format!("#/components/securitySchemes/{s}") }))
            .collect()
    };
    AsyncApi::new("blog gateways", env!("CARGO_PKG_VERSION"))
        .description(
            "The live side of the blog: the chapter's `showUser`, `indexComment` and \
             `showComment`, entries, `createComment`, and the room `entry:{id}`, whose members \
             receive `commentCreated`, `commentUpdated` and `commentDeleted`. The REST API is at \
             [/docs](/docs); the same JWT (from `POST /auth/login`) opens both.\n\n\
             Every connection is authenticated at the handshake; a missing or bad token is \
             refused with `Invalid token.`. A user can read their own record only \
             (`showUser` of another user: `Forbidden.`).\n\n\
             **Frames.** Plain WebSocket: `{\"event\": \"showComment\", \"data\": {…}}` (or the \
             chapter's `{\"type\": \"showComment\", …fields}`), an `\"id\"` asks for an ack, \
             answered `{\"event\": \"ack\", \"id\", \"data\"}`. Socket.IO: `socket.emit(event, \
             data)`, `emitWithAck` for acks. Replies and pushes arrive as events of the names \
             below; a failing handler sends `exception`.",
        )
        .server(
            "websocket",
            json!({
                "host": host,
                "protocol": "ws",
                "pathname": "/ws",
                "title": "Plain WebSocket",
                "description": "JSON text frames (also served at `/`). With `session=new`, the \
                    first frame is `{\"event\":\"session\",\"data\":{\"id\",\"recovered\"}}` and \
                    pushes carry an `offset` for connection state recovery.",
                "security": security(&["token", "bearer"]),
            }),
        )
        .server(
            "socketio",
            json!({
                "host": host,
                "protocol": "ws",
                "pathname": "/socket.io/",
                "title": "Socket.IO",
                "description": "socket.io-client 4.x (Engine.IO 4), websocket or long-polling. \
                    Connection state recovery: pushes carry their offset as a last argument.",
                "security": security(&["authToken", "bearer"]),
            }),
        )
        .security_scheme(
            "token",
            json!({
                "type": "httpApiKey",
                "name": "token",
                "in": "query",
                "description": "Plain WebSocket: `ws://host/ws?token=<JWT>`.",
            }),
        )
        .security_scheme(
            "authToken",
            json!({
                "type": "httpApiKey",
                "name": "auth_token",
                "in": "query",
                "description": "Socket.IO: `io(url, { query: 'auth_token=<JWT>' })`, or the \
                    handshake's auth payload `io(url, { auth: { token: '<JWT>' } })`.",
            }),
        )
        .security_scheme(
            "bearer",
            json!({
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "`Authorization: Bearer <JWT>` on the upgrade or handshake \
                    request (clients that can set headers).",
            }),
        )
        .document(description)
}

/// The TypeScript module of `description`.
pub fn typescript(description: &Description) -> String {
    wsgate::typescript::module(description, TYPES_HEADER)
}

/// `/asyncapi.json`, `/asyncapi` and the renderer's files.
pub(crate) fn router(description: Description) -> Router {
    Router::new()
        .route("/asyncapi.json", get(json_document))
        .route("/asyncapi", get(|| async { Html(include_str!("../web/asyncapi.html")) }))
        .route(
            "/vendor/asyncapi/asyncapi-react.js",
            get(|| async { javascript(include_str!("../web/vendor/asyncapi/asyncapi-react.js")) }),
        )
        .route(
            "/vendor/asyncapi/asyncapi-react.css",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
                    include_str!("../web/vendor/asyncapi/asyncapi-react.css"),
                )
            }),
        )
        .route(
            "/vendor/asyncapi/LICENSE",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    concat!(
                        include_str!("../web/vendor/asyncapi/LICENSE"),
                        "\n\nThird-party notices of the bundle:\n\n",
                        include_str!("../web/vendor/asyncapi/asyncapi-react.js.LICENSE.txt"),
                    ),
                )
            }),
        )
        .with_state(Arc::new(description))
}

async fn json_document(
    State(description): State<Arc<Description>>,
    headers: HeaderMap,
) -> Json<Value> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '-' | '[' | ']'))
        })
        .unwrap_or(DEFAULT_HOST);
    Json(document(&description, host))
}

fn javascript(source: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], source)
}
