//! What the Redis suites share: a `redis-server` of a test's own, and the loud skip.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::Write as _;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wsgate::{App, Connection, Data, WsException, gateway};

/// Says loudly that a test is skipped, or fails it under `CI=true`.
pub(crate) fn unavailable(test: &str, message: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}");
    }
    let rule = "=".repeat(78);
    let _ = writeln!(std::io::stderr(), "\n{rule}\nSKIPPED {test}: {message}\n{rule}\n");
}

/// A `redis-server` of this test's own, on a free port, with nothing kept on disk.
pub(crate) struct OwnRedis {
    pub(crate) port: u16,
    child: Child,
}

impl OwnRedis {
    pub(crate) fn start(port: u16) -> std::io::Result<Self> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Self { port, child })
    }

    /// One on a free port, ready; `None` (skipped loudly, or failed under CI) without
    /// `redis-server`.
    pub(crate) async fn ready_on_free_port(test: &str) -> Option<Self> {
        match Self::start(free_port()) {
            Ok(redis) => {
                redis.ready().await;
                Some(redis)
            }
            Err(e) => {
                unavailable(
                    test,
                    &format!(
                        "cannot run redis-server ({e}); install it (`apt-get install redis-server`)."
                    ),
                );
                None
            }
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub(crate) async fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "redis-server on {} did not start", self.port);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A gateway whose `join` puts the connection in a room.
pub(crate) struct RoomGateway;

#[gateway]
impl RoomGateway {
    #[subscribe_message("join")]
    fn join(&self, conn: Connection, Data(room): Data<String>) -> Result<(), WsException> {
        conn.join(room)
    }
}

/// Waits until every app's broker reports `connected`.
pub(crate) async fn until_connected(apps: &[&App], connected: bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !apps.iter().all(|a| a.server().broker_status().unwrap().connected == connected) {
        assert!(Instant::now() < deadline, "brokers never became connected={connected}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
