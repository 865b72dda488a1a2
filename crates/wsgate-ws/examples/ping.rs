//! The smallest wsgate server: one gateway answering `ping` over plain WebSocket.
//!
//! Run it with `cargo run --release -p wsgate-ws --example ping`, then connect to
//! `ws://127.0.0.1:3200/` and send `{"event":"ping","id":1}`: the reply is
//! `{"event":"ack","id":1,"data":"pong"}`. `PORT` changes the port.

use axum::Router;
use wsgate::{App, gateway};
use wsgate_ws::WsAdapter;

struct PingGateway;

#[gateway]
impl PingGateway {
    #[subscribe_message("ping")]
    async fn ping(&self) -> &'static str {
        "pong"
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(3200);
    let app = App::builder().gateway(PingGateway).build().await?;
    let router = app.mount(Router::new(), WsAdapter::new());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("ping gateway on ws://127.0.0.1:{port}/");
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
