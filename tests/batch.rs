//! The batch job and the archive backfill against a real PostgreSQL.
//!
//! Like tests/services.rs they read `POSTGRES_URL` from the environment
//! (`eval "$(bash scripts/services.sh env)"`) and are marked `#[ignore = "needs the services"]`;
//! `.ci/run` runs them with `--include-ignored`, where an unreachable PostgreSQL fails them
//! loudly. Each test works in a schema of its own and drops it at the end.
#![cfg(feature = "services")]

use generator::backfill::{self, Target};
use generator::{Generator, GeneratorConfig};
use pipeline::batch::{BatchConfig, BatchError, run};
use pipeline::model::Topic;
use pipeline::sink::postgres::{self, PostgresSink};
use pipeline::time::{DAY_MS, HOUR_MS, Millis, parse};
use tokio_postgres::Client;

/// One test at a time: they share one PostgreSQL on a small machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn postgres_url() -> String {
    std::env::var("POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/smart_city".into())
}

fn ms(text: &str) -> Millis {
    parse(text).unwrap().utc_millis().unwrap()
}

/// A fresh schema `name` with the streaming job's archive tables, and a client whose
/// search_path is that schema.
async fn fresh_schema(name: &str) -> Client {
    let url = postgres_url();
    let admin = postgres::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at POSTGRES_URL is not reachable: {e}"));
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
        .await
        .unwrap();
    PostgresSink::new(admin, name).await.unwrap();
    let client = postgres::connect(&url).await.unwrap();
    client
        .batch_execute(&format!("SET search_path TO {name}"))
        .await
        .unwrap();
    client
}

async fn drop_schema(client: &Client, name: &str) {
    client
        .batch_execute(&format!("DROP SCHEMA {name} CASCADE"))
        .await
        .unwrap();
}

fn config(schema: &str) -> BatchConfig {
    let mut c = BatchConfig::new(&postgres_url(), schema);
    c.ready_attempts = 3;
    c
}

/// One hand-made traffic reading: sensor, zone, time, speed, flow, congestion level.
async fn reading(
    c: &Client,
    sensor: &str,
    zone: &str,
    t: &str,
    speed: f64,
    flow: i64,
    level: &str,
) {
    c.execute(
        "INSERT INTO traffic_data (sensor_id, event_time, road_id, road_name, zone_id, lat, lon,
             speed_kmh, vehicle_flow, occupancy_percent, congestion_level, data_quality)
         VALUES ($1, $2::text::timestamptz, 'road-1', 'Road 1', $3, 40.4, -3.7, $4, $5, 10.0, $6,
             'good')",
        &[&sensor, &t, &zone, &speed, &flow, &level],
    )
    .await
    .unwrap();
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

