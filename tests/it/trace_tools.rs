//! Trace tools: convert round trips through our JSONL and back for every format, and
//! `trace synth` determinism and agreement of its `trace stats` with its parameters.

use std::path::{Path, PathBuf};
use std::process::Command;

use tracebench::trace::stats::TraceStats;
use tracebench::trace::{self, LoadOptions, TraceFormat, TraceRecord};

use crate::common;

fn fixture(name: &str) -> PathBuf {
    common::fixture(&format!("trace/{name}"))
}

fn tracebench(args: &[&str]) -> std::process::Output {
    Command::new(common::bin())
        .args(args)
        .output()
        .expect("runs tracebench")
}

fn load(path: &Path) -> Vec<TraceRecord> {
    trace::load(path, &LoadOptions::default())
        .unwrap_or_else(|e| panic!("{e}"))
        .records
}

/// Records with their source line numbers blanked (lines differ between files).
fn without_lines(mut records: Vec<TraceRecord>) -> Vec<TraceRecord> {
    records.iter_mut().for_each(|r| r.line = 0);
    records
}

fn convert(input: &Path, output: &Path, to: TraceFormat) {
    let out = tracebench(&[
        "trace",
        "convert",
        &input.display().to_string(),
        &output.display().to_string(),
        "--to",
        to.name(),
        "--keep-failed",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn trace_convert_round_trips_every_format_through_ours() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("mooncake.jsonl", TraceFormat::Mooncake, "back.jsonl"),
        ("bailian.jsonl", TraceFormat::Bailian, "back_bailian.jsonl"),
        (
            "tracebench.jsonl",
            TraceFormat::Tracebench,
            "back_ours.jsonl",
        ),
        ("azure_2023.csv", TraceFormat::Azure, "back_azure.csv"),
        ("burstgpt.csv", TraceFormat::Burstgpt, "back_burst.csv"),
    ];
    for (name, format, back_name) in cases {
        let original = fixture(name);
        let ours = dir.path().join(format!("{name}.ours.jsonl"));
        let back = dir.path().join(back_name);
        convert(&original, &ours, TraceFormat::Tracebench);
        convert(&ours, &back, format);

        let opts = LoadOptions {
            keep_failed: true,
            ..LoadOptions::default()
        };
        let first = trace::load(&original, &opts).expect("original loads");
        let middle = trace::load(&ours, &opts).expect("ours loads");
        let last = trace::load(&back, &opts).expect("converted back loads");
        assert_eq!(middle.format, TraceFormat::Tracebench, "{name}");
        assert_eq!(last.format, format, "{name}");
        assert_eq!(
            without_lines(middle.records),
            without_lines(first.records.clone()),
            "{name} → ours"
        );
        assert_eq!(
            without_lines(last.records),
            without_lines(first.records),
            "{name} → ours → back"
        );
    }
}

#[test]
fn trace_convert_gzip_output_and_refusal_of_foreign_block_sizes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gz = dir.path().join("bailian.jsonl.gz");
    convert(&fixture("bailian.jsonl"), &gz, TraceFormat::Tracebench);
    assert_eq!(std::fs::read(&gz).expect("written")[..2], [0x1f, 0x8b]);
    assert_eq!(load(&gz).len(), 5);

    // Bailian's 16-token blocks cannot be written as Mooncake's 512-token ones.
    let out = tracebench(&[
        "trace",
        "convert",
        &fixture("bailian.jsonl").display().to_string(),
        &dir.path().join("x.jsonl").display().to_string(),
        "--to",
        "mooncake",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("mooncake needs 512-token blocks (these are 16"),
        "{stderr}"
    );
}

fn synth(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let mut args = vec!["trace", "synth", "--output"];
    let shown = path.display().to_string();
    args.push(&shown);
    args.extend_from_slice(extra);
    let out = tracebench(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

#[test]
fn trace_synth_is_deterministic_for_a_seed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = [
        "--seed",
        "42",
        "--rate",
        "5",
        "--count",
        "500",
        "--prefix-groups",
        "3",
        "--sessions",
    ];
    let a = synth(dir.path(), "a.jsonl", &args);
    let b = synth(dir.path(), "b.jsonl", &args);
    let other_seed = [
        "--seed",
        "43",
        "--rate",
        "5",
        "--count",
        "500",
        "--prefix-groups",
        "3",
        "--sessions",
    ];
    let c = synth(dir.path(), "c.jsonl", &other_seed);
    let read = |p: &Path| std::fs::read(p).expect("written");
    assert_eq!(read(&a), read(&b));
    assert_ne!(read(&a), read(&c));

    let records = load(&a);
    assert_eq!(records.len(), 500);
    assert!(
        records
            .iter()
            .all(|r| r.kind.as_deref() == Some("synthetic"))
    );
    let sessions = TraceStats::compute(&records).sessions.expect("sessions");
    assert!(sessions.children > 100, "{sessions:?}");
    assert_eq!(sessions.not_extending_parent, 0);
}

#[test]
fn trace_synth_rate_is_within_five_percent_over_ten_thousand_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    for arrival in ["poisson", "gamma", "constant"] {
        let name = format!("{arrival}.jsonl");
        let path = synth(
            dir.path(),
            &name,
            &[
                "--seed",
                "1",
                "--rate",
                "20",
                "--count",
                "10000",
                "--arrival",
                arrival,
                "--burstiness",
                "0.25",
            ],
        );
        let stats = TraceStats::compute(&load(&path));
        assert_eq!(stats.records, 10_000);
        let rate = stats.mean_rate_per_s.expect("rate");
        assert!((rate / 20.0 - 1.0).abs() < 0.05, "{arrival}: rate {rate}");
        let cv = stats.interarrival_cv.expect("cv");
        let expected_cv = match arrival {
            "poisson" => 1.0,
            "gamma" => 2.0, // 1 / sqrt(0.25)
            _ => 0.0,
        };
        assert!((cv - expected_cv).abs() < 0.15, "{arrival}: cv {cv}");
    }
}

#[test]
fn trace_synth_prefix_reuse_ratio_is_as_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 2048-token prompts are 4 blocks; 4 groups of 2 shared blocks; every request uses one.
    // Of 4n blocks, 2n are shared ids of which 8 are distinct: reuse = (2n − 8) / 4n.
    let common_args = [
        "--seed",
        "3",
        "--rate",
        "10",
        "--count",
        "10000",
        "--input-tokens",
        "fixed:2048",
        "--block-size",
        "512",
        "--prefix-groups",
        "4",
        "--prefix-tokens",
        "1024",
    ];
    let all = synth(dir.path(), "all.jsonl", &common_args);
    let prefix = TraceStats::compute(&load(&all)).prefix.expect("blocks");
    assert_eq!(prefix.blocks_total, 40_000);
    assert_eq!(prefix.blocks_distinct, 20_008);
    let expected = (20_000.0 - 8.0) / 40_000.0;
    assert!((prefix.reuse_ratio - expected).abs() < 1e-9);

    // Half of the requests share: reuse ≈ (n − 8) / 4n = 0.25.
    let mut half_args = common_args.to_vec();
    half_args.extend_from_slice(&["--prefix-share", "0.5"]);
    let half = synth(dir.path(), "half.jsonl", &half_args);
    let prefix = TraceStats::compute(&load(&half)).prefix.expect("blocks");
    assert!(
        (prefix.reuse_ratio - 0.25).abs() < 0.01,
        "{}",
        prefix.reuse_ratio
    );
}

