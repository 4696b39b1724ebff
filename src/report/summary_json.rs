//! `summary.json`: `schema_version`, the run's configuration, the keys of vLLM's
//! `benchmark_serving --save-result` JSON with its names and units (seconds, req/s, tok/s,
//! ms), then tracebench's own summary under `summary` and the warnings.
//!
//! vLLM writes `p{P}_{metric}_ms` for each requested percentile; we write P = 90, 95, 99
//! and 99.9, as `--metric-percentiles 90,95,99,99.9` would. A value that does not exist
//! (no samples, zero duration, goodput not asked for) is `null`, never 0.

use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use super::RunInfo;
use super::warnings::Warning;
use crate::metrics::{Distribution, Percentile, Summary};

/// The contents of `summary.json`, as read back by `tracebench compare`.
#[derive(Debug, Clone, Deserialize)]
pub struct SummaryFile {
    /// Layout version.
    pub schema_version: u32,
    /// The run's `run.json`.
    pub config: RunInfo,
    /// The run was interrupted.
    #[serde(default)]
    pub partial: bool,
    /// tracebench's summary.
    pub summary: Summary,
}

/// What `summary.json` is written from.
#[derive(Debug, Clone, Copy)]
pub struct SummaryJson<'a> {
    /// The run's configuration.
    pub run: &'a RunInfo,
    /// Its summary.
    pub summary: &'a Summary,
    /// Warnings about the measurement.
    pub warnings: &'a [Warning],
}

/// The latency metrics in vLLM's names, with the summary field holding each.
fn vllm_metrics(summary: &Summary) -> [(&'static str, &Distribution); 4] {
    [
        ("ttft", &summary.ttft_ms),
        ("tpot", &summary.tpot_ms),
        ("itl", &summary.itl_ms),
        ("e2el", &summary.e2el_ms),
    ]
}

/// The percentiles written as `p{P}_{metric}_ms` (vLLM's default is 99 alone).
const VLLM_PERCENTILES: [Percentile; 4] = [
    Percentile::P90,
    Percentile::P95,
    Percentile::P99,
    Percentile::P99_9,
];

/// Every vLLM key `summary.json` carries, in order (for tests and documentation).
pub fn vllm_keys() -> Vec<String> {
    let mut keys: Vec<String> = VLLM_SCALAR_KEYS.iter().map(|k| k.to_string()).collect();
    for (metric, _) in vllm_metrics(&Summary::default()) {
        for stat in ["mean", "median", "std"] {
            keys.push(format!("{stat}_{metric}_ms"));
        }
        for p in VLLM_PERCENTILES {
            keys.push(format!("{}_{metric}_ms", p.key()));
        }
    }
    keys
}

const VLLM_SCALAR_KEYS: [&str; 17] = [
    "date",
    "backend",
    "model_id",
    "tokenizer_id",
    "num_prompts",
    "max_concurrency",
    "completed",
    "failed",
    "duration",
    "total_input_tokens",
    "total_output_tokens",
    "request_throughput",
    "request_goodput",
    "output_throughput",
    "total_token_throughput",
    "max_output_tokens_per_s",
    "max_concurrent_requests",
];

impl Serialize for SummaryJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let s = self.summary;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("schema_version", &super::SCHEMA_VERSION)?;
        map.serialize_entry("config", self.run)?;

        // vLLM's scalar keys, in VLLM_SCALAR_KEYS order.
        map.serialize_entry("date", &self.run.started_at)?;
        map.serialize_entry("backend", "openai-chat")?;
        map.serialize_entry("model_id", &self.run.model)?;
        map.serialize_entry("tokenizer_id", &self.run.tokenizer)?;
        map.serialize_entry("num_prompts", &s.requests)?;
        map.serialize_entry("max_concurrency", &self.run.max_concurrency)?;
        map.serialize_entry("completed", &s.completed)?;
        map.serialize_entry("failed", &s.failed)?;
        map.serialize_entry("duration", &s.duration_s)?;
        map.serialize_entry("total_input_tokens", &s.total_input_tokens)?;
        map.serialize_entry("total_output_tokens", &s.total_output_tokens)?;
        map.serialize_entry("request_throughput", &s.request_throughput)?;
        let goodput = s.goodput.as_ref().and_then(|g| g.request_goodput);
        map.serialize_entry("request_goodput", &goodput)?;
        map.serialize_entry("output_throughput", &s.output_throughput)?;
        map.serialize_entry("total_token_throughput", &s.total_token_throughput)?;
        map.serialize_entry("max_output_tokens_per_s", &s.max_output_tokens_per_s)?;
        map.serialize_entry("max_concurrent_requests", &s.max_in_flight)?;

        // vLLM's latency keys.
        for (metric, d) in vllm_metrics(s) {
            map.serialize_entry(&format!("mean_{metric}_ms"), &d.mean)?;
            map.serialize_entry(&format!("median_{metric}_ms"), &d.p50)?;
            map.serialize_entry(&format!("std_{metric}_ms"), &d.std)?;
            for p in VLLM_PERCENTILES {
                map.serialize_entry(&format!("{}_{metric}_ms", p.key()), &d.at(p))?;
            }
        }

        // Ours.
        map.serialize_entry("partial", &s.partial)?;
        map.serialize_entry("warnings", self.warnings)?;
        map.serialize_entry("summary", s)?;
        map.end()
    }
}

/// `summary.json`'s text, pretty-printed, with a final newline.
pub fn render(run: &RunInfo, summary: &Summary, warnings: &[Warning]) -> String {
    let json = SummaryJson {
        run,
        summary,
        warnings,
    };
    let mut text = serde_json::to_string_pretty(&json).unwrap_or_else(|e| {
        // Serializing plain numbers and strings cannot fail; keep a valid file if it does.
        format!("{{\"error\": {:?}}}", e.to_string())
    });
    text.push('\n');
    text
}
