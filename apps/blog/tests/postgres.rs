//! The same app on PostgreSQL: migrations, the REST round trip, and the key flows of
//! `common::flows` that `rest.rs` runs on SQLite, each in a database of its own. Skipped
//! with a notice when no server listens at `TEST_POSTGRES_URL`, unless `CI=true`.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use reqwest::StatusCode;
use serde_json::json;

use common::{PASSWORD, TestApp, flows, postgres_database, spawn_with};

#[tokio::test]
async fn postgres_register_login_entry_comment() {
    let Some(db) = postgres_database("postgres_register_login_entry_comment").await else {
        return;
    };
    let app = spawn_with(&db.url).await;
    assert_eq!(
        app.get("/healthz", None).await,
        (StatusCode::OK, json!({ "status": "ok", "database": "up" }))
    );

    let (_, user) = app.register("edsger@example.com").await;
    let again = json!({
        "email": "edsger@example.com", "password": PASSWORD, "firstName": "E", "lastName": "D"
    });
    let (status, body) = app.post("/auth/register", None, &again).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let login = json!({ "email": "edsger@example.com", "password": PASSWORD });
    let (status, body) = app.post("/auth/login", None, &login).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"], user);
    let token = body["token"].as_str().unwrap();

    let entry = app.create_entry(token, "On PostgreSQL").await;
    let entry_id = entry["id"].as_i64().unwrap();
    assert_eq!(entry["userId"], user["id"]);
    let first = app.create_comment(token, entry_id, "First").await;
    let second = app.create_comment(token, entry_id, "Second").await;
    let (status, _) = app
        .post(&format!("/entries/{}/comments", entry_id + 1), Some(token), &json!({"body": "x"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let store = &app.state.store;
    let comments = store.comments(entry_id).await.unwrap();
    assert_eq!(serde_json::to_value(&comments).unwrap(), json!([first, second]));
    let one = store.comment(entry_id, comments[1].id).await.unwrap();
    assert_eq!(one.as_ref(), comments.get(1));
    assert_eq!(
        store.user(user["id"].as_i64().unwrap()).await.unwrap().unwrap().email,
        "edsger@example.com"
    );
    store.pool().close().await;
}

/// Runs `flow` on the app over a fresh PostgreSQL database named after `test`, or skips.
async fn on_postgres<F: AsyncFnOnce(&TestApp)>(test: &str, flow: F) {
    let Some(db) = postgres_database(test).await else {
        return;
    };
    let app = spawn_with(&db.url).await;
    flow(&app).await;
    // Closed before the database is dropped with it.
    app.state.store.pool().close().await;
}

#[tokio::test]
async fn postgres_entry_crud() {
    on_postgres("postgres_entry_crud", flows::entry_crud).await;
}

#[tokio::test]
async fn postgres_comment_crud() {
    on_postgres("postgres_comment_crud", flows::comment_crud).await;
}

#[tokio::test]
async fn postgres_pagination() {
    on_postgres("postgres_pagination", flows::pagination).await;
}

#[tokio::test]
async fn postgres_users_self_only() {
    on_postgres("postgres_users_self_only", flows::users_self_only).await;
}

#[tokio::test]
async fn postgres_entry_authors() {
    on_postgres("postgres_entry_authors", flows::entry_authors).await;
}
