//! The one `tokio::select!` loop of the streaming job: it carries out the driver's actions and
//! hands the driver what comes back — records and partition progress from Kafka, sink outcomes,
//! checkpoint and commit results, ticks, the shutdown signal — each with the processing time.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::driver::{Action, Driver, Notice, StopReason, WriteMeta};
use crate::engine::{Output, RawRecord, SourcePosition};
use crate::sink::console::ConsoleSink;
use crate::sink::{Sink, now_or_never};
use crate::source::kafka::KafkaSource;
use crate::source::{Source, SourceError};
use crate::time::Millis;

use super::metrics::Metrics;
use super::sinks::{LaneTasks, Outcome};
use super::status::{JobStatus, Phase, StatusBoard};
use super::{
    ReplayClock, RunReport, StoreResult, StreamingConfig, StreamingError, WallClock, empty_report,
    log_summary, store_in_background, wall_wait,
};

/// After a Kafka error, wait this long before polling again.
const POLL_ERROR_PAUSE: Duration = Duration::from_millis(200);

/// The status board gets a fresh snapshot at most this often (a scrape reads the last one).
const PUBLISH_INTERVAL: Duration = Duration::from_millis(250);

/// The loop's state.
/// A commit in flight: its checkpoint id, the task and its deadline.
type CommitInFlight = (
    u64,
    tokio::task::JoinHandle<Result<(), SourceError>>,
    Instant,
);

pub(super) struct Shell {
    config: StreamingConfig,
    driver: Driver,
    source: KafkaSource,
    lanes: LaneTasks,
    results_tx: mpsc::UnboundedSender<Outcome>,
    results_rx: mpsc::UnboundedReceiver<Outcome>,
    replay: Option<ReplayClock>,
    console: Option<ConsoleSink>,
    store: Option<tokio::task::JoinHandle<StoreResult>>,
    /// The commit in flight: its checkpoint id, task and deadline (a commit that hangs, as a
    /// synchronous librdkafka commit can while the group coordinator moves, counts as failed
    /// after `write_timeout_ms`; the driver retries it or supersedes it).
    commit: Option<CommitInFlight>,
    /// When each write was first sent, for the sink write time.
    sent: BTreeMap<u64, Instant>,
    report: RunReport,
    total: Metrics,
    interval: Metrics,
    last_log: Instant,
    /// Forwarded records re-checked for another configuration, when last said.
    rechecked_said: u64,
    started: Instant,
    stop: Option<StopReason>,
    polls_paused_until: Option<Instant>,
    end_asked: bool,
    /// Where `/metrics` and `/readyz` read the job's state, when they are served.
    board: Option<StatusBoard>,
    last_publish: Option<Instant>,
    /// Whether the last snapshot published said the job is stopping.
    published_stopping: bool,
    /// The last error of each failing sink (by name) or of the source (`source`), for `/readyz`.
    last_errors: BTreeMap<&'static str, String>,
    /// What the driver was last told of each partition's next offset and end, by index in the
    /// source's partitions; forgotten on a source error (the driver forgets ends then).
    reported: Vec<Option<(Option<i64>, Option<i64>)>>,
}

impl std::fmt::Debug for Shell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shell").finish_non_exhaustive()
    }
}

impl Shell {
    #[allow(clippy::too_many_arguments)] // Built once, from what `run_with` set up.
    pub(super) fn new(
        config: StreamingConfig,
        driver: Driver,
        source: KafkaSource,
        lanes: LaneTasks,
        results_tx: mpsc::UnboundedSender<Outcome>,
        results_rx: mpsc::UnboundedReceiver<Outcome>,
        replay: Option<ReplayClock>,
        restored: bool,
        board: Option<StatusBoard>,
    ) -> Self {
        let clock = WallClock;
        let console = config
            .console
            .then(|| ConsoleSink::new(Box::new(std::io::stdout())));
        Shell {
            config,
            driver,
            source,
            lanes,
            results_tx,
            results_rx,
            replay,
            console,
            store: None,
            commit: None,
            sent: BTreeMap::new(),
            report: empty_report(restored),
            total: Metrics::default(),
            interval: Metrics::default(),
            last_log: clock.instant(),
            rechecked_said: 0,
            started: clock.instant(),
            stop: None,
            polls_paused_until: None,
            end_asked: false,
            board,
            last_publish: None,
            published_stopping: false,
            reported: Vec::new(),
            last_errors: BTreeMap::new(),
        }
    }

    /// Processing time: wall time, or the replayed simulated time.
    fn now(&self) -> Millis {
        let wall = WallClock.now_ms();
        self.replay.map_or(wall, |r| r.sim_ms(wall))
    }