// Proves each feature on a hand-made archive equals the value worked out by hand: calendar
// columns and rush flags, rolling means over (t - 15 min, t] and (t - 1 h, t], the previous
// value, the value exactly 1 h, 1 day and 7 days earlier, the zone step, the hour-of-week
// profile and the congestion-level shares.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the services"]
async fn features_match_values_worked_out_by_hand() {
    let _serial = SERIAL.lock().await;
    let schema = "batch_test_hand";
    let c = fresh_schema(schema).await;
    // Sensor A (zone-1): Monday 2026-11-16 08:00, Sunday 2026-11-22 08:00, then Monday
    // 2026-11-23 from 07:00 to 08:00. Sensor B (zone-1): one reading at 08:01.
    for (t, speed, flow, level) in [
        ("2026-11-16T08:00:00Z", 11.0, 1, "low"),
        ("2026-11-22T08:00:00Z", 12.0, 1, "low"),
        ("2026-11-23T07:00:00Z", 60.0, 6, "low"),
        ("2026-11-23T07:05:00Z", 20.0, 2, "low"),
        ("2026-11-23T07:50:00Z", 50.0, 5, "low"),
        ("2026-11-23T07:55:00Z", 40.0, 4, "low"),
        ("2026-11-23T08:00:00Z", 30.0, 3, "medium"),
    ] {
        reading(&c, "TS-A", "zone-1", t, speed, flow, level).await;
    }
    reading(
        &c,
        "TS-B",
        "zone-1",
        "2026-11-23T08:01:00Z",
        10.0,
        1,
        "high",
    )
    .await;

    let report = run(&config(schema)).await.expect("the batch job runs");
    assert_eq!(report.traffic_readings, 8);
    assert_eq!(report.from_ms, ms("2026-11-16T08:00:00Z"));
    assert_eq!(report.to_ms, ms("2026-11-23T08:01:00.001Z"));

    // Sensor A at Monday 08:00.
    let r = c
        .query_one(
            "SELECT hour_of_day, day_of_week, is_weekend, is_morning_rush, is_evening_rush,
                 speed_mean_15m, speed_mean_1h, flow_mean_15m, flow_mean_1h, speed_lag_1,
                 speed_1h_earlier, speed_1d_earlier, speed_7d_earlier
             FROM sensor_features WHERE sensor_id = 'TS-A' AND event_time = '2026-11-23T08:00:00Z'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((r.get::<_, i16>(0), r.get::<_, i16>(1)), (8, 1));
    assert_eq!(
        (
            r.get::<_, bool>(2),
            r.get::<_, bool>(3),
            r.get::<_, bool>(4)
        ),
        (false, true, false)
    );
    // (07:45, 08:00]: 50, 40, 30. (07:00, 08:00]: 20, 50, 40, 30 (07:00 itself is out).
    assert!(
        close(r.get(5), 40.0),
        "speed_mean_15m {}",
        r.get::<_, f64>(5)
    );
    assert!(
        close(r.get(6), 35.0),
        "speed_mean_1h {}",
        r.get::<_, f64>(6)
    );
    assert!(close(r.get(7), 4.0), "flow_mean_15m {}", r.get::<_, f64>(7));
    assert!(close(r.get(8), 3.5), "flow_mean_1h {}", r.get::<_, f64>(8));
    assert_eq!(r.get::<_, Option<f64>>(9), Some(40.0));
    assert_eq!(r.get::<_, Option<f64>>(10), Some(60.0));
    assert_eq!(r.get::<_, Option<f64>>(11), Some(12.0));
    assert_eq!(r.get::<_, Option<f64>>(12), Some(11.0));

    // Sensor A at Monday 07:05: nothing an hour, a day or a week earlier; Sunday is a weekend.
    let r = c
        .query_one(
            "SELECT speed_lag_1, speed_1h_earlier, speed_1d_earlier, speed_7d_earlier,
                 speed_mean_1h
             FROM sensor_features WHERE sensor_id = 'TS-A' AND event_time = '2026-11-23T07:05:00Z'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, Option<f64>>(0), Some(60.0));
    assert_eq!(r.get::<_, Option<f64>>(1), None);
    assert_eq!(r.get::<_, Option<f64>>(2), None);
    assert_eq!(r.get::<_, Option<f64>>(3), None);
    assert!(close(r.get(4), 40.0));
    let (dow, weekend): (i16, bool) = c
        .query_one(
            "SELECT day_of_week, is_weekend FROM sensor_features
             WHERE sensor_id = 'TS-A' AND event_time = '2026-11-22T08:00:00Z'",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!((dow, weekend), (7, true));
    let n: i64 = c
        .query_one("SELECT count(*) FROM sensor_features", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 8);

    // Zone-1's step [08:00, 08:05): A's 30 km/h (flow 3) and B's 10 km/h (flow 1).
    let r = c
        .query_one(
            "SELECT avg_speed_kmh, total_vehicle_flow, readings, speed_lag_1, speed_1d_earlier
             FROM zone_features WHERE zone_id = 'zone-1' AND step_start = '2026-11-23T08:00:00Z'",
            &[],
        )
        .await
        .unwrap();
    assert!(close(r.get(0), 20.0));
    assert_eq!((r.get::<_, i64>(1), r.get::<_, i64>(2)), (4, 2));
    assert_eq!(r.get::<_, Option<f64>>(3), Some(40.0));
    assert_eq!(r.get::<_, Option<f64>>(4), Some(12.0));

    // Hour of week: Monday 07 h = 7 holds 60, 20, 50, 40; Monday 08 h = 8 holds 11 and 30 for
    // A, and 11, 30, 10 for the zone; Sunday 08 h = 6 * 24 + 8 = 152 holds 12.
    let profile = |scope: &'static str, id: &'static str, how: i16| {
        let c = &c;
        async move {
            c.query_one(
                "SELECT avg_speed_kmh, readings FROM hour_of_week_profile
                 WHERE scope = $1 AND entity_id = $2 AND hour_of_week = $3",
                &[&scope, &id, &how],
            )
            .await
            .map(|r| (r.get::<_, f64>(0), r.get::<_, i64>(1)))
            .unwrap()
        }
    };
    assert_eq!(profile("sensor", "TS-A", 7).await, (42.5, 4));
    assert_eq!(profile("sensor", "TS-A", 8).await, (20.5, 2));
    assert_eq!(profile("sensor", "TS-A", 152).await, (12.0, 1));
    assert_eq!(profile("zone", "zone-1", 8).await, (17.0, 3));

    // Congestion levels: A is low 6 times of 7, medium once; the zone adds B's high.
    let rows = c
        .query(
            "SELECT scope, entity_id, congestion_level, readings, share
             FROM congestion_distribution ORDER BY scope, entity_id, congestion_level",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, String, String, i64, f64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let expected = [
        ("sensor", "TS-A", "low", 6, 6.0 / 7.0),
        ("sensor", "TS-A", "medium", 1, 1.0 / 7.0),
        ("sensor", "TS-B", "high", 1, 1.0),
        ("zone", "zone-1", "high", 1, 1.0 / 8.0),
        ("zone", "zone-1", "low", 6, 6.0 / 8.0),
        ("zone", "zone-1", "medium", 1, 1.0 / 8.0),
    ];
    assert_eq!(got.len(), expected.len(), "{got:?}");
    for (g, e) in got.iter().zip(expected) {
        assert_eq!(
            (g.0.as_str(), g.1.as_str(), g.2.as_str(), g.3),
            (e.0, e.1, e.2, e.3)
        );
        assert!(close(g.4, e.4), "{g:?}");
    }

    // A range with nothing in it is a clear message, not a crash.
    let mut outside = config(schema);
    outside.from_ms = Some(ms("2025-01-01T00:00:00Z"));
    outside.to_ms = Some(ms("2025-01-02T00:00:00Z"));
    let err = run(&outside).await.unwrap_err();
    assert!(matches!(err, BatchError::NoDataInRange { .. }), "{err}");
    assert!(
        err.to_string().contains("covers 2026-11-16T08:00:00Z"),
        "{err}"
    );
    drop_schema(&c, schema).await;
}

/// A digest of a table's rows in key order (`columns` only, so the archive's `updated_at` is
/// left out).
async fn digest(c: &Client, table: &str, columns: &str, key: &str) -> String {
    c.query_one(
        &format!(
            "SELECT count(*)::text || ':' || coalesce(md5(string_agg(row({columns})::text, '|' \
             ORDER BY {key})), '') FROM {table} t"
        ),
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

async fn archive_digest(c: &Client) -> Vec<String> {
    let mut out = Vec::new();
    for topic in Topic::ALL {
        let t = postgres::archive_table(topic);
        let cols: Vec<String> = t
            .columns
            .iter()
            .map(|c| format!("\"{}\"", c.name))
            .collect();
        out.push(digest(c, t.name, &cols.join(", "), &t.key.join(", ")).await);
    }
    out
}

async fn features_digest(c: &Client) -> Vec<String> {
    let mut out = Vec::new();
    for (table, key) in pipeline::batch::sql::TABLES {
        out.push(digest(c, table, "t.*", key).await);
    }
    out
}

// Proves on a seeded backfill (15 days of the default city at 30-minute steps) that: the
// backfill writes one reading per device per step; the same seed writes the same rows again;
// the batch job's rolling mean and day-earlier value of a sensor match a computation over its
// raw readings; every zone gets 24 forecast hours and both models' error on the held-out week;
// and a second run of the job leaves every table identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the services"]
async fn backfill_and_batch_are_reproducible() {
    let _serial = SERIAL.lock().await;
    let schema = "batch_test_backfill";
    let c = fresh_schema(schema).await;
    let days = 15;
    let end = ms("2026-11-24T00:00:00Z");
    let cfg = backfill::config(&GeneratorConfig::default(), end, days, 30 * 60_000);
    let generator = Generator::new(&cfg, 7).unwrap();
    let target = Target {
        url: postgres_url(),
        schema: schema.into(),
    };
    let connect = || async { postgres::connect(&postgres_url()).await.unwrap() };
    let first = backfill::run(&generator, connect().await, &target, |_| {})
        .await
        .unwrap();
    let steps = u64::from(days) * 48;
    let rows: std::collections::BTreeMap<_, _> = first.rows.iter().copied().collect();
    assert_eq!(rows["traffic_data"], 21 * steps);
    assert_eq!(rows["public_transport"], 33 * steps);
    assert_eq!(rows["parking_data"], 12 * steps);
    assert!(rows["incidents"] > 0);
    assert_eq!(first.replaced, 0);
    let archive = archive_digest(&c).await;
    let again = backfill::run(&generator, connect().await, &target, |_| {})
        .await
        .unwrap();
    assert_eq!(again.rows, first.rows);
    assert_eq!(again.replaced, first.total());
    assert_eq!(
        archive_digest(&c).await,
        archive,
        "the same seed gave other rows"
    );

    let report = run(&config(schema)).await.expect("the batch job runs");
    assert_eq!(report.traffic_readings, 21 * steps);
    let features = features_digest(&c).await;

    // One sensor's features against its raw readings.
    let raw: Vec<(Millis, f64)> = c
        .query(
            "SELECT (extract(epoch FROM event_time) * 1000)::int8, speed_kmh FROM traffic_data
             WHERE sensor_id = 'TS-001' ORDER BY event_time",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let got: Vec<(Millis, f64, Option<f64>)> = c
        .query(
            "SELECT (extract(epoch FROM event_time) * 1000)::int8, speed_mean_1h, speed_1d_earlier
             FROM sensor_features WHERE sensor_id = 'TS-001' ORDER BY event_time",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(got.len(), raw.len());
    for &(t, mean_1h, day_before) in &got {
        let window: Vec<f64> = raw
            .iter()
            .filter(|(u, _)| *u > t - HOUR_MS && *u <= t)
            .map(|r| r.1)
            .collect();
        let expected = window.iter().sum::<f64>() / window.len() as f64;
        assert!(close(mean_1h, expected), "{t}: {mean_1h} vs {expected}");
        let expected = raw.iter().find(|(u, _)| *u == t - DAY_MS).map(|r| r.1);
        assert_eq!(day_before, expected, "{t}");
    }
    assert!(got.iter().any(|g| g.2.is_some()));

    assert_eq!(report.forecasts.len(), 5);
    for f in &report.forecasts {
        assert_eq!(f.points.len(), 24, "{}", f.zone_id);
        assert_eq!(f.seasonal.hours, 168, "{}", f.zone_id);
        assert!(f.seasonal.mae_kmh.is_some() && f.naive.mae_kmh.is_some());
    }
    let n: i64 = c
        .query_one("SELECT count(*) FROM speed_forecast_error", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 10);

    let rerun = run(&config(schema)).await.expect("the second run");
    assert_eq!(rerun.forecasts, report.forecasts);
    assert_eq!(
        features_digest(&c).await,
        features,
        "a re-run changed the tables"
    );
    drop_schema(&c, schema).await;
}

// Proves an empty archive gets a clear message naming the table and how to fill it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the services"]
async fn empty_archive_is_a_clear_message() {
    let _serial = SERIAL.lock().await;
    let schema = "batch_test_empty";
    let c = fresh_schema(schema).await;
    let err = run(&config(schema)).await.unwrap_err();
    assert!(matches!(err, BatchError::EmptyArchive { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("the archive is empty"), "{text}");
    assert!(text.contains("batch_test_empty.traffic_data"), "{text}");
    assert!(text.contains("generator backfill"), "{text}");
    drop_schema(&c, schema).await;
}
