//! Brokers: room broadcasts and emits carried between server instances ([`Broker`],
//! implemented by `wsgate-redis`).
//!
//! A [`Server`] delivers every emit to its own connections at once. With a broker
//! ([`Server::with_broker`]) it also publishes the emit as an [`Envelope`], which the broker
//! hands to every *other* instance's [`Inbox`]; each of them delivers it to its own
//! connections. Every instance thus reaches its own clients once, and no client twice.
//!
//! Without a broker a server is alone: that is the in-process default. [`MemoryBroker`] links
//! several servers of one process (tests, or several apps in one binary); `wsgate-redis`
//! links processes through Redis pub/sub.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::args::Extras;
use crate::message::{Emission, Payload};
use crate::names::{ConnectionId, EventName, Namespace, RoomId};
use crate::recovery::Offset;
use crate::server::{Server, ServerInner};

/// Identifies one server instance; random, chosen when the server is made.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct NodeId(pub u64);

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Who an [`Envelope`] is for.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "to", rename_all = "camelCase")]
pub enum Recipients {
    /// The connections of a namespace (every namespace when `None`), optionally narrowed to a
    /// room, optionally leaving one connection out.
    Broadcast {
        /// The namespace; `None` for every namespace.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        namespace: Option<Namespace>,
        /// The room.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<RoomId>,
        /// A connection left out, typically the sender.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        except: Option<ConnectionId>,
        /// Connections tracking this presence key in the room left out (a user's other tabs),
        /// on every instance. Live delivery only: a replay after recovery does not know it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        except_key: Option<String>,
    },
    /// One connection, open on some instance.
    Connection {
        /// Its id (unique across instances).
        id: ConnectionId,
        /// Its namespace, when the emitting instance knows it (the connection is its own).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        namespace: Option<Namespace>,
    },
}

impl Recipients {
    /// The same recipients within `namespace` (a connection's namespace, when known).
    pub(crate) fn in_namespace(&self, namespace: Namespace) -> Self {
        match self {
            Self::Broadcast { room, except, except_key, .. } => Self::Broadcast {
                namespace: Some(namespace),
                room: room.clone(),
                except: *except,
                except_key: except_key.clone(),
            },
            Self::Connection { id, .. } => Self::Connection { id: *id, namespace: Some(namespace) },
        }
    }
}

/// An emit travelling between instances: where it came from, who it is for, and the event.
///
/// [`Envelope::to_json`] and [`Envelope::from_json`] give brokers a wire format; the data is
/// copied as JSON text, never re-serialised.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// The instance that published it (instances ignore their own).
    pub origin: NodeId,
    /// Who receives it.
    #[serde(flatten)]
    pub recipients: Recipients,
    /// The event.
    pub event: EventName,
    /// Its data.
    pub data: Payload,
    /// Several arguments, binary attachments (absent from the JSON when there are none).
    #[serde(default, skip_serializing_if = "Extras::is_plain")]
    pub extras: Extras,
}

impl Envelope {
    /// The emission it carries, and who it is for.
    pub fn into_parts(self) -> (Recipients, Arc<Emission>) {
        (self.recipients, Emission::with_extras(self.event, self.data, self.extras))
    }

    /// The envelope as JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        // Every field is a string, a number or already-valid JSON.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// An envelope from JSON bytes, as [`Envelope::to_json`] wrote them.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// Whether a broker currently reaches the other instances, and what it has carried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BrokerStatus {
    /// `true` while envelopes can be published and received.
    pub connected: bool,
    /// Envelopes published to other instances.
    pub published: u64,
    /// Envelopes received from other instances.
    pub received: u64,
    /// Envelopes that could not be published (the broker was down).
    pub dropped: u64,
    /// Times the broker lost its connection and made a new one.
    pub reconnects: u64,
}

/// Carries envelopes between server instances.
///
/// [`Broker::publish`] is called on the emitting task and must not block: queue the envelope
/// and send it from a task of your own. Delivery is at most once: an envelope published while
/// the broker is down may be dropped (count it in [`BrokerStatus::dropped`]); each instance
/// keeps serving its own connections meanwhile.
pub trait Broker: Send + Sync + 'static {
    /// Sends `envelope` to every other instance.
    fn publish(&self, envelope: Envelope);

    /// Starts handing envelopes of other instances to `inbox`. Called once, when the broker
    /// is given to a server; [`Inbox::deliver`] returns `false` once that server is gone.
    fn subscribe(&self, inbox: Inbox);

    /// Whether the broker is connected, and its counters.
    fn status(&self) -> BrokerStatus;

    /// Whether the broker is a shared log that orders and numbers every emit (Redis Streams).
    /// With connection state recovery on, a server then delivers its own emits too only when
    /// the broker hands them back ([`Inbox::deliver_logged`]), numbered by the log, so that
    /// every instance holds the same history with the same offsets. Default: `false`.
    fn is_log(&self) -> bool {
        false
    }

    /// Keeps a dropped connection's session record (opaque bytes) for `ttl`, for any instance
    /// to recover: log brokers implement it, so that a client whose instance died recovers on
    /// another. Default: nothing (sessions stay with their instance).
    fn keep_session(&self, _namespace: &Namespace, _id: &str, _record: Vec<u8>, _ttl: Duration) {}

    /// Holds the session record of a live connection (replacing the one held before), kept
    /// alive for as long as it is held and for `ttl` after: if this instance dies without a
    /// word, its clients still recover on another. [`Broker::keep_session`] (the connection
    /// dropped) or [`Broker::forget_session`] (it ended) releases it. Default: nothing.
    fn hold_session(&self, _namespace: &Namespace, _id: &str, _record: Vec<u8>, _ttl: Duration) {}

    /// Takes a session record kept by [`Broker::keep_session`], once. Default: none.
    fn take_session(&self, _namespace: &Namespace, _id: &str) -> SessionFuture {
        Box::pin(std::future::ready(None))
    }

    /// Forgets a kept session record (recovered where it was kept). Default: nothing.
    fn forget_session(&self, _namespace: &Namespace, _id: &str) {}

    /// Sends a signal (opaque bytes: presence, volatile emits) to every other instance, for
    /// [`Inbox::deliver_signal`]. Signals are never logged or replayed, and may be lost (a
    /// presence heartbeat repairs what is lost); at most once, in order per sender. Default:
    /// nothing, so presence and volatile emits stay on their instance.
    fn signal(&self, _bytes: Vec<u8>) {}
}

