//! Prompt synthesis speed on the Mooncake conversation trace (12,031 records, 145 M prompt
//! tokens): `blocks` mode for every record on 1 and 2 threads (median of several runs), a
//! re-encoding check of a random sample of 1,000 prompts, and `random` mode (the seed's
//! algorithm) on the first 1,000 records. Then criterion on one 8k-token prompt per mode.
//!
//! `cargo bench --bench prompt_build`. Peak memory: `scripts/bench_prompts.sh`, which runs
//! `tracebench prompts` under `/usr/bin/time -v`. Results: docs/PERFORMANCE.md.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use tracebench::prompt::{
    PieceVocab, PromptBuilder, PromptMode, Tokenizer, for_each_prompt, load_tokenizer,
    sample_indexes,
};
use tracebench::trace::{self, LoadOptions, TraceRecord};

/// Timed runs of the whole trace; the median is reported.
const RUNS: usize = 5;

/// Prompts re-encoded to confirm exactness.
const SAMPLE: usize = 1_000;

fn conversation_trace() -> Option<PathBuf> {
    let dir = std::env::var_os("TRACEBENCH_TRACES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/traces"));
    let path = dir.join("mooncake_conversation_trace.jsonl");
    path.is_file().then_some(path)
}

/// The median of `runs` timings of `f`.
fn median_of(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// Builds every record's prompt and returns the total tokens (the text is dropped at once).
fn build_all(builder: &PromptBuilder, records: &[TraceRecord], threads: usize) -> u64 {
    let mut tokens = 0u64;
    for_each_prompt(builder, records, 0, threads, |_, prompt| {
        tokens += u64::from(prompt.map_err(|e| e.to_string())?.tokens);
        Ok::<_, String>(())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    tokens
}

/// Re-encodes a seeded sample of prompts; returns how many had another length.
fn reencode_sample(builder: &PromptBuilder, tok: &dyn Tokenizer, records: &[TraceRecord]) -> usize {
    let sample = sample_indexes(records.len(), SAMPLE, 7);
    sample
        .iter()
        .filter(|&&i| {
            let prompt = builder
                .build(&records[i], 0)
                .unwrap_or_else(|e| panic!("{e}"));
            tok.count(&prompt.text) != records[i].input_tokens as usize
        })
        .count()
}

/// Times the whole trace in `blocks` mode and the first 1,000 records in `random` mode.
fn full_trace(tok: &Arc<dyn Tokenizer>, vocab: &Arc<PieceVocab>) {
    let Some(path) = conversation_trace() else {
        eprintln!("skipped: mooncake_conversation_trace.jsonl is absent");
        return;
    };
    let records = trace::load(&path, &LoadOptions::default())
        .expect("trace loads")
        .records;
    let blocks = PromptBuilder::with_vocab(
        PromptMode::Blocks,
        tok.clone(),
        Some(vocab.clone()),
        0,
        &records,
    )
    .expect("builder");

    let tokens = build_all(&blocks, &records, 1);
    for threads in [1, 2] {
        let time = median_of(RUNS, || {
            assert_eq!(build_all(&blocks, &records, threads), tokens)
        });
        println!(
            "blocks, {} records, {tokens} tokens, {threads} thread(s): median {:.2} s of {RUNS}",
            records.len(),
            time.as_secs_f64()
        );
    }

    let start = Instant::now();
    let wrong = reencode_sample(&blocks, tok.as_ref(), &records);
    println!(
        "re-encoded {SAMPLE} sampled prompts in {:.2} s: {wrong} of another length",
        start.elapsed().as_secs_f64()
    );

    let first = &records[..1_000.min(records.len())];
    let random = PromptBuilder::new(PromptMode::Random, tok.clone(), 0, first).expect("builder");
    let start = Instant::now();
    let mut gave_up = 0;
    for_each_prompt(&random, first, 0, 2, |_, p| {
        gave_up += usize::from(p.is_err());
        Ok::<_, ()>(())
    })
    .ok();
    println!(
        "random, first {} records, 2 threads: {:.1} s, {gave_up} gave up",
        first.len(),
        start.elapsed().as_secs_f64()
    );
}

/// Criterion on one 8,192-token prompt per mode.
fn one_prompt(c: &mut Criterion, tok: &Arc<dyn Tokenizer>, vocab: &Arc<PieceVocab>) {
    let mut record = TraceRecord::new(Duration::ZERO, 8_192, 1, 1);
    record.prefix = Some(trace::PrefixBlocks {
        hash_ids: (0..16).collect(),
        block_size: 512,
    });
    let meta = std::slice::from_ref(&record);
    for mode in [PromptMode::Blocks, PromptMode::Shared, PromptMode::Random] {
        let builder = PromptBuilder::with_vocab(mode, tok.clone(), Some(vocab.clone()), 0, meta)
            .expect("builder");
        c.bench_function(&format!("{mode} prompt, 8192 tokens, o200k_base"), |b| {
            b.iter(|| std::hint::black_box(builder.build(&record, 0).map(|p| p.tokens)))
        });
    }
}

fn main() {
    let tok = load_tokenizer("o200k_base").expect("built in");
    let start = Instant::now();
    let vocab = Arc::new(PieceVocab::build(tok.as_ref()).expect("vets"));
    println!(
        "vetted {} o200k_base pieces in {:.2} s",
        vocab.len(),
        start.elapsed().as_secs_f64()
    );

    full_trace(&tok, &vocab);
    let mut c = Criterion::default().configure_from_args();
    one_prompt(&mut c, &tok, &vocab);
    c.final_summary();
}
