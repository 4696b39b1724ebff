//! A Server-Sent Events reader as a state machine on bytes: bytes in, complete events out,
//! the incomplete remainder kept for the next read. No HTTP types here.
//!
//! Follows the WHATWG event-stream rules: LF, CR and CRLF line ends (a CRLF split across
//! two reads is still one line end); `:` comment lines ignored; `field: value` with or
//! without the space; several `data` lines joined with `\n`; a blank line dispatches.
//! Lines are decoded only once complete, so a UTF-8 character split across reads is kept
//! whole. Invariant: how the input is split into reads never changes the events produced.

/// Default bound on one event's size (its pending line plus its data), bytes: 64 MiB.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 64 * 1024 * 1024;

/// The UTF-8 byte order mark, stripped once at the start of a stream.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `message` when the event did not set one.
    pub event: String,
    /// The `data` lines joined with `\n`.
    pub data: String,
}

/// Errors of the event stream itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// An event grew past the configured bound.
    #[error("sse event exceeds the bound of {max_bytes} bytes (--max-event-bytes)")]
    EventTooLarge {
        /// The bound in force, bytes.
        max_bytes: usize,
    },
}

/// The incremental reader. Feed it reads with [`SseReader::feed`].
#[derive(Debug)]
pub struct SseReader {
    /// Bytes of the current, incomplete line.
    line: Vec<u8>,
    /// The previous read ended on CR: a leading LF of the next read belongs to it.
    after_cr: bool,
    /// Still looking for a BOM at the start of the stream.
    at_start: bool,
    /// `event:` of the event being built.
    event: Option<String>,
    /// `data` of the event being built, each line followed by `\n`.
    data: String,
    /// Whether any `data` line was seen for the event being built.
    has_data: bool,
    /// Bound on `line.len() + data.len()`, bytes.
    max_event_bytes: usize,
}

impl Default for SseReader {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_EVENT_BYTES)
    }
}

