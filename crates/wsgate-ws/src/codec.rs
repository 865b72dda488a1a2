//! JSON frames: decoding both inbound formats and encoding events, acks and exceptions.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use wsgate::adapter::{Arity, Direct, Emission, Inbound, WireFormat, json_str_len, push_json_str};
use wsgate::{AckId, EventName};

/// The most binary attachments one message may announce.
pub const MAX_ATTACHMENTS: usize = 64;

/// The plain WebSocket wire format: `{"event":E,"data":D}`; with binary attachments,
/// `{"event":E,"data":D,"attachments":N}` and N binary frames after it, which the
/// placeholders `{"_placeholder":true,"num":i}` in `D` stand for. Several arguments are the
/// array `D`.
#[derive(Debug, Clone, Copy)]
pub struct JsonFrames;

impl WireFormat for JsonFrames {
    /// Without the offset: the chapter's frames, for clients that did not ask for a session.
    fn encode_event(emission: &Emission) -> Bytes {
        encode_event(emission.event(), emission.data(), attachments(emission), None)
    }

    fn write_event(emission: &Emission, out: &mut Vec<u8>) {
        write_event(out, emission.event(), emission.data(), attachments(emission), None);
    }
}

fn attachments(emission: &Emission) -> usize {
    emission.extras().binary.len()
}

/// The frames of a plain WebSocket session (`session=new`): an event recorded for recovery
/// carries its offset, `{"event":E,"data":D,"offset":"O"}`.
#[derive(Debug, Clone, Copy)]
pub struct SessionFrames;

impl WireFormat for SessionFrames {
    fn encode_event(emission: &Emission) -> Bytes {
        encode_event(emission.event(), emission.data(), attachments(emission), emission.offset())
    }

    fn write_event(emission: &Emission, out: &mut Vec<u8>) {
        let offset = emission.offset();
        write_event(out, emission.event(), emission.data(), attachments(emission), offset);
    }
}

/// An event frame: `{"event":E,"data":D}`, with `"attachments":N` when binary frames follow,
/// and `"offset":O` for an event of a recovery session.
pub fn encode_event(
    event: &EventName,
    data: &RawValue,
    attachments: usize,
    offset: Option<&str>,
) -> Bytes {
    // The exact size: a frame that fills its buffer becomes `Bytes` without an allocation of
    // its own.
    let size = 18
        + json_str_len(event.as_str())
        + data.get().len()
        + attachments_len(attachments)
        + offset.map_or(0, |o| 10 + json_str_len(o));
    let mut out = Vec::with_capacity(size);
    write_event(&mut out, event, data, attachments, offset);
    debug_assert_eq!(out.len(), size, "the frame's size was measured");
    Bytes::from(out)
}

/// [`encode_event`]'s frame, written at the end of `out`.
pub fn write_event(
    out: &mut Vec<u8>,
    event: &EventName,
    data: &RawValue,
    attachments: usize,
    offset: Option<&str>,
) {
    out.extend_from_slice(b"{\"event\":");
    push_json_str(out, event.as_str());
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data.get().as_bytes());
    push_attachments(out, attachments);
    if let Some(offset) = offset {
        out.extend_from_slice(b",\"offset\":");
        push_json_str(out, offset);
    }
    out.push(b'}');
}

/// The first frame of a plain WebSocket session: `{"event":"session","data":{"id":S,
/// "recovered":R}}`.
pub fn encode_session(id: &str, recovered: bool) -> Bytes {
    let mut out = Vec::with_capacity(64 + id.len());
    out.extend_from_slice(b"{\"event\":\"session\",\"data\":{\"id\":");
    push_json_str(&mut out, id);
    out.extend_from_slice(if recovered {
        b",\"recovered\":true}}"
    } else {
        b",\"recovered\":false}}"
    });
    Bytes::from(out)
}

/// The length of [`push_attachments`]'s text.
fn attachments_len(attachments: usize) -> usize {
    if attachments == 0 { 0 } else { 15 + attachments.ilog10() as usize + 1 }
}

/// `,"attachments":N` when there are any.
fn push_attachments(out: &mut Vec<u8>, attachments: usize) {
    if attachments > 0 {
        out.extend_from_slice(b",\"attachments\":");
        out.extend_from_slice(attachments.to_string().as_bytes());
    }
}

