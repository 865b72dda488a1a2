//! `GET /healthz`: the process answers and the database does too; `GET /`: what is served here.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::AppError;

/// The health check route.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/", get(home)).route("/healthz", get(healthz))
}

/// A plain-text map of the server for whoever opens it in a browser.
async fn home() -> &'static str {
    "wsgate blog\n\n\
     REST:      POST /auth/register, POST /auth/login, POST /entries, POST /entries/{entryId}/comments\n\
     WebSocket: ws://<this host>/?token=<JWT> (also /ws), JSON frames such as\n\
     \x20          {\"type\":\"showComment\",\"entryId\":1,\"commentId\":1}\n\
     Health:    GET /healthz\n"
}

async fn healthz(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    state.store.ping().await?;
    Ok(Json(json!({ "status": "ok" })))
}
