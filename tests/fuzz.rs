//! The fuzz target of decode + validation + engine ingest (issue 11).
//!
//! Inputs are generator messages of the four topics, mutated byte by byte (truncated, bytes
//! changed, inserted, deleted, repeated) and field by field (values swapped for huge numbers,
//! long strings, escaped NULs, invalid UTF-8, new ids that flood the keys, odd timestamps, deep
//! nesting), plus random bytes, on the right or the wrong topic, with Kafka timestamps near the
//! event time or anywhere. Each proptest case feeds a batch of them to one engine, with the
//! default bounds or with tight ones that a batch can hit, sometimes through a checkpoint and
//! restore, ticks it, and flushes it. For every input it checks that the engine did not panic and
//! either accepted it or dead-lettered it with a reason and a detail; for every case that
//! conservation holds, that no bound was exceeded, and that every row and dead letter can be
//! stored (no NUL in text, finite numbers); and that the same inputs checked by a stateless engine,
//! forwarded in their compact binary form and applied by a twin engine give the same output.
//!
//! `cargo test` runs a few thousand inputs. The full run is a command:
//!
//! ```text
//! FUZZ_INPUTS=1000000 cargo test --release -p smart-city --test fuzz -- --nocapture
//! ```
//!
//! A failing case is written by proptest to `tests/fuzz.proptest-regressions` and replayed
//! first by every later run; keep that file. The bugs it found have their own regression tests
//! in `pipeline/src/engine/tests/limits.rs`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use generator::{Generator, GeneratorConfig};
use pipeline::engine::{
    Counters, DeadLetterReason, Engine, EngineConfig, Output, RawRecord, SourcePosition,
};
use pipeline::model::Topic;
use pipeline::time::MINUTE_MS;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Inputs per proptest case.
const BATCH: usize = 64;
/// Inputs `cargo test` runs when `FUZZ_INPUTS` is not set.
const DEFAULT_INPUTS: usize = 4096;

/// Inputs accepted (slot 0) and dead-lettered by reason (slot 1 + the reason's index in
/// [`DeadLetterReason::ALL`]), over the whole run: what the inputs exercised.
static OUTCOMES: [AtomicU64; 1 + DeadLetterReason::ALL.len()] =
    [const { AtomicU64::new(0) }; 1 + DeadLetterReason::ALL.len()];

/// A generator record: topic, value, produce time.
type Base = (Topic, Vec<u8>, i64);

/// Twenty minutes of the thesis city with faults and an incident every 30 s.
fn pool() -> &'static [Base] {
    static POOL: OnceLock<Vec<Base>> = OnceLock::new();
    POOL.get_or_init(|| {
        let config = GeneratorConfig::from_toml_str(
            r#"
            start = "2026-11-24T07:50:00Z"
            duration_s = 1200
            incident_probability = 1.0
            [[fault]]
            kind = "malformed_json"
            probability = 0.02
            [[fault]]
            kind = "out_of_range"
            probability = 0.02
            [[fault]]
            kind = "duplicate"
            probability = 0.02
            [[fault]]
            kind = "late"
            probability = 0.02
            "#,
        )
        .expect("a valid generator configuration");
        let g = Generator::new(&config, 11).expect("a valid generator");
        g.records()
            .map(|r| {
                let mut v = Vec::new();
                r.write_value(&mut v);
                (r.topic, v, r.produce_time_ms)
            })
            .collect()
    })
}

/// Bounds small enough for one batch to hit every one of them.
fn tight() -> EngineConfig {
    EngineConfig {
        count_limit: 10_000,
        max_message_bytes: 2048,
        max_string_bytes: 24,
        max_nesting_depth: 4,
        max_keys_per_query: 6,
        max_keys_per_window: 5,
        max_interned_strings: 24,
        max_devices_per_topic: 12,
        max_vehicles_per_window: 8,
        ..EngineConfig::default()
    }
}

