//! The batch job's SQL: its tables, and the statements that compute the features inside
//! PostgreSQL.
//!
//! PostgreSQL does the set work: the per-reading windows (`avg` over 15-minute and 1-hour
//! `RANGE` frames, `lag`, the value exactly 1 hour, 1 day and 7 days earlier as a one-instant
//! `RANGE` frame), the grouping into zone steps and hours, the hour-of-week profiles and the
//! congestion-level shares (`GROUPING SETS` do the sensor and zone levels in one scan). Times are
//! read in UTC, like the generator's daily profile.
//!
//! Every statement takes the range as `$1` (from) and `$2` (to), epoch milliseconds, and reads
//! the archive from 7 days before `$1` so the windows and lags of the first rows are complete;
//! only rows inside `[$1, $2)` are written.

/// Rush hours (UTC, `[from, to)` hours of the day), as the generator's daily profile (SPEC §1):
/// 07-09 h in the morning, 17-19 h in the evening.
pub const MORNING_RUSH_H: (u32, u32) = (7, 9);
/// See [`MORNING_RUSH_H`].
pub const EVENING_RUSH_H: (u32, u32) = (17, 19);

/// The feature tables, idempotent DDL.
pub const CREATE_TABLES: &str = "
CREATE TABLE IF NOT EXISTS sensor_features (
    sensor_id text NOT NULL,
    event_time timestamptz NOT NULL,
    zone_id text NOT NULL,
    road_id text NOT NULL,
    hour_of_day smallint NOT NULL,
    day_of_week smallint NOT NULL,
    is_weekend boolean NOT NULL,
    is_morning_rush boolean NOT NULL,
    is_evening_rush boolean NOT NULL,
    speed_kmh double precision NOT NULL,
    vehicle_flow bigint NOT NULL,
    occupancy_percent double precision NOT NULL,
    speed_mean_15m double precision NOT NULL,
    speed_mean_1h double precision NOT NULL,
    flow_mean_15m double precision NOT NULL,
    flow_mean_1h double precision NOT NULL,
    speed_lag_1 double precision,
    speed_1h_earlier double precision,
    speed_1d_earlier double precision,
    speed_7d_earlier double precision,
    PRIMARY KEY (sensor_id, event_time)
);
CREATE TABLE IF NOT EXISTS zone_features (
    zone_id text NOT NULL,
    step_start timestamptz NOT NULL,
    hour_of_day smallint NOT NULL,
    day_of_week smallint NOT NULL,
    is_weekend boolean NOT NULL,
    is_morning_rush boolean NOT NULL,
    is_evening_rush boolean NOT NULL,
    avg_speed_kmh double precision NOT NULL,
    total_vehicle_flow bigint NOT NULL,
    avg_occupancy_percent double precision NOT NULL,
    readings bigint NOT NULL,
    speed_mean_15m double precision NOT NULL,
    speed_mean_1h double precision NOT NULL,
    flow_mean_15m double precision NOT NULL,
    flow_mean_1h double precision NOT NULL,
    speed_lag_1 double precision,
    speed_1h_earlier double precision,
    speed_1d_earlier double precision,
    speed_7d_earlier double precision,
    PRIMARY KEY (zone_id, step_start)
);
CREATE TABLE IF NOT EXISTS hour_of_week_profile (
    scope text NOT NULL,
    entity_id text NOT NULL,
    hour_of_week smallint NOT NULL,
    avg_speed_kmh double precision NOT NULL,
    avg_vehicle_flow double precision NOT NULL,
    avg_occupancy_percent double precision NOT NULL,
    readings bigint NOT NULL,
    PRIMARY KEY (scope, entity_id, hour_of_week)
);
CREATE TABLE IF NOT EXISTS congestion_distribution (
    scope text NOT NULL,
    entity_id text NOT NULL,
    congestion_level text NOT NULL,
    readings bigint NOT NULL,
    share double precision NOT NULL,
    PRIMARY KEY (scope, entity_id, congestion_level)
);
CREATE TABLE IF NOT EXISTS speed_forecast (
    zone_id text NOT NULL,
    horizon_h smallint NOT NULL,
    target_hour timestamptz NOT NULL,
    speed_kmh double precision NOT NULL,
    PRIMARY KEY (zone_id, horizon_h)
);
CREATE TABLE IF NOT EXISTS speed_forecast_error (
    zone_id text NOT NULL,
    model text NOT NULL,
    mae_kmh double precision,
    hours_evaluated bigint NOT NULL,
    holdout_from timestamptz,
    holdout_to timestamptz,
    PRIMARY KEY (zone_id, model)
);
CREATE TABLE IF NOT EXISTS batch_range (
    id smallint PRIMARY KEY CHECK (id = 1),
    range_from timestamptz NOT NULL,
    range_to timestamptz NOT NULL,
    traffic_readings bigint NOT NULL
)";

