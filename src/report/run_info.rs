//! `run.json`: what a replay was asked to do, written before its first request so that an
//! interrupted run can still be reported, and written again at its end with what only the
//! end knows (the connections opened). The replay engine fills it; every report reads it.

use serde::{Deserialize, Serialize};

/// Version of the `run.json` / `summary.json` layout; bump on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// The configuration and context of one replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// Layout version ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// tracebench's version.
    pub tracebench_version: String,
    /// Wall-clock start, RFC 3339.
    pub started_at: String,
    /// The trace file (or public trace name) replayed.
    pub trace: String,
    /// The target's base URL (`sim` for the built-in simulator, with its address).
    pub base_url: String,
    /// The model id requests were sent for.
    pub model: String,
    /// The tokenizer spec used for prompts and counting.
    pub tokenizer: String,
    /// Prompt mode (`blocks`, `random`, `shared`).
    pub prompt_mode: String,
    /// Seed of every random choice (prompts, synthetic arrivals).
    pub seed: u64,
    /// Goodput objectives, ms; absent ones are not checked.
    #[serde(default)]
    pub goodput: GoodputSlo,
    /// `--max-concurrency`, where set.
    pub max_concurrency: Option<usize>,
    /// How the chat template overhead was measured, and its size.
    pub calibration: Option<serde_json::Value>,
    /// Every other option of the run, free-form, for the record (and `planned_requests`,
    /// see [`RunInfo::planned_requests`]).
    #[serde(default)]
    pub config: serde_json::Value,
    /// The connections the direct transport opened, added when the run has ended. Absent
    /// with reqwest (which does not count them), in a `run.json` of a run that was killed,
    /// and in one written before this was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<Connections>,
}

/// How many connections the direct transport opened during a run, and by whom.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connections {
    /// Opened before the start or by the keeper between bursts, off the send path.
    pub opened_ahead: usize,
    /// Opened by a request that found no idle connection (its `connect` is inside its
    /// measured latency).
    pub opened_on_send: usize,
}

/// The key under `config` holding the number of requests in the run's plan.
pub const PLANNED_REQUESTS_KEY: &str = "planned_requests";

impl RunInfo {
    /// Requests in the run's plan (`config.planned_requests`). A `requests.jsonl` with fewer
    /// lines is from a run that was killed; the rebuilt report counts the missing ones.
    /// `None` in a `run.json` written before this was recorded.
    pub fn planned_requests(&self) -> Option<usize> {
        let planned = self.config.get(PLANNED_REQUESTS_KEY)?.as_u64()?;
        usize::try_from(planned).ok()
    }
}

/// Service-level objectives for goodput (`--goodput ttft:500 tpot:50 e2el:10000`), ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct GoodputSlo {
    /// TTFT objective, ms.
    pub ttft_ms: Option<f64>,
    /// TPOT objective, ms.
    pub tpot_ms: Option<f64>,
    /// End-to-end latency objective, ms.
    pub e2el_ms: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `run.json` as written before the connection counts were recorded.
    const OLD_RUN_JSON: &str = r#"{
        "schema_version": 1, "tracebench_version": "0.1.0", "started_at": "now",
        "trace": "t.jsonl", "base_url": "http://127.0.0.1:8000/v1", "model": "m",
        "tokenizer": "none", "prompt_mode": "blocks", "seed": 0,
        "goodput": {"ttft_ms": null, "tpot_ms": null, "e2el_ms": null},
        "max_concurrency": null, "calibration": null,
        "config": {"http_client": "direct"}
    }"#;

    fn old_run() -> RunInfo {
        serde_json::from_str(OLD_RUN_JSON).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_run_json_without_connection_counts_still_loads() {
        assert_eq!(old_run().connections, None);
    }

    #[test]
    fn connection_counts_are_written_only_when_known() {
        let mut run = old_run();
        let json = serde_json::to_value(&run).unwrap_or_default();
        assert!(json.get("connections").is_none(), "{json}");

        run.connections = Some(Connections {
            opened_ahead: 12,
            opened_on_send: 3,
        });
        let json = serde_json::to_value(&run).unwrap_or_default();
        assert_eq!(
            json["connections"],
            serde_json::json!({"opened_ahead": 12, "opened_on_send": 3})
        );
        let back: RunInfo = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, run);
    }
}
