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
pub(crate) struct RawMessage(pub(crate) Inbound, pub(crate) usize);

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
        let size = text.as_str().len() + inbound.binary.iter().map(|b| b.len()).sum::<usize>();
        Ok(RawMessage(inbound, size))
    }
}

/// `["event", args…]` → the event and its data, as Nest's `IoAdapter` maps them: no argument
/// is `null`, one argument is the data, several are the data as an array.
pub(crate) fn decode(text: &str) -> Result<Inbound, Unreadable> {
    let parts: Vec<&RawValue> =
        serde_json::from_str(text).map_err(|e| Unreadable(e.to_string()))?;
    let (event, args) = parts.split_first().ok_or_else(|| Unreadable("no event name".into()))?;
    // Borrowed from the packet unless the name has escapes to undo.
    let event = match serde_json::from_str::<&str>(event.get()) {
        Ok(name) => EventName::from(name),
        Err(_) => EventName::from(
            serde_json::from_str::<String>(event.get())
                .map_err(|_| Unreadable("event is not a string".into()))?,
        ),
    };
    let data = match args {
        [] => wsgate::null_payload(),
        [one] => (*one).to_owned(),
        many => {
            let items: Vec<&str> = many.iter().map(|a| a.get()).collect();
            RawValue::from_string(format!("[{}]", items.join(",")))
                .map_err(|e| Unreadable(e.to_string()))?
        }
    };
    Ok(Inbound::new(event, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_and_arguments_as_nest_maps_them() {
        let m = decode(r#"["indexComment",{"entryId":2}]"#).unwrap();
        assert_eq!(m.event.as_str(), "indexComment");
        assert_eq!(m.data.get(), r#"{"entryId":2}"#);
        let m = decode(r#"["message",1,"2",{"3":[true]}]"#).unwrap();
        assert_eq!(m.data.get(), r#"[1,"2",{"3":[true]}]"#);
        let m = decode(r#"["p\u0069ng \"x\""]"#).unwrap();
        assert_eq!(m.event.as_str(), "ping \"x\"");
        let m = decode(r#"["ping"]"#).unwrap();
        assert_eq!(m.data.get(), "null");
        assert!(decode("[]").is_err());
        assert!(decode("[1]").is_err());
    }
}
