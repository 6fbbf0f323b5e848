//! A bounded, reference-counted string interner: ids, zone and road names become small integers
//! so window keys are cheap to hash, compare and pack.
//!
//! A name is held while some key or vehicle in the engine's open windows uses it (its reference
//! count, kept by the engine's key census) and freed with the last window that uses it, so a
//! flood of one-off names fills the interner only for as long as their windows are open, never
//! for the life of the job. Freed ids are reused lowest first, so ids, and with them the order
//! of keys in a window, do not depend on the order names were freed in.

use std::collections::BTreeSet;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

/// What a checkpoint holds: each slot's name (`None` when free) and reference count.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Stored {
    /// The current form.
    Counted {
        names: Vec<Option<Box<str>>>,
        refs: Vec<u32>,
    },
    /// Checkpoints written before names were counted: every name stays held for good, as it
    /// did then, because nothing counted which open windows use it.
    Plain(Vec<Box<str>>),
}

/// Interned strings. Serialised as the slots; the index and the free list are rebuilt on load.
///
/// A name is one shared allocation, held by its slot and its index entry: the driver clones the
/// engine for every checkpoint, and a clone then counts references instead of copying every
/// name twice (callgrind, a simulated thesis hour: the interner's clones and drops were 2-3 % of
/// the simulation's thread).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(from = "Stored", into = "Stored")]
pub struct Interner {
    names: Vec<Option<Arc<str>>>,
    refs: Vec<u32>,
    index: FxHashMap<Arc<str>, u32>,
    free: BTreeSet<u32>,
}

impl From<Stored> for Interner {
    fn from(stored: Stored) -> Self {
        let (names, refs): (Vec<Option<Arc<str>>>, _) = match stored {
            Stored::Counted { names, mut refs } => {
                refs.resize(names.len(), 0);
                (names.into_iter().map(|n| n.map(Arc::from)).collect(), refs)
            }
            Stored::Plain(names) => {
                let n = names.len();
                (
                    names.into_iter().map(|n| Some(Arc::from(n))).collect(),
                    vec![1; n],
                )
            }
        };
        let mut index = FxHashMap::default();
        let mut free = BTreeSet::new();
        for (i, n) in names.iter().enumerate() {
            match n {
                Some(n) => {
                    index.insert(n.clone(), i as u32);
                }
                None => {
                    free.insert(i as u32);
                }
            }
        }
        Interner {
            names,
            refs,
            index,
            free,
        }
    }
}

impl From<Interner> for Stored {
    fn from(i: Interner) -> Self {
        Stored::Counted {
            names: i
                .names
                .iter()
                .map(|n| n.as_deref().map(Box::from))
                .collect(),
            refs: i.refs,
        }
    }
}

impl Interner {
    /// The id of `name` if it is held.
    #[inline]
    pub fn get(&self, name: &str) -> Option<u32> {
        self.index.get(name).copied()
    }

    /// The id of `name`, interning it if new (unreferenced until [`Self::retain`]); `None` when
    /// `cap` strings are already held.
    pub fn intern(&mut self, name: &str, cap: usize) -> Option<u32> {
        if let Some(id) = self.get(name) {
            return Some(id);
        }
        if self.len() >= cap {
            return None;
        }
        let shared: Arc<str> = name.into();
        let id = match self.free.pop_first() {
            Some(id) => {
                self.names[id as usize] = Some(Arc::clone(&shared));
                id
            }
            None => {
                self.names.push(Some(Arc::clone(&shared)));
                self.refs.push(0);
                (self.names.len() - 1) as u32
            }
        };
        self.index.insert(shared, id);
        Some(id)
    }

    /// The string of an id handed out by [`Self::intern`] and still held.
    pub fn name(&self, id: u32) -> &str {
        self.names
            .get(id as usize)
            .and_then(Option::as_deref)
            .unwrap_or("")
    }

    /// One more user of `id`.
    pub fn retain(&mut self, id: u32) {
        if let Some(r) = self.refs.get_mut(id as usize) {
            *r += 1;
        }
    }

    /// One user of `id` fewer; the name is freed when none is left.
    pub fn release(&mut self, id: u32) {
        if let Some(r) = self.refs.get_mut(id as usize) {
            debug_assert!(*r > 0, "released an unreferenced name");
            *r = r.saturating_sub(1);
        }
        self.free_if_unused(id);
    }

    /// Frees `id` if nothing uses it: a name interned for a record that was then refused.
    #[inline]
    pub fn free_if_unused(&mut self, id: u32) {
        if self.refs.get(id as usize) == Some(&0) {
            self.free(id);
        }
    }

    /// Frees `id`, which nothing uses.
    fn free(&mut self, id: u32) {
        if let Some(name) = self.names.get_mut(id as usize).and_then(Option::take) {
            self.index.remove(&name);
            self.free.insert(id);
        }
    }

    /// How many strings are held.
    pub fn len(&self) -> usize {
        self.names.len() - self.free.len()
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

#[cfg(test)]
mod tests {
    use super::*;

    // Proves names are freed with their last reference, their ids reused lowest first, the cap
    // counts only held names, and a checkpoint round trip keeps names, counts and free slots.
    #[test]
    fn counted_names_are_freed_and_reused() {
        let mut i = Interner::default();
        let a = i.intern("a", 3).unwrap();
        let b = i.intern("b", 3).unwrap();
        let c = i.intern("c", 3).unwrap();
        assert_eq!((a, b, c), (0, 1, 2));
        assert_eq!(i.intern("d", 3), None, "cap reached");
        i.retain(a);
        i.retain(a);
        i.free_if_unused(a);
        assert_eq!(i.name(a), "a", "a is referenced");
        i.free_if_unused(c);
        i.free_if_unused(b);
        assert_eq!((i.len(), i.name(b)), (1, ""));
        let d = i.intern("d", 3).unwrap();
        assert_eq!(d, 1, "the lowest free id is reused");
        i.release(a);
        assert_eq!(i.name(a), "a");
        let json = serde_json::to_string(&i).unwrap();
        let mut back: Interner = serde_json::from_str(&json).unwrap();
        back.release(a);
        assert_eq!((back.name(a), back.name(d), back.len()), ("", "d", 1));
        assert_eq!(back.intern("e", 3), Some(0));
        assert_eq!(back.intern("d", 3), Some(1));
    }

    // Proves a checkpoint written before names were counted (a plain list) still restores.
    #[test]
    fn plain_checkpoints_restore() {
        let mut i: Interner = serde_json::from_str(r#"["x","y"]"#).unwrap();
        assert_eq!((i.name(0), i.name(1), i.len()), ("x", "y", 2));
        i.free_if_unused(0);
        assert_eq!(i.name(0), "x", "names of old checkpoints stay held");
    }
}
