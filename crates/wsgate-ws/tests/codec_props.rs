//! Properties of the plain WebSocket codec over generated input: decoding never panics and
//! always says what is wrong, and what the encoders write decodes back to the same values.
#![allow(missing_docs, clippy::unwrap_used)]

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use wsgate::adapter::{Direct, Emission, WireFormat, to_payload};
use wsgate::{AckId, EventName};
use wsgate_ws::codec::{
    self, Decoded, JsonFrames, SessionFrames, decode, encode_direct, encode_session,
};

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn ack_id() -> impl Strategy<Value = Option<AckId>> {
    prop_oneof![
        Just(None),
        any::<u64>().prop_map(|n| Some(AckId::Number(n))),
        any::<String>().prop_map(|s| Some(AckId::Text(s.into()))),
    ]
}

fn id_json(id: &AckId) -> Value {
    match id {
        AckId::Number(n) => json!(n),
        AckId::Text(t) => json!(&**t),
    }
}

fn parse(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// `value` as it reads back from its own text: serde_json's default float parsing may differ
/// from the generated float in the last digit, on both sides alike.
fn reparse(value: &Value) -> Value {
    parse(value.to_string().as_bytes())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_text_decodes_to_a_message_or_a_reason(text in any::<String>()) {
        if let Decoded::Invalid { message, .. } = decode(&text) {
            prop_assert!(!message.is_empty());
        }
    }

    #[test]
    fn any_json_decodes_to_a_message_or_a_reason(value in json_value()) {
        match decode(&value.to_string()) {
            Decoded::Message(m) => prop_assert!(!m.event.as_str().is_empty()),
            Decoded::Invalid { message, .. } => prop_assert!(message.starts_with("Invalid")),
            // `{"event":"ack","id":N}`: an answer to a request of the server's.
            Decoded::Answer { .. } => prop_assert_eq!(&value["event"], "ack"),
            // `"attachments":N`: binary frames are to follow.
            Decoded::Binary { message, attachments } => {
                prop_assert!(!message.event.as_str().is_empty());
                prop_assert_eq!(&value["attachments"], attachments);
            }
        }
    }

    #[test]
    fn nest_frames_round_trip(event in ".+", data in json_value(), id in ack_id()) {
        // `ack` with a number id answers the server: not a message.
        prop_assume!(event != "ack" || !matches!(id, Some(AckId::Number(_))));
        let mut frame = json!({ "event": event, "data": data });
        if let Some(id) = &id {
            frame["id"] = id_json(id);
        }
        let Decoded::Message(m) = decode(&frame.to_string()) else {
            return Err(TestCaseError::fail(format!("{frame} did not decode")));
        };
        prop_assert_eq!(m.event.as_str(), event.as_str());
        // The data is passed on as the very text the client sent.
        prop_assert_eq!(m.data.get(), data.to_string());
        prop_assert_eq!(m.ack, id);
    }

    #[test]
    fn chapter_frames_carry_every_other_field_as_data(
        event in ".+",
        fields in prop::collection::btree_map("[a-zA-Z]{1,8}", json_value(), 0..6),
    ) {
        let mut fields: Map<String, Value> = fields.into_iter().collect();
        fields.remove("type");
        fields.remove("event");
        fields.remove("id");
        let mut frame = fields.clone();
        frame.insert("type".into(), json!(event));
        let Decoded::Message(m) = decode(&Value::Object(frame).to_string()) else {
            return Err(TestCaseError::fail("a chapter frame did not decode"));
        };
        prop_assert_eq!(m.event.as_str(), event.as_str());
        prop_assert_eq!(m.data.get(), Value::Object(fields).to_string());
    }

    #[test]
    fn encoded_events_acks_and_exceptions_are_the_json_they_stand_for(
        event in any::<String>(),
        data in json_value(),
        id in ack_id(),
    ) {
        let payload = to_payload(&data).unwrap();
        let emission = Emission::new(EventName::from(event.as_str()), payload.clone());
        let encoded = JsonFrames::encode_event(&emission);
        prop_assert_eq!(parse(&encoded), reparse(&json!({ "event": event, "data": data })));
        prop_assert_eq!(SessionFrames::encode_event(&emission), encoded, "no offset, none written");
        let encoded = codec::encode_event(&EventName::from(event.as_str()), &payload, 0, Some(&event));
        prop_assert_eq!(parse(&encoded), reparse(&json!({ "event": event, "data": data, "offset": event })));
        let encoded = encode_session(&event, id.is_some());
        prop_assert_eq!(parse(&encoded), reparse(&json!({ "event": "session", "data": { "id": event, "recovered": id.is_some() } })));

        if let Some(ack) = &id {
            let encoded = encode_direct(&Direct::Ack { id: ack.clone(), data: payload.clone(), extras: Default::default() });
            let expected = json!({ "event": "ack", "id": id_json(ack), "data": data });
            prop_assert_eq!(parse(&encoded), reparse(&expected));
        }
        let encoded = encode_direct(&Direct::Exception { id: id.clone(), data: payload });
        let mut expected = json!({ "event": "exception", "data": data });
        if let Some(ack) = &id {
            expected["id"] = id_json(ack);
        }
        prop_assert_eq!(parse(&encoded), reparse(&expected));
    }
}
