//! `simulator bench --backend services`: the end-to-end benchmark of the production job on real
//! Kafka, MongoDB (FerretDB here) and PostgreSQL, with the broker on the same machine.
//!
//! - **Sustainable throughput**: the highest load factor (more devices, produced in real time,
//!   not a faster replay clock) at which the job's consumer lag does not grow over a measurement
//!   window (60 s by default, after a warm-up). Each step gets fresh topics, database, schema and
//!   checkpoint; the job is the `pipeline streaming` binary as users run it, its lag read from its
//!   own `/metrics` (`pipeline_consumer_lag_records`, end less next offset to process) once a
//!   second, its peak RSS and CPU from `/proc`. The producer paces every record at its intended
//!   produce time; a step whose producer fell behind did not offer its load, and counts as not
//!   sustained (the machine, broker included, could not carry it).
//! - **Latency** at thesis load and at 10x, in real time: the scenario's services backend at
//!   speed 1, so each alert's latency runs from the instant its record was due to be produced
//!   (no coordinated omission) to its row acknowledged by MongoDB, and each window's from the
//!   watermark passing its end to its final row durable in both stores.
//! - **Catch-up**: a backlog of `catch_up_hours` of the city, produced as fast as possible, then
//!   consumed by the job from the start to its idle exit: wall time, records/s, peak RSS.
//!
//! Load steps: 1x and 10x, then x4 until a step fails (or `max_load`), then three bisections
//! between the last sustained and the first failed load. The city at a load factor has that many
//! times the thesis devices on the same network; the job's device bounds are raised to fit them
//! (`--engine-config`), so every record is processed, none dead-lettered.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use generator::{Generator, GeneratorConfig};
use pipeline::time::format_rfc3339;
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use serde::Serialize;

use crate::SimError;
use crate::scenario::{Backend, Scenario};
use crate::services::{self, Addresses, Corner};
use crate::wallclock::{Stopwatch, epoch_ms};

/// Linux's `USER_HZ`: the unit of the CPU times in `/proc/<pid>/stat`.
const CLOCK_TICKS_PER_S: f64 = 100.0;

/// How the benchmark runs.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// The `pipeline` binary (built with `--features services`).
    pub pipeline_bin: PathBuf,
    /// Seconds of each load step before the measurement window.
    pub warmup_s: u64,
    /// Seconds over which the lag must not grow.
    pub window_s: u64,
    /// Load factors to measure instead of the search.
    pub loads: Vec<u32>,
    /// The search stops at this load factor.
    pub max_load: u32,
    /// Seconds of each real-time latency run (thesis load and 10x); 0 skips them.
    pub latency_s: u64,
    /// Hours of the city in the catch-up backlog; 0 skips it.
    pub catch_up_hours: u64,
    /// Partitions of every topic.
    pub partitions: i32,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            pipeline_bin: PathBuf::from("pipeline"),
            warmup_s: 20,
            window_s: 60,
            loads: Vec::new(),
            max_load: generator::MAX_LOAD_FACTOR,
            latency_s: 300,
            catch_up_hours: 24,
            partitions: 4,
        }
    }
}

/// One load step.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    /// Devices of every kind, times the thesis city's.
    pub load_factor: u32,
    /// Records the generator was due to produce per second in the window.
    pub offered_per_s: f64,
    /// Records the producer sent per second of the step (equal to `offered_per_s` when it sent
    /// them all; `producer_behind_ms` says whether on time).
    pub produced_per_s: f64,
    /// How far behind its schedule the producer was at the end, ms.
    pub producer_behind_ms: i64,
    /// Mean lag over the first 10 s of the window, records.
    pub lag_start: f64,
    /// Mean lag over the last 10 s of the window, records.
    pub lag_end: f64,
    /// Least-squares slope of the lag over the window, records per second.
    pub lag_slope_per_s: f64,
    /// The producer kept its schedule and the lag grew by less than 2 s of input.
    pub sustained: bool,
    /// Records the engine accepted by the end of the step (the job's `/metrics`).
    pub accepted: u64,
    /// Records dead-lettered by then (0 for the generated city within the raised bounds).
    pub dead_letters: u64,
    /// The job's peak resident memory, kB.
    pub peak_rss_kb: u64,
    /// The job's CPU time over the step's wall time, percent of one core.
    pub cpu_percent: f64,
    /// The whole machine's busy CPU over the step (job, producer, broker, databases), percent of
    /// one core: 100 x the cores when every core was busy.
    pub machine_cpu_percent: f64,
    /// (seconds since the step started, lag) once a second.
    pub lag: Vec<(f64, u64)>,
}

