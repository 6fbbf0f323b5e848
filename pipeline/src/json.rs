//! A fast, strict JSON decoder for the four message types.
//!
//! The engine's budget is a few hundred nanoseconds per record, and generic JSON deserialisation
//! alone costs more than that. This decoder knows the four shapes: it reads each object in one
//! pass, matches field names as bytes, borrows strings without escapes from the input, and parses
//! short decimals exactly (Clinger's fast path; anything longer falls back to the standard
//! library's correctly rounded parser). It accepts exactly the JSON that serde_json accepts for
//! these types, rejects the rest with the same kind of error (a differential test holds it to
//! that), and never panics: unknown fields are skipped after being checked for syntax, nesting is
//! skipped without recursion, duplicate fields are refused.

use std::borrow::Cow;

use crate::model::{
    CongestionLevel, DataQuality, Direction, GeoPoint, Incident, IncidentLocation, IncidentType,
    Message, ParkingReading, Severity, Topic, TrafficReading, TransportReading, TransportStatus,
};
use crate::time::{self, Timestamp};

/// Why bytes are not a message of a topic.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON: bad syntax, truncated, not UTF-8.
    #[error("malformed JSON: {0}")]
    Malformed(String),
    /// Valid JSON without a required field.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A field of the wrong JSON type, an unknown enum value, a duplicate field.
    #[error("{0}")]
    WrongType(String),
    /// The timestamp is not a date-time string.
    #[error("invalid timestamp: {0}")]
    InvalidTimestamp(String),
    /// Objects and arrays nest deeper than the limit given to [`decode_limited`].
    #[error("nesting deeper than {max} levels at byte {at} (max_nesting_depth)")]
    TooDeep {
        /// The limit.
        max: usize,
        /// Where the level beyond it opens.
        at: usize,
    },
}

/// What the parser's functions return. The error is boxed, as serde_json boxes its own, so that
/// a result is a word or two on the hot path, handed back in registers rather than through
/// memory; errors are built out of line ([`malformed`], [`wrong`], ...), by cold functions.
type Result<T> = std::result::Result<T, Box<DecodeError>>;

struct Parser<'a> {
    b: &'a [u8],
    /// Objects being read (the message object is 1), and the most that may be open at once.
    depth: usize,
    max_depth: usize,
    /// The whole input as text, when it is valid UTF-8 (almost always): strings are then sliced
    /// from it without validating each one again.
    s: Option<&'a str>,
    i: usize,
}

/// The first index at or after `j` holding `"`, `\\` or a control character (or the end).
/// Eight bytes at a time (SWAR) while eight are left, then byte by byte.
#[inline]
fn find_special(b: &[u8], mut j: usize) -> usize {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = b.get(j..j + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_le_bytes(word);
        let quote = v ^ (LO * u64::from(b'"'));
        let backslash = v ^ (LO * u64::from(b'\\'));
        // A zero byte in `quote`/`backslash`, or a byte below 0x20 in `v`, sets its high bit
        // here. A byte above it may be flagged too, by the borrow such a byte starts, but never
        // one below: the lowest flagged byte is exactly the first special one.
        let hit = ((quote.wrapping_sub(LO) & !quote)
            | (backslash.wrapping_sub(LO) & !backslash)
            | (v.wrapping_sub(LO * 0x20) & !v))
            & HI;
        if hit != 0 {
            return j + hit.trailing_zeros() as usize / 8;
        }
        j += 8;
    }
    while let Some(&c) = b.get(j) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        j += 1;
    }
    j
}

/// `a == b` for slices of equal length, without a call to `memcmp` for the short names and
/// enum values the decoder compares a dozen times a record: two overlapping word loads each.
#[inline]
fn short_eq(a: &[u8], b: &[u8]) -> bool {
    debug_assert_eq!(a.len(), b.len());
    let n = a.len();
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().unwrap_or([0; 8]));
    let half = |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().unwrap_or([0; 4]));
    match n {
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        _ => a == b,
    }
}

/// Text of a byte range: UTF-8 is checked lazily, string by string, as serde_json does, so an
/// earlier error is reported first.
fn text(b: &[u8], at: usize) -> Result<&str> {
    std::str::from_utf8(b).or_else(|_| malformed("invalid UTF-8 in a string", at))
}

fn malformed<T>(what: &str, at: usize) -> Result<T> {
    Err(malformed_error(what, at))
}

#[cold]
#[inline(never)]
fn malformed_error(what: &str, at: usize) -> Box<DecodeError> {
    Box::new(DecodeError::Malformed(format!("{what} at byte {at}")))
}

fn wrong<T>(field: &str, expected: &str, found: &str) -> Result<T> {
    Err(wrong_error(field, expected, found))
}

#[cold]
#[inline(never)]
fn wrong_error(field: &str, expected: &str, found: &str) -> Box<DecodeError> {
    Box::new(DecodeError::WrongType(format!(
        "`{field}`: expected {expected}, found {found}"
    )))
}

#[cold]
#[inline(never)]
fn invalid_timestamp(detail: String) -> Box<DecodeError> {
    Box::new(DecodeError::InvalidTimestamp(detail))
}

/// The first of `fields` (name, whether it was read), in declaration order, that was not read:
/// serde names the first missing field of the declaration, and so do we.
#[cold]
#[inline(never)]
fn missing(fields: &[(&'static str, bool)]) -> Box<DecodeError> {
    let name = fields
        .iter()
        .find(|(_, read)| !read)
        .map_or("", |(name, _)| name);
    Box::new(DecodeError::MissingField(name))
}

/// A unit enum's value that is none of its variants.
#[cold]
#[inline(never)]
fn unknown_variant(field: &str, name: &str, names: &[&str]) -> Box<DecodeError> {
    Box::new(DecodeError::WrongType(format!(
        "`{field}`: unknown value `{name}`, expected one of {}",
        names.join(", ")
    )))
}

/// Powers of ten exactly representable as f64.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// A JSON number's text, checked against the grammar.
struct Number<'a> {
    /// The number's bytes: ASCII, as the grammar allows nothing else.
    text: &'a [u8],
    negative: bool,
    /// All significant digits as an integer, if they fit in 19 digits.
    mantissa: Option<u64>,
    /// Digits after the point.
    frac_digits: usize,
    /// Has a fraction or an exponent.
    is_float: bool,
    has_exp: bool,
}

impl Number<'_> {
    /// The number's text; the grammar let only ASCII through.
    fn as_str(&self) -> &str {
        std::str::from_utf8(self.text).unwrap_or_default()
    }
}

impl<'a> Parser<'a> {
    fn new(bytes: &'a [u8], max_depth: usize) -> Self {
        Parser {
            b: bytes,
            depth: 0,
            max_depth,
            // The whole input at once, vectorised: most of it is one string after another.
            s: simdutf8::basic::from_utf8(bytes).ok(),
            i: 0,
        }
    }

