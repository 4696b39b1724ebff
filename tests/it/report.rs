//! Reports on the hand-built run in `tests/data/report/run` (its records are described in
//! `tests/data/report/README.md`): console and `summary.json` snapshots, vLLM's keys,
//! `tracebench report` reproducing a run's summary (also from a killed run's cut-off
//! `requests.jsonl`), `compare`, the tics format, `requests.csv` and `report.html`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tracebench::metrics::Summary;
use tracebench::replay::RequestRecord;
use tracebench::report::{self, RunInfo, rebuild, requests_jsonl, summary_json};

use crate::common;

fn fixture_dir() -> PathBuf {
    common::fixture("report/run")
}

fn fixture_run() -> RunInfo {
    rebuild::read_run_info(&fixture_dir().join("run.json")).expect("fixture run.json")
}

fn fixture_records() -> Vec<RequestRecord> {
    requests_jsonl::read(&fixture_dir().join("requests.jsonl"))
        .expect("fixture requests.jsonl")
        .records
}

/// A temporary run directory holding the fixture's `run.json` and `requests.jsonl`.
fn copy_of_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for file in ["run.json", "requests.jsonl"] {
        std::fs::copy(fixture_dir().join(file), dir.path().join(file)).expect("copy fixture");
    }
    dir
}

