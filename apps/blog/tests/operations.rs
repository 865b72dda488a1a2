//! What operators see and set: `/metrics`, allowed origins for the gateways and CORS for the
//! REST API. A real server on a loopback port, real WebSocket and HTTP clients.

mod common;

use std::time::Duration;

use common::{TestApp, spawn, spawn_configured};
use futures_util::SinkExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

/// The `/metrics` text.
async fn metrics(app: &TestApp) -> String {
    let res = app.client.get(app.url("/metrics")).send().await.expect("GET /metrics");
    assert_eq!(res.status(), StatusCode::OK);
    let content_type = res.headers()["content-type"].to_str().expect("text").to_owned();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    res.text().await.expect("body")
}

/// The value of the sample whose line starts with `series` (name and labels, exactly).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

/// Waits until the sample reaches `expected` (connection hooks run after the client is told
/// it is connected, so the gauge may lag by a moment).
async fn eventually(app: &TestApp, series: &str, expected: f64) -> String {
    for _ in 0..100 {
        let text = metrics(app).await;
        if sample(&text, series) == Some(expected) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = metrics(app).await;
    panic!("{series} never reached {expected}:\n{text}");
}

use common::recv_json as recv;

#[tokio::test]
async fn metrics_count_connections_messages_and_requests() {
    let app = spawn().await;
    let (token, user) = app.register("ops@example.com").await;
    let refused = connect_async(app.ws_url("/?token=garbage")).await;
    assert!(refused.is_err(), "a bad token is refused");

    let (mut ws, _) =
        connect_async(app.ws_url(&format!("/?token={token}"))).await.expect("upgrade");
    let show = json!({ "event": "showUser", "data": { "userId": user["id"] } });
    ws.send(Message::text(show.to_string())).await.expect("send");
    assert_eq!(recv(&mut ws).await["event"], "showUser");
    let forbidden = json!({ "event": "showUser", "data": { "userId": 999 } });
    ws.send(Message::text(forbidden.to_string())).await.expect("send");
    assert_eq!(recv(&mut ws).await["event"], "exception");
    ws.send(Message::text(json!({ "event": "x-invented-by-a-client" }).to_string()))
        .await
        .expect("send");
    assert_eq!(recv(&mut ws).await["event"], "exception");
    ws.send(Message::text("not json")).await.expect("send");
    assert_eq!(recv(&mut ws).await["event"], "exception");
    let (status, _) = app.get(&format!("/entries/{}", 12345), Some(&token)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let text = eventually(&app, r#"wsgate_connections{transport="ws"}"#, 1.0).await;
    let expect = [
        (r#"wsgate_connections_opened_total{transport="ws"}"#, 1.0),
        (r#"wsgate_handshakes_refused_total{transport="ws",status="401"}"#, 1.0),
        (r#"wsgate_messages_total{namespace="/",event="showUser",outcome="ok"}"#, 1.0),
        (r#"wsgate_messages_total{namespace="/",event="showUser",outcome="error"}"#, 1.0),
        (r#"wsgate_messages_total{namespace="/",event="",outcome="unrouted"}"#, 1.0),
        (r#"wsgate_messages_total{namespace="/",event="",outcome="undecodable"}"#, 1.0),
        (r#"wsgate_handler_duration_seconds_count{namespace="/",event="showUser"}"#, 2.0),
        (r#"http_requests_total{method="POST",route="/auth/register",status="201"}"#, 1.0),
        (r#"http_requests_total{method="GET",route="/entries/{entry_id}",status="404"}"#, 1.0),
        (r#"http_request_duration_seconds_count{method="GET",route="/entries/{entry_id}"}"#, 1.0),
    ];
    for (series, value) in expect {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }
    // The process's lingers: this test's runtime does not linger, the counter is read live.
    #[allow(clippy::cast_precision_loss)]
    let lingers = wsgate::runtime::lingers() as f64;
    assert_eq!(sample(&text, "wsgate_lingers_total"), Some(lingers), "lingers in\n{text}");
    assert!(!text.contains("x-invented-by-a-client"), "client event names are not labels");
    assert!(text.trim_end().ends_with("# EOF"), "OpenMetrics text ends with # EOF");

    ws.close(None).await.expect("close");
    eventually(&app, r#"wsgate_connections{transport="ws"}"#, 0.0).await;
}

/// A WebSocket upgrade to the root with `Origin`; the status of the handshake's answer.
async fn upgrade_from(app: &TestApp, token: &str, origin: Option<&str>) -> u16 {
    let mut request =
        app.ws_url(&format!("/?token={token}")).into_client_request().expect("request");
    if let Some(origin) = origin {
        request.headers_mut().insert("origin", origin.parse().expect("header"));
    }
    match connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tungstenite::Error::Http(response)) => {
            let body: Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default())
                    .expect("JSON");
            assert_eq!(body, json!({ "status": "error", "message": "Origin not allowed." }));
            response.status().as_u16()
        }
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

#[tokio::test]
async fn gateways_refuse_foreign_origins_by_default() {
    let app = spawn().await;
    let (token, _) = app.register("origin@example.com").await;
    let own = format!("http://{}", app.addr);
    assert_eq!(upgrade_from(&app, &token, None).await, 101, "no Origin: not a browser");
    assert_eq!(upgrade_from(&app, &token, Some(&own)).await, 101, "the blog's own page");
    // The blog listens on 127.0.0.1; its page opened as localhost is the same server's.
    let port = app.addr.port();
    let by_name = format!("http://localhost:{port}");
    assert_eq!(upgrade_from(&app, &token, Some(&by_name)).await, 101, "{by_name}");
    let other_port = format!("http://localhost:{}", port.wrapping_add(1));
    assert_eq!(upgrade_from(&app, &token, Some(&other_port)).await, 403, "{other_port}");
    assert_eq!(upgrade_from(&app, &token, Some("http://evil.example")).await, 403);
    // Refused before authentication: a foreign page learns nothing about the token.
    assert_eq!(upgrade_from(&app, "garbage", Some("http://evil.example")).await, 403);

    // No CORS grant for a foreign origin on the REST API.
    let res = app
        .client
        .get(app.url("/entries"))
        .header("origin", "http://evil.example")
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET");
    assert!(res.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn allowed_origins_open_the_gateways_and_cors_to_those_sites() {
    let app = spawn_configured(|config| {
        config.allowed_origins = "https://app.example.com, http://localhost:5173".into();
    })
    .await;
    let (token, _) = app.register("cors@example.com").await;
    assert_eq!(upgrade_from(&app, &token, Some("https://app.example.com")).await, 101);
    assert_eq!(upgrade_from(&app, &token, Some("http://localhost:5173")).await, 101);
    assert_eq!(upgrade_from(&app, &token, Some("https://evil.example")).await, 403);

    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/entries"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .expect("OPTIONS");
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "https://app.example.com");
    let res = app
        .client
        .get(app.url("/entries"))
        .header("origin", "https://evil.example")
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET");
    assert!(res.headers().get("access-control-allow-origin").is_none());
}

/// The blog's allocator is built to give back what the process frees and leaves unused
/// (.cargo/config.toml): background threads on, dirty pages returned within about a second.
/// Without them, what connections free as they fall asleep stays resident.
#[test]
fn jemalloc_gives_freed_memory_back_on_a_timer() {
    use tikv_jemalloc_ctl::{Access, AsName};
    assert!(tikv_jemalloc_ctl::opt::background_thread::read().expect("opt.background_thread"));
    let decay_ms: isize = b"opt.dirty_decay_ms\0".name().read().expect("opt.dirty_decay_ms");
    assert_eq!(decay_ms, 1000);
}
