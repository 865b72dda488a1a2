//! A connection's outbound queue: bounded, and holding no allocation while it is empty.
//!
//! A channel such as `tokio::sync::mpsc` allocates its first block of slots up front (about
//! 1 KiB for this item type); with tens of thousands of mostly idle connections that is most
//! of their memory. This queue is a lock over its oldest item, kept inline, the others in a
//! `VecDeque` made for a burst and freed when it drains, and the reader's waker. A room's
//! broadcast round gives each member one item: pushing it touches the lock's cache line
//! alone, and allocates nothing.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::task::{Context, Poll};

use std::task::Waker;

use tokio::sync::Notify;

use std::sync::Arc;

use crate::message::{Events, Outbound};

pub(crate) struct Queue {
    state: Mutex<State>,
}

// In this order, the fields a push and a pop touch first: with the lock's own word they take
// 56 bytes.
#[repr(C)]
struct State {
    /// The oldest item.
    first: Option<Outbound>,
    /// Wakes the single reader once something is pushed: a waker, not a `Notify`, so that a
    /// session polling many queues needs no future per queue.
    reader: Option<Waker>,
    /// What the items take of the capacity ([`Outbound::count`]): a room's held
    /// broadcasts are one item, and count one per event.
    count: u32,
    capacity: u32,
    closed: bool,
    /// Counted in a [`Round`]: given held broadcasts while empty, not drained yet.
    counted: bool,
    /// The items after the first, while there are any. Boxed: one word rather than four in
    /// every connection, for bursts only.
    #[allow(clippy::box_collection)]
    rest: Option<Box<VecDeque<Outbound>>>,
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
                first: None,
                reader: None,
                count: 0,
                capacity: u32::try_from(capacity.max(1)).unwrap_or(u32::MAX),
                closed: false,
                counted: false,
                rest: None,
                writable: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every critical section is a plain push or pop: the state is consistent after a panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `item` if there is room, else gives it back (for [`Self::push`] to wait with).
    pub(crate) fn push_now(&self, item: Outbound) -> Result<Result<(), Outbound>, PushError> {
        let reader = {
            let mut state = self.lock();
            if state.closed {
                return Err(PushError::Closed);
            }
            if state.full() >= state.capacity() {
                return Ok(Err(item));
            }
            state.push(item)
        };
        wake(reader);
        Ok(Ok(()))
    }

    /// Queues `item` if there is room.
    pub(crate) fn try_push(&self, item: Outbound) -> Result<(), PushError> {
        self.push_now(item)?.map_err(|_| PushError::Full)
    }

    /// Queues a room's held broadcasts as one item if they fit, else as many of them as
    /// there is room for and `Full`: one lock, one wake-up. A queue that was empty is counted
    /// in `round` until it drains.
    pub(crate) fn try_push_events(
        &self,
        events: &Arc<Events>,
        round: &Round,
    ) -> Result<(), PushError> {
        let (result, reader) = {
            let mut state = self.lock();
            if state.closed {
                return Err(PushError::Closed);
            }
            if state.first.is_none() && !state.counted {
                state.counted = true;
                round.outstanding.fetch_add(1, Ordering::AcqRel);
            }
            if state.full() + events.len() <= state.capacity() {
                (Ok(()), state.push(Outbound::Events(events.clone())))
            } else {
                let room = state.capacity().saturating_sub(state.full());
                let mut reader = None;
                for emission in events.as_slice().iter().take(room) {
                    reader = state.push(Outbound::Event(emission.clone())).or(reader);
                }
                (Err(PushError::Full), reader)
            }
        };
        wake(reader);
        result
    }

    /// Queues `item` whatever the capacity (a recovered session's missed events).
    pub(crate) fn push_unbounded(&self, item: Outbound) -> Result<(), PushError> {
        let reader = {
            let mut state = self.lock();
            if state.closed {
                return Err(PushError::Closed);
            }
            state.push(item)
        };
        wake(reader);
        Ok(())
    }

