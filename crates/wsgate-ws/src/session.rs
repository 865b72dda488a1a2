//! One connection's task: the session driver of `wsgate-transport`, with JSON frames.

use std::sync::Arc;

use bytes::Bytes;
use hyper::upgrade::OnUpgrade;
use wsgate::adapter::{Accepted, Direct, Emission, Events, Inbound};
use wsgate::{App, CloseReason, Connection, Refusal};
use wsgate_transport::parts::in_span;
use wsgate_transport::websocket::text_frames;
use wsgate_transport::{Action, Channels, Incoming, Link, Protocol, SessionEnd, Setup};

use crate::WsConfig;
use crate::codec::{self, Decoded, JsonFrames, SessionFrames};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// The plain WebSocket protocol over the session driver: one channel, the connection opened
/// at the handshake; JSON frames in both formats ([`codec::decode`]); binary frames are the
/// attachments a JSON frame announced (`"attachments":N`), others are refused with an
/// `exception`; the connection closed by the server closes the websocket. A client's close
/// with code 1000 is its goodbye: its recovery session ends with it.
#[derive(Debug)]
pub struct JsonProtocol {
    /// A message waiting for its binary attachments. Boxed: rare.
    assembling: Option<Box<Assembling>>,
    /// The most bytes a message may take, its attachments included.
    max_message_size: usize,
}

impl JsonProtocol {
    /// The protocol for messages of at most `max_message_size` bytes, attachments included.
    pub fn new(max_message_size: usize) -> Self {
        Self { assembling: None, max_message_size }
    }
}

#[derive(Debug)]
struct Assembling {
    message: Inbound,
    expected: usize,
    size: usize,
}

/// The one channel of a plain WebSocket session: whether its client asked for a recovery
/// session, whose frames carry offsets ([`codec::SessionFrames`]).
#[derive(Debug, Default)]
pub struct JsonChannel {
    /// The connection has a recovery session.
    pub session: bool,
}

const BINARY_REFUSED: &str =
    "A binary frame must follow a JSON frame that announces it (\"attachments\":N).";
const BINARY_DUE: &str =
    "Binary attachments were due: this frame and the message they belong to are dropped.";

impl Protocol for JsonProtocol {
    type Channel = JsonChannel;

    fn read(&mut self, frame: Incoming, _: Channels<'_, JsonChannel>) -> Action<JsonChannel> {
        let decoded = match (frame, self.assembling.take()) {
            (Incoming::Binary(data), Some(mut pending)) => {
                pending.size += data.len();
                if pending.size > self.max_message_size {
                    return Action::End(SessionEnd::Close(CloseReason::TooBig));
                }
                pending.message.binary.push(data);
                if pending.message.binary.len() < pending.expected {
                    self.assembling = Some(pending);
                    return Action::Nothing;
                }
                Decoded::Message(pending.message)
            }
            (Incoming::Binary(_), None) => {
                Decoded::Invalid { message: BINARY_REFUSED.to_owned(), ack: None }
            }
            (Incoming::Text(_), Some(pending)) => {
                Decoded::Invalid { message: BINARY_DUE.to_owned(), ack: pending.message.ack }
            }
            (Incoming::Text(text), None) => codec::decode(&text),
        };
        match decoded {
            Decoded::Message(message) => Action::Dispatch { channel: 0, message },
            Decoded::Binary { message, attachments } => {
                let size = message.data.get().len();
                let binary = Vec::with_capacity(attachments);
                let message = Inbound { binary, ..message };
                self.assembling =
                    Some(Box::new(Assembling { message, expected: attachments, size }));
                Action::Nothing
            }
            Decoded::Answer { id, data } => Action::Answer { channel: 0, id, data },
            Decoded::Invalid { message, ack } => Action::Reject { channel: 0, message, ack },
        }
    }

    fn encode_event(emission: &Emission, channel: &JsonChannel) -> Bytes {
        if channel.session {
            emission.encoded::<SessionFrames>()
        } else {
            emission.encoded::<JsonFrames>()
        }
    }

    fn write_event(
        emission: &Arc<Emission>,
        shared: bool,
        channel: &JsonChannel,
        ws: &mut wsgate_transport::session::Socket,
    ) -> Result<(), wsgate_transport::websocket::Error> {
        if channel.session {
            emission.lend_encoded::<SessionFrames, _>(shared, |text| ws.queue_text(text))
        } else {
            emission.lend_encoded::<JsonFrames, _>(shared, |text| ws.queue_text(text))
        }
    }