    /// The text of `start..end`, which lies inside one string.
    #[inline]
    fn slice(&self, start: usize, end: usize) -> Result<&'a str> {
        match self.s.and_then(|s| s.get(start..end)) {
            Some(text) => Ok(text),
            None => self.slice_checked(start, end),
        }
    }

    /// [`Self::slice`] of input that is not UTF-8 as a whole: this string may still be.
    #[cold]
    #[inline(never)]
    fn slice_checked(&self, start: usize, end: usize) -> Result<&'a str> {
        match self.s {
            Some(_) => malformed("invalid UTF-8", start),
            None => text(&self.b[start..end], start),
        }
    }

    /// The next byte that is not whitespace, which is not consumed.
    #[inline]
    fn peek(&mut self) -> Option<u8> {
        // Producers write no whitespace between tokens: the loop that skips it stays out of
        // line, out of the many places a peek is inlined into.
        match self.b.get(self.i) {
            // Every whitespace byte is at most b' ', and so are only control characters.
            Some(&c) if c > b' ' => Some(c),
            _ => self.peek_after_whitespace(),
        }
    }

    #[inline(never)]
    fn peek_after_whitespace(&mut self) -> Option<u8> {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
        self.b.get(self.i).copied()
    }

    #[inline]
    fn eat(&mut self, c: u8, what: &str) -> Result<()> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            self.eat_failed(what)
        }
    }

    #[cold]
    fn eat_failed(&self, what: &str) -> Result<()> {
        if self.i >= self.b.len() {
            malformed(&format!("end of input, expected {what}"), self.i)
        } else {
            malformed(&format!("expected {what}"), self.i)
        }
    }

    /// A string starting at the current `"`. Always inlined, as it is short: a string without
    /// escapes (nearly every one) is a slice of the input; the rest is out of line.
    #[inline(always)]
    fn string(&mut self) -> Result<Cow<'a, str>> {
        let start = self.i + 1;
        let end = find_special(self.b, start);
        if self.b.get(end) == Some(&b'"') {
            self.i = end + 1;
            return Ok(Cow::Borrowed(self.slice(start, end)?));
        }
        self.escaped_string(start, end)
    }

    /// [`Self::string`] from the first byte at `j` that is not plain text: an escape, or an
    /// error.
    #[inline(never)]
    fn escaped_string(&mut self, start: usize, mut j: usize) -> Result<Cow<'a, str>> {
        match self.b.get(j) {
            None => return malformed("end of input inside a string", j),
            Some(c) if *c < 0x20 => return malformed("control character in a string", j),
            Some(_) => {}
        }
        let mut out = String::with_capacity(j - start + 16);
        out.push_str(self.slice(start, j)?);
        loop {
            match self.b.get(j) {
                None => return malformed("end of input inside a string", j),
                Some(b'"') => {
                    self.i = j + 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    let esc = self.b.get(j + 1).copied();
                    j += 2;
                    match esc {
                        Some(b'"') => out.push('"'),
                        Some(b'\\') => out.push('\\'),
                        Some(b'/') => out.push('/'),
                        Some(b'b') => out.push('\u{8}'),
                        Some(b'f') => out.push('\u{c}'),
                        Some(b'n') => out.push('\n'),
                        Some(b'r') => out.push('\r'),
                        Some(b't') => out.push('\t'),
                        Some(b'u') => {
                            let hi = self.hex4(j)?;
                            j += 4;
                            let c = if (0xD800..0xDC00).contains(&hi) {
                                if self.b.get(j) != Some(&b'\\') || self.b.get(j + 1) != Some(&b'u')
                                {
                                    return malformed("lone leading surrogate", j);
                                }
                                let lo = self.hex4(j + 2)?;
                                j += 6;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return malformed("invalid low surrogate", j);
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else if (0xDC00..0xE000).contains(&hi) {
                                return malformed("lone trailing surrogate", j);
                            } else {
                                hi
                            };
                            match char::from_u32(c) {
                                Some(c) => out.push(c),
                                None => return malformed("invalid unicode escape", j),
                            }
                        }
                        _ => return malformed("invalid escape", j),
                    }
                }
                Some(c) if *c < 0x20 => return malformed("control character in a string", j),
                Some(_) => {
                    // Copy the run up to the next quote or backslash in one go.
                    let end = find_special(self.b, j);
                    out.push_str(self.slice(j, end)?);
                    j = end;
                }
            }
        }
    }

    /// Skips a string starting at the current `"` as serde_json ignores one: escapes must be
    /// well-formed, but neither UTF-8 nor surrogate pairing is checked (that depends on what the
    /// string would have been read as).
    fn skip_string(&mut self) -> Result<()> {
        let mut j = self.i + 1;
        loop {
            match self.b.get(j) {
                None => return malformed("end of input inside a string", j),
                Some(b'"') => {
                    self.i = j + 1;
                    return Ok(());
                }
                Some(b'\\') => match self.b.get(j + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => j += 2,
                    Some(b'u') => {
                        self.hex4(j + 2)?;
                        j += 6;
                    }
                    _ => return malformed("invalid escape", j),
                },
                Some(c) if *c < 0x20 => return malformed("control character in a string", j),
                Some(_) => j += 1,
            }
        }
    }

    fn hex4(&self, at: usize) -> Result<u32> {
        let Some(h) = self.b.get(at..at + 4) else {
            return malformed("end of input in a unicode escape", at);
        };
        let mut v = 0u32;
        for &c in h {
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return malformed("invalid unicode escape", at),
            };
            v = v * 16 + u32::from(d);
        }
        Ok(v)
    }

    /// A number at the current position, checked against the JSON grammar. Always inlined:
    /// a number's fields then stay in registers instead of being returned through memory
    /// (callgrind: 190 instructions a record fewer; `#[inline]` alone changed nothing).
    #[inline(always)]
    fn number(&mut self) -> Result<Number<'a>> {
        let start = self.i;
        let b = self.b;
        let mut j = start;
        let negative = b.get(j) == Some(&b'-');
        if negative {
            j += 1;
        }
        // Digit counts are taken from positions after each run, not counted digit by digit.
        let mut mantissa: u64 = 0;
        let int_start = j;
        match b.get(j) {
            Some(b'0') => {
                j += 1;
                if let Some(b'0'..=b'9') = b.get(j) {
                    return malformed("invalid number (leading zero)", j);
                }
            }
            Some(b'1'..=b'9') => {
                while let Some(c @ b'0'..=b'9') = b.get(j) {
                    mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
                    j += 1;
                }
            }
            _ => return malformed("invalid number", j),
        }
        let mut digits = j - int_start;
        let mut frac_digits = 0;
        let mut is_float = false;
        if b.get(j) == Some(&b'.') {
            j += 1;
            is_float = true;
            if !matches!(b.get(j), Some(b'0'..=b'9')) {
                return malformed("invalid number", j);
            }
            let frac_start = j;
            while let Some(c @ b'0'..=b'9') = b.get(j) {
                mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
                j += 1;
            }
            frac_digits = j - frac_start;
            digits += frac_digits;
        }
        let mut has_exp = false;
        if let Some(b'e' | b'E') = b.get(j) {
            j += 1;
            is_float = true;
            has_exp = true;
            if let Some(b'+' | b'-') = b.get(j) {
                j += 1;
            }
            if !matches!(b.get(j), Some(b'0'..=b'9')) {
                return malformed("invalid number", j);
            }
            while let Some(b'0'..=b'9') = b.get(j) {
                j += 1;
            }
        }
        self.i = j;
        Ok(Number {
            text: &b[start..j],
            negative,
            mantissa: (digits <= 19).then_some(mantissa),
            frac_digits,
            is_float,
            has_exp,
        })
    }

    fn found(&mut self) -> &'static str {
        match self.peek() {
            Some(b'"') => "a string",
            Some(b'{') => "an object",
            Some(b'[') => "an array",
            Some(b't' | b'f') => "a boolean",
            Some(b'n') => "null",
            Some(b'-' | b'0'..=b'9') => "a number",
            _ => "nothing",
        }
    }

    /// Describes an unexpected value as serde_json does before reporting a wrong type: a scalar
    /// is parsed first (a broken one is a syntax error), a container is not looked into.
    fn unexpected(&mut self) -> Result<&'static str> {
        let found = self.found();
        match self.peek() {
            Some(b'[' | b'{') => Ok(found),
            _ => self.skip_value().map(|()| found),
        }
    }

    fn wrong_type<T>(&mut self, field: &str, expected: &str) -> Result<T> {
        let found = self.unexpected()?;
        wrong(field, expected, found)
    }

    /// A field of the commonest kinds (`read` is one of [`Self::str`], [`Self::f64`],
    /// [`Self::i64`], [`Self::timestamp`]) into its slot (see `read!`), refusing a second
    /// occurrence. One copy of each kind out of line, so that each field of each shape in
    /// [`message`] is a call and a test, not the value's checks and moves inlined.
    #[inline(never)]
    fn put<T>(
        &mut self,
        slot: &mut Option<T>,
        field: &'static str,
        read: impl FnOnce(&mut Self, &'static str) -> Result<T>,
    ) -> Result<()> {
        if slot.is_some() {
            return duplicate(field);
        }
        *slot = Some(read(self, field)?);
        Ok(())
    }

    /// The `:` after a field's key, and the value (see `read!`).
    fn f64(&mut self, field: &str) -> Result<f64> {
        self.eat(b':', "`:`")?;
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => {}
            Some(_) => return self.wrong_type(field, "a number"),
            None => return malformed("end of input, expected a value", self.i),
        }
        let n = self.number()?;
        if let Some(m) = n.mantissa
            && !n.has_exp
            && m < (1u64 << 53)
            && n.frac_digits < POW10.len()
        {
            let v = m as f64 / POW10[n.frac_digits];
            return Ok(if n.negative { -v } else { v });
        }
        match n.as_str().parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => malformed("number out of range", self.i),
        }
    }

    /// The `:` after a field's key, and the value (see `read!`).
    fn i64(&mut self, field: &str) -> Result<i64> {
        self.eat(b':', "`:`")?;
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => {}
            Some(_) => return self.wrong_type(field, "an integer"),
            None => return malformed("end of input, expected a value", self.i),
        }
        let n = self.number()?;
        // serde_json reads `-0` as the float -0.0 (to keep its sign), so it is no integer either.
        if n.is_float || n.text == b"-0" {
            return wrong(field, "an integer", &format!("the number {}", n.as_str()));
        }
        // An integer has no leading zeros, so one of more than 19 digits is out of range, and
        // one of at most 19 is its mantissa exactly.
        let value = n.mantissa.and_then(|m| match n.negative {
            true => 0i64.checked_sub_unsigned(m),
            false => i64::try_from(m).ok(),
        });
        value.map_or_else(|| wrong(field, "an integer in range", n.as_str()), Ok)
    }

    /// The `:` after a field's key, and the value (see `read!`).
    fn str(&mut self, field: &str) -> Result<Cow<'a, str>> {
        self.eat(b':', "`:`")?;
        match self.peek() {
            Some(b'"') => self.string(),
            Some(_) => self.wrong_type(field, "a string"),
            None => malformed("end of input, expected a value", self.i),
        }
    }

    /// The `:` after a field's key, and the value (see `read!`). `field` is there for
    /// [`Self::put`]: a timestamp's errors name their field themselves.
    fn timestamp(&mut self, _field: &str) -> Result<Timestamp> {
        self.eat(b':', "`:`")?;
        match self.peek() {
            Some(b'"') => {}
            Some(_) => {
                let found = self.unexpected()?;
                return Err(invalid_timestamp(format!(
                    "`timestamp`: expected an RFC 3339 date-time string, found {found}"
                )));
            }
            None => return malformed("end of input, expected a value", self.i),
        }
        // A date-time is ASCII without escapes: read straight from the bytes between the quotes.
        // Anything else (escapes, bad text) goes the way of any string, for the same errors.
        let start = self.i + 1;
        let end = find_special(self.b, start);
        if self.b.get(end) == Some(&b'"')
            && let Some(timestamp) = self.b.get(start..end).and_then(time::parse_bytes)
        {
            self.i = end + 1;
            return Ok(timestamp);
        }
        let text = self.string()?;
        time::parse(&text).map_err(|e| invalid_timestamp(e.to_string()))
    }

    /// The `:` after a field's key, and the value (see `read!`).
    fn enumeration<T: Copy>(&mut self, field: &str, variants: &[(&str, T)]) -> Result<T> {
        self.eat(b':', "`:`")?;
        // The common form, a plain string naming a variant, matched as raw bytes.
        if self.peek() == Some(b'"')
            && let Some(&(_, value)) = variants.iter().find(|(name, _)| self.raw_string_is(name))
        {
            return Ok(value);
        }
        self.enumeration_slow(field, variants)
    }

    /// [`Self::enumeration`] for any other form: escaped, tagged, unknown or not a string.
    #[inline(never)]
    fn enumeration_slow<T: Copy>(&mut self, field: &str, variants: &[(&str, T)]) -> Result<T> {
        // serde reads a unit enum from a string, or from a one-key object `{"variant": null}`;
        // anything else is a syntax error to it, without looking at the value.
        let tagged = match self.peek() {
            Some(b'"') => false,
            Some(b'{') => {
                self.i += 1;
                if self.peek() != Some(b'"') {
                    return malformed("key must be a string", self.i);
                }
                true
            }
            _ => return malformed("expected a value", self.i),
        };
        let name = self.string()?;
        let Some(&(_, value)) = variants.iter().find(|(n, _)| *n == name.as_ref()) else {
            let names: Vec<&str> = variants.iter().map(|(n, _)| *n).collect();
            return Err(unknown_variant(field, &name, &names));
        };
        if tagged {
            self.eat(b':', "`:`")?;
            if self.peek() != Some(b'n') {
                return self.wrong_type(field, "null after the variant name");
            }
            self.literal("null")?;
            self.eat(b'}', "`}`")?;
        }
        Ok(value)
    }

    /// Skips any JSON value, checking its syntax. Iterative, so nesting depth costs memory in
    /// proportion to the (bounded) input, never stack.
    fn skip_value(&mut self) -> Result<()> {
        // Closers of the open containers; `true` for an object.
        let mut open: Vec<bool> = Vec::new();
        loop {
            // A value.
            match self.peek() {
                Some(b'"') => self.skip_string()?,
                Some(b'-' | b'0'..=b'9') => {
                    self.number()?;
                }
                Some(b't') => self.literal("true")?,
                Some(b'f') => self.literal("false")?,
                Some(b'n') => self.literal("null")?,
                Some(b'{') => {
                    self.i += 1;
                    if self.peek() == Some(b'}') {
                        self.i += 1;
                    } else {
                        self.nest(open.len())?;
                        open.push(true);
                        self.key()?;
                        continue;
                    }
                }
                Some(b'[') => {
                    self.i += 1;
                    if self.peek() == Some(b']') {
                        self.i += 1;
                    } else {
                        self.nest(open.len())?;
                        open.push(false);
                        continue;
                    }
                }
                Some(_) => return malformed("expected a value", self.i),
                None => return malformed("end of input, expected a value", self.i),
            }
            // After a value: close containers or move to the next element.
            loop {
                let Some(&object) = open.last() else {
                    return Ok(());
                };
                match (self.peek(), object) {
                    (Some(b','), true) => {
                        self.i += 1;
                        self.key()?;
                        break;
                    }
                    (Some(b','), false) => {
                        self.i += 1;
                        break;
                    }
                    (Some(b'}'), true) | (Some(b']'), false) => {
                        self.i += 1;
                        open.pop();
                    }
                    (_, true) => return malformed("expected `,` or `}`", self.i),
                    (_, false) => return malformed("expected `,` or `]`", self.i),
                }
            }
        }
    }

    /// Refuses a container opened inside `open` skipped ones when it would be one too deep.
    #[inline]
    fn nest(&self, open: usize) -> Result<()> {
        if self.depth + open >= self.max_depth {
            return Err(self.too_deep());
        }
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn too_deep(&self) -> Box<DecodeError> {
        Box::new(DecodeError::TooDeep {
            max: self.max_depth,
            at: self.i - 1,
        })
    }

    /// The colon and value of a field nobody asked for.
    fn skip_field(&mut self) -> Result<()> {
        self.eat(b':', "`:`")?;
        self.skip_value()
    }

    /// A key and its colon, inside an object being skipped.
    fn key(&mut self) -> Result<()> {
        if self.peek() != Some(b'"') {
            return malformed("expected a key", self.i);
        }
        self.skip_string()?;
        self.eat(b':', "`:`")
    }

    fn literal(&mut self, word: &str) -> Result<()> {
        if self.b[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(())
        } else {
            malformed("expected a value", self.i)
        }
    }

    /// Reads an object, calling `field(parser, key)` for each key; the callback must consume the
    /// colon and the value. A non-object is a type error (after checking it is JSON at all).
    fn object(
        &mut self,
        what: &str,
        fields: &[&str],
        field: impl FnMut(&mut Self, Option<usize>) -> Result<()>,
    ) -> Result<()> {
        match self.peek() {
            Some(b'{') => self.i += 1,
            Some(_) => return self.wrong_type(what, "an object"),
            None => return malformed("end of input, expected a value", self.i),
        }
        self.nest(0)?;
        self.depth += 1;
        let members = self.members(fields, field);
        self.depth -= 1;
        members
    }

    /// The members of an object whose `{` was read, and its `}`.
    fn members(
        &mut self,
        fields: &[&str],
        mut field: impl FnMut(&mut Self, Option<usize>) -> Result<()>,
    ) -> Result<()> {
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        let mut expected = 0;
        loop {
            if self.peek() != Some(b'"') {
                return malformed("expected a key", self.i);
            }
            // Producers write the fields in declaration order: try the expected name as raw
            // bytes first, and only read and look up the key when it is not that one.
            let index = match fields.get(expected) {
                Some(name) if self.raw_string_is(name) => Some(expected),
                _ => self.look_up_key(fields)?,
            };
            if let Some(k) = index {
                expected = k + 1;
            }
            // The callback eats the colon: serde refuses a duplicate key before reading on.
            field(self, index)?;
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return malformed("expected `,` or `}`", self.i),
            }
        }
    }

    /// The index in `fields` of the key at the current `"`, read as any string: a key out of
    /// declaration order, escaped or unknown. Out of line, so that each shape's loop over its
    /// members (one copy per shape) holds only the expected-order path.
    #[inline(never)]
    fn look_up_key(&mut self, fields: &[&str]) -> Result<Option<usize>> {
        let key = self.string()?;
        Ok(fields.iter().position(|f| *f == key))
    }

    /// Whether the string at the current `"` is exactly `name` with no escapes; if so, skips it.
    #[inline]
    fn raw_string_is(&mut self, name: &str) -> bool {
        let n = name.len();
        let at = self.i + 1;
        match self.b.get(at..=at + n) {
            Some([text @ .., b'"']) if short_eq(text, name.as_bytes()) => {
                self.i = at + n + 1;
                true
            }
            _ => false,
        }
    }

    fn end(&mut self) -> Result<()> {
        match self.peek() {
            None => Ok(()),
            Some(_) => malformed("trailing characters", self.i),
        }
    }
}

