//! A bounded string interner: ids, zone and road names become small integers so window keys are
//! cheap to hash, compare and pack.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

/// Interned strings, in first-seen order. Serialised as the list; the index is rebuilt on load.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(from = "Vec<Box<str>>", into = "Vec<Box<str>>")]
pub struct Interner {
    names: Vec<Box<str>>,
    index: FxHashMap<Box<str>, u32>,
}

impl From<Vec<Box<str>>> for Interner {
    fn from(names: Vec<Box<str>>) -> Self {
        let index = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i as u32))
            .collect();
        Interner { names, index }
    }
}

impl From<Interner> for Vec<Box<str>> {
    fn from(i: Interner) -> Self {
        i.names
    }
}

impl Interner {
    /// The id of `name`, interning it if new; `None` when `cap` strings are already held.
    pub fn intern(&mut self, name: &str, cap: usize) -> Option<u32> {
        if let Some(&id) = self.index.get(name) {
            return Some(id);
        }
        if self.names.len() >= cap {
            return None;
        }
        let id = self.names.len() as u32;
        let boxed: Box<str> = name.into();
        self.index.insert(boxed.clone(), id);
        self.names.push(boxed);
        Some(id)
    }

    /// The string of an id handed out by [`Self::intern`].
    pub fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("", |n| n)
    }

    /// How many strings are held.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Packs two interned ids into one window key.
pub const fn pack(a: u32, b: u32) -> u64 {
    ((a as u64) << 32) | b as u64
}

/// Splits a key made by [`pack`].
pub const fn unpack(key: u64) -> (u32, u32) {
    ((key >> 32) as u32, key as u32)
}
