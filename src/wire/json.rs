//! A strict JSON (RFC 8259) scanner over a borrowed buffer. It validates as it goes and hands
//! out borrowed strings and byte spans instead of building a document tree: the receive path
//! reads the few fields it interprets and keeps the rest as validated raw text.
//!
//! Strict means: a document is accepted exactly when `serde_json` accepts it as a `Value`
//! (UTF-8, no lone surrogate escapes, numbers within `f64` range, nesting at most
//! [`MAX_DEPTH`]); `tests` and the `json_scanner` fuzz target hold it to that. Repeated object
//! keys are the caller's business (the scanner hands out every key).
//!
//! The cost is in strings, which are most of a request's or a heartbeat's bytes: they are
//! scanned 16 bytes at a time for the only bytes that need attention (`"`, `\`, control
//! characters), and only strings holding non-ASCII bytes are UTF-8 checked.

use std::borrow::Cow;
use std::ops::Range;

/// Deepest nesting of arrays and objects accepted (serde_json accepts 127 levels).
pub const MAX_DEPTH: usize = 127;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonErrorKind {
    /// The document ended inside a value.
    Eof,
    /// A byte that cannot start or continue what was expected here.
    Unexpected(u8),
    /// A raw control character (below U+0020) inside a string.
    Control,
    /// A backslash escape JSON does not have, or a `\u` without four hex digits.
    Escape,
    /// A `\u` escape of half a surrogate pair.
    Surrogate,
    /// Bytes inside a string that are not UTF-8.
    Utf8,
    /// A number outside JSON's grammar.
    Number,
    /// A number too large for a 64-bit float.
    NumberRange,
    /// Arrays and objects nested deeper than [`MAX_DEPTH`].
    Depth,
    /// Something after the document.
    Trailing,
}

/// Where and why a document is not JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} at byte {at}", describe(*.kind))]
pub struct JsonError {
    pub at: usize,
    pub kind: JsonErrorKind,
}

fn describe(kind: JsonErrorKind) -> Cow<'static, str> {
    match kind {
        JsonErrorKind::Eof => "unexpected end".into(),
        JsonErrorKind::Unexpected(b) if b.is_ascii_graphic() => {
            format!("unexpected {:?}", b as char).into()
        }
        JsonErrorKind::Unexpected(b) => format!("unexpected byte 0x{b:02x}").into(),
        JsonErrorKind::Control => "control character in a string".into(),
        JsonErrorKind::Escape => "invalid escape".into(),
        JsonErrorKind::Surrogate => "unpaired surrogate escape".into(),
        JsonErrorKind::Utf8 => "invalid UTF-8 in a string".into(),
        JsonErrorKind::Number => "invalid number".into(),
        JsonErrorKind::NumberRange => "number out of range".into(),
        JsonErrorKind::Depth => "nested too deep".into(),
        JsonErrorKind::Trailing => "trailing characters".into(),
    }
}

/// A string as it appears in the document, between its quotes, escapes still in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Str<'b> {
    raw: &'b str,
    escaped: bool,
}

impl<'b> Str<'b> {
    /// The string itself, borrowed when it has no escape.
    pub fn value(&self) -> Cow<'b, str> {
        if self.escaped {
            Cow::Owned(unescape(self.raw))
        } else {
            Cow::Borrowed(self.raw)
        }
    }

    /// The string when it needs no unescaping.
    pub fn as_plain(&self) -> Option<&'b str> {
        (!self.escaped).then_some(self.raw)
    }

    /// Appends the string's value to `out`.
    pub fn push_to(&self, out: &mut String) {
        if self.escaped {
            unescape_into(self.raw, out);
        } else {
            out.push_str(self.raw);
        }
    }

    /// Bytes between the quotes (at least the unescaped value's length).
    pub fn raw_len(&self) -> usize {
        self.raw.len()
    }

    pub fn eq_str(&self, s: &str) -> bool {
        if self.escaped {
            unescape(self.raw) == s
        } else {
            self.raw == s
        }
    }

    /// The same string value, whatever the escapes.
    pub fn same(&self, other: &Str<'_>) -> bool {
        if !self.escaped && !other.escaped {
            self.raw == other.raw
        } else {
            self.value() == other.value()
        }
    }
}

/// What a value is, from its first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peek {
    Object,
    Array,
    String,
    Number,
    Bool,
    Null,
}

/// A scalar read by [`Scanner::scalar`], or the span of a container it skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scalar<'b> {
    Null,
    Bool(bool),
    /// `Some` for an integer in `0..=u64::MAX` written without fraction or exponent.
    Number(Option<u64>),
    Str(Str<'b>),
    /// An array or object, validated and skipped.
    Container(Peek),
}

