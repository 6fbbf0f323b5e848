//! Scale-out on real Kafka (docs/scale-out.md): `pipeline streaming --scale-out` instances in
//! one consumer group, as processes of their own (the binary of [`super::faults`]), with a
//! paced stream. One instance, and three with the lease holder killed (SIGKILL) mid-run and a
//! fourth joining (configured differently: a bound of 12 bytes on strings, so the holder checks
//! its records again), each give the final rows of the in-memory engine over the same records —
//! so the same digest as each other and as the one-instance job of `end_to_end_matches_memory`.
//! Two instances with Kafka stopped for 10 s mid-stream give the in-memory engine's rows too.
//! Each run prints a line a second while it runs: stage 1's lag (input records not yet
//! forwarded and committed), the records stage 2 has yet to apply, and who holds the lease.

// These tests pace a producer and time processes by the wall clock, which the workspace bans
// elsewhere (clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::faults::{Job, fault_stream, outage_engine, produce_paced, services_sh};
use super::*;

/// Simulated minutes of the paced stream, and how much faster than real time it is produced.
const MINUTES: i64 = 20;
const SPEED: f64 = 30.0;

/// An instance: its job and where it serves `/metrics`.
struct Instance {
    job: Job,
    metrics: SocketAddr,
    name: String,
}

/// A free loopback address for an instance's `/metrics`.
fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("its address")
}

/// `GET path` on `addr`: the body, or nothing if it does not answer.
fn get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}

/// The sum of a metric's samples in a `/metrics` text (0 when it has none).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

impl Scope {
    /// An instance whose engine checks strings against a bound of 12 bytes instead of the
    /// default (docs/scale-out.md, "Instances configured differently"): every record its stage 1
    /// forwards carries another configuration's fingerprint, so the lease holder checks it again
    /// by its own configuration, and the final rows stay the holder's. Its checkpoint location
    /// is its own: an instance that finds a checkpoint checks with the checkpoint's
    /// configuration, whatever it was given, so a newcomer sharing the location would check as
    /// the holder does.
    fn spawn_uneven_instance(&self, name: &str) -> Instance {
        let config = self
            .checkpoint_dir
            .with_extension(format!("{name}.engine.toml"));
        std::fs::write(&config, "max_string_bytes = 12\n").expect("an engine configuration");
        let own = self
            .checkpoint_dir
            .with_extension(format!("{name}.checkpoint"));
        self.spawn_instance_at(
            name,
            &own,
            &["--engine-config", &config.display().to_string()],
        )
    }

    fn spawn_instance_at(&self, name: &str, checkpoint_dir: &Path, extra: &[&str]) -> Instance {
        let metrics = free_addr();
        let addr = metrics.to_string();
        let mut args = vec![
            "--scale-out",
            "--session-timeout-ms",
            "6000",
            "--idle-exit-ms",
            "5000",
            "--checkpoint-interval-ms",
            "1000",
            "--metrics-addr",
            &addr,
        ];
        args.extend_from_slice(extra);
        let job = self.spawn_job_at(name, checkpoint_dir, &args);
        Instance {
            job,
            metrics,
            name: name.to_owned(),
        }
    }

    /// Input records stage 1 has not forwarded and committed yet, over every input partition.
    fn stage1_lag(&self, consumer: &BaseConsumer) -> Option<i64> {
        let mut tpl = TopicPartitionList::new();
        for t in Topic::ALL {
            for p in 0..PARTITIONS {
                tpl.add_partition(&format!("{}{}", self.prefix(), t.name()), p);
            }
        }
        let committed = consumer
            .committed_offsets(tpl, Duration::from_secs(2))
            .ok()?;
        let mut lag = 0;
        for e in committed.elements() {
            let (low, hi) = consumer
                .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(2))
                .ok()?;
            let at = match e.offset() {
                Offset::Offset(o) => o,
                _ => low,
            };
            lag += (hi - at).max(0);
        }
        Some(lag)
    }

    /// Removes the checked topics and the lease topic the instances created.
    async fn cleanup_scaled(&self) {
        let mut names: Vec<String> = Topic::ALL
            .iter()
            .map(|t| format!("{}{}-checked", self.prefix(), t.name()))
            .collect();
        names.push(format!("{}pipeline-lease", self.prefix()));
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let _ = self
            .admin()
            .delete_topics(&refs, &AdminOptions::new())
            .await;
        self.cleanup().await;
    }
}

/// What happens to the instances during a run, seconds after the start.
enum Event {
    /// SIGKILL whichever instance holds the lease.
    KillHolder(u64),
    /// Start one more instance configured differently ([`Scope::spawn_uneven_instance`]), once
    /// an instance holds the lease: the lease stays with its holder while it lives, so the
    /// newcomer only checks and forwards.
    JoinUneven(u64),
    /// Stop Kafka at the first second for the second's seconds (`scripts/services.sh stop
    /// kafka`), then start it again: every instance's polls, commits and sends fail, and the
    /// groups' sessions expire.
    KafkaAway(u64, u64),
}

