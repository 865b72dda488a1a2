//! TypeScript for clients, from an app's [`Description`]: an interface per named schema,
//! `ClientToServerEvents` / `ServerToClientEvents` for `socket.io-client`'s
//! `Socket<ServerToClientEvents, ClientToServerEvents>`, and `GatewaySocket`, a small plain
//! WebSocket client typed by the same maps (`{event, data}` frames out; replies, pushes, `ack`
//! and `exception` frames in).
//!
//! The namespace `/` gets those names; another namespace's maps are prefixed with its name
//! (`/chat` → `ChatClientToServerEvents`).
//!
//! JSON Schema maps to TypeScript as utoipa writes it: `$ref` to the interface's name, objects
//! to object types (a property outside `required` is optional), `type` lists, `oneOf` and
//! `anyOf` to unions, `allOf` to intersections, `enum` and `const` to literals, `{}` to
//! `unknown`; `integer` is `number`.

use std::fmt::Write as _;

use serde_json::Value;

use crate::asyncapi::EXCEPTION_SCHEMA;
use crate::describe::{Answer, Description, NamespaceDescription, SCHEMA_REF_PREFIX};

/// The module, headed by `header` (e.g. how to regenerate it).
pub fn module(description: &Description, header: &str) -> String {
    let mut out = String::new();
    for line in header.lines() {
        let _ = writeln!(out, "// {line}");
    }
    out.push('\n');
    for (name, schema) in &description.schemas {
        declare(&mut out, name, schema);
    }
    out.push_str(EXCEPTION_BODY);
    for ns in &description.namespaces {
        events(&mut out, ns);
    }
    if description.namespace("/").is_some() {
        out.push_str(CLIENT);
    } else {
        // The maps' default names belong to `/`; without it, the client names its maps.
        out.push_str(
            &CLIENT.replace("<Out = ClientToServerEvents, In = ServerToClientEvents>", "<Out, In>"),
        );
    }
    out
}

const EXCEPTION_BODY: &str = r#"/** What a handler's exception sends: Nest's `{status, message, cause}`. */
export interface WsExceptionBody {
  status: "error";
  /** What went wrong, for people; usually a string. */
  message: unknown;
  cause: {
    /** The event that failed. */
    pattern: string;
    /** The data the client sent. */
    data: unknown;
  };
}

"#;

fn doc(out: &mut String, indent: &str, schema: &Value) {
    if let Some(text) = schema.get("description").and_then(Value::as_str) {
        comment(out, indent, text);
    }
}

fn comment(out: &mut String, indent: &str, text: &str) {
    let text = text.replace("*/", "* /");
    let lines: Vec<&str> = text.trim().lines().collect();
    match lines.as_slice() {
        [] => {}
        [one] => {
            let _ = writeln!(out, "{indent}/** {one} */");
        }
        many => {
            let _ = writeln!(out, "{indent}/**");
            for line in many {
                let _ = writeln!(out, "{indent} * {line}");
            }
            let _ = writeln!(out, "{indent} */");
        }
    }
}

fn declare(out: &mut String, name: &str, schema: &Value) {
    doc(out, "", schema);
    if schema.get("properties").is_some() && schema.get("additionalProperties").is_none() {
        let _ = writeln!(out, "export interface {name} {}\n", object(schema, ""));
    } else {
        let _ = writeln!(out, "export type {name} = {};\n", ts(schema, ""));
    }
}

fn object(schema: &Value, indent: &str) -> String {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = String::from("{\n");
    let inner = format!("{indent}  ");
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            doc(&mut out, &inner, prop);
            let optional = if required.contains(&name.as_str()) { "" } else { "?" };
            let _ = writeln!(out, "{inner}{}{optional}: {};", property(name), ts(prop, &inner));
        }
    }
    if let Some(extra) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        let _ = writeln!(out, "{inner}[key: string]: {};", ts(extra, &inner));
    }
    out.push_str(indent);
    out.push('}');
    out
}

fn property(name: &str) -> String {
    let plain = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if plain { name.to_owned() } else { serde_json::to_string(name).unwrap_or_default() }
}

fn union(parts: Vec<String>, sep: &str) -> String {
    let mut unique: Vec<String> = Vec::new();
    for p in parts {
        if !unique.contains(&p) {
            unique.push(p);
        }
    }
    match unique.len() {
        0 => "unknown".to_owned(),
        1 => unique.remove(0),
        _ => unique
            .into_iter()
            .map(|p| if p.contains(' ') && !p.starts_with('{') { format!("({p})") } else { p })
            .collect::<Vec<_>>()
            .join(sep),
    }
}

