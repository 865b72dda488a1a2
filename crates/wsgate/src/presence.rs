//! Presence: who is in a room, across transports and instances, as Phoenix Presence has it.
//!
//! A connection tracks itself in a room under a key the app chooses (a user id) with a meta (what
//! others may see of it): [`Connection::track`](crate::Connection::track). A key is present
//! while at least one connection tracks it, so a user with two tabs is one key with two metas.
//! Leaving the room, untracking or disconnecting removes the connection's meta.
//!
//! Members that watch a room ([`Connection::watch_presence`](crate::Connection::watch_presence))
//! receive `presenceDiff` events: the keys that joined (with their first meta) and left (with
//! their last), coalesced over [`PresenceConfig::interval`], so that a storm of joins costs one
//! frame per watcher per interval, not one per join.
//!
//! Across instances, each instance owns its own connections' entries and sends its changes to
//! the others through the broker ([`Broker::signal`](crate::broker::Broker::signal)): numbered
//! deltas, a heartbeat, and its whole state to whoever asks (a newcomer, or an instance that
//! missed a delta). An instance silent for [`PresenceConfig::timeout`] is taken for dead and its
//! entries removed everywhere; when it speaks again (it was only cut off) the others ask for its
//! state and its entries come back. There is no registry: every instance holds the merged view.
//!
//! The tracker is that state machine, free of time and I/O, so that its merge can be tested on
//! any interleaving of messages.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::broker::NodeId;
use crate::names::{ConnectionId, Namespace, RoomId};

/// Presence settings ([`AppConfig::presence`](crate::AppConfig::presence)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceConfig {
    /// How long changes are gathered before they go out: each room's watchers get at most one
    /// `presenceDiff` per interval, and this instance's changes go to the others at most once
    /// per interval. Default 100 ms.
    pub interval: Duration,
    /// How often an instance tells the others it is alive. Default 5 s.
    pub heartbeat: Duration,
    /// How long an instance may stay silent before its entries are removed everywhere.
    /// Default 15 s.
    pub timeout: Duration,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(100),
            heartbeat: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
        }
    }
}

/// A key present in a room, with one meta per connection tracking it, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PresenceEntry {
    /// The app's key (the blog: the user id).
    pub key: String,
    /// The metas, oldest first.
    pub metas: Vec<Value>,
}

/// A key that joined (with its first meta) or left (with its last).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PresenceChange {
    /// The key.
    pub key: String,
    /// Its meta.
    pub meta: Value,
}

/// What changed in a room since its watchers were last told.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PresenceDiff {
    /// The room's namespace.
    #[serde(skip)]
    pub namespace: Namespace,
    /// The room.
    pub room: RoomId,
    /// Keys now present that were not.
    pub joins: Vec<PresenceChange>,
    /// Keys gone that were present.
    pub leaves: Vec<PresenceChange>,
}

impl PresenceDiff {
    /// The default `presenceDiff` data: `{room, joins: [{key, meta}], leaves: [{key, meta}]}`.
    pub fn to_json(&self) -> Value {
        json!({ "room": self.room, "joins": self.joins, "leaves": self.leaves })
    }
}

/// The tick of a newcomer's second hello (about half a second in, at the default interval).
const HELLO_AGAIN: u32 = 5;

/// A room of a namespace.
pub(crate) type Place = (Namespace, RoomId);

/// One change of an instance's own entries, as it travels (externally tagged: a meta is raw
/// JSON, which an internally tagged enum cannot carry).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Op {
    Track { ns: Namespace, room: RoomId, conn: ConnectionId, key: String, meta: Shared },
    Untrack { ns: Namespace, room: RoomId, conn: ConnectionId },
}

