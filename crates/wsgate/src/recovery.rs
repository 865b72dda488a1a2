//! Connection state recovery (DESIGN §9): each namespace's history of emissions, and the
//! sessions of connections that dropped, kept for the recovery window.
//!
//! With recovery on ([`AppConfig::recovery`](crate::AppConfig::recovery)), every emission to
//! a room, a namespace or a connection is recorded in its namespace's history under an
//! *offset*, and delivered under the history's lock: a connection that registers, or recovers
//! and joins its rooms again, under the same lock sees each emission either in the history or
//! live, never both and never neither. A connection that drops (not one that said goodbye,
//! not one the server threw out) leaves a session record: its id, its rooms, its owner. A
//! handshake that presents the session's id and the last offset the client received, within
//! the window, gets the same connection id, its rooms, and the events it missed, in order,
//! once.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::args::Extras;
use crate::message::{Emission, Payload};
use crate::names::{ConnectionId, EventName, Namespace, RoomId};

/// Connection state recovery's settings ([`AppConfig::recovery`](crate::AppConfig::recovery)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// How long a dropped connection's session is kept, and how old an event may be to be
    /// replayed. Default 2 minutes.
    pub window: Duration,
    /// How many events each namespace's history holds at most. Default 10 000.
    pub max_events: usize,
}

impl Default for Recovery {
    fn default() -> Self {
        Self { window: Duration::from_secs(120), max_events: 10_000 }
    }
}

/// What a handshake asks of recovery, as its adapter read it: nothing, a new session, or the
/// recovery of one (its id, and the offset of the last event the client received).
///
/// Ignored when the app has recovery off. Both are untrusted client input: a session that
/// does not exist, has expired, belongs to another identity, or an offset that is not one of
/// the history's, makes a new session (`recovered: false`), never an error.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SessionRequest {
    /// No session (a plain WebSocket client that did not ask for one).
    #[default]
    None,
    /// A new session.
    New,
    /// The recovery of session `id`, from the event after `offset` (or from the session's
    /// start when the client received none).
    Resume {
        /// The session's id.
        id: String,
        /// The last offset the client received.
        offset: Option<String>,
    },
}

/// Recovery's counters and sizes, for metrics ([`Server::recovery_stats`](crate::Server::recovery_stats)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecoveryStats {
    /// Sessions recovered.
    pub recovered: u64,
    /// Recoveries that came too late: the session is unknown or expired, or the history no
    /// longer holds the events after the client's offset.
    pub expired: u64,
    /// Recoveries refused: the session belongs to another identity, or the offset is not one
    /// of the history's (malformed, from another server, from the future).
    pub refused: u64,
    /// Events held in the histories, all namespaces together.
    pub events: usize,
    /// Sessions of dropped connections waiting to be recovered.
    pub sessions: usize,
}

/// The longest session id or offset read; anything longer is refused unread.
pub(crate) const MAX_TOKEN: usize = 64;

/// A place in a namespace's history, ordered. A server alone numbers its events itself
/// (`major` 0, `minor` counting up); with a log broker (Redis Streams) offsets are the log's
/// ids (`major` the milliseconds, `minor` the sequence), the same on every instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Offset {
    /// The milliseconds of a log id; 0 for a server's own numbering.
    pub major: u64,
    /// The sequence.
    pub minor: u64,
}

impl Offset {
    /// The offset of a server's own numbering.
    pub(crate) fn local(n: u64) -> Self {
        Self { major: 0, minor: n }
    }

    /// Parses a log id, `<major>-<minor>` in decimal (a Redis Streams id).
    pub fn parse_log(text: &str) -> Option<Self> {
        let (major, minor) = text.split_once('-')?;
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(major) || !digits(minor) {
            return None;
        }
        Some(Self { major: major.parse().ok()?, minor: minor.parse().ok()? })
    }
}

impl std::fmt::Display for Offset {
    /// As a log id: `<major>-<minor>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.major, self.minor)
    }
}

/// How a history numbers its events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Numbering {
    /// Its own count, with the process's epoch in the offsets' text.
    Local { epoch: u32 },
    /// A log broker's ids.
    Log,
}

