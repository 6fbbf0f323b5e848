//! The MongoDB sink: database `smart_city`, one collection per query with `_id` = row id; dead
//! letters in `dead_letters` and late records in `late_records`, keyed by their source position.
//!
//! # How a batch is written, and why
//!
//! Every write is made of plain `insert` and `delete` commands, one per collection per batch (in
//! chunks of [`DOCUMENTS_PER_COMMAND`]), never per-document upserts:
//!
//! - **Everything is inserted once, unordered.** Final rows, alerts, dead letters and late records
//!   never change, so a replay after a crash (or a retry after a timeout) that inserts them again
//!   gets a duplicate-key error for each, and that is success: the stored document is already the
//!   one being written. The other documents of a half-replayed batch still go in.
//! - **Partial rows (open windows, written at each trigger, SPEC §2) are replaced by a batched
//!   delete-then-insert.** When rows of a window collection collide with stored documents, one
//!   `delete` of `{_id: {$in: [the colliding ids]}, final: false}` removes the partial rows they
//!   replace, and the colliding rows are inserted again. The filter never matches a final row, so
//!   a final row is never replaced — not by a partial that a replay emits again (its second insert
//!   is a duplicate again, ignored), not by itself. A partial row is replaced by a later partial
//!   and by its final.
//!
//! Readers therefore see what they saw before: one document per row id, a window's partial row
//! while it is open and its final row once the watermark passed it. Between the delete and the
//! second insert (and, after a crash there, until the replay) an open window's row can be
//! missing, never wrong. A write that timed out may still run on the server after its retry: a
//! late insert is a duplicate and changes nothing, a late delete can remove a newer *partial*
//! row, which the next trigger or the final row writes again.
//!
//! Why: FerretDB 1.24 with its SQLite backend has no index behind a filter on `_id` — an upsert
//! or a `find` by `_id` scans the collection, so per-document upserts cost more per row the more
//! the collection holds (measured with a plain client: 1.8 ms per document at 0-2 K documents,
//! 19 ms at 11 K). An `insert` uses the unique index on `_id` and costs the same at any size
//! (about 0.1 ms per document in commands of 1,000). A `delete` with `$in` scans once per
//! command: so the sink deletes only when a batch really replaces partial rows, and then once
//! per collection for the whole batch — a batch of new rows (most finals, when the job catches
//! up) costs no scan at all. On MongoDB proper the same commands are the cheapest too (unordered
//! inserts and one delete on the `_id` index), and neither needs transactions or the `bulkWrite`
//! command, which FerretDB v1 lacks. `pipeline/examples/sink_costs.rs` measures the cost per
//! document in a nearly empty and in a filled collection; on FerretDB 1.24 (SQLite, a busy
//! 2-core machine) from empty to 12 K documents: final rows 0.10 -> 0.17 ms, partial rows
//! replaced in batches of 100 1.1 -> 17 ms (the one scan of the delete, shared by the batch),
//! the per-document upserts this replaced 16 -> 150 ms.
//!
//! Upserts also wedged FerretDB: each statement of a command that *replaces* a document keeps a
//! pooled SQLite connection busy until the command ends, and the pool holds 100 per database;
//! three lanes each sending many upserts made it stop answering entirely (even `ping`). So the
//! sink's clones (one per lane) share a semaphore of [`COMMANDS_IN_FLIGHT`] permits, and each
//! command runs in a task of its own that holds its permit until the server answered: a write
//! abandoned on its timeout does not free its permit before its command is done, so retries
//! cannot pile commands up on a slow server.
//!
//! Times (`window_start`, `window_end`, `event_time`, `kafka_timestamp`, `watermark`) are BSON
//! datetimes, so range queries and indexes work natively; [`document_to_row`] turns them back
//! into the row's RFC 3339 text, so a read-back gives the same canonical row JSON as the engine
//! emitted.
//!
//! A batch's documents are held as encoded BSON ([`RawDocumentBuf`], the bytes the driver sends)
//! from the moment they are made until the server acknowledged them, never as [`Document`]s: a
//! `Document` keeps every field name and string value in an allocation of its own beside an
//! index map, and a batch of a flood holds thousands of them (at the job's peak in the
//! key-flood test, massif: about twice the heap of the same documents encoded). The driver
//! encodes each document it sends anyway, so encoding it once here costs nothing extra.