impl SseReader {
    /// A reader that fails on events larger than `max_event_bytes`.
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            line: Vec::new(),
            after_cr: false,
            at_start: true,
            event: None,
            data: String::new(),
            has_data: false,
            max_event_bytes,
        }
    }

    /// Consumes one read, appending every event it completes to `out`.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if self.at_start {
            bytes = self.strip_bom(bytes);
        }
        if self.after_cr && !bytes.is_empty() {
            self.after_cr = false;
            if bytes[0] == b'\n' {
                bytes = &bytes[1..];
            }
        }

        // Complete lines: everything up to each CR or LF.
        while let Some(end) = memchr::memchr2(b'\n', b'\r', bytes) {
            self.line.extend_from_slice(&bytes[..end]);
            self.check_size()?;
            self.end_line(out);
            let crlf = bytes[end] == b'\r' && bytes.get(end + 1) == Some(&b'\n');
            self.after_cr = bytes[end] == b'\r' && end + 1 == bytes.len();
            bytes = &bytes[end + if crlf { 2 } else { 1 }..];
        }

        self.line.extend_from_slice(bytes);
        self.check_size()
    }

    /// Bytes received but not part of a dispatched event (an event cut by the stream end).
    pub fn pending_bytes(&self) -> usize {
        self.line.len() + self.data.len()
    }

    /// Drops a BOM at the stream start, waiting for more bytes while it may be one.
    fn strip_bom<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        self.line.extend_from_slice(bytes);
        if self.line.len() < BOM.len() && BOM.starts_with(&self.line) {
            return &[];
        }
        self.at_start = false;
        let held = std::mem::take(&mut self.line);
        let held_before = held.len() - bytes.len();
        if held.starts_with(BOM) {
            // The BOM may span held bytes and this read; keep the rest of this read.
            let skip_in_bytes = BOM.len().saturating_sub(held_before);
            return &bytes[skip_in_bytes..];
        }
        // Not a BOM: the held bytes (at most two) were line content.
        self.line = held[..held_before].to_vec();
        bytes
    }

    fn check_size(&self) -> Result<(), SseError> {
        if self.line.len() + self.data.len() > self.max_event_bytes {
            return Err(SseError::EventTooLarge {
                max_bytes: self.max_event_bytes,
            });
        }
        Ok(())
    }

    /// Interprets the completed line held in `self.line`.
    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            self.dispatch(out);
        } else if line[0] != b':' {
            let text = String::from_utf8_lossy(&line);
            let (field, value) = match text.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (text.as_ref(), ""),
            };
            self.apply_field(field, value);
        }
        self.line = line;
        self.line.clear();
    }

    fn apply_field(&mut self, field: &str, value: &str) {
        match field {
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_string()),
            // `id` and `retry` matter to reconnecting browsers, not to one request.
            _ => {}
        }
    }

    /// A blank line: emits the event being built, if it has data.
    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = self.event.take();
        if !self.has_data {
            return;
        }
        self.has_data = false;
        // Copy out without the final `\n` and keep the buffer's capacity for the next event:
        // one allocation per event instead of an allocation and a regrowth.
        let data = self.data[..self.data.len() - 1].to_string();
        self.data.clear();
        out.push(SseEvent {
            event: event.unwrap_or_else(|| "message".to_string()),
            data,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_whole(input: &[u8]) -> Vec<SseEvent> {
        let mut reader = SseReader::default();
        let mut out = Vec::new();
        reader.feed(input, &mut out).ok();
        out
    }

    fn parse_split(input: &[u8], cuts: &[usize]) -> Vec<SseEvent> {
        let mut reader = SseReader::default();
        let mut out = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            let cut = cut.clamp(start, input.len());
            reader.feed(&input[start..cut], &mut out).ok();
            start = cut;
        }
        out
    }

    fn data(text: &str) -> SseEvent {
        SseEvent {
            event: "message".into(),
            data: text.into(),
        }
    }

    #[test]
    fn line_ends_lf_cr_crlf_are_equivalent() {
        for eol in ["\n", "\r", "\r\n"] {
            let input = format!("data: a{eol}{eol}data:b{eol}{eol}");
            assert_eq!(
                parse_whole(input.as_bytes()),
                vec![data("a"), data("b")],
                "{eol:?}"
            );
        }
    }

    #[test]
    fn comments_ignored_and_data_lines_joined() {
        let input = b": keep-alive\n\ndata: one\ndata:two\n: note\ndata\n\n";
        assert_eq!(parse_whole(input), vec![data("one\ntwo\n")]);
    }

    #[test]
    fn event_type_is_kept_and_reset() {
        let input = b"event: error\ndata: {}\n\ndata: x\n\n";
        let events = parse_whole(input);
        assert_eq!(events[0].event, "error");
        assert_eq!(events[1], data("x"));
    }

    #[test]
    fn only_one_space_after_colon_is_stripped() {
        assert_eq!(parse_whole(b"data:  two\n\n"), vec![data(" two")]);
    }

    #[test]
    fn incomplete_event_is_not_dispatched() {
        let mut reader = SseReader::default();
        let mut out = Vec::new();
        reader.feed(b"data: a\n\ndata: b", &mut out).ok();
        assert_eq!(out, vec![data("a")]);
        assert_eq!(reader.pending_bytes(), 7);
    }

    #[test]
    fn crlf_split_between_reads_is_one_line_end() {
        let events = parse_split(b"data: a\r\n\r\ndata: b\r\n\r\n", &[8, 10]);
        assert_eq!(events, vec![data("a"), data("b")]);
    }

    #[test]
    fn utf8_split_across_reads_is_kept_whole() {
        let input = "data: héllo 日本\n\n".as_bytes();
        for cut in 0..input.len() {
            assert_eq!(
                parse_split(input, &[cut]),
                vec![data("héllo 日本")],
                "cut {cut}"
            );
        }
    }

    #[test]
    fn bom_at_start_is_stripped_even_when_split() {
        let input = b"\xEF\xBB\xBFdata: a\n\n";
        for cut in 0..input.len() {
            assert_eq!(parse_split(input, &[cut]), vec![data("a")], "cut {cut}");
        }
        assert_eq!(
            parse_whole(b"\xEFdata: a\n\n").len(),
            0,
            "a lone 0xEF is line content"
        );
    }

    #[test]
    fn oversized_event_fails_naming_the_bound() {
        let mut reader = SseReader::new(16);
        let mut out = Vec::new();
        let err = reader.feed(b"data: 0123456789abcdefXYZ", &mut out);
        assert_eq!(err, Err(SseError::EventTooLarge { max_bytes: 16 }));
        let text = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("16 bytes"), "{text}");
    }

    #[test]
    fn multi_line_data_counts_towards_the_bound() {
        let mut reader = SseReader::new(16);
        let mut out = Vec::new();
        assert!(reader.feed(b"data: 0123456789\n", &mut out).is_ok());
        assert!(reader.feed(b"data: 0123456789\n", &mut out).is_err());
    }

    /// A valid stream: events built from arbitrary fields, values and line ends.
    fn stream_strategy() -> impl Strategy<Value = Vec<u8>> {
        let value = "[a-zé日 :{}\\[\\]\"]{0,12}";
        let line = prop_oneof![
            value.prop_map(|v| format!("data: {v}")),
            value.prop_map(|v| format!("data:{v}")),
            value.prop_map(|v| format!(": {v}")),
            "[a-z]{1,6}".prop_map(|v| format!("event: {v}")),
            Just(String::new()),
        ];
        let eol = prop_oneof![Just("\n"), Just("\r"), Just("\r\n")];
        proptest::collection::vec((line, eol), 0..24).prop_map(|lines| {
            let mut bytes = Vec::new();
            for (line, eol) in lines {
                bytes.extend_from_slice(line.as_bytes());
                bytes.extend_from_slice(eol.as_bytes());
            }
            bytes
        })
    }

    proptest! {
        #[test]
        fn any_split_gives_identical_events(
            input in stream_strategy(),
            mut cuts in proptest::collection::vec(0usize..400, 0..6),
        ) {
            cuts.sort_unstable();
            prop_assert_eq!(parse_split(&input, &cuts), parse_whole(&input));
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            input in proptest::collection::vec(any::<u8>(), 0..512),
            cut in 0usize..512,
        ) {
            let _ = parse_split(&input, &[cut]);
        }
    }
}
