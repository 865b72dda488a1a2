//! The runtime a server runs on: tokio's multi-thread runtime with one setting of wsgate's,
//! [`Linger`].
//!
//! ```no_run
//! fn main() -> std::io::Result<()> {
//!     wsgate::runtime::builder().build()?.block_on(async {
//!         // build the app, bind, serve
//!     });
//!     Ok(())
//! }
//! ```
//!
//! A server started with `#[tokio::main]` runs as before, without lingering.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Lingers so far, in this process.
static LINGERS: AtomicU64 = AtomicU64::new(0);

/// How many times this process's workers have lingered (all runtimes): a counter for metrics.
pub fn lingers() -> u64 {
    LINGERS.load(Ordering::Relaxed)
}

thread_local! {
    /// Socket reads that brought bytes, on this thread since its worker last went to sleep.
    static READS: Cell<u32> = const { Cell::new(0) };
    /// Messages read, likewise.
    static MESSAGES: Cell<u32> = const { Cell::new(0) };
    /// What the worker has seen of its clients' pace.
    static PACE: Cell<Pace> = const { Cell::new(Pace::new()) };
}

/// Counts a read of a connection that brought bytes, for [`Linger`]. A transport adapter
/// calls it for each such read and [`count_message`] for each message it decodes.
#[inline]
pub fn count_read() {
    READS.with(|n| n.set(n.get().saturating_add(1)));
}

/// Counts a message decoded from a connection, for [`Linger`].
#[inline]
pub fn count_message() {
    MESSAGES.with(|n| n.set(n.get().saturating_add(1)));
}

/// A worker with nothing left to do waits a little before it sleeps in the kernel, when its
/// clients send several messages per read: what comes in that time is read in the worker's
/// next pass, more messages per system call and fewer wake-ups.
///
/// This is interrupt coalescing, done by the server. When clients keep several messages in
/// flight on a connection (each read brought [`Linger::PACE`] messages or more, on average over
/// the worker's last waking periods), a wake-up's cost (an `epoll_wait` that sleeps, a
/// `recvfrom` and a `sendto` per connection, about 8 µs on a small virtual machine) is shared
/// by more messages. Clients that send one message and wait for its answer see no linger: for
/// them it would add its wait to each answer and save nothing. Nor does one client alone that
/// pipelines: a linger must be followed by reads of several connections (1.5 on average), or
/// the worker stops lingering for 1 024 sleeps before it tries again.
///
/// **How long.** A worker starts at the shortest wait ([`wait`](Self::wait), 20 µs by default)
/// and doubles it, up to [`longest`](Self::longest) (16 times the shortest by default), as long
/// as each doubling gathers half as many connections' reads again or more; when it no longer
/// does, the worker halves it back. Many connections that answer over a few hundred
/// microseconds get a long wait and one wake-up for most of them; a few connections that answer
/// at once keep the short one, and are not kept waiting once all of them are in. What is known
/// of the longer waits is forgotten now and then, and they are tried again.
///
/// The price is latency: a message that arrives while the worker lingers waits at most the
/// worker's wait before it is read (a lingering worker's timer slack is set to 1 µs, where a
/// thread's is 50 µs by default). [`Linger::fixed`] keeps one wait, [`Linger::off`] turns
/// lingering off. `docs/PERFORMANCE.md` ("Lingering before sleep", "How long to linger") has
/// what it saves at each load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Linger {
    wait: Duration,
    longest: Duration,
}

impl Default for Linger {
    fn default() -> Self {
        Self::new(Self::DEFAULT_WAIT)
    }
}

impl Linger {
    /// The shortest wait of a lingering worker, by default.
    pub const DEFAULT_WAIT: Duration = Duration::from_micros(20);
    /// Messages per read from which a worker lingers.
    pub const PACE: f32 = 2.0;
    /// How many times the shortest wait a worker may wait, by default.
    pub const LONGEST_FACTOR: u32 = 1 << Pace::TOP;