use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::bson::{self, Bson, DateTime, Document, RawBsonRef, RawDocumentBuf, doc};
use mongodb::error::{ErrorKind, InsertManyError};
use mongodb::options::ClientOptions;
use mongodb::{Client, Database, IndexModel};
use tokio::sync::Semaphore;

use crate::engine::{DeadLetter, LateRecord, Output, Query, Row};
use crate::time::{format_rfc3339, parse};

use super::{Sink, SinkError, dead_letter_id, key_fields, last_rows, late_id, time_field};

const NAME: &str = "mongodb";

/// Documents (or ids to delete) per command. Inserts and deletes hold no pooled connection per
/// document on FerretDB, so this only bounds the size of one command; the driver splits an
/// insert further if it would exceed the server's message size.
pub const DOCUMENTS_PER_COMMAND: usize = 1000;

/// Commands in flight to the server at once, across every clone of one sink (all lanes).
pub const COMMANDS_IN_FLIGHT: usize = 2;

/// The server's error code for a duplicate key.
const DUPLICATE_KEY: i32 = 11000;

/// Fields holding an instant, stored as BSON datetimes.
const TIME_FIELDS: [&str; 5] = [
    "window_start",
    "window_end",
    "event_time",
    "kafka_timestamp",
    "watermark",
];

/// The collection of dead letters.
pub const DEAD_LETTERS: &str = "dead_letters";
/// The collection of late records.
pub const LATE_RECORDS: &str = "late_records";

fn backend(detail: String) -> SinkError {
    SinkError::Backend { sink: NAME, detail }
}

/// Where the sink writes.
#[derive(Clone, Debug)]
pub struct MongoConfig {
    /// `mongodb://host:port` (no credentials for FerretDB: it only speaks PLAIN).
    pub uri: String,
    /// Database name (`smart_city`; tests use a unique one).
    pub database: String,
}

/// A client that fails fast: one attempt is one server-selection timeout.
pub async fn client(uri: &str, timeout: Duration) -> Result<Client, SinkError> {
    let mut options = ClientOptions::parse(uri).await.map_err(|e| {
        backend(format!(
            "MONGODB_URI is not a MongoDB connection string ({}): {e}",
            crate::streaming::redact_url(uri)
        ))
    })?;
    options.server_selection_timeout = Some(timeout);
    options.connect_timeout = Some(timeout);
    options.app_name = Some("smart-city-pipeline".to_owned());
    Client::with_options(options).map_err(|e| backend(format!("cannot create a client: {e}")))
}

/// Checks that the server answers `ping`.
pub async fn ping(client: &Client) -> Result<(), SinkError> {
    client
        .database("admin")
        .run_command(doc! { "ping": 1 })
        .await
        .map(|_| ())
        .map_err(|e| backend(format!("ping failed: {e}")))
}

/// The MongoDB sink. Clones share the bound on commands in flight: give each lane a clone.
#[derive(Clone, Debug)]
pub struct MongoSink {
    db: Database,
    in_flight: Arc<Semaphore>,
}

/// One command of a write.
#[derive(Debug)]
enum Command {
    /// Deletes the partial rows with these ids.
    DeletePartials {
        collection: &'static str,
        ids: Vec<Bson>,
    },
    /// Inserts documents, unordered.
    Insert {
        collection: &'static str,
        docs: Vec<RawDocumentBuf>,
    },
}

impl Command {
    /// Runs the command; an insert answers with the documents whose `_id` was already stored.
    async fn run(self, db: &Database) -> Result<Vec<RawDocumentBuf>, SinkError> {
        match self {
            Command::DeletePartials { collection, ids } => {
                let n = ids.len();
                // `final: false` is a plain equality, which FerretDB's SQLite backend can hand
                // to SQL; the `$in` it tests in Go on what comes back. It is still one scan of
                // the collection per command there (see the module docs).
                db.collection::<Document>(collection)
                    .delete_many(doc! { "final": false, "_id": { "$in": ids } })
                    .await
                    .map(|_| Vec::new())
                    .map_err(|e| {
                        backend(format!(
                            "delete of the partial rows of {n} ids in {collection}: {e}"
                        ))
                    })
            }
            Command::Insert { collection, docs } => {
                let result = db
                    .collection::<RawDocumentBuf>(collection)
                    .insert_many(&docs)
                    .ordered(false)
                    .await;
                match result {
                    Ok(_) => Ok(Vec::new()),
                    Err(e) => match duplicates(&e) {
                        Some(at) => Ok(docs
                            .into_iter()
                            .enumerate()
                            .filter(|(i, _)| at.contains(i))
                            .map(|(_, d)| d)
                            .collect()),
                        None => Err(backend(format!(
                            "insert of {} documents into {collection}: {e}",
                            docs.len()
                        ))),
                    },
                }
            }
        }
    }
}