/// One real-time latency run.
#[derive(Clone, Debug, Serialize)]
pub struct LatencyRun {
    /// Devices of every kind, times the thesis city's.
    pub load_factor: u32,
    /// Records produced.
    pub records: u64,
    /// Produce time of a record -> its alert row durable.
    pub alert: pipeline::stats::Percentiles,
    /// Watermark passes a window's end -> its final row durable.
    pub window: pipeline::stats::Percentiles,
    /// Every expectation of the run held (every record reached the engine, both stores agree,
    /// the job kept up).
    pub passed: bool,
}

/// The catch-up of a backlog.
#[derive(Clone, Debug, Serialize)]
pub struct CatchUp {
    /// Hours of the city.
    pub hours: u64,
    /// Records in the backlog.
    pub records: u64,
    /// From the job's start to its idle exit, seconds (the idle wait taken off).
    pub wall_s: f64,
    /// Records per second.
    pub records_per_s: f64,
    /// The job's peak resident memory, kB.
    pub peak_rss_kb: u64,
}

/// Everything the benchmark measured.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// Load steps in the order run.
    pub steps: Vec<Step>,
    /// The highest sustained load factor.
    pub sustained_load: Option<u32>,
    /// Its offered records per second.
    pub sustained_records_per_s: Option<f64>,
    /// Real-time latency at thesis load and at 10x.
    pub latency: Vec<LatencyRun>,
    /// The backlog's catch-up.
    pub catch_up: Option<CatchUp>,
    /// Cores of the machine.
    pub cores: usize,
    /// When it ran.
    pub date: String,
}

fn failed(what: impl std::fmt::Display) -> SimError {
    SimError::Backend(format!("bench: {what}"))
}

