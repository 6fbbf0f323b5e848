//! `generator backfill` (feature `postgres`): a seeded history written straight into the
//! PostgreSQL raw archive with binary `COPY`, for the batch job to read.
//!
//! The history is the generator's own stream with the tick set to the backfill's resolution:
//! one reading per device per step, and the incidents on top. The archive tables are the
//! streaming job's ([`pipeline::sink::postgres::archive_table`]): their columns, in order, drive
//! the encoder here, and its migrations create them. Only what the streaming job would have
//! archived is written: records whose fault makes them unreadable or impossible (malformed JSON,
//! a missing field, out-of-range values), re-sent duplicates and clock-skewed readings (whose
//! time is not the history's) are left out, and a scenario's hostile records are not generated.
//!
//! Each archive table is written over a connection of its own, in one transaction that first
//! deletes the table's rows of the span, so the four `COPY` streams load in parallel on the
//! server and a second backfill of the same span leaves the same rows.
//!
//! This module is the generator crate's one exception to "no I/O": it is a shell around
//! [`Generator::records`], which stays pure.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pipeline::model::{Message, Topic};
use pipeline::sink::postgres::{self as pg, Kind, PostgresSink, Table};
use pipeline::time::Millis;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, Transaction};

use crate::{FaultKind, Generator, GeneratorConfig, Payload, Record};

/// Why a backfill failed.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// PostgreSQL refused or could not be reached.
    #[error("PostgreSQL: {0}")]
    Database(String),
    /// The archive schema has a column the encoder cannot fill: the schema changed without it.
    #[error(
        "archive column {table}.{column} (JSON {pointer}) has no value in the backfill's encoder; \
         add it to generator/src/backfill.rs"
    )]
    UnknownColumn {
        /// Table.
        table: &'static str,
        /// Column.
        column: &'static str,
        /// Where the streaming job reads it from.
        pointer: &'static str,
    },
}

fn database(what: &str) -> impl Fn(tokio_postgres::Error) -> BackfillError + '_ {
    move |e| {
        let cause = std::error::Error::source(&e).map_or(String::new(), |s| format!(": {s}"));
        BackfillError::Database(format!("{what}: {e}{cause}"))
    }
}

/// The generator configuration of a backfill: `base` (the default city or a scenario's) over the
/// `days` before `end_ms`, one reading per device every `resolution_ms`, without hostile records.
pub fn config(
    base: &GeneratorConfig,
    end_ms: Millis,
    days: u32,
    resolution_ms: u64,
) -> GeneratorConfig {
    let span_s = u64::from(days) * 86_400;
    GeneratorConfig {
        start: pipeline::time::format_rfc3339(end_ms - span_s as i64 * 1000),
        duration_s: span_s,
        tick_interval_ms: resolution_ms,
        hostile: Vec::new(),
        ..base.clone()
    }
}

/// Whether the streaming job would have archived this record (see the module's documentation).
pub fn archived(record: &Record<'_>, generator: &Generator) -> bool {
    matches!(record.payload, Payload::Message(_))
        && !matches!(
            record.fault,
            Some(
                FaultKind::OutOfRange
                    | FaultKind::MalformedJson
                    | FaultKind::MissingField
                    | FaultKind::Duplicate
                    | FaultKind::ClockSkew
            )
        )
        && (generator.start_ms()..generator.end_ms()).contains(&record.event_time_ms)
}

/// One value of an archive row, borrowed from the message.
#[derive(Clone, Copy, Debug)]
pub enum Cell<'m> {
    /// `text`.
    Text(&'m str),
    /// `double precision`.
    Float(f64),
    /// `bigint`.
    Int(i64),
    /// `timestamptz`.
    Time(SystemTime),
}

impl Cell<'_> {
    /// The column kind it fills.
    pub fn kind(&self) -> Kind {
        match self {
            Cell::Text(_) => Kind::Text,
            Cell::Float(_) => Kind::Float,
            Cell::Int(_) => Kind::Int,
            Cell::Time(_) => Kind::Time,
        }
    }
}

