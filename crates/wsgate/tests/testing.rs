//! `wsgate::testing::TestClient` against a gateway with middleware, acks, exceptions, rooms and
//! hooks.
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use wsgate::testing::{Received, TestClient};
use wsgate::{
    AckId, App, ConnectMiddleware, Connection, Data, Ext, Handshake, Refusal, Server, WsException,
    WsResponse, gateway,
};

#[derive(Clone, Debug, PartialEq)]
struct User(String);

/// Reads the user from the query, the auth payload or a header, and the peer's address.
struct Who;

impl ConnectMiddleware for Who {
    async fn handle(&self, hs: &mut Handshake) -> Result<(), Refusal> {
        let user = hs
            .query_param("user")
            .map(|u| u.into_owned())
            .or_else(|| hs.auth.as_ref().and_then(|a| a["user"].as_str()).map(str::to_owned))
            .or_else(|| hs.header("x-user").map(str::to_owned))
            .ok_or_else(|| Refusal::unauthorized("Who are you?"))?;
        let user = match hs.peer {
            Some(peer) => format!("{user}@{}", peer.ip()),
            None => user,
        };
        hs.extensions.insert(User(user));
        Ok(())
    }
}

struct Chat {
    gone: Arc<AtomicUsize>,
}

#[gateway]
impl Chat {
    #[subscribe_message("whoami")]
    async fn whoami(&self, Ext(user): Ext<User>) -> WsResponse<String> {
        WsResponse::new("whoami", user.0)
    }

    #[subscribe_message("join")]
    async fn join(&self, conn: Connection, Data(room): Data<String>) -> Result<bool, WsException> {
        conn.join(room)?;
        Ok(true)
    }

    #[subscribe_message("say")]
    async fn say(&self, server: Server, Data(text): Data<String>) -> Result<(), WsException> {
        if text.is_empty() {
            return Err(WsException::new("Say something."));
        }
        server.to("lobby").emit("said", &text).map_err(|e| WsException::new(e.to_string()))?;
        Ok(())
    }

    #[on_disconnect]
    async fn left(&self, _conn: &Connection) {
        self.gone.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_test_client_connects_sends_and_receives_in_memory() {
    let gone = Arc::new(AtomicUsize::new(0));
    let app =
        App::builder().middleware(Who).gateway(Chat { gone: gone.clone() }).build().await.unwrap();

    let refused = TestClient::builder(&app).connect().await.unwrap_err();
    assert_eq!(refused.message, "Who are you?");

    let mut ann = TestClient::builder(&app).query("user=ann").connect().await.unwrap();
    let mut bob = TestClient::builder(&app).auth(json!({ "user": "bob" })).connect().await.unwrap();
    let mut cat = TestClient::builder(&app)
        .header("x-user", "cat")
        .peer("10.0.0.7:5000".parse().unwrap())
        .connect()
        .await
        .unwrap();

    ann.emit("whoami", Value::Null).await;
    assert_eq!(ann.next().await, Some(Received::event("whoami", json!("ann"))));
    cat.emit("whoami", Value::Null).await;
    assert_eq!(cat.event("whoami").await, Some(json!("cat@10.0.0.7")));

    assert_eq!(ann.request("join", "lobby").await, Ok(json!(true)));
    assert_eq!(bob.request("join", "lobby").await, Ok(json!(true)));
    let error = bob.request("say", "").await.unwrap_err();
    assert_eq!(error["message"], "Say something.");
    assert_eq!(error["cause"], json!({ "pattern": "say", "data": "" }));

    bob.emit("say", "hello").await;
    assert_eq!(ann.event("said").await, Some(json!("hello")));
    assert_eq!(bob.event("said").await, Some(json!("hello")));
    assert!(
        cat.next_within(std::time::Duration::from_millis(50)).await.is_none(),
        "not in the room"
    );

    bob.emit("unknown", 1).await;
    assert!(matches!(bob.drain().as_slice(), [Received::Exception { id: None, .. }]));

    assert_eq!(ann.connection().rooms(), ["lobby".into()]);
    ann.disconnect().await;
    assert_eq!(gone.load(Ordering::SeqCst), 1, "on_disconnect ran");
    assert_eq!(app.server().room_members(&"/".into(), &"lobby".into()), [bob.connection().id()]);
}

#[tokio::test]
async fn a_test_client_may_choose_its_ack_ids() {
    let app = App::builder()
        .middleware(Who)
        .gateway(Chat { gone: Arc::default() })
        .build()
        .await
        .unwrap();
    let mut ann = TestClient::builder(&app).query("user=ann").connect().await.unwrap();

    ann.emit_with_ack_id("join", "lobby", AckId::Text("j".into())).await;
    assert_eq!(
        ann.next().await,
        Some(Received::Ack { id: AckId::Text("j".into()), data: json!(true) })
    );
    ann.emit_with_ack_id("say", "", AckId::Number(7)).await;
    let Some(Received::Exception { id, data }) = ann.next().await else { panic!("an exception") };
    assert_eq!(id, Some(AckId::Number(7)));
    assert_eq!(data["message"], "Say something.");

    // A handler without a value answers nothing, even when asked for an ack.
    ann.emit_with_ack_id("say", "hello", AckId::Number(8)).await;
    assert_eq!(ann.drain(), [Received::event("said", json!("hello"))], "the room's push only");

    // `request` numbers its own ids and still finds its answer.
    assert_eq!(ann.request("join", "hall").await, Ok(json!(true)));
    assert!(ann.drain().is_empty());
}
