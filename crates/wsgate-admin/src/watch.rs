//! What the UI is told: the observer that turns connections, rooms and events into the UI's
//! events, the task that hands them to this instance's UIs and to the other instances, and
//! the stats each instance reports every two seconds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use wsgate::adapter::Emission;
use wsgate::{
    CloseReason, Connection, ConnectionId, EventName, Namespace, Observer, RoomId, Server,
};

use crate::socket::{self, Seen};

/// The broker signal topic of the admin namespace's traffic between instances.
pub(crate) const TOPIC: &str = "wsgate.admin";
/// How often each instance sends `server_stats`, as the Admin UI's own server does.
pub(crate) const STATS_EVERY: Duration = Duration::from_secs(2);
/// Notices waiting for the task; past it they are dropped (and counted): the UI is a
/// window on the traffic, never a brake on it.
const QUEUE: usize = 8192;
/// An event's data larger than this is shown as its size only.
const MAX_SHOWN: usize = 4096;

/// One event for the UIs: `event` with its arguments.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Notice {
    event: String,
    args: Vec<Value>,
}

/// What instances tell each other on [`TOPIC`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub(crate) enum Wire {
    /// Events for every UI.
    Notices { notices: Vec<Notice> },
    /// A UI connected to `to`: every instance sends it its sockets.
    SocketsWanted { to: ConnectionId },
    /// An instance's sockets, for the UI `to`.
    Sockets { to: ConnectionId, sockets: Vec<Value> },
    /// A UI's operation, for every instance to apply to its own sockets.
    Operation { op: Operation },
    /// An instance has UIs connected (every [`STATS_EVERY`]): tell it what happens here.
    Watching,
}

/// A UI's operation on sockets: those of `nsp`, narrowed by `filter` (a socket id, or a room).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Operation {
    pub(crate) nsp: String,
    pub(crate) filter: Option<String>,
    pub(crate) action: Action,
}

/// What an [`Operation`] does.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Action {
    Join(String),
    Leave(String),
    Disconnect,
}

impl Operation {
    /// Applies it to this instance's sockets; returns how many it concerned.
    pub(crate) fn apply(&self, server: &Server) -> usize {
        let nsp = Namespace::new(&self.nsp);
        let chosen: Vec<Connection> = server
            .connections()
            .into_iter()
            .filter(|c| *c.namespace() == nsp)
            .filter(|c| match &self.filter {
                None => true,
                Some(f) => c.id().to_string() == *f || c.rooms().iter().any(|r| r.as_str() == f),
            })
            .collect();
        for conn in &chosen {
            match &self.action {
                Action::Join(room) => {
                    if let Err(e) = conn.join(room.as_str()) {
                        tracing::debug!(conn = %conn.id(), error = ?e, "admin join refused");
                    }
                }
                Action::Leave(room) => conn.leave(room.as_str()),
                Action::Disconnect => conn.close(CloseReason::Normal),
            }
        }
        chosen.len()
    }
}

/// Per-second counts of connections, disconnections, packets and bytes, for the UI's charts.
#[derive(Default)]
struct Aggregates {
    counts: HashMap<(i64, &'static str, Option<&'static str>), u64>,
}

impl Aggregates {
    fn add(&mut self, kind: &'static str, sub: Option<&'static str>, n: u64) {
        let second = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
        *self.counts.entry((second, kind, sub)).or_default() += n;
    }

    fn take(&mut self) -> Vec<Value> {
        self.counts
            .drain()
            .map(|((timestamp, kind, sub), count)| {
                let mut v = json!({"timestamp": timestamp, "type": kind, "count": count});
                if let Some(sub) = sub {
                    v["subType"] = json!(sub);
                }
                v
            })
            .collect()
    }
}

/// What the observer, the gateway and the task share.
pub(crate) struct Watch {
    pub(crate) namespace: Namespace,
    pub(crate) server_id: String,
    hostname: String,
    started: Instant,
    tx: mpsc::Sender<Notice>,
    rx: Mutex<Option<mpsc::Receiver<Notice>>>,
    /// This instance's UIs.
    admins: Mutex<Vec<Connection>>,
    /// How many: while there are none here nor elsewhere, nothing is observed.
    local: AtomicUsize,
    /// Until when (milliseconds since `started`) another instance has UIs, as it last said.
    remote_until: AtomicU64,
    aggregates: Mutex<Aggregates>,
    dropped: AtomicU64,
}