/// The tables the job writes, in the order a digest reads them, with their key columns.
pub const TABLES: [(&str, &str); 7] = [
    ("sensor_features", "sensor_id, event_time"),
    ("zone_features", "zone_id, step_start"),
    ("hour_of_week_profile", "scope, entity_id, hour_of_week"),
    (
        "congestion_distribution",
        "scope, entity_id, congestion_level",
    ),
    ("speed_forecast", "zone_id, horizon_h"),
    ("speed_forecast_error", "zone_id, model"),
    ("batch_range", "id"),
];

/// `$n` (epoch milliseconds) as a `timestamptz`.
fn ts(n: u8) -> String {
    format!("('epoch'::timestamptz + ${n}::int8 * interval '1 millisecond')")
}

/// The calendar columns of an instant column `t`: hour of day, ISO day of week (1 = Monday),
/// weekend and rush-hour flags.
fn calendar(t: &str) -> String {
    let hour = format!("extract(hour FROM {t} AT TIME ZONE 'UTC')");
    let dow = format!("extract(isodow FROM {t} AT TIME ZONE 'UTC')");
    format!(
        "{hour}::smallint, {dow}::smallint, {dow} >= 6, \
         {hour} >= {} AND {hour} < {}, {hour} >= {} AND {hour} < {}",
        MORNING_RUSH_H.0, MORNING_RUSH_H.1, EVENING_RUSH_H.0, EVENING_RUSH_H.1
    )
}

/// The window definitions shared by the sensor and zone features, over partition `key` ordered
/// by `t`. Rolling means cover `(t - 15 min, t]` and `(t - 1 h, t]` (an open start, so at
/// 5-minute steps they average 3 and 12 readings); `h1`, `d1`, `d7` are the single instant
/// exactly 1 hour, 1 day and 7 days earlier (NULL when there was no reading then).
fn windows(key: &str, t: &str) -> String {
    format!(
        "WINDOW o AS (PARTITION BY {key} ORDER BY {t}),
         m15 AS (o RANGE BETWEEN interval '899.999999 seconds' PRECEDING AND CURRENT ROW),
         m60 AS (o RANGE BETWEEN interval '3599.999999 seconds' PRECEDING AND CURRENT ROW),
         h1 AS (o RANGE BETWEEN interval '1 hour' PRECEDING AND interval '1 hour' PRECEDING),
         d1 AS (o RANGE BETWEEN interval '1 day' PRECEDING AND interval '1 day' PRECEDING),
         d7 AS (o RANGE BETWEEN interval '7 days' PRECEDING AND interval '7 days' PRECEDING)"
    )
}

/// The archive's traffic readings the features of `[$1, $2)` need: from 7 days before.
fn source_range() -> String {
    format!(
        "event_time >= {} - interval '7 days' AND event_time < {}",
        ts(1),
        ts(2)
    )
}

/// Traffic readings in `[$1, $2)`.
fn in_range(column: &str) -> String {
    format!("{column} >= {} AND {column} < {}", ts(1), ts(2))
}

/// Per-reading features of every traffic sensor.
pub fn insert_sensor_features() -> String {
    format!(
        "INSERT INTO sensor_features
         SELECT * FROM (
             SELECT sensor_id, event_time, zone_id, road_id, {calendar},
                 speed_kmh, vehicle_flow, occupancy_percent,
                 avg(speed_kmh) OVER m15, avg(speed_kmh) OVER m60,
                 avg(vehicle_flow) OVER m15, avg(vehicle_flow) OVER m60,
                 lag(speed_kmh) OVER o,
                 first_value(speed_kmh) OVER h1,
                 first_value(speed_kmh) OVER d1,
                 first_value(speed_kmh) OVER d7
             FROM traffic_data
             WHERE {source}
             {windows}
         ) f
         WHERE {range}",
        calendar = calendar("event_time"),
        source = source_range(),
        windows = windows("sensor_id", "event_time"),
        range = in_range("event_time"),
    )
}

/// Per-step features of every zone: the zone's readings grouped into steps of `$3` seconds
/// (aligned on Monday 2000-01-03 00:00 UTC), then the same windows as the sensors'.
pub fn insert_zone_features() -> String {
    format!(
        "INSERT INTO zone_features
         SELECT * FROM (
             SELECT zone_id, step_start, {calendar},
                 avg_speed_kmh, total_vehicle_flow, avg_occupancy_percent, readings,
                 avg(avg_speed_kmh) OVER m15, avg(avg_speed_kmh) OVER m60,
                 avg(total_vehicle_flow) OVER m15, avg(total_vehicle_flow) OVER m60,
                 lag(avg_speed_kmh) OVER o,
                 first_value(avg_speed_kmh) OVER h1,
                 first_value(avg_speed_kmh) OVER d1,
                 first_value(avg_speed_kmh) OVER d7
             FROM (
                 SELECT zone_id,
                     date_bin($3::int8 * interval '1 second', event_time,
                              timestamptz '2000-01-03 00:00:00+00') AS step_start,
                     avg(speed_kmh) AS avg_speed_kmh,
                     sum(vehicle_flow)::int8 AS total_vehicle_flow,
                     avg(occupancy_percent) AS avg_occupancy_percent,
                     count(*) AS readings
                 FROM traffic_data
                 WHERE {source}
                 GROUP BY 1, 2
             ) z
             {windows}
         ) f
         WHERE {range}",
        calendar = calendar("step_start"),
        source = source_range(),
        windows = windows("zone_id", "step_start"),
        range = in_range("step_start"),
    )
}

