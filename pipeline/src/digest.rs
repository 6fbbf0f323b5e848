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
        let mut h = Lines::default();
        for json in self.rows.values() {
            h.line(json.as_bytes());
        }
        h.hex()
    }
}

/// The hash both digests compute: one canonical JSON line a row.
#[derive(Default)]
struct Lines(Sha256);

impl Lines {
    fn line(&mut self, json: &[u8]) {
        self.0.update(json);
        self.0.update(b"\n");
    }

    fn hex(self) -> String {
        hex::encode(self.0.finalize())
    }
}

/// The hex digest of rows held elsewhere (a store's), in any order: what an [`OutputDigest`]
/// given the same rows in the same order computes, hashed straight from the rows instead of from
/// a map of copied ids and JSON lines (a simulated day's stores hold millions of rows).
pub fn hex_of<'a>(rows: impl IntoIterator<Item = &'a Row>) -> String {
    let mut finals: Vec<&Row> = rows.into_iter().filter(|r| r.is_final).collect();
    // Stable, so that of several rows with one id the last one given is hashed, as
    // `OutputDigest::add` keeps it.
    finals.sort_by(|a, b| a.id.cmp(&b.id));
    let mut h = Lines::default();
    let mut line = Vec::new();
    for (i, row) in finals.iter().enumerate() {
        if finals.get(i + 1).is_some_and(|next| next.id == row.id) {
            continue;
        }
        line.clear();
        // `Row::to_json`'s serialisation, into a buffer used again for every row.
        if serde_json::to_writer(&mut line, row).is_err() {
            line.clear();
        }
        h.line(&line);
    }
    h.hex()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{MobilityIndex, RowBody};

    fn row(id: &str, readings: u64, is_final: bool) -> Row {
        Row {
            id: id.to_owned(),
            body: RowBody::MobilityIndex(MobilityIndex {
                window_start: 0,
                window_end: 300_000,
                city_avg_speed: 30.5,
                city_avg_occupancy: -0.0,
                total_readings: readings,
                mobility_index: 64.0,
                category: "good \"quoted\"".into(),
            }),
            is_final,
        }
    }

    // Proves hashing rows straight from where they are held gives the digest of collecting them:
    // partial rows left out, id order whatever the order given, the last of one id kept.
    #[test]
    fn hex_of_rows_equals_the_collected_digest() {
        let rows = [
            row("b", 1, true),
            row("a", 2, false),
            row("c", 3, true),
            row("a", 4, true),
            row("b", 5, true),
            row("a|x", 6, true),
        ];
        let mut d = OutputDigest::new();
        for r in &rows {
            d.add(r);
        }
        assert_eq!(hex_of(&rows), d.hex());
        assert_eq!(hex_of(&rows[..0]), OutputDigest::new().hex());
        assert_ne!(hex_of(&rows[..4]), d.hex());
    }
}
