//! The REST API of the real app over HTTP: accounts, tokens, users, entries, comments,
//! pagination, errors, and the live pushes of REST changes. The key flows live in
//! `common::flows`, shared with `postgres.rs`.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;
use wsgate::{Claims, JwtKeys};

use common::{JWT_SECRET, PASSWORD, error, flows, id, spawn};

#[tokio::test]
async fn healthz_answers_ok() {
    let app = spawn().await;
    assert_eq!(
        app.get("/healthz", None).await,
        (StatusCode::OK, json!({ "status": "ok", "database": "up" }))
    );
}

#[tokio::test]
async fn the_pages_icon_is_served_under_both_names() {
    let app = spawn().await;
    for path in ["/favicon.svg", "/favicon.ico"] {
        let res = app.client.get(app.url(path)).send().await.expect("GET");
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert_eq!(res.headers()["content-type"], "image/svg+xml", "{path}");
        assert!(res.text().await.expect("body").starts_with("<svg"), "{path}");
    }
}

#[tokio::test]
async fn unknown_routes_answer_json_errors() {
    let app = spawn().await;
    assert_eq!(app.get("/nope", None).await, error(StatusCode::NOT_FOUND, "Not found."));
    assert_eq!(
        app.get("/auth/login", None).await,
        error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed.")
    );
}

