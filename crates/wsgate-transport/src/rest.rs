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

/// The sessions at rest, by key: in a list of slots (24 B each, where a hash map took 55 B
/// per session), a key naming its slot and the number of the session put there, so that a
/// key a woken session's sources still hold names no other session.
#[derive(Default)]
struct Sleepers {
    /// The number of the session in the slot, and the session while it rests.
    slots: Vec<(u32, Option<Box<dyn Sleeper>>)>,
    /// The slots free, last freed last.
    free: Vec<u32>,
    /// Sessions put to rest so far (wrapping): the next one's number.
    count: u32,
}

/// A key's slot and session number; the slot is stored plus one, so that no key is
/// [`WAKER`]'s.
fn split(key: u64) -> Option<(u32, u32)> {
    let index = (key as u32).checked_sub(1)?;
    Some((index, (key >> 32) as u32))
}

impl Sleepers {
    /// Keeps `sleeper`, returning its key (never [`WAKER`]'s).
    fn insert(&mut self, sleeper: Box<dyn Sleeper>) -> u64 {
        let number = self.count;
        self.count = self.count.wrapping_add(1);
        let index = match self.free.pop() {
            Some(index) => {
                self.slots[index as usize] = (number, Some(sleeper));
                index
            }
            None => {
                self.slots.push((number, Some(sleeper)));
                // Fewer than 2^32 sessions: an epoll instance holds one per open file.
                (self.slots.len() - 1) as u32
            }
        };
        (u64::from(number) << 32) | (u64::from(index) + 1)
    }

    /// How many sessions are at rest.
    fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// The slot `key` names, with its index, if its session is still there.
    fn slot(&mut self, key: u64) -> Option<(u32, &mut Option<Box<dyn Sleeper>>)> {
        let (index, number) = split(key)?;
        let (kept, slot) = self.slots.get_mut(index as usize)?;
        (*kept == number && slot.is_some()).then_some((index, slot))
    }

    /// The session `key` names, if it is still at rest.
    fn get_mut(&mut self, key: u64) -> Option<&mut (dyn Sleeper + 'static)> {
        self.slot(key)?.1.as_deref_mut()
    }

    /// Takes out the session `key` names, if it is still at rest.
    fn remove(&mut self, key: u64) -> Option<Box<dyn Sleeper>> {
        let (index, slot) = self.slot(key)?;
        let sleeper = slot.take()?;
        self.free.push(index);
        Some(sleeper)
    }

    /// Gives back the room of a crowd that rested and left: the free slots at the end, and
    /// spare capacity.
    fn trim(&mut self) {
        if self.slots.capacity() <= 2 * self.len().max(1024) {
            return;
        }
        while self.slots.last().is_some_and(|(_, slot)| slot.is_none()) {
            self.slots.pop();
        }
        let end = self.slots.len();
        self.free.retain(|&index| (index as usize) < end);
        self.slots.shrink_to_fit();
        self.free.shrink_to_fit();
    }
}

/// The resting thread: waits for sockets and wake-ups, wakes the sessions they name.
fn run(mut poll: mio::Poll) {
    let poller = poller();
    let mut events = Events::with_capacity(1024);
    let mut sleepers = Sleepers::default();
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
            if let Some(sleeper) = sleepers.remove(key) {
                wake(&poller.registry, sleeper);
            }
        }
        for sleeper in inbox.parked {
            let fd = sleeper.socket().as_raw_fd();
            let key = sleepers.insert(sleeper);
            if let Err(e) = poller.registry.register(
                &mut SourceFd(&fd),
                Token(key as usize),
                Interest::READABLE,
            ) {
                tracing::warn!(error = %e, "cannot watch a resting session's socket; it stays awake");
                if let Some(sleeper) = sleepers.remove(key) {
                    sleeper.waking().push(sleeper);
                }
                continue;
            }
            let waker = Waker::from(Arc::new(Alarm(key)));
            let ready =
                sleepers.get_mut(key).is_some_and(|s| s.arm(&mut Context::from_waker(&waker)));
            if ready && let Some(sleeper) = sleepers.remove(key) {
                wake(&poller.registry, sleeper);
            }
        }
        RESTING.store(sleepers.len(), Ordering::Relaxed);
        sleepers.trim();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A session that only has a socket (one for all: only its number is read).
    struct Idle(Arc<TcpStream>);

    impl Sleeper for Idle {
        fn socket(&self) -> &TcpStream {
            &self.0
        }
        fn waking(&self) -> Arc<Waking> {
            unreachable!("not woken in these tests")
        }
        fn arm(&mut self, _: &mut Context<'_>) -> bool {
            false
        }
        fn wake(self: Box<Self>) {}
    }

    fn idle(socket: &Arc<TcpStream>) -> Box<dyn Sleeper> {
        Box::new(Idle(socket.clone()))
    }

    fn socket() -> Arc<TcpStream> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Arc::new(TcpStream::connect(listener.local_addr().unwrap()).unwrap())
    }

    #[test]
    fn a_key_names_its_session_only_while_it_rests() {
        let socket = socket();
        let mut sleepers = Sleepers::default();
        let a = sleepers.insert(idle(&socket));
        let b = sleepers.insert(idle(&socket));
        assert_ne!(a, WAKER.0 as u64);
        assert_ne!(a, b);
        assert_eq!(sleepers.len(), 2);
        assert!(sleepers.get_mut(a).is_some());
        assert!(sleepers.remove(a).is_some());
        assert!(sleepers.remove(a).is_none(), "woken already");
        // The slot is reused, under another key: the old key names nothing.
        let c = sleepers.insert(idle(&socket));
        assert_eq!(c & u64::from(u32::MAX), a & u64::from(u32::MAX), "the same slot");
        assert_ne!(c, a);
        assert!(sleepers.get_mut(a).is_none());
        assert!(sleepers.remove(a).is_none());
        assert!(sleepers.remove(0).is_none());
        assert!(sleepers.remove(u64::MAX).is_none());
        assert_eq!(sleepers.len(), 2);
        assert!(sleepers.remove(b).is_some() && sleepers.remove(c).is_some());
        assert_eq!(sleepers.len(), 0);
    }

    #[test]
    fn a_crowd_gone_gives_its_room_back() {
        let socket = socket();
        let mut sleepers = Sleepers::default();
        let keys: Vec<u64> = (0..3000).map(|_| sleepers.insert(idle(&socket))).collect();
        let staying = keys[10];
        for &key in keys.iter().filter(|&&k| k != staying) {
            assert!(sleepers.remove(key).is_some());
        }
        sleepers.trim();
        assert_eq!(sleepers.slots.len(), 11, "the free slots at the end are gone");
        assert!(sleepers.slots.capacity() < 3000);
        assert!(sleepers.free.iter().all(|&i| i < 11) && sleepers.free.len() == 10);
        assert!(sleepers.get_mut(staying).is_some());
        let next = sleepers.insert(idle(&socket));
        assert!((next & u64::from(u32::MAX)) <= 11);
        assert_eq!(sleepers.len(), 2);
    }
}