/// The state of one object or array being iterated: whether a member came yet.
#[derive(Debug)]
#[must_use]
pub struct Seq {
    first: bool,
}

/// The scanner's failure marker. It carries nothing, so `Result<T, Fail>` costs what `T`
/// costs on the hot path; what went wrong and where is kept by the scanner
/// ([`Scanner::error`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fail;

pub struct Scanner<'b> {
    buf: &'b [u8],
    pos: usize,
    depth: usize,
    error: Option<JsonError>,
}

impl<'b> Scanner<'b> {
    pub fn new(buf: &'b [u8]) -> Self {
        Scanner {
            buf,
            pos: 0,
            depth: 0,
            error: None,
        }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn buffer(&self) -> &'b [u8] {
        self.buf
    }

    /// Why the last call failed.
    pub fn error(&self) -> JsonError {
        self.error.unwrap_or(JsonError {
            at: self.pos,
            kind: JsonErrorKind::Eof,
        })
    }

    #[cold]
    #[inline(never)]
    fn err<T>(&mut self, at: usize, kind: JsonErrorKind) -> Result<T, Fail> {
        self.error = Some(JsonError { at, kind });
        Err(Fail)
    }

    #[cold]
    #[inline(never)]
    fn unexpected<T>(&mut self) -> Result<T, Fail> {
        match self.buf.get(self.pos) {
            Some(&b) => self.err(self.pos, JsonErrorKind::Unexpected(b)),
            None => self.err(self.pos, JsonErrorKind::Eof),
        }
    }

