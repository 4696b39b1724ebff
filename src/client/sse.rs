//! A Server-Sent Events reader as a state machine on bytes: bytes in, complete events out,
//! the incomplete remainder kept for the next read. No HTTP types here.
//!
//! Follows the WHATWG event-stream rules: LF, CR and CRLF line ends (a CRLF split across
//! two reads is still one line end); `:` comment lines ignored; `field: value` with or
//! without the space; several `data` lines joined with `\n`; a blank line dispatches.
//! Lines are decoded only once complete, so a UTF-8 character split across reads is kept
//! whole. Invariant: how the input is split into reads never changes the events produced.

use std::borrow::Cow;

/// Default bound on one event's size (its pending line plus its data), bytes: 64 MiB.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 64 * 1024 * 1024;

/// The UTF-8 byte order mark, stripped once at the start of a stream.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One dispatched event, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `message` when the event did not set one.
    pub event: String,
    /// The `data` lines joined with `\n`.
    pub data: String,
}

/// One dispatched event, borrowed from the reader for the time of a callback: the hot path
/// reads events without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRef<'a> {
    /// The `event:` field; `message` when the event did not set one.
    pub event: &'a str,
    /// The `data` lines joined with `\n`.
    pub data: &'a str,
}

impl EventRef<'_> {
    /// The event as owned strings.
    pub fn to_event(self) -> SseEvent {
        SseEvent {
            event: self.event.to_string(),
            data: self.data.to_string(),
        }
    }
}

impl SseEvent {
    /// The event borrowed.
    pub fn borrowed(&self) -> EventRef<'_> {
        EventRef {
            event: &self.event,
            data: &self.data,
        }
    }
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

