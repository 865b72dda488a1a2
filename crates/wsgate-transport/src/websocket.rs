//! The server's side of a WebSocket (RFC 6455) over an upgraded connection, with
//! permessage-deflate (RFC 7692).
//!
//! Made for many idle connections: a connection holds no read or write buffer between
//! messages (each is allocated for a burst of frames and released once it is consumed or
//! written), and, without context takeover, no compression state either (the compressor and
//! the decompressor are the thread's, reset after each message).
//!
//! Frames are read whole (up to the message size limit) and unmasked in place; a fragmented
//! message is assembled before it is handed over. Pings are answered and closes echoed by the
//! socket itself, as RFC 6455 asks; both are still handed over, as activity.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use flate2::{Compress, Decompress, FlushCompress, FlushDecompress, Status};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use wsgate::adapter::{Emission, WireFormat};

use crate::compression::Negotiated;

/// Bytes written to the socket's buffer before a send waits for them to be written.
const WRITE_HIGH_WATER: usize = 16 * 1024;

/// Why a websocket failed.
#[derive(Debug)]
pub enum Error {
    /// The connection failed.
    Io(io::Error),
    /// The client broke RFC 6455 or RFC 7692 (the socket sent a 1002 close).
    Protocol(&'static str),
    /// A text message was not UTF-8 (the socket sent a 1007 close).
    InvalidUtf8,
    /// A message, or a frame, was over the size limit.
    TooBig,
    /// The closing handshake is done: nothing more can be sent.
    Closed,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "connection failed: {e}"),
            Self::Protocol(what) => write!(f, "protocol error: {what}"),
            Self::InvalidUtf8 => f.write_str("a text message is not UTF-8"),
            Self::TooBig => f.write_str("message over the size limit"),
            Self::Closed => f.write_str("the websocket is closed"),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xa;

const FIN: u8 = 0x80;
const RSV1: u8 = 0x40;

/// A message arriving in fragments.
struct Partial {
    text: bool,
    compressed: bool,
    data: BytesMut,
}

/// A websocket at rest ([`WebSocket::into_resting`]): its connection and settings, without
/// the buffers and state of a websocket in use (a quarter of its size, in every sleeping
/// session).
pub struct Resting<S> {
    io: S,
    deflate: Option<Box<Negotiated>>,
    read_chunk: u32,
    max_message: u32,
}

impl<S> Resting<S> {
    /// The connection under the websocket.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The websocket in use again, over `io`, and the connection it was over.
    pub fn wake<T>(self, io: T) -> (S, WebSocket<T>) {
        let Self { io: old, deflate, read_chunk, max_message } = self;
        (old, WebSocket::fresh(io, deflate, read_chunk, max_message))
    }
}

impl<S> fmt::Debug for Resting<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resting").field("deflate", &self.deflate.is_some()).finish_non_exhaustive()
    }
}

/// The server's side of a websocket over `S`.
pub struct WebSocket<S> {
    io: S,
    /// Bytes read and not yet taken as frames; no allocation while there are none.
    read: BytesMut,
    /// Frames waiting to be written; no allocation while there are none.
    write: BytesMut,
    partial: Option<Box<Partial>>,
    deflate: Option<Box<Negotiated>>,
    /// u32, as `max_message`: 8 B fewer in every session's task.
    read_chunk: u32,
    /// At most 4 GiB, then.
    max_message: u32,
    close_sent: bool,
    close_received: bool,
    eof: bool,
    /// A control frame is queued (a pong, a close): what is queued is written at the next
    /// read rather than at the next flush. Data frames wait for their writer's flush, which
    /// may gather a batch of answers ([`wsgate::App::dispatch_into`]).
    urgent: bool,
}

impl<S> fmt::Debug for WebSocket<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocket")
            .field("buffered", &self.read.len())
            .field("unwritten", &self.write.len())
            .field("deflate", &self.deflate.is_some())
            .field("close_sent", &self.close_sent)
            .field("close_received", &self.close_received)
            .finish_non_exhaustive()
    }
}

impl<S> WebSocket<S> {
    /// The server's side of a websocket whose handshake is done: reads `read_chunk` bytes at a
    /// time (more for a frame known to be larger), refuses frames and messages over
    /// `max_message` bytes, and compresses as negotiated.
    pub fn new(io: S, read_chunk: usize, max_message: usize, deflate: Option<Negotiated>) -> Self {
        Self::fresh(
            io,
            deflate.map(Box::new),
            u32::try_from(read_chunk.max(64)).unwrap_or(u32::MAX),
            u32::try_from(max_message).unwrap_or(u32::MAX),
        )
    }

    /// Nothing read, written or closed yet, with these settings.
    fn fresh(io: S, deflate: Option<Box<Negotiated>>, read_chunk: u32, max_message: u32) -> Self {
        Self {
            io,
            read: BytesMut::new(),
            write: BytesMut::new(),
            partial: None,
            deflate,
            read_chunk,
            max_message,
            close_sent: false,
            close_received: false,
            eof: false,
            urgent: false,
        }
    }

