//! The server handle (Nest's `@WebSocketServer()`): the connection registry, rooms and emits.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;

use crate::broker::{Broker, BrokerStatus, Envelope, Inbox, NodeId, Recipients};
use crate::connection::{Connection, OutboundRx, SendError, Setup};
use crate::limit::PeerCounts;
use crate::message::{CloseReason, Emission, Outbound};
use crate::names::{ConnectionId, EventName, Namespace, RoomId};
use crate::presence::{DiffFormat, Place, PresenceConfig, PresenceEntry, Runtime, Signal};
use crate::recovery::Offset;
use crate::recovery::{Histories, Recovery, RecoveryStats, Session, SessionRequest, Target};

/// A handle on every connection of this server, over every transport, and through a
/// [`Broker`] on every other instance too. Cheap to clone.
///
/// Emits never wait: each recipient's outbound queue takes the message or, when full, the
/// recipient is disconnected as too slow. A broadcast is serialised once.
#[derive(Clone, Default)]
pub struct Server {
    inner: Arc<ServerInner>,
}

pub(crate) struct ServerInner {
    node: NodeId,
    next_id: AtomicU64,
    broker: Option<Arc<dyn Broker>>,
    connections: RwLock<HashMap<ConnectionId, Connection>>,
    /// Members by id, in the order they connected: a broadcast walks them (their queues, then
    /// their tasks as they wake) in about the order their memory was allocated in.
    rooms: RwLock<HashMap<(Namespace, RoomId), BTreeMap<ConnectionId, Connection>>>,
    peers: Arc<PeerCounts>,
    /// Cleared by [`Server::close_all`]: handshakes are refused from then on.
    accepting: AtomicBool,
    /// Woken whenever a connection is released, for [`Server::close_all`].
    released: Notify,
    /// The histories and dropped sessions, with connection state recovery on.
    recovery: OnceLock<Histories>,
    /// The app's namespaces, for a log broker to read their logs.
    namespaces: OnceLock<Vec<Namespace>>,
    /// Presence: who is tracked in which room, here and on the other instances.
    presence: OnceLock<crate::presence::Runtime>,
    /// The app's observers, for what happens outside a message's dispatch (rooms, sends).
    observers: OnceLock<Vec<Arc<dyn crate::Observer>>>,
    /// Broadcasts held back by corked polls ([`crate::cork`]).
    held: crate::cork::Held,
}

impl Default for ServerInner {
    fn default() -> Self {
        Self::new(None)
    }
}

impl ServerInner {
    fn new(broker: Option<Arc<dyn Broker>>) -> Self {
        // Connection ids count up under a random 31-bit prefix: unique across instances
        // (barring a one-in-two-billion draw per pair), and within a process for 2^32 ids.
        let prefix = random_u64() & 0x7FFF_FFFF;
        Self {
            node: NodeId(random_u64()),
            next_id: AtomicU64::new(prefix << 32),
            broker,
            connections: RwLock::default(),
            rooms: RwLock::default(),
            peers: Arc::default(),
            accepting: AtomicBool::new(true),
            released: Notify::new(),
            recovery: OnceLock::new(),
            namespaces: OnceLock::new(),
            presence: OnceLock::new(),
            observers: OnceLock::new(),
            held: crate::cork::Held::default(),
        }
    }
}

/// A random number from the standard library's per-process hash keys (no extra dependency;
/// uniqueness is all that is needed, not secrecy).
fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

impl Server {
    /// A server with no connections, alone (no broker).
    pub fn new() -> Self {
        Self::default()
    }

    /// A server that shares its emits with other instances through `broker`, and delivers
    /// theirs to its own connections.
    pub fn with_broker(broker: impl Broker) -> Self {
        let broker: Arc<dyn Broker> = Arc::new(broker);
        let server = Self { inner: Arc::new(ServerInner::new(Some(broker.clone()))) };
        broker.subscribe(Inbox::new(&server));
        server
    }

    /// This instance's id.
    pub fn node(&self) -> NodeId {
        self.inner.node
    }

    /// The broker's status, or `None` when the server has no broker.
    pub fn broker_status(&self) -> Option<BrokerStatus> {
        self.inner.broker.as_ref().map(|b| b.status())
    }

    pub(crate) fn downgrade(&self) -> Weak<ServerInner> {
        Arc::downgrade(&self.inner)
    }

    pub(crate) fn upgrade(inner: &Weak<ServerInner>) -> Option<Self> {
        inner.upgrade().map(|inner| Self { inner })
    }

