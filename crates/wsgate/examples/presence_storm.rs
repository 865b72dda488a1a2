//! What presence costs on one instance: 10 000 members joining one room, each tracked (a key
//! and a `{userId, firstName}` meta) and watching the room's `presenceDiff`.
//!
//! Prints, each from a process of its own:
//! - `memory`: the resident memory per tracked member (growth of the process's resident
//!   memory, so rounded to pages and allocator overhead included), members tracked without
//!   watching, once their changes went out;
//! - `storm`: the CPU time of the storm and of delivering its diffs, and the `presenceDiff`
//!   frames and their bytes: with the coalescing interval, and what one diff per join would
//!   have cost.
//!
//! `cargo run --release -p wsgate --example presence_storm [members] [interval_ms]`

use std::time::{Duration, Instant};

use serde_json::json;
use wsgate::adapter::{Inbound, Outbound, OutboundRx, to_payload};
use wsgate::presence::PresenceConfig;
use wsgate::{App, AppConfig, Connection, Data, Handshake, gateway};

/// Counts the bytes the program holds (allocated and not yet freed), while a profiler runs:
/// what a member costs while it is tracked, without what the allocator keeps of freed,
/// transient allocations. Outside a profile it passes allocations through.
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn held() -> isize {
    dhat::HeapStats::get().curr_bytes as isize
}

/// The process's resident memory, in bytes (Linux).
fn resident() -> isize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<isize>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// User and system CPU time of this process so far (Linux, clock ticks of 10 ms).
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // After the command's closing parenthesis: state is field 0, utime 11, stime 12.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

struct Lobby;

#[gateway]
impl Lobby {
    #[subscribe_message("join")]
    async fn join(&self, conn: Connection) -> Result<(), wsgate::WsError> {
        Ok(conn.join("entry:1")?)
    }

    #[subscribe_message("track")]
    async fn track(&self, conn: Connection, Data(id): Data<u64>) -> Result<(), wsgate::WsError> {
        let meta = json!({ "userId": id, "firstName": format!("Reader{id}") });
        conn.track("entry:1", id.to_string(), &meta)
    }

    #[subscribe_message("enter")]
    async fn enter(&self, conn: Connection, Data(id): Data<u64>) -> Result<(), wsgate::WsError> {
        let meta = json!({ "userId": id, "firstName": format!("Reader{id}") });
        conn.track("entry:1", id.to_string(), &meta)?;
        conn.watch_presence("entry:1");
        Ok(())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Each measure in a process of its own: resident memory never shrinks back.
    if args.first().is_none_or(|a| a != "memory" && a != "storm") {
        let exe = std::env::current_exe().unwrap_or_default();
        for mode in ["memory", "storm"] {
            let _ = std::process::Command::new(&exe).arg(mode).args(&args).status();
        }
        return;
    }
    let members: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let interval: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(100);
    let interval = Duration::from_millis(interval);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    if let Ok(runtime) = runtime {
        if args[0] == "memory" {
            runtime.block_on(memory(members, interval));
        } else {
            runtime.block_on(storm(members, interval));
        }
    }
}

async fn app_with(
    members: usize,
    interval: Duration,
) -> Option<(App, Vec<(Connection, OutboundRx)>)> {
    let config = AppConfig {
        presence: PresenceConfig { interval, ..PresenceConfig::default() },
        outbound_capacity: 1 << 16,
        max_connections_per_peer: None,
        rate_limit: None,
        ..AppConfig::default()
    };
    let app = App::builder().config(config).gateway(Lobby).build().await.ok()?;
    let mut conns = Vec::with_capacity(members);
    for _ in 0..members {
        let accepted = app.handshake(Handshake::new("/", "test")).await.ok()?;
        conns.push(accepted.open().await);
    }
    // The connections' own memory is not presence's.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Some((app, conns))
}

async fn memory(members: usize, interval: Duration) {
    let Some((app, conns)) = app_with(members, interval).await else { return };
    // Members of the room first: what membership costs is not presence's either.
    let start = resident();
    for (conn, _) in &conns {
        let Ok(data) = to_payload(&()) else { return };
        app.dispatch(conn, Inbound::new("join", data)).await;
    }
    tokio::time::sleep(interval * 3).await;
    // Testing mode: statistics only, no profile file written.
    let profiler = dhat::Profiler::builder().testing().trim_backtraces(Some(4)).build();
    let (before, held_before) = (resident(), held());
    for (i, (conn, _)) in conns.iter().enumerate() {
        let Ok(data) = to_payload(&i) else { return };
        app.dispatch(conn, Inbound::new("track", data)).await;
    }
    // The changes go out (to no other instance here) and the pending delta is let go.
    tokio::time::sleep(interval * 3).await;
    let per = |bytes: isize| bytes as f64 / members as f64;
    println!(
        "{members} members tracked in one room (key and meta `{{userId, firstName}}`; {} \
         listed): {:.0} bytes held per tracked member, {:.0} of resident memory (the \
         allocator's share and the storm's transient allocations included); the room \
         membership itself: {:.0} of resident memory per member",
        app.server().presence("entry:1").len(),
        per(held() - held_before),
        per(resident() - before),
        per(before - start),
    );
    drop(profiler);
    drop(conns);
}

async fn storm(members: usize, interval: Duration) {
    let Some((app, mut conns)) = app_with(members, interval).await else { return };
    let (cpu_before, started) = (cpu(), Instant::now());

    // The storm: every member enters as fast as the app takes it, the presence task running
    // its interval meanwhile (a real storm spreads over more intervals: fewer members per diff).
    for (i, (conn, _)) in conns.iter().enumerate() {
        let Ok(data) = to_payload(&i) else { return };
        app.dispatch(conn, Inbound::new("enter", data)).await;
        if i % 500 == 499 {
            tokio::task::yield_now().await;
        }
    }
    let storm_time = started.elapsed();
    // Let the last diffs go out.
    tokio::time::sleep(interval * 3).await;
    let cpu_used = cpu() - cpu_before;

    let (mut frames, mut bytes, mut joins_seen) = (0usize, 0usize, 0usize);
    for (_, rx) in &mut conns {
        while let Some(item) = rx.try_recv() {
            if let Outbound::Event(e) = item
                && e.event().as_str() == "presenceDiff"
            {
                frames += 1;
                bytes += e.data().get().len();
                let data: serde_json::Value =
                    serde_json::from_str(e.data().get()).unwrap_or_default();
                joins_seen += data["joins"].as_array().map_or(0, Vec::len);
            }
        }
    }
    let listed = app.server().presence("entry:1").len();
    // One diff per join: member i is told of the i joins from its own on.
    let uncoalesced_frames: usize = (1..=members).sum();
    let diff_bytes_per_join = bytes.checked_div(joins_seen).unwrap_or(0);
    println!(
        "{members} members joining one room, diffs every {interval:?}: storm {storm_time:.2?}, CPU \
         {cpu_used:?} ({:.1} µs per member, diffs included); {listed} listed; {frames} \
         presenceDiff frames ({:.1} per member; one diff per join would be \
         {uncoalesced_frames}), {:.1} MB of diff data ({joins_seen} joins told, \
         ~{diff_bytes_per_join} bytes each)",
        cpu_used.as_micros() as f64 / members as f64,
        frames as f64 / members as f64,
        bytes as f64 / 1e6,
    );
}
