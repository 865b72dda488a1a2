//! `GET|POST /entries/{entryId}/comments`, `GET|PUT|DELETE /entries/{entryId}/comments/{id}`.
//! Any signed-in user reads comments; only a comment's author changes or deletes it. Every
//! change is also emitted to the entry's room, however it was made.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use validator::Validate;

use crate::AppState;
use crate::auth::AuthUser;
use crate::entries::entry_not_found;
use crate::error::AppError;
use crate::extract::{Path, ValidJson, ValidQuery};
use crate::models::Page;
use crate::store::Comment;

/// The event everyone in an entry's room receives when a comment is created.
pub(crate) const COMMENT_CREATED: &str = "commentCreated";
/// The event everyone in an entry's room receives when a comment is changed.
pub(crate) const COMMENT_UPDATED: &str = "commentUpdated";
/// The event everyone in an entry's room receives when a comment is deleted.
pub(crate) const COMMENT_DELETED: &str = "commentDeleted";

/// The message of a 404 for a comment.
pub(crate) const COMMENT_NOT_FOUND: &str = "Comment not found.";

/// The routes under `/entries/{entryId}/comments`.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/entries/{entry_id}/comments", get(index).post(create))
        .route("/entries/{entry_id}/comments/{id}", get(show).put(update).delete(remove))
}

/// The room of the connections subscribed to an entry.
pub(crate) fn entry_room(entry_id: i64) -> String {
    format!("entry:{entry_id}")
}

/// What `commentDeleted` carries: which comment of which entry is gone.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeletedComment {
    /// The deleted comment's id.
    pub(crate) id: i64,
    /// The entry it was on.
    pub(crate) entry_id: i64,
}

/// Emits `event` with `payload` to the room of entry `entry_id`: the one way every comment
/// push goes out. Nobody listening is fine; a failure to serialize is logged, the change is
/// stored either way.
pub(crate) fn emit_to_entry<T: Serialize + ?Sized>(
    state: &AppState,
    entry_id: i64,
    comment_id: i64,
    event: &'static str,
    payload: &T,
) {
    match state.server.to(entry_room(entry_id)).emit(event, payload) {
        Ok(n) => tracing::debug!(comment.id = comment_id, event, recipients = n, "announced"),
        Err(e) => tracing::warn!(comment.id = comment_id, event, error = %e, "not announced"),
    }
}

/// Tells the entry's room about a new comment (`commentCreated`), however it was created.
pub(crate) fn announce(state: &AppState, comment: &Comment) {
    emit_to_entry(state, comment.entry_id, comment.id, COMMENT_CREATED, comment);
}

/// Tells the entry's room about a changed comment (`commentUpdated`, the comment).
pub(crate) fn announce_updated(state: &AppState, comment: &Comment) {
    emit_to_entry(state, comment.entry_id, comment.id, COMMENT_UPDATED, comment);
}

/// Tells the entry's room that a comment is gone (`commentDeleted`, `{id, entryId}`).
pub(crate) fn announce_deleted(state: &AppState, entry_id: i64, comment_id: i64) {
    let payload = DeletedComment { id: comment_id, entry_id };
    emit_to_entry(state, entry_id, comment_id, COMMENT_DELETED, &payload);
}

/// The body of `POST` and `PUT`.
#[derive(Deserialize, Validate, utoipa::ToSchema)]
pub(crate) struct CommentBody {
    #[validate(length(
        min = 1,
        max = 10_000,
        message = "body must be between 1 and 10000 characters long."
    ))]
    body: String,
}

/// `GET /entries/{entryId}/comments?limit=&offset=`: oldest first; 404 when the entry
/// doesn't exist (rather than an empty list).
#[utoipa::path(get, path = "/entries/{entry_id}/comments", tag = "comments", security(("bearer" = [])),
    params(("entry_id" = i64, Path, description = "The entry's id"), crate::models::Page),
    responses((status = 200, description = "The entry's comments, oldest first", body = [crate::models::Comment]), (status = 400, description = "Malformed JSON, failed validation (the field is named) or a bad id", body = crate::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody), (status = 404, description = "Not found", body = crate::openapi::ErrorBody)))]
async fn index(
    State(state): State<AppState>,
    _: AuthUser,
    Path(entry_id): Path<i64>,
    ValidQuery(page): ValidQuery<Page>,
) -> Result<Json<Vec<Comment>>, AppError> {
    if state.store.entry(entry_id).await?.is_none() {
        return Err(entry_not_found());
    }
    Ok(Json(state.store.comments_page(entry_id, page.limit, page.offset).await?))
}

