//! The seasonal baseline forecast of speed per zone, and its error on the last week held out.
//!
//! Input: each zone's mean speed per hour (PostgreSQL groups the archive into these; a 180-day
//! archive is 5 zones × 4,320 hours). The model is the classic seasonal baseline: the forecast
//! for an hour is the zone's mean speed at the same hour of the week (Monday 00 h = 0 .. Sunday
//! 23 h = 167) over the history, falling back to the same hour of the day, then to the zone's
//! mean, when the history has no such hour. It does not depend on the forecast origin, so its
//! error is the same for every horizon 1-24 h.
//!
//! The error is measured honestly: the last [`HOLDOUT_HOURS`] hours of each zone are held out,
//! the profile is fitted on the hours before them only, and the mean absolute error (MAE) of
//! its forecasts is reported next to the naive "same hour last week" forecast's on the same
//! hours. The forecast that is stored is then fitted on every hour.
//!
//! This runs in Rust, not SQL: it is model logic (a split, two fits, fallbacks, a comparison)
//! over a few thousand rows, clearer as code and tested here without a database.

use std::collections::BTreeMap;

use crate::time::{DAY_MS, HOUR_MS, Millis};

/// Hours held out at the end of each zone's history to measure the forecast error: one week.
pub const HOLDOUT_HOURS: i64 = 7 * 24;
/// The forecast horizons, in hours after the last hour of the history.
pub const HORIZONS_H: std::ops::RangeInclusive<i64> = 1..=24;

/// One zone's mean speed over one hour.
#[derive(Clone, Debug, PartialEq)]
pub struct HourlySpeed {
    /// Zone id.
    pub zone_id: String,
    /// Start of the hour, ms since the epoch (a multiple of an hour).
    pub hour_ms: Millis,
    /// Mean speed of the zone's traffic readings in the hour, km/h.
    pub speed_kmh: f64,
}

/// How well a model did on the held-out hours.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean absolute error, km/h; `None` when no held-out hour could be forecast.
    pub mae_kmh: Option<f64>,
    /// Held-out hours compared.
    pub hours: u64,
}

/// One forecast hour.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ForecastPoint {
    /// Hours after the last hour of the history (1-24).
    pub horizon_h: i64,
    /// Start of the forecast hour, ms since the epoch.
    pub target_hour_ms: Millis,
    /// Forecast mean speed, km/h.
    pub speed_kmh: f64,
}

/// A zone's forecast and the errors of the seasonal and naive models on its held-out week.
#[derive(Clone, Debug, PartialEq)]
pub struct ZoneForecast {
    /// Zone id.
    pub zone_id: String,
    /// First held-out hour, ms (`None` with less than a week of history before it).
    pub holdout_from_ms: Option<Millis>,
    /// First hour after the held-out ones, ms.
    pub holdout_to_ms: Option<Millis>,
    /// The seasonal baseline's error on the held-out week.
    pub seasonal: Evaluation,
    /// The naive "same hour last week" forecast's error on the same hours.
    pub naive: Evaluation,
    /// The forecast for the next 24 hours, fitted on the whole history.
    pub points: Vec<ForecastPoint>,
}

/// Hour of the week, Monday 00 h = 0 .. Sunday 23 h = 167 (UTC), as the SQL's
/// `(isodow - 1) * 24 + hour`.
pub fn hour_of_week(ms: Millis) -> usize {
    // 1970-01-01 was a Thursday: ISO day 4, index 3 from Monday.
    let day = ms.div_euclid(DAY_MS);
    let weekday = (day + 3).rem_euclid(7) as usize;
    let hour = (ms.rem_euclid(DAY_MS) / HOUR_MS) as usize;
    weekday * 24 + hour
}

/// Running mean.
#[derive(Clone, Copy, Debug, Default)]
struct Mean {
    sum: f64,
    n: u64,
}

impl Mean {
    fn add(&mut self, v: f64) {
        self.sum += v;
        self.n += 1;
    }
    fn get(self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }
}

/// Mean speed per hour of the week, per hour of the day, and overall.
#[derive(Clone, Debug)]
struct Profile {
    week: [Mean; 168],
    day: [Mean; 24],
    all: Mean,
}

