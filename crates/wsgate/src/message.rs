//! What travels between an adapter and the core: inbound messages and outbound frames.

use std::any::TypeId;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::args::{Arity, Extras};
use crate::names::{AckId, EventName};

/// A message's data as JSON text, parsed lazily by the extractors that need it.
pub type Payload = Box<RawValue>;

/// The JSON `null`, as a [`Payload`].
pub fn null_payload() -> Payload {
    // `null` is valid JSON; the fallback is unreachable but keeps this panic-free.
    RawValue::from_string("null".to_owned()).unwrap_or_else(|_| unreachable_payload())
}

#[cold]
fn unreachable_payload() -> Payload {
    serde_json::value::to_raw_value(&()).unwrap_or_else(|_| unreachable!("unit serialises"))
}

/// Serialises a value into a [`Payload`].
pub fn to_payload<T: Serialize + ?Sized>(value: &T) -> Result<Payload, serde_json::Error> {
    serde_json::value::to_raw_value(value)
}

/// The length of `s` written as a JSON string, quotes and escapes included, as
/// [`push_json_str`] (and serde_json) write it: for a frame's exact size before it is written.
pub fn json_str_len(s: &str) -> usize {
    let mut len = s.len() + 2;
    for &b in s.as_bytes() {
        if escaped(b) {
            // `\n` and the like take two bytes, other control characters six (`\u001f`).
            len += if matches!(b, b'"' | b'\\' | b'\x08' | b'\t' | b'\n' | b'\x0c' | b'\r') {
                1
            } else {
                5
            };
        }
    }
    len
}

/// Appends `s` as a JSON string: as it is between quotes when it needs no escape (an event's
/// name, nearly always), escaped by serde_json otherwise.
pub fn push_json_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().any(escaped) {
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
        return;
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// Whether a byte of a string is escaped in JSON.
fn escaped(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// One message from a client, decoded by an adapter from its wire format.
#[derive(Debug)]
pub struct Inbound {
    /// The event the client sent, which selects the handler.
    pub event: EventName,
    /// The message's data (`null` when the client sent none).
    pub data: Payload,
    /// Set when the client asked for an acknowledgement.
    pub ack: Option<AckId>,
    /// Binary attachments, which the data's placeholders `{"_placeholder":true,"num":N}`
    /// stand for; empty when the client sent none.
    pub binary: Vec<Bytes>,
    /// Whether `data` is the message's one argument, or the array of its several arguments
    /// (Socket.IO's `emit("e", a, b)`, which Nest's `IoAdapter` hands over as `[a, b]`).
    pub arity: Arity,
}

impl Inbound {
    /// A message with data and no acknowledgement.
    pub fn new(event: impl Into<EventName>, data: Payload) -> Self {
        Self { event: event.into(), data, ack: None, binary: Vec::new(), arity: Arity::One }
    }

    /// Asks for an acknowledgement with this id.
    #[must_use]
    pub fn with_ack(mut self, id: AckId) -> Self {
        self.ack = Some(id);
        self
    }
}

/// An event to emit: a name and its data, shared by every recipient of a broadcast.
///
/// Adapters encode it with [`Emission::encoded`], which caches one encoding per wire format:
/// a broadcast to ten thousand connections is serialised once per transport, not once per
/// recipient.
pub struct Emission {
    event: EventName,
    data: Payload,
    /// Several arguments, binary attachments: rare, so boxed (one pointer when absent).
    extras: Option<Box<Extras>>,
    /// Its place in its namespace's history, when connection state recovery is on and it was
    /// emitted to a room, a namespace or a connection (not a reply to a message). Set before
    /// anything encodes it.
    offset: OnceLock<Box<str>>,
    /// Its encodings, one per wire format.
    encodings: ByFormat,
}

/// Bytes made once per format (a wire format, or an adapter's own key) and kept: an
/// emission's text, a room's run of frames. `K` names a format: its type, and for a room's
/// run the variant of it too (a Socket.IO namespace's prefix).
struct ByFormat<K = TypeId> {
    /// The first made: most go out over one transport only, and this takes neither a lock
    /// nor an allocation.
    first: OnceLock<(K, Bytes)>,
    /// Those in other formats, when the recipients use several transports.
    others: Mutex<Vec<(K, Bytes)>>,
}

impl<K> ByFormat<K> {
    fn new() -> Self {
        Self { first: OnceLock::new(), others: Mutex::new(Vec::new()) }
    }

    /// Whether none was made yet.
    fn is_empty(&self) -> bool {
        self.first.get().is_none()
    }

    /// The bytes in the format `is` accepts (`key` names it), made by `make` on first use,
    /// lent to `f`: the first format's without a handle of their own.
    fn lend<R>(
        &self,
        is: impl Fn(&K) -> bool,
        key: impl Fn() -> K,
        make: impl Fn() -> Bytes,
        f: impl FnOnce(&[u8]) -> R,
    ) -> R {
        let (first, bytes) = self.first.get_or_init(|| (key(), make()));
        if is(first) {
            return f(bytes);
        }
        f(&self.get(is, key, make))
    }

    /// The bytes in the format `is` accepts (`key` names it), made by `make` on first use.
    fn get(&self, is: impl Fn(&K) -> bool, key: impl Fn() -> K, make: impl Fn() -> Bytes) -> Bytes {
        let (first, bytes) = self.first.get_or_init(|| (key(), make()));
        if is(first) {
            return bytes.clone();
        }
        // A poisoned lock only means another maker panicked; the cache stays usable.
        let mut others = self.others.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, bytes)) = others.iter().find(|(k, _)| is(k)) {
            return bytes.clone();
        }
        let bytes = make();
        others.push((key(), bytes.clone()));
        bytes
    }
}

