//! The blog's gateways over plain WebSocket, on the same port as its REST API: a real server,
//! a real SQLite file and a real WebSocket client.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{JWT_SECRET, TestApp, spawn};
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use wsgate::{Claims, JwtKeys};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect(app: &TestApp, token: &str) -> Client {
    connect_async(app.ws_url(&format!("/?token={token}"))).await.expect("websocket upgrade").0
}

async fn send(ws: &mut Client, value: Value) {
    ws.send(Message::text(value.to_string())).await.expect("send");
}

async fn recv(ws: &mut Client) -> Value {
    common::recv_json(ws).await
}

/// Two users, an entry of the first and a comment of the second on it.
struct World {
    app: TestApp,
    alice: (String, Value),
    bob: (String, Value),
    entry_id: i64,
    comment: Value,
}

async fn world() -> World {
    let app = spawn().await;
    let alice = app.register("alice@example.com").await;
    let bob = app.register("bob@example.com").await;
    let entry = app.create_entry(&alice.0, "Gateways").await;
    let entry_id = entry["id"].as_i64().expect("entry id");
    let comment = app.create_comment(&bob.0, entry_id, "First!").await;
    World { app, alice, bob, entry_id, comment }
}

#[tokio::test]
async fn show_comment_and_index_comment_in_the_chapter_format() {
    let w = world().await;
    let mut ws = connect(&w.app, &w.alice.0).await;
    let comment_id = w.comment["id"].as_i64().expect("comment id");

    send(&mut ws, json!({ "type": "showComment", "entryId": w.entry_id, "commentId": comment_id }))
        .await;
    assert_eq!(recv(&mut ws).await, json!({ "event": "showComment", "data": w.comment }));

    send(&mut ws, json!({ "type": "indexComment", "entryId": w.entry_id })).await;
    assert_eq!(recv(&mut ws).await, json!({ "event": "indexComment", "data": [w.comment] }));

    // The Nest.js format and an ack id work the same way.
    send(
        &mut ws,
        json!({ "event": "showComment", "id": 3, "data": { "entryId": w.entry_id, "commentId": comment_id } }),
    )
    .await;
    assert_eq!(recv(&mut ws).await["data"]["body"], "First!");
}

#[tokio::test]
async fn missing_and_mistyped_fields_get_the_chapters_messages() {
    let w = world().await;
    let mut ws = connect(&w.app, &w.alice.0).await;
    let cases = [
        (json!({ "type": "showComment", "commentId": 1 }), "Missing entry id."),
        (json!({ "type": "showComment", "entryId": w.entry_id }), "Missing comment id."),
        (json!({ "type": "indexComment" }), "Missing entry id."),
        (
            json!({ "type": "showComment", "entryId": w.entry_id, "commentId": 999 }),
            "Comment not found.",
        ),
        // What is missing, as over REST: the entry, or the comment on it.
        (json!({ "type": "showComment", "entryId": 999, "commentId": 1 }), "Entry not found."),
        (json!({ "type": "indexComment", "entryId": 999 }), "Entry not found."),
        (
            json!({ "type": "indexComment", "entryId": "two" }),
            "Invalid entryId: invalid type: string \"two\", expected i64",
        ),
        (json!({ "type": "showUser" }), "Missing user id."),
        (json!({ "type": "showEntry", "entryId": -3 }), "Entry not found."),
        (json!({ "type": "subscribeEntry" }), "Missing entry id."),
        (json!({ "type": "subscribeEntry", "entryId": 999 }), "Entry not found."),
        (json!({ "type": "unsubscribeEntry" }), "Missing entry id."),
        (json!({ "type": "indexEntry", "limit": 101 }), "limit must be between 1 and 100."),
        (json!({ "type": "indexEntry", "offset": -1 }), "offset must be at least 0."),
    ];
    for (message, expected) in cases {
        send(&mut ws, message.clone()).await;
        let reply = recv(&mut ws).await;
        assert_eq!(reply["event"], "exception", "{message}");
        assert_eq!(reply["data"]["status"], "error");
        assert_eq!(reply["data"]["message"], expected, "{message}");
        let mut data = message.clone();
        let pattern = data.as_object_mut().and_then(|o| o.remove("type")).expect("type");
        assert_eq!(reply["data"]["cause"], json!({ "pattern": pattern, "data": data }));
    }
}

#[tokio::test]
async fn show_user_is_for_yourself_only() {
    let w = world().await;
    let mut ws = connect(&w.app, &w.alice.0).await;
    send(&mut ws, json!({ "type": "showUser", "userId": w.alice.1["id"] })).await;
    let me = recv(&mut ws).await;
    assert_eq!(me, json!({ "event": "showUser", "data": w.alice.1 }));
    assert!(me["data"].get("passwordHash").is_none());

    send(&mut ws, json!({ "type": "showUser", "userId": w.bob.1["id"] })).await;
    let other = recv(&mut ws).await;
    assert_eq!(other["event"], "exception");
    assert_eq!(other["data"]["message"], "Forbidden.");
}

