//! A [`Broker`] over Redis Streams: one stream per namespace that every instance appends to
//! and reads from, so that with connection state recovery on every instance holds the same
//! history with the same offsets (the streams' ids), and a client recovers on any of them.
//!
//! - **Emits** go to the namespace's stream (`XADD … MAXLEN ~ N`), in order, from one task per
//!   instance. With recovery on, an instance delivers its own emits too only when it reads them
//!   back: every instance delivers every event in the stream's order, numbered by its id.
//! - **Reading**: one task per instance reads every namespace's stream from the last id it
//!   read (`XREAD BLOCK`). It starts at the recovery window's beginning, so that a new
//!   instance (one that replaces a dead one) holds the history its clients need.
//! - **Sessions** of dropped connections are kept in Redis for the recovery window
//!   (`SET … PX`), taken once by the instance the client comes back to (`GETDEL`); those of
//!   live connections too, rewritten as they join and leave rooms, so that a client whose
//!   instance dies recovers elsewhere. One task writes them, in order: a record never lands
//!   over a newer one; what fails to be written waits for Redis.
//! - **Outages**: while Redis is unreachable, emits wait in a bounded buffer (default 10 000)
//!   and are appended in order when it is back; past the bound the oldest are dropped, counted
//!   ([`BrokerStatus::dropped`]) and logged, and a *gap* entry goes to every stream: every
//!   instance then refuses recoveries from before it (`recovered: false`), never a silent gap.
//!   Readers resume from their last id.
//! - **Keys** carry a hash tag per namespace (`{prefix:/chat}:events`, `{prefix:/chat}:session:…`)
//!   so that a Redis Cluster keeps a namespace's stream and sessions on one shard.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamReadOptions, StreamReadReply};
use tokio::sync::Notify;
use wsgate::broker::{Broker, BrokerStatus, Envelope, Inbox, Recipients, SessionFuture};
use wsgate::{Namespace, Offset};

use crate::{BACKOFF_MAX, BACKOFF_START, Counters, Error, connect, open};

/// The key prefix used when none is named.
pub const DEFAULT_PREFIX: &str = "wsgate";

/// How many appends go to Redis in one pipeline.
const BATCH: usize = 256;
/// How long a read blocks waiting for entries.
const BLOCK: Duration = Duration::from_secs(2);
/// How many entries one read takes at most.
const READ_COUNT: usize = 1024;

/// Links server instances through Redis Streams; give it to [`wsgate::Server::with_broker`].
#[derive(Clone, Debug)]
pub struct RedisStreamsBroker {
    shared: Arc<Shared>,
    signals: crate::signals::Signals,
}

/// Settings of a [`RedisStreamsBroker`].
#[derive(Clone, Debug)]
pub struct StreamsConfig {
    /// The keys' prefix: applications sharing one Redis use one each. Default `wsgate`.
    pub prefix: String,
    /// Entries each stream keeps (`MAXLEN ~`); at least the recovery history. Default 10 000.
    pub max_len: usize,
    /// Emits waiting while Redis is unreachable; past it the oldest are dropped. Default 10 000.
    pub buffer: usize,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        Self { prefix: DEFAULT_PREFIX.to_owned(), max_len: 10_000, buffer: 10_000 }
    }
}

#[derive(Debug, Default)]
struct Pending {
    next: u64,
    queue: VecDeque<(u64, Namespace, Vec<u8>)>,
}

/// A session record to write: the record and its time to live, or `None` to delete it.
type Write = Option<(Vec<u8>, Duration)>;

/// The session records, written by one task ([`session_loop`]): a record written from
/// several tasks could land after a newer one (a session's record as opened, over the one with
/// the room it joined next), and the session would recover without its rooms.
#[derive(Debug, Default)]
struct Sessions {
    /// The records of live connections, by key, with their time to live: written again every
    /// third of it, so that they outlive this instance by their time to live.
    live: HashMap<String, (Vec<u8>, Duration)>,
    /// The writes not sent yet: the last one per key, the only one that matters.
    waiting: HashMap<String, Write>,
    /// Every live record is to be written again (Redis is back, and may have lost them).
    refresh: bool,
}

