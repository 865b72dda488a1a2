//! What connection state recovery holds in memory, measured as the growth of the process's
//! resident memory (so, rounded to pages and allocator overhead included): bytes
//! per event in a namespace's history (for a comment-sized payload, encoded for each
//! transport as a broadcast would be), and bytes per connection for its session.
//!
//! `cargo run --release -p wsgate --example recovery_memory`

use serde_json::json;
use wsgate::adapter::{Emission, Outbound, WireFormat};
use wsgate::{App, AppConfig, Handshake, Recovery, SessionRequest, gateway};

/// The process's resident memory, in bytes (Linux).
fn live() -> isize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<isize>().ok())
        .map_or(0, |kib| kib * 1024)
}

struct Quiet;

#[gateway]
impl Quiet {
    #[subscribe_message("noop")]
    async fn noop(&self) {}
}

/// Two wire formats, as a room with Socket.IO and plain WebSocket members encodes them.
struct A;
impl WireFormat for A {
    fn encode_event(e: &Emission) -> bytes::Bytes {
        let (event, data, offset) = (e.event(), e.data().get(), e.offset().unwrap_or(""));
        bytes::Bytes::from(format!("42[\"{event}\",{data},\"{offset}\"]"))
    }
}
struct B;
impl WireFormat for B {
    fn encode_event(e: &Emission) -> bytes::Bytes {
        bytes::Bytes::from(format!("{{\"event\":\"{}\",\"data\":{}}}", e.event(), e.data().get()))
    }
}

fn main() {
    // Each setting in a process of its own: resident memory never shrinks back.
    let Some(mode) = std::env::args().nth(1) else {
        let exe = std::env::current_exe().unwrap_or_default();
        for mode in ["off", "on"] {
            let _ = std::process::Command::new(&exe).arg(mode).status();
        }
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    if let Ok(runtime) = runtime {
        runtime.block_on(measure(mode == "on"));
    }
}

async fn measure(recovery: bool) {
    const EVENTS: usize = 10_000;
    const CONNECTIONS: usize = 20_000;
    let comment = json!({
        "id": 123456, "body": "A comment of a typical length, about a hundred characters long, give or take.",
        "entryId": 42, "userId": 7, "createdAt": "2026-12-03T10:00:00Z", "updatedAt": "2026-12-03T10:00:00Z"
    });
    let size = serde_json::to_string(&comment).unwrap_or_default().len();
    let config = AppConfig {
        recovery: recovery.then(Recovery::default),
        outbound_capacity: 1 << 20,
        ..AppConfig::default()
    };
    let Ok(app) = App::builder().config(config).gateway(Quiet).build().await else { return };
    let server = app.server().clone();

    // Connections that ask for a session (one each, with recovery on).
    let before = live();
    let mut conns = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let mut hs = Handshake::new("/", "test");
        hs.session = SessionRequest::New;
        let Ok(accepted) = app.handshake(hs).await else { return };
        conns.push(accepted.open().await);
    }
    let per_connection = (live() - before) as f64 / CONNECTIONS as f64;

    // Events to a room nobody is in: what stays is the history (nothing without it).
    let before = live();
    for _ in 0..EVENTS {
        let _ = server.to("entry:42").emit("commentCreated", &comment);
    }
    let held = (live() - before) as f64 / EVENTS as f64;

    // Events delivered to a member over two transports: each is encoded once per format and
    // the encodings stay cached with the event (the history replaces the first events).
    let Some((member, mut rx)) = conns.pop() else { return };
    let _ = member.join("entry:42");
    let before = live();
    for _ in 0..EVENTS {
        let _ = server.to("entry:42").emit("commentCreated", &comment);
        while let Some(item) = rx.try_recv() {
            if let Outbound::Event(e) = item {
                let _ = (e.encoded::<A>(), e.encoded::<B>());
            }
        }
    }
    let encoded = held + (live() - before) as f64 / EVENTS as f64;
    println!(
        "recovery {}: {per_connection:.0} bytes per connection; history: {held:.0} bytes per \
         event held, {encoded:.0} while delivered over two transports ({size}-byte payload, \
         {EVENTS} events, resident memory growth)",
        if recovery { "on " } else { "off" },
    );
}
