//! `GET|POST /entries`, `GET|PUT|DELETE /entries/{id}`, `GET /entries/{id}/authors`. Any
//! signed-in user reads entries (they are blog posts); only the author changes or deletes one.

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
use crate::store::{Author, Entry};

/// The message of a 404 for an entry, here and under its comments.
pub(crate) const ENTRY_NOT_FOUND: &str = "Entry not found.";

/// The routes under `/entries` (comments have their own module). The router names the id
/// `entry_id` here too, because it wants one name per path segment; the documented paths say
/// `{id}`, as the README does (the handlers take the id by position).
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/entries", get(index).post(create))
        .route("/entries/{entry_id}", get(show).put(update).delete(remove))
        .route("/entries/{entry_id}/authors", get(authors))
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

/// List entries
///
/// Every signed-in user reads every entry, newest first, a page at a time.
#[utoipa::path(get, path = "/entries", tag = "entries", security(("bearer" = [])),
    params(crate::models::Page),
    responses(
        (status = 200, description = "Entries, newest first", body = [crate::models::Entry]),
        (status = 400, description = "`limit` or `offset` out of range (the message names it)", body = crate::openapi::ErrorBody),
        (status = 401, description = "No valid token", body = crate::openapi::ErrorBody)))]
async fn index(
    State(state): State<AppState>,
    _: AuthUser,
    ValidQuery(page): ValidQuery<Page>,
) -> Result<Json<Vec<Entry>>, AppError> {
    Ok(Json(state.store.entries(page.limit, page.offset).await?))
}

/// Write an entry
///
/// The signed-in user becomes its author, the only one who may change or delete it.
#[utoipa::path(post, path = "/entries", tag = "entries", security(("bearer" = [])),
    request_body = EntryBody,
    responses(
        (status = 201, description = "The new entry", body = crate::models::Entry),
        (status = 400, description = "Malformed JSON, or a field fails validation (the message names it)", body = crate::openapi::ErrorBody),
        (status = 401, description = "No valid token", body = crate::openapi::ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ValidJson(req): ValidJson<EntryBody>,
) -> Result<(StatusCode, Json<Entry>), AppError> {
    let entry = state.store.create_entry(user.id, &req.title, &req.content).await?;
    Ok((StatusCode::CREATED, Json(entry)))
}

/// Read an entry
///
/// Its comments are under `/entries/{entryId}/comments`; the names of who wrote it and them
/// under `/entries/{id}/authors`.
#[utoipa::path(get, path = "/entries/{id}", tag = "entries", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The entry's id")),
    responses(
        (status = 200, description = "The entry", body = crate::models::Entry),
        (status = 400, description = "The id is not a positive integer", body = crate::openapi::ErrorBody),
        (status = 401, description = "No valid token", body = crate::openapi::ErrorBody),
        (status = 404, description = "`Entry not found.`", body = crate::openapi::ErrorBody)))]
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

/// Change an entry
///
/// Its author replaces the title and the content; anyone else is refused.
#[utoipa::path(put, path = "/entries/{id}", tag = "entries", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The entry's id")),
    request_body = EntryBody,
    responses(
        (status = 200, description = "The changed entry", body = crate::models::Entry),
        (status = 400, description = "A bad id, malformed JSON, or a field fails validation (the message names it)", body = crate::openapi::ErrorBody),
        (status = 401, description = "No valid token", body = crate::openapi::ErrorBody),
        (status = 403, description = "You are not its author", body = crate::openapi::ErrorBody),
        (status = 404, description = "`Entry not found.`", body = crate::openapi::ErrorBody)))]
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

/// Delete an entry
///
/// Its author deletes it, and its comments with it.
#[utoipa::path(delete, path = "/entries/{id}", tag = "entries", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The entry's id")),
    responses(
        (status = 204, description = "Deleted, with its comments"),
        (status = 400, description = "The id is not a positive integer", body = crate::openapi::ErrorBody),
        (status = 401, description = "No valid token", body = crate::openapi::ErrorBody),
        (status = 403, description = "You are not its author", body = crate::openapi::ErrorBody),
        (status = 404, description = "`Entry not found.`", body = crate::openapi::ErrorBody)))]
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

/// Who wrote an entry and its comments
///
/// The entry's author and everyone who commented on it, once each, by id: `id`, `firstName`
/// and `lastName`, never an e-mail address, so that a page can put names on the `userId`s it
/// shows. Only who wrote on this entry is listed: the route does not tell who else is
/// registered.
#[utoipa::path(get, path = "/entries/{id}/authors", tag = "entries", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The entry's id")),
    responses(
        (status = 200, description = "The authors, by id", body = [crate::store::Author]),
        (status = 400, description = "The id is not a positive integer", body = crate::openapi::ErrorBody),
        (status = 401, description = "No valid token", body = crate::openapi::ErrorBody),
        (status = 404, description = "`Entry not found.`", body = crate::openapi::ErrorBody)))]
async fn authors(
    State(state): State<AppState>,
    _: AuthUser,
    Path(id): Path<i64>,
) -> Result<Json<Vec<Author>>, AppError> {
    Ok(Json(state.entries().authors(id).await?))
}
