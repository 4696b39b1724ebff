//! Trace reading: every format's fixture, every kind of bad record with its exact
//! `FILE:LINE: FIELD: problem` message, the file-level errors, and `trace stats` on the
//! real traces.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tracebench::cli::trace_input::TraceInputArgs;
use tracebench::trace::stats::TraceStats;
use tracebench::trace::{self, LoadOptions, LoadedTrace, OnInvalid, TraceError, TraceFormat};

use crate::common;

fn fixture(name: &str) -> PathBuf {
    common::fixture(&format!("trace/{name}"))
}

fn load(path: &Path) -> Result<LoadedTrace, TraceError> {
    trace::load(path, &LoadOptions::default())
}

fn load_ok(name: &str) -> LoadedTrace {
    let path = fixture(name);
    load(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The error message of loading `name` with default options.
fn error_of(name: &str) -> (PathBuf, String) {
    let path = fixture(name);
    match load(&path) {
        Ok(loaded) => panic!(
            "{name}: loaded {} records, expected an error",
            loaded.records.len()
        ),
        Err(e) => (path.clone(), e.to_string()),
    }
}

fn arrivals_ms(loaded: &LoadedTrace) -> Vec<f64> {
    loaded
        .records
        .iter()
        .map(|r| r.arrival.as_nanos() as f64 / 1e6)
        .collect()
}

#[test]
fn trace_mooncake_fixture_is_read_sorted_with_out_of_order_reported() {
    let loaded = load_ok("mooncake.jsonl");
    assert_eq!(loaded.format, TraceFormat::Mooncake);
    assert_eq!(
        arrivals_ms(&loaded),
        vec![0.0, 1500.0, 1500.0, 2000.0, 3000.0]
    );
    // Stable sort: the two records at 1.5 s keep their file order (lines 3 then 5).
    let lines: Vec<u64> = loaded.records.iter().map(|r| r.line).collect();
    assert_eq!(lines, vec![1, 3, 5, 2, 6]);
    assert_eq!(loaded.report.out_of_order, 2);
    assert_eq!(loaded.report.first_out_of_order_line, Some(3));
    let second = &loaded.records[3];
    assert_eq!(second.input_tokens, 1025);
    assert_eq!(
        second
            .prefix
            .as_ref()
            .map(|p| (p.hash_ids.clone(), p.block_size)),
        Some((vec![0, 1, 2], 512))
    );
    assert!(
        loaded
            .report
            .lines()
            .iter()
            .any(|l| l.contains("2 records out of time order, first at line 3"))
    );
}

#[test]
fn trace_bailian_fixture_reads_seconds_sessions_and_types() {
    let loaded = load_ok("bailian.jsonl");
    assert_eq!(loaded.format, TraceFormat::Bailian);
    assert_eq!(
        arrivals_ms(&loaded),
        vec![500.0, 3250.0, 4000.0, 5125.0, 9000.0]
    );
    let child = &loaded.records[1];
    let link = child.session.expect("session");
    assert_eq!(
        (link.chat_id, link.parent_chat_id, link.turn),
        (101, 100, Some(2))
    );
    assert_eq!(child.prefix.as_ref().map(|p| p.block_size), Some(16));
    assert_eq!(loaded.records[2].kind.as_deref(), Some("search"));
    assert_eq!(loaded.report.hash_ids_mismatch, 0);
}

#[test]
fn trace_bailian_hash_ids_mismatch_is_a_counted_warning() {
    let loaded = load_ok("bailian_hash_warning.jsonl");
    assert_eq!(loaded.records.len(), 3);
    assert_eq!(loaded.report.hash_ids_mismatch, 2);
    assert_eq!(loaded.report.first_hash_ids_mismatch_line, Some(2));
}

#[test]
fn trace_own_format_keeps_fractional_milliseconds_and_block_size() {
    let loaded = load_ok("tracebench.jsonl");
    assert_eq!(loaded.format, TraceFormat::Tracebench);
    let ns: Vec<u128> = loaded
        .records
        .iter()
        .map(|r| r.arrival.as_nanos())
        .collect();
    assert_eq!(ns, vec![0, 12_345_600, 1_000_000_001]);
    assert_eq!(
        loaded.records[1].prefix.as_ref().map(|p| p.block_size),
        Some(16)
    );
    assert_eq!(loaded.records[1].kind.as_deref(), Some("synthetic"));
    assert!(loaded.records[2].prefix.is_none() && loaded.records[2].session.is_none());
}

#[test]
fn trace_azure_rebases_absolute_times_to_the_first_record() {
    let loaded = load_ok("azure_2023.csv");
    assert_eq!(loaded.format, TraceFormat::Azure);
    assert!(loaded.report.absolute_timestamps);
    let ns: Vec<u128> = loaded
        .records
        .iter()
        .map(|r| r.arrival.as_nanos())
        .collect();
    assert_eq!(ns, vec![0, 4_309_410_000, 4_314_579_000, 4_319_410_000]);
    assert_eq!(loaded.report.out_of_order, 1);
    assert_eq!(loaded.report.first_out_of_order_line, Some(4));
    assert_eq!(
        (
            loaded.records[0].input_tokens,
            loaded.records[0].output_tokens
        ),
        (374, 44)
    );

    let y2024 = load_ok("azure_2024.csv");
    let ns: Vec<u128> = y2024.records.iter().map(|r| r.arrival.as_nanos()).collect();
    assert_eq!(ns, vec![0, 11_000_000, 995_000_100]);
}

#[test]
fn trace_burstgpt_drops_failed_rows_unless_kept() {
    let loaded = load_ok("burstgpt.csv");
    assert_eq!(loaded.format, TraceFormat::Burstgpt);
    assert_eq!(loaded.records.len(), 3);
    assert_eq!(loaded.report.failed_dropped, 2);
    assert!(
        loaded
            .report
            .lines()
            .iter()
            .any(|l| l.contains("dropped 2 failed requests"))
    );
    assert_eq!(arrivals_ms(&loaded), vec![5000.0, 118_000.0, 130_000.0]);

    let opts = LoadOptions {
        keep_failed: true,
        ..LoadOptions::default()
    };
    let kept = trace::load(&fixture("burstgpt.csv"), &opts).expect("loads");
    assert_eq!(kept.records.len(), 5);
    assert_eq!(kept.report.failed_dropped, 0);
    assert_eq!(kept.records[1].output_tokens, 0);
}

#[test]
fn trace_bom_and_crlf_are_tolerated() {
    let jsonl = load_ok("bom_crlf.jsonl");
    assert_eq!(jsonl.records.len(), 2);
    assert_eq!(jsonl.records[1].input_tokens, 600);
    let csv = load_ok("bom_crlf.csv");
    assert_eq!(csv.records.len(), 2);
    assert_eq!(csv.records[1].output_tokens, 4);
}

#[test]
fn trace_gzip_is_read_transparently_by_content() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = std::fs::read(fixture("bailian.jsonl")).expect("fixture");
    // Named without .gz on purpose: gzip is recognised by its magic bytes.
    let path = dir.path().join("qwen_trace.jsonl");
    std::fs::write(&path, gzip(&plain)).expect("write");
    let loaded = load(&path).expect("loads");
    assert!(loaded.report.gzip);
    assert_eq!(loaded.format, TraceFormat::Bailian);
    assert_eq!(loaded.records.len(), 5);
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).expect("compress");
    enc.finish().expect("compress")
}

