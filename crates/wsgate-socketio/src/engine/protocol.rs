//! Engine.IO v4 and Socket.IO v5 as a protocol of the session driver (`wsgate-transport`):
//! how an Engine.IO session's frames read, whatever carries them.
//!
//! A session carries one channel per Socket.IO namespace the client connects (`40/chat,`),
//! each a wsgate connection: `io("/")` and `io("/chat")` of one client share the session.
//! Binary attachments follow their event as binary frames (or `b…` packets over polling) and
//! count against `max_payload` with it. The heartbeat is Engine.IO's: the server's `2`,
//! answered `3` within the ping timeout.

use std::sync::Arc;

use bytes::Bytes;
use wsgate::adapter::{Direct, Emission, Events};
use wsgate::{AckId, App, CloseReason, Connection, Namespace, Refusal, SessionRequest};
use wsgate_transport::websocket::{push_text_frame, text_frames};
use wsgate_transport::{
    Action, Channels, Incoming, Link, PackedOrigin, Protocol, SessionConfig, SessionEnd, Setup,
};

use super::{EngineConfig, Registered};
use crate::TRANSPORT;
use crate::message::decode;
use crate::packet::{self, EventFrames, Packet};

/// How long a closing websocket waits for the client's close frame.
pub(crate) const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// What an Engine.IO session over `link` starts with; a session opened by long-polling
/// holds its entry in the engine's table (`registered`) for as long as it runs.
pub(crate) fn setup(
    origin: PackedOrigin,
    link: Link,
    registered: Option<Registered>,
    config: &EngineConfig,
) -> Box<Setup<EngineProtocol>> {
    let kept = Kept { origin, max_payload: config.max_payload, _registered: registered };
    let protocol = EngineProtocol { kept: Box::new(kept), assembling: None };
    Box::new(Setup { protocol, link, channels: Vec::new() })
}

/// Runs an Engine.IO session until it ends.
pub(crate) async fn run(
    app: App,
    setup: Box<Setup<EngineProtocol>>,
    session: std::sync::Arc<SessionConfig>,
    span: tracing::Span,
) {
    let run = wsgate_transport::run(&app, setup, &session);
    if let Some(asleep) = wsgate_transport::parts::in_span(run, span).await {
        // After an upgrade to a websocket, a quiet session sleeps as one opened on it.
        asleep.sleep_with(app, session, |session| session);
    }
}

/// The open packet: the session's id and settings.
pub(crate) fn open_packet(sid: &str, upgrades: &str, config: &EngineConfig) -> String {
    format!(
        r#"0{{"sid":"{sid}","upgrades":[{upgrades}],"pingInterval":{},"pingTimeout":{},"maxPayload":{}}}"#,
        config.ping_interval.as_millis(),
        config.ping_timeout.as_millis(),
        config.max_payload
    )
}

/// Engine.IO and Socket.IO over the session driver.
pub(crate) struct EngineProtocol {
    /// What the session keeps for its whole life, in one box: every word of the session's
    /// task is a word of every idle connection's.
    kept: Box<Kept>,
    /// A binary event waiting for its attachments. Boxed: rare, and large for a session's
    /// task to hold room for.
    assembling: Option<Box<Assembling>>,
}

struct Kept {
    /// What the request that opened the session told, for the namespaces' handshakes.
    origin: PackedOrigin,
    max_payload: usize,
    /// The session's entry in the engine's table, removed when the session ends.
    _registered: Option<Registered>,
}

/// A namespace connected over the session.
pub(crate) struct Namespaced {
    /// The prefix its packets carry, `/chat,` (the namespace as the client wrote it, and a
    /// comma, which a namespace cannot hold); none for `/`. Boxed twice: one word in every
    /// session's task, and no allocation for the usual root namespace.
    other: Option<Box<Box<str>>>,
}

impl Namespaced {
    fn new(ns: &str) -> Self {
        let prefix = packet::prefix(ns);
        Self { other: (!prefix.is_empty()).then(|| Box::new(prefix.into())) }
    }

    /// The prefix its packets carry: empty for `/`.
    fn prefix(&self) -> &str {
        self.other.as_deref().map_or("", |prefix| prefix)
    }

    /// The namespace as the client wrote it.
    fn ns(&self) -> &str {
        self.prefix().strip_suffix(',').unwrap_or("/")
    }
}

/// A binary event (or a binary answer to a request of the server's) waiting for its
/// attachments.
struct Assembling {
    ns: Box<str>,
    ack: Option<u64>,
    /// A `6` packet: the client's answer to request `ack`.
    answer: bool,
    body: String,
    expected: usize,
    attachments: Vec<Bytes>,
    size: usize,
}

fn broken(why: &'static str) -> Action<Namespaced> {
    tracing::debug!(why, "closing the session");
    Action::End(SessionEnd::Close(CloseReason::PolicyViolation))
}

