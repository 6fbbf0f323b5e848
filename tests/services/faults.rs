//! Real faults, confirming what the simulator's swarm finds on its in-memory backend: the job
//! killed with SIGKILL at several points and restarted, and FerretDB, PostgreSQL and Kafka each
//! stopped for about 30 s mid-run and started again. The job never exits on its own, and the
//! final rows equal those of the in-memory engine over the same records (what an uninterrupted
//! run stores, as `end_to_end_matches_memory` proves).

// These tests pace a producer and time real processes and outages by the wall clock, which the
// workspace bans elsewhere (clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::*;

/// The `pipeline` binary: `PIPELINE_BIN`, or the one built next to this test.
fn pipeline_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PIPELINE_BIN") {
        return p.into();
    }
    // target/<profile>/deps/services-<hash> -> target/<profile>/pipeline
    let exe = std::env::current_exe().expect("the test binary's path");
    let p = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("the target folder")
        .join("pipeline");
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build -p pipeline --features services`, or set \
         PIPELINE_BIN",
        p.display()
    );
    p
}

/// The thesis city with faults that do not depend on timing: malformed JSON, impossible values
/// and duplicates (no late readings: whether a record produced minutes late misses a window
/// depends on when it arrives, which a paced run with outages does not fix).
pub(super) fn fault_stream(t0: Millis, minutes: i64) -> Vec<Rec> {
    stream(t0, minutes, "")
}

/// The generator's city from `t0` for `minutes` (seed 11), with the faults of
/// [`super::generated`] and `extra` TOML.
fn stream(t0: Millis, minutes: i64, extra: &str) -> Vec<Rec> {
    super::generated(t0, minutes, 11, extra)
}

/// Records the stored checkpoint covers (its positions summed, plus one per partition), or -1.
fn summed(scope: &Scope) -> i64 {
    pipeline::streaming::checkpoint::load(&scope.checkpoint_dir)
        .ok()
        .flatten()
        .map_or(-1, |l| l.data.positions.values().map(|o| o + 1).sum())
}

/// `pipeline streaming` as a process of its own, its output in a file.
pub(super) struct Job {
    pub(super) child: Child,
    pub(super) log: PathBuf,
}

impl Job {
    fn rss_kb(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// The last `n` lines of the job's log.
    pub(super) fn tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(n).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Panics, with the job's log, if it exited.
    pub(super) fn assert_running(&mut self, when: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "the job exited on its own {when} ({status}); last lines:\n{}",
                self.tail(30)
            );
        }
    }

    /// Waits for the job to end by itself, at most `limit`.
    pub(super) fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            assert!(
                start.elapsed() < limit,
                "the job did not end within {limit:?}; log: {}",
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Scope {
    fn spawn_job(&self, run: usize, extra: &[&str]) -> Job {
        self.spawn_job_named(&format!("run{run}"), extra)
    }

    /// A job whose log is `<checkpoint dir>.<label>.log`.
    pub(super) fn spawn_job_named(&self, label: &str, extra: &[&str]) -> Job {
        self.spawn_job_at(label, &self.checkpoint_dir, extra)
    }

    /// [`Self::spawn_job_named`] with a checkpoint location of its own.
    pub(super) fn spawn_job_at(&self, label: &str, checkpoint_dir: &Path, extra: &[&str]) -> Job {
        let log = self.checkpoint_dir.with_extension(format!("{label}.log"));
        let file = std::fs::File::create(&log).expect("a log file");
        let err = file.try_clone().expect("a log file");
        let checkpoint = checkpoint_dir.display().to_string();
        let prefix = self.prefix();
        let child = Command::new(pipeline_bin())
            .arg("streaming")
            .args(["--kafka-bootstrap-servers", &self.kafka])
            .args(["--mongodb-uri", &self.mongo_uri])
            .args(["--postgres-url", &self.pg_url])
            .args(["--topic-prefix", &prefix])
            .args(["--group-id", &self.name])
            .args(["--mongodb-database", &self.name])
            .args(["--postgres-schema", &self.name])
            .args(["--checkpoint-dir", &checkpoint])
            .arg("--no-console")
            .args(extra)
            .env("RUST_LOG", "info")
            // As the Dockerfile sets it: at most two glibc malloc arenas.
            .env("MALLOC_ARENA_MAX", "2")
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("the pipeline binary starts");
        Job { child, log }
    }

    /// Whether the job's consumer group has committed every partition's end.
    fn caught_up(&self) -> bool {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.kafka)
            .set("group.id", &self.name)
            .create()
            .expect("a consumer");
        let mut tpl = TopicPartitionList::new();
        for t in Topic::ALL {
            for p in 0..PARTITIONS {
                tpl.add_partition(&format!("{}{}", self.prefix(), t.name()), p);
            }
        }
        let Ok(committed) = consumer.committed_offsets(tpl, Duration::from_secs(5)) else {
            return false;
        };
        committed.elements().iter().all(|e| {
            let Ok((_, hi)) =
                consumer.fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(5))
            else {
                return false;
            };
            matches!(e.offset(), Offset::Offset(o) if o >= hi)
        })
    }
}

/// Produces `records` on a thread of its own, paced `speed` times faster than their timestamps
/// from now on; librdkafka holds what it cannot send while Kafka is away.
pub(super) fn produce_paced(
    scope: &Scope,
    records: Vec<Rec>,
    speed: f64,
) -> std::thread::JoinHandle<()> {
    let kafka = scope.kafka.clone();
    let prefix = scope.prefix();
    std::thread::spawn(move || {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &kafka)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "600000")
            .create()
            .expect("a producer");
        let t0 = records.first().map_or(0, |r| r.ts);
        let start = Instant::now();
        for r in &records {
            let due = Duration::from_secs_f64((r.ts - t0).max(0) as f64 / 1000.0 / speed);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
            let topic = format!("{prefix}{}", r.topic.name());
            let mut record = BaseRecord::to(&topic)
                .key(&r.key)
                .payload(&r.value)
                .timestamp(r.ts);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        producer.poll(Duration::from_millis(10));
                        record = back;
                    }
                }
            }
            producer.poll(Duration::ZERO);
        }
        producer
            .flush(Duration::from_secs(300))
            .expect("Kafka acknowledged every record");
    })
}

/// The engine configuration of a paced stream through a service outage: a watermark delay of
/// `watermark_delay_ms` (records held back while a service is away arrive seconds apart, which is
/// minutes of event time at the stream's speed) and room for the windows it keeps open; written
/// to `file` for `--engine-config`. Returns it and the file's path as the argument.
pub(super) fn outage_engine(watermark_delay_ms: Millis, file: &Path) -> (EngineConfig, String) {
    let engine = EngineConfig {
        watermark_delay_ms,
        max_open_windows: 256,
        ..EngineConfig::default()
    };
    std::fs::write(
        file,
        format!(
            "watermark_delay_ms = {}\nmax_open_windows = {}\n",
            engine.watermark_delay_ms, engine.max_open_windows
        ),
    )
    .expect("the engine configuration is written");
    (engine, file.display().to_string())
}

pub(super) fn services_sh(args: &[&str]) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/services.sh");
    let status = Command::new("bash")
        .arg(&script)
        .args(args)
        .status()
        .expect("bash runs scripts/services.sh");
    assert!(status.success(), "services.sh {args:?} failed");
}

/// Reads both databases back and checks them against the in-memory engine.
async fn check_final(scope: &Scope, name: &str, want: &Expected) {
    let (mongo, pg) = scope.read_back().await;
    check(name, "MongoDB", &mongo, want);
    check(name, "PostgreSQL", &pg, want);
    assert_eq!(pg.archive, want.archive, "{name}: archive rows per topic");
}

// Proves SIGKILLs at several points of a catch-up — before the first checkpoint, and between
// later ones — followed each time by a restart on the same checkpoint folder, lose and
// duplicate nothing: the final rows, dead letters, late records and archive equal the
// in-memory engine's over the same records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the services"]
async fn faults_kills_lose_and_duplicate_nothing() {
    let scope = Scope::new("kills");
    let _one_at_a_time = SERIAL.lock().await;
    // A six-hour backlog (~285,000 records) on 4 partitions.
    let records = fault_stream(t0() - 240 * MINUTE_MS, 360);
    let want = expected(&records);
    scope.produce(&records).await;
    // Milliseconds after each start at which the job is killed. Checkpoints every half second
    // make the kills land between checkpoints, with writes in flight; each restart goes on from
    // the last checkpoint.
    // The first kill comes 1.5 s after the start, often before the first checkpoint; each later
    // one once the job has stored a checkpoint beyond the previous kill's, 300 ms after it, with
    // writes in flight. Checkpoints every half second; each restart goes on from the last one.
    let kills = 4;
    let mut last_summed = -1i64;
    for run in 0..kills {
        let mut job = scope.spawn_job(run, &["--checkpoint-interval-ms", "500"]);
        let started = Instant::now();
        if run == 0 {
            tokio::time::sleep(Duration::from_millis(1_500)).await;
        } else {
            while summed(&scope) <= last_summed && started.elapsed() < Duration::from_secs(60) {
                job.assert_running(&format!("before kill {run}"));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        job.assert_running(&format!("before kill {run}"));
        let at_kill = summed(&scope);
        job.child.kill().expect("SIGKILL");
        let _ = job.child.wait();
        last_summed = last_summed.max(at_kill);
        eprintln!(
            "kills: run {run} killed {} ms after its start; the checkpoint then covered {} of {} \
             records",
            started.elapsed().as_millis(),
            at_kill.max(0),
            records.len()
        );
    }
    let mut last = scope.spawn_job(kills, &["--idle-exit-ms", "3000"]);
    let status = last.wait(Duration::from_secs(600));
    assert!(
        status.success(),
        "the last run failed: {}",
        last.log.display()
    );
    eprintln!(
        "kills: {} records, {} late expected (the single-stream order's)",
        records.len(),
        want.late
    );
    check_final(&scope, "kills", &want).await;
    scope.cleanup().await;
}

// Proves the job lives through FerretDB, PostgreSQL and Kafka each stopped for 30 s while a
// paced stream flows: it never exits, it resumes when each service is back, and the final rows
// equal the in-memory engine's. Prints the job's peak RSS during each outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the services"]
async fn faults_service_outages_do_not_stop_the_job() {
    let scope = Scope::new("outages");
    let _one_at_a_time = SERIAL.lock().await;
    // 150 simulated minutes at 60x: 150 s of wall time, 792 records/s.
    let records = fault_stream(t0(), 150);
    // At 60x a wall second is a simulated minute, the default watermark delay: when Kafka comes
    // back, the partitions' held-back records arrive seconds apart, which is minutes of event
    // time, and records would be late by design, not by fault. A watermark delay of 90
    // simulated minutes (90 s of wall time) gives the outages the slack a 1-minute delay gives
    // a real-time stream.
    let (engine, engine_arg) = outage_engine(
        90 * MINUTE_MS,
        &scope.checkpoint_dir.with_extension("engine.toml"),
    );
    let want = expected_with(&records, &engine);
    scope.create_topics().await;
    let mut job = scope.spawn_job(0, &["--engine-config", &engine_arg]);
    let producer = produce_paced(&scope, records, 60.0);
    let outage = Duration::from_secs(30);
    let timeline = Instant::now();
    for (service, from_s) in [("ferretdb", 15u64), ("postgres", 55), ("kafka", 95)] {
        if let Some(left) = Duration::from_secs(from_s).checked_sub(timeline.elapsed()) {
            tokio::time::sleep(left).await;
        }
        job.assert_running(&format!("before {service} stopped"));
        services_sh(&["stop", service]);
        let down = Instant::now();
        let mut peak_kb = 0;
        while down.elapsed() < outage {
            tokio::time::sleep(Duration::from_millis(500)).await;
            job.assert_running(&format!("while {service} was down"));
            peak_kb = peak_kb.max(job.rss_kb().unwrap_or(0));
        }
        services_sh(&["start", service]);
        eprintln!(
            "outages: {service} down for {:.1} s; the job kept running, peak RSS {} kB",
            down.elapsed().as_secs_f64(),
            peak_kb
        );
    }
    producer.join().expect("the producer thread");
    let caught_up = Instant::now();
    while !scope.caught_up() {
        job.assert_running("while catching up");
        assert!(
            caught_up.elapsed() < Duration::from_secs(300),
            "the job did not catch up within 300 s; the job's last lines:\n{}",
            job.tail(40)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "outages: caught up {:.1} s after the last record was produced",
        caught_up.elapsed().as_secs_f64()
    );
    // A graceful stop, then a run that finds the input ended and flushes every window final.
    let _ = Command::new("kill")
        .args(["-TERM", &job.child.id().to_string()])
        .status();
    assert!(
        job.wait(Duration::from_secs(60)).success(),
        "the job stopped badly"
    );
    let mut last = scope.spawn_job(
        1,
        &["--idle-exit-ms", "3000", "--engine-config", &engine_arg],
    );
    assert!(last.wait(Duration::from_secs(300)).success());
    check_final(&scope, "outages", &want).await;
    scope.cleanup().await;
}

/// The peak RSS the flood test allows the job, kB: issue 11's target. Measured 53-57 MB (release
/// build, `MALLOC_ARENA_MAX=2` as the Dockerfile sets; 68-72 MB without it, before the sinks'
/// write path was cut).
const FLOOD_RSS_LIMIT_KB: u64 = 64 * 1024;

// Proves the key flood a new user sent (20,000 valid traffic readings in a minute, each naming a
// new zone and road), amid the city, neither stops the job nor blows its memory: it reads them
// from Kafka, dead-letters what is over its limits with the reason, its peak RSS stays within
// FLOOD_RSS_LIMIT_KB, and the final rows equal the in-memory engine's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the services"]
async fn faults_key_flood_keeps_memory_bounded() {
    let scope = Scope::new("flood");
    let _one_at_a_time = SERIAL.lock().await;
    let extra = format!(
        r#"
        [[hostile]]
        kind = "key_flood"
        at = "{}"
        duration_s = 60
        count = 20000
        "#,
        format_rfc3339(t0() + 5 * 60_000)
    );
    let records = stream(t0(), 20, &extra);
    let want = expected(&records);
    scope.produce(&records).await;
    let mut job = scope.spawn_job(0, &["--idle-exit-ms", "3000"]);
    let start = Instant::now();
    let mut peak_kb = 0;
    let status = loop {
        if let Ok(Some(status)) = job.child.try_wait() {
            break status;
        }
        peak_kb = peak_kb.max(job.rss_kb().unwrap_or(0));
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "the job did not finish within 600 s; log: {}",
            job.log.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "the job failed: {}", job.log.display());
    eprintln!(
        "flood: {} records ({} dead letters expected) in {:.1} s; peak RSS of pipeline \
         streaming {} kB",
        records.len(),
        want.dead_letters,
        start.elapsed().as_secs_f64(),
        peak_kb
    );
    assert!(
        peak_kb <= FLOOD_RSS_LIMIT_KB,
        "peak RSS {peak_kb} kB is above {FLOOD_RSS_LIMIT_KB} kB"
    );
    check_final(&scope, "flood", &want).await;
    scope.cleanup().await;
}