/// One fuzz input, as proptest draws it; [`build`] turns it into a record.
#[derive(Clone, Debug)]
struct Draw {
    base: usize,
    /// Random bytes instead of a mutated message.
    random: Option<Vec<u8>>,
    /// (operator, position, length, value) of each mutation.
    ops: Vec<(u8, usize, usize, u64)>,
    /// Another topic than the message's.
    topic: Option<u8>,
    /// 0-5: near the produce time; 6: anywhere; 7: the extreme values.
    ts_mode: u8,
    ts_jitter: i64,
    /// Send the previous input again (a duplicate, unless the previous one was refused).
    repeat: bool,
}

fn draw() -> impl Strategy<Value = Draw> {
    (
        any::<usize>(),
        prop::option::weighted(0.1, prop::collection::vec(any::<u8>(), 0..256)),
        prop::collection::vec(
            (any::<u8>(), any::<usize>(), any::<usize>(), any::<u64>()),
            0..3,
        ),
        prop::option::weighted(0.05, any::<u8>()),
        0u8..8,
        any::<i64>(),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(base, random, ops, topic, ts_mode, ts_jitter, repeat)| Draw {
                base,
                random,
                ops,
                topic,
                ts_mode,
                ts_jitter,
                repeat,
            },
        )
}

/// Spans `[start, end)` of every member value of compact JSON, nested ones included.
fn value_spans(json: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut open: Vec<Option<usize>> = Vec::new();
    let (mut in_string, mut escaped) = (false, false);
    for (i, &c) in json.iter().enumerate() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            b'"' => in_string = true,
            b'{' | b'[' => open.push(None),
            b':' => {
                if let Some(slot) = open.last_mut() {
                    *slot = Some(i + 1);
                }
            }
            b',' | b'}' | b']' => {
                if let Some(Some(start)) = open.last().copied() {
                    spans.push((start, i));
                }
                if c == b',' {
                    if let Some(slot) = open.last_mut() {
                        *slot = None;
                    }
                } else {
                    open.pop();
                }
            }
            _ => {}
        }
    }
    spans
}

/// What a value may be replaced by.
fn hostile_value(pick: u64) -> Vec<u8> {
    let n = pick >> 8;
    let text = match pick % 24 {
        0 => "9223372036854775807".to_owned(),
        1 => "-9223372036854775808".to_owned(),
        2 => "99999999999999999999".to_owned(),
        3 => "1e308".to_owned(),
        4 => "1e400".to_owned(),
        5 => "-0".to_owned(),
        6 => "NaN".to_owned(),
        7 => "0.000000000000000000001".to_owned(),
        8 => format!("\"{}\"", "x".repeat(20 + (n % 3000) as usize)),
        9 => "\"a\\u0000b\"".to_owned(),
        10 => "\"\\ud800\"".to_owned(),
        11 => "\"\\u00e9\\n\\t\\\"\"".to_owned(),
        // A new id: floods keys, devices and names.
        12..=15 => format!("\"F-{}\"", n % 100_000),
        16 => "\"9999-12-31T23:59:59.999Z\"".to_owned(),
        17 => "\"0000-01-01T00:00:00Z\"".to_owned(),
        18 => "\"2026-11-24T08:00:00+14:00\"".to_owned(),
        19 => "\"2026-11-24 08:00:00\"".to_owned(),
        20 => format!(
            "{}1{}",
            "[".repeat((n % 40) as usize),
            "]".repeat((n % 40) as usize)
        ),
        21 => "{\"a\":{\"b\":{\"c\":{\"d\":{}}}}}".to_owned(),
        22 => "null".to_owned(),
        _ => "true".to_owned(),
    };
    text.into_bytes()
}

