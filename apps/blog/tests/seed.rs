//! `blog seed` on a real SQLite file: demo data once, then nothing more; the demo users can log in.

mod common;

use blog::seed::{self, Seeded};
use common::spawn;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn seeding_adds_demo_data_once_and_its_users_can_log_in() {
    let app = spawn().await;
    let first = seed::run(&app.state.store).await.expect("seed");
    assert_eq!(first, Seeded { users: 2, created: [true, true], entries: 2, comments: 4 });
    let again = seed::run(&app.state.store).await.expect("seed again");
    assert_eq!(again, Seeded::default());

    for (email, first_name, _) in seed::USERS {
        let body = json!({ "email": email, "password": seed::PASSWORD });
        let (status, login) = app.post("/auth/login", None, &body).await;
        assert_eq!(status, StatusCode::OK, "{email}: {login}");
        assert_eq!(login["user"]["firstName"], first_name);
    }
    let entry = app.state.store.entry(1).await.expect("query").expect("entry 1");
    assert_eq!(app.state.store.comments(entry.id).await.expect("query").len(), 2);
}

/// A demo user registered by hand beforehand keeps its own password, and the seed says so
/// (it is not among the users created).
#[tokio::test]
async fn a_demo_user_that_exists_already_is_not_counted_as_created() {
    let app = spawn().await;
    let (ada, _, _) = seed::USERS[0];
    let body =
        json!({ "email": ada, "password": "another password", "firstName": "A", "lastName": "L" });
    let (status, _) = app.post("/auth/register", None, &body).await;
    assert_eq!(status, StatusCode::CREATED);
    let seeded = seed::run(&app.state.store).await.expect("seed");
    assert_eq!(seeded.created, [false, true]);
    assert_eq!(seeded.users, 1);
    let login = json!({ "email": ada, "password": seed::PASSWORD });
    assert_eq!(app.post("/auth/login", None, &login).await.0, StatusCode::UNAUTHORIZED);
}

/// The demo page's login form names the demo users and their password: the seed's own.
#[tokio::test]
async fn the_demo_page_names_the_seeds_users_and_password() {
    let app = spawn().await;
    let page = app.client.get(app.url("/")).send().await.expect("GET /").text().await;
    let page = page.expect("the page");
    for (email, _, _) in seed::USERS {
        assert!(page.contains(email), "{email}");
    }
    assert!(page.contains(seed::PASSWORD));
}
