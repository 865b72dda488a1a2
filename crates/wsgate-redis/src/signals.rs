//! Signals ([`wsgate::broker::Broker::signal`]: presence, volatile emits) over one Redis pub/sub
//! channel, `<name>:signal`, for both brokers. Lossy by design: while Redis is away they are
//! dropped (presence heartbeats repair what was missed), and nothing is logged or replayed.

use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;
use wsgate::broker::Inbox;

use crate::{BACKOFF_MAX, BACKOFF_START, CONNECT_TIMEOUT, PING_TIMEOUT};

/// How many signals wait for the publisher before new ones are dropped.
const QUEUE: usize = 16_384;
/// How many go in one pipeline.
const BATCH: usize = 256;

/// Publishes signals on `<name>:signal` and hands the other instances' to an inbox.
#[derive(Clone, Debug)]
pub(crate) struct Signals {
    client: redis::Client,
    channel: String,
    tx: mpsc::Sender<Vec<u8>>,
}

impl Signals {
    /// Starts the publisher (it connects when the first signal comes).
    pub(crate) fn new(client: redis::Client, name: &str) -> Self {
        let channel = format!("{name}:signal");
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(publish_loop(client.clone(), channel.clone(), rx));
        Self { client, channel, tx }
    }

    /// Queues a signal; dropped if the queue is full.
    pub(crate) fn send(&self, bytes: Vec<u8>) {
        let _ = self.tx.try_send(bytes);
    }

    /// Delivers the signals of every instance to `inbox` (its own are skipped by the server)
    /// until the server is gone, resubscribing after an outage.
    pub(crate) fn subscribe(&self, inbox: Inbox) {
        tokio::spawn(subscribe_loop(self.client.clone(), self.channel.clone(), inbox));
    }
}

async fn connect(client: &redis::Client) -> Option<MultiplexedConnection> {
    match tokio::time::timeout(CONNECT_TIMEOUT, client.get_multiplexed_async_connection()).await {
        Ok(Ok(conn)) => Some(conn),
        _ => None,
    }
}

async fn publish_loop(client: redis::Client, channel: String, mut rx: mpsc::Receiver<Vec<u8>>) {
    let mut conn: Option<MultiplexedConnection> = None;
    let mut batch = Vec::with_capacity(BATCH);
    let mut backoff = BACKOFF_START;
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        if conn.is_none() {
            conn = connect(&client).await;
        }
        let Some(c) = conn.as_mut() else {
            // Down: these are stale by the time Redis is back. Drop them and pause.
            batch.clear();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            continue;
        };
        let mut pipe = redis::pipe();
        for signal in &batch {
            pipe.publish(&channel, signal.as_slice()).ignore();
        }
        let sent = tokio::time::timeout(PING_TIMEOUT, pipe.query_async::<()>(c)).await;
        batch.clear();
        if matches!(sent, Ok(Ok(()))) {
            backoff = BACKOFF_START;
        } else {
            tracing::debug!(%channel, "redis signals: publish failed; reconnecting");
            conn = None;
        }
    }
}

async fn subscribe_loop(client: redis::Client, channel: String, inbox: Inbox) {
    let mut backoff = BACKOFF_START;
    while inbox.is_open() {
        let subscribed = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        if let Ok(Ok(pubsub)) = subscribed {
            backoff = BACKOFF_START;
            if !receive(&inbox, pubsub).await {
                return;
            }
            tracing::debug!(%channel, "redis signals: subscription lost; resubscribing");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Delivers signals until the connection fails (`true`) or the server is gone (`false`).
async fn receive(inbox: &Inbox, pubsub: redis::aio::PubSub) -> bool {
    crate::pump(inbox, pubsub, |payload| inbox.deliver_signal(payload)).await
}