impl Watch {
    pub(crate) fn new(namespace: Namespace, server_id: Option<String>) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let hostname = hostname();
        Arc::new(Self {
            namespace,
            server_id: server_id.unwrap_or_else(|| format!("{hostname}#{}", std::process::id())),
            hostname,
            started: Instant::now(),
            tx,
            rx: Mutex::new(Some(rx)),
            admins: Mutex::default(),
            local: AtomicUsize::new(0),
            remote_until: AtomicU64::new(0),
            aggregates: Mutex::default(),
            dropped: AtomicU64::new(0),
        })
    }

    fn notify(&self, event: &str, args: Vec<Value>) {
        let notice = Notice { event: event.to_owned(), args };
        if self.tx.try_send(notice).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "admin UI notices dropped: the queue is full");
            }
        }
    }

    /// Whether a UI watches, here or on another instance: otherwise the observer does nothing.
    fn watched(&self) -> bool {
        self.local.load(Ordering::Relaxed) > 0 || self.watched_elsewhere()
    }

    fn watched_elsewhere(&self) -> bool {
        self.now_ms() < self.remote_until.load(Ordering::Relaxed)
    }

    /// Another instance has UIs: for three stats intervals, unless it says so again.
    fn watched_from_afar(&self) {
        let until = self.now_ms() + 3 * STATS_EVERY.as_millis() as u64;
        self.remote_until.fetch_max(until, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn is_admin(&self, conn: &Connection) -> bool {
        *conn.namespace() == self.namespace
    }

    pub(crate) fn add_admin(&self, conn: &Connection) {
        let mut admins = lock(&self.admins);
        admins.push(conn.clone());
        self.local.store(admins.len(), Ordering::Relaxed);
    }

    pub(crate) fn remove_admin(&self, conn: &Connection) {
        let mut admins = lock(&self.admins);
        admins.retain(|c| c.id() != conn.id());
        self.local.store(admins.len(), Ordering::Relaxed);
    }

    /// Hands `notices` to this instance's UIs.
    fn deliver(&self, notices: &[Notice]) {
        let admins = lock(&self.admins).clone();
        if admins.is_empty() {
            return;
        }
        for notice in notices {
            let Ok(emission) = Emission::args(notice.event.as_str(), &notice.args) else {
                continue;
            };
            for admin in &admins {
                admin.emit_shared_volatile(&emission);
            }
        }
    }

    /// This instance's sockets, as the UI lists them.
    pub(crate) fn sockets(&self, server: &Server) -> Vec<Value> {
        server.connections().iter().map(socket::serialize).collect()
    }

    /// This instance's `server_stats`.
    fn stats(&self, server: &Server) -> Value {
        let conns = server.connections();
        let mut namespaces: Vec<(String, usize)> = Vec::new();
        let mut polling = 0;
        for conn in &conns {
            if conn.extension::<Seen>().is_some_and(|s| s.transport == "polling") {
                polling += 1;
            }
            let name = conn.namespace().as_str();
            match namespaces.iter_mut().find(|(n, _)| n == name) {
                Some((_, count)) => *count += 1,
                None => namespaces.push((name.to_owned(), 1)),
            }
        }
        if !namespaces.iter().any(|(n, _)| n == self.namespace.as_str()) {
            namespaces.push((self.namespace.as_str().to_owned(), 0));
        }
        let namespaces: Vec<Value> = namespaces
            .into_iter()
            .map(|(name, count)| json!({"name": name, "socketsCount": count}))
            .collect();
        json!({
            "serverId": self.server_id,
            "hostname": self.hostname,
            "pid": std::process::id(),
            "uptime": self.started.elapsed().as_secs_f64(),
            "clientsCount": conns.len(),
            "pollingClientsCount": polling,
            "aggregatedEvents": lock(&self.aggregates).take(),
            "namespaces": namespaces,
        })
    }

    /// Starts the task that hands notices on and sends the stats (once).
    pub(crate) fn start(self: &Arc<Self>, server: &Server) {
        let Some(mut rx) = lock(&self.rx).take() else { return };
        let watch = Arc::downgrade(self);
        let server = server.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(STATS_EVERY);
            let mut batch = Vec::new();
            loop {
                tokio::select! {
                    n = rx.recv_many(&mut batch, 256) => {
                        if n == 0 { return; }
                    }
                    _ = tick.tick() => {
                        let Some(watch) = watch.upgrade() else { return };
                        if watch.local.load(Ordering::Relaxed) > 0 {
                            let _ = server.signal(TOPIC, &Wire::Watching);
                        }
                        if watch.watched() {
                            batch.push(Notice {
                                event: "server_stats".into(),
                                args: vec![watch.stats(&server)],
                            });
                        }
                    }
                }
                let Some(watch) = watch.upgrade() else { return };
                watch.deliver(&batch);
                let notices = std::mem::take(&mut batch);
                if !notices.is_empty()
                    && watch.watched_elsewhere()
                    && let Err(e) = server.signal(TOPIC, &Wire::Notices { notices })
                {
                    tracing::debug!(error = %e, "admin notices not sent to the other instances");
                }
            }
        });
    }

    fn receive(&self, server: &Server, wire: Wire) {
        match wire {
            Wire::Notices { notices } => self.deliver(&notices),
            Wire::Watching => self.watched_from_afar(),
            Wire::SocketsWanted { to } => {
                self.watched_from_afar();
                let sockets = self.sockets(server);
                if let Err(e) = server.signal(TOPIC, &Wire::Sockets { to, sockets }) {
                    tracing::debug!(error = %e, "admin sockets not sent");
                }
            }
            Wire::Sockets { to, sockets } => {
                let Some(admin) = server.connection(to).filter(|c| self.is_admin(c)) else {
                    return;
                };
                for socket in sockets {
                    let Ok(emission) = Emission::args("socket_connected", &[socket]) else {
                        continue;
                    };
                    admin.emit_shared_volatile(&emission);
                }
            }
            Wire::Operation { op } => {
                op.apply(server);
            }
        }
    }
}

