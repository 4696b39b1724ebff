//! SSE parse throughput: the bare event reader, the JSON chunk interpretation alone, and
//! the full per-response path (events, chunks, timing) over a vLLM-shaped stream of 1,000
//! content chunks, fed whole and in 1 KiB and 64-byte reads.
//!
//! `cargo bench --bench sse_parse`; results in docs/PERFORMANCE.md (## Parse throughput).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tracebench::client::chunk::{ChunkReader, JsonPath, StreamItem};
use tracebench::client::{SseEvent, SseReader, StreamTimer};

/// Content chunks in the benchmark stream.
const CHUNKS: usize = 1_000;

/// A chat completion stream as vLLM writes it: role chunk, content chunks, finish, usage,
/// `[DONE]`.
fn stream() -> Vec<u8> {
    let head = r#"{"id":"chatcmpl-0123456789","object":"chat.completion.chunk","created":1733000000,"model":"Qwen/Qwen3-8B","choices":[{"index":0,"delta":"#;
    let mut out = format!(
        "data: {head}{{\"role\":\"assistant\",\"content\":\"\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"
    );
    for i in 0..CHUNKS {
        out.push_str(&format!(
            "data: {head}{{\"content\":\" tok{i}\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"
        ));
    }
    out.push_str(&format!(
        "data: {head}{{}},\"logprobs\":null,\"finish_reason\":\"length\"}}]}}\n\n"
    ));
    out.push_str(
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":1000}}\n\n",
    );
    out.push_str("data: [DONE]\n\n");
    out.into_bytes()
}

fn reader(bytes: &[u8], read: usize) -> usize {
    let mut reader = SseReader::default();
    let mut events = Vec::new();
    for part in bytes.chunks(read) {
        let _ = reader.feed(part, &mut events);
    }
    events.len()
}

/// The stream's events, read once, for timing the chunk interpretation alone.
fn events(bytes: &[u8]) -> Vec<SseEvent> {
    let mut events = Vec::new();
    let _ = SseReader::default().feed(bytes, &mut events);
    events
}

fn interpret(events: &[SseEvent], json: JsonPath) -> usize {
    let mut chunks = ChunkReader::new(json);
    let mut text = String::new();
    let mut outputs = 0;
    for event in events {
        let item = chunks.interpret(event.borrowed(), &mut text);
        outputs += usize::from(matches!(item, Ok(StreamItem::Chunk(c)) if c.has_output));
    }
    outputs
}

fn timer(bytes: &[u8], read: usize) -> usize {
    let mut timer = StreamTimer::new(64 << 20);
    let at = tokio::time::Instant::now();
    for part in bytes.chunks(read) {
        timer.on_bytes(part, at);
    }
    timer.finish().chunk_times.len()
}

fn bench(c: &mut Criterion) {
    let bytes = stream();
    let mut group = c.benchmark_group("sse");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    for read in [bytes.len(), 1024, 64] {
        let name = if read == bytes.len() {
            "whole".to_string()
        } else {
            format!("{read}B")
        };
        group.bench_function(format!("reader/{name}"), |b| {
            b.iter(|| reader(black_box(&bytes), read))
        });
        group.bench_function(format!("timer/{name}"), |b| {
            b.iter(|| timer(black_box(&bytes), read))
        });
    }
    let events = events(&bytes);
    for (name, json) in [
        ("chunk/fast", JsonPath::Fast),
        ("chunk/serde", JsonPath::Serde),
    ] {
        group.bench_function(name, |b| b.iter(|| interpret(black_box(&events), json)));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