impl ToSql for Cell<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut tokio_postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Cell::Text(v) => v.to_sql(ty, out),
            Cell::Float(v) => v.to_sql(ty, out),
            Cell::Int(v) => v.to_sql(ty, out),
            Cell::Time(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        [Type::TEXT, Type::FLOAT8, Type::INT8, Type::TIMESTAMPTZ].contains(ty)
    }

    to_sql_checked!();
}

/// The value of the column whose JSON pointer is `pointer` in `msg`; `/event_time` is the
/// record's event time. `None` for a pointer the encoder does not know.
pub fn cell<'m>(msg: &'m Message<'_>, event_time: SystemTime, pointer: &str) -> Option<Cell<'m>> {
    use Cell::{Float, Int, Text, Time};
    if pointer == "/event_time" {
        return Some(Time(event_time));
    }
    Some(match msg {
        Message::Traffic(m) => match pointer {
            "/sensor_id" => Text(&m.sensor_id),
            "/road_id" => Text(&m.road_id),
            "/road_name" => Text(&m.road_name),
            "/zone_id" => Text(&m.zone_id),
            "/location/lat" => Float(m.location.lat),
            "/location/lon" => Float(m.location.lon),
            "/speed_kmh" => Float(m.speed_kmh),
            "/vehicle_flow" => Int(m.vehicle_flow),
            "/occupancy_percent" => Float(m.occupancy_percent),
            "/congestion_level" => Text(m.congestion_level.wire_name()),
            "/data_quality" => Text(m.data_quality.wire_name()),
            _ => return None,
        },
        Message::Transport(m) => match pointer {
            "/vehicle_id" => Text(&m.vehicle_id),
            "/line_id" => Text(&m.line_id),
            "/line_number" => Text(&m.line_number),
            "/current_stop" => Text(&m.current_stop),
            "/next_stop" => Text(&m.next_stop),
            "/direction" => Text(m.direction.wire_name()),
            "/location/lat" => Float(m.location.lat),
            "/location/lon" => Float(m.location.lon),
            "/speed_kmh" => Float(m.speed_kmh),
            "/passenger_count" => Int(m.passenger_count),
            "/capacity" => Int(m.capacity),
            "/occupancy_rate" => Float(m.occupancy_rate),
            "/delay_minutes" => Float(m.delay_minutes),
            "/status" => Text(m.status.wire_name()),
            _ => return None,
        },
        Message::Parking(m) => match pointer {
            "/parking_id" => Text(&m.parking_id),
            "/name" => Text(&m.name),
            "/zone_id" => Text(&m.zone_id),
            "/type" => Text(&m.kind),
            "/location/lat" => Float(m.location.lat),
            "/location/lon" => Float(m.location.lon),
            "/total_spaces" => Int(m.total_spaces),
            "/occupied_spaces" => Int(m.occupied_spaces),
            "/available_spaces" => Int(m.available_spaces),
            "/occupancy_rate" => Float(m.occupancy_rate),
            "/hourly_rate" => Float(m.hourly_rate),
            "/status" => Text(&m.status),
            _ => return None,
        },
        Message::Incident(m) => match pointer {
            "/incident_id" => Text(&m.incident_id),
            "/type" => Text(m.kind.wire_name()),
            "/severity" => Text(m.severity.name()),
            "/location/road_id" => Text(&m.location.road_id),
            "/location/road_name" => Text(&m.location.road_name),
            "/location/zone_id" => Text(&m.location.zone_id),
            "/location/lat" => Float(m.location.lat),
            "/location/lon" => Float(m.location.lon),
            "/description" => Text(&m.description),
            "/estimated_duration_min" => Int(m.estimated_duration_min),
            "/affected_lanes" => Int(m.affected_lanes),
            "/status" => Text(&m.status),
            _ => return None,
        },
    })
}

fn sql_type(kind: Kind) -> Type {
    match kind {
        Kind::Text => Type::TEXT,
        Kind::Float => Type::FLOAT8,
        Kind::Int => Type::INT8,
        Kind::Time => Type::TIMESTAMPTZ,
        Kind::Bool => Type::BOOL,
    }
}

