//! A live connection: its id, its extensions (such as the user), its rooms and outbound queue.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::task::AtomicWaker;
use once_cell::race::OnceBox;
use serde::Serialize;
use tokio::sync::Notify;

use crate::exception::{WsError, WsException};
use crate::limit::PeerSlot;
use crate::message::{CloseReason, Direct, Emission, Outbound, Payload};
use crate::names::{ConnectionId, EventName, Namespace, RoomId};
use crate::queue::{PushError, Queue};
use crate::server::Server;

/// The receiving end of a connection's outbound queue, drained by its adapter
/// ([`crate::adapter`]).
///
/// It is the adapter's hold on the connection. Dropping it closes the queue (later sends fail
/// with [`SendError::Closed`]) and releases the connection's registration: its rooms, its
/// place in the server's maps and its peer address's slot. Whatever ends the adapter's
/// session (a close, an error, a panic, an aborted task), nothing of the connection stays
/// behind. [`App::disconnect`](crate::App::disconnect) releases it earlier and runs the
/// `on_disconnect` hooks.
pub struct OutboundRx {
    conn: Connection,
}

impl OutboundRx {
    /// The next item, waiting for one. Cancel-safe: nothing is lost if the future is dropped.
    pub async fn recv(&mut self) -> Outbound {
        self.conn.inner.queue.pop(self.conn.inner.server.round()).await
    }

    /// The next item, or the task woken when one is queued: [`Self::recv`] as a poll, for a
    /// session that watches many queues without a future for each.
    pub fn poll_recv(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Outbound> {
        self.conn.inner.queue.poll_pop(cx, self.conn.inner.server.round())
    }

    /// Ready once an item is queued, without taking it; else the task is woken when one is.
    /// For a session put to sleep, which wakes to read its queue.
    pub fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.conn.inner.queue.poll_ready(cx)
    }

    /// The next item if one is queued.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        self.conn.inner.queue.try_pop(self.conn.inner.server.round())
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
        self.conn.inner.queue.close(self.conn.inner.server.round());
        // Breaks the cycle between the server's maps and the connection's server handle.
        self.conn.inner.server.unregister(&self.conn);
        // Kept already if the adapter called `App::disconnect`; otherwise it ends here.
        self.conn.inner.server.end_session(&self.conn);
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

/// What a connection is made of, gathered at the handshake.
pub(crate) struct Setup {
    pub(crate) namespace: Namespace,
    pub(crate) transport: &'static str,
    pub(crate) extensions: crate::Extensions,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) peer_slot: Option<Arc<PeerSlot>>,
    pub(crate) capacity: usize,
    /// At most this many rooms ([`u32::MAX`]: no limit).
    pub(crate) max_rooms: u32,
    /// Its session, with connection state recovery on and asked for.
    pub(crate) session: Option<Box<crate::recovery::Session>>,
}

struct Inner {
    id: ConnectionId,
    namespace: Namespace,
    transport: &'static str,
    extensions: crate::extensions::Kept,
    peer: Option<SocketAddr>,
    rooms: Mutex<Rooms>,
    /// The message-rate bucket, filled on the first message.
    bucket: std::sync::OnceLock<crate::limit::Bucket>,
    queue: Queue,
    /// [`CLOSE_OPEN`], or the reason the server gave when it closed the connection
    /// ([`close_code`]): the flag and the reason in one word, set once.
    close: AtomicU8,
    /// At most this many rooms ([`u32::MAX`]: no limit); beside `close`, in its word.
    max_rooms: u32,
    /// The adapter's session polling [`Connection::poll_closed`].
    close_waker: AtomicWaker,
    /// What few connections use (a recovery session, the server's requests,
    /// [`Connection::closed`]'s waiters), made on first use (or with the connection, for its
    /// session): an idle connection holds a pointer for it.
    rare: OnceBox<Rare>,
    server: Server,
}

/// The state of [`Inner::close`] while the connection is open.
const CLOSE_OPEN: u8 = 0;