#[test]
fn trace_truncated_gzip_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut body = Vec::new();
    for i in 0..2000 {
        body.extend_from_slice(format!("{{\"timestamp\": {i}, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": [{i}]}}\n").as_bytes());
    }
    let compressed = gzip(&body);
    let path = dir.path().join("cut.jsonl.gz");
    std::fs::write(&path, &compressed[..compressed.len() / 2]).expect("write");
    let err = load(&path)
        .expect_err("truncated gzip must fail")
        .to_string();
    assert!(
        err.starts_with(&format!(
            "{}: truncated or corrupt gzip data",
            path.display()
        )),
        "{err}"
    );
}

#[test]
fn trace_bad_records_name_file_line_and_field() {
    let cases = [
        ("missing_field.jsonl", "2: input_length: missing"),
        (
            "wrong_type.jsonl",
            "2: output_length: expected a non-negative integer, found string \"12\"",
        ),
        (
            "nan_timestamp.jsonl",
            "3: timestamp: not a finite number (NaN)",
        ),
        (
            "infinite_timestamp.jsonl",
            "2: timestamp: not a finite number (Infinity)",
        ),
        ("negative_timestamp.jsonl", "2: timestamp: negative (-5)"),
        ("negative_length.jsonl", "2: input_length: negative (-3)"),
        (
            "hash_ids_count.jsonl",
            "2: hash_ids: 2 blocks, expected 3 (ceil(1025 / 512))",
        ),
        (
            "mixed_epoch.jsonl",
            "2: timestamp: epoch-sized value (1700000000 s) among relative timestamps: no single origin fits",
        ),
        ("invalid_utf8.jsonl", "2: record: invalid UTF-8"),
        (
            "azure_bad_time.csv",
            "3: TIMESTAMP: expected a time like 2023-11-16 18:15:46.6805900, found \"yesterday\"",
        ),
        ("azure_missing_column.csv", "1: GeneratedTokens: missing"),
        // CRLF line ends: the row is named by its line in the file, header counted.
        (
            "azure_crlf.csv",
            "5: ContextTokens: expected a non-negative integer, found \"abc\"",
        ),
        ("burstgpt_negative.csv", "3: Request tokens: negative (-1)"),
        (
            "burstgpt_nan.csv",
            "2: Timestamp: not a finite number (NaN)",
        ),
    ];
    for (name, expected) in cases {
        let (path, message) = error_of(&format!("bad/{name}"));
        assert_eq!(message, format!("{}:{expected}", path.display()), "{name}");
    }
}

