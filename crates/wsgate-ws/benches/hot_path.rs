//! The hot path of one plain WebSocket message, without the network: decode a text frame,
//! dispatch it through the core to a gateway, and encode the reply the connection would send.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::value::RawValue;
use wsgate::adapter::Outbound;
use wsgate::{App, AppConfig, Data, Handshake, RateLimit, WsResponse, gateway};
use wsgate_ws::JsonFrames;
use wsgate_ws::codec::{Decoded, decode};

struct EchoGateway;

#[gateway]
impl EchoGateway {
    #[subscribe_message("echo")]
    async fn echo(&self, Data(data): Data<Box<RawValue>>) -> WsResponse<Box<RawValue>> {
        WsResponse::new("echo", data)
    }
}

const NEST: &str = r#"{"event":"echo","data":{"entryId":2,"body":"A comment of some length, as people write them."}}"#;
const CHAPTER: &str = r#"{"type":"showComment","entryId":2,"commentId":1}"#;

fn hot_path(c: &mut Criterion) {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    // As echo-server: the rate limit's cost is measured, far above the load.
    let config = AppConfig {
        rate_limit: Some(RateLimit { per_second: 1e9, burst: 1_000_000 }),
        ..AppConfig::default()
    };
    let app =
        runtime.block_on(App::builder().config(config).gateway(EchoGateway).build()).expect("app");
    let (conn, mut rx) = runtime.block_on(async {
        app.handshake(Handshake::new("/", "bench")).await.expect("handshake").open().await
    });

    c.bench_function("decode (Nest.js format)", |b| b.iter(|| decode(black_box(NEST))));
    c.bench_function("decode (chapter format)", |b| b.iter(|| decode(black_box(CHAPTER))));
    c.bench_function("decode + dispatch + encode", |b| {
        b.iter(|| {
            let Decoded::Message(inbound) = decode(black_box(NEST)) else { panic!("a message") };
            runtime.block_on(app.dispatch(&conn, inbound));
            match rx.try_recv() {
                Some(Outbound::Event(emission)) => black_box(emission.encoded::<JsonFrames>()),
                other => panic!("expected the echo, got {other:?}"),
            }
        });
    });
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
