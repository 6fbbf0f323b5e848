//! The PostgreSQL sink: one table per query with the row id as primary key and typed columns,
//! the raw archive (`traffic_data`, `public_transport`, `parking_data`, `incidents`), and
//! `dead_letters` / `late_records`.
//!
//! The pipeline owns its schema: [`PostgresSink::new`] applies the numbered migrations that the
//! `schema_version` table does not list yet, under an advisory lock, each one idempotent
//! (`CREATE TABLE IF NOT EXISTS`). A batch is one transaction, and every write is idempotent, so
//! a replay after a crash (or a retry after a timeout) changes nothing that was already written:
//!
//! - Query rows: one multi-row `INSERT ... SELECT FROM UNNEST(arrays)` per chunk of
//!   [`ROWS_PER_STATEMENT`] rows, `ON CONFLICT (id) DO UPDATE ... WHERE NOT is_final`: a partial
//!   row is replaced by a later partial or by the final, and a final row is never changed again
//!   (a replay that emits an old partial after its final was stored leaves the final).
//! - Archive, dead-letter and late rows (append-only): binary `COPY` straight into the table
//!   inside a savepoint — the fast path, several times the rows per second of the multi-row
//!   insert (see `pipeline/examples/sink_costs.rs`). COPY has no `ON CONFLICT`: if the batch is a
//!   replay, the COPY stops on the primary key (`unique_violation`), the savepoint is rolled
//!   back, and the rows go through a temporary staging table instead (`COPY` into it, then
//!   `INSERT ... SELECT ... ON CONFLICT DO NOTHING`), so rows already stored are kept as they are.
//!   The archive's primary keys lead with `event_time` (migration 2): new readings land at the
//!   right edge of the index instead of all over it, which is what keeps the COPY fast.
//!
//! Columns are described once ([`Column`]: name, JSON pointer into the serialised row or
//! message, type), and the insert, the COPY and the read-back are all driven by those
//! descriptions. Instants travel as epoch milliseconds and become `timestamptz` in SQL, exactly.
//! The values written are taken from the rows and messages field by field, borrowed, in the
//! columns' order (`item_fields`, `archive_cells`); tests hold each list to the columns' JSON
//! pointers, so neither drifts from the catalogue. No JSON tree is built on the way: a batch of
//! a flood holds thousands of rows, and a tree per row with a copy of every string was about
//! 3 MB of the job's peak heap in the key-flood test (massif).

use std::collections::BTreeMap;

use std::pin::pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls, Statement, Transaction};

use crate::engine::{DeadLetter, LateRecord, Output, Query, Row, RowBody};
use crate::model::{Message, Topic};
use crate::time::format_rfc3339;

use super::{Sink, SinkError, dead_letter_id, last_rows, late_id};

const NAME: &str = "postgresql";

/// Rows per INSERT statement: bounds the size of one statement's parameters.
pub const ROWS_PER_STATEMENT: usize = 2000;

fn backend(detail: String) -> SinkError {
    SinkError::Backend { sink: NAME, detail }
}

/// Connects and drives the connection on the runtime. `url` is never echoed: it may carry a
/// password.
pub async fn connect(url: &str) -> Result<Client, SinkError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.map_err(|e| {
        // The top-level message is generic ("error connecting to server"); the cause says why.
        let cause = std::error::Error::source(&e).map_or(String::new(), |s| format!(": {s}"));
        backend(format!("cannot connect: {e}{cause}"))
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::error!(error = %e, "The PostgreSQL connection closed with an error.");
        }
    });
    Ok(client)
}

/// A column's SQL type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `text`.
    Text,
    /// `double precision`.
    Float,
    /// `bigint`.
    Int,
    /// `timestamptz`, carried as epoch milliseconds (RFC 3339 text in the JSON).
    Time,
    /// `boolean`.
    Bool,
}

/// One column: its name, where its value is in the JSON of the row or message, and its type.
#[derive(Clone, Copy, Debug)]
pub struct Column {
    /// Column name.
    pub name: &'static str,
    /// JSON pointer into the serialised row / message.
    pub pointer: &'static str,
    /// Type.
    pub kind: Kind,
}

/// A [`Column`] literal (a struct literal, so tables can be `'static` constants).
macro_rules! col {
    ($name:expr, $pointer:expr, $kind:expr) => {
        Column {
            name: $name,
            pointer: $pointer,
            kind: $kind,
        }
    };
}

use Kind::{Bool, Float, Int, Text, Time};

/// A table: its name, columns, and conflict key.
#[derive(Clone, Copy, Debug)]
pub struct Table {
    /// Table name.
    pub name: &'static str,
    /// Columns, in order.
    pub columns: &'static [Column],
    /// The primary key columns.
    pub key: &'static [&'static str],
    /// Whether a conflicting row is replaced (query rows) or kept (append-only tables).
    pub replace: bool,
}

const FINAL: Column = col!("is_final", "/final", Bool);

const fn query_table(name: &'static str, columns: &'static [Column]) -> Table {
    Table {
        name,
        columns,
        key: &["id"],
        replace: true,
    }
}