/// [`Inner::close`] for `reason`: never [`CLOSE_OPEN`]. (A new reason goes here and in
/// [`close_reason_of`].)
fn close_code(reason: CloseReason) -> u8 {
    match reason {
        CloseReason::GoingAway => 1,
        CloseReason::SlowConsumer => 2,
        CloseReason::PolicyViolation => 3,
        CloseReason::TooBig => 4,
        CloseReason::IdleTimeout => 5,
        CloseReason::Normal => 6,
        CloseReason::InternalError => 7,
        CloseReason::Replaced => 8,
    }
}

/// The reason [`close_code`] was given; `None` for [`CLOSE_OPEN`].
fn close_reason_of(code: u8) -> Option<CloseReason> {
    Some(match code {
        1 => CloseReason::GoingAway,
        2 => CloseReason::SlowConsumer,
        3 => CloseReason::PolicyViolation,
        4 => CloseReason::TooBig,
        5 => CloseReason::IdleTimeout,
        6 => CloseReason::Normal,
        7 => CloseReason::InternalError,
        8 => CloseReason::Replaced,
        _ => return None,
    })
}

/// The part of a connection made on first use.
#[derive(Default)]
struct Rare {
    /// Its recovery session, if it has one.
    session: Option<crate::recovery::Session>,
    requests: Requests,
    /// Wakes [`Connection::closed`]'s waiters.
    closed: Notify,
}

/// The server's requests to one connection that wait for an answer.
#[derive(Default)]
struct Requests {
    next: std::sync::atomic::AtomicU64,
    waiting: Mutex<std::collections::HashMap<u64, tokio::sync::oneshot::Sender<Payload>>>,
}

/// Why [`Connection::emit_with_ack`] got no answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AckError {
    /// The client did not answer within the time given.
    #[error("no answer within the time given")]
    Timeout,
    /// The connection closed, or was closing, first.
    #[error("the connection closed")]
    Closed,
    /// The data could not be serialised.
    #[error("the data could not be serialised: {0}")]
    Serialize(String),
}

/// The rooms a connection is in, and whether its registration was released.
#[derive(Default)]
struct Rooms {
    /// Exactly as long as it is (a `Vec` keeps a capacity word): joins are rare, and every
    /// connection holds the list.
    joined: Box<[RoomId]>,
    released: bool,
    /// Its peer address's slot, given back when the connection ends (under the same lock:
    /// one lock fewer in every connection).
    peer_slot: Option<Arc<PeerSlot>>,
}