impl Emission {
    /// An emission of `event` with already-serialised data.
    pub fn new(event: EventName, data: Payload) -> Arc<Self> {
        Self::with_extras(event, data, Extras::default())
    }

    /// An emission of `event` with already-serialised data that is several arguments or has
    /// binary attachments ([`to_args`](crate::adapter::to_args)).
    pub fn with_extras(event: EventName, data: Payload, extras: Extras) -> Arc<Self> {
        let extras = (!extras.is_plain()).then(|| Box::new(extras));
        Arc::new(Self { event, data, extras, offset: OnceLock::new(), encodings: ByFormat::new() })
    }

    /// This emission at `offset` of its namespace's history: itself when nothing else holds
    /// it and nothing encoded it yet, otherwise a copy.
    pub(crate) fn at_offset(self: &Arc<Self>, offset: Box<str>) -> Arc<Self> {
        // Held by nobody else, it cannot be encoded meanwhile (no weak handles are made).
        if Arc::strong_count(self) == 1 && self.encodings.is_empty() {
            if let Err(offset) = self.offset.set(offset) {
                // Recorded twice: an emission delivered again keeps its first offset.
                let copy = self.copy();
                let _ = copy.offset.set(offset);
                return copy;
            }
            return self.clone();
        }
        let copy = self.copy();
        let _ = copy.offset.set(offset);
        copy
    }

    fn copy(&self) -> Arc<Self> {
        Self::with_extras(self.event.clone(), self.data.clone(), self.extras().clone())
    }

    /// An emission of `event` with several arguments (Socket.IO's `emit("e", a, b)`): each
    /// is its own argument over Socket.IO; over formats with one data slot, the data is the
    /// array of them. The same as [`Emission::serialize`] of [`Args`](crate::Args)`(args)`.
    pub fn args<T: Serialize>(
        event: impl Into<EventName>,
        args: &[T],
    ) -> Result<Arc<Self>, serde_json::Error> {
        Self::serialize(event, &crate::Args(args))
    }

    /// Whether its data is the array of its arguments ([`Emission::args`], [`Args`](crate::Args)).
    pub fn is_spread(&self) -> bool {
        self.extras().arity == Arity::Several
    }

    /// Its offset in its namespace's history (opaque text), when it has one: the last
    /// argument of a Socket.IO event, the `offset` field of a plain WebSocket session's frame.
    pub fn offset(&self) -> Option<&str> {
        self.offset.get().map(|o| &**o)
    }

    /// Serialises `data` and makes an emission of it: several arguments when it is an
    /// [`Args`](crate::Args), each `Bytes` in it a binary attachment.
    pub fn serialize<T: Serialize + ?Sized>(
        event: impl Into<EventName>,
        data: &T,
    ) -> Result<Arc<Self>, serde_json::Error> {
        let (data, extras) = crate::args::to_args(data)?;
        Ok(Self::with_extras(event.into(), data, extras))
    }

