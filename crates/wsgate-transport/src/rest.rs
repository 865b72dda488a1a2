//! Sessions at rest: a quiet session's task ends, and its state waits on one thread of the
//! process (`wsgate-rest`), with no task and no registration with tokio's reactor, until the
//! client sends something, the server queues something for it, closes it, or its heartbeat
//! is due. Then a new task goes on with it.
//!
//! An idle connection then holds its state and its connection handle, not a task (512 B
//! with the session inside) and tokio's registration of its socket (256 B): the way an
//! Erlang process hibernates, and Phoenix's channels with it after `hibernate_after`.
//!
//! The thread waits on an epoll instance of its own ([`mio`]), where each resting session's
//! socket is registered for reading; the session's other sources (its queues, its close, its
//! heartbeat's deadline) are given a waker that names it.

use std::collections::HashMap;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Context, Wake, Waker};

use mio::unix::SourceFd;
use mio::{Events, Interest, Token};

/// A session at rest, as the resting thread sees it.
pub(crate) trait Sleeper: Send {
    /// Its socket, watched for reading.
    fn socket(&self) -> &TcpStream;
    /// Where it wakes.
    fn waking(&self) -> Arc<Waking>;
    /// Registers `cx`'s waker with its other sources; `true` when one of them is ready
    /// already (the session then wakes at once).
    fn arm(&mut self, cx: &mut Context<'_>) -> bool;
    /// Wakes it: spawns the task that goes on with it. Called on a thread of its runtime (by
    /// its [`Waking`]).
    fn wake(self: Box<Self>);
}

/// Where a runtime's sessions wake: a task of the runtime spawns their new tasks, so that a
/// task's memory comes from, and goes back to, the runtime's threads (an allocator keeps
/// memory by thread: tasks made on the resting thread and freed on the runtime's would
/// leave it with room it never uses again).
pub(crate) struct Waking {
    /// The sessions woken, and `false` once the runtime's task is gone (the runtime shut
    /// down): then a session woken is dropped, and its connections let go, at once.
    woken: Mutex<(Vec<Box<dyn Sleeper>>, bool)>,
    notify: tokio::sync::Notify,
}

/// Marks a runtime's [`Waking`] gone when its task is dropped.
struct Alive(Arc<Waking>);

impl Drop for Alive {
    fn drop(&mut self) {
        let woken = {
            let mut woken = self.0.woken();
            woken.1 = false;
            std::mem::take(&mut woken.0)
        };
        drop(woken);
    }
}

impl Waking {
    /// The current runtime's, started if it has none.
    pub(crate) fn current() -> Arc<Self> {
        static BY_RUNTIME: Mutex<Vec<(tokio::runtime::Id, Weak<Waking>)>> = Mutex::new(Vec::new());
        let runtime = tokio::runtime::Handle::current();
        let id = runtime.id();
        let mut all = BY_RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|(_, waking)| waking.strong_count() > 0);
        if let Some(waking) = all.iter().find(|(of, _)| *of == id).and_then(|(_, w)| w.upgrade()) {
            return waking;
        }
        let waking = Arc::new(Waking {
            woken: Mutex::new((Vec::new(), true)),
            notify: tokio::sync::Notify::new(),
        });
        all.push((id, Arc::downgrade(&waking)));
        runtime.spawn(Alive(waking.clone()).run());
        waking
    }

    fn woken(&self) -> MutexGuard<'_, (Vec<Box<dyn Sleeper>>, bool)> {
        // Every critical section is a push or a swap: consistent after a panic.
        self.woken.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands a session woken to the runtime.
    fn push(&self, sleeper: Box<dyn Sleeper>) {
        let mut woken = self.woken();
        if !woken.1 {
            drop(woken);
            // The runtime is gone: so is the session.
            drop(sleeper);
            return;
        }
        woken.0.push(sleeper);
        drop(woken);
        // Stored if the task is busy: it looks again.
        self.notify.notify_one();
    }
}

impl Alive {
    /// Spawns the tasks of the sessions woken; ends with the runtime.
    async fn run(self) {
        loop {
            self.0.notify.notified().await;
            let woken = std::mem::take(&mut self.0.woken().0);
            for sleeper in woken {
                sleeper.wake();
            }
        }
    }
}

/// The resting thread's mailbox.
struct Poller {
    registry: mio::Registry,
    waker: mio::Waker,
    inbox: Mutex<Inbox>,
}

#[derive(Default)]
struct Inbox {
    /// Sessions to put to rest.
    parked: Vec<Box<dyn Sleeper>>,
    /// Keys of sessions whose sources woke them.
    woken: Vec<u64>,
}