/// A field seen twice; serde refuses it before reading the second value, and so do we.
#[cold]
#[inline(never)]
fn duplicate(name: &str) -> Result<()> {
    Err(Box::new(DecodeError::WrongType(format!(
        "duplicate field `{name}`"
    ))))
}

/// The struct made of its field slots once the object is read, or the first missing field:
/// `build!(Type { field: slot = "name", ... })`, fields in declaration order. One match over
/// every slot, so that what was read is dropped in one place whichever field is missing.
///
/// `build!(parser => Message::Variant, Type { .. })` for a whole message: once every field is
/// there, the input must end, and the message is built where the caller's result lies (building
/// the struct and wrapping it afterwards moved it twice, a few hundred bytes a record). A missing
/// field is still reported before trailing characters, as serde does.
macro_rules! build {
    ($ty:ident { $($field:ident: $slot:ident = $name:literal),* $(,)? }) => {
        match ($($slot,)*) {
            ($(Some($slot),)*) => Ok($ty { $($field: $slot),* }),
            ($($slot,)*) => Err(missing(&[$(($name, $slot.is_some())),*])),
        }
    };
    ($p:expr => $wrap:path, $ty:ident { $($field:ident: $slot:ident = $name:literal),* $(,)? }) => {
        match ($($slot,)*) {
            ($(Some($slot),)*) => {
                $p.end()?;
                Ok($wrap($ty { $($field: $slot),* }))
            }
            ($($slot,)*) => Err(missing(&[$(($name, $slot.is_some())),*])),
        }
    };
}

