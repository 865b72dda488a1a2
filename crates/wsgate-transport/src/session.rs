//! The session driver: one task per client session, for every transport and protocol.
//!
//! A session is a [`Link`] to the client (a websocket, or a link such as Engine.IO's
//! long-polling) carrying one or more *channels*: wsgate connections, each with its outbound
//! queue (a plain WebSocket session has one, opened at the handshake; an Engine.IO session one
//! per Socket.IO namespace the client connects). The [`Protocol`] reads the client's frames
//! into [`Action`]s and encodes what the channels' queues yield; the driver does the rest, the
//! same way for everyone:
//! - **messages in flight**: at most `max_in_flight` per session; past that, nothing more is
//!   read from the client (TCP backpressure over a websocket, a held request over polling);
//!   frames already received are handled in one turn, so that the answers to a pipelined
//!   batch leave in one write;
//! - **batched writes**: what a queue holds is written in one batch and one flush; a write the
//!   client takes nothing of is given up after the stall timeout, and at once if a queue
//!   overflows meanwhile;
//! - **draining before close**: a channel the server closes answers the messages it is
//!   handling first (at most the app's drain timeout), then what is queued is written, then
//!   the protocol's goodbye, or the session's close;
//! - **the heartbeat**: WebSocket pings and an idle timeout, or the protocol's ping packet and
//!   a pong deadline;
//! - **the end**: the close frame with the reason's code, and every channel let go.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::Either;
use futures_util::{FutureExt, SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use smallvec::SmallVec;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use wsgate::adapter::{Departure, Direct, Emission, Events, Inbound, Outbound, OutboundRx};
use wsgate::{AckId, App, CloseReason, Connection, ConnectionId, Handshake, Refusal};

use crate::compression::Negotiated;
use crate::parts::{
    InFlight, WRITE_BATCH, WRITE_BUFFER, Work, frame_whole, queue_answer, write_batch,
};
use crate::timer::{Deadline, Mark};
use crate::websocket::{Error as WsError, Resting, WebSocket};

/// A server's websocket over an upgraded HTTP connection.
pub type Socket = WebSocket<Wire>;

/// The connection under a server's websocket.
#[derive(Debug)]
pub enum Wire {
    /// The TCP stream itself: the HTTP connection was served by [`serve`](crate::serve).
    /// Read and written with no layer between, and a quiet session can rest
    /// ([`SessionConfig::hibernate_after`]).
    Tcp(TcpStream),
    /// What hyper gives when the server was made otherwise (`axum::serve`, say). Boxed:
    /// it is twice the size of a stream, and every session's task would hold room for it.
    Upgraded(Box<TokioIo<Upgraded>>),
}

impl AsyncRead for Wire {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Self::Upgraded(upgraded) => Pin::new(&mut **upgraded).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Wire {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Self::Upgraded(upgraded) => Pin::new(&mut **upgraded).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(tcp) => Pin::new(tcp).poll_flush(cx),
            Self::Upgraded(upgraded) => Pin::new(&mut **upgraded).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Self::Upgraded(upgraded) => Pin::new(&mut **upgraded).poll_shutdown(cx),
        }
    }
}

/// Makes the websocket of an upgraded connection: reads of `read_buffer_size` bytes (no
/// buffer kept while the connection is idle), no message or frame over `max_message_size`,
/// compressed as `deflate` says (see [`Compression::negotiate`](crate::Compression::negotiate)).
/// Over the TCP stream itself when [`serve`](crate::serve) served the connection.
pub fn open_socket(
    upgraded: Upgraded,
    read_buffer_size: usize,
    max_message_size: usize,
    deflate: Option<Negotiated>,
) -> Socket {
    let (wire, read) = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => (Wire::Tcp(parts.io.into_inner()), parts.read_buf),
        Err(upgraded) => (Wire::Upgraded(Box::new(TokioIo::new(upgraded))), Bytes::new()),
    };
    WebSocket::new(wire, read_buffer_size, max_message_size, deflate).with_read(&read)
}

/// How a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// The client sent a close frame or went away.
    ClientClosed,
    /// The link failed; nothing more can be written.
    Broken,
    /// The server closes the session for this reason.
    Close(CloseReason),
}

/// A frame from the client.
#[derive(Debug)]
pub enum Incoming {
    /// A text frame, or a text packet of a polling body.
    Text(Utf8Bytes),
    /// A binary frame, or a binary packet of a polling body.
    Binary(Bytes),
}

/// What a [`PollLink`] has for the session.
pub enum LinkEvent {
    /// A frame from the client.
    Frame(Incoming),
    /// A request waits for packets: what is queued can go now.
    Polled,
    /// The client moved to a websocket: the session goes on over it, first with `waiting`
    /// (what was queued for a poll).
    Upgraded {
        /// The websocket.
        socket: Box<Socket>,
        /// Packets that were waiting for a poll.
        waiting: Vec<Bytes>,
    },
}

/// A boxed future, for the links behind a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A link whose packets wait for the client to ask for them (Engine.IO's long-polling).
pub trait PollLink: Send {
    /// The next event: a frame (only when `read`), a poll, an upgrade. Cancel-safe.
    fn next(&mut self, read: bool) -> BoxFuture<'_, Result<LinkEvent, SessionEnd>>;
    /// Queues a packet for the next poll; an error ends the session (a client that never
    /// polls).
    fn push(&mut self, packet: Bytes) -> Result<(), SessionEnd>;
    /// Answers a waiting poll with what is queued, if both exist.
    fn flush(&mut self);
    /// Whether a poll waits.
    fn is_polled(&self) -> bool;
    /// The session ends: the waiting poll and post learn it.
    fn end(&mut self, end: SessionEnd);
}

/// What carries a session's frames.
// The websocket inline: one allocation fewer per connection, and one pointer fewer to follow
// at every wake-up; a link that polls is rare enough to be boxed.
#[allow(clippy::large_enum_variant)]
pub enum Link {
    /// A websocket.
    WebSocket(Socket),
    /// A link whose packets wait for the client's polls.
    Polling(Box<dyn PollLink>),
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::WebSocket(_) => "Link::WebSocket",
            Self::Polling(_) => "Link::Polling",
        })
    }
}

/// What a frame asks of the session, as its [`Protocol`] reads it.
#[derive(Debug)]
pub enum Action<C> {
    /// Nothing (a control frame, an event for a channel not open).
    Nothing,
    /// A message for channel `channel`'s gateways.
    Dispatch {
        /// The channel's index (see [`Channels::find`]).
        channel: usize,
        /// The message.
        message: Inbound,
    },
    /// The client's answer to the server's request `id` on channel `channel`
    /// ([`App::answered`](wsgate::App::answered)).
    Answer {
        /// The channel's index.
        channel: usize,
        /// The request's id.
        id: u64,
        /// The answer.
        data: wsgate::adapter::Payload,
    },
    /// A frame for channel `channel` that is not a message: the client gets an `exception`.
    Reject {
        /// The channel's index.
        channel: usize,
        /// What was wrong, for the client.
        message: String,
        /// The frame's ack id, if it could be read.
        ack: Option<AckId>,
    },
    /// Open a channel: the handshake runs, and the client gets [`Protocol::opened`] or
    /// [`Protocol::refused`].
    Open {
        /// What the channel carries besides its connection.
        channel: C,
        /// The handshake for the app's connection middleware.
        handshake: Box<Handshake>,
    },
    /// The client leaves channel `channel`, saying goodbye: its recovery session ends.
    Leave {
        /// The channel's index.
        channel: usize,
    },
    /// A packet of the protocol's own for the client (a probe's answer, a refusal).
    Send(Bytes),
    /// The client answered the heartbeat's ping.
    Pong,
    /// The client ends the session in the protocol's terms (Engine.IO's `1`).
    Close,
    /// The frame breaks the protocol: the session ends.
    End(SessionEnd),
}