/// The positions of the documents an insert refused because their `_id` is stored already, if
/// that is all that went wrong.
fn duplicates(e: &mongodb::error::Error) -> Option<std::collections::BTreeSet<usize>> {
    match e.kind.as_ref() {
        ErrorKind::InsertMany(InsertManyError {
            write_errors: Some(errors),
            write_concern_error: None,
            ..
        }) if errors.iter().all(|w| w.code == DUPLICATE_KEY) => {
            Some(errors.iter().map(|w| w.index).collect())
        }
        _ => None,
    }
}

impl MongoSink {
    /// A sink on `client`'s database `database`, creating the indexes (key fields + time) of
    /// every query's collection. Creating an index that exists is a no-op.
    pub async fn new(client: &Client, database: &str) -> Result<Self, SinkError> {
        let db = client.database(database);
        for q in Query::ALL {
            let mut keys = Document::new();
            for k in key_fields(q) {
                keys.insert(*k, 1);
            }
            keys.insert(time_field(q), 1);
            let model = IndexModel::builder().keys(keys).build();
            db.collection::<Document>(q.name())
                .create_index(model)
                .await
                .map_err(|e| backend(format!("cannot create the index of {}: {e}", q.name())))?;
        }
        Ok(MongoSink {
            db,
            in_flight: Arc::new(Semaphore::new(COMMANDS_IN_FLIGHT)),
        })
    }

    /// The database written to.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Runs one command once a permit is free. The command runs in a task of its own that holds
    /// the permit until the server answered, even if this future is dropped (a write timeout).
    async fn run(&self, command: Command) -> Result<Vec<RawDocumentBuf>, SinkError> {
        let db = self.db.clone();
        let permits = Arc::clone(&self.in_flight);
        tokio::spawn(async move {
            let _permit = permits
                .acquire_owned()
                .await
                .map_err(|e| backend(format!("the command bound is closed: {e}")))?;
            command.run(&db).await
        })
        .await
        .map_err(|e| backend(format!("a MongoDB command's task failed: {e}")))?
    }

    /// Stores one collection's documents of a batch: see the module docs.
    async fn store(&self, plan: Plan) -> Result<(), SinkError> {
        let Plan {
            collection,
            docs,
            replaces,
        } = plan;
        let mut stored = Vec::new();
        for docs in chunks(docs) {
            stored.extend(self.run(Command::Insert { collection, docs }).await?);
        }
        if !replaces || stored.is_empty() {
            return Ok(());
        }
        // These ids are stored already: as partial rows to replace, or as final rows to keep.
        let ids: Vec<Bson> = stored
            .iter()
            .map(|d| {
                d.get_str("_id")
                    .map_or(Bson::Null, |id| Bson::String(id.to_owned()))
            })
            .collect();
        for ids in ids.chunks(DOCUMENTS_PER_COMMAND) {
            let ids = ids.to_vec();
            self.run(Command::DeletePartials { collection, ids })
                .await?;
        }
        for docs in chunks(stored) {
            // What is still refused is a final row: kept.
            self.run(Command::Insert { collection, docs }).await?;
        }
        Ok(())
    }

    /// Every row stored for `query`, in id order, read back as the engine's rows.
    pub async fn read_rows(&self, query: Query) -> Result<Vec<Row>, SinkError> {
        let docs: Vec<Document> = self
            .db
            .collection::<Document>(query.name())
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .await
            .map_err(|e| backend(format!("cannot read {}: {e}", query.name())))?
            .try_collect()
            .await
            .map_err(|e| backend(format!("cannot read {}: {e}", query.name())))?;
        docs.into_iter()
            .map(|d| document_to_row(d).map_err(backend))
            .collect()
    }