/// A connection's session: its id, where it started in the history, whether it was recovered.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) id: Arc<str>,
    /// The history's last offset when the session began: a client that received no event
    /// replays from here.
    pub(crate) started: Offset,
    pub(crate) recovered: bool,
    pub(crate) identity: Option<Arc<str>>,
    /// Each room joined, with the offset of the last event before the join: what the room
    /// got until then is not the session's to replay.
    pub(crate) joined: Mutex<Joined>,
}

/// Rooms with the offset of the last event before each was joined.
pub(crate) type Joined = Vec<(RoomId, Offset)>;

impl Session {
    pub(crate) fn new(
        id: Arc<str>,
        started: Offset,
        recovered: bool,
        identity: Option<Arc<str>>,
    ) -> Self {
        Self { id, started, recovered, identity, joined: Mutex::new(Vec::new()) }
    }

    /// Notes that `room` was joined after offset `at` (its first join counts).
    pub(crate) fn note_join(&self, room: RoomId, at: Offset) {
        let mut joined = self.joined.lock().unwrap_or_else(|e| e.into_inner());
        if !joined.iter().any(|(r, _)| *r == room) {
            joined.push((room, at));
        }
    }

    /// Notes that `room` was left.
    pub(crate) fn left(&self, room: &RoomId) {
        self.joined.lock().unwrap_or_else(|e| e.into_inner()).retain(|(r, _)| r != room);
    }

    /// The offset after which `room`'s events are the session's.
    fn joined_at(&self, room: &RoomId) -> Offset {
        let joined = self.joined.lock().unwrap_or_else(|e| e.into_inner());
        joined.iter().find(|(r, _)| r == room).map_or(self.started, |(_, at)| *at)
    }
}

/// Who a recorded emission was for.
#[derive(Debug)]
pub(crate) enum Target {
    /// The whole namespace, but one connection.
    All { except: Option<ConnectionId> },
    /// A room, but one connection.
    Room { room: RoomId, except: Option<ConnectionId> },
    /// One connection.
    Connection(ConnectionId),
}

impl Target {
    /// Who `recipients` are, within their namespace.
    pub(crate) fn of(recipients: &crate::broker::Recipients) -> Self {
        use crate::broker::Recipients;
        match recipients {
            Recipients::Broadcast { room: Some(room), except, .. } => {
                Self::Room { room: room.clone(), except: *except }
            }
            Recipients::Broadcast { room: None, except, .. } => Self::All { except: *except },
            Recipients::Connection { id, .. } => Self::Connection(*id),
        }
    }

    /// Whether event `seq` to this target was for `conn`, in `rooms` (joined after their offsets).
    fn includes(&self, seq: Offset, conn: ConnectionId, rooms: &[(RoomId, Offset)]) -> bool {
        match self {
            Self::All { except } => *except != Some(conn),
            Self::Room { room, except } => {
                *except != Some(conn) && rooms.iter().any(|(r, at)| r == room && seq > *at)
            }
            Self::Connection(id) => *id == conn,
        }
    }
}

/// A recorded emission: its event and data only (and its extras, when it has any). The
/// emission delivered live caches its encodings (one per transport); the history does not
/// keep them alive, and a replay encodes afresh.
struct Entry {
    seq: Offset,
    at: Instant,
    target: Target,
    event: EventName,
    data: Payload,
    /// Several arguments, binary attachments: rare, so boxed.
    extras: Option<Box<Extras>>,
}

/// A dropped connection's session, waiting for its client.
struct Record {
    conn: ConnectionId,
    identity: Option<Arc<str>>,
    rooms: Joined,
    started: Offset,
    at: Instant,
}

/// The sessions of all namespaces and one history per namespace.
pub(crate) struct Histories {
    config: Recovery,
    /// Local numbering carries an epoch that makes offsets of this process unlike another's
    /// (a restarted server's), so that an offset from before a restart is refused rather than
    /// misread.
    numbering: Numbering,
    logs: HashMap<Namespace, Log>,
    recovered: AtomicU64,
    expired: AtomicU64,
    refused: AtomicU64,
}

/// One namespace's history and dropped sessions, behind one lock.
pub(crate) struct Log {
    state: Mutex<LogState>,
}