    /// Lingers `wait` at first, and up to [`LONGEST_FACTOR`](Self::LONGEST_FACTOR) times it
    /// when longer waits pay (none when zero).
    pub const fn new(wait: Duration) -> Self {
        Self { wait, longest: wait.saturating_mul(Self::LONGEST_FACTOR) }
    }

    /// Lingers `wait`, never longer nor shorter.
    pub const fn fixed(wait: Duration) -> Self {
        Self { wait, longest: wait }
    }

    /// Never lingers.
    pub const fn off() -> Self {
        Self::fixed(Duration::ZERO)
    }

    /// Lingers `wait` at first, and up to `longest` (rounded down to `wait` doubled at most
    /// four times) when longer waits pay.
    pub fn between(wait: Duration, longest: Duration) -> Self {
        Self { wait, longest: longest.max(wait) }
    }

    /// The shortest wait `WSGATE_LINGER_US` microseconds (`0`: off) and the longest
    /// `WSGATE_LINGER_MAX_US`, where they are set; the defaults otherwise.
    ///
    /// # Errors
    /// When one is set and is not a number of microseconds.
    pub fn from_env() -> Result<Self, std::num::ParseIntError> {
        let micros = |name| match std::env::var(name) {
            Ok(us) => us.trim().parse().map(|us| Some(Duration::from_micros(us))),
            Err(_) => Ok(None),
        };
        let wait = micros("WSGATE_LINGER_US")?.unwrap_or(Self::DEFAULT_WAIT);
        Ok(match micros("WSGATE_LINGER_MAX_US")? {
            Some(longest) => Self::between(wait, longest),
            None => Self::new(wait),
        })
    }

    /// The shortest wait of a lingering worker.
    pub const fn wait(&self) -> Duration {
        self.wait
    }

    /// The longest wait of a lingering worker.
    pub const fn longest(&self) -> Duration {
        self.longest
    }

    /// How many doublings of the shortest wait are allowed (at most [`Pace::TOP`]).
    fn top(self) -> u8 {
        let mut top = 0;
        while top < Pace::TOP && self.wait.saturating_mul(2 << top) <= self.longest {
            top += 1;
        }
        top
    }

    /// Makes the runtime's workers linger (tokio's `on_thread_park`, which this replaces).
    pub fn install(self, builder: &mut tokio::runtime::Builder) -> &mut tokio::runtime::Builder {
        if self.wait.is_zero() {
            return builder;
        }
        builder.on_thread_park(move || self.before_sleep())
    }

    /// Waits if this thread's clients' pace says so: what the installed hook does when a
    /// worker is about to sleep. For an event loop of one's own (not tokio's), to call before
    /// each wait for readiness that may sleep, with its reads and messages counted
    /// ([`count_read`], [`count_message`]).
    pub fn before_sleep(self) {
        if self.wait.is_zero() {
            return;
        }
        let reads = READS.replace(0);
        let messages = MESSAGES.replace(0);
        let pace = PACE.get().step(reads, messages, self.top());
        PACE.set(pace);
        if pace.lingering {
            LINGERS.fetch_add(1, Ordering::Relaxed);
            precise_timers();
            std::thread::sleep(self.wait.saturating_mul(1 << pace.level));
        }
    }
}

/// Asks the kernel to wake this thread on time: a sleeping thread's timer may otherwise fire
/// up to its slack late (50 µs by default), which would more than triple the linger.
fn precise_timers() {
    thread_local! {
        static DONE: Cell<bool> = const { Cell::new(false) };
    }
    if DONE.replace(true) {
        return;
    }
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(SLACK_NS)) {
        tracing::debug!("timer slack not set: {e}");
    }
}

/// The timer slack of a lingering worker, in nanoseconds.
const SLACK_NS: u64 = 1_000;