    /// Skips whitespace; the byte after it, if any.
    #[inline(always)]
    fn next_byte(&mut self) -> Option<u8> {
        loop {
            let b = *self.buf.get(self.pos)?;
            if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                return Some(b);
            }
            self.pos += 1;
        }
    }

    /// The next value's type, after whitespace; the value is not consumed.
    #[inline]
    pub fn peek(&mut self) -> Result<Peek, Fail> {
        match self.next_byte() {
            Some(b'{') => Ok(Peek::Object),
            Some(b'[') => Ok(Peek::Array),
            Some(b'"') => Ok(Peek::String),
            Some(b'-' | b'0'..=b'9') => Ok(Peek::Number),
            Some(b't' | b'f') => Ok(Peek::Bool),
            Some(b'n') => Ok(Peek::Null),
            _ => self.unexpected(),
        }
    }

    /// After the document: only whitespace may follow.
    pub fn end(&mut self) -> Result<(), Fail> {
        match self.next_byte() {
            None => Ok(()),
            Some(_) => self.err(self.pos, JsonErrorKind::Trailing),
        }
    }

    #[inline]
    fn enter(&mut self, open: u8) -> Result<Seq, Fail> {
        if self.next_byte() != Some(open) {
            return self.unexpected();
        }
        if self.depth == MAX_DEPTH {
            return self.err(self.pos, JsonErrorKind::Depth);
        }
        self.depth += 1;
        self.pos += 1;
        Ok(Seq { first: true })
    }

    /// Consumes `{`; then [`Scanner::next_key`] until it returns `None`.
    #[inline]
    pub fn begin_object(&mut self) -> Result<Seq, Fail> {
        self.enter(b'{')
    }

    /// Consumes `[`; then [`Scanner::next_element`] until it returns false.
    #[inline]
    pub fn begin_array(&mut self) -> Result<Seq, Fail> {
        self.enter(b'[')
    }

    /// Before a member: `,` between members, or the closing byte. True if a member follows.
    #[inline(always)]
    fn next_member(&mut self, seq: &mut Seq, close: u8) -> Result<bool, Fail> {
        let b = self.next_byte();
        if seq.first {
            seq.first = false;
            if b == Some(close) {
                // `{}` or `[]`.
                self.pos += 1;
                self.depth -= 1;
                return Ok(false);
            }
            return Ok(true);
        }
        match b {
            Some(b',') => {
                self.pos += 1;
                // A member must follow: `[1,]` and `{"a":1,}` fail in the member's parse.
                Ok(true)
            }
            Some(c) if c == close => {
                self.pos += 1;
                self.depth -= 1;
                Ok(false)
            }
            _ => self.unexpected(),
        }
    }

    /// The next key of the object (its `:` consumed), or `None` after its `}`. The caller
    /// must consume the key's value before asking for the next key.
    #[inline]
    pub fn next_key(&mut self, seq: &mut Seq) -> Result<Option<Str<'b>>, Fail> {
        if !self.next_member(seq, b'}')? {
            return Ok(None);
        }
        if self.next_byte() != Some(b'"') {
            return self.unexpected();
        }
        let key = self.string_at_quote()?;
        if self.next_byte() != Some(b':') {
            return self.unexpected();
        }
        self.pos += 1;
        Ok(Some(key))
    }

    /// True if an element follows (the caller consumes it), false after the array's `]`.
    #[inline]
    pub fn next_element(&mut self, seq: &mut Seq) -> Result<bool, Fail> {
        self.next_member(seq, b']')
    }

    /// A string value.
    #[inline]
    pub fn string(&mut self) -> Result<Str<'b>, Fail> {
        if self.next_byte() != Some(b'"') {
            return self.unexpected();
        }
        self.string_at_quote()
    }

    /// A string whose opening quote is at `self.pos`. The common case (no escape, ASCII) is
    /// this one scan; anything else continues in `string_slow`.
    #[inline(always)]
    fn string_at_quote(&mut self) -> Result<Str<'b>, Fail> {
        match plain_string(self.buf, self.pos) {
            Ok((raw, end)) => {
                self.pos = end;
                Ok(Str {
                    raw,
                    escaped: false,
                })
            }
            Err((i, high)) => self.string_slow(self.pos + 1, i, high),
        }
    }

    /// The rest of a string from `i`, the first byte `find_special` stopped at.
    #[inline(never)]
    fn string_slow(&mut self, start: usize, mut i: usize, high: bool) -> Result<Str<'b>, Fail> {
        let mut escaped = false;
        let mut non_ascii = high;
        loop {
            match self.buf.get(i) {
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    i = self.escape(i)?;
                }
                Some(_) => return self.err(i, JsonErrorKind::Control),
                None => return self.err(i, JsonErrorKind::Eof),
            }
            let (at, high) = find_special(self.buf, i);
            non_ascii |= high;
            i = at;
        }
        let bytes = &self.buf[start..i];
        let raw = if non_ascii {
            match std::str::from_utf8(bytes) {
                Ok(s) => s,
                Err(e) => return self.err(start + e.valid_up_to(), JsonErrorKind::Utf8),
            }
        } else {
            // Every `find_special` saw no byte >= 0x80, and the escapes it stopped at are ASCII.
            ascii(bytes)
        };
        self.pos = i + 1;
        Ok(Str { raw, escaped })
    }

    /// Validates the escape whose backslash is at `i`; returns the index after it.
    fn escape(&mut self, i: usize) -> Result<usize, Fail> {
        match self.buf.get(i + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(i + 2),
            Some(b'u') => {
                let unit = self.hex4(i + 2)?;
                match unit {
                    0xD800..=0xDBFF => {
                        if self.buf.get(i + 6) != Some(&b'\\') || self.buf.get(i + 7) != Some(&b'u')
                        {
                            return self.err(i, JsonErrorKind::Surrogate);
                        }
                        match self.hex4(i + 8)? {
                            0xDC00..=0xDFFF => Ok(i + 12),
                            _ => self.err(i, JsonErrorKind::Surrogate),
                        }
                    }
                    0xDC00..=0xDFFF => self.err(i, JsonErrorKind::Surrogate),
                    _ => Ok(i + 6),
                }
            }
            Some(_) => self.err(i, JsonErrorKind::Escape),
            None => self.err(i + 1, JsonErrorKind::Eof),
        }
    }

    fn hex4(&mut self, at: usize) -> Result<u32, Fail> {
        let Some(digits) = self.buf.get(at..at + 4) else {
            return self.err(at, JsonErrorKind::Escape);
        };
        let mut v = 0;
        for &d in digits {
            let n = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return self.err(at, JsonErrorKind::Escape),
            };
            v = v << 4 | u32::from(n);
        }
        Ok(v)
    }

    /// A number; `Some` when it is an integer in `0..=u64::MAX` without fraction or exponent.
    #[inline]
    pub fn number(&mut self) -> Result<Option<u64>, Fail> {
        self.next_byte();
        let start = self.pos;
        let b = self.buf;
        // The common case: a small non-negative integer.
        let mut i = start;
        let mut v: u64 = 0;
        while let Some(&d) = b.get(i) {
            if !d.is_ascii_digit() || i - start == 19 {
                break;
            }
            v = v * 10 + u64::from(d - b'0');
            i += 1;
        }
        let digits = i - start;
        let plain = digits > 0
            && (digits == 1 || b[start] != b'0')
            && !matches!(b.get(i), Some(b'0'..=b'9' | b'.' | b'e' | b'E'));
        if plain {
            self.pos = i;
            return Ok(Some(v));
        }
        self.number_slow(start)
    }

    /// Any number, by JSON's grammar.
    #[inline(never)]
    fn number_slow(&mut self, start: usize) -> Result<Option<u64>, Fail> {
        let b = self.buf;
        let mut i = start;
        let negative = b.get(i) == Some(&b'-');
        if negative {
            i += 1;
        }
        let int_start = i;
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                while b.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
            }
            Some(_) => return self.err(i, JsonErrorKind::Number),
            None => return self.err(i, JsonErrorKind::Eof),
        }
        let int_end = i;
        // One or more digits from `at`: the index after them.
        let digits = |at: usize| {
            let mut j = at;
            while b.get(j).is_some_and(u8::is_ascii_digit) {
                j += 1;
            }
            (j > at).then_some(j)
        };
        let mut float = false;
        if b.get(i) == Some(&b'.') {
            float = true;
            match digits(i + 1) {
                Some(j) => i = j,
                None => return self.err(i + 1, JsonErrorKind::Number),
            }
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            float = true;
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            match digits(i) {
                Some(j) => i = j,
                None => return self.err(i, JsonErrorKind::Number),
            }
        }
        self.pos = i;
        if !float {
            let mut v: u64 = 0;
            let mut fits = true;
            for &d in &b[int_start..int_end] {
                match v
                    .checked_mul(10)
                    .and_then(|x| x.checked_add(u64::from(d - b'0')))
                {
                    Some(x) => v = x,
                    None => {
                        fits = false;
                        break;
                    }
                }
            }
            if fits {
                // -0 and negative integers are valid numbers, but not u64s.
                return Ok((!negative).then_some(v));
            }
        }
        // Fractions, exponents and integers beyond 64 bits are floats. Whether one is in
        // range is serde_json's own call, so the two can never disagree (a rare path: the
        // payloads the receive path reads are strings and small integers).
        if serde_json::from_slice::<f64>(&b[start..i]).is_ok() {
            Ok(None)
        } else {
            self.err(start, JsonErrorKind::NumberRange)
        }
    }

    #[inline]
    fn literal(&mut self, word: &'static [u8]) -> Result<(), Fail> {
        if self.buf.get(self.pos..self.pos + word.len()) == Some(word) {
            self.pos += word.len();
            return Ok(());
        }
        // Point at the first byte that differs.
        let at = (0..word.len())
            .find(|&k| self.buf.get(self.pos + k) != Some(&word[k]))
            .map_or(self.pos, |k| self.pos + k);
        match self.buf.get(at) {
            Some(&c) => self.err(at, JsonErrorKind::Unexpected(c)),
            None => self.err(at, JsonErrorKind::Eof),
        }
    }

    /// One value of any type: scalars are read, containers validated and skipped.
    #[inline]
    pub fn scalar(&mut self) -> Result<Scalar<'b>, Fail> {
        match self.next_byte() {
            Some(b'"') => self.string_at_quote().map(Scalar::Str),
            Some(b'-' | b'0'..=b'9') => self.number().map(Scalar::Number),
            Some(b't') => self.literal(b"true").map(|_| Scalar::Bool(true)),
            Some(b'f') => self.literal(b"false").map(|_| Scalar::Bool(false)),
            Some(b'n') => self.literal(b"null").map(|_| Scalar::Null),
            Some(b'{') => self
                .skip_container()
                .map(|_| Scalar::Container(Peek::Object)),
            Some(b'[') => self
                .skip_container()
                .map(|_| Scalar::Container(Peek::Array)),
            _ => self.unexpected(),
        }
    }

    /// The array at the cursor, validated: its elements are pushed to `out` while they are
    /// all strings. True if they all were (an empty array included); false once one was not
    /// (the rest is validated and skipped, `out` keeps what came before it). A list of
    /// strings is a command line: one loop, the position in a register.
    pub fn strings_into(&mut self, out: &mut Vec<Str<'b>>) -> Result<bool, Fail> {
        let mut seq = self.begin_array()?;
        let buf = self.buf;
        let mut pos = self.pos;
        macro_rules! skip_ws {
            () => {
                while let Some(b' ' | b'\n' | b'\r' | b'\t') = buf.get(pos) {
                    pos += 1;
                }
            };
        }
        skip_ws!();
        if buf.get(pos) == Some(&b']') {
            self.pos = pos + 1;
            self.depth -= 1;
            return Ok(true);
        }
        loop {
            if buf.get(pos) != Some(&b'"') {
                // Not a string: validate the rest the general way.
                self.pos = pos;
                seq.first = false;
                self.skip()?;
                while self.next_element(&mut seq)? {
                    self.skip()?;
                }
                return Ok(false);
            }
            match plain_string(buf, pos) {
                Ok((raw, end)) => {
                    out.push(Str {
                        raw,
                        escaped: false,
                    });
                    pos = end;
                }
                Err((i, high)) => {
                    self.pos = pos;
                    let s = self.string_slow(pos + 1, i, high)?;
                    out.push(s);
                    pos = self.pos;
                }
            }
            skip_ws!();
            match buf.get(pos) {
                Some(b',') => {
                    pos += 1;
                    skip_ws!();
                }
                Some(b']') => {
                    self.pos = pos + 1;
                    self.depth -= 1;
                    return Ok(true);
                }
                _ => {
                    self.pos = pos;
                    return self.unexpected();
                }
            }
        }
    }

    /// Validates and skips one value.
    #[inline]
    pub fn skip(&mut self) -> Result<(), Fail> {
        match self.next_byte() {
            Some(b'"') => self.string_at_quote().map(drop),
            Some(b'{' | b'[') => self.skip_container(),
            _ => self.scalar().map(drop),
        }
    }

    /// Validates and skips one value; returns its span (without surrounding whitespace).
    #[inline]
    pub fn skip_span(&mut self) -> Result<Range<usize>, Fail> {
        self.next_byte();
        let start = self.pos;
        self.skip()?;
        Ok(start..self.pos)
    }

    /// `skip_span` of a value that may be `known`: the text of an object, array or string
    /// this scanner's caller accepted before, at the same depth. The same bytes here are the
    /// same value, valid as it was (those three end where their text ends, so nothing after
    /// them changes what they are): they are compared, not scanned again. A node's new
    /// heartbeat repeats most of its last one's values.
    #[inline]
    pub fn skip_span_known(&mut self, known: &[u8]) -> Result<Range<usize>, Fail> {
        if let Some(span) = self.take_known(known) {
            return Ok(span);
        }
        self.skip_span()
    }

    /// The value at the cursor when its bytes are `known` (see `skip_span_known`): consumed,
    /// its span returned. Otherwise nothing is consumed but whitespace.
    #[inline]
    pub fn take_known(&mut self, known: &[u8]) -> Option<Range<usize>> {
        self.next_byte();
        let start = self.pos;
        let delimited = matches!(known.first(), Some(b'{' | b'[' | b'"'));
        if delimited && self.buf.get(start..start + known.len()) == Some(known) {
            self.pos = start + known.len();
            return Some(start..self.pos);
        }
        None
    }

    /// The object or array at `self.pos`, validated and skipped: one loop over the bytes with
    /// the position in a register and the open containers as a bit stack, rather than a call
    /// per token (a heartbeat's services are mostly values skipped this way).
    #[inline(never)]
    fn skip_container(&mut self) -> Result<(), Fail> {
        let buf = self.buf;
        let mut pos = self.pos;
        // Bit k set: the container at depth base + k + 1 is an object.
        let mut objects: u128 = 0;
        let base = self.depth;
        let mut depth = base;
        // Whether the next token must be a value (true) or a `,`/close (false); after `{`
        // or `,` in an object a key comes first.
        let mut want_value = true;
        macro_rules! fail {
            ($at:expr, $kind:expr) => {{
                self.pos = $at;
                return self.err($at, $kind);
            }};
        }
        macro_rules! unexpected {
            ($at:expr) => {{
                let at = $at;
                match buf.get(at) {
                    Some(&b) => fail!(at, JsonErrorKind::Unexpected(b)),
                    None => fail!(at, JsonErrorKind::Eof),
                }
            }};
        }
        macro_rules! skip_ws {
            () => {
                while let Some(b' ' | b'\n' | b'\r' | b'\t') = buf.get(pos) {
                    pos += 1;
                }
            };
        }
        macro_rules! string {
            () => {{
                // `pos` at the opening quote.
                match plain_string(buf, pos) {
                    Ok((_, end)) => pos = end,
                    Err((i, high)) => {
                        self.pos = pos;
                        self.depth = depth;
                        self.string_slow(pos + 1, i, high)?;
                        pos = self.pos;
                    }
                }
            }};
        }
        // After `{`: a key, or `}` at once. Returns to the loop with `want_value`.
        macro_rules! key {
            () => {{
                skip_ws!();
                if buf.get(pos) != Some(&b'"') {
                    unexpected!(pos);
                }
                string!();
                skip_ws!();
                if buf.get(pos) != Some(&b':') {
                    unexpected!(pos);
                }
                pos += 1;
            }};
        }
        loop {
            skip_ws!();
            let Some(&b) = buf.get(pos) else {
                fail!(pos, JsonErrorKind::Eof);
            };
            if want_value {
                match b {
                    b'"' => string!(),
                    b'{' | b'[' => {
                        if depth == MAX_DEPTH {
                            fail!(pos, JsonErrorKind::Depth);
                        }
                        let bit = 1u128 << (depth - base);
                        depth += 1;
                        pos += 1;
                        skip_ws!();
                        if b == b'{' {
                            objects |= bit;
                            if buf.get(pos) == Some(&b'}') {
                                pos += 1;
                                depth -= 1;
                            } else {
                                key!();
                                continue;
                            }
                        } else {
                            objects &= !bit;
                            if buf.get(pos) == Some(&b']') {
                                pos += 1;
                                depth -= 1;
                            } else {
                                continue;
                            }
                        }
                    }
                    b't' | b'f' | b'n' | b'-' | b'0'..=b'9' => {
                        self.pos = pos;
                        self.depth = depth;
                        self.scalar()?;
                        pos = self.pos;
                    }
                    _ => unexpected!(pos),
                }
                if depth == base {
                    break;
                }
                want_value = false;
                continue;
            }
            // After a value inside a container: `,` or the container's close.
            let in_object = objects >> (depth - base - 1) & 1 == 1;
            match (b, in_object) {
                (b',', true) => {
                    pos += 1;
                    key!();
                    want_value = true;
                }
                (b',', false) => {
                    pos += 1;
                    want_value = true;
                }
                (b'}', true) | (b']', false) => {
                    pos += 1;
                    depth -= 1;
                    if depth == base {
                        break;
                    }
                }
                _ => unexpected!(pos),
            }
        }
        self.pos = pos;
        self.depth = depth;
        Ok(())
    }
}