/// What instances tell each other about presence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Message {
    /// The sender's changes since its delta `seq - 1`.
    Delta { node: NodeId, seq: u64, ops: Vec<Op> },
    /// The sender is alive; its last delta is `seq`.
    Heartbeat { node: NodeId, seq: u64 },
    /// The sender's whole state as of its delta `seq` (only `Track` ops).
    State { node: NodeId, seq: u64, ops: Vec<Op> },
    /// The sender asks `want` for its state.
    Sync { node: NodeId, want: NodeId },
    /// The sender just started: everyone sends it their state.
    Hello { node: NodeId },
}

/// A meta as JSON text (a few dozen bytes, where a parsed map takes hundreds), shared by the
/// tracker's own record, the merged view and the delta that carries it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Shared(std::sync::Arc<serde_json::value::RawValue>);

impl Shared {
    fn get(&self) -> &str {
        self.0.get()
    }
}

impl From<Box<serde_json::value::RawValue>> for Shared {
    fn from(raw: Box<serde_json::value::RawValue>) -> Self {
        Self(raw.into())
    }
}

impl PartialEq for Shared {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

/// A meta as a value, for the app.
fn value(meta: &Shared) -> Value {
    serde_json::from_str(meta.get()).unwrap_or(Value::Null)
}

/// An entry: who (instance and connection) tracks which key with which meta.
#[derive(Clone, Debug, PartialEq)]
struct Meta {
    node: NodeId,
    conn: ConnectionId,
    meta: Shared,
}

#[derive(Default)]
struct Room {
    /// Present keys and their metas, oldest first.
    keys: BTreeMap<String, Vec<Meta>>,
    /// The keys watchers were last told are present.
    announced: BTreeSet<String>,
    /// Keys changed since, with the last meta each had when it went (for a leave).
    dirty: BTreeMap<String, Option<Shared>>,
}

type Entries = BTreeMap<(Place, ConnectionId), (String, Shared)>;

struct Remote {
    /// Its last delta applied.
    seq: u64,
    /// Whether `entries` is its state (false until its state arrives, and after a gap).
    synced: bool,
    last_seen: Instant,
    /// When its state was last asked for.
    asked: Option<Instant>,
    entries: Entries,
}

/// Presence of one instance: its own entries, what it knows of the others', the merged view
/// per room, and what it owes its watchers and the other instances.
pub(crate) struct Tracker {
    node: NodeId,
    config: PresenceConfig,
    seq: u64,
    local: Entries,
    pending: Vec<Op>,
    state_wanted: bool,
    last_heartbeat: Option<Instant>,
    /// Ticks so far, for the hellos of the first second.
    ticks: u32,
    remotes: HashMap<NodeId, Remote>,
    rooms: HashMap<Place, Room>,
    /// The rooms with changes since the last diffs, so that a tick visits only those.
    dirty_rooms: std::collections::HashSet<Place>,
}

impl Tracker {
    pub(crate) fn new(node: NodeId, config: PresenceConfig) -> Self {
        Self {
            node,
            config,
            seq: 0,
            local: Entries::new(),
            pending: Vec::new(),
            state_wanted: false,
            last_heartbeat: None,
            ticks: 0,
            remotes: HashMap::new(),
            rooms: HashMap::new(),
            dirty_rooms: std::collections::HashSet::new(),
        }
    }

    pub(crate) fn config(&self) -> &PresenceConfig {
        &self.config
    }

    /// Tracks `conn` in `place` under `key` with `meta` (replacing what it tracked there).
    pub(crate) fn track(
        &mut self,
        place: Place,
        conn: ConnectionId,
        key: String,
        meta: Box<serde_json::value::RawValue>,
    ) {
        let slot = (place.clone(), conn);
        if self.local.get(&slot).is_some_and(|(k, m)| *k == key && m.get() == meta.get()) {
            return;
        }
        let meta = Shared::from(meta);
        if let Some((old, _)) = self.local.remove(&slot) {
            self.remove(&place, self.node, conn, &old);
        }
        self.local.insert(slot, (key.clone(), meta.clone()));
        self.insert(&place, self.node, conn, key.clone(), meta.clone());
        let (ns, room) = place;
        self.pending.push(Op::Track { ns, room, conn, key, meta });
    }

