//! `WsException`, handler errors, and exception filters (Nest's `BaseWsExceptionFilter`).

use std::fmt;

use serde_json::{Value, json};

use crate::message::{Payload, to_payload};
use crate::names::EventName;

/// An error meant for the client, as Nest's `WsException`.
///
/// Its message (or object) is sent in the `exception` event. It deliberately does not implement
/// `std::error::Error`, so that any other error converts into [`WsError::Internal`] with `?`.
#[derive(Clone, Debug, PartialEq)]
pub struct WsException {
    error: Value,
}

impl WsException {
    /// An exception whose payload message is `message`, e.g. `WsException::new("Forbidden.")`.
    pub fn new(message: impl Into<String>) -> Self {
        Self { error: Value::String(message.into()) }
    }

    /// The exception for data that failed validation, worded by [`describe_validation`].
    ///
    /// [`describe_validation`]: crate::describe_validation
    pub fn invalid(errors: &validator::ValidationErrors) -> Self {
        Self::new(crate::extract::describe_validation(errors))
    }

    /// An exception with a structured error, sent as the payload's `message` field.
    pub fn with_error(error: Value) -> Self {
        Self { error }
    }

    /// The error: a string for [`WsException::new`], any JSON for [`WsException::with_error`].
    pub fn error(&self) -> &Value {
        &self.error
    }

    /// The message, when the error is a string.
    pub fn message(&self) -> Option<&str> {
        self.error.as_str()
    }
}

impl fmt::Display for WsException {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.error {
            Value::String(s) => f.write_str(s),
            other => write!(f, "{other}"),
        }
    }
}

/// The error a handler, guard or extractor returns: an exception for the client, or an internal
/// failure whose detail is logged and never sent.
pub enum WsError {
    /// Sent to the client as it is.
    Exception(WsException),
    /// Logged; the client gets `Internal server error`.
    Internal(Box<dyn std::error::Error + Send + Sync>),
}

impl WsError {
    /// An internal error from a message, for failures that have no error type.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::Internal(message.into().into())
    }
}

impl fmt::Debug for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exception(e) => f.debug_tuple("Exception").field(e).finish(),
            Self::Internal(e) => f.debug_tuple("Internal").field(e).finish(),
        }
    }
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exception(e) => fmt::Display::fmt(e, f),
            Self::Internal(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl From<WsException> for WsError {
    fn from(e: WsException) -> Self {
        Self::Exception(e)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for WsError {
    fn from(e: E) -> Self {
        Self::Internal(Box::new(e))
    }
}

/// What an exception filter sees besides the error: the message that failed.
#[derive(Debug)]
pub struct ExceptionContext<'a> {
    /// The event the client sent (Nest's `pattern`).
    pub pattern: &'a EventName,
    /// The data the client sent.
    pub data: &'a serde_json::value::RawValue,
}

/// Turns an error into what the client receives, as Nest's `@Catch()` filters.
///
/// Filters run from the most specific (the gateway's) to the server's; the first to return
/// `Some` decides. [`DefaultExceptionFilter`] always answers.
pub trait ExceptionFilter: Send + Sync + 'static {
    /// The `exception` event's payload for `error`, or `None` to let the next filter decide.
    fn catch(&self, error: &WsError, ctx: &ExceptionContext<'_>) -> Option<Value>;
}

impl<F> ExceptionFilter for F
where
    F: Fn(&WsError, &ExceptionContext<'_>) -> Option<Value> + Send + Sync + 'static,
{
    fn catch(&self, error: &WsError, ctx: &ExceptionContext<'_>) -> Option<Value> {
        self(error, ctx)
    }
}

/// Nest's default: `{status:"error", message, cause:{pattern, data}}`; any error that is not a
/// [`WsException`] becomes `"Internal server error"`.
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultExceptionFilter;

/// The message clients get for any error that is not a [`WsException`].
pub const INTERNAL_SERVER_ERROR: &str = "Internal server error";

impl ExceptionFilter for DefaultExceptionFilter {
    fn catch(&self, error: &WsError, ctx: &ExceptionContext<'_>) -> Option<Value> {
        let message = match error {
            WsError::Exception(e) => e.error().clone(),
            WsError::Internal(_) => Value::String(INTERNAL_SERVER_ERROR.to_owned()),
        };
        // The client's data is echoed back as JSON; it was valid JSON when it arrived.
        let data: Value = serde_json::from_str(ctx.data.get()).unwrap_or(Value::Null);
        Some(json!({
            "status": "error",
            "message": message,
            "cause": { "pattern": ctx.pattern.as_str(), "data": data },
        }))
    }
}

/// Runs `filters` in order and serialises the first answer; the default filter closes the chain.
pub(crate) fn render(
    filters: &[&dyn ExceptionFilter],
    error: &WsError,
    ctx: &ExceptionContext<'_>,
) -> Payload {
    if let WsError::Internal(detail) = error {
        tracing::error!(event = %ctx.pattern, error = %detail, "handler failed");
    }
    let value = filters
        .iter()
        .find_map(|f| f.catch(error, ctx))
        .or_else(|| DefaultExceptionFilter.catch(error, ctx))
        .unwrap_or(Value::Null);
    to_payload(&value).unwrap_or_else(|_| crate::message::null_payload())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx_parts() -> (EventName, Payload) {
        (EventName::from("showUser"), to_payload(&json!({"userId": 2})).unwrap())
    }

    #[test]
    fn default_filter_renders_nest_payload() {
        let (pattern, data) = ctx_parts();
        let ctx = ExceptionContext { pattern: &pattern, data: &data };
        let out = render(&[], &WsException::new("Forbidden.").into(), &ctx);
        let v: Value = serde_json::from_str(out.get()).unwrap();
        assert_eq!(
            v,
            json!({"status":"error","message":"Forbidden.","cause":{"pattern":"showUser","data":{"userId":2}}})
        );
    }

    #[test]
    fn internal_errors_are_not_leaked() {
        let (pattern, data) = ctx_parts();
        let ctx = ExceptionContext { pattern: &pattern, data: &data };
        let err: WsError = std::io::Error::other("db password is hunter2").into();
        let out = render(&[], &err, &ctx);
        assert!(!out.get().contains("hunter2"));
        assert!(out.get().contains(INTERNAL_SERVER_ERROR));
    }

    #[test]
    fn first_answering_filter_wins() {
        let (pattern, data) = ctx_parts();
        let ctx = ExceptionContext { pattern: &pattern, data: &data };
        let silent = |_: &WsError, _: &ExceptionContext<'_>| None;
        let custom = |e: &WsError, _: &ExceptionContext<'_>| Some(json!({"oops": e.to_string()}));
        let out = render(&[&silent, &custom], &WsException::new("x").into(), &ctx);
        assert_eq!(out.get(), r#"{"oops":"x"}"#);
    }
}
