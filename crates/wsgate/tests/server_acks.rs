//! Acks from the server: one connection asked for an answer, with a timeout; a room asked, the
//! answers gathered; late answers, disconnects.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{Value, json};
use wsgate::testing::{Received, TestClient};
use wsgate::{AckError, App, Connection, Server, gateway};

struct Quiz;

#[gateway]
impl Quiz {
    /// Asks the sender a question and acks with its answer (or why there is none).
    #[subscribe_message("quiz")]
    async fn quiz(&self, conn: Connection) -> Value {
        match conn.emit_with_ack("question", "6 × 7?", Duration::from_millis(300)).await {
            Ok(answer) => json!({ "answer": answer }),
            Err(e) => json!({ "error": e.to_string() }),
        }
    }

    #[subscribe_message("join")]
    async fn join(&self, conn: Connection) -> Result<(), wsgate::WsError> {
        Ok(conn.join("class")?)
    }

    /// Asks the class, everyone but the sender, and acks with the answers by connection id.
    #[subscribe_message("poll")]
    async fn poll(&self, conn: Connection, server: Server) -> Value {
        let answers = server
            .to("class")
            .except(conn.id())
            .emit_with_ack("vote", "tea or coffee?", Duration::from_millis(300))
            .await;
        let mut all: Vec<Value> = answers
            .into_iter()
            .map(|(id, a)| {
                json!([id.0, a.map_err(|e| e.to_string()).unwrap_or_else(Value::String)])
            })
            .collect();
        all.sort_by_key(|v| v[0].as_u64());
        json!(all)
    }
}

async fn next_request(client: &mut TestClient) -> (u64, String, Value) {
    loop {
        if let Received::Request { id, event, data } = client.next().await.expect("a request") {
            return (id, event, data);
        }
    }
}

#[tokio::test]
async fn a_connection_answers_and_a_silent_one_times_out() {
    let app = App::builder().gateway(Quiz).build().await.unwrap();
    let mut client = TestClient::builder(&app).connect().await.unwrap();
    let conn = client.connection().clone();

    // The handler waits for the answer; the test answers from beside it.
    let ask = tokio::spawn({
        let conn = conn.clone();
        async move { conn.emit_with_ack("question", "6 × 7?", Duration::from_secs(2)).await }
    });
    let (id, event, data) = next_request(&mut client).await;
    assert_eq!((event.as_str(), data), ("question", json!("6 × 7?")));
    assert!(client.answer(id, 42));
    assert_eq!(ask.await.unwrap(), Ok(json!(42)));
    assert!(!client.answer(id, 43), "answered once");

    // No answer: a timeout, and a late answer is dropped.
    let silent = conn.emit_with_ack("question", "again?", Duration::from_millis(50)).await;
    assert_eq!(silent, Err(AckError::Timeout));
    let (late, _, _) = next_request(&mut client).await;
    assert!(!client.answer(late, "too late"));

    // Through a handler: its ack carries the timeout.
    assert_eq!(
        client.request("quiz", ()).await,
        Ok(json!({ "error": "no answer within the time given" }))
    );
}

#[tokio::test]
async fn a_disconnect_ends_the_wait() {
    let app = App::builder().gateway(Quiz).build().await.unwrap();
    let client = TestClient::builder(&app).connect().await.unwrap();
    let conn = client.connection().clone();
    let ask = tokio::spawn(async move {
        conn.emit_with_ack("question", "still there?", Duration::from_secs(5)).await
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    client.disconnect().await;
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(2), ask).await.unwrap().unwrap(),
        Err(AckError::Closed)
    );
}

#[tokio::test]
async fn a_room_is_asked_and_its_answers_gathered() {
    let app = App::builder().gateway(Quiz).build().await.unwrap();
    let mut teacher = TestClient::builder(&app).connect().await.unwrap();
    let mut pupils = Vec::new();
    for _ in 0..3 {
        let mut pupil = TestClient::builder(&app).connect().await.unwrap();
        pupil.emit("join", ()).await;
        pupils.push(pupil);
    }
    teacher.emit("join", ()).await;
    let ids: Vec<u64> = pupils.iter().map(|p| p.connection().id().0).collect();

    let poll = tokio::spawn(async move { teacher.request("poll", ()).await });
    // Two answer, the third stays silent.
    for (n, pupil) in pupils.iter_mut().enumerate() {
        let (id, event, _) = next_request(pupil).await;
        assert_eq!(event, "vote");
        if n < 2 {
            assert!(pupil.answer(id, if n == 0 { "tea" } else { "coffee" }));
        }
    }
    let answers = poll.await.unwrap().unwrap();
    let mut expected = vec![
        json!([ids[0], "tea"]),
        json!([ids[1], "coffee"]),
        json!([ids[2], "no answer within the time given"]),
    ];
    expected.sort_by_key(|v| v[0].as_u64());
    assert_eq!(answers, json!(expected), "the sender is not asked");
}
