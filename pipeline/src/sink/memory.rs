//! In-memory stores with the write semantics of the real sinks: one collection (table) per query,
//! rows keyed by their deterministic id, a later write of an id replacing the earlier one — except
//! that a final row is never replaced by a partial one (a write that lands late, after a timeout
//! and a retry, cannot undo a window's final result). Dead letters, late records and raw-archive
//! copies are insert-if-absent by source position, as the databases key them: a replay after a
//! crash or a redelivery stores nothing twice. Archive copies are counted per topic (a simulated
//! day would otherwise hold gigabytes).

use std::collections::BTreeMap;
use std::future::{Future, ready};

use rustc_hash::FxHashMap;

use crate::digest::{self, OutputDigest};
use crate::engine::{DeadLetter, LateRecord, Output, Query, Row};
use crate::model::Topic;

use super::{Sink, SinkError};

/// Which real database an in-memory store stands in for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// MongoDB: collections of documents.
    Documents,
    /// PostgreSQL: tables of rows.
    Tables,
}

/// An in-memory database.
#[derive(Debug)]
pub struct MemoryStore {
    flavour: Flavour,
    /// Rows by id, hashed: a simulated day writes millions of rows, and an ordered map compared
    /// their long ids (`query|key|window start`) at every level of every walk, 11 % of a 10x
    /// run. Readers get them in id order ([`MemoryStore::collection`]).
    collections: BTreeMap<Query, FxHashMap<String, Row>>,
    dead_letters: Vec<DeadLetter>,
    late: Vec<LateRecord>,
    archived: BTreeMap<Topic, u64>,
    /// Highest source offset stored per (topic, partition) of dead letters, of archive copies,
    /// and per (query, topic, partition) of late records: records reach a sink in offset order
    /// within a partition, so anything at or below is already stored.
    dead_hwm: BTreeMap<(Topic, i32), i64>,
    archive_hwm: BTreeMap<(Topic, i32), i64>,
    late_hwm: BTreeMap<(Query, Topic, i32), i64>,
    upserts: u64,
    batches: u64,
    /// Items not stored because they were already (replays, late landings).
    pub already_stored: u64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new(flavour: Flavour) -> Self {
        MemoryStore {
            flavour,
            collections: BTreeMap::new(),
            dead_letters: Vec::new(),
            late: Vec::new(),
            archived: BTreeMap::new(),
            dead_hwm: BTreeMap::new(),
            archive_hwm: BTreeMap::new(),
            late_hwm: BTreeMap::new(),
            upserts: 0,
            batches: 0,
            already_stored: 0,
        }
    }

    /// A store holding what was read back from a real database: its rows, dead letters, late
    /// records and archive row counts.
    pub fn loaded(
        flavour: Flavour,
        rows: impl IntoIterator<Item = Row>,
        dead_letters: Vec<DeadLetter>,
        late: Vec<LateRecord>,
        archived: BTreeMap<Topic, u64>,
    ) -> Self {
        let mut store = MemoryStore::new(flavour);
        for row in rows {
            store
                .collections
                .entry(row.query())
                .or_default()
                .insert(row.id.clone(), row);
        }
        store.dead_letters = dead_letters;
        store.late = late;
        store.archived = archived;
        store
    }

    /// Applies a batch synchronously (what [`Sink::write`] does).
    pub fn apply(&mut self, batch: &Output) {
        self.batches += 1;
        for row in &batch.rows {
            self.upserts += 1;
            let coll = self.collections.entry(row.query()).or_default();
            match coll.get_mut(row.id.as_str()) {
                Some(stored) if stored.is_final && !row.is_final => {
                    self.already_stored += 1;
                }
                Some(stored) => stored.clone_from(row),
                None => {
                    coll.insert(row.id.clone(), row.clone());
                }
            }
        }
        for d in &batch.dead_letters {
            if newer(
                &mut self.dead_hwm,
                (d.topic, d.position.partition),
                d.position.offset,
            ) {
                self.dead_letters.push(d.clone());
            } else {
                self.already_stored += 1;
            }
        }
        for l in &batch.late {
            let key = (l.query, l.topic, l.position.partition);
            if newer(&mut self.late_hwm, key, l.position.offset) {
                self.late.push(l.clone());
            } else {
                self.already_stored += 1;
            }
        }
        for a in &batch.archive {
            if newer(
                &mut self.archive_hwm,
                (a.topic, a.position.partition),
                a.position.offset,
            ) {
                *self.archived.entry(a.topic).or_default() += 1;
            } else {
                self.already_stored += 1;
            }
        }
    }