    /// Turns connection state recovery on for `namespaces` (once; the app does it when built).
    pub(crate) fn enable_recovery<'a>(
        &self,
        config: Recovery,
        namespaces: impl Iterator<Item = &'a Namespace>,
    ) {
        let log = self.inner.broker.as_ref().is_some_and(|b| b.is_log());
        let _ = self.inner.recovery.set(Histories::new(config, namespaces, log));
    }

    /// Connection state recovery's counters and sizes; `None` when it is off.
    pub fn recovery_stats(&self) -> Option<RecoveryStats> {
        self.inner.recovery.get().map(Histories::stats)
    }

    fn next_id(&self) -> ConnectionId {
        ConnectionId(self.inner.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn register(&self, id: ConnectionId, setup: Setup) -> (Connection, OutboundRx) {
        let (conn, rx) = Connection::new(id, setup, self.clone());
        write(&self.inner.connections).insert(id, conn.clone());
        (conn, rx)
    }

    /// Registers a connection; with recovery on and a session asked for, a new session or the
    /// recovered one: its id, its rooms joined and its missed events queued, under its
    /// namespace's history lock (so that each emission reaches it once, replayed or live).
    pub(crate) fn open(
        &self,
        mut setup: Setup,
        request: SessionRequest,
        identity: Option<String>,
    ) -> (Connection, OutboundRx) {
        let histories = self.inner.recovery.get().filter(|_| request != SessionRequest::None);
        let Some((histories, log)) =
            histories.and_then(|h| h.log(&setup.namespace).map(|log| (h, log)))
        else {
            return self.register(self.next_id(), setup);
        };
        let identity: Option<Arc<str>> = identity.map(Arc::from);
        let mut state = log.lock();
        let restored = match &request {
            SessionRequest::Resume { id, offset } => {
                match histories.take(&mut state, id, offset.as_deref(), identity.as_deref()) {
                    Ok(restored) => {
                        histories.count(None);
                        if let Some(broker) = self.log_broker() {
                            broker.forget_session(&setup.namespace, id);
                        }
                        Some((Arc::<str>::from(id.as_str()), restored))
                    }
                    Err(failure) => {
                        tracing::debug!(?failure, "session not recovered");
                        histories.count(Some(failure));
                        None
                    }
                }
            }
            _ => None,
        };
        let Some((id, restored)) = restored else {
            let Some(id) = crate::recovery::session_id() else {
                return self.register(self.next_id(), setup);
            };
            let conn_id = self.next_id();
            state.hold(id.clone(), conn_id);
            let session = Session::new(id, state.last(), false, identity);
            setup.session = Some(Box::new(session));
            let (conn, rx) = self.register(conn_id, setup);
            drop(state);
            self.hold_session(&conn);
            return (conn, rx);
        };
        state.hold(id.clone(), restored.conn);
        let session = Session::new(id, restored.started, true, identity);
        setup.session = Some(Box::new(session));
        let (conn, rx) = self.register(restored.conn, setup);
        for emission in state.missed(histories, restored.after, restored.conn, &restored.rooms) {
            conn.replay(emission);
        }
        for (room, at) in restored.rooms {
            // Within the limit when it was recorded; a lower one since leaves the rest out.
            match conn.join_room(room.clone()) {
                Ok(()) => {
                    if let Some(session) = conn.session() {
                        session.note_join(room, at);
                    }
                }
                Err(e) => {
                    tracing::debug!(conn = %conn.id(), error = ?e.message(), "room not restored");
                }
            }
        }
        drop(state);
        self.hold_session(&conn);
        (conn, rx)
    }

    /// With a log broker: the broker holds the live connection's session record (its rooms
    /// as they are now), so that its client recovers on another instance if this one dies.
    pub(crate) fn hold_session(&self, conn: &Connection) {
        let (Some(broker), Some(histories), Some(session)) =
            (self.log_broker(), self.inner.recovery.get(), conn.session())
        else {
            return;
        };
        if let Some(record) = histories.export_live(session, conn.id()) {
            broker.hold_session(conn.namespace(), &session.id, record, histories.window());
        }
    }

    /// A client asks to recover session `id` while a connection of this server still holds
    /// it: the old connection died without the server noticing yet (a half-open TCP
    /// connection, a long-polling client that stopped polling). If it belongs to the same
    /// identity, it is closed ([`CloseReason::Replaced`]) and, once it let go (at most
    /// `within`), its session is there to recover.
    pub(crate) async fn take_over(
        &self,
        namespace: &Namespace,
        id: &str,
        identity: Option<&str>,
        within: Duration,
    ) {
        let Some((_, log)) = self.history(namespace) else { return };
        let holder = log.lock().holder(id).and_then(|conn| self.connection(conn));
        let Some(holder) = holder else { return };
        if holder.session().and_then(|s| s.identity.as_deref()) != identity {
            return;
        }
        tracing::debug!(conn = %holder.id(), "session taken over by a new connection");
        holder.close(CloseReason::Replaced);
        drop(holder);
        let released = async {
            while log.lock().holder(id).is_some() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let _ = tokio::time::timeout(within, released).await;
    }

    /// The session of a connection that ended for good (its client said goodbye, or the
    /// server threw it out) is no longer held.
    pub(crate) fn end_session(&self, conn: &Connection) {
        let (Some(histories), Some(session)) = (self.inner.recovery.get(), conn.session()) else {
            return;
        };
        if let Some(log) = histories.log(conn.namespace()) {
            let mut state = log.lock();
            // Only while it is this connection's: a recovered one may hold the id by now.
            if state.holder(&session.id) == Some(conn.id()) {
                state.release(&session.id, conn.id());
                if let Some(broker) = self.log_broker() {
                    broker.forget_session(conn.namespace(), &session.id);
                }
            }
        }
    }

    /// Joins `room` under its namespace's history lock, noting the offset it was joined after:
    /// each event of the room is then the session's (live or replayed) or not, never half.
    /// `None` when the connection has no session or recovery is off.
    pub(crate) fn join_recorded(
        &self,
        conn: &Connection,
        room: RoomId,
    ) -> Option<Result<(), crate::WsException>> {
        let session = conn.session()?;
        let (_, log) = self.history(conn.namespace())?;
        let state = log.lock();
        let at = state.last();
        let joined = conn.join_room(room.clone());
        if joined.is_ok() && conn.rooms_contain(&room) {
            session.note_join(room, at);
        }
        drop(state);
        self.hold_session(conn);
        Some(joined)
    }

    /// Keeps the session of a connection that dropped, with the rooms it was in, for its
    /// client to recover within the window.
    pub(crate) fn keep_session(&self, conn: &Connection, rooms: Vec<RoomId>) {
        let (Some(histories), Some(session)) = (self.inner.recovery.get(), conn.session()) else {
            return;
        };
        if let Some(log) = histories.log(conn.namespace()) {
            let mut state = log.lock();
            histories.keep(&mut state, session, conn.id(), rooms);
            // With a log broker, any instance may recover it.
            if let Some(broker) = self.log_broker()
                && let Some(record) = histories.export(&state, &session.id)
            {
                broker.keep_session(conn.namespace(), &session.id, record, histories.window());
            }
        }
    }

    /// With a log broker: a session unknown here may have been kept by another instance (its
    /// client's instance died, or the load balancer sent it elsewhere); its record is taken
    /// from the broker, and given back if it belongs to another identity.
    pub(crate) async fn fetch_session(
        &self,
        namespace: &Namespace,
        id: &str,
        identity: Option<&str>,
    ) {
        let Some(broker) = self.log_broker().cloned() else { return };
        let Some((histories, log)) = self.history(namespace) else { return };
        if id.len() > crate::recovery::MAX_TOKEN || Histories::knows(&log.lock(), id) {
            return;
        }
        let Some(record) = broker.take_session(namespace, id).await else { return };
        if !histories.adopt(&mut log.lock(), id, &record, identity) {
            broker.keep_session(namespace, id, record, histories.window());
        }
    }

    /// Records an emission to one connection in its namespace's history and queues it there
    /// (on the connection of that id now registered: a recovered one, if it was); `None` when
    /// recovery is off.
    pub(crate) fn emit_recorded(
        &self,
        conn: &Connection,
        emission: &Arc<Emission>,
    ) -> Option<Result<(), SendError>> {
        if let Some(broker) = self.log_broker() {
            let recipients =
                Recipients::Connection { id: conn.id(), namespace: Some(conn.namespace().clone()) };
            self.append(broker, recipients, emission);
            return Some(Ok(()));
        }
        let (histories, log) = self.history(conn.namespace())?;
        let mut state = log.lock();
        let emission = histories.record(&mut state, Target::Connection(conn.id()), emission);
        let result = match self.connection(conn.id()) {
            Some(now) => now.push(Outbound::Event(emission)),
            None => Err(SendError::Closed),
        };
        drop(state);
        Some(result)
    }

    /// Releases a connection's registration: its rooms, its map entry, its peer slot.
    /// Idempotent: [`App::disconnect`](crate::App::disconnect) calls it, and so does dropping
    /// the adapter's [`OutboundRx`]. Returns the rooms it was in (none after the first call).
    pub(crate) fn unregister(&self, conn: &Connection) -> Vec<RoomId> {
        self.deliver_held();
        let rooms = conn.take_rooms();
        conn.end_requests();
        // A connection that took this one's session over holds the id, and its own presence.
        let replaced = self.connection(conn.id()).is_some_and(|c| c != *conn);
        for room in &rooms {
            self.remove_from_room(conn, room);
            if !replaced {
                self.presence_leave(conn, room);
            }
        }
        let removed = {
            let mut connections = write(&self.inner.connections);
            // Only this connection's entry: a recovered one may hold the id by now.
            match connections.get(&conn.id()) {
                Some(registered) if registered == conn => connections.remove(&conn.id()).is_some(),
                _ => false,
            }
        };
        conn.release_peer_slot();
        if removed {
            self.inner.released.notify_waiters();
        }
        rooms
    }

    pub(crate) fn peer_counts(&self) -> &Arc<PeerCounts> {
        &self.inner.peers
    }

    /// How many connections (and handshakes under way) the address `ip` holds.
    pub fn connections_from(&self, ip: std::net::IpAddr) -> usize {
        self.inner.peers.count(ip)
    }

    /// Whether new connections are accepted: `false` once [`Server::close_all`] ran.
    pub fn is_accepting(&self) -> bool {
        self.inner.accepting.load(Ordering::Acquire)
    }

    pub(crate) fn add_to_room(&self, conn: &Connection, room: RoomId) {
        write(&self.inner.rooms)
            .entry((conn.namespace().clone(), room))
            .or_default()
            .insert(conn.id(), conn.clone());
    }

    pub(crate) fn remove_from_room(&self, conn: &Connection, room: &RoomId) {
        let mut rooms = write(&self.inner.rooms);
        let key = (conn.namespace().clone(), room.clone());
        if let Some(members) = rooms.get_mut(&key) {
            // Only this connection: a recovered one may hold the id by now.
            if members.get(&conn.id()).is_some_and(|m| m != conn) {
                return;
            }
            members.remove(&conn.id());
            if members.is_empty() {
                rooms.remove(&key);
            }
        }
    }

    /// The number of open connections.
    pub fn connection_count(&self) -> usize {
        read(&self.inner.connections).len()
    }

    /// This instance's open connections, of every namespace and transport.
    pub fn connections(&self) -> Vec<Connection> {
        read(&self.inner.connections).values().cloned().collect()
    }

    /// Notes the app's observers (once; the app does it when built).
    pub(crate) fn set_observers(&self, observers: Vec<Arc<dyn crate::Observer>>) {
        let _ = self.inner.observers.set(observers);
    }

    /// The app's observers (none before an app is built on this server).
    pub(crate) fn observers(&self) -> &[Arc<dyn crate::Observer>] {
        self.inner.observers.get().map_or(&[], |o| &o[..])
    }

    /// Sends `data` on `topic` to the other instances, where the observers see it
    /// ([`Observer::signal`](crate::Observer::signal)): for an application's own traffic
    /// between instances. Through the broker's signal channel: at most once, in order per
    /// sender, never logged; nothing without a broker.
    pub fn signal<T: Serialize + ?Sized>(&self, topic: &str, data: &T) -> Result<(), SendError> {
        let Some(broker) = &self.inner.broker else { return Ok(()) };
        let data = crate::message::to_payload(data)?;
        let signal = Signal::App { origin: self.inner.node, topic: topic.to_owned(), data };
        broker.signal(signal.to_json());
        Ok(())
    }

    /// The connection with this id, if it is open.
    pub fn connection(&self, id: ConnectionId) -> Option<Connection> {
        read(&self.inner.connections).get(&id).cloned()
    }

    /// Emits to the connection `id`: `Ok(true)` when it is open here. Otherwise `Ok(false)`,
    /// and with a broker the emit goes to the other instances, where it may be open.
    pub fn emit_to<T: Serialize + ?Sized>(
        &self,
        id: ConnectionId,
        event: impl Into<EventName>,
        data: &T,
    ) -> Result<bool, SendError> {
        match self.connection(id) {
            Some(conn) => conn.emit(event, data).map(|()| true),
            None => {
                if let Some(broker) = &self.inner.broker {
                    let (data, extras) = crate::args::to_args(data)?;
                    broker.publish(Envelope {
                        origin: self.inner.node,
                        recipients: Recipients::Connection { id, namespace: None },
                        event: event.into(),
                        data,
                        extras,
                    });
                }
                Ok(false)
            }
        }
    }

    /// Addresses the members of `room` in the default namespace `/`.
    pub fn to(&self, room: impl Into<RoomId>) -> Broadcast<'_> {
        self.of(Namespace::root()).to(room)
    }

    /// Addresses the connections of one namespace.
    pub fn of(&self, namespace: impl Into<Namespace>) -> Broadcast<'_> {
        Broadcast {
            server: self,
            namespace: Some(namespace.into()),
            room: None,
            except: None,
            except_key: None,
            volatile: false,
        }
    }

    /// Emits to every connection of every namespace. Returns how many received it.
    pub fn emit<T: Serialize + ?Sized>(
        &self,
        event: impl Into<EventName>,
        data: &T,
    ) -> Result<usize, SendError> {
        Broadcast {
            server: self,
            namespace: None,
            room: None,
            except: None,
            except_key: None,
            volatile: false,
        }
        .emit(event, data)
    }

    /// Who is in `room` of the default namespace `/`, on every instance: each key with its
    /// metas, oldest first ([presence](crate::presence)).
    pub fn presence(&self, room: impl Into<RoomId>) -> Vec<PresenceEntry> {
        self.presence_in(Namespace::root(), room)
    }

    /// Who is in `room` of `namespace`, on every instance.
    pub fn presence_in(
        &self,
        namespace: impl Into<Namespace>,
        room: impl Into<RoomId>,
    ) -> Vec<PresenceEntry> {
        let place = (namespace.into(), room.into());
        self.presence_runtime().tracker().list(&place)
    }

    fn presence_runtime(&self) -> &Runtime {
        self.inner.presence.get_or_init(|| Runtime::new(self.inner.node, PresenceConfig::default()))
    }

    /// Sets presence up when the app is built: the settings, the diffs' shape, and a task that
    /// sends diffs to watchers and changes to the other instances every interval.
    pub(crate) fn enable_presence(&self, config: PresenceConfig, format: Option<DiffFormat>) {
        let runtime =
            self.inner.presence.get_or_init(|| Runtime::new(self.inner.node, config.clone()));
        if let Some(format) = format {
            let _ = runtime.format.set(format);
        }
        // Without a Tokio runtime (an app built on another executor) nothing is sent on a
        // timer: presence still lists, diffs wait.
        let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
        let weak = self.downgrade();
        let interval = runtime.tracker().config().interval;
        handle.spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                ticker.tick().await;
                let Some(server) = Server::upgrade(&weak) else { break };
                server.presence_tick();
            }
        });
    }

    /// One interval's work: changes and heartbeats to the other instances, diffs to watchers.
    pub(crate) fn presence_tick(&self) {
        let runtime = self.presence_runtime();
        let (messages, diffs) = {
            let mut tracker = runtime.tracker();
            (tracker.tick(std::time::Instant::now()), tracker.diffs())
        };
        self.signal_presence(messages);
        for diff in diffs {
            let Some((event, data)) = runtime.render(&diff) else { continue };
            let Ok(emission) = Emission::serialize(event, &data) else { continue };
            let place = (diff.namespace.clone(), diff.room.clone());
            let watchers: Vec<ConnectionId> = runtime
                .watchers()
                .get(&place)
                .map(|w| w.iter().copied().collect())
                .unwrap_or_default();
            for id in watchers {
                if let Some(conn) = self.connection(id)
                    && conn.rooms_contain(&diff.room)
                {
                    conn.push_volatile(Outbound::Event(emission.clone()));
                }
            }
        }
    }

    fn signal_presence(&self, messages: Vec<crate::presence::Message>) {
        let Some(broker) = &self.inner.broker else { return };
        for message in messages {
            broker.signal(Signal::Presence(message).to_json());
        }
    }

    /// A signal from another instance: presence, or a volatile emit.
    pub(crate) fn receive_signal(&self, bytes: &[u8]) {
        match serde_json::from_slice::<Signal>(bytes) {
            Ok(Signal::Presence(message)) => {
                let replies =
                    self.presence_runtime().tracker().receive(message, std::time::Instant::now());
                self.signal_presence(replies);
            }
            Ok(Signal::Volatile(envelope)) => {
                if envelope.origin != self.inner.node {
                    let (recipients, emission) = envelope.into_parts();
                    self.push_volatile_to(&recipients, &emission);
                }
            }
            Ok(Signal::App { origin, topic, data }) => {
                // A broker may hand a signal back to its sender too.
                if origin == self.inner.node {
                    return;
                }
                for observer in self.observers() {
                    observer.signal(self, &topic, &data);
                }
            }
            Err(e) => tracing::warn!(error = %e, "unreadable signal from the broker"),
        }
    }

    /// Tracks `conn` in `room` (which it is in) under `key` with `meta`. Called under the
    /// connection's room lock, so that a release cannot slip in between.
    pub(crate) fn presence_track(
        &self,
        conn: &Connection,
        room: RoomId,
        key: String,
        meta: Box<serde_json::value::RawValue>,
    ) {
        let place: Place = (conn.namespace().clone(), room);
        self.presence_runtime().tracker().track(place, conn.id(), key, meta);
    }

    /// Untracks `conn` in `room`, and stops its watching there (it left).
    pub(crate) fn presence_leave(&self, conn: &Connection, room: &RoomId) {
        let Some(runtime) = self.inner.presence.get() else { return };
        let place: Place = (conn.namespace().clone(), room.clone());
        runtime.tracker().untrack(&place, conn.id());
        if let Some(watching) = runtime.watchers().get_mut(&place) {
            watching.remove(&conn.id());
        }
    }

    /// Untracks `conn` in `room`; it stays in the room.
    pub(crate) fn presence_untrack(&self, conn: &Connection, room: &RoomId) {
        let Some(runtime) = self.inner.presence.get() else { return };
        runtime.tracker().untrack(&(conn.namespace().clone(), room.clone()), conn.id());
    }

    /// Whether `conn` is tracked in `room`.
    pub(crate) fn presence_is_tracked(&self, conn: &Connection, room: RoomId) -> bool {
        let Some(runtime) = self.inner.presence.get() else { return false };
        runtime.tracker().is_tracked(&(conn.namespace().clone(), room), conn.id())
    }

    /// `conn` receives the diffs of `room`.
    pub(crate) fn presence_watch(&self, conn: &Connection, room: RoomId) {
        let place: Place = (conn.namespace().clone(), room);
        self.presence_runtime().watchers().entry(place).or_default().insert(conn.id());
    }

    /// Shuts the gateways down: refuses new handshakes (503 `The server is shutting down.`),
    /// closes every connection with `reason` ([`CloseReason::GoingAway`], close code 1001, on
    /// shutdown) and waits until their adapters have let them go, at most `timeout`.
    ///
    /// A closing connection reads no more messages; those it is handling finish (within
    /// [`AppConfig::drain_timeout`](crate::AppConfig::drain_timeout)) and their answers are
    /// written before the close. Returns how many were still open when the time ran out.
    pub async fn close_all(&self, reason: CloseReason, timeout: Duration) -> usize {
        self.inner.accepting.store(false, Ordering::Release);
        let open: Vec<Connection> = read(&self.inner.connections).values().cloned().collect();
        for conn in &open {
            conn.close(reason);
        }
        drop(open);
        let all_released = async {
            loop {
                let released = self.inner.released.notified();
                tokio::pin!(released);
                // Registered before looking, so that a release in between is not missed.
                released.as_mut().enable();
                if self.connection_count() == 0 {
                    return;
                }
                released.await;
            }
        };
        let _ = tokio::time::timeout(timeout, all_released).await;
        self.connection_count()
    }

    /// The members of `room` in `namespace`.
    pub fn room_members(&self, namespace: &Namespace, room: &RoomId) -> Vec<ConnectionId> {
        read(&self.inner.rooms)
            .get(&(namespace.clone(), room.clone()))
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The histories and `namespace`'s log, with recovery on.
    fn history(&self, namespace: &Namespace) -> Option<(&Histories, &crate::recovery::Log)> {
        let histories = self.inner.recovery.get()?;
        Some((histories, histories.log(namespace)?))
    }

    /// The broker, when it is a log that numbers emits and recovery is on: emits then go to
    /// it first and are delivered here when it hands them back.
    fn log_broker(&self) -> Option<&Arc<dyn Broker>> {
        let broker = self.inner.broker.as_ref()?;
        self.inner.recovery.get().filter(|h| h.is_log()).map(|_| broker)
    }

    /// Hands an emit to a log broker, one envelope per namespace it concerns.
    fn append(&self, broker: &Arc<dyn Broker>, recipients: Recipients, emission: &Emission) {
        let namespaces: Vec<Namespace> = match &recipients {
            Recipients::Broadcast { namespace: Some(ns), .. }
            | Recipients::Connection { namespace: Some(ns), .. } => vec![ns.clone()],
            _ => self
                .inner
                .recovery
                .get()
                .map(|h| h.logs().map(|(ns, _)| ns.clone()).collect())
                .unwrap_or_default(),
        };
        for ns in namespaces {
            broker.publish(Envelope {
                origin: self.inner.node,
                recipients: recipients.in_namespace(ns),
                event: emission.event().clone(),
                data: emission.data().to_owned(),
                extras: emission.extras().clone(),
            });
        }
    }

    /// Delivers to this instance's recipients, then hands the emit to the broker. With a log
    /// broker and recovery on, only hands it to the broker: it comes back numbered, and is
    /// delivered here then (returns 0).
    fn deliver(&self, target: &Broadcast<'_>, emission: &Arc<Emission>) -> usize {
        let recipients = Recipients::Broadcast {
            namespace: target.namespace.clone(),
            room: target.room.clone(),
            except: target.except,
            except_key: target.except_key.clone(),
        };
        if target.volatile {
            let delivered = self.push_volatile_to(&recipients, emission);
            if let Some(broker) = &self.inner.broker {
                let envelope = Envelope {
                    origin: self.inner.node,
                    recipients,
                    event: emission.event().clone(),
                    data: emission.data().to_owned(),
                    extras: emission.extras().clone(),
                };
                broker.signal(Signal::Volatile(envelope).to_json());
            }
            return delivered;
        }
        if let Some(broker) = self.log_broker() {
            self.append(broker, recipients, emission);
            return 0;
        }
        let delivered = self.deliver_local(&recipients, emission);
        if let Some(broker) = &self.inner.broker {
            broker.publish(Envelope {
                origin: self.inner.node,
                recipients,
                event: emission.event().clone(),
                data: emission.data().to_owned(),
                extras: emission.extras().clone(),
            });
        }
        delivered
    }

    /// Delivers to this instance's recipients only (emits of other instances come here too);
    /// returns how many received it. With recovery on, the emission is recorded in its
    /// namespace's history first, and delivered under the history's lock.
    pub(crate) fn deliver_local(&self, recipients: &Recipients, emission: &Arc<Emission>) -> usize {
        let Some(histories) = self.inner.recovery.get() else {
            if let Recipients::Broadcast {
                namespace: Some(ns),
                room: Some(room),
                except,
                except_key: None,
            } = recipients
                && self.inner.held.defer(self, ns, room, *except, emission)
            {
                // Held, then queued to the members it is for (the count).
                return read(&self.inner.rooms).get(&(ns.clone(), room.clone())).map_or(0, |m| {
                    m.len() - usize::from(except.is_some_and(|id| m.contains_key(&id)))
                });
            }
            return self.push_to(recipients, emission);
        };
        match recipients {
            Recipients::Connection { id, .. } => {
                let Some(conn) = self.connection(*id) else { return 0 };
                if conn.session().is_none() {
                    return self.push_to(recipients, emission);
                }
                usize::from(matches!(self.emit_recorded(&conn, emission), Some(Ok(()))))
            }
            Recipients::Broadcast { namespace: Some(ns), .. } => {
                let Some(log) = histories.log(ns) else {
                    return self.push_to(recipients, emission);
                };
                let mut state = log.lock();
                let emission = histories.record(&mut state, Target::of(recipients), emission);
                let delivered = self.push_to(recipients, &emission);
                drop(state);
                delivered
            }
            // Every namespace: recorded in each, with each one's offset.
            Recipients::Broadcast { namespace: None, .. } => histories
                .logs()
                .map(|(ns, _)| self.deliver_local(&recipients.in_namespace(ns.clone()), emission))
                .sum(),
        }
    }

    /// An emit a log broker hands back, numbered: recorded in `namespace`'s history at
    /// `offset` (unless held already) and delivered to this instance's recipients under the
    /// history's lock. Without recovery (or for another process's emits with recovery off),
    /// as any broker's.
    pub(crate) fn deliver_logged(
        &self,
        namespace: &Namespace,
        offset: Offset,
        origin: NodeId,
        recipients: &Recipients,
        emission: &Arc<Emission>,
    ) {
        // Scoped to the log's namespace: an emit to every namespace, or to a connection whose
        // namespace the emitter did not know, is in every namespace's log.
        let scoped = recipients.in_namespace(namespace.clone());
        // A connection is reached through its own namespace's log only.
        let here = match &scoped {
            Recipients::Connection { id, .. } => {
                self.connection(*id).is_some_and(|c| c.namespace() == namespace)
            }
            Recipients::Broadcast { .. } => true,
        };
        let Some((histories, log)) = self.history(namespace).filter(|(h, _)| h.is_log()) else {
            // Without recovery a log is a carrier: the others' emits only.
            if here && origin != self.inner.node {
                self.deliver_local(&scoped, emission);
            }
            return;
        };
        // Recorded whoever it is for: a client of another instance may fail over here.
        let mut state = log.lock();
        let target = Target::of(&scoped);
        if let Some(emission) = histories.record_at(&mut state, offset, target, emission)
            && here
        {
            self.push_to(&scoped, &emission);
        }
        drop(state);
    }

    /// Emits were lost at `offset` of `namespace`'s log: recoveries from before it fail.
    pub(crate) fn mark_gap(&self, namespace: &Namespace, offset: Offset) {
        if let Some((histories, log)) = self.history(namespace) {
            tracing::warn!(%namespace, %offset, "events were lost: sessions that missed them will not recover");
            histories.gap_at(&mut log.lock(), offset);
        }
    }

    /// A log broker reads `namespace`'s log from after `offset` on: the history starts there.
    pub(crate) fn start_log(&self, namespace: &Namespace, offset: Offset) {
        if let Some((histories, log)) = self.history(namespace) {
            histories.start_at(&mut log.lock(), offset);
        }
    }

    /// The app's namespaces, once an app is built on this server (empty before).
    pub(crate) fn namespaces(&self) -> Vec<Namespace> {
        self.inner.namespaces.get().cloned().unwrap_or_default()
    }

    /// Notes the app's namespaces (once; the app does it when built).
    pub(crate) fn set_namespaces(&self, namespaces: Vec<Namespace>) {
        let _ = self.inner.namespaces.set(namespaces);
    }

    /// The recovery window, with recovery on.
    pub(crate) fn recovery_window(&self) -> Option<Duration> {
        self.inner.recovery.get().map(|h| h.window())
    }

    /// This instance's connections a broadcast addresses.
    fn local_members(&self, target: &Broadcast<'_>) -> Vec<Connection> {
        let keep = |conn: &Connection| target.except != Some(conn.id());
        match (&target.namespace, &target.room) {
            (Some(ns), Some(room)) => read(&self.inner.rooms)
                .get(&(ns.clone(), room.clone()))
                .map(|members| members.values().filter(|c| keep(c)).cloned().collect())
                .unwrap_or_default(),
            (ns, _) => read(&self.inner.connections)
                .values()
                .filter(|c| ns.as_ref().is_none_or(|ns| c.namespace() == ns) && keep(c))
                .cloned()
                .collect(),
        }
    }

    /// Delivers the broadcasts held back ([`crate::cork`]), if any, before whatever comes
    /// next.
    pub(crate) fn deliver_held(&self) {
        self.inner.held.flush(|pending| self.deliver_pending(pending));
    }

    /// The round of held broadcasts the members' queues are counted in.
    pub(crate) fn round(&self) -> &crate::queue::Round {
        &self.inner.held.round
    }

    /// Delivers broadcasts held back: each member of the room gets all of them at once, as
    /// one item shared by all (one reference count and one queue entry per member, not one
    /// per event).
    fn deliver_pending(&self, pending: crate::cork::Pending) {
        let rooms = read(&self.inner.rooms);
        let Some(members) = rooms.get(&(pending.namespace, pending.room)) else {
            return;
        };
        let events = Arc::new(crate::message::Events::new(pending.emissions));
        let (observers, round) = (self.observers(), self.round());
        // The id from the map's key: each member's memory touched is its queue's alone.
        for (id, conn) in members {
            if pending.except != Some(*id) {
                conn.push_events(&events, observers, round);
            }
        }
    }

    /// Queues a volatile emission for this instance's recipients: those with room in their
    /// queue. Returns how many took it.
    pub(crate) fn push_volatile_to(
        &self,
        recipients: &Recipients,
        emission: &Arc<Emission>,
    ) -> usize {
        self.push_with(recipients, emission, true)
    }

    /// Queues the emission for this instance's recipients; returns how many took it.
    fn push_to(&self, recipients: &Recipients, emission: &Arc<Emission>) -> usize {
        self.push_with(recipients, emission, false)
    }

    fn push_with(
        &self,
        recipients: &Recipients,
        emission: &Arc<Emission>,
        volatile: bool,
    ) -> usize {
        self.deliver_held();
        let push = |conn: &Connection| {
            let item = Outbound::Event(emission.clone());
            // Held broadcasts went first, above; none is delivered under the rooms' lock.
            usize::from(if volatile { conn.queue_volatile(item) } else { conn.queue(item).is_ok() })
        };
        let (namespace, room, except) = match recipients {
            Recipients::Connection { id, .. } => {
                return self.connection(*id).map_or(0, |c| push(&c));
            }
            Recipients::Broadcast { namespace, room, except, except_key } => {
                (namespace, room, (*except, except_key))
            }
        };
        let (except, except_key) = except;
        // The connections of this instance tracking the key left out, if one is.
        let tracking: Vec<ConnectionId> =
            match (namespace, room, except_key, self.inner.presence.get()) {
                (Some(ns), Some(room), Some(key), Some(runtime)) => {
                    runtime.tracker().local_conns(&(ns.clone(), room.clone()), key)
                }
                _ => Vec::new(),
            };
        let send = |conn: &Connection| {
            if except == Some(conn.id()) || tracking.contains(&conn.id()) { 0 } else { push(conn) }
        };
        match (namespace, room) {
            (Some(ns), Some(room)) => read(&self.inner.rooms)
                .get(&(ns.clone(), room.clone()))
                .map_or(0, |members| members.values().map(send).sum()),
            (ns, _) => read(&self.inner.connections)
                .values()
                .filter(|c| ns.as_ref().is_none_or(|ns| c.namespace() == ns))
                .map(send)
                .sum(),
        }
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("connections", &self.connection_count()).finish()
    }
}