#[test]
fn trace_invalid_json_names_the_line() {
    let (path, message) = error_of("bad/invalid_json.jsonl");
    let prefix = format!("{}:2: record: invalid JSON: ", path.display());
    assert!(message.starts_with(&prefix), "{message}");
}

#[test]
fn trace_empty_file_directory_and_unknown_format_are_clear_errors() {
    let (path, message) = error_of("bad/empty.jsonl");
    assert_eq!(
        message,
        format!("{}: empty file, no records", path.display())
    );
    let (path, message) = error_of("bad/blank_lines.jsonl");
    assert_eq!(
        message,
        format!("{}: empty file, no records", path.display())
    );

    let dir = fixture("bad");
    let message = load(&dir).expect_err("directory").to_string();
    assert_eq!(
        message,
        format!("{}: is a directory, expected a trace file", dir.display())
    );

    let tmp = tempfile::tempdir().expect("tempdir");
    let odd = tmp.path().join("notes.txt");
    std::fs::write(&odd, "hello world\n").expect("write");
    let message = load(&odd).expect_err("unknown").to_string();
    assert!(
        message.contains("cannot tell the trace format") && message.contains("--format"),
        "{message}"
    );
}

#[test]
fn trace_skip_mode_counts_invalid_records_by_reason() {
    let opts = LoadOptions {
        on_invalid: OnInvalid::Skip,
        ..LoadOptions::default()
    };
    let loaded = trace::load(&fixture("mixed_bad.jsonl"), &opts).expect("loads");
    assert_eq!(loaded.records.len(), 3);
    assert_eq!(loaded.report.skipped, 2);
    assert_eq!(
        loaded
            .report
            .skipped_by_reason
            .get("timestamp: not a finite number"),
        Some(&1)
    );
    assert_eq!(
        loaded.report.skipped_by_reason.get("input_length: missing"),
        Some(&1)
    );
    let path = fixture("mixed_bad.jsonl");
    assert_eq!(
        loaded.report.skipped_examples[1],
        format!("{}:4: input_length: missing", path.display())
    );
    // What the user is shown: the counts, then each kept message with its FILE:LINE.
    let shown = loaded.report.lines();
    assert_eq!(shown.len(), 3, "{shown:?}");
    assert_eq!(
        shown[2],
        format!("  skipped {}:4: input_length: missing", path.display())
    );

    // Default is fail, at the first bad line.
    let err = load(&path).expect_err("fails").to_string();
    assert_eq!(
        err,
        format!("{}:2: timestamp: not a finite number (NaN)", path.display())
    );
}