    /// Every dead letter stored, in id (topic, partition, offset) order.
    pub async fn read_dead_letters(&self) -> Result<Vec<DeadLetter>, SinkError> {
        self.read_all(DEAD_LETTERS).await
    }

    /// Every late record stored, in id order.
    pub async fn read_late(&self) -> Result<Vec<LateRecord>, SinkError> {
        self.read_all(LATE_RECORDS).await
    }

    async fn read_all<T: serde::de::DeserializeOwned>(
        &self,
        collection: &str,
    ) -> Result<Vec<T>, SinkError> {
        let docs: Vec<Document> = self
            .db
            .collection::<Document>(collection)
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .await
            .map_err(|e| backend(format!("cannot read {collection}: {e}")))?
            .try_collect()
            .await
            .map_err(|e| backend(format!("cannot read {collection}: {e}")))?;
        docs.into_iter()
            .map(|d| from_document(d).map_err(|e| backend(format!("{collection}: {e}"))))
            .collect()
    }

    /// The number of documents in a collection.
    pub async fn count(&self, collection: &str) -> Result<u64, SinkError> {
        self.db
            .collection::<Document>(collection)
            .count_documents(doc! {})
            .await
            .map_err(|e| backend(format!("cannot count {collection}: {e}")))
    }
}

/// A serialisable value as stored, encoded: `_id` first, then the value's fields in their order
/// without `id`, RFC 3339 time fields as BSON datetimes.
fn encode<T: serde::Serialize>(value: &T, id: &str) -> Result<RawDocumentBuf, String> {
    let fields =
        bson::to_raw_document_buf(value).map_err(|e| format!("cannot encode as BSON: {e}"))?;
    // An empty document (its length, 5, and the closing NUL) with room for every field and
    // `_id`: appending then never leaves the buffer up to twice the document's size for as
    // long as the batch is held. A time field's datetime is shorter than its text.
    let mut data = Vec::with_capacity(fields.as_bytes().len() + id.len() + 16);
    data.extend_from_slice(&5_i32.to_le_bytes());
    data.push(0);
    let mut out =
        RawDocumentBuf::from_bytes(data).map_err(|e| format!("an empty document: {e}"))?;
    out.append_ref("_id", id);
    for field in &fields {
        let (name, value) = field.map_err(|e| format!("cannot read back the BSON: {e}"))?;
        if name == "id" {
            continue;
        }
        match value {
            RawBsonRef::String(text) if TIME_FIELDS.contains(&name) => {
                let ms = parse(text)
                    .map_err(|e| format!("{name}: {e}"))?
                    .utc_millis()
                    .ok_or_else(|| format!("{name} `{text}` has no offset"))?;
                out.append_ref(name, DateTime::from_millis(ms));
            }
            value => out.append_ref(name, value),
        }
    }
    Ok(out)
}

/// A row as stored, encoded.
fn encode_row(row: &Row) -> Result<RawDocumentBuf, String> {
    encode(row, &row.id)
}

/// A row as stored.
pub fn row_to_document(row: &Row) -> Result<Document, String> {
    encode_row(row)?
        .to_document()
        .map_err(|e| format!("cannot read back the BSON: {e}"))
}

/// A stored row back as the engine's row: the inverse of [`row_to_document`].
pub fn document_to_row(d: Document) -> Result<Row, String> {
    from_document(d)
}

/// A stored document back as the value it was made from: `_id` becomes `id`, BSON datetimes
/// RFC 3339 text.
fn from_document<T: serde::de::DeserializeOwned>(d: Document) -> Result<T, String> {
    let mut map = serde_json::Map::new();
    for (k, v) in d {
        let key = if k == "_id" { "id".to_owned() } else { k };
        let value = match v {
            Bson::DateTime(t) => serde_json::Value::String(format_rfc3339(t.timestamp_millis())),
            Bson::String(s) => serde_json::Value::String(s),
            Bson::Boolean(b) => serde_json::Value::Bool(b),
            Bson::Int32(i) => serde_json::Value::from(i),
            Bson::Int64(i) => serde_json::Value::from(i),
            Bson::Double(f) => serde_json::Number::from_f64(f)
                .map(serde_json::Value::Number)
                .ok_or_else(|| format!("{key}: non-finite number {f}"))?,
            Bson::Null => serde_json::Value::Null,
            other => return Err(format!("{key}: unexpected BSON value {other}")),
        };
        map.insert(key, value);
    }
    serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| {
        format!(
            "stored document is not a {}: {e}",
            std::any::type_name::<T>()
        )
    })
}