/// Runs the whole benchmark against the services at `addresses`; `say` gets a line per step.
pub fn run(
    addresses: &Addresses,
    options: &BenchOptions,
    say: &mut dyn FnMut(&str),
) -> Result<BenchReport, SimError> {
    if !options.pipeline_bin.exists() {
        return Err(failed(format!(
            "no pipeline binary at {}: build it with `cargo build --release -p pipeline \
             --features services` or pass --pipeline-bin",
            options.pipeline_bin.display()
        )));
    }
    let mut latency = Vec::new();
    if options.latency_s > 0 {
        for load in [1, 10] {
            say(&format!(
                "latency at {load}x: {} s of the city in real time",
                options.latency_s
            ));
            let run = latency_run(load, options.latency_s)?;
            say(&format!(
                "  alerts p50 {:.1} p99 {:.1} ms ({}), windows p50 {:.1} p99 {:.1} ms ({})",
                run.alert.p50_ms,
                run.alert.p99_ms,
                run.alert.count,
                run.window.p50_ms,
                run.window.p99_ms,
                run.window.count
            ));
            latency.push(run);
        }
    }
    let mut steps: Vec<Step> = Vec::new();
    let mut step = |load: u32, say: &mut dyn FnMut(&str)| -> Result<bool, SimError> {
        say(&format!(
            "load {load}x: warm-up {} s, window {} s",
            options.warmup_s, options.window_s
        ));
        let s = load_step(addresses, options, load)?;
        say(&format!(
            "  offered {:.0}/s, produced {:.0}/s (behind {} ms), lag {:.0} -> {:.0} (slope {:.1}/s), \
             accepted {}, dead letters {}, RSS {:.1} MB, CPU {:.0} % (machine {:.0} %): {}",
            s.offered_per_s,
            s.produced_per_s,
            s.producer_behind_ms,
            s.lag_start,
            s.lag_end,
            s.lag_slope_per_s,
            s.accepted,
            s.dead_letters,
            s.peak_rss_kb as f64 / 1024.0,
            s.cpu_percent,
            s.machine_cpu_percent,
            if s.sustained {
                "sustained"
            } else {
                "NOT sustained"
            }
        ));
        let ok = s.sustained;
        steps.push(s);
        Ok(ok)
    };
    if options.loads.is_empty() {
        let mut good = None;
        let mut bad = None;
        for load in [1, 10] {
            if step(load, say)? {
                good = Some(load);
            } else {
                bad = Some(load);
                break;
            }
        }
        let mut load = 40;
        while bad.is_none() && load <= options.max_load {
            if step(load, say)? {
                good = Some(load);
                load *= 4;
            } else {
                bad = Some(load);
            }
        }
        if let (Some(mut lo), Some(mut hi)) = (good, bad) {
            for _ in 0..3 {
                let mid = (lo + hi) / 2;
                if mid == lo || mid == hi {
                    break;
                }
                if step(mid, say)? {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
        }
    } else {
        for &load in &options.loads {
            step(load, say)?;
        }
    }
    let best = steps
        .iter()
        .filter(|s| s.sustained)
        .max_by_key(|s| s.load_factor);
    let catch_up = if options.catch_up_hours > 0 {
        say(&format!("catch-up: a {} h backlog", options.catch_up_hours));
        let c = catch_up(addresses, options)?;
        say(&format!(
            "  {} records in {:.1} s: {:.0} records/s, RSS {:.1} MB",
            c.records,
            c.wall_s,
            c.records_per_s,
            c.peak_rss_kb as f64 / 1024.0
        ));
        Some(c)
    } else {
        None
    };
    Ok(BenchReport {
        sustained_load: best.map(|s| s.load_factor),
        sustained_records_per_s: best.map(|s| s.offered_per_s),
        steps,
        latency,
        catch_up,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        date: format_rfc3339(epoch_ms()),
    })
}

/// The thesis city at `load` in real time for `seconds`, through the scenario services backend.
fn latency_run(load: u32, seconds: u64) -> Result<LatencyRun, SimError> {
    // Whole seconds from now, so the Kafka timestamps are recent (the broker keeps a day).
    let start = format_rfc3339((epoch_ms() / 1000 + 2) * 1000);
    let text = format!(
        "name = \"bench_latency_{load}x\"\n\
         description = \"The thesis city at {load}x in real time (simulator bench).\"\n\
         seed = 42\n\
         start = \"{start}\"\n\
         duration = \"{seconds}s\"\n\
         [generator]\n\
         load_factor = {load}\n"
    );
    let path = Path::new("bench-latency.toml");
    let scenario = Scenario::parse(&text, path).map_err(SimError::from)?;
    let options = crate::RunOptions {
        backend: Some(Backend::Services),
        speed: Some(1.0),
        ..Default::default()
    };
    let report = crate::run_scenario(&scenario, path, &options, &mut |_, _| {})?;
    Ok(LatencyRun {
        load_factor: load,
        records: report.offered.values().sum(),
        alert: report.latency.alert,
        window: report.latency.window,
        passed: report.passed,
    })
}

/// The running job and where its metrics are.
struct Job {
    child: Child,
    metrics: String,
}

impl Drop for Job {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port for the job's metrics.
fn free_port() -> Result<u16, SimError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(failed)?;
    Ok(l.local_addr().map_err(failed)?.port())
}

/// The engine's device bounds raised to fit `load` times the thesis city's devices (its default
/// bounds hold 4,096 devices a topic: the city at about 120x); every other setting the default.
fn engine_config(corner: &Corner, load: u32) -> Result<PathBuf, SimError> {
    let devices = (40 * load as usize).max(4096);
    let text = format!(
        "max_devices_per_topic = {devices}\n\
         max_vehicles_per_window = {devices}\n\
         max_interned_strings = {}\n",
        16_384 + devices
    );
    let path = corner.checkpoint_dir.with_extension("engine.toml");
    std::fs::write(&path, text)
        .map_err(|e| failed(format!("cannot write {}: {e}", path.display())))?;
    Ok(path)
}

fn spawn_job(
    options: &BenchOptions,
    addresses: &Addresses,
    corner: &Corner,
    load: u32,
    extra: &[&str],
) -> Result<Job, SimError> {
    let metrics = format!("127.0.0.1:{}", free_port()?);
    let checkpoint = corner.checkpoint_dir.display().to_string();
    let engine = engine_config(corner, load)?;
    let child = Command::new(&options.pipeline_bin)
        .arg("streaming")
        .args(["--kafka-bootstrap-servers", &addresses.kafka])
        .args(["--mongodb-uri", &addresses.mongodb_uri])
        .args(["--postgres-url", &addresses.postgres_url])
        .args(["--topic-prefix", &corner.prefix()])
        .args(["--group-id", &corner.name])
        .args(["--mongodb-database", &corner.name])
        .args(["--postgres-schema", &corner.name])
        .args(["--checkpoint-dir", &checkpoint])
        .args(["--metrics-addr", &metrics])
        .arg("--engine-config")
        .arg(&engine)
        .arg("--no-console")
        .args(extra)
        // As the Dockerfile sets it: at most two glibc malloc arenas.
        .env("MALLOC_ARENA_MAX", "2")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            failed(format!(
                "cannot start {}: {e}",
                options.pipeline_bin.display()
            ))
        })?;
    Ok(Job { child, metrics })
}

