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
/// The price is latency: a message that arrives while the worker lingers waits at most
/// [`wait`](Self::wait) before it is read (a lingering worker's timer slack is set to 1 µs,
/// where a thread's is 50 µs by default). The default, [`Linger::DEFAULT_WAIT`], is 20 µs;
/// [`Linger::off`] turns it off. `docs/PERFORMANCE.md` ("Lingering before sleep") has what it
/// saves at each load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Linger {
    wait: Duration,
}

impl Default for Linger {
    fn default() -> Self {
        Self::new(Self::DEFAULT_WAIT)
    }
}

impl Linger {
    /// How long a worker lingers by default.
    pub const DEFAULT_WAIT: Duration = Duration::from_micros(20);
    /// Messages per read from which a worker lingers.
    pub const PACE: f32 = 2.0;

    /// Lingers `wait` (none when zero).
    pub const fn new(wait: Duration) -> Self {
        Self { wait }
    }

    /// Never lingers.
    pub const fn off() -> Self {
        Self::new(Duration::ZERO)
    }

    /// `WSGATE_LINGER_US` microseconds (`0`: off), or the default when it is not set.
    ///
    /// # Errors
    /// When it is set and is not a number of microseconds.
    pub fn from_env() -> Result<Self, std::num::ParseIntError> {
        match std::env::var("WSGATE_LINGER_US") {
            Ok(us) => Ok(Self::new(Duration::from_micros(us.trim().parse()?))),
            Err(_) => Ok(Self::default()),
        }
    }

    /// How long a worker lingers.
    pub const fn wait(&self) -> Duration {
        self.wait
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
        let pace = PACE.get().step(reads, messages);
        PACE.set(pace);
        if pace.lingering {
            LINGERS.fetch_add(1, Ordering::Relaxed);
            precise_timers();
            std::thread::sleep(self.wait);
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
}

impl Pace {
    /// Reads per linger from which lingering goes on.
    const GATHER: f32 = 1.5;
    /// Where `reads_per_linger` starts when lingering is tried (again): a few lingers that
    /// gather one read each bring it under [`Self::GATHER`].
    const TRY: f32 = 2.0;
    /// Waking periods without lingering after lingers that did not pay.
    const REST: u32 = 1024;

    const fn new() -> Self {
        Self { messages_per_read: 0.0, reads_per_linger: Self::TRY, lingering: false, rest: 0 }
    }

    /// After a waking period with `reads` and `messages`: whether to linger now. A period
    /// without reads (timers, emits from elsewhere) does not move the pace, and no client's
    /// burst is on its way: no linger.
    fn step(mut self, reads: u32, messages: u32) -> Self {
        #[allow(clippy::cast_precision_loss)] // counts of one waking period: far below 2^24
        let (reads_f, messages_f) = (reads as f32, messages as f32);
        if self.lingering {
            self.reads_per_linger = (self.reads_per_linger * 3.0 + reads_f) / 4.0;
            if self.reads_per_linger < Self::GATHER {
                self.rest = Self::REST;
                self.reads_per_linger = Self::TRY;
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
                *pace = pace.step(reads, messages);
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

    #[test]
    fn linger_defaults() {
        assert_eq!(Linger::default().wait(), Duration::from_micros(20));
        assert!(Linger::off().wait().is_zero());
    }

    #[test]
    fn a_worker_counts_its_reads_and_messages_and_lingers_on_them() {
        let linger = Linger::new(Duration::from_millis(30));
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
