//! `/metrics`, `/healthz` and `/readyz` of `pipeline streaming`, served over HTTP/1 by hyper on
//! `--metrics-addr` (off unless asked for).
//!
//! The registry holds one collector that encodes the [`StatusBoard`]'s last snapshot at each
//! scrape with `prometheus-client`'s OpenMetrics text encoder: counters and gauges from the
//! driver's and the engine's stats, histograms from the job's bounded latency histograms
//! ([`crate::stats::Histogram`]) re-bucketed at [`LATENCY_BOUNDS_US`]. A scrape never reaches
//! the driver; it reads what the job's loop published, so serving cannot slow the job down or
//! change what it does.
//!
//! `/healthz` answers 200 while the process runs; `/readyz` 200 only when
//! [`StatusBoard::readiness`] holds, else 503 with the reason on one line.

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::driver::{Lane, PartitionStatus};
use crate::engine::Query;
use crate::stats::Histogram;

use super::status::{JobStatus, ScaleStatus, StatusBoard};

/// Upper bounds of the latency histograms' buckets, microseconds (1 ms to 60 s).
pub const LATENCY_BOUNDS_US: [u64; 15] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

/// Most connections served at once; the next waits for one to close.
const MAX_CONNECTIONS: usize = 32;

/// A client must send its request's head within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// The registry of the job: one collector over the board.
pub fn registry(board: StatusBoard) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(JobCollector { board }));
    registry
}

/// The OpenMetrics text of the registry.
pub fn encode(registry: &Registry) -> Result<String, fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}

/// Encodes the board's snapshot at each scrape.
#[derive(Debug)]
struct JobCollector {
    board: StatusBoard,
}

impl Collector for JobCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let stage2 = self.board.read(|s| {
            encode_status(s, &mut encoder)?;
            Ok::<_, fmt::Error>((s.forwarded_twice, s.counters.rechecked))
        })?;
        match self.board.scale() {
            Some(scale) => encode_scale(&scale, stage2, &mut encoder),
            None => Ok(()),
        }
    }
}

/// A scale-out instance's stages (docs/scale-out.md).
fn encode_scale(
    s: &ScaleStatus,
    (twice, rechecked): (u64, u64),
    e: &mut DescriptorEncoder<'_>,
) -> fmt::Result {
    counter(
        e,
        "pipeline_rebalances",
        "Rebalances of the input group that changed this instance's stage-1 partitions",
        s.rebalances,
    )?;
    gauge(
        e,
        "pipeline_stage1_partitions",
        "Input partitions this instance's stage 1 holds",
        s.assigned as f64,
    )?;
    counter(
        e,
        "pipeline_forwarded_records",
        "Records stage 1 forwarded to the checked topics (acknowledged by Kafka)",
        s.forwarded,
    )?;
    counter(
        e,
        "pipeline_stage1_restarts",
        "Times stage 1 failed and was started again",
        s.restarts,
    )?;
    gauge(
        e,
        "pipeline_lease_held",
        "1 when this instance holds the lease and runs stage 2",
        if s.lease_held { 1.0 } else { 0.0 },
    )?;
    counter(
        e,
        "pipeline_leases_taken",
        "Times this instance took the lease",
        s.leases_taken,
    )?;
    counter(
        e,
        "pipeline_forwarded_twice_records",
        "Records stage 2 dropped because stage 1 forwarded them twice (this run of stage 2)",
        twice,
    )?;
    counter(
        e,
        "pipeline_rechecked_records",
        "Records stage 1 checked with another engine configuration than stage 2's, checked again by stage 2: configure every instance alike",
        rechecked,
    )
}