/// The incremental reader. Feed it reads with [`SseReader::feed`] or, without an allocation
/// per event, [`SseReader::feed_each`].
///
/// Lines and fields are kept as raw bytes and decoded (lossy UTF-8) once per event: line
/// ends and `:` are ASCII, so decoding the joined bytes gives the same text as decoding each
/// line. Sizes count raw bytes.
#[derive(Debug)]
pub struct SseReader {
    /// Bytes of the current, incomplete line (empty while lines are read in place).
    line: Vec<u8>,
    /// The previous read ended on CR: a leading LF of the next read belongs to it.
    after_cr: bool,
    /// Still looking for a BOM at the start of the stream.
    at_start: bool,
    /// `event:` of the event being built, when `has_event`.
    event: Vec<u8>,
    /// Whether an `event:` line was seen for the event being built.
    has_event: bool,
    /// `data` of the event being built, each line followed by `\n`.
    data: Vec<u8>,
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
            event: Vec::new(),
            has_event: false,
            data: Vec::new(),
            has_data: false,
            max_event_bytes,
        }
    }

    /// Consumes one read, appending every event it completes to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        self.feed_each(bytes, |event| out.push(event.to_event()))
    }

    /// Consumes one read, calling `on_event` with every event it completes, in order. On an
    /// error the events completed before it have been passed on.
    pub fn feed_each(
        &mut self,
        mut bytes: &[u8],
        mut on_event: impl FnMut(EventRef<'_>),
    ) -> Result<(), SseError> {
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
            let rest = &bytes[end + line_end_len(bytes, end)..];
            if let Some(after) = self.one_line_event(&bytes[..end], rest, &mut on_event)? {
                bytes = after;
                continue;
            }
            self.complete_line(&bytes[..end], &mut on_event)?;
            self.after_cr = bytes[end] == b'\r' && end + 1 == bytes.len();
            bytes = rest;
        }

        self.line.extend_from_slice(bytes);
        self.check_size(0)
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

    /// The common event, one `data` line and a blank line both inside this read with nothing
    /// pending, passed on straight from the read's bytes (no copy). Gives the bytes after
    /// it, or `None` when the line is not such an event.
    fn one_line_event<'b>(
        &mut self,
        line: &[u8],
        rest: &'b [u8],
        on_event: &mut impl FnMut(EventRef<'_>),
    ) -> Result<Option<&'b [u8]>, SseError> {
        if !self.line.is_empty() || self.has_data {
            return Ok(None);
        }
        let blank = match rest {
            [b'\r', b'\n', ..] => 2,
            [b'\n' | b'\r', ..] => 1,
            _ => return Ok(None),
        };
        let Some(value) = line.strip_prefix(b"data").and_then(data_value) else {
            return Ok(None);
        };

        self.check_size(line.len())?;
        let has_event = std::mem::take(&mut self.has_event);
        emit(has_event.then_some(&self.event[..]), value, on_event);
        self.event.clear();
        self.after_cr = rest[0] == b'\r' && rest.len() == 1;
        Ok(Some(&rest[blank..]))
    }

    /// Fails when the pending line, `extra_bytes` more of it and the data exceed the bound.
    fn check_size(&self, extra_bytes: usize) -> Result<(), SseError> {
        if self.line.len() + extra_bytes + self.data.len() > self.max_event_bytes {
            return Err(SseError::EventTooLarge {
                max_bytes: self.max_event_bytes,
            });
        }
        Ok(())
    }

    /// A line end after `tail`: the line is `tail` itself when nothing is pending (no copy),
    /// else the pending bytes followed by `tail`.
    fn complete_line(
        &mut self,
        tail: &[u8],
        on_event: &mut impl FnMut(EventRef<'_>),
    ) -> Result<(), SseError> {
        self.check_size(tail.len())?;
        if self.line.is_empty() {
            self.end_line(tail, on_event);
            return Ok(());
        }

        let mut line = std::mem::take(&mut self.line);
        line.extend_from_slice(tail);
        self.end_line(&line, on_event);
        line.clear();
        self.line = line;
        Ok(())
    }

    /// Interprets one complete line.
    fn end_line(&mut self, line: &[u8], on_event: &mut impl FnMut(EventRef<'_>)) {
        if line.is_empty() {
            self.dispatch(on_event);
            return;
        }
        if line[0] == b':' {
            return;
        }

        let (field, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        self.apply_field(field, value);
    }

    fn apply_field(&mut self, field: &[u8], value: &[u8]) {
        match field {
            b"data" => {
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
                self.has_data = true;
            }
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(value);
                self.has_event = true;
            }
            // `id` and `retry` matter to reconnecting browsers, not to one request.
            _ => {}
        }
    }

    /// A blank line: passes on the event being built, if it has data, and resets it.
    fn dispatch(&mut self, on_event: &mut impl FnMut(EventRef<'_>)) {
        let has_event = std::mem::take(&mut self.has_event);
        if std::mem::take(&mut self.has_data) {
            // Without the final `\n`.
            let data = &self.data[..self.data.len() - 1];
            emit(has_event.then_some(&self.event[..]), data, on_event);
        }
        self.data.clear();
        self.event.clear();
    }
}

/// The length of the line end at `bytes[end]`: 2 for CRLF, else 1.
fn line_end_len(bytes: &[u8], end: usize) -> usize {
    match bytes[end..] {
        [b'\r', b'\n', ..] => 2,
        _ => 1,
    }
}

/// The value of a line after its field name `data`: `None` when the name goes on.
fn data_value(after_name: &[u8]) -> Option<&[u8]> {
    match after_name {
        [] => Some(after_name),
        [b':', b' ', value @ ..] | [b':', value @ ..] => Some(value),
        _ => None,
    }
}

/// Passes on one event: its type (`message` when `None`) and data, decoded.
fn emit(event: Option<&[u8]>, data: &[u8], on_event: &mut impl FnMut(EventRef<'_>)) {
    let data = lossy_utf8(data);
    let event = match event {
        Some(event) => lossy_utf8(event),
        None => Cow::Borrowed("message"),
    };
    on_event(EventRef {
        event: &event,
        data: &data,
    });
}

/// The text of `bytes`, invalid UTF-8 replaced: borrowed when valid. `str::from_utf8`
/// checks ASCII a word at a time, `String::from_utf8_lossy` a byte at a time.
fn lossy_utf8(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
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
    fn crlf_ending_a_read_then_a_blank_line_dispatches() {
        let input = b"data: a\r\n\ndata: b\r\n\r\n";
        for cut in 0..input.len() {
            let events = parse_split(input, &[cut]);
            assert_eq!(events, vec![data("a"), data("b")], "cut {cut}");
        }
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

    /// The event-stream rules written plainly over the whole input, one line decoded at a
    /// time: the reference the incremental reader is checked against.
    fn reference(input: &[u8]) -> Vec<SseEvent> {
        let mut rest = input.strip_prefix(BOM).unwrap_or(input);
        let (mut events, mut event, mut data) = (Vec::new(), None, None::<String>);
        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            let line = String::from_utf8_lossy(&rest[..end]).into_owned();
            let crlf = rest[end] == b'\r' && rest.get(end + 1) == Some(&b'\n');
            rest = &rest[end + if crlf { 2 } else { 1 }..];
            if line.is_empty() {
                let name: Option<String> = event.take();
                if let Some(data) = data.take() {
                    let event = name.unwrap_or_else(|| "message".to_string());
                    events.push(SseEvent { event, data });
                }
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (line.as_str(), ""),
            };
            match field {
                "data" => match data.as_mut() {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => data = Some(value.to_string()),
                },
                "event" => event = Some(value.to_string()),
                _ => {}
            }
        }
        events
    }

    #[test]
    fn invalid_utf8_is_replaced_as_when_decoding_each_line() {
        let input = b"data: a\xff\ndata: \xe6\x97\n\xa5b\n\n";
        let events = parse_whole(input);
        assert_eq!(events, vec![data("a\u{fffd}\n\u{fffd}")]);
        assert_eq!(events, reference(input));
    }

    proptest! {
        #[test]
        fn any_split_gives_the_reference_events(
            input in stream_strategy(),
            bom in any::<bool>(),
            mut cuts in proptest::collection::vec(0usize..400, 0..6),
        ) {
            let input = if bom { [BOM, input.as_slice()].concat() } else { input };
            cuts.sort_unstable();
            prop_assert_eq!(parse_split(&input, &cuts), reference(&input));
        }

        #[test]
        fn arbitrary_bytes_give_the_reference_events(
            input in proptest::collection::vec(
                prop_oneof![any::<u8>(), Just(b'\n'), Just(b':'), Just(b'd')], 0..256),
            cut in 0usize..256,
        ) {
            prop_assert_eq!(parse_split(&input, &[cut]), reference(&input));
        }
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