impl EngineProtocol {
    /// An event for namespace `ns`: nothing when it is not connected (ignored, as Socket.IO
    /// servers do).
    fn event(
        channels: &Channels<'_, Namespaced>,
        ns: &str,
        ack: Option<u64>,
        body: &str,
        binary: Vec<Bytes>,
    ) -> Action<Namespaced> {
        let Some(channel) = channels.find(|c| c.ns() == ns) else {
            tracing::debug!(ns, "event for a namespace not connected");
            return Action::Nothing;
        };
        let ack = ack.map(AckId::Number);
        match decode(body) {
            Ok(mut message) => {
                message.ack = ack;
                message.binary = binary;
                Action::Dispatch { channel, message }
            }
            Err(e) => Action::Reject { channel, message: e.to_string(), ack },
        }
    }

    /// The client's answer to request `id` of namespace `ns`.
    fn answer(
        channels: &Channels<'_, Namespaced>,
        ns: &str,
        id: Option<u64>,
        body: &str,
    ) -> Action<Namespaced> {
        let (Some(channel), Some(id)) = (channels.find(|c| c.ns() == ns), id) else {
            return Action::Nothing;
        };
        match answer_of(body) {
            Some(data) => Action::Answer { channel, id, data },
            None => {
                tracing::debug!(ns, id, "an ack whose arguments are not a JSON array");
                Action::Nothing
            }
        }
    }

    /// `0[/ns,][auth]`: the handshake of a namespace.
    fn connect(
        &self,
        channels: &Channels<'_, Namespaced>,
        ns: &str,
        auth: Option<&str>,
    ) -> Action<Namespaced> {
        let prefix = packet::prefix(ns);
        if channels.find(|c| c.ns() == ns).is_some() {
            tracing::debug!(ns, "namespace connected twice");
            return Action::Nothing;
        }
        let auth = match auth.map(serde_json::from_str::<serde_json::Value>) {
            // As the reference server: no payload is an empty one.
            None => serde_json::Value::Object(serde_json::Map::new()),
            Some(Ok(auth @ serde_json::Value::Object(_))) => auth,
            Some(_) => {
                let refused = packet::refused(&prefix, "The auth payload must be a JSON object.");
                return Action::Send(refused.into());
            }
        };
        let mut handshake = self.kept.origin.handshake(Namespace::new(ns), TRANSPORT);
        handshake.session = session_request(&auth);
        handshake.auth = Some(auth);
        let channel = Namespaced::new(ns);
        Action::Open { channel, handshake: Box::new(handshake) }
    }
}

/// An ack's answer from its arguments (`[answer]`, or `[a, b…]` kept as the array); `None`
/// when they are not a JSON array.
fn answer_of(body: &str) -> Option<Box<serde_json::value::RawValue>> {
    let args: Vec<Box<serde_json::value::RawValue>> = serde_json::from_str(body).ok()?;
    match args.len() {
        0 => Some(wsgate::adapter::null_payload()),
        1 => args.into_iter().next(),
        _ => serde_json::value::RawValue::from_string(body.to_owned()).ok(),
    }
}

/// What a CONNECT asks of connection state recovery: `socket.io-client` adds
/// `{pid, offset}` to its `auth` payload when it has a session to recover. Anything else
/// there (a `pid` that is not text, say) is a new session.
fn session_request(auth: &serde_json::Value) -> SessionRequest {
    match auth.get("pid").and_then(serde_json::Value::as_str) {
        Some(pid) => SessionRequest::Resume {
            id: pid.to_owned(),
            offset: auth.get("offset").and_then(serde_json::Value::as_str).map(str::to_owned),
        },
        None => SessionRequest::New,
    }
}

impl Protocol for EngineProtocol {
    type Channel = Namespaced;

