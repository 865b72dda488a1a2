//! Accounts and tokens: `POST /auth/register`, `POST /auth/login`, and the [`AuthUser`]
//! extractor that every other REST route uses.

use std::time::Duration;

use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use validator::Validate;
use wsgate::TokenError;

use crate::AppState;
use crate::error::AppError;
use crate::extract::{self, ValidJson};
use crate::password;
use crate::store::{NewUser, User};

/// How long a token from register or login is valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(24 * 60 * 60);

const INVALID_CREDENTIALS: &str = "Invalid email or password.";
const UNKNOWN_USER: &str = "Unknown user.";

/// The routes under `/auth`.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/auth/register", post(register)).route("/auth/login", post(login))
}

/// The body of `POST /auth/register`.
#[derive(Deserialize, Validate, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RegisterRequest {
    #[validate(
        email(message = "email must be a valid email address."),
        length(max = 254, message = "email must be at most 254 characters long.")
    )]
    email: String,
    #[validate(length(
        min = 8,
        max = 256,
        message = "password must be between 8 and 256 characters long."
    ))]
    password: String,
    #[validate(length(
        min = 1,
        max = 100,
        message = "firstName must be between 1 and 100 characters long."
    ))]
    first_name: String,
    #[validate(length(
        min = 1,
        max = 100,
        message = "lastName must be between 1 and 100 characters long."
    ))]
    last_name: String,
}

/// The body of `POST /auth/login`.
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct LoginRequest {
    email: String,
    password: String,
}

/// What register and login answer: a token for the REST API and the gateways, and the user.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct AuthResponse {
    token: String,
    user: User,
}

/// Register
///
/// Creates an account and answers as a login does: a token (valid for the REST API and the
/// gateways) and the user. The password is at least 8 characters; the e-mail address is
/// compared without case.
#[utoipa::path(post, path = "/auth/register", tag = "auth", request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered: a token and the user", body = AuthResponse),
        (status = 400, description = "Malformed JSON, or a field fails validation (the message names it)", body = crate::openapi::ErrorBody),
        (status = 409, description = "The e-mail address is registered already", body = crate::openapi::ErrorBody)))]
async fn register(
    State(state): State<AppState>,
    ValidJson(req): ValidJson<RegisterRequest>,
) -> Result<(StatusCode, Json<AuthResponse>), AppError> {
    let email = normalize_email(&req.email);
    let password_hash = password::hash(req.password).await?;
    let new = NewUser {
        email: &email,
        password_hash: &password_hash,
        first_name: &req.first_name,
        last_name: &req.last_name,
    };
    let user = state.store.create_user(new).await?;
    tracing::info!(user.id = user.id, "user registered");
    let token = state.jwt.sign(user.id.to_string(), TOKEN_TTL)?;
    Ok((StatusCode::CREATED, Json(AuthResponse { token, user })))
}

/// Log in
///
/// A token for the REST API (`Authorization: Bearer <token>`) and the gateways (Socket.IO
/// `auth.token`, or `?token=` on the WebSocket URL), and the user.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "A token and the user", body = AuthResponse),
        (status = 400, description = "Malformed JSON, or a field missing", body = crate::openapi::ErrorBody),
        (status = 401, description = "`Invalid email or password.`", body = crate::openapi::ErrorBody)))]
async fn login(
    State(state): State<AppState>,
    extract::Json(req): extract::Json<LoginRequest>,
) -> Result<Json<AuthResponse>, AppError> {
    let found = state.store.user_by_email(&normalize_email(&req.email)).await?;
    let (user, valid) = match found {
        Some(creds) => {
            (Some(creds.user), password::verify(req.password, creds.password_hash).await?)
        }
        None => (None, password::verify_nothing(req.password).await?),
    };
    let Some(user) = user.filter(|_| valid) else {
        return Err(AppError::Unauthorized(INVALID_CREDENTIALS.into()));
    };
    let token = state.jwt.sign(user.id.to_string(), TOKEN_TTL)?;
    Ok(Json(AuthResponse { token, user }))
}

/// E-mail addresses are compared without surrounding space and case.
fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// The user of a request's `Authorization: Bearer <token>`, verified and loaded; a 401 with
/// `Missing authentication token.`, `Invalid token.`, `Token expired.` or `Unknown user.`
/// otherwise.
#[derive(Debug, Clone)]
pub struct AuthUser(pub User);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let token = match parts.headers.get(AUTHORIZATION) {
            None => return Err(TokenError::Missing.into()),
            Some(value) => {
                let value = value.to_str().map_err(|_| TokenError::Invalid)?;
                wsgate::bearer(value).ok_or(TokenError::Missing)?
            }
        };
        let claims = state.jwt.verify(token)?;
        // A token signed with our key but not for a user id names nobody.
        let id: i64 = claims.sub.parse().map_err(|_| TokenError::Invalid)?;
        let user = state.store.user(id).await?;
        user.map(Self).ok_or_else(|| AppError::Unauthorized(UNKNOWN_USER.into()))
    }
}

impl AuthUser {
    /// `Ok` when this user wrote the thing owned by `owner_id`, else 403 `Forbidden.`: writes
    /// are the owner's only.
    pub fn ensure_owner(&self, owner_id: i64) -> Result<(), AppError> {
        if self.0.id == owner_id { Ok(()) } else { Err(AppError::forbidden()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_compared_case_insensitively() {
        assert_eq!(normalize_email("  Ada@Example.COM "), "ada@example.com");
    }

    #[test]
    fn register_rules_name_the_field() {
        let req = RegisterRequest {
            email: "ada@example.com".into(),
            password: "short".into(),
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
        };
        let err = AppError::from(req.validate().err().unwrap_or_default());
        assert_eq!(err.message(), "password must be between 8 and 256 characters long.");
    }
}