    /// The event name.
    pub fn event(&self) -> &EventName {
        &self.event
    }

    /// The data as JSON (with placeholders for the binary attachments).
    pub fn data(&self) -> &RawValue {
        &self.data
    }

    /// Its arity and binary attachments.
    pub fn extras(&self) -> &Extras {
        static PLAIN: Extras = Extras { arity: Arity::One, binary: Vec::new() };
        self.extras.as_deref().unwrap_or(&PLAIN)
    }

    /// This emission in the wire format `F`, lent to `f`: encoded on first use and cached,
    /// as [`Emission::encoded`], without a handle of its own for each recipient (a clone of
    /// [`Bytes`] is an atomic increment, and its drop a decrement).
    pub fn with_encoded<F: WireFormat, R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        let format = TypeId::of::<F>();
        self.encodings.lend(|k| *k == format, || format, || F::encode_event(self), f)
    }

    /// As [`Self::with_encoded`], for a writer that may hold the emission alone (a reply): when
    /// nothing else holds it, nor the item it came in (`shared`: [`Outbound::is_shared`]), and
    /// nothing encoded it yet, nobody else will ask for its text, so it is written for `f`
    /// into the thread's scratch buffer ([`WireFormat::write_event`]) and not kept.
    pub fn lend_encoded<F: WireFormat, R>(
        self: &Arc<Self>,
        shared: bool,
        f: impl FnOnce(&[u8]) -> R,
    ) -> R {
        // No weak handles are made: held once, nobody can take another handle meanwhile.
        if shared || Arc::strong_count(self) != 1 || !self.encodings.is_empty() {
            return self.with_encoded::<F, R>(f);
        }
        SCRATCH.with(move |scratch| {
            let Ok(mut out) = scratch.try_borrow_mut() else {
                // In use (a frame written while another is lent): a buffer of its own.
                return f(&F::encode_event(self));
            };
            out.clear();
            F::write_event(self, &mut out);
            let lent = f(&out);
            // A large frame's room is not kept for the thread.
            if out.capacity() > SCRATCH_KEPT {
                *out = Vec::new();
            }
            lent
        })
    }

    /// This emission in the wire format `F`, encoded on first use and cached.
    pub fn encoded<F: WireFormat>(&self) -> Bytes {
        let format = TypeId::of::<F>();
        self.encodings.get(|k| *k == format, || format, || F::encode_event(self))
    }
}

impl fmt::Debug for Emission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emission").field("event", &self.event).field("data", &self.data).finish()
    }
}

/// A transport's encoding of an event, implemented by adapters.
pub trait WireFormat: 'static {
    /// Encodes `emission` as one frame of this format: its event, its data, its
    /// [`extras`](Emission::extras) (the attachments themselves follow as frames of their own,
    /// [`Outbound::attachments`]), and its [`offset`](Emission::offset) for formats that carry
    /// it (connection state recovery).
    fn encode_event(emission: &Emission) -> Bytes;

    /// Writes the same frame as [`Self::encode_event`] at the end of `out`, for a frame sent
    /// once and not kept ([`Emission::lend_encoded`]). By default, [`Self::encode_event`]'s
    /// bytes copied.
    fn write_event(emission: &Emission, out: &mut Vec<u8>) {
        out.extend_from_slice(&Self::encode_event(emission));
    }
}

thread_local! {
    /// Where [`Emission::lend_encoded`] writes a frame nobody else needs.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The largest scratch buffer a thread keeps.
const SCRATCH_KEPT: usize = 64 * 1024;

/// Why the server closes a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The server is shutting down (WebSocket 1001).
    GoingAway,
    /// The connection's outbound queue overflowed: the client reads too slowly (1008).
    SlowConsumer,
    /// The connection broke a rule, such as the message rate (1008).
    PolicyViolation,
    /// A message was larger than allowed (1009).
    TooBig,
    /// Nothing came from the client, not even a pong, for longer than allowed (1001).
    IdleTimeout,
    /// The application closed it.
    Normal,
    /// The server failed while opening it: a gateway's `on_connect` hook panicked (1011).
    InternalError,
    /// Its client came back on a new connection and recovered its session (1001): this one
    /// was dead without the server knowing yet.
    Replaced,
}