#[test]
fn trace_skip_mode_with_no_valid_record_is_an_error() {
    let opts = LoadOptions {
        on_invalid: OnInvalid::Skip,
        format: Some(TraceFormat::Mooncake),
        ..LoadOptions::default()
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("all_bad.jsonl");
    std::fs::write(&path, "{\"timestamp\": NaN}\nnot json\n").expect("write");
    let err = trace::load(&path, &opts)
        .expect_err("nothing valid")
        .to_string();
    assert_eq!(
        err,
        format!(
            "{}: no valid record (2 invalid records skipped)",
            path.display()
        )
    );
}

#[test]
fn trace_record_on_a_ten_mib_line_is_read() {
    // The most blocks a record may have (MAX_RECORD_TOKENS / 512), with large ids, plus an
    // unknown field that takes the line past 10 MiB.
    let blocks: u32 = tracebench::trace::MAX_RECORD_TOKENS / 512;
    let ids: Vec<String> = (0..blocks)
        .map(|i| ((u64::from(i) + 1) << 40).to_string())
        .collect();
    let pad = "x".repeat(10 * 1024 * 1024);
    let line = format!(
        "{{\"timestamp\": 0, \"input_length\": {}, \"output_length\": 1, \"pad\": \"{pad}\", \"hash_ids\": [{}]}}\n",
        blocks * 512,
        ids.join(", ")
    );
    assert!(line.len() > 10 * 1024 * 1024);
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("long.jsonl");
    std::fs::write(&path, line).expect("write");
    let loaded = load(&path).expect("loads");
    assert_eq!(
        loaded.records[0].prefix.as_ref().map(|p| p.hash_ids.len()),
        Some(blocks as usize)
    );
}

#[test]
fn trace_format_flag_and_block_size_override() {
    let opts = LoadOptions {
        format: Some(TraceFormat::Tracebench),
        block_size: Some(256),
        ..LoadOptions::default()
    };
    // Mooncake's file read as ours with 256-token blocks: the counts no longer match.
    let err = trace::load(&fixture("mooncake.jsonl"), &opts)
        .expect_err("mismatch")
        .to_string();
    assert!(
        err.ends_with("1: hash_ids: 2 blocks, expected 4 (ceil(1024 / 256))"),
        "{err}"
    );
}

#[test]
fn trace_input_args_apply_transforms_and_report_clamps() {
    let mut args = TraceInputArgs::for_file(fixture("mooncake.jsonl").display().to_string());
    args.speedup = Some(2.0);
    args.max_input_tokens = Some(600);
    args.limit = Some(4);
    let prepared = args.load().expect("loads");
    let ms: Vec<u128> = prepared
        .records
        .iter()
        .map(|r| r.arrival.as_millis())
        .collect();
    assert_eq!(ms, vec![0, 750, 750, 1000]);
    assert_eq!(prepared.transform.dropped_by_limit, 1);
    assert_eq!(prepared.transform.clamped_input, 2);
    let clamped = &prepared.records[3];
    assert!(clamped.clamped);
    assert_eq!(clamped.input_tokens, 600);
    assert_eq!(
        clamped.prefix.as_ref().map(|p| p.hash_ids.clone()),
        Some(vec![0, 1])
    );
    assert_eq!(prepared.load.out_of_order, 2);
    assert!(
        prepared
            .report_lines()
            .iter()
            .any(|l| l.contains("clamped 2 records"))
    );
}

#[test]
fn trace_input_args_target_rate_and_window() {
    let mut args = TraceInputArgs::for_file(fixture("bailian.jsonl").display().to_string());
    args.start = Some(1.0);
    args.end = Some(8.0);
    args.target_rate = Some(1.0);
    let prepared = args.load().expect("loads");
    // Window keeps offsets 2.75, 3.5, 4.625 s from the first record; 3 records → 3 s span.
    let ms: Vec<u128> = prepared
        .records
        .iter()
        .map(|r| r.arrival.as_millis())
        .collect();
    assert_eq!(ms, vec![0, 1200, 3000]);
    assert_eq!(prepared.transform.dropped_by_window, 2);
    let stats = TraceStats::compute(&prepared.records);
    assert_eq!(stats.mean_rate_per_s, Some(1.0));
}

#[test]
fn trace_input_args_unknown_name_lists_known_ones() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut args = TraceInputArgs::for_file("no-such-trace");
    args.read.cache.trace_dir = Some(tmp.path().to_path_buf());
    let err = format!("{:#}", args.load().expect_err("unknown"));
    assert!(
        err.contains("no-such-trace: no such file, and not a known trace name"),
        "{err}"
    );
    assert!(
        err.contains("mooncake-conversation") && err.contains("azure-2023-code"),
        "{err}"
    );
}

