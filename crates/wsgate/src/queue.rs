//! A connection's outbound queue: bounded, and holding no allocation while it is empty.
//!
//! A channel such as `tokio::sync::mpsc` allocates its first block of slots up front (about
//! 1 KiB for this item type); with tens of thousands of mostly idle connections that is most
//! of their memory. This queue is a `VecDeque` behind a lock: empty, it owns nothing (its
//! block is freed when it drains, and allocated again by the next burst).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

use std::sync::Arc;

use crate::message::{Events, Outbound};

pub(crate) struct Queue {
    state: Mutex<State>,
    capacity: usize,
    /// Wakes the single reader: a waker, not a `Notify`, so that a session polling many
    /// queues needs no future per queue.
    readable: AtomicWaker,
}

struct State {
    items: VecDeque<Outbound>,
    /// What the items take of the capacity ([`Outbound::count`]): a room's held
    /// broadcasts are one item, and count one per event.
    count: u32,
    closed: bool,
    /// Counted in a [`Round`]: given held broadcasts while empty, not drained yet.
    counted: bool,
    /// Wakes writers waiting for room; made for the first that waits (few ever do, and an
    /// idle connection's queue would hold 32 B for it).
    writable: Option<Arc<Notify>>,
}

/// The members a delivery of held broadcasts woke ([`crate::cork`]), counted until each has
/// taken what it was given: the next delivery waits for them, gathering what comes meanwhile.
#[derive(Default)]
pub(crate) struct Round {
    outstanding: AtomicUsize,
    drained: Notify,
}

impl Round {
    fn done(&self) {
        if self.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.drained.notify_waiters();
        }
    }

    /// Waits until every member of the last round took what it was given, at most `within`;
    /// `false` at once if none is left.
    pub(crate) async fn drained(&self, within: std::time::Duration) -> bool {
        let drained = self.drained.notified();
        tokio::pin!(drained);
        // Registered before looking, so that the last member's notice is not missed.
        drained.as_mut().enable();
        if self.outstanding.load(Ordering::Acquire) == 0 {
            return false;
        }
        let _ = tokio::time::timeout(within, drained).await;
        true
    }
}

/// Why an item could not be queued.
pub(crate) enum PushError {
    Full,
    Closed,
}

impl Queue {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                items: VecDeque::new(),
                count: 0,
                closed: false,
                counted: false,
                writable: None,
            }),
            capacity: capacity.clamp(1, u32::MAX as usize),
            readable: AtomicWaker::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every critical section is a plain push or pop: the state is consistent after a panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `item` if there is room.
    pub(crate) fn try_push(&self, item: Outbound) -> Result<(), PushError> {
        {
            let mut state = self.lock();
            if state.closed {
                return Err(PushError::Closed);
            }
            if state.full() >= self.capacity {
                return Err(PushError::Full);
            }
            state.push(item);
        }
        self.readable.wake();
        Ok(())
    }

    /// Queues a room's held broadcasts as one item if they fit, else as many of them as
    /// there is room for and `Full`: one lock, one wake-up. A queue that was empty is counted
    /// in `round` until it drains.
    pub(crate) fn try_push_events(
        &self,
        events: &Arc<Events>,
        round: &Round,
    ) -> Result<(), PushError> {
        let result = {
            let mut state = self.lock();
            if state.closed {
                return Err(PushError::Closed);
            }
            if state.items.is_empty() && !state.counted {
                state.counted = true;
                round.outstanding.fetch_add(1, Ordering::AcqRel);
            }
            if state.full() + events.len() <= self.capacity {
                state.push(Outbound::Events(events.clone()));
                Ok(())
            } else {
                let room = self.capacity.saturating_sub(state.full());
                for emission in events.as_slice().iter().take(room) {
                    state.push(Outbound::Event(emission.clone()));
                }
                Err(PushError::Full)
            }
        };
        self.readable.wake();
        result
    }

    /// Queues `item` whatever the capacity (a recovered session's missed events).
    pub(crate) fn push_unbounded(&self, item: Outbound) -> Result<(), PushError> {
        {
            let mut state = self.lock();
            if state.closed {
                return Err(PushError::Closed);
            }
            state.push(item);
        }
        self.readable.wake();
        Ok(())
    }

    /// Queues `item`, waiting for room. Fails only if the reader is gone.
    pub(crate) async fn push(&self, item: Outbound) -> Result<(), PushError> {
        // Nearly always there is room: no waiter is registered for that.
        {
            let mut state = self.lock();
            if state.closed {
                return Err(PushError::Closed);
            }
            if state.full() < self.capacity {
                state.push(item);
                drop(state);
                self.readable.wake();
                return Ok(());
            }
        }
        let mut item = Some(item);
        let writable = self.lock().writable.get_or_insert_with(Default::default).clone();
        loop {
            let notified = writable.notified();
            tokio::pin!(notified);
            // Registered before looking, so that a pop in between is not missed.
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                if state.closed {
                    return Err(PushError::Closed);
                }
                if state.full() < self.capacity {
                    if let Some(item) = item.take() {
                        state.push(item);
                    }
                    drop(state);
                    self.readable.wake();
                    return Ok(());
                }
            }
            notified.await;
        }
    }

    /// Takes the oldest item, if any; the last one of a counted queue ends its part in
    /// `round`.
    pub(crate) fn try_pop(&self, round: &Round) -> Option<Outbound> {
        let mut state = self.lock();
        let was_full = state.full() >= self.capacity;
        let item = state.items.pop_front()?;
        state.count = state.count.saturating_sub(item.count().try_into().unwrap_or(u32::MAX));
        let mut drained = false;
        // Released once drained: an idle connection holds no block (64 B at the least).
        if state.items.is_empty() {
            state.items = VecDeque::new();
            drained = std::mem::take(&mut state.counted);
        }
        let writable = if was_full { state.writable.clone() } else { None };
        drop(state);
        if drained {
            round.done();
        }
        if let Some(writable) = writable {
            writable.notify_waiters();
        }
        Some(item)
    }

    /// Takes the oldest item, or registers the reader's waker for the next push.
    pub(crate) fn poll_pop(&self, cx: &mut Context<'_>, round: &Round) -> Poll<Outbound> {
        if let Some(item) = self.try_pop(round) {
            return Poll::Ready(item);
        }
        self.readable.register(cx.waker());
        // Looked at again: a push between the first look and the registration woke nobody.
        match self.try_pop(round) {
            Some(item) => Poll::Ready(item),
            None => Poll::Pending,
        }
    }

    /// Takes the oldest item, waiting for one.
    pub(crate) async fn pop(&self, round: &Round) -> Outbound {
        std::future::poll_fn(|cx| self.poll_pop(cx, round)).await
    }

    /// The reader is gone: writers fail from now on, and queued items are dropped.
    pub(crate) fn close(&self, round: &Round) {
        let (items, drained, writable) = {
            let mut state = self.lock();
            state.closed = true;
            state.count = 0;
            let items = std::mem::take(&mut state.items);
            (items, std::mem::take(&mut state.counted), state.writable.clone())
        };
        drop(items);
        if drained {
            round.done();
        }
        if let Some(writable) = writable {
            writable.notify_waiters();
        }
    }

    /// What is queued, counted as [`Outbound::count`] does.
    pub(crate) fn len(&self) -> usize {
        self.lock().full()
    }
}

