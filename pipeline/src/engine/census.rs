//! The key census of a windowed query: which keys its open windows hold, and until when.
//!
//! It bounds the distinct keys of a query (`max_keys_per_query`), whatever the number of windows,
//! and it is what frees interned names: each live key holds a reference to its names, dropped
//! when the last window holding the key closes. A key recorded at event time `t` is held until
//! the end of the last window containing `t`; the census forgets it when the watermark passes
//! that end, which is exactly when the query's windows free it. Keys already held are always
//! admitted, so a flood of new keys fills only the room left and never displaces the keys a
//! city reports all the time.
//!
//! Expiry is driven by the watermark alone (event time), never by processing-time triggers, so
//! which records a full census refuses is the same in every run of the same input.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::time::Millis;

/// A slot of [`Entry::names`] that holds no name.
pub(crate) const NO_NAME: u32 = u32::MAX;

/// One live key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    /// End of the last window holding the key.
    until: Millis,
    /// The interned names the key holds a reference to ([`NO_NAME`] where none).
    names: [u32; 2],
}

/// The live keys of one query.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Census {
    live: FxHashMap<u64, Entry>,
    /// The smallest `until` of any entry: no expiry is due before the watermark reaches it.
    next_expiry: Millis,
}

impl Default for Census {
    fn default() -> Self {
        Census {
            live: FxHashMap::default(),
            next_expiry: Millis::MAX,
        }
    }
}

impl Census {
    /// Whether a record of `key` may enter: the key is held already, or there is room.
    #[inline]
    pub(crate) fn admits(&self, key: u64, cap: usize) -> bool {
        self.live.len() < cap || self.live.contains_key(&key)
    }

    /// Records that `key` is held until `until`. Returns the names to take a reference to when
    /// the key is new.
    #[inline]
    pub(crate) fn record(&mut self, key: u64, until: Millis, names: [u32; 2]) -> Option<[u32; 2]> {
        self.next_expiry = self.next_expiry.min(until);
        match self.live.get_mut(&key) {
            Some(e) => {
                e.until = e.until.max(until);
                None
            }
            None => {
                self.live.insert(key, Entry { until, names });
                Some(names)
            }
        }
    }

    /// Forgets every key whose last window ended at or before `watermark`, passing each name
    /// it held to `release`.
    pub(crate) fn expire(&mut self, watermark: Millis, mut release: impl FnMut(u32)) {
        if watermark < self.next_expiry {
            return;
        }
        let mut next = Millis::MAX;
        self.live.retain(|_, e| {
            if e.until > watermark {
                next = next.min(e.until);
                return true;
            }
            e.names
                .into_iter()
                .filter(|&n| n != NO_NAME)
                .for_each(&mut release);
            false
        });
        self.next_expiry = next;
    }

    /// Forgets every key (end of input: every window is final).
    pub(crate) fn clear(&mut self, release: impl FnMut(u32)) {
        self.expire(Millis::MAX, release);
    }

    /// How many keys are held.
    pub(crate) fn len(&self) -> usize {
        self.live.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a held key is always admitted, a new one only while there is room, and a key is
    // forgotten (its names released) exactly when the watermark reaches its last window's end.
    #[test]
    fn admits_known_keys_and_expires_at_the_last_window_end() {
        let mut c = Census::default();
        assert!(c.admits(1, 2));
        assert_eq!(c.record(1, 100, [7, NO_NAME]), Some([7, NO_NAME]));
        assert_eq!(c.record(2, 50, [8, 9]), Some([8, 9]));
        assert_eq!(
            c.record(1, 120, [7, NO_NAME]),
            None,
            "known: no new reference"
        );
        assert!(c.admits(1, 2) && c.admits(2, 2));
        assert!(!c.admits(3, 2), "full");
        let mut released = Vec::new();
        c.expire(49, |n| released.push(n));
        assert!(released.is_empty());
        c.expire(50, |n| released.push(n));
        released.sort_unstable();
        assert_eq!((released.as_slice(), c.len()), ([8, 9].as_slice(), 1));
        assert!(c.admits(3, 2), "room again");
        c.expire(119, |n| released.push(n));
        assert_eq!(c.len(), 1, "key 1 is held until 120, not 100");
        c.clear(|n| released.push(n));
        assert_eq!((c.len(), released.last()), (0, Some(&7)));
    }
}
