//! `POST /entries`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use validator::Validate;

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::AppError;
use crate::extract::ValidJson;
use crate::store::Entry;

/// The routes under `/entries` (comments have their own module).
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/entries", post(create))
}

#[derive(Deserialize, Validate)]
struct CreateEntry {
    #[validate(length(
        min = 1,
        max = 200,
        message = "title must be between 1 and 200 characters long."
    ))]
    title: String,
    #[validate(length(
        min = 1,
        max = 100_000,
        message = "content must be between 1 and 100000 characters long."
    ))]
    content: String,
}

async fn create(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ValidJson(req): ValidJson<CreateEntry>,
) -> Result<(StatusCode, Json<Entry>), AppError> {
    let entry = state.store.create_entry(user.id, &req.title, &req.content).await?;
    Ok((StatusCode::CREATED, Json(entry)))
}