/// Reads one field into its slot, refusing a second occurrence:
/// `read!(parser, slot, "name", kind)`. The value readers eat the `:` themselves, so that the
/// check is one copy in each of them rather than one in every field of every shape: each shape's
/// loop is inlined into [`message`], whose code the engine's queries share the instruction cache
/// with (with `put` and the key lookup and an enum's slow path out of line too, `message` went
/// from 45 to 21 KB of code and the engine bench from ~357 to ~312 ns a record; `BENCHMARKS.md`,
/// "The decoder's code and the instruction cache").
macro_rules! read {
    // Each reader is a function item, so `put` has one copy per kind, not one per field.
    ($p:expr, $slot:expr, $name:literal, str) => { $p.put(&mut $slot, $name, Parser::str) };
    ($p:expr, $slot:expr, $name:literal, f64) => { $p.put(&mut $slot, $name, Parser::f64) };
    ($p:expr, $slot:expr, $name:literal, i64) => { $p.put(&mut $slot, $name, Parser::i64) };
    ($p:expr, $slot:expr, $name:literal, ts) => { $p.put(&mut $slot, $name, Parser::timestamp) };
    ($p:expr, $slot:expr, $name:literal, $($kind:tt)+) => {{
        if $slot.is_some() {
            return duplicate($name);
        }
        $slot = Some(read!(@value $p, $name, $($kind)+));
        Ok(())
    }};
    (@value $p:expr, $name:literal, geo) => { geo($p, $name)? };
    (@value $p:expr, $name:literal, location) => { incident_location($p)? };
    (@value $p:expr, $name:literal, enum $table:expr) => { $p.enumeration($name, &$table)? };
}