    pub(super) async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<RunReport, StreamingError> {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut shutdown_seen = false;
        loop {
            self.carry_out().await;
            if self.stop.is_some() {
                break;
            }
            self.publish();
            self.log_interval();
            let wait = self.next_wait();
            let polling = self
                .polls_paused_until
                .is_none_or(|t| WallClock.instant() >= t);
            let max = self.poll_budget();
            tokio::select! {
                biased;
                () = &mut shutdown, if !shutdown_seen => {
                    shutdown_seen = true;
                    let now = self.now();
                    self.driver.handle_shutdown(now, StopReason::Shutdown);
                }
                Some(o) = self.results_rx.recv() => {
                    let now = self.now();
                    self.driver.handle_write_result(now, o.id, o.attempt, o.sink, o.result);
                }
                stored = async {
                    match self.store.as_mut() {
                        Some(h) => Some(h.await),
                        None => std::future::pending().await,
                    }
                } => {
                    self.store = None;
                    self.on_stored(stored);
                }
                (id, committed) = async {
                    match self.commit.as_mut() {
                        Some((id, h, deadline)) => {
                            (*id, tokio::time::timeout_at((*deadline).into(), h).await)
                        }
                        None => std::future::pending().await,
                    }
                } => {
                    self.commit = None;
                    let result = match committed {
                        Ok(Ok(r)) => r.map_err(|e| e.to_string()),
                        Ok(Err(e)) => Err(format!("commit task failed: {e}")),
                        Err(_) => Err(format!(
                            "Kafka did not acknowledge the commit within {} ms",
                            self.config.driver.write_timeout_ms
                        )),
                    };
                    let now = self.now();
                    self.driver.handle_commit_result(now, id, result);
                }
                polled = self.source.poll(max), if polling && max > 0 => self.on_polled(polled),
                () = tokio::time::sleep(wait) => {
                    let now = self.now();
                    self.driver.handle_tick(now);
                    self.report_progress();
                }
            }
        }
        // A checkpoint still being stored finishes before the job says it stopped: a scaled-out
        // job's successor restores it from the shared location next.
        if let Some(h) = self.store.take() {
            let stored = h.await;
            self.on_stored(Some(stored));
        }
        self.finish()
    }

    /// How many records the next poll may take.
    fn poll_budget(&self) -> usize {
        let max = self.config.poll_max_records.max(1);
        match self.config.max_records {
            Some(m) => max.min(m.saturating_sub(self.report.records) as usize),
            None => max,
        }
    }

    /// How long to sleep before the driver's next timeout (or the next look at Kafka's
    /// progress).
    fn next_wait(&self) -> Duration {
        let cap = Duration::from_millis(self.config.tick_interval_ms.max(1));
        match self.driver.poll_timeout() {
            Some(t) => wall_wait(self.replay, WallClock.now_ms(), t).min(cap),
            None => cap,
        }
    }

    fn on_polled(&mut self, polled: Result<Vec<crate::source::SourceRecord>, SourceError>) {
        let now = self.now();
        match polled {
            Ok(records) => {
                let raw: Vec<RawRecord<'_>> = records
                    .iter()
                    .map(|r| RawRecord {
                        topic: r.topic,
                        key: &r.key,
                        value: &r.value,
                        kafka_timestamp_ms: r.timestamp_ms,
                        position: SourcePosition {
                            partition: r.partition,
                            offset: r.offset,
                        },
                    })
                    .collect();
                self.driver.handle_records(now, &raw);
                self.report.records += records.len() as u64;
                self.report_progress();
                self.check_record_budgets(now);
            }
            Err(e) => {
                self.driver.handle_source_error(now, &e.to_string());
                self.reported.clear();
                self.polls_paused_until = Some(WallClock.instant() + POLL_ERROR_PAUSE);
            }
        }
    }

    /// Ends the input, or stops, when the configured number of records was consumed.
    fn check_record_budgets(&mut self, now: Millis) {
        if self.end_asked {
            return;
        }
        if self
            .config
            .end_after_records
            .is_some_and(|n| self.report.records >= n)
        {
            self.end_asked = true;
            self.driver.handle_end_of_input(now, StopReason::EndOfInput);
        } else if self
            .config
            .max_records
            .is_some_and(|n| self.report.records >= n)
        {
            self.end_asked = true;
            self.driver.handle_shutdown(now, StopReason::MaxRecords);
        }
    }

