//! What the gateways serve, described from the code: per namespace, each handler's data, its
//! answer (a reply event or an ack, with their types) and its declared exceptions, and the
//! events the gateways push. [`App::description`](crate::App::description) gathers it;
//! [`crate::asyncapi`] writes it as an AsyncAPI document and [`crate::typescript`] as
//! TypeScript types for clients.
//!
//! `#[gateway]` reads the description off the handlers' signatures: the `T` of `Data<T>` or
//! `Valid<T>`, the return type (`WsResponse<T>` replies with the handler's own event unless
//! `#[subscribe_message("e", reply = "other")]` says otherwise; `Ack<T>` and plain values go to
//! the ack; `()` answers nothing; `Result` and `Option` are looked through), the doc comment,
//! `#[throws("…")]`, and the gateway's `pushes("event": Type, …)`. Schemas are those of
//! [`utoipa::ToSchema`], the derive an axum API uses for OpenAPI, so one type has one schema in
//! both documents. A type without `ToSchema` still works; it is described as any JSON value and
//! [`Description::undocumented`] lists it.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use crate::names::{EventName, Namespace};

/// Where named schemas live, in AsyncAPI as in OpenAPI.
pub const SCHEMA_REF_PREFIX: &str = "#/components/schemas/";

/// A payload's JSON Schema. Named types (structs and enums deriving `ToSchema`) are references,
/// `{"$ref": "#/components/schemas/Comment"}`, into [`Description::schemas`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Schema {
    /// The schema.
    pub json: Value,
    /// False when the type has no schema (any JSON value stands in).
    pub documented: bool,
    #[serde(skip)]
    named: Vec<(String, Value)>,
}

impl Schema {
    /// The schema of `T`, as utoipa derives it.
    pub fn of<T: utoipa::ToSchema>() -> Self {
        let mut deps = Vec::new();
        T::schemas(&mut deps);
        let mut named: Vec<(String, Value)> =
            deps.into_iter().map(|(name, schema)| (name, to_json(&schema))).collect();
        let mut json = to_json(&T::schema());
        let name = T::name();
        if is_named(&name) && is_composite(&json) {
            named.push((name.to_string(), json));
            json = json!({ "$ref": format!("{SCHEMA_REF_PREFIX}{name}") });
        }
        Self { json, documented: true, named }
    }

    /// A schema written by hand (named schemas it references must be registered elsewhere).
    pub fn from_json(json: Value) -> Self {
        Self { json, documented: true, named: Vec::new() }
    }

    /// Any JSON value: the stand-in for a type without a schema.
    pub fn any() -> Self {
        Self { json: json!({}), documented: false, named: Vec::new() }
    }
}

fn to_json<T: Serialize>(schema: &T) -> Value {
    // utoipa's schema types serialise to JSON without fail; `{}` (any value) is the safe
    // reading should one ever not.
    serde_json::to_value(schema).unwrap_or_else(|_| json!({}))
}

/// A type name worth a component: `Comment`, not `Vec`, `Option` or `String`.
fn is_named(name: &str) -> bool {
    const WRAPPERS: [&str; 14] = [
        "Option",
        "Vec",
        "Box",
        "Arc",
        "Rc",
        "Cow",
        "HashMap",
        "BTreeMap",
        "HashSet",
        "BTreeSet",
        "VecDeque",
        "LinkedList",
        "Value",
        "String",
    ];
    name.starts_with(|c: char| c.is_ascii_uppercase())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !WRAPPERS.contains(&name)
}

fn is_composite(json: &Value) -> bool {
    ["properties", "oneOf", "anyOf", "allOf", "enum"].iter().any(|key| json.get(key).is_some())
}

/// What a handler sends back.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Answer {
    /// Not described (a handler registered by hand without saying).
    #[default]
    Unknown,
    /// Nothing.
    Nothing,
    /// An event to the client (`WsResponse`).
    Event {
        /// The reply's event name.
        event: EventName,
        /// Its data.
        payload: Schema,
    },
    /// A value for the client's acknowledgement.
    Ack {
        /// The value.
        payload: Schema,
    },
}

/// One handler (Nest's `@SubscribeMessage`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HandlerDescription {
    /// The event it handles.
    pub event: EventName,
    /// One line: the doc comment's first paragraph.
    pub summary: Option<String>,
    /// The whole doc comment.
    pub description: Option<String>,
    /// The data it reads; `None` when it reads none.
    pub data: Option<Schema>,
    /// What it sends back.
    pub answer: Answer,
    /// Messages of the exceptions it declares (`#[throws]`).
    pub exceptions: Vec<String>,
}

impl HandlerDescription {
    pub(crate) fn new(event: EventName) -> Self {
        Self {
            event,
            summary: None,
            description: None,
            data: None,
            answer: Answer::Unknown,
            exceptions: Vec::new(),
        }
    }
}

/// An event a gateway pushes on its own (to a room, to everyone, to one connection).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushDescription {
    /// The event name.
    pub event: EventName,
    /// One line about it.
    pub summary: Option<String>,
    /// Its data.
    pub payload: Schema,
}

