//! The blog's gateways: their wire format and handshake over plain WebSocket, on the same port
//! as its REST API (a real server, a real SQLite file and a real WebSocket client), and their
//! behaviour driven in memory with `wsgate::testing::TestClient` over the same app state.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{JWT_SECRET, TestApp, spawn};
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use wsgate::testing::{Received, TestClient};
use wsgate::{AckId, App, Claims, JwtKeys};

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

/// The next frame that is not a `presenceDiff`: a subscriber is told who reads the entry
/// whenever the presence round comes, before or after any other push.
async fn recv_past_presence(ws: &mut Client) -> Value {
    loop {
        let frame = recv(ws).await;
        if frame["event"] != "presenceDiff" {
            return frame;
        }
    }
}

/// The blog's gateways over `w`'s state, for [`TestClient`]s (pushes from REST reach them too).
async fn in_memory(w: &World) -> App {
    blog::gateways::app(&w.app.state).await.expect("gateways")
}

/// A client of `gateways` with `token` in the query, as the chapter's clients connect.
async fn test_client(gateways: &App, token: &str) -> TestClient {
    TestClient::builder(gateways).query(format!("token={token}")).connect().await.expect("connect")
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
async fn exceptions_in_the_chapter_format() {
    let w = world().await;
    let mut ws = connect(&w.app, &w.alice.0).await;

    // The cause is the message's pattern and its data: the message without `type`.
    send(&mut ws, json!({ "type": "showComment", "entryId": w.entry_id })).await;
    assert_eq!(
        recv(&mut ws).await,
        json!({ "event": "exception", "data": {
            "status": "error",
            "message": "Missing comment id.",
            "cause": { "pattern": "showComment", "data": { "entryId": w.entry_id } },
        } })
    );

    // In the Nest.js format, with an ack id: the exception carries the id.
    let data = json!({ "entryId": w.entry_id, "commentId": 999 });
    send(&mut ws, json!({ "event": "showComment", "id": 4, "data": data })).await;
    assert_eq!(
        recv(&mut ws).await,
        json!({ "event": "exception", "id": 4, "data": {
            "status": "error",
            "message": "Comment not found.",
            "cause": { "pattern": "showComment", "data": data },
        } })
    );
}

#[tokio::test]
async fn missing_and_mistyped_fields_get_the_chapters_messages() {
    let w = world().await;
    let gateways = in_memory(&w).await;
    let mut alice = test_client(&gateways, &w.alice.0).await;
    let cases = [
        ("showComment", json!({ "commentId": 1 }), "Missing entry id."),
        ("showComment", json!({ "entryId": w.entry_id }), "Missing comment id."),
        ("indexComment", json!({}), "Missing entry id."),
        ("showComment", json!({ "entryId": w.entry_id, "commentId": 999 }), "Comment not found."),
        // What is missing, as over REST: the entry, or the comment on it.
        ("showComment", json!({ "entryId": 999, "commentId": 1 }), "Entry not found."),
        ("indexComment", json!({ "entryId": 999 }), "Entry not found."),
        (
            "indexComment",
            json!({ "entryId": "two" }),
            "Invalid entryId: invalid type: string \"two\", expected i64",
        ),
        ("showUser", json!({}), "Missing user id."),
        ("showEntry", json!({ "entryId": -3 }), "Entry not found."),
        ("subscribeEntry", json!({}), "Missing entry id."),
        ("subscribeEntry", json!({ "entryId": 999 }), "Entry not found."),
        ("unsubscribeEntry", json!({}), "Missing entry id."),
        ("indexEntry", json!({ "limit": 101 }), "limit must be between 1 and 100."),
        ("indexEntry", json!({ "offset": -1 }), "offset must be at least 0."),
    ];
    for (pattern, data, expected) in cases {
        alice.emit(pattern, &data).await;
        let Some(Received::Exception { id: None, data: reply }) = alice.next().await else {
            panic!("{pattern} {data}: an exception")
        };
        assert_eq!(reply["status"], "error");
        assert_eq!(reply["message"], expected, "{pattern} {data}");
        assert_eq!(reply["cause"], json!({ "pattern": pattern, "data": data }));
    }
}

#[tokio::test]
async fn show_user_is_for_yourself_only() {
    let w = world().await;
    let gateways = in_memory(&w).await;
    let mut alice = test_client(&gateways, &w.alice.0).await;
    alice.emit("showUser", json!({ "userId": w.alice.1["id"] })).await;
    let Some(Received::Event { event, data: me, .. }) = alice.next().await else {
        panic!("a reply")
    };
    assert_eq!((event.as_str(), &me), ("showUser", &w.alice.1));
    assert!(me.get("passwordHash").is_none());

    alice.emit("showUser", json!({ "userId": w.bob.1["id"] })).await;
    let Some(Received::Exception { data, .. }) = alice.next().await else { panic!("an exception") };
    assert_eq!(data["message"], "Forbidden.");
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
    assert_eq!(
        recv_past_presence(&mut alice).await,
        json!({ "event": "commentCreated", "data": comment })
    );

    // Bob did not subscribe: his next message is the answer to his own request.
    send(&mut bob, json!({ "type": "indexComment", "entryId": w.entry_id })).await;
    assert_eq!(recv(&mut bob).await["event"], "indexComment");
}

#[tokio::test]
async fn unsubscribing_ends_the_pushes_and_missing_entries_are_not_subscribed() {
    let w = world().await;
    let gateways = in_memory(&w).await;
    let mut alice = test_client(&gateways, &w.alice.0).await;
    let subscribed = alice.request("subscribeEntry", json!({ "entryId": w.entry_id })).await;
    assert_eq!(subscribed, Ok(json!({ "entryId": w.entry_id, "subscribed": true })));

    let left = alice.request("unsubscribeEntry", json!({ "entryId": w.entry_id })).await;
    assert_eq!(left.expect("an ack")["subscribed"], false);
    w.app.create_comment(&w.bob.0, w.entry_id, "Unheard").await;
    alice.emit("showUser", json!({ "userId": w.alice.1["id"] })).await;
    // Her own join as a reader may have been told before she left; nothing else.
    let mut next = alice.next().await;
    while matches!(&next, Some(Received::Event { event, .. }) if event == "presenceDiff") {
        next = alice.next().await;
    }
    assert!(
        matches!(&next, Some(Received::Event { event, .. }) if event == "showUser"),
        "no commentCreated after leaving: {next:?}"
    );

    alice.emit("subscribeEntry", json!({ "entryId": 999 })).await;
    let Some(Received::Exception { data, .. }) = alice.next().await else { panic!("an exception") };
    assert_eq!(data["message"], "Entry not found.");
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
    let gateways = in_memory(&w).await;
    let mut alice = test_client(&gateways, &w.alice.0).await;

    alice.emit("indexEntry", json!({})).await;
    let Some(Received::Event { event, data: index, .. }) = alice.next().await else {
        panic!("an event")
    };
    assert_eq!(event, "indexEntry");
    let ids: Vec<i64> =
        index.as_array().expect("a list").iter().map(|e| e["id"].as_i64().expect("id")).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&w.entry_id) && ids.contains(&second["id"].as_i64().expect("id")));

    alice.emit("indexEntry", json!({ "limit": 1 })).await;
    let Some(Received::Event { data: page, .. }) = alice.next().await else { panic!("a page") };
    assert_eq!(page.as_array().expect("a list").len(), 1);
    alice.emit("indexEntry", json!({ "limit": 0 })).await;
    let Some(Received::Exception { data, .. }) = alice.next().await else { panic!("an exception") };
    assert_eq!(data["message"], "limit must be between 1 and 100.");

    alice.emit("showEntry", json!({ "entryId": second["id"] })).await;
    assert_eq!(alice.next().await, Some(Received::event("showEntry", second)));
    for (data, expected) in
        [(json!({}), "Missing entry id."), (json!({ "entryId": 999 }), "Entry not found.")]
    {
        alice.emit("showEntry", &data).await;
        let Some(Received::Exception { data: reply, .. }) = alice.next().await else {
            panic!("{data}: an exception")
        };
        assert_eq!(reply["message"], expected, "{data}");
    }
}

