//! Socket.IO v5 packets (carried in Engine.IO v4 `4` packets) as wsgate's own websocket
//! transport reads and writes them.
//!
//! `<type>[<attachments>-][<namespace>,][<ack id>][<JSON>]`, where the namespace is written
//! only when it is not `/`.

use bytes::Bytes;
use serde_json::value::RawValue;
use wsgate::AckId;
use wsgate::adapter::{Arity, Direct, Emission, Extras, WireFormat, json_str_len, push_json_str};

/// The most binary attachments one event may announce.
pub(crate) const MAX_ATTACHMENTS: usize = 256;

/// One packet from the client. Text is borrowed from the frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Packet<'a> {
    /// `0`: connect to a namespace, with the `auth` payload if one was given.
    Connect { ns: &'a str, auth: Option<&'a str> },
    /// `1`: leave a namespace.
    Disconnect { ns: &'a str },
    /// `2` (or `5` with binary attachments to follow): an event.
    Event { ns: &'a str, ack: Option<u64>, attachments: usize, body: &'a str },
    /// `3` / `6`: the client answers an event the server sent with an ack id
    /// (`Connection::emit_with_ack`): `3[/ns,]<id>[args…]`.
    Ack { ns: &'a str, id: Option<u64>, attachments: usize, body: &'a str },
}