fn mutate(v: &mut Vec<u8>, (op, at, len, value): (u8, usize, usize, u64)) {
    const INTERESTING: &[u8] = b"{}[]\":,\\ 0123456789.-+eEtfnul\x00\x1f\x7f\xc3\xff";
    let at = at % (v.len() + 1);
    let b = INTERESTING[(value % INTERESTING.len() as u64) as usize];
    match op % 11 {
        0 => v.truncate(at),
        1 if at < v.len() => v[at] = b,
        2 => v.insert(at, b),
        3 => {
            let end = (at + len % 16).min(v.len());
            v.drain(at..end);
        }
        4 => {
            let end = (at + len % 32).min(v.len());
            let chunk = v[at..end].to_vec();
            v.splice(at..at, chunk);
        }
        // Structure-aware: swap a member's value for a hostile one.
        5..=7 => {
            let spans = value_spans(v);
            if !spans.is_empty() {
                let (s, e) = spans[len % spans.len()];
                v.splice(s..e, hostile_value(value));
            }
        }
        // A new id or key, the rest intact: floods keys, devices and names.
        8 | 9 => {
            const IDS: [&str; 7] = [
                "\"zone_id\":\"",
                "\"road_id\":\"",
                "\"line_id\":\"",
                "\"sensor_id\":\"",
                "\"vehicle_id\":\"",
                "\"parking_id\":\"",
                "\"incident_id\":\"",
            ];
            let text = String::from_utf8_lossy(v).into_owned();
            let field = IDS[len % IDS.len()];
            if let Some(start) = text.find(field).map(|i| i + field.len())
                && let Some(end) = text[start..].find('"').map(|e| start + e)
            {
                let id = format!("F-{}", value % 50_000);
                *v = format!("{}{id}{}", &text[..start], &text[end..]).into_bytes();
            }
        }
        // Invalid UTF-8 inside a string, or an extra deeply nested member.
        _ => {
            if value % 2 == 0 {
                if let Some(q) = v.iter().skip(at).position(|&c| c == b'"') {
                    v.insert(at + q + 1, 0xff);
                }
            } else if v.last() == Some(&b'}') {
                let d = (len % 5000) + 1;
                v.pop();
                v.extend_from_slice(b",\"deep\":");
                v.extend(std::iter::repeat_n(b'[', d));
                v.extend(std::iter::repeat_n(b']', d));
                v.push(b'}');
            }
        }
    }
}

/// The record a draw makes as input `i` of a case reading the pool from `start`: topic, value,
/// Kafka timestamp. Inputs mostly follow the pool's produce order, as a consumer reads a topic,
/// so windows, keys and devices build up within a case.
fn build(d: &Draw, start: usize, i: usize) -> (Topic, Vec<u8>, i64) {
    let pool = pool();
    let (topic, value, ts) = &pool[(start + 2 * i + d.base % 8) % pool.len()];
    let mut topic = *topic;
    if let Some(t) = d.topic {
        topic = Topic::ALL[usize::from(t) % 4];
    }
    let value = match &d.random {
        Some(bytes) => bytes.clone(),
        None => {
            let mut v = value.clone();
            for op in &d.ops {
                mutate(&mut v, *op);
            }
            v
        }
    };
    let ts = match d.ts_mode {
        0..=5 => ts + d.ts_jitter.rem_euclid(2 * MINUTE_MS) - MINUTE_MS,
        6 => d.ts_jitter,
        _ => [i64::MIN, i64::MAX, 0, -1][d.ts_jitter.rem_euclid(4) as usize],
    };
    (topic, value, ts)
}

fn fail(what: String) -> TestCaseError {
    TestCaseError::fail(what)
}

/// A fuzz input as the engine is handed it, at `offset`.
fn raw((topic, value, ts): &(Topic, Vec<u8>, i64), offset: i64) -> RawRecord<'_> {
    RawRecord {
        topic: *topic,
        key: b"fuzz",
        value,
        kafka_timestamp_ms: *ts,
        position: SourcePosition {
            partition: 0,
            offset,
        },
    }
}