/// The table of each query.
pub const fn query_table_of(q: Query) -> Table {
    match q {
        Query::TrafficAggregations => query_table(
            "traffic_aggregations",
            &[
                col!("id", "/id", Text),
                col!("zone_id", "/zone_id", Text),
                col!("road_id", "/road_id", Text),
                col!("window_start", "/window_start", Time),
                col!("window_end", "/window_end", Time),
                col!("avg_speed", "/avg_speed", Float),
                col!("min_speed", "/min_speed", Float),
                col!("max_speed", "/max_speed", Float),
                col!("total_vehicles", "/total_vehicles", Int),
                col!("avg_occupancy", "/avg_occupancy", Float),
                col!("sensor_readings", "/sensor_readings", Int),
                col!("congestion_score", "/congestion_score", Float),
                FINAL,
            ],
        ),
        Query::TrafficAnomalies => query_table(
            "traffic_anomalies",
            &[
                col!("id", "/id", Text),
                col!("sensor_id", "/sensor_id", Text),
                col!("zone_id", "/zone_id", Text),
                col!("road_id", "/road_id", Text),
                col!("event_time", "/event_time", Time),
                col!("anomaly_type", "/anomaly_type", Text),
                col!("speed_kmh", "/speed_kmh", Float),
                col!("occupancy_percent", "/occupancy_percent", Float),
                col!("data_quality", "/data_quality", Text),
                col!("detail", "/detail", Text),
                FINAL,
            ],
        ),
        Query::TransportMetrics => query_table(
            "transport_metrics",
            &[
                col!("id", "/id", Text),
                col!("line_id", "/line_id", Text),
                col!("window_start", "/window_start", Time),
                col!("window_end", "/window_end", Time),
                col!("avg_delay", "/avg_delay", Float),
                col!("avg_occupancy", "/avg_occupancy", Float),
                col!("active_vehicles", "/active_vehicles", Int),
                col!("reports", "/reports", Int),
                col!("total_passengers", "/total_passengers", Int),
                col!("punctuality_score", "/punctuality_score", Float),
                FINAL,
            ],
        ),
        Query::TransportAlerts => query_table(
            "transport_alerts",
            &[
                col!("id", "/id", Text),
                col!("vehicle_id", "/vehicle_id", Text),
                col!("line_id", "/line_id", Text),
                col!("event_time", "/event_time", Time),
                col!("alert_type", "/alert_type", Text),
                col!("occupancy_rate", "/occupancy_rate", Float),
                col!("passenger_count", "/passenger_count", Int),
                col!("capacity", "/capacity", Int),
                FINAL,
            ],
        ),
        Query::IncidentAggregations => query_table(
            "incident_aggregations",
            &[
                col!("id", "/id", Text),
                col!("zone_id", "/zone_id", Text),
                col!("severity", "/severity", Text),
                col!("window_start", "/window_start", Time),
                col!("window_end", "/window_end", Time),
                col!("count", "/count", Int),
                col!("alert_level", "/alert_level", Text),
                FINAL,
            ],
        ),
        Query::CriticalIncidents => query_table(
            "critical_incidents",
            &[
                col!("id", "/id", Text),
                col!("incident_id", "/incident_id", Text),
                col!("zone_id", "/zone_id", Text),
                col!("road_id", "/road_id", Text),
                col!("severity", "/severity", Text),
                col!("incident_type", "/incident_type", Text),
                col!("description", "/description", Text),
                col!("event_time", "/event_time", Time),
                col!("estimated_duration_min", "/estimated_duration_min", Int),
                col!("affected_lanes", "/affected_lanes", Int),
                FINAL,
            ],
        ),
        Query::MobilityIndex => query_table(
            "mobility_index",
            &[
                col!("id", "/id", Text),
                col!("window_start", "/window_start", Time),
                col!("window_end", "/window_end", Time),
                col!("city_avg_speed", "/city_avg_speed", Float),
                col!("city_avg_occupancy", "/city_avg_occupancy", Float),
                col!("total_readings", "/total_readings", Int),
                col!("mobility_index", "/mobility_index", Float),
                col!("category", "/category", Text),
                FINAL,
            ],
        ),
        Query::ParkingAggregations => query_table(
            "parking_aggregations",
            &[
                col!("id", "/id", Text),
                col!("zone_id", "/zone_id", Text),
                col!("window_start", "/window_start", Time),
                col!("window_end", "/window_end", Time),
                col!("avg_occupancy_rate", "/avg_occupancy_rate", Float),
                col!("min_available_spaces", "/min_available_spaces", Int),
                col!("readings", "/readings", Int),
                FINAL,
            ],
        ),
    }
}

/// `dead_letters`, keyed by source position.
pub const DEAD_LETTERS: Table = Table {
    name: "dead_letters",
    columns: &[
        col!("id", "/id", Text),
        col!("topic", "/topic", Text),
        col!("partition", "/partition", Int),
        col!("offset", "/offset", Int),
        col!("key", "/key", Text),
        col!("kafka_timestamp", "/kafka_timestamp", Time),
        col!("reason", "/reason", Text),
        col!("detail", "/detail", Text),
        col!("raw", "/raw", Text),
        col!("raw_hex", "/raw_hex", Text),
    ],
    key: &["id"],
    replace: false,
};

/// `late_records`, keyed by query and source position.
pub const LATE_RECORDS: Table = Table {
    name: "late_records",
    columns: &[
        col!("id", "/id", Text),
        col!("query", "/query", Text),
        col!("topic", "/topic", Text),
        col!("key", "/key", Text),
        col!("partition", "/partition", Int),
        col!("offset", "/offset", Int),
        col!("event_time", "/event_time", Time),
        col!("window_end", "/window_end", Time),
        col!("watermark", "/watermark", Time),
        col!("reason", "/reason", Text),
    ],
    key: &["id"],
    replace: false,
};

/// The raw-archive table of a topic, keyed by entity id and event time. `/event_time` is the
/// record's resolved event time, added to the message's JSON before extraction.
pub const fn archive_table(topic: Topic) -> Table {
    match topic {
        Topic::Traffic => Table {
            name: "traffic_data",
            columns: &[
                col!("sensor_id", "/sensor_id", Text),
                col!("event_time", "/event_time", Time),
                col!("road_id", "/road_id", Text),
                col!("road_name", "/road_name", Text),
                col!("zone_id", "/zone_id", Text),
                col!("lat", "/location/lat", Float),
                col!("lon", "/location/lon", Float),
                col!("speed_kmh", "/speed_kmh", Float),
                col!("vehicle_flow", "/vehicle_flow", Int),
                col!("occupancy_percent", "/occupancy_percent", Float),
                col!("congestion_level", "/congestion_level", Text),
                col!("data_quality", "/data_quality", Text),
            ],
            key: &["sensor_id", "event_time"],
            replace: false,
        },
        Topic::Transport => Table {
            name: "public_transport",
            columns: &[
                col!("vehicle_id", "/vehicle_id", Text),
                col!("event_time", "/event_time", Time),
                col!("line_id", "/line_id", Text),
                col!("line_number", "/line_number", Text),
                col!("current_stop", "/current_stop", Text),
                col!("next_stop", "/next_stop", Text),
                col!("direction", "/direction", Text),
                col!("lat", "/location/lat", Float),
                col!("lon", "/location/lon", Float),
                col!("speed_kmh", "/speed_kmh", Float),
                col!("passenger_count", "/passenger_count", Int),
                col!("capacity", "/capacity", Int),
                col!("occupancy_rate", "/occupancy_rate", Float),
                col!("delay_minutes", "/delay_minutes", Float),
                col!("status", "/status", Text),
            ],
            key: &["vehicle_id", "event_time"],
            replace: false,
        },
        Topic::Parking => Table {
            name: "parking_data",
            columns: &[
                col!("parking_id", "/parking_id", Text),
                col!("event_time", "/event_time", Time),
                col!("name", "/name", Text),
                col!("zone_id", "/zone_id", Text),
                col!("type", "/type", Text),
                col!("lat", "/location/lat", Float),
                col!("lon", "/location/lon", Float),
                col!("total_spaces", "/total_spaces", Int),
                col!("occupied_spaces", "/occupied_spaces", Int),
                col!("available_spaces", "/available_spaces", Int),
                col!("occupancy_rate", "/occupancy_rate", Float),
                col!("hourly_rate", "/hourly_rate", Float),
                col!("status", "/status", Text),
            ],
            key: &["parking_id", "event_time"],
            replace: false,
        },
        Topic::Incidents => Table {
            name: "incidents",
            columns: &[
                col!("incident_id", "/incident_id", Text),
                col!("event_time", "/event_time", Time),
                col!("type", "/type", Text),
                col!("severity", "/severity", Text),
                col!("road_id", "/location/road_id", Text),
                col!("road_name", "/location/road_name", Text),
                col!("zone_id", "/location/zone_id", Text),
                col!("lat", "/location/lat", Float),
                col!("lon", "/location/lon", Float),
                col!("description", "/description", Text),
                col!("estimated_duration_min", "/estimated_duration_min", Int),
                col!("affected_lanes", "/affected_lanes", Int),
                col!("status", "/status", Text),
            ],
            key: &["incident_id", "event_time"],
            replace: false,
        },
    }
}