#[tokio::test]
async fn comments_created_over_rest_reach_the_entrys_subscribers() {
    let w = world().await;
    let mut alice = connect(&w.app, &w.alice.0).await;
    let mut bob = connect(&w.app, &w.bob.0).await;
    send(
        &mut alice,
        json!({ "event": "subscribeEntry", "id": 1, "data": { "entryId": w.entry_id } }),
    )
    .await;
    assert_eq!(
        recv(&mut alice).await,
        json!({ "event": "ack", "id": 1, "data": { "entryId": w.entry_id, "subscribed": true } })
    );

    let comment = w.app.create_comment(&w.bob.0, w.entry_id, "Live!").await;
    assert_eq!(recv(&mut alice).await, json!({ "event": "commentCreated", "data": comment }));

    // Bob did not subscribe: his next message is the answer to his own request.
    send(&mut bob, json!({ "type": "indexComment", "entryId": w.entry_id })).await;
    assert_eq!(recv(&mut bob).await["event"], "indexComment");

    send(&mut alice, json!({ "type": "unsubscribeEntry", "entryId": w.entry_id, "id": 2 })).await;
    assert_eq!(recv(&mut alice).await["data"]["subscribed"], false);
    w.app.create_comment(&w.bob.0, w.entry_id, "Unheard").await;
    send(&mut alice, json!({ "type": "showUser", "userId": w.alice.1["id"] })).await;
    assert_eq!(recv(&mut alice).await["event"], "showUser", "no commentCreated after leaving");

    send(&mut alice, json!({ "type": "subscribeEntry", "entryId": 999 })).await;
    assert_eq!(recv(&mut alice).await["data"]["message"], "Entry not found.");
}

#[tokio::test]
async fn the_handshake_refuses_missing_bad_expired_and_unknown_tokens() {
    let w = world().await;
    let keys = JwtKeys::hs256(JWT_SECRET.as_bytes());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    let expired =
        keys.sign_claims(&Claims { sub: "1".into(), iat: now - 100, exp: now - 10 }).expect("sign");
    let unknown = keys.sign("4242", Duration::from_secs(60)).expect("sign");
    let forged = JwtKeys::hs256(b"somebody else's secret").sign("1", Duration::from_secs(60));
    let cases = [
        (String::new(), "Missing authentication token."),
        ("?token=garbage".to_owned(), "Invalid token."),
        (format!("?token={}", forged.expect("sign")), "Invalid token."),
        (format!("?token={expired}"), "Token expired."),
        (format!("?token={unknown}"), "Unknown user."),
    ];
    for (query, message) in cases {
        match connect_async(w.app.ws_url(&format!("/{query}"))).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401, "{query}");
                let body: Value =
                    serde_json::from_slice(response.body().as_deref().expect("a body"))
                        .expect("JSON");
                assert_eq!(body, json!({ "status": "error", "message": message }), "{query}");
            }
            other => panic!("{query}: expected 401, got {other:?}"),
        }
    }
    // The REST token works over WebSocket as a bearer header too, on /ws.
    let mut request =
        tungstenite::client::IntoClientRequest::into_client_request(w.app.ws_url("/ws"))
            .expect("request");
    let bearer = format!("Bearer {}", w.alice.0).parse().expect("header");
    request.headers_mut().insert("authorization", bearer);
    let (mut ws, _) = connect_async(request).await.expect("upgrade with a bearer header");
    send(&mut ws, json!({ "type": "showUser", "userId": w.alice.1["id"] })).await;
    assert_eq!(recv(&mut ws).await["event"], "showUser");
}

#[tokio::test]
async fn plain_get_root_is_still_http() {
    let w = world().await;
    let res = w.app.client.get(w.app.url("/")).send().await.expect("GET /");
    assert_eq!(res.status(), 200);
    assert!(res.text().await.expect("body").contains("<title>wsgate blog</title>"));
}

