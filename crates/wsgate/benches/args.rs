//! What outbound data costs to serialise: plain JSON as `serde_json` writes it, against
//! `to_args` (the path every reply and emit takes, which looks for `Args` and writes bytes as
//! placeholders), on the same value in the same run; then several arguments with an
//! attachment.
#![allow(missing_docs)]

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use serde::Serialize;
use wsgate::Args;
use wsgate::adapter::to_args;

/// A comment as the blog sends it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Comment {
    id: i64,
    body: &'static str,
    entry_id: i64,
    user_id: i64,
    created_at: &'static str,
    updated_at: &'static str,
}

fn args(c: &mut Criterion) {
    let comment = Comment {
        id: 1,
        body: "A comment of some length, as people write them.",
        entry_id: 2,
        user_id: 3,
        created_at: "2026-12-03T12:00:00Z",
        updated_at: "2026-12-03T12:00:00Z",
    };
    c.bench_function("plain value: serde_json::value::to_raw_value", |b| {
        b.iter(|| serde_json::value::to_raw_value(black_box(&comment)))
    });
    c.bench_function("plain value: to_args", |b| b.iter(|| to_args(black_box(&comment))));
    let file = Args(("photo.png", Bytes::from(vec![7u8; 1024])));
    c.bench_function("Args((name, 1 KiB of Bytes)): to_args", |b| {
        b.iter(|| to_args(black_box(&file)))
    });
}

criterion_group!(benches, args);
criterion_main!(benches);
