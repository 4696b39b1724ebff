//! Opening a trace file: gzip by magic bytes (not by name), and a line reader that strips
//! the UTF-8 BOM and CRLF endings and keeps 1-based line numbers.
//!
//! Lines are handed out as bytes; UTF-8 is checked by the record parser so that invalid
//! UTF-8 is one invalid record rather than a failed file. Read errors inside a gzip stream
//! become [`TraceError::Gzip`] naming the file.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use flate2::read::MultiGzDecoder;

use super::error::TraceError;

/// Read buffer size: large enough that the kernel is asked rarely.
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// The first two bytes of every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The UTF-8 byte order mark some Windows tools write at the start of a file.
const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

/// A trace file opened for reading, decompressed if it is gzip.
pub(crate) struct Source {
    /// The decompressed bytes.
    pub(crate) reader: Box<dyn BufRead>,
    /// Whether the file is gzip-compressed.
    pub(crate) gzip: bool,
}

/// Opens `path`, refusing directories, and unwraps gzip when the magic bytes say so.
pub(crate) fn open(path: &Path) -> Result<Source, TraceError> {
    let shown = path.display().to_string();
    let io_err = |source| TraceError::Io {
        path: shown.clone(),
        source,
    };
    if path.is_dir() {
        return Err(TraceError::IsDirectory { path: shown });
    }

    let mut file = BufReader::with_capacity(READ_BUFFER_BYTES, File::open(path).map_err(io_err)?);
    let gzip = file.fill_buf().map_err(io_err)?.starts_with(&GZIP_MAGIC);
    let reader: Box<dyn BufRead> = if gzip {
        let decoder = MultiGzDecoder::new(file);
        Box::new(BufReader::with_capacity(READ_BUFFER_BYTES, decoder))
    } else {
        Box::new(file)
    };
    Ok(Source { reader, gzip })
}

/// Maps a read error to the file-level error, naming gzip trouble as such.
pub(crate) fn read_error(path: &Path, gzip: bool, source: std::io::Error) -> TraceError {
    let path = path.display().to_string();
    if gzip {
        TraceError::Gzip { path, source }
    } else {
        TraceError::Io { path, source }
    }
}

/// Hands out a file's lines with their 1-based numbers.
pub(crate) struct Lines {
    reader: Box<dyn BufRead>,
    buf: Vec<u8>,
    line: u64,
}

impl Lines {
    /// Wraps an opened source.
    pub(crate) fn new(reader: Box<dyn BufRead>) -> Self {
        Self {
            reader,
            buf: Vec::new(),
            line: 0,
        }
    }

    /// The next line without its end (`\n` or `\r\n`) and, on line 1, without a BOM.
    pub(crate) fn next_line(&mut self) -> std::io::Result<Option<(u64, &[u8])>> {
        self.buf.clear();
        if self.reader.read_until(b'\n', &mut self.buf)? == 0 {
            return Ok(None);
        }
        self.line += 1;

        let mut text: &[u8] = &self.buf;
        if self.line == 1 {
            text = text.strip_prefix(UTF8_BOM).unwrap_or(text);
        }
        text = text.strip_suffix(b"\n").unwrap_or(text);
        text = text.strip_suffix(b"\r").unwrap_or(text);
        Ok(Some((self.line, text)))
    }
}

/// Reads the first non-blank line of `path` as text (lossy), for format detection.
///
/// Returns `Ok(None)` for a file with no non-blank line.
pub(crate) fn first_line(path: &Path) -> Result<Option<String>, TraceError> {
    let source = open(path)?;
    let gzip = source.gzip;
    let mut lines = Lines::new(source.reader);
    while let Some((_, bytes)) = lines.next_line().map_err(|e| read_error(path, gzip, e))? {
        if !bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Some(String::from_utf8_lossy(bytes).into_owned()));
        }
    }
    Ok(None)
}