/// Field names in declaration order, per shape.
const FIELDS_TRAFFIC_READING: [&str; 11] = [
    "sensor_id",
    "timestamp",
    "road_id",
    "road_name",
    "zone_id",
    "location",
    "speed_kmh",
    "vehicle_flow",
    "occupancy_percent",
    "congestion_level",
    "data_quality",
];
const FIELDS_TRANSPORT_REPORT: [&str; 14] = [
    "vehicle_id",
    "timestamp",
    "line_id",
    "line_number",
    "current_stop",
    "next_stop",
    "direction",
    "location",
    "speed_kmh",
    "passenger_count",
    "capacity",
    "occupancy_rate",
    "delay_minutes",
    "status",
];
const FIELDS_PARKING_READING: [&str; 12] = [
    "parking_id",
    "timestamp",
    "name",
    "zone_id",
    "type",
    "location",
    "total_spaces",
    "occupied_spaces",
    "available_spaces",
    "occupancy_rate",
    "hourly_rate",
    "status",
];
const FIELDS_GEO: [&str; 2] = ["lat", "lon"];
const FIELDS_LOCATION: [&str; 5] = ["road_id", "road_name", "zone_id", "lat", "lon"];
const FIELDS_INCIDENT: [&str; 9] = [
    "incident_id",
    "timestamp",
    "type",
    "severity",
    "location",
    "description",
    "estimated_duration_min",
    "affected_lanes",
    "status",
];

fn geo(p: &mut Parser<'_>, what: &str) -> Result<GeoPoint> {
    p.eat(b':', "`:`")?;
    let (mut lat, mut lon) = (None, None);
    p.object(what, &FIELDS_GEO, |p, key| match key {
        Some(0) => read!(p, lat, "lat", f64),
        Some(1) => read!(p, lon, "lon", f64),
        _ => p.skip_field(),
    })?;
    build!(GeoPoint {
        lat: lat = "lat",
        lon: lon = "lon",
    })
}

const CONGESTION: [(&str, CongestionLevel); 3] = [
    ("low", CongestionLevel::Low),
    ("medium", CongestionLevel::Medium),
    ("high", CongestionLevel::High),
];
const QUALITY: [(&str, DataQuality); 2] = [
    ("good", DataQuality::Good),
    ("degraded", DataQuality::Degraded),
];
const DIRECTION: [(&str, Direction); 2] = [
    ("outbound", Direction::Outbound),
    ("inbound", Direction::Inbound),
];
const STATUS: [(&str, TransportStatus); 2] = [
    ("on_time", TransportStatus::OnTime),
    ("delayed", TransportStatus::Delayed),
];
const SEVERITY: [(&str, Severity); 4] = [
    ("low", Severity::Low),
    ("medium", Severity::Medium),
    ("high", Severity::High),
    ("critical", Severity::Critical),
];
const INCIDENT_TYPE: [(&str, IncidentType); 7] = [
    ("accident", IncidentType::Accident),
    ("breakdown", IncidentType::Breakdown),
    ("roadwork", IncidentType::Roadwork),
    ("event", IncidentType::Event),
    ("demonstration", IncidentType::Demonstration),
    ("flooding", IncidentType::Flooding),
    ("power_outage", IncidentType::PowerOutage),
];