impl CloseReason {
    /// The WebSocket close code for this reason.
    pub fn code(self) -> u16 {
        match self {
            Self::Normal => 1000,
            Self::GoingAway | Self::IdleTimeout | Self::Replaced => 1001,
            Self::SlowConsumer | Self::PolicyViolation => 1008,
            Self::TooBig => 1009,
            Self::InternalError => 1011,
        }
    }

    /// Whether a connection closing for this reason first answers the messages it is
    /// handling (within [`AppConfig::drain_timeout`](crate::AppConfig::drain_timeout)): every
    /// reason but [`Self::SlowConsumer`] and [`Self::Replaced`], whose clients would not read
    /// the answers.
    pub fn drains(self) -> bool {
        !matches!(self, Self::SlowConsumer | Self::Replaced)
    }

    /// A short text for the close frame.
    pub fn text(self) -> &'static str {
        match self {
            Self::Normal => "closed",
            Self::GoingAway => "server shutting down",
            Self::SlowConsumer => "outbound queue full",
            Self::PolicyViolation => "policy violation",
            Self::TooBig => "message too big",
            Self::IdleTimeout => "idle timeout",
            Self::InternalError => "internal server error",
            Self::Replaced => "replaced by a new connection",
        }
    }
}

/// A message addressed to one client: the answer to a message it sent, or a request of the
/// server's.
#[derive(Debug)]
pub enum Direct {
    /// The acknowledgement of message `id`.
    Ack {
        /// The id the client gave.
        id: AckId,
        /// The handler's result.
        data: Payload,
        /// Several arguments, binary attachments.
        extras: Extras,
    },
    /// An `exception` event, carrying the id of the message that caused it, if it had one.
    Exception {
        /// The id of the message that failed, if the client asked for an acknowledgement.
        id: Option<AckId>,
        /// The exception payload, `{status:"error", message, cause}` by default.
        data: Payload,
    },
    /// An event the server sends asking for an answer (Socket.IO's emit with an ack):
    /// the client answers with `id`, and the adapter hands the answer to [`App::answered`].
    ///
    /// [`App::answered`]: crate::App::answered
    Request {
        /// The id the answer must carry, chosen by the server for this connection.
        id: u64,
        /// The event.
        event: EventName,
        /// Its data.
        data: Payload,
        /// Several arguments, binary attachments.
        extras: Extras,
    },
}

impl Direct {
    /// Its arity and binary attachments (none for an exception).
    pub fn extras(&self) -> &Extras {
        static PLAIN: Extras = Extras { arity: Arity::One, binary: Vec::new() };
        match self {
            Self::Ack { extras, .. } | Self::Request { extras, .. } => extras,
            Self::Exception { .. } => &PLAIN,
        }
    }
}

/// One item of a connection's outbound queue. Kept two words wide so that queues are small.
#[derive(Debug)]
pub enum Outbound {
    /// An event, possibly shared with other recipients.
    Event(Arc<Emission>),
    /// Several events, in order, shared with the other members of a room: broadcasts held
    /// and delivered together ([`cork`](crate::adapter::cork)). Each is written as an
    /// [`Outbound::Event`] would be, with its own attachments.
    Events(Arc<Events>),
    /// An acknowledgement or an exception for one message.
    Direct(Box<Direct>),
}

impl Outbound {
    /// Whether other recipients hold this very item (a room's held broadcasts, queued to each
    /// member as one shared item): its emissions' text is wanted again.
    pub fn is_shared(&self) -> bool {
        match self {
            Self::Events(events) => Arc::strong_count(events) > 1,
            Self::Event(_) | Self::Direct(_) => false,
        }
    }

    /// The binary attachments that follow this item's frame, each a frame of its own; none
    /// for [`Outbound::Events`], whose events each have their own
    /// (`emission.extras().binary`).
    pub fn attachments(&self) -> &[Bytes] {
        match self {
            Self::Event(emission) => &emission.extras().binary,
            Self::Events(_) => &[],
            Self::Direct(direct) => &direct.extras().binary,
        }
    }

