//! A [`wsgate::broker::Broker`] over Redis pub/sub: several server instances behind a load balancer
//! act as one, as Nest.js's Redis adapter does for Socket.IO.
//!
//! ```no_run
//! # async fn start() -> Result<(), wsgate_redis::Error> {
//! let broker = wsgate_redis::RedisBroker::connect("redis://127.0.0.1:6379").await?;
//! let server = wsgate::Server::with_broker(broker);
//! // Build the app with `App::builder().server(server.clone())`; every room broadcast,
//! // `emit` and `emit_to` of `server` now reaches the clients of every instance.
//! # Ok(()) }
//! ```
//!
//! Every instance publishes each emit once, as one JSON [`wsgate::broker::Envelope`], on one channel
//! (`wsgate` unless [`RedisBroker::connect_with`] names another), and every instance receives
//! the others' and delivers them to its own connections, serialising each once per wire
//! format. An instance skips its own envelopes, so no client gets an emit twice.
//!
//! When Redis goes away each instance keeps serving its own clients: emits reach the local
//! recipients, envelopes published meanwhile are dropped and counted, the loss is logged, and
//! the broker reconnects with exponential backoff (100 ms doubling to 5 s). A subscription is
//! pinged every few seconds so that a silently dead connection is noticed too.
//! [`wsgate::Server::broker_status`] says whether it is connected, for health checks and
//! metrics.

mod signals;
mod streams;

pub use streams::{DEFAULT_PREFIX, RedisStreamsBroker, StreamsConfig};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use tokio::sync::{Notify, mpsc};
use wsgate::broker::{Broker, BrokerStatus, Envelope, Inbox};

/// The channel used when none is named.
pub const DEFAULT_CHANNEL: &str = "wsgate";

/// How many envelopes wait for the publisher before new ones are dropped.
const QUEUE: usize = 65_536;
/// How many queued envelopes go to Redis in one pipeline.
const BATCH: usize = 256;
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How often an idle subscription is pinged, and how long the answer may take.
const PING_EVERY: Duration = Duration::from_secs(3);
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Reconnection backoff.
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL is not a Redis URL.
    #[error("invalid Redis URL: {0}")]
    Url(#[source] redis::RedisError),
    /// Redis did not answer.
    #[error("cannot reach Redis at {url}: {source}")]
    Connect {
        /// The URL, without password.
        url: String,
        /// What went wrong.
        #[source]
        source: redis::RedisError,
    },
    /// Redis did not answer in time.
    #[error("cannot reach Redis at {url}: no answer within {CONNECT_TIMEOUT:?}")]
    Timeout {
        /// The URL, without password.
        url: String,
    },
}

/// Links server instances through Redis pub/sub. Give it to
/// [`wsgate::Server::with_broker`].
#[derive(Clone, Debug)]
pub struct RedisBroker {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Vec<u8>>,
    signals: signals::Signals,
}

#[derive(Debug)]
struct Shared {
    client: redis::Client,
    channel: String,
    publisher_up: AtomicBool,
    subscriber_up: AtomicBool,
    counters: Counters,
    /// Tells the publisher to check its connection (the subscriber lost its own).
    check_publisher: Notify,
}

impl RedisBroker {
    /// Connects to Redis at `url` (`redis://[:password@]host[:port][/db]`) on the default
    /// channel. Fails if Redis does not answer now; later outages are survived.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::connect_with(url, DEFAULT_CHANNEL).await
    }

    /// As [`RedisBroker::connect`], on `channel`: applications sharing one Redis use one
    /// channel each.
    pub async fn connect_with(url: &str, channel: &str) -> Result<Self, Error> {
        let (client, conn) = open(url).await?;
        let signals = signals::Signals::new(client.clone(), channel);
        let shared = Arc::new(Shared {
            client,
            channel: channel.to_owned(),
            publisher_up: AtomicBool::new(true),
            subscriber_up: AtomicBool::new(false),
            counters: Counters::default(),
            check_publisher: Notify::new(),
        });
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(publish_loop(shared.clone(), conn, rx));
        Ok(Self { shared, tx, signals })
    }

    /// The channel envelopes travel on.
    pub fn channel(&self) -> &str {
        &self.shared.channel
    }
}

