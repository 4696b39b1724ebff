//! When the simulator wrote each chunk: an optional in-memory list (read by tests and
//! benchmarks through `SimHandle`) and an optional JSONL file. Times are Unix-epoch
//! nanoseconds so another process (the client under test) can compare them with its own.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// What a logged moment was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkKind {
    /// The request's first bytes reached the simulator's socket: the kernel's receive
    /// stamp, before the simulator's event loop got to them (absent where the socket gives
    /// no stamps).
    Arrived,
    /// The request's head was read, before its body (the moment a client's upload of the
    /// body starts to count as the server's time).
    Head,
    /// The request arrived: its body read and the handler entered. The timing modes count
    /// from here.
    Received,
    /// The role-only first chat chunk was written.
    Role,
    /// A content chunk was written (`token_index` counts from 1).
    Token,
    /// The usage chunk was written.
    Usage,
    /// `data: [DONE]` was written (or the non-streaming body was returned).
    Done,
}

impl ChunkKind {
    /// The name written to the JSONL log.
    pub fn name(self) -> &'static str {
        match self {
            ChunkKind::Arrived => "arrived",
            ChunkKind::Head => "head",
            ChunkKind::Received => "received",
            ChunkKind::Role => "role",
            ChunkKind::Token => "token",
            ChunkKind::Usage => "usage",
            ChunkKind::Done => "done",
        }
    }
}

/// One logged moment of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRecord {
    /// The response id (`chatcmpl-7`).
    pub request_id: Arc<str>,
    /// The client's `x-request-id` header; `None` when absent.
    pub client_request_id: Option<Arc<str>>,
    /// What happened.
    pub kind: ChunkKind,
    /// Content tokens written so far, including this chunk.
    pub token_index: u32,
    /// When, in nanoseconds since the Unix epoch.
    pub unix_ns: u64,
}

impl ChunkRecord {
    /// The record as one JSON object (a JSONL line without the newline).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "request_id": &*self.request_id,
            "client_request_id": self.client_request_id.as_deref(),
            "event": self.kind.name(),
            "token_index": self.token_index,
            "unix_ns": self.unix_ns,
        })
    }
}

impl ChunkRecord {
    /// Writes [`ChunkRecord::to_json`]'s line without building a JSON value (this runs
    /// once per chunk, under a lock).
    fn write_line(&self, w: &mut impl Write) -> io::Result<()> {
        let client = match &self.client_request_id {
            Some(id) => serde_json::Value::from(&**id).to_string(),
            None => "null".to_owned(),
        };
        writeln!(
            w,
            r#"{{"request_id":{},"client_request_id":{client},"event":"{}","token_index":{},"unix_ns":{}}}"#,
            serde_json::Value::from(&*self.request_id),
            self.kind.name(),
            self.token_index,
            self.unix_ns
        )
    }
}

/// The sinks chunk records go to.
#[derive(Debug, Default)]
pub(crate) struct ChunkLog {
    memory: Option<Mutex<Vec<ChunkRecord>>>,
    file: Option<Mutex<BufWriter<File>>>,
}

impl ChunkLog {
    /// A log keeping records in memory if `memory`, and appending to `path` if given.
    pub(crate) fn open(memory: bool, path: Option<&Path>) -> io::Result<Option<ChunkLog>> {
        if !memory && path.is_none() {
            return Ok(None);
        }
        let file = match path {
            Some(p) => {
                // Appended to: an earlier run's log in the same file is kept.
                let file = OpenOptions::new().create(true).append(true).open(p)?;
                Some(Mutex::new(BufWriter::new(file)))
            }
            None => None,
        };
        Ok(Some(ChunkLog {
            memory: memory.then(Mutex::default),
            file,
        }))
    }

    /// Records `record` (stamped now by the caller).
    pub(crate) fn push(&self, record: ChunkRecord) {
        if let Some(file) = &self.file
            && let Ok(mut w) = file.lock()
        {
            let _ = record.write_line(&mut *w);
            // A finished request's lines reach the file now, for readers that do not wait
            // for the server to stop.
            if record.kind == ChunkKind::Done {
                let _ = w.flush();
            }
        }
        if let Some(memory) = &self.memory
            && let Ok(mut v) = memory.lock()
        {
            v.push(record);
        }
    }

    /// A copy of the in-memory records (empty when not kept).
    pub(crate) fn records(&self) -> Vec<ChunkRecord> {
        self.memory
            .as_ref()
            .and_then(|m| m.lock().ok().map(|v| v.clone()))
            .unwrap_or_default()
    }

    /// Flushes the file, if any.
    pub(crate) fn flush(&self) -> io::Result<()> {
        match &self.file {
            Some(file) => file.lock().map_or(Ok(()), |mut w| w.flush()),
            None => Ok(()),
        }
    }
}

/// Now, in nanoseconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_ns_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_line_equals_the_json_form() {
        let record = ChunkRecord {
            request_id: "cmpl-3".into(),
            client_request_id: Some("a\"b".into()),
            kind: ChunkKind::Token,
            token_index: 2,
            unix_ns: 1_700_000_000_000_000_000,
        };
        let mut line = Vec::new();
        record.write_line(&mut line).unwrap();
        let parsed: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(parsed, record.to_json());
        assert!(line.ends_with(b"}\n"));
    }
}
