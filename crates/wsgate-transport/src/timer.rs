//! A coarse timer shared by every session: each session's heartbeat is a deadline of 16 B in
//! its task, where a `tokio::time::Sleep` takes 112. An idle connection spends its life
//! waiting for its next ping, so those bytes are bytes of every idle connection.
//!
//! Deadlines are rounded up to the next tick ([`TICK`], 10 ms) and kept in one map of wakers
//! by tick, under one lock, taken when a deadline is set, moved or dropped before it fires
//! (once per ping interval and session), never when it is polled: a poll reads one atomic
//! counter, the last tick fired. One thread (`wsgate-timer`, started with the timer) sleeps
//! until the earliest tick with a deadline and wakes the tasks whose deadlines it passed.
//! It follows the system's clock, not tokio's: a test with tokio's time paused does not
//! move it.

use std::{
    collections::BTreeMap,
    num::NonZeroU64,
    sync::{
        Condvar, Mutex, MutexGuard, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

/// How finely deadlines are kept: a deadline fires within one tick after it passes (and the
/// time the timer's thread takes to be scheduled).
pub const TICK: Duration = Duration::from_millis(10);

/// A deadline on the shared timer: set with [`Deadline::new`] or [`Deadline::reset`], ready
/// once it has passed. It registers the waker of the first poll after it was set, so it
/// belongs to one task (a session's) until [`Deadline::hand_over`]; a poll reads one atomic
/// counter.
#[derive(Debug)]
pub struct Deadline {
    /// The tick the deadline fires at.
    tick: NonZeroU64,
    /// Its place among the tick's wakers, once registered ([`UNREGISTERED`] before).
    key: u32,
    /// Handed over to another task: the next poll puts its waker in the registration's place.
    moved: bool,
}

const UNREGISTERED: u32 = u32::MAX;

impl Deadline {
    /// A deadline at `at` (rounded up to the next tick).
    pub fn new(at: Instant) -> Self {
        Self { tick: timer().tick_at(at), key: UNREGISTERED, moved: false }
    }

    /// Moves the deadline to `at`, ready again once `at` has passed.
    pub fn reset(&mut self, at: Instant) {
        self.release();
        self.tick = timer().tick_at(at);
    }

    /// Ready once the deadline has passed; registers `cx`'s waker the first time it is not.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let timer = timer();
        if self.tick.get() <= timer.fired.load(Ordering::Acquire) {
            // Fired (or passed before it was registered): its entry, if any, is gone.
            self.key = UNREGISTERED;
            return Poll::Ready(());
        }
        if self.key == UNREGISTERED {
            self.moved = false;
            match timer.register(self.tick, cx.waker()) {
                Some(key) => self.key = key,
                None => return Poll::Ready(()),
            }
        } else if self.moved {
            if !timer.replace(self.tick, self.key, cx.waker()) {
                // Fired since it was looked at: its entry is gone.
                self.key = UNREGISTERED;
                return Poll::Ready(());
            }
            self.moved = false;
        }
        Poll::Pending
    }

    /// For a deadline that moves to another task (a session put to rest, or woken): the next
    /// poll's waker takes the registration's place, where a poll otherwise registers once.
    /// Until then the old waker stays (a task that has ended: waking it does nothing), and
    /// the registration keeps its one entry in the timer, where letting go and registering
    /// again would leave a spent entry behind for every move.
    pub fn hand_over(&mut self) {
        self.moved = true;
    }

    /// Takes the registration back, if the deadline has not fired.
    fn release(&mut self) {
        if self.key != UNREGISTERED {
            let key = std::mem::replace(&mut self.key, UNREGISTERED);
            timer().cancel(self.tick, key);
        }
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        self.release();
    }
}

/// An instant in 8 bytes (where an `Instant` takes 16, and an `Option` of one too): the
/// nanoseconds since the shared timer's start, exact, and `None` fits in an `Option<Mark>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark(NonZeroU64);

impl Mark {
    /// `at` as a mark (an instant before the timer's start is taken as its start).
    pub fn at(at: Instant) -> Self {
        let since = at.saturating_duration_since(timer().start).as_nanos();
        let nanos = u64::try_from(since).unwrap_or(u64::MAX - 1);
        Self(NonZeroU64::MIN.saturating_add(nanos))
    }

    /// The mark as an instant.
    pub fn instant(self) -> Instant {
        timer().start + Duration::from_nanos(self.0.get() - 1)
    }
}

/// The shared timer.
struct Timer {
    /// What the ticks count from.
    start: Instant,
    /// The last tick fired: a deadline at or before it has passed.
    fired: AtomicU64,
    wheel: Mutex<Wheel>,
    /// The thread waits on it for its next tick, or for an earlier one to be registered.
    wake: Condvar,
}

struct Wheel {
    /// The wakers of each tick with deadlines, in the order registered; a cancelled one is
    /// `None` until its tick fires.
    ticks: BTreeMap<u64, Vec<Option<Waker>>>,
    /// The tick the thread sleeps until (`u64::MAX`: until a deadline is registered).
    sleeping_until: u64,
}

impl Wheel {
    /// The waker registered as `key` for `tick`; `None` once the tick fired.
    fn slot(&mut self, tick: NonZeroU64, key: u32) -> Option<&mut Option<Waker>> {
        self.ticks.get_mut(&tick.get()).and_then(|wakers| wakers.get_mut(key as usize))
    }
}

fn timer() -> &'static Timer {
    static TIMER: OnceLock<Timer> = OnceLock::new();
    TIMER.get_or_init(|| {
        // Its thread waits for the timer to be made (`timer()` blocks until then).
        std::thread::Builder::new()
            .name("wsgate-timer".into())
            .spawn(|| timer().run())
            .expect("the timer's thread starts");
        // Tick 1 ends when the timer is made, fired already: every deadline before is ready.
        let now = Instant::now();
        Timer {
            start: now.checked_sub(TICK).unwrap_or(now),
            fired: AtomicU64::new(1),
            wheel: Mutex::new(Wheel { ticks: BTreeMap::new(), sleeping_until: u64::MAX }),
            wake: Condvar::new(),
        }
    })
}

