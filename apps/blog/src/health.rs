//! `GET /healthz`: the process answers, the database does too, and, with `REDIS_URL`, whether
//! the instance reaches the others through Redis.
//!
//! Answers 200 `{"status":"ok","database":"up"}`, with `"redis":"up"` when a broker is
//! configured. While Redis is down the instance still serves its own clients, so it stays in
//! the load balancer: 200 with `"status":"degraded","redis":"down"`. A database that does not
//! answer is 503.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::AppState;

/// The health check route.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz))
}

/// Health
///
/// Whether the database answers and, with Redis configured, whether the broker is connected.
/// Public, for load balancers and orchestrators.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses(
        (status = 200, description = "`{status: ok|degraded, database: up, redis?: up|down}`: `degraded` while Redis is down", body = serde_json::Value),
        (status = 503, description = "`{status: error, database: down}`: the database does not answer", body = serde_json::Value)))]
async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if let Err(e) = state.store.ping().await {
        tracing::warn!(error = %e, "health check: the database does not answer");
        let health = json!({ "status": "error", "database": "down" });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(health));
    }
    let mut health = json!({ "status": "ok", "database": "up" });
    if let Some(broker) = state.server.broker_status() {
        health["redis"] = json!(if broker.connected { "up" } else { "down" });
        if !broker.connected {
            health["status"] = json!("degraded");
        }
    }
    (StatusCode::OK, Json(health))
}
