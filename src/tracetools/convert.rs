//! Writing records in any format we read: tracebench's own JSONL (the default), Mooncake,
//! Qwen-Bailian, Azure CSV and BurstGPT CSV. `trace convert` is load + write.
//!
//! Every field the readers take is written, so a round trip through our format and back
//! keeps them: arrival (to the nanosecond), lengths, `hash_ids` and block size, session
//! links and type. Formats that cannot hold a record's data refuse rather than guess.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use chrono::{DateTime, NaiveDateTime};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde::Serialize;
use serde_json::Number;

use crate::trace::{TraceFormat, TraceRecord};

/// Where Azure timestamps start when written from relative offsets: 2024-01-01 00:00:00
/// UTC. Any epoch-sized origin works; readers rebase absolute files to their first record.
pub const AZURE_ORIGIN_UNIX_S: i64 = 1_704_067_200;

/// Records that a format cannot hold, or a file that cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// A record lacks something the output format requires.
    #[error("line {line}: {format} needs {what}, which this record does not have")]
    Unrepresentable {
        /// The record's source line.
        line: u64,
        /// The output format.
        format: TraceFormat,
        /// What is missing.
        what: String,
    },
    /// The output file cannot be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The operating system's error.
        source: io::Error,
    },
}

/// Writes `records` to `path` as `format`, gzip-compressed when the name ends in `.gz`.
pub fn write_file(
    records: &[TraceRecord],
    format: TraceFormat,
    path: &Path,
) -> Result<(), ConvertError> {
    let io_err = |source| ConvertError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = File::create(path).map_err(io_err)?;
    let gzip = path.extension().is_some_and(|e| e == "gz");
    let result = if gzip {
        let mut out = GzEncoder::new(BufWriter::new(file), Compression::default());
        write_records(records, format, &mut out).and_then(|()| finish_gz(out))
    } else {
        let mut out = BufWriter::new(file);
        write_records(records, format, &mut out).and_then(|()| out.flush().map_err(io_err))
    };
    result.map_err(|e| match e {
        ConvertError::Io { source, .. } => io_err(source),
        other => other,
    })
}

fn finish_gz(out: GzEncoder<BufWriter<File>>) -> Result<(), ConvertError> {
    out.finish()
        .and_then(|mut inner| inner.flush())
        .map_err(|source| ConvertError::Io {
            path: String::new(),
            source,
        })
}

/// Writes `records` as `format` to any writer.
pub fn write_records(
    records: &[TraceRecord],
    format: TraceFormat,
    out: &mut dyn Write,
) -> Result<(), ConvertError> {
    let io_err = |source| ConvertError::Io {
        path: String::new(),
        source,
    };
    match format {
        TraceFormat::Azure => {
            writeln!(out, "TIMESTAMP,ContextTokens,GeneratedTokens").map_err(io_err)?
        }
        TraceFormat::Burstgpt => writeln!(
            out,
            "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type"
        )
        .map_err(io_err)?,
        _ => {}
    }
    for (i, record) in records.iter().enumerate() {
        let line = line_for(record, i, format)?;
        out.write_all(line.as_bytes()).map_err(io_err)?;
        out.write_all(b"\n").map_err(io_err)?;
    }
    Ok(())
}

/// One record as one line of `format`.
fn line_for(
    record: &TraceRecord,
    index: usize,
    format: TraceFormat,
) -> Result<String, ConvertError> {
    match format {
        TraceFormat::Tracebench => Ok(json(&ours(record))),
        TraceFormat::Mooncake => mooncake(record).map(|r| json(&r)),
        TraceFormat::Bailian => bailian(record, index).map(|r| json(&r)),
        TraceFormat::Azure => Ok(azure(record)),
        TraceFormat::Burstgpt => Ok(burstgpt(record)),
    }
}

fn json(value: &impl Serialize) -> String {
    // Serializing plain structs of numbers, strings and lists cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

/// Our JSONL record: Mooncake's fields plus the optional ones.
#[derive(Serialize)]
struct OursLine<'a> {
    timestamp: Number,
    input_length: u32,
    output_length: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash_ids: Option<&'a [u64]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    block_size: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chat_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_chat_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    turn: Option<u32>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
}