/// Every table the sink writes.
pub fn tables() -> Vec<Table> {
    let mut t: Vec<Table> = Query::ALL.into_iter().map(query_table_of).collect();
    t.extend(Topic::ALL.into_iter().map(archive_table));
    t.push(DEAD_LETTERS);
    t.push(LATE_RECORDS);
    t
}

fn sql_type(kind: Kind) -> &'static str {
    match kind {
        Text => "text",
        Float => "double precision",
        Int => "bigint",
        Time => "timestamptz",
        Bool => "boolean",
    }
}

/// The DDL of a table (idempotent). Only optional text columns may be NULL.
fn create_table_sql(t: &Table) -> String {
    let mut cols: Vec<String> = t
        .columns
        .iter()
        .map(|col| {
            let nullable = matches!(col.name, "raw" | "raw_hex");
            format!(
                "\"{}\" {}{}",
                col.name,
                sql_type(col.kind),
                if nullable { "" } else { " NOT NULL" }
            )
        })
        .collect();
    cols.push("updated_at timestamptz NOT NULL DEFAULT now()".to_owned());
    let key: Vec<String> = t.key.iter().map(|k| format!("\"{k}\"")).collect();
    cols.push(format!("PRIMARY KEY ({})", key.join(", ")));
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\n    {}\n)",
        t.name,
        cols.join(",\n    ")
    )
}

/// Migration 1: every table, and the lookup indexes of the query tables.
fn migration_1() -> String {
    let mut sql: Vec<String> = tables().iter().map(create_table_sql).collect();
    for q in Query::ALL {
        let mut cols: Vec<&str> = super::key_fields(q).to_vec();
        cols.push(super::time_field(q));
        sql.push(format!(
            "CREATE INDEX IF NOT EXISTS {0}_lookup ON {0} ({1})",
            q.name(),
            cols.join(", ")
        ));
    }
    sql.join(";\n")
}

/// Migration 2: the archive's primary keys lead with `event_time` instead of the entity id. A
/// batch of new readings then lands at the right edge of each index rather than on one leaf
/// page per device, which is what lets the archive's COPY reach its rate; lookups by time range
/// (the batch job's) use the index directly. `ON CONFLICT` and the read-back's order name the
/// same columns and do not depend on their order in the index.
fn migration_2() -> String {
    Topic::ALL
        .into_iter()
        .map(archive_table)
        .map(|t| {
            let entity = t.key[0];
            format!(
                "ALTER TABLE {0} DROP CONSTRAINT IF EXISTS {0}_pkey, \
                 ADD CONSTRAINT {0}_pkey PRIMARY KEY (event_time, \"{entity}\")",
                t.name
            )
        })
        .collect::<Vec<_>>()
        .join(";\n")
}

/// The schema migrations, in order. A released migration never changes; add the next number.
fn migrations() -> Vec<(i32, String)> {
    vec![(1, migration_1()), (2, migration_2())]
}

/// The multi-row insert of a table: arrays bound per column, unnested in SQL.
fn insert_sql(t: &Table) -> String {
    let names: Vec<String> = t
        .columns
        .iter()
        .map(|c| format!("\"{}\"", c.name))
        .collect();
    let mut exprs = Vec::new();
    let mut arrays = Vec::new();
    let mut aliases = Vec::new();
    for (i, col) in t.columns.iter().enumerate() {
        let n = i + 1;
        let array_type = match col.kind {
            Text => "text[]",
            Float => "float8[]",
            Int | Time => "int8[]",
            Bool => "bool[]",
        };
        arrays.push(format!("${n}::{array_type}"));
        aliases.push(format!("c{n}"));
        exprs.push(match col.kind {
            Time => format!("'epoch'::timestamptz + u.c{n} * interval '1 millisecond'"),
            _ => format!("u.c{n}"),
        });
    }
    let key: Vec<String> = t.key.iter().map(|k| format!("\"{k}\"")).collect();
    let conflict = if t.replace {
        let sets: Vec<String> = t
            .columns
            .iter()
            .filter(|c| !t.key.contains(&c.name))
            .map(|c| format!("\"{0}\" = EXCLUDED.\"{0}\"", c.name))
            .chain(std::iter::once("updated_at = now()".to_owned()))
            .collect();
        // A final row is never replaced: not by a partial a replay emits again, and not by
        // itself (so writing a final twice changes nothing, not even `updated_at`).
        let keep_final = if t.columns.iter().any(|c| c.name == FINAL.name) {
            format!(" WHERE NOT {}.\"{}\"", t.name, FINAL.name)
        } else {
            String::new()
        };
        format!("DO UPDATE SET {}{keep_final}", sets.join(", "))
    } else {
        "DO NOTHING".to_owned()
    };
    format!(
        "INSERT INTO {} ({}) SELECT {} FROM UNNEST({}) AS u({}) ON CONFLICT ({}) {}",
        t.name,
        names.join(", "),
        exprs.join(", "),
        arrays.join(", "),
        aliases.join(", "),
        key.join(", "),
        conflict
    )
}

/// The select of a table's rows, times as epoch milliseconds, in key order.
fn select_sql(t: &Table) -> String {
    let exprs: Vec<String> = t
        .columns
        .iter()
        .map(|c| match c.kind {
            Time => format!("(extract(epoch from \"{}\") * 1000)::int8", c.name),
            _ => format!("\"{}\"", c.name),
        })
        .collect();
    let key: Vec<String> = t.key.iter().map(|k| format!("\"{k}\"")).collect();
    format!(
        "SELECT {} FROM {} ORDER BY {}",
        exprs.join(", "),
        t.name,
        key.join(", ")
    )
}

/// One column's values for a chunk of rows, text borrowed from the batch.
#[derive(Debug)]
enum Values<'a> {
    Text(Vec<Option<&'a str>>),
    Float(Vec<Option<f64>>),
    Int(Vec<Option<i64>>),
    Bool(Vec<Option<bool>>),
    /// Instants for COPY, which takes `timestamptz` in its binary form, not epoch milliseconds.
    Stamp(Vec<Option<SystemTime>>),
}

