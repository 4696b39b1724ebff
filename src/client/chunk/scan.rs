//! The fast path of [`super::interpret`]: one pass over a chunk's JSON that reads only what
//! the timing needs and validates everything else as strictly as serde_json does.
//!
//! It answers `None` for anything it does not fully understand (a non-null `error`, several
//! choices, a repeated or escaped key where it reads keys, a lone surrogate, deep nesting, a
//! value of an unexpected type, any syntax error) and the caller then runs the serde path.
//! Invariant: an answer from here is the one the serde path would give.

use std::borrow::Cow;

use super::{PromptTokensDetails, Usage};

/// What the fast path read from one chunk.
#[derive(Debug, Default)]
pub(super) struct Scanned<'a> {
    /// The texts of the one choice, in the order the serde path appends them: `text`, then
    /// the delta's `content`, `reasoning_content` and `reasoning`.
    pub(super) texts: [Option<Cow<'a, str>>; 4],
    /// Whether the delta has a non-empty `tool_calls` array.
    pub(super) tool_calls: bool,
    /// Whether the choice has a non-null `finish_reason`.
    pub(super) finished: bool,
    /// The `usage` object, when the chunk has a non-null one.
    pub(super) usage: Option<Usage>,
    /// Where the last text string read lies in the data, bytes (from its opening quote to
    /// after its closing one).
    pub(super) text_span: Option<(usize, usize)>,
    /// How many of `texts` are strings.
    pub(super) text_count: usize,
}

impl<'a> Scanned<'a> {
    /// Reads a text member's value (string or `null`) into `slot`.
    fn read_text(&mut self, c: &mut Cursor<'a>, slot: usize) -> Option<()> {
        let start = c.pos;
        self.texts[slot] = c.null_or(Cursor::string)?;
        if self.texts[slot].is_some() {
            self.text_span = Some((start, c.pos));
            self.text_count += 1;
        }
        Some(())
    }
}

/// `data` when it is exactly one JSON string: its text, or `None`.
pub(super) fn whole_string(data: &str) -> Option<Cow<'_, str>> {
    let mut cursor = Cursor {
        text: data,
        bytes: data.as_bytes(),
        pos: 0,
    };
    let text = cursor.string()?;
    (cursor.pos == data.len()).then_some(text)
}

/// Deepest nesting followed inside skipped values; deeper falls back (serde's limit: 128).
const MAX_SKIP_DEPTH: usize = 32;

/// Bytes that end a run of plain string content: `"`, `\` and control characters.
const STRING_STOP: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = true;
        byte += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// `0x01` in every byte of a word.
const ONES: u64 = u64::from_le_bytes([1; 8]);

/// `0x80` in every byte of a word.
const HIGHS: u64 = ONES * 0x80;

/// The high bit of each byte of `word` (little-endian) that is `"`, `\` or a control
/// character. Exact up to the lowest such byte; bits above it may be spurious (borrows),
/// which is all [`Cursor::find_string_stop`] needs.
fn string_stops(word: u64) -> u64 {
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let quote = zero(word ^ (ONES * u64::from(b'"')));
    let backslash = zero(word ^ (ONES * u64::from(b'\\')));
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    quote | backslash | control
}

/// Reads `data`, or `None` when the serde path must decide.
pub(super) fn scan(data: &str) -> Option<Scanned<'_>> {
    let mut cursor = Cursor {
        text: data,
        bytes: data.as_bytes(),
        pos: 0,
    };
    let mut scanned = Scanned::default();
    let mut seen = Seen::default();

    cursor.ws();
    cursor.object(|c, key| top_member(c, key, &mut scanned, &mut seen))?;
    cursor.ws();
    (cursor.pos == cursor.bytes.len()).then_some(scanned)
}

/// A member key: plain bytes, or one with escapes (never interpreted here).
#[derive(Debug, Clone, Copy)]
enum Key<'a> {
    Plain(&'a [u8]),
    Escaped,
}

/// Keys already read in one object: serde rejects a repeated field.
#[derive(Debug, Default)]
struct Seen(u8);

impl Seen {
    /// `Some` the first time `bit` is marked.
    fn once(&mut self, bit: u8) -> Option<()> {
        if self.0 & bit != 0 {
            return None;
        }
        self.0 |= bit;
        Some(())
    }
}

fn top_member<'a>(
    c: &mut Cursor<'a>,
    key: Key<'a>,
    scanned: &mut Scanned<'a>,
    seen: &mut Seen,
) -> Option<()> {
    match key {
        Key::Plain(b"choices") => {
            seen.once(1)?;
            c.array(|c, index| match index {
                0 => choice(c, scanned),
                _ => None,
            })
            .map(|_| ())
        }
        Key::Plain(b"usage") => {
            seen.once(2)?;
            scanned.usage = c.null_or(usage)?;
            Some(())
        }
        // A non-null error is the serde path's to read.
        Key::Plain(b"error") => {
            seen.once(4)?;
            c.literal(b"null")
        }
        Key::Escaped => None,
        Key::Plain(_) => c.skip_value(0),
    }
}