impl Connection {
    pub(crate) fn new(id: ConnectionId, setup: Setup, server: Server) -> (Self, OutboundRx) {
        let inner = Inner {
            id,
            namespace: setup.namespace,
            transport: setup.transport,
            extensions: setup.extensions.kept(),
            peer: setup.peer,
            rooms: Mutex::new(Rooms { peer_slot: setup.peer_slot, ..Rooms::default() }),
            bucket: std::sync::OnceLock::new(),
            queue: Queue::new(setup.capacity),
            close: AtomicU8::new(CLOSE_OPEN),
            max_rooms: setup.max_rooms,
            close_waker: AtomicWaker::new(),
            rare: match setup.session {
                Some(session) => OnceBox::with_value(Box::new(Rare {
                    session: Some(*session),
                    ..Rare::default()
                })),
                None => OnceBox::new(),
            },
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

    /// The peer's address, when the adapter knows it.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.inner.peer
    }

    /// The server handle.
    pub fn server(&self) -> &Server {
        &self.inner.server
    }

    /// Whether this connection recovered the session of one that dropped: same id, same
    /// rooms, and the events it missed replayed ([`AppConfig::recovery`]). `on_connect` hooks
    /// use it to skip what the recovered client already has (joining rooms, a welcome).
    ///
    /// [`AppConfig::recovery`]: crate::AppConfig::recovery
    pub fn recovered(&self) -> bool {
        self.session().is_some_and(|s| s.recovered)
    }

    /// Its recovery session's id, for the adapter to give the client (Socket.IO's `pid`, the
    /// plain WebSocket `session` frame); `None` with recovery off or not asked for. A secret of
    /// the client's: never log it or show it to others.
    pub fn session_id(&self) -> Option<&str> {
        self.session().map(|s| &*s.id)
    }

    pub(crate) fn session(&self) -> Option<&crate::recovery::Session> {
        self.inner.rare.get().and_then(|rare| rare.session.as_ref())
    }

    /// Joins `room` (in this connection's namespace). Joining twice is harmless.
    ///
    /// A connection in as many rooms as [`AppConfig::max_rooms_per_connection`] allows gets
    /// an exception instead, which a handler can return with `?`.
    ///
    /// [`AppConfig::max_rooms_per_connection`]: crate::AppConfig::max_rooms_per_connection
    pub fn join(&self, room: impl Into<RoomId>) -> Result<(), WsException> {
        let room = room.into();
        if self.session().is_some()
            && let Some(joined) = self.inner.server.join_recorded(self, room.clone())
        {
            return joined;
        }
        self.join_room(room)
    }

    /// Joins `room`: [`Self::join`] without recovery's bookkeeping.
    pub(crate) fn join_room(&self, room: RoomId) -> Result<(), WsException> {
        // Broadcasts held back are not for it (delivered before the connection's lock).
        self.inner.server.deliver_held();
        let mut rooms = lock(&self.inner.rooms);
        if rooms.released || rooms.joined.contains(&room) {
            // A released connection is in no room: its handler outlived its session.
            return Ok(());
        }
        let max = self.inner.max_rooms;
        if max != u32::MAX && rooms.joined.len() >= max as usize {
            return Err(WsException::new(format!(
                "Too many rooms: a connection may be in at most {max}."
            )));
        }
        let mut joined = std::mem::take(&mut rooms.joined).into_vec();
        joined.push(room.clone());
        rooms.joined = joined.into_boxed_slice();
        // Under the connection's lock, so that a release cannot come between the two.
        self.inner.server.add_to_room(self, room.clone());
        drop(rooms);
        for observer in self.inner.server.observers() {
            observer.room_joined(self, &room);
        }
        Ok(())
    }

    /// Leaves `room`. Leaving a room it is not in is harmless.
    pub fn leave(&self, room: impl Into<RoomId>) {
        let room = room.into();
        // Broadcasts held back are still for it (delivered before the connection's lock).
        self.inner.server.deliver_held();
        {
            let mut rooms = lock(&self.inner.rooms);
            let Some(at) = rooms.joined.iter().position(|r| *r == room) else { return };
            let mut joined = std::mem::take(&mut rooms.joined).into_vec();
            joined.swap_remove(at);
            rooms.joined = joined.into_boxed_slice();
        }
        if let Some(session) = self.session() {
            session.left(&room);
        }
        self.inner.server.remove_from_room(self, &room);
        self.inner.server.presence_leave(self, &room);
        self.inner.server.hold_session(self);
        for observer in self.inner.server.observers() {
            observer.room_left(self, &room);
        }
    }

    /// Tracks this connection's presence in `room` under `key` (the app's: a user id) with
    /// `meta` (what the room may see of it), joining the room first if needed. Tracking again
    /// replaces the meta. Leaving the room, [`Self::untrack`] or disconnecting ends it; a
    /// recovered connection is back in its rooms but tracks again ([presence](crate::presence)).
    pub fn track<T: Serialize + ?Sized>(
        &self,
        room: impl Into<RoomId>,
        key: impl Into<String>,
        meta: &T,
    ) -> Result<(), WsError> {
        let room = room.into();
        let meta =
            serde_json::value::to_raw_value(meta).map_err(|e| WsError::Internal(Box::new(e)))?;
        self.join(room.clone())?;
        let rooms = lock(&self.inner.rooms);
        // Under the room lock: a connection released meanwhile tracks nothing.
        if !rooms.released && rooms.joined.contains(&room) {
            self.inner.server.presence_track(self, room, key.into(), meta);
        }
        Ok(())
    }

    /// Stops tracking this connection's presence in `room`; it stays in the room.
    pub fn untrack(&self, room: impl Into<RoomId>) {
        self.inner.server.presence_untrack(self, &room.into());
    }

    /// Whether this connection is tracked in `room` (it called [`Self::track`] and has not
    /// left since; a recovered connection is not, until it tracks again).
    pub fn is_tracked(&self, room: impl Into<RoomId>) -> bool {
        self.inner.server.presence_is_tracked(self, room.into())
    }

    /// Sends this connection the `presenceDiff` events of `room`, which it must be in (a
    /// connection outside the room watches nothing): who joined and left, coalesced per
    /// [`PresenceConfig::interval`]. Volatile: a full queue misses one, recovery does not
    /// replay them. Leaving the room ends it.
    ///
    /// [`PresenceConfig::interval`]: crate::presence::PresenceConfig::interval
    pub fn watch_presence(&self, room: impl Into<RoomId>) {
        let room = room.into();
        let rooms = lock(&self.inner.rooms);
        // Under the room lock: leaving or a release, which unwatch, cannot slip in between.
        if !rooms.released && rooms.joined.contains(&room) {
            self.inner.server.presence_watch(self, room);
        }
    }

    /// Who is in `room` of this connection's namespace, on every instance.
    pub fn presence(&self, room: impl Into<RoomId>) -> Vec<crate::presence::PresenceEntry> {
        self.inner.server.presence_in(self.namespace().clone(), room)
    }

    /// The rooms this connection is in.
    pub fn rooms(&self) -> Vec<RoomId> {
        lock(&self.inner.rooms).joined.to_vec()
    }

    pub(crate) fn rooms_contain(&self, room: &RoomId) -> bool {
        lock(&self.inner.rooms).joined.contains(room)
    }

    /// The rooms to leave, once: the connection joins none from then on.
    pub(crate) fn take_rooms(&self) -> Vec<RoomId> {
        let mut rooms = lock(&self.inner.rooms);
        rooms.released = true;
        std::mem::take(&mut rooms.joined).into_vec()
    }

    /// Gives the connection's place in its peer address's count back.
    pub(crate) fn release_peer_slot(&self) {
        // Dropped outside the lock.
        let slot = lock(&self.inner.rooms).peer_slot.take();
        drop(slot);
    }

    /// Emits `event` with `data` to this connection.
    ///
    /// It does not wait: if the outbound queue is full the client is too slow, and it is
    /// disconnected (see [`SendError::Full`]). With recovery on and a session, the event is
    /// recorded in the history first: a connection that dropped gets [`SendError::Closed`],
    /// and the event is replayed if its client recovers the session.
    pub fn emit<T: Serialize + ?Sized>(
        &self,
        event: impl Into<EventName>,
        data: &T,
    ) -> Result<(), SendError> {
        let emission = Emission::serialize(event, data)?;
        if self.session().is_some()
            && let Some(result) = self.inner.server.emit_recorded(self, &emission)
        {
            return result;
        }
        self.push(Outbound::Event(emission))
    }

    /// Queues a missed event of a recovered session, whatever the queue's capacity: the
    /// history bounds them.
    pub(crate) fn replay(&self, emission: Arc<Emission>) {
        self.inner.server.deliver_held();
        let _ = self.inner.queue.push_unbounded(Outbound::Event(emission));
    }

    /// The reason the server gave when it closed the connection, if it did.
    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        close_reason_of(self.inner.close.load(Ordering::SeqCst))
    }