/// How the session keeps track of a quiet client.
#[derive(Clone, Debug)]
pub enum Heartbeat {
    /// WebSocket pings every `interval`; a client silent (no frame, no pong) for
    /// `idle_timeout` is closed (1001 `idle timeout`), checked at each ping.
    Ping {
        /// Between pings.
        interval: Duration,
        /// Silence allowed.
        idle_timeout: Duration,
    },
    /// The protocol's own ping packet every `interval`, answered ([`Action::Pong`]) within
    /// `timeout`.
    Packet {
        /// The ping packet.
        ping: Bytes,
        /// Between pings.
        interval: Duration,
        /// For the pong.
        timeout: Duration,
    },
}

impl Heartbeat {
    /// How long a write the client takes nothing of may last.
    fn stall(&self) -> Duration {
        match self {
            Self::Ping { idle_timeout, .. } => *idle_timeout,
            Self::Packet { timeout, .. } => *timeout,
        }
    }
}

/// After how long quiet a websocket session sleeps unless its adapter is told otherwise, the
/// same for both adapters: Phoenix's `hibernate_after`.
pub const DEFAULT_HIBERNATE_AFTER: Duration = Duration::from_secs(15);

/// A session's settings.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// The heartbeat.
    pub heartbeat: Heartbeat,
    /// How many messages of the session may be handled at once (at least 1).
    pub max_in_flight: usize,
    /// How long the session may have no channel open before it is closed (1001); `None`
    /// when it starts with its channels and ends with the last.
    pub unjoined_timeout: Option<Duration>,
    /// How long a closing websocket waits for the client's close frame.
    pub close_timeout: Duration,
    /// After how long with no message either way a session rests, when it can: its task
    /// ends and its state waits, with its socket, on the process's resting thread, until the
    /// client sends, the server queues something for it, or its heartbeat is due ([`Asleep`],
    /// [`crate::rest`]). It rests after one to two of these of quiet; woken by a heartbeat
    /// alone, it rests again once that is done. Only a websocket over the TCP stream itself
    /// can ([`Wire::Tcp`]); `None` never rests.
    pub hibernate_after: Option<Duration>,
}

/// A protocol over the session driver: how frames read and channels' items are written.
pub trait Protocol: Send {
    /// What a channel carries besides its connection (a Socket.IO namespace's prefix, say).
    type Channel: Send + Sync;

    /// What `frame` asks of the session; `channels` finds the channel a frame is for.
    fn read(
        &mut self,
        frame: Incoming,
        channels: Channels<'_, Self::Channel>,
    ) -> Action<Self::Channel>;

    /// The text of an event for `channel`'s client.
    fn encode_event(emission: &Emission, channel: &Self::Channel) -> Bytes;

    /// Queues the text of an event for `channel`'s client on `ws`
    /// ([`WebSocket::queue_text`]): by default [`Self::encode_event`]'s; a protocol whose
    /// text is cached in the emission lends it ([`Emission::lend_encoded`]), so that writing
    /// a broadcast to each member takes no reference count of its own, and a reply held by
    /// this writer alone is written without a buffer of its own. `shared`: the item it came
    /// in is other recipients' too ([`wsgate::adapter::Outbound::is_shared`]).
    fn write_event(
        emission: &Arc<Emission>,
        _shared: bool,
        channel: &Self::Channel,
        ws: &mut Socket,
    ) -> Result<(), WsError> {
        ws.queue_text(&Self::encode_event(emission, channel))
    }

    /// Queues a room's held broadcasts ([`Outbound::Events`], one item shared by its members,
    /// none with attachments, on a socket that compresses nothing) on `ws` in one go, their
    /// frames made once for all the members ([`Events::with_framed`],
    /// [`WebSocket::queue_framed`]); `false`: not done, each is then written by
    /// [`Self::write_event`]. By default, not done.
    fn write_events(
        _events: &Events,
        _channel: &Self::Channel,
        _ws: &mut Socket,
    ) -> Result<bool, WsError> {
        Ok(false)
    }

    /// The text of an ack or an exception for `channel`'s client.
    fn encode_direct(direct: &Direct, channel: &Self::Channel) -> Bytes;

    /// The packet that carries a binary attachment ([`Outbound::attachments`]) over a polling
    /// link, whose packets are text (Engine.IO's `b<base64>`). Over a websocket, attachments
    /// are binary frames. Default: the attachment is dropped (a protocol that never polls).
    fn polled_binary(_attachment: &[u8]) -> Option<Bytes> {
        None
    }

    /// The server ended `channel` (its messages answered, its queue written): the packet
    /// that tells the client, the session going on; or `None`: the session closes with
    /// `reason`.
    fn ended(channel: &Self::Channel, reason: CloseReason) -> Option<Bytes>;

    /// The packet telling the client that [`Action::Open`] opened `conn`.
    fn opened(channel: &Self::Channel, conn: &Connection) -> Bytes;

    /// The packet telling the client that [`Action::Open`] was refused.
    fn refused(channel: &Self::Channel, refusal: &Refusal) -> Bytes;

    /// Whether a websocket close frame with `code` is the client's goodbye, which ends its
    /// channels' recovery sessions ([`Departure::Farewell`](wsgate::adapter::Departure)); any
    /// other end of the session leaves them recoverable. Default: never (a protocol whose
    /// goodbye is a packet of its own, such as Socket.IO's `DISCONNECT`).
    fn farewell(_code: Option<u16>) -> bool {
        false
    }
}

/// The open channels of a session, for [`Protocol::read`].
pub struct Channels<'s, C>(&'s [Channel<C>]);

impl<C> std::fmt::Debug for Channels<'_, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channels").field("len", &self.0.len()).finish()
    }
}

impl<C> Channels<'_, C> {
    /// The index of the first channel `pred` accepts.
    pub fn find(&self, pred: impl Fn(&C) -> bool) -> Option<usize> {
        self.0.iter().position(|c| pred(&c.tag))
    }

    /// How many are open.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One wsgate connection of a session.
struct Channel<C> {
    conn: Connection,
    rx: OutboundRx,
    tag: C,
    /// Messages of it still being handled (at most the session's `max_in_flight`).
    busy: u32,
    /// Why the server closed it, once it did.
    closing: Option<CloseReason>,
    /// Set once the server closed it: it answers the messages it is handling first, until
    /// the deadline. Apart from `closing`, so that the two fit in the words of the others.
    draining: Option<Pin<Box<Sleep>>>,
}

/// Lists inline for the usual one channel (a plain WebSocket connection, a Socket.IO client
/// of one namespace), so that they take no allocation of their own.
type List<T> = SmallVec<[T; 1]>;

/// What a session starts with.
pub struct Setup<P: Protocol> {
    /// Its protocol.
    pub protocol: P,
    /// Its link to the client.
    pub link: Link,
    /// The channels open from the start (the plain WebSocket adapter's connection); others
    /// come with [`Action::Open`].
    pub channels: Vec<(Connection, OutboundRx, P::Channel)>,
}

impl<P: Protocol> std::fmt::Debug for Setup<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setup")
            .field("link", &self.link)
            .field("channels", &self.channels.len())
            .finish_non_exhaustive()
    }
}

