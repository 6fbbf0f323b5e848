//! Event-time hopping windows for one query, keyed by a packed `u64` key, kept as panes.
//!
//! A window `[start, start + size)` is the union of the panes `[p, p + pane)` it covers, where
//! the pane length is `gcd(size, slide)` (the slide itself, as the configuration requires the
//! slide to divide the size). State is kept once per pane and key, so a record updates one slot
//! however many windows hold it, and a window's row is its panes' slots merged
//! ([`Aggregate::merge`]) when it is emitted; the slicing of Arroyo's sliding aggregating
//! window. Sums are exact, so a merged row is the row the window would have added up itself.
//!
//! Panes are held in a `BTreeMap` ordered by start, and inside each pane a hash map by key: a
//! record looks its slot up there, and nothing reads a pane's keys in their order (rows are
//! emitted in the order of the windows' key sets). Beside them, each open window keeps the set
//! of keys it holds: what the window bounds count (open windows, keys per window) and the order
//! rows are emitted in, start then key, so iteration (and therefore emission) order is
//! deterministic. Windows are final once the watermark passes their end; then their rows are
//! emitted with `final = true` and the window is freed, and each pane with it once no open
//! window covers the pane. A record whose earliest window is already final is late for the
//! query.
//!
//! **Invariant:** a key is in an open window's key set exactly when one of the window's panes
//! holds a slot for it. A slot is created together with its key in every window covering its
//! pane, a window is removed only when it is final, and a pane only with the last window
//! covering it; so a record that is not late and finds its key's slot in its pane finds every
//! window holding it open and holding the key, and no bound to check.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::config::WindowSpec;
use crate::time::Millis;

/// A per-window, per-key aggregate.
pub trait Aggregate: Default + Clone {
    /// What one record contributes.
    type Input: ?Sized;
    /// Adds one record. Must not depend on arrival order for the fields it reports.
    fn add(&mut self, input: &Self::Input);
    /// Adds what `other` holds, exactly: adding records to two aggregates and merging them
    /// gives the aggregate of adding all the records to one, whatever the split. Windows merge
    /// their panes with it, and it is what partial aggregates from several instances would be
    /// combined with.
    fn merge(&mut self, other: &Self);
}

/// One key's aggregate in one pane, and whether it changed since the last trigger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Slot<A> {
    /// The aggregate.
    pub agg: A,
    /// Changed since the last trigger.
    pub dirty: bool,
}

/// One pane's slots, by key.
type PaneSlots<A> = FxHashMap<u64, Slot<A>>;

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

/// The open windows of one query, as panes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Windowed<A> {
    spec: WindowSpec,
    /// Pane length, milliseconds: `gcd(size, slide)`.
    pane_ms: Millis,
    /// Pane start -> key -> the aggregate of the key's records in the pane.
    panes: BTreeMap<Millis, PaneSlots<A>>,
    /// Open window start -> the keys the window holds.
    windows: BTreeMap<Millis, BTreeSet<u64>>,
    /// Every window ending at or before this is final.
    closed_until: Millis,
}

