//! Engine.IO v4 HTTP long-polling: the session's side of it.
//!
//! A polling session is the same task as a websocket one (the session driver of
//! `wsgate-transport`, with this as its [`PollLink`]); HTTP requests reach it through
//! channels:
//! - a `POST` hands over its body; the session reads its packets one by one, as it reads a
//!   websocket's frames, and the request is answered `ok` once the last of them is read. While
//!   the session has as many messages in flight as it allows, it reads no further and the
//!   request waits: the client cannot post again meanwhile (a held poll is long-polling's
//!   backpressure, as TCP is the websocket's);
//! - a `GET` hands over where its answer goes; the session answers it as soon as it has
//!   packets for the client (the heartbeat's ping at the latest), all of them in one body;
//! - a websocket opened with the session's id (the upgrade) is handed over once switched;
//!   the session answers its probe and moves to it when the client sends `5`.
//!
//! What the session writes while no `GET` is waiting stays in the connections' outbound
//! queues (bounded: a client that stops polling is disconnected as too slow) or, for the few
//! packets of the engine itself, in a small outbox.

use std::collections::VecDeque;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use wsgate_transport::{BoxFuture, Incoming, LinkEvent, PollLink, SessionEnd as End, Socket};

use super::UpgradeMarker;

/// The separator of packets in a long-polling body (Engine.IO v4).
pub(crate) const SEPARATOR: u8 = 0x1e;

/// How many packets of the engine's own (pings, namespace answers) may wait for a poll. A
/// client that keeps connecting namespaces without ever polling is dropped past it.
const MAX_OUTBOX: usize = 1024;

/// What a `POST` hands to the session.
pub(crate) enum Post {
    /// Its body, and the request's answer once the session has read all of it.
    Body(Bytes, oneshot::Sender<()>),
    /// Its body was over `max_payload` (the request was answered 413): the session ends.
    TooBig,
}

/// A `GET`'s answer: the packets of one body, or the session is gone (400).
pub(crate) type Poll = oneshot::Sender<Option<Bytes>>;

/// The ends of a polling session's channels that the HTTP side holds.
#[derive(Clone, Debug)]
pub(crate) struct Handle {
    pub(crate) posts: mpsc::Sender<Post>,
    pub(crate) polls: mpsc::Sender<Poll>,
    pub(crate) upgrades: mpsc::Sender<Box<Socket>>,
}

/// One packet read from a long-polling body.
enum Packet {
    Text(Utf8Bytes),
    /// `b<base64>`: a binary attachment.
    Binary(Bytes),
}

/// What happened on the polling side, for the session to act on.
enum Control {
    /// A `GET` is waiting: whatever is queued can go now.
    Polled,
    /// The client completed the upgrade (`5` on the probed websocket): the session moves to
    /// it, with what is still waiting for a poll.
    Upgraded(Box<Socket>, Vec<Bytes>),
}

/// The session's side of long-polling.
pub(crate) struct Polling {
    inbox: Inbox,
    outside: Outside,
    /// Marks the session's entry in the engine's table when the client moves to a websocket.
    upgrade_marker: Option<UpgradeMarker>,
}

/// What the client posts.
struct Inbox {
    posts: mpsc::Receiver<Post>,
    /// The `POST` being read: its body from `at`, and its answer.
    reading: Option<(Bytes, usize, oneshot::Sender<()>)>,
}

/// Polls, the outbox, and the upgrade.
struct Outside {
    polls: mpsc::Receiver<Poll>,
    upgrades: mpsc::Receiver<Box<Socket>>,
    /// The `GET` waiting for packets.
    held: Option<Poll>,
    /// Packets waiting for a poll.
    outbox: VecDeque<Bytes>,
    /// A websocket opened to upgrade to.
    probe: Option<Probe>,
}

/// The websocket of an upgrade under way.
struct Probe {
    socket: Box<Socket>,
    /// It was probed (`2probe`) and answered.
    probed: bool,
    /// The answer (`3probe`) is queued on it, not yet flushed.
    unflushed: bool,
}