#[derive(Debug)]
struct Shared {
    client: redis::Client,
    config: StreamsConfig,
    /// Emits waiting to be appended, numbered: (number, namespace, envelope as JSON).
    pending: Mutex<Pending>,
    wake_publisher: Notify,
    /// A connection for sessions' commands (cheap to clone).
    commands: Mutex<Option<MultiplexedConnection>>,
    /// The app's namespaces, once the reader learnt them.
    namespaces: Mutex<Vec<Namespace>>,
    /// Session records: the live ones, and the writes waiting for the session writer.
    sessions: Mutex<Sessions>,
    /// Wakes the session writer: a write is waiting, or Redis is back and may have lost the
    /// live records ([`Sessions::refresh`]).
    wake_sessions: Notify,
    /// Emits were dropped from the buffer: a gap entry goes to every stream before the next
    /// appends, for every instance to learn that sessions before it cannot recover.
    gap: AtomicBool,
    publisher_up: AtomicBool,
    reader_up: AtomicBool,
    counters: Counters,
}

impl RedisStreamsBroker {
    /// Connects to Redis at `url` with the default settings. Fails if Redis does not answer
    /// now; later outages are survived.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::connect_with(url, StreamsConfig::default()).await
    }

    /// As [`RedisStreamsBroker::connect`], with settings.
    pub async fn connect_with(url: &str, config: StreamsConfig) -> Result<Self, Error> {
        let (client, conn) = open(url).await?;
        let signals = crate::signals::Signals::new(client.clone(), &config.prefix);
        let shared = Arc::new(Shared {
            client,
            config,
            pending: Mutex::new(Pending::default()),
            wake_publisher: Notify::new(),
            commands: Mutex::new(Some(conn.clone())),
            namespaces: Mutex::new(Vec::new()),
            sessions: Mutex::new(Sessions::default()),
            wake_sessions: Notify::new(),
            gap: AtomicBool::new(false),
            publisher_up: AtomicBool::new(true),
            reader_up: AtomicBool::new(false),
            counters: Counters::default(),
        });
        tokio::spawn(publish_loop(shared.clone(), conn));
        tokio::spawn(session_loop(shared.clone()));
        Ok(Self { shared, signals })
    }
}

impl Shared {
    fn stream_key(&self, namespace: &Namespace) -> String {
        format!("{{{}:{namespace}}}:events", self.config.prefix)
    }

    fn session_key(&self, namespace: &Namespace, id: &str) -> String {
        format!("{{{}:{namespace}}}:session:{id}", self.config.prefix)
    }

    /// Adds to `pipe` the append of one entry (`field` = `value`) to `namespace`'s stream,
    /// trimmed to about `max_len` entries.
    fn append(&self, pipe: &mut redis::Pipeline, namespace: &Namespace, field: &str, value: &[u8]) {
        pipe.cmd("XADD")
            .arg(self.stream_key(namespace))
            .arg("MAXLEN")
            .arg("~")
            .arg(self.config.max_len)
            .arg("*")
            .arg(field)
            .arg(value)
            .ignore();
    }

    /// Gives the session writer `write` for `key` (the last one stands), the record kept as
    /// live (written again at each refresh) or no longer.
    fn write_session(&self, key: String, write: Write, live: bool) {
        let mut sessions = lock(&self.sessions);
        match (&write, live) {
            (Some(record), true) => {
                sessions.live.insert(key.clone(), record.clone());
            }
            _ => {
                sessions.live.remove(&key);
            }
        }
        sessions.waiting.insert(key, write);
        drop(sessions);
        self.wake_sessions.notify_one();
    }

    fn command_connection(&self) -> Option<MultiplexedConnection> {
        lock(&self.commands).clone()
    }