    fn read(&mut self, frame: Incoming, channels: Channels<'_, Namespaced>) -> Action<Namespaced> {
        let text = match frame {
            Incoming::Text(text) => text,
            Incoming::Binary(data) => {
                let Some(mut event) = self.assembling.take() else {
                    return broken("binary frame without a binary event");
                };
                event.size += data.len();
                if event.size > self.kept.max_payload {
                    return Action::End(SessionEnd::Close(CloseReason::TooBig));
                }
                event.attachments.push(data);
                if event.attachments.len() < event.expected {
                    self.assembling = Some(event);
                    return Action::Nothing;
                }
                let Assembling { ns, ack, answer, body, attachments, .. } = *event;
                if answer {
                    // The answer reaches `emit_with_ack` as JSON: its placeholders stay, its
                    // attachments are not handed over.
                    return Self::answer(&channels, &ns, ack, &body);
                }
                return Self::event(&channels, &ns, ack, &body, attachments);
            }
        };
        if self.assembling.is_some() {
            return broken("text frame while binary attachments were due");
        }
        match text.as_bytes().first() {
            Some(b'4') => {}
            // The pong.
            Some(b'3') => return Action::Pong,
            // A client's ping (`2probe`) is answered in kind.
            Some(b'2') => return Action::Send(format!("3{}", &text.as_str()[1..]).into()),
            // The client ends the session.
            Some(b'1') => return Action::Close,
            // Noop, and an upgrade on a transport that is not being upgraded.
            Some(b'5' | b'6') => return Action::Nothing,
            _ => return broken("not an Engine.IO packet"),
        }
        let packet = match packet::parse(&text.as_str()[1..]) {
            Ok(packet) => packet,
            Err(error) => return broken(error),
        };
        match packet {
            Packet::Event { ns, ack, attachments: 0, body } => {
                Self::event(&channels, ns, ack, body, Vec::new())
            }
            Packet::Event { ns, ack, attachments, body } => {
                self.assembling = Some(Box::new(Assembling {
                    ns: ns.into(),
                    ack,
                    answer: false,
                    body: body.to_owned(),
                    expected: attachments,
                    attachments: Vec::with_capacity(attachments),
                    size: text.as_str().len(),
                }));
                Action::Nothing
            }
            Packet::Connect { ns, auth } => self.connect(&channels, ns, auth),
            Packet::Disconnect { ns } => match channels.find(|c| c.ns() == ns) {
                Some(channel) => Action::Leave { channel },
                None => Action::Nothing,
            },
            // The answer to a request of the server's: its first argument (all of them, as an
            // array, when there are several); with binary attachments, once they came.
            Packet::Ack { ns, id: Some(id), attachments: 0, body } => {
                Self::answer(&channels, ns, Some(id), body)
            }
            Packet::Ack { ns, id: Some(id), attachments, body } => {
                self.assembling = Some(Box::new(Assembling {
                    ns: ns.into(),
                    ack: Some(id),
                    answer: true,
                    body: body.to_owned(),
                    expected: attachments,
                    attachments: Vec::with_capacity(attachments),
                    size: text.as_str().len(),
                }));
                Action::Nothing
            }
            // Nothing can wait for an ack without an id.
            Packet::Ack { id: None, .. } => Action::Nothing,
        }
    }

    fn encode_event(emission: &Emission, channel: &Namespaced) -> Bytes {
        packet::for_namespace(emission.encoded::<EventFrames>(), channel.prefix())
    }

    fn write_event(
        emission: &Arc<Emission>,
        shared: bool,
        channel: &Namespaced,
        ws: &mut wsgate_transport::session::Socket,
    ) -> Result<(), wsgate_transport::websocket::Error> {
        if channel.prefix().is_empty() {
            emission.lend_encoded::<EventFrames, _>(shared, |text| ws.queue_text(text))
        } else {
            ws.queue_text(&Self::encode_event(emission, channel))
        }
    }

    fn write_events(
        events: &Events,
        channel: &Namespaced,
        ws: &mut wsgate_transport::session::Socket,
    ) -> Result<bool, wsgate_transport::websocket::Error> {
        // The same for every member: a room's members are of one namespace.
        let prefix = channel.prefix();
        let frame = |emissions: &[Arc<Emission>]| {
            if prefix.is_empty() {
                return text_frames::<EventFrames>(emissions);
            }
            let mut out = Vec::new();
            for emission in emissions {
                let packet = packet::for_namespace(emission.encoded::<EventFrames>(), prefix);
                push_text_frame(&mut out, &packet);
            }
            Bytes::from(out)
        };
        events
            .with_framed_for::<EventFrames, _>(prefix, frame, |frames| ws.queue_framed(frames))?;
        Ok(true)
    }

    fn encode_direct(direct: &Direct, channel: &Namespaced) -> Bytes {
        packet::encode_direct(direct, channel.prefix())
    }

    /// `b<base64>`: an attachment over long-polling.
    fn polled_binary(attachment: &[u8]) -> Option<Bytes> {
        use base64::Engine as _;
        let mut packet = String::with_capacity(1 + attachment.len().div_ceil(3) * 4);
        packet.push('b');
        base64::engine::general_purpose::STANDARD.encode_string(attachment, &mut packet);
        Some(packet.into())
    }

    /// `41[/ns,]`, the session going on; a client too slow, or sending too much, loses the
    /// whole session.
    fn ended(channel: &Namespaced, reason: CloseReason) -> Option<Bytes> {
        match reason {
            CloseReason::SlowConsumer | CloseReason::TooBig => None,
            _ => Some(packet::disconnect(channel.prefix()).into()),
        }
    }

    /// `40[/ns,]{"sid":…}`, with the `pid` of its session when recovery is on.
    fn opened(channel: &Namespaced, conn: &Connection) -> Bytes {
        tracing::debug!(conn = %conn.id(), ns = %conn.namespace(), recovered = conn.recovered(), "socket.io connected");
        packet::connected(channel.prefix(), &conn.id().to_string(), conn.session_id()).into()
    }

    fn refused(channel: &Namespaced, refusal: &Refusal) -> Bytes {
        packet::refused(channel.prefix(), &refusal.message).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every Socket.IO session keeps one for its life: 56 B is a mimalloc size class (the
    /// next is 64; with the peer address beside the packed request it was 88, in 96).
    #[test]
    fn what_a_session_keeps_fits_in_56_bytes() {
        assert!(size_of::<Kept>() <= 56, "{} B", size_of::<Kept>());
    }
}
