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
    match decode_usual(text) {
        Some(message) => Ok(message),
        None => decode_parts(text),
    }
}

/// The usual event, `["name",…]` with one argument exactly (no whitespace between the parts,
/// a name without escapes), read without the list of parts: what [`decode`] reads it to, or
/// `None` for any other text, which [`decode`] reads in full.
fn decode_usual(text: &str) -> Option<Inbound> {
    let rest = text.strip_prefix("[\"")?;
    let end = rest.bytes().position(|b| b == b'"' || b == b'\\' || b < 0x20)?;
    let (event, rest) = rest.split_at(end);
    let value = rest.strip_prefix("\",")?.strip_suffix(']')?;
    // The value is JSON on its own, and all of what is left: a second argument is not.
    let data = serde_json::from_str::<&RawValue>(value).ok()?;
    if data.get().len() != value.len() {
        return None;
    }
    Some(Inbound::new(EventName::from(event), data.to_owned()))
}

/// [`decode`] of any text: its parts read first.
fn decode_parts(text: &str) -> Result<Inbound, Unreadable> {
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

    /// The usual event's short way reads what the full one reads, and leaves it every other
    /// text: events made of names, arguments and endings of every kind, both ways compared.
    #[test]
    fn the_usual_event_reads_as_the_full_decoder_reads_it() {
        let names = ["echo", "", "a b", "é😀", "a\\\"b", "a\\nb", "tab\there", "\\u0041"];
        let values = [
            "\"x\"",
            "1",
            "-0.5e3",
            "true",
            "null",
            "[]",
            "[1,\"a\"]",
            "{}",
            "{\"a\":[1,{}]}",
            "\"\\u00e9\\n\"",
            " 1",
            "1 ",
            "\"a",
            "{",
            "[1,]",
            "01",
            "\"bad\\x\"",
            "\"ctl\u{1}\"",
            "1,2",
            "1,\"x\"",
            "\"]\"",
            "[]]",
            "",
        ];
        let ends = ["]", "] ", "]]", ",1]", ""];
        let show = |r: &Result<Inbound, Unreadable>| match r {
            Ok(m) => format!("{} {} {:?}", m.event.as_str(), m.data.get(), m.arity),
            Err(Unreadable(e)) => format!("error {e}"),
        };
        let mut usual = 0;
        for name in names {
            for value in values {
                for end in ends {
                    let text = format!("[\"{name}\",{value}{end}");
                    let full = show(&decode_parts(&text));
                    match decode_usual(&text) {
                        Some(read) => {
                            usual += 1;
                            assert_eq!(show(&Ok(read)), full, "{text}");
                        }
                        None => assert_eq!(show(&decode(&text)), full, "{text}"),
                    }
                }
            }
        }
        assert!(usual >= 40, "the short way read {usual} events");
        for other in [r#"[ "a",1]"#, r#"["a", 1]"#, r#"["a"]"#, r#"["a",1,2]"#] {
            assert!(decode_usual(other).is_none(), "{other}");
        }
    }

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
