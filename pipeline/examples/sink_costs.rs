//! Measures the sinks' write costs against real services (issue #10, items 3 and 4): rows per
//! second into the PostgreSQL archive by binary COPY (first write and replay), and MongoDB's cost
//! per document in a nearly empty and in a filled collection, for the sink's writes (final rows
//! inserted once, partial rows replaced by delete-then-insert) and for the per-document upserts
//! the sink used before.
//!
//! ```sh
//! eval "$(bash scripts/services.sh env)"
//! cargo run --release -p pipeline --features services --example sink_costs -- [ARCHIVE_ROWS] [MONGO_DOCS]
//! ```
//!
//! ARCHIVE_ROWS (default 300000) traffic readings go to the archive in batches of 20,000;
//! MONGO_DOCS (default 12000) is how full the "filled" collections get; 0 skips either part. Everything is written to
//! a schema and a database of the run's own, removed at the end.

use std::time::Duration;

use anyhow::Context;
use mongodb::bson::{Bson, Document, doc};
use pipeline::engine::{ArchiveRecord, Output, Row, RowBody, SourcePosition, TrafficAggregation};
use pipeline::model::Topic;
use pipeline::sink::Sink;
use pipeline::sink::mongo::{self, MongoSink};
use pipeline::sink::postgres::{self, PostgresSink};
use pipeline::streaming::WallClock;
use pipeline::time::{Millis, format_rfc3339};

/// 2026-11-24T00:00:00Z.
const T0: Millis = 1_795_478_400_000;
/// Archive rows per write, about what the bulk lane hands over when it catches up.
const ARCHIVE_BATCH: usize = 20_000;
/// Documents per measured MongoDB batch.
const MONGO_BATCH: usize = 1_000;
/// Documents measured with per-document upserts (they are slow on FerretDB).
const UPSERTS: usize = 200;

