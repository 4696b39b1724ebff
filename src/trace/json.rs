//! JSON Lines readers: Qwen-Bailian, Mooncake and tracebench's own format, which differ
//! only in time unit, default block size and how strictly `hash_ids` is checked.
//!
//! Parsing is lenient in one way: bare `NaN` / `Infinity` (which some JSON writers emit and
//! strict parsers reject before any field is read) are turned into marker strings on a
//! second try, so the error names the field. Everything else must be valid JSON.

use serde_json::{Map, Value};

use super::error::{Problem, TraceError};
use super::format::{TRACEBENCH_DEFAULT_BLOCK_SIZE, TraceFormat};
use super::load::Collector;
use super::record::{PrefixBlocks, SessionLink, TraceRecord};
use super::source::{self, Lines, Source};

/// How one JSON format reads its fields.
#[derive(Debug, Clone, Copy)]
struct Dialect {
    /// Nanoseconds per unit of `timestamp`.
    unit_ns: f64,
    /// Whether a record without `hash_ids` is invalid.
    hash_ids_required: bool,
    /// Whether a `hash_ids` count mismatch is an error (else a counted warning).
    mismatch_is_error: bool,
    /// Tokens per block when neither `--block-size` nor the record says.
    default_block: u32,
}

fn dialect(format: TraceFormat) -> Dialect {
    match format {
        TraceFormat::Bailian => Dialect {
            unit_ns: 1e9,
            hash_ids_required: false,
            mismatch_is_error: false,
            default_block: 16,
        },
        TraceFormat::Mooncake => Dialect {
            unit_ns: 1e6,
            hash_ids_required: true,
            mismatch_is_error: true,
            default_block: 512,
        },
        _ => Dialect {
            unit_ns: 1e6,
            hash_ids_required: false,
            mismatch_is_error: true,
            default_block: TRACEBENCH_DEFAULT_BLOCK_SIZE,
        },
    }
}

/// Marker strings standing for bare non-finite numbers after the lenient rewrite.
const NON_FINITE_MARKERS: [(&str, &str); 3] = [
    ("-Infinity", "\u{0}-Infinity"),
    ("Infinity", "\u{0}Infinity"),
    ("NaN", "\u{0}NaN"),
];

/// A parsed record before the loader rebases its time.
#[derive(Debug)]
pub(crate) struct Parsed {
    /// Arrival in nanoseconds in the file's own origin.
    pub(crate) time_ns: i64,
    /// The record (arrival still zero).
    pub(crate) record: TraceRecord,
    /// Whether `hash_ids` has the wrong count but the format only warns about it.
    pub(crate) hash_ids_mismatch: bool,
}

/// Reads every line of `source` into `out`.
pub(crate) fn read(
    source: Source,
    format: TraceFormat,
    out: &mut Collector,
) -> Result<(), TraceError> {
    let dialect = dialect(format);
    let gzip = source.gzip;
    let mut lines = Lines::new(source.reader);
    loop {
        let next = lines
            .next_line()
            .map_err(|e| source::read_error(out.path(), gzip, e))?;
        let Some((line, bytes)) = next else {
            return Ok(());
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }

        match parse_line(bytes, dialect, out.block_size_override()) {
            Ok(parsed) => out.accept(line, parsed)?,
            Err((field, problem)) => out.reject(line, field, problem)?,
        }
    }
}

/// Parses a JSON value, retrying with `NaN` / `Infinity` turned into marker strings.
pub(crate) fn parse_lenient(text: &str) -> Result<Value, serde_json::Error> {
    match serde_json::from_str(text) {
        Ok(value) => Ok(value),
        Err(err) if text.contains("NaN") || text.contains("Infinity") => {
            serde_json::from_str(&mark_non_finite(text)).map_err(|_| err)
        }
        Err(err) => Err(err),
    }
}

/// serde's message with its position as a column only: the line is the record's own.
fn json_reason(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let reason = text
        .rsplit_once(" at line ")
        .map_or(text.as_str(), |(r, _)| r);
    format!("{reason} (column {})", err.column())
}

