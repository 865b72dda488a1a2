//! The message context and the extractors handlers take as arguments.

use std::fmt::Write as _;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use validator::{Validate, ValidationErrors, ValidationErrorsKind};

use crate::args::{Args, Arity, Resolved};
use crate::connection::Connection;
use crate::exception::{WsError, WsException};
use crate::message::Payload;
use crate::names::{AckId, EventName};
use crate::server::Server;

/// Everything known about one inbound message while it is handled.
#[derive(Debug)]
pub struct MessageContext {
    pub(crate) conn: Connection,
    pub(crate) event: EventName,
    pub(crate) data: Payload,
    pub(crate) ack: Option<AckId>,
    pub(crate) binary: Vec<Bytes>,
    pub(crate) arity: Arity,
}

impl MessageContext {
    /// The connection the message came from.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The event name.
    pub fn event(&self) -> &EventName {
        &self.event
    }

    /// The raw JSON data (with placeholders where binary attachments go).
    pub fn data(&self) -> &serde_json::value::RawValue {
        &self.data
    }

    /// Whether the data is one argument or the array of several.
    pub fn arity(&self) -> Arity {
        self.arity
    }

    /// The acknowledgement id, when the client asked for one.
    pub fn ack(&self) -> Option<&AckId> {
        self.ack.as_ref()
    }

    /// Binary attachments, in the order of the placeholders' `num`.
    pub fn binary(&self) -> &[Bytes] {
        &self.binary
    }

    /// The server handle.
    pub fn server(&self) -> &Server {
        self.conn.server()
    }

    /// A typed connection extension, such as the authenticated user.
    pub fn extension<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.conn.extension::<T>()
    }
}

/// A handler argument built from the message (axum's `FromRequestParts`).
///
/// Extractors run in argument order, before the handler; the first failure is the reply.
#[diagnostic::on_unimplemented(
    note = "handler arguments are extractors: `Data<T>`, `Valid<T>`, `Args<T>`, `Ext<T>`, `Connection`, `Server`, `EventName`, `Binary`, or an `Option` of one"
)]
pub trait FromMessage: Sized {
    /// Builds the argument, or fails with the error the client will see.
    fn from_message(ctx: &MessageContext) -> Result<Self, WsError>;
}

impl FromMessage for Connection {
    fn from_message(ctx: &MessageContext) -> Result<Self, WsError> {
        Ok(ctx.conn.clone())
    }
}

impl FromMessage for Server {
    fn from_message(ctx: &MessageContext) -> Result<Self, WsError> {
        Ok(ctx.server().clone())
    }
}

impl FromMessage for EventName {
    fn from_message(ctx: &MessageContext) -> Result<Self, WsError> {
        Ok(ctx.event.clone())
    }
}

/// `None` when `T` cannot be extracted, instead of an exception: for optional extensions or
/// data. Use `Data<Option<T>>` to accept a missing payload but still refuse a malformed one.
impl<T: FromMessage> FromMessage for Option<T> {
    fn from_message(ctx: &MessageContext) -> Result<Self, WsError> {
        Ok(T::from_message(ctx).ok())
    }
}

/// The message's data, deserialised (Nest's `@MessageBody()`).
///
/// A value of the wrong type is a [`WsException`] naming the field, e.g.
/// `Invalid entryId: invalid type: string "x", expected i64`. Several arguments are their
/// array, as Nest's `IoAdapter` gives them ([`Args`] reads them whatever their count).
/// Binary attachments are read in place: a `Bytes` field reads the attachment its
/// placeholder stands for.
///
/// `Data<Box<RawValue>>` is the data as it came (a relay's gateway, which passes it on
/// unread): a copy, not read again; with binary attachments, their placeholders as the client
/// sent them (the attachments are [`MessageContext::binary`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Data<T>(pub T);

impl<T: DeserializeOwned + 'static> FromMessage for Data<T> {
    fn from_message(ctx: &MessageContext) -> Result<Self, WsError> {
        if let Some(raw) = crate::args::raw_as::<T>(|| ctx.data.clone()) {
            // The adapter read it as JSON already.
            return Ok(Data(raw));
        }
        parse(&ctx.data, &ctx.binary).map(Data)
    }
}

/// The message's arguments as `T`, however many the client sent (one is a list of one):
/// `Args((name, file)): Args<(String, Bytes)>` for Socket.IO's `emit("upload", name, file)`.
/// Binary attachments are read in place, as with [`Data`]. An event sent without arguments
/// reads as one `null`.
impl<T: DeserializeOwned> FromMessage for Args<T> {
    fn from_message(ctx: &MessageContext) -> Result<Self, WsError> {
        match ctx.arity {
            Arity::Several => parse(&ctx.data, &ctx.binary).map(Args),
            Arity::One => {
                let list =
                    serde_json::value::RawValue::from_string(format!("[{}]", ctx.data.get()))
                        .map_err(|e| WsError::internal(e.to_string()))?;
                parse(&list, &ctx.binary).map(Args)
            }
        }
    }
}

