//! The pieces the session driver is made of, public for adapters that run a session of their
//! own: the messages in flight and the batched writer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::io::{AsyncRead, AsyncWrite};
use wsgate::adapter::{Direct, Emission, Events, Outbound, OutboundRx};

use crate::websocket::{Error as WsError, WebSocket};

/// Bytes of frames gathered before they are written, within a batch that is flushed anyway.
pub const WRITE_BUFFER: usize = 16 * 1024;

/// How many queued frames [`write_batch`] writes before its one flush (a room's held
/// broadcasts, one item, are written whole).
pub const WRITE_BATCH: usize = 64;

/// The work of one message: its dispatch, or its refusal. Its output says whose it was.
pub type Work<'a, T = ()> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The messages of one connection whose handlers are still running.
///
/// A message is polled once as it is read ([`Self::start`]): most handlers finish without
/// waiting (their answer is queued by then) and take no place here. The set behind it is made
/// for the first message that has to wait and dropped when it drains, so an idle connection
/// holds none.
pub struct InFlight<'a, T = ()> {
    set: Option<FuturesUnordered<Work<'a, T>>>,
}

impl<T> Default for InFlight<'_, T> {
    fn default() -> Self {
        Self { set: None }
    }
}

impl<'a, T> InFlight<'a, T> {
    /// No message in flight.
    pub fn new() -> Self {
        Self { set: None }
    }

    /// How many messages are still being handled.
    pub fn len(&self) -> usize {
        self.set.as_ref().map_or(0, FuturesUnordered::len)
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `work` until it first has to wait, and keeps it then: `true` when it was kept.
    pub async fn start(&mut self, mut work: Work<'a, T>) -> bool {
        let done = std::future::poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx).is_ready())).await;
        if !done {
            self.set.get_or_insert_with(FuturesUnordered::new).push(work);
        }
        !done
    }

    /// Keeps `work`, which was polled and has to wait.
    pub fn keep(&mut self, work: Work<'a, T>) {
        self.set.get_or_insert_with(FuturesUnordered::new).push(work);
    }

    /// Resolves with the output of a message in flight once it is done; never while none is
    /// (for a `select!` branch).
    pub async fn next_done(&mut self) -> T {
        std::future::poll_fn(|cx| self.poll_next_done(cx)).await
    }

    /// [`Self::next_done`] as a poll, for a loop that polls it beside other sources with no
    /// future of its own.
    pub fn poll_next_done(&mut self, cx: &mut Context<'_>) -> Poll<T> {
        let Some(set) = self.set.as_mut() else { return Poll::Pending };
        let Poll::Ready(Some(done)) = set.poll_next_unpin(cx) else { return Poll::Pending };
        if set.is_empty() {
            self.set = None;
        }
        Poll::Ready(done)
    }
}

impl<T> std::fmt::Debug for InFlight<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight").field("len", &self.len()).finish()
    }
}

/// Feeds `first` and whatever else `rx` holds, up to [`WRITE_BATCH`] frames (a room's held
/// broadcasts, one item, are written whole), to `ws` as text frames (each event followed by
/// its binary attachments as binary frames), then flushes once: the answers to a pipelined
/// batch leave in one system call.
///
/// `event` queues the text of an event on the socket (with [`WebSocket::queue_text`]), told
/// whether the item it came in is other recipients' too ([`Outbound::is_shared`]); `events`
/// may queue a room's held broadcasts, shared with the other members, without attachments, on
/// a socket that compresses nothing, in one go (with [`WebSocket::queue_framed`]), `false`
/// when it does not, and each is then given to `event`;
/// `direct` makes the text of a direct message. Text must be UTF-8 (serialised JSON is),
/// which is not checked again. Nothing is taken off the queue that the batch does not write.
pub async fn write_batch<S>(
    ws: &mut WebSocket<S>,
    first: Outbound,
    rx: &mut OutboundRx,
    event: impl Fn(&Arc<Emission>, bool, &mut WebSocket<S>) -> Result<(), WsError>,
    events: impl Fn(&Events, &mut WebSocket<S>) -> Result<bool, WsError>,
    direct: impl Fn(&Direct) -> Bytes,
) -> Result<(), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut item = first;
    let mut written = 0;
    loop {
        if let Outbound::Direct(message) = &item {
            ws.queue_text(&direct(message))?;
            for attachment in item.attachments() {
                ws.queue_binary(attachment)?;
            }
            if ws.unwritten() >= WRITE_BUFFER {
                ws.flush_queued().await?;
            }
        }
        let shared = item.is_shared();
        // A room's held broadcasts, framed once for all its members when the protocol can:
        // text frames alone (attachments are binary frames of their own), uncompressed.
        let framed = match &item {
            Outbound::Events(batch)
                if shared
                    && !ws.is_compressed()
                    && batch.as_slice().iter().all(|e| e.extras().binary.is_empty()) =>
            {
                events(batch, ws)?
            }
            _ => false,
        };
        if framed && ws.unwritten() >= WRITE_BUFFER {
            ws.flush_queued().await?;
        }
        for emission in item.emissions().iter().filter(|_| !framed) {
            event(emission, shared, ws)?;
            for attachment in &emission.extras().binary {
                ws.queue_binary(attachment)?;
            }
            if ws.unwritten() >= WRITE_BUFFER {
                ws.flush_queued().await?;
            }
        }
        written += item.count();
        drop(item);
        if written >= WRITE_BATCH {
            break;
        }
        match rx.try_recv() {
            Some(next) => item = next,
            None => break,
        }
    }
    ws.flush_queued().await
}