/// The handlers and pushes of one namespace, sorted by event.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NamespaceDescription {
    /// The namespace (the plain WebSocket path).
    pub namespace: Namespace,
    /// What clients send.
    pub handlers: Vec<HandlerDescription>,
    /// What the gateways push.
    pub pushes: Vec<PushDescription>,
}

/// Every gateway of an app.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Description {
    /// Namespaces, sorted.
    pub namespaces: Vec<NamespaceDescription>,
    /// The named schemas the payloads reference, by name.
    pub schemas: BTreeMap<String, Value>,
}

impl Description {
    /// Gathers the named schemas, sorts, and turns inline copies of named schemas into
    /// references.
    pub(crate) fn new(mut namespaces: Vec<NamespaceDescription>) -> Self {
        namespaces.sort_by(|a, b| a.namespace.cmp(&b.namespace));
        let mut schemas = BTreeMap::new();
        let mut add = |schema: &Schema| {
            for (name, json) in &schema.named {
                schemas.entry(name.clone()).or_insert_with(|| json.clone());
            }
        };
        for ns in &mut namespaces {
            ns.handlers.sort_by(|a, b| a.event.cmp(&b.event));
            ns.pushes.sort_by(|a, b| a.event.cmp(&b.event));
            for handler in &ns.handlers {
                handler.data.iter().for_each(&mut add);
                if let Answer::Event { payload, .. } | Answer::Ack { payload } = &handler.answer {
                    add(payload);
                }
            }
            ns.pushes.iter().for_each(|push| add(&push.payload));
        }
        let named: Vec<(String, Value)> =
            schemas.iter().map(|(name, json)| (name.clone(), json.clone())).collect();
        for (name, json) in &mut schemas {
            refer_children(json, &named, name);
        }
        for ns in &mut namespaces {
            for handler in &mut ns.handlers {
                if let Some(data) = &mut handler.data {
                    refer(&mut data.json, &named, "");
                }
                if let Answer::Event { payload, .. } | Answer::Ack { payload } = &mut handler.answer
                {
                    refer(&mut payload.json, &named, "");
                }
            }
            for push in &mut ns.pushes {
                refer(&mut push.payload.json, &named, "");
            }
        }
        Self { namespaces, schemas }
    }

    /// What is not fully described: handlers whose answer is unknown, and data, replies, acks
    /// or pushes whose type has no schema. Empty when the description covers every event.
    pub fn undocumented(&self) -> Vec<String> {
        let mut gaps = Vec::new();
        for ns in &self.namespaces {
            let at = |what: &str, event: &EventName| format!("{} {what} {event}", ns.namespace);
            for handler in &ns.handlers {
                if handler.data.as_ref().is_some_and(|d| !d.documented) {
                    gaps.push(at("data of", &handler.event));
                }
                match &handler.answer {
                    Answer::Unknown => gaps.push(at("answer of", &handler.event)),
                    Answer::Event { payload, .. } | Answer::Ack { payload }
                        if !payload.documented =>
                    {
                        gaps.push(at("answer of", &handler.event));
                    }
                    _ => {}
                }
            }
            for push in &ns.pushes {
                if !push.payload.documented {
                    gaps.push(at("push", &push.event));
                }
            }
        }
        gaps
    }

    /// The namespace's description, if some gateway serves it.
    pub fn namespace(&self, namespace: &str) -> Option<&NamespaceDescription> {
        self.namespaces.iter().find(|ns| ns.namespace.as_str() == namespace)
    }
}

/// Replaces `json`, or any schema inside it, that equals a named schema (other than `own`) by a
/// reference to it.
fn refer(json: &mut Value, named: &[(String, Value)], own: &str) {
    if let Some((name, _)) = named.iter().find(|(name, body)| name != own && body == json) {
        *json = json!({ "$ref": format!("{SCHEMA_REF_PREFIX}{name}") });
        return;
    }
    refer_children(json, named, own);
}

/// As [`refer`], for what is inside `json` only.
fn refer_children(json: &mut Value, named: &[(String, Value)], own: &str) {
    match json {
        Value::Object(map) => map.values_mut().for_each(|v| refer(v, named, own)),
        Value::Array(items) => items.iter_mut().for_each(|v| refer(v, named, own)),
        _ => {}
    }
}

/// Support for `#[gateway]`: picks [`Schema::of`] for types with a schema and
/// [`Schema::any`] for the others (autoref specialisation on a concrete type).
#[doc(hidden)]
pub mod probe {
    use std::marker::PhantomData;

    use super::Schema;

    /// A type, probed for a schema.
    pub struct Probe<T>(PhantomData<fn() -> T>);

    impl<T> Probe<T> {
        /// The probe.
        #[allow(clippy::new_without_default)]
        pub fn new() -> Self {
            Self(PhantomData)
        }
    }

    /// Picked when `T: ToSchema`.
    pub trait ViaSchema {
        /// `T`'s schema.
        fn schema(&self) -> Schema;
    }

    impl<T: utoipa::ToSchema> ViaSchema for Probe<T> {
        fn schema(&self) -> Schema {
            Schema::of::<T>()
        }
    }

    /// Picked otherwise.
    pub trait ViaAny {
        /// Any value.
        fn schema(&self) -> Schema;
    }

    impl<T> ViaAny for &Probe<T> {
        fn schema(&self) -> Schema {
            Schema::any()
        }
    }
}