impl Broker for RedisBroker {
    fn publish(&self, envelope: Envelope) {
        let shared = &self.shared;
        if !shared.publisher_up.load(Ordering::Relaxed) {
            shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.tx.try_send(envelope.to_json()).is_err() {
            shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn subscribe(&self, inbox: Inbox) {
        self.signals.subscribe(inbox.clone());
        // Corked: a burst of envelopes for one room reaches each member in one go.
        tokio::spawn(wsgate::adapter::cork(subscribe_loop(self.shared.clone(), inbox)));
    }

    fn signal(&self, bytes: Vec<u8>) {
        self.signals.send(bytes);
    }

    fn status(&self) -> BrokerStatus {
        let s = &self.shared;
        let connected =
            s.publisher_up.load(Ordering::Relaxed) && s.subscriber_up.load(Ordering::Relaxed);
        s.counters.status(connected)
    }
}

/// What a broker has carried, for [`BrokerStatus`].
#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    received: AtomicU64,
    dropped: AtomicU64,
    reconnects: AtomicU64,
}

impl Counters {
    fn status(&self, connected: bool) -> BrokerStatus {
        BrokerStatus {
            connected,
            published: self.published.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
        }
    }
}

enum ConnectError {
    Redis(redis::RedisError),
    Timeout,
}

/// A client of `url` and a first connection: Redis must answer now (a wrong URL shows at
/// start); later outages are survived by the brokers.
async fn open(url: &str) -> Result<(redis::Client, MultiplexedConnection), Error> {
    let client = redis::Client::open(url).map_err(Error::Url)?;
    let conn = connect(&client).await.map_err(|e| match e {
        ConnectError::Redis(source) => Error::Connect { url: redact(url), source },
        ConnectError::Timeout => Error::Timeout { url: redact(url) },
    })?;
    Ok((client, conn))
}

async fn connect(client: &redis::Client) -> Result<MultiplexedConnection, ConnectError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, client.get_multiplexed_async_connection()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(ConnectError::Redis(e)),
        Err(_) => Err(ConnectError::Timeout),
    }
}

/// Sends queued envelopes, several per round trip; reconnects when Redis goes away. Ends when
/// every handle on the broker is dropped.
async fn publish_loop(
    shared: Arc<Shared>,
    mut conn: MultiplexedConnection,
    mut rx: mpsc::Receiver<Vec<u8>>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.reset();
    loop {
        // An idle connection is pinged, so that a dead one is replaced before it loses an
        // envelope; at once when the subscriber has just lost its connection.
        let received = tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => Some(n),
            _ = ping.tick() => None,
            () = shared.check_publisher.notified() => None,
        };
        let result = match received {
            Some(0) => return,
            Some(_) => {
                let mut pipe = redis::pipe();
                for envelope in &batch {
                    pipe.publish(&shared.channel, envelope.as_slice()).ignore();
                }
                pipe.query_async::<()>(&mut conn).await
            }
            None => match tokio::time::timeout(PING_TIMEOUT, conn.ping::<()>()).await {
                Ok(answer) => answer,
                Err(_) => {
                    Err(redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))
                }
            },
        };
        ping.reset();
        let sent = batch.len() as u64;
        batch.clear();
        match result {
            Ok(()) => {
                shared.counters.published.fetch_add(sent, Ordering::Relaxed);
            }
            Err(e) => {
                shared.publisher_up.store(false, Ordering::Relaxed);
                shared.counters.dropped.fetch_add(sent, Ordering::Relaxed);
                tracing::warn!(error = %e, "redis broker: publisher connection lost; reconnecting");
                // Whatever queued up meanwhile would be stale: count it as dropped.
                while rx.try_recv().is_ok() {
                    shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
                match reconnect_publisher(&shared, &mut rx).await {
                    Some(fresh) => conn = fresh,
                    None => return,
                }
            }
        }
    }
}