impl Timer {
    /// The first tick at or after `at` (ticks count from 1).
    fn tick_at(&self, at: Instant) -> NonZeroU64 {
        let since = at.saturating_duration_since(self.start).as_nanos();
        let tick = since.div_ceil(TICK.as_nanos()).max(1);
        NonZeroU64::new(u64::try_from(tick).unwrap_or(u64::MAX)).unwrap_or(NonZeroU64::MIN)
    }

    /// When tick `tick` begins.
    fn instant_of(&self, tick: u64) -> Instant {
        let nanos = u128::from(tick) * TICK.as_nanos();
        self.start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    fn lock(&self) -> MutexGuard<'_, Wheel> {
        // A panic while the lock is held leaves the map whole: every change is one call.
        self.wheel.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps `waker` for `tick`; `None` if the tick has begun (fired or not).
    fn register(&self, tick: NonZeroU64, waker: &Waker) -> Option<u32> {
        let tick = tick.get();
        let mut wheel = self.lock();
        // Under the lock, which the thread holds while it moves `fired`: a tick that has not
        // begun now had not when `fired` was last moved, so the thread's next turn fires it.
        if self.instant_of(tick) <= Instant::now() {
            return None;
        }
        let wakers = wheel.ticks.entry(tick).or_default();
        let key = u32::try_from(wakers.len()).ok().filter(|&key| key != UNREGISTERED)?;
        wakers.push(Some(waker.clone()));
        if tick < wheel.sleeping_until {
            self.wake.notify_one();
        }
        Some(key)
    }

    /// Puts `waker` in the place of the one registered as `key`; `false` if the tick's
    /// entries are gone (it fired).
    fn replace(&self, tick: NonZeroU64, key: u32, waker: &Waker) -> bool {
        match self.lock().slot(tick, key) {
            Some(slot) => {
                if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    *slot = Some(waker.clone());
                }
                true
            }
            None => false,
        }
    }

    fn cancel(&self, tick: NonZeroU64, key: u32) {
        if let Some(waker) = self.lock().slot(tick, key) {
            *waker = None;
        }
    }

