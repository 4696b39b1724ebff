//! The trace formats we read, their defaults (time unit, block size), and detection from a
//! file's first line and name.
//!
//! Detection order: the first JSON record's fields, then a CSV header's columns, then the
//! file name. `--format` skips detection altogether.

use std::fmt;
use std::path::Path;

use serde::Serialize;

/// One of the trace formats tracebench reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TraceFormat {
    /// Qwen-Bailian JSONL: seconds, 16-token blocks, sessions.
    #[value(alias = "qwen", alias = "qwen-bailian")]
    Bailian,
    /// Mooncake JSONL: milliseconds, 512-token blocks.
    Mooncake,
    /// tracebench's own JSONL: Mooncake's fields plus optional session fields, `type`,
    /// `block_size`.
    Tracebench,
    /// Azure LLM inference CSV (2023 and 2024): absolute `TIMESTAMP` text.
    Azure,
    /// BurstGPT CSV: seconds, failed requests marked by `Response tokens` 0.
    #[value(alias = "burst-gpt")]
    Burstgpt,
}

/// Block size tracebench's own format assumes when a record does not say.
pub const TRACEBENCH_DEFAULT_BLOCK_SIZE: u32 = 512;

impl TraceFormat {
    /// Every format, in the order `--help` lists them.
    pub const ALL: [TraceFormat; 5] = [
        TraceFormat::Bailian,
        TraceFormat::Mooncake,
        TraceFormat::Tracebench,
        TraceFormat::Azure,
        TraceFormat::Burstgpt,
    ];

    /// The name used by `--format`.
    pub fn name(self) -> &'static str {
        match self {
            TraceFormat::Bailian => "bailian",
            TraceFormat::Mooncake => "mooncake",
            TraceFormat::Tracebench => "tracebench",
            TraceFormat::Azure => "azure",
            TraceFormat::Burstgpt => "burstgpt",
        }
    }

    /// Tokens per `hash_ids` block the format's files use; `None` for formats without blocks.
    pub fn default_block_size(self) -> Option<u32> {
        match self {
            TraceFormat::Bailian => Some(16),
            TraceFormat::Mooncake => Some(512),
            TraceFormat::Tracebench => Some(TRACEBENCH_DEFAULT_BLOCK_SIZE),
            TraceFormat::Azure | TraceFormat::Burstgpt => None,
        }
    }

    /// Whether records are JSON lines (as opposed to CSV rows).
    pub fn is_jsonl(self) -> bool {
        matches!(
            self,
            TraceFormat::Bailian | TraceFormat::Mooncake | TraceFormat::Tracebench
        )
    }
}

impl fmt::Display for TraceFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Guesses the format from the first non-blank line (BOM and line end removed) and the path.
///
/// Returns `None` when neither the line nor the name gives it away.
pub(crate) fn detect(first_line: &str, path: &Path) -> Option<TraceFormat> {
    let trimmed = first_line.trim_start();
    let by_content = if trimmed.starts_with('{') {
        detect_json(trimmed)
    } else {
        detect_csv_header(trimmed)
    };
    by_content.or_else(|| detect_by_name(path))
}

/// The JSON formats differ by fields: ours has `block_size` or no `hash_ids` (Mooncake and
/// Bailian always have them); Bailian has `parent_chat_id`; Mooncake has neither.
fn detect_json(line: &str) -> Option<TraceFormat> {
    let value = super::json::parse_lenient(line).ok()?;
    let obj = value.as_object()?;
    if !obj.contains_key("timestamp") {
        return None;
    }

    if obj.contains_key("block_size") || !obj.contains_key("hash_ids") {
        Some(TraceFormat::Tracebench)
    } else if obj.contains_key("parent_chat_id") {
        Some(TraceFormat::Bailian)
    } else {
        Some(TraceFormat::Mooncake)
    }
}

fn detect_csv_header(line: &str) -> Option<TraceFormat> {
    let columns: Vec<&str> = line
        .split(',')
        .map(|c| c.trim().trim_matches('"'))
        .collect();
    let has = |name: &str| columns.contains(&name);
    if has("TIMESTAMP") && has("ContextTokens") {
        Some(TraceFormat::Azure)
    } else if has("Request tokens") && has("Response tokens") {
        Some(TraceFormat::Burstgpt)
    } else {
        None
    }
}

/// Last resort, so that a file whose first line is broken still gets `FILE:1` errors.
fn detect_by_name(path: &Path) -> Option<TraceFormat> {
    let name = path.file_name()?.to_string_lossy().to_lowercase();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    if name.contains("qwen") || name.contains("bailian") {
        Some(TraceFormat::Bailian)
    } else if name.contains("mooncake") || name.contains("conversation_trace") {
        Some(TraceFormat::Mooncake)
    } else if name.contains("azure") {
        Some(TraceFormat::Azure)
    } else if name.contains("burst") {
        Some(TraceFormat::Burstgpt)
    } else if name.ends_with(".jsonl") || name.ends_with(".json") {
        Some(TraceFormat::Tracebench)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_fields_pick_the_format() {
        let p = Path::new("x.txt");
        let mooncake =
            r#"{"timestamp": 0, "input_length": 1, "output_length": 1, "hash_ids": [0]}"#;
        assert_eq!(detect(mooncake, p), Some(TraceFormat::Mooncake));
        let bailian = r#"{"chat_id": 1, "parent_chat_id": -1, "timestamp": 0.5, "input_length": 1, "output_length": 1, "hash_ids": [0], "type": "text", "turn": 1}"#;
        assert_eq!(detect(bailian, p), Some(TraceFormat::Bailian));
        let ours = r#"{"timestamp": 0, "input_length": 1, "output_length": 1}"#;
        assert_eq!(detect(ours, p), Some(TraceFormat::Tracebench));
    }

    #[test]
    fn csv_headers_pick_the_format() {
        let p = Path::new("x.txt");
        let azure = "TIMESTAMP,ContextTokens,GeneratedTokens";
        assert_eq!(detect(azure, p), Some(TraceFormat::Azure));
        let burst = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type";
        assert_eq!(detect(burst, p), Some(TraceFormat::Burstgpt));
    }

    #[test]
    fn name_is_the_fallback() {
        assert_eq!(
            detect("{oops", Path::new("a/qwen_traceA.jsonl.gz")),
            Some(TraceFormat::Bailian)
        );
        assert_eq!(detect("garbage", Path::new("a/b.bin")), None);
    }
}