/// Runs a session until it ends, then closes the link politely and lets every channel go;
/// or until it rests ([`SessionConfig::hibernate_after`]): then it is returned, for the
/// caller to put to sleep ([`Asleep::sleep`]).
/// The setup comes boxed, and the box is freed as soon as the session is made, before the
/// future: not an async fn, which would keep its arguments for as long as it runs.
pub fn run<'a, P: Protocol + 'a>(
    app: &'a App,
    setup: Box<Setup<P>>,
    config: &'a SessionConfig,
) -> impl Future<Output = Option<Asleep<P>>> + 'a {
    // Unboxed in a block of its own, as clippy prefers to an unboxed argument.
    let session = {
        let setup = setup;
        Session::new(app, *setup, config)
    };
    drive(session)
}

/// Goes on with a session that was asleep, as [`run`] does: woken, its first wake-up is
/// what woke it.
pub fn resume<'a, P: Protocol + 'a>(
    app: &'a App,
    asleep: Asleep<P>,
    config: &'a SessionConfig,
) -> impl Future<Output = Option<Asleep<P>>> + 'a {
    // Either, not one async block holding both: its task would keep room for each.
    match Session::woken(app, asleep, config) {
        Ok(session) => Either::Left(drive(session)),
        Err(channels) => Either::Right(let_go(app, channels).map(|()| None)),
    }
}

/// Drives `session` until it ends or rests. Not an async fn, which would keep the session
/// twice (as given, and moved into its body).
#[allow(clippy::manual_async_fn)]
fn drive<'a, P: Protocol + 'a>(
    mut session: Session<'a, P>,
) -> impl Future<Output = Option<Asleep<P>>> + 'a {
    async move {
        // Corked: a burst of broadcasts to a room reaches each member in one go.
        let Some(end) = wsgate::adapter::cork(session.drive()).await else {
            // Only the boxed future is held across the wait: the task keeps room for
            // nothing else of this rare path.
            let lost = match session.rest() {
                Ok(asleep) => return Some(asleep),
                Err((app, channels)) => let_go(app, channels),
            };
            lost.await;
            return None;
        };
        // Boxed: closing is rare, and its state would otherwise enlarge every session's task.
        Box::pin(session.end(end)).await;
        None
    }
}

/// A session that could neither go on nor rest: its app and its channels, to let go.
type Lost<'a, C> = (&'a App, List<Channel<C>>);

/// Disconnects every channel (`App::disconnect_with`).
async fn disconnect_all<C>(app: &App, channels: &[Channel<C>], departure: Departure) {
    for channel in channels {
        app.disconnect_with(&channel.conn, departure).await;
    }
}

/// Lets the channels of a session that could neither go on nor rest go. Boxed: rare, and
/// its state would otherwise enlarge every session's task.
fn let_go<'a, C: Send + Sync + 'a>(app: &'a App, channels: List<Channel<C>>) -> BoxFuture<'a, ()> {
    Box::pin(async move { disconnect_all(app, &channels, Departure::Lost).await })
}

/// A session at rest: its state, with its socket out of tokio's reactor, while it waits on
/// the process's resting thread ([`crate::rest`]) with no task of its own.
pub struct Asleep<P: Protocol> {
    protocol: P,
    ws: Resting<std::net::TcpStream>,
    channels: List<Channel<P::Channel>>,
    mark: Option<Mark>,
    heartbeat: Deadline,
    heard: bool,
}

impl<P: Protocol> std::fmt::Debug for Asleep<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Asleep")
            .field("ws", &self.ws)
            .field("channels", &self.channels.len())
            .finish_non_exhaustive()
    }
}

impl<P: Protocol + 'static> Asleep<P> {
    /// Puts the session to sleep on the resting thread. Once the client sends, the server
    /// queues something for one of its channels or closes one, or its heartbeat is due,
    /// `wake` is called with it, and the future it makes is spawned on the runtime this is
    /// called from: it goes on with [`resume`].
    pub fn sleep<W, F>(mut self, wake: W)
    where
        W: FnOnce(Self) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        // The resting thread's waker takes the task's place.
        self.heartbeat.hand_over();
        let waking = crate::rest::Waking::current();
        crate::rest::park(Box::new(Sleeping { asleep: self, wake, waking }));
    }

    /// Puts the session to sleep ([`Self::sleep`]), and each time it rests again after it
    /// woke, until it ends: for an adapter whose sessions' tasks hold `app` and `host`, of
    /// which `config` gives the session's settings.
    pub fn sleep_with<T, C>(self, app: App, host: Arc<T>, config: C)
    where
        T: Send + Sync + 'static,
        // A function's own type, not a pointer to it: nothing in the sleeping state.
        C: Fn(&T) -> &SessionConfig + Copy + Send + 'static,
    {
        self.sleep(move |asleep| async move {
            let span = match asleep.channels.first() {
                Some(channel) => tracing::debug_span!("woken", conn = %channel.conn.id()),
                None => tracing::Span::none(),
            };
            let next = crate::parts::in_span(resume(&app, asleep, config(&host)), span).await;
            if let Some(asleep) = next {
                asleep.sleep_with(app, host, config);
            }
        });
    }

    /// Registers `cx`'s waker with everything that wakes the session but its socket; `true`
    /// if one of them is ready already.
    fn arm(&mut self, cx: &mut Context<'_>) -> bool {
        let mut ready = self.heartbeat.poll(cx).is_ready();
        for channel in &mut self.channels {
            ready |= channel.conn.poll_closed(cx).is_ready();
            ready |= channel.rx.poll_ready(cx).is_ready();
        }
        ready
    }
}

/// A session asleep, and what wakes it.
struct Sleeping<P: Protocol, W> {
    asleep: Asleep<P>,
    wake: W,
    waking: Arc<crate::rest::Waking>,
}

impl<P, W, F> crate::rest::Sleeper for Sleeping<P, W>
where
    P: Protocol + 'static,
    W: FnOnce(Asleep<P>) -> F + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    fn socket(&self) -> &std::net::TcpStream {
        self.asleep.ws.get_ref()
    }

    fn waking(&self) -> Arc<crate::rest::Waking> {
        self.waking.clone()
    }

    fn arm(&mut self, cx: &mut Context<'_>) -> bool {
        self.asleep.arm(cx)
    }

    fn wake(self: Box<Self>) {
        let Sleeping { asleep, wake, .. } = *self;
        drop(tokio::spawn(wake(asleep)));
    }
}

struct Session<'a, P: Protocol> {
    app: &'a App,
    protocol: P,
    link: Link,
    channels: List<Channel<P::Channel>>,
    config: &'a SessionConfig,
    /// The messages being handled that had to wait.
    in_flight: InFlight<'a, ConnectionId>,
    /// While no channel is open (with [`SessionConfig::unjoined_timeout`]): when the session
    /// ends.
    unjoined: Option<Pin<Box<Sleep>>>,
    /// For the ping heartbeat: when the client was last heard from, as of the last ping
    /// (frames only set `heard`, so that a message does not cost a clock read). For the
    /// packet heartbeat: when the ping was sent, while its pong is due.
    mark: Option<Mark>,
    /// The next ping, or the pong's deadline. The system's clock, as the shared timer's
    /// ([`Deadline`]: 16 B, where a `Sleep` takes 112).
    heartbeat: Deadline,
    /// A frame came since the last ping (for [`Heartbeat::Ping`]'s idle check).
    heard: bool,
    /// The client answered the ping (for [`Heartbeat::Packet`]).
    ponged: bool,
    /// A websocket ping went out ([`Heartbeat::Ping`]) and nothing came since: the session
    /// stays awake for the pong, one round trip, rather than sleeping and being woken by it.
    /// Given up at the next quiet look.
    pinged: bool,
    /// The client closed with its protocol's goodbye ([`Protocol::farewell`]).
    farewell: bool,
    /// With [`SessionConfig::hibernate_after`]: when the session looks again whether it
    /// was quiet, to rest.
    quiet: Option<Deadline>,
    /// A message came or went since the last look.
    active: bool,
    /// Rests as soon as it can, unless a message comes or goes: just woken, or found quiet.
    drowsy: bool,
}