/// Hour-of-week (Monday 00 h = 0) means per sensor and per zone over `[$1, $2)`.
pub fn insert_hour_of_week_profile() -> String {
    format!(
        "INSERT INTO hour_of_week_profile
         SELECT CASE WHEN grouping(sensor_id) = 0 THEN 'sensor' ELSE 'zone' END,
             coalesce(sensor_id, zone_id), how,
             avg(speed_kmh), avg(vehicle_flow), avg(occupancy_percent), count(*)
         FROM (
             SELECT sensor_id, zone_id, speed_kmh, vehicle_flow, occupancy_percent,
                 ((extract(isodow FROM event_time AT TIME ZONE 'UTC') - 1) * 24
                   + extract(hour FROM event_time AT TIME ZONE 'UTC'))::smallint AS how
             FROM traffic_data
             WHERE {range}
         ) r
         GROUP BY GROUPING SETS ((sensor_id, how), (zone_id, how))",
        range = in_range("event_time"),
    )
}

/// Readings per congestion level, and their share, per sensor and per zone over `[$1, $2)`.
pub fn insert_congestion_distribution() -> String {
    format!(
        "INSERT INTO congestion_distribution
         SELECT scope, entity_id, congestion_level, readings,
             readings::float8 / sum(readings) OVER (PARTITION BY scope, entity_id)
         FROM (
             SELECT CASE WHEN grouping(sensor_id) = 0 THEN 'sensor' ELSE 'zone' END AS scope,
                 coalesce(sensor_id, zone_id) AS entity_id, congestion_level,
                 count(*) AS readings
             FROM traffic_data
             WHERE {range}
             GROUP BY GROUPING SETS ((sensor_id, congestion_level), (zone_id, congestion_level))
         ) g",
        range = in_range("event_time"),
    )
}

/// Each zone's mean speed per hour over `[$1, $2)`, hours as epoch milliseconds: the forecast's
/// input.
pub fn select_zone_hours() -> String {
    format!(
        "SELECT zone_id,
             (extract(epoch FROM date_bin(interval '1 hour', event_time,
                                          timestamptz '2000-01-03 00:00:00+00')) * 1000)::int8,
             avg(speed_kmh)
         FROM traffic_data
         WHERE {range}
         GROUP BY 1, 2
         ORDER BY 1, 2",
        range = in_range("event_time"),
    )
}

/// The archive's first and last traffic reading, epoch milliseconds (NULL when it is empty).
pub const SELECT_COVERAGE: &str = "SELECT (extract(epoch FROM min(event_time)) * 1000)::int8,
    (extract(epoch FROM max(event_time)) * 1000)::int8
    FROM traffic_data";

/// The traffic readings in `[$1, $2)`.
pub fn count_range() -> String {
    format!(
        "SELECT count(*) FROM traffic_data WHERE {}",
        in_range("event_time")
    )
}

/// Removes a per-reading table's rows in `[$1, $2)` (`column` is the table's time).
pub fn delete_range(table: &str, column: &str) -> String {
    format!("DELETE FROM {table} WHERE {}", in_range(column))
}

/// Whether a per-reading table has rows outside `[$1, $2)` (if not, it is emptied faster with
/// `TRUNCATE`).
pub fn rows_outside(table: &str, column: &str) -> String {
    format!(
        "SELECT EXISTS (SELECT 1 FROM {table} WHERE {column} < {} OR {column} >= {})",
        ts(1),
        ts(2)
    )
}

/// The forecast rows of one zone, from arrays.
pub const INSERT_FORECAST: &str = "INSERT INTO speed_forecast
    SELECT $1::text, u.h::smallint, 'epoch'::timestamptz + u.t * interval '1 millisecond', u.s
    FROM UNNEST($2::int8[], $3::int8[], $4::float8[]) AS u(h, t, s)";

/// One model's error on one zone's held-out week.
pub const INSERT_FORECAST_ERROR: &str = "INSERT INTO speed_forecast_error VALUES ($1, $2, $3, $4,
    'epoch'::timestamptz + $5::int8 * interval '1 millisecond',
    'epoch'::timestamptz + $6::int8 * interval '1 millisecond')";

/// The range the whole-range tables (profiles, distribution, forecast) describe.
pub fn upsert_range() -> String {
    format!(
        "INSERT INTO batch_range VALUES (1, {}, {}, $3)
         ON CONFLICT (id) DO UPDATE SET range_from = EXCLUDED.range_from,
             range_to = EXCLUDED.range_to, traffic_readings = EXCLUDED.traffic_readings",
        ts(1),
        ts(2)
    )
}