/// Runs `instances` scaled-out instances over `records`, paced, with `events`, until the lease
/// holder ends by itself at the end of the input; then stops the others and checks the final
/// rows against the in-memory engine's (`want`). Returns the stored rows' digest.
async fn scaled_run(
    test: &str,
    records: &[Rec],
    want: &Expected,
    instances: usize,
    events: &[Event],
    engine_config: Option<&str>,
) -> String {
    let scope = Scope::new(test);
    scope.create_topics().await;
    let extra: Vec<&str> = engine_config
        .map(|c| vec!["--engine-config", c])
        .unwrap_or_default();
    let mut running: Vec<Instance> = (0..instances)
        .map(|i| scope.spawn_instance_at(&format!("i{i}"), &scope.checkpoint_dir, &extra))
        .collect();
    let mut gone: Vec<Instance> = Vec::new();
    let producer = produce_paced(&scope, records.to_vec(), SPEED);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &scope.kafka)
        // Reads stage 1's committed offsets (it never joins the group).
        .set("group.id", &scope.name)
        .create()
        .expect("a consumer");
    let start = Instant::now();
    let mut next_event = 0;
    let mut last_line = Instant::now() - Duration::from_secs(1);
    let mut kills = 0;
    let mut peak_rebalances = 0.0;
    let mut peak_rechecked = 0.0;
    let mut curl_shown = false;
    let finished = loop {
        let t = start.elapsed();
        assert!(
            t < Duration::from_secs(300),
            "{test}: no instance ended by itself within 300 s"
        );
        // An instance that ended by itself: the holder at the end of the input.
        if let Some(i) = running
            .iter_mut()
            .position(|i| matches!(i.job.child.try_wait(), Ok(Some(_))))
        {
            break running.remove(i);
        }
        let scrapes: Vec<Option<String>> =
            running.iter().map(|i| get(i.metrics, "/metrics")).collect();
        let holder = scrapes.iter().position(|s| {
            s.as_ref()
                .is_some_and(|s| metric(s, "pipeline_lease_held") == 1.0)
        });
        match events.get(next_event) {
            Some(Event::KillHolder(at)) if t >= Duration::from_secs(*at) => {
                if let Some(h) = holder {
                    let mut victim = running.remove(h);
                    victim.job.child.kill().expect("SIGKILL");
                    let _ = victim.job.child.wait();
                    eprintln!(
                        "{test}: {:.1} s: killed the lease holder {} (SIGKILL)",
                        t.as_secs_f64(),
                        victim.name
                    );
                    kills += 1;
                    gone.push(victim);
                    next_event += 1;
                    continue;
                }
            }
            Some(Event::JoinUneven(at)) if t >= Duration::from_secs(*at) && holder.is_some() => {
                let name = format!("i{}", running.len() + gone.len());
                eprintln!(
                    "{test}: {:.1} s: instance {name} joins, configured differently \
                     (max_string_bytes = 12)",
                    t.as_secs_f64()
                );
                running.push(scope.spawn_uneven_instance(&name));
                next_event += 1;
                continue;
            }
            Some(Event::KafkaAway(at, secs)) if t >= Duration::from_secs(*at) => {
                services_sh(&["stop", "kafka"]);
                eprintln!("{test}: {:.1} s: Kafka stopped", t.as_secs_f64());
                let down = Instant::now();
                while down.elapsed() < Duration::from_secs(*secs) {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    for i in &mut running {
                        let when = format!("while Kafka was away ({test}, instance {})", i.name);
                        i.job.assert_running(&when);
                    }
                }
                services_sh(&["start", "kafka"]);
                eprintln!(
                    "{test}: {:.1} s: Kafka started again after {:.1} s away",
                    start.elapsed().as_secs_f64(),
                    down.elapsed().as_secs_f64()
                );
                next_event += 1;
                continue;
            }
            _ => {}
        }
        if last_line.elapsed() >= Duration::from_secs(1) {
            last_line = Instant::now();
            let stage2 = holder
                .and_then(|h| scrapes[h].as_ref())
                .map_or("-".to_owned(), |s| {
                    format!("{}", metric(s, "pipeline_consumer_lag_records"))
                });
            // A counter summed over the live instances.
            let total =
                |name: &str| -> f64 { scrapes.iter().flatten().map(|s| metric(s, name)).sum() };
            let rebalances = total("pipeline_rebalances_total");
            peak_rebalances = f64::max(peak_rebalances, rebalances);
            peak_rechecked = f64::max(peak_rechecked, total("pipeline_rechecked_records_total"));
            eprintln!(
                "{test}: {:5.1} s  stage-1 lag {:>6}  stage-2 lag {:>6}  lease {}  rebalances seen {}",
                t.as_secs_f64(),
                scope
                    .stage1_lag(&consumer)
                    .map_or("?".to_owned(), |l| l.to_string()),
                stage2,
                holder.map_or("none".to_owned(), |h| running[h].name.clone()),
                rebalances
            );
            if !curl_shown
                && t >= Duration::from_secs(8)
                && let Some(text) = holder.and_then(|h| scrapes[h].clone())
            {
                curl_shown = true;
                let shown: Vec<&str> = text
                    .lines()
                    .filter(|l| {
                        [
                            "pipeline_rebalances",
                            "pipeline_stage1_partitions",
                            "pipeline_forwarded",
                            "pipeline_lease",
                            "pipeline_records_accepted",
                            "pipeline_rows_total",
                            "pipeline_ready",
                        ]
                        .iter()
                        .any(|p| l.starts_with(p))
                    })
                    .collect();
                eprintln!(
                    "{test}: GET /metrics of the holder (some lines):\n{}",
                    shown.join("\n")
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let mut finished = finished;
    let status = finished.job.wait(Duration::from_secs(10));
    assert!(
        status.success(),
        "{test}: instance {} ended badly; its last lines:\n{}",
        finished.name,
        finished.job.tail(40)
    );
    producer.join().expect("the producer thread");
    eprintln!(
        "{test}: instance {} ended by itself at the end of the input after {:.1} s",
        finished.name,
        start.elapsed().as_secs_f64()
    );
    for mut i in running {
        let _ = Command::new("kill")
            .args(["-TERM", &i.job.child.id().to_string()])
            .status();
        let status = i.job.wait(Duration::from_secs(120));
        assert!(
            status.success(),
            "{test}: instance {} stopped badly; its last lines:\n{}",
            i.name,
            i.job.tail(40)
        );
    }
    assert_eq!(
        kills,
        events
            .iter()
            .filter(|e| matches!(e, Event::KillHolder(_)))
            .count(),
        "{test}: every kill happened"
    );
    let (mongo, pg) = scope.read_back().await;
    eprintln!(
        "{test}: {} instances at the start, {kills} killed: MongoDB digest {}, PostgreSQL \
         digest {}, in-memory engine {}; {} rebalances counted by the live instances at most",
        instances,
        mongo.digest.hex(),
        pg.digest.hex(),
        want.digest.hex(),
        peak_rebalances
    );
    if events.iter().any(|e| matches!(e, Event::JoinUneven(_))) {
        assert!(
            peak_rechecked > 0.0,
            "{test}: the lease holder checked none of the differently configured instance's \
             records again (pipeline_rechecked_records_total stayed 0)"
        );
        eprintln!(
            "{test}: the lease holder checked {peak_rechecked} records again (forwarded by the \
             differently configured instance), as late as its last scrape"
        );
    }
    check(test, "MongoDB", &mongo, want);
    check(test, "PostgreSQL", &pg, want);
    assert_eq!(pg.archive, want.archive, "{test}: archive rows per topic");
    scope.cleanup_scaled().await;
    mongo.digest.hex()
}

// Proves scaled-out instances give the in-memory engine's final rows on one stream: one instance
// (stage 1 and stage 2 in one process, through the checked topics), and three with the lease
// holder killed with SIGKILL mid-run and a fourth joining later, configured differently (its
// records are checked again by the holder) — the same digest, nothing lost, nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the services"]
async fn scale_out_one_and_three_instances_agree() {
    let _one_at_a_time = SERIAL.lock().await;
    let records = fault_stream(t0(), MINUTES);
    let want = expected(&records);
    let one = scaled_run("scale1", &records, &want, 1, &[], None).await;
    let three = scaled_run(
        "scale3",
        &records,
        &want,
        3,
        &[Event::KillHolder(15), Event::JoinUneven(25)],
        None,
    )
    .await;
    assert_eq!(one, three, "1 and 3 instances store the same final rows");
    eprintln!("scale-out: 1 instance and 3 (a kill, a join) both store digest {one}");
}

// Proves two scaled-out instances live through Kafka stopped for 10 s mid-stream: every poll,
// send and commit fails, both groups' sessions expire, stage 1's commits are lost and owed
// again, the lease is taken anew; the instances never exit, and the final rows are the
// in-memory engine's. The watermark delay is 30 simulated minutes (a minute of wall time at
// 30x): records the producer held back during the outage reach Kafka seconds apart, which is
// minutes of event time, and would otherwise be late by design, not by fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the services"]
async fn scale_out_lives_through_a_kafka_outage() {
    let _one_at_a_time = SERIAL.lock().await;
    let records = fault_stream(t0(), MINUTES);
    let file =
        std::env::temp_dir().join(format!("scale_outage-{}.engine.toml", std::process::id()));
    let (engine, config) = outage_engine(30 * MINUTE_MS, &file);
    let want = expected_with(&records, &engine);
    scaled_run(
        "scale_outage",
        &records,
        &want,
        2,
        &[Event::KafkaAway(12, 10)],
        Some(&config),
    )
    .await;
    let _ = std::fs::remove_file(&file);
}