impl Profile {
    fn fit<'a>(hours: impl Iterator<Item = (&'a Millis, &'a f64)>) -> Profile {
        let mut p = Profile {
            week: [Mean::default(); 168],
            day: [Mean::default(); 24],
            all: Mean::default(),
        };
        for (&t, &v) in hours {
            let how = hour_of_week(t);
            p.week[how].add(v);
            p.day[how % 24].add(v);
            p.all.add(v);
        }
        p
    }

    fn predict(&self, t: Millis) -> Option<f64> {
        let how = hour_of_week(t);
        self.week[how]
            .get()
            .or_else(|| self.day[how % 24].get())
            .or_else(|| self.all.get())
    }
}

/// The forecast of each zone, in zone order. `series` may come in any order; an hour given twice
/// keeps the last value.
pub fn forecast(series: &[HourlySpeed]) -> Vec<ZoneForecast> {
    let mut zones: BTreeMap<&str, BTreeMap<Millis, f64>> = BTreeMap::new();
    for h in series {
        zones
            .entry(h.zone_id.as_str())
            .or_default()
            .insert(h.hour_ms, h.speed_kmh);
    }
    zones
        .into_iter()
        .filter_map(|(zone, hours)| zone_forecast(zone, &hours))
        .collect()
}

fn zone_forecast(zone: &str, hours: &BTreeMap<Millis, f64>) -> Option<ZoneForecast> {
    let (&last, _) = hours.last_key_value()?;
    let (&first, _) = hours.first_key_value()?;
    let holdout_from = last - (HOLDOUT_HOURS - 1) * HOUR_MS;
    // A held-out week needs at least a week of history before it for the naive forecast (and
    // the hour-of-week profile) to have anything to say.
    let evaluable = holdout_from - HOLDOUT_HOURS * HOUR_MS >= first;
    let (seasonal, naive) = if evaluable {
        evaluate(hours, holdout_from)
    } else {
        let none = Evaluation {
            mae_kmh: None,
            hours: 0,
        };
        (none, none)
    };
    let profile = Profile::fit(hours.iter());
    let points = HORIZONS_H
        .filter_map(|h| {
            let target = last + h * HOUR_MS;
            profile.predict(target).map(|speed_kmh| ForecastPoint {
                horizon_h: h,
                target_hour_ms: target,
                speed_kmh,
            })
        })
        .collect();
    Some(ZoneForecast {
        zone_id: zone.to_owned(),
        holdout_from_ms: evaluable.then_some(holdout_from),
        holdout_to_ms: evaluable.then_some(last + HOUR_MS),
        seasonal,
        naive,
        points,
    })
}