/// Feeds one record and checks it was accepted or dead-lettered with a reason.
fn feed_one(
    engine: &mut Engine,
    out: &mut Output,
    record: &(Topic, Vec<u8>, i64),
    offset: i64,
) -> Result<(), TestCaseError> {
    let (topic, value, _) = record;
    let totals = |c: &Counters| {
        c.topics
            .get(topic)
            .map_or((0, 0, 0), |t| (t.records_in, t.accepted, t.dead_lettered))
    };
    let before = totals(&engine.counters());
    let rec = raw(record, offset);
    let position = rec.position;
    let dead_before = out.dead_letters.len();
    engine.ingest(&rec, out);
    let after = totals(&engine.counters());
    let (accepted, dead) = (after.1 - before.1, after.2 - before.2);
    if after.0 != before.0 + 1 || accepted + dead != 1 {
        return Err(fail(format!(
            "{topic} {:?}: in +{}, accepted +{accepted}, dead-lettered +{dead}",
            String::from_utf8_lossy(value),
            after.0 - before.0
        )));
    }
    if accepted == 1 {
        OUTCOMES[0].fetch_add(1, Ordering::Relaxed);
    }
    if dead == 1 {
        let letter = out.dead_letters[dead_before..]
            .iter()
            .find(|d| d.position == position);
        match letter {
            Some(d) if !d.detail.is_empty() && DeadLetterReason::ALL.contains(&d.reason) => {
                let slot = DeadLetterReason::ALL.iter().position(|r| *r == d.reason);
                OUTCOMES[1 + slot.unwrap_or(0)].fetch_add(1, Ordering::Relaxed);
            }
            other => {
                return Err(fail(format!(
                    "{topic} {:?}: dead-lettered without a reason row: {other:?}",
                    String::from_utf8_lossy(value)
                )));
            }
        }
    }
    Ok(())
}

/// Whether a JSON value holds a NUL in a string, or (`rows`) a null, which is how serde_json
/// writes a non-finite float.
fn unstorable(v: &serde_json::Value, rows: bool) -> bool {
    use serde_json::Value;
    match v {
        Value::Null => rows,
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(|x| unstorable(x, rows)),
        Value::Object(o) => o
            .iter()
            .any(|(k, x)| k.contains('\0') || unstorable(x, rows)),
        _ => false,
    }
}

/// Every string in a row, dead letter or late record is storable (no NUL: PostgreSQL refuses
/// it), every number of a row finite (FerretDB refuses NaN and infinities).
fn check_storable(out: &Output) -> Result<(), TestCaseError> {
    let rows = out.rows.iter().map(|r| (true, serde_json::to_value(r)));
    let dead = out
        .dead_letters
        .iter()
        .map(|d| (false, serde_json::to_value(d)));
    let late = out.late.iter().map(|l| (false, serde_json::to_value(l)));
    for (is_row, value) in rows.chain(dead).chain(late) {
        let value = value.map_err(|e| fail(format!("cannot serialise an output: {e}")))?;
        if unstorable(&value, is_row) {
            return Err(fail(format!("not storable: {value}")));
        }
    }
    Ok(())
}

/// No bound exceeded.
fn check_bounds(c: &Counters, config: &EngineConfig) -> Result<(), TestCaseError> {
    let p = &c.peaks;
    let over = |what: &str, peak: u64, max: usize| {
        (peak > max as u64).then(|| format!("{what}: {peak} > {max}"))
    };
    let mut bad: Vec<String> = Vec::new();
    bad.extend(over(
        "interned",
        p.interned_strings,
        config.max_interned_strings,
    ));
    bad.extend(over("vehicles", p.vehicles, config.max_devices_per_topic));
    for (q, &n) in &p.keys_per_query {
        bad.extend(over(q.name(), n, config.max_keys_per_query));
    }
    for (q, &n) in &p.open_windows {
        bad.extend(over(q.name(), n, config.max_open_windows));
    }
    for (t, &n) in &p.devices_per_topic {
        bad.extend(over(t.name(), n, config.max_devices_per_topic));
    }
    match bad.is_empty() {
        true => Ok(()),
        false => Err(fail(bad.join("; "))),
    }
}