/// An instant in epoch milliseconds as the `SystemTime` that tokio-postgres encodes as
/// `timestamptz`.
fn system_time(ms: i64) -> SystemTime {
    let d = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

impl<'a> Values<'a> {
    /// Values for the UNNEST insert (`copy` false) or for COPY (`copy` true).
    fn new(kind: Kind, n: usize, copy: bool) -> Self {
        match kind {
            Text => Values::Text(Vec::with_capacity(n)),
            Float => Values::Float(Vec::with_capacity(n)),
            Time if copy => Values::Stamp(Vec::with_capacity(n)),
            Int | Time => Values::Int(Vec::with_capacity(n)),
            Bool => Values::Bool(Vec::with_capacity(n)),
        }
    }

    /// Appends the value of `col` in one more row.
    fn push(&mut self, col: &Column, field: Field<'a>) -> Result<(), String> {
        let bad = || format!("{}: {field:?} is not a {:?}", col.name, col.kind);
        match (self, field) {
            (Values::Text(x), Field::Text(s)) => x.push(Some(s)),
            (Values::Text(x), Field::Null) => x.push(None),
            (Values::Float(x), Field::Float(v)) => x.push(Some(v)),
            (Values::Int(x), Field::Int(v)) if col.kind == Int => x.push(Some(v)),
            (Values::Int(x), Field::Count(n)) if col.kind == Int => {
                x.push(Some(i64::try_from(n).map_err(|_| bad())?));
            }
            (Values::Int(x), Field::Millis(ms)) if col.kind == Time => x.push(Some(ms)),
            (Values::Stamp(x), Field::Millis(ms)) => x.push(Some(system_time(ms))),
            (Values::Bool(x), Field::Bool(b)) => x.push(Some(b)),
            _ => return Err(bad()),
        }
        Ok(())
    }

    fn as_param(&self) -> &(dyn ToSql + Sync) {
        match self {
            Values::Text(x) => x,
            Values::Float(x) => x,
            Values::Int(x) => x,
            Values::Bool(x) => x,
            Values::Stamp(x) => x,
        }
    }

    /// The value of row `i`, for COPY.
    fn at(&self, i: usize) -> &(dyn ToSql + Sync) {
        match self {
            Values::Text(x) => &x[i],
            Values::Float(x) => &x[i],
            Values::Int(x) => &x[i],
            Values::Bool(x) => &x[i],
            Values::Stamp(x) => &x[i],
        }
    }
}

/// Column-major values of `items` for the UNNEST insert (`copy` false) or for COPY.
fn columns_of<'a>(t: &Table, items: &'a [Item<'_>], copy: bool) -> Result<Vec<Values<'a>>, String> {
    let mut cols: Vec<Values> = t
        .columns
        .iter()
        .map(|c| Values::new(c.kind, items.len(), copy))
        .collect();
    for item in items {
        let fields = item_fields(item);
        if fields.len() != cols.len() {
            return Err(format!(
                "an item has {} values for {} columns: {item:?}",
                fields.len(),
                cols.len()
            ));
        }
        for ((values, col), field) in cols.iter_mut().zip(t.columns).zip(fields) {
            values.push(col, field)?;
        }
    }
    Ok(cols)
}

/// Where the sink writes.
#[derive(Clone, Debug)]
pub struct PostgresConfig {
    /// `postgres://user@host:port/db` (may carry a password; never logged).
    pub url: String,
    /// Schema for the tables (`public`; tests use a unique one).
    pub schema: String,
}

/// The PostgreSQL sink.
pub struct PostgresSink {
    client: Client,
    inserts: BTreeMap<&'static str, Statement>,
}

impl std::fmt::Debug for PostgresSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSink")
            .field("tables", &self.inserts.keys())
            .finish_non_exhaustive()
    }
}

/// Whether `name` is a plain lower-case SQL identifier (so it can be spliced into SQL).
fn plain_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl PostgresSink {
    /// A sink writing into `schema` (created if missing), with the schema migrated.
    pub async fn new(mut client: Client, schema: &str) -> Result<Self, SinkError> {
        if !plain_identifier(schema) {
            return Err(backend(format!(
                "schema `{schema}` must be a lower-case identifier ([a-z_][a-z0-9_]*)"
            )));
        }
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {schema}; SET search_path TO {schema}"
            ))
            .await
            .map_err(|e| backend(format!("cannot create or select schema {schema}: {e}")))?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| backend(format!("cannot begin the migration: {e}")))?;
        // One migrator at a time per schema: concurrent pipelines wait here.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('smart_city_migrate_' || $1::text))",
            &[&schema],
        )
        .await
        .map_err(|e| backend(format!("cannot take the migration lock: {e}")))?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_version (\
                 version integer PRIMARY KEY, \
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(|e| backend(format!("cannot create schema_version: {e}")))?;
        let current: i32 = tx
            .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
            .await
            .map_err(|e| backend(format!("cannot read schema_version: {e}")))?
            .get(0);
        for (version, sql) in migrations() {
            if version > current {
                tx.batch_execute(&sql)
                    .await
                    .map_err(|e| backend(format!("migration {version} failed: {e}")))?;
                tx.execute(
                    "INSERT INTO schema_version (version) VALUES ($1)",
                    &[&version],
                )
                .await
                .map_err(|e| backend(format!("cannot record migration {version}: {e}")))?;
                tracing::info!(version, schema, "Applied PostgreSQL schema migration.");
            }
        }
        tx.commit()
            .await
            .map_err(|e| backend(format!("cannot commit the migration: {e}")))?;
        let mut inserts = BTreeMap::new();
        for t in tables() {
            let stmt = client
                .prepare(&insert_sql(&t))
                .await
                .map_err(|e| backend(format!("cannot prepare the insert into {}: {e}", t.name)))?;
            inserts.insert(t.name, stmt);
        }
        Ok(PostgresSink { client, inserts })
    }

    /// The schema version applied.
    pub async fn schema_version(&self) -> Result<i32, SinkError> {
        self.client
            .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
            .await
            .map(|r| r.get(0))
            .map_err(|e| backend(format!("cannot read schema_version: {e}")))
    }

    /// Every row stored for `query`, in id order, read back as the engine's rows.
    pub async fn read_rows(&self, query: Query) -> Result<Vec<Row>, SinkError> {
        self.read_table(&query_table_of(query), Some(query)).await
    }

    /// Every dead letter stored, in id (topic, partition, offset) order.
    pub async fn read_dead_letters(&self) -> Result<Vec<DeadLetter>, SinkError> {
        self.read_table(&DEAD_LETTERS, None).await
    }

    /// Every late record stored, in id order.
    pub async fn read_late(&self) -> Result<Vec<LateRecord>, SinkError> {
        self.read_table(&LATE_RECORDS, None).await
    }

    /// Reads a table back into the values its rows were made from (the inverse of the column
    /// extraction); a query table's rows get their `query` tag back.
    async fn read_table<T: serde::de::DeserializeOwned>(
        &self,
        t: &Table,
        query: Option<Query>,
    ) -> Result<Vec<T>, SinkError> {
        let rows = self
            .client
            .query(&select_sql(t), &[])
            .await
            .map_err(|e| backend(format!("cannot read {}: {e}", t.name)))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let mut map = serde_json::Map::new();
            if let Some(q) = query {
                map.insert("query".into(), Value::String(q.name().to_owned()));
            }
            for (i, col) in t.columns.iter().enumerate() {
                let v = match col.kind {
                    Text => r
                        .get::<_, Option<String>>(i)
                        .map_or(Value::Null, Value::String),
                    Float => r
                        .get::<_, Option<f64>>(i)
                        .and_then(serde_json::Number::from_f64)
                        .map_or(Value::Null, Value::Number),
                    Int => r.get::<_, Option<i64>>(i).map_or(Value::Null, Value::from),
                    Time => r
                        .get::<_, Option<i64>>(i)
                        .map_or(Value::Null, |ms| Value::String(format_rfc3339(ms))),
                    Bool => r.get::<_, Option<bool>>(i).map_or(Value::Null, Value::Bool),
                };
                map.insert(col.pointer.trim_start_matches('/').to_owned(), v);
            }
            let value = serde_json::from_value(Value::Object(map)).map_err(|e| {
                backend(format!(
                    "a row of {} is not a {}: {e}",
                    t.name,
                    std::any::type_name::<T>()
                ))
            })?;
            out.push(value);
        }
        Ok(out)
    }

    /// Rows in a table.
    pub async fn count(&self, table: &str) -> Result<i64, SinkError> {
        if !plain_identifier(table) {
            return Err(backend(format!("`{table}` is not a table name")));
        }
        self.client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .map(|r| r.get(0))
            .map_err(|e| backend(format!("cannot count {table}: {e}")))
    }

    /// The client, for read-back queries of tests and tools.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// A row, dead letter or late record of a batch, borrowed, with its id.