    /// Untracks `conn` in `place`.
    pub(crate) fn untrack(&mut self, place: &Place, conn: ConnectionId) {
        let Some((key, _)) = self.local.remove(&(place.clone(), conn)) else { return };
        self.remove(place, self.node, conn, &key);
        let (ns, room) = place.clone();
        self.pending.push(Op::Untrack { ns, room, conn });
    }

    /// This instance's connections tracking `key` in `place`.
    pub(crate) fn local_conns(&self, place: &Place, key: &str) -> Vec<ConnectionId> {
        let metas = self.rooms.get(place).and_then(|room| room.keys.get(key));
        metas.map_or_else(Vec::new, |metas| {
            metas.iter().filter(|m| m.node == self.node).map(|m| m.conn).collect()
        })
    }

    /// Whether `conn` (of this instance) is tracked in `place`.
    pub(crate) fn is_tracked(&self, place: &Place, conn: ConnectionId) -> bool {
        self.local.contains_key(&(place.clone(), conn))
    }

    /// The keys present in `place`, from every instance, sorted by key.
    pub(crate) fn list(&self, place: &Place) -> Vec<PresenceEntry> {
        self.rooms.get(place).map_or_else(Vec::new, |room| {
            room.keys
                .iter()
                .map(|(key, metas)| PresenceEntry {
                    key: key.clone(),
                    metas: metas.iter().map(|m| value(&m.meta)).collect(),
                })
                .collect()
        })
    }

    fn insert(
        &mut self,
        place: &Place,
        node: NodeId,
        conn: ConnectionId,
        key: String,
        meta: Shared,
    ) {
        let room = self.rooms.entry(place.clone()).or_default();
        let metas = room.keys.entry(key.clone()).or_default();
        match metas.iter_mut().find(|m| m.node == node && m.conn == conn) {
            Some(m) => m.meta = meta,
            None => metas.push(Meta { node, conn, meta }),
        }
        room.dirty.entry(key).or_insert(None);
        self.dirty_rooms.insert(place.clone());
    }

    fn remove(&mut self, place: &Place, node: NodeId, conn: ConnectionId, key: &str) {
        let Some(room) = self.rooms.get_mut(place) else { return };
        let Some(metas) = room.keys.get_mut(key) else { return };
        let Some(at) = metas.iter().position(|m| m.node == node && m.conn == conn) else { return };
        let gone = metas.remove(at);
        if metas.is_empty() {
            room.keys.remove(key);
            room.dirty.insert(key.to_owned(), Some(gone.meta));
        } else {
            room.dirty.entry(key.to_owned()).or_insert(None);
        }
        self.dirty_rooms.insert(place.clone());
    }

    /// Each changed room's diff since the last call: keys present now that watchers were not
    /// told of (joins, with their first meta), and keys they were told of that are gone
    /// (leaves, with their last meta). A key that came and went in between is neither.
    pub(crate) fn diffs(&mut self) -> Vec<PresenceDiff> {
        let mut diffs = Vec::new();
        for place in std::mem::take(&mut self.dirty_rooms) {
            let Some(room) = self.rooms.get_mut(&place) else { continue };
            let mut diff = PresenceDiff {
                namespace: place.0.clone(),
                room: place.1.clone(),
                joins: Vec::new(),
                leaves: Vec::new(),
            };
            for (key, last) in std::mem::take(&mut room.dirty) {
                let present = room.keys.get(&key).and_then(|metas| metas.first());
                match (present, room.announced.contains(&key)) {
                    (Some(first), false) => {
                        diff.joins
                            .push(PresenceChange { key: key.clone(), meta: value(&first.meta) });
                        room.announced.insert(key);
                    }
                    (None, true) => {
                        let meta = last.map_or(Value::Null, |m| value(&m));
                        diff.leaves.push(PresenceChange { key: key.clone(), meta });
                        room.announced.remove(&key);
                    }
                    _ => {}
                }
            }
            if room.keys.is_empty() && room.announced.is_empty() {
                self.rooms.remove(&place);
            }
            if !diff.joins.is_empty() || !diff.leaves.is_empty() {
                diffs.push(diff);
            }
        }
        diffs
    }

