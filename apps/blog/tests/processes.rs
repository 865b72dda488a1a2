//! `blog serve` with `PROCESSES=2`: two processes on one port (`SO_REUSEPORT`), linked by
//! Redis. Connections land on both; a comment's `commentCreated` reaches the clients of both;
//! SIGTERM to the first stops both. The real binary, on SQLite. Skipped with a notice when no
//! Redis listens at `TEST_REDIS_URL` (default `redis://127.0.0.1:6379/9`, a database of its
//! own so that the streams' keys meet no other blog's), unless `CI=true`.
#![cfg(unix)]
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Clients opened: enough that both processes get some (the kernel hashes each connection).
const CLIENTS: usize = 40;

/// The `pid=…` of every log line containing `needle`.
fn pids(log: &Mutex<Vec<String>>, needle: &str) -> Vec<u32> {
    let mut pids: Vec<u32> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(needle))
        .filter_map(|l| {
            l.split("pid=").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Live connections of whichever process answers a fresh HTTP connection.
async fn connections(http: &reqwest::Client, base: &str) -> u64 {
    let text = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("wsgate_connections{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test]
async fn two_processes_share_a_port_and_their_rooms() {
    let redis = std::env::var("TEST_REDIS_URL").ok();
    if redis.is_none() && std::net::TcpStream::connect("127.0.0.1:6379").is_err() {
        assert!(!std::env::var("CI").is_ok_and(|v| v == "true"), "Redis is not reachable");
        eprintln!("SKIPPED: no Redis at 127.0.0.1:6379 (set TEST_REDIS_URL)");
        return;
    }
    let redis = redis.unwrap_or_else(|| "redis://127.0.0.1:6379/9".into());
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let mut blog = Command::new(env!("CARGO_BIN_EXE_blog"))
        .arg("serve")
        .env("PORT", port.to_string())
        .env("HOST", "127.0.0.1")
        .env("DATABASE_URL", format!("sqlite://{}/blog.db", dir.path().display()))
        .env("JWT_SECRET", "processes-test-secret-processes-test-secret")
        .env("REDIS_URL", &redis)
        .env("PROCESSES", "2")
        .env("MAX_CONNECTIONS_PER_PEER", "0")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let stderr = blog.stderr.take().unwrap();
    let lines = log.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line);
        }
    });
    let started = Instant::now();
    while pids(&log, "listening on").len() < 2 {
        assert!(started.elapsed() < Duration::from_secs(30), "{:#?}", log.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let serving = pids(&log, "listening on");
    assert!(serving.contains(&blog.id()), "{serving:?}");

    // A fresh HTTP connection for every request, so that each may reach either process.
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let register = json!({
        "email": "reuse@example.com", "password": "correct horse battery",
        "firstName": "Re", "lastName": "Use"
    });
    let body: Value = http
        .post(format!("{base}/auth/register"))
        .json(&register)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = body["token"].as_str().unwrap().to_owned();
    let entry: Value = http
        .post(format!("{base}/entries"))
        .bearer_auth(&token)
        .json(&json!({ "title": "Two processes", "content": "One port." }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entry_id = entry["id"].as_i64().unwrap();

    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (mut ws, _) =
            tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/?token={token}"))
                .await
                .unwrap();
        let subscribe = json!({ "type": "subscribeEntry", "entryId": entry_id, "id": 1 });
        ws.send(Message::text(subscribe.to_string())).await.unwrap();
        loop {
            let frame = ws.next().await.unwrap().unwrap();
            if frame.to_text().unwrap_or("").contains(r#""id":1"#) {
                break;
            }
        }
        clients.push(ws);
    }

    // Each process counts its own: two non-zero counts that add up to all the clients.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..100 {
        seen.insert(connections(&http, &base).await);
        if seen.iter().any(|&a| a > 0 && a < CLIENTS as u64 && seen.contains(&(CLIENTS as u64 - a)))
        {
            break;
        }
    }
    assert!(
        seen.iter().any(|&a| a > 0 && a < CLIENTS as u64 && seen.contains(&(CLIENTS as u64 - a))),
        "connection counts seen: {seen:?}"
    );

    eprintln!("processes {serving:?}, connection counts seen {seen:?}");
    let comment = json!({ "body": "to every process" });
    let posted = http
        .post(format!("{base}/entries/{entry_id}/comments"))
        .bearer_auth(&token)
        .json(&comment)
        .send()
        .await
        .unwrap();
    assert!(posted.status().is_success(), "{}", posted.text().await.unwrap());
    for ws in &mut clients {
        let received = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let frame = ws.next().await.unwrap().unwrap();
                if frame.to_text().unwrap_or("").contains("commentCreated") {
                    break;
                }
            }
        })
        .await;
        assert!(received.is_ok(), "a client did not receive commentCreated");
    }

    let status = Command::new("kill").args(["-TERM", &blog.id().to_string()]).status().unwrap();
    assert!(status.success());
    let started = Instant::now();
    let exited = loop {
        if let Some(status) = blog.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the blog did not stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(exited.success(), "{exited}");
    for pid in serving {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} still runs"
        );
    }
}
