//! The demo page at `/`: log in, read entries, watch comments arrive live over Socket.IO or
//! plain WebSocket. Everything is compiled into the binary; nothing is fetched from a CDN.

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;

use crate::AppState;

/// The page, its script, its icon, and the socket.io-client browser bundle (4.8.4, MIT).
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/app.js", get(app_js))
        .route("/favicon.svg", get(favicon))
        // The pages link the SVG; browsers and tools that ask for the traditional name get it
        // too, rather than a 404 in the console.
        .route("/favicon.ico", get(favicon))
        .route("/vendor/socket.io.min.js", get(socket_io_js))
}

async fn index() -> Html<&'static str> {
    Html(include_str!("../web/index.html"))
}

async fn app_js() -> impl IntoResponse {
    javascript(include_str!("../web/app.js"))
}

async fn socket_io_js() -> impl IntoResponse {
    javascript(include_str!("../web/vendor/socket.io.min.js"))
}

async fn favicon() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "image/svg+xml")], include_str!("../web/favicon.svg"))
}

fn javascript(source: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], source)
}
