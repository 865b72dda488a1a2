//! Limits: the per-connection message rate (a token bucket) and connections per peer address.

use std::cell::Cell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

thread_local! {
    /// Inside [`in_read_batch`] on this thread.
    static IN_BATCH: Cell<bool> = const { Cell::new(false) };
    /// The clock as the batch's first message read it.
    static BATCH_NOW: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Runs `f`, in which the messages an adapter handles on this thread were read together (one
/// read of the socket, say): their rate limit reads the clock once for all of them, not once
/// each. They arrived together; only the clock's cost is saved (a tenth of a microsecond
/// each, a few per cent of a small message's handling). Nothing that may wait belongs inside:
/// the clock stands still there. Nested calls are one batch.
pub fn in_read_batch<R>(f: impl FnOnce() -> R) -> R {
    /// Ends the batch on return or unwind, unless it is an outer one's.
    struct End(bool);
    impl Drop for End {
        fn drop(&mut self) {
            if !self.0 {
                IN_BATCH.set(false);
                BATCH_NOW.set(None);
            }
        }
    }
    let _end = End(IN_BATCH.replace(true));
    f()
}

/// The clock for a rate limit: the batch's reading inside [`in_read_batch`].
fn now() -> Instant {
    if !IN_BATCH.get() {
        return Instant::now();
    }
    BATCH_NOW.get().unwrap_or_else(|| {
        let now = Instant::now();
        BATCH_NOW.set(Some(now));
        now
    })
}

/// How many messages a connection may send: `per_second` on average, `burst` at once.
///
/// A message over the rate gets an `exception` `Too many messages.` and is not handled; a
/// client that keeps sending past the rate (as many refused messages as `burst`) is closed
/// with 1008. Default: 100 per second, bursts of 200.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Messages per second, on average.
    pub per_second: f64,
    /// Messages at once; also how many refused messages end the connection.
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self { per_second: 100.0, burst: 200 }
    }
}

/// What the bucket says about one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Handle it.
    Admit,
    /// Refuse it with an exception.
    Refuse,
    /// Refuse it and close the connection: the client keeps going.
    Close,
}

/// One connection's bucket.
#[derive(Debug)]
pub(crate) struct Bucket {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Reckoned in `f64`, kept in `f32` (exact for whole tokens up to 2^24, and what it
    /// rounds away is far below a token): every connection that sends holds a bucket in its
    /// `Connection`, whose size is kept in an allocator size class (see its test).
    tokens: f32,
    refused: u32,
    last: Instant,
}

impl Bucket {
    pub(crate) fn new(limit: &RateLimit) -> Self {
        let state = State { tokens: limit.burst as f32, refused: 0, last: Instant::now() };
        Self { state: Mutex::new(state) }
    }

    pub(crate) fn admit(&self, limit: &RateLimit) -> Admission {
        let mut s = crate::connection::lock(&self.state);
        let now = now();
        let refill = now.duration_since(s.last).as_secs_f64() * limit.per_second;
        let mut tokens = (f64::from(s.tokens) + refill).min(f64::from(limit.burst));
        s.last = now;
        let admit = tokens >= 1.0;
        if admit {
            tokens -= 1.0;
        }
        // Rounded to the nearest `f32`: 6e-5 of a token at most, with 1 000 in the bucket.
        s.tokens = tokens as f32;
        if admit {
            s.refused = 0;
            return Admission::Admit;
        }
        s.refused += 1;
        if s.refused >= limit.burst.max(1) { Admission::Close } else { Admission::Refuse }
    }
}

/// The refusal of a handshake from an address that holds its maximum of connections.
pub const TOO_MANY_CONNECTIONS: &str = "Too many connections from this address.";

/// Open connections (and handshakes under way) per peer address.
#[derive(Debug, Default)]
pub(crate) struct PeerCounts {
    counts: Mutex<HashMap<IpAddr, u32>>,
}

impl PeerCounts {
    /// Takes one of `max` slots for `addr`, or `None` when all are taken. The slot is given
    /// back when the returned guard drops.
    pub(crate) fn acquire(self: &Arc<Self>, addr: IpAddr, max: usize) -> Option<PeerSlot> {
        let mut counts = crate::connection::lock(&self.counts);
        let count = counts.entry(addr).or_insert(0);
        if *count as usize >= max {
            return None;
        }
        *count += 1;
        Some(PeerSlot { counts: self.clone(), addr })
    }

    /// How many slots `addr` holds.
    pub(crate) fn count(&self, addr: IpAddr) -> usize {
        crate::connection::lock(&self.counts).get(&addr).map_or(0, |&c| c as usize)
    }
}

/// One connection's place in its peer address's count; released on drop.
#[derive(Debug)]
pub(crate) struct PeerSlot {
    counts: Arc<PeerCounts>,
    addr: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut counts = crate::connection::lock(&self.counts.counts);
        if let Some(count) = counts.get_mut(&self.addr) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bursts_then_the_rate_then_refusals_then_close() {
        let limit = RateLimit { per_second: 10.0, burst: 3 };
        let bucket = Bucket::new(&limit);
        for _ in 0..3 {
            assert_eq!(bucket.admit(&limit), Admission::Admit);
        }
        assert_eq!(bucket.admit(&limit), Admission::Refuse);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(bucket.admit(&limit), Admission::Admit, "one token per 100 ms");
        assert_eq!(bucket.admit(&limit), Admission::Refuse);
        assert_eq!(bucket.admit(&limit), Admission::Refuse);
        assert_eq!(bucket.admit(&limit), Admission::Close, "3 refusals in a row");
    }

    #[test]
    fn messages_read_together_share_one_reading_of_the_clock() {
        // A bucket of two tokens that refills in a nanosecond: a millisecond apart, a third
        // message is admitted, unless all three were read in one batch.
        let limit = RateLimit { per_second: 1e9, burst: 2 };
        let bucket = Bucket::new(&limit);
        let pause = || std::thread::sleep(Duration::from_millis(1));
        for _ in 0..2 {
            assert_eq!(bucket.admit(&limit), Admission::Admit);
        }
        pause();
        assert_eq!(bucket.admit(&limit), Admission::Admit, "refilled meanwhile");
        pause();
        in_read_batch(|| {
            assert_eq!(bucket.admit(&limit), Admission::Admit);
            pause();
            // Nested: still the same batch.
            in_read_batch(|| {
                assert_eq!(bucket.admit(&limit), Admission::Admit, "the last token");
            });
            pause();
            assert_eq!(bucket.admit(&limit), Admission::Refuse, "the batch's clock");
        });
        pause();
        assert_eq!(bucket.admit(&limit), Admission::Admit, "after the batch, the clock again");
        // A batch that unwinds ends too.
        let _ = std::panic::catch_unwind(|| in_read_batch(|| panic!("a handler's panic")));
        assert!(!IN_BATCH.get() && BATCH_NOW.get().is_none());
    }

    #[test]
    fn peer_slots_are_counted_per_address_and_given_back() {
        let counts = Arc::new(PeerCounts::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = counts.acquire(a, 2).expect("first slot");
        let second = counts.acquire(a, 2).expect("second slot");
        assert!(counts.acquire(a, 2).is_none(), "a third is over the limit");
        let other = counts.acquire(b, 2).expect("another address has its own count");
        drop(first);
        assert_eq!(counts.count(a), 1);
        let third = counts.acquire(a, 2).expect("a slot given back can be taken again");
        drop((second, third, other));
        assert_eq!(counts.count(a), 0);
        assert!(crate::connection::lock(&counts.counts).is_empty(), "no entry left behind");
    }
}