#[derive(Debug)]
enum Item<'a> {
    /// A query row (it carries its id).
    Row(&'a Row),
    /// A dead letter and its id.
    DeadLetter(&'a DeadLetter, String),
    /// A late record and its id.
    Late(&'a LateRecord, String),
}

/// The rows, dead letters and late records of a batch, grouped by table (the archive goes its
/// own way: [`archive_messages`]).
fn batch_items(batch: &Output) -> Vec<(Table, Vec<Item<'_>>)> {
    let mut out: Vec<(Table, Vec<Item<'_>>)> = last_rows(&batch.rows)
        .into_iter()
        .map(|(q, rows)| (query_table_of(q), rows.into_iter().map(Item::Row).collect()))
        .collect();
    if !batch.dead_letters.is_empty() {
        let items = batch.dead_letters.iter();
        let items = items.map(|d| Item::DeadLetter(d, dead_letter_id(d)));
        out.push((DEAD_LETTERS, items.collect()));
    }
    if !batch.late.is_empty() {
        let items = batch.late.iter().map(|l| Item::Late(l, late_id(l)));
        out.push((LATE_RECORDS, items.collect()));
    }
    out
}

/// One value of an [`Item`], borrowed from the batch.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Field<'a> {
    Text(&'a str),
    /// An absent optional text.
    Null,
    Float(f64),
    Int(i64),
    /// A count, which must fit a `bigint`.
    Count(u64),
    /// An instant, in epoch milliseconds.
    Millis(i64),
    Bool(bool),
}

/// The values of an item, in the order of its table's columns: the test
/// `item_fields_follow_the_catalogue` holds the two together.
fn item_fields<'a>(item: &'a Item<'_>) -> Vec<Field<'a>> {
    use Field::{Count as N, Float as F, Int as I, Millis as M, Text as T};
    match item {
        Item::Row(row) => {
            let mut fields = Vec::with_capacity(13);
            fields.push(T(&row.id));
            match &row.body {
                RowBody::TrafficAggregations(r) => fields.extend([
                    T(&r.zone_id),
                    T(&r.road_id),
                    M(r.window_start),
                    M(r.window_end),
                    F(r.avg_speed),
                    F(r.min_speed),
                    F(r.max_speed),
                    I(r.total_vehicles),
                    F(r.avg_occupancy),
                    N(r.sensor_readings),
                    F(r.congestion_score),
                ]),
                RowBody::TrafficAnomalies(r) => fields.extend([
                    T(&r.sensor_id),
                    T(&r.zone_id),
                    T(&r.road_id),
                    M(r.event_time),
                    T(r.anomaly_type.name()),
                    F(r.speed_kmh),
                    F(r.occupancy_percent),
                    T(&r.data_quality),
                    T(&r.detail),
                ]),
                RowBody::TransportMetrics(r) => fields.extend([
                    T(&r.line_id),
                    M(r.window_start),
                    M(r.window_end),
                    F(r.avg_delay),
                    F(r.avg_occupancy),
                    N(r.active_vehicles),
                    N(r.reports),
                    I(r.total_passengers),
                    F(r.punctuality_score),
                ]),
                RowBody::TransportAlerts(r) => fields.extend([
                    T(&r.vehicle_id),
                    T(&r.line_id),
                    M(r.event_time),
                    T(&r.alert_type),
                    F(r.occupancy_rate),
                    I(r.passenger_count),
                    I(r.capacity),
                ]),
                RowBody::IncidentAggregations(r) => fields.extend([
                    T(&r.zone_id),
                    T(&r.severity),
                    M(r.window_start),
                    M(r.window_end),
                    N(r.count),
                    T(&r.alert_level),
                ]),
                RowBody::CriticalIncidents(r) => fields.extend([
                    T(&r.incident_id),
                    T(&r.zone_id),
                    T(&r.road_id),
                    T(&r.severity),
                    T(&r.incident_type),
                    T(&r.description),
                    M(r.event_time),
                    I(r.estimated_duration_min),
                    I(r.affected_lanes),
                ]),
                RowBody::MobilityIndex(r) => fields.extend([
                    M(r.window_start),
                    M(r.window_end),
                    F(r.city_avg_speed),
                    F(r.city_avg_occupancy),
                    N(r.total_readings),
                    F(r.mobility_index),
                    T(&r.category),
                ]),
                RowBody::ParkingAggregations(r) => fields.extend([
                    T(&r.zone_id),
                    M(r.window_start),
                    M(r.window_end),
                    F(r.avg_occupancy_rate),
                    I(r.min_available_spaces),
                    N(r.readings),
                ]),
            }
            fields.push(Field::Bool(row.is_final));
            fields
        }
        Item::DeadLetter(d, id) => {
            let optional = |s: &'a Option<String>| s.as_deref().map_or(Field::Null, T);
            vec![
                T(id),
                T(d.topic.name()),
                I(d.position.partition.into()),
                I(d.position.offset),
                T(&d.key),
                M(d.kafka_timestamp),
                T(d.reason.name()),
                T(&d.detail),
                optional(&d.raw),
                optional(&d.raw_hex),
            ]
        }
        Item::Late(l, id) => vec![
            T(id),
            T(l.query.name()),
            T(l.topic.name()),
            T(&l.key),
            I(l.position.partition.into()),
            I(l.position.offset),
            M(l.event_time),
            M(l.window_end),
            M(l.watermark),
            T(&l.reason),
        ],
    }
}

/// The batch's archive records decoded, by topic, each with its event time.
fn archive_messages(batch: &Output) -> Result<BTreeMap<Topic, Vec<ArchiveRow<'_>>>, String> {
    let mut out: BTreeMap<Topic, Vec<ArchiveRow<'_>>> = BTreeMap::new();
    for a in &batch.archive {
        // The engine accepted these bytes, so they decode; anything else is a bug to report.
        let msg = Message::decode(a.topic, &a.value)
            .map_err(|e| format!("archive record of {} does not decode: {e}", a.topic))?;
        out.entry(a.topic)
            .or_default()
            .push((msg, system_time(a.event_time)));
    }
    Ok(out)
}

/// A decoded archive record and its event time.
type ArchiveRow<'a> = (Message<'a>, SystemTime);

/// One archive value for COPY, borrowed from the decoded message: no JSON tree, no copies of
/// the strings (this is what takes the archive past 300,000 rows/s; going through
/// `serde_json::Value` and [`Values`] cost about 5 us a row).
#[derive(Debug, PartialEq)]
enum Cell<'a> {
    Text(&'a str),
    Float(f64),
    Int(i64),
    Time(SystemTime),
}

impl Cell<'_> {
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Cell::Text(x) => x,
            Cell::Float(x) => x,
            Cell::Int(x) => x,
            Cell::Time(x) => x,
        }
    }
}