    /// The connection under the websocket.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The connection under the websocket.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// Takes `read` as read already from the connection: what the HTTP server read past the
    /// upgrade request (a client's first frames, sent without waiting for the `101`).
    #[must_use]
    pub fn with_read(mut self, read: &[u8]) -> Self {
        self.read.extend_from_slice(read);
        self
    }

    /// Nothing half read, nothing unwritten, no close begun: the websocket's state can be kept
    /// apart from its connection ([`Self::replace_io`]) until the client sends again.
    pub fn is_at_rest(&self) -> bool {
        self.read.is_empty()
            && self.write.is_empty()
            && self.partial.is_none()
            && !self.close_sent
            && !self.close_received
            && !self.eof
    }

    /// The same websocket over `io`, and the connection it was over.
    pub fn replace_io<T>(self, io: T) -> (S, WebSocket<T>) {
        let Self {
            io: old,
            read,
            write,
            partial,
            deflate,
            read_chunk,
            max_message,
            close_sent,
            close_received,
            eof,
            urgent,
        } = self;
        let ws = WebSocket {
            io,
            read,
            write,
            partial,
            deflate,
            read_chunk,
            max_message,
            close_sent,
            close_received,
            eof,
            urgent,
        };
        (old, ws)
    }

    /// The websocket at rest over `io`, without its buffers, which are empty; `None` if it is
    /// not at rest ([`Self::is_at_rest`]).
    pub fn into_resting<T>(self, io: T) -> Option<Resting<T>> {
        let at_rest = self.is_at_rest();
        let Self { deflate, read_chunk, max_message, .. } = self;
        at_rest.then_some(Resting { io, deflate, read_chunk, max_message })
    }

    /// Whether permessage-deflate was negotiated.
    pub fn is_compressed(&self) -> bool {
        self.deflate.is_some()
    }

    /// Queues a text frame of `payload`, which must be UTF-8 (it is not checked: serialised
    /// JSON is), compressed when negotiated and at least the threshold long. Written by the
    /// next flush.
    pub fn queue_text(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.queue_data(OP_TEXT, payload)
    }

    /// Queues frames made by [`push_text_frame`], as they are: for a connection that
    /// compresses nothing ([`Self::is_compressed`]).
    pub fn queue_framed(&mut self, frames: &[u8]) -> Result<(), Error> {
        if self.close_sent {
            return Err(Error::Closed);
        }
        out(&mut self.write).extend_from_slice(frames);
        Ok(())
    }

    /// Queues a binary frame, compressed as [`Self::queue_text`] is.
    pub fn queue_binary(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.queue_data(OP_BINARY, payload)
    }

    /// Bytes queued and not yet written.
    pub fn unwritten(&self) -> usize {
        self.write.len()
    }

    fn queue_data(&mut self, opcode: u8, payload: &[u8]) -> Result<(), Error> {
        if self.close_sent {
            return Err(Error::Closed);
        }
        if let Some(deflate) = &mut self.deflate
            && payload.len() >= deflate.threshold
        {
            let write = out(&mut self.write);
            return deflate.compress(payload, |compressed| {
                frame(write, FIN | RSV1 | opcode, compressed);
            });
        }
        frame(out(&mut self.write), FIN | opcode, payload);
        Ok(())
    }

    fn queue_control(&mut self, opcode: u8, payload: &[u8]) -> Result<(), Error> {
        if self.close_sent {
            return Err(Error::Closed);
        }
        // Control frames carry at most 125 bytes.
        frame(out(&mut self.write), FIN | opcode, &payload[..payload.len().min(125)]);
        self.urgent = true;
        if opcode == OP_CLOSE {
            self.close_sent = true;
        }
        Ok(())
    }

    fn queue_close(&mut self, close: Option<&CloseFrame>) -> Result<(), Error> {
        let mut payload = Vec::new();
        if let Some(close) = close {
            payload.extend_from_slice(&u16::from(close.code).to_be_bytes());
            // At most 123 bytes of reason, cut on a character boundary.
            let reason = close.reason.as_str();
            let mut end = reason.len().min(123);
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            payload.extend_from_slice(&reason.as_bytes()[..end]);
        }
        self.queue_control(OP_CLOSE, &payload)
    }

    /// Fails the connection: a close frame with `code` is queued (and written if it can be at
    /// once), and `error` returned.
    fn fail(&mut self, code: u16, error: Error) -> Error {
        if !self.close_sent {
            let _ = self.queue_control(OP_CLOSE, &code.to_be_bytes());
        }
        self.read = BytesMut::new();
        self.partial = None;
        error
    }