/// One case: a batch through one engine.
fn case(
    draws: &[Draw],
    start: usize,
    tight_bounds: bool,
    restore_at: Option<usize>,
) -> Result<(), TestCaseError> {
    let config = if tight_bounds {
        tight()
    } else {
        EngineConfig::default()
    };
    let mut engine = Engine::new(config.clone()).map_err(|e| fail(e.to_string()))?;
    let mut out = Output::default();
    // The same records through the two stages of docs/scale-out.md: checked by an engine that
    // never holds state (stage 1), forwarded in their compact binary form, applied by a twin
    // engine (stage 2). Its output must be the engine's, record for record.
    let stage1 = Engine::new(config.clone()).map_err(|e| fail(e.to_string()))?;
    let mut twin = Engine::new(config.clone()).map_err(|e| fail(e.to_string()))?;
    let mut twin_out = Output::default();
    let mut forwarded = Vec::new();
    let mut previous: Option<(Topic, Vec<u8>, i64)> = None;
    for (i, d) in draws.iter().enumerate() {
        if restore_at == Some(i) {
            engine = Engine::restore(&engine.checkpoint()).map_err(|e| fail(e.to_string()))?;
            twin = Engine::restore(&twin.checkpoint()).map_err(|e| fail(e.to_string()))?;
        }
        let record = match (&previous, d.repeat) {
            (Some(p), true) => p.clone(),
            _ => build(d, start, i),
        };
        previous = Some(record.clone());
        if i % 8 == 0 {
            engine.tick(record.2, &mut out);
            twin.tick(record.2, &mut twin_out);
        }
        feed_one(&mut engine, &mut out, &record, i as i64)?;
        let rec = raw(&record, i as i64);
        forwarded.clear();
        stage1.forward(&rec, &mut forwarded);
        twin.ingest_checked(
            &RawRecord {
                value: &forwarded,
                ..rec
            },
            &mut twin_out,
        );
    }
    engine.flush(&mut out);
    twin.flush(&mut twin_out);
    if format!("{out:?}") != format!("{twin_out:?}") || engine.counters() != twin.counters() {
        return Err(fail(format!(
            "check + forward + apply differs from ingest:\n{out:?}\n{twin_out:?}"
        )));
    }
    let counters = engine.counters();
    counters.check_conservation().map_err(fail)?;
    check_bounds(&counters, &config)?;
    check_storable(&out)
}

/// Inputs to run: `FUZZ_INPUTS`, or a few thousand.
fn inputs() -> usize {
    match std::env::var("FUZZ_INPUTS") {
        Ok(n) => n
            .parse()
            .unwrap_or_else(|_| panic!("FUZZ_INPUTS = `{n}` is not a number of inputs")),
        Err(_) => DEFAULT_INPUTS,
    }
}

// Proves, on FUZZ_INPUTS mutated generator messages and random bytes (a million in the issue's
// run), that decode, validation and ingest never panic, that every input is accepted or
// dead-lettered with a reason, that conservation holds, that no bound is exceeded with default
// or tight bounds (through checkpoints too), that every output can be stored, and that checking
// a record, forwarding it in its compact form and applying it gives what ingesting it gives.
#[test]
fn decode_validate_ingest_never_fail() {
    let cases = inputs().div_ceil(BATCH) as u32;
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fuzz.proptest-regressions"
            )),
        )),
        ..Config::default()
    });
    let strategy = (
        prop::collection::vec(draw(), BATCH),
        any::<usize>(),
        any::<bool>(),
        prop::option::weighted(0.15, 0..BATCH),
    );
    let result = runner.run(&strategy, |(draws, start, tight_bounds, restore_at)| {
        case(&draws, start, tight_bounds, restore_at)
    });
    let by_reason: Vec<String> = DeadLetterReason::ALL
        .iter()
        .enumerate()
        .map(|(i, r)| format!("{} {}", r.name(), OUTCOMES[1 + i].load(Ordering::Relaxed)))
        .collect();
    eprintln!(
        "fuzz: {} cases of {BATCH} inputs = {} inputs; accepted {}; dead-lettered: {}",
        cases,
        cases as usize * BATCH,
        OUTCOMES[0].load(Ordering::Relaxed),
        by_reason.join(", ")
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}