/// The message's data, deserialised and validated with `validator` (Nest's `ValidationPipe`).
///
/// A rule's own `message` is sent as it is (`Missing entry id.`); a rule without one names the
/// field (`body must not be empty.`).
#[derive(Clone, Debug, PartialEq)]
pub struct Valid<T>(pub T);

impl<T: DeserializeOwned + Validate> FromMessage for Valid<T> {
    fn from_message(ctx: &MessageContext) -> Result<Self, WsError> {
        let value: T = parse(&ctx.data, &ctx.binary)?;
        value.validate().map_err(|e| WsException::invalid(&e))?;
        Ok(Valid(value))
    }
}

/// A typed connection extension, such as the user `JwtAuth` attached.
///
/// A missing extension is a server mistake (middleware not installed), so it is an internal
/// error, not a client one; take `Option<Ext<T>>` when it may be absent.
#[derive(Clone, Debug, PartialEq)]
pub struct Ext<T>(pub T);

impl<T: Clone + Send + Sync + 'static> FromMessage for Ext<T> {
    fn from_message(ctx: &MessageContext) -> Result<Self, WsError> {
        ctx.extension::<T>().cloned().map(Ext).ok_or_else(|| {
            WsError::internal(format!(
                "connection has no extension of type {}",
                std::any::type_name::<T>()
            ))
        })
    }
}

/// The message's binary attachments (Socket.IO); empty over JSON-only transports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Binary(pub Vec<Bytes>);

impl FromMessage for Binary {
    fn from_message(ctx: &MessageContext) -> Result<Self, WsError> {
        Ok(Binary(ctx.binary.clone()))
    }
}

fn parse<T: DeserializeOwned>(data: &Payload, binary: &[Bytes]) -> Result<T, WsError> {
    if !binary.is_empty() {
        return parse_resolved(data, binary);
    }
    // Tracking the path costs an allocation per key; it is only needed to word a failure, so
    // the data is read again with it then.
    let first = match serde_json::from_str(data.get()) {
        Ok(value) => return Ok(value),
        Err(e) => e,
    };
    let mut de = serde_json::Deserializer::from_str(data.get());
    Err(data_error(serde_path_to_error::deserialize::<_, T>(&mut de), &first))
}

/// Data with binary attachments: read as a JSON value, then with its placeholders resolved.
fn parse_resolved<T: DeserializeOwned>(data: &Payload, binary: &[Bytes]) -> Result<T, WsError> {
    let value: serde_json::Value = serde_json::from_str(data.get())
        .map_err(|e| WsException::new(format!("Invalid data: {}", json_error_message(&e))))?;
    let first = match T::deserialize(Resolved { value: &value, binary }) {
        Ok(value) => return Ok(value),
        Err(e) => e,
    };
    Err(data_error(
        serde_path_to_error::deserialize::<_, T>(Resolved { value: &value, binary }),
        &first,
    ))
}

/// The exception for data that failed to read as `T`, naming the field.
fn data_error<T>(
    again: Result<T, serde_path_to_error::Error<serde_json::Error>>,
    first: &serde_json::Error,
) -> WsError {
    let message = match again {
        Err(e) => {
            let path = e.path().to_string();
            let inner = json_error_message(e.inner());
            if path == "." || inner.starts_with("missing field") {
                format!("Invalid data: {inner}")
            } else {
                format!("Invalid {path}: {inner}")
            }
        }
        // The same input and the same deserializer fail the same way; kept total all the same.
        Ok(_) => format!("Invalid data: {}", json_error_message(first)),
    };
    WsException::new(message).into()
}

/// serde_json's message without ` at line L column C`, which means nothing to a client.
///
/// The extractors word data errors with it; adapters can word undecodable frames alike.
///
/// A long message (one that quotes a long string the client sent) keeps its beginning and its
/// end, where serde says what was expected: `invalid type: string "xxxx…xxx", expected i64`.
pub fn json_error_message(e: &serde_json::Error) -> String {
    let mut text = e.to_string();
    if let Some(at) = text.rfind(" at line ") {
        text.truncate(at);
    }
    shorten(&text, 100, 80)
}

/// `text` itself if it is short; else its first `head` and last `tail` characters around `…`.
/// Client input quoted in an answer stays small whatever the client sent.
pub(crate) fn shorten(text: &str, head: usize, tail: usize) -> String {
    let count = text.chars().count();
    if count <= head + tail + 1 {
        return text.to_owned();
    }
    let start: String = text.chars().take(head).collect();
    let end: String = text.chars().skip(count - tail).collect();
    format!("{start}…{end}")
}

/// One line for all validation failures: a rule's own message as it is, others as
/// `field: code.`, with the field named as JSON clients write it (`first_name` → `firstName`).
///
/// [`Valid`] answers with it; a REST API can use it too, so that both speak alike.
pub fn describe_validation(errors: &ValidationErrors) -> String {
    let mut out = String::new();
    collect(errors, "", &mut out);
    out
}

