//! Trace parsing speed: the Mooncake conversation trace (criterion), and a generated
//! 5-million-row BurstGPT-shaped CSV (one timed load; too slow for criterion's ten samples).
//!
//! `cargo bench --bench trace_parse`. The CSV is written to a temporary directory first;
//! set `TRACEBENCH_BENCH_CSV=PATH` to keep it there instead (for measuring peak memory with
//! `/usr/bin/time -v tracebench trace stats PATH`, see docs/PERFORMANCE.md).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use criterion::Criterion;
use tracebench::trace::{self, LoadOptions};

/// Rows of the generated BurstGPT-shaped CSV.
const BURSTGPT_ROWS: u64 = 5_000_000;

fn conversation_trace() -> Option<PathBuf> {
    let dir = std::env::var_os("TRACEBENCH_TRACES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/traces"));
    let path = dir.join("mooncake_conversation_trace.jsonl");
    path.is_file().then_some(path)
}

fn bench_conversation(c: &mut Criterion) {
    let Some(path) = conversation_trace() else {
        eprintln!("skipped: mooncake_conversation_trace.jsonl is absent");
        return;
    };
    c.bench_function("load mooncake conversation (12,031 records)", |b| {
        b.iter(|| {
            let loaded = trace::load(&path, &LoadOptions::default());
            std::hint::black_box(loaded.map(|l| l.records.len()).unwrap_or(0))
        })
    });
}

/// Writes a BurstGPT-shaped CSV: one row every ~10 ms, 1 % failed rows (Response tokens 0).
fn write_burstgpt(path: &Path, rows: u64) -> std::io::Result<()> {
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        out,
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type"
    )?;
    for i in 0..rows {
        let request = 100 + (i * 7919) % 4000;
        let response = if i % 100 == 99 {
            0
        } else {
            1 + (i * 104_729) % 900
        };
        let model = if i % 3 == 0 { "GPT-4" } else { "ChatGPT" };
        let log = if i % 2 == 0 {
            "Conversation log"
        } else {
            "API log"
        };
        let t = i as f64 * 0.01;
        writeln!(
            out,
            "{t:.3},{model},{request},{response},{},{log}",
            request + response
        )?;
    }
    out.flush()
}

fn bench_burstgpt() {
    let tmp = tempfile::tempdir().ok();
    let path = match (std::env::var_os("TRACEBENCH_BENCH_CSV"), &tmp) {
        (Some(p), _) => PathBuf::from(p),
        (None, Some(dir)) => dir.path().join("burstgpt_5m.csv"),
        (None, None) => return eprintln!("skipped: no temporary directory"),
    };
    if let Err(e) = write_burstgpt(&path, BURSTGPT_ROWS) {
        return eprintln!("skipped: cannot write {}: {e}", path.display());
    }

    let start = Instant::now();
    match trace::load(&path, &LoadOptions::default()) {
        Ok(loaded) => println!(
            "load burstgpt 5M rows: {:.2} s, {} records kept, {} failed dropped",
            start.elapsed().as_secs_f64(),
            loaded.records.len(),
            loaded.report.failed_dropped
        ),
        Err(e) => eprintln!("burstgpt load failed: {e}"),
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench_conversation(&mut criterion);
    criterion.final_summary();
    bench_burstgpt();
}