impl Polling {
    /// A new session's channels: the HTTP side's ends and the session's.
    pub(crate) fn new(upgrade_marker: Option<UpgradeMarker>) -> (Handle, Self) {
        let (posts_tx, posts) = mpsc::channel(1);
        let (polls_tx, polls) = mpsc::channel(1);
        let (upgrades_tx, upgrades) = mpsc::channel(1);
        let handle = Handle { posts: posts_tx, polls: polls_tx, upgrades: upgrades_tx };
        let polling = Self {
            inbox: Inbox { posts, reading: None },
            outside: Outside { polls, upgrades, held: None, outbox: VecDeque::new(), probe: None },
            upgrade_marker,
        };
        (handle, polling)
    }
}

impl PollLink for Polling {
    /// A poll, an upgrade's step, or (when `read`) a packet posted. Cancel-safe.
    fn next(&mut self, read: bool) -> BoxFuture<'_, Result<LinkEvent, End>> {
        Box::pin(async move {
            let event = tokio::select! {
                biased;
                control = self.outside.control() => control?,
                packet = self.inbox.next(), if read => {
                    return Ok(LinkEvent::Frame(match packet? {
                        Packet::Text(text) => Incoming::Text(text),
                        Packet::Binary(data) => Incoming::Binary(data),
                    }));
                }
            };
            Ok(match event {
                Control::Polled => LinkEvent::Polled,
                Control::Upgraded(socket, waiting) => {
                    // Requests naming the session are refused from now on.
                    if let Some(marker) = self.upgrade_marker.take() {
                        marker.mark();
                    }
                    LinkEvent::Upgraded { socket, waiting }
                }
            })
        })
    }

    fn push(&mut self, packet: Bytes) -> Result<(), End> {
        self.outside.push(packet)
    }

    fn flush(&mut self) {
        self.outside.flush();
    }

    fn is_polled(&self) -> bool {
        self.outside.is_polled()
    }

    /// A waiting `GET` learns it (`6` when the client closed the session, `1` otherwise), and
    /// a `POST` being read is answered.
    fn end(&mut self, end: End) {
        self.outside.release(if end == End::ClientClosed { b"6" } else { b"1" });
        if let Some((_, _, done)) = self.inbox.reading.take() {
            let _ = done.send(());
        }
    }
}

impl Inbox {
    /// The next packet the client posted, waiting for a `POST` if none is left. Cancel-safe.
    pub(crate) async fn next(&mut self) -> Result<Packet, End> {
        loop {
            if let Some((body, at, _)) = &mut self.reading {
                let rest = &body[*at..];
                let end = rest.iter().position(|b| *b == SEPARATOR).unwrap_or(rest.len());
                let packet = body.slice(*at..*at + end);
                *at += end + 1;
                if *at >= body.len() {
                    // The last packet of the body: the request is answered now.
                    if let Some((_, _, done)) = self.reading.take() {
                        let _ = done.send(());
                    }
                }
                return read_packet(packet).map_err(|error| {
                    tracing::debug!(error, "unreadable long-polling packet");
                    End::Close(wsgate::CloseReason::PolicyViolation)
                });
            }
            match self.posts.recv().await {
                Some(Post::Body(body, done)) if body.is_empty() => {
                    let _ = done.send(());
                }
                Some(Post::Body(body, done)) => self.reading = Some((body, 0, done)),
                Some(Post::TooBig) => return Err(End::Close(wsgate::CloseReason::TooBig)),
                // The engine's table holds the other end for as long as the session is there.
                None => return Err(End::Broken),
            }
        }
    }
}

impl Outside {
    /// Whether a `GET` is waiting for packets.
    pub(crate) fn is_polled(&self) -> bool {
        self.held.as_ref().is_some_and(|poll| !poll.is_closed())
    }

    /// Queues an engine packet for the next poll.
    pub(crate) fn push(&mut self, packet: Bytes) -> Result<(), End> {
        if self.outbox.len() >= MAX_OUTBOX {
            tracing::debug!("the client does not poll: dropping it");
            return Err(End::Close(wsgate::CloseReason::SlowConsumer));
        }
        self.outbox.push_back(packet);
        Ok(())
    }

    /// Answers the waiting `GET` with every packet of the outbox, if both exist.
    pub(crate) fn flush(&mut self) {
        if self.outbox.is_empty() || !self.is_polled() {
            return;
        }
        let len = self.outbox.iter().map(|p| p.len() + 1).sum::<usize>();
        let mut body = BytesMut::with_capacity(len);
        for (i, packet) in self.outbox.drain(..).enumerate() {
            if i > 0 {
                body.extend_from_slice(&[SEPARATOR]);
            }
            body.extend_from_slice(&packet);
        }
        if let Some(poll) = self.held.take() {
            // Gone since `is_polled`: the client dropped the request, and with it these.
            if poll.send(Some(body.freeze())).is_err() {
                tracing::debug!("a poll went away before its answer");
            }
        }
    }

