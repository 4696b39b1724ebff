//! What one request did: the per-request record every report is computed from, and the
//! outcome that every request ends in. Serialized as one line of `requests.jsonl`; times are
//! seconds from the run's start instant (`*_s`) or milliseconds (`*_ms`), as their names say.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How a request ended. Failures are data: the report counts them by cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// The stream completed with output and `[DONE]` (or a clean end).
    Ok,
    /// The server answered with a non-2xx HTTP status.
    Http(u16),
    /// The TCP/TLS connection could not be made (refused, reset before response, DNS).
    Connect,
    /// A timeout fired.
    Timeout(TimeoutKind),
    /// The connection closed mid-stream, before `[DONE]` or a finish reason.
    StreamCut,
    /// The server sent something that is not the protocol (bad JSON, HTML, oversized event).
    Protocol,
    /// The server reported an error inside the stream (`event: error` or `{"error": ...}`).
    InBand,
    /// The stream completed but carried no generated output.
    NoOutput,
    /// The request was cancelled (interrupted run).
    Cancelled,
    /// The record was never sent (cut by a policy or by an interruption).
    Skipped,
}

/// Which timeout fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimeoutKind {
    /// Establishing the connection took too long.
    Connect,
    /// No output-bearing chunk arrived in time.
    FirstToken,
    /// The whole request took too long.
    Total,
}

/// Where a request's output token count came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    /// The server's `usage.completion_tokens`.
    Usage,
    /// Counted by tracebench with the tokenizer over the received text.
    Tokenizer,
}

/// One request of a replay, as measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Position in the replay plan (0-based).
    pub index: usize,
    /// Source line of the trace record (1-based).
    pub line: u64,
    /// When the plan said to send it, seconds from the run start.
    pub scheduled_s: f64,
    /// When it was actually sent; `None` if it never was.
    pub sent_s: Option<f64>,
    /// When the first output-bearing chunk arrived; `None` without output.
    pub first_token_s: Option<f64>,
    /// When the stream ended (or failed); `None` if never sent.
    pub end_s: Option<f64>,
    /// Time waiting for a concurrency slot, ms; `None` where no cap applied.
    pub queue_wait_ms: Option<f64>,
    /// Extra wait for the parent turn to finish (sessions `gate`/`think`), ms.
    pub session_wait_ms: Option<f64>,
    /// The record's input length as requested (after clamping), tokens.
    pub input_tokens: u32,
    /// The record's output length as requested (after clamping), tokens.
    pub output_tokens: u32,
    /// Server-reported `usage.prompt_tokens`; `None` when the server sent no usage.
    pub prompt_tokens: Option<u32>,
    /// Output tokens received (see `completion_source`); `None` when unknown.
    pub completion_tokens: Option<u32>,
    /// Where `completion_tokens` came from.
    pub completion_source: Option<TokenSource>,
    /// Server-reported `usage.prompt_tokens_details.cached_tokens`.
    pub cached_tokens: Option<u32>,
    /// Arrival of every output-bearing chunk, seconds from the run start.
    pub chunk_s: Vec<f64>,
    /// How the request ended.
    pub outcome: Outcome,
    /// The error text for a failed request (never contains credentials).
    pub error: Option<String>,
    /// The record's lengths were clamped by `--max-input-tokens`/`--max-output-tokens`.
    #[serde(default)]
    pub clamped: bool,
    /// This is a session child whose parent request failed.
    #[serde(default)]
    pub parent_failed: bool,
    /// `--sessions-live`: tokens of the parent's generated text in this child's prompt;
    /// absent when the prompt was built without it (a root, a failed parent, no output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_tokens: Option<u32>,
}

impl RequestRecord {
    /// TTFT from the actual send, ms.
    pub fn ttft_ms(&self) -> Option<f64> {
        Some((self.first_token_s? - self.sent_s?) * 1e3)
    }

    /// End-to-end latency from the actual send, ms.
    pub fn e2e_ms(&self) -> Option<f64> {
        Some((self.end_s? - self.sent_s?) * 1e3)
    }

    /// Send lag (actual − scheduled), ms.
    pub fn send_lag_ms(&self) -> Option<f64> {
        Some((self.sent_s? - self.scheduled_s) * 1e3)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok => f.write_str("ok"),
            Outcome::Http(status) => write!(f, "http_{status}"),
            Outcome::Connect => f.write_str("connect_error"),
            Outcome::Timeout(TimeoutKind::Connect) => f.write_str("timeout_connect"),
            Outcome::Timeout(TimeoutKind::FirstToken) => f.write_str("timeout_first_token"),
            Outcome::Timeout(TimeoutKind::Total) => f.write_str("timeout_total"),
            Outcome::StreamCut => f.write_str("stream_cut"),
            Outcome::Protocol => f.write_str("protocol_error"),
            Outcome::InBand => f.write_str("in_band_error"),
            Outcome::NoOutput => f.write_str("no_output"),
            Outcome::Cancelled => f.write_str("cancelled"),
            Outcome::Skipped => f.write_str("skipped"),
        }
    }
}

/// An outcome name that is not one of [`Outcome`]'s.
#[derive(Debug, thiserror::Error)]
#[error("unknown outcome {0:?}")]
pub struct UnknownOutcome(String);

impl FromStr for Outcome {
    type Err = UnknownOutcome;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let outcome = match s {
            "ok" => Outcome::Ok,
            "connect_error" => Outcome::Connect,
            "timeout_connect" => Outcome::Timeout(TimeoutKind::Connect),
            "timeout_first_token" => Outcome::Timeout(TimeoutKind::FirstToken),
            "timeout_total" => Outcome::Timeout(TimeoutKind::Total),
            "stream_cut" => Outcome::StreamCut,
            "protocol_error" => Outcome::Protocol,
            "in_band_error" => Outcome::InBand,
            "no_output" => Outcome::NoOutput,
            "cancelled" => Outcome::Cancelled,
            "skipped" => Outcome::Skipped,
            other => match other.strip_prefix("http_").map(str::parse) {
                Some(Ok(status)) => Outcome::Http(status),
                _ => return Err(UnknownOutcome(s.to_string())),
            },
        };
        Ok(outcome)
    }
}

impl Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Outcome {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_names_round_trip() {
        let all = [
            Outcome::Ok,
            Outcome::Http(503),
            Outcome::Connect,
            Outcome::Timeout(TimeoutKind::FirstToken),
            Outcome::StreamCut,
            Outcome::Protocol,
            Outcome::InBand,
            Outcome::NoOutput,
            Outcome::Cancelled,
            Outcome::Skipped,
        ];
        for outcome in all {
            assert_eq!(outcome.to_string().parse::<Outcome>().ok(), Some(outcome));
        }
        assert_eq!(Outcome::Http(429).to_string(), "http_429");
        assert!("http_x".parse::<Outcome>().is_err());
    }
}