type Labels = Vec<(&'static str, String)>;

fn partition_labels(p: &PartitionStatus) -> Labels {
    vec![
        ("topic", p.id.0.name().to_owned()),
        ("partition", p.id.1.to_string()),
    ]
}

fn query_labels(q: Query) -> Labels {
    vec![("query", q.name().to_owned())]
}

fn seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

fn encode_status(s: &JobStatus, e: &mut DescriptorEncoder<'_>) -> fmt::Result {
    encode_partitions(s, e)?;
    encode_engine(s, e)?;
    encode_driver(s, e)?;
    encode_latencies(s, e)
}

/// Per partition: records in, lag, Kafka time reached; per topic: the engine's watermark.
fn encode_partitions(s: &JobStatus, e: &mut DescriptorEncoder<'_>) -> fmt::Result {
    let parts = &s.partitions;
    counter_family(
        e,
        "pipeline_records_in",
        "Records received from Kafka by this run, per partition.",
        parts.iter().map(|p| (partition_labels(p), p.records_in)),
    )?;
    gauge_family(
        e,
        "pipeline_consumer_lag_records",
        "Records in the partition not yet handed to the engine: its end (high watermark) less \
         the next offset to process. Absent while the end is unknown.",
        parts
            .iter()
            .filter_map(|p| p.lag().map(|l| (partition_labels(p), l as f64))),
    )?;
    gauge_family(
        e,
        "pipeline_partition_timestamp_seconds",
        "Highest Kafka timestamp handed to the engine from the partition, seconds since the \
         epoch: how far in produce time the partition has been processed.",
        parts.iter().filter_map(|p| {
            p.max_timestamp_ms
                .map(|t| (partition_labels(p), seconds(t)))
        }),
    )?;
    gauge_family(
        e,
        "pipeline_watermark_seconds",
        "The engine's event-time watermark per topic (highest event time accepted less the \
         watermark delay), seconds since the epoch. The watermark is per topic: the driver \
         merges a topic's partitions into one order before the engine sees them.",
        s.watermarks
            .iter()
            .map(|(t, w)| (vec![("topic", t.name().to_owned())], seconds(*w))),
    )
}

/// The engine's counters (restored with a checkpoint, so they span restarts) and its state.
fn encode_engine(s: &JobStatus, e: &mut DescriptorEncoder<'_>) -> fmt::Result {
    let c = &s.counters;
    let topic = |t: crate::model::Topic| ("topic", t.name().to_owned());
    counter_family(
        e,
        "pipeline_records_accepted",
        "Records the engine accepted per topic (decoded, valid, not duplicates).",
        c.topics.iter().map(|(t, x)| (vec![topic(*t)], x.accepted)),
    )?;
    counter_family(
        e,
        "pipeline_dead_letters",
        "Records dead-lettered per topic and reason.",
        c.topics.iter().flat_map(|(t, x)| {
            x.dead_letter_reasons
                .iter()
                .map(move |(r, n)| (vec![topic(*t), ("reason", r.name().to_owned())], *n))
        }),
    )?;
    counter_family(
        e,
        "pipeline_late_records",
        "Records late for a windowed query (event time behind the watermark), per query.",
        c.queries
            .iter()
            .filter(|(q, _)| !q.is_alert())
            .map(|(q, x)| (query_labels(*q), x.late)),
    )?;
    counter_family(
        e,
        "pipeline_over_limit_records",
        "Records a windowed query refused because a bound on its state was hit, per query.",
        c.queries
            .iter()
            .filter(|(q, _)| !q.is_alert())
            .map(|(q, x)| (query_labels(*q), x.over_limit)),
    )?;
    counter_family(
        e,
        "pipeline_rows",
        "Result rows the engine emitted, per query and kind (alert, partial, final).",
        c.queries.iter().flat_map(|(q, x)| {
            let kinds: Vec<(&str, u64)> = if q.is_alert() {
                vec![("alert", x.alerts)]
            } else {
                vec![("partial", x.partial_rows), ("final", x.final_rows)]
            };
            kinds.into_iter().map(move |(kind, n)| {
                let mut l = query_labels(*q);
                l.push(("kind", kind.to_owned()));
                (l, n)
            })
        }),
    )?;
    gauge_family(
        e,
        "pipeline_open_windows",
        "Windows open now per windowed query (bounded by max_open_windows).",
        s.open_windows
            .iter()
            .map(|(q, n)| (query_labels(*q), *n as f64)),
    )?;
    gauge_family(
        e,
        "pipeline_keys",
        "Distinct keys held now per keyed windowed query (bounded by max_keys_per_query).",
        s.keys.iter().map(|(q, n)| (query_labels(*q), *n as f64)),
    )
}

/// Writes, retries, failures, flow control, checkpoints and commits.
fn encode_driver(s: &JobStatus, e: &mut DescriptorEncoder<'_>) -> fmt::Result {
    let d = &s.driver;
    gauge(
        e,
        "pipeline_pending_items",
        "Output items not yet acknowledged by every sink (open, queued, in flight).",
        s.pending_items as f64,
    )?;
    gauge(
        e,
        "pipeline_buffered_records",
        "Records read ahead of the canonical merge, waiting to be handed to the engine.",
        s.buffered as f64,
    )?;
    gauge(
        e,
        "pipeline_backpressure",
        "1 while unacknowledged output has every partition paused.",
        f64::from(u8::from(s.backpressured)),
    )?;
    counter(
        e,
        "pipeline_backpressure_episodes",
        "Times backpressure paused every partition.",
        d.backpressure_episodes,
    )?;
    counter_family(
        e,
        "pipeline_writes",
        "Batches written per lane (first attempts).",
        Lane::ALL
            .iter()
            .map(|l| (vec![("lane", l.name().to_owned())], d.writes[l.index()])),
    )?;
    counter_family(
        e,
        "pipeline_sink_retries",
        "Failed write attempts per sink; the driver retries each with backoff.",
        s.sinks
            .iter()
            .zip(&d.write_failures)
            .map(|(name, n)| (vec![("sink", (*name).to_owned())], *n)),
    )?;
    gauge_family(
        e,
        "pipeline_failing_seconds",
        "How long a sink (by name) or the source (`source`) has been failing; absent while it \
         answers. /readyz fails once this passes the driver's longest retry delay.",
        s.failures.iter().map(|f| {
            (
                vec![("what", f.what.to_owned())],
                seconds(s.now_ms - f.since_ms),
            )
        }),
    )?;
    counter(
        e,
        "pipeline_source_errors",
        "Errors reading Kafka (polling goes on).",
        d.source_errors,
    )?;
    counter(
        e,
        "pipeline_checkpoints",
        "Checkpoints stored.",
        d.checkpoints,
    )?;
    counter(
        e,
        "pipeline_checkpoint_failures",
        "Checkpoint stores that failed (each retried).",
        d.checkpoint_failures,
    )?;
    gauge(
        e,
        "pipeline_checkpoint_wait_max_seconds",
        "Longest a record handed to the engine waited until a durable checkpoint covered it, \
         since the job started: about the checkpoint interval while writes succeed.",
        seconds(d.checkpoint_wait_max_ms),
    )?;
    gauge(
        e,
        "pipeline_merge_disorder_max_seconds",
        "Most a record handed to the engine trailed, by Kafka timestamp, one of its topic handed \
         over before it, since the job started: 0 for a backlog; past the watermark delay, \
         partitions delivering out of order made records late.",
        seconds(d.disorder_max_ms),
    )?;
    counter(
        e,
        "pipeline_commits",
        "Kafka offset commits acknowledged.",
        d.commits,
    )?;
    counter(
        e,
        "pipeline_commit_failures",
        "Kafka offset commits that failed (the next checkpoint's commit supersedes each).",
        d.commit_failures,
    )?;
    gauge(
        e,
        "pipeline_checkpoint_bytes",
        "Size of the last checkpoint stored, bytes.",
        s.checkpoint_bytes as f64,
    )?;
    gauge(
        e,
        "pipeline_ready",
        "1 when the job is ready (what /readyz answers, less its check for a stuck loop).",
        f64::from(u8::from(s.readiness().is_ok())),
    )
}

fn encode_latencies(s: &JobStatus, e: &mut DescriptorEncoder<'_>) -> fmt::Result {
    let m = &s.metrics;
    histogram(
        e,
        "pipeline_sink_write_seconds",
        "Time to write one batch to every sink, from its first attempt.",
        &m.sink_write,
    )?;
    histogram(
        e,
        "pipeline_trigger_write_seconds",
        "From an update-mode trigger to the batch carrying its rows acknowledged by every sink.",
        &m.trigger_write,
    )?;
    histogram(
        e,
        "pipeline_alert_latency_seconds",
        "From the Kafka timestamp of a record that raised an alert to the alert acknowledged.",
        &m.alert_latency,
    )?;
    histogram(
        e,
        "pipeline_window_latency_seconds",
        "From a final window row emitted to its acknowledgement by every sink.",
        &m.window_latency,
    )?;
    histogram(
        e,
        "pipeline_checkpoint_store_seconds",
        "Time to encode a checkpoint and store it durably.",
        &m.checkpoint_store,
    )
}

fn counter(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> fmt::Result {
    let m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(v).encode(m)
}

fn gauge(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: f64) -> fmt::Result {
    let m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(v).encode(m)
}

fn counter_family(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, u64)>,
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in samples {
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge_family(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, f64)>,
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in samples {
        ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A Prometheus histogram in seconds from a latency histogram in microseconds.
fn histogram(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, h: &Histogram) -> fmt::Result {
    let cumulative = h.counts_at_most_us(&LATENCY_BOUNDS_US);
    // The encoder takes each bucket's own count and adds them up itself.
    let mut buckets = Vec::with_capacity(LATENCY_BOUNDS_US.len() + 1);
    let mut below = 0;
    for (bound, at_most) in LATENCY_BOUNDS_US.iter().zip(cumulative) {
        buckets.push((*bound as f64 / 1e6, at_most - below));
        below = at_most;
    }
    buckets.push((f64::MAX, h.count() - below)); // +Inf
    let mut m = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
    m.encode_histogram::<NoLabelSet>(h.sum_us() as f64 / 1e6, h.count(), &buckets, None)
}

/// The HTTP server of `/metrics`, `/healthz` and `/readyz`. Dropping it stops it and closes
/// its connections.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
struct State {
    registry: Registry,
    board: StatusBoard,
}

impl MetricsServer {
    /// Listens on `addr` (port 0: a free port) and serves `board`.
    pub async fn start(addr: SocketAddr, board: StatusBoard) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            registry: registry(board.clone()),
            board,
        });
        let task = tokio::spawn(accept(listener, state));
        Ok(MetricsServer { addr, task })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, state: Arc<State>) {
    // Connections live in the set, so aborting this task closes them too.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        if connections.len() >= MAX_CONNECTIONS {
            let _ = connections.join_next().await;
            continue;
        }
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, most likely: wait rather than spin.
                tracing::warn!(error = %e, "Accepting a connection to /metrics failed.");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let state = Arc::clone(&state);
        connections.spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let response = respond(&state, req.method(), req.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            let mut http = http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let served = http.serve_connection(TokioIo::new(stream), service).await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "A connection to /metrics ended with an error.");
            }
        });
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn respond(state: &State, method: &Method, path: &str) -> Response<Full<Bytes>> {
    let known = matches!(path, "/metrics" | "/healthz" | "/readyz");
    if known && *method != Method::GET {
        let mut r = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            format!("{path} answers GET only\n"),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        return r;
    }
    match path {
        "/metrics" => match encode(&state.registry) {
            Ok(text) => reply(StatusCode::OK, OPENMETRICS, text),
            Err(_) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                TEXT,
                "encoding the metrics failed\n".to_owned(),
            ),
        },
        "/healthz" => reply(StatusCode::OK, TEXT, "ok\n".to_owned()),
        "/readyz" => match state.board.readiness() {
            Ok(()) => reply(StatusCode::OK, TEXT, "ready\n".to_owned()),
            Err(why) => reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, format!("{why}\n")),
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            TEXT,
            format!("{path} is not served here; try /metrics, /healthz or /readyz\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::super::status::Phase;
    use super::*;
    use crate::driver::Failure;
    use crate::engine::{DeadLetterReason, QueryCounters, TopicCounters};
    use crate::model::Topic;

    /// A running job's snapshot with known values: one partition with a known end, one
    /// without, dead letters of two reasons, a failing sink's retries, three batch writes.
    fn snapshot() -> JobStatus {
        let mut s = JobStatus::starting("");
        s.phase = Phase::Running;
        s.now_ms = 1_000_000;
        s.retry_period_ms = 30_000;
        s.sinks = vec!["mongodb", "postgresql"];
        s.driver.writes = [4, 5, 6];
        s.driver.write_failures = vec![0, 7];
        s.driver.checkpoints = 3;
        s.partitions = vec![
            PartitionStatus {
                id: (Topic::Traffic, 0),
                records_in: 120,
                released: Some(119),
                next_offset: Some(120),
                end_offset: Some(150),
                max_timestamp_ms: Some(1_795_507_200_000),
                buffered: 0,
                paused: false,
            },
            PartitionStatus {
                id: (Topic::Parking, 1),
                records_in: 0,
                released: None,
                next_offset: None,
                end_offset: None,
                max_timestamp_ms: None,
                buffered: 0,
                paused: false,
            },
        ];
        let mut traffic = TopicCounters {
            records_in: 125,
            accepted: 120,
            dead_lettered: 5,
            ..TopicCounters::default()
        };
        traffic
            .dead_letter_reasons
            .insert(DeadLetterReason::MalformedJson, 2);
        traffic
            .dead_letter_reasons
            .insert(DeadLetterReason::Duplicate, 3);
        s.counters.topics.insert(Topic::Traffic, traffic);
        s.counters.queries.insert(
            Query::TrafficAggregations,
            QueryCounters {
                aggregated: 110,
                late: 10,
                partial_rows: 8,
                final_rows: 4,
                ..QueryCounters::default()
            },
        );
        s.counters.queries.insert(
            Query::TrafficAnomalies,
            QueryCounters {
                alerts: 2,
                ..QueryCounters::default()
            },
        );
        s.watermarks = vec![(Topic::Traffic, 1_795_507_140_000)];
        s.open_windows = vec![(Query::TrafficAggregations, 5)];
        s.keys = vec![(Query::TrafficAggregations, 9)];
        s.pending_items = 42;
        for ms in [3, 40, 700] {
            s.metrics.sink_write.record_ms(ms);
        }
        s.metrics.trigger_write.record_ms(1_500);
        s.checkpoint_bytes = 4096;
        s
    }

    /// `GET path` over a plain TCP connection: the status code and the body.
    fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut stream = std::net::TcpStream::connect(addr).expect("connects to the server");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("sets a timeout");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
        )
        .expect("sends the request");
        let mut raw = String::new();
        stream.read_to_string(&mut raw).expect("reads the response");
        let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status code");
        (status, body.to_owned())
    }

    // Proves the server answers /healthz at once, /readyz with 503 and the reason until the job
    // runs and again when a sink fails past the retry period, and /metrics with the snapshot's
    // values under their names, encoded as OpenMetrics text (counters `_total`, histograms with
    // cumulative buckets up to +Inf).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_metrics_health_and_readiness() {
        let board = StatusBoard::new(JobStatus::starting("Kafka at 127.0.0.1:9092"));
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        let server = MetricsServer::start(any_port, board.clone())
            .await
            .expect("listens on a free port");
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);
        let fetch = |path: &'static str| async move {
            tokio::task::spawn_blocking(move || get(addr, path))
                .await
                .expect("the client thread ends")
        };

        assert_eq!(fetch("/healthz").await, (200, "ok\n".to_owned()));
        assert_eq!(
            fetch("/readyz").await,
            (503, "starting: Kafka at 127.0.0.1:9092\n".to_owned())
        );
        board.publish(snapshot());
        assert_eq!(fetch("/readyz").await, (200, "ready\n".to_owned()));

        let (status, text) = fetch("/metrics").await;
        assert_eq!(status, 200);
        for line in [
            "# TYPE pipeline_records_in counter",
            r#"pipeline_records_in_total{topic="traffic-sensors",partition="0"} 120"#,
            r#"pipeline_records_in_total{topic="parking",partition="1"} 0"#,
            r#"pipeline_consumer_lag_records{topic="traffic-sensors",partition="0"} 30.0"#,
            r#"pipeline_partition_timestamp_seconds{topic="traffic-sensors",partition="0"} 1795507200.0"#,
            r#"pipeline_watermark_seconds{topic="traffic-sensors"} 1795507140.0"#,
            r#"pipeline_records_accepted_total{topic="traffic-sensors"} 120"#,
            r#"pipeline_dead_letters_total{topic="traffic-sensors",reason="malformed_json"} 2"#,
            r#"pipeline_dead_letters_total{topic="traffic-sensors",reason="duplicate"} 3"#,
            r#"pipeline_late_records_total{query="traffic_aggregations"} 10"#,
            r#"pipeline_rows_total{query="traffic_aggregations",kind="partial"} 8"#,
            r#"pipeline_rows_total{query="traffic_aggregations",kind="final"} 4"#,
            r#"pipeline_rows_total{query="traffic_anomalies",kind="alert"} 2"#,
            r#"pipeline_open_windows{query="traffic_aggregations"} 5.0"#,
            r#"pipeline_keys{query="traffic_aggregations"} 9.0"#,
            "pipeline_pending_items 42.0",
            r#"pipeline_writes_total{lane="bulk"} 6"#,
            r#"pipeline_sink_retries_total{sink="mongodb"} 0"#,
            r#"pipeline_sink_retries_total{sink="postgresql"} 7"#,
            "pipeline_checkpoints_total 3",
            "pipeline_checkpoint_bytes 4096.0",
            "pipeline_ready 1.0",
            "# TYPE pipeline_sink_write_seconds histogram",
            "pipeline_sink_write_seconds_count 3",
            "pipeline_sink_write_seconds_sum 0.743",
            r#"pipeline_sink_write_seconds_bucket{le="0.0025"} 0"#,
            r#"pipeline_sink_write_seconds_bucket{le="0.005"} 1"#,
            r#"pipeline_sink_write_seconds_bucket{le="0.05"} 2"#,
            r#"pipeline_sink_write_seconds_bucket{le="0.5"} 2"#,
            r#"pipeline_sink_write_seconds_bucket{le="1.0"} 3"#,
            r#"pipeline_sink_write_seconds_bucket{le="+Inf"} 3"#,
            r#"pipeline_trigger_write_seconds_bucket{le="1.0"} 0"#,
            r#"pipeline_trigger_write_seconds_bucket{le="2.5"} 1"#,
            "pipeline_checkpoint_store_seconds_count 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in /metrics:\n{text}"
            );
        }
        assert!(
            !text.contains(r#"pipeline_consumer_lag_records{topic="parking""#),
            "no lag while a partition's end is unknown:\n{text}"
        );
        assert!(
            !text.contains("pipeline_failing_seconds{"),
            "nothing fails:\n{text}"
        );
        assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");

        let mut failing = snapshot();
        failing.failures = vec![Failure {
            what: "postgresql",
            since_ms: 1_000_000 - 45_000,
            attempts: 6,
        }];
        board.publish(failing);
        let (status, why) = fetch("/readyz").await;
        assert_eq!(status, 503);
        assert!(
            why.starts_with("postgresql failing for 45 s (6 attempts)"),
            "{why}"
        );
        assert_eq!(why.lines().count(), 1, "one line: {why}");
        let (_, text) = fetch("/metrics").await;
        assert!(
            text.lines()
                .any(|l| l == r#"pipeline_failing_seconds{what="postgresql"} 45.0"#),
            "{text}"
        );
        assert!(text.lines().any(|l| l == "pipeline_ready 0.0"), "{text}");
        assert_eq!(fetch("/metrics/extra").await.0, 404);
    }
}
