//! An [AsyncAPI 3.0](https://www.asyncapi.com/docs/reference/specification/v3.0.0) document
//! from an app's [`Description`]: a channel per namespace, an operation per handler (what
//! clients send, `receive` from the server's side, with its reply: the answer and the
//! exceptions) and per pushed event (`send`), messages with their payload schemas, and the
//! servers and security schemes the app names (the core knows no transport, so the app says
//! where its adapters listen and how its middleware reads tokens).
//!
//! ```
//! use serde_json::json;
//! use wsgate::asyncapi::AsyncApi;
//!
//! # fn doc(app: &wsgate::App) -> serde_json::Value {
//! AsyncApi::new("chat", "1.0.0")
//!     .server("websocket", json!({ "host": "localhost:3000", "protocol": "ws", "pathname": "/ws" }))
//!     .document(&app.description())
//! # }
//! ```

use serde_json::{Map, Value, json};

use crate::describe::{Answer, Description, HandlerDescription, NamespaceDescription};

/// The AsyncAPI version written.
pub const VERSION: &str = "3.0.0";

/// What the document says beyond the gateways: title, servers, security schemes.
#[derive(Clone, Debug, Default)]
pub struct AsyncApi {
    title: String,
    version: String,
    description: Option<String>,
    servers: Map<String, Value>,
    security_schemes: Map<String, Value>,
}

impl AsyncApi {
    /// A document titled `title`, for version `version` of the application.
    pub fn new(title: impl Into<String>, version: impl Into<String>) -> Self {
        Self { title: title.into(), version: version.into(), ..Self::default() }
    }

    /// The application's description (CommonMark).
    #[must_use]
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// A server (an AsyncAPI Server Object: `host`, `protocol`, `pathname`, `description`,
    /// `security`), under `id`. Every channel is served by every server.
    #[must_use]
    pub fn server(mut self, id: impl Into<String>, server: Value) -> Self {
        self.servers.insert(id.into(), server);
        self
    }

    /// A security scheme (an AsyncAPI Security Scheme Object) under `id`, for servers to
    /// reference as `{"$ref": "#/components/securitySchemes/<id>"}`.
    #[must_use]
    pub fn security_scheme(mut self, id: impl Into<String>, scheme: Value) -> Self {
        self.security_schemes.insert(id.into(), scheme);
        self
    }

    /// The document.
    pub fn document(&self, description: &Description) -> Value {
        let mut channels = Map::new();
        let mut operations = Map::new();
        let servers: Vec<Value> =
            self.servers.keys().map(|id| json!({ "$ref": format!("#/servers/{id}") })).collect();
        for ns in &description.namespaces {
            let channel_id = channel_id(ns.namespace.as_str());
            let (channel, ops) = channel(ns, &channel_id, &servers);
            channels.insert(channel_id, channel);
            operations.extend(ops);
        }
        let mut schemas: Map<String, Value> =
            description.schemas.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        schemas.insert(EXCEPTION_SCHEMA.to_owned(), exception_schema());
        let mut info = json!({ "title": self.title, "version": self.version });
        if let Some(text) = &self.description {
            info["description"] = json!(text);
        }
        let mut components = json!({ "schemas": schemas });
        if !self.security_schemes.is_empty() {
            components["securitySchemes"] = Value::Object(self.security_schemes.clone());
        }
        json!({
            "asyncapi": VERSION,
            "info": info,
            "defaultContentType": "application/json",
            "servers": self.servers,
            "channels": channels,
            "operations": operations,
            "components": components,
        })
    }
}

/// The schema every exception payload has: Nest's `{status, message, cause}`.
pub const EXCEPTION_SCHEMA: &str = "WsExceptionBody";

fn exception_schema() -> Value {
    json!({
        "type": "object",
        "description": "What a handler's exception sends: the `exception` event, or the acknowledgement when the message asked for one.",
        "required": ["status", "message", "cause"],
        "properties": {
            "status": { "type": "string", "const": "error" },
            "message": { "description": "What went wrong, for people; usually a string." },
            "cause": {
                "type": "object",
                "required": ["pattern", "data"],
                "properties": {
                    "pattern": { "type": "string", "description": "The event that failed." },
                    "data": { "description": "The data the client sent." },
                },
            },
        },
    })
}

/// `/` → `root`, `/chat` → `chat`, `/a/b` → `a_b`: a key AsyncAPI accepts.
pub fn channel_id(namespace: &str) -> String {
    let id = key(namespace.trim_start_matches('/'));
    if id.is_empty() { "root".to_owned() } else { id }
}

/// An event name as a map key: letters, digits, `.`, `-`, `_`.
fn key(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' })
        .collect()
}

fn reference(channel_id: &str, message: &str) -> Value {
    json!({ "$ref": format!("#/channels/{channel_id}/messages/{message}") })
}

fn message(event: &str, summary: Option<&str>, payload: &Value) -> Value {
    let mut m = json!({ "name": event, "title": event, "payload": payload });
    if let Some(summary) = summary {
        m["summary"] = json!(summary);
    }
    m
}