/// The TypeScript type of a JSON Schema.
pub fn ts(schema: &Value, indent: &str) -> String {
    let Some(map) = schema.as_object() else {
        // `true` allows anything, `false` nothing.
        return if schema == &Value::Bool(false) { "never" } else { "unknown" }.to_owned();
    };
    if let Some(target) = map.get("$ref").and_then(Value::as_str) {
        return target.strip_prefix(SCHEMA_REF_PREFIX).unwrap_or("unknown").to_owned();
    }
    if let Some(value) = map.get("const") {
        return literal(value);
    }
    if let Some(values) = map.get("enum").and_then(Value::as_array) {
        return union(values.iter().map(literal).collect(), " | ");
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(items) = map.get(key).and_then(Value::as_array) {
            return union(items.iter().map(|s| ts(s, indent)).collect(), " | ");
        }
    }
    if let Some(items) = map.get("allOf").and_then(Value::as_array) {
        return union(items.iter().map(|s| ts(s, indent)).collect(), " & ");
    }
    let types: Vec<&str> = match map.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ if map.contains_key("properties") => vec!["object"],
        _ => return "unknown".to_owned(),
    };
    let parts = types
        .into_iter()
        .map(|t| match t {
            "string" => "string".to_owned(),
            "integer" | "number" => "number".to_owned(),
            "boolean" => "boolean".to_owned(),
            "null" => "null".to_owned(),
            "array" => {
                let item = map.get("items").map_or_else(|| "unknown".to_owned(), |i| ts(i, indent));
                if item.contains(' ') && !item.starts_with('{') {
                    format!("({item})[]")
                } else {
                    format!("{item}[]")
                }
            }
            "object" if map.contains_key("properties") => object(schema, indent),
            "object" => match map.get("additionalProperties").filter(|v| v.is_object()) {
                Some(values) => format!("Record<string, {}>", ts(values, indent)),
                None => "Record<string, unknown>".to_owned(),
            },
            _ => "unknown".to_owned(),
        })
        .collect();
    union(parts, " | ")
}

fn literal(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "unknown".to_owned())
}

/// `/` → ``, `/chat` → `Chat`, `/live-feed` → `LiveFeed`.
fn prefix(namespace: &str) -> String {
    namespace
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut cs = w.chars();
            cs.next().map(|c| c.to_ascii_uppercase().to_string() + cs.as_str()).unwrap_or_default()
        })
        .collect()
}

fn events(out: &mut String, ns: &NamespaceDescription) {
    let p = prefix(ns.namespace.as_str());
    let _ = writeln!(
        out,
        "/**\n * What clients send on the namespace `{}`: socket.io-client's `ClientToServerEvents`.\n * A handler that answers with an ack takes the callback; one that replies with an event does not.\n */",
        ns.namespace
    );
    let _ = writeln!(out, "export interface {p}ClientToServerEvents {{");
    let mut pushed: Vec<(String, String, Option<String>)> = Vec::new();
    for h in &ns.handlers {
        if let Some(summary) = &h.summary {
            comment(out, "  ", summary);
        }
        let data = h.data.as_ref().map_or_else(|| "unknown".to_owned(), |d| ts(&d.json, "  "));
        // No data: the argument may be left out, unless an ack callback follows it.
        let acks = matches!(h.answer, Answer::Ack { .. });
        let data_param = if h.data.is_some() || acks { "data" } else { "data?" };
        let signature = match &h.answer {
            Answer::Ack { payload } => format!(
                "({data_param}: {data}, ack: (answer: {}) => void) => void",
                ts(&payload.json, "  ")
            ),
            _ => format!("({data_param}: {data}) => void"),
        };
        let _ = writeln!(out, "  {}: {signature};", property(h.event.as_str()));
        if let Answer::Event { event, payload } = &h.answer {
            pushed.push((
                event.to_string(),
                format!("(data: {}) => void", ts(&payload.json, "  ")),
                Some(format!("The reply to `{}`.", h.event)),
            ));
        }
    }
    out.push_str("}\n\n");
    for push in &ns.pushes {
        pushed.push((
            push.event.to_string(),
            // With connection state recovery on, Socket.IO passes the event's offset last.
            format!("(data: {}, offset?: string) => void", ts(&push.payload.json, "  ")),
            push.summary.clone(),
        ));
    }
    pushed.push((
        "exception".to_owned(),
        format!("(data: {EXCEPTION_SCHEMA}) => void"),
        Some("A handler failed.".to_owned()),
    ));
    let _ = writeln!(
        out,
        "/** What the server sends on the namespace `{}`: socket.io-client's `ServerToClientEvents`. */",
        ns.namespace
    );
    let _ = writeln!(out, "export interface {p}ServerToClientEvents {{");
    let mut seen = Vec::new();
    for (event, signature, summary) in pushed {
        if seen.contains(&event) {
            continue;
        }
        if let Some(summary) = summary {
            comment(out, "  ", &summary);
        }
        let _ = writeln!(out, "  {}: {signature};", property(&event));
        seen.push(event);
    }
    out.push_str("}\n\n");
}