#[test]
fn trace_stats_bailian_sessions() {
    let loaded = load_ok("bailian.jsonl");
    let stats = TraceStats::compute(&loaded.records);
    let sessions = stats.sessions.expect("sessions");
    assert_eq!(sessions.sessions, 2);
    assert_eq!(sessions.children, 3);
    assert_eq!(sessions.missing_parent, 1);
    assert_eq!(sessions.turns_max, 4);
    assert_eq!(sessions.not_extending_parent, 0);
    assert_eq!(sessions.parent_child_gap_max_s, Some(5.75));
    assert_eq!(stats.types.get("text"), Some(&3));
}

fn run_stats(file: &Path, json: bool) -> std::process::Output {
    let mut cmd = Command::new(common::bin());
    cmd.args(["trace", "stats"]).arg(file);
    if json {
        cmd.arg("--json");
    }
    cmd.output().expect("runs tracebench")
}

#[test]
fn trace_stats_mooncake_conversation_matches_published_numbers() {
    let Some(path) = common::shared_trace("mooncake_conversation_trace.jsonl") else {
        return;
    };
    let out = run_stats(&path, true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["records"], 12_031);
    assert_eq!(json["duration_s"], 3536.999);
    assert_eq!(
        json["input_tokens"]["mean"].as_f64().map(f64::round),
        Some(12_035.0)
    );
    assert_eq!(json["input_tokens"]["max"], 126_195);
    assert_eq!(
        json["output_tokens"]["mean"].as_f64().map(f64::round),
        Some(343.0)
    );
    assert_eq!(json["output_tokens"]["min"], 1);
    assert_eq!(json["output_tokens"]["max"], 2_000);
    assert_eq!(json["prefix"]["blocks_total"], 288_500);
    assert_eq!(json["prefix"]["blocks_distinct"], 182_790);

    let text = String::from_utf8_lossy(&run_stats(&path, false).stdout).into_owned();
    for expected in [
        "12,031",
        "3,536.999 s",
        "mean 12,035",
        "max 126,195",
        "288,500 total, 182,790 distinct",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
}

#[test]
fn trace_stats_azure_2023_conversation() {
    let Some(path) = common::shared_trace("azure_llm_2023_conv.csv") else {
        return;
    };
    let loaded = load(&path).expect("loads");
    let stats = TraceStats::compute(&loaded.records);
    assert_eq!(stats.records, 19_366);
    assert!(
        (stats.duration_s - 3501.7).abs() < 0.05,
        "{}",
        stats.duration_s
    );
    assert_eq!(loaded.records[0].arrival, Duration::ZERO);
    let text = String::from_utf8_lossy(&run_stats(&path, false).stdout).into_owned();
    assert!(
        text.contains("19,366") && text.contains("3,501.7"),
        "{text}"
    );
}

#[test]
fn trace_stats_cli_fails_with_exit_2_and_the_record_error() {
    let path = fixture("bad/nan_timestamp.jsonl");
    let out = run_stats(&path, false);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:3: timestamp: not a finite number (NaN)",
            path.display()
        )),
        "{stderr}"
    );
}