    /// What this instance sends now: its changes since the last tick (one delta), its state if
    /// asked for, a heartbeat when one is due; and instances silent past the timeout are
    /// removed (their keys leave).
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<Message> {
        let mut out = Vec::new();
        if !self.pending.is_empty() {
            self.seq += 1;
            out.push(Message::Delta {
                node: self.node,
                seq: self.seq,
                ops: std::mem::take(&mut self.pending),
            });
        }
        if std::mem::take(&mut self.state_wanted) {
            out.push(Message::State { node: self.node, seq: self.seq, ops: self.state() });
        }
        // A newcomer asks everyone for their state at once, rather than waiting for their
        // heartbeats; twice, in case its own subscription was not ready the first time.
        self.ticks = self.ticks.saturating_add(1);
        if self.ticks == 1 || self.ticks == HELLO_AGAIN {
            out.push(Message::Hello { node: self.node });
        }
        if self.last_heartbeat.is_none_or(|at| now.duration_since(at) >= self.config.heartbeat) {
            self.last_heartbeat = Some(now);
            out.push(Message::Heartbeat { node: self.node, seq: self.seq });
        }
        // Checked every interval: an instance that spoke last `timeout - interval` ago goes
        // now, so that none outlives `timeout` of silence.
        let limit = self.config.timeout.saturating_sub(self.config.interval);
        let dead: Vec<NodeId> = self
            .remotes
            .iter()
            .filter(|(_, r)| now.duration_since(r.last_seen) >= limit)
            .map(|(node, _)| *node)
            .collect();
        for node in dead {
            if let Some(remote) = self.remotes.remove(&node) {
                tracing::info!(%node, entries = remote.entries.len(), "presence: instance silent, its entries removed");
                for ((place, conn), (key, _)) in remote.entries {
                    self.remove(&place, node, conn, &key);
                }
            }
        }
        out
    }

    fn state(&self) -> Vec<Op> {
        self.local
            .iter()
            .map(|(((ns, room), conn), (key, meta))| Op::Track {
                ns: ns.clone(),
                room: room.clone(),
                conn: *conn,
                key: key.clone(),
                meta: meta.clone(),
            })
            .collect()
    }

    /// Takes in another instance's message; returns what to send back (a request for its
    /// state, when this one's view of it has a gap).
    pub(crate) fn receive(&mut self, message: Message, now: Instant) -> Vec<Message> {
        match message {
            Message::Hello { node } => {
                if node != self.node {
                    self.state_wanted = true;
                }
                Vec::new()
            }
            Message::Sync { want, .. } => {
                if want == self.node {
                    // Sent with the next tick, after the pending delta: one state for everyone
                    // who asked meanwhile.
                    self.state_wanted = true;
                }
                Vec::new()
            }
            Message::Delta { node, .. }
            | Message::Heartbeat { node, .. }
            | Message::State { node, .. }
                if node == self.node =>
            {
                Vec::new()
            }
            Message::Heartbeat { node, seq } => {
                let remote = self.remote(node, now);
                if !remote.synced || seq != remote.seq {
                    remote.synced = false;
                    return self.ask(node, now);
                }
                Vec::new()
            }
            Message::Delta { node, seq, ops } => {
                let remote = self.remote(node, now);
                if remote.synced && seq <= remote.seq {
                    return Vec::new();
                }
                if !remote.synced || seq != remote.seq + 1 {
                    remote.synced = false;
                    return self.ask(node, now);
                }
                remote.seq = seq;
                for op in ops {
                    self.apply(node, op);
                }
                Vec::new()
            }
            Message::State { node, seq, ops } => {
                let remote = self.remote(node, now);
                if remote.synced && seq < remote.seq {
                    return Vec::new();
                }
                remote.seq = seq;
                remote.synced = true;
                remote.asked = None;
                let old = std::mem::take(&mut remote.entries);
                for ((place, conn), (key, _)) in old {
                    self.remove(&place, node, conn, &key);
                }
                for op in ops {
                    self.apply(node, op);
                }
                Vec::new()
            }
        }
    }