/// What a wake-up asks for ([`Session::on_wake`]).
enum Next<'s> {
    /// Done at once.
    Now(Result<(), SessionEnd>),
    /// Work that may wait, boxed.
    Later(BoxFuture<'s, Result<(), SessionEnd>>),
}

/// Why [`Session::frames`] stopped early.
enum Stop<C> {
    /// A rare action, for the caller to box.
    Act(Box<Action<C>>),
    End(SessionEnd),
}

/// What a frame asks for, as [`Session::read`] sorts it.
enum Read<'a, C> {
    Nothing,
    /// The work of a message for channel `.0`, to start.
    Work(usize, Work<'a, ConnectionId>),
    /// A rare action, boxed.
    Act(Box<Action<C>>),
    End(SessionEnd),
}

/// What came from the link.
enum Event {
    /// A frame; `None` for a websocket's control frames (a pong, say): the client was heard.
    Frame(Option<Incoming>),
    Polled,
    Upgraded(Box<Socket>, Vec<Bytes>),
    /// The websocket's close frame, with its code.
    Closed(Option<u16>),
}

impl<'a, P: Protocol> Session<'a, P> {
    fn new(app: &'a App, setup: Setup<P>, config: &'a SessionConfig) -> Self {
        let Setup { protocol, link, channels } = setup;
        let interval = match &config.heartbeat {
            Heartbeat::Ping { interval, .. } | Heartbeat::Packet { interval, .. } => *interval,
        };
        let now = Instant::now();
        let mark = match config.heartbeat {
            Heartbeat::Ping { .. } => Some(Mark::at(now)),
            Heartbeat::Packet { .. } => None,
        };
        let heartbeat = Deadline::new(now + interval);
        let mut session =
            Self::with(app, config, protocol, link, List::new(), mark, heartbeat, now);
        for (conn, rx, tag) in channels {
            session.add(conn, rx, tag);
        }
        session
    }

    /// A session with nothing in flight, its heartbeat where `mark` and `heartbeat` say, and
    /// quiet as of `now`.
    #[allow(clippy::too_many_arguments)]
    fn with(
        app: &'a App,
        config: &'a SessionConfig,
        protocol: P,
        link: Link,
        channels: List<Channel<P::Channel>>,
        mark: Option<Mark>,
        heartbeat: Deadline,
        now: Instant,
    ) -> Self {
        Session {
            app,
            protocol,
            link,
            channels,
            config,
            in_flight: InFlight::new(),
            unjoined: None,
            mark,
            heartbeat,
            heard: false,
            ponged: false,
            pinged: false,
            farewell: false,
            quiet: config.hibernate_after.map(|after| Deadline::new(now + after)),
            active: false,
            drowsy: false,
        }
    }

    /// A session asleep, awake again: its socket back in tokio's reactor. If it cannot be,
    /// the session's channels, to let go.
    #[allow(clippy::result_large_err)]
    fn woken(
        app: &'a App,
        asleep: Asleep<P>,
        config: &'a SessionConfig,
    ) -> Result<Self, List<Channel<P::Channel>>> {
        let Asleep { protocol, ws, channels, mark, mut heartbeat, heard } = asleep;
        // This task's waker takes the resting thread's place.
        heartbeat.hand_over();
        let (socket, ws) = ws.wake(());
        let tcp = match TcpStream::from_std(socket) {
            Ok(tcp) => tcp,
            Err(e) => {
                tracing::warn!(error = %e, "a session woke and its socket cannot be watched again");
                return Err(channels);
            }
        };
        let link = Link::WebSocket(ws.replace_io(Wire::Tcp(tcp)).1);
        let now = Instant::now();
        let mut session = Self::with(app, config, protocol, link, channels, mark, heartbeat, now);
        session.heard = heard;
        // What woke it is all it may do before it sleeps again, unless a message comes.
        session.drowsy = true;
        Ok(session)
    }

    /// Whether the session can rest now: nothing in flight, nothing half read or
    /// unwritten, no channel closing, over the TCP stream itself.
    fn can_rest(&self) -> bool {
        self.quiet.is_some()
            && self.in_flight.is_empty()
            && self.unjoined.is_none()
            && !self.farewell
            && !self.ponged
            && !self.pinged
            // A packet ping's pong is due: it comes within a round trip (or the session ends).
            && !(matches!(self.config.heartbeat, Heartbeat::Packet { .. }) && self.mark.is_some())
            && !self.channels.is_empty()
            && self
                .channels
                .iter()
                .all(|c| c.busy == 0 && c.closing.is_none() && c.draining.is_none())
            && matches!(&self.link, Link::WebSocket(ws) if ws.is_at_rest() && matches!(ws.get_ref(), Wire::Tcp(_)))
    }