fn arg(n: usize, default: usize) -> anyhow::Result<usize> {
    match std::env::args().nth(n) {
        None => Ok(default),
        Some(a) => a
            .parse()
            .with_context(|| format!("argument {n} `{a}` is not a count")),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let archive_rows = arg(1, 300_000)?;
    let mongo_docs = arg(2, 12_000)?;
    let name = format!("sink_costs_{}", std::process::id());
    let var = |name: &str| {
        std::env::var(name)
            .with_context(|| format!("set {name} (eval \"$(bash scripts/services.sh env)\")"))
    };
    // A count of 0 skips that part.
    if archive_rows > 0 {
        postgres_archive(&var("POSTGRES_URL")?, &name, archive_rows).await?;
    }
    if mongo_docs > 0 {
        mongo_costs(&var("MONGODB_URI")?, &name, mongo_docs).await?;
    }
    Ok(())
}

/// A traffic reading of sensor `s` at tick `t`, as the generator writes them.
fn reading(s: usize, t: usize) -> ArchiveRecord {
    let event_time = T0 + t as Millis * 5_000;
    let value = format!(
        r#"{{"sensor_id":"TS-{s:04}","timestamp":"{}","road_id":"R{}","road_name":"Road {}","zone_id":"Z{}","location":{{"lat":40.4{s},"lon":-3.7{t}}},"speed_kmh":{}.5,"vehicle_flow":{},"occupancy_percent":{}.25,"congestion_level":"medium","data_quality":"good"}}"#,
        format_rfc3339(event_time),
        s % 5,
        s % 5,
        s % 5,
        20 + s % 40,
        t % 30,
        s % 90,
    );
    ArchiveRecord {
        topic: Topic::Traffic,
        position: SourcePosition {
            partition: 0,
            offset: (t * 1000 + s) as i64,
        },
        event_time,
        value: value.into_bytes(),
    }
}

async fn postgres_archive(url: &str, schema: &str, rows: usize) -> anyhow::Result<()> {
    let sensors = 210;
    let batches: Vec<Output> = (0..rows)
        .map(|i| reading(i % sensors, i / sensors))
        .collect::<Vec<_>>()
        .chunks(ARCHIVE_BATCH)
        .map(|c| Output {
            archive: c.to_vec(),
            ..Output::default()
        })
        .collect();
    let client = postgres::connect(url).await?;
    let mut sink = PostgresSink::new(client, schema).await?;
    for (what, path) in [
        ("first write", "COPY"),
        (
            "replay",
            "COPY refused, staging table + ON CONFLICT DO NOTHING",
        ),
    ] {
        let started = WallClock.instant();
        for b in &batches {
            sink.write(b).await?;
        }
        let s = started.elapsed().as_secs_f64();
        println!(
            "postgresql archive, {what} ({path}): {rows} rows in {s:.2} s = {:.0} rows/s",
            rows as f64 / s
        );
    }
    let stored = sink.count("traffic_data").await?;
    anyhow::ensure!(stored == rows as i64, "{stored} rows stored of {rows}");
    sink.client()
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await?;
    Ok(())
}

/// A traffic-aggregation row: window `i`'s, of 25 road keys per minute.
fn window_row(i: usize, is_final: bool) -> Row {
    let start = T0 + (i / 25) as Millis * 60_000;
    let (zone, road) = (format!("Z{}", i % 5), format!("R{}", i % 25));
    Row {
        id: format!(
            "traffic_aggregations|{zone}|{road}|{}",
            format_rfc3339(start)
        ),
        body: RowBody::TrafficAggregations(TrafficAggregation {
            zone_id: zone,
            road_id: road,
            window_start: start,
            window_end: start + 300_000,
            avg_speed: 31.5,
            min_speed: 12.0,
            max_speed: 55.0,
            total_vehicles: 420,
            avg_occupancy: 40.25,
            sensor_readings: 60,
            congestion_score: 0.7,
        }),
        is_final,
    }
}

fn rows_output(range: std::ops::Range<usize>, is_final: bool) -> Output {
    Output {
        rows: range.map(|i| window_row(i, is_final)).collect(),
        ..Output::default()
    }
}

/// Milliseconds per document of `n` documents written in `elapsed`.
fn per_doc(elapsed: Duration, n: usize) -> f64 {
    elapsed.as_secs_f64() * 1000.0 / n as f64
}

async fn mongo_costs(uri: &str, database: &str, fill: usize) -> anyhow::Result<()> {
    let client = mongo::client(uri, Duration::from_secs(10)).await?;
    let mut sink = MongoSink::new(&client, database).await?;
    let db = sink.database().clone();
    let partial = 100;
    let mut next = 0;
    for round in ["nearly empty", "filled"] {
        if round == "filled" {
            // Fill with final rows in the sink's own batches.
            while next < fill {
                let end = (next + MONGO_BATCH).min(fill);
                sink.write(&rows_output(next..end, true)).await?;
                next = end;
            }
        }
        let count = sink.count("traffic_aggregations").await?;
        // Final rows, inserted once.
        let started = WallClock.instant();
        sink.write(&rows_output(next..next + MONGO_BATCH, true))
            .await?;
        let insert = per_doc(started.elapsed(), MONGO_BATCH);
        // The same final rows again: a replay, all duplicates.
        let started = WallClock.instant();
        sink.write(&rows_output(next..next + MONGO_BATCH, true))
            .await?;
        let replay = per_doc(started.elapsed(), MONGO_BATCH);
        next += MONGO_BATCH;
        // Partial rows of open windows: written, replaced by later partials, then final.
        let open = next..next + partial;
        sink.write(&rows_output(open.clone(), false)).await?;
        let started = WallClock.instant();
        sink.write(&rows_output(open.clone(), false)).await?;
        let replace = per_doc(started.elapsed(), partial);
        let started = WallClock.instant();
        sink.write(&rows_output(open.clone(), true)).await?;
        let finalise = per_doc(started.elapsed(), partial);
        next = open.end;
        println!(
            "mongodb sink, {round} ({count} documents): final rows inserted {insert:.3} ms/doc, \
             replayed {replay:.3} ms/doc; partial rows replaced {replace:.3} ms/doc, made final \
             {finalise:.3} ms/doc"
        );
        // Before: per-document upserts, as `update` commands of 32 replace-with-upsert statements.
        let started = WallClock.instant();
        for chunk in (next..next + UPSERTS).collect::<Vec<_>>().chunks(32) {
            let updates: Vec<Bson> = chunk
                .iter()
                .map(|&i| {
                    let d = mongo::row_to_document(&window_row(i, true)).expect("a document");
                    let id = d.get("_id").cloned().unwrap_or(Bson::Null);
                    Bson::Document(doc! { "q": { "_id": id }, "u": d, "upsert": true })
                })
                .collect();
            db.run_command(
                doc! { "update": "traffic_aggregations", "updates": updates, "ordered": false },
            )
            .await?;
        }
        let upsert = per_doc(started.elapsed(), UPSERTS);
        next += UPSERTS;
        println!(
            "mongodb before (per-document upserts), {round} ({} documents): {upsert:.3} ms/doc",
            count + MONGO_BATCH as u64 + partial as u64
        );
    }
    let stored = sink.count("traffic_aggregations").await?;
    let partials = db
        .collection::<Document>("traffic_aggregations")
        .count_documents(doc! { "final": false })
        .await?;
    anyhow::ensure!(stored == next as u64, "{stored} documents of {next}");
    anyhow::ensure!(partials == 0, "{partials} partial rows left");
    db.drop().await?;
    Ok(())
}