    /// Queues an item without waiting; a full queue disconnects the client as too slow.
    /// Emits `event` with `data` and waits for the client's answer (Socket.IO's
    /// `socket.timeout(ms).emitWithAck`): over Socket.IO the client's ack callback, over plain
    /// WebSocket a frame `{"event":"ack","id":<the request's id>,"data":…}`. Waits for room in
    /// the queue; never recorded for recovery (an answer belongs to one connection).
    pub async fn emit_with_ack<T: Serialize + ?Sized>(
        &self,
        event: impl Into<EventName>,
        data: &T,
        timeout: std::time::Duration,
    ) -> Result<serde_json::Value, AckError> {
        let (data, extras) =
            crate::args::to_args(data).map_err(|e| AckError::Serialize(e.to_string()))?;
        let requests = &self.inner.rare.get_or_init(Box::default).requests;
        let id = requests.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tokio::sync::oneshot::channel();
        lock(&requests.waiting).insert(id, tx);
        let request = Direct::Request { id, event: event.into(), data, extras };
        let answered = async {
            self.send(Outbound::Direct(Box::new(request))).await.map_err(|_| AckError::Closed)?;
            rx.await.map_err(|_| AckError::Closed)
        };
        let outcome = tokio::time::timeout(timeout, answered).await;
        lock(&requests.waiting).remove(&id);
        let payload = outcome.map_err(|_| AckError::Timeout)??;
        Ok(serde_json::from_str(payload.get()).unwrap_or(serde_json::Value::Null))
    }