    /// The session at rest ([`Self::can_rest`]): its socket out of tokio's reactor. If it
    /// cannot be, the app and the channels, to let go.
    #[allow(clippy::result_large_err)]
    fn rest(self) -> Result<Asleep<P>, Lost<'a, P::Channel>> {
        let Session { app, protocol, link, channels, mark, heartbeat, heard, .. } = self;
        let Link::WebSocket(ws) = link else { return Err((app, channels)) };
        let (wire, ws) = ws.replace_io(());
        let Wire::Tcp(tcp) = wire else { return Err((app, channels)) };
        match tcp.into_std() {
            Ok(socket) => match ws.into_resting(socket) {
                Some(ws) => Ok(Asleep { protocol, ws, channels, mark, heartbeat, heard }),
                None => {
                    // `can_rest` looked: unreachable.
                    tracing::error!("a session that was not at rest was put to rest");
                    Err((app, channels))
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "a session could not rest: its socket is lost");
                Err((app, channels))
            }
        }
    }

    /// The quiet deadline fired: rests if nothing came or went since the last look.
    fn look_quiet(&mut self) {
        // A pong that has not come in a quiet interval is not waited for any longer.
        self.pinged = false;
        if std::mem::take(&mut self.active) || !self.can_rest() {
            if let (Some(quiet), Some(after)) = (&mut self.quiet, self.config.hibernate_after) {
                quiet.reset(Instant::now() + after);
            }
        } else {
            self.drowsy = true;
        }
    }

    /// Closes the link politely and lets every channel go.
    async fn end(self, end: SessionEnd) {
        let Session { app, link, channels, config, farewell, in_flight, .. } = self;
        // The messages still in flight are given up first, as the session's wait ended.
        drop(in_flight);
        let departure = if farewell { Departure::Farewell } else { Departure::Lost };
        // Let go before the close handshake: a client that reconnects at once finds its
        // session ready to recover.
        disconnect_all(app, &channels, departure).await;
        match link {
            Link::WebSocket(ws) => finish(ws, end, config.close_timeout).await,
            Link::Polling(mut polling) => polling.end(end),
        }
        drop(channels);
    }

    fn add(&mut self, conn: Connection, rx: OutboundRx, tag: P::Channel) {
        self.channels.push(Channel { conn, rx, tag, busy: 0, closing: None, draining: None });
    }

    fn remove(&mut self, index: usize) -> Channel<P::Channel> {
        self.channels.swap_remove(index)
    }

    // Not an async fn, which would keep `self` twice (as given, and moved into its body).
    // Every word held across the wait is a word of every idle session's task: what the loop
    // keeps lives in the session, the wait borrows nothing else, and what a wake-up asks for
    // is decided before anything else waits ([`Self::on_wake`]).
    // `None`: the session rests ([`Self::rest`]).
    #[allow(clippy::manual_async_fn)]
    fn drive(&mut self) -> impl Future<Output = Option<SessionEnd>> {
        async move {
            self.unjoined();
            loop {
                let wake = std::future::poll_fn(|cx| self.poll_wake(cx)).await;
                let step = match self.on_wake(wake) {
                    Next::Now(step) => step,
                    Next::Later(work) => work.await,
                };
                if let Err(end) = step {
                    return Some(end);
                }
                // Before the look at resting: a session woken by its pong rests at once.
                if std::mem::take(&mut self.ponged)
                    && let Heartbeat::Packet { interval, .. } = &self.config.heartbeat
                    && let Some(sent) = self.mark.take()
                {
                    // The next ping is due one interval after the last.
                    self.heartbeat.reset(sent.instant() + *interval);
                }
                if self.drowsy {
                    if std::mem::take(&mut self.active) {
                        self.drowsy = false;
                    } else if self.can_rest() {
                        return None;
                    }
                }
                self.unjoined();
            }
        }
    }

    /// One poll over every source, biased in this order, with no future of its own for any:
    /// this wait is where an idle session spends its life.
    fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<Wake<P::Channel>> {
        let busy = self.in_flight.len();
        // Closing channels are read too: what their clients still send is refused with an
        // exception (`The connection is closing.`), rather than left unanswered.
        let read = busy < self.config.max_in_flight;
        let writable = match &self.link {
            Link::WebSocket(_) => true,
            Link::Polling(polling) => polling.is_polled(),
        };
        if let Some(deadline) = &mut self.unjoined
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Wake::Unjoined);
        }
        if busy > 0
            && let Poll::Ready(id) = self.in_flight.poll_next_done(cx)
        {
            return Poll::Ready(Wake::Done(id));
        }
        // What is written straight to the socket (answers, [`Self::read`]; queued items,
        // [`Self::write_now`]) leaves here, in one write, at the poll after the frames or the
        // item that made it. Nothing else flushes it (reading flushes control frames alone),
        // and the client may send nothing more until it has it. A socket with no room for it
        // is waited for as any write is, with the stall guard ([`Self::finish_write`]).
        if let Link::WebSocket(ws) = &mut self.link
            && ws.unwritten() > 0
        {
            match ws.poll_write_all(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => {
                    tracing::debug!(error = %e, "websocket write failed");
                    return Poll::Ready(Wake::Ended(SessionEnd::Broken));
                }
                Poll::Pending => return Poll::Ready(Wake::Full),
            }
        }
        if let Poll::Ready(event) = poll_event(&mut self.link, read, cx) {
            return Poll::Ready(match event {
                // Frames are handled here, in this poll.
                Ok(Event::Frame(frame)) => {
                    self.heard = true;
                    self.pinged = false;
                    Wake::Read(self.frames(frame, cx))
                }
                Ok(Event::Closed(code)) => Wake::Closed(code),
                Ok(Event::Polled) => Wake::Polled,
                Ok(Event::Upgraded(socket, waiting)) => Wake::Upgraded(socket, waiting),
                Err(end) => Wake::Ended(end),
            });
        }
        // After the frames: a pong already received is read before the timeout is.
        if self.heartbeat.poll(cx).is_ready() {
            return Poll::Ready(Wake::Heartbeat);
        }
        if let Some(quiet) = &mut self.quiet
            && quiet.poll(cx).is_ready()
        {
            return Poll::Ready(Wake::Quiet);
        }
        // Last: frames already received are handled first, so that the answers to a
        // pipelined batch leave in one write. The channels' closes come here too.
        poll_channel_step(&mut self.channels, writable, cx)
            .map(|(index, step)| Wake::Channel(index, step))
    }

    /// What a wake-up asks for: done at once, or work to wait for. Boxed, each: a write's
    /// state is large, and an idle session's task would otherwise hold room for it (one
    /// allocation per batch, not per item).
    fn on_wake(&mut self, wake: Wake<P::Channel>) -> Next<'_> {
        match wake {
            Wake::Unjoined => {
                tracing::debug!("no channel opened in time");
                Next::Now(Err(SessionEnd::Close(CloseReason::IdleTimeout)))
            }
            Wake::Done(id) => match self.done(id) {
                Some(index) => Next::Later(Box::pin(self.end_channel(index))),
                None => Next::Now(Ok(())),
            },
            Wake::Read(Ok(())) => Next::Now(Ok(())),
            Wake::Read(Err(Stop::Act(action))) => Next::Later(Box::pin(self.act(*action))),
            Wake::Read(Err(Stop::End(end))) | Wake::Ended(end) => Next::Now(Err(end)),
            Wake::Closed(code) => {
                self.farewell = P::farewell(code);
                Next::Now(Err(SessionEnd::ClientClosed))
            }
            Wake::Polled => {
                self.fill_poll();
                Next::Now(Ok(()))
            }
            Wake::Upgraded(socket, waiting) => {
                Next::Later(Box::pin(self.upgraded(socket, waiting)))
            }
            Wake::Full => Next::Later(Box::pin(self.finish_write())),
            Wake::Heartbeat => self.beat(),
            Wake::Quiet => {
                self.look_quiet();
                Next::Now(Ok(()))
            }
            Wake::Channel(index, step) => match step {
                ChannelStep::Item(item) => {
                    self.active = true;
                    match self.write_now(index, item) {
                        Ok(None) => Next::Now(Ok(())),
                        Ok(Some(item)) => Next::Later(Box::pin(self.write(index, item))),
                        Err(end) => Next::Now(Err(end)),
                    }
                }
                ChannelStep::Closed(reason) => Next::Later(Box::pin(self.on_close(index, reason))),
                ChannelStep::Expired => {
                    tracing::debug!(conn = %self.channels[index].conn.id(), "messages still in flight at the end of the drain timeout");
                    Next::Later(Box::pin(self.end_channel(index)))
                }
            },
        }
    }

    /// The heartbeat's timer fired.
    fn beat(&mut self) -> Next<'_> {
        let now = Instant::now();
        match &self.config.heartbeat {
            Heartbeat::Ping { interval, idle_timeout } => {
                let heard = std::mem::take(&mut self.heard);
                let last_seen = match self.mark {
                    Some(mark) if !heard => mark.instant(),
                    _ => now,
                };
                self.mark = Some(Mark::at(last_seen));
                self.heartbeat.reset(now + *interval);
                // A session whose handlers are still running is not idle.
                if self.in_flight.is_empty() && now.duration_since(last_seen) >= *idle_timeout {
                    Next::Now(Err(SessionEnd::Close(CloseReason::IdleTimeout)))
                } else {
                    self.pinged = true;
                    Next::Later(Box::pin(self.ping()))
                }
            }
            Heartbeat::Packet { ping, timeout, .. } => {
                if self.mark.is_some() {
                    // Not reading (every slot busy), the pong may be waiting unread.
                    if self.in_flight.len() >= self.config.max_in_flight {
                        self.heartbeat.reset(now + *timeout);
                        Next::Now(Ok(()))
                    } else {
                        tracing::debug!("no pong within the ping timeout");
                        Next::Now(Err(SessionEnd::Close(CloseReason::IdleTimeout)))
                    }
                } else {
                    self.mark = Some(Mark::at(now));
                    self.heartbeat.reset(now + *timeout);
                    let ping = ping.clone();
                    Next::Later(Box::pin(self.send(ping)))
                }
            }
        }
    }

    /// Starts or stops the deadline for a session without channels.
    fn unjoined(&mut self) {
        match self.config.unjoined_timeout {
            Some(timeout) if self.channels.is_empty() => {
                if self.unjoined.is_none() {
                    self.unjoined = Some(Box::pin(tokio::time::sleep(timeout)));
                }
            }
            _ => self.unjoined = None,
        }
    }

    /// What a frame asks for: the work of a message (for the caller to start), or nothing
    /// more to do. Not async: the frame and the action, large, are gone before anything
    /// waits, and take no room in the session's task; the rare actions that write or run a
    /// handshake are boxed ([`Self::act`]).
    fn read(&mut self, frame: Incoming, cx: &mut Context<'_>) -> Read<'a, P::Channel> {
        let action = self.protocol.read(frame, Channels(&self.channels));
        let app = self.app;
        // A message keeps the session awake; the protocol's pong does not.
        self.active |= !matches!(action, Action::Pong | Action::Nothing);
        match action {
            Action::Nothing => Read::Nothing,
            // A handler done at once is answered here, with no future of its own; the rest of
            // one that waits is kept. Over a websocket with room in its buffer, the answer
            // goes straight to the socket when nothing is queued ahead of it, flushed once the
            // frames read are handled ([`Self::poll_wake`]).
            Action::Dispatch { channel, message } => {
                let Channel { conn, tag, .. } = &self.channels[channel];
                let mut failed = false;
                let work = match &mut self.link {
                    Link::WebSocket(ws) if ws.unwritten() < WRITE_BUFFER => {
                        app.dispatch_into(conn, message, cx, &mut |answer| {
                            let event =
                                |emission: &_, ws: &mut _| P::write_event(emission, false, tag, ws);
                            let direct = |direct: &_| P::encode_direct(direct, tag);
                            // Taken either way: a socket that cannot queue ends the session.
                            queue_answer(ws, answer, event, direct).unwrap_or_else(|e| {
                                tracing::debug!(error = %e, "websocket write failed");
                                failed = true;
                                true
                            })
                        })
                    }
                    _ => app.dispatch_now(conn, message, cx),
                };
                match work {
                    _ if failed => Read::End(SessionEnd::Broken),
                    None => Read::Nothing,
                    Some(work) => Read::Work(channel, work),
                }
            }
            Action::Reject { channel, message, ack } => {
                let conn = self.channels[channel].conn.clone();
                Read::Work(channel, Box::pin(rejected(app, conn, message, ack)))
            }
            Action::Answer { channel, id, data } => {
                // An answer nobody waits for any more (too late) is dropped.
                let _ = app.answered(&self.channels[channel].conn, id, data);
                Read::Nothing
            }
            Action::Pong => {
                self.ponged = true;
                Read::Nothing
            }
            Action::Close => Read::End(match self.link {
                // Over a websocket, the server closes it.
                Link::WebSocket(_) => SessionEnd::Close(CloseReason::Normal),
                Link::Polling(_) => SessionEnd::ClientClosed,
            }),
            Action::End(end) => Read::End(end),
            rare => Read::Act(Box::new(rare)),
        }
    }

    /// Handles `first` and the frames already received after it, in one turn: the answers to a
    /// pipelined batch then leave in one write. Each message's work is polled once as it is
    /// read and kept only if it has to wait. Called from the session's wait, with its context:
    /// no future of its own, so what a frame holds takes no room in the session's task. Stops
    /// at a rare action (for the caller to box).
    ///
    /// The frames handled here were read together: their rate limit reads the clock once
    /// ([`wsgate::adapter::in_read_batch`]).
    fn frames(
        &mut self,
        first: Option<Incoming>,
        cx: &mut Context<'_>,
    ) -> Result<(), Stop<P::Channel>> {
        wsgate::adapter::in_read_batch(|| self.read_frames(first, cx))
    }

    /// [`Self::frames`], inside its read batch.
    fn read_frames(
        &mut self,
        first: Option<Incoming>,
        cx: &mut Context<'_>,
    ) -> Result<(), Stop<P::Channel>> {
        let max = self.config.max_in_flight;
        let mut frame = first;
        loop {
            if let Some(incoming) = frame.take() {
                match self.read(incoming, cx) {
                    Read::Nothing => {}
                    Read::Work(index, mut work) => {
                        if work.as_mut().poll(cx).is_pending() {
                            self.in_flight.keep(work);
                            self.channels[index].busy += 1;
                        }
                    }
                    Read::Act(action) => return Err(Stop::Act(action)),
                    Read::End(end) => return Err(Stop::End(end)),
                }
            }
            if self.in_flight.len() >= max {
                return Ok(());
            }
            let Link::WebSocket(ws) = &mut self.link else { return Ok(()) };
            match ws.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(Message::Close(frame)))) => {
                    self.farewell = P::farewell(frame.map(|f| u16::from(f.code)));
                    return Err(Stop::End(SessionEnd::ClientClosed));
                }
                Poll::Ready(next) => match ws_frame(next) {
                    Ok(next) => frame = next,
                    Err(end) => return Err(Stop::End(end)),
                },
                Poll::Pending => return Ok(()),
            }
        }
    }

    /// The actions that open or leave a channel, or send a packet of the protocol's own.
    async fn act(&mut self, action: Action<P::Channel>) -> Result<(), SessionEnd> {
        match action {
            Action::Open { channel, handshake } => self.open(channel, *handshake).await,
            Action::Leave { channel } => self.leave(channel).await,
            Action::Send(packet) => self.send(packet).await,
            // Handled by `read`.
            _ => Ok(()),
        }
    }

    /// A message in flight is done: the channel that was waiting for it to close, if any, to
    /// end now.
    fn done(&mut self, id: ConnectionId) -> Option<usize> {
        // None: its channel is gone already.
        let index = self.channels.iter().position(|c| c.conn.id() == id)?;
        let channel = &mut self.channels[index];
        channel.busy = channel.busy.saturating_sub(1);
        (channel.busy == 0 && channel.draining.is_some()).then_some(index)
    }

    /// The server closed a channel's connection: it ends once its messages are answered.
    async fn on_close(&mut self, index: usize, reason: CloseReason) -> Result<(), SessionEnd> {
        let busy = self.channels[index].busy;
        tracing::debug!(conn = %self.channels[index].conn.id(), ?reason, busy, "closing");
        let drain = self.app.config().drain_timeout;
        self.channels[index].closing = Some(reason);
        self.channels[index].draining = Some(Box::pin(tokio::time::sleep(drain)));
        // A client that does not read would not take the answers either.
        if busy == 0 || !reason.drains() {
            return self.end_channel(index).await;
        }
        Ok(())
    }

    /// Ends a closing channel: what is queued is written (unless the client is too slow to
    /// take it), then the protocol's goodbye; or the session closes.
    async fn end_channel(&mut self, index: usize) -> Result<(), SessionEnd> {
        let reason = self.channels[index].closing.unwrap_or(CloseReason::Normal);
        if reason.drains() {
            while let Some(item) = self.channels[index].rx.try_recv() {
                self.write(index, item).await?;
            }
        }
        let Some(goodbye) = P::ended(&self.channels[index].tag, reason) else {
            return Err(SessionEnd::Close(reason));
        };
        let channel = self.remove(index);
        let sent = self.send(goodbye).await;
        self.app.disconnect(&channel.conn).await;
        sent
    }

    /// [`Action::Open`]: the handshake, and the channel if it passes.
    async fn open(&mut self, tag: P::Channel, handshake: Handshake) -> Result<(), SessionEnd> {
        let accepted = match self.app.handshake(handshake).await {
            Ok(accepted) => accepted,
            Err(refusal) => {
                tracing::debug!(status = %refusal.status, reason = %refusal.message, "handshake refused");
                return self.send(P::refused(&tag, &refusal)).await;
            }
        };
        let (conn, rx) = accepted.open().await;
        let opened = P::opened(&tag, &conn);
        self.add(conn, rx, tag);
        self.send(opened).await
    }

    /// [`Action::Leave`]: the channel goes, its queue unwritten.
    async fn leave(&mut self, index: usize) -> Result<(), SessionEnd> {
        let channel = self.remove(index);
        tracing::debug!(conn = %channel.conn.id(), "left");
        self.app.disconnect_with(&channel.conn, Departure::Farewell).await;
        Ok(())
    }

    /// The client moved from polling to a websocket.
    async fn upgraded(
        &mut self,
        socket: Box<Socket>,
        waiting: Vec<Bytes>,
    ) -> Result<(), SessionEnd> {
        tracing::debug!("upgraded to websocket");
        self.link = Link::WebSocket(*socket);
        let Link::WebSocket(ws) = &mut self.link else { return Ok(()) };
        for packet in waiting {
            ws.feed(text(packet)?).await.map_err(|_| SessionEnd::Broken)?;
        }
        ws.flush().await.map_err(|_| SessionEnd::Broken)
    }

    /// Sends a packet of the protocol's own; over polling it waits for the next poll.
    async fn send(&mut self, packet: Bytes) -> Result<(), SessionEnd> {
        match &mut self.link {
            Link::WebSocket(ws) => ws.send(text(packet)?).await.map_err(|_| SessionEnd::Broken),
            Link::Polling(polling) => {
                polling.push(packet)?;
                polling.flush();
                Ok(())
            }
        }
    }

    async fn ping(&mut self) -> Result<(), SessionEnd> {
        match &mut self.link {
            Link::WebSocket(ws) => {
                ws.send(Message::Ping(Bytes::new())).await.map_err(|_| SessionEnd::Broken)
            }
            // Polling links have no pings of their own; their protocols use packets.
            Link::Polling(_) => Ok(()),
        }
    }

    /// Over a websocket with nothing left unwritten, frames `first` and what else channel
    /// `index` has queued (up to a batch, or until [`WRITE_BUFFER`] is reached) into the
    /// socket's buffer, for the session's next poll to flush, which follows at once
    /// ([`Self::poll_wake`]): a room's broadcast reaches each member with no future and no
    /// allocation for its write. An item it cannot frame so comes back, for [`Self::write`],
    /// which flushes what is framed before it; so does `first` on a socket still flushing,
    /// whose wait has the stall guard.
    fn write_now(&mut self, index: usize, first: Outbound) -> Result<Option<Outbound>, SessionEnd> {
        let Link::WebSocket(ws) = &mut self.link else { return Ok(Some(first)) };
        if ws.unwritten() > 0 {
            return Ok(Some(first));
        }
        let Channel { rx, tag, .. } = &mut self.channels[index];
        let (mut item, mut written) = (first, 0);
        loop {
            let framed = frame_whole(
                ws,
                &item,
                |emission, shared, ws| P::write_event(emission, shared, tag, ws),
                |events, ws| P::write_events(events, tag, ws),
                |direct| P::encode_direct(direct, tag),
            );
            match framed {
                Ok(true) => {}
                Ok(false) => return Ok(Some(item)),
                Err(e) => {
                    tracing::debug!(error = %e, "websocket write failed");
                    return Err(SessionEnd::Broken);
                }
            }
            written += item.count();
            drop(item);
            if written >= WRITE_BATCH || ws.unwritten() >= WRITE_BUFFER {
                return Ok(None);
            }
            match rx.try_recv() {
                Some(next) => item = next,
                None => return Ok(None),
            }
        }
    }

    /// Finishes writing what [`Self::poll_wake`] could not flush at once, within the stall
    /// guard of a write that has to wait ([`within_stall`]); nothing is read meanwhile.
    async fn finish_write(&mut self) -> Result<(), SessionEnd> {
        let Link::WebSocket(ws) = &mut self.link else { return Ok(()) };
        let watched: Vec<&Connection> =
            self.channels.iter().filter(|c| c.draining.is_none()).map(|c| &c.conn).collect();
        let flushing = std::future::poll_fn(|cx| ws.poll_write_all(cx));
        tokio::pin!(flushing);
        let written = within_stall(flushing, self.config.heartbeat.stall(), &watched).await?;
        written.map_err(|e| {
            tracing::debug!(error = %e, "websocket write failed");
            SessionEnd::Broken
        })
    }

    /// Writes `first`, an item of channel `index`, and whatever else is queued.
    async fn write(&mut self, index: usize, first: Outbound) -> Result<(), SessionEnd> {
        match &mut self.link {
            Link::WebSocket(ws) => {
                let stall = self.config.heartbeat.stall();
                write_ws::<P>(ws, &mut self.channels, index, first, stall).await
            }
            Link::Polling(polling) => {
                push::<P>(&mut **polling, &first, &self.channels[index].tag)?;
                self.fill_poll();
                Ok(())
            }
        }
    }

    /// Over polling, with a poll waiting: what the channels have queued goes in its answer
    /// (up to a batch each).
    fn fill_poll(&mut self) {
        let Link::Polling(polling) = &mut self.link else { return };
        if !polling.is_polled() {
            return;
        }
        for channel in &mut self.channels {
            for _ in 0..WRITE_BATCH {
                let Some(item) = channel.rx.try_recv() else { break };
                if push::<P>(&mut **polling, &item, &channel.tag).is_err() {
                    channel.conn.close(CloseReason::SlowConsumer);
                    break;
                }
            }
        }
        polling.flush();
    }
}