impl Inbox {
    fn is_empty(&self) -> bool {
        self.parked.is_empty() && self.woken.is_empty()
    }
}

/// The mio waker's token; sessions' keys start above it.
const WAKER: Token = Token(0);

fn poller() -> &'static Poller {
    static POLLER: OnceLock<Poller> = OnceLock::new();
    POLLER.get_or_init(|| {
        let poll = mio::Poll::new().expect("an epoll instance for resting sessions");
        let registry = poll.registry().try_clone().expect("the epoll instance's registry");
        let waker = mio::Waker::new(poll.registry(), WAKER).expect("the resting thread's waker");
        std::thread::Builder::new()
            .name("wsgate-rest".into())
            .spawn(move || run(poll))
            .expect("the resting thread starts");
        Poller { registry, waker, inbox: Mutex::default() }
    })
}

impl Poller {
    fn inbox(&self) -> MutexGuard<'_, Inbox> {
        // Every critical section is a push or a swap: consistent after a panic.
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds to the inbox, waking the thread if it was empty (else it is awake, or woken
    /// already: one system call for a burst of wake-ups, a broadcast's to a resting room).
    fn post(&self, f: impl FnOnce(&mut Inbox)) {
        let mut inbox = self.inbox();
        let was_empty = inbox.is_empty();
        f(&mut inbox);
        drop(inbox);
        if was_empty && let Err(e) = self.waker.wake() {
            tracing::error!(error = %e, "cannot wake the resting thread");
        }
    }
}

/// Puts a session to rest.
pub(crate) fn park(sleeper: Box<dyn Sleeper>) {
    poller().post(|inbox| inbox.parked.push(sleeper));
}

/// How many sessions of the process are at rest, as of the resting thread's last turn.
pub fn resting() -> usize {
    RESTING.load(Ordering::Relaxed)
}

static RESTING: AtomicUsize = AtomicUsize::new(0);

/// The waker a resting session's sources get: it names the session.
struct Alarm(u64);

impl Wake for Alarm {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let key = self.0;
        poller().post(|inbox| inbox.woken.push(key));
    }
}

/// The resting thread: waits for sockets and wake-ups, wakes the sessions they name.
fn run(mut poll: mio::Poll) {
    let poller = poller();
    let mut events = Events::with_capacity(1024);
    let mut sleeping: HashMap<u64, Box<dyn Sleeper>> = HashMap::new();
    let mut next_key = WAKER.0 as u64 + 1;
    let mut due = Vec::new();
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                tracing::error!(error = %e, "the resting thread cannot wait");
            }
            continue;
        }
        due.clear();
        due.extend(events.iter().map(|e| e.token()).filter(|t| *t != WAKER).map(|t| t.0 as u64));
        let inbox = std::mem::take(&mut *poller.inbox());
        due.extend(inbox.woken);
        for key in due.drain(..) {
            // A key not found is a session woken already.
            if let Some(sleeper) = sleeping.remove(&key) {
                wake(&poller.registry, sleeper);
            }
        }
        for mut sleeper in inbox.parked {
            let key = next_key;
            next_key += 1;
            let fd = sleeper.socket().as_raw_fd();
            if let Err(e) = poller.registry.register(
                &mut SourceFd(&fd),
                Token(key as usize),
                Interest::READABLE,
            ) {
                tracing::warn!(error = %e, "cannot watch a resting session's socket; it stays awake");
                let waking = sleeper.waking();
                waking.push(sleeper);
                continue;
            }
            let waker = Waker::from(Arc::new(Alarm(key)));
            if sleeper.arm(&mut Context::from_waker(&waker)) {
                wake(&poller.registry, sleeper);
            } else {
                sleeping.insert(key, sleeper);
            }
        }
        RESTING.store(sleeping.len(), Ordering::Relaxed);
        if sleeping.capacity() > 2 * sleeping.len().max(1024) {
            sleeping.shrink_to_fit();
        }
    }
}

/// Stops watching a session's socket and wakes it.
fn wake(registry: &mio::Registry, sleeper: Box<dyn Sleeper>) {
    let fd = sleeper.socket().as_raw_fd();
    // The socket goes back to tokio's reactor: this one must let go of it first.
    if let Err(e) = registry.deregister(&mut SourceFd(&fd)) {
        tracing::debug!(error = %e, "deregistering a resting session's socket");
    }
    let waking = sleeper.waking();
    waking.push(sleeper);
}
