//! Any text frame: decoding never panics, a refusal always says why, and what the codec
//! writes back (the event re-encoded, an ack, an exception) is valid JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;
use wsgate::adapter::{Direct, Emission, Inbound, WireFormat};
use wsgate_ws::codec::{Decoded, JsonFrames, decode, encode_direct};

fn valid_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<IgnoredAny>(bytes).is_ok()
}

fn message_checks(message: &Inbound) {
    assert!(!message.event.as_str().is_empty(), "an event has a name");
    assert!(valid_json(message.data.get().as_bytes()), "the data is JSON");
    let emission = Emission::new(message.event.clone(), message.data.clone());
    assert!(valid_json(&JsonFrames::encode_event(&emission)));
    if let Some(id) = message.ack.clone() {
        let ack = Direct::Ack { id, data: message.data.clone(), extras: Default::default() };
        assert!(valid_json(&encode_direct(&ack)));
    }
}

fuzz_target!(|data: &[u8]| {
    // WebSocket text frames are UTF-8 (tungstenite refuses others before the codec).
    let Ok(text) = std::str::from_utf8(data) else { return };
    match decode(text) {
        Decoded::Message(message) => message_checks(&message),
        // Its binary frames are to come; the message itself reads as any other.
        Decoded::Binary { message, attachments } => {
            assert!((1..=wsgate_ws::codec::MAX_ATTACHMENTS).contains(&attachments));
            message_checks(&message);
        }
        Decoded::Invalid { message, ack } => {
            assert!(!message.is_empty(), "a refusal says why");
            let data =
                wsgate::adapter::to_payload(&serde_json::json!({ "status": "error", "message": message }))
                    .expect("an exception's data serialises");
            assert!(valid_json(&encode_direct(&Direct::Exception { id: ack, data })));
        }
        // An answer to a request of the server's: its data is JSON, and so is a request
        // carrying it.
        Decoded::Answer { id, data } => {
            assert!(valid_json(data.get().as_bytes()), "the answer is JSON");
            let request =
                Direct::Request { id, event: "question".into(), data, extras: Default::default() };
            assert!(valid_json(&encode_direct(&request)));
        }
    }
});