/// Refuses a frame that is not a message and says whose it was.
async fn rejected(
    app: &App,
    conn: Connection,
    message: String,
    ack: Option<AckId>,
) -> ConnectionId {
    app.reject(&conn, &message, ack).await;
    conn.id()
}

fn text(packet: Bytes) -> Result<Message, SessionEnd> {
    Utf8Bytes::try_from(packet).map(Message::Text).map_err(|_| SessionEnd::Broken)
}

/// Queues an item for the next poll: each packet, then its attachments' packets.
fn push<P: Protocol>(
    polling: &mut dyn PollLink,
    item: &Outbound,
    tag: &P::Channel,
) -> Result<(), SessionEnd> {
    let mut packet = |text: Bytes, attachments: &[Bytes]| {
        polling.push(text)?;
        for attachment in attachments {
            if let Some(packet) = P::polled_binary(attachment) {
                polling.push(packet)?;
            }
        }
        Ok(())
    };
    if let Outbound::Direct(direct) = item {
        packet(P::encode_direct(direct, tag), item.attachments())?;
    }
    for emission in item.emissions() {
        packet(P::encode_event(emission, tag), &emission.extras().binary)?;
    }
    Ok(())
}

/// A websocket frame as the session reads it: `None` for control frames.
fn ws_frame(frame: Option<Result<Message, WsError>>) -> Result<Option<Incoming>, SessionEnd> {
    match frame {
        Some(Ok(Message::Text(text))) => Ok(Some(Incoming::Text(text))),
        Some(Ok(Message::Binary(data))) => Ok(Some(Incoming::Binary(data))),
        // Pings are answered by the socket itself.
        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Ok(None),
        Some(Ok(Message::Close(_))) | None => Err(SessionEnd::ClientClosed),
        Some(Err(WsError::TooBig)) => {
            tracing::debug!("message over the size limit");
            Err(SessionEnd::Close(CloseReason::TooBig))
        }
        Some(Err(e)) => {
            tracing::debug!(error = %e, "websocket read failed");
            Err(SessionEnd::Broken)
        }
    }
}