    /// The next message in what was read, if a whole one is there.
    fn parse(&mut self) -> Result<Option<Message>, Error> {
        loop {
            let Some(header) = Header::parse(&self.read)? else { return Ok(None) };
            let control = header.opcode & 0x8 != 0;
            if header.b0 & 0x30 != 0 {
                return Err(Error::Protocol("reserved bits set"));
            }
            if control && (header.b0 & FIN == 0 || header.len > 125 || header.b0 & RSV1 != 0) {
                return Err(Error::Protocol("bad control frame"));
            }
            let before = self.partial.as_ref().map_or(0, |p| p.data.len());
            let max_message = self.max_message as usize;
            if header.len > (max_message - before.min(max_message)) as u64 {
                return Err(Error::TooBig);
            }
            // Checked against the limit just above, so it fits a usize.
            let len = usize::try_from(header.len).map_err(|_| Error::TooBig)?;
            let total = header.size + len;
            if self.read.len() < total {
                self.read.reserve(total - self.read.len());
                return Ok(None);
            }
            let mut payload = self.read.split_to(total);
            payload.advance(header.size);
            unmask(&mut payload, header.mask);
            let fin = header.b0 & FIN != 0;
            let rsv1 = header.b0 & RSV1 != 0;
            match header.opcode {
                OP_TEXT | OP_BINARY => {
                    if self.partial.is_some() {
                        return Err(Error::Protocol("a new message before the last one ended"));
                    }
                    if rsv1 && self.deflate.is_none() {
                        return Err(Error::Protocol("compressed frame without permessage-deflate"));
                    }
                    let text = header.opcode == OP_TEXT;
                    if fin {
                        return self.message(text, rsv1, payload).map(Some);
                    }
                    self.partial =
                        Some(Box::new(Partial { text, compressed: rsv1, data: payload }));
                }
                OP_CONTINUATION => {
                    if rsv1 {
                        return Err(Error::Protocol("RSV1 on a continuation frame"));
                    }
                    let Some(partial) = self.partial.as_mut() else {
                        return Err(Error::Protocol("a continuation frame without a message"));
                    };
                    partial.data.extend_from_slice(&payload);
                    if fin {
                        let Some(partial) = self.partial.take() else { continue };
                        let Partial { text, compressed, data } = *partial;
                        return self.message(text, compressed, data).map(Some);
                    }
                }
                OP_PING => {
                    let payload = payload.freeze();
                    if !self.close_sent {
                        self.queue_control(OP_PONG, &payload)?;
                    }
                    return Ok(Some(Message::Ping(payload)));
                }
                OP_PONG => return Ok(Some(Message::Pong(payload.freeze()))),
                OP_CLOSE => return self.closed(payload.freeze()).map(Some),
                _ => return Err(Error::Protocol("unknown opcode")),
            }
        }
    }

    /// A whole message: inflated if it was compressed, checked if it is text.
    fn message(&mut self, text: bool, compressed: bool, data: BytesMut) -> Result<Message, Error> {
        let data = match (&mut self.deflate, compressed) {
            (Some(deflate), true) => deflate.decompress(&data, self.max_message as usize)?,
            _ => data.freeze(),
        };
        if !text {
            return Ok(Message::Binary(data));
        }
        Utf8Bytes::try_from(data).map(Message::Text).map_err(|_| Error::InvalidUtf8)
    }

