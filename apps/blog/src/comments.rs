//! `GET|POST /entries/{entryId}/comments`, `GET|PUT|DELETE /entries/{entryId}/comments/{id}`.
//! Any signed-in user reads comments; only a comment's author changes or deletes it. Every
//! change is also emitted to the entry's room, however it was made.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use validator::Validate;

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::AppError;
use crate::extract::{Path, ValidJson, ValidQuery};
use crate::models::Page;
use crate::store::Comment;

/// The routes under `/entries/{entryId}/comments`. The router names the entry's id
/// `entry_id`, as the entries' routes do (one name per path segment); the handlers take the
/// ids by position.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/entries/{entry_id}/comments", get(index).post(create))
        .route("/entries/{entry_id}/comments/{id}", get(show).put(update).delete(remove))
}

/// The body of `POST` and `PUT`.
#[derive(Deserialize, Validate, utoipa::ToSchema)]
pub(crate) struct CommentBody {
    #[validate(custom(function = "crate::domain::comment_body"))]
    body: String,
}

/// List an entry's comments
///
/// Oldest first, a page at a time. A missing entry is a 404, not an empty list.
#[utoipa::path(get, path = "/entries/{entryId}/comments", tag = "comments", security(("bearer" = [])),
    params(("entryId" = i64, Path, description = "The entry's id"), crate::models::Page),
    responses(
        (status = 200, description = "The entry's comments, oldest first", body = [crate::models::Comment]),
        (status = 400, description = "A bad id, or `limit` or `offset` out of range (the message names it)", body = crate::openapi::ErrorBody),
        (status = 401, description = "No valid token", body = crate::openapi::ErrorBody),
        (status = 404, description = "`Entry not found.`", body = crate::openapi::ErrorBody)))]
async fn index(
    State(state): State<AppState>,
    _: AuthUser,
    Path(entry_id): Path<i64>,
    ValidQuery(page): ValidQuery<Page>,
) -> Result<Json<Vec<Comment>>, AppError> {
    Ok(Json(state.comments().of_entry(entry_id, Some((page.limit, page.offset))).await?))
}

/// Comment on an entry
///
/// The signed-in user becomes the comment's author. Everyone subscribed to the entry (the
/// gateways' room `entry:{id}`) receives it as `commentCreated`.
#[utoipa::path(post, path = "/entries/{entryId}/comments", tag = "comments", security(("bearer" = [])),
    params(("entryId" = i64, Path, description = "The entry's id")), request_body = CommentBody,
    responses(
        (status = 201, description = "The new comment, also pushed as `commentCreated`", body = crate::models::Comment),
        (status = 400, description = "A bad id, malformed JSON, or a `body` outside 1 to 10000 characters", body = crate::openapi::ErrorBody),
        (status = 401, description = "No valid token", body = crate::openapi::ErrorBody),
        (status = 404, description = "`Entry not found.`", body = crate::openapi::ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(entry_id): Path<i64>,
    ValidJson(req): ValidJson<CommentBody>,
) -> Result<(StatusCode, Json<Comment>), AppError> {
    let comment = state.comments().create(entry_id, user.id, &req.body).await?;
    Ok((StatusCode::CREATED, Json(comment)))
}

/// Read a comment
///
/// The comment must belong to the entry of the path.
#[utoipa::path(get, path = "/entries/{entryId}/comments/{id}", tag = "comments", security(("bearer" = [])),
    params(("entryId" = i64, Path, description = "The entry's id"), ("id" = i64, Path, description = "The comment's id")),
    responses(
        (status = 200, description = "The comment", body = crate::models::Comment),
        (status = 400, description = "An id is not a positive integer", body = crate::openapi::ErrorBody),
        (status = 401, description = "No valid token", body = crate::openapi::ErrorBody),
        (status = 404, description = "`Entry not found.` or `Comment not found.`", body = crate::openapi::ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    _: AuthUser,
    Path((entry_id, id)): Path<(i64, i64)>,
) -> Result<Json<Comment>, AppError> {
    Ok(Json(state.comments().find(entry_id, id).await?))
}

/// Change a comment
///
/// Its author replaces the body; anyone else is refused. The entry's room receives
/// `commentUpdated`.
#[utoipa::path(put, path = "/entries/{entryId}/comments/{id}", tag = "comments", security(("bearer" = [])),
    params(("entryId" = i64, Path, description = "The entry's id"), ("id" = i64, Path, description = "The comment's id")), request_body = CommentBody,
    responses(
        (status = 200, description = "The changed comment, also pushed as `commentUpdated`", body = crate::models::Comment),
        (status = 400, description = "A bad id, malformed JSON, or a `body` outside 1 to 10000 characters", body = crate::openapi::ErrorBody),
        (status = 401, description = "No valid token", body = crate::openapi::ErrorBody),
        (status = 403, description = "You are not its author", body = crate::openapi::ErrorBody),
        (status = 404, description = "`Entry not found.` or `Comment not found.`", body = crate::openapi::ErrorBody)))]
async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    Path((entry_id, id)): Path<(i64, i64)>,
    ValidJson(req): ValidJson<CommentBody>,
) -> Result<Json<Comment>, AppError> {
    let comments = state.comments();
    user.ensure_owner(comments.find(entry_id, id).await?.user_id)?;
    // A comment's author never changes, so the check still holds; a comment deleted
    // meanwhile is a 404 as if the delete had come first.
    Ok(Json(comments.update(entry_id, id, &req.body).await?))
}

/// Delete a comment
///
/// Its author deletes it; the entry's room receives `commentDeleted` with `{id, entryId}`.
#[utoipa::path(delete, path = "/entries/{entryId}/comments/{id}", tag = "comments", security(("bearer" = [])),
    params(("entryId" = i64, Path, description = "The entry's id"), ("id" = i64, Path, description = "The comment's id")),
    responses(
        (status = 204, description = "Deleted, and `commentDeleted` pushed"),
        (status = 400, description = "An id is not a positive integer", body = crate::openapi::ErrorBody),
        (status = 401, description = "No valid token", body = crate::openapi::ErrorBody),
        (status = 403, description = "You are not its author", body = crate::openapi::ErrorBody),
        (status = 404, description = "`Entry not found.` or `Comment not found.`", body = crate::openapi::ErrorBody)))]
async fn remove(
    State(state): State<AppState>,
    user: AuthUser,
    Path((entry_id, id)): Path<(i64, i64)>,
) -> Result<StatusCode, AppError> {
    let comments = state.comments();
    user.ensure_owner(comments.find(entry_id, id).await?.user_id)?;
    comments.delete(entry_id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
