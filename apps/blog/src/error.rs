//! The one error type of the REST API, answered as JSON `{statusCode, message}`.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use validator::ValidationErrors;
use wsgate::TokenError;

use crate::store::StoreError;

/// The message sent for every server-side failure; the detail goes to the log only.
pub const INTERNAL_SERVER_ERROR: &str = "Internal server error";

/// The message of every 403: the user is known but may not do this.
pub const FORBIDDEN: &str = "Forbidden.";

/// A failed request: a status code and a message for the client.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// 400: the request is well-formed JSON but breaks a rule.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no valid token, or wrong credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: authenticated, but not allowed to do this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: the resource does not exist.
    #[error("{0}")]
    NotFound(String),
    /// 405: the path exists, but not with this method.
    #[error("Method not allowed.")]
    MethodNotAllowed,
    /// 409: the request conflicts with existing data.
    #[error("{0}")]
    Conflict(String),
    /// The body is not JSON, not of the expected shape, or not declared as JSON.
    #[error(transparent)]
    Json(#[from] JsonRejection),
    /// A path parameter is not of the expected type (`/entries/abc`).
    #[error(transparent)]
    Path(#[from] PathRejection),
    /// The query string does not fit (`?limit=abc`); the message names the field.
    #[error(transparent)]
    Query(#[from] QueryRejection),
    /// The body's fields break validation rules.
    #[error("{}", wsgate::describe_validation(.0))]
    Validation(#[from] ValidationErrors),
    /// 500: the database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// 500: anything else that went wrong on the server.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl AppError {
    /// The HTTP status of this error.
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::Validation(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            // Syntax and data errors are the client's bad request; axum's own status (415
            // for a missing content type, 413 for too large a body) stands for the rest.
            Self::Json(JsonRejection::JsonDataError(_) | JsonRejection::JsonSyntaxError(_)) => {
                StatusCode::BAD_REQUEST
            }
            Self::Json(rejection) => rejection.status(),
            Self::Path(rejection) => rejection.status(),
            Self::Query(rejection) => rejection.status(),
            Self::Database(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message for the client: never the detail of a server-side failure.
    pub fn message(&self) -> String {
        match self {
            _ if self.status_code().is_server_error() => INTERNAL_SERVER_ERROR.to_owned(),
            Self::Json(rejection) => rejection.body_text(),
            Self::Path(rejection) => rejection.body_text(),
            Self::Query(rejection) => rejection.body_text(),
            other => other.to_string(),
        }
    }
}

impl AppError {
    /// 403 [`FORBIDDEN`].
    pub fn forbidden() -> Self {
        Self::Forbidden(FORBIDDEN.into())
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::EmailTaken => Self::Conflict(e.to_string()),
            StoreError::Database(e) => Self::Database(e),
        }
    }
}

impl From<TokenError> for AppError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Sign => Self::Internal(e.into()),
            _ => Self::Unauthorized(e.to_string()),
        }
    }
}

/// The JSON body of an error response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody {
    status_code: u16,
    message: String,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        if status.is_server_error() {
            tracing::error!(error = %self, detail = ?self, "request failed");
        }
        let body = ErrorBody { status_code: status.as_u16(), message: self.message() };
        (status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use validator::Validate;

    use super::*;

    #[derive(Validate)]
    struct Form {
        #[validate(length(min = 1))]
        first_name: String,
        #[validate(length(min = 8, message = "password must be at least 8 characters long."))]
        password: String,
    }

    #[test]
    fn validation_names_fields_as_json_does() {
        let form = Form { first_name: String::new(), password: "short".into() };
        let err = AppError::from(form.validate().err().unwrap_or_default());
        assert_eq!(err.status_code(), StatusCode::BAD_REQUEST);
        assert_eq!(
            err.message(),
            "firstName must not be empty. password must be at least 8 characters long."
        );
    }

    #[test]
    fn server_errors_hide_their_detail() {
        let err = AppError::from(anyhow::anyhow!("disk on fire"));
        assert_eq!(err.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(err.message(), INTERNAL_SERVER_ERROR);
        let err = AppError::from(StoreError::EmailTaken);
        assert_eq!(
            (err.status_code(), err.message()),
            (StatusCode::CONFLICT, "Email already registered.".into())
        );
        let err = AppError::from(TokenError::Expired);
        assert_eq!(
            (err.status_code(), err.message()),
            (StatusCode::UNAUTHORIZED, "Token expired.".into())
        );
    }
}
