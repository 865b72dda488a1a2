//! The REST API's key flows, written once and run against each database backend: SQLite
//! from `rest.rs`, PostgreSQL from `postgres.rs`. Each expects a fresh app of its own.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{TestApp, error, id};

/// Long enough for the clock to pass a millisecond, so that `updatedAt` visibly moves.
const TICK: Duration = Duration::from_millis(5);

fn forbidden() -> (StatusCode, Value) {
    error(StatusCode::FORBIDDEN, "Forbidden.")
}

fn entry_not_found() -> (StatusCode, Value) {
    error(StatusCode::NOT_FOUND, "Entry not found.")
}

fn comment_not_found() -> (StatusCode, Value) {
    error(StatusCode::NOT_FOUND, "Comment not found.")
}

/// Entries: anyone signed in reads, only the author updates and deletes; deleting takes
/// the entry's comments along.
pub async fn entry_crud(app: &TestApp) {
    let (alice, alice_user) = app.register("alice@example.com").await;
    let (bob, _) = app.register("bob@example.com").await;
    let entry = app.create_entry(&alice, "Original").await;
    let entry_id = id(&entry);
    let path = format!("/entries/{entry_id}");
    let missing = format!("/entries/{}", entry_id + 1000);

    assert_eq!(app.get(&path, Some(&bob)).await, (StatusCode::OK, entry.clone()));
    assert_eq!(app.get(&missing, Some(&alice)).await, entry_not_found());

    tokio::time::sleep(TICK).await;
    let change = json!({ "title": "Revised", "content": "Second thoughts." });
    let (status, updated) = app.put(&path, Some(&alice), &change).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!((&updated["title"], &updated["content"]), (&change["title"], &change["content"]));
    assert_eq!((&updated["id"], &updated["userId"]), (&entry["id"], &alice_user["id"]));
    assert_eq!(updated["createdAt"], entry["createdAt"]);
    assert!(updated["updatedAt"].as_str() > entry["updatedAt"].as_str(), "{updated}");
    assert_eq!(app.get(&path, Some(&bob)).await, (StatusCode::OK, updated.clone()));

    assert_eq!(app.put(&path, Some(&bob), &change).await, forbidden());
    assert_eq!(app.delete(&path, Some(&bob)).await, forbidden());
    assert_eq!(app.put(&missing, Some(&alice), &change).await, entry_not_found());
    assert_eq!(
        app.put(&path, Some(&alice), &json!({ "title": "", "content": "x" })).await,
        error(StatusCode::BAD_REQUEST, "title must be between 1 and 200 characters long.")
    );
    assert_eq!(app.get(&path, Some(&alice)).await, (StatusCode::OK, updated), "unchanged");

    let comments = [
        app.create_comment(&alice, entry_id, "Mine").await,
        app.create_comment(&bob, entry_id, "Yours").await,
    ];
    let other = app.create_entry(&bob, "Stays").await;
    let other_comment = app.create_comment(&alice, id(&other), "Stays too").await;

    assert_eq!(app.delete(&path, Some(&alice)).await, (StatusCode::NO_CONTENT, Value::Null));
    assert_eq!(app.get(&path, Some(&alice)).await, entry_not_found());
    assert_eq!(app.delete(&path, Some(&alice)).await, entry_not_found());
    assert_eq!(app.get(&format!("{path}/comments"), Some(&alice)).await, entry_not_found());
    let comment_path = format!("{path}/comments/{}", id(&comments[1]));
    assert_eq!(app.get(&comment_path, Some(&bob)).await, entry_not_found());
    // The comments are gone from the database, not just unreachable.
    let store = &app.state.store;
    assert_eq!(store.comments(entry_id).await.ok(), Some(vec![]));
    for comment in &comments {
        let left = store.comment(entry_id, id(comment)).await.ok();
        assert_eq!(left, Some(None), "{comment}");
    }
    let other_path = format!("/entries/{}/comments/{}", id(&other), id(&other_comment));
    assert_eq!(app.get(&other_path, Some(&bob)).await, (StatusCode::OK, other_comment));
}

