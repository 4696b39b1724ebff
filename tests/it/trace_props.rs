//! Property tests of the trace readers: arbitrary bytes and mutated valid lines, read as
//! every format, never panic and give either records or an error naming the file (and, for
//! a bad record, its line).

use std::path::Path;

use proptest::prelude::*;
use tracebench::trace::{self, LoadOptions, OnInvalid, TraceError, TraceFormat};

/// One valid file per format, mutated by the tests.
const VALID: [(&str, &str); 5] = [
    (
        "m.jsonl",
        "{\"timestamp\": 0, \"input_length\": 600, \"output_length\": 5, \"hash_ids\": [0, 1]}\n{\"timestamp\": 1500, \"input_length\": 100, \"output_length\": 1, \"hash_ids\": [2]}\n",
    ),
    (
        "b.jsonl",
        "{\"chat_id\": 1, \"parent_chat_id\": -1, \"timestamp\": 0.5, \"input_length\": 40, \"output_length\": 8, \"type\": \"text\", \"turn\": 1, \"hash_ids\": [1, 2, 3]}\n",
    ),
    (
        "t.jsonl",
        "{\"timestamp\": 1.25, \"input_length\": 64, \"output_length\": 4, \"hash_ids\": [1, 2, 3, 4], \"block_size\": 16}\n",
    ),
    (
        "a.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:47.1,10,4\n",
    ),
    (
        "g.csv",
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n5,ChatGPT,472,18,490,Conversation log\n",
    ),
];

/// The format of each entry of [`VALID`].
const FORMATS: [TraceFormat; 5] = [
    TraceFormat::Mooncake,
    TraceFormat::Bailian,
    TraceFormat::Tracebench,
    TraceFormat::Azure,
    TraceFormat::Burstgpt,
];

/// Loads `bytes` as `format` (or detected) in both invalid-record modes and checks the
/// outcome's shape.
fn check(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    format: Option<TraceFormat>,
) -> Result<(), TestCaseError> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    // An upper bound on line numbers (compressed bytes say nothing about lines).
    let lines = if bytes.starts_with(&[0x1f, 0x8b]) {
        u64::MAX
    } else {
        1 + bytes
            .iter()
            .filter(|b| **b == b'\n' || **b == b'\r')
            .count() as u64
    };
    for on_invalid in [OnInvalid::Fail, OnInvalid::Skip] {
        let opts = LoadOptions {
            format,
            on_invalid,
            ..LoadOptions::default()
        };
        match trace::load(&path, &opts) {
            Ok(loaded) => {
                prop_assert!(!loaded.records.is_empty());
                prop_assert!(
                    loaded
                        .records
                        .windows(2)
                        .all(|w| w[0].arrival <= w[1].arrival)
                );
            }
            Err(err) => check_error(&path, &err, lines)?,
        }
    }
    Ok(())
}

fn check_error(path: &Path, err: &TraceError, lines: u64) -> Result<(), TestCaseError> {
    let message = err.to_string();
    let prefix = format!("{}:", path.display());
    prop_assert!(message.starts_with(&prefix), "{message}");
    if let TraceError::Invalid(record) = err {
        prop_assert!(record.line >= 1 && record.line <= lines, "{message}");
        let expected = format!("{prefix}{}: {}: ", record.line, record.field);
        prop_assert!(message.starts_with(&expected), "{}", message);
    }
    Ok(())
}

fn any_format() -> impl Strategy<Value = Option<TraceFormat>> {
    prop_oneof![
        Just(None),
        proptest::sample::select(TraceFormat::ALL.to_vec()).prop_map(Some)
    ]
}

/// A mutation of a valid file: overwrite, insert or delete bytes at a position.
#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting = proptest::sample::select(vec![
        b"NaN".to_vec(),
        b"-Infinity".to_vec(),
        b"-".to_vec(),
        b"\xff".to_vec(),
        b"\"".to_vec(),
        b"\n".to_vec(),
        b"\r\n".to_vec(),
        b",".to_vec(),
        b"1e400".to_vec(),
        b"99999999999999999999".to_vec(),
        b"\xef\xbb\xbf".to_vec(),
    ]);
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), interesting).prop_map(|(i, s)| Mutation::Insert(i, s)),
        (any::<usize>(), 1usize..8).prop_map(|(i, n)| Mutation::Delete(i, n)),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len().max(1);
        match m {
            Mutation::Set(i, b) if !bytes.is_empty() => bytes[i % len] = *b,
            Mutation::Insert(i, s) => {
                let at = i % (bytes.len() + 1);
                bytes.splice(at..at, s.iter().copied());
            }
            Mutation::Delete(i, n) if !bytes.is_empty() => {
                let at = i % len;
                let end = (at + n).min(bytes.len());
                bytes.drain(at..end);
            }
            _ => {}
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn trace_readers_survive_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
        format in any_format(),
        ext in proptest::sample::select(vec!["x.jsonl", "x.csv", "x.bin", "qwen.jsonl", "x.jsonl.gz"]),
    ) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        check(dir.path(), ext, &bytes, format)?;
    }

    #[test]
    fn trace_readers_survive_mutated_valid_files(
        which in 0usize..VALID.len(),
        mutations in proptest::collection::vec(mutation(), 1..4),
        force in any::<bool>(),
    ) {
        let (name, text) = VALID[which];
        let bytes = apply(text.as_bytes().to_vec(), &mutations);
        let format = force.then_some(FORMATS[which]);
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        check(dir.path(), name, &bytes, format)?;
    }

    #[test]
    fn trace_readers_survive_gzip_of_mutated_files(
        which in 0usize..VALID.len(),
        mutations in proptest::collection::vec(mutation(), 1..3),
        cut in any::<prop::sample::Index>(),
    ) {
        use std::io::Write;
        let (name, text) = VALID[which];
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&apply(text.as_bytes().to_vec(), &mutations)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let gz = enc.finish().map_err(|e| TestCaseError::fail(e.to_string()))?;
        // Keep a prefix: from a bare magic number up to the whole stream.
        let keep = 2 + cut.index(gz.len() - 1);
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        check(dir.path(), &format!("{name}.gz"), &gz[..keep], None)?;
    }
}
