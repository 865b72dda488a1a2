//! Any bytes from a client, read by the server's websocket (RFC 6455 framing, with and without
//! permessage-deflate, in chunks of any size): reading never panics and ends in messages, an
//! error or the end of the stream; a text message is UTF-8; no message is over the limit.
#![no_main]

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, ReadBuf};
use tokio_tungstenite::tungstenite::Message;
use wsgate_transport::{Compression, WebSocket};

const LIMIT: usize = 4096;

/// The input, handed over at most `chunk` bytes per read.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let n = self.data.len().min(self.chunk).min(buf.remaining());
        buf.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(()))
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&first, data)) = input.split_first() else { return };
    let deflate = (first & 1 == 1).then(|| {
        let mut headers = HeaderMap::new();
        headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_static("permessage-deflate"));
        Compression::new().negotiate(&headers).expect("accepted").1
    });
    let chunk = usize::from(first >> 1).max(1);
    let io = tokio::io::join(Chunked { data, chunk }, tokio::io::sink());
    let mut ws = WebSocket::new(io, 64, LIMIT, deflate);
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    runtime.block_on(async {
        while let Some(item) = ws.next().await {
            match item {
                Ok(Message::Text(text)) => assert!(text.len() <= LIMIT),
                Ok(Message::Binary(data)) => assert!(data.len() <= LIMIT),
                Ok(Message::Close(_)) => break,
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
});
