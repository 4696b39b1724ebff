//! CSV readers: Azure LLM inference traces (absolute `TIMESTAMP` text) and BurstGPT
//! (seconds; `Response tokens` 0 marks a failed request, dropped unless `--keep-failed`).
//!
//! Columns are found by header name, so column order and extra columns do not matter. Each
//! row is read as bytes; only the fields used are checked for UTF-8.

use std::time::Duration;

use chrono::NaiveDateTime;
use csv::ByteRecord;

use super::error::{Problem, RecordError, TraceError};
use super::format::TraceFormat;
use super::json::{Parsed, seconds_like_to_ns};
use super::load::Collector;
use super::record::TraceRecord;
use super::source::{self, Source};

/// Where the three columns we read sit in a row.
struct Columns {
    timestamp: usize,
    input: usize,
    output: usize,
    names: [&'static str; 3],
}

/// Reads every row of a CSV `source` into `out`.
pub(crate) fn read(
    source: Source,
    format: TraceFormat,
    out: &mut Collector,
) -> Result<(), TraceError> {
    let gzip = source.gzip;
    // Rows end at `\n` only: csv's own CRLF handling counts a row's line before its `\n`,
    // so every row after a CRLF would be named one line early. A `\r` left at the end of a
    // row's last field is trimmed with the field.
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_reader(source.reader);
    let mut row = ByteRecord::new();
    let read_row = |reader: &mut csv::Reader<_>, row: &mut ByteRecord, out: &Collector| {
        reader
            .read_byte_record(row)
            .map_err(|e| csv_error(out, gzip, e))
    };

    if !read_row(&mut reader, &mut row, out)? {
        return Ok(());
    }
    let columns = columns(&row, format, out)?;
    while read_row(&mut reader, &mut row, out)? {
        let line = row.position().map_or(0, |p| p.line());
        if row.iter().all(|f| f.iter().all(u8::is_ascii_whitespace)) {
            continue;
        }
        match parse_row(&row, &columns, format) {
            Ok(parsed) if is_failed(&parsed, format) && !out.keep_failed() => {
                out.count_failed_dropped()
            }
            Ok(parsed) => out.accept(line, parsed)?,
            Err((field, problem)) => out.reject(line, field, problem)?,
        }
    }
    Ok(())
}

fn is_failed(parsed: &Parsed, format: TraceFormat) -> bool {
    format == TraceFormat::Burstgpt && parsed.record.output_tokens == 0
}

fn csv_error(out: &Collector, gzip: bool, err: csv::Error) -> TraceError {
    let path = out.path();
    match err.into_kind() {
        csv::ErrorKind::Io(e) => source::read_error(path, gzip, e),
        other => TraceError::Io {
            path: path.display().to_string(),
            source: std::io::Error::other(format!("{other:?}")),
        },
    }
}

/// Finds the columns we read in the header row.
fn columns(
    header: &ByteRecord,
    format: TraceFormat,
    out: &Collector,
) -> Result<Columns, TraceError> {
    let names = match format {
        TraceFormat::Azure => ["TIMESTAMP", "ContextTokens", "GeneratedTokens"],
        _ => ["Timestamp", "Request tokens", "Response tokens"],
    };
    let find = |name: &'static str| {
        header
            .iter()
            .position(|h| trim_bom(h).trim_ascii() == name.as_bytes())
            .ok_or_else(|| RecordError {
                file: out.path().display().to_string(),
                line: 1,
                field: name.to_string(),
                problem: Problem::Missing,
            })
    };
    Ok(Columns {
        timestamp: find(names[0])?,
        input: find(names[1])?,
        output: find(names[2])?,
        names,
    })
}

fn trim_bom(field: &[u8]) -> &[u8] {
    field.strip_prefix(b"\xef\xbb\xbf").unwrap_or(field)
}

type FieldError = (&'static str, Problem);

fn parse_row(row: &ByteRecord, cols: &Columns, format: TraceFormat) -> Result<Parsed, FieldError> {
    let [ts_name, in_name, out_name] = cols.names;
    let ts_text = field(row, cols.timestamp, ts_name)?;
    let time_ns = match format {
        TraceFormat::Azure => absolute_ns(ts_text),
        _ => seconds_ns(ts_text),
    }
    .map_err(|p| (ts_name, p))?;
    let input = tokens(field(row, cols.input, in_name)?).map_err(|p| (in_name, p))?;
    let output = tokens(field(row, cols.output, out_name)?).map_err(|p| (out_name, p))?;

    Ok(Parsed {
        time_ns,
        record: TraceRecord::new(Duration::ZERO, input, output, 0),
        hash_ids_mismatch: false,
    })
}

/// One field as trimmed text; missing or empty is [`Problem::Missing`].
fn field<'r>(row: &'r ByteRecord, index: usize, name: &'static str) -> Result<&'r str, FieldError> {
    let bytes = row.get(index).ok_or((name, Problem::Missing))?;
    let text = std::str::from_utf8(bytes)
        .map_err(|_| (name, Problem::InvalidUtf8))?
        .trim();
    if text.is_empty() {
        return Err((name, Problem::Missing));
    }
    Ok(text)
}

fn seconds_ns(text: &str) -> Result<i64, Problem> {
    let value: f64 = text.parse().map_err(|_| Problem::WrongType {
        expected: "a number of seconds",
        found: quoted(text),
    })?;
    seconds_like_to_ns(value, 1e9)
}

/// `YYYY-MM-DD HH:MM:SS[.f…]` (up to 9 fractional digits) as nanoseconds since the epoch.
fn absolute_ns(text: &str) -> Result<i64, Problem> {
    let wrong = || Problem::WrongType {
        expected: "a time like 2023-11-16 18:15:46.6805900",
        found: quoted(text),
    };
    let time = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").map_err(|_| wrong())?;
    let ns = time.and_utc().timestamp_nanos_opt().ok_or_else(wrong)?;
    if ns < 0 {
        return Err(Problem::Negative(quoted(text)));
    }
    Ok(ns)
}

/// A token count: a non-negative integer (`12.0` is accepted, `12.5` is not).
fn tokens(text: &str) -> Result<u32, Problem> {
    if let Ok(n) = text.parse::<u64>() {
        return u32::try_from(n).map_err(|_| Problem::TooLarge(text.to_string()));
    }
    let wrong = || Problem::WrongType {
        expected: "a non-negative integer",
        found: quoted(text),
    };
    match text.parse::<f64>() {
        Ok(f) if !f.is_finite() => Err(Problem::NotFinite(text.to_string())),
        Ok(f) if f < 0.0 => Err(Problem::Negative(text.to_string())),
        Ok(f) if f.fract() == 0.0 && f <= f64::from(u32::MAX) => Ok(f as u32),
        _ => Err(wrong()),
    }
}

fn quoted(text: &str) -> String {
    const SHOWN_CHARS: usize = 32;
    format!("{:?}", text.chars().take(SHOWN_CHARS).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_time_keeps_seven_digits() {
        let a = absolute_ns("2023-11-16 18:15:46.6805900").expect("valid");
        let b = absolute_ns("2023-11-16 18:15:46.6805901").expect("valid");
        assert_eq!(b - a, 100);
        assert!(absolute_ns("2023-11-16 18:15:46").is_ok());
    }

    #[test]
    fn token_counts_reject_fractions_and_negatives() {
        assert_eq!(tokens("12"), Ok(12));
        assert_eq!(tokens("12.0"), Ok(12));
        assert_eq!(tokens("-3"), Err(Problem::Negative("-3".into())));
        assert!(matches!(tokens("1.5"), Err(Problem::WrongType { .. })));
    }
}
