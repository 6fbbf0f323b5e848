//! Event timestamps on the wire.
//!
//! Producers here write RFC 3339 in UTC (`2026-11-24T08:00:05Z`, milliseconds only when present).
//! The reader accepts RFC 3339 with any offset, and the original system's naive ISO strings
//! (`2026-11-24T08:00:05.123456`), which carry no zone: those are kept as [`Timestamp::Naive`]
//! and resolved later in the zone the pipeline is configured with (default UTC), because a serde
//! impl cannot know that configuration.
//!
//! Parsing and formatting are hand-written: they sit on the hot path of both the generator and the
//! engine, and the formats are small and fixed.

use std::fmt;

use chrono::{LocalResult, NaiveDateTime, TimeZone};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Milliseconds since the Unix epoch, UTC. The one time unit inside the engine.
pub type Millis = i64;

/// Milliseconds in one second, minute, hour and day.
pub const SECOND_MS: Millis = 1_000;
/// Milliseconds in one minute.
pub const MINUTE_MS: Millis = 60 * SECOND_MS;
/// Milliseconds in one hour.
pub const HOUR_MS: Millis = 60 * MINUTE_MS;
/// Milliseconds in one day.
pub const DAY_MS: Millis = 24 * HOUR_MS;

/// A timestamp as read from a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timestamp {
    /// An instant: the text carried `Z` or an offset, already applied.
    Utc(Millis),
    /// A naive wall-clock time with no zone (the original's format), stored as if it were UTC;
    /// [`Timestamp::resolve`] places it in a zone.
    Naive(Millis),
}

/// Why a timestamp could not be read or placed in a zone.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// The text is not RFC 3339 nor a naive ISO date-time.
    #[error("`{0}` is not an RFC 3339 or ISO 8601 date-time")]
    Syntax(String),
    /// A naive time that does not exist in the configured zone (a daylight-saving gap).
    #[error("naive time `{0}` does not exist in zone {1} (daylight-saving gap)")]
    Nonexistent(String, String),
}

impl Timestamp {
    /// The instant, for a naive time read in `zone`. An ambiguous local time (the repeated hour
    /// when clocks go back) takes the earlier instant, as most databases do.
    #[inline]
    pub fn resolve(self, zone: chrono_tz::Tz) -> Result<Millis, TimeError> {
        match self {
            Timestamp::Utc(ms) => Ok(ms),
            Timestamp::Naive(local) => resolve_naive(local, zone),
        }
    }

    /// The instant if the text carried one; `None` for a naive time.
    pub fn utc_millis(self) -> Option<Millis> {
        match self {
            Timestamp::Utc(ms) => Some(ms),
            Timestamp::Naive(_) => None,
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Timestamp::Utc(ms) => f.write_str(&format_rfc3339(ms)),
            Timestamp::Naive(ms) => f.write_str(&format_naive(ms)),
        }
    }
}

/// [`Timestamp::resolve`] of a naive time: out of line, as producers here write UTC.
#[inline(never)]
fn resolve_naive(local: Millis, zone: chrono_tz::Tz) -> Result<Millis, TimeError> {
    if zone == chrono_tz::UTC {
        return Ok(local);
    }
    let naive = chrono::DateTime::from_timestamp_millis(local)
        .map(|dt| dt.naive_utc())
        .unwrap_or(NaiveDateTime::MIN);
    match zone.from_local_datetime(&naive) {
        LocalResult::Single(dt) => Ok(dt.timestamp_millis()),
        LocalResult::Ambiguous(early, _) => Ok(early.timestamp_millis()),
        LocalResult::None => Err(TimeError::Nonexistent(
            format_naive(local),
            zone.name().to_owned(),
        )),
    }
}

/// Parses RFC 3339 (`Z` or `±HH:MM`, fraction optional) or a naive ISO date-time (`T` or space
/// between date and time, fraction optional, no zone).
pub fn parse(text: &str) -> Result<Timestamp, TimeError> {
    parse_bytes(text.as_bytes()).ok_or_else(|| TimeError::Syntax(text.to_owned()))
}

