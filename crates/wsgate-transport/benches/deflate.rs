//! permessage-deflate's cost: one reply of the blog's size (`indexComment` with 20 comments)
//! framed as it is, and compressed at level 1 and 6, each message on its own or with context
//! takeover; and a client's frame read back, compressed or not. Prints the frames' sizes.
#![allow(missing_docs)]

use std::hint::black_box;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, header};
use tokio::io::{AsyncRead, AsyncWrite};
use wsgate_transport::{Compression, Negotiated, WebSocket};

/// What `indexComment` answers for an entry with 20 comments.
fn reply() -> String {
    let comments: Vec<String> = (1..=20)
        .map(|id| {
            format!(
                r#"{{"id":{id},"entryId":7,"userId":{},"body":"Comment {id}: a few words about the entry, as people write them.","createdAt":"2026-12-03T12:{id:02}:00Z"}}"#,
                id % 3 + 1,
            )
        })
        .collect();
    format!(r#"{{"event":"indexComment","data":[{}]}}"#, comments.join(","))
}

fn negotiated(setting: Option<&Compression>) -> Option<Negotiated> {
    let mut headers = HeaderMap::new();
    headers
        .insert(header::SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_static("permessage-deflate"));
    setting.map(|s| s.negotiate(&headers).expect("negotiated").1)
}

/// Queues `text` and writes it: the frame's size.
fn framed<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocket<S>, text: &str) -> usize {
    ws.queue_text(text.as_bytes()).expect("queued");
    let n = ws.unwritten();
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(ws.poll_write_all(&mut cx), Poll::Ready(Ok(()))));
    n
}

/// `frame` as a client sends it: masked (with a zero key, which leaves the payload as it is).
fn masked(mut frame: Vec<u8>) -> &'static [u8] {
    frame[1] |= 0x80;
    let at = match frame[1] & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    frame.splice(at..at, [0u8; 4]);
    Box::leak(frame.into_boxed_slice())
}

fn deflate(c: &mut Criterion) {
    let text = reply();
    let level1 = Compression::new().threshold(0);
    let settings = [
        ("uncompressed", None),
        ("level 1", Some(level1.clone())),
        ("level 6", Some(level1.clone().level(6))),
        ("level 1, context takeover", Some(level1.clone().context_takeover(true))),
    ];
    for (name, setting) in &settings {
        let io = tokio::io::join(tokio::io::empty(), tokio::io::sink());
        let mut ws = WebSocket::new(io, 4096, 1 << 20, negotiated(setting.as_ref()));
        // The second frame: with context takeover, it refers to the first.
        let first = framed(&mut ws, &text);
        let second = framed(&mut ws, &text);
        eprintln!("{name}: {} bytes of JSON, frames of {first} then {second} bytes", text.len());
        c.bench_function(&format!("send, {name}"), |b| {
            b.iter(|| framed(&mut ws, black_box(&text)));
        });
    }

    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    for (name, setting) in [("uncompressed", None), ("level 1", Some(&level1))] {
        let mut bytes = Vec::new();
        let io = tokio::io::join(tokio::io::empty(), &mut bytes);
        framed(&mut WebSocket::new(io, 64, 1 << 20, negotiated(setting)), &text);
        let frame = masked(bytes);
        c.bench_function(&format!("receive, {name}"), |b| {
            b.iter(|| {
                let io = tokio::io::join(frame, tokio::io::sink());
                let mut ws = WebSocket::new(io, 4096, 1 << 20, negotiated(setting));
                runtime.block_on(ws.next()).expect("a message").expect("read")
            });
        });
    }
}

criterion_group!(benches, deflate);
criterion_main!(benches);