fn gcd(a: Millis, b: Millis) -> Millis {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl<A: Aggregate> Windowed<A> {
    /// No open windows, nothing final.
    pub fn new(spec: WindowSpec) -> Self {
        Windowed {
            spec,
            pane_ms: gcd(spec.size_ms, spec.slide_ms),
            panes: BTreeMap::new(),
            windows: BTreeMap::new(),
            closed_until: Millis::MIN,
        }
    }

    /// Number of open windows.
    pub fn open_windows(&self) -> usize {
        self.windows.len()
    }

    /// Adds a record at event time `t` under `key` to all `size/slide` windows holding it,
    /// or to none of them (late or over a bound). The record updates one pane slot.
    pub fn add(&mut self, t: Millis, key: u64, input: &A::Input, limits: Limits) -> AddOutcome {
        let (first, last) = self.spec.starts(t);
        if first + self.spec.size_ms <= self.closed_until {
            return AddOutcome::Late {
                window_end: first + self.spec.size_ms,
            };
        }
        // Panes are one slide long (the slide divides the size): `t`'s pane starts with the
        // latest window holding it.
        debug_assert_eq!(self.pane_ms, self.spec.slide_ms);
        let pane = last;
        // Records arrive nearly in event-time order, so their pane is nearly always the latest:
        // look there before searching.
        let keys = match self.panes.last_entry() {
            Some(latest) if *latest.key() == pane => Some(latest.into_mut()),
            _ => self.panes.get_mut(&pane),
        };
        // The common case: the key already has a slot in the pane, so every window holding the
        // record is open and holds the key (module invariant), and no bound can be hit.
        if let Some(slot) = keys.and_then(|keys| keys.get_mut(&key)) {
            slot.agg.add(input);
            slot.dirty = true;
            return AddOutcome::Aggregated;
        }
        self.add_slot(t, pane, key, input, limits)
    }

    /// [`Self::add`] for a key without a slot in the record's pane: the windows holding the
    /// record are opened or take a new key, as the hopping windows would, bounds checked first.
    fn add_slot(
        &mut self,
        t: Millis,
        pane: Millis,
        key: u64,
        input: &A::Input,
        limits: Limits,
    ) -> AddOutcome {
        let starts = || {
            (self.spec.first_start(t)..=self.spec.last_start(t))
                .step_by(self.spec.slide_ms as usize)
        };
        // Check every bound before touching anything, so a refused record leaves no trace.
        let mut new_windows = 0usize;
        for start in starts() {
            match self.windows.get(&start) {
                None => new_windows += 1,
                Some(keys) => {
                    if !keys.contains(&key) && keys.len() >= limits.max_keys_per_window {
                        return AddOutcome::OverLimit("max_keys_per_window");
                    }
                }
            }
        }
        if new_windows > 0 && self.windows.len() + new_windows > limits.max_open_windows {
            return AddOutcome::OverLimit("max_open_windows");
        }
        for start in starts() {
            self.windows.entry(start).or_default().insert(key);
        }
        let mut agg = A::default();
        agg.add(input);
        let slot = Slot { agg, dirty: true };
        self.panes.entry(pane).or_default().insert(key, slot);
        AddOutcome::Aggregated
    }

    /// The slots of the panes the window starting at `start` covers, in time order: found once
    /// a window, then looked up key by key, rather than searched again for every key.
    fn window_panes(&self, start: Millis) -> Vec<&PaneSlots<A>> {
        self.panes
            .range(start..start + self.spec.size_ms)
            .map(|(_, slots)| slots)
            .collect()
    }

    /// Moves the watermark: windows ending at or before it become final, are passed to `emit`
    /// (start, end, key, aggregate) in start-then-key order, and are freed, with the panes no
    /// open window covers any more.
    #[inline]
    pub fn advance(&mut self, watermark: Millis, emit: impl FnMut(Millis, Millis, u64, &A)) {
        if self.move_watermark(watermark) {
            self.close(watermark, emit);
        }
    }

    /// The first half of [`Self::advance`]: moves the watermark, and says whether it reached
    /// the end of an open window, which [`Self::close`] with the same watermark then emits.
    /// Most records' watermarks reach none.
    #[inline]
    pub fn move_watermark(&mut self, watermark: Millis) -> bool {
        if watermark <= self.closed_until {
            return false;
        }
        self.closed_until = watermark;
        let size = self.spec.size_ms;
        self.windows
            .first_key_value()
            .is_some_and(|(&start, _)| start + size <= watermark)
    }

    /// The second half of [`Self::advance`], once [`Self::move_watermark`] said a window ends
    /// at or before `watermark`.
    pub fn close(&mut self, watermark: Millis, mut emit: impl FnMut(Millis, Millis, u64, &A)) {
        let mut closed = false;
        while let Some(entry) = self.windows.first_entry() {
            let start = *entry.key();
            let end = start + self.spec.size_ms;
            if end > watermark {
                break;
            }
            closed = true;
            let keys = entry.remove();
            let panes = self.window_panes(start);
            for key in keys {
                let row = row(&panes, key);
                debug_assert!(row.is_some(), "window {start} holds key {key} in no pane");
                if let Some(row) = row {
                    emit(start, end, key, &row);
                }
            }
        }
        // A pane is covered by the windows starting in (p - size, p]: free it once the last
        // of them has ended. That window was open (it was opened with the pane's first slot),
        // so only a watermark that closed a window can free a pane.
        while let Some(entry) = self.panes.first_entry().filter(|_| closed) {
            if self.spec.last_start(*entry.key()) + self.spec.size_ms > watermark {
                break;
            }
            entry.remove();
        }
    }

    /// Makes every window final (end of input), passing each to `emit` as [`Self::advance`] does.
    pub fn flush(&mut self, emit: impl FnMut(Millis, Millis, u64, &A)) {
        self.advance(Millis::MAX, emit);
        debug_assert!(self.panes.is_empty(), "a pane outlived every window");
    }

    /// Passes the row of every window and key whose panes changed since the last call to
    /// `emit` (a partial result), and marks every pane clean. Every open window is drained at
    /// once, so a pane's one flag stands for each window covering it.
    pub fn drain_dirty(&mut self, mut emit: impl FnMut(Millis, Millis, u64, &A)) {
        for (&start, keys) in &self.windows {
            let panes = self.window_panes(start);
            for &key in keys {
                if slots(&panes, key).any(|slot| slot.dirty)
                    && let Some(row) = row(&panes, key)
                {
                    emit(start, start + self.spec.size_ms, key, &row);
                }
            }
        }
        for slot in self.panes.values_mut().flat_map(|keys| keys.values_mut()) {
            slot.dirty = false;
        }
    }

    /// Passes every open window's rows to `emit` without changing anything (the console's view).
    pub fn for_each_open(&self, mut emit: impl FnMut(Millis, Millis, u64, &A)) {
        for (&start, keys) in &self.windows {
            let panes = self.window_panes(start);
            for &key in keys {
                if let Some(row) = row(&panes, key) {
                    emit(start, start + self.spec.size_ms, key, &row);
                }
            }
        }
    }
}

/// The slots of `key` among a window's `panes` (from [`Windowed::window_panes`]), in time order.
fn slots<'s, A>(panes: &[&'s PaneSlots<A>], key: u64) -> impl Iterator<Item = &'s Slot<A>> {
    panes.iter().filter_map(move |slots| slots.get(&key))
}