/// [`parse`] of bytes; `None` for anything but the accepted forms, which are ASCII.
pub(crate) fn parse_bytes(b: &[u8]) -> Option<Timestamp> {
    // The fixed 19 bytes `YYYY-MM-DDTHH:MM:SS` as one array pattern: one length check, no
    // index checks. The date and time parts are checked byte by byte below.
    let (
        [
            y0,
            y1,
            y2,
            y3,
            b'-',
            mo0,
            mo1,
            b'-',
            d0,
            d1,
            b'T' | b't' | b' ',
            h0,
            h1,
            b':',
            mi0,
            mi1,
            b':',
            s0,
            s1,
        ],
        rest,
    ) = b.split_first_chunk::<19>()?
    else {
        return None;
    };
    let year = i64::from(two_digits(*y0, *y1)? * 100 + two_digits(*y2, *y3)?);
    let month = two_digits(*mo0, *mo1)?;
    let day = two_digits(*d0, *d1)?;
    let hour = two_digits(*h0, *h1)?;
    let minute = two_digits(*mi0, *mi1)?;
    let second = two_digits(*s0, *s1)?;
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut rest = rest;
    let mut millis = 0i64;
    if let Some((&b'.', frac)) = rest.split_first() {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return None;
        }
        for (i, &c) in frac[..n.min(3)].iter().enumerate() {
            millis += i64::from(c - b'0') * [100, 10, 1][i];
        }
        rest = &frac[n..];
    }
    let local = days_from_civil(year, month, day) * DAY_MS
        + i64::from(hour) * HOUR_MS
        + i64::from(minute) * MINUTE_MS
        + i64::from(second) * SECOND_MS
        + millis;
    match rest {
        [] => Some(Timestamp::Naive(local)),
        [b'Z' | b'z'] => Some(Timestamp::Utc(local)),
        [sign @ (b'+' | b'-'), oh1, oh2, b':', om1, om2] => {
            let oh = two_digits(*oh1, *oh2)?;
            let om = two_digits(*om1, *om2)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let offset = i64::from(oh) * HOUR_MS + i64::from(om) * MINUTE_MS;
            Some(Timestamp::Utc(if *sign == b'+' {
                local - offset
            } else {
                local + offset
            }))
        }
        _ => None,
    }
}

/// The number two ASCII digits spell.
#[inline]
fn two_digits(tens: u8, ones: u8) -> Option<u32> {
    let (tens, ones) = (tens.wrapping_sub(b'0'), ones.wrapping_sub(b'0'));
    (tens < 10 && ones < 10).then(|| u32::from(tens) * 10 + u32::from(ones))
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Writes `YYYY-MM-DDTHH:MM:SS[.mmm]` into `out` and returns the length written. The message
/// writer (`model::json_write`) uses it too, so a timestamp has one formatter.
pub(crate) fn write_date_time(ms: Millis, out: &mut [u8; 24]) -> usize {
    let days = ms.div_euclid(DAY_MS);
    let in_day = ms.rem_euclid(DAY_MS);
    let (year, month, day) = civil_from_days(days);
    let year = year.clamp(0, 9999) as u32;
    let put2 = |out: &mut [u8; 24], at: usize, v: u32| {
        out[at] = b'0' + (v / 10) as u8;
        out[at + 1] = b'0' + (v % 10) as u8;
    };
    put2(out, 0, year / 100);
    put2(out, 2, year % 100);
    out[4] = b'-';
    put2(out, 5, month);
    out[7] = b'-';
    put2(out, 8, day);
    out[10] = b'T';
    let secs = (in_day / SECOND_MS) as u32;
    put2(out, 11, secs / 3600);
    out[13] = b':';
    put2(out, 14, secs / 60 % 60);
    out[16] = b':';
    put2(out, 17, secs % 60);
    let frac = (in_day % SECOND_MS) as u32;
    if frac == 0 {
        return 19;
    }
    out[19] = b'.';
    out[20] = b'0' + (frac / 100) as u8;
    put2(out, 21, frac % 100);
    23
}

/// RFC 3339 in UTC: `2026-11-24T08:00:05Z`, or `…05.250Z` when there are milliseconds.
pub fn format_rfc3339(ms: Millis) -> String {
    let mut text = String::with_capacity(24);
    push_rfc3339(&mut text, ms);
    text
}

/// Appends [`format_rfc3339`]'s text to `out`, without a string of its own: row ids end with it.
pub fn push_rfc3339(out: &mut String, ms: Millis) {
    let mut buf = [0u8; 24];
    let n = write_date_time(ms, &mut buf);
    buf[n] = b'Z';
    // The buffer holds ASCII digits and separators only, so it is always UTF-8.
    out.push_str(std::str::from_utf8(&buf[..=n]).unwrap_or_default());
}

/// A naive ISO date-time with no zone: `2026-11-24T08:00:05`.
pub fn format_naive(ms: Millis) -> String {
    let mut buf = [0u8; 24];
    let n = write_date_time(ms, &mut buf);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

// Always text, whatever the format says of itself: BSON reports itself not human-readable, and
// the MongoDB sink's documents depend on this form (a binary form here broke them; the checked
// records of docs/scale-out.md pay a parse of the text instead).
impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 24];
        let (ms, utc) = match *self {
            Timestamp::Utc(ms) => (ms, true),
            Timestamp::Naive(ms) => (ms, false),
        };
        let mut n = write_date_time(ms, &mut buf);
        if utc {
            buf[n] = b'Z';
            n += 1;
        }
        match std::str::from_utf8(&buf[..n]) {
            Ok(text) => s.serialize_str(text),
            Err(_) => Err(serde::ser::Error::custom(
                "timestamp formatting produced non-ASCII",
            )),
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TsVisitor;
        impl Visitor<'_> for TsVisitor {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 or naive ISO 8601 date-time string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
                parse_bytes(v.as_bytes()).ok_or_else(|| {
                    E::invalid_value(de::Unexpected::Str(v), &"an RFC 3339 date-time")
                })
            }
        }
        d.deserialize_str(TsVisitor)
    }
}

