//! The MongoDB sink: database `smart_city`, one collection per query, every row upserted by
//! `_id` = row id; dead letters in `dead_letters` and late records in `late_records`, keyed by
//! their source position so a replay after a crash rewrites the same documents.
//!
//! It works with MongoDB and with FerretDB v1, which has neither the `bulkWrite` command of
//! MongoDB 8.0 nor transactions: a batch is sent as classic `update` commands, each carrying up
//! to [`UPDATES_PER_COMMAND`] replace-with-upsert statements (one round trip per collection and
//! chunk, every statement a plain per-document upsert), at most [`CONCURRENT_COMMANDS`] at once.
//!
//! Those two bounds are small on purpose. FerretDB 1.24 with its SQLite backend keeps one pooled
//! SQLite connection busy for every statement of a command that *replaces an existing document*
//! until the command ends, and its pool per database holds 100: a command (or concurrent commands
//! in one database) replacing more than 100 existing documents waits forever for a connection
//! and wedges the database for every client (measured: 100 replacements pass, 128 hang; three
//! concurrent commands of 45 hang). 32 x 2 = 64 stays well below. Times (`window_start`, `window_end`,
//! `event_time`, `kafka_timestamp`, `watermark`) are BSON datetimes, so range queries and indexes
//! work natively; [`document_to_row`] turns them back into the row's RFC 3339 text, so a read-back
//! gives the same canonical row JSON as the engine emitted.

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt, stream};
use mongodb::bson::{self, Bson, DateTime, Document, doc};
use mongodb::options::ClientOptions;
use mongodb::{Client, Database, IndexModel};

use crate::engine::{DeadLetter, LateRecord, Output, Query, Row};
use crate::time::{format_rfc3339, parse};

use super::{Sink, SinkError, dead_letter_id, key_fields, last_rows, late_id, time_field};

const NAME: &str = "mongodb";

/// Statements per `update` command. See the module docs for why it is far below MongoDB's limit.
pub const UPDATES_PER_COMMAND: usize = 32;

/// Commands in flight at once for one batch; with [`UPDATES_PER_COMMAND`] it bounds the
/// replacements FerretDB works on at once to 64 (its per-database pool holds 100).
pub const CONCURRENT_COMMANDS: usize = 2;

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

/// The MongoDB sink.
#[derive(Debug)]
pub struct MongoSink {
    db: Database,
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
        Ok(MongoSink { db })
    }

    /// The database written to.
    pub fn database(&self) -> &Database {
        &self.db
    }

    async fn upsert(&self, collection: &str, docs: Vec<Document>) -> Result<(), SinkError> {
        let updates: Vec<Bson> = docs
            .into_iter()
            .map(|d| {
                let id = d.get("_id").cloned().unwrap_or(Bson::Null);
                Bson::Document(doc! { "q": { "_id": id }, "u": d, "upsert": true })
            })
            .collect();
        let n = updates.len();
        let reply = self
            .db
            .run_command(doc! { "update": collection, "updates": updates, "ordered": false })
            .await
            .map_err(|e| backend(format!("upsert of {n} documents into {collection}: {e}")))?;
        if let Ok(errors) = reply.get_array("writeErrors")
            && !errors.is_empty()
        {
            return Err(backend(format!(
                "upsert into {collection}: {} of {n} documents refused, first: {}",
                errors.len(),
                errors[0]
            )));
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

/// A serialisable value as a document: `id` becomes `_id`, RFC 3339 time fields BSON datetimes.
fn to_document<T: serde::Serialize>(value: &T, id: String) -> Result<Document, String> {
    let mut d = bson::to_document(value).map_err(|e| format!("cannot encode as BSON: {e}"))?;
    d.remove("id");
    for field in TIME_FIELDS {
        if let Some(Bson::String(text)) = d.get(field) {
            let ms = parse(text)
                .map_err(|e| format!("{field}: {e}"))?
                .utc_millis()
                .ok_or_else(|| format!("{field} `{text}` has no offset"))?;
            d.insert(field, DateTime::from_millis(ms));
        }
    }
    let mut out = Document::new();
    out.insert("_id", id);
    out.extend(d);
    Ok(out)
}

/// A row as stored.
pub fn row_to_document(row: &Row) -> Result<Document, String> {
    to_document(row, row.id.clone())
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
        let mut commands: Vec<(&str, Vec<Document>)> = Vec::new();
        for (q, rows) in last_rows(&batch.rows) {
            let docs = rows
                .iter()
                .map(|r| row_to_document(r))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| backend(format!("{}: {e}", q.name())))?;
            commands.push((q.name(), docs));
        }
        let docs = batch
            .dead_letters
            .iter()
            .map(|d| to_document(d, dead_letter_id(d)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| backend(format!("{DEAD_LETTERS}: {e}")))?;
        commands.push((DEAD_LETTERS, docs));
        let docs = batch
            .late
            .iter()
            .map(|l| to_document(l, late_id(l)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| backend(format!("{LATE_RECORDS}: {e}")))?;
        commands.push((LATE_RECORDS, docs));
        let mut chunks = Vec::new();
        for (coll, docs) in commands {
            let mut docs = docs.into_iter().peekable();
            while docs.peek().is_some() {
                chunks.push((coll, docs.by_ref().take(UPDATES_PER_COMMAND).collect()));
            }
        }
        let this = &*self;
        stream::iter(chunks)
            .map(|(coll, docs)| this.upsert(coll, docs))
            .buffer_unordered(CONCURRENT_COMMANDS)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{MobilityIndex, RowBody, TransportAlert};

    // Proves a row survives the trip to a document and back byte for byte in canonical JSON,
    // with its times stored as BSON datetimes.
    #[test]
    fn row_round_trips_through_bson() {
        let rows = [
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
        ];
        for row in rows {
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
        use crate::engine::{DeadLetterReason, SourcePosition};
        use crate::model::Topic;
        let position = SourcePosition {
            partition: 2,
            offset: 41,
        };
        let dead = DeadLetter {
            topic: Topic::Traffic,
            key: "TS-001".into(),
            position,
            kafka_timestamp: 1_795_507_205_250,
            reason: DeadLetterReason::MalformedJson,
            detail: "expected value at line 1".into(),
            raw: Some("{\"sensor_id\":".into()),
            raw_hex: None,
        };
        let late = LateRecord {
            query: Query::TrafficAggregations,
            topic: Topic::Traffic,
            key: "TS-003".into(),
            position,
            event_time: 1_795_507_200_000,
            window_end: 1_795_507_500_000,
            watermark: 1_795_507_800_000,
            reason: "window final".into(),
        };
        let d = to_document(&dead, dead_letter_id(&dead)).unwrap();
        assert!(matches!(d.get("kafka_timestamp"), Some(Bson::DateTime(_))));
        assert_eq!(from_document::<DeadLetter>(d).unwrap(), dead);
        let d = to_document(&late, late_id(&late)).unwrap();
        assert_eq!(from_document::<LateRecord>(d).unwrap(), late);
    }
}