fn choice<'a>(c: &mut Cursor<'a>, scanned: &mut Scanned<'a>) -> Option<()> {
    let mut seen = Seen::default();
    c.object(|c, key| match key {
        Key::Plain(b"delta") => {
            seen.once(1)?;
            c.null_or(|c| delta(c, scanned)).map(|_| ())
        }
        Key::Plain(b"text") => {
            seen.once(2)?;
            scanned.read_text(c, 0)
        }
        Key::Plain(b"finish_reason") => {
            seen.once(4)?;
            scanned.finished = c.null_or(|c| c.skip_value(0))?.is_some();
            Some(())
        }
        Key::Escaped => None,
        Key::Plain(_) => c.skip_value(0),
    })
}

fn delta<'a>(c: &mut Cursor<'a>, scanned: &mut Scanned<'a>) -> Option<()> {
    let mut seen = Seen::default();
    c.object(|c, key| {
        let slot = match key {
            Key::Plain(b"content") => 1,
            Key::Plain(b"reasoning_content") => 2,
            Key::Plain(b"reasoning") => 3,
            Key::Plain(b"tool_calls") => {
                seen.once(1)?;
                let calls = c.null_or(|c| c.array(|c, _| c.skip_value(1)))?;
                scanned.tool_calls = calls.is_some_and(|n| n > 0);
                return Some(());
            }
            Key::Escaped => return None,
            Key::Plain(_) => return c.skip_value(0),
        };
        seen.once(1 << slot)?;
        scanned.read_text(c, slot)
    })
}

fn usage(c: &mut Cursor<'_>) -> Option<Usage> {
    let mut usage = Usage::default();
    let mut seen = Seen::default();
    c.object(|c, key| match key {
        Key::Plain(b"prompt_tokens") => {
            seen.once(1)?;
            usage.prompt_tokens = c.null_or(Cursor::u32)?;
            Some(())
        }
        Key::Plain(b"completion_tokens") => {
            seen.once(2)?;
            usage.completion_tokens = c.null_or(Cursor::u32)?;
            Some(())
        }
        Key::Plain(b"prompt_tokens_details") => {
            seen.once(4)?;
            usage.prompt_tokens_details = c.null_or(details)?;
            Some(())
        }
        Key::Escaped => None,
        Key::Plain(_) => c.skip_value(0),
    })?;
    Some(usage)
}

fn details(c: &mut Cursor<'_>) -> Option<PromptTokensDetails> {
    let mut details = PromptTokensDetails::default();
    let mut seen = Seen::default();
    c.object(|c, key| match key {
        Key::Plain(b"cached_tokens") => {
            seen.once(1)?;
            details.cached_tokens = c.null_or(Cursor::u32)?;
            Some(())
        }
        Key::Escaped => None,
        Key::Plain(_) => c.skip_value(0),
    })?;
    Some(details)
}