/// The observer of the app the admin namespace is installed in.
pub(crate) struct Watcher(pub(crate) Arc<Watch>);

impl Observer for Watcher {
    fn connection_opened(&self, conn: &Connection) {
        if !self.0.watched() {
            return;
        }
        lock(&self.0.aggregates).add("rawConnection", None, 1);
        self.0.notify("socket_connected", vec![socket::serialize(conn), socket::now().into()]);
    }

    fn connection_closed(&self, conn: &Connection) {
        if !self.0.watched() {
            return;
        }
        let reason =
            if conn.is_closing() { "server namespace disconnect" } else { "transport close" };
        lock(&self.0.aggregates).add("rawDisconnection", Some(reason), 1);
        self.0.notify(
            "socket_disconnected",
            vec![
                conn.namespace().as_str().into(),
                conn.id().to_string().into(),
                reason.into(),
                socket::now().into(),
            ],
        );
    }

    fn event_received(&self, conn: &Connection, event: &EventName, data: &RawValue) {
        if self.0.is_admin(conn) || !self.0.watched() {
            return;
        }
        lock(&self.0.aggregates).add("packetsIn", None, 1);
        lock(&self.0.aggregates).add("bytesIn", None, data.get().len() as u64);
        let args = vec![event.as_str().into(), shown(data)];
        self.notify_event("event_received", conn, args);
    }

    fn event_sent(&self, conn: &Connection, emission: &Emission) {
        if self.0.is_admin(conn) || !self.0.watched() {
            return;
        }
        let data = emission.data();
        lock(&self.0.aggregates).add("packetsOut", None, 1);
        lock(&self.0.aggregates).add("bytesOut", None, data.get().len() as u64);
        let mut args = vec![Value::from(emission.event().as_str())];
        match shown(data) {
            Value::Array(items) if emission.is_spread() => args.extend(items),
            one => args.push(one),
        }
        self.notify_event("event_sent", conn, args);
    }

    fn room_joined(&self, conn: &Connection, room: &RoomId) {
        self.notify_room("room_joined", conn, room);
    }

    fn room_left(&self, conn: &Connection, room: &RoomId) {
        self.notify_room("room_left", conn, room);
    }

    fn signal(&self, server: &Server, topic: &str, data: &RawValue) {
        if topic != TOPIC {
            return;
        }
        match serde_json::from_str::<Wire>(data.get()) {
            Ok(wire) => self.0.receive(server, wire),
            Err(e) => tracing::debug!(error = %e, "unreadable admin signal"),
        }
    }
}

impl Watcher {
    fn notify_event(&self, event: &str, conn: &Connection, args: Vec<Value>) {
        let nsp = conn.namespace().as_str().into();
        let id = conn.id().to_string().into();
        self.0.notify(event, vec![nsp, id, Value::Array(args), socket::now().into()]);
    }

    fn notify_room(&self, event: &str, conn: &Connection, room: &RoomId) {
        if !self.0.watched() {
            return;
        }
        self.0.notify(
            event,
            vec![
                conn.namespace().as_str().into(),
                room.as_str().into(),
                conn.id().to_string().into(),
                socket::now().into(),
            ],
        );
    }
}