/// Progress of a running backfill.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Rows written so far.
    pub rows: u64,
    /// Share of the span generated, 0..=1.
    pub done: f64,
    /// Seconds since the start.
    pub elapsed_s: f64,
}

/// What a backfill wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct BackfillReport {
    /// Rows per archive table, in [`Topic::ALL`] order.
    pub rows: Vec<(&'static str, u64)>,
    /// Rows of the span that were already there and were replaced.
    pub replaced: u64,
    /// Seconds from the first row sent to the last commit.
    pub elapsed_s: f64,
}

impl BackfillReport {
    /// Rows written in all.
    pub fn total(&self) -> u64 {
        self.rows.iter().map(|(_, n)| n).sum()
    }
}

/// Where to write.
#[derive(Clone, Debug)]
pub struct Target {
    /// `postgres://user@host:port/db` (never logged: it may carry a password).
    pub url: String,
    /// Schema of the archive tables.
    pub schema: String,
}

#[allow(clippy::disallowed_methods)] // Measuring the backfill's rate is a shell's business.
fn now() -> Instant {
    Instant::now()
}

fn to_system_time(ms: Millis) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// Writes the generator's whole span into the archive of `target`, replacing the archive's rows
/// of that span. `client` is an open connection (the caller waited for PostgreSQL); `progress`
/// is called about every 5 % of the span.
pub async fn run(
    generator: &Generator,
    client: Client,
    target: &Target,
    mut progress: impl FnMut(Progress),
) -> Result<BackfillReport, BackfillError> {
    // The streaming job's migrations own the archive schema.
    PostgresSink::new(client, &target.schema)
        .await
        .map_err(|e| BackfillError::Database(e.to_string()))?;
    let mut clients = Vec::with_capacity(Topic::ALL.len());
    for topic in Topic::ALL {
        let table = pg::archive_table(topic);
        check_columns(topic, &table)?;
        let client = pg::connect(&target.url)
            .await
            .map_err(|e| BackfillError::Database(e.to_string()))?;
        client
            .batch_execute(&format!("SET search_path TO {}", target.schema))
            .await
            .map_err(database("select the schema"))?;
        clients.push((client, table));
    }
    let started = now();
    let (start_ms, end_ms) = (generator.start_ms(), generator.end_ms());
    let mut txs = Vec::with_capacity(clients.len());
    let mut replaced = 0;
    for (client, table) in &mut clients {
        let tx = client.transaction().await.map_err(database("begin"))?;
        replaced += tx
            .execute(
                &format!(
                    "DELETE FROM {} WHERE event_time >= $1 AND event_time < $2",
                    table.name
                ),
                &[&to_system_time(start_ms), &to_system_time(end_ms)],
            )
            .await
            .map_err(database(table.name))?;
        txs.push((tx, *table));
    }
    let mut writers = Vec::with_capacity(txs.len());
    for (tx, table) in &txs {
        writers.push(Box::pin(copy_in(tx, table).await?));
    }
    let mut counts = vec![0u64; writers.len()];
    let step = ((end_ms - start_ms) / 20).max(1);
    let mut next_report = start_ms + step;
    let mut total = 0u64;
    for record in generator.records() {
        if !archived(&record, generator) {
            continue;
        }
        let Payload::Message(msg) = &record.payload else {
            continue;
        };
        let i = topic_index(record.topic);
        let table = &txs[i].1;
        let t = to_system_time(record.event_time_ms);
        // The columns were checked at the start, so every pointer has a cell.
        let cells: Vec<Cell<'_>> = table
            .columns
            .iter()
            .filter_map(|c| cell(msg, t, c.pointer))
            .collect();
        debug_assert_eq!(cells.len(), table.columns.len());
        writers[i]
            .as_mut()
            .write_raw(cells.iter())
            .await
            .map_err(database(table.name))?;
        counts[i] += 1;
        total += 1;
        if record.produce_time_ms >= next_report {
            next_report += step;
            progress(Progress {
                rows: total,
                done: (record.produce_time_ms - start_ms) as f64 / (end_ms - start_ms) as f64,
                elapsed_s: started.elapsed().as_secs_f64(),
            });
        }
    }
    for (w, (_, table)) in writers.iter_mut().zip(&txs) {
        w.as_mut().finish().await.map_err(database(table.name))?;
    }
    drop(writers);
    let mut rows = Vec::with_capacity(txs.len());
    for ((tx, table), n) in txs.into_iter().zip(counts) {
        tx.commit().await.map_err(database(table.name))?;
        rows.push((table.name, n));
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    progress(Progress {
        rows: total,
        done: 1.0,
        elapsed_s,
    });
    Ok(BackfillReport {
        rows,
        replaced,
        elapsed_s,
    })
}

fn topic_index(topic: Topic) -> usize {
    Topic::ALL
        .iter()
        .position(|t| *t == topic)
        .unwrap_or_default()
}

/// Checks that the encoder fills every column of `table` with a value of the column's kind, on
/// the generator's first message of `topic`.
fn check_columns(topic: Topic, table: &Table) -> Result<(), BackfillError> {
    let sample = sample_message(topic);
    for c in table.columns {
        match cell(&sample, UNIX_EPOCH, c.pointer) {
            Some(v) if v.kind() == c.kind => {}
            _ => {
                return Err(BackfillError::UnknownColumn {
                    table: table.name,
                    column: c.name,
                    pointer: c.pointer,
                });
            }
        }
    }
    Ok(())
}

/// A message of `topic`: the default city's first record of that topic.
fn sample_message(topic: Topic) -> Message<'static> {
    let config = GeneratorConfig {
        duration_s: 600,
        incident_probability: 1.0,
        ..GeneratorConfig::default()
    };
    let generator = Generator::new(&config, 0).expect("the default city is a valid configuration");
    generator
        .records()
        .find(|r| r.topic == topic)
        .and_then(|r| r.message().map(|m| m.clone().into_owned()))
        .expect("ten minutes of the default city carry every topic")
}

