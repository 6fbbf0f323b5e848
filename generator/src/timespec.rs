//! Times and time ranges in the configuration.
//!
//! A time is either a time of day, `"HH:MM"` or `"HH:MM:SS"` (UTC, the city's clock), which
//! applies every day, or a full RFC 3339 instant. A range `from`..`to` is half-open; a daily range
//! whose end is not after its start wraps midnight (`"22:00"`..`"02:00"`), and `"24:00"` may end
//! a daily range.

use pipeline::time::{DAY_MS, HOUR_MS, MINUTE_MS, Millis, SECOND_MS, Timestamp};

/// One parsed time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimeSpec {
    /// Milliseconds after midnight UTC, every day (`DAY_MS` only for `"24:00"`).
    DayTime(Millis),
    /// One instant.
    Instant(Millis),
}

/// Reads `"HH:MM"`, `"HH:MM:SS"` or RFC 3339 with `Z` or an offset.
pub(crate) fn parse_time(text: &str) -> Result<TimeSpec, String> {
    if let Some(ms) = parse_day_time(text) {
        return Ok(TimeSpec::DayTime(ms));
    }
    match pipeline::time::parse(text) {
        Ok(Timestamp::Utc(ms)) => Ok(TimeSpec::Instant(ms)),
        Ok(Timestamp::Naive(_)) => Err(format!(
            "`{text}` has no zone; write it as RFC 3339 with `Z` or an offset, or as HH:MM"
        )),
        Err(_) => Err(format!(
            "`{text}` is neither a time of day (HH:MM) nor an RFC 3339 instant"
        )),
    }
}

/// Reads an RFC 3339 instant (with `Z` or an offset).
pub(crate) fn parse_instant(text: &str) -> Result<Millis, String> {
    match pipeline::time::parse(text) {
        Ok(Timestamp::Utc(ms)) => Ok(ms),
        Ok(Timestamp::Naive(_)) => Err(format!(
            "`{text}` has no zone; write it as RFC 3339 with `Z` or an offset"
        )),
        Err(_) => Err(format!("`{text}` is not an RFC 3339 instant")),
    }
}

fn parse_day_time(text: &str) -> Option<Millis> {
    let b = text.as_bytes();
    let two = |i: usize| -> Option<i64> {
        let (h, l) = (*b.get(i)?, *b.get(i + 1)?);
        (h.is_ascii_digit() && l.is_ascii_digit()).then(|| i64::from((h - b'0') * 10 + (l - b'0')))
    };
    let (hour, minute, second) = match b.len() {
        5 if b[2] == b':' => (two(0)?, two(3)?, 0),
        8 if b[2] == b':' && b[5] == b':' => (two(0)?, two(3)?, two(6)?),
        _ => return None,
    };
    if minute > 59 || second > 59 || hour > 24 || (hour == 24 && (minute, second) != (0, 0)) {
        return None;
    }
    Some(hour * HOUR_MS + minute * MINUTE_MS + second * SECOND_MS)
}

/// A half-open range of time, tested against event times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimeRange {
    /// All the time.
    Always,
    /// Every day from `from` to `to` (ms after midnight); wraps midnight when `to <= from`.
    Daily {
        /// Start, ms after midnight.
        from: Millis,
        /// End, ms after midnight (exclusive).
        to: Millis,
    },
    /// Between two instants; a missing bound is open.
    Between {
        /// First instant included.
        from: Option<Millis>,
        /// First instant excluded.
        to: Option<Millis>,
    },
}

