//! A live connection: its id, its extensions (such as the user), its rooms and outbound queue.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::Notify;

use crate::message::{CloseReason, Direct, Emission, Outbound};
use crate::names::{ConnectionId, EventName, Namespace, RoomId};
use crate::queue::{PushError, Queue};
use crate::server::Server;

/// The receiving end of a connection's outbound queue, drained by its adapter.
///
/// Dropping it closes the queue: later sends fail with [`SendError::Closed`].
pub struct OutboundRx {
    conn: Connection,
}

impl OutboundRx {
    /// The next item, waiting for one. Cancel-safe: nothing is lost if the future is dropped.
    pub async fn recv(&mut self) -> Outbound {
        self.conn.inner.queue.pop().await
    }

    /// The next item if one is queued.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        self.conn.inner.queue.try_pop()
    }

    /// How many items are queued.
    pub fn len(&self) -> usize {
        self.conn.inner.queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for OutboundRx {
    fn drop(&mut self) {
        self.conn.inner.queue.close();
    }
}

impl fmt::Debug for OutboundRx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundRx")
            .field("conn", &self.conn.id())
            .field("len", &self.len())
            .finish()
    }
}

/// Why a message could not be queued for a connection.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The data could not be serialised.
    #[error("could not serialise the message: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The connection is gone.
    #[error("the connection is closed")]
    Closed,
    /// The outbound queue was full: the client reads too slowly and is being disconnected.
    #[error("the connection's outbound queue is full")]
    Full,
}

/// A handle on one connection, cheap to clone (Nest's `client` argument).
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    id: ConnectionId,
    namespace: Namespace,
    transport: &'static str,
    extensions: http::Extensions,
    rooms: Mutex<Vec<RoomId>>,
    /// The message-rate bucket, filled on the first message.
    bucket: std::sync::OnceLock<crate::limit::Bucket>,
    queue: Queue,
    closing: AtomicBool,
    close_reason: Mutex<Option<CloseReason>>,
    close_notify: Notify,
    server: Server,
}

impl Connection {
    pub(crate) fn new(
        id: ConnectionId,
        namespace: Namespace,
        transport: &'static str,
        extensions: http::Extensions,
        capacity: usize,
        server: Server,
    ) -> (Self, OutboundRx) {
        let inner = Inner {
            id,
            namespace,
            transport,
            extensions,
            rooms: Mutex::new(Vec::new()),
            bucket: std::sync::OnceLock::new(),
            queue: Queue::new(capacity),
            closing: AtomicBool::new(false),
            close_reason: Mutex::new(None),
            close_notify: Notify::new(),
            server,
        };
        let conn = Self { inner: Arc::new(inner) };
        (conn.clone(), OutboundRx { conn })
    }

    pub(crate) fn bucket(&self, limit: &crate::limit::RateLimit) -> &crate::limit::Bucket {
        self.inner.bucket.get_or_init(|| crate::limit::Bucket::new(limit))
    }

    /// This connection's id.
    pub fn id(&self) -> ConnectionId {
        self.inner.id
    }

    /// The namespace it connected to.
    pub fn namespace(&self) -> &Namespace {
        &self.inner.namespace
    }

    /// The adapter's transport name, such as `"ws"` or `"socket.io"`.
    pub fn transport(&self) -> &'static str {
        self.inner.transport
    }

    /// A typed value that connection middleware attached at the handshake, such as the user.
    pub fn extension<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.inner.extensions.get::<T>()
    }

    /// The server handle.
    pub fn server(&self) -> &Server {
        &self.inner.server
    }

    /// Joins `room` (in this connection's namespace). Joining twice is harmless.
    pub fn join(&self, room: impl Into<RoomId>) {
        let room = room.into();
        {
            let mut rooms = lock(&self.inner.rooms);
            if rooms.contains(&room) {
                return;
            }
            rooms.push(room.clone());
        }
        self.inner.server.add_to_room(self, room);
    }

    /// Leaves `room`. Leaving a room it is not in is harmless.
    pub fn leave(&self, room: impl Into<RoomId>) {
        let room = room.into();
        {
            let mut rooms = lock(&self.inner.rooms);
            let Some(at) = rooms.iter().position(|r| *r == room) else { return };
            rooms.swap_remove(at);
        }
        self.inner.server.remove_from_room(self, &room);
    }

    /// The rooms this connection is in.
    pub fn rooms(&self) -> Vec<RoomId> {
        lock(&self.inner.rooms).clone()
    }

    pub(crate) fn take_rooms(&self) -> Vec<RoomId> {
        std::mem::take(&mut *lock(&self.inner.rooms))
    }

    /// Emits `event` with `data` to this connection.
    ///
    /// It does not wait: if the outbound queue is full the client is too slow, and it is
    /// disconnected (see [`SendError::Full`]).
    pub fn emit<T: Serialize + ?Sized>(
        &self,
        event: impl Into<EventName>,
        data: &T,
    ) -> Result<(), SendError> {
        self.push(Outbound::Event(Emission::serialize(event, data)?))
    }

    /// Queues an event without waiting; a full queue disconnects the client as too slow.
    pub fn push(&self, item: Outbound) -> Result<(), SendError> {
        match self.inner.queue.try_push(item) {
            Ok(()) => Ok(()),
            Err(PushError::Closed) => Err(SendError::Closed),
            Err(PushError::Full) => {
                tracing::warn!(conn = %self.id(), "outbound queue full, disconnecting slow client");
                self.close(CloseReason::SlowConsumer);
                Err(SendError::Full)
            }
        }
    }

    /// Queues a reply to a message, waiting for room in the queue: replies are never dropped.
    pub(crate) async fn reply(&self, direct: Direct) -> Result<(), SendError> {
        self.send(Outbound::Direct(Box::new(direct))).await
    }

    /// Queues an item, waiting for room in the queue.
    pub async fn send(&self, item: Outbound) -> Result<(), SendError> {
        self.inner.queue.push(item).await.map_err(|_| SendError::Closed)
    }

    /// Asks the adapter to close the connection. The adapter sees it through [`Self::closed`].
    pub fn close(&self, reason: CloseReason) {
        if !self.inner.closing.swap(true, Ordering::AcqRel) {
            *lock(&self.inner.close_reason) = Some(reason);
            self.inner.close_notify.notify_one();
        }
    }

    /// Resolves when the server asked to close this connection, with the reason.
    ///
    /// Adapters wait for it beside their socket; it is cancel-safe.
    pub async fn closed(&self) -> CloseReason {
        loop {
            if let Some(reason) = *lock(&self.inner.close_reason) {
                return reason;
            }
            self.inner.close_notify.notified().await;
        }
    }

    /// Whether [`Self::close`] was called.
    pub fn is_closing(&self) -> bool {
        self.inner.closing.load(Ordering::Acquire)
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.inner.id)
            .field("namespace", &self.inner.namespace)
            .field("transport", &self.inner.transport)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Connection {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The data behind these locks stays consistent across a panic (plain inserts and removes).
    m.lock().unwrap_or_else(|e| e.into_inner())
}
