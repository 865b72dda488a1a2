//! Reading a Socket.IO event packet as a wsgate message.

use serde_json::value::RawValue;
use wsgate::EventName;
use wsgate::adapter::Inbound;

/// The packet was not a JSON event array.
#[derive(Debug, thiserror::Error)]
#[error("unreadable Socket.IO event: {0}")]
pub(crate) struct Unreadable(String);

/// `["event", args…]` → the event and its data, as Nest's `IoAdapter` maps them: no argument
/// is `null`, one argument is the data, several are the data as an array (and the message's
/// arity says so, for [`wsgate::Args`]).
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
        [] => wsgate::adapter::null_payload(),
        [one] => (*one).to_owned(),
        many => {
            let items: Vec<&str> = many.iter().map(|a| a.get()).collect();
            RawValue::from_string(format!("[{}]", items.join(",")))
                .map_err(|e| Unreadable(e.to_string()))?
        }
    };
    let mut message = Inbound::new(event, data);
    if args.len() > 1 {
        message.arity = wsgate::adapter::Arity::Several;
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_and_arguments_as_nest_maps_them() {
        let m = decode(r#"["indexComment",{"entryId":2}]"#).unwrap();
        assert_eq!(m.event.as_str(), "indexComment");
        assert_eq!(m.data.get(), r#"{"entryId":2}"#);
        assert_eq!(m.arity, wsgate::adapter::Arity::One);
        let m = decode(r#"["message",1,"2",{"3":[true]}]"#).unwrap();
        assert_eq!(m.data.get(), r#"[1,"2",{"3":[true]}]"#);
        assert_eq!(m.arity, wsgate::adapter::Arity::Several);
        let m = decode(r#"["p\u0069ng \"x\""]"#).unwrap();
        assert_eq!(m.event.as_str(), "ping \"x\"");
        let m = decode(r#"["ping"]"#).unwrap();
        assert_eq!(m.data.get(), "null");
        assert!(decode("[]").is_err());
        assert!(decode("[1]").is_err());
    }
}