impl Sink for MongoSink {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn write(&mut self, batch: &Output) -> Result<(), SinkError> {
        let plans = plan(batch)?;
        let this = &*self;
        // Collections in parallel, bounded by the shared permits.
        futures_util::future::try_join_all(plans.into_iter().map(|p| this.store(p))).await?;
        Ok(())
    }
}

/// One collection's documents of a batch.
#[derive(Debug)]
struct Plan {
    collection: &'static str,
    docs: Vec<RawDocumentBuf>,
    /// Whether the documents may replace stored partial rows (window rows).
    replaces: bool,
}

/// The documents of a batch, by collection.
fn plan(batch: &Output) -> Result<Vec<Plan>, SinkError> {
    let mut plans = Vec::new();
    for (q, rows) in last_rows(&batch.rows) {
        let collection = q.name();
        let docs = rows
            .iter()
            .map(|r| encode_row(r))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| backend(format!("{collection}: {e}")))?;
        plans.push(Plan {
            collection,
            docs,
            // Alerts are final when emitted: there is no partial row to replace.
            replaces: !q.is_alert(),
        });
    }
    let docs = batch
        .dead_letters
        .iter()
        .map(|d| encode(d, &dead_letter_id(d)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| backend(format!("{DEAD_LETTERS}: {e}")))?;
    plans.push(Plan {
        collection: DEAD_LETTERS,
        docs,
        replaces: false,
    });
    let docs = batch
        .late
        .iter()
        .map(|l| encode(l, &late_id(l)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| backend(format!("{LATE_RECORDS}: {e}")))?;
    plans.push(Plan {
        collection: LATE_RECORDS,
        docs,
        replaces: false,
    });
    plans.retain(|p| !p.docs.is_empty());
    Ok(plans)
}

/// `docs` in commands of at most [`DOCUMENTS_PER_COMMAND`].
fn chunks(docs: Vec<RawDocumentBuf>) -> Vec<Vec<RawDocumentBuf>> {
    let mut out = Vec::new();
    let mut docs = docs.into_iter().peekable();
    while docs.peek().is_some() {
        out.push(docs.by_ref().take(DOCUMENTS_PER_COMMAND).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{DeadLetterReason, MobilityIndex, RowBody, SourcePosition, TransportAlert};
    use crate::model::Topic;

    fn rows() -> [Row; 2] {
        [
            Row {
                id: "mobility_index|city|2026-11-24T08:00:00Z".into(),
                body: RowBody::MobilityIndex(MobilityIndex {
                    window_start: 1_795_507_200_000,
                    window_end: 1_795_507_500_000,
                    city_avg_speed: 30.0,
                    city_avg_occupancy: 33.25,
                    total_readings: 252,
                    mobility_index: 62.7,
                    category: "good".into(),
                }),
                is_final: true,
            },
            Row {
                id: "transport_alerts|BUS-1|2026-11-24T08:00:05.250Z".into(),
                body: RowBody::TransportAlerts(TransportAlert {
                    vehicle_id: "BUS-1".into(),
                    line_id: "L1".into(),
                    event_time: 1_795_507_205_250,
                    alert_type: "overcrowded".into(),
                    occupancy_rate: 95.0,
                    passenger_count: 76,
                    capacity: 80,
                }),
                is_final: true,
            },
        ]
    }

    const POSITION: SourcePosition = SourcePosition {
        partition: 2,
        offset: 41,
    };

    fn dead_letter() -> DeadLetter {
        DeadLetter {
            topic: Topic::Traffic,
            key: "TS-001".into(),
            position: POSITION,
            kafka_timestamp: 1_795_507_205_250,
            reason: DeadLetterReason::MalformedJson,
            detail: "expected value at line 1".into(),
            raw: Some("{\"sensor_id\":".into()),
            raw_hex: None,
        }
    }

    fn late_record() -> LateRecord {
        LateRecord {
            query: Query::TrafficAggregations,
            topic: Topic::Traffic,
            key: "TS-003".into(),
            position: POSITION,
            event_time: 1_795_507_200_000,
            window_end: 1_795_507_500_000,
            watermark: 1_795_507_800_000,
            reason: "window final".into(),
        }
    }

    // Proves a row survives the trip to a document and back byte for byte in canonical JSON,
    // with its times stored as BSON datetimes.
    #[test]
    fn row_round_trips_through_bson() {
        for row in rows() {
            let d = row_to_document(&row).unwrap();
            assert_eq!(d.get_str("_id").unwrap(), row.id);
            assert!(d.get("id").is_none());
            let t = time_field(row.query());
            assert!(matches!(d.get(t), Some(Bson::DateTime(_))), "{d}");
            let back = document_to_row(d).unwrap();
            assert_eq!(back.to_json(), row.to_json());
        }
    }

    // Proves dead letters and late records come back from their documents as they went in, so
    // a read-back can be matched to source positions.
    #[test]
    fn dead_letters_and_late_round_trip() {
        let dead = dead_letter();
        let d = encode(&dead, &dead_letter_id(&dead))
            .unwrap()
            .to_document()
            .unwrap();
        assert!(matches!(d.get("kafka_timestamp"), Some(Bson::DateTime(_))));
        assert_eq!(from_document::<DeadLetter>(d).unwrap(), dead);
        let late = late_record();
        let d = encode(&late, &late_id(&late))
            .unwrap()
            .to_document()
            .unwrap();
        assert_eq!(from_document::<LateRecord>(d).unwrap(), late);
    }

    // Proves the bytes sent for a row, a dead letter and a late record: `_id` first, then the
    // fields in the order serde writes them with their BSON types (counts as 64-bit integers,
    // a partition as a 32-bit one, times as datetimes), and no `id`, so stored documents do not
    // change with the way they are built.
    #[test]
    fn documents_keep_their_field_order_and_types() {
        let time = DateTime::from_millis;
        let [index, alert] = rows();
        let want = [
            doc! {
                "_id": "mobility_index|city|2026-11-24T08:00:00Z",
                "query": "mobility_index",
                "window_start": time(1_795_507_200_000),
                "window_end": time(1_795_507_500_000),
                "city_avg_speed": 30.0,
                "city_avg_occupancy": 33.25,
                "total_readings": 252_i64,
                "mobility_index": 62.7,
                "category": "good",
                "final": true,
            },
            doc! {
                "_id": "transport_alerts|BUS-1|2026-11-24T08:00:05.250Z",
                "query": "transport_alerts",
                "vehicle_id": "BUS-1",
                "line_id": "L1",
                "event_time": time(1_795_507_205_250),
                "alert_type": "overcrowded",
                "occupancy_rate": 95.0,
                "passenger_count": 76_i64,
                "capacity": 80_i64,
                "final": true,
            },
            doc! {
                "_id": "traffic-sensors|2|41",
                "topic": "traffic-sensors",
                "key": "TS-001",
                "partition": 2_i32,
                "offset": 41_i64,
                "kafka_timestamp": time(1_795_507_205_250),
                "reason": "malformed_json",
                "detail": "expected value at line 1",
                "raw": "{\"sensor_id\":",
            },
            doc! {
                "_id": "traffic_aggregations|traffic-sensors|2|41",
                "query": "traffic_aggregations",
                "topic": "traffic-sensors",
                "key": "TS-003",
                "partition": 2_i32,
                "offset": 41_i64,
                "event_time": time(1_795_507_200_000),
                "window_end": time(1_795_507_500_000),
                "watermark": time(1_795_507_800_000),
                "reason": "window final",
            },
        ];
        let (dead, late) = (dead_letter(), late_record());
        let got = [
            encode_row(&index).unwrap(),
            encode_row(&alert).unwrap(),
            encode(&dead, &dead_letter_id(&dead)).unwrap(),
            encode(&late, &late_id(&late)).unwrap(),
        ];
        for (got, want) in got.iter().zip(&want) {
            let want = RawDocumentBuf::from_document(want).unwrap();
            assert_eq!(got.as_bytes(), want.as_bytes(), "{got:?}");
        }
    }
}