/// An event's data as the UI shows it: itself, or its size when it is large.
fn shown(data: &RawValue) -> Value {
    let text = data.get();
    if text.len() > MAX_SHOWN {
        return Value::String(format!("[{} bytes]", text.len()));
    }
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// The machine's name, for `server_stats`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use wsgate::testing::TestClient;
    use wsgate::{App, Gateway, Routes};

    use super::*;

    struct Quiet;

    impl Gateway for Quiet {
        fn register(_routes: &mut Routes<Self>) {}
    }

    #[tokio::test]
    async fn operations_choose_sockets_by_id_or_room() {
        let app = App::builder().gateway(Quiet).build().await.unwrap();
        let ann = TestClient::builder(&app).connect().await.unwrap();
        let bob = TestClient::builder(&app).connect().await.unwrap();
        let (ann, bob) = (ann.connection().clone(), bob.connection().clone());
        let server = app.server();
        let op = |filter: Option<String>, action| Operation { nsp: "/".into(), filter, action };

        assert_eq!(op(Some(ann.id().to_string()), Action::Join("a".into())).apply(server), 1);
        assert_eq!(ann.rooms(), [RoomId::from("a")]);
        assert!(bob.rooms().is_empty());
        assert_eq!(op(None, Action::Join("all".into())).apply(server), 2);
        assert_eq!(op(Some("a".into()), Action::Leave("all".into())).apply(server), 1);
        assert_eq!(ann.rooms(), [RoomId::from("a")]);
        assert_eq!(bob.rooms(), [RoomId::from("all")]);
        // Another namespace's sockets are not touched.
        let other = Operation { nsp: "/chat".into(), filter: None, action: Action::Disconnect };
        assert_eq!(other.apply(server), 0);
        assert_eq!(op(Some(bob.id().to_string()), Action::Disconnect).apply(server), 1);
        assert!(bob.is_closing() && !ann.is_closing());
    }

    #[tokio::test]
    async fn nothing_is_observed_while_no_ui_watches_anywhere() {
        let watch = Watch::new(Namespace::new("/admin"), None);
        let app = App::builder().observer(Watcher(watch.clone())).gateway(Quiet).build().await;
        let app = app.unwrap();
        let queued = |watch: &Watch| {
            let mut rx = lock(&watch.rx);
            let rx = rx.as_mut().unwrap();
            std::iter::from_fn(|| rx.try_recv().ok()).map(|n| n.event).collect::<Vec<_>>()
        };
        let client = TestClient::builder(&app).connect().await.unwrap();
        client.connection().emit("hello", "x").unwrap();
        assert!(queued(&watch).is_empty());

        // A UI on another instance: for a while, what happens here is told.
        watch.receive(app.server(), Wire::Watching);
        client.connection().emit("hello", "x").unwrap();
        client.connection().join("r").unwrap();
        assert_eq!(queued(&watch), ["event_sent", "room_joined"]);
    }

    #[test]
    fn wire_messages_read_back() {
        let op = Operation {
            nsp: "/".into(),
            filter: Some("7".into()),
            action: Action::Join("r".into()),
        };
        let text = serde_json::to_string(&Wire::Operation { op }).unwrap();
        assert_eq!(
            text,
            r#"{"kind":"operation","op":{"nsp":"/","filter":"7","action":{"join":"r"}}}"#
        );
        assert!(matches!(serde_json::from_str(&text).unwrap(), Wire::Operation { .. }));
        assert!(serde_json::from_str::<Wire>(r#"{"kind":"unknown"}"#).is_err());
    }

    #[test]
    fn large_data_is_shown_as_its_size() {
        let big = RawValue::from_string(format!("\"{}\"", "x".repeat(MAX_SHOWN))).unwrap();
        assert_eq!(shown(&big), json!(format!("[{} bytes]", MAX_SHOWN + 2)));
        let small = RawValue::from_string(r#"{"a":[1]}"#.into()).unwrap();
        assert_eq!(shown(&small), json!({"a": [1]}));
    }

    #[test]
    fn aggregates_count_per_second_and_clear() {
        let mut aggregates = Aggregates::default();
        aggregates.add("packetsIn", None, 1);
        aggregates.add("packetsIn", None, 2);
        aggregates.add("rawDisconnection", Some("transport close"), 1);
        let mut taken = aggregates.take();
        taken.sort_by_key(|v| v["type"].as_str().map(str::to_owned));
        assert_eq!(taken.len(), 2);
        assert_eq!(taken[0]["count"], 3);
        assert_eq!(taken[1]["subType"], "transport close");
        assert!(aggregates.take().is_empty());
    }
}