/// The row of `key` in a window of `panes`: its slots merged (borrowed when there is one, as in
/// a tumbling window).
fn row<'s, A: Aggregate>(panes: &[&'s PaneSlots<A>], key: u64) -> Option<Cow<'s, A>> {
    let mut slots = slots(panes, key);
    let mut row = Cow::Borrowed(&slots.next()?.agg);
    for slot in slots {
        row.to_mut().merge(&slot.agg);
    }
    Some(row)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Default, Debug, PartialEq)]
    struct Count(u64);
    impl Aggregate for Count {
        type Input = ();
        fn add(&mut self, _: &()) {
            self.0 += 1;
        }
        fn merge(&mut self, other: &Self) {
            self.0 += other.0;
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

    proptest! {
        // Proves `WindowSpec::starts` (one division) gives `first_start` and `last_start` for
        // any event time, negative ones included, and any valid window.
        #[test]
        fn starts_agree_with_first_and_last_start(
            t in -1_000_000_000_000i64..1_000_000_000_000,
            slide in 1i64..100_000,
            per_window in 1i64..10,
        ) {
            let spec = WindowSpec { size_ms: slide * per_window, slide_ms: slide };
            prop_assert_eq!(spec.starts(t), (spec.first_start(t), spec.last_start(t)));
        }
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

    /// The sorted multiset of the values added: merging is exact, and a row shows every record.
    #[derive(Clone, Default, Debug, PartialEq)]
    struct Values(Vec<u32>);
    impl Aggregate for Values {
        type Input = u32;
        fn add(&mut self, v: &u32) {
            let at = self.0.partition_point(|x| x <= v);
            self.0.insert(at, *v);
        }
        fn merge(&mut self, other: &Self) {
            for v in &other.0 {
                self.add(v);
            }
        }
    }

    /// The hopping windows as they were before panes: one slot per window and key, every
    /// record added to each of its `size/slide` windows. The reference the panes must match.
    struct Hopping {
        spec: WindowSpec,
        windows: BTreeMap<Millis, BTreeMap<u64, Slot<Values>>>,
        closed_until: Millis,
    }

    type Rows = Vec<(Millis, Millis, u64, Vec<u32>)>;

    impl Hopping {
        fn add(&mut self, t: Millis, key: u64, v: u32, limits: Limits) -> AddOutcome {
            let (first, last) = (self.spec.first_start(t), self.spec.last_start(t));
            if first + self.spec.size_ms <= self.closed_until {
                return AddOutcome::Late {
                    window_end: first + self.spec.size_ms,
                };
            }
            let starts = (first..=last).step_by(self.spec.slide_ms as usize);
            let mut new_windows = 0;
            for start in starts.clone() {
                match self.windows.get(&start) {
                    None => new_windows += 1,
                    Some(keys) => {
                        if !keys.contains_key(&key) && keys.len() >= limits.max_keys_per_window {
                            return AddOutcome::OverLimit("max_keys_per_window");
                        }
                    }
                }
            }
            if new_windows > 0 && self.windows.len() + new_windows > limits.max_open_windows {
                return AddOutcome::OverLimit("max_open_windows");
            }
            for start in starts {
                let slot = self.windows.entry(start).or_default().entry(key);
                let slot = slot.or_insert_with(|| Slot {
                    agg: Values::default(),
                    dirty: false,
                });
                slot.agg.add(&v);
                slot.dirty = true;
            }
            AddOutcome::Aggregated
        }

        fn advance(&mut self, watermark: Millis) -> Rows {
            let mut rows = Vec::new();
            if watermark <= self.closed_until {
                return rows;
            }
            self.closed_until = watermark;
            while let Some(entry) = self.windows.first_entry() {
                let (start, end) = (*entry.key(), *entry.key() + self.spec.size_ms);
                if end > watermark {
                    break;
                }
                for (key, slot) in entry.remove() {
                    rows.push((start, end, key, slot.agg.0));
                }
            }
            rows
        }

        fn drain_dirty(&mut self) -> Rows {
            let mut rows = Vec::new();
            for (&start, keys) in &mut self.windows {
                for (&key, slot) in keys.iter_mut() {
                    if slot.dirty {
                        slot.dirty = false;
                        rows.push((start, start + self.spec.size_ms, key, slot.agg.0.clone()));
                    }
                }
            }
            rows
        }
    }

    /// An `emit` that appends each row to `rows`.
    fn rows(rows: &mut Rows) -> impl FnMut(Millis, Millis, u64, &Values) + '_ {
        |s, e, k, a| rows.push((s, e, k, a.0.clone()))
    }

    /// One step of a run: add (time, key, value), advance the watermark by some amount,
    /// trigger, or look at the open windows.
    #[derive(Clone, Debug)]
    enum Op {
        Add(Millis, u64, u32),
        Advance(Millis),
        Trigger,
        Look,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0..200i64, 0..6u64, any::<u32>()).prop_map(|(t, k, v)| Op::Add(t, k, v)),
            1 => (0..40i64).prop_map(Op::Advance),
            1 => Just(Op::Trigger),
            1 => Just(Op::Look),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        // Proves the panes emit what the hopping windows emitted, step by step: the same
        // outcome for every record (late, over which bound), the same partial rows at every
        // trigger, the same open rows, the same final rows at every watermark and at the end,
        // and the same number of open windows; over sliding and tumbling windows, records out
        // of order, and bounds small enough to be hit.
        #[test]
        fn panes_emit_what_hopping_windows_emit(
            (size, slide) in prop_oneof![Just((30, 10)), Just((20, 10)), Just((10, 10)), Just((30, 5))],
            max_open_windows in 1..12usize,
            max_keys_per_window in 1..5usize,
            ops in prop::collection::vec(op(), 0..120),
        ) {
            let spec = WindowSpec { size_ms: size, slide_ms: slide };
            let limits = Limits { max_open_windows, max_keys_per_window };
            let mut panes = Windowed::<Values>::new(spec);
            let mut hopping = Hopping { spec, windows: BTreeMap::new(), closed_until: Millis::MIN };
            let mut watermark = 0;
            for op in ops {
                match op {
                    Op::Add(t, key, v) => {
                        prop_assert_eq!(panes.add(t, key, &v, limits), hopping.add(t, key, v, limits));
                    }
                    Op::Advance(by) => {
                        watermark += by;
                        let mut got = Vec::new();
                        panes.advance(watermark, rows(&mut got));
                        prop_assert_eq!(got, hopping.advance(watermark));
                    }
                    Op::Trigger => {
                        let mut got = Vec::new();
                        panes.drain_dirty(rows(&mut got));
                        prop_assert_eq!(got, hopping.drain_dirty());
                    }
                    Op::Look => {
                        let mut got = Vec::new();
                        panes.for_each_open(rows(&mut got));
                        let want: Rows = hopping.windows.iter().flat_map(|(&s, keys)| {
                            keys.iter().map(move |(&k, slot)| (s, s + size, k, slot.agg.0.clone()))
                        }).collect();
                        prop_assert_eq!(got, want);
                    }
                }
                prop_assert_eq!(panes.open_windows(), hopping.windows.len());
            }
            let mut got = Vec::new();
            panes.flush(rows(&mut got));
            prop_assert_eq!(got, hopping.advance(Millis::MAX));
            prop_assert!(panes.panes.is_empty());
        }
    }
}