    /// Queues `item`, waiting for room. Fails only if the reader is gone.
    pub(crate) async fn push(&self, item: Outbound) -> Result<(), PushError> {
        // Nearly always there is room: no waiter is registered for that.
        let mut item = match self.push_now(item)? {
            Ok(()) => return Ok(()),
            Err(item) => item,
        };
        let writable = self.lock().writable.get_or_insert_with(Default::default).clone();
        loop {
            let notified = writable.notified();
            tokio::pin!(notified);
            // Registered before looking, so that a pop in between is not missed.
            notified.as_mut().enable();
            item = match self.push_now(item)? {
                Ok(()) => return Ok(()),
                Err(item) => item,
            };
            notified.await;
        }
    }

    /// Whether nothing is queued: `None` once the reader is gone.
    pub(crate) fn is_idle(&self) -> Option<bool> {
        let state = self.lock();
        (!state.closed).then_some(state.first.is_none())
    }

    /// Takes the oldest item, if any; the last one of a counted queue ends its part in
    /// `round`.
    pub(crate) fn try_pop(&self, round: &Round) -> Option<Outbound> {
        self.pop_or_register(round, None)
    }

    /// Takes the oldest item; with none, registers `waker` (if given) for the next push.
    fn pop_or_register(&self, round: &Round, waker: Option<&Waker>) -> Option<Outbound> {
        let mut state = self.lock();
        let Some(item) = state.first.take() else {
            if let Some(waker) = waker
                && !state.reader.as_ref().is_some_and(|r| r.will_wake(waker))
            {
                state.reader = Some(waker.clone());
            }
            return None;
        };
        let was_full = state.full() >= state.capacity();
        state.count = state.count.saturating_sub(item.count().try_into().unwrap_or(u32::MAX));
        state.first = state.rest.as_mut().and_then(|rest| rest.pop_front());
        let mut drained = false;
        if state.first.is_none() {
            // Released once drained: an idle connection holds no block.
            state.rest = None;
            drained = std::mem::take(&mut state.counted);
        } else if state.rest.as_ref().is_some_and(|rest| rest.is_empty()) {
            state.rest = None;
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

    /// Ready when an item is queued (taking none); else registers the reader's waker for the
    /// next push.
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.lock();
        if state.first.is_some() || state.closed {
            return Poll::Ready(());
        }
        if !state.reader.as_ref().is_some_and(|r| r.will_wake(cx.waker())) {
            state.reader = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Takes the oldest item, or registers the reader's waker for the next push.
    pub(crate) fn poll_pop(&self, cx: &mut Context<'_>, round: &Round) -> Poll<Outbound> {
        match self.pop_or_register(round, Some(cx.waker())) {
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
            let items = (state.first.take(), state.rest.take(), state.reader.take());
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

    fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// Queues `item`; the reader's waker, to wake once the lock is let go.
    fn push(&mut self, item: Outbound) -> Option<Waker> {
        let count = u32::try_from(item.count()).unwrap_or(u32::MAX);
        self.count = self.count.saturating_add(count);
        if self.first.is_none() {
            self.first = Some(item);
        } else {
            self.rest.get_or_insert_default().push_back(item);
        }
        self.reader.take()
    }
}

/// Wakes the reader a push took the waker of.
fn wake(reader: Option<Waker>) {
    if let Some(reader) = reader {
        reader.wake();
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

    /// The lock's word, the first item, the reader's waker and the counts in 56 B: a push of
    /// a room's round to a member touches one cache line of it when it starts on one.
    #[test]
    fn the_queue_is_72_bytes_and_its_hot_part_56() {
        assert_eq!(size_of::<Queue>(), 72);
        assert_eq!(std::mem::offset_of!(State, rest), 48);
    }

    #[test]
    fn one_item_is_kept_inline_and_order_holds_across_the_burst() {
        let q = Queue::new(1000);
        assert!(q.try_push(item(0)).is_ok());
        assert!(q.lock().rest.is_none(), "one item allocates nothing");
        let mut next = 1;
        let mut popped = Vec::new();
        for burst in [3, 1, 5] {
            for _ in 0..burst {
                assert!(q.try_push(item(next)).is_ok());
                next += 1;
            }
            popped.push(code(q.try_pop(&Round::default()).unwrap()));
        }
        while let Some(o) = q.try_pop(&Round::default()) {
            popped.push(code(o));
        }
        assert_eq!(popped, (0..next).collect::<Vec<_>>());
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
            let state = q.lock();
            assert!(state.first.is_none() && state.rest.is_none());
        }
    }
}