/// The link's next event; frames only when `read`. A polling link's future is made again at
/// each poll (its `next` is cancel-safe), so that a session waiting on a websocket holds no
/// future for it.
fn poll_event(
    link: &mut Link,
    read: bool,
    cx: &mut Context<'_>,
) -> Poll<Result<Event, SessionEnd>> {
    match link {
        Link::WebSocket(_) if !read => Poll::Pending,
        Link::WebSocket(ws) => ws.poll_next_unpin(cx).map(|next| match next {
            Some(Ok(Message::Close(frame))) => Ok(Event::Closed(frame.map(|f| u16::from(f.code)))),
            next => Ok(Event::Frame(ws_frame(next)?)),
        }),
        Link::Polling(polling) => polling.next(read).as_mut().poll(cx).map(|event| {
            Ok(match event? {
                LinkEvent::Frame(frame) => Event::Frame(Some(frame)),
                LinkEvent::Polled => Event::Polled,
                LinkEvent::Upgraded { socket, waiting } => Event::Upgraded(socket, waiting),
            })
        }),
    }
}

/// What the session's wait ended with, in the order they are looked at.
enum Wake<C> {
    /// No channel opened in time.
    Unjoined,
    /// A message in flight is done.
    Done(ConnectionId),
    /// Frames came and were handled ([`Session::frames`]).
    Read(Result<(), Stop<C>>),
    /// The client's close frame, with its code.
    Closed(Option<u16>),
    /// A long-polling request came for what is queued.
    Polled,
    /// A long-polling session's websocket upgrade is complete.
    Upgraded(Box<Socket>, Vec<Bytes>),
    /// The link ended the session.
    Ended(SessionEnd),
    /// What was written straight to the websocket does not fit in the socket now.
    Full,
    /// The heartbeat's timer fired.
    Heartbeat,
    /// The time to look whether the session was quiet.
    Quiet,
    /// A channel has something.
    Channel(usize, ChannelStep),
}