/// What a worker has seen of its clients: whether lingering would pay, and whether it did.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Pace {
    /// Messages per read over the last waking periods (a moving average).
    messages_per_read: f32,
    /// Reads in the waking periods that followed a linger (a moving average): a linger
    /// pays when it gathers several connections' messages for one wake-up. One client that
    /// pipelines gets none of that: it waits for its answers while the worker lingers.
    reads_per_linger: f32,
    /// Whether the worker lingers before this sleep.
    lingering: bool,
    /// Waking periods left before lingering is tried again, after lingers that gathered
    /// too little.
    rest: u32,
    /// The wait, as doublings of the shortest.
    level: u8,
    /// Reads per linger at each level, as last measured (a moving average over the level's
    /// last stay; 0: not known).
    gathered: [f32; Pace::LEVELS],
    /// Lingers since the worker came to this level, or since its last decision there.
    lingers: u16,
    /// Decisions left before what is known of the longer waits is forgotten.
    explore: u16,
}

impl Pace {
    /// Reads per linger from which lingering goes on.
    const GATHER: f32 = 1.5;
    /// Where `reads_per_linger` starts when lingering is tried (again): a few lingers that
    /// gather one read each bring it under [`Self::GATHER`].
    const TRY: f32 = 2.0;
    /// Waking periods without lingering after lingers that did not pay.
    const REST: u32 = 1024;
    /// Doublings of the shortest wait, at most.
    const TOP: u8 = 4;
    const LEVELS: usize = Self::TOP as usize + 1;
    /// Lingers at a level between two decisions to move.
    const WINDOW: u16 = 32;
    /// How many more reads a doubled wait must gather to be kept.
    const GROWTH: f32 = 1.5;
    /// Decisions between two forgettings of the longer waits.
    const EXPLORE: u16 = 16;

    const fn new() -> Self {
        Self {
            messages_per_read: 0.0,
            reads_per_linger: Self::TRY,
            lingering: false,
            rest: 0,
            level: 0,
            gathered: [0.0; Self::LEVELS],
            lingers: 0,
            explore: Self::EXPLORE,
        }
    }

    /// After a waking period with `reads` and `messages`: whether to linger now, and how
    /// long (`top`: the most doublings allowed). A period without reads (timers, emits from
    /// elsewhere) does not move the pace, and no client's burst is on its way: no linger.
    fn step(mut self, reads: u32, messages: u32, top: u8) -> Self {
        #[allow(clippy::cast_precision_loss)] // counts of one waking period: far below 2^24
        let (reads_f, messages_f) = (reads as f32, messages as f32);
        if self.lingering {
            self.reads_per_linger = (self.reads_per_linger * 3.0 + reads_f) / 4.0;
            if self.reads_per_linger < Self::GATHER {
                self.rest = Self::REST;
                self.reads_per_linger = Self::TRY;
                self.level = 0;
                self.lingers = 0;
            } else {
                self.adapt(reads_f, top);
            }
        }
        if reads > 0 {
            self.messages_per_read = (self.messages_per_read * 3.0 + messages_f / reads_f) / 4.0;
        }
        self.lingering = if self.rest > 0 {
            self.rest -= 1;
            false
        } else {
            reads > 0 && self.messages_per_read >= Linger::PACE
        };
        self
    }

    /// After a linger at this level that `reads` followed: every [`Self::WINDOW`] lingers, a
    /// level down when this one gathers too little more than the one below, or up when the
    /// one above is not known or gathered enough more.
    fn adapt(&mut self, reads: f32, top: u8) {
        let top = top.min(Self::TOP);
        self.level = self.level.min(top);
        let at = usize::from(self.level);
        self.gathered[at] =
            if self.lingers == 0 { reads } else { (self.gathered[at] * 7.0 + reads) / 8.0 };
        self.lingers += 1;
        if self.lingers < Self::WINDOW {
            return;
        }
        self.lingers = 0;
        self.explore -= 1;
        if self.explore == 0 {
            self.explore = Self::EXPLORE;
            self.gathered[at + 1..].fill(0.0);
        }
        let from = self.level;
        if at > 0 && self.gathered[at] < Self::GROWTH * self.gathered[at - 1] {
            self.level -= 1;
        } else if self.level < top {
            let above = self.gathered[at + 1];
            if above == 0.0 || above >= Self::GROWTH * self.gathered[at] {
                self.level += 1;
            }
        }
        if self.level != from {
            tracing::trace!(level = self.level, gathered = ?self.gathered, "linger wait");
        }
    }
}