/// Comments: anyone signed in reads, only the comment's author updates and deletes (not
/// even the entry's author); a comment is addressed under its own entry only.
pub async fn comment_crud(app: &TestApp) {
    let (alice, _) = app.register("alice@example.com").await;
    let (bob, bob_user) = app.register("bob@example.com").await;
    let entry_id = id(&app.create_entry(&alice, "Discuss").await);
    let other_id = id(&app.create_entry(&alice, "Elsewhere").await);
    let comment = app.create_comment(&bob, entry_id, "First!").await;
    let comment_id = id(&comment);
    let path = format!("/entries/{entry_id}/comments/{comment_id}");

    assert_eq!(app.get(&path, Some(&alice)).await, (StatusCode::OK, comment.clone()));
    let wrong_entry = format!("/entries/{other_id}/comments/{comment_id}");
    assert_eq!(app.get(&wrong_entry, Some(&bob)).await, comment_not_found());
    let no_entry = format!("/entries/{}/comments/{comment_id}", other_id + 1000);
    assert_eq!(app.get(&no_entry, Some(&bob)).await, entry_not_found());
    let no_comment = format!("/entries/{entry_id}/comments/{}", comment_id + 1000);
    assert_eq!(app.get(&no_comment, Some(&bob)).await, comment_not_found());

    tokio::time::sleep(TICK).await;
    let (status, updated) = app.put(&path, Some(&bob), &json!({ "body": "Edited" })).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["body"], "Edited");
    assert_eq!((&updated["id"], &updated["entryId"]), (&comment["id"], &json!(entry_id)));
    assert_eq!(
        (&updated["userId"], &updated["createdAt"]),
        (&bob_user["id"], &comment["createdAt"])
    );
    assert!(updated["updatedAt"].as_str() > comment["updatedAt"].as_str(), "{updated}");
    assert_eq!(app.get(&path, Some(&alice)).await, (StatusCode::OK, updated.clone()));

    // Alice wrote the entry, not the comment.
    assert_eq!(app.put(&path, Some(&alice), &json!({ "body": "Hers" })).await, forbidden());
    assert_eq!(app.delete(&path, Some(&alice)).await, forbidden());
    assert_eq!(
        app.put(&wrong_entry, Some(&bob), &json!({ "body": "x" })).await,
        comment_not_found()
    );
    assert_eq!(app.put(&no_entry, Some(&bob), &json!({ "body": "x" })).await, entry_not_found());
    assert_eq!(
        app.put(&path, Some(&bob), &json!({ "body": "" })).await,
        error(StatusCode::BAD_REQUEST, "body must be between 1 and 10000 characters long.")
    );
    assert_eq!(app.delete(&wrong_entry, Some(&bob)).await, comment_not_found());

    let second = app.create_comment(&alice, entry_id, "Second").await;
    assert_eq!(app.delete(&path, Some(&bob)).await, (StatusCode::NO_CONTENT, Value::Null));
    assert_eq!(app.get(&path, Some(&bob)).await, comment_not_found());
    assert_eq!(app.delete(&path, Some(&bob)).await, comment_not_found());
    assert_eq!(app.put(&path, Some(&bob), &json!({ "body": "x" })).await, comment_not_found());
    let list = app.get(&format!("/entries/{entry_id}/comments"), Some(&bob)).await;
    assert_eq!(list, (StatusCode::OK, json!([second])));
}

