//! `GET|POST /entries`, `GET|PUT|DELETE /entries/{id}`. Any signed-in user reads entries
//! (they are blog posts); only the author changes or deletes one.

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
use crate::store::Entry;

/// The message of a 404 for an entry, here and under its comments.
pub(crate) const ENTRY_NOT_FOUND: &str = "Entry not found.";

/// The routes under `/entries` (comments have their own module). The parameter is named
/// `entry_id` here too, because the router wants one name per path segment.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/entries", get(index).post(create))
        .route("/entries/{entry_id}", get(show).put(update).delete(remove))
}

/// 404 [`ENTRY_NOT_FOUND`].
pub(crate) fn entry_not_found() -> AppError {
    AppError::NotFound(ENTRY_NOT_FOUND.into())
}

/// The body of `POST /entries` and `PUT /entries/{id}`: both fields, always.
#[derive(Deserialize, Validate, utoipa::ToSchema)]
pub(crate) struct EntryBody {
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

/// `GET /entries?limit=&offset=`: newest first.
#[utoipa::path(get, path = "/entries", tag = "entries", security(("bearer" = [])), params(crate::models::Page),
    responses((status = 200, description = "Entries, newest first", body = [crate::models::Entry]), (status = 400, description = "Malformed JSON, failed validation (the field is named) or a bad id", body = crate::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody)))]
async fn index(
    State(state): State<AppState>,
    _: AuthUser,
    ValidQuery(page): ValidQuery<Page>,
) -> Result<Json<Vec<Entry>>, AppError> {
    Ok(Json(state.store.entries(page.limit, page.offset).await?))
}

#[utoipa::path(post, path = "/entries", tag = "entries", security(("bearer" = [])), request_body = EntryBody,
    responses((status = 201, description = "The new entry", body = crate::models::Entry), (status = 400, description = "Malformed JSON, failed validation (the field is named) or a bad id", body = crate::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ValidJson(req): ValidJson<EntryBody>,
) -> Result<(StatusCode, Json<Entry>), AppError> {
    let entry = state.store.create_entry(user.id, &req.title, &req.content).await?;
    Ok((StatusCode::CREATED, Json(entry)))
}

#[utoipa::path(get, path = "/entries/{entry_id}", tag = "entries", security(("bearer" = [])), params(("entry_id" = i64, Path, description = "The entry's id")),
    responses((status = 200, description = "The entry", body = crate::models::Entry), (status = 400, description = "Malformed JSON, failed validation (the field is named) or a bad id", body = crate::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody), (status = 404, description = "Not found", body = crate::openapi::ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    _: AuthUser,
    Path(id): Path<i64>,
) -> Result<Json<Entry>, AppError> {
    state.store.entry(id).await?.map(Json).ok_or_else(entry_not_found)
}

/// The entry, if it exists and `user` wrote it: 404, then 403. Entries are public to
/// signed-in users, so answering 404 before 403 reveals nothing.
async fn owned_entry(state: &AppState, user: &AuthUser, id: i64) -> Result<Entry, AppError> {
    let entry = state.store.entry(id).await?.ok_or_else(entry_not_found)?;
    user.ensure_owner(entry.user_id)?;
    Ok(entry)
}

/// `PUT /entries/{id}`: the author replaces title and content.
#[utoipa::path(put, path = "/entries/{entry_id}", tag = "entries", security(("bearer" = [])), params(("entry_id" = i64, Path, description = "The entry's id")), request_body = EntryBody,
    responses((status = 200, description = "The changed entry", body = crate::models::Entry), (status = 400, description = "Malformed JSON, failed validation (the field is named) or a bad id", body = crate::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody), (status = 403, description = "Not yours", body = crate::openapi::ErrorBody), (status = 404, description = "Not found", body = crate::openapi::ErrorBody)))]
async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<i64>,
    ValidJson(req): ValidJson<EntryBody>,
) -> Result<Json<Entry>, AppError> {
    owned_entry(&state, &user, id).await?;
    // An entry's author never changes, so the check above still holds; the entry may have
    // been deleted meanwhile, which is a 404 as if it had come first.
    let entry = state.store.update_entry(id, &req.title, &req.content).await?;
    entry.map(Json).ok_or_else(entry_not_found)
}

/// `DELETE /entries/{id}`: the author deletes the entry and its comments.
#[utoipa::path(delete, path = "/entries/{entry_id}", tag = "entries", security(("bearer" = [])), params(("entry_id" = i64, Path, description = "The entry's id")),
    responses((status = 204, description = "Deleted, with its comments"), (status = 400, description = "Malformed JSON, failed validation (the field is named) or a bad id", body = crate::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody), (status = 403, description = "Not yours", body = crate::openapi::ErrorBody), (status = 404, description = "Not found", body = crate::openapi::ErrorBody)))]
async fn remove(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<i64>,
) -> Result<StatusCode, AppError> {
    owned_entry(&state, &user, id).await?;
    match state.store.delete_entry(id).await? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(entry_not_found()),
    }
}