    fn queue(&self, namespace: Namespace, envelope: Vec<u8>) {
        let mut pending = lock(&self.pending);
        if pending.queue.len() >= self.config.buffer.max(1) {
            pending.queue.pop_front();
            self.gap.store(true, Ordering::Relaxed);
            let dropped = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "redis streams broker: buffer full, oldest emits dropped");
            }
        }
        pending.next += 1;
        let n = pending.next;
        pending.queue.push_back((n, namespace, envelope));
        drop(pending);
        self.wake_publisher.notify_one();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Broker for RedisStreamsBroker {
    fn publish(&self, envelope: Envelope) {
        let namespaces = match &envelope.recipients {
            Recipients::Broadcast { namespace: Some(ns), .. }
            | Recipients::Connection { namespace: Some(ns), .. } => vec![ns.clone()],
            // Every namespace (known once the app is built).
            _ => lock(&self.shared.namespaces).clone(),
        };
        let json = envelope.to_json();
        for ns in namespaces {
            self.shared.queue(ns, json.clone());
        }
    }

    fn subscribe(&self, inbox: Inbox) {
        self.signals.subscribe(inbox.clone());
        // Corked: a burst of envelopes for one room reaches each member in one go.
        tokio::spawn(wsgate::adapter::cork(read_loop(self.shared.clone(), inbox)));
    }

    fn signal(&self, bytes: Vec<u8>) {
        self.signals.send(bytes);
    }

    fn status(&self) -> BrokerStatus {
        let s = &self.shared;
        let connected =
            s.publisher_up.load(Ordering::Relaxed) && s.reader_up.load(Ordering::Relaxed);
        s.counters.status(connected)
    }

    fn is_log(&self) -> bool {
        true
    }

    fn hold_session(&self, namespace: &Namespace, id: &str, record: Vec<u8>, ttl: Duration) {
        let key = self.shared.session_key(namespace, id);
        self.shared.write_session(key, Some((record, ttl)), true);
    }

    fn keep_session(&self, namespace: &Namespace, id: &str, record: Vec<u8>, ttl: Duration) {
        let key = self.shared.session_key(namespace, id);
        self.shared.write_session(key, Some((record, ttl)), false);
    }

    fn take_session(&self, namespace: &Namespace, id: &str) -> SessionFuture {
        let conn = self.shared.command_connection();
        let key = self.shared.session_key(namespace, id);
        Box::pin(async move {
            let mut conn = conn?;
            let taken = tokio::time::timeout(
                Duration::from_secs(2),
                redis::cmd("GETDEL").arg(&key).query_async::<Option<Vec<u8>>>(&mut conn),
            )
            .await;
            match taken {
                Ok(Ok(record)) => record,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "redis streams broker: session not read");
                    None
                }
                Err(_) => None,
            }
        })
    }

    fn forget_session(&self, namespace: &Namespace, id: &str) {
        let key = self.shared.session_key(namespace, id);
        self.shared.write_session(key, None, false);
    }
}

/// How many session writes go to Redis in one pipeline.
const SESSION_BATCH: usize = 1024;
/// The longest time between two writes of the live records.
const MAX_REFRESH: Duration = Duration::from_secs(10);

/// How often a live record of time to live `ttl` is written again: a third of it, within
/// 100 ms and [`MAX_REFRESH`].
fn refresh_period(ttl: Duration) -> Duration {
    (ttl / 3).clamp(Duration::from_millis(100), MAX_REFRESH)
}

