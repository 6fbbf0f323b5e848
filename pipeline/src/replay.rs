//! Offline replay: the generator's JSONL in, the engine's output out, one JSON object per line.
//!
//! Processing time follows event time: before each record the engine is ticked to the record's
//! produce time, so triggers fire as they would have live; at the end every window is flushed
//! final. Output lines carry `"output": "row" | "dead_letter" | "late"`.

use std::borrow::Cow;
use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::digest::OutputDigest;
use crate::engine::{DeadLetter, Engine, LateRecord, Output, RawRecord, Row, SourcePosition};
use crate::model::Topic;
use crate::time::Timestamp;

/// One line of the generator's JSONL.
#[derive(Debug, Deserialize)]
pub struct InputLine<'a> {
    /// Topic name.
    pub topic: Topic,
    /// Kafka key.
    #[serde(borrow)]
    pub key: Cow<'a, str>,
    /// When the record is (to be) produced: its Kafka timestamp.
    pub produce_time: Timestamp,
    /// The message, when it is JSON.
    #[serde(borrow, default)]
    pub value: Option<&'a RawValue>,
    /// The message bytes as a string, when they are not valid JSON (faults).
    #[serde(borrow, default)]
    pub value_raw: Option<Cow<'a, str>>,
    /// Ground-truth fault label, ignored by the engine.
    #[serde(default)]
    pub fault: Option<String>,
}

impl InputLine<'_> {
    /// The Kafka value bytes.
    pub fn value_bytes(&self) -> &[u8] {
        match (&self.value, &self.value_raw) {
            (Some(v), _) => v.get().as_bytes(),
            (None, Some(raw)) => raw.as_bytes(),
            (None, None) => b"",
        }
    }
}

/// One output line.
#[derive(Debug, Serialize)]
#[serde(tag = "output", rename_all = "snake_case")]
pub enum OutputLine<'a> {
    /// A result row.
    Row(&'a Row),
    /// A dead-lettered record.
    DeadLetter(&'a DeadLetter),
    /// A late record.
    Late(&'a LateRecord),
}

/// A replay that could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Reading the input or writing the output failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A line of the input is not a generator record.
    #[error("input line {line}: {source}")]
    Line {
        /// 1-based line number.
        line: u64,
        /// The parse error.
        source: serde_json::Error,
    },
}

/// What a replay did.
#[derive(Debug, Default)]
pub struct ReplaySummary {
    /// Input lines read.
    pub records: u64,
    /// Result rows written.
    pub rows: u64,
    /// Dead-letter rows written.
    pub dead_letters: u64,
    /// Late rows written.
    pub late: u64,
    /// Digest of the final rows.
    pub digest: String,
}

/// Replays `input` through `engine`, writing every output line to `output`.
pub fn replay(
    engine: &mut Engine,
    input: impl BufRead,
    mut output: impl Write,
) -> Result<ReplaySummary, ReplayError> {
    let mut out = Output::default();
    let mut summary = ReplaySummary::default();
    let mut digest = OutputDigest::new();
    let mut line = String::new();
    let mut input = input;
    let mut n = 0u64;
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            break;
        }
        n += 1;
        if line.trim().is_empty() {
            continue;
        }
        let rec: InputLine<'_> =
            serde_json::from_str(&line).map_err(|source| ReplayError::Line { line: n, source })?;
        let ts = match rec.produce_time {
            Timestamp::Utc(ms) | Timestamp::Naive(ms) => ms,
        };
        engine.tick(ts, &mut out);
        engine.ingest(
            &RawRecord {
                topic: rec.topic,
                key: rec.key.as_bytes(),
                value: rec.value_bytes(),
                kafka_timestamp_ms: ts,
                position: SourcePosition {
                    partition: 0,
                    offset: (n - 1) as i64,
                },
            },
            &mut out,
        );
        summary.records += 1;
        write_output(&mut out, &mut output, &mut summary, &mut digest)?;
    }
    engine.flush(&mut out);
    write_output(&mut out, &mut output, &mut summary, &mut digest)?;
    output.flush()?;
    summary.digest = digest.hex();
    Ok(summary)
}

fn write_output(
    out: &mut Output,
    w: &mut impl Write,
    summary: &mut ReplaySummary,
    digest: &mut OutputDigest,
) -> Result<(), ReplayError> {
    let mut line = |item: OutputLine<'_>| -> std::io::Result<()> {
        serde_json::to_writer(&mut *w, &item)?;
        w.write_all(b"\n")
    };
    for row in &out.rows {
        digest.add(row);
        line(OutputLine::Row(row))?;
    }
    for d in &out.dead_letters {
        line(OutputLine::DeadLetter(d))?;
    }
    for l in &out.late {
        line(OutputLine::Late(l))?;
    }
    summary.rows += out.rows.len() as u64;
    summary.dead_letters += out.dead_letters.len() as u64;
    summary.late += out.late.len() as u64;
    out.clear();
    Ok(())
}