#[utoipa::path(post, path = "/entries/{entry_id}/comments", tag = "comments", security(("bearer" = [])), params(("entry_id" = i64, Path, description = "The entry's id")), request_body = CommentBody,
    responses((status = 201, description = "The new comment, also pushed as `commentCreated` to the room `entry:{entry_id}`", body = crate::models::Comment), (status = 400, description = "Malformed JSON, failed validation (the field is named) or a bad id", body = crate::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody), (status = 404, description = "Not found", body = crate::openapi::ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(entry_id): Path<i64>,
    ValidJson(req): ValidJson<CommentBody>,
) -> Result<(StatusCode, Json<Comment>), AppError> {
    let comment = state.store.create_comment(entry_id, user.id, &req.body).await?;
    let comment = comment.ok_or_else(entry_not_found)?;
    announce(&state, &comment);
    Ok((StatusCode::CREATED, Json(comment)))
}

/// The comment, or the 404 that says what is missing: the entry, or the comment on it.
async fn find(state: &AppState, entry_id: i64, id: i64) -> Result<Comment, AppError> {
    if let Some(comment) = state.store.comment(entry_id, id).await? {
        return Ok(comment);
    }
    // Only a miss pays for the second lookup.
    match state.store.entry(entry_id).await? {
        None => Err(entry_not_found()),
        Some(_) => Err(comment_not_found()),
    }
}

fn comment_not_found() -> AppError {
    AppError::NotFound(COMMENT_NOT_FOUND.into())
}

#[utoipa::path(get, path = "/entries/{entry_id}/comments/{id}", tag = "comments", security(("bearer" = [])), params(("entry_id" = i64, Path, description = "The entry's id"), ("id" = i64, Path, description = "The comment's id")),
    responses((status = 200, description = "The comment", body = crate::models::Comment), (status = 400, description = "Malformed JSON, failed validation (the field is named) or a bad id", body = crate::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody), (status = 404, description = "Not found", body = crate::openapi::ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    _: AuthUser,
    Path((entry_id, id)): Path<(i64, i64)>,
) -> Result<Json<Comment>, AppError> {
    find(&state, entry_id, id).await.map(Json)
}

/// `PUT`: the author replaces the body; the room receives `commentUpdated`.
#[utoipa::path(put, path = "/entries/{entry_id}/comments/{id}", tag = "comments", security(("bearer" = [])), params(("entry_id" = i64, Path, description = "The entry's id"), ("id" = i64, Path, description = "The comment's id")), request_body = CommentBody,
    responses((status = 200, description = "The changed comment, also pushed as `commentUpdated`", body = crate::models::Comment), (status = 400, description = "Malformed JSON, failed validation (the field is named) or a bad id", body = crate::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody), (status = 403, description = "Not yours", body = crate::openapi::ErrorBody), (status = 404, description = "Not found", body = crate::openapi::ErrorBody)))]
async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    Path((entry_id, id)): Path<(i64, i64)>,
    ValidJson(req): ValidJson<CommentBody>,
) -> Result<Json<Comment>, AppError> {
    user.ensure_owner(find(&state, entry_id, id).await?.user_id)?;
    // A comment's author never changes, so the check still holds; a comment deleted
    // meanwhile is a 404 as if the delete had come first.
    let comment = state.store.update_comment(entry_id, id, &req.body).await?;
    let comment = comment.ok_or_else(comment_not_found)?;
    announce_updated(&state, &comment);
    Ok(Json(comment))
}

/// `DELETE`: the author deletes the comment; the room receives `commentDeleted`.
#[utoipa::path(delete, path = "/entries/{entry_id}/comments/{id}", tag = "comments", security(("bearer" = [])), params(("entry_id" = i64, Path, description = "The entry's id"), ("id" = i64, Path, description = "The comment's id")),
    responses((status = 204, description = "Deleted; `commentDeleted` {id, entryId} goes to the room"), (status = 400, description = "Malformed JSON, failed validation (the field is named) or a bad id", body = crate::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody), (status = 403, description = "Not yours", body = crate::openapi::ErrorBody), (status = 404, description = "Not found", body = crate::openapi::ErrorBody)))]
async fn remove(
    State(state): State<AppState>,
    user: AuthUser,
    Path((entry_id, id)): Path<(i64, i64)>,
) -> Result<StatusCode, AppError> {
    user.ensure_owner(find(&state, entry_id, id).await?.user_id)?;
    if !state.store.delete_comment(entry_id, id).await? {
        return Err(comment_not_found());
    }
    announce_deleted(&state, entry_id, id);
    Ok(StatusCode::NO_CONTENT)
}
