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

/// The routes under `/entries/{entryId}/comments`.
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
    Ok(Json(state.comments().of_entry(entry_id, Some((page.limit, page.offset))).await?))
}

#[utoipa::path(post, path = "/entries/{entry_id}/comments", tag = "comments", security(("bearer" = [])), params(("entry_id" = i64, Path, description = "The entry's id")), request_body = CommentBody,
    responses((status = 201, description = "The new comment, also pushed as `commentCreated` to the room `entry:{entry_id}`", body = crate::models::Comment), (status = 400, description = "Malformed JSON, failed validation (the field is named) or a bad id", body = crate::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody), (status = 404, description = "Not found", body = crate::openapi::ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(entry_id): Path<i64>,
    ValidJson(req): ValidJson<CommentBody>,
) -> Result<(StatusCode, Json<Comment>), AppError> {
    let comment = state.comments().create(entry_id, user.id, &req.body).await?;
    Ok((StatusCode::CREATED, Json(comment)))
}

#[utoipa::path(get, path = "/entries/{entry_id}/comments/{id}", tag = "comments", security(("bearer" = [])), params(("entry_id" = i64, Path, description = "The entry's id"), ("id" = i64, Path, description = "The comment's id")),
    responses((status = 200, description = "The comment", body = crate::models::Comment), (status = 400, description = "Malformed JSON, failed validation (the field is named) or a bad id", body = crate::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody), (status = 404, description = "Not found", body = crate::openapi::ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    _: AuthUser,
    Path((entry_id, id)): Path<(i64, i64)>,
) -> Result<Json<Comment>, AppError> {
    Ok(Json(state.comments().find(entry_id, id).await?))
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
    let comments = state.comments();
    user.ensure_owner(comments.find(entry_id, id).await?.user_id)?;
    // A comment's author never changes, so the check still holds; a comment deleted
    // meanwhile is a 404 as if the delete had come first.
    Ok(Json(comments.update(entry_id, id, &req.body).await?))
}

/// `DELETE`: the author deletes the comment; the room receives `commentDeleted`.
#[utoipa::path(delete, path = "/entries/{entry_id}/comments/{id}", tag = "comments", security(("bearer" = [])), params(("entry_id" = i64, Path, description = "The entry's id"), ("id" = i64, Path, description = "The comment's id")),
    responses((status = 204, description = "Deleted; `commentDeleted` {id, entryId} goes to the room"), (status = 400, description = "Malformed JSON, failed validation (the field is named) or a bad id", body = crate::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody), (status = 403, description = "Not yours", body = crate::openapi::ErrorBody), (status = 404, description = "Not found", body = crate::openapi::ErrorBody)))]
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
