//! Corking (uWebSockets' word): room broadcasts made while a corked future is polled are
//! gathered, and delivered once the run queue has had its turn, each member getting all of
//! them at once.
//!
//! A publisher whose frames keep coming (a client emitting in a loop, a burst read at once)
//! makes broadcast after broadcast to the same room. Queued one by one, each broadcast visits
//! every member: its connection, its queue's lock, its task's waker, thousands of cache
//! misses per event. Corked, consecutive broadcasts to the same room are held in the server
//! until a task of their own delivers them, after the tasks already scheduled (the members
//! writing the previous ones) had their turn; each member is then visited once for all of
//! them: one lock, one wake-up, one write.
//!
//! Nothing is reordered for anyone. Whatever else would reach a connection or change a room
//! while broadcasts are held (a reply, an emit to one connection, a broadcast to another set,
//! a join, a leave, a departure), on any thread, first delivers the held ones, in order: the
//! server's `held` flag is checked before every queue push and room change. A broadcast's
//! recipients are the room's members when it is delivered, which is before any membership
//! change made after it. Only broadcasts made inside a corked poll are held (an adapter's
//! sessions, with [`cork`]); elsewhere (a REST handler, a test) an emit is queued at once.
//! Connection state recovery's broadcasts are never held: they are recorded and delivered
//! under their history's lock.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::message::Emission;
use crate::names::{ConnectionId, Namespace, RoomId};
use crate::server::Server;

/// Broadcasts to one room, held.
pub(crate) struct Pending {
    pub(crate) namespace: Namespace,
    pub(crate) room: RoomId,
    pub(crate) except: Option<ConnectionId>,
    pub(crate) emissions: Vec<Arc<Emission>>,
}

/// A server's held broadcasts.
#[derive(Default)]
pub(crate) struct Held {
    /// Whether `pending` may hold something: the cheap check before every push.
    any: AtomicBool,
    /// In the order they were made. Locked while they are delivered, so that two deliveries
    /// cannot interleave.
    pending: Mutex<Vec<Pending>>,
    /// The members the last delivery woke, until they took what it gave them.
    pub(crate) round: crate::queue::Round,
}

thread_local! {
    /// Corked polls under way on this thread (a corked future may poll another).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// This thread is delivering held broadcasts: what an observer emits meanwhile goes at
    /// once.
    static DELIVERING: Cell<bool> = const { Cell::new(false) };
}

impl Held {
    /// Holds a broadcast back if a corked poll is under way on this thread: `false` if not,
    /// for the caller to deliver it at once.
    pub(crate) fn defer(
        &self,
        server: &Server,
        namespace: &Namespace,
        room: &RoomId,
        except: Option<ConnectionId>,
        emission: &Arc<Emission>,
    ) -> bool {
        if DEPTH.get() == 0 || DELIVERING.get() {
            return false;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(last) = pending.last_mut()
            && last.except == except
            && last.room == *room
            && last.namespace == *namespace
        {
            last.emissions.push(emission.clone());
            return true;
        }
        let first = pending.is_empty();
        pending.push(Pending {
            namespace: namespace.clone(),
            room: room.clone(),
            except,
            emissions: vec![emission.clone()],
        });
        self.any.store(true, Ordering::Release);
        drop(pending);
        if first {
            // Delivered after what is scheduled now, unless something else needs it first.
            let server = server.clone();
            tokio::spawn(async move {
                // After the members given the last delivery took it (what is emitted
                // meanwhile joins this one), or, with none left, after the poll under way.
                if !server.round().drained(MAX_HOLD).await {
                    tokio::task::yield_now().await;
                }
                server.deliver_held();
            });
        }
        true
    }

    /// Delivers what is held, if anything, in order, with `deliver`.
    pub(crate) fn flush(&self, deliver: impl Fn(Pending)) {
        if !self.any.load(Ordering::Acquire) || DELIVERING.get() {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let _delivering = Delivering::start();
        for broadcast in pending.drain(..) {
            deliver(broadcast);
        }
        // Cleared once they are all queued, not before: a push on another thread meanwhile
        // waits for the lock, rather than overtaking the members not reached yet.
        self.any.store(false, Ordering::Release);
    }
}

/// Marks this thread as delivering held broadcasts until dropped, on return or unwind (an
/// observer that panics must not leave the thread skipping every later delivery).
struct Delivering;

impl Delivering {
    fn start() -> Self {
        DELIVERING.set(true);
        Self
    }
}

impl Drop for Delivering {
    fn drop(&mut self) {
        DELIVERING.set(false);
    }
}

/// How long held broadcasts may wait for the members of the last round.
const MAX_HOLD: Duration = Duration::from_millis(5);

pin_project_lite::pin_project! {
    /// A future whose polls are corked (see [`cork`]).
    #[derive(Debug)]
    #[must_use = "futures do nothing unless polled"]
    pub struct Corked<F> {
        #[pin]
        inner: F,
    }
}

/// Corks `future`'s polls: the room broadcasts it makes are gathered and delivered once the
/// tasks already scheduled had their turn, each member getting all of them in one go. What an
/// adapter wraps a session in, so that a client emitting to a room in a loop costs each
/// member one wake-up and one write per round rather than per event.
///
/// Nothing is reordered. Whatever else would reach a connection or change a room while
/// broadcasts are held (a reply, an emit to one connection, a broadcast to another set, a
/// join, a leave, a departure), from any task, first delivers the held ones, in order. A
/// broadcast's recipients are the room's members when it is delivered, before any change
/// made after it; its count ([`Broadcast::emit`](crate::Broadcast::emit)) is the members it
/// is for. Needs a tokio runtime (it spawns the delivery).
pub fn cork<F: Future>(future: F) -> Corked<F> {
    Corked { inner: future }
}

/// Ends a corked poll, on return or unwind.
struct Uncork;

impl Drop for Uncork {
    fn drop(&mut self) {
        DEPTH.set(DEPTH.get() - 1);
    }
}

impl<F: Future> Future for Corked<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        DEPTH.set(DEPTH.get() + 1);
        let _uncork = Uncork;
        self.project().inner.poll(cx)
    }
}