/// Writes the finished run's reports into a fresh directory, as a replay would.
fn finished_run() -> (tempfile::TempDir, Summary) {
    let dir = copy_of_fixture();
    let summary = report::write_run_reports(dir.path(), &fixture_run(), &fixture_records(), false)
        .expect("reports written");
    (dir, summary)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn tracebench(args: &[&str]) -> std::process::Output {
    Command::new(common::bin())
        .args(args)
        .output()
        .expect("run tracebench")
}

#[test]
fn report_console_snapshot() {
    let (_dir, summary) = finished_run();
    insta::assert_snapshot!("console", report::console::render(&summary));
}

#[test]
fn report_summary_json_snapshot() {
    let (dir, _) = finished_run();
    insta::assert_snapshot!("summary_json", read(&dir.path().join("summary.json")));
}

#[test]
fn report_summary_json_carries_every_vllm_key() {
    let (dir, _) = finished_run();
    let json: Value = serde_json::from_str(&read(&dir.path().join("summary.json"))).expect("json");
    let named = [
        "completed",
        "failed",
        "duration",
        "total_input_tokens",
        "total_output_tokens",
        "request_throughput",
        "output_throughput",
        "total_token_throughput",
        "request_goodput",
        "max_concurrent_requests",
        "mean_ttft_ms",
        "median_ttft_ms",
        "std_ttft_ms",
        "p99_ttft_ms",
        "mean_tpot_ms",
        "median_tpot_ms",
        "std_tpot_ms",
        "p99_tpot_ms",
        "mean_itl_ms",
        "median_itl_ms",
        "std_itl_ms",
        "p99_itl_ms",
        "mean_e2el_ms",
        "median_e2el_ms",
        "std_e2el_ms",
        "p99_e2el_ms",
        "p90_ttft_ms",
        "p95_ttft_ms",
        "p99.9_ttft_ms",
    ];
    for key in named
        .iter()
        .map(|k| k.to_string())
        .chain(summary_json::vllm_keys())
    {
        assert!(json.get(&key).is_some(), "summary.json lacks {key}");
    }

    // Same names, same units: seconds, counts, ms.
    assert_eq!(json["schema_version"], 1);
    assert_eq!(json["completed"], 4);
    assert_eq!(json["failed"], 1);
    assert!((json["duration"].as_f64().expect("duration") - 2.099).abs() < 1e-9);
    assert!((json["mean_ttft_ms"].as_f64().expect("ttft") - 162.5).abs() < 1e-9);
    assert!((json["median_e2el_ms"].as_f64().expect("e2el") - 175.5).abs() < 1e-9);
    assert!((json["request_goodput"].as_f64().expect("goodput") - 3.0 / 2.099).abs() < 1e-9);
    assert_eq!(json["max_concurrent_requests"], 2);
    assert_eq!(json["config"]["model"], "fixture-model");
    assert_eq!(json["partial"], false);
    assert_eq!(json["summary"]["failed_by_cause"]["http_503"], 1);
}

#[test]
fn report_command_reproduces_the_runs_summary() {
    let (dir, _) = finished_run();
    let original = read(&dir.path().join("summary.json"));
    std::fs::remove_file(dir.path().join("report.html")).expect("remove report.html");

    let out = tracebench(&["report", dir.path().to_str().expect("utf-8 path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read(&dir.path().join("summary.json")), original);
    assert!(dir.path().join("report.html").is_file());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Successful requests:                     4"),
        "{stdout}"
    );
}

#[test]
fn report_command_writes_requests_csv_in_plan_order() {
    // requests.jsonl holds records in the order they ended: reversed here.
    let dir = copy_of_fixture();
    let path = dir.path().join("requests.jsonl");
    let lines: Vec<String> = read(&path).lines().rev().map(str::to_string).collect();
    std::fs::write(&path, lines.join("\n") + "\n").expect("write reversed");

    let out = tracebench(&["report", dir.path().to_str().expect("utf-8 path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = read(&dir.path().join("requests.csv"));
    let indexes: Vec<usize> = csv
        .lines()
        .skip(1)
        .map(|l| {
            l.split(',')
                .next()
                .and_then(|i| i.parse().ok())
                .expect("index")
        })
        .collect();
    let mut sorted = indexes.clone();
    sorted.sort_unstable();
    assert!(indexes.len() > 1, "{csv}");
    assert_eq!(indexes, sorted, "{csv}");
}

#[test]
fn report_command_names_the_line_that_is_not_utf8() {
    let dir = copy_of_fixture();
    let jsonl = dir.path().join("requests.jsonl");
    let mut lines: Vec<Vec<u8>> = read(&jsonl)
        .lines()
        .map(|l| l.as_bytes().to_vec())
        .collect();
    lines[2].extend_from_slice(b" \xff\xfe");
    let bytes: Vec<u8> = lines.join(&b'\n').into_iter().chain(*b"\n").collect();
    std::fs::write(&jsonl, bytes).expect("write");

    let out = tracebench(&["report", dir.path().to_str().expect("utf-8 path")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("requests.jsonl:3: not UTF-8 text"),
        "{stderr}"
    );
}

#[test]
fn report_command_recovers_a_killed_runs_requests() {
    // A SIGKILLed run: no summary.json, and the last line cut mid-record.
    let dir = copy_of_fixture();
    let jsonl = dir.path().join("requests.jsonl");
    let mut text = read(&jsonl);
    text.push_str("{\"index\": 6, \"line\": 7, \"scheduled_s\": 3.5, \"sent_");
    std::fs::write(&jsonl, text).expect("write cut file");

    let out = tracebench(&["report", dir.path().to_str().expect("utf-8 path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_str(&read(&dir.path().join("summary.json"))).expect("json");
    assert_eq!(json["partial"], true);
    assert_eq!(json["summary"]["requests"], 6);
    assert_eq!(json["completed"], 4);

    // Everything but the partial mark equals the finished run's summary.
    let (_finished, mut expected) = finished_run();
    expected.partial = true;
    let rebuilt: Summary = serde_json::from_value(json["summary"].clone()).expect("summary");
    assert_eq!(rebuilt, expected);
}

#[test]
fn report_command_rejects_a_bad_line_before_the_end() {
    let dir = copy_of_fixture();
    let jsonl = dir.path().join("requests.jsonl");
    let text = format!("not json\n{}", read(&jsonl));
    std::fs::write(&jsonl, text).expect("write");
    let out = tracebench(&["report", dir.path().to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("requests.jsonl:1:"), "{stderr}");
}

#[test]
fn report_compare_prints_every_headline_change() {
    let (a, _) = finished_run();
    let b = copy_of_fixture();
    // B: R0's first token 100 ms later, so TTFT worsens and nothing else of TTFT's count.
    let jsonl = b.path().join("requests.jsonl");
    let text = read(&jsonl).replacen("\"first_token_s\": 1.101", "\"first_token_s\": 1.201", 1);
    std::fs::write(&jsonl, text).expect("write");

    let out = tracebench(&[
        "compare",
        a.path().to_str().expect("a"),
        b.path().to_str().expect("b"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} row: {stdout}"))
            .to_string()
    };
    // Mean TTFT 162.5 → 187.5 ms: worse by 15.4%.
    assert!(
        row("mean TTFT (ms)").ends_with("- +15.4%"),
        "{}",
        row("mean TTFT (ms)")
    );
    assert!(
        row("completed").ends_with("= +0.0%"),
        "{}",
        row("completed")
    );
    for name in [
        "p99 TPOT (ms)",
        "p99 ITL (ms)",
        "p99 E2EL (ms)",
        "output throughput (tok/s)",
    ] {
        row(name);
    }
}

#[test]
fn report_tics_use_the_seeds_raw_format() {
    let text = report::tics::render(&fixture_records());
    let rows: Vec<Vec<f64>> = serde_json::from_str(&text).expect("json list of lists");
    // Five sent requests; R0 first: lengths, then send and chunks relative to the first send.
    assert_eq!(rows.len(), 5);
    let expect = [100.0, 3.0, 0.0, 0.1, 0.12, 0.15];
    assert_eq!(rows[0].len(), expect.len());
    for (got, want) in rows[0].iter().zip(expect) {
        assert!((got - want).abs() < 1e-9, "{:?}", rows[0]);
    }
    // The failed R2: lengths and its send only.
    assert_eq!(rows[2].len(), 3);
}

#[test]
fn report_csv_has_a_row_per_record() {
    let (dir, _) = finished_run();
    let mut reader = csv::Reader::from_path(dir.path().join("requests.csv")).expect("csv");
    let headers = reader.headers().expect("header").clone();
    let rows: Vec<csv::StringRecord> = reader.records().collect::<Result<_, _>>().expect("rows");
    assert_eq!(rows.len(), 6);
    let col = |name: &str| headers.iter().position(|h| h == name).expect("column");
    assert_eq!(&rows[2][col("outcome")], "http_503");
    assert_eq!(&rows[1][col("tpot_ms")], "");
    assert_eq!(&rows[3][col("output_count")], "chunks");
}

#[test]
fn report_html_is_self_contained() {
    let (dir, _) = finished_run();
    let html = read(&dir.path().join("report.html"));
    assert_eq!(html.matches("<svg").count(), 8, "eight plots");
    for remote in ["http://", "https://", "<script", "<link"] {
        let outside_config = html
            .replace("http://127.0.0.1:9/v1", "")
            .replace("http://www.w3.org", "");
        assert!(
            !outside_config.contains(remote),
            "report.html references {remote}"
        );
    }
    assert!(html.contains("<text"), "axis text is rendered");
}

#[test]
fn report_sweep_table_and_html() {
    let (_dir, summary) = finished_run();
    let mut faster = summary.clone();
    faster.request_throughput = Some(3.0);
    faster.ttft_ms.p99 = Some(400.0);
    let runs = [("1.6", &summary), ("0.4", &faster)];
    let table = report::sweep::table(&runs);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].trim_start().starts_with("load"), "{table}");
    assert!(
        lines[1].trim_start().starts_with("1.6") && lines[1].contains("297.0"),
        "{table}"
    );
    assert!(lines[2].contains("400.0"), "{table}");

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sweep.html");
    report::sweep::write_html(&path, "sweep", &runs).expect("write sweep.html");
    assert_eq!(read(&path).matches("<svg").count(), 4);
    assert!(!table.contains("(partial)"), "{table}");
}

#[test]
fn report_sweep_marks_an_interrupted_run() {
    let (_dir, summary) = finished_run();
    let mut stopped = summary.clone();
    stopped.partial = true;
    let runs = [("scale 1.6", &summary), ("scale 0.4", &stopped)];
    let table = report::sweep::table(&runs);
    let lines: Vec<&str> = table.lines().collect();
    assert!(!lines[1].contains("(partial)"), "{table}");
    assert!(
        lines[2].trim_start().starts_with("scale 0.4 (partial)"),
        "{table}"
    );
    assert!(table.contains("interrupted"), "{table}");

    let html = report::sweep::render_html("sweep", &runs);
    assert_eq!(html.matches("<tr class=\"partial\">").count(), 1, "{html}");
    assert!(html.contains("<td>scale 0.4 (partial)</td>"), "{html}");
    // The interrupted run is not a point of the load–latency lines.
    let complete_only = report::sweep::render_html("sweep", &runs[..1]);
    let plots = |page: &str| page[page.find("<svg").unwrap_or(0)..].to_string();
    assert_eq!(plots(&html), plots(&complete_only));
}

#[test]
fn report_command_recomputes_goodput_and_writes_tics() {
    let (dir, _) = finished_run();
    let tics = dir.path().join("tics.json");
    let out = tracebench(&[
        "report",
        dir.path().to_str().expect("utf-8 path"),
        "--goodput",
        "ttft:150",
        "tpot:20",
        "e2el:120",
        "--save-tics",
        tics.to_str().expect("utf-8 path"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Only R5 (TTFT 50, TPOT 12.5, E2E 100 ms) meets all three.
    let json: Value = serde_json::from_str(&read(&dir.path().join("summary.json"))).expect("json");
    assert_eq!(json["summary"]["goodput"]["good"], 1);
    assert_eq!(json["config"]["goodput"]["e2el_ms"], 120.0);
    let goodput = json["request_goodput"].as_f64().expect("request_goodput");
    assert!((goodput - 1.0 / 2.099).abs() < 1e-9, "{goodput}");
    assert_eq!(read(&tics), report::tics::render(&fixture_records()));

    let bad = tracebench(&[
        "report",
        dir.path().to_str().expect("utf-8"),
        "--goodput",
        "itl:5",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("itl:5"));
}

mod props {
    use proptest::prelude::*;

    use super::*;
    use tracebench::metrics::SummaryOptions;

    prop_compose! {
        /// The fixture's records with their times shifted, dropped or scrambled.
        fn scrambled()(
            shifts in proptest::collection::vec((-3.0f64..3.0, any::<bool>()), 6),
        ) -> Vec<RequestRecord> {
            let mut records = fixture_records();
            for (record, (shift, drop)) in records.iter_mut().zip(shifts) {
                record.first_token_s = record.first_token_s.map(|t| t + shift);
                record.end_s = if drop { None } else { record.end_s.map(|t| t - shift) };
                record.chunk_s.iter_mut().for_each(|t| *t += shift * 0.5);
            }
            records
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Corrupt timings never make a report panic, and every report is written.
        #[test]
        fn any_timings_render_every_report(records in scrambled()) {
            let summary = Summary::compute(&records, &SummaryOptions::default());
            let console = report::console::render(&summary);
            prop_assert!(console.contains("Serving Benchmark Result"));

            let dir = tempfile::tempdir().expect("temp dir");
            report::write_run_reports(dir.path(), &fixture_run(), &records, true).expect("written");
            let html = read(&dir.path().join("report.html"));
            prop_assert!(html.ends_with("</html>\n"));
        }
    }
}

#[test]
fn compare_names_the_missing_run_itself() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let missing = dir.path().join("nonexistent");
    let output = Command::new(common::bin())
        .arg("compare")
        .arg(&missing)
        .arg(&missing)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let expected = format!("{}: no such run directory", missing.display());
    assert!(stderr.contains(&expected), "{stderr}");
}
