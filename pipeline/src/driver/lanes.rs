//! Cuts, lanes and writes: how the engine's output reaches the sinks.
//!
//! The driver *cuts* the output pending since the previous cut and splits it into three lanes:
//! alert rows, window rows (partial and final), and bulk (archive copies, dead letters, late
//! records). Each lane writes its pieces in cut order, one write in flight at a time, coalescing
//! what queued up behind it and never more than `write_max_items` in one write. So window rows
//! of one id always reach a sink in the order they were emitted (a partial never lands after its
//! final), alerts never wait behind a trigger's window rows or a bulk archive write, and a slow
//! sink makes writes larger instead of more numerous. A cut is *durable* when every lane has had
//! every piece of it and of every earlier cut acknowledged by every sink.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::engine::Output;
use crate::time::Millis;

/// The three kinds of output, written independently of each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lane {
    /// Alert rows (anomalies, overcrowding, critical incidents): immutable, one per event.
    Alerts,
    /// Window rows, partial and final: a later version replaces an earlier one.
    Windows,
    /// Archive copies, dead letters and late records: insert-if-absent.
    Bulk,
}

impl Lane {
    /// Every lane, in index order.
    pub const ALL: [Lane; 3] = [Lane::Alerts, Lane::Windows, Lane::Bulk];

    /// The lane's name in logs.
    pub const fn name(self) -> &'static str {
        match self {
            Lane::Alerts => "alerts",
            Lane::Windows => "windows",
            Lane::Bulk => "bulk",
        }
    }

    /// The lane's index in [`Lane::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// A set of sinks, by their index in the shell's list (at most 32).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SinkSet(pub u32);

impl SinkSet {
    /// Every sink of a list of `n`.
    pub const fn all(n: usize) -> Self {
        if n >= 32 {
            SinkSet(u32::MAX)
        } else {
            SinkSet((1u32 << n) - 1)
        }
    }

    /// Just sink `i`.
    pub const fn one(i: usize) -> Self {
        SinkSet(1 << i)
    }

    /// Whether sink `i` is in the set.
    pub const fn contains(self, i: usize) -> bool {
        self.0 & (1 << i) != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The set without sink `i`.
    pub const fn without(self, i: usize) -> Self {
        SinkSet(self.0 & !(1 << i))
    }

    /// The sinks in the set, by index, in ascending order.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        // One step per member, not per possible index: the driver walks the sinks of every
        // write in flight on each input.
        let mut bits = self.0;
        std::iter::from_fn(move || {
            let i = bits.trailing_zeros();
            (i < 32).then(|| {
                bits &= bits - 1;
                i as usize
            })
        })
    }
}

/// What the shell needs to account for a write once every sink acknowledged it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WriteMeta {
    /// The write's id.
    pub write_id: u64,
    /// The lane.
    pub lane: Option<Lane>,
    /// Kafka timestamps (produce times) of the records whose alerts the write holds, one per
    /// alert row.
    pub alert_timestamps_ms: Vec<Millis>,
    /// Processing times at which the write's final window rows were emitted, one per row.
    pub finals_emitted_ms: Vec<Millis>,
    /// Processing time of the earliest trigger whose partial rows the write holds.
    pub trigger_ms: Option<Millis>,
    /// Items in the write.
    pub items: usize,
}

/// One write of a lane to some sinks.
#[derive(Clone, Debug)]
pub struct Write {
    /// The write's id, unique in the driver's life.
    pub id: u64,
    /// Attempt number for the sinks named (1 for the first).
    pub attempt: u32,
    /// The lane.
    pub lane: Lane,
    /// Which sinks to write.
    pub sinks: SinkSet,
    /// What to write.
    pub output: Arc<Output>,
    /// What to account for when it is acknowledged.
    pub meta: Arc<WriteMeta>,
    /// Report the write as failed if a sink has not acknowledged it within this long.
    pub timeout_ms: u64,
}

