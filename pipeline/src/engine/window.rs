//! Event-time hopping windows for one query, keyed by a packed `u64` key.
//!
//! Open state is a `BTreeMap` ordered by window start, and inside each window a `BTreeMap` by
//! key, so iteration (and therefore emission) order is deterministic. Windows are final once the
//! watermark passes their end; then their rows are emitted with `final = true` and their state is
//! freed. A record whose earliest window is already final is late for the query.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::config::WindowSpec;
use crate::time::Millis;

/// A per-window, per-key aggregate.
pub trait Aggregate: Default + Clone {
    /// What one record contributes.
    type Input: ?Sized;
    /// Adds one record. Must not depend on arrival order for the fields it reports.
    fn add(&mut self, input: &Self::Input);
}

/// One key's aggregate in one window, and whether it changed since the last trigger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Slot<A> {
    /// The aggregate.
    pub agg: A,
    /// Changed since it was last emitted.
    pub dirty: bool,
}

/// What happened to a record offered to a windowed query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddOutcome {
    /// Added to every window that holds it.
    Aggregated,
    /// Its earliest window, ending at `window_end`, is already final.
    Late {
        /// End of the earliest window that holds the record.
        window_end: Millis,
    },
    /// Adding it would break a bound; nothing was changed.
    OverLimit(&'static str),
}

/// Bounds on one query's state.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most windows open at once.
    pub max_open_windows: usize,
    /// Most keys in one window.
    pub max_keys_per_window: usize,
}

/// The open windows of one query.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Windowed<A> {
    spec: WindowSpec,
    windows: BTreeMap<Millis, BTreeMap<u64, Slot<A>>>,
    /// Every window ending at or before this is final.
    closed_until: Millis,
}

impl<A: Aggregate> Windowed<A> {
    /// No open windows, nothing final.
    pub fn new(spec: WindowSpec) -> Self {
        Windowed {
            spec,
            windows: BTreeMap::new(),
            closed_until: Millis::MIN,
        }
    }

    /// Number of open windows.
    pub fn open_windows(&self) -> usize {
        self.windows.len()
    }

    /// Adds a record at event time `t` under `key` to all `size/slide` windows holding it,
    /// or to none of them (late or over a bound).
    pub fn add(&mut self, t: Millis, key: u64, input: &A::Input, limits: Limits) -> AddOutcome {
        let first = self.spec.first_start(t);
        let last = self.spec.last_start(t);
        if first + self.spec.size_ms <= self.closed_until {
            return AddOutcome::Late {
                window_end: first + self.spec.size_ms,
            };
        }
        // Check every bound before touching anything, so a refused record leaves no trace.
        let mut new_windows = 0usize;
        let mut start = first;
        while start <= last {
            match self.windows.get(&start) {
                None => new_windows += 1,
                Some(keys) => {
                    if !keys.contains_key(&key) && keys.len() >= limits.max_keys_per_window {
                        return AddOutcome::OverLimit("max_keys_per_window");
                    }
                }
            }
            start += self.spec.slide_ms;
        }
        if new_windows > 0 && self.windows.len() + new_windows > limits.max_open_windows {
            return AddOutcome::OverLimit("max_open_windows");
        }
        let mut start = first;
        while start <= last {
            let slot = self
                .windows
                .entry(start)
                .or_default()
                .entry(key)
                .or_insert_with(|| Slot {
                    agg: A::default(),
                    dirty: false,
                });
            slot.agg.add(input);
            slot.dirty = true;
            start += self.spec.slide_ms;
        }
        AddOutcome::Aggregated
    }

    /// Moves the watermark: windows ending at or before it become final, are passed to `emit`
    /// (start, end, key, aggregate) in start-then-key order, and are freed.
    pub fn advance(&mut self, watermark: Millis, mut emit: impl FnMut(Millis, Millis, u64, &A)) {
        if watermark <= self.closed_until {
            return;
        }
        self.closed_until = watermark;
        while let Some(entry) = self.windows.first_entry() {
            let start = *entry.key();
            let end = start + self.spec.size_ms;
            if end > watermark {
                break;
            }
            for (key, slot) in entry.remove() {
                emit(start, end, key, &slot.agg);
            }
        }
    }

    /// Makes every window final (end of input), passing each to `emit` as [`Self::advance`] does.
    pub fn flush(&mut self, emit: impl FnMut(Millis, Millis, u64, &A)) {
        self.advance(Millis::MAX, emit);
    }

    /// Passes every slot changed since the last call to `emit` (a partial result) and marks it
    /// clean.
    pub fn drain_dirty(&mut self, mut emit: impl FnMut(Millis, Millis, u64, &A)) {
        for (&start, keys) in &mut self.windows {
            for (&key, slot) in keys.iter_mut() {
                if slot.dirty {
                    slot.dirty = false;
                    emit(start, start + self.spec.size_ms, key, &slot.agg);
                }
            }
        }
    }

