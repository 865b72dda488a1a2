//! Reading a Socket.IO event packet as a wsgate message.

use std::sync::Arc;

use serde_json::value::RawValue;
use socketioxide::adapter::Adapter;
use socketioxide::handler::{FromMessageParts, Value};
use socketioxide::socket::Socket;
use wsgate::{AckId, EventName, Inbound};

/// An event as wsgate sees it: the name, the first argument as data (binary attachments stay
/// as Socket.IO placeholders in it), the attachments, and the ack id if the client asked for
/// one.
#[derive(Debug)]
pub(crate) struct RawMessage(pub(crate) Inbound);

/// The packet was not a JSON event array (only the msgpack parser produces those).
#[derive(Debug, thiserror::Error)]
#[error("unreadable Socket.IO event: {0}")]
pub(crate) struct Unreadable(String);

impl<A: Adapter> FromMessageParts<A> for RawMessage {
    type Error = Unreadable;

    fn from_message_parts(
        _: &Arc<Socket<A>>,
        value: &mut Value,
        ack_id: &Option<i64>,
    ) -> Result<Self, Self::Error> {
        let Value::Str(text, attachments) = value else {
            return Err(Unreadable("binary packet".into()));
        };
        let mut inbound = decode(text.as_str())?;
        inbound.binary = attachments.take().map(Vec::from).unwrap_or_default();
        inbound.ack = ack_id.and_then(|id| u64::try_from(id).ok()).map(AckId::Number);
        Ok(RawMessage(inbound))
    }
}

/// `["event", data, …]` → the event and its first argument; further arguments are ignored,
/// as Nest does.
fn decode(text: &str) -> Result<Inbound, Unreadable> {
    let parts: Vec<&RawValue> =
        serde_json::from_str(text).map_err(|e| Unreadable(e.to_string()))?;
    let event = parts.first().ok_or_else(|| Unreadable("no event name".into()))?;
    let event: String = serde_json::from_str(event.get())
        .map_err(|_| Unreadable("event is not a string".into()))?;
    let data = parts.get(1).map_or_else(wsgate::null_payload, |d| (*d).to_owned());
    Ok(Inbound::new(EventName::from(event), data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_and_first_argument() {
        let m = decode(r#"["indexComment",{"entryId":2},"ignored"]"#).unwrap();
        assert_eq!(m.event.as_str(), "indexComment");
        assert_eq!(m.data.get(), r#"{"entryId":2}"#);
        let m = decode(r#"["ping"]"#).unwrap();
        assert_eq!(m.data.get(), "null");
        assert!(decode("[]").is_err());
        assert!(decode("[1]").is_err());
    }
}