    fn write_events(
        events: &Events,
        channel: &JsonChannel,
        ws: &mut wsgate_transport::session::Socket,
    ) -> Result<bool, wsgate_transport::websocket::Error> {
        if channel.session {
            events.with_framed::<SessionFrames, _>(text_frames::<SessionFrames>, |f| {
                ws.queue_framed(f)
            })?;
        } else {
            events
                .with_framed::<JsonFrames, _>(text_frames::<JsonFrames>, |f| ws.queue_framed(f))?;
        }
        Ok(true)
    }

    fn encode_direct(direct: &Direct, _: &JsonChannel) -> Bytes {
        codec::encode_direct(direct)
    }

    /// The connection is the session: it closes with the reason's code.
    fn ended(_: &JsonChannel, _: CloseReason) -> Option<Bytes> {
        None
    }

    // A plain WebSocket session opens no channel after its handshake.
    fn opened(_: &JsonChannel, _: &Connection) -> Bytes {
        Bytes::new()
    }

    fn refused(_: &JsonChannel, _: &Refusal) -> Bytes {
        Bytes::new()
    }

    fn farewell(code: Option<u16>) -> bool {
        code == Some(1000)
    }
}

/// What a connection is opened from: its accepted handshake and the upgrade to come.
pub(crate) struct Opening {
    pub(crate) accepted: Accepted,
    pub(crate) on_upgrade: OnUpgrade,
    pub(crate) deflate: Option<wsgate_transport::Negotiated>,
}

/// A connection's task. What opening it takes is boxed and gone once it is open: what a task
/// holds, every idle connection holds. Not an async fn, which would keep its arguments twice
/// (as given, and moved into its body); the block uses them where they are.
#[allow(clippy::manual_async_fn)]
pub(crate) fn run(
    app: App,
    opening: Box<Opening>,
    config: Arc<WsConfig>,
) -> impl Future<Output = ()> {
    async move {
        let Some(setup) = Box::pin(open(opening, &config)).await else { return };
        let conn = &setup.channels[0].0;
        let span = tracing::debug_span!("ws", conn = %conn.id(), ns = %conn.namespace());
        let asleep = in_span(wsgate_transport::run(&app, setup, &config.session), span).await;
        if let Some(asleep) = asleep {
            // Woken, it goes on in a task of its own, and sleeps again when quiet.
            asleep.sleep_with(app, config, |config| &config.session);
        }
    }
}

/// Waits for the upgrade, then registers the connection.
async fn open(opening: Box<Opening>, config: &WsConfig) -> Option<Box<Setup<JsonProtocol>>> {
    let Opening { accepted, on_upgrade, deflate } = *opening;
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            tracing::debug!(error = %e, "websocket upgrade failed");
            return None;
        }
    };
    let mut ws = wsgate_transport::open_socket(
        upgraded,
        config.read_buffer_size,
        config.max_message_size,
        deflate,
    );
    let (conn, rx) = accepted.open().await;
    let channel = JsonChannel { session: conn.session_id().is_some() };
    if let Some(id) = conn.session_id() {
        // First, before the missed events (already queued) and anything live.
        let frame = codec::encode_session(id, conn.recovered());
        let text = Utf8Bytes::try_from(frame).ok()?;
        if ws.send(Message::Text(text)).await.is_err() {
            return None;
        }
    }
    let link = Link::WebSocket(ws);
    let protocol = JsonProtocol::new(config.max_message_size);
    Some(Box::new(Setup { protocol, link, channels: vec![(conn, rx, channel)] }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<A, B, C, F>(_: fn(A, B, C) -> F) -> usize {
        size_of::<F>()
    }

    /// Every idle connection holds its task: tokio's task cell is the future and 104 bytes of
    /// its own, in steps of 128; at most 408 B of future, the cell is 512 B (see
    /// docs/PERFORMANCE.md, idle connection).
    #[test]
    fn a_connection_task_fits_in_512_bytes() {
        assert!(future_size(run) <= 408, "{} B", future_size(run));
    }

    /// Asleep, a connection holds this, with the adapter's handles (three words) beside it:
    /// 144 B, in jemalloc's 160 B class (its websocket without its buffers: 224 B before).
    #[test]
    fn a_sleeping_connection_is_small() {
        let size = size_of::<wsgate_transport::session::Asleep<JsonProtocol>>();
        assert!(size <= 120, "{size} B");
    }
}