/// `?limit=&offset=` on entries (newest first) and comments (oldest first): defaults,
/// bounds, and the field named in a 400.
pub async fn pagination(app: &TestApp) {
    let (author, _) = app.register("pages@example.com").await;
    let token = Some(author.as_str());
    let mut entries = Vec::new();
    for n in 0..25 {
        entries.push(app.create_entry(&author, &format!("Entry {n}")).await);
    }
    entries.reverse(); // newest first, as listed
    let page = |from: usize, to: usize| json!(entries[from..to]);

    assert_eq!(app.get("/entries", token).await, (StatusCode::OK, page(0, 20)));
    assert_eq!(app.get("/entries?offset=20", token).await, (StatusCode::OK, page(20, 25)));
    assert_eq!(app.get("/entries?limit=3&offset=2", token).await, (StatusCode::OK, page(2, 5)));
    assert_eq!(app.get("/entries?limit=1", token).await, (StatusCode::OK, page(0, 1)));
    assert_eq!(app.get("/entries?limit=100", token).await, (StatusCode::OK, page(0, 25)));
    assert_eq!(app.get("/entries?offset=25", token).await, (StatusCode::OK, json!([])));
    assert_eq!(app.get("/entries?offset=1000000", token).await, (StatusCode::OK, json!([])));

    let bad = |message: &str| error(StatusCode::BAD_REQUEST, message);
    assert_eq!(app.get("/entries?limit=0", token).await, bad("limit must be between 1 and 100."));
    assert_eq!(app.get("/entries?limit=101", token).await, bad("limit must be between 1 and 100."));
    assert_eq!(app.get("/entries?limit=-5", token).await, bad("limit must be between 1 and 100."));
    assert_eq!(app.get("/entries?offset=-1", token).await, bad("offset must be at least 0."));
    for query in ["limit=abc", "limit=", "offset=1.5"] {
        let (status, body) = app.get(&format!("/entries?{query}"), token).await;
        assert_eq!(
            (status, &body["statusCode"]),
            (StatusCode::BAD_REQUEST, &json!(400)),
            "{query}"
        );
        let field = query.split('=').next().unwrap_or_default();
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(&format!("{field}: ")), "{query}: {body}");
    }

    let entry_id = id(&entries[0]);
    let mut comments = Vec::new();
    for n in 0..5 {
        let body = format!("Comment {n}");
        comments.push(app.create_comment(&author, entry_id, &body).await);
    }
    let path = format!("/entries/{entry_id}/comments");
    assert_eq!(app.get(&path, token).await, (StatusCode::OK, json!(comments)));
    let (status, body) = app.get(&format!("{path}?limit=2&offset=1"), token).await;
    assert_eq!((status, body), (StatusCode::OK, json!(comments[1..3])));
    let (status, body) = app.get(&format!("{path}?offset=4"), token).await;
    assert_eq!((status, body), (StatusCode::OK, json!(comments[4..])));
    assert_eq!(
        app.get(&format!("{path}?limit=101"), token).await,
        bad("limit must be between 1 and 100.")
    );
    assert_eq!(
        app.get(&format!("{path}?offset=-1"), token).await,
        bad("offset must be at least 0.")
    );
    let empty = format!("/entries/{}/comments", id(&entries[1]));
    assert_eq!(app.get(&empty, token).await, (StatusCode::OK, json!([])));
    let missing = format!("/entries/{}/comments?limit=5", entry_id + 1000);
    assert_eq!(app.get(&missing, token).await, entry_not_found());
}

/// `GET /users/{id}`: one's own account only; any other id is 403, whether it exists or not.
pub async fn users_self_only(app: &TestApp) {
    let (alice, alice_user) = app.register("alice@example.com").await;
    let (_, bob_user) = app.register("bob@example.com").await;
    let own = format!("/users/{}", id(&alice_user));
    assert_eq!(app.get(&own, Some(&alice)).await, (StatusCode::OK, alice_user.clone()));
    assert_eq!(app.get(&format!("/users/{}", id(&bob_user)), Some(&alice)).await, forbidden());
    let nobody = format!("/users/{}", id(&bob_user) + 1000);
    assert_eq!(app.get(&nobody, Some(&alice)).await, forbidden());
}

/// An entry's authors: its writer and its commenters, once each, by id, with their names and
/// never an e-mail address; nobody who did not write there.
pub async fn entry_authors(app: &TestApp) {
    let (alice, alice_user) = app.register("alice@example.com").await;
    let (bob, bob_user) = app.register("bob@example.com").await;
    app.register("carol@example.com").await; // registered, silent: never listed
    let entry_id = id(&app.create_entry(&alice, "Who wrote here").await);
    let path = format!("/entries/{entry_id}/authors");
    let author = |user: &Value| json!({ "id": user["id"], "firstName": user["firstName"], "lastName": user["lastName"] });
    assert_eq!(app.get(&path, Some(&bob)).await, (StatusCode::OK, json!([author(&alice_user)])));
    app.create_comment(&bob, entry_id, "One").await;
    app.create_comment(&bob, entry_id, "Two").await;
    app.create_comment(&alice, entry_id, "Three").await;
    let both = json!([author(&alice_user), author(&bob_user)]);
    assert_eq!(app.get(&path, Some(&bob)).await, (StatusCode::OK, both));
    let missing = format!("/entries/{}/authors", entry_id + 1000);
    assert_eq!(app.get(&missing, Some(&alice)).await, entry_not_found());
}