#[test]
fn trace_synth_duration_and_bad_parameters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = synth(
        dir.path(),
        "d.jsonl",
        &[
            "--rate",
            "50",
            "--duration",
            "59.99",
            "--arrival",
            "constant",
        ],
    );
    let records = load(&path);
    assert_eq!(records.len(), 3000);
    assert!(
        records
            .last()
            .is_some_and(|r| r.arrival.as_secs_f64() < 59.99)
    );

    let out = tracebench(&[
        "trace",
        "synth",
        "--output",
        &dir.path().join("x.jsonl").display().to_string(),
        "--rate",
        "5",
        "--count",
        "10",
        "--input-tokens",
        "gauss:1:2",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown kind \"gauss\""));
}

/// `tracebench ARGS` must exit 2 naming `existing` and `--force`, leaving it as it was.
fn assert_refused(args: &[&str], existing: &Path) {
    let before = std::fs::read(existing).expect("exists");
    let out = tracebench(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(
        stderr.contains(&existing.display().to_string()) && stderr.contains("--force"),
        "{args:?}: {stderr}"
    );
    assert_eq!(
        std::fs::read(existing).expect("still there"),
        before,
        "{args:?}"
    );
}

#[test]
fn synth_convert_and_prompts_refuse_an_existing_output_unless_forced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let synth_out = synth(dir.path(), "syn.jsonl", &["--count", "20", "--rate", "5"]);
    let synth_arg = synth_out.display().to_string();
    let existing = dir.path().join("existing.jsonl");
    std::fs::write(&existing, "mine\n").expect("write");
    let existing_arg = existing.display().to_string();

    let synth_again = [
        "trace", "synth", "--output", &synth_arg, "--count", "20", "--rate", "5",
    ];
    assert_refused(&synth_again, &synth_out);
    let convert = ["trace", "convert", &synth_arg, &existing_arg];
    assert_refused(&convert, &existing);
    let prompts = ["prompts", "--trace", &synth_arg, "--output", &existing_arg];
    assert_refused(&prompts, &existing);

    for args in [&convert[..], &prompts[..]] {
        let forced: Vec<&str> = args.iter().copied().chain(["--force"]).collect();
        let out = tracebench(&forced);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{forced:?}: {stderr}");
        let written = std::fs::read_to_string(&existing).expect("written");
        assert_eq!(written.lines().count(), 20, "{forced:?}");
    }
}