/// Rewrites bare `NaN`, `Infinity` and `-Infinity` outside strings as marker strings.
fn mark_non_finite(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    let mut in_string = false;
    while let Some(c) = rest.chars().next() {
        if !in_string {
            if let Some((bare, marker)) =
                NON_FINITE_MARKERS.iter().find(|(b, _)| rest.starts_with(b))
            {
                out.push_str(&serde_json::Value::from(*marker).to_string());
                rest = &rest[bare.len()..];
                continue;
            }
        }
        if c == '"' {
            in_string = !in_string;
        } else if c == '\\' && in_string {
            out.push(c);
            rest = &rest[1..];
            let Some(escaped) = rest.chars().next() else {
                break;
            };
            out.push(escaped);
            rest = &rest[escaped.len_utf8()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

type FieldError = (&'static str, Problem);

/// Parses one non-blank line into a record.
fn parse_line(
    bytes: &[u8],
    dialect: Dialect,
    block_override: Option<u32>,
) -> Result<Parsed, FieldError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ("record", Problem::InvalidUtf8))?;
    let value =
        parse_lenient(text).map_err(|e| ("record", Problem::InvalidJson(json_reason(&e))))?;
    let Value::Object(obj) = value else {
        let found = describe(&value);
        return Err((
            "record",
            Problem::WrongType {
                expected: "a JSON object",
                found,
            },
        ));
    };

    let time_ns = timestamp_ns(&obj, dialect.unit_ns)?;
    let input_tokens = required(&obj, "input_length", as_u32)?;
    let output_tokens = required(&obj, "output_length", as_u32)?;
    let mut record = TraceRecord::new(std::time::Duration::ZERO, input_tokens, output_tokens, 0);
    record.session = session(&obj)?;
    record.kind = optional(&obj, "type", as_string)?;

    let (prefix, hash_ids_mismatch) = prefix(&obj, dialect, block_override, input_tokens)?;
    record.prefix = prefix;
    Ok(Parsed {
        time_ns,
        record,
        hash_ids_mismatch,
    })
}

fn timestamp_ns(obj: &Map<String, Value>, unit_ns: f64) -> Result<i64, FieldError> {
    let value = obj
        .get("timestamp")
        .ok_or(("timestamp", Problem::Missing))?;
    let number = as_f64(value).map_err(|p| ("timestamp", p))?;
    seconds_like_to_ns(number, unit_ns).map_err(|p| ("timestamp", p))
}

/// Converts a finite, non-negative time in some unit to nanoseconds.
pub(crate) fn seconds_like_to_ns(value: f64, unit_ns: f64) -> Result<i64, Problem> {
    if !value.is_finite() {
        return Err(Problem::NotFinite(value.to_string()));
    }
    if value < 0.0 {
        return Err(Problem::Negative(value.to_string()));
    }
    let ns = (value * unit_ns).round();
    if ns >= i64::MAX as f64 {
        return Err(Problem::TooLarge(value.to_string()));
    }
    Ok(ns as i64)
}

fn session(obj: &Map<String, Value>) -> Result<Option<SessionLink>, FieldError> {
    let chat_id = optional(obj, "chat_id", as_i64)?;
    let parent = optional(obj, "parent_chat_id", as_i64)?;
    let turn = optional(obj, "turn", as_u32)?;
    match (chat_id, parent) {
        (None, None) => Ok(None),
        (Some(chat_id), Some(parent_chat_id)) => Ok(Some(SessionLink {
            chat_id,
            parent_chat_id,
            turn,
        })),
        (None, Some(_)) => Err(("chat_id", Problem::Missing)),
        (Some(_), None) => Err(("parent_chat_id", Problem::Missing)),
    }
}

fn prefix(
    obj: &Map<String, Value>,
    dialect: Dialect,
    block_override: Option<u32>,
    input_tokens: u32,
) -> Result<(Option<PrefixBlocks>, bool), FieldError> {
    let hash_ids = match obj.get("hash_ids") {
        None if dialect.hash_ids_required => return Err(("hash_ids", Problem::Missing)),
        None => return Ok((None, false)),
        Some(value) => as_hash_ids(value).map_err(|p| ("hash_ids", p))?,
    };
    let own_block = optional(obj, "block_size", as_block_size)?;
    let block_size = block_override
        .or(own_block)
        .unwrap_or(dialect.default_block);

    let expected = u64::from(input_tokens).div_ceil(u64::from(block_size));
    let mismatch = hash_ids.len() as u64 != expected;
    if mismatch && dialect.mismatch_is_error {
        let problem = Problem::HashIdsCount {
            found: hash_ids.len(),
            expected,
            input_tokens,
            block_size,
        };
        return Err(("hash_ids", problem));
    }
    Ok((
        Some(PrefixBlocks {
            hash_ids,
            block_size,
        }),
        mismatch,
    ))
}

fn required<T>(
    obj: &Map<String, Value>,
    field: &'static str,
    read: fn(&Value) -> Result<T, Problem>,
) -> Result<T, FieldError> {
    let value = obj.get(field).ok_or((field, Problem::Missing))?;
    read(value).map_err(|p| (field, p))
}

fn optional<T>(
    obj: &Map<String, Value>,
    field: &'static str,
    read: fn(&Value) -> Result<T, Problem>,
) -> Result<Option<T>, FieldError> {
    match obj.get(field) {
        None => Ok(None),
        Some(value) => read(value).map(Some).map_err(|p| (field, p)),
    }
}

/// A short description of a JSON value for messages.
fn describe(value: &Value) -> String {
    const SHOWN_CHARS: usize = 32;
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => match marker_name(s) {
            Some(name) => name.into(),
            None => format!(
                "string {:?}",
                s.chars().take(SHOWN_CHARS).collect::<String>()
            ),
        },
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// The bare token a marker string stands for.
fn marker_name(s: &str) -> Option<&'static str> {
    NON_FINITE_MARKERS
        .iter()
        .find(|(_, m)| *m == s)
        .map(|(bare, _)| *bare)
}

fn as_f64(value: &Value) -> Result<f64, Problem> {
    match value {
        Value::Number(n) => n.as_f64().ok_or_else(|| Problem::TooLarge(n.to_string())),
        Value::String(s) if marker_name(s).is_some() => Err(Problem::NotFinite(describe(value))),
        _ => Err(Problem::WrongType {
            expected: "a number",
            found: describe(value),
        }),
    }
}

fn as_i64(value: &Value) -> Result<i64, Problem> {
    match value {
        Value::Number(n) if n.is_i64() => {
            n.as_i64().ok_or_else(|| Problem::TooLarge(n.to_string()))
        }
        Value::Number(n) if n.is_u64() => Err(Problem::TooLarge(n.to_string())),
        _ => Err(not_an_integer(value, "an integer")),
    }
}

fn as_u32(value: &Value) -> Result<u32, Problem> {
    let Value::Number(n) = value else {
        return Err(not_an_integer(value, "a non-negative integer"));
    };
    if let Some(u) = n.as_u64() {
        return u32::try_from(u).map_err(|_| Problem::TooLarge(n.to_string()));
    }
    match n.as_f64() {
        Some(f) if f < 0.0 => Err(Problem::Negative(n.to_string())),
        _ => Err(not_an_integer(value, "a non-negative integer")),
    }
}

fn as_block_size(value: &Value) -> Result<u32, Problem> {
    match as_u32(value)? {
        0 => Err(Problem::WrongType {
            expected: "a positive integer",
            found: "0".into(),
        }),
        size => Ok(size),
    }
}

fn not_an_integer(value: &Value, expected: &'static str) -> Problem {
    match value {
        Value::String(s) if marker_name(s).is_some() => Problem::NotFinite(describe(value)),
        _ => Problem::WrongType {
            expected,
            found: describe(value),
        },
    }
}

fn as_string(value: &Value) -> Result<String, Problem> {
    match value {
        Value::String(s) if marker_name(s).is_none() => Ok(s.clone()),
        _ => Err(Problem::WrongType {
            expected: "a string",
            found: describe(value),
        }),
    }
}

fn as_hash_ids(value: &Value) -> Result<Vec<u64>, Problem> {
    let Value::Array(items) = value else {
        return Err(Problem::WrongType {
            expected: "a list of non-negative integers",
            found: describe(value),
        });
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.as_u64().ok_or_else(|| Problem::WrongType {
                expected: "a list of non-negative integers",
                found: format!("{} at index {i}", describe(item)),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mooncake(line: &str) -> Result<Parsed, FieldError> {
        parse_line(line.as_bytes(), dialect(TraceFormat::Mooncake), None)
    }

    #[test]
    fn non_finite_markers_name_the_field() {
        let err = mooncake(
            r#"{"timestamp": NaN, "input_length": 1, "output_length": 1, "hash_ids": [0]}"#,
        );
        let (field, problem) = err.expect_err("NaN accepted");
        assert_eq!(field, "timestamp");
        assert_eq!(problem.to_string(), "not a finite number (NaN)");
    }

    #[test]
    fn markers_inside_strings_are_left_alone() {
        let text = r#"{"type": "NaN \"Infinity\"", "timestamp": -Infinity}"#;
        let value = parse_lenient(text).expect("lenient parse failed");
        assert_eq!(value["type"], "NaN \"Infinity\"");
        assert_eq!(value["timestamp"], "\u{0}-Infinity");
    }

    #[test]
    fn mooncake_record_reads_every_field() {
        let parsed = mooncake(
            r#"{"timestamp": 1500, "input_length": 513, "output_length": 7, "hash_ids": [4, 5]}"#,
        );
        let parsed = parsed.expect("valid record rejected");
        assert_eq!(parsed.time_ns, 1_500_000_000);
        assert_eq!(parsed.record.input_tokens, 513);
        let prefix = parsed.record.prefix.expect("no prefix");
        assert_eq!(prefix.hash_ids, vec![4, 5]);
        assert_eq!(prefix.block_size, 512);
    }
}