/// Retries with backoff until connected (`None` when the broker is dropped meanwhile).
async fn reconnect_publisher(
    shared: &Shared,
    rx: &mut mpsc::Receiver<Vec<u8>>,
) -> Option<MultiplexedConnection> {
    let mut backoff = BACKOFF_START;
    loop {
        tokio::time::sleep(backoff).await;
        if rx.is_closed() && rx.is_empty() {
            return None;
        }
        match connect(&shared.client).await {
            Ok(conn) => {
                shared.publisher_up.store(true, Ordering::Relaxed);
                tracing::info!("redis broker: publisher reconnected");
                return Some(conn);
            }
            Err(ConnectError::Redis(e)) => {
                tracing::debug!(error = %e, ?backoff, "redis broker: publisher still down");
            }
            Err(ConnectError::Timeout) => {
                tracing::debug!(?backoff, "redis broker: publisher still down (timeout)");
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Receives the other instances' envelopes and delivers them; resubscribes with backoff
/// whenever the connection is lost. Ends when the server is gone.
async fn subscribe_loop(shared: Arc<Shared>, inbox: Inbox) {
    let mut backoff = BACKOFF_START;
    let mut ever_connected = false;
    let mut outage_logged = false;
    while inbox.is_open() {
        match subscription(&shared).await {
            Ok(pubsub) => {
                if ever_connected {
                    shared.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(channel = %shared.channel, "redis broker: resubscribed");
                }
                ever_connected = true;
                backoff = BACKOFF_START;
                shared.subscriber_up.store(true, Ordering::Relaxed);
                let open = receive(&shared, &inbox, pubsub).await;
                shared.subscriber_up.store(false, Ordering::Relaxed);
                if !open {
                    return;
                }
                shared.check_publisher.notify_one();
                tracing::warn!(
                    channel = %shared.channel,
                    "redis broker: connection lost; serving local clients only, reconnecting"
                );
                outage_logged = true;
            }
            Err(e) if !outage_logged => {
                tracing::warn!(error = %e, "redis broker: cannot subscribe; retrying");
                outage_logged = true;
            }
            Err(e) => tracing::debug!(error = %e, ?backoff, "redis broker: still down"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn subscription(shared: &Shared) -> Result<redis::aio::PubSub, String> {
    let connect = async {
        let mut pubsub = shared.client.get_async_pubsub().await?;
        pubsub.subscribe(&shared.channel).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(pubsub)) => Ok(pubsub),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {CONNECT_TIMEOUT:?}")),
    }
}

/// Delivers envelopes until the connection fails (`true`) or the server is gone (`false`).
async fn receive(shared: &Shared, inbox: &Inbox, pubsub: redis::aio::PubSub) -> bool {
    pump(inbox, pubsub, |payload| match Envelope::from_json(payload) {
        Ok(envelope) => {
            if envelope.origin != inbox.node() {
                shared.counters.received.fetch_add(1, Ordering::Relaxed);
            }
            inbox.deliver(envelope)
        }
        Err(e) => {
            tracing::warn!(error = %e, "redis broker: not an envelope; ignored");
            true
        }
    })
    .await
}

/// Hands each message of a subscription to `deliver` (which says whether the server is still
/// there) and pings the connection when it is quiet. Returns `true` when the connection
/// failed (resubscribe), `false` when the server is gone.
pub(crate) async fn pump(
    inbox: &Inbox,
    pubsub: redis::aio::PubSub,
    mut deliver: impl FnMut(&[u8]) -> bool,
) -> bool {
    let (mut sink, mut stream) = pubsub.split();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.reset();
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else { return true };
                ping.reset();
                if !deliver(message.get_payload_bytes()) {
                    return false;
                }
            }
            _ = ping.tick() => {
                if !inbox.is_open() {
                    return false;
                }
                let answered = tokio::time::timeout(PING_TIMEOUT, sink.ping::<redis::Value>()).await;
                if !matches!(answered, Ok(Ok(_))) {
                    return true;
                }
            }
        }
    }
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("redis://:s3cret@host:6379/0"), "redis://:***@host:6379/0");
        assert_eq!(redact("redis://user:s3cret@host"), "redis://user:***@host");
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