/// Validates a whole document.
pub fn validate(buf: &[u8]) -> Result<(), JsonError> {
    let mut s = Scanner::new(buf);
    match s.skip().and_then(|()| s.end()) {
        Ok(()) => Ok(()),
        Err(Fail) => Err(s.error()),
    }
}

/// The common string, with its opening quote at `quote`: no escape, ASCII. Its text and the
/// index after its closing quote; otherwise where `find_special` stopped and whether it saw
/// non-ASCII bytes, for `Scanner::string_slow` to go on from.
#[inline(always)]
fn plain_string(buf: &[u8], quote: usize) -> Result<(&str, usize), (usize, bool)> {
    let (i, high) = find_special(buf, quote + 1);
    if !high && buf.get(i) == Some(&b'"') {
        Ok((ascii(&buf[quote + 1..i]), i + 1))
    } else {
        Err((i, high))
    }
}

/// Bytes the caller saw to be ASCII, as a `str` without checking them again.
#[inline(always)]
fn ascii(bytes: &[u8]) -> &str {
    debug_assert!(bytes.is_ascii());
    // SAFETY: the callers pass bytes `find_special` found no byte >= 0x80 in (the debug
    // assertion checks it): ASCII is UTF-8.
    unsafe { std::str::from_utf8_unchecked(bytes) }
}