const CLIENT: &str = r#"/** The data an event of a `ClientToServerEvents` map takes. */
export type DataOf<F> = F extends (...args: infer A) => void ? A[0] : never;
/** The ack value an event of a `ClientToServerEvents` map answers with. */
export type AckOf<F> = F extends (...args: infer A) => void
  ? A extends [any, (answer: infer R) => void] ? R : never
  : never;
/** The events of a map that answer with an ack (their signature ends with the callback). */
export type AckEvents<M> = {
  [K in keyof M]: M[K] extends (...args: infer A) => void
    ? A extends [any, (answer: any) => void] ? K : never
    : never;
}[keyof M];

/** An exception the server answered a request with. */
export class GatewayException extends Error {
  readonly body: WsExceptionBody;

  constructor(body: WsExceptionBody) {
    super(typeof body.message === "string" ? body.message : JSON.stringify(body.message));
    this.name = "GatewayException";
    this.body = body;
  }
}

type Pending = { resolve: (value: any) => void; reject: (error: unknown) => void };

/**
 * A plain WebSocket client of the gateways, typed by the event maps:
 * `new GatewaySocket("ws://localhost:3000/ws?token=" + token)`, then `on`, `emit` and
 * `emitWithAck` as with socket.io-client. A frame out is `{event, data}` (with an `id` for an
 * ack); frames in are replies and pushes `{event, data}`, `{event: "ack", id, data}` and
 * `{event: "exception", id?, data}`. `WebSocketImpl` is for runtimes without a global
 * `WebSocket` (Node.js before 22: pass `ws`).
 */
export class GatewaySocket<Out = ClientToServerEvents, In = ServerToClientEvents> {
  readonly socket: WebSocket;
  /** Resolves when the socket is open; rejects if it closes first (e.g. a refused token). */
  readonly opened: Promise<void>;
  #nextId = 1;
  #pending = new Map<number, Pending>();
  #listeners = new Map<string, Set<(...args: any[]) => void>>();

  constructor(url: string | URL, WebSocketImpl: new (url: string | URL) => WebSocket = WebSocket) {
    this.socket = new WebSocketImpl(url);
    this.opened = new Promise((resolve, reject) => {
      this.socket.addEventListener("open", () => resolve());
      this.socket.addEventListener("error", () => reject(new Error("the connection failed")));
      this.socket.addEventListener("close", (e) => reject(new Error(`closed (${e.code})`)));
    });
    // Whoever does not wait for `opened` learns of a failure from `close`, not from an
    // unhandled rejection.
    this.opened.catch(() => {});
    this.socket.addEventListener("message", (m) => this.#receive(String(m.data)));
    this.socket.addEventListener("close", () => {
      for (const p of this.#pending.values()) p.reject(new Error("the connection closed"));
      this.#pending.clear();
    });
  }

  /** Calls `listener` with the data of every `event` frame (and its offset, if any). */
  on<E extends keyof In & string>(event: E, listener: In[E]): this {
    let set = this.#listeners.get(event);
    if (!set) this.#listeners.set(event, (set = new Set()));
    set.add(listener as (...args: any[]) => void);
    return this;
  }

  /** Stops calling `listener`. */
  off<E extends keyof In & string>(event: E, listener: In[E]): this {
    this.#listeners.get(event)?.delete(listener as (...args: any[]) => void);
    return this;
  }

  /** Sends `event` with `data`; its reply, if any, arrives as an event. */
  emit<E extends keyof Out & string>(event: E, data: DataOf<Out[E]>): void {
    this.socket.send(JSON.stringify({ event, data }));
  }

  /** Sends `event` with `data` and resolves with its ack, or rejects with its exception. */
  emitWithAck<E extends AckEvents<Out> & string>(event: E, data: DataOf<Out[E]>): Promise<AckOf<Out[E]>> {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.socket.send(JSON.stringify({ event, data, id }));
    });
  }

  /** Closes the connection (code 1000: a goodbye, its session is not kept for recovery). */
  close(): void {
    this.socket.close(1000);
  }

  #receive(text: string): void {
    let frame: { event?: string; id?: unknown; data?: unknown; offset?: string };
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    const pending = typeof frame.id === "number" ? this.#pending.get(frame.id) : undefined;
    if (pending && (frame.event === "ack" || frame.event === "exception")) {
      this.#pending.delete(frame.id as number);
      if (frame.event === "ack") pending.resolve(frame.data);
      else pending.reject(new GatewayException(frame.data as WsExceptionBody));
      return;
    }
    for (const listener of this.#listeners.get(frame.event ?? "") ?? []) {
      listener(frame.data, frame.offset);
    }
  }
}
"#;