/// Encodes an ack (`{"event":"ack","id":…,"data":…}`) or an exception
/// (`{"event":"exception","id":…,"data":…}`, `id` only when the message had one); with
/// binary attachments, `"attachments":N` after `data`.
pub fn encode_direct(direct: &Direct) -> Bytes {
    let attachments = direct.extras().binary.len();
    let (event, id, data) = match direct {
        Direct::Ack { id, data, .. } => ("ack", Some(id), data),
        Direct::Exception { id, data } => ("exception", id.as_ref(), data),
        Direct::Request { id, event, data, .. } => {
            return encode_request(*id, event, data, attachments);
        }
    };
    let mut out = Vec::with_capacity(48 + data.get().len());
    out.extend_from_slice(b"{\"event\":\"");
    out.extend_from_slice(event.as_bytes());
    out.push(b'"');
    if let Some(id) = id {
        out.extend_from_slice(b",\"id\":");
        match id {
            AckId::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
            AckId::Text(t) => push_json_str(&mut out, t),
        }
    }
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data.get().as_bytes());
    push_attachments(&mut out, attachments);
    out.push(b'}');
    Bytes::from(out)
}

/// A request of the server's: `{"event":E,"id":N,"data":D}`; the client answers
/// `{"event":"ack","id":N,"data":…}`.
fn encode_request(id: u64, event: &EventName, data: &RawValue, attachments: usize) -> Bytes {
    let mut out = Vec::with_capacity(40 + event.as_str().len() + data.get().len());
    out.extend_from_slice(b"{\"event\":");
    push_json_str(&mut out, event.as_str());
    out.extend_from_slice(b",\"id\":");
    out.extend_from_slice(id.to_string().as_bytes());
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data.get().as_bytes());
    push_attachments(&mut out, attachments);
    out.push(b'}');
    Bytes::from(out)
}

/// What a text frame decoded to.
#[derive(Debug)]
pub enum Decoded {
    /// A message for the router.
    Message(Inbound),
    /// A message whose binary attachments follow as the next `attachments` binary frames
    /// (`"attachments":N`, 1 to [`MAX_ATTACHMENTS`]).
    Binary {
        /// The message, its attachments still to come.
        message: Inbound,
        /// How many binary frames follow.
        attachments: usize,
    },
    /// The client's answer to the server's request `id`: `{"event":"ack","id":N,"data":…}`.
    Answer {
        /// The request's id.
        id: u64,
        /// The answer.
        data: Box<RawValue>,
    },
    /// A frame that is not a message; the client gets an `exception` with this text.
    Invalid {
        /// What was wrong, for the client.
        message: String,
        /// The frame's ack id, if it could be read.
        ack: Option<AckId>,
    },
}

fn invalid(message: impl Into<String>, ack: Option<AckId>) -> Decoded {
    Decoded::Invalid { message: message.into(), ack }
}

/// Decodes a text frame in either format:
/// - Nest.js: `{"event":"showComment","data":{…},"id":1}`;
/// - chapter: `{"type":"showComment","entryId":2,"commentId":1}`, where every field but `type`
///   is the data.
///
/// In both, an `"id"` (number or string) asks for an acknowledgement.
pub fn decode(text: &str) -> Decoded {
    decode_usual(text).unwrap_or_else(|| decode_fields(text))
}