/// `GET /metrics` of the job: the text, or `None` while it does not answer.
fn scrape(addr: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    // `HTTP/1.x 200 OK`: the status is the second word of the first line.
    (head.split_whitespace().nth(1) == Some("200")).then(|| body.to_owned())
}

/// The sum of one metric family's samples over their labels (`name{...} value` or `name value`
/// lines); `None` when the family has no sample (the lag, while no partition's end is known).
fn family_sum(metrics: &str, name: &str) -> Option<u64> {
    let values: Vec<f64> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix(name))
        .filter(|rest| rest.starts_with('{') || rest.starts_with(' '))
        .filter_map(|rest| rest.rsplit_once(' ')?.1.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() as u64)
}

/// The machine's (busy, total) CPU ticks over all cores, from the first line of `/proc/stat`.
fn machine_ticks() -> Option<(u64, u64)> {
    parse_cpu_line(std::fs::read_to_string("/proc/stat").ok()?.lines().next()?)
}

/// `cpu  user nice system idle iowait irq softirq steal ...`: busy is all but idle and iowait.
fn parse_cpu_line(line: &str) -> Option<(u64, u64)> {
    let ticks: Vec<u64> = line
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Busy CPU between two readings of [`machine_ticks`], percent of one core.
fn busy_percent(from: Option<(u64, u64)>, to: Option<(u64, u64)>) -> f64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    match (from, to) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
            100.0 * cores * (b1 - b0) as f64 / (t1 - t0) as f64
        }
        _ => 0.0,
    }
}

/// Peak RSS (kB) and CPU time (s) of a process.
fn usage(pid: u32) -> Option<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some((hwm, ticks / CLOCK_TICKS_PER_S))
}

fn wait_for_metrics(job: &mut Job) -> Result<(), SimError> {
    let watch = Stopwatch::start();
    while watch.elapsed().as_secs_f64() < 60.0 {
        if let Ok(Some(status)) = job.child.try_wait() {
            return Err(failed(format!("the job exited at start: {status}")));
        }
        if scrape(&job.metrics).is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(failed("the job's /metrics did not answer within 60 s"))
}

fn producer(
    addresses: &Addresses,
) -> Result<ThreadedProducer<rdkafka::producer::DefaultProducerContext>, SimError> {
    ClientConfig::new()
        .set("bootstrap.servers", &addresses.kafka)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .map_err(|e| failed(format!("cannot create a Kafka producer: {e}")))
}

/// Sends every record of `generator` to the corner's topics: at its produce time on the wall
/// clock (`paced`, the generator's start mapped to `wall0`) or as fast as possible. Returns the
/// records sent; `behind` holds how late the last record went, ms.
fn produce(
    addresses: &Addresses,
    corner: &Corner,
    generator: &Generator,
    paced: Option<i64>,
    sent: &AtomicU64,
    behind: &AtomicI64,
    stop: &AtomicBool,
) -> Result<(), SimError> {
    let producer = producer(addresses)?;
    let prefix = corner.prefix();
    let names: Vec<String> = pipeline::model::Topic::ALL
        .iter()
        .map(|t| format!("{prefix}{}", t.name()))
        .collect();
    let start = generator.start_ms();
    let mut value = Vec::with_capacity(512);
    for record in generator.records() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if let Some(wall0) = paced {
            let due = wall0 + (record.produce_time_ms - start);
            let ahead = due - epoch_ms();
            if ahead > 0 {
                std::thread::sleep(Duration::from_millis(ahead as u64));
            } else {
                behind.store(-ahead, Ordering::Relaxed);
            }
        }
        value.clear();
        record.write_value(&mut value);
        let i = pipeline::model::Topic::ALL
            .iter()
            .position(|t| *t == record.topic)
            .unwrap_or(0);
        let message = BaseRecord::to(&names[i])
            .key(record.key.as_bytes())
            .payload(&value[..])
            .timestamp(record.produce_time_ms);
        services::send_waiting(&producer, message)
            .map_err(|e| failed(format!("cannot produce: {e}")))?;
        sent.fetch_add(1, Ordering::Relaxed);
    }
    producer
        .flush(Duration::from_secs(60))
        .map_err(|e| failed(format!("Kafka did not acknowledge every record: {e}")))
}