/// Both models' errors on the hours from `holdout_from` on, compared on the hours both forecast.
fn evaluate(hours: &BTreeMap<Millis, f64>, holdout_from: Millis) -> (Evaluation, Evaluation) {
    let profile = Profile::fit(hours.range(..holdout_from));
    let mut seasonal = Mean::default();
    let mut naive = Mean::default();
    for (&t, &actual) in hours.range(holdout_from..) {
        let week_before = hours.get(&(t - HOLDOUT_HOURS * HOUR_MS));
        if let (Some(s), Some(&n)) = (profile.predict(t), week_before) {
            seasonal.add((actual - s).abs());
            naive.add((actual - n).abs());
        }
    }
    (
        Evaluation {
            mae_kmh: seasonal.get(),
            hours: seasonal.n,
        },
        Evaluation {
            mae_kmh: naive.get(),
            hours: naive.n,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Monday 2026-11-23 00:00 UTC.
    const MONDAY: Millis = 1_795_392_000_000;

    fn series(
        zone: &str,
        from: Millis,
        hours: i64,
        speed: impl Fn(Millis) -> f64,
    ) -> Vec<HourlySpeed> {
        (0..hours)
            .map(|i| {
                let t = from + i * HOUR_MS;
                HourlySpeed {
                    zone_id: zone.into(),
                    hour_ms: t,
                    speed_kmh: speed(t),
                }
            })
            .collect()
    }

    // Proves the hour of the week agrees with the calendar: Monday 00 h is 0, Sunday 23 h 167.
    #[test]
    fn hours_of_week() {
        assert_eq!(crate::time::format_rfc3339(MONDAY), "2026-11-23T00:00:00Z");
        assert_eq!(hour_of_week(MONDAY), 0);
        assert_eq!(hour_of_week(MONDAY + 7 * HOUR_MS + 59 * 60_000), 7);
        assert_eq!(hour_of_week(MONDAY + 7 * DAY_MS - 1), 167);
        assert_eq!(hour_of_week(MONDAY + 7 * DAY_MS), 0);
    }

    // Proves the worked example: speed 40 on even hours of the week and 20 on odd ones in the
    // training weeks, and 1 km/h faster in the held-out week. The profile forecasts 40/20 (MAE
    // 1); last week's value is off by 1 too; the 24 forecasts continue the pattern.
    #[test]
    fn seasonal_profile_and_errors() {
        let weeks = 3;
        let start = MONDAY - (weeks * 7) * DAY_MS;
        let holdout_from = MONDAY - 7 * DAY_MS;
        let s = series("zone-1", start, weeks * 168, |t| {
            let base = if hour_of_week(t).is_multiple_of(2) {
                40.0
            } else {
                20.0
            };
            if t >= holdout_from { base + 1.0 } else { base }
        });
        let f = forecast(&s);
        assert_eq!(f.len(), 1);
        let z = &f[0];
        assert_eq!(z.holdout_from_ms, Some(holdout_from));
        assert_eq!(z.holdout_to_ms, Some(MONDAY));
        assert_eq!(z.seasonal.hours, 168);
        assert_eq!(z.seasonal.mae_kmh, Some(1.0));
        assert_eq!(z.naive.hours, 168);
        assert_eq!(z.naive.mae_kmh, Some(1.0));
        assert_eq!(z.points.len(), 24);
        // Fitted on all three weeks: (40 + 40 + 41) / 3 at even hours, (20 + 20 + 21) / 3 at odd.
        assert_eq!(z.points[0].target_hour_ms, MONDAY);
        assert_eq!(z.points[0].horizon_h, 1);
        assert!((z.points[0].speed_kmh - 121.0 / 3.0).abs() < 1e-9);
        assert!((z.points[1].speed_kmh - 61.0 / 3.0).abs() < 1e-9);
    }

    // Proves the seasonal mean beats the naive forecast when weeks are noisy around a profile:
    // alternating +3/-3 weeks give the naive forecast an error of 6 and the mean of 3.
    #[test]
    fn mean_beats_naive_on_noise() {
        let start = MONDAY - 4 * 7 * DAY_MS;
        let s = series("z", start, 4 * 168, |t| {
            let week = (t - start) / (7 * DAY_MS);
            30.0 + if week % 2 == 0 { 3.0 } else { -3.0 }
        });
        let z = &forecast(&s)[0];
        // Training weeks +3, -3, +3: mean 31; held-out week -3 = 27: error 4. Naive: 33 vs 27.
        assert_eq!(z.seasonal.mae_kmh, Some(4.0));
        assert_eq!(z.naive.mae_kmh, Some(6.0));
    }

    // Proves less than two weeks of history gives a forecast but no error figure, and that an
    // hour of the week never seen falls back to the same hour of the day.
    #[test]
    fn short_history() {
        let s = series("z", MONDAY, 30, |t| (t - MONDAY) as f64 / HOUR_MS as f64);
        let z = &forecast(&s)[0];
        assert_eq!(z.seasonal.mae_kmh, None);
        assert_eq!(z.holdout_from_ms, None);
        // The last hour is Tuesday 05 h (value 29); horizon 1 is Tuesday 06 h, an hour of the
        // week never seen, so the forecast is the mean of 06 h of the day: Monday 06 h, value 6.
        assert_eq!(z.points[0].target_hour_ms, MONDAY + 30 * HOUR_MS);
        assert_eq!(z.points[0].speed_kmh, 6.0);
        assert!(forecast(&[]).is_empty());
    }
}