/// The items of an output: rows, dead letters, late records and archive copies.
pub fn items(out: &Output) -> usize {
    out.rows.len() + out.dead_letters.len() + out.late.len() + out.archive.len()
}

/// One cut's share of a lane.
#[derive(Debug, Default)]
pub(super) struct Piece {
    pub cut: u64,
    pub out: Output,
    pub meta: WriteMeta,
}

impl Piece {
    fn items(&self) -> usize {
        items(&self.out)
    }

    /// Splits off the first `n` items (rows first, then dead letters, late records, archive).
    fn split_front(&mut self, mut n: usize) -> Piece {
        let mut front = Piece {
            cut: self.cut,
            out: Output::default(),
            meta: WriteMeta {
                lane: self.meta.lane,
                trigger_ms: self.meta.trigger_ms,
                ..WriteMeta::default()
            },
        };
        let k = n.min(self.out.rows.len());
        front.out.rows = self.out.rows.drain(..k).collect();
        let alerts = front
            .out
            .rows
            .iter()
            .filter(|r| r.query().is_alert())
            .count();
        let finals = front
            .out
            .rows
            .iter()
            .filter(|r| !r.query().is_alert() && r.is_final)
            .count();
        front.meta.alert_timestamps_ms = self.meta.alert_timestamps_ms.drain(..alerts).collect();
        front.meta.finals_emitted_ms = self.meta.finals_emitted_ms.drain(..finals).collect();
        n -= k;
        let k = n.min(self.out.dead_letters.len());
        front.out.dead_letters = self.out.dead_letters.drain(..k).collect();
        n -= k;
        let k = n.min(self.out.late.len());
        front.out.late = self.out.late.drain(..k).collect();
        n -= k;
        let k = n.min(self.out.archive.len());
        front.out.archive = self.out.archive.drain(..k).collect();
        front
    }

