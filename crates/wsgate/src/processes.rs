//! Several processes serving one port: a deployment option for machines with more cores, or
//! more connections than one process may open files for.
//!
//! The first process (the parent) starts `count - 1` copies of its own executable, with the
//! same arguments and environment, marked by [`COPY_ENV`] so that they start none themselves.
//! Each binds the same address with [`bind_reuseport`] (`SO_REUSEPORT`): the kernel spreads
//! incoming connections over the processes. Each process holds its own connections, so rooms
//! and broadcasts must be linked through a [`Broker`](crate::broker::Broker) (Redis), exactly
//! as for instances on several machines.
//!
//! ```no_run
//! # async fn serve() -> std::io::Result<()> {
//! let addr = "127.0.0.1:3000".parse().unwrap();
//! let listener = wsgate::processes::bind_reuseport(addr)?;
//! let copies = wsgate::processes::Copies::start(4)?; // none in a copy
//! // … serve `listener` until Ctrl-C or SIGTERM …
//! copies.stop().await; // SIGTERM to each copy, then wait for them
//! # Ok(()) }
//! ```

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The environment variable that marks a copy, with its index (1, 2, …); the parent is 0.
pub const COPY_ENV: &str = "WSGATE_PROCESS_INDEX";

/// Pending connections the kernel queues per process before `accept`.
const BACKLOG: u32 = 4096;

/// This process's index: 0 for the parent (or a single process), 1… for its copies.
pub fn index() -> usize {
    std::env::var(COPY_ENV).ok().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Whether this process is a copy started by [`Copies::start`].
pub fn is_copy() -> bool {
    index() > 0
}

/// Binds a listener on `addr` that other processes may bind too (`SO_REUSEPORT` on Unix;
/// elsewhere an ordinary listener). Port 0 would give each process a different port: choose
/// one when several processes share it.
pub fn bind_reuseport(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    // As `TcpListener::bind`: a restarted server may bind while old connections linger.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// The copies a parent started, watched until [`stop`](Self::stop): a copy that exits on its
/// own is logged (as an error) and not restarted.
#[derive(Debug)]
pub struct Copies {
    stopping: watch::Sender<bool>,
    watchers: Vec<JoinHandle<()>>,
}

impl Copies {
    /// In the parent, starts `count - 1` copies of this executable with the same arguments and
    /// environment (plus [`COPY_ENV`]); in a copy, or with `count <= 1`, starts none.
    pub fn start(count: usize) -> io::Result<Self> {
        let (stopping, _) = watch::channel(false);
        let mut copies = Self { stopping, watchers: Vec::new() };
        if is_copy() || count <= 1 {
            return Ok(copies);
        }
        let exe = std::env::current_exe()?;
        for i in 1..count {
            let child = tokio::process::Command::new(&exe)
                .args(std::env::args_os().skip(1))
                .env(COPY_ENV, i.to_string())
                // Should the parent die without stopping them, they go too.
                .kill_on_drop(true)
                .spawn()?;
            tracing::info!(index = i, pid = child.id(), "started a copy");
            copies.watchers.push(tokio::spawn(watch_copy(i, child, copies.stopping.subscribe())));
        }
        Ok(copies)
    }

    /// How many copies were started.
    pub fn len(&self) -> usize {
        self.watchers.len()
    }

    /// Whether none were (a copy, or one process).
    pub fn is_empty(&self) -> bool {
        self.watchers.is_empty()
    }

    /// Sends SIGTERM to every copy still running and waits until all have exited.
    pub async fn stop(self) {
        let _ = self.stopping.send(true);
        for watcher in self.watchers {
            let _ = watcher.await;
        }
    }
}

/// Waits for copy `index` to exit, or for the stop, then stops it and waits.
async fn watch_copy(
    index: usize,
    mut child: tokio::process::Child,
    mut stop: watch::Receiver<bool>,
) {
    let pid = child.id();
    tokio::select! {
        status = child.wait() => {
            tracing::error!(index, pid, ?status, "a copy exited on its own; it is not restarted");
            return;
        }
        _ = stop.wait_for(|s| *s) => {}
    }
    terminate(&mut child);
    match child.wait().await {
        Ok(status) => tracing::info!(index, pid, %status, "copy stopped"),
        Err(e) => tracing::warn!(index, pid, error = %e, "waiting for a copy"),
    }
}

/// SIGTERM (a graceful shutdown) on Unix; elsewhere, kill.
fn terminate(child: &mut tokio::process::Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id().and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        return;
    }
    let _ = child.start_kill();
}
