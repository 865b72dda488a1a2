//! `GET /users/{id}`: one's own account.

use axum::routing::get;
use axum::{Json, Router};

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::AppError;
use crate::extract::Path;
use crate::store::User;

/// The routes under `/users`.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/users/{id}", get(show))
}

/// Your account
///
/// The signed-in user's own account, e-mail address included, and nobody else's: every other
/// id is 403, whether or not such a user exists, so that the route never tells who is
/// registered. (Others' names are under `/entries/{id}/authors`, for those who wrote there.)
// The ownership check comes before any lookup. One's own id cannot be missing: the
// `AuthUser` extractor has just loaded that user (a token of a user who no longer exists is a
// 401 `Unknown user.`), so there is no 404 here.
#[utoipa::path(get, path = "/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Your own user id")),
    responses(
        (status = 200, description = "Your account", body = crate::models::User),
        (status = 400, description = "The id is not a positive integer", body = crate::openapi::ErrorBody),
        (status = 401, description = "No valid token", body = crate::openapi::ErrorBody),
        (status = 403, description = "`Forbidden.`: not your id", body = crate::openapi::ErrorBody)))]
async fn show(me: AuthUser, Path(id): Path<i64>) -> Result<Json<User>, AppError> {
    me.ensure_owner(id)?;
    Ok(Json(me.0))
}