    /// The thread: fires each tick with deadlines once it has begun.
    fn run(&self) {
        let mut due = Vec::new();
        let mut wheel = self.lock();
        loop {
            let now = self.tick_at(Instant::now()).get().saturating_sub(1);
            while let Some(entry) = wheel.ticks.first_entry() {
                if *entry.key() > now {
                    break;
                }
                due.extend(entry.remove().into_iter().flatten());
            }
            self.fired.store(now, Ordering::Release);
            let next = wheel.ticks.keys().next().copied();
            wheel.sleeping_until = next.unwrap_or(u64::MAX);
            if !due.is_empty() {
                drop(wheel);
                for waker in due.drain(..) {
                    waker.wake();
                }
                wheel = self.lock();
                continue;
            }
            wheel = match next {
                Some(tick) => {
                    let wait = self.instant_of(tick).saturating_duration_since(Instant::now());
                    self.wake
                        .wait_timeout(wheel, wait)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0
                }
                None => self.wake.wait(wheel).unwrap_or_else(std::sync::PoisonError::into_inner),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    #[tokio::test]
    async fn a_deadline_fires_once_it_has_passed_and_not_before() {
        let started = Instant::now();
        let mut deadline = Deadline::new(started + Duration::from_millis(50));
        poll_fn(|cx| deadline.poll(cx)).await;
        assert!(started.elapsed() >= Duration::from_millis(50), "{:?}", started.elapsed());
        assert!(poll_fn(|cx| Poll::Ready(deadline.poll(cx))).await.is_ready(), "stays ready");

        // Moved later while registered: not ready at the first time.
        let started = Instant::now();
        deadline.reset(started + Duration::from_millis(30));
        assert!(poll_fn(|cx| Poll::Ready(deadline.poll(cx))).await.is_pending());
        deadline.reset(started + Duration::from_millis(80));
        poll_fn(|cx| deadline.poll(cx)).await;
        assert!(started.elapsed() >= Duration::from_millis(80), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_deadline_in_the_past_is_ready_at_once_and_a_dropped_one_is_forgotten() {
        let mut past = Deadline::new(Instant::now() - Duration::from_secs(1));
        assert!(poll_fn(|cx| Poll::Ready(past.poll(cx))).await.is_ready());

        let mut dropped = Deadline::new(Instant::now() + Duration::from_millis(20));
        assert!(poll_fn(|cx| Poll::Ready(dropped.poll(cx))).await.is_pending());
        let (tick, key) = (dropped.tick.get(), dropped.key);
        drop(dropped);
        let wheel = timer().lock();
        let slot = wheel.ticks.get(&tick).and_then(|wakers| wakers.get(key as usize));
        assert!(matches!(slot, None | Some(None)), "its waker is not kept");
    }

    #[test]
    fn a_deadline_handed_over_wakes_its_new_task_from_the_same_entry() {
        use std::sync::Arc;
        use std::sync::atomic::AtomicUsize;
        struct Count(AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let (old, new) =
            (Arc::new(Count(AtomicUsize::new(0))), Arc::new(Count(AtomicUsize::new(0))));
        let (old_waker, new_waker) = (Waker::from(old.clone()), Waker::from(new.clone()));
        let mut deadline = Deadline::new(Instant::now() + Duration::from_millis(60));
        assert!(deadline.poll(&mut Context::from_waker(&old_waker)).is_pending());
        let (tick, key) = (deadline.tick.get(), deadline.key);
        let entries = || timer().lock().ticks.get(&tick).map_or(0, Vec::len);
        let before = entries();
        // Handed over, and over again: one entry, the last task's waker.
        for _ in 0..3 {
            deadline.hand_over();
            assert!(deadline.poll(&mut Context::from_waker(&new_waker)).is_pending());
        }
        assert_eq!(deadline.key, key);
        assert_eq!(entries(), before, "no entry added");
        let started = Instant::now();
        while new.0.load(Ordering::SeqCst) == 0 {
            assert!(started.elapsed() < Duration::from_secs(5), "the new task is woken");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(old.0.load(Ordering::SeqCst), 0, "not the old one");
        assert!(deadline.poll(&mut Context::from_waker(&new_waker)).is_ready());

        // Handed over after it fired: ready at the next poll.
        let mut fired = Deadline::new(Instant::now() + Duration::from_millis(20));
        assert!(fired.poll(&mut Context::from_waker(&old_waker)).is_pending());
        std::thread::sleep(Duration::from_millis(60));
        fired.hand_over();
        assert!(fired.poll(&mut Context::from_waker(&new_waker)).is_ready());
    }

    #[tokio::test]
    async fn many_deadlines_fire_in_their_order() {
        let started = Instant::now();
        let fired = std::sync::Arc::new(Mutex::new(Vec::new()));
        let tasks: Vec<_> = (0..20u64)
            .rev()
            .map(|i| {
                let fired = fired.clone();
                tokio::spawn(async move {
                    let mut deadline = Deadline::new(started + Duration::from_millis(20 * i));
                    poll_fn(|cx| deadline.poll(cx)).await;
                    assert!(started.elapsed() >= Duration::from_millis(20 * i));
                    fired.lock().unwrap().push(i);
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let fired = fired.lock().unwrap();
        assert!(fired.windows(2).all(|w| w[0] <= w[1]), "{fired:?}");
    }

    #[test]
    fn a_mark_is_its_instant_to_the_nanosecond() {
        let now = Instant::now();
        for at in [now, now + Duration::from_nanos(1), now + Duration::from_secs(86_400 * 365)] {
            assert_eq!(Mark::at(at).instant(), at);
        }
        let long_ago = timer().start.checked_sub(Duration::from_secs(1)).unwrap_or(now);
        assert_eq!(Mark::at(long_ago).instant(), timer().start, "taken as the timer's start");
    }

    #[test]
    fn a_deadline_and_a_mark_are_16_and_8_bytes() {
        assert_eq!(size_of::<Option<Mark>>(), 8);
        assert_eq!(size_of::<Deadline>(), 16);
        assert_eq!(size_of::<Option<Deadline>>(), 16);
    }
}