/// The archive row of a message, in the order of [`archive_table`]'s columns: the test
/// `archive_cells_follow_the_catalogue` holds the two together.
fn archive_cells<'a>(msg: &'a Message<'a>, event_time: SystemTime) -> Vec<Cell<'a>> {
    use Cell::{Float as F, Int as I, Text as T};
    let time = Cell::Time(event_time);
    match msg {
        Message::Traffic(m) => vec![
            T(&m.sensor_id),
            time,
            T(&m.road_id),
            T(&m.road_name),
            T(&m.zone_id),
            F(m.location.lat),
            F(m.location.lon),
            F(m.speed_kmh),
            I(m.vehicle_flow),
            F(m.occupancy_percent),
            T(m.congestion_level.wire_name()),
            T(m.data_quality.wire_name()),
        ],
        Message::Transport(m) => vec![
            T(&m.vehicle_id),
            time,
            T(&m.line_id),
            T(&m.line_number),
            T(&m.current_stop),
            T(&m.next_stop),
            T(m.direction.wire_name()),
            F(m.location.lat),
            F(m.location.lon),
            F(m.speed_kmh),
            I(m.passenger_count),
            I(m.capacity),
            F(m.occupancy_rate),
            F(m.delay_minutes),
            T(m.status.wire_name()),
        ],
        Message::Parking(m) => vec![
            T(&m.parking_id),
            time,
            T(&m.name),
            T(&m.zone_id),
            T(&m.kind),
            F(m.location.lat),
            F(m.location.lon),
            I(m.total_spaces),
            I(m.occupied_spaces),
            I(m.available_spaces),
            F(m.occupancy_rate),
            F(m.hourly_rate),
            T(&m.status),
        ],
        Message::Incident(m) => vec![
            T(&m.incident_id),
            time,
            T(m.kind.wire_name()),
            T(m.severity.name()),
            T(&m.location.road_id),
            T(&m.location.road_name),
            T(&m.location.zone_id),
            F(m.location.lat),
            F(m.location.lon),
            T(&m.description),
            I(m.estimated_duration_min),
            I(m.affected_lanes),
            T(&m.status),
        ],
    }
}

impl Sink for PostgresSink {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn write(&mut self, batch: &Output) -> Result<(), SinkError> {
        let groups = batch_items(batch);
        let archive = archive_messages(batch).map_err(backend)?;
        if groups.is_empty() && archive.is_empty() {
            return Ok(());
        }
        let mut tx = self
            .client
            .transaction()
            .await
            .map_err(|e| backend(format!("cannot begin a batch: {e}")))?;
        for (table, items) in &groups {
            if table.replace {
                let stmt = self
                    .inserts
                    .get(table.name)
                    .ok_or_else(|| backend(format!("no insert prepared for {}", table.name)))?;
                upsert(&tx, stmt, table, items).await?;
            } else {
                let cols = columns_of(table, items, true)
                    .map_err(|e| backend(format!("{}: {e}", table.name)))?;
                append(&mut tx, table, CopyRows::Columns(&cols, items.len())).await?;
            }
        }
        for (topic, rows) in &archive {
            append(&mut tx, &archive_table(*topic), CopyRows::Archive(rows)).await?;
        }
        tx.commit()
            .await
            .map_err(|e| backend(format!("cannot commit a batch: {e}")))
    }
}

/// Upserts query rows, [`ROWS_PER_STATEMENT`] per statement.
async fn upsert(
    tx: &Transaction<'_>,
    stmt: &Statement,
    table: &Table,
    items: &[Item<'_>],
) -> Result<(), SinkError> {
    for chunk in items.chunks(ROWS_PER_STATEMENT) {
        let cols =
            columns_of(table, chunk, false).map_err(|e| backend(format!("{}: {e}", table.name)))?;
        let params: Vec<&(dyn ToSql + Sync)> = cols.iter().map(Values::as_param).collect();
        tx.execute(stmt, &params).await.map_err(|e| {
            backend(format!(
                "insert of {} rows into {} failed: {e}",
                chunk.len(),
                table.name
            ))
        })?;
    }
    Ok(())
}

/// Appends rows to an append-only table by binary COPY, keeping rows already stored: see the
/// module docs for the fast path and the replay path.
async fn append(
    tx: &mut Transaction<'_>,
    table: &Table,
    rows: CopyRows<'_>,
) -> Result<(), SinkError> {
    let n = rows.len();
    let failed = |what: &str, e: tokio_postgres::Error| {
        backend(format!(
            "{what} of {n} rows into {} failed: {e}",
            table.name
        ))
    };
    let savepoint = tx
        .savepoint("append")
        .await
        .map_err(|e| failed("savepoint", e))?;
    match copy_rows(&savepoint, table.name, table, &rows).await {
        Ok(_) => return savepoint.commit().await.map_err(|e| failed("COPY", e)),
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            savepoint
                .rollback()
                .await
                .map_err(|e| failed("rollback of a replayed COPY", e))?;
        }
        Err(e) => return Err(failed("COPY", e)),
    }
    tracing::debug!(
        table = table.name,
        rows = n,
        "Rows already stored: appending through the staging table."
    );
    let stage = format!("stage_{}", table.name);
    let names = column_list(table);
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {} INCLUDING DEFAULTS) \
         ON COMMIT DELETE ROWS",
        table.name
    ))
    .await
    .map_err(|e| failed("staging table", e))?;
    copy_rows(tx, &stage, table, &rows)
        .await
        .map_err(|e| failed("COPY into the staging table", e))?;
    tx.batch_execute(&format!(
        "INSERT INTO {0} ({names}) SELECT {names} FROM {stage} ON CONFLICT DO NOTHING; \
         TRUNCATE {stage}",
        table.name
    ))
    .await
    .map_err(|e| failed("insert from the staging table", e))
}

/// The quoted column names of a table, comma-separated.
fn column_list(t: &Table) -> String {
    t.columns
        .iter()
        .map(|c| format!("\"{}\"", c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The binary type of a column, as COPY declares it.
fn pg_type(kind: Kind) -> Type {
    match kind {
        Text => Type::TEXT,
        Float => Type::FLOAT8,
        Int => Type::INT8,
        Time => Type::TIMESTAMPTZ,
        Bool => Type::BOOL,
    }
}

/// Rows for COPY.
#[derive(Debug)]
enum CopyRows<'r> {
    /// Column-major values (made with `copy` true) of this many rows.
    Columns(&'r [Values<'r>], usize),
    /// Decoded archive records.
    Archive(&'r [ArchiveRow<'r>]),
}

impl CopyRows<'_> {
    fn len(&self) -> usize {
        match self {
            CopyRows::Columns(_, n) => *n,
            CopyRows::Archive(rows) => rows.len(),
        }
    }
}