    /// Ends every request waiting for this client's answer ([`AckError::Closed`]): the
    /// connection is let go.
    pub(crate) fn end_requests(&self) {
        if let Some(rare) = self.inner.rare.get() {
            lock(&rare.requests.waiting).clear();
        }
    }

    /// The client's answer to request `id`; `false` when none waits for it (answered late, or
    /// never asked).
    pub(crate) fn answer(&self, id: u64, data: Payload) -> bool {
        let Some(rare) = self.inner.rare.get() else { return false };
        let waiting = lock(&rare.requests.waiting).remove(&id);
        waiting.is_some_and(|tx| tx.send(data).is_ok())
    }

    /// Emits `event` with `data` to this connection if its queue has room, and never records
    /// it for recovery: `false` when it was dropped (queue full or connection closed).
    pub fn emit_volatile<T: Serialize + ?Sized>(
        &self,
        event: impl Into<EventName>,
        data: &T,
    ) -> Result<bool, SendError> {
        let emission = Emission::serialize(event, data)?;
        Ok(self.push_volatile(Outbound::Event(emission)))
    }

    /// Queues an already-built emission (one made once for many recipients, or with
    /// several arguments: [`Emission::args`]) if there is room, and never records it for
    /// recovery: `false` when it was dropped (queue full or connection closed).
    pub fn emit_shared_volatile(&self, emission: &Arc<Emission>) -> bool {
        self.push_volatile(Outbound::Event(emission.clone()))
    }

    /// Queues `item` if there is room; a full queue drops it, and the client stays.
    pub(crate) fn push_volatile(&self, item: Outbound) -> bool {
        self.inner.server.deliver_held();
        self.queue_volatile(item)
    }

    /// [`Self::push_volatile`] once held broadcasts are delivered.
    pub(crate) fn queue_volatile(&self, item: Outbound) -> bool {
        self.observe_sent(&item);
        self.inner.queue.try_push(item).is_ok()
    }

    /// Shows an event about to be queued to the observers.
    fn observe_sent(&self, item: &Outbound) {
        for emission in item.emissions() {
            for observer in self.inner.server.observers() {
                observer.event_sent(self, emission);
            }
        }
    }

    pub(crate) fn push(&self, item: Outbound) -> Result<(), SendError> {
        self.inner.server.deliver_held();
        self.queue(item)
    }

    /// [`Self::push`] once held broadcasts are delivered.
    pub(crate) fn queue(&self, item: Outbound) -> Result<(), SendError> {
        self.observe_sent(&item);
        let pushed = self.inner.queue.try_push(item);
        self.pushed(pushed)
    }

    /// Queues broadcasts a corked poll held back, in one go ([`crate::cork`]). The server's
    /// observers and round come from the caller: one connection's memory touched, not two.
    pub(crate) fn push_events(
        &self,
        events: &Arc<crate::message::Events>,
        observers: &[Arc<dyn crate::Observer>],
        round: &crate::queue::Round,
    ) {
        for observer in observers {
            for emission in events.as_slice() {
                observer.event_sent(self, emission);
            }
        }
        let pushed = self.inner.queue.try_push_events(events, round);
        let _ = self.pushed(pushed);
    }