    /// The rows of one query's collection, in id order.
    pub fn collection(&self, query: Query) -> impl Iterator<Item = &Row> {
        let mut rows: Vec<&Row> = self.collection_any_order(query).collect();
        rows.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        rows.into_iter()
    }

    /// Every stored row, by query then id.
    pub fn rows(&self) -> impl Iterator<Item = &Row> {
        self.collections.keys().flat_map(|q| self.collection(*q))
    }

    /// Every stored row in no particular order (the same one each run): for readers that only
    /// count or add integers, which need not pay [`Self::rows`]'s sort (a simulated 10x day's
    /// stores hold millions of rows).
    pub fn rows_any_order(&self) -> impl Iterator<Item = &Row> {
        self.collections.values().flat_map(|c| c.values())
    }

    /// One query's rows in no particular order, as [`Self::rows_any_order`].
    pub fn collection_any_order(&self, query: Query) -> impl Iterator<Item = &Row> {
        self.collections
            .get(&query)
            .into_iter()
            .flat_map(|c| c.values())
    }

    /// Dead letters, in arrival order.
    pub fn dead_letters(&self) -> &[DeadLetter] {
        &self.dead_letters
    }

    /// Late records, in arrival order.
    pub fn late(&self) -> &[LateRecord] {
        &self.late
    }

    /// Raw-archive copies received per topic.
    pub fn archived(&self) -> &BTreeMap<Topic, u64> {
        &self.archived
    }

    /// Row upserts performed.
    pub fn upserts(&self) -> u64 {
        self.upserts
    }

    /// The digest of the final rows as stored (what a read-back from the database gives).
    pub fn digest(&self) -> OutputDigest {
        let mut d = OutputDigest::new();
        for row in self.rows() {
            d.add(row);
        }
        d
    }

    /// The hex of [`MemoryStore::digest`], hashed straight from the stored rows.
    pub fn digest_hex(&self) -> String {
        // In any order: `hex_of` sorts by id itself.
        digest::hex_of(self.rows_any_order())
    }
}

/// Whether `offset` is above the mark stored for `key`; raises the mark if so.
fn newer<K: Ord>(marks: &mut BTreeMap<K, i64>, key: K, offset: i64) -> bool {
    match marks.get_mut(&key) {
        Some(m) if *m >= offset => false,
        Some(m) => {
            *m = offset;
            true
        }
        None => {
            marks.insert(key, offset);
            true
        }
    }
}

impl Sink for MemoryStore {
    fn name(&self) -> &'static str {
        match self.flavour {
            Flavour::Documents => "memory-documents",
            Flavour::Tables => "memory-tables",
        }
    }

    fn write(&mut self, batch: &Output) -> impl Future<Output = Result<(), SinkError>> {
        self.apply(batch);
        ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{MobilityIndex, RowBody};
    use crate::sink::now_or_never;

    fn row(id: &str, readings: u64, is_final: bool) -> Row {
        Row {
            id: id.to_owned(),
            body: RowBody::MobilityIndex(MobilityIndex {
                window_start: 0,
                window_end: 300_000,
                city_avg_speed: 30.0,
                city_avg_occupancy: 30.0,
                total_readings: readings,
                mobility_index: 64.0,
                category: "good".into(),
            }),
            is_final,
        }
    }

    // Proves a later write of an id replaces the earlier one (upsert), so replays never double.
    #[test]
    fn upsert_by_id() {
        let mut store = MemoryStore::new(Flavour::Documents);
        let mut batch = Output::default();
        batch.rows.push(row("a", 1, false));
        now_or_never(store.write(&batch)).unwrap().unwrap();
        batch.rows[0] = row("a", 2, true);
        batch.rows.push(row("b", 5, true));
        now_or_never(store.write(&batch)).unwrap().unwrap();
        now_or_never(store.write(&batch)).unwrap().unwrap();
        let rows: Vec<_> = store.collection(Query::MobilityIndex).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0], &row("a", 2, true));
        assert_eq!(store.digest().len(), 2);
        assert_eq!(store.digest_hex(), store.digest().hex());
    }

    // Proves a partial row landing after its window's final row (a timed-out write applied late)
    // does not replace it.
    #[test]
    fn a_final_row_is_never_replaced_by_a_partial() {
        let mut store = MemoryStore::new(Flavour::Documents);
        let mut batch = Output::default();
        batch.rows.push(row("a", 3, true));
        store.apply(&batch);
        batch.rows[0] = row("a", 2, false);
        store.apply(&batch);
        assert_eq!(
            store.collection(Query::MobilityIndex).next(),
            Some(&row("a", 3, true))
        );
        assert_eq!(store.already_stored, 1);
    }
}