/// The first byte at or after `i` that is `"`, `\` or a control character (`buf.len()` if
/// none), and whether a byte >= 0x80 came before it.
#[inline(always)]
fn find_special(buf: &[u8], i: usize) -> (usize, bool) {
    #[cfg(target_arch = "x86_64")]
    {
        find_special_sse2(buf, i)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        find_special_scalar(buf, i, false)
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn find_special_sse2(buf: &[u8], mut i: usize) -> (usize, bool) {
    use std::arch::x86_64::*;
    let mut high = 0;
    // SAFETY: SSE2 is part of the x86_64 baseline, so the intrinsics are available; every
    // load reads the 16 bytes `i..i + 16`, inside `buf` by the loop condition.
    unsafe {
        let quote = _mm_set1_epi8(b'"' as i8);
        let backslash = _mm_set1_epi8(b'\\' as i8);
        let below_space = _mm_set1_epi8(0x1f);
        while i + 16 <= buf.len() {
            let v = _mm_loadu_si128(buf.as_ptr().add(i).cast::<__m128i>());
            // Unsigned v <= 0x1f: min(v, 0x1f) == v.
            let control = _mm_cmpeq_epi8(_mm_min_epu8(v, below_space), v);
            let special = _mm_or_si128(
                _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                control,
            );
            let mask = _mm_movemask_epi8(special);
            let top_bits = _mm_movemask_epi8(v);
            if mask != 0 {
                let k = mask.trailing_zeros();
                high |= top_bits & ((1 << k) - 1);
                return (i + k as usize, high != 0);
            }
            high |= top_bits;
            i += 16;
        }
    }
    find_special_scalar(buf, i, high != 0)
}

#[inline(always)]
fn find_special_scalar(buf: &[u8], mut i: usize, mut high: bool) -> (usize, bool) {
    while let Some(&c) = buf.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        high |= c >= 0x80;
        i += 1;
    }
    (i, high)
}

/// The value of a string's raw text, validated by the scanner.
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    unescape_into(raw, &mut out);
    out
}