    fn remote(&mut self, node: NodeId, now: Instant) -> &mut Remote {
        let remote = self.remotes.entry(node).or_insert_with(|| Remote {
            seq: 0,
            synced: false,
            last_seen: now,
            asked: None,
            entries: Entries::new(),
        });
        remote.last_seen = now;
        remote
    }

    /// Asks `node` for its state, at most once a second.
    fn ask(&mut self, node: NodeId, now: Instant) -> Vec<Message> {
        let me = self.node;
        let Some(remote) = self.remotes.get_mut(&node) else { return Vec::new() };
        if remote.asked.is_some_and(|at| now.duration_since(at) < Duration::from_secs(1)) {
            return Vec::new();
        }
        remote.asked = Some(now);
        vec![Message::Sync { node: me, want: node }]
    }

    fn apply(&mut self, node: NodeId, op: Op) {
        match op {
            Op::Track { ns, room, conn, key, meta } => {
                let place = (ns, room);
                let slot = (place.clone(), conn);
                let Some(remote) = self.remotes.get_mut(&node) else { return };
                let old = remote.entries.insert(slot, (key.clone(), meta.clone()));
                if let Some((old_key, _)) = old
                    && old_key != key
                {
                    self.remove(&place, node, conn, &old_key);
                }
                self.insert(&place, node, conn, key, meta);
            }
            Op::Untrack { ns, room, conn } => {
                let place = (ns, room);
                let Some(remote) = self.remotes.get_mut(&node) else { return };
                if let Some((key, _)) = remote.entries.remove(&(place.clone(), conn)) {
                    self.remove(&place, node, conn, &key);
                }
            }
        }
    }

    /// Every entry this instance knows, its own and the others': (room, node, conn, key, meta).
    #[cfg(test)]
    fn entries(&self) -> BTreeSet<(String, String, u64, u64, String, String)> {
        let row =
            |(ns, room): &Place, node: NodeId, conn: ConnectionId, key: &str, meta: &Shared| {
                (
                    ns.to_string(),
                    room.to_string(),
                    node.0,
                    conn.0,
                    key.to_owned(),
                    meta.get().to_owned(),
                )
            };
        let mut all = BTreeSet::new();
        for ((place, conn), (key, meta)) in &self.local {
            all.insert(row(place, self.node, *conn, key, meta));
        }
        for (node, remote) in &self.remotes {
            for ((place, conn), (key, meta)) in &remote.entries {
                all.insert(row(place, *node, *conn, key, meta));
            }
        }
        all
    }

