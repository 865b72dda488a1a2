//! `floor-echo`: the least a plain WebSocket echo can do per reply with the system calls every
//! server here makes, to measure the floor under the echo benchmark's CPU per reply.
//!
//! One thread, one epoll instance (mio, edge-triggered), no runtime, no task, no allocation
//! per message: each readable connection is read once into its buffer (once more only if the
//! read filled it), every whole text frame in it is answered with the same payload in an
//! unmasked frame (`{"event":"echo","data":…}` is its own reply), and the answers leave in one
//! write. That is the pattern of wsgate and of uWebSockets: an `epoll_wait` for whatever is
//! ready, one `recv` and one `send` per connection woken. No authentication, no JSON read:
//! not a server to use, a measure of what is left once the framework costs nothing.
//!
//! It lingers before each wait as wsgate's runtime does (`wsgate::runtime::Linger`, the same
//! rule, `WSGATE_LINGER_US` and `WSGATE_LINGER_MAX_US`), so that both make their system calls
//! for as many messages.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};

use anyhow::Context;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(usize::MAX);
/// Read at most this much at once, as a server's read buffer.
const READ: usize = 16 * 1024;
/// The largest frame answered; a larger one ends its connection (what a connection buffers
/// is bounded by it).
const MAX_FRAME: usize = 1 << 20;
/// Answers left unwritten beyond this end the connection: a client that sends and does not
/// read.
const MAX_UNWRITTEN: usize = 4 << 20;

struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet handled: a partial frame, or the handshake.
    input: Vec<u8>,
    /// Answers not yet written (the socket was full).
    output: Vec<u8>,
    upgraded: bool,
}

/// Serves on 127.0.0.1:`port` until killed.
pub(crate) fn serve(port: u16) -> anyhow::Result<()> {
    let mut listener = TcpListener::bind(([127, 0, 0, 1], port).into())
        .with_context(|| format!("binding 127.0.0.1:{port}"))?;
    let mut poll = Poll::new()?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("floor echo on ws://127.0.0.1:{port}/");
    let mut events = Events::with_capacity(1024);
    let mut conns: HashMap<usize, Conn> = HashMap::new();
    let mut next = 0usize;
    let mut scratch = vec![0u8; READ];
    let linger = wsgate::runtime::Linger::from_env().context("WSGATE_LINGER_US")?;
    loop {
        linger.before_sleep();
        poll.poll(&mut events, None)?;
        for event in &events {
            if event.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            stream.set_nodelay(true)?;
                            let token = Token(next);
                            next += 1;
                            poll.registry().register(
                                &mut stream,
                                token,
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            let conn = Conn {
                                stream,
                                input: Vec::new(),
                                output: Vec::new(),
                                upgraded: false,
                            };
                            conns.insert(token.0, conn);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e.into()),
                    }
                }
                continue;
            }
            let Some(conn) = conns.get_mut(&event.token().0) else { continue };
            let open = (!event.is_readable() || conn.read(&mut scratch))
                && (conn.output.is_empty() || conn.flush())
                && conn.output.len() <= MAX_UNWRITTEN;
            if !open && let Some(mut conn) = conns.remove(&event.token().0) {
                let _ = poll.registry().deregister(&mut conn.stream);
            }
        }
    }
}

impl Conn {
    /// Reads what is there and answers it (the answers for the caller to write); `false`
    /// when the connection is done.
    fn read(&mut self, scratch: &mut [u8]) -> bool {
        loop {
            match self.stream.read(scratch) {
                Ok(0) => return false,
                Ok(n) => {
                    wsgate::runtime::count_read();
                    let open = if self.input.is_empty() && self.upgraded {
                        // The usual case: whole frames, answered from the scratch buffer.
                        let used = answer(&mut scratch[..n], &mut self.output);
                        match used {
                            Some(used) => {
                                self.input.extend_from_slice(&scratch[used..n]);
                                true
                            }
                            None => false,
                        }
                    } else {
                        self.input.extend_from_slice(&scratch[..n]);
                        self.handle()
                    };
                    if !open {
                        return false;
                    }
                    if n < scratch.len() {
                        // Edge-triggered: a short read emptied the socket.
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }

    /// Handles the buffered input: the handshake, then frames.
    fn handle(&mut self) -> bool {
        if !self.upgraded {
            let Some(end) = self.input.windows(4).position(|w| w == b"\r\n\r\n") else {
                return self.input.len() < 16 * 1024;
            };
            let request = String::from_utf8_lossy(&self.input[..end]).into_owned();
            let Some(key) = request.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.trim().eq_ignore_ascii_case("sec-websocket-key").then(|| value.trim())
            }) else {
                return false;
            };
            let accept =
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            self.output.extend_from_slice(
                format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                )
                .as_bytes(),
            );
            self.input.drain(..end + 4);
            self.upgraded = true;
        }
        let mut input = std::mem::take(&mut self.input);
        let used = answer(&mut input, &mut self.output);
        let open = used.is_some();
        if let Some(used) = used {
            input.drain(..used);
        }
        self.input = input;
        open
    }

    /// Writes the answers; `false` when the connection is done.
    fn flush(&mut self) -> bool {
        let mut written = 0;
        while written < self.output.len() {
            match self.stream.write(&self.output[written..]) {
                Ok(0) => return false,
                Ok(n) => written += n,
                // The rest goes when the socket is writable again.
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        self.output.drain(..written);
        true
    }
}

/// Answers the whole client frames at the start of `input` (unmasking them in place) into
/// `output`: the bytes used, or `None` for a close or a protocol error.
fn answer(input: &mut [u8], output: &mut Vec<u8>) -> Option<usize> {
    let mut at = 0;
    loop {
        let frame = &input[at..];
        if frame.len() < 2 {
            return Some(at);
        }
        let opcode = frame[0] & 0x0f;
        if frame[1] & 0x80 == 0 {
            return None; // a client's frames are masked
        }
        let (len, head) = match frame[1] & 0x7f {
            126 if frame.len() >= 4 => (usize::from(u16::from_be_bytes([frame[2], frame[3]])), 4),
            127 if frame.len() >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&frame[2..10]);
                (usize::try_from(u64::from_be_bytes(n)).ok()?, 10)
            }
            126 | 127 => return Some(at),
            n => (usize::from(n), 2),
        };
        if len > MAX_FRAME {
            return None;
        }
        if frame.len() < head + 4 + len {
            return Some(at);
        }
        let mut mask = [0u8; 4];
        mask.copy_from_slice(&frame[head..head + 4]);
        let start = at + head + 4;
        let payload = &mut input[start..start + len];
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[i % 4];
        }
        match opcode {
            // Text: the same payload back. Ping: its pong.
            0x1 | 0x9 => {
                if opcode == 0x1 {
                    wsgate::runtime::count_message();
                }
                let first = if opcode == 0x1 { 0x81 } else { 0x8a };
                if len < 126 {
                    output.extend_from_slice(&[first, len as u8]);
                } else if len < 65_536 {
                    output.extend_from_slice(&[first, 126]);
                    output.extend_from_slice(&(len as u16).to_be_bytes());
                } else {
                    output.extend_from_slice(&[first, 127]);
                    output.extend_from_slice(&(len as u64).to_be_bytes());
                }
                output.extend_from_slice(payload);
            }
            0x8 => return None,
            _ => {}
        }
        at = start + len;
    }
}