impl TimeRange {
    /// Builds a range from the optional `from`/`to` texts; `what` names the entry in errors.
    pub(crate) fn parse(
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<TimeRange, (&'static str, String)> {
        let from = from
            .map(|t| parse_time(t).map_err(|e| ("from", e)))
            .transpose()?;
        let to = to
            .map(|t| parse_time(t).map_err(|e| ("to", e)))
            .transpose()?;
        match (from, to) {
            (None, None) => Ok(TimeRange::Always),
            (Some(TimeSpec::DayTime(f)), Some(TimeSpec::DayTime(t))) => {
                if f == DAY_MS {
                    Err(("from", "24:00 can only end a range".to_owned()))
                } else if f == t || (f == 0 && t == DAY_MS) {
                    // from == to is ambiguous (empty or all day?); say so instead of guessing.
                    Err(("to", "a daily range must not start and end at the same time; leave out from and to for all day".to_owned()))
                } else {
                    Ok(TimeRange::Daily { from: f, to: t })
                }
            }
            (Some(TimeSpec::DayTime(_)), None) => Err((
                "to",
                "a daily range (from = HH:MM) needs an end time too".to_owned(),
            )),
            (None, Some(TimeSpec::DayTime(_))) => Err((
                "from",
                "a daily range (to = HH:MM) needs a start time too".to_owned(),
            )),
            (Some(TimeSpec::DayTime(_)), Some(TimeSpec::Instant(_)))
            | (Some(TimeSpec::Instant(_)), Some(TimeSpec::DayTime(_))) => Err((
                "to",
                "from and to must both be times of day (HH:MM) or both RFC 3339 instants"
                    .to_owned(),
            )),
            (f, t) => {
                let f = f.map(|s| match s {
                    TimeSpec::Instant(ms) | TimeSpec::DayTime(ms) => ms,
                });
                let t = t.map(|s| match s {
                    TimeSpec::Instant(ms) | TimeSpec::DayTime(ms) => ms,
                });
                if let (Some(f), Some(t)) = (f, t)
                    && t <= f
                {
                    return Err(("to", "the range ends before it starts".to_owned()));
                }
                Ok(TimeRange::Between { from: f, to: t })
            }
        }
    }

    /// Whether `t` (ms since the epoch, UTC) lies in the range.
    #[inline]
    pub(crate) fn contains(&self, t: Millis) -> bool {
        match *self {
            TimeRange::Always => true,
            TimeRange::Daily { from, to } => {
                let tod = t.rem_euclid(DAY_MS);
                if from < to {
                    from <= tod && tod < to
                } else {
                    tod >= from || tod < to
                }
            }
            TimeRange::Between { from, to } => {
                from.is_none_or(|f| t >= f) && to.is_none_or(|e| t < e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY0: Millis = 1_795_478_400_000; // 2026-11-24T00:00:00Z

    // Proves the accepted spellings and that nonsense is reported with the text.
    #[test]
    fn parses_times() {
        assert_eq!(
            parse_time("07:30").unwrap(),
            TimeSpec::DayTime(7 * HOUR_MS + 30 * MINUTE_MS)
        );
        assert_eq!(parse_time("00:00:05").unwrap(), TimeSpec::DayTime(5_000));
        assert_eq!(parse_time("24:00").unwrap(), TimeSpec::DayTime(DAY_MS));
        assert_eq!(
            parse_time("2026-11-24T00:00:00Z").unwrap(),
            TimeSpec::Instant(DAY0)
        );
        assert_eq!(
            parse_time("2026-11-24T01:00:00+01:00").unwrap(),
            TimeSpec::Instant(DAY0)
        );
        for bad in [
            "7:30",
            "25:00",
            "24:01",
            "12:60",
            "noon",
            "2026-11-24T00:00:00",
        ] {
            let err = parse_time(bad).unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }

    // Proves daily ranges repeat every day and wrap midnight; instant ranges are half-open.
    #[test]
    fn ranges() {
        let r = TimeRange::parse(Some("07:00"), Some("09:00")).unwrap();
        assert!(r.contains(DAY0 + 7 * HOUR_MS));
        assert!(!r.contains(DAY0 + 9 * HOUR_MS));
        assert!(r.contains(DAY0 + DAY_MS + 8 * HOUR_MS));
        let wrap = TimeRange::parse(Some("22:00"), Some("02:00")).unwrap();
        assert!(wrap.contains(DAY0 + 23 * HOUR_MS));
        assert!(wrap.contains(DAY0 + HOUR_MS));
        assert!(!wrap.contains(DAY0 + 3 * HOUR_MS));
        let to_midnight = TimeRange::parse(Some("18:00"), Some("24:00")).unwrap();
        assert!(to_midnight.contains(DAY0 + 23 * HOUR_MS));
        assert!(!to_midnight.contains(DAY0 + HOUR_MS));
        let b =
            TimeRange::parse(Some("2026-11-24T08:00:00Z"), Some("2026-11-24T09:00:00Z")).unwrap();
        assert!(b.contains(DAY0 + 8 * HOUR_MS));
        assert!(!b.contains(DAY0 + 9 * HOUR_MS));
        assert!(!b.contains(DAY0 + DAY_MS + 8 * HOUR_MS));
        let open = TimeRange::parse(Some("2026-11-24T08:00:00Z"), None).unwrap();
        assert!(open.contains(DAY0 + 100 * DAY_MS));
        assert_eq!(TimeRange::parse(None, None).unwrap(), TimeRange::Always);
    }

    // Proves ambiguous or inverted ranges are refused and the faulty side is named.
    #[test]
    fn bad_ranges() {
        assert_eq!(TimeRange::parse(Some("07:00"), None).unwrap_err().0, "to");
        assert_eq!(
            TimeRange::parse(Some("07:00"), Some("07:00"))
                .unwrap_err()
                .0,
            "to"
        );
        assert_eq!(
            TimeRange::parse(Some("24:00"), Some("07:00"))
                .unwrap_err()
                .0,
            "from"
        );
        assert!(TimeRange::parse(Some("07:00"), Some("2026-11-24T08:00:00Z")).is_err());
        let inverted = TimeRange::parse(Some("2026-11-24T09:00:00Z"), Some("2026-11-24T08:00:00Z"));
        assert_eq!(inverted.unwrap_err().0, "to");
        assert_eq!(TimeRange::parse(Some("7am"), None).unwrap_err().0, "from");
    }
}