/// A multi-thread runtime builder with its drivers enabled and [`Linger::from_env`] installed
/// (the default linger when `WSGATE_LINGER_US` is not set).
///
/// # Panics
/// When `WSGATE_LINGER_US` is set and is not a number: a setting misread is not served.
pub fn builder() -> tokio::runtime::Builder {
    let linger = Linger::from_env()
        .unwrap_or_else(|e| panic!("WSGATE_LINGER_US must be a number of microseconds: {e}"));
    with_linger(linger)
}

/// A multi-thread runtime builder with its drivers enabled and `linger` installed.
pub fn with_linger(linger: Linger) -> tokio::runtime::Builder {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    linger.install(&mut builder);
    builder
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Steps `pace` through `periods` waking periods of `reads` and `messages`; the lingers.
    fn run(pace: &mut Pace, periods: usize, reads: u32, messages: u32) -> usize {
        (0..periods)
            .filter(|_| {
                *pace = pace.step(reads, messages, 0);
                pace.lingering
            })
            .count()
    }

    #[test]
    fn lingers_when_reads_bring_several_messages_from_several_connections() {
        // One message per read: never.
        let mut pace = Pace::new();
        assert_eq!(run(&mut pace, 100, 40, 40), 0);
        // Pipelined clients, four messages per read: from the second period on, as long as
        // the lingers gather several reads.
        assert_eq!(run(&mut pace, 1, 10, 40), 0);
        assert_eq!(run(&mut pace, 99, 10, 40), 99);
        // A period with no reads does not linger and keeps the pace.
        let before = pace.messages_per_read;
        assert_eq!(run(&mut pace, 1, 0, 0), 0);
        assert!((pace.messages_per_read - before).abs() < f32::EPSILON);
        // Back to one message per read: stops within a few periods.
        let lingers = run(&mut pace, 20, 5, 5);
        assert!((1..10).contains(&lingers), "{lingers} lingers");
        assert!(!pace.lingering);
    }

    #[test]
    fn one_pipelining_client_is_not_kept_waiting() {
        // Eight messages per read, but one read per period: the lingers gather nothing from
        // other connections. Three are tried, then none for `REST` periods, and so on.
        let mut pace = Pace::new();
        let periods = 10 * (Pace::REST as usize + 4);
        let lingers = run(&mut pace, periods, 1, 8);
        assert!((10..=40).contains(&lingers), "{lingers} lingers in {periods} periods");
        // Several connections read after each linger: it goes on.
        assert!(run(&mut pace, Pace::REST as usize + 1, 4, 32) > 0);
        assert_eq!(run(&mut pace, 100, 4, 32), 100);
    }

    /// Steps `pace` through `periods` waking periods whose reads follow from the wait: a
    /// linger at level `l` is followed by `reads(l)` reads (eight messages each), with at most
    /// `top` doublings allowed; the levels the worker lingered at, one per period.
    fn model_to(pace: &mut Pace, periods: usize, top: u8, reads: impl Fn(u8) -> u32) -> Vec<u8> {
        (0..periods)
            .map(|_| {
                let n = reads(if pace.lingering { pace.level } else { 0 });
                *pace = pace.step(n, n * 8, top);
                pace.level
            })
            .collect()
    }

    /// [`model_to`] with every doubling allowed.
    fn model(pace: &mut Pace, periods: usize, reads: impl Fn(u8) -> u32) -> Vec<u8> {
        model_to(pace, periods, Pace::TOP, reads)
    }

    #[test]
    fn the_wait_doubles_while_it_gathers_more_connections() {
        // Many connections, answering over a long time: each doubling gathers twice as many.
        let mut pace = Pace::new();
        let levels = model(&mut pace, 2_000, |l| 3 << l);
        let first_at_top = levels.iter().position(|&l| l == Pace::TOP).unwrap();
        assert!(first_at_top <= 5 * Pace::WINDOW as usize, "at the top after {first_at_top}");
        assert!(levels[first_at_top..].iter().all(|&l| l == Pace::TOP), "left the top");
        // It never goes beyond what the linger allows.
        let mut pace = Pace::new();
        let levels = model_to(&mut pace, 2_000, 2, |l| 3 << l);
        assert!(levels.iter().all(|&l| l <= 2), "beyond two doublings");
        assert_eq!(pace.level, 2);
    }

    #[test]
    fn the_wait_stays_short_when_all_are_in_at_once() {
        // Two connections, both in within the shortest wait: longer waits gather nothing more.
        // The worker tries the next level now and then, and comes back.
        let mut pace = Pace::new();
        let levels = model(&mut pace, 20_000, |_| 2);
        let longer = levels.iter().filter(|&&l| l > 0).count();
        assert!(levels.iter().all(|&l| l <= 1), "went beyond one doubling");
        assert!(longer > 0, "never tried a longer wait");
        assert!(longer * 8 < levels.len(), "{longer} of {} periods at a longer wait", levels.len());
    }

    #[test]
    fn the_wait_settles_where_doubling_stops_paying_and_follows_the_load() {
        // A knee: doubling from the shortest gathers twice as many, the next doublings a little.
        let knee = |l: u8| [4, 8, 10, 11, 12][usize::from(l)];
        let mut pace = Pace::new();
        let levels = model(&mut pace, 20_000, knee);
        let settled = &levels[10_000..];
        let at_one = settled.iter().filter(|&&l| l == 1).count();
        assert!(
            at_one * 10 > settled.len() * 8,
            "{at_one} of {} periods at level 1",
            settled.len()
        );
        assert!(settled.iter().all(|&l| l <= 2));
        // Then many connections: up to the top.
        model(&mut pace, 2_000, |l| 3 << l);
        assert_eq!(pace.level, Pace::TOP);
        // Then few again: down within a few windows.
        let levels = model(&mut pace, 400, |_| 2);
        assert!(levels[levels.len() - 100..].iter().all(|&l| l <= 1), "{:?}", &levels[300..]);
        // Lingers that gather too little rest the worker, and start again from the shortest.
        model(&mut pace, 2_000, |l| 3 << l);
        model(&mut pace, 40, |_| 1);
        assert_eq!((pace.level, pace.lingering), (0, false));
    }

    #[test]
    fn linger_defaults() {
        assert_eq!(Linger::default().wait(), Duration::from_micros(20));
        assert_eq!(Linger::default().longest(), Duration::from_micros(320));
        assert_eq!(Linger::default().top(), 4);
        assert_eq!(Linger::fixed(Duration::from_micros(20)).top(), 0);
        assert_eq!(Linger::between(Duration::from_micros(20), Duration::from_micros(100)).top(), 2);
        assert_eq!(Linger::between(Duration::from_micros(20), Duration::from_micros(10)).top(), 0);
        assert!(Linger::off().wait().is_zero());
    }

    #[test]
    fn a_worker_counts_its_reads_and_messages_and_lingers_on_them() {
        let linger = Linger::fixed(Duration::from_millis(30));
        std::thread::spawn(move || {
            let mut lingered = 0;
            for _ in 0..8 {
                for _ in 0..4 {
                    count_read();
                    for _ in 0..8 {
                        count_message();
                    }
                }
                let started = std::time::Instant::now();
                linger.before_sleep();
                if PACE.get().lingering {
                    assert!(started.elapsed() >= Duration::from_millis(30));
                    lingered += 1;
                }
            }
            assert_eq!(lingered, 8, "{:?}", PACE.get());
            assert_eq!((READS.get(), MESSAGES.get()), (0, 0));
            let started = std::time::Instant::now();
            linger.before_sleep(); // no reads: no linger
            assert!(started.elapsed() < Duration::from_millis(30));
        })
        .join()
        .unwrap();
    }
}