    /// Tells the driver where each partition stands, from the consumer's cached state: only
    /// what changed since it was last told, as the simulator does (after every poll, at the
    /// thesis load a few records each, the unchanged partitions were most of the work).
    fn report_progress(&mut self) {
        let now = self.now();
        let progress = self.source.progress();
        self.reported.resize(progress.len(), None);
        for (i, (id, next, end)) in progress.into_iter().enumerate() {
            if self.reported[i] != Some((next, end)) {
                self.reported[i] = Some((next, end));
                self.driver.handle_progress(now, id, next, end);
            }
        }
    }

    fn on_stored(&mut self, stored: Option<Result<StoreResult, tokio::task::JoinError>>) {
        let now = self.now();
        match stored {
            Some(Ok((id, Ok(bytes), took))) => {
                self.report.checkpoint_bytes = bytes;
                self.interval
                    .checkpoint_store
                    .record_signed_us(took.as_micros() as i64);
                self.driver.handle_checkpoint_result(now, id, Ok(()));
            }
            Some(Ok((id, Err(e), _))) => {
                self.driver
                    .handle_checkpoint_result(now, id, Err(e.to_string()))
            }
            Some(Err(e)) => tracing::error!(error = %e, "The checkpoint task failed."),
            None => {}
        }
    }

    /// Carries out every action the driver has for now.
    async fn carry_out(&mut self) {
        while let Some(action) = self.driver.poll_action() {
            match action {
                Action::Write(w) => {
                    if w.attempt == 1 {
                        self.note_write(&w.output, w.id);
                    }
                    self.lanes.send(w, &self.results_tx).await;
                }
                Action::StoreCheckpoint(data) => {
                    self.store = Some(store_in_background(
                        self.config.checkpoint_dir.clone(),
                        Arc::clone(&data),
                    ));
                }
                Action::Commit { id, positions } => {
                    let deadline = WallClock.instant()
                        + Duration::from_millis(self.config.driver.write_timeout_ms);
                    self.commit = Some((id, self.source.commit_in_background(positions), deadline));
                }
                Action::Pause(ps) => {
                    if let Err(e) = self.source.pause(&ps) {
                        tracing::warn!(error = %e, "Pausing partitions failed.");
                    }
                }
                Action::Resume(ps) => {
                    if let Err(e) = self.source.resume(&ps) {
                        tracing::warn!(error = %e, "Resuming partitions failed.");
                    }
                }
                Action::Acknowledged(meta) => self.account(&meta),
                Action::ShowConsole => {
                    if let Some(c) = self.console.as_mut() {
                        let due = Output {
                            console_due: true,
                            ..Output::default()
                        };
                        let _ = now_or_never(c.write(&due));
                    }
                }
                Action::Notice(n) => {
                    self.note_error(&n);
                    log_notice(&n);
                }
                Action::Stop(reason) => self.stop = Some(reason),
            }
        }
    }

    /// Keeps a failing sink's or the source's last error for `/readyz`.
    fn note_error(&mut self, n: &Notice) {
        if self.board.is_none() {
            return;
        }
        match n {
            Notice::SinkRetrying { sink, error, .. } => {
                self.last_errors.insert(*sink, error.clone());
            }
            Notice::SourceFailing { error, .. } => {
                self.last_errors.insert("source", error.clone());
            }
            _ => {}
        }
    }

    /// Copies the driver's and the engine's state to the status board, at most every
    /// [`PUBLISH_INTERVAL`] (and at once when the phase changes to stopping).
    fn publish(&mut self) {
        let Some(board) = &self.board else {
            return;
        };
        let stopping = self.driver.is_stopping();
        let due = self
            .last_publish
            .is_none_or(|t| t.elapsed() >= PUBLISH_INTERVAL);
        if !due && stopping == self.published_stopping {
            return;
        }
        let mut status = JobStatus::starting("");
        status.phase = if stopping {
            Phase::Stopping
        } else {
            Phase::Running
        };
        status.read_driver(&self.driver, self.now());
        status.sinks = self.lanes.sink_names().to_vec();
        status.last_errors = self.last_errors.clone();
        status.metrics = self.total.clone();
        status.metrics.merge(&self.interval);
        status.checkpoint_bytes = self.report.checkpoint_bytes;
        status.forwarded_twice = self.source.forwarded_twice();
        board.publish(status);
        self.last_publish = Some(WallClock.instant());
        self.published_stopping = stopping;
    }

    fn note_write(&mut self, out: &Output, id: u64) {
        self.report.flushes += 1;
        self.report.rows += out.rows.len() as u64;
        self.report.dead_letters += out.dead_letters.len() as u64;
        self.report.late += out.late.len() as u64;
        self.report.archive += out.archive.len() as u64;
        self.sent.insert(id, WallClock.instant());
        if let Some(c) = self.console.as_mut()
            && !out.rows.is_empty()
        {
            let rows = Output {
                rows: out.rows.clone(),
                ..Output::default()
            };
            let _ = now_or_never(c.write(&rows));
        }
    }