    /// Answers a waiting `GET` with a no-op (`6`), so that the client polls again, or stops
    /// polling to upgrade or because the session ends.
    pub(crate) fn release(&mut self, packet: &'static [u8]) {
        if let Some(poll) = self.held.take() {
            let _ = poll.send(Some(Bytes::from_static(packet)));
        }
    }

    /// The next thing that happens on the polling side besides posts: a `GET`, a websocket
    /// to upgrade to, or a packet on it. Cancel-safe.
    ///
    /// The state of an upgrade changes only between awaits (never after one in a branch), so
    /// that a call dropped half-way loses nothing: the session drops it whenever another of
    /// its branches is ready first.
    async fn control(&mut self) -> Result<Control, End> {
        loop {
            let probing = self.probe.is_some();
            tokio::select! {
                biased;
                poll = self.polls.recv() => {
                    let Some(poll) = poll else { return Err(End::Broken) };
                    if self.is_polled() {
                        // Two polls at once: a broken client (Engine.IO closes the session).
                        tracing::debug!("overlapping polls");
                        let _ = poll.send(None);
                        return Err(End::Close(wsgate::CloseReason::PolicyViolation));
                    }
                    self.held = Some(poll);
                    if self.probe.as_ref().is_some_and(|p| p.probed) {
                        // Upgrading: the client completes the upgrade once this poll ends, so
                        // it ends at once (the connections' queues wait for the websocket).
                        if self.outbox.is_empty() {
                            self.release(b"6");
                        } else {
                            self.flush();
                        }
                        continue;
                    }
                    return Ok(Control::Polled);
                }
                socket = self.upgrades.recv(), if !probing => {
                    let Some(socket) = socket else { return Err(End::Broken) };
                    self.probe = Some(Probe { socket, probed: false, unflushed: false });
                }
                step = probe_step(&mut self.probe), if probing => match step {
                    ProbeStep::Flushed(true) => {
                        if let Some(probe) = &mut self.probe {
                            probe.unflushed = false;
                        }
                    }
                    ProbeStep::Flushed(false) => self.upgrade_failed(),
                    ProbeStep::Frame(frame) => {
                        if let Some(control) = self.on_probe_frame(frame) {
                            return Ok(control);
                        }
                    }
                },
            }
        }
    }

    fn upgrade_failed(&mut self) {
        tracing::debug!("the upgrade failed; staying on polling");
        self.probe = None;
    }

    /// A frame from the websocket being probed: `2probe` is answered `3probe`, and a waiting
    /// poll released so that the client can pause polling; `5` completes the upgrade. Anything
    /// else, or a failure, drops the websocket and the session stays on polling.
    fn on_probe_frame(&mut self, frame: Option<Result<Message, ()>>) -> Option<Control> {
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => return None,
            _ => {
                self.upgrade_failed();
                return None;
            }
        };
        let probe = self.probe.as_mut()?;
        match (text.as_str(), probe.probed) {
            ("2probe", false) => {
                if !queue(&mut probe.socket, Message::text("3probe")) {
                    self.upgrade_failed();
                    return None;
                }
                probe.probed = true;
                probe.unflushed = true;
                // What waits goes now; otherwise a no-op, for the client to pause polling.
                if self.outbox.is_empty() {
                    self.release(b"6");
                } else {
                    self.flush();
                }
                None
            }
            ("5", true) => {
                let probe = self.probe.take()?;
                self.release(b"6");
                Some(Control::Upgraded(probe.socket, self.outbox.drain(..).collect()))
            }
            _ => {
                tracing::debug!("unexpected packet during the upgrade");
                self.upgrade_failed();
                None
            }
        }
    }
}

/// Queues `message` on the socket without waiting: a websocket just opened has room for it.
/// `false` when it has not.
fn queue(socket: &mut Socket, message: Message) -> bool {
    use futures_util::Sink;
    let mut cx = std::task::Context::from_waker(futures_util::task::noop_waker_ref());
    let mut socket = std::pin::Pin::new(socket);
    matches!(socket.as_mut().poll_ready(&mut cx), std::task::Poll::Ready(Ok(())))
        && socket.start_send(message).is_ok()
}