fn city(load: u32, start_ms: i64, duration_s: u64) -> Result<Generator, SimError> {
    let config = GeneratorConfig {
        start: format_rfc3339(start_ms),
        duration_s,
        load_factor: load,
        ..GeneratorConfig::default()
    };
    Generator::new(&config, 42).map_err(failed)
}

/// Fresh topics, database and schema for a step; removed by [`Scoped`]'s drop.
struct Scoped<'a> {
    addresses: &'a Addresses,
    corner: Corner,
    runtime: tokio::runtime::Runtime,
}

impl<'a> Scoped<'a> {
    fn new(addresses: &'a Addresses, name: &str, partitions: i32) -> Result<Self, SimError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(failed)?;
        let corner = Corner::new(name, 0);
        runtime.block_on(services::create_topics(addresses, &corner, partitions))?;
        Ok(Scoped {
            addresses,
            corner,
            runtime,
        })
    }
}

impl Drop for Scoped<'_> {
    fn drop(&mut self) {
        self.runtime
            .block_on(services::clean_up(self.addresses, &self.corner));
    }
}

/// One load step: the job started on fresh topics, the city at `load` produced in real time for
/// the warm-up and the window, the lag sampled once a second.
fn load_step(addresses: &Addresses, options: &BenchOptions, load: u32) -> Result<Step, SimError> {
    let scope = Scoped::new(addresses, &format!("bench_{load}x"), options.partitions)?;
    let mut job = spawn_job(options, addresses, &scope.corner, load, &[])?;
    wait_for_metrics(&mut job)?;
    let total_s = options.warmup_s + options.window_s;
    let wall0 = (epoch_ms() / 1000 + 1) * 1000;
    let generator = city(load, wall0, total_s)?;
    let offered_per_s = generator.records().count() as f64 / total_s as f64;
    let sent = AtomicU64::new(0);
    let behind = AtomicI64::new(0);
    let stop = AtomicBool::new(false);
    let cpu0 = usage(job.child.id()).map_or(0.0, |u| u.1);
    let machine0 = machine_ticks();
    let watch = Stopwatch::start();
    let mut lag = Vec::new();
    let mut peak_rss_kb = 0;
    let mut cpu_s = 0.0;
    std::thread::scope(|s| -> Result<(), SimError> {
        let producing = s.spawn(|| {
            produce(
                addresses,
                &scope.corner,
                &generator,
                Some(wall0),
                &sent,
                &behind,
                &stop,
            )
        });
        let mut next = 1.0;
        while !producing.is_finished() {
            let t = watch.elapsed().as_secs_f64();
            if t >= next {
                next += 1.0;
                let metrics = scrape(&job.metrics);
                if let Some(l) = metrics
                    .as_deref()
                    .and_then(|m| family_sum(m, "pipeline_consumer_lag_records"))
                {
                    lag.push((t, l));
                }
                if let Some((rss, cpu)) = usage(job.child.id()) {
                    peak_rss_kb = rss;
                    cpu_s = cpu - cpu0;
                }
            }
            if let Ok(Some(status)) = job.child.try_wait() {
                stop.store(true, Ordering::Relaxed);
                let _ = producing.join();
                return Err(failed(format!(
                    "the job exited during load {load}x: {status}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        producing
            .join()
            .map_err(|_| failed("the producer panicked"))?
    })?;
    let wall_s = watch.elapsed().as_secs_f64();
    let last = scrape(&job.metrics).unwrap_or_default();
    let accepted = family_sum(&last, "pipeline_records_accepted_total").unwrap_or(0);
    let dead_letters = family_sum(&last, "pipeline_dead_letters_total").unwrap_or(0);
    let from = options.warmup_s as f64 + 1.0;
    let to = total_s as f64 + 1.0;
    let window: Vec<(f64, f64)> = lag
        .iter()
        .filter(|(t, _)| (from..=to).contains(t))
        .map(|&(t, l)| (t, l as f64))
        .collect();
    let mean = |xs: &[(f64, f64)]| xs.iter().map(|x| x.1).sum::<f64>() / xs.len().max(1) as f64;
    let head: Vec<(f64, f64)> = window
        .iter()
        .copied()
        .filter(|x| x.0 < from + 10.0)
        .collect();
    let tail: Vec<(f64, f64)> = window.iter().copied().filter(|x| x.0 > to - 10.0).collect();
    let (lag_start, lag_end) = (mean(&head), mean(&tail));
    let producer_behind_ms = behind.load(Ordering::Relaxed);
    let sustained = window.len() as u64 >= options.window_s / 2
        && producer_behind_ms < 1_000
        && lag_end - lag_start < 2.0 * offered_per_s;
    Ok(Step {
        load_factor: load,
        offered_per_s,
        produced_per_s: sent.load(Ordering::Relaxed) as f64 / total_s as f64,
        producer_behind_ms,
        lag_start,
        lag_end,
        lag_slope_per_s: slope(&window),
        sustained,
        accepted,
        dead_letters,
        peak_rss_kb,
        cpu_percent: 100.0 * cpu_s / wall_s.max(1.0),
        machine_cpu_percent: busy_percent(machine0, machine_ticks()),
        lag,
    })
}

/// Least-squares slope of `y` over `x`.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

/// The catch-up of a backlog: produced first, then consumed by the job to its idle exit.
fn catch_up(addresses: &Addresses, options: &BenchOptions) -> Result<CatchUp, SimError> {
    const IDLE_EXIT_MS: u64 = 3_000;
    let hours = options.catch_up_hours;
    let scope = Scoped::new(addresses, "bench_catch_up", options.partitions)?;
    // The backlog ends a minute before now: recent enough for the broker's retention.
    let start = (epoch_ms() / 1000 - 60 - 3600 * hours as i64) * 1000;
    let generator = city(1, start, 3600 * hours)?;
    let sent = AtomicU64::new(0);
    produce(
        addresses,
        &scope.corner,
        &generator,
        None,
        &sent,
        &AtomicI64::new(0),
        &AtomicBool::new(false),
    )?;
    let records = sent.load(Ordering::Relaxed);
    let idle = IDLE_EXIT_MS.to_string();
    let mut job = spawn_job(
        options,
        addresses,
        &scope.corner,
        1,
        &["--idle-exit-ms", &idle],
    )?;
    let watch = Stopwatch::start();
    let mut peak_rss_kb = 0;
    let status = loop {
        if let Some((rss, _)) = usage(job.child.id()) {
            peak_rss_kb = rss;
        }
        if let Some(status) = job.child.try_wait().map_err(failed)? {
            break status;
        }
        if watch.elapsed().as_secs_f64() > 1_800.0 {
            return Err(failed("the catch-up took over 30 minutes"));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if !status.success() {
        return Err(failed(format!("the catch-up job failed: {status}")));
    }
    let wall_s = (watch.elapsed().as_secs_f64() - IDLE_EXIT_MS as f64 / 1000.0).max(0.001);
    Ok(CatchUp {
        hours,
        records,
        wall_s,
        records_per_s: records as f64 / wall_s,
        peak_rss_kb,
    })
}

impl BenchReport {
    /// The tables printed at the end.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "simulator bench, {} ({} cores; Kafka, FerretDB and PostgreSQL on the same machine)\n",
            self.date, self.cores
        ));
        out.push_str(
            "load  offered/s  produced/s  behind ms  lag start -> end  slope/s  dead letters  RSS MB  CPU %  machine %  sustained\n",
        );
        for s in &self.steps {
            out.push_str(&format!(
                "{:>4}x {:>10.0} {:>11.0} {:>10} {:>9.0} -> {:<6.0} {:>8.1} {:>13} {:>7.1} {:>6.0} {:>10.0}  {}\n",
                s.load_factor,
                s.offered_per_s,
                s.produced_per_s,
                s.producer_behind_ms,
                s.lag_start,
                s.lag_end,
                s.lag_slope_per_s,
                s.dead_letters,
                s.peak_rss_kb as f64 / 1024.0,
                s.cpu_percent,
                s.machine_cpu_percent,
                if s.sustained { "yes" } else { "no" }
            ));
        }
        match (self.sustained_load, self.sustained_records_per_s) {
            (Some(l), Some(r)) => {
                out.push_str(&format!("sustainable throughput: {l}x, {r:.0} records/s\n"))
            }
            _ => out.push_str("sustainable throughput: no load step was sustained\n"),
        }
        if !self.latency.is_empty() {
            out.push_str("latency, real time (ms)     n      p50      p95      p99      max\n");
            for l in &self.latency {
                for (what, p) in [("alerts", &l.alert), ("windows", &l.window)] {
                    out.push_str(&format!(
                        "  {:>3}x {:<16} {:>6} {:>8.1} {:>8.1} {:>8.1} {:>8.1}\n",
                        l.load_factor, what, p.count, p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms
                    ));
                }
            }
        }
        if let Some(c) = &self.catch_up {
            out.push_str(&format!(
                "catch-up of {} h ({} records): {:.1} s, {:.0} records/s, peak RSS {:.1} MB\n",
                c.hours,
                c.records,
                c.wall_s,
                c.records_per_s,
                c.peak_rss_kb as f64 / 1024.0
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a family is summed over its labels (the lag over the partitions), absent until it
    // has a sample, and never taken for a family whose name it only begins.
    #[test]
    fn lag_sums_the_partitions() {
        let text = "# HELP x\npipeline_consumer_lag_records{topic=\"traffic-sensors\",partition=\"0\"} 12\n\
                    pipeline_consumer_lag_records{topic=\"parking\",partition=\"1\"} 30\n\
                    pipeline_records_in_total{topic=\"parking\",partition=\"1\"} 99\n";
        let lag = "pipeline_consumer_lag_records";
        assert_eq!(family_sum(text, lag), Some(42));
        assert_eq!(family_sum("pipeline_records_in_total 3\n", lag), None);
        assert_eq!(family_sum(text, "pipeline_records_in_total"), Some(99));
        assert_eq!(family_sum(text, "pipeline_records_in"), None);
    }

    // Proves the machine's busy ticks leave out idle and iowait, and the busy share over two
    // readings is in percent of one core (2 cores both busy half the time: 100 %).
    #[test]
    fn machine_cpu_from_proc_stat() {
        let line = "cpu  100 5 50 800 40 3 2 0 0 0";
        assert_eq!(parse_cpu_line(line), Some((160, 1000)));
        assert_eq!(parse_cpu_line("intr 1 2 3"), None);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let p = busy_percent(Some((0, 0)), Some((500, 1000)));
        assert!((p - 50.0 * cores).abs() < 1e-9, "{p}");
        assert_eq!(busy_percent(None, Some((1, 2))), 0.0);
    }

    // Proves the slope is the least-squares one: a lag growing 5 records a second, with noise
    // that cancels, has slope 5; a flat one 0.
    #[test]
    fn slope_is_least_squares() {
        let growing: Vec<(f64, f64)> = (0..10)
            .map(|i| {
                (
                    i as f64,
                    5.0 * i as f64 + if i % 2 == 0 { 1.0 } else { -1.0 },
                )
            })
            .collect();
        assert!((slope(&growing) - 5.0).abs() < 0.3, "{}", slope(&growing));
        assert_eq!(slope(&[(0.0, 7.0), (1.0, 7.0), (2.0, 7.0)]), 0.0);
        assert_eq!(slope(&[(0.0, 7.0)]), 0.0);
    }
}
