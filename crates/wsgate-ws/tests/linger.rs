//! A server on `wsgate::runtime`'s lingering runtime: it answers every message, in order, and
//! its worker lingers for clients that pipeline, never for clients that wait for each answer.
//! A real server on a loopback port and real clients; in a test binary of its own: the count
//! of lingers is the process's.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use axum::Router;
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use wsgate::runtime::{Linger, lingers, with_linger};
use wsgate::{App, AppConfig, Claims, Data, JwtAuth, JwtKeys, gateway};
use wsgate_ws::WsAdapter;

mod common;
use common::{Client, Fixture, recv, send};

struct Echo;

#[gateway]
impl Echo {
    #[subscribe_message("echo")]
    async fn echo(&self, Data(data): Data<Value>) -> Value {
        data
    }
}

/// The server, on a one-worker lingering runtime of its own thread.
fn start() -> Fixture {
    let keys = JwtKeys::hs256(b"a test secret that is long enough");
    let (tx, rx) = std::sync::mpsc::channel();
    let server_keys = keys.clone();
    std::thread::spawn(move || {
        let runtime =
            with_linger(Linger::new(Duration::from_micros(50))).worker_threads(1).build().unwrap();
        runtime.block_on(async move {
            let auth = JwtAuth::new(server_keys, |claims: Claims| async move {
                Ok::<_, &str>(Some(claims.sub))
            });
            // No rate limit: the clients send as fast as they can.
            let config = AppConfig { rate_limit: None, ..AppConfig::default() };
            let app =
                App::builder().config(config).middleware(auth).gateway(Echo).build().await.unwrap();
            let server = app.server().clone();
            let router = app.mount(Router::new(), WsAdapter::new());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send((listener.local_addr().unwrap(), server)).unwrap();
            wsgate_transport::serve(listener, router).await.unwrap();
        });
    });
    let (addr, server) = rx.recv().unwrap();
    Fixture { addr, server, keys, disconnects: Default::default() }
}

/// Sends `n` echoes in one write, then reads their answers: each in order, with its data.
async fn burst(ws: &mut Client, client: u64, round: u64, n: u64) {
    for i in 0..n {
        let frame = json!({"event": "echo", "data": [client, round, i], "id": i});
        ws.feed(Message::text(frame.to_string())).await.unwrap();
    }
    ws.flush().await.unwrap();
    for i in 0..n {
        let reply = recv(ws).await;
        assert_eq!(reply["data"], json!([client, round, i]), "client {client}, round {round}");
    }
}

#[tokio::test]
async fn lingers_for_pipelining_clients_and_answers_every_message_in_order() {
    let fixture = start();
    let mut clients = Vec::new();
    for id in 0..8 {
        clients.push(fixture.connect("/ws", id).await);
    }

    // Clients that wait for each answer: one message per read, no linger.
    let waiting = clients.iter_mut().enumerate().map(|(c, ws)| async move {
        for i in 0..100 {
            send(ws, json!({"event": "echo", "data": [c, i], "id": i})).await;
            assert_eq!(recv(ws).await["data"], json!([c, i]));
        }
    });
    futures_util::future::join_all(waiting).await;
    assert_eq!(lingers(), 0, "a worker lingered for clients that wait for each answer");

    // Clients that keep 32 messages in flight: the worker lingers, and nothing is lost.
    let pipelining = clients.iter_mut().enumerate().map(|(c, ws)| async move {
        for round in 0..20 {
            burst(ws, c as u64, round, 32).await;
        }
    });
    futures_util::future::join_all(pipelining).await;
    assert!(lingers() > 0, "the worker never lingered for pipelining clients");
}