impl State {
    /// How much of the capacity is taken.
    fn full(&self) -> usize {
        self.count as usize
    }

    fn push(&mut self, item: Outbound) {
        let count = u32::try_from(item.count()).unwrap_or(u32::MAX);
        self.count = self.count.saturating_add(count);
        self.items.push_back(item);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::message::Emission;

    /// Items numbered by their event name.
    fn item(n: u16) -> Outbound {
        let emission = Emission::serialize(n.to_string(), &()).expect("serialises");
        Outbound::Event(emission)
    }

    fn code(o: Outbound) -> u16 {
        match o {
            Outbound::Event(e) => e.event().as_str().parse().unwrap_or(u16::MAX),
            Outbound::Events(_) | Outbound::Direct(_) => u16::MAX,
        }
    }

    #[tokio::test]
    async fn bounded_in_order_and_waiting_writers_get_room() {
        let q = Arc::new(Queue::new(2));
        assert!(q.try_push(item(0)).is_ok());
        assert!(q.try_push(item(1)).is_ok());
        assert!(matches!(q.try_push(item(2)), Err(PushError::Full)));

        let writer = tokio::spawn({
            let q = q.clone();
            async move { q.push(item(2)).await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!writer.is_finished(), "the writer waits for room");
        assert_eq!(code(q.pop(&Round::default()).await), 0);
        assert!(writer.await.unwrap());
        assert_eq!(code(q.pop(&Round::default()).await), 1);
        assert_eq!(code(q.pop(&Round::default()).await), 2);
        assert!(q.try_pop(&Round::default()).is_none());
    }

    #[tokio::test]
    async fn reader_wakes_on_push_and_close_fails_writers() {
        let q = Arc::new(Queue::new(1));
        let reader = tokio::spawn({
            let q = q.clone();
            async move { code(q.pop(&Round::default()).await) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(q.try_push(item(1)).is_ok());
        assert_eq!(reader.await.unwrap(), 1);

        assert!(q.try_push(item(0)).is_ok());
        let writer = tokio::spawn({
            let q = q.clone();
            async move { q.push(item(0)).await.is_err() }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        q.close(&Round::default());
        assert!(writer.await.unwrap(), "a closed queue fails waiting writers");
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn drained_queues_release_their_memory() {
        let q = Queue::new(1000);
        for n in [1, 100] {
            for _ in 0..n {
                assert!(q.try_push(item(0)).is_ok());
            }
            while q.try_pop(&Round::default()).is_some() {}
            assert_eq!(q.lock().items.capacity(), 0);
        }
    }
}
