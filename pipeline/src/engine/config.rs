//! Engine configuration: window sizes, watermark, thresholds and bounds. Defaults are SPEC §2's.

use serde::{Deserialize, Serialize};

use crate::time::{MINUTE_MS, Millis, SECOND_MS};

/// A hopping window: `[start, start + size_ms)` on multiples of `slide_ms` (tumbling when equal).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// Window length, milliseconds.
    pub size_ms: Millis,
    /// Distance between window starts, milliseconds; must divide `size_ms`.
    pub slide_ms: Millis,
}

impl WindowSpec {
    /// A window of `size` minutes sliding every `slide` minutes.
    pub const fn minutes(size: i64, slide: i64) -> Self {
        WindowSpec {
            size_ms: size * MINUTE_MS,
            slide_ms: slide * MINUTE_MS,
        }
    }

    /// How many windows hold each record.
    pub const fn windows_per_record(self) -> i64 {
        self.size_ms / self.slide_ms
    }

    /// Start of the earliest window that holds event time `t`.
    pub fn first_start(self, t: Millis) -> Millis {
        ((t - self.size_ms).div_euclid(self.slide_ms) + 1) * self.slide_ms
    }

    /// Start of the latest window that holds event time `t`.
    pub fn last_start(self, t: Millis) -> Millis {
        t.div_euclid(self.slide_ms) * self.slide_ms
    }
}

/// Everything the engine can be told. Every field has SPEC §2's value as default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Watermark = highest event time seen on a topic minus this, milliseconds.
    pub watermark_delay_ms: Millis,
    /// Interval between update-mode triggers for the database sinks, milliseconds.
    pub trigger_interval_ms: Millis,
    /// Interval between console refreshes, milliseconds.
    pub console_interval_ms: Millis,
    /// IANA zone in which naive timestamps (no offset) are read.
    pub timezone: String,
    /// A record whose event time is more than this ahead of its Kafka timestamp is dead-lettered.
    pub max_future_skew_ms: Millis,
    /// A speed above this is impossible, km/h.
    pub speed_limit_kmh: f64,
    /// Query 1 window.
    pub traffic_window: WindowSpec,
    /// Query 3 window.
    pub transport_window: WindowSpec,
    /// Query 5 window.
    pub incident_window: WindowSpec,
    /// Query 7 window (tumbling).
    pub mobility_window: WindowSpec,
    /// Parking-per-zone window.
    pub parking_window: WindowSpec,
    /// Query 2: speed below this is `severe_congestion`, km/h.
    pub severe_congestion_speed_kmh: f64,
    /// Query 2: occupancy above this is `overcapacity`, percent.
    pub overcapacity_occupancy_pct: f64,
    /// Query 4: occupancy rate above this is an overcrowded vehicle, percent.
    pub overcrowded_occupancy_rate_pct: f64,
    /// Most windows a query may hold open at once; more is a counted `state_limit` error.
    pub max_open_windows: usize,
    /// Most distinct keys one window of a query may hold; more is a counted `state_limit` error.
    pub max_keys_per_window: usize,
    /// Most distinct strings (ids, names) the engine will intern; more is a `state_limit` error.
    pub max_interned_strings: usize,
    /// Most distinct vehicles counted in one transport window.
    pub max_vehicles_per_window: usize,
    /// Keep raw-archive copies of accepted records in the output (for the PostgreSQL archive).
    pub archive_raw: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            watermark_delay_ms: MINUTE_MS,
            trigger_interval_ms: MINUTE_MS,
            console_interval_ms: 30 * SECOND_MS,
            timezone: "UTC".to_owned(),
            max_future_skew_ms: 5 * MINUTE_MS,
            speed_limit_kmh: 250.0,
            traffic_window: WindowSpec::minutes(5, 1),
            transport_window: WindowSpec::minutes(10, 5),
            incident_window: WindowSpec::minutes(15, 5),
            mobility_window: WindowSpec::minutes(5, 5),
            parking_window: WindowSpec::minutes(5, 1),
            severe_congestion_speed_kmh: 5.0,
            overcapacity_occupancy_pct: 95.0,
            overcrowded_occupancy_rate_pct: 90.0,
            max_open_windows: 4096,
            max_keys_per_window: 65_536,
            max_interned_strings: 4_000_000,
            max_vehicles_per_window: 65_536,
            archive_raw: true,
        }
    }
}

/// A configuration the engine cannot run with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A window whose slide does not divide its size, or is not positive.
    #[error("{name}: window size {size_ms} ms must be a positive multiple of slide {slide_ms} ms")]
    Window {
        /// Which window.
        name: &'static str,
        /// Its size.
        size_ms: Millis,
        /// Its slide.
        slide_ms: Millis,
    },
    /// A timezone name the tz database does not know.
    #[error("unknown timezone `{0}`; use an IANA name such as UTC or Europe/Madrid")]
    Timezone(String),
    /// A negative delay or interval.
    #[error("{0} must be positive")]
    NotPositive(&'static str),
}

impl EngineConfig {
    /// Checks the configuration and resolves the timezone.
    pub fn validate(&self) -> Result<chrono_tz::Tz, ConfigError> {
        for (name, w) in [
            ("traffic_window", self.traffic_window),
            ("transport_window", self.transport_window),
            ("incident_window", self.incident_window),
            ("mobility_window", self.mobility_window),
            ("parking_window", self.parking_window),
        ] {
            if w.slide_ms <= 0 || w.size_ms <= 0 || w.size_ms % w.slide_ms != 0 {
                return Err(ConfigError::Window {
                    name,
                    size_ms: w.size_ms,
                    slide_ms: w.slide_ms,
                });
            }
        }
        if self.watermark_delay_ms < 0 {
            return Err(ConfigError::NotPositive("watermark_delay_ms"));
        }
        if self.trigger_interval_ms <= 0 {
            return Err(ConfigError::NotPositive("trigger_interval_ms"));
        }
        if self.console_interval_ms <= 0 {
            return Err(ConfigError::NotPositive("console_interval_ms"));
        }
        self.timezone
            .parse::<chrono_tz::Tz>()
            .map_err(|_| ConfigError::Timezone(self.timezone.clone()))
    }
}
