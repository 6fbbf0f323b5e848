//! The batch job's shell: waits for PostgreSQL, makes sure the archive and feature tables exist,
//! resolves the range, and runs every stage in one transaction, reporting each.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::forecast::{self, HourlySpeed};
use super::sql;
use crate::sink::postgres::{self, PostgresSink};
use crate::streaming::redact_url;
use crate::time::{Millis, format_rfc3339};

/// Memory PostgreSQL may use for each sort and hash of the run: the windows sort a sensor's
/// whole history, which spills to disk at the 4 MB default.
const WORK_MEM: &str = "256MB";

/// What to compute, where.
#[derive(Clone, Debug)]
pub struct BatchConfig {
    /// `postgres://user@host:port/db` (may carry a password; never logged).
    pub url: String,
    /// Schema of the archive and of the feature tables.
    pub schema: String,
    /// First instant of the range, ms since the epoch; the archive's first reading when absent.
    pub from_ms: Option<Millis>,
    /// First instant after the range, ms; just after the archive's last reading when absent.
    pub to_ms: Option<Millis>,
    /// Step of the zone features, ms (a whole number of seconds).
    pub zone_step_ms: Millis,
    /// Attempts to reach PostgreSQL, one second apart; 0 waits until it answers.
    pub ready_attempts: u32,
}

impl BatchConfig {
    /// The whole archive of `schema`, zones in 5-minute steps, waiting for PostgreSQL.
    pub fn new(url: &str, schema: &str) -> Self {
        BatchConfig {
            url: url.to_owned(),
            schema: schema.to_owned(),
            from_ms: None,
            to_ms: None,
            zone_step_ms: 5 * 60_000,
            ready_attempts: 0,
        }
    }
}

/// Why the job did not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// PostgreSQL did not answer.
    #[error(
        "PostgreSQL at {address} not reachable after {attempts} attempts ({last_error}); is it \
         running? set POSTGRES_URL or --postgres-url"
    )]
    Unavailable {
        /// Where (no credentials).
        address: String,
        /// Attempts made.
        attempts: u32,
        /// The last connection error.
        last_error: String,
    },
    /// The archive holds no traffic reading at all.
    #[error(
        "the archive is empty: `{schema}.traffic_data` holds no traffic readings, so there is \
         nothing to compute; fill it with `pipeline streaming` or `generator backfill --seed 42 \
         --days 180`, then run the batch job again"
    )]
    EmptyArchive {
        /// The schema read.
        schema: String,
    },
    /// The range holds no traffic reading.
    #[error(
        "no traffic readings in [{from}, {to}): the archive `{schema}.traffic_data` covers \
         {first} to {last}; choose --from/--to inside it, or leave them out for all of it"
    )]
    NoDataInRange {
        /// The schema read.
        schema: String,
        /// Range start, RFC 3339.
        from: String,
        /// Range end, RFC 3339.
        to: String,
        /// First reading of the archive.
        first: String,
        /// Last reading of the archive.
        last: String,
    },
    /// A configuration that cannot work.
    #[error("{0}")]
    Invalid(String),
    /// A statement failed.
    #[error("batch stage `{stage}` failed: {detail}")]
    Database {
        /// Which stage.
        stage: &'static str,
        /// The server's message.
        detail: String,
    },
}

fn db(stage: &'static str) -> impl Fn(tokio_postgres::Error) -> BatchError {
    move |e| {
        // The top-level message is generic ("db error"); the cause says what PostgreSQL said.
        let cause = std::error::Error::source(&e).map_or(String::new(), |s| format!(": {s}"));
        BatchError::Database {
            stage,
            detail: format!("{e}{cause}"),
        }
    }
}

/// One stage's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct StageReport {
    /// Stage name.
    pub stage: &'static str,
    /// Rows written (or read, for the forecast's input).
    pub rows: u64,
    /// Wall-clock time, ms.
    pub elapsed_ms: u64,
}

/// What a run did.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchReport {
    /// Range computed, ms.
    pub from_ms: Millis,
    /// End of the range (exclusive), ms.
    pub to_ms: Millis,
    /// Traffic readings in the range.
    pub traffic_readings: u64,
    /// Each stage, in order.
    pub stages: Vec<StageReport>,
    /// The forecast of each zone, with the held-out errors.
    pub forecasts: Vec<forecast::ZoneForecast>,
    /// Wall-clock time of the whole run after PostgreSQL answered, ms.
    pub elapsed_ms: u64,
}

/// A monotonic instant, to report how long stages take.
#[allow(clippy::disallowed_methods)] // Measuring the job's own cost is a shell's business.
fn now() -> Instant {
    Instant::now()
}

