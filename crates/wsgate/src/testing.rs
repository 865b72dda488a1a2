//! An in-process client for testing gateways without sockets: build the app, connect with a
//! handshake (query, auth payload, headers, peer), send events, and await what the connection
//! is sent — replies, acks, exceptions, room pushes — then disconnect. Deterministic: a
//! message is handled when [`TestClient::emit`] returns, and what it answered is queued.
//!
//! ```
//! use serde_json::json;
//! use wsgate::testing::{Received, TestClient};
//! use wsgate::{App, Data, WsResponse, gateway};
//!
//! struct Echo;
//!
//! #[gateway]
//! impl Echo {
//!     #[subscribe_message("echo")]
//!     async fn echo(&self, Data(text): Data<String>) -> WsResponse<String> {
//!         WsResponse::new("echo", text)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let app = App::builder().gateway(Echo).build().await.unwrap();
//! let mut client = TestClient::builder(&app).connect().await.unwrap();
//! client.emit("echo", json!("hi")).await;
//! assert_eq!(client.next().await, Some(Received::event("echo", json!("hi"))));
//! // Ask for an ack: the handler's plain value, or the exception.
//! let unknown = client.request("nope", json!({})).await;
//! assert_eq!(unknown.unwrap_err()["message"], "There is no handler for event 'nope'.");
//! client.disconnect().await;
//! # }
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde::Serialize;
use serde_json::Value;

use crate::adapter::{Direct, Inbound, Outbound, OutboundRx, to_payload};
use crate::app::App;
use crate::connection::Connection;
use crate::handshake::{Handshake, Refusal};
use crate::names::{AckId, Namespace};
use crate::recovery::SessionRequest;

/// How long [`TestClient::next`] waits for something to arrive.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(2);

/// Something the connection was sent.
#[derive(Clone, Debug, PartialEq)]
pub enum Received {
    /// An event: a handler's `WsResponse`, or an emit to the connection, its room or everyone.
    Event {
        /// The event's name.
        event: String,
        /// Its data.
        data: Value,
        /// Its offset in the namespace's history, with recovery on.
        offset: Option<String>,
    },
    /// The ack of message `id`.
    Ack {
        /// The id the client gave.
        id: AckId,
        /// The handler's value.
        data: Value,
    },
    /// An `exception` (with the id of the message that caused it, if it asked for an ack).
    Exception {
        /// The message's id.
        id: Option<AckId>,
        /// `{status, message, cause}`.
        data: Value,
    },
    /// An event the server sent asking for an answer ([`Connection::emit_with_ack`]):
    /// answer it with [`TestClient::answer`].
    Request {
        /// The id to answer with.
        id: u64,
        /// The event's name.
        event: String,
        /// Its data.
        data: Value,
    },
}

impl Received {
    /// An event without an offset, for comparisons.
    pub fn event(event: &str, data: Value) -> Self {
        Self::Event { event: event.to_owned(), data, offset: None }
    }
}

/// Connects a [`TestClient`]: the handshake's namespace, query, auth payload, headers and peer.
#[derive(Debug)]
pub struct TestClientBuilder<'a> {
    app: &'a App,
    handshake: Handshake,
}

impl TestClientBuilder<'_> {
    /// The namespace (default `/`).
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<Namespace>) -> Self {
        self.handshake.namespace = namespace.into();
        self
    }

    /// The query string, without `?` (`token=…`).
    #[must_use]
    pub fn query(mut self, query: impl Into<String>) -> Self {
        self.handshake.query = Some(query.into());
        self
    }

    /// The Socket.IO `auth` payload (`{"token": …}`).
    #[must_use]
    pub fn auth(mut self, auth: Value) -> Self {
        self.handshake.auth = Some(auth);
        self
    }

    /// A header of the upgrade request (`authorization`, `origin`, …). Invalid names or values
    /// are ignored.
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> Self {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            self.handshake.headers.append(name, value);
        }
        self
    }

    /// The peer's address.
    #[must_use]
    pub fn peer(mut self, peer: SocketAddr) -> Self {
        self.handshake.peer = Some(peer);
        self
    }

    /// Asks for a recovery session (or to recover one), as a transport would.
    #[must_use]
    pub fn session(mut self, session: SessionRequest) -> Self {
        self.handshake.session = session;
        self
    }

    /// Runs the connection middleware and, if it accepts, opens the connection (its
    /// `on_connect` hooks run).
    pub async fn connect(self) -> Result<TestClient, Refusal> {
        let accepted = self.app.handshake(self.handshake).await?;
        let (conn, rx) = accepted.open().await;
        Ok(TestClient {
            app: self.app.clone(),
            conn,
            rx: Some(rx),
            next_ack: 0,
            pending: Vec::new(),
        })
    }
}

/// A connection to an [`App`] driven in memory, as an adapter would drive it.
#[derive(Debug)]
pub struct TestClient {
    app: App,
    conn: Connection,
    rx: Option<OutboundRx>,
    next_ack: u64,
    /// Received while [`Self::request`] waited for its answer, for [`Self::next`].
    pending: Vec<Received>,
}