#[tokio::test]
async fn entries_are_listed_and_shown() {
    let w = world().await;
    let second = w.app.create_entry(&w.bob.0, "Second").await;
    let mut ws = connect(&w.app, &w.alice.0).await;

    send(&mut ws, json!({ "type": "indexEntry" })).await;
    let index = recv(&mut ws).await;
    assert_eq!(index["event"], "indexEntry");
    let ids: Vec<i64> = index["data"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|e| e["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&w.entry_id) && ids.contains(&second["id"].as_i64().expect("id")));

    send(&mut ws, json!({ "event": "indexEntry", "data": { "limit": 1 } })).await;
    assert_eq!(recv(&mut ws).await["data"].as_array().expect("a list").len(), 1);
    send(&mut ws, json!({ "event": "indexEntry", "data": { "limit": 0 } })).await;
    assert_eq!(recv(&mut ws).await["data"]["message"], "limit must be between 1 and 100.");

    send(&mut ws, json!({ "type": "showEntry", "entryId": second["id"] })).await;
    assert_eq!(recv(&mut ws).await, json!({ "event": "showEntry", "data": second }));
    send(&mut ws, json!({ "type": "showEntry" })).await;
    assert_eq!(recv(&mut ws).await["data"]["message"], "Missing entry id.");
    send(&mut ws, json!({ "type": "showEntry", "entryId": 999 })).await;
    assert_eq!(recv(&mut ws).await["data"]["message"], "Entry not found.");
}

#[tokio::test]
async fn comments_created_over_a_gateway_are_acked_and_pushed_to_the_room() {
    let w = world().await;
    let mut alice = connect(&w.app, &w.alice.0).await;
    let mut bob = connect(&w.app, &w.bob.0).await;
    send(&mut alice, json!({ "type": "subscribeEntry", "entryId": w.entry_id, "id": 1 })).await;
    assert_eq!(recv(&mut alice).await["event"], "ack");

    send(
        &mut bob,
        json!({ "type": "createComment", "entryId": w.entry_id, "body": "Via a gateway", "id": 7 }),
    )
    .await;
    let ack = recv(&mut bob).await;
    assert_eq!(ack["event"], "ack");
    assert_eq!(ack["id"], 7);
    assert_eq!(ack["data"]["body"], "Via a gateway");
    assert_eq!(ack["data"]["userId"], w.bob.1["id"]);
    assert_eq!(recv(&mut alice).await, json!({ "event": "commentCreated", "data": ack["data"] }));

    // Stored: REST and the gateway see it.
    send(&mut bob, json!({ "type": "indexComment", "entryId": w.entry_id })).await;
    assert_eq!(recv(&mut bob).await["data"].as_array().expect("a list").len(), 2);

    let cases = [
        (json!({ "type": "createComment", "body": "x" }), "Missing entry id."),
        (
            json!({ "type": "createComment", "entryId": w.entry_id }),
            "body must be between 1 and 10000 characters long.",
        ),
        (
            json!({ "type": "createComment", "entryId": w.entry_id, "body": "" }),
            "body must be between 1 and 10000 characters long.",
        ),
        (json!({ "type": "createComment", "entryId": 999, "body": "x" }), "Entry not found."),
    ];
    for (message, expected) in cases {
        send(&mut bob, message.clone()).await;
        assert_eq!(recv(&mut bob).await["data"]["message"], expected, "{message}");
    }
}

/// The blog's gateways driven in memory with `wsgate::testing::TestClient` (no socket): the
/// domain's rules, the handshake's token sources, and the room pushes, as a front-end sees them.
#[tokio::test]
async fn the_gateways_in_memory_with_a_test_client() {
    use wsgate::testing::{Received, TestClient};

    let w = world().await;
    let gateways = blog::gateways::app(&w.app.state).await.expect("gateways");
    let refused = TestClient::builder(&gateways).connect().await.expect_err("no token");
    assert_eq!(refused.message, "Missing authentication token.");

    let mut alice = TestClient::builder(&gateways)
        .query(format!("token={}", w.alice.0))
        .connect()
        .await
        .expect("alice");
    let mut bob = TestClient::builder(&gateways)
        .header("authorization", &format!("Bearer {}", w.bob.0))
        .connect()
        .await
        .expect("bob");

    // Nobody reads another user's record.
    let bob_id = w.bob.1["id"].as_i64().expect("bob id");
    alice.emit("showUser", json!({ "userId": bob_id })).await;
    let Some(Received::Exception { data, .. }) = alice.next().await else { panic!("an exception") };
    assert_eq!(data["message"], "Forbidden.");

    // One body rule, over REST and the gateway alike.
    let empty = alice.request("createComment", json!({ "entryId": w.entry_id, "body": "" })).await;
    assert_eq!(empty.unwrap_err()["message"], "body must be between 1 and 10000 characters long.");

    // A comment created over the gateway reaches the entry's room, the author's other tabs too.
    assert_eq!(
        bob.request("subscribeEntry", json!({ "entryId": w.entry_id })).await,
        Ok(json!({ "entryId": w.entry_id, "subscribed": true }))
    );
    let created = alice
        .request("createComment", json!({ "entryId": w.entry_id, "body": "In memory" }))
        .await
        .expect("created");
    assert_eq!(bob.event("commentCreated").await, Some(created.clone()));
    bob.emit("indexComment", json!({ "entryId": w.entry_id })).await;
    assert_eq!(bob.event("indexComment").await, Some(json!([w.comment, created])));
    alice.disconnect().await;
    bob.disconnect().await;
}