/// Serde helpers for a [`Millis`] field written as RFC 3339 UTC text (used by output rows).
pub mod rfc3339_millis {
    use super::{Millis, Timestamp};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Writes the instant as RFC 3339 UTC.
    pub fn serialize<S: Serializer>(ms: &Millis, s: S) -> Result<S::Ok, S::Error> {
        Timestamp::Utc(*ms).serialize(s)
    }

    /// Reads RFC 3339; a naive time is taken as UTC.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Millis, D::Error> {
        Ok(match Timestamp::deserialize(d)? {
            Timestamp::Utc(ms) | Timestamp::Naive(ms) => ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Proves the formats we must read all land on the same instant.
    #[test]
    fn reads_rfc3339_offsets_and_naive() {
        let z = parse("2026-11-24T08:00:05Z").unwrap();
        assert_eq!(z, Timestamp::Utc(1_795_507_205_000));
        assert_eq!(parse("2026-11-24T09:00:05+01:00").unwrap(), z);
        assert_eq!(parse("2026-11-24T07:30:05-00:30").unwrap(), z);
        assert_eq!(
            parse("2026-11-24T08:00:05.123456Z").unwrap(),
            Timestamp::Utc(1_795_507_205_123)
        );
        assert_eq!(
            parse("2026-11-24 08:00:05").unwrap(),
            Timestamp::Naive(1_795_507_205_000)
        );
        assert_eq!(
            parse("2026-11-24T08:00:05.5").unwrap(),
            Timestamp::Naive(1_795_507_205_500)
        );
    }

    // Proves nonsense never panics and is reported.
    #[test]
    fn rejects_bad_text() {
        for bad in [
            "",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-24T24:00:00Z",
            "2026-11-24T08:00:05+1:00",
            "2026-11-24T08:00:05.Z",
            "yesterday",
            "2026-11-24T08:00:05ZZ",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse("2024-02-29T00:00:00Z").is_ok());
    }

    // Proves a naive time is placed in the configured zone, DST gaps included.
    #[test]
    fn resolves_naive_in_zone() {
        let naive = parse("2026-07-01T10:00:00").unwrap();
        assert_eq!(
            naive.resolve(chrono_tz::UTC).unwrap(),
            parse("2026-07-01T10:00:00Z").unwrap().utc_millis().unwrap()
        );
        assert_eq!(
            naive.resolve(chrono_tz::Europe::Madrid).unwrap(),
            parse("2026-07-01T08:00:00Z").unwrap().utc_millis().unwrap()
        );
        let gap = parse("2026-03-29T02:30:00").unwrap();
        assert!(matches!(
            gap.resolve(chrono_tz::Europe::Madrid),
            Err(TimeError::Nonexistent(..))
        ));
    }

    proptest! {
        // Proves writing then reading any instant from 1970 to 2200 gives it back, and that the
        // hand-written formatter agrees with chrono's.
        #[test]
        fn round_trips(ms in 0i64..7_258_118_400_000) {
            let text = format_rfc3339(ms);
            prop_assert_eq!(parse(&text).unwrap(), Timestamp::Utc(ms));
            let chrono_text = chrono::DateTime::from_timestamp_millis(ms).unwrap()
                .format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
            prop_assert_eq!(parse(&chrono_text).unwrap(), Timestamp::Utc(ms));
        }
    }
}