/// What a channel has for the session.
enum ChannelStep {
    /// The server closed it, for this reason.
    Closed(CloseReason),
    /// Its drain timeout passed.
    Expired,
    /// An item of its queue.
    Item(Outbound),
}

/// The first channel the server closes or whose drain timeout passed, else (when `writable`)
/// the first with an item queued. One poll for every channel: no future of its own for each.
fn poll_channel_step<C>(
    channels: &mut [Channel<C>],
    writable: bool,
    cx: &mut Context<'_>,
) -> Poll<(usize, ChannelStep)> {
    for (index, channel) in channels.iter_mut().enumerate() {
        match &mut channel.draining {
            None => {
                if let Poll::Ready(reason) = channel.conn.poll_closed(cx) {
                    return Poll::Ready((index, ChannelStep::Closed(reason)));
                }
            }
            Some(deadline) => {
                if deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready((index, ChannelStep::Expired));
                }
            }
        }
    }
    if writable {
        for (index, channel) in channels.iter_mut().enumerate() {
            if let Poll::Ready(item) = channel.rx.poll_recv(cx) {
                return Poll::Ready((index, ChannelStep::Item(item)));
            }
        }
    }
    Poll::Pending
}

/// Writes `first` and whatever else channel `index` has queued to a websocket, then flushes
/// once. A client that takes nothing for `stall` is gone; so is one whose queue overflows
/// meanwhile.
async fn write_ws<P: Protocol>(
    ws: &mut Socket,
    channels: &mut [Channel<P::Channel>],
    index: usize,
    first: Outbound,
    stall: Duration,
) -> Result<(), SessionEnd> {
    let (before, rest) = channels.split_at_mut(index);
    let Some((channel, after)) = rest.split_first_mut() else { return Ok(()) };
    let Channel { conn, rx, tag, .. } = channel;
    let writing = write_batch(
        ws,
        first,
        rx,
        |emission, shared, ws| P::write_event(emission, shared, tag, ws),
        |events, ws| P::write_events(events, tag, ws),
        |direct| P::encode_direct(direct, tag),
    );
    tokio::pin!(writing);
    // Nearly always done at once; only a write that has to wait gets a timer (boxed, as its
    // state would otherwise enlarge every session's task).
    let written = match std::future::poll_fn(|cx| Poll::Ready(writing.as_mut().poll(cx))).await {
        Poll::Ready(written) => written,
        Poll::Pending => {
            let open = |c: &&Channel<P::Channel>| c.draining.is_none();
            let others = before.iter().filter(open).chain(after.iter().filter(open));
            // Rare: the connections whose close ends the wait, in a list of their own.
            let mut watched: Vec<&Connection> = others.map(|c| &c.conn).collect();
            watched.push(conn);
            Box::pin(within_stall(writing, stall, &watched)).await?
        }
    };
    written.map_err(|_| SessionEnd::Broken)
}

/// Finishes a write that had to wait, unless the client takes nothing for `stall` or one of
/// `watched` is closed meanwhile as too slow (or as sending too much). Any other close is
/// handled once the write is done (its reason stays with the connection).
async fn within_stall<F: Future>(
    mut writing: Pin<&mut F>,
    stall: Duration,
    watched: &[&Connection],
) -> Result<F::Output, SessionEnd> {
    let stalled = tokio::time::sleep(stall);
    tokio::pin!(stalled);
    let mut watch = true;
    loop {
        let closed = std::future::poll_fn(|cx| {
            for conn in watched {
                if let Poll::Ready(reason) = conn.poll_closed(cx) {
                    return Poll::Ready(reason);
                }
            }
            Poll::Pending
        });
        tokio::select! {
            written = &mut writing => return Ok(written),
            () = &mut stalled => {
                tracing::debug!(?stall, "the client takes nothing: dropping it");
                return Err(SessionEnd::Broken);
            }
            reason = closed, if watch => {
                if !reason.drains() || reason == CloseReason::TooBig {
                    return Err(SessionEnd::Close(reason));
                }
                watch = false;
            }
        }
    }
}

/// Ends a server's side of a WebSocket conversation politely, within `close_timeout`: the
/// close frame for [`SessionEnd::Close`] (after an oversized message, the rest of it read and
/// discarded, so that the close frame is not lost to a reset), then the client's.
pub async fn finish<S>(mut ws: WebSocket<S>, end: SessionEnd, close_timeout: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let reason = match end {
        SessionEnd::Broken => return,
        SessionEnd::ClientClosed => {
            // Reading on writes the close reply and ends at the client's EOF.
            let _ = tokio::time::timeout(close_timeout, ws.next()).await;
            return;
        }
        SessionEnd::Close(reason) => reason,
    };
    tracing::debug!(code = reason.code(), reason = reason.text(), "closing");
    let frame = CloseFrame { code: reason.code().into(), reason: reason.text().into() };
    let closing = async {
        if ws.close(Some(frame)).await.is_err() {
            return;
        }
        if reason == CloseReason::TooBig {
            // The rest of the oversized message is still arriving; it is read and discarded,
            // because closing with unread data would reset the connection and the client
            // could lose the close frame.
            // On the heap: a buffer held across an await would enlarge every session's task.
            let mut sink = vec![0u8; 4096];
            while matches!(ws.get_mut().read(&mut sink).await, Ok(n) if n > 0) {}
        } else {
            while let Some(Ok(_)) = ws.next().await {}
        }
    };
    let _ = tokio::time::timeout(close_timeout, closing).await;
}