/// A position in the chunk's text. Every method reads one JSON token or value starting
/// exactly at the position (no leading whitespace) and answers `None` where serde_json
/// would fail or where the fast path gives up.
struct Cursor<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.pos += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        self.pos += usize::from(found);
        found
    }

    /// Skips JSON whitespace.
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.pos + word.len();
        (self.bytes.get(self.pos..end)? == word).then(|| self.pos = end)
    }

    /// `None` for `null`, else what `read` gives.
    fn null_or<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.peek()? == b'n' {
            return self.literal(b"null").map(|()| None);
        }
        read(self).map(Some)
    }

    /// An object, calling `member` at each member's value.
    fn object(&mut self, mut member: impl FnMut(&mut Self, Key<'a>) -> Option<()>) -> Option<()> {
        self.expect(b'{')?;
        self.ws();
        if self.eat(b'}') {
            return Some(());
        }
        loop {
            let key = self.key()?;
            self.ws();
            self.expect(b':')?;
            self.ws();
            member(self, key)?;
            self.ws();
            match self.next()? {
                b',' => self.ws(),
                b'}' => return Some(()),
                _ => return None,
            }
        }
    }

    /// An array, calling `element` with each element's index; gives the length.
    fn array(&mut self, mut element: impl FnMut(&mut Self, usize) -> Option<()>) -> Option<usize> {
        self.expect(b'[')?;
        self.ws();
        if self.eat(b']') {
            return Some(0);
        }
        let mut index = 0;
        loop {
            element(self, index)?;
            index += 1;
            self.ws();
            match self.next()? {
                b',' => self.ws(),
                b']' => return Some(index),
                _ => return None,
            }
        }
    }

    fn key(&mut self) -> Option<Key<'a>> {
        let start = self.pos;
        self.expect(b'"')?;
        match self.find_string_stop()? {
            b'"' => {
                let key = &self.bytes[start + 1..self.pos];
                self.pos += 1;
                Some(Key::Plain(key))
            }
            b'\\' => {
                self.pos = start;
                self.skip_string().map(|()| Key::Escaped)
            }
            _ => None,
        }
    }

    /// Moves to the next `"`, `\` or control character; `None` at the end of the text.
    fn find_string_stop(&mut self) -> Option<u8> {
        // Eight bytes at a time while none of them stops the string, then byte by byte.
        while let Some(word) = self
            .bytes
            .get(self.pos..)
            .and_then(<[u8]>::first_chunk::<8>)
        {
            let stops = string_stops(u64::from_le_bytes(*word));
            if stops != 0 {
                self.pos += stops.trailing_zeros() as usize / 8;
                return self.peek();
            }
            self.pos += 8;
        }
        while let Some(&byte) = self.bytes.get(self.pos) {
            if STRING_STOP[usize::from(byte)] {
                return Some(byte);
            }
            self.pos += 1;
        }
        None
    }

    /// A string, borrowed when it has no escapes.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.expect(b'"')?;
        let start = self.pos;
        match self.find_string_stop()? {
            b'"' => {
                let text = &self.text[start..self.pos];
                self.pos += 1;
                Some(Cow::Borrowed(text))
            }
            b'\\' => {
                self.pos = start;
                self.escaped_string().map(Cow::Owned)
            }
            _ => None,
        }
    }

    /// The rest of a string that has escapes, decoded.
    fn escaped_string(&mut self) -> Option<String> {
        let mut out = String::new();
        loop {
            let start = self.pos;
            let stop = self.find_string_stop()?;
            out.push_str(&self.text[start..self.pos]);
            self.pos += 1;
            match stop {
                b'"' => return Some(out),
                b'\\' => out.push(self.escape()?),
                _ => return None,
            }
        }
    }

    /// The character of the escape after a backslash.
    fn escape(&mut self) -> Option<char> {
        let decoded = match self.next()? {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => return self.unicode_escape(),
            _ => return None,
        };
        Some(decoded)
    }

    /// `\uXXXX`, or a surrogate pair of two; a lone surrogate is left to serde.
    fn unicode_escape(&mut self) -> Option<char> {
        let first = self.hex4()?;
        if !(0xD800..0xDC00).contains(&first) {
            return char::from_u32(first);
        }
        self.literal(b"\\u")?;
        let second = self.hex4()?;
        if !(0xDC00..0xE000).contains(&second) {
            return None;
        }
        char::from_u32(0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00))
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.bytes.get(self.pos..self.pos + 4)?;
        let mut value = 0;
        for &digit in digits {
            value = value * 16 + char::from(digit).to_digit(16)?;
        }
        self.pos += 4;
        Some(value)
    }

    /// A string, validated as serde_json validates the strings it ignores.
    fn skip_string(&mut self) -> Option<()> {
        self.expect(b'"')?;
        loop {
            match self.find_string_stop()? {
                b'"' => {
                    self.pos += 1;
                    return Some(());
                }
                b'\\' => {
                    self.pos += 1;
                    self.skip_escape()?;
                }
                _ => return None,
            }
        }
    }

    fn skip_escape(&mut self) -> Option<()> {
        match self.next()? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(()),
            b'u' => self.hex4().map(|_| ()),
            _ => None,
        }
    }

    /// Any value, validated; `depth` containers deep inside skipped values.
    fn skip_value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.skip_string(),
            b'{' if depth < MAX_SKIP_DEPTH => self.object(|c, _| c.skip_value(depth + 1)),
            b'[' if depth < MAX_SKIP_DEPTH => {
                self.array(|c, _| c.skip_value(depth + 1)).map(|_| ())
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.skip_number(),
            _ => None,
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    /// A number of JSON's grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn skip_number(&mut self) -> Option<()> {
        self.eat(b'-');
        match self.peek()? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.eat(b'.') && self.digits() == 0 {
            return None;
        }
        if self.eat(b'e') || self.eat(b'E') {
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(())
    }

    /// A plain non-negative integer that fits in `u32`; anything else is serde's to judge.
    fn u32(&mut self) -> Option<u32> {
        let start = self.pos;
        let count = self.digits();
        let digits = &self.bytes[start..self.pos];
        let leading_zero = count > 1 && digits[0] == b'0';
        if count == 0 || count > 10 || leading_zero {
            return None;
        }
        if let Some(b'.' | b'e' | b'E') = self.peek() {
            return None;
        }
        let value = digits
            .iter()
            .fold(0u64, |value, digit| value * 10 + u64::from(digit - b'0'));
        u32::try_from(value).ok()
    }
}