    /// Latencies of a write every sink acknowledged, in wall time.
    fn account(&mut self, meta: &WriteMeta) {
        let now = WallClock.now_ms();
        let wall = |t: Millis| self.replay.map_or(t, |r| r.wall_ms(t));
        let m = &mut self.interval;
        for &ts in &meta.alert_timestamps_ms {
            m.alert_latency.record_ms(now - wall(ts));
        }
        for &e in &meta.finals_emitted_ms {
            m.window_latency.record_ms(now - wall(e));
        }
        if let Some(t) = meta.trigger_ms {
            m.trigger_write.record_ms(now - wall(t));
        }
        if let Some(sent) = self.sent.remove(&meta.write_id) {
            m.sink_write
                .record_signed_us(sent.elapsed().as_micros() as i64);
        }
    }

    fn log_interval(&mut self) {
        let every = Duration::from_millis(self.config.metrics_log_interval_ms.max(1));
        if self.last_log.elapsed() >= every {
            self.report.driver = self.driver.stats().clone();
            log_summary(
                "Streaming latency over the last interval.",
                &self.interval,
                &self.report,
                &self.driver,
            );
            self.total.merge(&self.interval);
            self.interval = Metrics::default();
            self.last_log = WallClock.instant();
            let rechecked = self.driver.engine().counters().rechecked;
            if rechecked > self.rechecked_said {
                tracing::warn!(
                    records = rechecked - self.rechecked_said,
                    "Stage 1 on another instance checked records with another engine configuration than this one's; checked again here, so the results follow this instance's. Configure every instance alike."
                );
                self.rechecked_said = rechecked;
            }
        }
    }

    fn finish(mut self) -> Result<RunReport, StreamingError> {
        if let Some(b) = &self.board {
            b.set_phase(Phase::Stopping);
        }
        self.total.merge(&self.interval);
        self.report.stop = self.stop.unwrap_or(StopReason::Shutdown);
        self.report.elapsed_ms = self.started.elapsed().as_millis() as u64;
        self.report.counters = self.driver.engine().counters();
        self.report.driver = self.driver.stats().clone();
        self.report.metrics = self.total.clone();
        log_summary(
            "Streaming job stopped.",
            &self.total,
            &self.report,
            &self.driver,
        );
        Ok(self.report)
    }
}

/// One log line per notice: warnings for what is wrong, information for what recovered.
fn log_notice(n: &Notice) {
    match n {
        Notice::SinkRetrying {
            sink,
            lane,
            attempts,
            failing_for_ms,
            retry_in_ms,
            error,
        } => tracing::warn!(
            sink,
            lane = lane.name(),
            attempts,
            failing_for_s = *failing_for_ms as f64 / 1000.0,
            retry_in_ms,
            error = %error,
            "A sink is failing; its writes are retried until it answers."
        ),
        Notice::SinkRecovered {
            sink,
            attempts,
            failing_for_ms,
        } => tracing::info!(
            sink,
            attempts,
            failed_for_s = *failing_for_ms as f64 / 1000.0,
            "A sink answers again."
        ),
        Notice::SourceFailing {
            errors,
            failing_for_ms,
            error,
        } => tracing::warn!(
            errors,
            failing_for_s = *failing_for_ms as f64 / 1000.0,
            error = %error,
            "Kafka is failing; the job keeps polling."
        ),
        Notice::SourceRecovered { failing_for_ms } => tracing::info!(
            failed_for_s = *failing_for_ms as f64 / 1000.0,
            "Kafka delivers records again."
        ),
        Notice::CheckpointRetrying {
            attempts,
            retry_in_ms,
            error,
        } => {
            tracing::warn!(attempts, retry_in_ms, error = %error, "Storing the checkpoint failed; retrying.")
        }
        Notice::CommitFailed {
            attempts,
            retry_in_ms,
            error,
        } => tracing::warn!(
            attempts,
            retry_in_ms,
            error = %error,
            "Committing offsets failed; retrying, unless a newer checkpoint's commit comes first."
        ),
        Notice::Backpressure {
            engaged,
            pending_items,
        } => {
            if *engaged {
                tracing::warn!(
                    pending_items,
                    "Output is not acknowledged fast enough: every partition is paused until the sinks catch up."
                );
            } else {
                tracing::info!(pending_items, "The sinks caught up: partitions resumed.");
            }
        }
        Notice::StopIncomplete { detail } => tracing::warn!(
            detail = %detail,
            "Stopping without the last writes: a restart resumes from the previous checkpoint."
        ),
    }
}