/// A set of recipients: a namespace, optionally narrowed to a room and with one exception.
#[derive(Debug)]
pub struct Broadcast<'a> {
    server: &'a Server,
    namespace: Option<Namespace>,
    room: Option<RoomId>,
    except: Option<ConnectionId>,
    except_key: Option<String>,
    volatile: bool,
}

impl Broadcast<'_> {
    /// Narrows to the members of `room`.
    #[must_use]
    pub fn to(mut self, room: impl Into<RoomId>) -> Self {
        self.room = Some(room.into());
        self
    }

    /// Leaves out one connection, typically the sender.
    #[must_use]
    pub fn except(mut self, id: ConnectionId) -> Self {
        self.except = Some(id);
        self
    }

    /// Leaves out every connection that tracks the presence `key` in the room, on every
    /// instance: a user's other tabs ([`Connection::track`]). Live delivery only: a replay
    /// after recovery does not know it (pair it with [`Broadcast::volatile`]).
    #[must_use]
    pub fn except_key(mut self, key: impl Into<String>) -> Self {
        self.except_key = Some(key.into());
        self
    }

    /// Makes the emit volatile (Socket.IO's `volatile`): a recipient whose queue is full misses
    /// it instead of being disconnected, and connection state recovery neither records nor
    /// replays it. For what is stale a second later: "is typing", a cursor.
    #[must_use]
    pub fn volatile(mut self) -> Self {
        self.volatile = true;
        self
    }

    /// Emits `event` with `data`, serialised once. Returns how many connections of this
    /// instance received it (with a broker, the other instances deliver it too; with a log
    /// broker and recovery on, 0: every instance, this one included, delivers it when the log
    /// hands it back).
    pub fn emit<T: Serialize + ?Sized>(
        self,
        event: impl Into<EventName>,
        data: &T,
    ) -> Result<usize, SendError> {
        let emission = Emission::serialize(event, data)?;
        Ok(self.server.deliver(&self, &emission))
    }

    /// Emits `event` with `data` to each recipient on this instance, asking each for an
    /// answer, and gathers the answers (Socket.IO's `io.timeout(ms).to(room).emitWithAck`):
    /// one `(connection, answer or why none)` per recipient, once all answered or `timeout`
    /// passed. This instance's connections only: another instance's members are not asked.
    pub async fn emit_with_ack<T: Serialize + ?Sized>(
        self,
        event: impl Into<EventName>,
        data: &T,
        timeout: Duration,
    ) -> Vec<(ConnectionId, Result<serde_json::Value, crate::AckError>)> {
        let event = event.into();
        let members = self.server.local_members(&self);
        let asks = members.iter().map(|conn| {
            let event = event.clone();
            async move { (conn.id(), conn.emit_with_ack(event, data, timeout).await) }
        });
        futures_util::future::join_all(asks).await
    }

    /// Emits an already-built emission. Returns how many connections of this instance
    /// received it.
    pub fn emit_shared(self, emission: &Arc<Emission>) -> usize {
        self.server.deliver(&self, emission)
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // Maps of handles stay consistent across a panic: every update is one insert or remove.
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}