/// [`decode`] of any text: its top-level fields read first, then looked up.
fn decode_fields(text: &str) -> Decoded {
    let fields = match serde_json::from_str::<Fields<'_>>(text) {
        Ok(Fields(Some(fields))) => fields,
        Ok(Fields(None)) => return invalid(NOT_AN_OBJECT, None),
        Err(e) => {
            return invalid(
                format!("Invalid JSON: {}", wsgate::adapter::json_error_message(&e)),
                None,
            );
        }
    };
    let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v);

    let ack = match field("id").map(ack_id) {
        None | Some(Ok(None)) => None,
        Some(Ok(Some(id))) => Some(id),
        Some(Err(())) => return invalid("Invalid id: expected a number or a string.", None),
    };
    let (event, chapter) = match (field("event"), field("type")) {
        (Some(event), _) => (event, false),
        (None, Some(kind)) => (kind, true),
        (None, None) => return invalid(NOT_AN_OBJECT, ack),
    };
    let Ok(Text(event)) = serde_json::from_str::<Text<'_>>(event.get()) else {
        let name = if chapter { "type" } else { "event" };
        return invalid(format!("Invalid message: \"{name}\" must be a string."), ack);
    };
    if event.is_empty() {
        return invalid("Invalid message: the event name is empty.", ack);
    }
    // `ack` with a numeric id answers a request of the server's; it is no event of its own.
    if !chapter
        && event == "ack"
        && let Some(AckId::Number(id)) = &ack
    {
        let data = field("data").map_or_else(wsgate::adapter::null_payload, ToOwned::to_owned);
        return Decoded::Answer { id: *id, data };
    }

    let data = if chapter {
        let mut out = Vec::with_capacity(text.len());
        out.push(b'{');
        for (key, value) in fields.iter().filter(|(k, _)| k != "type") {
            if out.len() > 1 {
                out.push(b',');
            }
            push_json_str(&mut out, key);
            out.push(b':');
            out.extend_from_slice(value.get().as_bytes());
        }
        out.push(b'}');
        // Keys and values come from valid JSON text, so this is valid JSON.
        String::from_utf8(out)
            .map_err(|e| e.to_string())
            .and_then(|s| RawValue::from_string(s).map_err(|e| e.to_string()))
    } else {
        Ok(field("data").map_or_else(wsgate::adapter::null_payload, ToOwned::to_owned))
    };
    let attachments = match field("attachments").filter(|_| !chapter) {
        None => 0,
        Some(n) => match serde_json::from_str::<usize>(n.get()) {
            Ok(n) if n <= MAX_ATTACHMENTS => n,
            _ => {
                let message = format!(
                    "Invalid attachments: expected a number of binary frames up to {MAX_ATTACHMENTS}."
                );
                return invalid(message, ack);
            }
        },
    };
    match data {
        Ok(data) => {
            // Several arguments are an array `data`, as the server sends them.
            let several = !chapter && data.get().trim_start().starts_with('[');
            let mut inbound = Inbound::new(EventName::from(event.as_ref()), data);
            inbound.ack = ack;
            if several {
                inbound.arity = Arity::Several;
            }
            match attachments {
                0 => Decoded::Message(inbound),
                attachments => Decoded::Binary { message: inbound, attachments },
            }
        }
        Err(e) => invalid(format!("Invalid message: {e}"), ack),
    }
}

/// The usual frame, `{"event":"name","data":…}` exactly (no other field, no whitespace
/// between the fields, a name without escapes), read without building the list of fields:
/// what [`decode`] reads it to, or `None` for any other text, which [`decode`] reads in full.
fn decode_usual(text: &str) -> Option<Decoded> {
    let rest = text.strip_prefix("{\"event\":\"")?;
    let end = rest.bytes().position(|b| b == b'"' || b == b'\\' || b < 0x20)?;
    let (event, rest) = rest.split_at(end);
    let value = rest.strip_prefix("\",\"data\":")?.strip_suffix('}')?;
    if event.is_empty() {
        return None;
    }
    // The value is JSON on its own, and all of what is left: a `,"id":1` after it is not.
    let data = serde_json::from_str::<&RawValue>(value).ok()?;
    if data.get().len() != value.len() {
        return None;
    }
    let mut inbound = Inbound::new(EventName::from(event), data.to_owned());
    if value.starts_with('[') {
        inbound.arity = Arity::Several;
    }
    Some(Decoded::Message(inbound))
}

const NOT_AN_OBJECT: &str =
    "Invalid message: expected a JSON object with \"event\" and \"data\", or with \"type\".";

fn ack_id(raw: &RawValue) -> Result<Option<AckId>, ()> {
    match serde_json::from_str::<Option<AckId>>(raw.get()) {
        Ok(id) => Ok(id),
        Err(_) => Err(()),
    }
}

/// A JSON string borrowed from the frame's text, or owned when it had escapes to undo
/// (serde's own `Cow<str>` always copies).
struct Text<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Text(Cow::Borrowed(text)))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Text(Cow::Owned(text.to_owned())))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
        Ok(Text(Cow::Owned(text)))
    }
}

/// The top-level fields of a frame, in order, borrowed from its text; `None` if the frame is
/// JSON but not an object. In a `Vec`: a `SmallVec` of four would spare its allocation, but
/// its moves through serde's results cost more (`hot_path` decode 216 ns against 345).
struct Fields<'a>(Option<Vec<Field<'a>>>);

/// A key and its value, as JSON text.
type Field<'a> = (Cow<'a, str>, &'a RawValue);

impl<'de> de::Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldsVisitor)
    }
}

struct FieldsVisitor;