fn channel(
    ns: &NamespaceDescription,
    channel_id: &str,
    servers: &[Value],
) -> (Value, Map<String, Value>) {
    let mut messages = Map::new();
    let mut operations = Map::new();
    let exception_ref = json!({ "$ref": format!("#/components/schemas/{EXCEPTION_SCHEMA}") });
    messages.insert(
        "exception".to_owned(),
        message("exception", Some("A handler failed (Nest's WsException)."), &exception_ref),
    );
    let prefix = if channel_id == "root" { String::new() } else { format!("{channel_id}.") };
    let handler_ids: Vec<String> =
        ns.handlers.iter().map(|h| format!("{prefix}{}", key(h.event.as_str()))).collect();
    for (handler, op_id) in ns.handlers.iter().zip(&handler_ids) {
        let (msgs, op) = handler_operation(handler, channel_id, &exception_ref);
        messages.extend(msgs);
        operations.insert(op_id.clone(), op);
    }
    for push in &ns.pushes {
        let msg_key = key(push.event.as_str());
        let msg_key =
            if messages.contains_key(&msg_key) { format!("{msg_key}.push") } else { msg_key };
        let summary = push.summary.clone().unwrap_or_else(|| {
            "Pushed by the server to the connections it concerns (a room, everyone).".to_owned()
        });
        messages.insert(
            msg_key.clone(),
            message(push.event.as_str(), Some(&summary), &push.payload.json),
        );
        let mut op_id = format!("{prefix}{}", key(push.event.as_str()));
        if handler_ids.contains(&op_id) {
            op_id.push_str(".push");
        }
        operations.insert(
            op_id,
            json!({
                "action": "send",
                "channel": { "$ref": format!("#/channels/{channel_id}") },
                "summary": summary,
                "messages": [reference(channel_id, &msg_key)],
            }),
        );
    }
    let mut channel = json!({
        "address": ns.namespace.as_str(),
        "title": format!("Namespace {}", ns.namespace),
        "description": "A Socket.IO namespace; for plain WebSocket, the path connected to.",
        "messages": messages,
    });
    if !servers.is_empty() {
        channel["servers"] = json!(servers);
    }
    (channel, operations)
}

/// The messages of one handler (what the client sends, the answer, the declared exceptions)
/// and its operation.
fn handler_operation(
    h: &HandlerDescription,
    channel_id: &str,
    exception_ref: &Value,
) -> (Map<String, Value>, Value) {
    let event = h.event.as_str();
    let base = key(event);
    let mut messages = Map::new();
    let data = h.data.as_ref().map_or_else(
        || json!({ "description": "No data is read; any value is ignored." }),
        |d| d.json.clone(),
    );
    messages.insert(base.clone(), message(event, h.summary.as_deref(), &data));
    let mut replies = Vec::new();
    let mut op = json!({
        "action": "receive",
        "channel": { "$ref": format!("#/channels/{channel_id}") },
        "messages": [reference(channel_id, &base)],
    });
    if let Some(summary) = &h.summary {
        op["summary"] = json!(summary);
    }
    if let Some(text) = &h.description {
        op["description"] = json!(text);
    }
    match &h.answer {
        Answer::Event { event: reply, payload } => {
            let k = format!("{base}.reply");
            let summary = format!("The reply to `{event}`, as the event `{reply}`.");
            messages.insert(k.clone(), message(reply.as_str(), Some(&summary), &payload.json));
            replies.push(reference(channel_id, &k));
        }
        Answer::Ack { payload } => {
            let k = format!("{base}.ack");
            let summary = format!(
                "The answer to `{event}`, sent to the client's acknowledgement (Socket.IO's ack callback; over plain WebSocket the `ack` frame answering a message with an `id`)."
            );
            messages.insert(k.clone(), message(event, Some(&summary), &payload.json));
            replies.push(reference(channel_id, &k));
        }
        Answer::Nothing => {
            op["x-answer"] = json!("nothing");
        }
        Answer::Unknown => {
            op["x-answer"] = json!("undocumented");
        }
    }
    if h.exceptions.is_empty() {
        replies.push(reference(channel_id, "exception"));
    } else {
        let k = format!("{base}.exception");
        let mut payload = json!({
            "allOf": [exception_ref, {
                "type": "object",
                "properties": {
                    "message": { "examples": h.exceptions },
                    "cause": { "type": "object", "properties": { "pattern": { "const": event } } },
                },
            }],
        });
        payload["description"] = json!(format!(
            "The exceptions `{event}` declares: {}; validation messages name the field.",
            h.exceptions.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ")
        ));
        let summary = format!("`{event}` failed.");
        messages.insert(k.clone(), message("exception", Some(&summary), &payload));
        replies.push(reference(channel_id, &k));
    }
    op["reply"] = json!({
        "channel": { "$ref": format!("#/channels/{channel_id}") },
        "messages": replies,
    });
    (messages, op)
}
