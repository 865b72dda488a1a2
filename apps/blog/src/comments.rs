//! `POST /entries/{entryId}/comments`; a new comment is also emitted to the entry's room.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use validator::Validate;

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::AppError;
use crate::extract::{Path, ValidJson};
use crate::store::Comment;

/// The event everyone in an entry's room receives when a comment is created.
pub(crate) const COMMENT_CREATED: &str = "commentCreated";

/// The routes under `/entries/{entryId}/comments`.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/entries/{entry_id}/comments", post(create))
}

/// The room of the connections subscribed to an entry.
pub(crate) fn entry_room(entry_id: i64) -> String {
    format!("entry:{entry_id}")
}

/// Tells the entry's room about a new comment, however it was created. Nobody listening is
/// fine; a failure to serialize is logged, the comment is stored either way.
pub(crate) fn announce(state: &AppState, comment: &Comment) {
    let sent = state.server.to(entry_room(comment.entry_id)).emit(COMMENT_CREATED, comment);
    match sent {
        Ok(n) => tracing::debug!(comment.id = comment.id, recipients = n, "comment announced"),
        Err(e) => tracing::warn!(comment.id = comment.id, error = %e, "comment not announced"),
    }
}

#[derive(Deserialize, Validate)]
struct CreateComment {
    #[validate(length(
        min = 1,
        max = 10_000,
        message = "body must be between 1 and 10000 characters long."
    ))]
    body: String,
}

async fn create(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(entry_id): Path<i64>,
    ValidJson(req): ValidJson<CreateComment>,
) -> Result<(StatusCode, Json<Comment>), AppError> {
    let comment = state.store.create_comment(entry_id, user.id, &req.body).await?;
    let comment = comment.ok_or_else(|| AppError::NotFound("Entry not found.".into()))?;
    announce(&state, &comment);
    Ok((StatusCode::CREATED, Json(comment)))
}
