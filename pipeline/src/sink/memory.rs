//! In-memory stores with the upsert semantics of the real databases: one collection (table) per
//! query, rows keyed by their deterministic id, a later write of an id replacing the earlier one,
//! as MongoDB's `replace_one(upsert)` and PostgreSQL's `INSERT ... ON CONFLICT DO UPDATE` do.
//! Dead letters and late records are kept; raw-archive copies are counted per topic (a simulated
//! day would otherwise hold gigabytes).

use std::collections::BTreeMap;
use std::future::{Future, ready};

use crate::digest::OutputDigest;
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
    collections: BTreeMap<Query, BTreeMap<String, Row>>,
    dead_letters: Vec<DeadLetter>,
    late: Vec<LateRecord>,
    archived: BTreeMap<Topic, u64>,
    upserts: u64,
    batches: u64,
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
            upserts: 0,
            batches: 0,
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
            match coll.get_mut(&row.id) {
                Some(existing) => existing.clone_from(row),
                None => {
                    coll.insert(row.id.clone(), row.clone());
                }
            }
        }
        self.dead_letters.extend(batch.dead_letters.iter().cloned());
        self.late.extend(batch.late.iter().cloned());
        for a in &batch.archive {
            *self.archived.entry(a.topic).or_default() += 1;
        }
    }

    /// The rows of one query's collection, in id order.
    pub fn collection(&self, query: Query) -> impl Iterator<Item = &Row> {
        self.collections
            .get(&query)
            .into_iter()
            .flat_map(|c| c.values())
    }

    /// Every stored row, by query then id.
    pub fn rows(&self) -> impl Iterator<Item = &Row> {
        self.collections.values().flat_map(|c| c.values())
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
    }
}