    /// Passes every open slot to `emit` without changing anything (the console's view).
    pub fn for_each_open(&self, mut emit: impl FnMut(Millis, Millis, u64, &A)) {
        for (&start, keys) in &self.windows {
            for (&key, slot) in keys {
                emit(start, start + self.spec.size_ms, key, &slot.agg);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default, Debug, PartialEq)]
    struct Count(u64);
    impl Aggregate for Count {
        type Input = ();
        fn add(&mut self, _: &()) {
            self.0 += 1;
        }
    }

    const LIMITS: Limits = Limits {
        max_open_windows: 100,
        max_keys_per_window: 100,
    };

    fn collect(w: &mut Windowed<Count>, watermark: Millis) -> Vec<(Millis, Millis, u64, u64)> {
        let mut out = Vec::new();
        w.advance(watermark, |s, e, k, a| out.push((s, e, k, a.0)));
        out
    }

    // Proves a record lands in exactly size/slide windows, on the right boundaries: t = 65 with
    // size 30 and slide 10 is in the windows starting at 40, 50 and 60 (36..65 < start + 30).
    #[test]
    fn record_lands_in_size_over_slide_windows() {
        let mut w = Windowed::<Count>::new(WindowSpec {
            size_ms: 30,
            slide_ms: 10,
        });
        assert_eq!(w.add(65, 1, &(), LIMITS), AddOutcome::Aggregated);
        assert_eq!(
            collect(&mut w, 1000),
            vec![(40, 70, 1, 1), (50, 80, 1, 1), (60, 90, 1, 1)]
        );
    }

    // Proves window boundaries are [start, end): t = 60 is not in [30, 60) but is in [60, 90).
    #[test]
    fn boundary_belongs_to_the_next_window() {
        let mut w = Windowed::<Count>::new(WindowSpec {
            size_ms: 30,
            slide_ms: 30,
        });
        w.add(59, 1, &(), LIMITS);
        w.add(60, 1, &(), LIMITS);
        assert_eq!(collect(&mut w, 60), vec![(30, 60, 1, 1)]);
        assert_eq!(collect(&mut w, 90), vec![(60, 90, 1, 1)]);
    }

    // Proves a record whose earliest window is final is late and changes nothing, while one whose
    // windows are all open is still taken.
    #[test]
    fn late_records_are_refused_whole() {
        let mut w = Windowed::<Count>::new(WindowSpec {
            size_ms: 30,
            slide_ms: 10,
        });
        w.add(25, 1, &(), LIMITS);
        let finals = collect(&mut w, 30);
        assert_eq!(finals, vec![(0, 30, 1, 1)]);
        // t = 29 belongs to [0,30) (final), [10,40) and [20,50): late, nothing added.
        assert_eq!(
            w.add(29, 1, &(), LIMITS),
            AddOutcome::Late { window_end: 30 }
        );
        // t = 30 belongs to [10,40), [20,50), [30,60): all open.
        assert_eq!(w.add(30, 1, &(), LIMITS), AddOutcome::Aggregated);
        assert_eq!(
            collect(&mut w, 1000),
            vec![(10, 40, 1, 2), (20, 50, 1, 2), (30, 60, 1, 1)]
        );
    }

    // Proves bounds refuse a record without leaving partial state.
    #[test]
    fn bounds_are_enforced_atomically() {
        let limits = Limits {
            max_open_windows: 2,
            max_keys_per_window: 1,
        };
        let mut w = Windowed::<Count>::new(WindowSpec {
            size_ms: 20,
            slide_ms: 10,
        });
        assert_eq!(w.add(15, 1, &(), limits), AddOutcome::Aggregated); // windows 0 and 10
        assert_eq!(
            w.add(15, 2, &(), limits),
            AddOutcome::OverLimit("max_keys_per_window")
        );
        assert_eq!(
            w.add(25, 1, &(), limits),
            AddOutcome::OverLimit("max_open_windows")
        );
        assert_eq!(w.open_windows(), 2);
        assert_eq!(collect(&mut w, 1000), vec![(0, 20, 1, 1), (10, 30, 1, 1)]);
    }

    // Proves partial emission reports only what changed since the last trigger.
    #[test]
    fn dirty_slots_drain_once() {
        let mut w = Windowed::<Count>::new(WindowSpec {
            size_ms: 10,
            slide_ms: 10,
        });
        w.add(1, 1, &(), LIMITS);
        w.add(1, 2, &(), LIMITS);
        let mut seen = Vec::new();
        w.drain_dirty(|s, _, k, a| seen.push((s, k, a.0)));
        assert_eq!(seen, vec![(0, 1, 1), (0, 2, 1)]);
        seen.clear();
        w.drain_dirty(|s, _, k, a| seen.push((s, k, a.0)));
        assert!(seen.is_empty());
        w.add(2, 2, &(), LIMITS);
        w.drain_dirty(|s, _, k, a| seen.push((s, k, a.0)));
        assert_eq!(seen, vec![(0, 2, 2)]);
    }

    // Proves negative event times (before 1970) still align to slide boundaries.
    #[test]
    fn negative_times_align() {
        let spec = WindowSpec {
            size_ms: 30,
            slide_ms: 10,
        };
        assert_eq!(spec.first_start(-5), -30);
        assert_eq!(spec.last_start(-5), -10);
    }
}
