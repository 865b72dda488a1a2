//! The gateways' description: every event documented, `/asyncapi.json` and `/asyncapi` served
//! without a token, and the checked-in TypeScript (`apps/blog/web/gateways.ts`) current.

mod common;

use reqwest::StatusCode;
use serde_json::json;
use wsgate::describe::Answer;

/// Every event a client may send, and what answers it.
const HANDLED: &[(&str, &str)] = &[
    ("createComment", "ack"),
    ("indexComment", "reply"),
    ("indexEntry", "reply"),
    ("presenceEntry", "reply"),
    ("showComment", "reply"),
    ("showEntry", "reply"),
    ("showUser", "reply"),
    ("subscribeEntry", "ack"),
    ("typing", "nothing"),
    ("unsubscribeEntry", "ack"),
];
const PUSHED: &[&str] =
    &["commentCreated", "commentDeleted", "commentUpdated", "presenceDiff", "typing"];

#[tokio::test]
async fn every_event_is_described_with_schemas() {
    let description = blog::description().await.expect("description");
    assert_eq!(description.undocumented(), Vec::<String>::new());
    assert_eq!(description.namespaces.len(), 1, "one namespace, /");
    let ns = &description.namespaces[0];
    let handled: Vec<(&str, &str)> = ns
        .handlers
        .iter()
        .map(|h| {
            let kind = match &h.answer {
                Answer::Event { event, .. } => {
                    assert_eq!(event, &h.event, "{} replies with its own event", h.event);
                    "reply"
                }
                Answer::Ack { .. } => "ack",
                Answer::Nothing => "nothing",
                other => panic!("{}: {other:?}", h.event),
            };
            (h.event.as_str(), kind)
        })
        .collect();
    assert_eq!(handled, HANDLED);
    let pushed: Vec<&str> = ns.pushes.iter().map(|p| p.event.as_str()).collect();
    assert_eq!(pushed, PUSHED);
    for h in &ns.handlers {
        assert!(h.data.is_some(), "{} reads data", h.event);
        assert!(!h.exceptions.is_empty(), "{} declares its exceptions", h.event);
    }
    // The entities have the schemas the REST API documents.
    let openapi = serde_json::to_value(blog::openapi::document()).expect("OpenAPI as JSON");
    for name in ["User", "Entry", "Comment"] {
        assert_eq!(
            description.schemas[name], openapi["components"]["schemas"][name],
            "{name}: one schema in both documents"
        );
    }
}

#[tokio::test]
async fn the_checked_in_typescript_is_current() {
    let description = blog::description().await.expect("description");
    let generated = blog::asyncapi::typescript(&description);
    let checked_in = include_str!("../web/gateways.ts");
    assert!(
        generated == checked_in,
        "apps/blog/web/gateways.ts is stale: run scripts/types (it writes `blog types`)"
    );
}

#[tokio::test]
async fn the_document_and_its_page_are_public() {
    let app = common::spawn().await;
    let (status, doc) = app.get("/asyncapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["asyncapi"], "3.0.0");
    let host = app.addr.to_string();
    assert_eq!(doc["servers"]["websocket"]["host"], json!(host), "the host asked for");
    assert_eq!(doc["servers"]["socketio"]["pathname"], "/socket.io/");
    let operations = doc["operations"].as_object().expect("operations");
    for (event, kind) in HANDLED.iter().filter(|(_, kind)| *kind != "nothing") {
        let op = &operations[*event];
        assert_eq!(op["action"], "receive", "{event}");
        let replies: Vec<&str> = op["reply"]["messages"]
            .as_array()
            .expect("reply messages")
            .iter()
            .filter_map(|m| m["$ref"].as_str())
            .collect();
        assert_eq!(
            replies,
            [
                format!("#/channels/root/messages/{event}.{kind}"),
                format!("#/channels/root/messages/{event}.exception")
            ],
        );
    }
    for event in PUSHED {
        // `typing` is also an event clients send: its push is `typing.push`.
        let op = operations.get(*event).filter(|op| op["action"] == "send");
        let op = op.or_else(|| operations.get(&format!("{event}.push"))).expect(event);
        assert_eq!(op["action"], "send", "{event}");
    }
    assert_eq!(operations["typing"]["x-answer"], "nothing");
    assert_eq!(
        doc["channels"]["root"]["messages"]["showComment.exception"]["payload"]["allOf"][1]["properties"]
            ["message"]["examples"],
        json!([
            "Missing entry id.",
            "Missing comment id.",
            "Entry not found.",
            "Comment not found."
        ])
    );

    let page = app.client.get(app.url("/asyncapi")).send().await.expect("page");
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.expect("page text");
    assert!(html.contains("/vendor/asyncapi/asyncapi-react.js"), "{html}");
    for (path, content_type) in [
        ("/vendor/asyncapi/asyncapi-react.js", "text/javascript; charset=utf-8"),
        ("/vendor/asyncapi/asyncapi-react.css", "text/css; charset=utf-8"),
        ("/vendor/asyncapi/LICENSE", "text/plain; charset=utf-8"),
    ] {
        let response = app.client.get(app.url(path)).send().await.expect(path);
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(response.headers()["content-type"], content_type, "{path}");
    }
}