/// Writes the session records, in the order they were given (the last per key), and the live
/// ones again every third of their time to live (at most 10 s, and at once after Redis comes
/// back). One task: a write sent after another lands after it. A write that fails is kept
/// (unless a newer one for its key came) and sent once a connection is made again.
async fn session_loop(s: Arc<Shared>) {
    let mut conn = s.command_connection();
    let mut next_refresh = tokio::time::Instant::now();
    let mut backoff = BACKOFF_START;
    loop {
        let woken = s.wake_sessions.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let Some(live_conn) = conn.clone() else {
            match connect(&s.client).await {
                Ok(fresh) => {
                    *lock(&s.commands) = Some(fresh.clone());
                    conn = Some(fresh);
                    // A Redis that restarted empty lost the live records.
                    lock(&s.sessions).refresh = true;
                }
                Err(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
            continue;
        };
        let now = tokio::time::Instant::now();
        let writes = {
            let mut sessions = lock(&s.sessions);
            let mut writes = std::mem::take(&mut sessions.waiting);
            // A record made live is written again within its period: the batch alone is
            // looked at here, every live record only when they are all written again.
            for (key, write) in &writes {
                if let Some((_, ttl)) = write
                    && sessions.live.contains_key(key)
                {
                    next_refresh = next_refresh.min(now + refresh_period(*ttl));
                }
            }
            if now >= next_refresh || std::mem::take(&mut sessions.refresh) {
                let period = sessions.live.values().map(|(_, ttl)| refresh_period(*ttl)).min();
                next_refresh = now + period.unwrap_or(MAX_REFRESH);
                for (key, (record, ttl)) in &sessions.live {
                    writes.entry(key.clone()).or_insert_with(|| Some((record.clone(), *ttl)));
                }
            }
            writes
        };
        if !writes.is_empty() {
            if write_sessions(live_conn, &writes).await {
                backoff = BACKOFF_START;
            } else {
                {
                    let mut sessions = lock(&s.sessions);
                    for (key, write) in writes {
                        sessions.waiting.entry(key).or_insert(write);
                    }
                }
                conn = None;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        }
        tokio::select! {
            () = tokio::time::sleep_until(next_refresh) => {}
            () = woken => {}
        }
    }
}

/// Sends `writes` in pipelines of [`SESSION_BATCH`], one after the other; `false` on failure.
async fn write_sessions(mut conn: MultiplexedConnection, writes: &HashMap<String, Write>) -> bool {
    let writes: Vec<_> = writes.iter().collect();
    for chunk in writes.chunks(SESSION_BATCH) {
        let mut pipe = redis::pipe();
        for (key, write) in chunk {
            match write {
                Some((record, ttl)) => {
                    let ttl = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
                    pipe.cmd("SET").arg(key).arg(record.as_slice()).arg("PX").arg(ttl).ignore();
                }
                None => {
                    pipe.cmd("DEL").arg(key).ignore();
                }
            }
        }
        if let Err(e) = pipe.query_async::<()>(&mut conn).await {
            tracing::debug!(error = %e, "redis streams broker: session records not written");
            return false;
        }
    }
    true
}

/// Appends what is pending, in order; on failure keeps it and reconnects. Runs for as long
/// as the process (a broker lives as long as its server).
async fn publish_loop(s: Arc<Shared>, mut conn: MultiplexedConnection) {
    loop {
        let notified = s.wake_publisher.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let batch: Vec<(u64, Namespace, Vec<u8>)> =
            lock(&s.pending).queue.iter().take(BATCH).cloned().collect();
        if batch.is_empty() {
            notified.await;
            continue;
        }
        let mut pipe = redis::pipe();
        let gap = s.gap.swap(false, Ordering::Relaxed);
        if gap {
            for ns in lock(&s.namespaces).iter() {
                s.append(&mut pipe, ns, "gap", b"1");
            }
        }
        for (_, ns, envelope) in &batch {
            s.append(&mut pipe, ns, "e", envelope);
        }
        match pipe.query_async::<()>(&mut conn).await {
            Ok(()) => {
                // Only what was sent: the buffer may have dropped its oldest meanwhile.
                let last = batch.last().map_or(0, |(n, _, _)| *n);
                let mut pending = lock(&s.pending);
                while pending.queue.front().is_some_and(|(n, _, _)| *n <= last) {
                    pending.queue.pop_front();
                }
                drop(pending);
                s.counters.published.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                if gap {
                    s.gap.store(true, Ordering::Relaxed);
                }
                s.publisher_up.store(false, Ordering::Relaxed);
                *lock(&s.commands) = None;
                tracing::warn!(error = %e, pending = lock(&s.pending).queue.len(), "redis streams broker: append failed; emits wait for Redis");
                let mut backoff = BACKOFF_START;
                loop {
                    tokio::time::sleep(backoff).await;
                    match connect(&s.client).await {
                        Ok(fresh) => {
                            conn = fresh;
                            *lock(&s.commands) = Some(conn.clone());
                            s.publisher_up.store(true, Ordering::Relaxed);
                            // A Redis that restarted empty lost the live sessions' records.
                            lock(&s.sessions).refresh = true;
                            s.wake_sessions.notify_one();
                            tracing::info!(
                                pending = lock(&s.pending).queue.len(),
                                "redis streams broker: appending again"
                            );
                            break;
                        }
                        Err(_) => backoff = (backoff * 2).min(BACKOFF_MAX),
                    }
                }
            }
        }
    }
}

/// Redis's clock in milliseconds (`TIME`), waiting for Redis if it is away.
async fn redis_now_ms(client: &redis::Client) -> u64 {
    let mut backoff = BACKOFF_START;
    loop {
        if let Ok(mut conn) = connect(client).await {
            let time: redis::RedisResult<(u64, u64)> =
                redis::cmd("TIME").query_async(&mut conn).await;
            if let Ok((secs, micros)) = time {
                return secs * 1000 + micros / 1000;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Reads every namespace's stream from the last id read, and hands each entry to the inbox.
async fn read_loop(shared: Arc<Shared>, inbox: Inbox) {
    // The namespaces are known once the app is built on the server.
    let namespaces = loop {
        if !inbox.is_open() {
            return;
        }
        let namespaces = inbox.namespaces();
        if !namespaces.is_empty() {
            break namespaces;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    *lock(&shared.namespaces) = namespaces.clone();
    // From the start of the recovery window: the history this instance's clients may need. On
    // Redis's clock, which numbers the entries (this machine's may be ahead or behind).
    let window =
        u64::try_from(inbox.recovery_window().unwrap_or_default().as_millis()).unwrap_or(0);
    let now = redis_now_ms(&shared.client).await;
    let start = Offset { major: now.saturating_sub(window), minor: 0 };
    let keys: Vec<String> = namespaces.iter().map(|ns| shared.stream_key(ns)).collect();
    let by_key: HashMap<String, Namespace> =
        keys.iter().cloned().zip(namespaces.iter().cloned()).collect();
    let mut last: Vec<String> = keys.iter().map(|_| start.to_string()).collect();
    for ns in &namespaces {
        inbox.start_log(ns, start);
    }
    let mut backoff = BACKOFF_START;
    let mut ever = false;
    while inbox.is_open() {
        let Ok(mut conn) = connect(&shared.client).await else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            continue;
        };
        // A blocking read waits longer than the client's default answer timeout (500 ms).
        conn.set_response_timeout(BLOCK + Duration::from_secs(2));
        if ever {
            shared.counters.reconnects.fetch_add(1, Ordering::Relaxed);
            tracing::info!("redis streams broker: reading again");
        }
        ever = true;
        backoff = BACKOFF_START;
        shared.reader_up.store(true, Ordering::Relaxed);
        let options = StreamReadOptions::default()
            .block(usize::try_from(BLOCK.as_millis()).unwrap_or(2000))
            .count(READ_COUNT);
        loop {
            if !inbox.is_open() {
                return;
            }
            let read = tokio::time::timeout(
                BLOCK + Duration::from_secs(2),
                conn.xread_options::<_, _, Option<StreamReadReply>>(&keys, &last, &options),
            )
            .await;
            let reply = match read {
                Ok(Ok(reply)) => reply,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "redis streams broker: read failed; reconnecting");
                    break;
                }
                Err(_) => {
                    tracing::warn!("redis streams broker: read timed out; reconnecting");
                    break;
                }
            };
            let Some(reply) = reply else { continue };
            for stream in reply.keys {
                let Some(ns) = by_key.get(&stream.key) else { continue };
                let Some(slot) = keys.iter().position(|k| *k == stream.key) else { continue };
                for entry in stream.ids {
                    last[slot].clone_from(&entry.id);
                    let Some(offset) = Offset::parse_log(&entry.id) else { continue };
                    if entry.map.contains_key("gap") {
                        inbox.mark_gap(ns, offset);
                        continue;
                    }
                    let Some(redis::Value::BulkString(bytes)) = entry.map.get("e") else {
                        continue;
                    };
                    match Envelope::from_json(bytes) {
                        Ok(envelope) => {
                            shared.counters.received.fetch_add(1, Ordering::Relaxed);
                            inbox.deliver_logged(ns, offset, envelope);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, id = %entry.id, "redis streams broker: unreadable entry skipped")
                        }
                    }
                }
            }
        }
        shared.reader_up.store(false, Ordering::Relaxed);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}
