//! `/openapi.json` describes every REST route the router serves, with its statuses and whether
//! it needs a token; `/docs` renders it.

mod common;

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::Value;

const PROTECTED: &[(&str, &str)] = &[
    ("get", "/users/{id}"),
    ("get", "/entries"),
    ("post", "/entries"),
    ("get", "/entries/{id}"),
    ("put", "/entries/{id}"),
    ("delete", "/entries/{id}"),
    ("get", "/entries/{id}/authors"),
    ("get", "/entries/{entryId}/comments"),
    ("post", "/entries/{entryId}/comments"),
    ("get", "/entries/{entryId}/comments/{id}"),
    ("put", "/entries/{entryId}/comments/{id}"),
    ("delete", "/entries/{entryId}/comments/{id}"),
];
const PUBLIC: &[(&str, &str)] = &[
    ("post", "/auth/register"),
    ("post", "/auth/login"),
    ("get", "/healthz"),
    ("get", "/metrics"),
];

#[tokio::test]
async fn the_document_lists_every_route_with_its_security_and_statuses() {
    let app = common::spawn().await;
    let (status, doc) = app.get("/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc["openapi"]);

    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object().expect("operations").keys().map(|m| (m.clone(), path.clone()))
        })
        .collect();
    let expected: BTreeSet<(String, String)> =
        PROTECTED.iter().chain(PUBLIC).map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
    assert_eq!(documented, expected);
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");

    for (method, path) in PROTECTED.iter().chain(PUBLIC) {
        let op = &doc["paths"][path][method];
        let protected = PROTECTED.contains(&(method, path));
        let security = op["security"].as_array().map_or(0, Vec::len);
        assert_eq!(security > 0, protected, "{method} {path}: security {}", op["security"]);
        let documents_401 = op["responses"].get("401").is_some();
        // Login answers 401 for a wrong password; every other public route never does.
        assert_eq!(documents_401, protected || *path == "/auth/login", "{method} {path}: 401");
    }
    // The error body and the entities are schemas of their own.
    for schema in ["ErrorBody", "User", "Entry", "Comment", "AuthResponse"] {
        assert!(doc["components"]["schemas"].get(schema).is_some(), "schema {schema}");
    }
    let comment = &doc["components"]["schemas"]["Comment"]["properties"];
    for field in ["id", "body", "entryId", "userId", "createdAt", "updatedAt"] {
        assert!(comment.get(field).is_some(), "Comment.{field} in camelCase");
    }
    let limit = doc["paths"]["/entries"]["get"]["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .find(|p| p["name"] == "limit")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!((limit["in"].as_str(), &limit["schema"]["maximum"]), (Some("query"), &100.into()));
}

#[tokio::test]
async fn every_documented_route_is_served() {
    let app = common::spawn().await;
    for (method, path) in PROTECTED {
        let concrete = path.replace("{entryId}", "1").replace("{id}", "1");
        let method = method.to_uppercase().parse().expect("method");
        let res = app.client.request(method, app.url(&concrete)).send().await.expect("request");
        // Without a token every protected route says 401: it exists, and it is protected.
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    for path in ["/healthz", "/metrics"] {
        let res = app.client.get(app.url(path)).send().await.expect("request");
        assert_eq!(res.status(), StatusCode::OK, "{path} without a token");
    }
    let (status, body) = app.post("/auth/login", None, &serde_json::json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "login without a token: {body}");
}

#[tokio::test]
async fn the_docs_page_renders_the_document_without_a_cdn() {
    let app = common::spawn().await;
    let res = app.client.get(app.url("/docs")).send().await.expect("GET /docs");
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"].to_str().expect("text").starts_with("text/html"));
    let page = res.text().await.expect("page");
    assert!(page.contains("fetch('/openapi.json')"));
    assert!(!page.contains("https://"), "nothing is loaded from elsewhere");
}