fn traffic<'a>(p: &mut Parser<'a>) -> Result<Message<'a>> {
    let (mut sensor_id, mut timestamp, mut road_id, mut road_name, mut zone_id) =
        (None, None, None, None, None);
    let (mut location, mut speed, mut flow, mut occupancy, mut level, mut quality) =
        (None, None, None, None, None, None);
    p.object(
        "traffic reading",
        &FIELDS_TRAFFIC_READING,
        |p, key| match key {
            Some(0) => read!(p, sensor_id, "sensor_id", str),
            Some(1) => read!(p, timestamp, "timestamp", ts),
            Some(2) => read!(p, road_id, "road_id", str),
            Some(3) => read!(p, road_name, "road_name", str),
            Some(4) => read!(p, zone_id, "zone_id", str),
            Some(5) => read!(p, location, "location", geo),
            Some(6) => read!(p, speed, "speed_kmh", f64),
            Some(7) => read!(p, flow, "vehicle_flow", i64),
            Some(8) => read!(p, occupancy, "occupancy_percent", f64),
            Some(9) => read!(p, level, "congestion_level", enum CONGESTION),
            Some(10) => read!(p, quality, "data_quality", enum QUALITY),
            _ => p.skip_field(),
        },
    )?;
    build!(p => Message::Traffic, TrafficReading {
        sensor_id: sensor_id = "sensor_id",
        timestamp: timestamp = "timestamp",
        road_id: road_id = "road_id",
        road_name: road_name = "road_name",
        zone_id: zone_id = "zone_id",
        location: location = "location",
        speed_kmh: speed = "speed_kmh",
        vehicle_flow: flow = "vehicle_flow",
        occupancy_percent: occupancy = "occupancy_percent",
        congestion_level: level = "congestion_level",
        data_quality: quality = "data_quality",
    })
}

fn transport<'a>(p: &mut Parser<'a>) -> Result<Message<'a>> {
    let (mut vehicle_id, mut timestamp, mut line_id, mut line_number, mut current, mut next) =
        (None, None, None, None, None, None);
    let (mut direction, mut location, mut speed, mut pax, mut capacity) =
        (None, None, None, None, None);
    let (mut occupancy, mut delay, mut status) = (None, None, None);
    p.object(
        "transport report",
        &FIELDS_TRANSPORT_REPORT,
        |p, key| match key {
            Some(0) => read!(p, vehicle_id, "vehicle_id", str),
            Some(1) => read!(p, timestamp, "timestamp", ts),
            Some(2) => read!(p, line_id, "line_id", str),
            Some(3) => read!(p, line_number, "line_number", str),
            Some(4) => read!(p, current, "current_stop", str),
            Some(5) => read!(p, next, "next_stop", str),
            Some(6) => read!(p, direction, "direction", enum DIRECTION),
            Some(7) => read!(p, location, "location", geo),
            Some(8) => read!(p, speed, "speed_kmh", f64),
            Some(9) => read!(p, pax, "passenger_count", i64),
            Some(10) => read!(p, capacity, "capacity", i64),
            Some(11) => read!(p, occupancy, "occupancy_rate", f64),
            Some(12) => read!(p, delay, "delay_minutes", f64),
            Some(13) => read!(p, status, "status", enum STATUS),
            _ => p.skip_field(),
        },
    )?;
    build!(p => Message::Transport, TransportReading {
        vehicle_id: vehicle_id = "vehicle_id",
        timestamp: timestamp = "timestamp",
        line_id: line_id = "line_id",
        line_number: line_number = "line_number",
        current_stop: current = "current_stop",
        next_stop: next = "next_stop",
        direction: direction = "direction",
        location: location = "location",
        speed_kmh: speed = "speed_kmh",
        passenger_count: pax = "passenger_count",
        capacity: capacity = "capacity",
        occupancy_rate: occupancy = "occupancy_rate",
        delay_minutes: delay = "delay_minutes",
        status: status = "status",
    })
}

fn parking<'a>(p: &mut Parser<'a>) -> Result<Message<'a>> {
    let (mut parking_id, mut timestamp, mut name, mut zone_id, mut kind, mut location) =
        (None, None, None, None, None, None);
    let (mut total, mut occupied, mut available, mut occupancy, mut rate, mut status) =
        (None, None, None, None, None, None);
    p.object(
        "parking reading",
        &FIELDS_PARKING_READING,
        |p, key| match key {
            Some(0) => read!(p, parking_id, "parking_id", str),
            Some(1) => read!(p, timestamp, "timestamp", ts),
            Some(2) => read!(p, name, "name", str),
            Some(3) => read!(p, zone_id, "zone_id", str),
            Some(4) => read!(p, kind, "type", str),
            Some(5) => read!(p, location, "location", geo),
            Some(6) => read!(p, total, "total_spaces", i64),
            Some(7) => read!(p, occupied, "occupied_spaces", i64),
            Some(8) => read!(p, available, "available_spaces", i64),
            Some(9) => read!(p, occupancy, "occupancy_rate", f64),
            Some(10) => read!(p, rate, "hourly_rate", f64),
            Some(11) => read!(p, status, "status", str),
            _ => p.skip_field(),
        },
    )?;
    build!(p => Message::Parking, ParkingReading {
        parking_id: parking_id = "parking_id",
        timestamp: timestamp = "timestamp",
        name: name = "name",
        zone_id: zone_id = "zone_id",
        kind: kind = "type",
        location: location = "location",
        total_spaces: total = "total_spaces",
        occupied_spaces: occupied = "occupied_spaces",
        available_spaces: available = "available_spaces",
        occupancy_rate: occupancy = "occupancy_rate",
        hourly_rate: rate = "hourly_rate",
        status: status = "status",
    })
}

fn incident_location<'a>(p: &mut Parser<'a>) -> Result<IncidentLocation<'a>> {
    p.eat(b':', "`:`")?;
    let (mut road_id, mut road_name, mut zone_id, mut lat, mut lon) =
        (None, None, None, None, None);
    p.object("location", &FIELDS_LOCATION, |p, key| match key {
        Some(0) => read!(p, road_id, "road_id", str),
        Some(1) => read!(p, road_name, "road_name", str),
        Some(2) => read!(p, zone_id, "zone_id", str),
        Some(3) => read!(p, lat, "lat", f64),
        Some(4) => read!(p, lon, "lon", f64),
        _ => p.skip_field(),
    })?;
    build!(IncidentLocation {
        road_id: road_id = "road_id",
        road_name: road_name = "road_name",
        zone_id: zone_id = "zone_id",
        lat: lat = "lat",
        lon: lon = "lon",
    })
}

fn incident<'a>(p: &mut Parser<'a>) -> Result<Message<'a>> {
    let (mut incident_id, mut timestamp, mut kind, mut severity, mut location) =
        (None, None, None, None, None);
    let (mut description, mut duration, mut lanes, mut status) = (None, None, None, None);
    p.object("incident", &FIELDS_INCIDENT, |p, key| match key {
        Some(0) => read!(p, incident_id, "incident_id", str),
        Some(1) => read!(p, timestamp, "timestamp", ts),
        Some(2) => read!(p, kind, "type", enum INCIDENT_TYPE),
        Some(3) => read!(p, severity, "severity", enum SEVERITY),
        Some(4) => read!(p, location, "location", location),
        Some(5) => read!(p, description, "description", str),
        Some(6) => read!(p, duration, "estimated_duration_min", i64),
        Some(7) => read!(p, lanes, "affected_lanes", i64),
        Some(8) => read!(p, status, "status", str),
        _ => p.skip_field(),
    })?;
    build!(p => Message::Incident, Incident {
        incident_id: incident_id = "incident_id",
        timestamp: timestamp = "timestamp",
        kind: kind = "type",
        severity: severity = "severity",
        location: location = "location",
        description: description = "description",
        estimated_duration_min: duration = "estimated_duration_min",
        affected_lanes: lanes = "affected_lanes",
        status: status = "status",
    })
}