/// Connects to PostgreSQL, retrying once a second (`attempts` 0: until it answers), with a line
/// for each attempt; prints "PostgreSQL is ready at ..." like the streaming job.
pub async fn wait_for_postgres(url: &str, attempts: u32) -> Result<Client, BatchError> {
    let address = redact_url(url);
    let mut n = 0u32;
    loop {
        n += 1;
        let last_error =
            match tokio::time::timeout(Duration::from_secs(5), postgres::connect(url)).await {
                Ok(Ok(client)) => {
                    println!("PostgreSQL is ready at {address}");
                    return Ok(client);
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no answer within 5 s".to_owned(),
            };
        if attempts != 0 && n >= attempts {
            return Err(BatchError::Unavailable {
                address,
                attempts: n,
                last_error,
            });
        }
        tracing::info!(address, attempt = n, attempts, error = %last_error, "Waiting for PostgreSQL.");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Runs the batch job once.
pub async fn run(config: &BatchConfig) -> Result<BatchReport, BatchError> {
    if config.zone_step_ms < 1000 || config.zone_step_ms % 1000 != 0 {
        return Err(BatchError::Invalid(format!(
            "the zone step must be a whole number of seconds, at least 1 s, not {} ms",
            config.zone_step_ms
        )));
    }
    let client = wait_for_postgres(&config.url, config.ready_attempts).await?;
    // The archive tables are the streaming job's: its migrations create them if nothing ran yet,
    // so an empty archive is reported as such rather than as a missing table.
    PostgresSink::new(client, &config.schema)
        .await
        .map_err(|e| BatchError::Invalid(e.to_string()))?;
    let mut client = postgres::connect(&config.url)
        .await
        .map_err(|e| BatchError::Invalid(e.to_string()))?;
    let started = now();
    client
        .batch_execute(&format!("SET search_path TO {}", config.schema))
        .await
        .map_err(db("select the schema"))?;
    let tx = client.transaction().await.map_err(db("begin"))?;
    tx.batch_execute(&format!("SET LOCAL work_mem = '{WORK_MEM}'"))
        .await
        .map_err(db("set work_mem"))?;
    // One batch job at a time per schema: a second one waits here, then recomputes.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('smart_city_batch_' || $1::text))",
        &[&config.schema],
    )
    .await
    .map_err(db("take the batch lock"))?;
    tx.batch_execute(sql::CREATE_TABLES)
        .await
        .map_err(db("create the feature tables"))?;
    let (from_ms, to_ms, readings) = resolve_range(&tx, config).await?;
    tracing::info!(
        from = %format_rfc3339(from_ms),
        to = %format_rfc3339(to_ms),
        traffic_readings = readings,
        "Computing historical features."
    );
    let step_s = config.zone_step_ms / 1000;
    let mut stages = Vec::new();
    let per_reading: [(&'static str, &'static str, &'static str, String); 2] = [
        (
            "sensor_features",
            "sensor_features",
            "event_time",
            sql::insert_sensor_features(),
        ),
        (
            "zone_features",
            "zone_features",
            "step_start",
            sql::insert_zone_features(),
        ),
    ];
    for (stage, table, column, insert) in per_reading {
        let t = now();
        clear_range(&tx, table, column, from_ms, to_ms).await?;
        let rows = if table == "zone_features" {
            tx.execute(&insert, &[&from_ms, &to_ms, &step_s]).await
        } else {
            tx.execute(&insert, &[&from_ms, &to_ms]).await
        }
        .map_err(db(stage))?;
        stages.push(stage_done(stage, rows, t));
    }
    for (stage, table, insert) in [
        (
            "hour_of_week_profile",
            "hour_of_week_profile",
            sql::insert_hour_of_week_profile(),
        ),
        (
            "congestion_distribution",
            "congestion_distribution",
            sql::insert_congestion_distribution(),
        ),
    ] {
        let t = now();
        tx.batch_execute(&format!("DELETE FROM {table}"))
            .await
            .map_err(db(stage))?;
        let rows = tx
            .execute(&insert, &[&from_ms, &to_ms])
            .await
            .map_err(db(stage))?;
        stages.push(stage_done(stage, rows, t));
    }
    let t = now();
    let hours: Vec<HourlySpeed> = tx
        .query(&sql::select_zone_hours(), &[&from_ms, &to_ms])
        .await
        .map_err(db("zone hours"))?
        .into_iter()
        .map(|r| HourlySpeed {
            zone_id: r.get(0),
            hour_ms: r.get(1),
            speed_kmh: r.get(2),
        })
        .collect();
    let forecasts = forecast::forecast(&hours);
    write_forecasts(&tx, &forecasts).await?;
    stages.push(stage_done("speed_forecast", hours.len() as u64, t));
    tx.execute(
        &sql::upsert_range(),
        &[&from_ms, &to_ms, &(readings as i64)],
    )
    .await
    .map_err(db("batch_range"))?;
    let t = now();
    tx.commit().await.map_err(db("commit"))?;
    stages.push(stage_done("commit", 0, t));
    Ok(BatchReport {
        from_ms,
        to_ms,
        traffic_readings: readings,
        stages,
        forecasts,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

fn stage_done(stage: &'static str, rows: u64, started: Instant) -> StageReport {
    let elapsed_ms = started.elapsed().as_millis() as u64;
    tracing::info!(stage, rows, elapsed_ms, "Batch stage done.");
    StageReport {
        stage,
        rows,
        elapsed_ms,
    }
}

/// The range to compute: the configured one, or the whole archive; an error when it is empty.
async fn resolve_range(
    tx: &tokio_postgres::Transaction<'_>,
    config: &BatchConfig,
) -> Result<(Millis, Millis, u64), BatchError> {
    let row = tx
        .query_one(sql::SELECT_COVERAGE, &[])
        .await
        .map_err(db("read the archive's coverage"))?;
    let (Some(first), Some(last)) = (row.get::<_, Option<i64>>(0), row.get::<_, Option<i64>>(1))
    else {
        return Err(BatchError::EmptyArchive {
            schema: config.schema.clone(),
        });
    };
    let from_ms = config.from_ms.unwrap_or(first);
    let to_ms = config.to_ms.unwrap_or(last + 1);
    if from_ms >= to_ms {
        return Err(BatchError::Invalid(format!(
            "the range [{}, {}) is empty: --from must come before --to",
            format_rfc3339(from_ms),
            format_rfc3339(to_ms)
        )));
    }
    let readings: i64 = tx
        .query_one(&sql::count_range(), &[&from_ms, &to_ms])
        .await
        .map_err(db("count the range's readings"))?
        .get(0);
    if readings == 0 {
        return Err(BatchError::NoDataInRange {
            schema: config.schema.clone(),
            from: format_rfc3339(from_ms),
            to: format_rfc3339(to_ms),
            first: format_rfc3339(first),
            last: format_rfc3339(last),
        });
    }
    Ok((from_ms, to_ms, readings as u64))
}

/// Removes a per-reading table's rows in the range: `TRUNCATE` when it holds nothing else (much
/// faster than deleting a million rows), `DELETE` otherwise.
async fn clear_range(
    tx: &tokio_postgres::Transaction<'_>,
    table: &'static str,
    column: &str,
    from_ms: Millis,
    to_ms: Millis,
) -> Result<(), BatchError> {
    let outside: bool = tx
        .query_one(&sql::rows_outside(table, column), &[&from_ms, &to_ms])
        .await
        .map_err(db(table))?
        .get(0);
    if outside {
        tx.execute(&sql::delete_range(table, column), &[&from_ms, &to_ms])
            .await
            .map_err(db(table))?;
    } else {
        tx.batch_execute(&format!("TRUNCATE {table}"))
            .await
            .map_err(db(table))?;
    }
    Ok(())
}

async fn write_forecasts(
    tx: &tokio_postgres::Transaction<'_>,
    forecasts: &[forecast::ZoneForecast],
) -> Result<(), BatchError> {
    tx.batch_execute("DELETE FROM speed_forecast; DELETE FROM speed_forecast_error")
        .await
        .map_err(db("speed_forecast"))?;
    for f in forecasts {
        let horizons: Vec<i64> = f.points.iter().map(|p| p.horizon_h).collect();
        let targets: Vec<i64> = f.points.iter().map(|p| p.target_hour_ms).collect();
        let speeds: Vec<f64> = f.points.iter().map(|p| p.speed_kmh).collect();
        tx.execute(
            sql::INSERT_FORECAST,
            &[&f.zone_id, &horizons, &targets, &speeds],
        )
        .await
        .map_err(db("speed_forecast"))?;
        for (model, e) in [
            ("seasonal_hour_of_week", f.seasonal),
            ("naive_same_hour_last_week", f.naive),
        ] {
            tx.execute(
                sql::INSERT_FORECAST_ERROR,
                &[
                    &f.zone_id,
                    &model,
                    &e.mae_kmh,
                    &(e.hours as i64),
                    &f.holdout_from_ms,
                    &f.holdout_to_ms,
                ],
            )
            .await
            .map_err(db("speed_forecast_error"))?;
        }
    }
    Ok(())
}