    /// The merged per-room view, as rows: must agree with [`Tracker::entries`].
    #[cfg(test)]
    fn merged(&self) -> BTreeSet<(String, String, u64, u64, String, String)> {
        let mut all = BTreeSet::new();
        for ((ns, room), r) in &self.rooms {
            for (key, metas) in &r.keys {
                for m in metas {
                    all.insert((
                        ns.to_string(),
                        room.to_string(),
                        m.node.0,
                        m.conn.0,
                        key.clone(),
                        m.meta.get().to_owned(),
                    ));
                }
            }
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use proptest::prelude::*;

    use super::*;

    fn place(i: u8) -> Place {
        (Namespace::new("/"), RoomId::from(format!("room:{i}")))
    }

    fn raw(value: Value) -> Box<serde_json::value::RawValue> {
        serde_json::value::to_raw_value(&value).unwrap()
    }

    fn tracker(node: u64) -> Tracker {
        Tracker::new(NodeId(node), PresenceConfig::default())
    }

    #[test]
    fn two_tabs_are_one_key_and_the_last_tab_leaving_is_the_leave() {
        let mut t = tracker(1);
        let room = place(1);
        t.track(room.clone(), ConnectionId(10), "ada".into(), raw(json!({"tab": 1})));
        t.track(room.clone(), ConnectionId(11), "ada".into(), raw(json!({"tab": 2})));
        let diffs = t.diffs();
        assert_eq!(diffs.len(), 1);
        assert_eq!(diffs[0].joins, [PresenceChange { key: "ada".into(), meta: json!({"tab": 1}) }]);
        assert_eq!(t.list(&room)[0].metas, [json!({"tab": 1}), json!({"tab": 2})]);

        t.untrack(&room, ConnectionId(10));
        assert_eq!(t.diffs(), [], "one tab closing is not a leave");
        t.untrack(&room, ConnectionId(11));
        let diffs = t.diffs();
        assert_eq!(
            diffs[0].leaves,
            [PresenceChange { key: "ada".into(), meta: json!({"tab": 2}) }]
        );
        assert!(t.list(&room).is_empty());
        assert!(t.rooms.is_empty(), "an empty room is forgotten");
    }

    #[test]
    fn a_key_that_comes_and_goes_within_an_interval_is_no_diff() {
        let mut t = tracker(1);
        t.track(place(1), ConnectionId(1), "grace".into(), raw(json!(1)));
        t.untrack(&place(1), ConnectionId(1));
        assert_eq!(t.diffs(), []);
        // Yet the others hear of both changes, in one delta.
        let out = t.tick(Instant::now());
        assert!(matches!(&out[0], Message::Delta { seq: 1, ops, .. } if ops.len() == 2));
    }

    #[test]
    fn a_storm_of_joins_is_one_diff() {
        let mut t = tracker(1);
        for i in 0..10_000u64 {
            t.track(place(1), ConnectionId(i), format!("user{i}"), raw(json!({ "i": i })));
        }
        let diffs = t.diffs();
        assert_eq!(diffs.len(), 1);
        assert_eq!(diffs[0].joins.len(), 10_000);
        assert_eq!(t.tick(Instant::now()).len(), 3, "one delta, the first hello and heartbeat");
    }

    #[test]
    fn a_silent_instance_leaves_and_comes_back_when_it_speaks() {
        let start = Instant::now();
        let (mut a, mut b) = (tracker(1), tracker(2));
        a.track(place(1), ConnectionId(1), "ada".into(), raw(json!("a")));
        let hello = a.tick(start);
        // b has never heard of a: it asks for a's state, which a sends with its next tick.
        let asks: Vec<Message> = hello.into_iter().flat_map(|m| b.receive(m, start)).collect();
        assert_eq!(asks, [Message::Sync { node: NodeId(2), want: NodeId(1) }]);
        for m in asks {
            a.receive(m, start);
        }
        for m in a.tick(start) {
            b.receive(m, start);
        }
        assert_eq!(b.list(&place(1))[0].key, "ada");
        assert_eq!(b.diffs()[0].joins.len(), 1);

        // a falls silent: past the timeout b removes its entries.
        b.tick(start + Duration::from_secs(10));
        assert_eq!(b.list(&place(1)).len(), 1, "not yet");
        b.tick(start + Duration::from_secs(16));
        assert!(b.list(&place(1)).is_empty());
        assert_eq!(b.diffs()[0].leaves[0].key, "ada");

        // a was only cut off: its next heartbeat makes b ask again, and a's entries return.
        let later = start + Duration::from_secs(20);
        let asks: Vec<Message> =
            a.tick(later).into_iter().flat_map(|m| b.receive(m, later)).collect();
        assert_eq!(asks.len(), 1);
        a.receive(asks[0].clone(), later);
        for m in a.tick(later) {
            b.receive(m, later);
        }
        assert_eq!(b.list(&place(1))[0].key, "ada");
    }

    #[test]
    fn messages_travel_as_json() {
        let m = Message::Delta {
            node: NodeId(7),
            seq: 3,
            ops: vec![
                Op::Track {
                    ns: Namespace::new("/"),
                    room: RoomId::from("entry:1"),
                    conn: ConnectionId(9),
                    key: "1".into(),
                    meta: Shared::from(
                        serde_json::value::to_raw_value(&json!({"firstName": "Ada"})).unwrap(),
                    ),
                },
                Op::Untrack {
                    ns: Namespace::new("/"),
                    room: RoomId::from("entry:1"),
                    conn: ConnectionId(9),
                },
            ],
        };
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Message>(&text).unwrap(), m);
    }

    #[derive(Clone, Debug)]
    enum Step {
        Track { node: usize, place: u8, conn: u8, key: u8, meta: u8 },
        Untrack { node: usize, place: u8, conn: u8 },
        Disconnect { node: usize, conn: u8 },
        Tick { node: usize },
        Deliver { from: usize, to: usize },
        Drop { from: usize, to: usize },
    }

    const NODES: usize = 3;

    fn step() -> impl Strategy<Value = Step> {
        let node = 0..NODES;
        prop_oneof![
            3 => (node.clone(), 0..3u8, 0..4u8, 0..3u8, 0..2u8)
                .prop_map(|(node, place, conn, key, meta)| Step::Track { node, place, conn, key, meta }),
            2 => (node.clone(), 0..3u8, 0..4u8).prop_map(|(node, place, conn)| Step::Untrack { node, place, conn }),
            1 => (node.clone(), 0..4u8).prop_map(|(node, conn)| Step::Disconnect { node, conn }),
            2 => node.clone().prop_map(|node| Step::Tick { node }),
            4 => (node.clone(), node.clone()).prop_map(|(from, to)| Step::Deliver { from, to }),
            1 => (node.clone(), node).prop_map(|(from, to)| Step::Drop { from, to }),
        ]
    }

    /// Per-sender, per-receiver FIFO channels, as one Redis pub/sub connection gives.
    struct Net {
        nodes: Vec<Tracker>,
        queues: Vec<Vec<VecDeque<Message>>>,
        now: Instant,
    }

    impl Net {
        fn new() -> Self {
            Self {
                nodes: (0..NODES).map(|i| tracker(i as u64 + 1)).collect(),
                queues: (0..NODES).map(|_| (0..NODES).map(|_| VecDeque::new()).collect()).collect(),
                now: Instant::now(),
            }
        }

        fn send(&mut self, from: usize, messages: Vec<Message>) {
            for m in messages {
                for to in (0..NODES).filter(|&to| to != from) {
                    self.queues[from][to].push_back(m.clone());
                }
            }
        }

        fn deliver(&mut self, from: usize, to: usize) {
            if let Some(m) = self.queues[from][to].pop_front() {
                let replies = self.nodes[to].receive(m, self.now);
                self.send(to, replies);
            }
        }

        fn conn(node: usize, conn: u8) -> ConnectionId {
            ConnectionId(node as u64 * 100 + u64::from(conn))
        }

        fn run(&mut self, step: Step) {
            match step {
                Step::Track { node, place: p, conn, key, meta } => self.nodes[node].track(
                    place(p),
                    Self::conn(node, conn),
                    format!("k{key}"),
                    raw(json!(meta)),
                ),
                Step::Untrack { node, place: p, conn } => {
                    self.nodes[node].untrack(&place(p), Self::conn(node, conn));
                }
                Step::Disconnect { node, conn } => {
                    for p in 0..3 {
                        self.nodes[node].untrack(&place(p), Self::conn(node, conn));
                    }
                }
                Step::Tick { node } => {
                    let out = self.nodes[node].tick(self.now);
                    self.send(node, out);
                }
                Step::Deliver { from, to } => self.deliver(from, to),
                Step::Drop { from, to } => {
                    self.queues[from][to].pop_front();
                }
            }
        }

        /// No more losses: heartbeats, requests and states until every queue is empty.
        fn settle(&mut self) {
            for _ in 0..8 {
                self.now += Duration::from_secs(5);
                for node in 0..NODES {
                    let out = self.nodes[node].tick(self.now);
                    self.send(node, out);
                }
                while (0..NODES).any(|f| (0..NODES).any(|t| !self.queues[f][t].is_empty())) {
                    for from in 0..NODES {
                        for to in 0..NODES {
                            self.deliver(from, to);
                        }
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any interleaving of tracks and untracks on several instances, with messages
        /// delayed and lost, ends in the same state on each once messages flow again: the
        /// union of every instance's own entries.
        #[test]
        fn every_instance_ends_with_the_same_view(steps in prop::collection::vec(step(), 0..120)) {
            let mut net = Net::new();
            for step in steps {
                net.run(step);
            }
            net.settle();
            let truth: BTreeSet<_> = net
                .nodes
                .iter()
                .flat_map(|t| t.entries().into_iter().filter(move |row| row.2 == t.node.0))
                .collect();
            for t in &net.nodes {
                prop_assert_eq!(&t.entries(), &truth, "node {}", t.node);
                prop_assert_eq!(&t.merged(), &truth, "node {}: its per-room view", t.node);
            }
            // Watchers were told exactly the present keys.
            for t in &mut net.nodes {
                t.diffs();
                for (place, room) in &t.rooms {
                    let present: BTreeSet<String> = room.keys.keys().cloned().collect();
                    prop_assert_eq!(&room.announced, &present, "{:?}", place);
                }
            }
        }
    }
}

/// Shapes a room's diff into the event its watchers receive (`None`: nothing is sent).
/// The default is `presenceDiff` with [`PresenceDiff::to_json`].
pub type DiffFormat =
    std::sync::Arc<dyn Fn(&PresenceDiff) -> Option<(crate::EventName, Value)> + Send + Sync>;

/// What travels on a broker's signal channel: presence, volatile emits, the app's signals.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Signal {
    Presence(Message),
    Volatile(crate::broker::Envelope),
    /// An application's signal ([`crate::Server::signal`]), for the other instances.
    App {
        origin: crate::broker::NodeId,
        topic: String,
        data: Box<serde_json::value::RawValue>,
    },
}

impl Signal {
    pub(crate) fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A server's presence: the tracker, who watches which room, and how diffs are shaped.
pub(crate) struct Runtime {
    pub(crate) tracker: std::sync::Mutex<Tracker>,
    pub(crate) watchers: std::sync::Mutex<HashMap<Place, BTreeSet<ConnectionId>>>,
    pub(crate) format: std::sync::OnceLock<DiffFormat>,
}

impl Runtime {
    pub(crate) fn new(node: NodeId, config: PresenceConfig) -> Self {
        Self {
            tracker: std::sync::Mutex::new(Tracker::new(node, config)),
            watchers: std::sync::Mutex::default(),
            format: std::sync::OnceLock::new(),
        }
    }

    pub(crate) fn tracker(&self) -> std::sync::MutexGuard<'_, Tracker> {
        crate::connection::lock(&self.tracker)
    }

    pub(crate) fn watchers(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Place, BTreeSet<ConnectionId>>> {
        crate::connection::lock(&self.watchers)
    }

    /// The event and data of `diff` for its watchers.
    pub(crate) fn render(&self, diff: &PresenceDiff) -> Option<(crate::EventName, Value)> {
        match self.format.get() {
            Some(format) => format(diff),
            None => Some((crate::EventName::from("presenceDiff"), diff.to_json())),
        }
    }
}