macro_rules! not_an_object {
    ($($name:ident: $ty:ty),*) => {
        $(fn $name<E: de::Error>(self, _: $ty) -> Result<Self::Value, E> { Ok(Fields(None)) })*
    };
}

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(4));
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            let value: &'de RawValue = map.next_value()?;
            fields.push((key, value));
        }
        Ok(Fields(Some(fields)))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(Fields(None))
    }

    not_an_object!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Fields(None))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::{Value, json};
    use wsgate::adapter::Emission;

    /// The usual frame's short way reads what the full one reads, and leaves it every other
    /// text: frames made of names, values and endings of every kind, both ways compared.
    #[test]
    fn the_usual_frame_reads_as_the_full_decoder_reads_it() {
        let names = ["echo", "", "a b", "é😀", "a\\\"b", "a\\nb", "tab\there", "ack", "\\u0041"];
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
            "1,\"id\":2",
            "1,\"id\":\"x\"",
            "1,\"attachments\":1",
            "\"}\"",
            "{}}",
            "",
        ];
        let ends = ["}", "} ", "}}", ",\"id\":1}", ""];
        let mut usual = 0;
        for name in names {
            for value in values {
                for end in ends {
                    let text = format!("{{\"event\":\"{name}\",\"data\":{value}{end}");
                    let full = format!("{:?}", decode_fields(&text));
                    match decode_usual(&text) {
                        Some(read) => {
                            usual += 1;
                            assert_eq!(format!("{read:?}"), full, "{text}");
                        }
                        None => assert_eq!(format!("{:?}", decode(&text)), full, "{text}"),
                    }
                }
            }
        }
        assert!(usual >= 40, "the short way read {usual} frames");
        for other in [r#"{"data":1,"event":"a"}"#, r#"{ "event":"a","data":1}"#, r#"{"type":"a"}"#]
        {
            assert!(decode_usual(other).is_none(), "{other}");
        }
    }

    fn message(text: &str) -> (String, Value, Option<AckId>) {
        match decode(text) {
            Decoded::Message(m) => {
                (m.event.to_string(), serde_json::from_str(m.data.get()).unwrap(), m.ack)
            }
            Decoded::Invalid { message, .. } => panic!("{text}: {message}"),
            Decoded::Answer { id, .. } => panic!("{text}: an answer to {id}"),
            Decoded::Binary { attachments, .. } => panic!("{text}: {attachments} attachments"),
        }
    }

    fn error(text: &str) -> String {
        match decode(text) {
            Decoded::Invalid { message, .. } => message,
            Decoded::Message(m) => panic!("{text} decoded to {m:?}"),
            Decoded::Answer { id, .. } => panic!("{text}: an answer to {id}"),
            Decoded::Binary { message, .. } => panic!("{text} decoded to {message:?}"),
        }
    }

    #[test]
    fn requests_of_the_server_and_their_answers() {
        let request = Direct::Request {
            id: 7,
            event: "question".into(),
            data: RawValue::from_string("\"6 × 7?\"".into()).unwrap(),
            extras: Default::default(),
        };
        assert_eq!(encode_direct(&request), r#"{"event":"question","id":7,"data":"6 × 7?"}"#);
        match decode(r#"{"event":"ack","id":7,"data":42}"#) {
            Decoded::Answer { id, data } => assert_eq!((id, data.get()), (7, "42")),
            other => panic!("{other:?}"),
        }
        // Without data: null. A text id or the chapter's format is a message, as before.
        assert!(matches!(decode(r#"{"event":"ack","id":8}"#), Decoded::Answer { id: 8, .. }));
        assert_eq!(message(r#"{"event":"ack","id":"x"}"#).0, "ack");
        assert_eq!(message(r#"{"type":"ack","id":9}"#).0, "ack");
    }

    #[test]
    fn nest_format() {
        let (event, data, ack) =
            message(r#"{"event":"showComment","data":{"entryId":2,"commentId":1}}"#);
        assert_eq!(event, "showComment");
        assert_eq!(data, json!({"entryId": 2, "commentId": 1}));
        assert_eq!(ack, None);
        assert_eq!(message(r#"{"event":"ping"}"#).1, Value::Null);
        assert_eq!(message(r#"{"data":[1],"id":7,"event":"x"}"#).2, Some(AckId::Number(7)));
    }

    #[test]
    fn escaped_names_and_keys_are_read_as_what_they_stand_for() {
        let (event, data, ack) =
            message(r#"{"ev\u0065nt":"say \"hi\"","d\u0061ta":[1],"\u0069d":7}"#);
        assert_eq!(event, "say \"hi\"");
        assert_eq!(data, json!([1]));
        assert_eq!(ack, Some(AckId::Number(7)));
        let (event, data, _) = message(r#"{"typ\u0065":"sh\u006fw","entr\u0079Id":2}"#);
        assert_eq!(event, "show");
        assert_eq!(data, json!({"entryId": 2}));
    }

    #[test]
    fn chapter_format() {
        let (event, data, _) = message(r#"{"type":"showComment","entryId":2,"commentId":1}"#);
        assert_eq!(event, "showComment");
        assert_eq!(data, json!({"entryId": 2, "commentId": 1}));
        let (_, data, ack) = message(r#"{"type":"indexEntry","id":"a1"}"#);
        assert_eq!(data, json!({"id": "a1"}));
        assert_eq!(ack, Some(AckId::Text("a1".into())));
        assert_eq!(message(r#"{"type":"t\u0041","k\"ey":"v"}"#).1, json!({"k\"ey": "v"}));
        assert_eq!(message(r#"{"type":"x"}"#).1, json!({}));
    }

    #[test]
    fn bad_frames_are_explained() {
        assert_eq!(error("hello"), "Invalid JSON: expected value");
        assert_eq!(error("{\"event\":"), "Invalid JSON: EOF while parsing a value");
        assert!(error("[1,2]").starts_with("Invalid message: expected a JSON object"));
        assert!(error("42").starts_with("Invalid message: expected a JSON object"));
        assert!(error(r#"{"data":1}"#).starts_with("Invalid message: expected a JSON object"));
        assert_eq!(error(r#"{"event":5}"#), "Invalid message: \"event\" must be a string.");
        assert_eq!(error(r#"{"type":null}"#), "Invalid message: \"type\" must be a string.");
        assert_eq!(error(r#"{"event":""}"#), "Invalid message: the event name is empty.");
        assert_eq!(error(r#"{"event":"x","id":{}}"#), "Invalid id: expected a number or a string.");
        match decode(r#"{"id":3}"#) {
            Decoded::Invalid { ack, .. } => assert_eq!(ack, Some(AckId::Number(3))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn encodes_events_acks_and_exceptions() {
        let e = Emission::serialize("say \"hi\"", &json!({"a": [1]})).unwrap();
        assert_eq!(e.encoded::<JsonFrames>(), r#"{"event":"say \"hi\"","data":{"a":[1]}}"#);
        let data = wsgate::adapter::to_payload(&json!(5)).unwrap();
        let ack = Direct::Ack { id: AckId::Number(3), data, extras: Default::default() };
        assert_eq!(encode_direct(&ack), r#"{"event":"ack","id":3,"data":5}"#);
        let data = wsgate::adapter::to_payload(&json!({"status": "error"})).unwrap();
        let exc = Direct::Exception { id: Some(AckId::Text("q".into())), data };
        assert_eq!(
            encode_direct(&exc),
            r#"{"event":"exception","id":"q","data":{"status":"error"}}"#
        );
        let data = wsgate::adapter::to_payload(&json!(null)).unwrap();
        assert_eq!(
            encode_direct(&Direct::Exception { id: None, data }),
            r#"{"event":"exception","data":null}"#
        );
    }

    #[test]
    fn several_arguments_are_an_array_and_attachments_are_counted() {
        let args = wsgate::Args((1, bytes::Bytes::from_static(b"\x00\xff")));
        let e = Emission::serialize("file", &args).unwrap();
        assert_eq!(
            e.encoded::<JsonFrames>(),
            r#"{"event":"file","data":[1,{"_placeholder":true,"num":0}],"attachments":1}"#
        );
        assert_eq!(e.extras().binary, [bytes::Bytes::from_static(b"\x00\xff")]);
        let (data, extras) = wsgate::adapter::to_args(&args).unwrap();
        let ack = Direct::Ack { id: AckId::Number(3), data, extras };
        assert_eq!(
            encode_direct(&ack),
            r#"{"event":"ack","id":3,"data":[1,{"_placeholder":true,"num":0}],"attachments":1}"#
        );

        match decode(r#"{"event":"up","data":[{"_placeholder":true,"num":0}],"attachments":2}"#) {
            Decoded::Binary { message, attachments } => {
                assert_eq!((message.event.as_str(), attachments), ("up", 2));
                assert_eq!(message.arity, Arity::Several);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(message(r#"{"event":"up","data":[1],"attachments":0}"#).1, json!([1]));
        for bad in ["-1", "65", "\"2\"", "null"] {
            let frame = format!(r#"{{"event":"up","attachments":{bad}}}"#);
            assert_eq!(
                error(&frame),
                "Invalid attachments: expected a number of binary frames up to 64.",
                "{frame}"
            );
        }
        // In the chapter's format, every field is data.
        assert_eq!(message(r#"{"type":"t","attachments":1}"#).1, json!({"attachments": 1}));
    }
}
