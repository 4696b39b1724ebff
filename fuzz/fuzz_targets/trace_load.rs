//! Fuzz target: arbitrary bytes as a trace file, read as every format (and detected), in
//! both invalid-record modes, plain or gzip-compressed. A read gives records sorted by
//! arrival or an error naming the file (and, for a bad record, `FILE:LINE: FIELD`); it
//! never panics.

#![no_main]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tracebench::trace::{self, LoadOptions, OnInvalid, TraceError, TraceFormat};

/// A scratch directory for this fuzzing process.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tracebench-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        dir
    })
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("gzip in memory");
    encoder.finish().expect("gzip in memory")
}

/// Checks the shape of one read's result.
fn check(path: &Path, result: Result<trace::LoadedTrace, TraceError>) {
    match result {
        Ok(loaded) => {
            assert!(!loaded.records.is_empty(), "a trace read has records");
            let sorted = loaded
                .records
                .windows(2)
                .all(|w| w[0].arrival <= w[1].arrival);
            assert!(sorted, "records sorted by arrival");
        }
        Err(err) => {
            let message = err.to_string();
            let prefix = format!("{}:", path.display());
            assert!(message.starts_with(&prefix), "{message}");
            if let TraceError::Invalid(record) = &err {
                let expected = format!("{prefix}{}: {}: ", record.line, record.field);
                assert!(
                    record.line >= 1 && message.starts_with(&expected),
                    "{message}"
                );
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte chooses the file name, the compression and the format.
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let compressed = selector & 0b10 != 0;
    let extension = match (selector & 1, compressed) {
        (0, false) => "jsonl",
        (1, false) => "csv",
        (0, true) => "jsonl.gz",
        _ => "csv.gz",
    };
    let path = scratch().join(format!("trace.{extension}"));
    let contents = if compressed {
        gzip(bytes)
    } else {
        bytes.to_vec()
    };
    std::fs::write(&path, contents).expect("scratch file");

    let formats = TraceFormat::ALL;
    let format = match usize::from(selector >> 2) % (formats.len() + 1) {
        0 => None,
        i => Some(formats[i - 1]),
    };
    for on_invalid in [OnInvalid::Fail, OnInvalid::Skip] {
        let opts = LoadOptions {
            format,
            on_invalid,
            ..LoadOptions::default()
        };
        check(&path, trace::load(&path, &opts));
    }
});