fn unescape_into(raw: &str, out: &mut String) {
    let mut rest = raw;
    while let Some(k) = rest.find('\\') {
        out.push_str(&rest[..k]);
        let esc = &rest[k + 1..];
        let (c, used) = match esc.as_bytes().first() {
            Some(b'"') => ('"', 1),
            Some(b'\\') => ('\\', 1),
            Some(b'/') => ('/', 1),
            Some(b'b') => ('\u{8}', 1),
            Some(b'f') => ('\u{c}', 1),
            Some(b'n') => ('\n', 1),
            Some(b'r') => ('\r', 1),
            Some(b't') => ('\t', 1),
            Some(b'u') => decode_u(esc),
            // Not reachable for scanned text; keep the rest as it is rather than panic.
            _ => {
                out.push_str(&rest[k..]);
                return;
            }
        };
        out.push(c);
        rest = &esc[used..];
    }
    out.push_str(rest);
}

/// `esc` starts at the `u` of `\uXXXX` (a surrogate pair takes `\uXXXX\uXXXX`): the character
/// and the bytes used after the backslash.
fn decode_u(esc: &str) -> (char, usize) {
    let unit = |s: &str| s.get(..4).and_then(|h| u32::from_str_radix(h, 16).ok());
    let Some(hi) = unit(&esc[1..]) else {
        return (char::REPLACEMENT_CHARACTER, 1);
    };
    if (0xD800..0xDC00).contains(&hi)
        && let Some(lo) = esc
            .get(5..)
            .and_then(|s| s.strip_prefix("\\u"))
            .and_then(unit)
        && (0xDC00..0xE000).contains(&lo)
    {
        let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
        return (char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER), 11);
    }
    (char::from_u32(hi).unwrap_or(char::REPLACEMENT_CHARACTER), 5)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn serde_accepts(doc: &[u8]) -> bool {
        serde_json::from_slice::<serde_json::Value>(doc).is_ok()
    }

    /// Every value of the document, re-encoded through the scanner's own reading, so a
    /// test can compare it with serde_json's.
    fn reencode(s: &mut Scanner<'_>) -> Result<serde_json::Value, Fail> {
        use serde_json::Value;
        Ok(match s.peek()? {
            Peek::Object => {
                let mut map = serde_json::Map::new();
                let mut seq = s.begin_object()?;
                while let Some(k) = s.next_key(&mut seq)? {
                    let v = reencode(s)?;
                    map.insert(k.value().into_owned(), v);
                }
                Value::Object(map)
            }
            Peek::Array => {
                let mut list = Vec::new();
                let mut seq = s.begin_array()?;
                while s.next_element(&mut seq)? {
                    list.push(reencode(s)?);
                }
                Value::Array(list)
            }
            Peek::String => Value::String(s.string()?.value().into_owned()),
            _ => {
                let start = s.position();
                s.scalar()?;
                let text = &s.buffer()[start..s.position()];
                serde_json::from_slice(text).unwrap()
            }
        })
    }

    fn scan(doc: &[u8]) -> Result<serde_json::Value, JsonError> {
        let mut s = Scanner::new(doc);
        let v = reencode(&mut s).and_then(|v| s.end().map(|()| v));
        v.map_err(|Fail| s.error())
    }

    #[test]
    fn accepts_what_serde_json_accepts() {
        let good: &[&str] = &[
            "0",
            "-0",
            "-0.0e-0",
            "1e308",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775809",
            "123456789012345678901234567890",
            " \t\r\n{ \"a\" : [ 1 , 2.5 , true , false , null , \"x\" ] } \n",
            r#""\u00e9\ud83d\ude00\"\\\/\b\f\n\r\t""#,
            "\"é 😀 \u{7f}\"",
            "[]",
            "{}",
            "[[[]]]",
            r#"{"a":{"b":{"c":[{}]}}}"#,
            r#"{"a":1,"a":2}"#,
        ];
        for doc in good {
            assert!(serde_accepts(doc.as_bytes()), "serde refuses {doc}");
            let mine = scan(doc.as_bytes()).unwrap_or_else(|e| panic!("{doc}: {e}"));
            assert_eq!(
                mine,
                serde_json::from_str::<serde_json::Value>(doc).unwrap(),
                "{doc}"
            );
        }
    }

    #[test]
    fn refuses_what_serde_json_refuses() {
        let bad: &[&[u8]] = &[
            b"",
            b" ",
            b"{",
            b"[1,]",
            b"[,1]",
            b"{\"a\":1,}",
            b"{,}",
            b"{\"a\"}",
            b"{\"a\" 1}",
            b"{1:1}",
            b"01",
            b"1.",
            b".5",
            b"1e",
            b"1e+",
            b"+1",
            b"-",
            b"1e309",
            b"-1e309",
            b"tru",
            b"nul",
            b"truex",
            b"\"abc",
            b"\"a\x01b\"",
            b"\"\\x\"",
            b"\"\\u12g4\"",
            b"\"\\ud800\"",
            b"\"\\udc00\"",
            b"\"\\ud800\\u0041\"",
            b"\"\xff\"",
            b"\"\xc3\"",
            b"\xef\xbb\xbf{}",
            b"{} {}",
            b"[1] x",
            b"NaN",
            b"'a'",
        ];
        for doc in bad {
            assert!(
                !serde_accepts(doc),
                "serde accepts {:?}",
                String::from_utf8_lossy(doc)
            );
            assert!(
                validate(doc).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(doc)
            );
        }
    }

    #[test]
    fn depth_limit_matches_serde_json() {
        for depth in [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1] {
            let doc = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            assert_eq!(
                validate(doc.as_bytes()).is_ok(),
                serde_accepts(doc.as_bytes()),
                "depth {depth}"
            );
        }
    }

    #[test]
    fn errors_say_where() {
        let e = validate(b"{\"a\":[1,]}").unwrap_err();
        assert_eq!(e.to_string(), "unexpected ']' at byte 8");
        assert_eq!(validate(b"[1").unwrap_err().kind, JsonErrorKind::Eof);
        assert_eq!(
            validate(b"\"\\ud800x\"").unwrap_err().kind,
            JsonErrorKind::Surrogate
        );
    }

    #[test]
    fn long_strings_cross_every_chunk_boundary() {
        // The special byte at each offset of the 16-byte scan, plain and behind non-ASCII.
        for len in 0..70 {
            for prefix in ["", "é"] {
                let body = format!("{prefix}{}", "x".repeat(len));
                for tail in ["\\n", "\\u00e9", ""] {
                    let doc = format!("[\"{body}{tail}\",\"{body}\"]");
                    let v = scan(doc.as_bytes()).unwrap();
                    assert_eq!(v, serde_json::from_str::<serde_json::Value>(&doc).unwrap());
                }
                let ctl = format!("\"{body}\u{1}\"");
                assert_eq!(
                    validate(ctl.as_bytes()).unwrap_err().kind,
                    JsonErrorKind::Control
                );
            }
        }
    }

    #[test]
    fn scalar_path_agrees_with_sse2() {
        let doc = "abc\u{e9}def\"ghi\\ x\u{1}".repeat(3);
        let b = doc.as_bytes();
        for i in 0..b.len() {
            assert_eq!(
                find_special(b, i),
                find_special_scalar(b, i, false),
                "at {i}"
            );
        }
    }

    #[test]
    fn numbers() {
        let n = |t: &str| Scanner::new(t.as_bytes()).number();
        assert_eq!(n("0"), Ok(Some(0)));
        assert_eq!(n("42"), Ok(Some(42)));
        assert_eq!(n("18446744073709551615"), Ok(Some(u64::MAX)));
        assert_eq!(n("18446744073709551616"), Ok(None));
        assert_eq!(n("-1"), Ok(None));
        assert_eq!(n("1.0"), Ok(None));
        assert_eq!(n("1e2"), Ok(None));
    }

    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// What serde_json writes, compactly or pretty, the scanner reads as serde_json reads it.
        #[test]
        fn reads_what_serde_json_writes(v in arb_json(), pretty in any::<bool>()) {
            let text = if pretty {
                serde_json::to_vec_pretty(&v).unwrap()
            } else {
                serde_json::to_vec(&v).unwrap()
            };
            let expected: serde_json::Value = serde_json::from_slice(&text).unwrap();
            prop_assert_eq!(scan(&text).unwrap(), expected);
        }

        /// On arbitrary bytes, and on JSON with one byte changed, the scanner and serde_json
        /// agree on what is valid.
        #[test]
        fn agrees_with_serde_json(v in arb_json(), at in any::<prop::sample::Index>(), b in any::<u8>(), raw in prop::collection::vec(any::<u8>(), 0..40)) {
            let mut text = serde_json::to_vec(&v).unwrap();
            let i = at.index(text.len());
            text[i] = b;
            prop_assert_eq!(validate(&text).is_ok(), serde_accepts(&text), "{:?}", String::from_utf8_lossy(&text));
            prop_assert_eq!(validate(&raw).is_ok(), serde_accepts(&raw), "{:?}", raw);
        }
    }
}