/// Queues the frames of an answer (an [`Outbound::Event`] or [`Outbound::Direct`]) on `ws`,
/// unflushed, as [`write_batch`] writes it: for a writer that answers from where it reads
/// ([`wsgate::App::dispatch_into`]) and flushes once its batch is handled. `false` for a
/// room's held broadcasts, which are not written here.
pub fn queue_answer<S>(
    ws: &mut WebSocket<S>,
    item: &Outbound,
    event: impl Fn(&Arc<Emission>, &mut WebSocket<S>) -> Result<(), WsError>,
    direct: impl Fn(&Direct) -> Bytes,
) -> Result<bool, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match item {
        Outbound::Direct(message) => ws.queue_text(&direct(message))?,
        Outbound::Event(emission) => event(emission, ws)?,
        Outbound::Events(_) => return Ok(false),
    }
    for attachment in item.attachments() {
        ws.queue_binary(attachment)?;
    }
    Ok(true)
}

/// Queues the frames of a queued item on `ws`, unflushed, as [`write_batch`] writes them, when
/// they are text alone on a socket that compresses nothing: an answer as [`queue_answer`]
/// does, a room's held broadcasts framed once for all the members (`events`) or else one by
/// one (`event`). For a writer that flushes at its next poll, with no future for the write.
/// `false`, nothing queued, for an item with binary attachments or on a compressing socket:
/// [`write_batch`] writes it, flushing as its buffer fills.
pub fn frame_whole<S>(
    ws: &mut WebSocket<S>,
    item: &Outbound,
    event: impl Fn(&Arc<Emission>, bool, &mut WebSocket<S>) -> Result<(), WsError>,
    events: impl Fn(&Events, &mut WebSocket<S>) -> Result<bool, WsError>,
    direct: impl Fn(&Direct) -> Bytes,
) -> Result<bool, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if ws.is_compressed() || !item.attachments().is_empty() {
        return Ok(false);
    }
    let Outbound::Events(batch) = item else {
        return queue_answer(ws, item, |emission, ws| event(emission, false, ws), direct);
    };
    if batch.as_slice().iter().any(|e| !e.extras().binary.is_empty()) {
        return Ok(false);
    }
    let shared = item.is_shared();
    if !(shared && events(batch, ws)?) {
        for emission in batch.as_slice() {
            event(emission, shared, ws)?;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_work_that_waits_is_kept_and_the_set_goes_when_it_drains() {
        let mut in_flight = InFlight::<u8>::new();
        assert!(!in_flight.start(Box::pin(async { 1 })).await);
        assert!(in_flight.is_empty() && in_flight.set.is_none(), "done at once: never kept");

        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        assert!(in_flight.start(Box::pin(async move { rx.await.map_or(0, |()| 2) })).await);
        assert_eq!(in_flight.len(), 1);
        tx.send(()).ok();
        assert_eq!(in_flight.next_done().await, 2, "its output says whose it was");
        assert!(in_flight.is_empty() && in_flight.set.is_none(), "drained: the set is dropped");

        // With nothing in flight, `next_done` never resolves.
        let idle =
            tokio::time::timeout(std::time::Duration::from_millis(20), in_flight.next_done());
        assert!(idle.await.is_err());
    }
}

pin_project_lite::pin_project! {
    /// A future run inside a span, as `tracing`'s `Instrumented`, with the span boxed, and
    /// none kept when it is disabled (a session's `debug` span, with the usual `info` level):
    /// a session's task holds 8 bytes for it rather than 40. See [`in_span`].
    pub struct InSpan<F> {
        span: Option<Box<tracing::Span>>,
        #[pin]
        inner: F,
    }
}

/// `inner`, entering `span` whenever it is polled.
pub fn in_span<F: Future>(inner: F, span: tracing::Span) -> InSpan<F> {
    InSpan { span: (!span.is_disabled()).then(|| Box::new(span)), inner }
}

impl<F: Future> Future for InSpan<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _entered = this.span.as_deref().map(tracing::Span::enter);
        this.inner.poll(cx)
    }
}

impl<F> std::fmt::Debug for InSpan<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InSpan").field("span", &self.span).finish_non_exhaustive()
    }
}