/// A sentence for a validation error that carries no message of its own: the bounds of
/// `range` and `length`, else the rule's code.
fn describe_error(name: &str, err: &validator::ValidationError, out: &mut String) {
    let param = |key: &str| err.params.get(key).map(ToString::to_string);
    let (min, max) = (param("min"), param("max"));
    let _ = match (err.code.as_ref(), min, max) {
        ("range", Some(min), Some(max)) => write!(out, "{name} must be between {min} and {max}."),
        ("range", Some(min), None) => write!(out, "{name} must be at least {min}."),
        ("range", None, Some(max)) => write!(out, "{name} must be at most {max}."),
        ("length", Some(min), Some(max)) => {
            write!(out, "{name} must be between {min} and {max} characters long.")
        }
        ("length", Some(min), None) if min == "1" => write!(out, "{name} must not be empty."),
        ("length", Some(min), None) => {
            write!(out, "{name} must be at least {min} characters long.")
        }
        ("length", None, Some(max)) => write!(out, "{name} must be at most {max} characters long."),
        (code, _, _) => write!(out, "{name}: {code}."),
    };
}

fn collect(errors: &ValidationErrors, prefix: &str, out: &mut String) {
    let mut fields: Vec<_> = errors.errors().iter().collect();
    fields.sort_by(|a, b| a.0.cmp(b.0));
    for (field, kind) in fields {
        let field = camel_case(field);
        let name = if prefix.is_empty() { field } else { format!("{prefix}.{field}") };
        match kind {
            ValidationErrorsKind::Field(list) => {
                for err in list {
                    if !out.is_empty() {
                        out.push(' ');
                    }
                    match &err.message {
                        Some(m) => out.push_str(m),
                        None => describe_error(&name, err, out),
                    }
                }
            }
            ValidationErrorsKind::Struct(inner) => collect(inner, &name, out),
            ValidationErrorsKind::List(items) => {
                for (i, inner) in items {
                    collect(inner, &format!("{name}[{i}]"), out);
                }
            }
        }
    }
}

fn camel_case(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut upper = false;
    for c in field.chars() {
        match (c, upper) {
            ('_', _) if out.chars().all(|c| c == '_') => out.push('_'),
            ('_', _) => upper = true,
            (c, true) => {
                out.extend(c.to_uppercase());
                upper = false;
            }
            (c, false) => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[test]
    fn long_quoted_input_is_shortened_keeping_what_was_expected() {
        assert_eq!(shorten("short", 2, 2), "short");
        assert_eq!(shorten("abcdefgh", 2, 3), "ab…fgh");
        assert_eq!(shorten("ééééé", 1, 1), "é…é");
        let long = format!("\"{}\"", "x".repeat(20_000));
        let e = serde_json::from_str::<i64>(&long).unwrap_err();
        let text = json_error_message(&e);
        assert!(text.chars().count() <= 181, "{text}");
        assert!(
            text.starts_with("invalid type: string \"xxx") && text.ends_with("expected i64"),
            "{text}"
        );
    }
    use crate::message::to_payload;

    #[derive(Debug, Deserialize, Validate)]
    #[serde(rename_all = "camelCase")]
    struct ShowComment {
        #[validate(required(message = "Missing entry id."))]
        entry_id: Option<i64>,
        #[validate(required(message = "Missing comment id."))]
        comment_id: Option<i64>,
    }

    #[derive(Debug, Deserialize, Validate)]
    struct Body {
        #[validate(length(min = 1))]
        body: String,
    }

    fn message(err: WsError) -> String {
        match err {
            WsError::Exception(e) => e.to_string(),
            WsError::Internal(e) => panic!("internal: {e}"),
        }
    }

    fn data(json: serde_json::Value) -> Payload {
        to_payload(&json).unwrap()
    }

    #[test]
    fn wrong_type_names_the_field() {
        let err =
            parse::<ShowComment>(&data(serde_json::json!({"entryId": "x"})), &[]).unwrap_err();
        assert_eq!(message(err), r#"Invalid entryId: invalid type: string "x", expected i64"#);
    }

    #[test]
    fn missing_field_is_named() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Strict {
            id: i64,
        }
        let err = parse::<Strict>(&data(serde_json::json!({})), &[]).unwrap_err();
        assert_eq!(message(err), "Invalid data: missing field `id`");
    }

    #[test]
    fn validation_uses_custom_messages_then_field_codes() {
        let v = ShowComment { entry_id: Some(1), comment_id: None };
        assert_eq!(describe_validation(&v.validate().unwrap_err()), "Missing comment id.");
        let v = ShowComment { entry_id: None, comment_id: None };
        assert_eq!(
            describe_validation(&v.validate().unwrap_err()),
            "Missing comment id. Missing entry id."
        );
        let b = Body { body: String::new() };
        assert_eq!(describe_validation(&b.validate().unwrap_err()), "body must not be empty.");
    }

    #[test]
    fn fields_are_named_as_json_clients_write_them() {
        assert_eq!(camel_case("entry_id"), "entryId");
        assert_eq!(camel_case("_private_field"), "_privateField");
        assert_eq!(camel_case("body"), "body");
    }
}