/// Binary COPY of `rows` into `target`, which has the columns of `t`.
async fn copy_rows(
    tx: &Transaction<'_>,
    target: &str,
    t: &Table,
    rows: &CopyRows<'_>,
) -> Result<u64, tokio_postgres::Error> {
    let sink = tx
        .copy_in(&format!(
            "COPY {target} ({}) FROM STDIN (FORMAT binary)",
            column_list(t)
        ))
        .await?;
    let types: Vec<Type> = t.columns.iter().map(|c| pg_type(c.kind)).collect();
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
    match rows {
        CopyRows::Columns(cols, n) => {
            let mut row: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(cols.len());
            for i in 0..*n {
                row.clear();
                row.extend(cols.iter().map(|c| c.at(i)));
                writer.as_mut().write(&row).await?;
            }
        }
        CopyRows::Archive(rows) => {
            for (msg, time) in rows.iter() {
                let cells = archive_cells(msg, *time);
                let row: Vec<&(dyn ToSql + Sync)> = cells.iter().map(Cell::as_sql).collect();
                writer.as_mut().write(&row).await?;
            }
        }
    }
    writer.finish().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CongestionLevel, DataQuality, Direction, IncidentType, TransportStatus};

    // Proves every query table's columns name every field of its rows, so nothing a row carries
    // is lost on the way into PostgreSQL (the read-back in the integration tests relies on it).
    #[test]
    fn query_tables_cover_row_fields() {
        use crate::engine::{Engine, EngineConfig, RawRecord, SourcePosition};
        let mut engine = Engine::new(EngineConfig::default()).unwrap();
        let mut out = Output::default();
        let rec = br#"{"sensor_id":"S1","timestamp":"2026-11-24T08:00:05Z","road_id":"R1","road_name":"A","zone_id":"Z1","location":{"lat":1.0,"lon":2.0},"speed_kmh":3.0,"vehicle_flow":4,"occupancy_percent":97.0,"congestion_level":"high","data_quality":"degraded"}"#;
        engine.ingest(
            &RawRecord {
                topic: Topic::Traffic,
                key: b"S1",
                value: rec,
                kafka_timestamp_ms: 1_795_507_205_000,
                position: SourcePosition::default(),
            },
            &mut out,
        );
        engine.flush(&mut out);
        assert!(out.rows.len() >= 4, "{:?}", out.rows);
        for row in &out.rows {
            let v = serde_json::to_value(row).unwrap();
            let t = query_table_of(row.query());
            let covered: Vec<&str> = t
                .columns
                .iter()
                .map(|c| c.pointer.trim_start_matches('/'))
                .collect();
            for key in v.as_object().unwrap().keys() {
                assert!(
                    key == "query" || covered.contains(&key.as_str()),
                    "{} lacks {key}",
                    t.name
                );
            }
        }
        let items = batch_items(&out);
        let archive = archive_messages(&out).unwrap();
        assert_eq!(archive[&Topic::Traffic].len(), 1);
        for (t, items) in &items {
            columns_of(t, items, false).unwrap();
            columns_of(t, items, true).unwrap();
        }
    }

    // Proves the values written for query rows, dead letters and late records follow the table
    // catalogue: for a row of every query, a dead letter with text and one with hex bytes, and
    // a late record, each value has its column's type and the value the column's JSON pointer
    // finds in the item's JSON, so the insert, the COPY and the catalogue cannot drift apart.
    #[test]
    fn item_fields_follow_the_catalogue() {
        use crate::engine::{DeadLetterReason, Engine, EngineConfig, RawRecord, SourcePosition};
        // Two traffic readings and three transport reports, so that no two values a swap of
        // columns could confuse are equal (min and max speed, vehicles and reports).
        let records: [(Topic, &[u8]); 9] = [
            (
                Topic::Traffic,
                br#"{"sensor_id":"S1","timestamp":"2026-11-24T08:00:05Z","road_id":"R1","road_name":"A","zone_id":"Z1","location":{"lat":1.0,"lon":2.0},"speed_kmh":3.0,"vehicle_flow":4,"occupancy_percent":97.0,"congestion_level":"high","data_quality":"degraded"}"#,
            ),
            (
                Topic::Traffic,
                br#"{"sensor_id":"S1","timestamp":"2026-11-24T08:00:10Z","road_id":"R1","road_name":"A","zone_id":"Z1","location":{"lat":1.0,"lon":2.0},"speed_kmh":40.0,"vehicle_flow":7,"occupancy_percent":55.0,"congestion_level":"low","data_quality":"good"}"#,
            ),
            (
                Topic::Transport,
                br#"{"vehicle_id":"B1","timestamp":"2026-11-24T08:00:05Z","line_id":"L1","line_number":"12","current_stop":"S1","next_stop":"S2","direction":"inbound","location":{"lat":1.5,"lon":2.5},"speed_kmh":21.0,"passenger_count":78,"capacity":80,"occupancy_rate":97.5,"delay_minutes":2.5,"status":"on_time"}"#,
            ),
            (
                Topic::Transport,
                br#"{"vehicle_id":"B2","timestamp":"2026-11-24T08:00:05Z","line_id":"L1","line_number":"12","current_stop":"S1","next_stop":"S2","direction":"inbound","location":{"lat":1.5,"lon":2.5},"speed_kmh":21.0,"passenger_count":20,"capacity":80,"occupancy_rate":25.0,"delay_minutes":1.0,"status":"on_time"}"#,
            ),
            (
                Topic::Transport,
                br#"{"vehicle_id":"B1","timestamp":"2026-11-24T08:00:10Z","line_id":"L1","line_number":"12","current_stop":"S2","next_stop":"S3","direction":"inbound","location":{"lat":1.5,"lon":2.5},"speed_kmh":21.0,"passenger_count":30,"capacity":80,"occupancy_rate":37.5,"delay_minutes":3.0,"status":"delayed"}"#,
            ),
            (
                Topic::Parking,
                br#"{"parking_id":"P1","timestamp":"2026-11-24T08:00:05Z","name":"Centre","zone_id":"Z1","type":"underground","location":{"lat":1.5,"lon":2.5},"total_spaces":100,"occupied_spaces":60,"available_spaces":40,"occupancy_rate":60.0,"hourly_rate":2.5,"status":"open"}"#,
            ),
            (
                Topic::Incidents,
                br#"{"incident_id":"I1","timestamp":"2026-11-24T08:00:05Z","type":"power_outage","severity":"critical","location":{"road_id":"R1","road_name":"A","zone_id":"Z1","lat":1.5,"lon":2.5},"description":"signals out","estimated_duration_min":45,"affected_lanes":2,"status":"active"}"#,
            ),
            (Topic::Traffic, b"{\"sensor_id\":"),
            (Topic::Parking, b"\xff\xfe"),
        ];
        let mut engine = Engine::new(EngineConfig::default()).unwrap();
        let mut out = Output::default();
        for (offset, (topic, value)) in (0..).zip(records) {
            let position = SourcePosition {
                partition: 1,
                offset,
            };
            let record = RawRecord {
                topic,
                key: b"K1",
                value,
                kafka_timestamp_ms: 1_795_507_205_000,
                position,
            };
            engine.ingest(&record, &mut out);
        }
        engine.flush(&mut out);
        out.late.push(LateRecord {
            query: Query::TrafficAggregations,
            topic: Topic::Traffic,
            key: "TS-003".into(),
            position: SourcePosition {
                partition: 2,
                offset: 41,
            },
            event_time: 1_795_507_200_000,
            window_end: 1_795_507_500_000,
            watermark: 1_795_507_800_000,
            reason: "window final".into(),
        });
        assert!(
            out.dead_letters
                .iter()
                .all(|d| d.reason == DeadLetterReason::MalformedJson),
            "{:?}",
            out.dead_letters
        );
        let mut tables = Vec::new();
        for (table, items) in batch_items(&out) {
            tables.push(table.name);
            for item in &items {
                let (value, id) = match item {
                    Item::Row(r) => (serde_json::to_value(r), None),
                    Item::DeadLetter(d, id) => (serde_json::to_value(d), Some(id)),
                    Item::Late(l, id) => (serde_json::to_value(l), Some(id)),
                };
                let mut value = value.unwrap();
                if let (Some(id), Value::Object(m)) = (id, &mut value) {
                    m.insert("id".into(), Value::String(id.clone()));
                }
                let fields = item_fields(item);
                assert_eq!(fields.len(), table.columns.len(), "{}", table.name);
                for (field, col) in fields.iter().zip(table.columns) {
                    let v = value.pointer(col.pointer);
                    let ok = match (field, col.kind) {
                        (Field::Text(s), Text) => v.and_then(Value::as_str) == Some(*s),
                        (Field::Null, Text) => v.is_none_or(Value::is_null),
                        (Field::Float(x), Float) => v.and_then(Value::as_f64) == Some(*x),
                        (Field::Int(x), Int) => v.and_then(Value::as_i64) == Some(*x),
                        (Field::Count(x), Int) => v.and_then(Value::as_u64) == Some(*x),
                        (Field::Millis(ms), Time) => {
                            v.and_then(Value::as_str)
                                .and_then(|s| crate::time::parse(s).ok())
                                .and_then(|t| t.utc_millis())
                                == Some(*ms)
                        }
                        (Field::Bool(b), Bool) => v.and_then(Value::as_bool) == Some(*b),
                        _ => false,
                    };
                    assert!(ok, "{}.{}: {field:?} vs {v:?}", table.name, col.name);
                }
            }
            // Every value goes into its column's type.
            columns_of(&table, &items, false).unwrap();
            columns_of(&table, &items, true).unwrap();
        }
        let mut want: Vec<&str> = Query::ALL.iter().map(|q| q.name()).collect();
        want.extend([DEAD_LETTERS.name, LATE_RECORDS.name]);
        tables.sort_unstable();
        want.sort_unstable();
        assert_eq!(tables, want);
        let raw = |d: &DeadLetter| (d.raw.is_some(), d.raw_hex.is_some());
        let kinds: Vec<_> = out.dead_letters.iter().map(raw).collect();
        assert_eq!(kinds, [(true, false), (false, true)]);
    }

    // Proves the archive's COPY rows follow the table catalogue: for a message of every topic,
    // each cell has its column's type and the value the column's JSON pointer finds in the
    // message's JSON, so the COPY path and the catalogue cannot drift apart.
    #[test]
    fn archive_cells_follow_the_catalogue() {
        let messages: [(Topic, &str); 4] = [
            (
                Topic::Traffic,
                r#"{"sensor_id":"S1","timestamp":"2026-11-24T08:00:05Z","road_id":"R1","road_name":"A","zone_id":"Z1","location":{"lat":1.5,"lon":2.5},"speed_kmh":3.0,"vehicle_flow":4,"occupancy_percent":97.0,"congestion_level":"high","data_quality":"degraded"}"#,
            ),
            (
                Topic::Transport,
                r#"{"vehicle_id":"B1","timestamp":"2026-11-24T08:00:05Z","line_id":"L1","line_number":"12","current_stop":"S1","next_stop":"S2","direction":"inbound","location":{"lat":1.5,"lon":2.5},"speed_kmh":21.0,"passenger_count":40,"capacity":80,"occupancy_rate":50.0,"delay_minutes":2.5,"status":"on_time"}"#,
            ),
            (
                Topic::Parking,
                r#"{"parking_id":"P1","timestamp":"2026-11-24T08:00:05Z","name":"Centre","zone_id":"Z1","type":"underground","location":{"lat":1.5,"lon":2.5},"total_spaces":100,"occupied_spaces":60,"available_spaces":40,"occupancy_rate":60.0,"hourly_rate":2.5,"status":"open"}"#,
            ),
            (
                Topic::Incidents,
                r#"{"incident_id":"I1","timestamp":"2026-11-24T08:00:05Z","type":"power_outage","severity":"critical","location":{"road_id":"R1","road_name":"A","zone_id":"Z1","lat":1.5,"lon":2.5},"description":"signals out","estimated_duration_min":45,"affected_lanes":2,"status":"active"}"#,
            ),
        ];
        let when = system_time(1_795_507_205_000);
        for (topic, json) in messages {
            let msg = Message::decode(topic, json.as_bytes()).unwrap();
            let value: Value = serde_json::from_slice(&msg.to_json()).unwrap();
            let cells = archive_cells(&msg, when);
            let table = archive_table(topic);
            assert_eq!(cells.len(), table.columns.len(), "{}", table.name);
            for (cell, col) in cells.iter().zip(table.columns) {
                let v = value.pointer(col.pointer);
                let ok = match (cell, col.kind) {
                    (Cell::Text(s), Text) => v.and_then(Value::as_str) == Some(*s),
                    (Cell::Float(x), Float) => v.and_then(Value::as_f64) == Some(*x),
                    (Cell::Int(x), Int) => v.and_then(Value::as_i64) == Some(*x),
                    (Cell::Time(t), Time) => col.name == "event_time" && *t == when,
                    _ => false,
                };
                assert!(ok, "{}.{}: {cell:?} vs {v:?}", table.name, col.name);
            }
        }
    }

    // Proves the enums' names written to the archive are the ones serde writes, for every
    // variant.
    #[test]
    fn enum_names_are_the_wire_names() {
        fn wire<T: serde::Serialize>(v: T) -> String {
            serde_json::to_value(v)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        }
        for v in [
            CongestionLevel::Low,
            CongestionLevel::Medium,
            CongestionLevel::High,
        ] {
            assert_eq!(v.wire_name(), wire(v));
        }
        for v in [DataQuality::Good, DataQuality::Degraded] {
            assert_eq!(v.wire_name(), wire(v));
        }
        for v in [Direction::Outbound, Direction::Inbound] {
            assert_eq!(v.wire_name(), wire(v));
        }
        for v in [TransportStatus::OnTime, TransportStatus::Delayed] {
            assert_eq!(v.wire_name(), wire(v));
        }
        for v in IncidentType::ALL {
            assert_eq!(v.wire_name(), wire(v));
        }
    }

    // Proves a final row is never replaced by the upsert, and that archive tables are appended.
    #[test]
    fn upserts_keep_final_rows() {
        let sql = insert_sql(&query_table_of(Query::TrafficAggregations));
        assert!(
            sql.ends_with("WHERE NOT traffic_aggregations.\"is_final\""),
            "{sql}"
        );
        assert!(!archive_table(Topic::Traffic).replace);
        const { assert!(!DEAD_LETTERS.replace && !LATE_RECORDS.replace) };
    }

    // Proves schema names are checked before they reach SQL.
    #[test]
    fn identifiers_are_checked() {
        assert!(plain_identifier("smart_city_t1"));
        assert!(!plain_identifier("x; DROP TABLE y"));
        assert!(!plain_identifier("Public"));
        assert!(!plain_identifier(""));
    }
}