/// Reads one Socket.IO packet; the error says what is wrong with it.
pub(crate) fn parse(text: &str) -> Result<Packet<'_>, &'static str> {
    let mut rest = text;
    let kind = rest.as_bytes().first().copied().ok_or("empty Socket.IO packet")?;
    rest = &rest[1..];
    let attachments = if matches!(kind, b'5' | b'6') {
        let dash = rest.find('-').ok_or("binary packet without its attachment count")?;
        let count: usize = rest[..dash].parse().map_err(|_| "bad attachment count")?;
        if count > MAX_ATTACHMENTS {
            return Err("too many binary attachments");
        }
        rest = &rest[dash + 1..];
        count
    } else {
        0
    };
    let ns = if rest.starts_with('/') {
        let end = rest.find(',').unwrap_or(rest.len());
        let ns = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or("");
        ns
    } else {
        "/"
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let ack = if digits > 0 {
        Some(rest[..digits].parse::<u64>().map_err(|_| "ack id out of range")?)
    } else {
        None
    };
    rest = &rest[digits..];
    match kind {
        b'0' if ack.is_none() => {
            Ok(Packet::Connect { ns, auth: (!rest.is_empty()).then_some(rest) })
        }
        b'1' if ack.is_none() => Ok(Packet::Disconnect { ns }),
        b'2' | b'5' => {
            if rest.is_empty() {
                return Err("event without data");
            }
            Ok(Packet::Event { ns, ack, attachments, body: rest })
        }
        b'3' | b'6' => Ok(Packet::Ack { ns, id: ack, attachments, body: rest }),
        _ => Err("unknown Socket.IO packet type"),
    }
}

/// Engine.IO `4` + Socket.IO `2`: an event packet for the root namespace, `42["event",data]`
/// (`45<n>-["event",…]` with `n` binary attachments to follow). A broadcast is encoded once in
/// it; other namespaces get their prefix inserted ([`for_namespace`]).
#[derive(Debug)]
pub(crate) struct EventFrames;

impl WireFormat for EventFrames {
    /// Several arguments are spread: `42["event",a,b]`. With recovery on, the event's offset
    /// is its last argument, as Socket.IO's connection state recovery has it:
    /// `42["event",data,"<offset>"]`.
    fn encode_event(emission: &Emission) -> Bytes {
        let (event, data, offset) = (emission.event(), emission.data(), emission.offset());
        let extras = emission.extras();
        let offset_len = offset.map_or(0, |o| 1 + json_str_len(o));
        // One argument, no attachment: the exact size, and so `Bytes` without an allocation
        // of its own.
        let exact = extras.binary.is_empty() && extras.arity == Arity::One;
        let size = if exact {
            5 + json_str_len(event.as_str()) + data.get().len() + offset_len
        } else {
            12 + event.as_str().len() + data.get().len() + offset_len
        };
        let mut out = Vec::with_capacity(size);
        Self::write_event(emission, &mut out);
        debug_assert!(out.len() == size || !exact, "the packet's size was measured");
        Bytes::from(out)
    }

    fn write_event(emission: &Emission, out: &mut Vec<u8>) {
        let (event, data, offset) = (emission.event(), emission.data(), emission.offset());
        packet_type(out, b'2', emission.extras());
        out.push(b'[');
        push_json_str(out, event.as_str());
        push_args(out, data, emission.extras().arity, true);
        if let Some(offset) = offset {
            out.push(b',');
            push_json_str(out, offset);
        }
        out.push(b']');
    }
}

/// `4` and the packet's type: `kind` (`2` an event, `3` an ack), or its binary counterpart
/// (`5`, `6`) with the count of attachments, `45<n>-`.
fn packet_type(out: &mut Vec<u8>, kind: u8, extras: &Extras) {
    out.push(b'4');
    if extras.binary.is_empty() {
        out.push(kind);
    } else {
        out.push(kind + 3);
        out.extend_from_slice(extras.binary.len().to_string().as_bytes());
        out.push(b'-');
    }
}

/// Writes the arguments `data` stands for: itself, or the items of its array when they are
/// several (none when the array is empty); each after a comma when `after_event`.
fn push_args(out: &mut Vec<u8>, data: &RawValue, arity: Arity, after_event: bool) {
    let text = data.get();
    let items = match arity {
        Arity::One => None,
        // Serialised by wsgate, compact; anything but an array is one argument still.
        Arity::Several => text.trim().strip_prefix('[').and_then(|t| t.strip_suffix(']')),
    };
    let items = match items {
        Some(items) => items.trim(),
        None => text,
    };
    if items.is_empty() {
        return;
    }
    if after_event {
        out.push(b',');
    }
    out.extend_from_slice(items.as_bytes());
}

/// A root-namespace frame (`4<type>[<n>-]…`) rewritten for a namespace whose prefix
/// (`/chat,`) is given; the same bytes for the root namespace (empty prefix).
pub(crate) fn for_namespace(frame: Bytes, prefix: &str) -> Bytes {
    if prefix.is_empty() {
        return frame;
    }
    // After the type, and after the attachment count of a binary packet.
    let at = match frame.get(1) {
        Some(b'5' | b'6') => frame.iter().position(|b| *b == b'-').map_or(2, |dash| dash + 1),
        _ => 2,
    };
    let mut out = Vec::with_capacity(frame.len() + prefix.len());
    out.extend_from_slice(&frame[..at]);
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(&frame[at..]);
    Bytes::from(out)
}

/// An acknowledgement (`43[/ns,]id[args]`), an `exception` event
/// (`42[/ns,]["exception",data]`), or a request of the server's (`42[/ns,]id["event",args]`);
/// with binary attachments, `46<n>-…` and `45<n>-…`.
pub(crate) fn encode_direct(direct: &Direct, prefix: &str) -> Bytes {
    let extras = direct.extras();
    let (Direct::Ack { data, .. } | Direct::Exception { data, .. } | Direct::Request { data, .. }) =
        direct;
    let mut out = Vec::with_capacity(32 + prefix.len() + data.get().len());
    match direct {
        Direct::Ack { id, .. } => {
            packet_type(&mut out, b'3', extras);
            out.extend_from_slice(prefix.as_bytes());
            match id {
                AckId::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
                // Socket.IO ack ids are numbers; a text id cannot come from this transport.
                AckId::Text(_) => {}
            }
            out.push(b'[');
            push_args(&mut out, data, extras.arity, false);
        }
        Direct::Request { id, event, .. } => {
            packet_type(&mut out, b'2', extras);
            out.extend_from_slice(prefix.as_bytes());
            out.extend_from_slice(id.to_string().as_bytes());
            out.push(b'[');
            push_json_str(&mut out, event.as_str());
            push_args(&mut out, data, extras.arity, true);
        }
        Direct::Exception { .. } => {
            out.extend_from_slice(b"42");
            out.extend_from_slice(prefix.as_bytes());
            out.extend_from_slice(b"[\"exception\",");
            out.extend_from_slice(data.get().as_bytes());
        }
    }
    out.push(b']');
    Bytes::from(out)
}

/// `40[/ns,]{"sid":…}`: the namespace connection is open.
pub(crate) fn connected(prefix: &str, sid: &str, pid: Option<&str>) -> String {
    match pid {
        // The session id is hex made by the server: nothing to escape.
        Some(pid) => format!("40{prefix}{{\"sid\":\"{sid}\",\"pid\":\"{pid}\"}}"),
        None => format!("40{prefix}{{\"sid\":\"{sid}\"}}"),
    }
}

/// `44[/ns,]{"message":…}`: the namespace connection is refused (the client's `connect_error`).
pub(crate) fn refused(prefix: &str, message: &str) -> String {
    // A string always serialises.
    let message = serde_json::to_string(message).unwrap_or_default();
    format!("44{prefix}{{\"message\":{message}}}")
}

/// `41[/ns,]`: the server ends the namespace connection.
pub(crate) fn disconnect(prefix: &str) -> String {
    format!("41{prefix}")
}

/// The prefix a namespace's packets carry: empty for `/`, `/chat,` otherwise.
pub(crate) fn prefix(ns: &str) -> String {
    if ns == "/" { String::new() } else { format!("{ns},") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_are_read_with_namespace_ack_and_attachments() {
        assert_eq!(parse("0").unwrap(), Packet::Connect { ns: "/", auth: None });
        assert_eq!(
            parse(r#"0/chat,{"token":"t"}"#).unwrap(),
            Packet::Connect { ns: "/chat", auth: Some(r#"{"token":"t"}"#) }
        );
        assert_eq!(parse("1/chat,").unwrap(), Packet::Disconnect { ns: "/chat" });
        assert_eq!(parse("1").unwrap(), Packet::Disconnect { ns: "/" });
        assert_eq!(
            parse(r#"2["echo","hi"]"#).unwrap(),
            Packet::Event { ns: "/", ack: None, attachments: 0, body: r#"["echo","hi"]"# }
        );
        assert_eq!(
            parse(r#"2/chat,12["echo"]"#).unwrap(),
            Packet::Event { ns: "/chat", ack: Some(12), attachments: 0, body: r#"["echo"]"# }
        );
        assert_eq!(
            parse(r#"52-/chat,3["up",{"_placeholder":true,"num":0}]"#).unwrap(),
            Packet::Event {
                ns: "/chat",
                ack: Some(3),
                attachments: 2,
                body: r#"["up",{"_placeholder":true,"num":0}]"#
            }
        );
        assert_eq!(
            parse("3/chat,4[1]").unwrap(),
            Packet::Ack { ns: "/chat", id: Some(4), attachments: 0, body: "[1]" }
        );
    }

    #[test]
    fn malformed_packets_are_explained() {
        for (text, error) in [
            ("", "empty Socket.IO packet"),
            ("2", "event without data"),
            ("21", "event without data"),
            ("5[]", "binary packet without its attachment count"),
            ("5x-[]", "bad attachment count"),
            ("5999999999-[]", "too many binary attachments"),
            ("299999999999999999999[\"x\"]", "ack id out of range"),
            ("4", "unknown Socket.IO packet type"),
            ("9", "unknown Socket.IO packet type"),
            ("x", "unknown Socket.IO packet type"),
        ] {
            assert_eq!(parse(text), Err(error), "{text:?}");
        }
    }

    fn event(name: &str, data: &RawValue) -> Bytes {
        EventFrames::encode_event(&Emission::new(name.into(), data.to_owned()))
    }

    #[test]
    fn several_arguments_are_spread() {
        let emission = wsgate::adapter::Emission::args("room_joined", &["/", "r", "7"]).unwrap();
        assert_eq!(&emission.encoded::<EventFrames>()[..], br#"42["room_joined","/","r","7"]"#);
        let none: [u8; 0] = [];
        let emission = wsgate::adapter::Emission::args("ping", &none).unwrap();
        assert_eq!(&emission.encoded::<EventFrames>()[..], br#"42["ping"]"#);
    }

    #[test]
    fn frames_for_events_acks_exceptions_and_connections() {
        let data = RawValue::from_string(r#"{"a":1}"#.into()).unwrap();
        let frame = event("say \"hi\"", &data);
        assert_eq!(frame, r#"42["say \"hi\"",{"a":1}]"#);
        assert_eq!(for_namespace(frame.clone(), ""), frame);
        assert_eq!(for_namespace(frame, "/chat,"), r#"42/chat,["say \"hi\"",{"a":1}]"#);
        let ack =
            Direct::Ack { id: AckId::Number(7), data: data.clone(), extras: Extras::default() };
        assert_eq!(encode_direct(&ack, ""), r#"437[{"a":1}]"#);
        assert_eq!(encode_direct(&ack, "/chat,"), r#"43/chat,7[{"a":1}]"#);
        let exception = Direct::Exception { id: None, data };
        assert_eq!(encode_direct(&exception, ""), r#"42["exception",{"a":1}]"#);
        assert_eq!(connected("", "12", None), r#"40{"sid":"12"}"#);
        assert_eq!(connected("/a,", "12", Some("f0")), r#"40/a,{"sid":"12","pid":"f0"}"#);
        assert_eq!(refused("/chat,", "Invalid \"ns\""), r#"44/chat,{"message":"Invalid \"ns\""}"#);
        assert_eq!(disconnect("/chat,"), "41/chat,");
        assert_eq!(prefix("/"), "");
        assert_eq!(prefix("/chat"), "/chat,");
    }

    #[test]
    fn several_arguments_are_spread_and_attachments_announced() {
        let (data, extras) =
            wsgate::adapter::to_args(&wsgate::Args((1, "2", serde_json::json!({"3": [true]}))))
                .unwrap();
        let e = Emission::with_extras("message-back".into(), data, extras);
        assert_eq!(EventFrames::encode_event(&e), r#"42["message-back",1,"2",{"3":[true]}]"#);

        let two = (Bytes::from_static(&[1, 2, 3]), Bytes::from_static(&[4, 5, 6]));
        let (data, extras) = wsgate::adapter::to_args(&wsgate::Args(two)).unwrap();
        let e = Emission::with_extras("message-back".into(), data.clone(), extras.clone());
        let frame = EventFrames::encode_event(&e);
        let placeholders = r#"{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}"#;
        assert_eq!(frame, format!(r#"452-["message-back",{placeholders}]"#));
        assert_eq!(
            for_namespace(frame, "/custom,"),
            format!(r#"452-/custom,["message-back",{placeholders}]"#)
        );

        let ack =
            Direct::Ack { id: AckId::Number(789), data: data.clone(), extras: extras.clone() };
        assert_eq!(encode_direct(&ack, ""), format!("462-789[{placeholders}]"));
        assert_eq!(encode_direct(&ack, "/a,"), format!("462-/a,789[{placeholders}]"));
        let request = Direct::Request { id: 4, event: "q".into(), data, extras };
        assert_eq!(encode_direct(&request, ""), format!(r#"452-4["q",{placeholders}]"#));

        // No arguments at all, and `Args` of something that is not a list: one argument.
        let (data, extras) = wsgate::adapter::to_args(&wsgate::Args(())).unwrap();
        assert_eq!(data.get(), "null");
        let e = Emission::with_extras("e".into(), data, extras);
        assert_eq!(EventFrames::encode_event(&e), r#"42["e",null]"#);
        let (data, extras) = wsgate::adapter::to_args(&wsgate::Args(Vec::<u8>::new())).unwrap();
        let ack = Direct::Ack { id: AckId::Number(1), data, extras };
        assert_eq!(encode_direct(&ack, ""), "431[]");
    }
}
