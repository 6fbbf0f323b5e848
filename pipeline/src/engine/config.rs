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
    #[inline]
    pub fn first_start(self, t: Millis) -> Millis {
        ((t - self.size_ms).div_euclid(self.slide_ms) + 1) * self.slide_ms
    }

    /// Starts of the earliest and the latest windows that hold event time `t`
    /// ([`Self::first_start`], [`Self::last_start`]) with one division: the slide divides the
    /// size (validated), so the earliest is `size - slide` before the latest.
    #[inline]
    pub fn starts(self, t: Millis) -> (Millis, Millis) {
        let last = self.last_start(t);
        (last + self.slide_ms - self.size_ms, last)
    }

    /// Start of the latest window that holds event time `t`.
    #[inline]
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
    /// Largest count accepted in one reading (vehicle_flow, passenger_count, capacity, parking
    /// spaces, lanes, minutes); above it the reading is an `impossible_value`.
    pub count_limit: i64,
    /// Largest message accepted, bytes; a larger one is dead-lettered `input_limit` with only its
    /// first `max_message_bytes` kept.
    pub max_message_bytes: usize,
    /// Longest string field accepted (ids, names, descriptions), bytes after unescaping; a longer
    /// one is dead-lettered `input_limit`.
    pub max_string_bytes: usize,
    /// Deepest nesting of objects and arrays accepted (the message object is depth 1); deeper is
    /// dead-lettered `input_limit`.
    pub max_nesting_depth: usize,
    /// Most windows a query may hold open at once; more is a counted `state_limit` error. Must
    /// cover what the windows and the watermark keep open in normal operation (checked).
    pub max_open_windows: usize,
    /// Most distinct keys (zone and road, line, zone and severity) a windowed query may hold in
    /// its open windows; a record with a new key beyond it is dead-lettered `state_limit`.
    pub max_keys_per_query: usize,
    /// Most distinct keys one window of a query may hold; more is a counted `state_limit` error.
    pub max_keys_per_window: usize,
    /// Most distinct strings (ids, names) the engine holds; more is a `state_limit` error.
    pub max_interned_strings: usize,
    /// Most distinct devices (sensors, vehicles, car parks, incidents) a topic tracks at once for
    /// duplicate detection and distinct-vehicle counts; a record of a new device beyond it is
    /// dead-lettered `state_limit`.
    pub max_devices_per_topic: usize,
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
            // A city's counts per 5-second reading are in the hundreds at most; a million
            // leaves room for any real sensor and keeps every window sum far from overflow.
            count_limit: 1_000_000,
            // Generated messages are 300-450 bytes; 16 KiB leaves room for fields a newer
            // producer may add and bounds each archive copy and dead letter.
            max_message_bytes: 16 * 1024,
            // The longest generated string is 41 bytes (an incident description).
            max_string_bytes: 256,
            // Messages nest 2 deep (the location object); 16 leaves room for extra metadata.
            max_nesting_depth: 16,
            // A query keeps (watermark + size) / slide + 1 windows open, plus size / slide while
            // a record ahead of the watermark is added: 13 for traffic at these defaults, with
            // one of margin; 64 leaves room for a watermark of up to 50 minutes.
            max_open_windows: 64,
            // The thesis city has 7 (zone, road) pairs, 8 lines, 5 parking zones and 20 (zone,
            // severity) pairs, whatever the load factor; 1,024 is 50 times the largest.
            max_keys_per_query: 1024,
            max_keys_per_window: 1024,
            // The key and device bounds allow about 2 x 1,024 traffic names + 3 x 1,024 other
            // keys + 4,096 vehicles = 9,216 live names; interned strings are freed with the
            // last window that uses them.
            max_interned_strings: 16_384,
            // Devices grow with the load factor: 210 sensors and 330 buses at 10x; 4,096 is
            // 12 times that.
            max_devices_per_topic: 4096,
            max_vehicles_per_window: 4096,
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
    /// A bound the normal flow of records would hit.
    #[error(
        "max_open_windows = {max} is below the {needed} windows {name} keeps open with \
         watermark_delay_ms = {delay_ms}; raise max_open_windows"
    )]
    OpenWindows {
        /// The configured bound.
        max: usize,
        /// What the window needs.
        needed: usize,
        /// Which window.
        name: &'static str,
        /// The watermark delay.
        delay_ms: Millis,
    },
}

impl EngineConfig {
    fn windows(&self) -> [(&'static str, WindowSpec); 5] {
        [
            ("traffic_window", self.traffic_window),
            ("transport_window", self.transport_window),
            ("incident_window", self.incident_window),
            ("mobility_window", self.mobility_window),
            ("parking_window", self.parking_window),
        ]
    }

    /// Refuses bounds that normal input would hit, or that leave no room at all.
    fn check_bounds(&self) -> Result<(), ConfigError> {
        for (name, w) in self.windows() {
            // Open windows start after (watermark - size) and at or before the highest event
            // time; a record ahead of it adds size/slide more before the watermark moves.
            let span = self.watermark_delay_ms.saturating_add(w.size_ms);
            let needed = span.div_euclid(w.slide_ms) + 2 + w.windows_per_record();
            let needed = usize::try_from(needed).unwrap_or(usize::MAX);
            if self.max_open_windows < needed {
                return Err(ConfigError::OpenWindows {
                    max: self.max_open_windows,
                    needed,
                    name,
                    delay_ms: self.watermark_delay_ms,
                });
            }
        }
        for (name, v) in [
            ("max_message_bytes", self.max_message_bytes),
            ("max_string_bytes", self.max_string_bytes),
            ("max_nesting_depth", self.max_nesting_depth),
            ("max_keys_per_query", self.max_keys_per_query),
            ("max_keys_per_window", self.max_keys_per_window),
            ("max_interned_strings", self.max_interned_strings),
            ("max_devices_per_topic", self.max_devices_per_topic),
            ("max_vehicles_per_window", self.max_vehicles_per_window),
        ] {
            if v == 0 {
                return Err(ConfigError::NotPositive(name));
            }
        }
        if self.count_limit <= 0 {
            return Err(ConfigError::NotPositive("count_limit"));
        }
        Ok(())
    }

    /// Checks the configuration and resolves the timezone.
    pub fn validate(&self) -> Result<chrono_tz::Tz, ConfigError> {
        for (name, w) in self.windows() {
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
        self.check_bounds()?;
        self.timezone
            .parse::<chrono_tz::Tz>()
            .map_err(|_| ConfigError::Timezone(self.timezone.clone()))
    }
}