#[tokio::test]
async fn register_returns_a_token_and_the_user_once_per_email() {
    let app = spawn().await;
    let body = json!({
        "email": "Ada@Example.com", "password": PASSWORD, "firstName": "Ada", "lastName": "Lovelace"
    });
    let (status, created) = app.post("/auth/register", None, &body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let user = &created["user"];
    assert_eq!(user["email"], "ada@example.com");
    assert_eq!((&user["firstName"], &user["lastName"]), (&json!("Ada"), &json!("Lovelace")));
    let fields: Vec<&str> = user.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(fields, ["id", "email", "firstName", "lastName", "createdAt"]);
    assert!(user["createdAt"].as_str().unwrap().ends_with('Z'));

    let claims = app.state.jwt.verify(created["token"].as_str().unwrap()).unwrap();
    assert_eq!(claims.sub, user["id"].as_i64().unwrap().to_string());

    let again = json!({
        "email": "ada@example.com", "password": "another password", "firstName": "A", "lastName": "L"
    });
    assert_eq!(
        app.post("/auth/register", None, &again).await,
        error(StatusCode::CONFLICT, "Email already registered.")
    );
}

#[tokio::test]
async fn register_validation_names_the_field() {
    let app = spawn().await;
    let valid = json!({ "email": "a@example.com", "password": PASSWORD, "firstName": "A", "lastName": "L" });
    let with = |field: &str, value: Value| {
        let mut body = valid.clone();
        body[field] = value;
        body
    };
    let cases = [
        (with("password", json!("short")), "password must be between 8 and 256 characters long."),
        (with("email", json!("not-an-email")), "email must be a valid email address."),
        (with("firstName", json!("")), "firstName must be between 1 and 100 characters long."),
    ];
    for (body, message) in cases {
        assert_eq!(
            app.post("/auth/register", None, &body).await,
            error(StatusCode::BAD_REQUEST, message)
        );
    }
}

#[tokio::test]
async fn malformed_or_mistyped_json_is_a_bad_request() {
    let app = spawn().await;
    let (status, body) = app.post_raw("/auth/register", "{\"email\": ").await;
    assert_eq!((status, &body["statusCode"]), (StatusCode::BAD_REQUEST, &json!(400)), "{body}");
    assert!(body["message"].as_str().unwrap().contains("JSON"), "{body}");

    let mistyped =
        json!({ "email": "a@example.com", "password": PASSWORD, "firstName": 1, "lastName": "L" });
    let (status, body) = app.post("/auth/register", None, &mistyped).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["message"].as_str().unwrap().contains("firstName: invalid type"), "{body}");

    let (status, body) = app.post("/auth/login", None, &json!({ "email": "a@example.com" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["message"].as_str().unwrap().contains("missing field `password`"), "{body}");
}

#[tokio::test]
async fn login_with_the_right_password_only() {
    let app = spawn().await;
    let (_, user) = app.register("grace@example.com").await;

    let (status, body) = app
        .post("/auth/login", None, &json!({ "email": "GRACE@example.com", "password": PASSWORD }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"], user);
    let token = body["token"].as_str().unwrap();
    assert_eq!(app.create_entry(token, "Logged in").await["userId"], user["id"]);

    let unauthorized = error(StatusCode::UNAUTHORIZED, "Invalid email or password.");
    let wrong = json!({ "email": "grace@example.com", "password": "wrong password" });
    assert_eq!(app.post("/auth/login", None, &wrong).await, unauthorized);
    let unknown = json!({ "email": "nobody@example.com", "password": PASSWORD });
    assert_eq!(app.post("/auth/login", None, &unknown).await, unauthorized);
}

#[tokio::test]
async fn entries_need_a_valid_token_of_a_known_user() {
    let app = spawn().await;
    let (token, user) = app.register("linus@example.com").await;
    let entry = json!({ "title": "Hello", "content": "First entry" });
    let keys = JwtKeys::hs256(JWT_SECRET.as_bytes());
    let expired = keys.sign_claims(&Claims { sub: "1".into(), iat: 1, exp: 2 }).unwrap();
    let nobody = keys.sign("4242", Duration::from_secs(60)).unwrap();
    let not_an_id = keys.sign("linus", Duration::from_secs(60)).unwrap();
    let foreign = JwtKeys::hs256(b"another-secret").sign("1", Duration::from_secs(60)).unwrap();

    let cases = [
        (None, "Missing authentication token."),
        (Some("garbage"), "Invalid token."),
        (Some(foreign.as_str()), "Invalid token."),
        (Some(not_an_id.as_str()), "Invalid token."),
        (Some(expired.as_str()), "Token expired."),
        (Some(nobody.as_str()), "Unknown user."),
    ];
    for (bad, message) in cases {
        assert_eq!(
            app.post("/entries", bad, &entry).await,
            error(StatusCode::UNAUTHORIZED, message),
            "token {bad:?}"
        );
    }
    let res = app.client.post(app.url("/entries")).header("authorization", "Basic abc");
    let res = res.json(&entry).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    let (status, created) = app.post("/entries", Some(&token), &entry).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!((&created["title"], &created["content"]), (&json!("Hello"), &json!("First entry")));
    assert_eq!(created["userId"], user["id"]);
    assert_eq!(created["createdAt"], created["updatedAt"]);
    let stored = app.state.store.entry(created["id"].as_i64().unwrap()).await.unwrap().unwrap();
    assert_eq!(serde_json::to_value(stored).unwrap(), created);

    assert_eq!(
        app.post("/entries", Some(&token), &json!({ "title": "", "content": "x" })).await,
        error(StatusCode::BAD_REQUEST, "title must be between 1 and 200 characters long.")
    );
}

#[tokio::test]
async fn comments_go_on_existing_entries() {
    let app = spawn().await;
    let (token, user) = app.register("barbara@example.com").await;
    let entry_id = app.create_entry(&token, "Comment here").await["id"].as_i64().unwrap();

    let comment = json!({ "body": "First!" });
    assert_eq!(
        app.post(&format!("/entries/{}/comments", entry_id + 1), Some(&token), &comment).await,
        error(StatusCode::NOT_FOUND, "Entry not found.")
    );
    assert_eq!(
        app.post(&format!("/entries/{entry_id}/comments"), None, &comment).await,
        error(StatusCode::UNAUTHORIZED, "Missing authentication token.")
    );
    let (status, body) = app.post("/entries/abc/comments", Some(&token), &comment).await;
    assert_eq!((status, &body["statusCode"]), (StatusCode::BAD_REQUEST, &json!(400)), "{body}");

    let first = app.create_comment(&token, entry_id, "First!").await;
    assert_eq!((&first["body"], &first["entryId"]), (&json!("First!"), &json!(entry_id)));
    assert_eq!(first["userId"], user["id"]);
    let second = app.create_comment(&token, entry_id, "Second").await;
    let stored = app.state.store.comments(entry_id).await.unwrap();
    assert_eq!(serde_json::to_value(stored).unwrap(), json!([first, second]));

    assert_eq!(
        app.post(&format!("/entries/{entry_id}/comments"), Some(&token), &json!({ "body": "" }))
            .await,
        error(StatusCode::BAD_REQUEST, "body must be between 1 and 10000 characters long.")
    );
}

#[tokio::test]
async fn users_answer_for_themselves_only() {
    flows::users_self_only(&spawn().await).await;
}

#[tokio::test]
async fn entries_are_read_by_all_and_written_by_their_author() {
    flows::entry_crud(&spawn().await).await;
}

#[tokio::test]
async fn comments_are_read_by_all_and_written_by_their_author() {
    flows::comment_crud(&spawn().await).await;
}

#[tokio::test]
async fn an_entrys_authors_have_names_and_no_emails() {
    flows::entry_authors(&spawn().await).await;
}

#[tokio::test]
async fn lists_are_paginated() {
    flows::pagination(&spawn().await).await;
}

/// Every route but register, login and `/healthz`, whether or not the ids exist.
const PROTECTED: [(Method, &str); 13] = [
    (Method::GET, "/users/1"),
    (Method::GET, "/entries"),
    (Method::POST, "/entries"),
    (Method::GET, "/entries/1"),
    (Method::PUT, "/entries/1"),
    (Method::DELETE, "/entries/1"),
    (Method::GET, "/entries/1/authors"),
    (Method::GET, "/entries/1/comments"),
    (Method::POST, "/entries/1/comments"),
    (Method::GET, "/entries/1/comments/1"),
    (Method::PUT, "/entries/1/comments/1"),
    (Method::DELETE, "/entries/1/comments/1"),
    (Method::GET, "/entries/999/comments/999"),
];

#[tokio::test]
async fn every_route_but_register_login_and_healthz_needs_a_token() {
    let app = spawn().await;
    let (token, _) = app.register("owner@example.com").await;
    let entry_id = id(&app.create_entry(&token, "Exists").await);
    let comment = app.create_comment(&token, entry_id, "Exists").await;
    assert_eq!((entry_id, id(&comment)), (1, 1), "the table's ids exist");
    let nobody = JwtKeys::hs256(JWT_SECRET.as_bytes()).sign("4242", Duration::from_secs(60));
    let nobody = nobody.unwrap();
    let body = json!({ "title": "T", "content": "C", "body": "B" });
    for (method, path) in PROTECTED {
        let send = |token| app.request(method.clone(), path, token, Some(&body));
        let missing = error(StatusCode::UNAUTHORIZED, "Missing authentication token.");
        assert_eq!(send(None).await, missing, "{method} {path}");
        let invalid = error(StatusCode::UNAUTHORIZED, "Invalid token.");
        assert_eq!(send(Some("garbage")).await, invalid, "{method} {path}");
        let unknown = error(StatusCode::UNAUTHORIZED, "Unknown user.");
        assert_eq!(send(Some(&nobody)).await, unknown, "{method} {path}");
    }
    // Nothing changed on the way.
    let (status, entry) = app.get("/entries/1", Some(&token)).await;
    assert_eq!((status, &entry["title"]), (StatusCode::OK, &json!("Exists")));
    assert_eq!(app.get("/entries/1/comments/1", Some(&token)).await, (StatusCode::OK, comment));
}

#[tokio::test]
async fn bad_ids_and_bodies_are_bad_requests() {
    let app = spawn().await;
    let (token, _) = app.register("careless@example.com").await;
    let entry_id = id(&app.create_entry(&token, "Target").await);
    let comment_id = id(&app.create_comment(&token, entry_id, "Target").await);
    let body = json!({ "title": "T", "content": "C", "body": "B" });
    let bad_paths = [
        (Method::GET, "/users/abc".to_owned()),
        (Method::GET, "/entries/abc".to_owned()),
        (Method::PUT, "/entries/abc".to_owned()),
        (Method::DELETE, "/entries/1.5".to_owned()),
        (Method::GET, "/entries/abc/comments".to_owned()),
        (Method::GET, format!("/entries/{entry_id}/comments/abc")),
        (Method::PUT, format!("/entries/abc/comments/{comment_id}")),
        (Method::DELETE, format!("/entries/{entry_id}/comments/abc")),
    ];
    for (method, path) in bad_paths {
        let (status, answer) = app.request(method.clone(), &path, Some(&token), Some(&body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {path}: {answer}");
        assert_eq!(answer["statusCode"], 400, "{method} {path}: {answer}");
        assert!(answer["message"].as_str().unwrap().contains("parse"), "{path}: {answer}");
    }

    let entry = format!("/entries/{entry_id}");
    let comment = format!("/entries/{entry_id}/comments/{comment_id}");
    for path in [&entry, &comment] {
        let (status, answer) = app.send_raw(Method::PUT, path, &token, "{\"title\": ").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {answer}");
        assert!(answer["message"].as_str().unwrap().contains("JSON"), "{path}: {answer}");
    }
    let (status, answer) = app.put(&entry, Some(&token), &json!({ "title": "T" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("missing field `content`"), "{answer}");
    let (status, answer) = app.put(&comment, Some(&token), &json!({ "body": 7 })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("body: invalid type"), "{answer}");
    let long = "x".repeat(100_001);
    assert_eq!(
        app.put(&entry, Some(&token), &json!({ "title": "T", "content": long })).await,
        error(StatusCode::BAD_REQUEST, "content must be between 1 and 100000 characters long.")
    );
    let (status, answer) = app.get(&entry, Some(&token)).await;
    assert_eq!((status, &answer["title"]), (StatusCode::OK, &json!("Target")), "unchanged");
}

#[tokio::test]
async fn comment_changes_over_rest_reach_the_entrys_subscribers() {
    let app = spawn().await;
    let (alice, _) = app.register("alice@example.com").await;
    let (bob, _) = app.register("bob@example.com").await;
    let entry_id = id(&app.create_entry(&alice, "Live").await);
    let comment = app.create_comment(&bob, entry_id, "Before").await;
    let path = format!("/entries/{entry_id}/comments/{}", id(&comment));

    let url = app.ws_url(&format!("/?token={alice}"));
    let (mut ws, _) = connect_async(url).await.unwrap();
    let subscribe = json!({ "event": "subscribeEntry", "id": 1, "data": { "entryId": entry_id } });
    ws.send(Message::text(subscribe.to_string())).await.unwrap();
    let mut recv = async || loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
        if let Message::Text(text) = frame.unwrap().unwrap().unwrap() {
            let frame = serde_json::from_str::<Value>(&text).unwrap();
            // Subscribing makes Alice a reader: who reads is not what this test is about.
            if frame["event"] != "presenceDiff" {
                return frame;
            }
        }
    };
    assert_eq!(recv().await["data"]["subscribed"], true);

    let (status, updated) = app.put(&path, Some(&bob), &json!({ "body": "After" })).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(recv().await, json!({ "event": "commentUpdated", "data": updated }));

    // A refused change is not announced: the next push is the delete.
    let (status, _) = app.put(&path, Some(&alice), &json!({ "body": "Hers" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(app.delete(&path, Some(&bob)).await, (StatusCode::NO_CONTENT, Value::Null));
    assert_eq!(
        recv().await,
        json!({ "event": "commentDeleted", "data": { "id": comment["id"], "entryId": entry_id } })
    );
}