impl TestClient {
    /// A client of `app`; [`TestClientBuilder::connect`] connects it.
    pub fn builder(app: &App) -> TestClientBuilder<'_> {
        TestClientBuilder { app, handshake: Handshake::new(Namespace::root(), "test") }
    }

    /// The server's side of the connection (its id, rooms, extensions).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Sends `event` with `data` and waits until it is handled (its answer, if any, is then
    /// waiting in [`Self::next`]).
    pub async fn emit<T: Serialize>(&mut self, event: &str, data: T) {
        self.app.dispatch(&self.conn, inbound(event, &data)).await;
    }

    /// Sends `event` with `data` asking for an ack with the given `id`, and waits until it is
    /// handled: its answer ([`Received::Ack`] or [`Received::Exception`] with this `id`, or
    /// nothing when the handler returns no value) is then waiting in [`Self::next`]. For ids a
    /// test chooses (text ids, ids sent twice); [`Self::request`] numbers its own from 1.
    pub async fn emit_with_ack_id<T: Serialize>(&mut self, event: &str, data: T, id: AckId) {
        self.app.dispatch(&self.conn, inbound(event, &data).with_ack(id)).await;
    }

    /// Sends `event` with `data` asking for an ack; the ack's value, or the exception's data.
    /// Events received meanwhile stay for [`Self::next`].
    pub async fn request<T: Serialize>(&mut self, event: &str, data: T) -> Result<Value, Value> {
        self.next_ack += 1;
        let id = AckId::Number(self.next_ack);
        self.emit_with_ack_id(event, data, id.clone()).await;
        let mut kept = Vec::new();
        let answer = loop {
            match self.next().await {
                Some(Received::Ack { id: got, data }) if got == id => break Ok(data),
                Some(Received::Exception { id: Some(got), data }) if got == id => break Err(data),
                Some(other) => kept.push(other),
                None => break Err(Value::String(format!("no answer to {event}"))),
            }
        };
        self.pending.splice(0..0, kept);
        answer
    }

    /// The next thing the connection was sent, waiting at most [`DEFAULT_WAIT`].
    pub async fn next(&mut self) -> Option<Received> {
        self.next_within(DEFAULT_WAIT).await
    }

    /// The next thing the connection was sent, waiting at most `wait`; `None` if nothing came.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Received> {
        if !self.pending.is_empty() {
            return Some(self.pending.remove(0));
        }
        let rx = self.rx.as_mut()?;
        let item = tokio::time::timeout(wait, rx.recv()).await.ok()?;
        received(item, &mut self.pending);
        (!self.pending.is_empty()).then(|| self.pending.remove(0))
    }

    /// Everything sent so far, without waiting.
    pub fn drain(&mut self) -> Vec<Received> {
        let mut all: Vec<Received> = self.pending.drain(..).collect();
        if let Some(rx) = self.rx.as_mut() {
            while let Some(item) = rx.try_recv() {
                received(item, &mut all);
            }
        }
        all
    }

    /// Waits for event `name` (skipping anything else) and returns its data.
    pub async fn event(&mut self, name: &str) -> Option<Value> {
        loop {
            match self.next().await? {
                Received::Event { event, data, .. } if event == name => return Some(data),
                _ => {}
            }
        }
    }

    /// Answers the server's request `id` (a [`Received::Request`]) with `data`, as a client's
    /// ack would: `false` when nothing waits for it (too late, or never asked).
    pub fn answer<T: Serialize>(&mut self, id: u64, data: T) -> bool {
        let data = to_payload(&data).unwrap_or_else(|_| crate::adapter::null_payload());
        self.app.answered(&self.conn, id, data)
    }

    /// Disconnects: the connection leaves its rooms and the `on_disconnect` hooks run.
    pub async fn disconnect(mut self) {
        self.app.disconnect(&self.conn).await;
        self.rx = None;
    }
}

/// A message as an adapter would decode it (`null` data if `data` does not serialize).
fn inbound<T: Serialize>(event: &str, data: &T) -> Inbound {
    Inbound::new(event, to_payload(data).unwrap_or_else(|_| crate::adapter::null_payload()))
}

/// What a queue item is for the client, added to `into`: an event each, or the direct message.
fn received(item: Outbound, into: &mut Vec<Received>) {
    let parse = |raw: &str| serde_json::from_str(raw).unwrap_or(Value::Null);
    into.extend(item.emissions().iter().map(|e| Received::Event {
        event: e.event().to_string(),
        data: parse(e.data().get()),
        offset: e.offset().map(str::to_owned),
    }));
    if let Outbound::Direct(direct) = item {
        into.push(match *direct {
            Direct::Ack { id, data, .. } => Received::Ack { id, data: parse(data.get()) },
            Direct::Exception { id, data } => Received::Exception { id, data: parse(data.get()) },
            Direct::Request { id, event, data, .. } => {
                Received::Request { id, event: event.to_string(), data: parse(data.get()) }
            }
        });
    }
}