fn ours(record: &TraceRecord) -> OursLine<'_> {
    OursLine {
        timestamp: millis(record),
        input_length: record.input_tokens,
        output_length: record.output_tokens,
        hash_ids: record.prefix.as_ref().map(|p| p.hash_ids.as_slice()),
        block_size: record.prefix.as_ref().map(|p| p.block_size),
        chat_id: record.session.map(|s| s.chat_id),
        parent_chat_id: record.session.map(|s| s.parent_chat_id),
        turn: record.session.and_then(|s| s.turn),
        kind: record.kind.as_deref(),
    }
}

/// Milliseconds: an integer when whole, else a float exact to the nanosecond.
fn millis(record: &TraceRecord) -> Number {
    let ns = record.arrival.as_nanos();
    if ns % 1_000_000 == 0 {
        Number::from((ns / 1_000_000) as u64)
    } else {
        Number::from_f64(ns as f64 / 1e6).unwrap_or_else(|| Number::from(0))
    }
}

#[derive(Serialize)]
struct MooncakeLine<'a> {
    timestamp: Number,
    input_length: u32,
    output_length: u32,
    hash_ids: &'a [u64],
}

fn mooncake(record: &TraceRecord) -> Result<MooncakeLine<'_>, ConvertError> {
    let unrepresentable = |what: &str| ConvertError::Unrepresentable {
        line: record.line,
        format: TraceFormat::Mooncake,
        what: what.to_string(),
    };
    let prefix = record
        .prefix
        .as_ref()
        .ok_or_else(|| unrepresentable("hash_ids"))?;
    if prefix.block_size != 512 {
        return Err(unrepresentable(&format!(
            "512-token blocks (these are {}; convert to tracebench instead)",
            prefix.block_size
        )));
    }
    Ok(MooncakeLine {
        timestamp: millis(record),
        input_length: record.input_tokens,
        output_length: record.output_tokens,
        hash_ids: &prefix.hash_ids,
    })
}

#[derive(Serialize)]
struct BailianLine<'a> {
    chat_id: i64,
    parent_chat_id: i64,
    timestamp: f64,
    input_length: u32,
    output_length: u32,
    #[serde(rename = "type")]
    kind: &'a str,
    turn: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash_ids: Option<&'a [u64]>,
}

/// Bailian needs session fields; a record without them becomes its own one-turn session
/// (`chat_id` = its index, `parent_chat_id` -1, `turn` 1).
fn bailian(record: &TraceRecord, index: usize) -> Result<BailianLine<'_>, ConvertError> {
    if let Some(prefix) = &record.prefix
        && prefix.block_size != 16
    {
        return Err(ConvertError::Unrepresentable {
            line: record.line,
            format: TraceFormat::Bailian,
            what: format!(
                "16-token blocks (these are {}; convert to tracebench instead)",
                prefix.block_size
            ),
        });
    }
    Ok(BailianLine {
        chat_id: record.session.map_or(index as i64, |s| s.chat_id),
        parent_chat_id: record.session.map_or(-1, |s| s.parent_chat_id),
        timestamp: record.arrival.as_nanos() as f64 / 1e9,
        input_length: record.input_tokens,
        output_length: record.output_tokens,
        kind: record.kind.as_deref().unwrap_or("text"),
        turn: record.session.and_then(|s| s.turn).unwrap_or(1),
        hash_ids: record.prefix.as_ref().map(|p| p.hash_ids.as_slice()),
    })
}

fn azure(record: &TraceRecord) -> String {
    let origin = DateTime::from_timestamp(AZURE_ORIGIN_UNIX_S, 0)
        .map(|t| t.naive_utc())
        .unwrap_or(NaiveDateTime::MIN);
    let time = origin + record.arrival;
    format!(
        "{},{},{}",
        time.format("%Y-%m-%d %H:%M:%S%.9f"),
        record.input_tokens,
        record.output_tokens
    )
}

fn burstgpt(record: &TraceRecord) -> String {
    let seconds = record.arrival.as_nanos() as f64 / 1e9;
    let total = u64::from(record.input_tokens) + u64::from(record.output_tokens);
    let log_type = if record.session.is_some() {
        "Conversation log"
    } else {
        "API log"
    };
    // The Model column is left empty: no format we read says which model served a request.
    format!(
        "{seconds},,{},{},{total},{log_type}",
        record.input_tokens, record.output_tokens
    )
}
