//! The `generator` binary: reproducible JSONL, config files, flags and clear errors.

use std::path::PathBuf;
use std::process::{Command, Output};

use generator::rng::fnv1a64;

fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_generator"));
    cmd.args(args).env_remove("GENERATION_INTERVAL");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("the generator binary runs")
}

fn temp_path(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

// Proves `generator --seed 7 --duration 1h --format jsonl` is byte-identical twice, seed 8
// differs, and the output is 47,520 readings plus incidents in produce-time order.
#[test]
fn binary_is_reproducible() {
    let a = run(
        &["--seed", "7", "--duration", "1h", "--format", "jsonl"],
        &[],
    );
    let b = run(
        &["--seed", "7", "--duration", "1h", "--format", "jsonl"],
        &[],
    );
    let c = run(&["generate", "--seed", "8", "--duration", "1h"], &[]);
    for o in [&a, &b, &c] {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(
            o.stderr.is_empty(),
            "no progress when stderr is not a terminal"
        );
    }
    assert_eq!(
        fnv1a64(&a.stdout),
        fnv1a64(&b.stdout),
        "seed 7 twice: digests differ"
    );
    assert_eq!(a.stdout, b.stdout);
    assert_ne!(
        fnv1a64(&a.stdout),
        fnv1a64(&c.stdout),
        "seeds 7 and 8 gave the same output"
    );

    let text = String::from_utf8(a.stdout).unwrap();
    let mut readings = 0;
    let mut last_produce = i64::MIN;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let produce = pipeline::time::parse(v["produce_time"].as_str().unwrap()).unwrap();
        let produce = produce.utc_millis().expect("produce times are UTC");
        assert!(produce >= last_produce, "{line} after {last_produce}");
        last_produce = produce;
        if v["topic"] != "incidents" {
            readings += 1;
        }
        assert_eq!(
            v["key"],
            v["value"][match v["topic"].as_str().unwrap() {
                "traffic-sensors" => "sensor_id",
                "public-transport" => "vehicle_id",
                "parking" => "parking_id",
                _ => "incident_id",
            }]
        );
    }
    assert_eq!(readings, 47_520);
}

// Proves a config file is read (bare or as a scenario's [generator] table), flags override it,
// GENERATION_INTERVAL sets the tick unless the file does, and --out writes a file.
#[test]
fn config_file_env_and_flags() {
    let scenario = temp_path("scenario.toml");
    std::fs::write(
        &scenario,
        "name = \"x\"\n[generator]\nduration_s = 3600\nincident_probability = 0.0\n\
         [[generator.fault]]\nkind = \"duplicate\"\nprobability = 1.0\ntopic = \"parking\"\n",
    )
    .unwrap();
    let out = temp_path("out.jsonl");
    let path = scenario.to_str().unwrap();
    let o = run(
        &[
            "--seed",
            "1",
            "--config",
            path,
            "--duration",
            "10s",
            "--start",
            "2026-11-24T08:00:00Z",
            "--out",
            out.to_str().unwrap(),
        ],
        &[("GENERATION_INTERVAL", "2")],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout.is_empty());
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // A 2 s tick over 10 s: 5 ticks × 66 readings, plus a labelled copy of each of the 60 parking
    // readings.
    assert_eq!(lines.len(), 5 * 66 + 5 * 12);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.ends_with(",\"fault\":\"duplicate\"}"))
            .count(),
        60
    );
    assert!(lines[0].contains("\"produce_time\":\"2026-11-24T08:00:00"));

    // A tick written in the file beats the environment.
    std::fs::write(&scenario, "duration_s = 10\ntick_interval_ms = 5000\n").unwrap();
    let o = run(
        &["--seed", "1", "--config", path],
        &[("GENERATION_INTERVAL", "1")],
    );
    assert_eq!(
        String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .filter(|l| !l.contains("\"incidents\""))
            .count(),
        2 * 66
    );
}

// Proves bad input fails with a message naming what is wrong, and no output.
#[test]
fn errors_are_clear() {
    let o = run(&["--duration", "1h"], &[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--seed"));

    let bad = temp_path("bad.toml");
    std::fs::write(&bad, "[[congestion]]\nzone = \"zone-7\"\nspeed_kmh = 2\n").unwrap();
    let o = run(&["--seed", "1", "--config", bad.to_str().unwrap()], &[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("congestion[0].zone") && err.contains("zone-7"),
        "{err}"
    );
    assert!(o.stdout.is_empty());

    let o = run(
        &["--seed", "1", "--duration", "1h"],
        &[("GENERATION_INTERVAL", "fast")],
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("GENERATION_INTERVAL"));

    let o = run(&["--seed", "1", "--duration", "an hour"], &[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a duration"));
}