/// What happened on the websocket of an upgrade.
enum ProbeStep {
    /// The answer to the probe was flushed (or it failed).
    Flushed(bool),
    /// A frame came.
    Frame(Option<Result<Message, ()>>),
}

/// Flushes the answer to the probe if it is queued (flushing is idempotent: one cut short is
/// taken up again), else reads the next frame (cancel-safe).
async fn probe_step(probe: &mut Option<Probe>) -> ProbeStep {
    use futures_util::{SinkExt, StreamExt};
    let Some(probe) = probe else { return std::future::pending().await };
    if probe.unflushed {
        return ProbeStep::Flushed(probe.socket.flush().await.is_ok());
    }
    ProbeStep::Frame(probe.socket.next().await.map(|frame| frame.map_err(|_| ())))
}

/// One packet of a body: text, or `b` and a base64 binary attachment.
fn read_packet(packet: Bytes) -> Result<Packet, &'static str> {
    if let Some(encoded) = packet.strip_prefix(b"b") {
        return base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map(|decoded| Packet::Binary(Bytes::from(decoded)))
            .map_err(|_| "bad base64 in a binary packet");
    }
    Utf8Bytes::try_from(packet).map(Packet::Text).map_err(|_| "a packet that is not UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(p: Result<Packet, End>) -> String {
        match p {
            Ok(Packet::Text(t)) => t.as_str().to_owned(),
            Ok(Packet::Binary(b)) => format!("binary {b:?}"),
            Err(e) => format!("{e:?}"),
        }
    }

    #[tokio::test]
    async fn a_body_is_read_packet_by_packet_and_answered_after_the_last() {
        let (handle, mut polling) = Polling::new(None);
        let (done, answered) = oneshot::channel();
        let body = Bytes::from_static(b"40\x1e42[\"a\"]\x1ebAQI=");
        handle.posts.send(Post::Body(body, done)).await.unwrap();
        assert_eq!(text(polling.inbox.next().await), "40");
        assert_eq!(text(polling.inbox.next().await), "42[\"a\"]");
        let mut answered = answered;
        assert!(answered.try_recv().is_err(), "not answered before its last packet is read");
        assert_eq!(text(polling.inbox.next().await), "binary b\"\\x01\\x02\"");
        assert!(answered.try_recv().is_ok());
        let (done, _answered) = oneshot::channel();
        handle.posts.send(Post::Body(Bytes::from_static(b"b!!\x1e\xff"), done)).await.unwrap();
        assert_eq!(text(polling.inbox.next().await), "Close(PolicyViolation)", "bad base64");
        assert_eq!(text(polling.inbox.next().await), "Close(PolicyViolation)", "not UTF-8");
        handle.posts.send(Post::TooBig).await.unwrap();
        assert_eq!(text(polling.inbox.next().await), "Close(TooBig)");
        drop(handle);
        assert_eq!(text(polling.inbox.next().await), "Broken");
    }

    #[tokio::test]
    async fn the_outbox_goes_to_a_waiting_poll_in_one_body() {
        let (handle, mut polling) = Polling::new(None);
        polling.push(Bytes::from_static(b"2")).unwrap();
        polling.push(Bytes::from_static(b"40{}")).unwrap();
        polling.flush();
        assert!(!polling.outside.outbox.is_empty(), "kept while nobody polls");
        let (poll, answer) = oneshot::channel();
        handle.polls.send(poll).await.unwrap();
        assert!(matches!(polling.outside.control().await, Ok(Control::Polled)));
        polling.flush();
        assert_eq!(answer.await.unwrap().unwrap(), Bytes::from_static(b"2\x1e40{}"));
        assert!(polling.outside.outbox.is_empty());
        // A second poll while one waits ends the session.
        let (first, _a) = oneshot::channel();
        handle.polls.send(first).await.unwrap();
        assert!(matches!(polling.outside.control().await, Ok(Control::Polled)));
        let (second, b) = oneshot::channel();
        handle.polls.send(second).await.unwrap();
        assert!(polling.outside.control().await.is_err());
        assert_eq!(b.await.unwrap(), None);
    }
}
