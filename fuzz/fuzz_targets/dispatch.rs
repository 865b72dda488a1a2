//! Any frame dispatched to a gateway with typed handlers, guards and validation, as the plain
//! WebSocket adapter does: no panic, no hang, and every message that asks for an ack gets
//! exactly one answer (its ack or an exception with its id).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::Value;
use wsgate::{AckId, App, AppConfig, Connection, Data, Ext, Handshake, Valid, WsException, WsResponse, gateway};
use wsgate::adapter::{Direct, Outbound};
use wsgate_ws::codec::{Decoded, decode};

#[derive(Clone)]
struct User(i64);

#[derive(Deserialize, validator::Validate)]
#[serde(rename_all = "camelCase")]
struct Page {
    #[validate(range(min = 1, max = 100))]
    limit: Option<i64>,
    #[validate(length(min = 1, max = 64))]
    #[serde(default)]
    title: String,
    entry_id: Option<i64>,
}

struct Fuzzed;

#[gateway]
impl Fuzzed {
    #[subscribe_message("number")]
    async fn number(&self, Data(n): Data<i64>) -> i64 {
        n.wrapping_mul(2)
    }

    #[subscribe_message("text")]
    async fn text(&self, Data(s): Data<String>) -> WsResponse<usize> {
        WsResponse::new("length", s.len())
    }

    #[subscribe_message("page")]
    async fn page(&self, Valid(p): Valid<Page>) -> Result<Value, WsException> {
        match p.entry_id {
            Some(id) if id <= 0 => Err(WsException::new("Invalid entry id.")),
            id => Ok(serde_json::json!({ "limit": p.limit, "title": p.title, "entryId": id })),
        }
    }

    #[subscribe_message("list")]
    async fn list(&self, Data(items): Data<Vec<u32>>) -> u64 {
        items.iter().map(|&i| u64::from(i)).sum()
    }

    #[subscribe_message("raw")]
    async fn raw(&self, Data(value): Data<Value>) -> Value {
        value
    }

    #[subscribe_message("me")]
    async fn me(&self, Ext(user): Ext<User>, conn: Connection) -> Result<i64, WsException> {
        conn.join(format!("user:{}", user.0))?;
        Ok(user.0)
    }

    #[subscribe_message("nothing")]
    async fn nothing(&self) {}
}

#[derive(Debug)]
enum Answer {
    Ack(AckId),
    Exception(Option<AckId>),
    Event,
}

fn drain(rx: &mut wsgate::adapter::OutboundRx) -> Vec<Answer> {
    let mut answers = Vec::new();
    while let Some(item) = rx.try_recv() {
        answers.push(match item {
            Outbound::Direct(direct) => match *direct {
                Direct::Ack { id, .. } => Answer::Ack(id),
                Direct::Exception { id, .. } => Answer::Exception(id),
                // The fuzzed gateway asks nothing of its clients.
                Direct::Request { .. } => panic!("a request nobody made"),
            },
            Outbound::Event(_) | Outbound::Events(_) => Answer::Event,
        });
    }
    answers
}

struct World {
    runtime: tokio::runtime::Runtime,
    app: App,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let config = AppConfig { rate_limit: None, ..AppConfig::default() };
        let app = runtime.block_on(App::builder().config(config).gateway(Fuzzed).build()).unwrap();
        World { runtime, app }
    })
}

fuzz_target!(|data: &[u8]| {
    let World { runtime, app } = world();
    runtime.block_on(async {
        let mut handshake = Handshake::new("/", "fuzz");
        handshake.extensions.insert(User(7));
        let (conn, mut rx) = app.handshake(handshake).await.unwrap().open().await;
        // Several frames per input, one per line, as a client sends them; each is answered
        // before the next, as a client waiting for its acks sees them.
        for line in data.split(|&b| b == b'\n') {
            let Ok(text) = std::str::from_utf8(line) else { continue };
            let (event, ack) = match decode(text) {
                Decoded::Message(message) => {
                    let seen = (message.event.as_str().to_owned(), message.ack.clone());
                    app.dispatch(&conn, message).await;
                    seen
                }
                // Its binary frames, made up: the placeholders are read against them.
                Decoded::Binary { mut message, attachments } => {
                    message.binary = (0..attachments).map(|i| vec![7u8; i].into()).collect();
                    let seen = (message.event.as_str().to_owned(), message.ack.clone());
                    app.dispatch(&conn, message).await;
                    seen
                }
                // An answer to a request nobody made is dropped, and nothing is sent.
                Decoded::Answer { id, data } => {
                    assert!(!app.answered(&conn, id, data), "no request was waiting");
                    assert!(drain(&mut rx).is_empty(), "an answer gets no answer");
                    continue;
                }
                Decoded::Invalid { message, ack } => {
                    app.reject(&conn, &message, ack.clone()).await;
                    let answers = drain(&mut rx);
                    assert!(
                        matches!(&answers[..], [Answer::Exception(id)] if *id == ack),
                        "an undecodable frame gets one exception with its id: {answers:?}"
                    );
                    continue;
                }
            };
            let answers = drain(&mut rx);
            assert!(answers.len() <= 1, "one answer at most per message: {answers:?}");
            for answer in &answers {
                match answer {
                    Answer::Ack(id) => {
                        assert_eq!(Some(id), ack.as_ref(), "an ack carries the message's id")
                    }
                    Answer::Exception(id) => {
                        assert_eq!(id, &ack, "an exception carries the message's id")
                    }
                    Answer::Event => assert_eq!(event, "text", "only `text` answers with an event"),
                }
            }
            match event.as_str() {
                // Always answered: its event, or an exception for data that is not a string.
                "text" => assert_eq!(answers.len(), 1, "{answers:?}"),
                // Answered only when it fails.
                "nothing" => {}
                _ if ack.is_some() => assert_eq!(answers.len(), 1, "asked for an ack: {answers:?}"),
                _ => {}
            }
        }
        app.disconnect(&conn).await;
        assert_eq!(app.server().connection_count(), 0);
    });
});