#[tokio::test]
async fn comments_created_over_a_gateway_are_acked_and_pushed_to_the_room() {
    let w = world().await;
    let gateways = in_memory(&w).await;
    let mut alice = test_client(&gateways, &w.alice.0).await;
    let mut bob = test_client(&gateways, &w.bob.0).await;
    alice
        .emit_with_ack_id("subscribeEntry", json!({ "entryId": w.entry_id }), AckId::Number(1))
        .await;
    assert!(matches!(alice.next().await, Some(Received::Ack { id: AckId::Number(1), .. })));

    let create = json!({ "entryId": w.entry_id, "body": "Via a gateway" });
    bob.emit_with_ack_id("createComment", create, AckId::Number(7)).await;
    let Some(Received::Ack { id, data: created }) = bob.next().await else { panic!("an ack") };
    assert_eq!(id, AckId::Number(7));
    assert_eq!(created["body"], "Via a gateway");
    assert_eq!(created["userId"], w.bob.1["id"]);
    // Alice, a reader of the entry now, may be told of her own join first.
    assert_eq!(alice.event("commentCreated").await, Some(created));

    // Stored: REST and the gateway see it.
    bob.emit("indexComment", json!({ "entryId": w.entry_id })).await;
    let Some(Received::Event { event, data, .. }) = bob.next().await else { panic!("a reply") };
    assert_eq!(event, "indexComment");
    assert_eq!(data.as_array().expect("a list").len(), 2);

    let cases = [
        (json!({ "body": "x" }), "Missing entry id."),
        (json!({ "entryId": w.entry_id }), "body must be between 1 and 10000 characters long."),
        (
            json!({ "entryId": w.entry_id, "body": "" }),
            "body must be between 1 and 10000 characters long.",
        ),
        (json!({ "entryId": 999, "body": "x" }), "Entry not found."),
    ];
    for (data, expected) in cases {
        bob.emit("createComment", &data).await;
        let Some(Received::Exception { data: reply, .. }) = bob.next().await else {
            panic!("{data}: an exception")
        };
        assert_eq!(reply["message"], expected, "{data}");
    }
}

/// The blog's gateways driven in memory with `wsgate::testing::TestClient` (no socket): the
/// domain's rules, the handshake's token sources, and the room pushes, as a front-end sees them.
#[tokio::test]
async fn the_gateways_in_memory_with_a_test_client() {
    let w = world().await;
    let gateways = in_memory(&w).await;
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