    /// The events this item carries, in order: one for [`Outbound::Event`], none for
    /// [`Outbound::Direct`].
    pub fn emissions(&self) -> &[Arc<Emission>] {
        match self {
            Self::Event(emission) => std::slice::from_ref(emission),
            Self::Events(events) => events.as_slice(),
            Self::Direct(_) => &[],
        }
    }

    /// How much of a queue's capacity it takes: one per event, one for a direct message
    /// (attachments are not counted).
    pub fn count(&self) -> usize {
        match self {
            Self::Events(events) => events.len(),
            Self::Event(_) | Self::Direct(_) => 1,
        }
    }
}

/// Events that go to a room's members together, in order ([`Outbound::Events`]).
pub struct Events {
    emissions: Vec<Arc<Emission>>,
    /// Runs of frames made of them ([`Events::with_framed`]), one per format and variant.
    framed: ByFormat<(TypeId, Box<str>)>,
}

impl Events {
    /// Events to go together, in this order.
    pub fn new(emissions: Vec<Arc<Emission>>) -> Self {
        Self { emissions, framed: ByFormat::new() }
    }

    /// Them, in order.
    pub fn as_slice(&self) -> &[Arc<Emission>] {
        &self.emissions
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.emissions.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.emissions.is_empty()
    }

    /// These events as one run of bytes in the format `K` (an adapter's own key: its wire
    /// format and its transport's framing), lent to `f`: made by `frame` on first use and
    /// cached, as [`Emission::with_encoded`] caches one event's text. The members of a room,
    /// who share this item, each write the same bytes, made once.
    pub fn with_framed<K: 'static, R>(
        &self,
        frame: impl Fn(&[Arc<Emission>]) -> Bytes,
        f: impl FnOnce(&[u8]) -> R,
    ) -> R {
        self.with_framed_for::<K, R>("", frame, f)
    }

    /// As [`Self::with_framed`], for one `variant` of the format `K`: runs that differ by
    /// more than the format, each made once (a Socket.IO namespace's prefix, say; its members
    /// share the run).
    pub fn with_framed_for<K: 'static, R>(
        &self,
        variant: &str,
        frame: impl Fn(&[Arc<Emission>]) -> Bytes,
        f: impl FnOnce(&[u8]) -> R,
    ) -> R {
        let format = TypeId::of::<K>();
        self.framed.lend(
            // An empty `Box<str>` points at no memory (a dangling address): comparing two
            // empty strings calls `memcmp` for zero bytes, which costs a fault suppressed in
            // microcode with AVX-512's masked loads, so the usual case, no variant, takes no
            // call (a comparison of unequal lengths makes none).
            |(k, v)| {
                *k == format && if variant.is_empty() { v.is_empty() } else { **v == *variant }
            },
            || (format, variant.into()),
            || frame(&self.emissions),
            f,
        )
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Events").field(&self.emissions).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rooms_run_is_made_once_per_format_and_variant() {
        let data = || to_payload(&json_value()).unwrap();
        let events = Events::new(vec![Emission::new(EventName::from("x"), data())]);
        let made = std::cell::Cell::new(0);
        let run = |variant: &str| {
            events.with_framed_for::<Upper, _>(
                variant,
                |emissions| {
                    made.set(made.get() + 1);
                    let text = emissions[0].encoded::<Upper>();
                    Bytes::from([variant.as_bytes(), &text].concat())
                },
                <[u8]>::to_vec,
            )
        };
        assert_eq!(run(""), b"X:{\"n\":1}");
        assert_eq!(run("/chat,"), b"/chat,X:{\"n\":1}");
        assert_eq!(run("/a,"), b"/a,X:{\"n\":1}");
        // Each again: from the cache, the first variant's and the others'.
        assert_eq!(run(""), b"X:{\"n\":1}");
        assert_eq!(run("/chat,"), b"/chat,X:{\"n\":1}");
        assert_eq!(run("/a,"), b"/a,X:{\"n\":1}");
        assert_eq!(made.get(), 3);
        // A variant as long as another, and the empty one again: each its own.
        assert_eq!(run("/b,"), b"/b,X:{\"n\":1}");
        assert_eq!(run(""), b"X:{\"n\":1}");
        assert_eq!(made.get(), 4);
        // Another format, no variant: its own run.
        let plain =
            events.with_framed::<Plain, _>(|_| Bytes::from_static(b"plain"), <[u8]>::to_vec);
        assert_eq!(plain, b"plain");
        assert_eq!(events.with_framed::<Upper, _>(|_| unreachable!(), <[u8]>::to_vec), run(""));
    }

    #[test]
    fn a_frame_held_alone_is_lent_unkept_and_a_shared_one_is_cached() {
        let data = || to_payload(&json_value()).unwrap();
        let alone = Emission::new(EventName::from("news"), data());
        let text = alone.lend_encoded::<Upper, _>(false, |text| {
            // One lent while another is: each its own bytes.
            let inner = Emission::new(EventName::from("inner"), data());
            let nested = inner.lend_encoded::<Upper, _>(false, <[u8]>::to_vec);
            assert_eq!(nested, b"INNER:{\"n\":1}");
            text.to_vec()
        });
        assert_eq!(text, b"NEWS:{\"n\":1}");
        assert!(alone.encodings.is_empty(), "held alone: not kept");

        let shared = alone.clone();
        let text = shared.lend_encoded::<Upper, _>(false, <[u8]>::to_vec);
        assert_eq!(text, b"NEWS:{\"n\":1}");
        assert!(!alone.encodings.is_empty(), "held twice: kept for the other");

        // Held once, in an item other recipients hold too (a room's held broadcasts).
        let events = Arc::new(Events::new(vec![Emission::new(EventName::from("x"), data())]));
        let item = Outbound::Events(events.clone());
        assert!(item.is_shared());
        let emission = &item.emissions()[0];
        emission.lend_encoded::<Upper, _>(item.is_shared(), <[u8]>::to_vec);
        assert!(!emission.encodings.is_empty(), "in a shared item: kept for the others");
        drop(events);
        assert!(!item.is_shared());
        assert!(!Outbound::Event(alone).is_shared());
    }

    fn json_value() -> serde_json::Value {
        serde_json::json!({ "n": 1 })
    }

    #[test]
    fn json_strings_are_written_and_measured_as_serde_json_writes_them() {
        let mut cases: Vec<String> = (0u8..0x80).map(|b| char::from(b).to_string()).collect();
        cases.extend(
            [
                "",
                "echo",
                "indexComment",
                "a\"b\\c",
                "line\nbreak\ttab",
                "\u{7f}é✓😀",
                "\u{1}x\u{1f}",
            ]
            .map(String::from),
        );
        for s in &cases {
            let expected = serde_json::to_string(s).unwrap();
            let mut out = b"[".to_vec();
            push_json_str(&mut out, s);
            assert_eq!(&out[1..], expected.as_bytes(), "{s:?}");
            assert_eq!(json_str_len(s), expected.len(), "{s:?}");
        }
    }

    struct Upper;
    impl WireFormat for Upper {
        fn encode_event(e: &Emission) -> Bytes {
            Bytes::from(format!("{}:{}", e.event().as_str().to_uppercase(), e.data().get()))
        }
    }
    struct Plain;
    impl WireFormat for Plain {
        fn encode_event(e: &Emission) -> Bytes {
            Bytes::from(format!("{}={}", e.event(), e.data().get()))
        }
    }

    #[test]
    fn emission_encodes_once_per_format() {
        let e = Emission::serialize("hi", &serde_json::json!({"a": 1})).unwrap();
        let a = e.encoded::<Upper>();
        let b = e.encoded::<Upper>();
        assert_eq!(a, "HI:{\"a\":1}");
        // The same allocation comes back: it was not encoded twice.
        assert_eq!(a.as_ptr(), b.as_ptr());
        let c = e.encoded::<Plain>();
        assert_eq!(c, "hi={\"a\":1}");
        assert_eq!(c.as_ptr(), e.encoded::<Plain>().as_ptr());
        assert_eq!(a.as_ptr(), e.encoded::<Upper>().as_ptr());
        assert_eq!(e.encodings.others.lock().unwrap().len(), 1);
    }

    #[test]
    fn outbound_items_stay_small() {
        assert!(std::mem::size_of::<Outbound>() <= 16);
    }
}