/// Decodes a message of `topic`, borrowing strings from `bytes` where they have no escapes.
pub fn decode(topic: Topic, bytes: &[u8]) -> std::result::Result<Message<'_>, DecodeError> {
    decode_limited(topic, bytes, usize::MAX)
}

/// [`decode`], refusing objects and arrays nested deeper than `max_depth` (the message object
/// is depth 1) with [`DecodeError::TooDeep`]. Without a limit the skipping of unknown fields
/// already costs memory only in proportion to the input, never stack; the limit is the
/// engine's policy, not the parser's safety.
pub fn decode_limited(
    topic: Topic,
    bytes: &[u8],
    max_depth: usize,
) -> std::result::Result<Message<'_>, DecodeError> {
    message(topic, bytes, max_depth).map_err(|e| *e)
}

/// [`decode_limited`] with the error boxed as the parser makes it: the engine matches the result
/// where it lies, where unboxing the error moved the whole message (a copy a record).
pub(crate) fn decode_in_place(
    topic: Topic,
    bytes: &[u8],
    max_depth: usize,
) -> std::result::Result<Message<'_>, Box<DecodeError>> {
    message(topic, bytes, max_depth)
}

fn message(topic: Topic, bytes: &[u8], max_depth: usize) -> Result<Message<'_>> {
    let mut p = Parser::new(bytes, max_depth);
    match topic {
        Topic::Traffic => traffic(&mut p),
        Topic::Transport => transport(&mut p),
        Topic::Parking => parking(&mut p),
        Topic::Incidents => incident(&mut p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The reason serde_json's error maps to, as the engine used to classify it.
    fn serde_reason(err: &serde_json::Error) -> &'static str {
        use serde_json::error::Category;
        let text = err.to_string();
        match err.classify() {
            Category::Syntax | Category::Eof | Category::Io => "malformed",
            Category::Data if text.starts_with("missing field") => "missing",
            Category::Data if text.contains("RFC 3339") => "timestamp",
            Category::Data => "type",
        }
    }

    fn fast_reason(err: &DecodeError) -> &'static str {
        match err {
            DecodeError::Malformed(_) => "malformed",
            DecodeError::MissingField(_) => "missing",
            DecodeError::WrongType(_) => "type",
            DecodeError::InvalidTimestamp(_) => "timestamp",
            DecodeError::TooDeep { .. } => "too deep",
        }
    }

    fn samples() -> Vec<(Topic, String)> {
        vec![
            (
                Topic::Traffic,
                r#"{"sensor_id":"TS-001","timestamp":"2026-11-24T08:00:05Z","road_id":"road-1","road_name":"Gran V\u00eda \"Norte\"","zone_id":"zone-1","location":{"lat":40.42,"lon":-3.7},"speed_kmh":42.5,"vehicle_flow":17,"occupancy_percent":31.0,"congestion_level":"medium","data_quality":"good"}"#.to_owned(),
            ),
            (
                Topic::Transport,
                r#"{"vehicle_id":"BUS-001","timestamp":"2026-11-24T08:00:05.250Z","line_id":"line-1","line_number":"L1","current_stop":"Sol","next_stop":"Opera","direction":"outbound","location":{"lat":40.4,"lon":-3.7},"speed_kmh":18.2,"passenger_count":57,"capacity":60,"occupancy_rate":95.0,"delay_minutes":-0.5,"status":"delayed"}"#.to_owned(),
            ),
            (
                Topic::Parking,
                r#"{"parking_id":"PK-001","timestamp":"2026-11-24 08:00:05","name":"Plaza Mayor","zone_id":"zone-2","type":"garage","location":{"lat":40.41,"lon":-3.71},"total_spaces":300,"occupied_spaces":120,"available_spaces":180,"occupancy_rate":40.0,"hourly_rate":2.5,"status":"open","extra":[1,{"a":null},true]}"#.to_owned(),
            ),
            (
                Topic::Incidents,
                r#"{"incident_id":"INC-000001","timestamp":"2026-11-24T09:00:05+01:00","type":"power_outage","severity":"critical","location":{"road_id":"road-1","road_name":"A","zone_id":"zone-1","lat":1e1,"lon":-2.5E-1},"description":"signals out \ud83d\udea6","estimated_duration_min":30,"affected_lanes":2,"status":"active"}"#.to_owned(),
            ),
        ]
    }

    fn same(a: &Message<'_>, b: &Message<'_>) -> bool {
        // Floats of long literals may differ in the last bit between the two parsers.
        let ja = serde_json::to_value(a.to_json_value()).unwrap();
        let jb = serde_json::to_value(b.to_json_value()).unwrap();
        close_json(&ja, &jb)
    }

    fn close_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
        use serde_json::Value::*;
        match (a, b) {
            (Number(x), Number(y)) => {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                (x - y).abs() <= 1e-12 * x.abs().max(y.abs()).max(1.0)
            }
            (Object(x), Object(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .all(|(k, v)| y.get(k).is_some_and(|w| close_json(v, w)))
            }
            _ => a == b,
        }
    }

    fn check(topic: Topic, bytes: &[u8]) -> std::result::Result<(), String> {
        let fast = decode(topic, bytes);
        let reference = Message::decode_serde(topic, bytes);
        let text = String::from_utf8_lossy(bytes);
        match (&fast, &reference) {
            (Ok(a), Ok(b)) if same(a, b) => Ok(()),
            (Err(a), Err(b)) => {
                // Containers where serde would read a struct from a JSON array are refused by the
                // fast decoder as a wrong type; only compare reasons for objects.
                if text.trim_start().starts_with('{') && fast_reason(a) != serde_reason(b) {
                    return Err(format!("{text}\nfast: {a}\nserde: {b}"));
                }
                Ok(())
            }
            _ => Err(format!(
                "{text}\nfast: {:?}\nserde: {:?}",
                fast.as_ref().map(|_| "ok"),
                reference.as_ref().map(|_| "ok")
            )),
        }
    }

    // Proves the word-wise comparison equals slice equality at every length up to 24 bytes,
    // for equal slices and for slices differing in any one byte.
    #[test]
    fn short_eq_is_slice_equality() {
        let base: Vec<u8> = (b'a'..=b'z').collect();
        for n in 0..=24 {
            let a = &base[..n];
            assert!(short_eq(a, a), "{n}");
            for i in 0..n {
                let mut b = a.to_vec();
                b[i] ^= 0x20;
                assert!(!short_eq(a, &b), "{n} {i}");
            }
        }
    }

    // Proves the fast decoder reads the well-formed messages exactly as serde does, escapes,
    // surrogate pairs, unknown nested fields, exponents and naive timestamps included.
    #[test]
    fn agrees_on_valid_messages() {
        for (topic, json) in samples() {
            check(topic, json.as_bytes()).unwrap();
            assert!(decode(topic, json.as_bytes()).is_ok());
        }
    }

    // Proves specific refusals, each with the reason the engine dead-letters it for.
    #[test]
    fn refusals() {
        let (topic, good) = samples().remove(0);
        for (bad, reason) in [
            (
                good.replace(r#""speed_kmh":42.5"#, r#""speed_kmh":"42.5""#),
                "type",
            ),
            (
                good.replace(r#""vehicle_flow":17"#, r#""vehicle_flow":17.0"#),
                "type",
            ),
            (
                good.replace(
                    r#""vehicle_flow":17"#,
                    r#""vehicle_flow":99999999999999999999"#,
                ),
                "type",
            ),
            (
                good.replace(r#""speed_kmh":42.5"#, r#""speed_kmh":1e400"#),
                "malformed",
            ),
            (
                good.replace(r#""speed_kmh":42.5"#, r#""speed_kmh":-"#),
                "malformed",
            ),
            (good.replace(r#""road_id":"road-1","#, ""), "missing"),
            (good.replace(r#""lat":40.42,"#, ""), "missing"),
            (good.replace(r#""medium""#, r#""gridlock""#), "type"),
            (good.replace("2026-11-24T08:00:05Z", "soon"), "timestamp"),
            (good.replace(r#""2026-11-24T08:00:05Z""#, "5"), "timestamp"),
            (
                good.replace(
                    r#""zone_id":"zone-1","#,
                    r#""zone_id":"zone-1","zone_id":"zone-2","#,
                ),
                "type",
            ),
            (good.clone() + "x", "malformed"),
            (good[..good.len() - 1].to_owned(), "malformed"),
            (good.replace("Norte", "\u{1}"), "malformed"),
            (good.replace(r#"\u00eda"#, r#"\ud800"#), "malformed"),
            ("[1,2]".to_owned(), "type"),
            ("\"x\"".to_owned(), "type"),
            ("nul".to_owned(), "malformed"),
            (String::new(), "malformed"),
            ("[".repeat(200), "type"),
            (
                format!("{{\"x\":{}1{}}}", "[".repeat(200), "]".repeat(200)),
                "missing",
            ),
        ] {
            let err = decode(topic, bad.as_bytes()).expect_err(&bad);
            assert_eq!(fast_reason(&err), reason, "{bad}: {err}");
            check(topic, bad.as_bytes()).unwrap();
        }
        assert!(matches!(
            decode(topic, &[0xff, 0xfe]),
            Err(DecodeError::Malformed(_))
        ));
    }

    // Proves integers are read from the digits already scanned exactly as serde_json reads
    // them, at the edges of the i64 range and past them.
    #[test]
    fn integers_at_the_edges_of_i64() {
        let (topic, good) = samples().remove(0);
        for flow in [
            "0",
            "-0",
            "7",
            "-7",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "9999999999999999999",
            "18446744073709551616",
            "-123456789012345678901",
        ] {
            let bad = good.replace(r#""vehicle_flow":17"#, &format!(r#""vehicle_flow":{flow}"#));
            check(topic, bad.as_bytes()).unwrap();
            let expected = flow.parse::<i64>().ok().filter(|_| flow != "-0");
            let got = match decode(topic, bad.as_bytes()) {
                Ok(Message::Traffic(m)) => Some(m.vehicle_flow),
                _ => None,
            };
            assert_eq!(got, expected, "{flow}");
        }
    }

    fn mutate(bytes: &[u8], op: u8, at: usize, len: usize, byte: u8) -> Vec<u8> {
        let mut v = bytes.to_vec();
        let at = at % (v.len() + 1);
        const INTERESTING: &[u8] = b"{}[]\":,\\ 0123456789.-+eEtfnul\x00\x1f\xff";
        let b = INTERESTING[byte as usize % INTERESTING.len()];
        match op % 5 {
            0 => v.truncate(at),
            1 if at < v.len() => v[at] = b,
            2 => v.insert(at, b),
            3 => {
                let end = (at + len % 16).min(v.len());
                v.drain(at..end);
            }
            _ => {
                let end = (at + len % 16).min(v.len());
                let chunk = v[at..end].to_vec();
                v.splice(at..at, chunk);
            }
        }
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        // Proves, on thousands of mutated messages (truncated, bytes changed, inserted, deleted,
        // repeated), that the fast decoder accepts exactly what serde_json accepts, decodes it to
        // the same message, and refuses the rest for the same reason; and never panics.
        #[test]
        fn agrees_with_serde_on_mutations(
            which in 0usize..4,
            ops in proptest::collection::vec((any::<u8>(), any::<usize>(), any::<usize>(), any::<u8>()), 1..4),
        ) {
            let (topic, json) = samples().swap_remove(which);
            let brackets = json.matches('[').count();
            let mut bytes = json.into_bytes();
            for (op, at, len, b) in ops {
                bytes = mutate(&bytes, op, at, len, b);
            }
            // serde also reads a struct from a positional JSON array, a quirk the wire format
            // never uses and the fast decoder refuses as a wrong type; a mutation that opens a
            // new array is out of scope, but must still not panic.
            if bytes.iter().filter(|b| **b == b'[').count() > brackets {
                let _ = decode(topic, &bytes);
            } else {
                check(topic, &bytes).map_err(TestCaseError::fail)?;
            }
        }

        // Proves the eight-bytes-at-a-time scan for the end of a string's plain run stops
        // exactly where a byte-by-byte scan does, whatever the bytes (above 0x7f included).
        #[test]
        fn find_special_stops_where_a_byte_scan_does(
            bytes in proptest::collection::vec(
                prop_oneof![any::<u8>(), Just(b'"'), Just(b'\\'), Just(0x1f), Just(0xa2), Just(b'a')],
                0..40,
            ),
            from in 0usize..40,
        ) {
            let from = from.min(bytes.len());
            let expected = bytes[from..]
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .map_or(bytes.len(), |k| from + k);
            prop_assert_eq!(find_special(&bytes, from), expected);
        }

        // Proves arbitrary bytes never panic the decoder.
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), t in 0usize..4) {
            let _ = decode(Topic::ALL[t], &bytes);
        }
    }
}