    /// A queue full is a client too slow: it is disconnected.
    fn pushed(&self, pushed: Result<(), PushError>) -> Result<(), SendError> {
        match pushed {
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
    pub(crate) async fn send(&self, item: Outbound) -> Result<(), SendError> {
        match self.send_now(item)? {
            None => Ok(()),
            Some(item) => self.send_later(item).await,
        }
    }

    /// [`Self::send`] without waiting: the item back when the queue has no room, for
    /// [`Self::send_later`].
    pub(crate) fn send_now(&self, item: Outbound) -> Result<Option<Outbound>, SendError> {
        self.send_now_or(item, &mut |_| false)
    }

    /// [`Self::send_now`], offering `item` to `write` first when nothing is queued ahead of
    /// it ([`crate::App::dispatch_into`]).
    pub(crate) fn send_now_or(
        &self,
        item: Outbound,
        write: &mut dyn FnMut(&Outbound) -> bool,
    ) -> Result<Option<Outbound>, SendError> {
        self.inner.server.deliver_held();
        self.observe_sent(&item);
        match self.inner.queue.is_idle() {
            None => return Err(SendError::Closed),
            Some(true) if write(&item) => return Ok(None),
            Some(_) => {}
        }
        match self.inner.queue.push_now(item) {
            Ok(Ok(())) => Ok(None),
            Ok(Err(item)) => Ok(Some(item)),
            Err(_) => Err(SendError::Closed),
        }
    }

    /// The rest of [`Self::send`] once [`Self::send_now`] found no room: waits for it.
    pub(crate) async fn send_later(&self, item: Outbound) -> Result<(), SendError> {
        self.inner.queue.push(item).await.map_err(|_| SendError::Closed)
    }

    /// Asks the adapter to close the connection. The adapter sees it through [`Self::closed`].
    pub fn close(&self, reason: CloseReason) {
        let code = close_code(reason);
        let set =
            self.inner.close.compare_exchange(CLOSE_OPEN, code, Ordering::SeqCst, Ordering::SeqCst);
        if set.is_ok() {
            // Against `closed`, which makes `rare` then looks at `close`: either it sees the
            // reason, or its waiter is registered by now and woken here.
            std::sync::atomic::fence(Ordering::SeqCst);
            if let Some(rare) = self.inner.rare.get() {
                // Every waiter: the adapter's session may wait in more than one place.
                rare.closed.notify_waiters();
            }
            self.inner.close_waker.wake();
        }
    }

    /// Resolves when the server asked to close this connection, with the reason.
    ///
    /// Adapters wait for it beside their socket, in as many places as they need; it is
    /// cancel-safe.
    pub async fn closed(&self) -> CloseReason {
        if let Some(reason) = self.close_reason() {
            return reason;
        }
        let rare = self.inner.rare.get_or_init(Box::default);
        loop {
            let notified = rare.closed.notified();
            tokio::pin!(notified);
            // Registered before looking, so that a close in between is not missed.
            notified.as_mut().enable();
            std::sync::atomic::fence(Ordering::SeqCst);
            if let Some(reason) = self.close_reason() {
                return reason;
            }
            notified.await;
        }
    }

    /// [`Self::closed`] as a poll, for a session driver that watches many connections without
    /// a future for each: ready with the reason once the server asked to close it; otherwise
    /// the task is woken when it does. One task at a time may poll it (the last one is woken).
    pub fn poll_closed(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<CloseReason> {
        if let Some(reason) = self.close_reason() {
            return std::task::Poll::Ready(reason);
        }
        self.inner.close_waker.register(cx.waker());
        // Looked at again: a close between the first look and the registration.
        match self.close_reason() {
            Some(reason) => std::task::Poll::Ready(reason),
            None => std::task::Poll::Pending,
        }
    }

    /// Whether [`Self::close`] was called.
    pub fn is_closing(&self) -> bool {
        self.inner.close.load(Ordering::Acquire) != CLOSE_OPEN
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every idle connection holds one: with the `Arc`'s two counts, 320 B, a size class of
    /// mimalloc's (the next is 384). See docs/PERFORMANCE.md, idle connection.
    #[test]
    fn a_connection_fits_in_320_bytes() {
        assert!(size_of::<Inner>() + 16 <= 320, "{} B", size_of::<Inner>());
    }

    #[test]
    fn close_codes_give_their_reason_back() {
        assert_eq!(close_reason_of(CLOSE_OPEN), None);
        for code in 1..=u8::MAX {
            if let Some(reason) = close_reason_of(code) {
                assert_eq!(close_code(reason), code);
            }
        }
        let reasons = [
            CloseReason::GoingAway,
            CloseReason::SlowConsumer,
            CloseReason::PolicyViolation,
            CloseReason::TooBig,
            CloseReason::IdleTimeout,
            CloseReason::Normal,
            CloseReason::InternalError,
            CloseReason::Replaced,
        ];
        for reason in reasons {
            assert_eq!(close_reason_of(close_code(reason)), Some(reason));
        }
    }
}
