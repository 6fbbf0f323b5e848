//! The output digest: SHA-256 over the canonical, ordered final rows. Two runs with the same
//! seed and scenario must give the same digest, whatever the backend and however the work was
//! interleaved, so it is computed over final rows only, ordered by row id, one JSON line each.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::engine::Row;

/// Collects final rows by id (a later row with the same id replaces an earlier one, as an upsert
/// does) and hashes them in id order.
#[derive(Debug, Default, Clone)]
pub struct OutputDigest {
    rows: BTreeMap<String, String>,
}

impl OutputDigest {
    /// An empty digest.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes a row into account if it is final.
    pub fn add(&mut self, row: &Row) {
        if row.is_final {
            self.rows.insert(row.id.clone(), row.to_json());
        }
    }

    /// Takes a row given as its canonical JSON (as read back from a store).
    pub fn add_json(&mut self, id: String, canonical_json: String) {
        self.rows.insert(id, canonical_json);
    }

    /// Number of distinct final rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no final row was seen.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The hex SHA-256 of the rows, one canonical JSON line each, in id order.
    pub fn hex(&self) -> String {
        let mut h = Sha256::new();
        for json in self.rows.values() {
            h.update(json.as_bytes());
            h.update(b"\n");
        }
        hex::encode(h.finalize())
    }
}