    fn append(&mut self, mut other: Piece) {
        self.cut = other.cut;
        self.out.rows.append(&mut other.out.rows);
        self.out.dead_letters.append(&mut other.out.dead_letters);
        self.out.late.append(&mut other.out.late);
        self.out.archive.append(&mut other.out.archive);
        self.meta
            .alert_timestamps_ms
            .append(&mut other.meta.alert_timestamps_ms);
        self.meta
            .finals_emitted_ms
            .append(&mut other.meta.finals_emitted_ms);
        self.meta.trigger_ms = match (self.meta.trigger_ms, other.meta.trigger_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// A write some sinks have not acknowledged yet.
#[derive(Debug)]
pub(super) struct InFlight {
    pub write: Write,
    /// The first cut the write holds a piece of.
    pub first_cut: u64,
    /// The last cut whose whole share of the lane the write holds (`first_cut - 1` if none).
    pub through_cut: u64,
    /// Sinks that have not acknowledged it yet.
    pub pending: SinkSet,
    /// Attempts per sink so far.
    pub attempts: [u32; 32],
    /// When each failing sink is to be tried again.
    pub retry_at: [Option<Millis>; 32],
    /// When each sink's current run of failures started.
    pub failing_since: [Option<Millis>; 32],
    /// When the write was first sent.
    pub sent_ms: Millis,
}

/// One lane's queue and its write in flight.
#[derive(Debug, Default)]
pub(super) struct LaneState {
    pub queue: VecDeque<Piece>,
    pub in_flight: Option<InFlight>,
    pub queued_items: usize,
}

impl LaneState {
    /// The last cut whose share of this lane every sink acknowledged, given the latest cut.
    pub fn covered(&self, latest_cut: u64) -> u64 {
        let mut c = latest_cut;
        if let Some(f) = &self.in_flight {
            c = c.min(f.first_cut.saturating_sub(1));
        }
        if let Some(p) = self.queue.front() {
            c = c.min(p.cut.saturating_sub(1));
        }
        c
    }

    /// Items queued or in flight.
    pub fn pending_items(&self) -> usize {
        self.queued_items + self.in_flight.as_ref().map_or(0, |f| f.write.meta.items)
    }

    pub fn enqueue(&mut self, piece: Piece) {
        self.queued_items += piece.items();
        self.queue.push_back(piece);
    }

    /// Takes the next write's content off the queue: whole pieces while they fit in `max`
    /// items, or the front of the first one when it alone is larger. Returns the content, its
    /// first cut and the last cut it holds whole.
    pub fn take(&mut self, max: usize) -> Option<(Piece, u64, u64)> {
        let first = self.queue.front()?.cut;
        let mut taken: Option<Piece> = None;
        let mut size = 0;
        let mut through = first.saturating_sub(1);
        while let Some(p) = self.queue.front() {
            let n = p.items();
            if size + n <= max {
                let p = self.queue.pop_front().unwrap_or_default();
                through = p.cut;
                size += n;
                match taken.as_mut() {
                    Some(t) => t.append(p),
                    None => taken = Some(p),
                }
            } else {
                if size < max {
                    let front = self
                        .queue
                        .front_mut()
                        .map(|p| p.split_front(max - size))
                        .unwrap_or_default();
                    size += front.items();
                    match taken.as_mut() {
                        Some(t) => t.append(front),
                        None => taken = Some(front),
                    }
                }
                break;
            }
        }
        self.queued_items -= size;
        let mut piece = taken?;
        // `append` moved the cut forward; the write is identified by its range instead.
        piece.cut = through;
        Some((piece, first, through))
    }
}

/// The three lanes.
#[derive(Debug, Default)]
pub(super) struct Lanes {
    pub lanes: [LaneState; 3],
}

impl Lanes {
    pub fn get(&self, lane: Lane) -> &LaneState {
        &self.lanes[lane.index()]
    }

    pub fn get_mut(&mut self, lane: Lane) -> &mut LaneState {
        &mut self.lanes[lane.index()]
    }

    /// The last cut every lane has had acknowledged by every sink.
    pub fn durable_cut(&self, latest_cut: u64) -> u64 {
        self.lanes
            .iter()
            .map(|l| l.covered(latest_cut))
            .min()
            .unwrap_or(latest_cut)
    }

    /// Items waiting in or for a write, over every lane.
    pub fn pending_items(&self) -> usize {
        self.lanes.iter().map(LaneState::pending_items).sum()
    }

    /// Whether nothing is queued or in flight.
    pub fn is_idle(&self) -> bool {
        self.lanes
            .iter()
            .all(|l| l.queue.is_empty() && l.in_flight.is_none())
    }
}

/// Splits one cut's output into its lanes' pieces.
pub(super) fn split_cut(
    cut: u64,
    mut out: Output,
    mut meta: WriteMeta,
) -> impl Iterator<Item = Piece> {
    let (alerts, windows): (Vec<_>, Vec<_>) =
        out.rows.drain(..).partition(|r| r.query().is_alert());
    let alert_piece = Piece {
        cut,
        out: Output {
            rows: alerts,
            ..Output::default()
        },
        meta: WriteMeta {
            lane: Some(Lane::Alerts),
            alert_timestamps_ms: std::mem::take(&mut meta.alert_timestamps_ms),
            ..WriteMeta::default()
        },
    };
    let window_piece = Piece {
        cut,
        out: Output {
            rows: windows,
            ..Output::default()
        },
        meta: WriteMeta {
            lane: Some(Lane::Windows),
            finals_emitted_ms: std::mem::take(&mut meta.finals_emitted_ms),
            trigger_ms: meta.trigger_ms,
            ..WriteMeta::default()
        },
    };
    let bulk_piece = Piece {
        cut,
        out: Output {
            dead_letters: std::mem::take(&mut out.dead_letters),
            late: std::mem::take(&mut out.late),
            archive: std::mem::take(&mut out.archive),
            ..Output::default()
        },
        meta: WriteMeta {
            lane: Some(Lane::Bulk),
            ..WriteMeta::default()
        },
    };
    [alert_piece, window_piece, bulk_piece]
        .into_iter()
        .filter(|p| p.items() > 0)
}