    /// The client's close frame: echoed (its code) unless the server closed first.
    fn closed(&mut self, payload: Bytes) -> Result<Message, Error> {
        self.close_received = true;
        let close = match payload.len() {
            0 => None,
            1 => return Err(Error::Protocol("a close frame of one byte")),
            _ => {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                let valid = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
                if !valid {
                    return Err(Error::Protocol("a close code that may not be sent"));
                }
                let reason =
                    Utf8Bytes::try_from(payload.slice(2..)).map_err(|_| Error::InvalidUtf8)?;
                Some(CloseFrame { code: code.into(), reason })
            }
        };
        if !self.close_sent {
            let echo = close.as_ref().map(|c| CloseFrame { code: c.code, reason: "".into() });
            self.queue_close(echo.as_ref())?;
        }
        Ok(Message::Close(close))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    /// Writes what is queued and flushes the connection.
    pub fn poll_write_all(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        while !self.write.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.write))?;
            if n == 0 {
                return Poll::Ready(Err(Error::Io(io::ErrorKind::WriteZero.into())));
            }
            self.write.advance(n);
        }
        self.urgent = false;
        // Nothing held between bursts: the buffer goes back to the thread.
        give_back(std::mem::take(&mut self.write));
        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        Poll::Ready(Ok(()))
    }

    /// Writes what is queued; done once all of it is.
    pub async fn flush_queued(&mut self) -> Result<(), Error> {
        std::future::poll_fn(|cx| self.poll_write_all(cx)).await
    }

    /// Sends a close frame (unless one was sent) and writes it with what is queued.
    pub async fn close(&mut self, close: Option<CloseFrame>) -> Result<(), Error> {
        if !self.close_sent {
            self.queue_close(close.as_ref())?;
        }
        self.flush_queued().await
    }

    /// Reads more of the connection into the read buffer: `false` at its end.
    ///
    /// Through the thread's read buffer ([`READ_BUFFER`] bytes), of which what came is copied:
    /// a client's burst is taken in one system call, and the connection keeps only what it
    /// got. A frame known to be larger than that is read straight into its own buffer.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, Error>> {
        let spare = self.read.capacity() - self.read.len();
        if spare >= READ_BUFFER || self.read_chunk as usize > READ_BUFFER {
            return self.poll_fill_direct(cx);
        }
        INBOX.with_borrow_mut(|inbox| {
            if inbox.len() < READ_BUFFER {
                inbox.resize(READ_BUFFER, 0);
            }
            let mut buf = ReadBuf::new(&mut inbox[..]);
            let read = Pin::new(&mut self.io).poll_read(cx, &mut buf);
            let n = buf.filled().len();
            if n > 0 {
                self.read.extend_from_slice(&inbox[..n]);
            }
            ready!(read)?;
            Poll::Ready(Ok(n > 0))
        })
    }

    /// Reads at least `read_chunk` bytes' room straight into the read buffer.
    fn poll_fill_direct(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, Error>> {
        let filled = self.read.len();
        let want = (self.read.capacity() - filled).max(self.read_chunk as usize);
        self.read.resize(filled + want, 0);
        let mut buf = ReadBuf::new(&mut self.read[filled..]);
        let read = Pin::new(&mut self.io).poll_read(cx, &mut buf);
        let n = buf.filled().len();
        self.read.truncate(filled + n);
        if self.read.is_empty() {
            self.read = BytesMut::new();
        }
        ready!(read)?;
        Poll::Ready(Ok(n > 0))
    }

    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, Error>>> {
        // Pongs and the close reply go out without waiting for the next send.
        if self.urgent
            && let Poll::Ready(Err(e)) = self.poll_write_all(cx)
        {
            return Poll::Ready(Some(Err(e)));
        }
        loop {
            if self.close_received {
                // Only the end of the connection is left to read.
                self.read = BytesMut::new();
                if self.eof {
                    return Poll::Ready(None);
                }
            } else {
                match self.parse() {
                    Ok(Some(message)) => {
                        wsgate::runtime::count_message();
                        if self.read.is_empty() {
                            self.read = BytesMut::new();
                        }
                        if self.urgent {
                            let _ = self.poll_write_all(cx);
                        }
                        return Poll::Ready(Some(Ok(message)));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let e = match e {
                            Error::Protocol(_) => self.fail(1002, e),
                            Error::InvalidUtf8 => self.fail(1007, e),
                            Error::TooBig => self.fail(1009, e),
                            e => e,
                        };
                        let _ = self.poll_write_all(cx);
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                if self.eof {
                    return Poll::Ready(None);
                }
            }
            match ready!(self.poll_fill(cx)) {
                // A read that brought bytes, counted for the runtime's linger.
                Ok(true) => wsgate::runtime::count_read(),
                Ok(false) => self.eof = true,
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WebSocket<S> {
    type Item = Result<Message, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_message(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WebSocket<S> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        if this.write.len() >= WRITE_HIGH_WATER {
            return this.poll_write_all(cx);
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<(), Error> {
        let this = self.get_mut();
        match message {
            Message::Text(text) => this.queue_data(OP_TEXT, text.as_bytes()),
            Message::Binary(data) => this.queue_data(OP_BINARY, &data),
            Message::Ping(data) => this.queue_control(OP_PING, &data),
            Message::Pong(data) => this.queue_control(OP_PONG, &data),
            Message::Close(close) => this.queue_close(close.as_ref()),
            Message::Frame(_) => Err(Error::Protocol("raw frames are not sent")),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.get_mut().poll_write_all(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        if !this.close_sent {
            this.queue_close(None)?;
        }
        this.poll_write_all(cx)
    }
}

/// A frame header as read: first byte, opcode, payload length, mask, and its own size.
struct Header {
    b0: u8,
    opcode: u8,
    len: u64,
    mask: [u8; 4],
    size: usize,
}

impl Header {
    fn parse(buf: &[u8]) -> Result<Option<Self>, Error> {
        let [b0, b1, rest @ ..] = buf else { return Ok(None) };
        if b1 & 0x80 == 0 {
            return Err(Error::Protocol("an unmasked frame from a client"));
        }
        let (len, rest) = match b1 & 0x7f {
            126 => match rest {
                [a, b, rest @ ..] => (u64::from(u16::from_be_bytes([*a, *b])), rest),
                _ => return Ok(None),
            },
            127 => match rest.split_first_chunk::<8>() {
                Some((bytes, rest)) => {
                    let len = u64::from_be_bytes(*bytes);
                    if len >> 63 != 0 {
                        return Err(Error::Protocol("a 64-bit length with its top bit set"));
                    }
                    (len, rest)
                }
                None => return Ok(None),
            },
            n => (u64::from(n), rest),
        };
        let Some((mask, _)) = rest.split_first_chunk::<4>() else { return Ok(None) };
        Ok(Some(Self {
            b0: *b0,
            opcode: b0 & 0x0f,
            len,
            mask: *mask,
            size: buf.len() - rest.len() + 4,
        }))
    }
}

/// Writes a server frame (unmasked) with `b0` as its first byte.
fn frame(out: &mut BytesMut, b0: u8, payload: &[u8]) {
    let (head, n) = head(b0, payload.len());
    out.reserve(n + payload.len());
    out.extend_from_slice(&head[..n]);
    out.extend_from_slice(payload);
}

/// A server frame's header (unmasked): its first byte and the payload's length; the bytes
/// and how many of them it takes.
fn head(b0: u8, len: usize) -> ([u8; 10], usize) {
    let mut head = [0; 10];
    head[0] = b0;
    let n = match len {
        0..=125 => {
            head[1] = len as u8;
            2
        }
        126..=0xffff => {
            head[1] = 126;
            head[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        }
        _ => {
            head[1] = 127;
            head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        }
    };
    (head, n)
}

/// Events as one run of text frames of their text in the wire format `F`, uncompressed: made
/// once for every member of a room ([`wsgate::adapter::Events::with_framed`]).
pub fn text_frames<F: WireFormat>(emissions: &[Arc<Emission>]) -> Bytes {
    let mut out = Vec::new();
    for emission in emissions {
        emission.with_encoded::<F, _>(|text| push_text_frame(&mut out, text));
    }
    Bytes::from(out)
}

/// Appends a text frame of `payload` to `out`, uncompressed, as the server sends it: for a
/// run of frames made once and written to many connections ([`WebSocket::queue_framed`]).
pub fn push_text_frame(out: &mut Vec<u8>, payload: &[u8]) {
    let (head, n) = head(FIN | OP_TEXT, payload.len());
    out.reserve(n + payload.len());
    out.extend_from_slice(&head[..n]);
    out.extend_from_slice(payload);
}

/// Unmasks a client's payload in place, eight bytes at a time.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

thread_local! {
    /// The thread's compressors without context takeover, by (level, window bits).
    static COMPRESSORS: RefCell<Vec<((u32, u8), Compress)>> = const { RefCell::new(Vec::new()) };
    /// The thread's decompressor (the client never keeps its context: see `compression`).
    static DECOMPRESSOR: RefCell<Option<Decompress>> = const { RefCell::new(None) };
    /// Where a message is compressed before it is framed.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Where the thread's connections read into ([`WebSocket::poll_fill`]).
    static INBOX: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// A write buffer written out, for the next connection of the thread that writes.
    static OUTBOX: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// The largest write buffer kept for the thread's next burst.
const OUTBOX_KEPT: usize = 64 * 1024;

/// `write`, the thread's spare buffer if it held none: a burst of frames is written into a
/// buffer grown already, not one allocated and grown again for each.
fn out(write: &mut BytesMut) -> &mut BytesMut {
    if write.capacity() == 0 {
        *write = OUTBOX.take();
    }
    write
}

/// Keeps a buffer written out for the thread's next burst, unless it holds one already or
/// this one is large.
fn give_back(mut spent: BytesMut) {
    spent.clear();
    // Written whole, its room is its own again from its start: nothing allocated or copied.
    let _ = spent.try_reclaim(spent.capacity() + 1);
    if spent.capacity() > 0 && spent.capacity() <= OUTBOX_KEPT {
        OUTBOX.with_borrow_mut(|spare| {
            if spare.capacity() < spent.capacity() {
                *spare = spent;
            }
        });
    }
}

/// The size of the thread's read buffer: a burst of small frames is one system call.
const READ_BUFFER: usize = 16 * 1024;

/// The tail a sync flush ends with, which permessage-deflate leaves off (RFC 7692 §7.2.1).
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

impl Negotiated {
    /// Compresses `payload` into one message's deflate data and hands it to `out`.
    fn compress(&mut self, payload: &[u8], out: impl FnOnce(&[u8])) -> Result<(), Error> {
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            match &mut self.own {
                Some(compress) => deflate(compress, payload, scratch)?,
                None => COMPRESSORS.with_borrow_mut(|compressors| {
                    let key = (self.level, self.server_window_bits);
                    let index = match compressors.iter().position(|(k, _)| *k == key) {
                        Some(index) => index,
                        None => {
                            compressors.push((key, self.compressor()));
                            compressors.len() - 1
                        }
                    };
                    let compress = &mut compressors[index].1;
                    let done = deflate(compress, payload, scratch);
                    compress.reset();
                    done
                })?,
            }
            out(scratch);
            // A large message's scratch is not kept.
            if scratch.capacity() > 64 * 1024 {
                *scratch = Vec::new();
            }
            Ok(())
        })
    }

    /// Inflates one message's deflate data, refusing more than `max` bytes.
    fn decompress(&mut self, data: &[u8], max: usize) -> Result<Bytes, Error> {
        DECOMPRESSOR.with_borrow_mut(|slot| {
            let decompress = slot.get_or_insert_with(|| Decompress::new(false));
            let inflated = inflate(decompress, data, max);
            decompress.reset(false);
            inflated
        })
    }
}

fn deflate(compress: &mut Compress, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    loop {
        out.reserve(input.len() / 2 + 64);
        let before = compress.total_in();
        compress
            .compress_vec(input, out, FlushCompress::Sync)
            .map_err(|e| Error::Io(io::Error::other(e)))?;
        let taken = usize::try_from(compress.total_in() - before).unwrap_or(input.len());
        input = &input[taken.min(input.len())..];
        // Done when all input is taken and the flush had room to finish.
        if input.is_empty() && out.len() < out.capacity() {
            break;
        }
    }
    if out.ends_with(&SYNC_TAIL) {
        out.truncate(out.len() - SYNC_TAIL.len());
    }
    Ok(())
}

fn inflate(decompress: &mut Decompress, data: &[u8], max: usize) -> Result<Bytes, Error> {
    let mut out: Vec<u8> = Vec::with_capacity((data.len() * 4).clamp(64, max.max(64)));
    let mut ended = false;
    for mut input in [data, &SYNC_TAIL[..]] {
        while !ended {
            if out.len() == out.capacity() {
                if out.len() >= max {
                    return Err(Error::TooBig);
                }
                out.reserve((out.len()).clamp(64, max - out.len()));
            }
            let before = decompress.total_in();
            let status = decompress
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
                .map_err(|_| Error::Protocol("bad deflate data"))?;
            let taken = usize::try_from(decompress.total_in() - before).unwrap_or(input.len());
            input = &input[taken.min(input.len())..];
            if out.len() > max {
                return Err(Error::TooBig);
            }
            // A final block: what follows it (the tail) is not read.
            ended = matches!(status, Status::StreamEnd);
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use futures_util::{SinkExt, StreamExt};
    use http::{HeaderMap, HeaderValue, header};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;
    use crate::compression::Compression;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    #[test]
    fn at_rest_it_keeps_its_settings_and_not_its_buffers() {
        // The fd, the deflate box and two u32: what every sleeping session holds of it.
        assert!(size_of::<Resting<std::net::TcpStream>>() <= 24);
        let ws = WebSocket::new((), 4096, 1 << 20, None);
        let resting = ws.into_resting(7u8).expect("a new websocket is at rest");
        assert_eq!(*resting.get_ref(), 7);
        let (old, ws) = resting.wake(());
        assert_eq!(old, 7);
        assert!(ws.is_at_rest() && !ws.is_compressed());
        assert_eq!((ws.read_chunk, ws.max_message), (4096, 1 << 20));
        // Bytes unread: not at rest, nothing let go.
        let ws = WebSocket::new((), 4096, 1 << 20, None).with_read(b"\x81");
        assert!(ws.into_resting(()).is_none());
    }

    /// A client's frame: masked, as RFC 6455 requires.
    fn masked(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        frame(&mut out, b0, payload);
        out[1] |= 0x80;
        let at = out.len() - payload.len();
        let mut frame = out[..at].to_vec();
        frame.extend_from_slice(&MASK);
        let mut body = payload.to_vec();
        unmask(&mut body, MASK);
        frame.extend_from_slice(&body);
        frame
    }

    fn negotiated(offer: &str, setting: &Compression) -> Negotiated {
        let mut headers = HeaderMap::new();
        headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_str(offer).unwrap());
        setting.negotiate(&headers).unwrap().1
    }

    fn pair(deflate: Option<Negotiated>) -> (WebSocket<DuplexStream>, DuplexStream) {
        let (server, client) = tokio::io::duplex(1 << 20);
        (WebSocket::new(server, 64, 1024, deflate), client)
    }

    async fn next(ws: &mut WebSocket<DuplexStream>) -> Message {
        ws.next().await.expect("a message").expect("not an error")
    }

    async fn written(client: &mut DuplexStream, n: usize) -> Vec<u8> {
        let mut out = vec![0; n];
        client.read_exact(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn frames_are_read_whole_across_reads_and_fragments() {
        let (mut ws, mut client) = pair(None);
        let long = "x".repeat(300);
        let mut bytes = masked(FIN | OP_TEXT, long.as_bytes());
        bytes.extend(masked(OP_BINARY, b"ab"));
        // A ping between fragments is answered and handed over.
        bytes.extend(masked(FIN | OP_PING, b"p"));
        bytes.extend(masked(FIN | OP_CONTINUATION, b"cd"));
        for chunk in bytes.chunks(7) {
            client.write_all(chunk).await.unwrap();
        }
        assert_eq!(next(&mut ws).await, Message::text(long));
        assert_eq!(next(&mut ws).await, Message::Ping(Bytes::from_static(b"p")));
        assert_eq!(next(&mut ws).await, Message::binary(&b"abcd"[..]));
        assert_eq!(written(&mut client, 3).await, [FIN | OP_PONG, 1, b'p']);
        assert!(ws.read.is_empty() && ws.read.capacity() == 0, "nothing held between messages");
    }

    #[tokio::test]
    async fn a_close_is_echoed_and_the_stream_ends_with_the_connection() {
        let (mut ws, mut client) = pair(None);
        client.write_all(&masked(FIN | OP_CLOSE, &[0x03, 0xe8, b'b', b'y', b'e'])).await.unwrap();
        let Message::Close(Some(close)) = next(&mut ws).await else { panic!("a close") };
        assert_eq!((u16::from(close.code), close.reason.as_str()), (1000, "bye"));
        assert_eq!(written(&mut client, 4).await, [FIN | OP_CLOSE, 2, 0x03, 0xe8]);
        drop(client);
        assert!(ws.next().await.is_none());
        assert!(matches!(ws.send(Message::text("late")).await, Err(Error::Closed)));
    }

    #[tokio::test]
    async fn protocol_errors_fail_the_connection_with_their_code() {
        for (bytes, code) in [
            (vec![FIN | OP_TEXT, 0x01, b'x'], 1002),       // unmasked
            (masked(FIN | 0x20 | OP_TEXT, b"x"), 1002),    // RSV2
            (masked(FIN | RSV1 | OP_TEXT, b"x"), 1002),    // RSV1 without deflate
            (masked(OP_PING, b"x"), 1002),                 // fragmented control frame
            (masked(FIN | OP_CONTINUATION, b"x"), 1002),   // continuation of nothing
            (masked(FIN | 0x3, b"x"), 1002),               // unknown opcode
            (masked(FIN | OP_CLOSE, &[0x03, 0xed]), 1002), // 1005 may not be sent
            (masked(FIN | OP_TEXT, &[0xff, 0xfe]), 1007),  // not UTF-8
            (masked(FIN | OP_BINARY, &[0; 1025]), 1009),   // over the limit
        ] {
            let (mut ws, mut client) = pair(None);
            client.write_all(&bytes).await.unwrap();
            assert!(ws.next().await.expect("an item").is_err(), "{bytes:x?}");
            let [b0, 2, hi, lo] = written(&mut client, 4).await[..] else { panic!() };
            assert_eq!((b0, u16::from_be_bytes([hi, lo])), (FIN | OP_CLOSE, code), "{bytes:x?}");
        }
    }

    #[tokio::test]
    async fn large_frames_have_extended_lengths() {
        let (mut ws, mut client) = pair(None);
        ws.send(Message::binary(vec![7u8; 200])).await.unwrap();
        let head = written(&mut client, 4).await;
        assert_eq!(head, [FIN | OP_BINARY, 126, 0, 200]);
        assert_eq!(written(&mut client, 200).await, vec![7u8; 200]);
        assert_eq!(ws.write.capacity(), 0, "nothing held once written");
    }

    #[tokio::test]
    async fn a_run_of_frames_made_once_is_what_each_frame_queued_alone_would_be() {
        // Every length form: 7 bits, 16 bits (126..=65535), 64 bits.
        let payloads: Vec<Vec<u8>> =
            [0, 1, 125, 126, 200, 65_535, 65_536, 70_000].map(|n| vec![b'x'; n]).into();
        let mut run = Vec::new();
        for payload in &payloads {
            push_text_frame(&mut run, payload);
        }
        let (mut one, mut client_one) = pair(None);
        let (mut each, mut client_each) = pair(None);
        one.queue_framed(&run).unwrap();
        for payload in &payloads {
            each.queue_text(payload).unwrap();
        }
        let total = run.len();
        let (a, b) = tokio::join!(
            async {
                one.flush_queued().await.unwrap();
                written(&mut client_one, total).await
            },
            async {
                each.flush_queued().await.unwrap();
                written(&mut client_each, total).await
            }
        );
        assert_eq!(a, b);
        assert_eq!(a, run);
        // And they read back as the payloads.
        let (mut ws, mut client) = pair(None);
        let mut masked_run = Vec::new();
        for payload in &payloads[..3] {
            masked_run.extend(masked(FIN | OP_TEXT, payload));
        }
        client.write_all(&masked_run).await.unwrap();
        for payload in &payloads[..3] {
            assert_eq!(
                next(&mut ws).await,
                Message::text(String::from_utf8(payload.clone()).unwrap())
            );
        }
    }

    // The examples of RFC 7692 §7.2.3.
    #[tokio::test]
    async fn rfc_7692_examples_are_read() {
        let deflate = || Some(negotiated("permessage-deflate", &Compression::new()));
        for bytes in [
            // One compressed frame.
            masked(FIN | RSV1 | OP_TEXT, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]),
            // The same in two fragments.
            [masked(RSV1 | OP_TEXT, &[0xf2, 0x48, 0xcd]), masked(FIN, &[0xc9, 0xc9, 0x07, 0x00])]
                .concat(),
            // A block with no compression.
            masked(
                FIN | RSV1 | OP_TEXT,
                &[0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00],
            ),
            // BFINAL set.
            masked(FIN | RSV1 | OP_TEXT, &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00]),
        ] {
            let (mut ws, mut client) = pair(deflate());
            client.write_all(&bytes).await.unwrap();
            assert_eq!(next(&mut ws).await, Message::text("Hello"), "{bytes:x?}");
        }
    }

    #[tokio::test]
    async fn messages_over_the_threshold_are_compressed_each_on_its_own() {
        let setting = Compression::new().threshold(4);
        let (mut ws, mut client) = pair(Some(negotiated("permessage-deflate", &setting)));
        ws.feed(Message::text("Hello")).await.unwrap();
        ws.feed(Message::text("Hello")).await.unwrap();
        ws.feed(Message::text("Hi!")).await.unwrap();
        ws.flush().await.unwrap();
        // RFC 7692 §7.2.3.1's bytes, twice: no context taken over.
        let hello = [FIN | RSV1 | OP_TEXT, 7, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(written(&mut client, 18).await, [hello, hello].concat());
        assert_eq!(written(&mut client, 5).await, [FIN | OP_TEXT, 3, b'H', b'i', b'!']);
    }

    #[tokio::test]
    async fn with_context_takeover_a_message_refers_to_the_last() {
        let setting = Compression::new().threshold(0).context_takeover(true);
        let (mut ws, mut client) = pair(Some(negotiated("permessage-deflate", &setting)));
        ws.feed(Message::text("Hello")).await.unwrap();
        ws.feed(Message::text("Hello")).await.unwrap();
        ws.flush().await.unwrap();
        drop(ws);
        let mut all = Vec::new();
        client.read_to_end(&mut all).await.unwrap();
        let (first, second) = all.split_at(9);
        assert_eq!(first[2..], [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        // The second refers to the first (as in RFC 7692 §7.2.3.2, where zlib's choice of
        // block differs): shorter, and read with the first's window only.
        assert_eq!(second[0], FIN | RSV1 | OP_TEXT);
        assert!(second.len() < first.len(), "{second:x?}");
        let mut reader = Decompress::new(false);
        assert_eq!(inflate(&mut reader, &first[2..], 100).unwrap(), "Hello");
        assert_eq!(inflate(&mut reader, &second[2..], 100).unwrap(), "Hello");
        assert!(inflate(&mut Decompress::new(false), &second[2..], 100).is_err());
    }

    #[tokio::test]
    async fn inflation_stops_at_the_message_limit() {
        let (mut ws, mut client) =
            pair(Some(negotiated("permessage-deflate", &Compression::new())));
        // 100 000 zeros compress to a few hundred bytes: a bomb for a 1 KiB limit.
        let mut compress = Compress::new(flate2::Compression::best(), false);
        let mut bomb = Vec::new();
        deflate(&mut compress, &vec![0u8; 100_000], &mut bomb).unwrap();
        assert!(bomb.len() < 1024);
        client.write_all(&masked(FIN | RSV1 | OP_BINARY, &bomb)).await.unwrap();
        assert!(matches!(ws.next().await, Some(Err(Error::TooBig))));
        // Garbage is a protocol error.
        let (mut ws, mut client) =
            pair(Some(negotiated("permessage-deflate", &Compression::new())));
        client.write_all(&masked(FIN | RSV1 | OP_TEXT, &[0xff, 0xff, 0xff])).await.unwrap();
        assert!(matches!(ws.next().await, Some(Err(Error::Protocol(_)))));
    }

    #[tokio::test]
    async fn a_tungstenite_client_talks_to_it() {
        use tokio_tungstenite::WebSocketStream;
        use tokio_tungstenite::tungstenite::protocol::Role;
        let (server, io) = tokio::io::duplex(1 << 16);
        let mut ws = WebSocket::new(server, 64, 1 << 20, None);
        let mut peer = WebSocketStream::from_raw_socket(io, Role::Client, None).await;
        let big = "y".repeat(70_000);
        // More than the pipe holds: each side writes while the other reads.
        let (sent, received) = tokio::join!(peer.send(Message::text(big.clone())), next(&mut ws));
        sent.unwrap();
        assert_eq!(received, Message::text(big.clone()));
        let (sent, received) = tokio::join!(ws.send(Message::text(big.clone())), peer.next());
        sent.unwrap();
        assert_eq!(received.unwrap().unwrap(), Message::text(big));
        ws.close(Some(CloseFrame { code: 1001.into(), reason: "going".into() })).await.unwrap();
        let Some(Ok(Message::Close(Some(close)))) = peer.next().await else { panic!("a close") };
        assert_eq!(u16::from(close.code), 1001);
    }
}