pub(crate) struct LogState {
    /// The offset of the last entry recorded.
    last: Offset,
    /// Entries up to this offset are not held (dropped, or from before the history began):
    /// a client whose offset is older missed events that are gone.
    floor: Offset,
    entries: VecDeque<Entry>,
    sessions: HashMap<Arc<str>, Record>,
    /// Session ids in the order they were recorded, to expire them.
    expiries: VecDeque<(Instant, Arc<str>)>,
    /// The sessions of open connections: a client that comes back before the server noticed
    /// its old connection died takes the session over.
    live: HashMap<Arc<str>, ConnectionId>,
}

/// A session record as a log broker keeps it for other instances (JSON).
#[derive(serde::Serialize, serde::Deserialize)]
struct Portable {
    conn: u64,
    identity: Option<String>,
    rooms: Vec<(String, String)>,
    started: String,
}

/// Why a recovery failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    Expired,
    Refused,
}

/// A session recovered: the connection it had, its rooms, where its client stopped.
pub(crate) struct Restored {
    pub(crate) conn: ConnectionId,
    pub(crate) rooms: Joined,
    pub(crate) started: Offset,
    /// Replay the entries after this offset.
    pub(crate) after: Offset,
}

impl Histories {
    pub(crate) fn new<'a>(
        config: Recovery,
        namespaces: impl Iterator<Item = &'a Namespace>,
        log: bool,
    ) -> Self {
        let logs = namespaces
            .map(|ns| {
                let state = LogState {
                    last: Offset::default(),
                    floor: Offset::default(),
                    entries: VecDeque::new(),
                    sessions: HashMap::new(),
                    expiries: VecDeque::new(),
                    live: HashMap::new(),
                };
                (ns.clone(), Log { state: Mutex::new(state) })
            })
            .collect();
        let numbering = if log { Numbering::Log } else { Numbering::Local { epoch: random_u32() } };
        Self {
            config,
            numbering,
            logs,
            recovered: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    pub(crate) fn log(&self, namespace: &Namespace) -> Option<&Log> {
        self.logs.get(namespace)
    }

    pub(crate) fn logs(&self) -> impl Iterator<Item = (&Namespace, &Log)> {
        self.logs.iter()
    }

    /// The recovery window.
    pub(crate) fn window(&self) -> std::time::Duration {
        self.config.window
    }

    /// Whether offsets are a log broker's.
    pub(crate) fn is_log(&self) -> bool {
        self.numbering == Numbering::Log
    }

    /// The text of an offset, for clients.
    pub(crate) fn offset(&self, offset: Offset) -> Box<str> {
        match self.numbering {
            Numbering::Local { epoch } => format!("{epoch:x}-{:x}", offset.minor),
            Numbering::Log => offset.to_string(),
        }
        .into_boxed_str()
    }

    /// An offset from a client's text: one of this process's (or of the log's); `None` for
    /// anything else.
    fn parse(&self, offset: &str) -> Option<Offset> {
        if offset.len() > MAX_TOKEN {
            return None;
        }
        let Numbering::Local { epoch: ours } = self.numbering else {
            return Offset::parse_log(offset);
        };
        let (epoch, seq) = offset.split_once('-')?;
        let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex(epoch) || !hex(seq) || u32::from_str_radix(epoch, 16).ok()? != ours {
            return None;
        }
        u64::from_str_radix(seq, 16).ok().map(Offset::local)
    }

    pub(crate) fn count(&self, failure: Option<Failure>) {
        let counter = match failure {
            None => &self.recovered,
            Some(Failure::Expired) => &self.expired,
            Some(Failure::Refused) => &self.refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> RecoveryStats {
        let mut stats = RecoveryStats {
            recovered: self.recovered.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            ..RecoveryStats::default()
        };
        for log in self.logs.values() {
            let mut state = log.lock();
            state.expire(Instant::now(), &self.config);
            stats.events += state.entries.len();
            stats.sessions += state.sessions.len();
        }
        stats
    }

    /// Takes session `id` for a client of `identity` that last received `offset`: the record
    /// goes (a session is recovered once), unless it belongs to another identity.
    pub(crate) fn take(
        &self,
        state: &mut LogState,
        id: &str,
        offset: Option<&str>,
        identity: Option<&str>,
    ) -> Result<Restored, Failure> {
        let now = Instant::now();
        state.expire(now, &self.config);
        if id.len() > MAX_TOKEN {
            return Err(Failure::Refused);
        }
        let Some(record) = state.sessions.get(id) else { return Err(Failure::Expired) };
        // Another user presenting the id learns nothing, and the owner can still recover.
        if record.identity.as_deref() != identity {
            return Err(Failure::Refused);
        }
        let Some(record) = state.sessions.remove(id) else { return Err(Failure::Expired) };
        let after = match offset {
            None => record.started,
            Some(offset) => match self.parse(offset) {
                // An offset from before the session began replays from its start.
                Some(seq) => seq.max(record.started),
                None => return Err(Failure::Refused),
            },
        };
        if after > state.last {
            // From the future: not an offset this history gave out.
            return Err(Failure::Refused);
        }
        // Every entry after `after` must still be held.
        if after < state.floor {
            return Err(Failure::Expired);
        }
        Ok(Restored { conn: record.conn, rooms: record.rooms, started: record.started, after })
    }

    /// The portable form of a live connection's session, for a log broker to hold.
    pub(crate) fn export_live(&self, session: &Session, conn: ConnectionId) -> Option<Vec<u8>> {
        let joined = session.joined.lock().unwrap_or_else(|e| e.into_inner());
        let portable = Portable {
            conn: conn.0,
            identity: session.identity.as_deref().map(str::to_owned),
            rooms: joined.iter().map(|(r, at)| (r.to_string(), at.to_string())).collect(),
            started: session.started.to_string(),
        };
        serde_json::to_vec(&portable).ok()
    }

    /// The portable form of session `id`'s record, for a log broker.
    pub(crate) fn export(&self, state: &LogState, id: &str) -> Option<Vec<u8>> {
        let record = state.sessions.get(id)?;
        let portable = Portable {
            conn: record.conn.0,
            identity: record.identity.as_deref().map(str::to_owned),
            rooms: record.rooms.iter().map(|(r, at)| (r.to_string(), at.to_string())).collect(),
            started: record.started.to_string(),
        };
        serde_json::to_vec(&portable).ok()
    }

    /// Adopts a record another instance kept (taken from a log broker) as session `id`,
    /// unless one is held here already. `false` when it belongs to another identity or does not
    /// read: the caller gives it back.
    pub(crate) fn adopt(
        &self,
        state: &mut LogState,
        id: &str,
        bytes: &[u8],
        identity: Option<&str>,
    ) -> bool {
        let Ok(portable) = serde_json::from_slice::<Portable>(bytes) else { return false };
        if portable.identity.as_deref() != identity {
            return false;
        }
        let (Some(started), Some(rooms)) = (
            Offset::parse_log(&portable.started),
            portable
                .rooms
                .into_iter()
                .map(|(room, at)| Offset::parse_log(&at).map(|at| (RoomId::from(room), at)))
                .collect::<Option<Joined>>(),
        ) else {
            return false;
        };
        if state.sessions.contains_key(id) || state.live.contains_key(id) {
            return true;
        }
        let now = Instant::now();
        let id: Arc<str> = Arc::from(id);
        let record = Record {
            conn: ConnectionId(portable.conn),
            identity: portable.identity.map(Arc::from),
            rooms,
            started,
            at: now,
        };
        state.sessions.insert(id.clone(), record);
        state.expiries.push_back((now, id));
        true
    }

    /// Whether session `id` is known here, kept or held.
    pub(crate) fn knows(state: &LogState, id: &str) -> bool {
        state.sessions.contains_key(id) || state.live.contains_key(id)
    }

    /// Keeps a dropped connection's session for the window.
    pub(crate) fn keep(
        &self,
        state: &mut LogState,
        session: &Session,
        conn: ConnectionId,
        rooms: Vec<RoomId>,
    ) {
        let now = Instant::now();
        state.expire(now, &self.config);
        let rooms = rooms
            .into_iter()
            .map(|room| {
                let at = session.joined_at(&room);
                (room, at)
            })
            .collect();
        let record = Record {
            conn,
            identity: session.identity.clone(),
            rooms,
            started: session.started,
            at: now,
        };
        if state.live.get(&session.id) == Some(&conn) {
            state.live.remove(&session.id);
        }
        state.sessions.insert(session.id.clone(), record);
        state.expiries.push_back((now, session.id.clone()));
    }

    /// Records an emission: its offset, returned, and the entry, the oldest dropped past the
    /// bounds.
    pub(crate) fn record(
        &self,
        state: &mut LogState,
        target: Target,
        emission: &Arc<Emission>,
    ) -> Arc<Emission> {
        let seq = Offset::local(state.last.minor + 1);
        self.record_at(state, seq, target, emission).unwrap_or_else(|| emission.clone())
    }

    /// Records an emission at a log's offset; `None` when the history holds it already (or
    /// a later one: a log is read in order, and read again after a reconnection).
    pub(crate) fn record_at(
        &self,
        state: &mut LogState,
        seq: Offset,
        target: Target,
        emission: &Arc<Emission>,
    ) -> Option<Arc<Emission>> {
        if seq <= state.last {
            return None;
        }
        let now = Instant::now();
        state.last = seq;
        let entry = Entry {
            seq,
            at: now,
            target,
            event: emission.event().clone(),
            data: emission.data().to_owned(),
            extras: (!emission.extras().is_plain()).then(|| Box::new(emission.extras().clone())),
        };
        let emission = emission.at_offset(self.offset(seq));
        state.entries.push_back(entry);
        while state.entries.len() > self.config.max_events {
            state.drop_oldest();
        }
        state.expire(now, &self.config);
        Some(emission)
    }

    /// Events were lost at `offset`: a recovery from before it finds them gone.
    pub(crate) fn gap_at(&self, state: &mut LogState, offset: Offset) {
        state.floor = state.floor.max(offset);
        state.last = state.last.max(offset);
    }

    /// A log broker starts reading its log after `offset`: what came before is not held.
    pub(crate) fn start_at(&self, state: &mut LogState, offset: Offset) {
        if offset > state.last {
            state.entries.clear();
            state.last = offset;
            state.floor = offset;
        }
    }
}

impl Log {
    pub(crate) fn lock(&self) -> MutexGuard<'_, LogState> {
        // Every update leaves the state consistent (pushes and pops).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl LogState {
    /// Marks session `id` as held by the open connection `conn`.
    pub(crate) fn hold(&mut self, id: Arc<str>, conn: ConnectionId) {
        self.live.insert(id, conn);
    }

    /// The session `id` is no longer held by `conn` (nor kept: it ended).
    pub(crate) fn release(&mut self, id: &str, conn: ConnectionId) {
        if self.live.get(id) == Some(&conn) {
            self.live.remove(id);
        }
    }

    /// The open connection holding session `id`, if any.
    pub(crate) fn holder(&self, id: &str) -> Option<ConnectionId> {
        self.live.get(id).copied()
    }

    /// The offset of the last entry recorded.
    pub(crate) fn last(&self) -> Offset {
        self.last
    }

    fn drop_oldest(&mut self) {
        if let Some(entry) = self.entries.pop_front() {
            // Never lower: a gap may have raised it past the entries still held.
            self.floor = self.floor.max(entry.seq);
        }
    }

    /// The events after offset `after` that `conn`, in `rooms`, was to receive, in order.
    pub(crate) fn missed<'a>(
        &'a self,
        histories: &'a Histories,
        after: Offset,
        conn: ConnectionId,
        rooms: &'a [(RoomId, Offset)],
    ) -> impl Iterator<Item = Arc<Emission>> + 'a {
        let skip = self.entries.partition_point(|e| e.seq <= after);
        self.entries.iter().skip(skip).filter(move |e| e.target.includes(e.seq, conn, rooms)).map(
            |e| {
                let extras = e.extras.as_deref().cloned().unwrap_or_default();
                Emission::with_extras(e.event.clone(), e.data.clone(), extras)
                    .at_offset(histories.offset(e.seq))
            },
        )
    }

    /// Drops entries and sessions older than the window.
    fn expire(&mut self, now: Instant, config: &Recovery) {
        let Some(horizon) = now.checked_sub(config.window) else { return };
        while self.entries.front().is_some_and(|e| e.at < horizon) {
            self.drop_oldest();
        }
        while let Some((at, _)) = self.expiries.front() {
            if *at >= horizon {
                break;
            }
            if let Some((at, id)) = self.expiries.pop_front() {
                // The id may have been recorded again since (a recovered session that dropped
                // again): only the record of that time goes.
                if self.sessions.get(&id).is_some_and(|r| r.at == at) {
                    self.sessions.remove(&id);
                }
            }
        }
    }
}

/// A new session id: 128 bits from the operating system's generator, as hex; `None` (and
/// an error logged) when there is no generator: no session rather than a guessable one.
pub(crate) fn session_id() -> Option<Arc<str>> {
    let mut bytes = [0u8; 16];
    if let Err(e) = getrandom::fill(&mut bytes) {
        tracing::error!(error = %e, "no random generator: the connection gets no session");
        return None;
    }
    let mut id = String::with_capacity(32);
    for b in bytes {
        use std::fmt::Write;
        let _ = write!(id, "{b:02x}");
    }
    Some(id.into())
}

fn random_u32() -> u32 {
    let mut bytes = [0u8; 4];
    // Not a secret: a failure leaves a fixed epoch, which only weakens restart detection.
    let _ = getrandom::fill(&mut bytes);
    u32::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histories(max_events: usize) -> Histories {
        let config = Recovery { window: Duration::from_secs(60), max_events };
        Histories::new(config, [Namespace::root()].iter(), false)
    }

    fn session(started: u64, identity: Option<&str>) -> Session {
        Session::new("s1".into(), Offset::local(started), false, identity.map(Arc::from))
    }

    fn emit(h: &Histories, state: &mut LogState, target: Target) -> String {
        let e = Emission::serialize("e", &1).unwrap();
        h.record(state, target, &e).offset().unwrap().to_owned()
    }

    #[test]
    fn offsets_round_trip_and_junk_is_refused() {
        let h = histories(10);
        assert_eq!(h.parse(&h.offset(Offset::local(42))), Some(Offset::local(42)));
        for junk in ["", "-", "1-", "-1", "zz-1", "x", &"f".repeat(65), "1-2-3", "-1--1"] {
            assert_eq!(h.parse(junk), None, "{junk:?}");
        }
        let Numbering::Local { epoch } = h.numbering else { panic!("local numbering") };
        let other = format!("{:x}-1", epoch.wrapping_add(1));
        assert_eq!(h.parse(&other), None, "another process's offset");
    }

    #[test]
    fn a_session_replays_what_its_rooms_missed_once() {
        let h = histories(100);
        let log = h.log(&Namespace::root()).unwrap();
        let mut state = log.lock();
        let conn = ConnectionId(7);
        let first = emit(&h, &mut state, Target::Room { room: "a".into(), except: None });
        h.keep(&mut state, &session(0, Some("u1")), conn, vec!["a".into()]);
        emit(&h, &mut state, Target::Room { room: "a".into(), except: None });
        emit(&h, &mut state, Target::Room { room: "b".into(), except: None });
        emit(&h, &mut state, Target::Room { room: "a".into(), except: Some(conn) });
        emit(&h, &mut state, Target::Connection(conn));
        emit(&h, &mut state, Target::Connection(ConnectionId(8)));
        emit(&h, &mut state, Target::All { except: None });

        assert_eq!(
            h.take(&mut state, "s1", Some(&first), Some("u2")).err(),
            Some(Failure::Refused)
        );
        let restored = h.take(&mut state, "s1", Some(&first), Some("u1")).ok().unwrap();
        assert_eq!(restored.conn, conn);
        let missed: Vec<_> = state
            .missed(&h, restored.after, conn, &restored.rooms)
            .map(|e| h.parse(e.offset().unwrap()).unwrap().minor)
            .collect();
        assert_eq!(missed, [2, 5, 7]);
        assert_eq!(
            h.take(&mut state, "s1", Some(&first), Some("u1")).err(),
            Some(Failure::Expired)
        );
    }

    #[test]
    fn offsets_out_of_the_history_do_not_recover() {
        let h = histories(3);
        let log = h.log(&Namespace::root()).unwrap();
        let mut state = log.lock();
        let conn = ConnectionId(1);
        let keep = |state: &mut LogState| h.keep(state, &session(0, None), conn, vec![]);
        let early = emit(&h, &mut state, Target::All { except: None });
        for _ in 0..5 {
            emit(&h, &mut state, Target::All { except: None });
        }
        keep(&mut state);
        assert_eq!(h.take(&mut state, "s1", Some(&early), None).err(), Some(Failure::Expired));
        keep(&mut state);
        let future = h.offset(Offset::local(99));
        assert_eq!(h.take(&mut state, "s1", Some(&future), None).err(), Some(Failure::Refused));
        keep(&mut state);
        let latest = h.offset(state.last());
        let restored = h.take(&mut state, "s1", Some(&latest), None).ok().unwrap();
        assert_eq!(state.missed(&h, restored.after, conn, &[]).count(), 0);
        assert_eq!(state.entries.len(), 3, "bounded");
    }

    mod props {
        use proptest::prelude::*;

        use super::*;

        #[derive(Debug, Clone)]
        enum Op {
            Room(u8, Option<u64>),
            All(Option<u64>),
            Direct(u64),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (0u8..3, proptest::option::of(0u64..3)).prop_map(|(r, e)| Op::Room(r, e)),
                proptest::option::of(0u64..3).prop_map(Op::All),
                (0u64..3).prop_map(Op::Direct),
            ]
        }

        fn target(op: &Op) -> Target {
            let except = |e: &Option<u64>| e.map(ConnectionId);
            match op {
                Op::Room(r, e) => Target::Room { room: format!("r{r}").into(), except: except(e) },
                Op::All(e) => Target::All { except: except(e) },
                Op::Direct(c) => Target::Connection(ConnectionId(*c)),
            }
        }

        proptest! {
            /// The history holds at most its bound, and a recovery replays exactly the
            /// events after the offset that were for the connection, in order.
            #[test]
            fn replay_is_the_model(
                ops in proptest::collection::vec(op(), 0..60),
                max in 1usize..20,
                after in 0u64..70,
                conn in 0u64..3,
                rooms in proptest::collection::vec(0u8..3, 0..3),
            ) {
                let h = histories(max);
                let log = h.log(&Namespace::root()).unwrap();
                let mut state = log.lock();
                for op in &ops {
                    h.record(&mut state, target(op), &Emission::serialize("e", &0).unwrap());
                    prop_assert!(state.entries.len() <= max);
                }
                let rooms: Vec<RoomId> = rooms.iter().map(|r| format!("r{r}").into()).collect();
                let joined: Joined = rooms.iter().map(|r| (r.clone(), Offset::default())).collect();
                let session = Session::new("s".into(), Offset::default(), false, None);
                h.keep(&mut state, &session, ConnectionId(conn), rooms);
                let offset = h.offset(Offset::local(after));
                let total = ops.len() as u64;
                let oldest = total.saturating_sub(max as u64) + 1;
                match h.take(&mut state, "s", Some(&offset), None) {
                    Ok(restored) => {
                        prop_assert!(after <= total && after + 1 >= oldest);
                        let got: Vec<u64> = state
                            .missed(&h, restored.after, ConnectionId(conn), &restored.rooms)
                            .map(|e| h.parse(e.offset().unwrap()).unwrap().minor)
                            .collect();
                        let want: Vec<u64> = ops
                            .iter()
                            .enumerate()
                            .map(|(i, op)| (i as u64 + 1, op))
                            .filter(|(seq, op)| *seq > after && target(op).includes(Offset::local(*seq), ConnectionId(conn), &joined))
                            .map(|(seq, _)| seq)
                            .collect();
                        prop_assert_eq!(got, want);
                    }
                    Err(Failure::Refused) => prop_assert!(after > total),
                    Err(Failure::Expired) => prop_assert!(after + 1 < oldest),
                }
            }

            /// Offsets and session ids from clients are untrusted: anything but an offset this
            /// history gave out is refused, and nothing panics.
            #[test]
            fn junk_never_recovers(id in ".{0,80}", offset in ".{0,80}") {
                let h = histories(4);
                let log = h.log(&Namespace::root()).unwrap();
                let mut state = log.lock();
                h.record(&mut state, Target::All { except: None }, &Emission::serialize("e", &0).unwrap());
                let valid = h.parse(&offset).is_some();
                prop_assert_eq!(valid, offset == h.offset(h.parse(&offset).unwrap_or(Offset::local(u64::MAX))).as_ref());
                prop_assert!(h.take(&mut state, &id, Some(&offset), None).is_err(), "no session was kept");
            }
        }
    }
}