async fn copy_in(tx: &Transaction<'_>, table: &Table) -> Result<BinaryCopyInWriter, BackfillError> {
    let names: Vec<String> = table
        .columns
        .iter()
        .map(|c| format!("\"{}\"", c.name))
        .collect();
    let sink = tx
        .copy_in(&format!(
            "COPY {} ({}) FROM STDIN (FORMAT binary)",
            table.name,
            names.join(", ")
        ))
        .await
        .map_err(database(table.name))?;
    let types: Vec<Type> = table.columns.iter().map(|c| sql_type(c.kind)).collect();
    Ok(BinaryCopyInWriter::new(sink, &types))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the encoder fills every archive column with the value the streaming job's sink
    // would store: for a message of each topic, each cell equals the JSON pointer's value.
    #[test]
    fn cells_match_the_sinks_columns() {
        for topic in Topic::ALL {
            let table = pg::archive_table(topic);
            let msg = sample_message(topic);
            let json = msg.to_json_value();
            check_columns(topic, &table).unwrap();
            for c in table.columns {
                if c.pointer == "/event_time" {
                    continue;
                }
                let v = cell(&msg, UNIX_EPOCH, c.pointer).unwrap();
                let expected = json.pointer(c.pointer).unwrap();
                let same = match v {
                    Cell::Text(s) => expected.as_str() == Some(s),
                    Cell::Float(f) => expected.as_f64() == Some(f),
                    Cell::Int(i) => expected.as_i64() == Some(i),
                    Cell::Time(_) => false,
                };
                assert!(same, "{}.{}: {v:?} vs {expected}", table.name, c.name);
            }
        }
    }

    // Proves a backfill's configuration covers the days before the end at the resolution.
    #[test]
    fn span_and_resolution() {
        let c = config(&GeneratorConfig::default(), 1_795_478_400_000, 2, 300_000);
        assert_eq!(c.start, "2026-11-22T00:00:00Z");
        assert_eq!(c.duration_s, 172_800);
        assert_eq!(c.tick_interval_ms, 300_000);
        let g = Generator::new(&c, 7).unwrap();
        let readings = g
            .records()
            .filter(|r| r.topic != Topic::Incidents && archived(r, &g))
            .count();
        assert_eq!(readings, 66 * 288 * 2);
    }
}
