//! Generation rate of the default (thesis) city, in records per second: the iterator alone, and
//! the iterator plus JSONL encoding. Target: at least 5,000,000 records/s on one core for
//! generation.
//!
//! The `write_json` group holds the hand-written message writer (`Message::write_json`) to its
//! reason for existing: the same pre-generated messages written by serde_json and by it.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use generator::{Generator, GeneratorConfig, Payload};
use pipeline::model::Message;

fn generation(c: &mut Criterion) {
    let mut group = c.benchmark_group("generator");
    for (name, load_factor) in [("thesis_city_1h", 1), ("load_x10_1h", 10)] {
        let config = GeneratorConfig {
            load_factor,
            ..GeneratorConfig::default()
        };
        let g = Generator::new(&config, 7).expect("the default config is valid");
        let records = g.records().count() as u64;
        group.throughput(Throughput::Elements(records));
        group.bench_function(format!("{name}/generate"), |b| {
            b.iter(|| g.records().map(black_box).count())
        });
        group.bench_function(format!("{name}/generate+jsonl"), |b| {
            let mut line = Vec::with_capacity(1024);
            b.iter(|| {
                let mut bytes = 0usize;
                for record in g.records() {
                    line.clear();
                    record.write_jsonl(&mut line);
                    bytes += black_box(&line).len();
                }
                bytes
            })
        });
    }
    group.finish();
}

/// Encoding alone, over the messages of one simulated hour of the default city generated once:
/// `serde_json::to_writer` of each message's struct (what `write_json` did before) against
/// `write_json`. Both write into one reused buffer, cleared per message, as the generator does.
fn write_json(c: &mut Criterion) {
    let g = Generator::new(&GeneratorConfig::default(), 7).expect("the default config is valid");
    let messages: Vec<Message<'_>> = g
        .records()
        .filter_map(|r| match r.payload {
            Payload::Message(m) => Some(m),
            Payload::Raw(_) => None,
        })
        .collect();
    let mut group = c.benchmark_group("write_json");
    group.throughput(Throughput::Elements(messages.len() as u64));
    group.bench_function("thesis_city_1h/serde_json", |b| {
        let mut out = Vec::with_capacity(1024);
        b.iter(|| {
            let mut bytes = 0usize;
            for m in &messages {
                out.clear();
                let written = m.write_json_serde(&mut out);
                debug_assert!(written.is_ok());
                bytes += black_box(&out).len();
            }
            bytes
        })
    });
    group.bench_function("thesis_city_1h/write_json", |b| {
        let mut out = Vec::with_capacity(1024);
        b.iter(|| {
            let mut bytes = 0usize;
            for m in &messages {
                out.clear();
                m.write_json(&mut out);
                bytes += black_box(&out).len();
            }
            bytes
        })
    });
    group.finish();
}

criterion_group!(benches, generation, write_json);
criterion_main!(benches);
