//! Generation rate of the default (thesis) city, in records per second: the iterator alone, and
//! the iterator plus JSONL encoding. Target: at least 5,000,000 records/s on one core for
//! generation.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use generator::{Generator, GeneratorConfig};

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

criterion_group!(benches, generation);
criterion_main!(benches);