/// What [`Broker::take_session`] returns: the record, if one was kept.
pub type SessionFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<Vec<u8>>> + Send + 'static>>;

/// Where a broker delivers envelopes from other instances: a weak handle on one server.
#[derive(Clone, Debug)]
pub struct Inbox {
    server: Weak<ServerInner>,
    node: NodeId,
}

impl Inbox {
    pub(crate) fn new(server: &Server) -> Self {
        Self { server: server.downgrade(), node: server.node() }
    }

    /// The instance this inbox belongs to: envelopes from it are its own, and skipped.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Delivers `envelope` to this instance's connections (nothing when it came from this
    /// instance). Returns `false` when the server no longer exists: stop delivering.
    pub fn deliver(&self, envelope: Envelope) -> bool {
        let Some(server) = Server::upgrade(&self.server) else { return false };
        if envelope.origin != self.node {
            let (recipients, emission) = envelope.into_parts();
            server.deliver_local(&recipients, &emission);
        }
        true
    }

    /// Delivers an envelope a log broker read from `namespace`'s log at `offset` (its own
    /// instance's too: with recovery on, a log broker's emits are delivered only this way).
    /// Returns `false` when the server no longer exists.
    pub fn deliver_logged(
        &self,
        namespace: &Namespace,
        offset: Offset,
        envelope: Envelope,
    ) -> bool {
        let Some(server) = Server::upgrade(&self.server) else { return false };
        let origin = envelope.origin;
        let (recipients, emission) = envelope.into_parts();
        server.deliver_logged(namespace, offset, origin, &recipients, &emission);
        true
    }

    /// A log broker read a gap in `namespace`'s log at `offset`: emits of some instance were
    /// lost there (its buffer overflowed while the log was unreachable). A recovery from
    /// before it is refused (`recovered: false`, the client fetches again): never a silent gap.
    pub fn mark_gap(&self, namespace: &Namespace, offset: Offset) {
        if let Some(server) = Server::upgrade(&self.server) {
            server.mark_gap(namespace, offset);
        }
    }

    /// A log broker starts reading `namespace`'s log after `offset`: the history begins there
    /// (a recovery from an older offset finds its events gone).
    pub fn start_log(&self, namespace: &Namespace, offset: Offset) {
        if let Some(server) = Server::upgrade(&self.server) {
            server.start_log(namespace, offset);
        }
    }

    /// The app's namespaces, whose logs a log broker reads; empty until the app is built on
    /// the server (a broker is given to the server first: wait for them).
    pub fn namespaces(&self) -> Vec<Namespace> {
        Server::upgrade(&self.server).map(|s| s.namespaces()).unwrap_or_default()
    }

    /// The recovery window, with recovery on: how long a log broker keeps sessions.
    pub fn recovery_window(&self) -> Option<std::time::Duration> {
        Server::upgrade(&self.server).and_then(|s| s.recovery_window())
    }

    /// Takes in a signal another instance sent with [`Broker::signal`] (this instance's own
    /// are skipped). Returns `false` when the server no longer exists.
    pub fn deliver_signal(&self, bytes: &[u8]) -> bool {
        let Some(server) = Server::upgrade(&self.server) else { return false };
        server.receive_signal(bytes);
        true
    }

    /// Whether the server still exists.
    pub fn is_open(&self) -> bool {
        self.server.strong_count() > 0
    }
}

/// Links the servers of one process: what one publishes, the others deliver. Cheap to clone;
/// give a clone to each server.
#[derive(Clone, Debug, Default)]
pub struct MemoryBroker {
    inner: Arc<Mutex<MemoryInner>>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    inboxes: Vec<Inbox>,
    status: BrokerStatus,
}

impl MemoryBroker {
    /// A broker with no servers yet.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Broker for MemoryBroker {
    fn publish(&self, envelope: Envelope) {
        let inboxes = {
            let mut inner = crate::connection::lock(&self.inner);
            inner.inboxes.retain(Inbox::is_open);
            inner.status.published += 1;
            inner.inboxes.clone()
        };
        // As a network broker would: each instance gets its own copy of the bytes.
        let bytes = envelope.to_json();
        for inbox in inboxes.iter().filter(|i| i.node() != envelope.origin) {
            if let Ok(copy) = Envelope::from_json(&bytes) {
                inbox.deliver(copy);
                crate::connection::lock(&self.inner).status.received += 1;
            }
        }
    }

    fn subscribe(&self, inbox: Inbox) {
        crate::connection::lock(&self.inner).inboxes.push(inbox);
    }

    fn signal(&self, bytes: Vec<u8>) {
        let inboxes = {
            let mut inner = crate::connection::lock(&self.inner);
            inner.inboxes.retain(Inbox::is_open);
            inner.inboxes.clone()
        };
        for inbox in &inboxes {
            inbox.deliver_signal(&bytes);
        }
    }

    fn status(&self) -> BrokerStatus {
        BrokerStatus { connected: true, ..crate::connection::lock(&self.inner).status }
    }
}
