//! One job message in, one [`Outcome`] out: the whole life of a report attempt, with no broker types, so
//! it is tested without a consumer loop around it. The consumer turns the outcome into ack / requeue /
//! dead-letter ([`Outcome::disposition`]).
//!
//! Failure policy:
//! - MySQL errors (connection, pool, lock waits, anything the server answers with) may pass: the job is
//!   requeued, and the quorum queue's delivery limit dead-letters it if it keeps failing.
//! - Problems in the data or the job (impossible stored rows, a report too large to number its chunks) do
//!   not pass: the report is marked Failed with the reason and the job acknowledged.
//! - A job whose `report_id` is not a report id (21 characters of the nanoid alphabet) never reaches SQL:
//!   it is acknowledged and logged with its message id, since no delivery of it can ever succeed.
//! - On the last delivery the queue allows (`x-delivery-count` ≥ the delivery limit), a retryable failure
//!   marks the report Failed before the job is dead-lettered, so it never stays Running. When even that is
//!   impossible (MySQL down, worker killed), the consumer of the dead-letter copy marks it later.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use diesel::mysql::MysqlConnection;
use shared_model::db::{self, DbPool};
use shared_model::messages::ReportJob;
use shared_model::models::reports::{
    self, FinishedReport, ReportStatus, StartOutcome, StoreError, Stored, is_valid_report_id, store_complete,
};
use shared_model::models::versions;
use uptime_core::engine::{self, Horizon, Inputs, Progress};

use crate::dataset::{self, Dataset, DatasetError, IngestVersion, RefreshStats};
use crate::packet;
use crate::settings::WorkerSettings;

/// How often a job waiting for a lagging read replica looks again.
const REPLICA_POLL: Duration = Duration::from_millis(200);

/// A job message as the broker delivered it.
#[derive(Debug, Clone, Copy)]
pub struct JobDelivery<'a> {
    pub body: &'a [u8],
    /// The AMQP `message_id` (the report id, set by the publisher); used when the body cannot be read.
    pub message_id: Option<&'a str>,
    /// Times the queue has delivered this message before (`x-delivery-count`; 0 on the first delivery).
    pub delivery_count: u32,
}

/// Where the time of a completed job went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobTimings {
    pub read: Duration,
    pub compute: Duration,
    pub store: Duration,
    pub total: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The CSV is stored and the report Complete.
    Completed { report_id: String, stores: u32, csv_bytes: usize, chunks: u32, timings: JobTimings },
    /// Nothing to do: the report was already Complete or Failed (a redelivery or a duplicate).
    AlreadyFinished { report_id: String, status: ReportStatus },
    /// A permanent problem: the report is marked Failed with `reason`.
    Failed { report_id: String, reason: String },
    /// No report has this id: nothing to compute or mark.
    UnknownReport { report_id: String },
    /// The message is not a job; `report_id` is the message id when it named a report (marked Failed).
    Malformed { reason: String, report_id: Option<String> },
    /// A job whose `report_id` cannot be a report's: acknowledged without any SQL. `message_id` as the
    /// broker gave it (both shown escaped and shortened in the log).
    InvalidReportId { report_id: String, message_id: Option<String> },
    /// A failure that may pass: deliver the job again.
    Retry { report_id: String, reason: String },
    /// A retryable failure on the last delivery the queue allows. `marked`: the report reads Failed.
    GaveUp { report_id: String, reason: String, marked: bool },
}

/// What the consumer does with the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Ack,
    Requeue,
    /// Reject without requeue: the queue moves it to the dead-letter exchange.
    DeadLetter,
}

impl Outcome {
    pub fn disposition(&self) -> Disposition {
        match self {
            Outcome::Completed { .. }
            | Outcome::AlreadyFinished { .. }
            | Outcome::Failed { .. }
            | Outcome::UnknownReport { .. }
            | Outcome::InvalidReportId { .. } => Disposition::Ack,
            Outcome::Retry { .. } => Disposition::Requeue,
            Outcome::Malformed { .. } | Outcome::GaveUp { .. } => Disposition::DeadLetter,
        }
    }
}

/// Why an attempt stopped.
#[derive(Debug)]
enum JobError {
    Retryable(String),
    Permanent(String),
}

impl From<diesel::result::Error> for JobError {
    fn from(e: diesel::result::Error) -> Self {
        JobError::Retryable(format!("MySQL error: {e}"))
    }
}

impl From<diesel::r2d2::PoolError> for JobError {
    fn from(e: diesel::r2d2::PoolError) -> Self {
        JobError::Retryable(format!("no MySQL connection: {e}"))
    }
}

impl From<DatasetError> for JobError {
    fn from(e: DatasetError) -> Self {
        match e {
            DatasetError::Db(e) => JobError::Retryable(format!("reading the data from MySQL failed: {e}")),
            DatasetError::Data(reason) => JobError::Permanent(format!("the stored data cannot be used: {reason}")),
        }
    }
}

impl From<StoreError> for JobError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Db(e) => JobError::Retryable(format!("storing the report in MySQL failed: {e}")),
            e @ (StoreError::TooLarge(_) | StoreError::BadChunking { .. }) => JobError::Permanent(e.to_string()),
        }
    }
}

/// Runs jobs against one database. Keeps the last dataset it read, so the next job fetches only changes.
pub struct JobHandler {
    pool: DbPool,
    /// Where the inputs are read: a read replica of `pool`'s primary, or `None` for the primary itself.
    replica: Option<DbPool>,
    settings: WorkerSettings,
    /// `x-delivery-limit` of the job queue: a delivery with this many earlier ones is the last.
    delivery_limit: u32,
    /// Held while a job brings the dataset up to date, so two jobs never merge into it at once.
    cache: Mutex<Option<Arc<Dataset>>>,
    /// Told of every report's progress besides the progress written to its row.
    observer: Option<Box<dyn Progress + Send>>,
    /// The last `max_allowed_packet` that lowered the chunking, so the log says it once, not per job.
    lowered_for_packet: AtomicU64,
}

impl JobHandler {
    pub fn new(pool: DbPool, settings: WorkerSettings, delivery_limit: u32) -> Self {
        Self {
            pool,
            replica: None,
            settings,
            delivery_limit,
            cache: Mutex::new(None),
            observer: None,
            lowered_for_packet: AtomicU64::new(0),
        }
    }

    /// Reads the inputs from `replica` (a read replica of the primary this handler writes reports to).
    pub fn reading_from(mut self, replica: DbPool) -> Self {
        self.replica = Some(replica);
        self
    }

    /// Tells `observer` of the progress of every report this handler computes, from the engine's threads
    /// (tests pace a report with it, to watch its progress or to stop a worker in the middle of one).
    pub fn observed_by(mut self, observer: impl Progress + Send + 'static) -> Self {
        self.observer = Some(Box::new(observer));
        self
    }

    /// The ingest state the kept dataset reflects (`None` before the first job).
    pub fn cached_version(&self) -> Option<IngestVersion> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner).as_ref().map(|d| d.version)
    }

    /// How many polls the kept dataset holds (`None` before the first job): those of the report's window.
    pub fn cached_poll_count(&self) -> Option<usize> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner).as_ref().map(|d| d.polls.len())
    }

    /// Forgets the kept dataset: the next job reads everything (benchmarks measure the cold path so).
    pub fn clear_cache(&self) {
        *self.cache.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    pub fn handle(&self, delivery: &JobDelivery<'_>) -> Outcome {
        let job: ReportJob = match serde_json::from_slice(delivery.body) {
            Ok(job) => job,
            Err(e) => return self.malformed(delivery, e),
        };
        let report_id = job.report_id;
        if !is_valid_report_id(&report_id) {
            let outcome = Outcome::InvalidReportId { report_id, message_id: delivery.message_id.map(str::to_owned) };
            log_outcome(&outcome);
            return outcome;
        }
        log::info!("report_id={report_id} job received (earlier deliveries: {})", delivery.delivery_count);
        let outcome = match self.attempt(&report_id) {
            Ok(outcome) => outcome,
            Err(JobError::Permanent(reason)) => self.fail_permanently(report_id, reason, delivery),
            Err(JobError::Retryable(cause)) if delivery.delivery_count >= self.delivery_limit => {
                let deliveries = delivery.delivery_count + 1;
                // The row is read by the API's users: the cause (SQL, driver text) goes to the log only.
                let marked = self.mark_failed(
                    &report_id,
                    &format!(
                        "gave up after {deliveries} deliveries of the job: reading or storing the data failed every \
                         time (the report worker's log has the cause); trigger a new report"
                    ),
                );
                let reason =
                    format!("gave up after {deliveries} deliveries of the job; the last attempt failed with: {cause}");
                Outcome::GaveUp { report_id, reason, marked }
            }
            Err(JobError::Retryable(reason)) => Outcome::Retry { report_id, reason },
        };
        log_outcome(&outcome);
        outcome
    }

    fn malformed(&self, delivery: &JobDelivery<'_>, e: serde_json::Error) -> Outcome {
        let reason = format!("the job message is not a report job ({e})");
        // Only an id that can be a report's reaches SQL; anything else is only logged.
        let report_id = delivery.message_id.filter(|id| is_valid_report_id(id)).map(str::to_owned);
        if let Some(hostile) = delivery.message_id.filter(|id| !is_valid_report_id(id)) {
            log::error!("message_id={} is not a report id: no report is marked Failed", printable(hostile));
        }
        if let Some(id) = &report_id {
            self.mark_failed(
                id,
                "the job message is not a report job (the report worker's log has why); trigger a new report",
            );
        }
        let outcome = Outcome::Malformed { reason, report_id };
        log_outcome(&outcome);
        outcome
    }

    fn fail_permanently(&self, report_id: String, reason: String, delivery: &JobDelivery<'_>) -> Outcome {
        let mut conn = match self.pool.get() {
            Ok(conn) => conn,
            Err(e) => {
                return self.retry_or_give_up(report_id, format!("{reason} (and marking it Failed: {e})"), delivery);
            }
        };
        match reports::mark_failed(&mut conn, &report_id, &reason) {
            Ok(_) => Outcome::Failed { report_id, reason },
            Err(e) => self.retry_or_give_up(report_id, format!("{reason} (and marking it Failed: {e})"), delivery),
        }
    }

    fn retry_or_give_up(&self, report_id: String, reason: String, delivery: &JobDelivery<'_>) -> Outcome {
        if delivery.delivery_count >= self.delivery_limit {
            Outcome::GaveUp { report_id, reason, marked: false }
        } else {
            Outcome::Retry { report_id, reason }
        }
    }

    /// Best effort: when MySQL is unreachable the dead-letter consumer marks the report later.
    fn mark_failed(&self, report_id: &str, reason: &str) -> bool {
        let result = self
            .pool
            .get()
            .map_err(|e| e.to_string())
            .and_then(|mut conn| reports::mark_failed(&mut conn, report_id, reason).map_err(|e| e.to_string()));
        match result {
            Ok(marked) => marked,
            Err(e) => {
                log::warn!("report_id={report_id} cannot mark the report Failed now: {e}");
                false
            }
        }
    }

    fn attempt(&self, report_id: &str) -> Result<Outcome, JobError> {
        let started = Instant::now();
        let mut conn = self.pool.get()?;
        let finished = |status| Ok(Outcome::AlreadyFinished { report_id: report_id.to_owned(), status });
        let unknown_after = match reports::mark_started(&mut conn, report_id)? {
            StartOutcome::Unknown => return Ok(Outcome::UnknownReport { report_id: report_id.to_owned() }),
            StartOutcome::AlreadyComplete => return finished(ReportStatus::Complete),
            StartOutcome::AlreadyFailed => return finished(ReportStatus::Failed),
            StartOutcome::Started { unknown_after_minutes, .. } => unknown_after_minutes,
        };
        let horizon = match unknown_after {
            None => Horizon::NONE,
            Some(minutes) => Horizon::minutes(u32::from(minutes)).ok_or_else(|| {
                JobError::Permanent(format!("the report asks for unknown_after_minutes = {minutes}, outside 1 to 1440"))
            })?,
        };

        let (data, stats) = match &self.replica {
            None => self.read_dataset(&mut conn)?,
            Some(replica) => {
                let mut replica_conn = replica.get()?;
                self.wait_for_replica(&mut conn, &mut replica_conn, report_id)?;
                self.read_dataset(&mut replica_conn)?
            }
        };
        log_refresh(report_id, &stats, data.version);
        let read = started.elapsed();

        let computing = Instant::now();
        let report = self.compute_with_progress(&mut conn, report_id, &data, horizon);
        let csv = render_csv(&report, &data)?;
        let compute = computing.elapsed();

        let storing = Instant::now();
        let stored = self.store(&mut conn, report_id, &report, &csv)?;
        let timings = JobTimings { read, compute, store: storing.elapsed(), total: started.elapsed() };
        Ok(stored.into_outcome(report_id, csv.len(), timings))
    }

    fn store(
        &self,
        conn: &mut MysqlConnection,
        report_id: &str,
        report: &engine::Report,
        csv: &[u8],
    ) -> Result<StoredReport, JobError> {
        let store_count = u32::try_from(report.rows.len())
            .map_err(|_| JobError::Permanent(format!("{} stores do not fit in a report row", report.rows.len())))?;
        let as_of = report.now.and_then(chrono::DateTime::from_timestamp_micros).map(|t| t.naive_utc());
        let finished_report = FinishedReport { as_of, store_count, csv };
        let chunking = self.chunking_under_packet_limit(conn)?;
        let stored = store_complete(conn, report_id, finished_report, chunking)?;
        Ok(StoredReport { stored, store_count })
    }

    /// The configured chunking, lowered under this session's `max_allowed_packet` (read per job: a few
    /// hundred µs, and a `SET GLOBAL` on the server applies without a restart of the worker).
    fn chunking_under_packet_limit(&self, conn: &mut MysqlConnection) -> Result<reports::Chunking, JobError> {
        let configured = self.settings.chunking();
        let max_allowed_packet = packet::max_allowed_packet(conn)?;
        let capped = packet::capped_chunking(configured, max_allowed_packet);
        if capped != configured
            && self.lowered_for_packet.swap(max_allowed_packet, Ordering::Relaxed) != max_allowed_packet
        {
            log::warn!(
                "the server's max_allowed_packet is {max_allowed_packet} bytes: report chunks are written in                  statements of at most {} bytes (worker.max_insert_bytes is {}) and chunks of at most {} bytes                  (worker.chunk_bytes is {})",
                capped.max_statement_bytes,
                configured.max_statement_bytes,
                capped.chunk_bytes,
                configured.chunk_bytes
            );
        }
        Ok(capped)
    }

    /// Waits (up to `worker.replica_wait_ms`) until the replica holds every load the report was triggered
    /// on, so a lagging replica never gives a report older data than its `data_version` says. Newer data
    /// is fine: the primary could have moved on too.
    fn wait_for_replica(
        &self,
        primary: &mut MysqlConnection,
        replica: &mut MysqlConnection,
        report_id: &str,
    ) -> Result<(), JobError> {
        let Some(wanted) = reports::find(primary, report_id)?.and_then(|r| r.data_version()) else {
            return Ok(());
        };
        let deadline = Instant::now() + Duration::from_millis(self.settings.replica_wait_ms);
        loop {
            let seen = versions::current(replica)?;
            if seen.settled_load_id >= wanted.settled_load_id {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(JobError::Retryable(format!(
                    "the read replica has not caught up with the data of the report (it has the loads up to {}, \
                     the report needs {})",
                    seen.settled_load_id, wanted.settled_load_id
                )));
            }
            std::thread::sleep(REPLICA_POLL);
        }
    }

    /// Brings the kept dataset up to date inside one consistent-snapshot transaction and hands out a
    /// shared reference to it; the lock is released before the report is computed.
    fn read_dataset(&self, conn: &mut MysqlConnection) -> Result<(Arc<Dataset>, RefreshStats), JobError> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        // Refresh a copy of the handle: on error the kept dataset stays as it was.
        let mut working = cache.clone();
        let stats = db::with_consistent_snapshot(conn, |conn| dataset::refresh(&mut working, conn))?;
        let data = working.ok_or_else(|| JobError::Retryable("the data was not read".into()))?;
        *cache = Some(Arc::clone(&data));
        Ok((data, stats))
    }

    /// Runs the engine while a ticker writes `stores_done` / `stores_total` every `progress_interval_ms`
    /// (the read transaction is over by now, so these writes are visible at once).
    fn compute_with_progress(
        &self,
        conn: &mut MysqlConnection,
        report_id: &str,
        data: &Dataset,
        horizon: Horizon,
    ) -> engine::Report {
        let interval = Duration::from_millis(self.settings.progress_interval_ms);
        let (ticks, ticked) = mpsc::channel();
        let progress = ProgressCounter::new(ticks.clone(), self.observer.as_deref());
        std::thread::scope(|scope| {
            let counted = &progress;
            scope.spawn(move || write_progress_until_stopped(conn, report_id, counted, &ticked, interval));
            let inputs = Inputs { polls: &data.polls, hours: &data.hours, zones: &data.zones };
            let report = engine::report(inputs, horizon, &progress);
            // The ticker may already be gone (it never fails); nothing waits for this message then.
            let _ = ticks.send(Tick::Stop);
            report
        })
    }
}

/// What the store step wrote, before it becomes an [`Outcome`].
struct StoredReport {
    stored: Stored,
    store_count: u32,
}

impl StoredReport {
    fn into_outcome(self, report_id: &str, csv_bytes: usize, timings: JobTimings) -> Outcome {
        let report_id = report_id.to_owned();
        match self.stored {
            Stored::Complete { chunks } => {
                Outcome::Completed { report_id, stores: self.store_count, csv_bytes, chunks, timings }
            }
            Stored::AlreadyComplete => Outcome::AlreadyFinished { report_id, status: ReportStatus::Complete },
            Stored::Unknown => Outcome::UnknownReport { report_id },
        }
    }
}

fn render_csv(report: &engine::Report, data: &Dataset) -> Result<Vec<u8>, JobError> {
    let mut csv = Vec::with_capacity(report.rows.len() * 80 + engine::HEADER_WITH_UNKNOWN.len() + 1);
    report
        .write_csv(&mut csv, |key| data.store_id(key).unwrap_or_default())
        .map_err(|e| JobError::Permanent(format!("writing the CSV in memory failed: {e}")))?;
    Ok(csv)
}

/// Messages to the progress ticker.
enum Tick {
    /// The engine knows the total: write it now rather than at the next interval.
    Started,
    Stop,
}

/// The engine's progress, counted for the ticker and passed on to the handler's own observer.
struct ProgressCounter<'a> {
    /// `usize::MAX` until the engine has said how many stores the report has.
    total: AtomicUsize,
    done: AtomicUsize,
    ticks: mpsc::Sender<Tick>,
    observer: Option<&'a (dyn Progress + Send)>,
}

impl<'a> ProgressCounter<'a> {
    fn new(ticks: mpsc::Sender<Tick>, observer: Option<&'a (dyn Progress + Send)>) -> Self {
        Self { total: AtomicUsize::new(usize::MAX), done: AtomicUsize::new(0), ticks, observer }
    }

    /// `(done, total)`, once the total is known.
    fn figures(&self) -> Option<(u32, u32)> {
        let total = self.total.load(Ordering::Relaxed);
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        (total != usize::MAX).then(|| (clamp(self.done.load(Ordering::Relaxed)), clamp(total)))
    }
}

impl Progress for ProgressCounter<'_> {
    fn started(&self, stores_total: usize) {
        self.total.store(stores_total, Ordering::Relaxed);
        let _ = self.ticks.send(Tick::Started);
        if let Some(observer) = self.observer {
            observer.started(stores_total);
        }
    }

    fn store_done(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
        if let Some(observer) = self.observer {
            observer.store_done();
        }
    }
}

fn write_progress_until_stopped(
    conn: &mut MysqlConnection,
    report_id: &str,
    progress: &ProgressCounter<'_>,
    ticked: &mpsc::Receiver<Tick>,
    interval: Duration,
) {
    loop {
        match ticked.recv_timeout(interval) {
            Ok(Tick::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Ok(Tick::Started) | Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let Some((done, total)) = progress.figures() else { continue };
        if let Err(e) = reports::set_progress(conn, report_id, done, total) {
            // Progress is a courtesy; the report itself does not depend on it.
            log::warn!("report_id={report_id} cannot write progress: {e}");
        }
    }
}

fn log_refresh(report_id: &str, stats: &RefreshStats, version: IngestVersion) {
    let what = if stats.full_read {
        format!("read the window's {} polls and {} stores", stats.polls_read, stats.stores_read)
    } else {
        format!(
            "merged {} changed polls ({} new stores), dropped {} older than the window",
            stats.polls_read, stats.stores_read, stats.polls_dropped
        )
    };
    let tables = match (stats.hours_read, stats.zones_read) {
        (None, None) => String::new(),
        (hours, zones) => format!(
            ", hours rows {}, zones {} ({} unknown names)",
            hours.map_or("kept".into(), |n| n.to_string()),
            zones.map_or("kept".into(), |n| n.to_string()),
            stats.unknown_zones
        ),
    };
    log::info!(
        "report_id={report_id} data as of load_id={} hours_snapshot={:?} zones_snapshot={:?}: {what}{tables} in {:.0} ms",
        version.settled_load_id,
        version.hours_snapshot,
        version.zones_snapshot,
        stats.elapsed.as_secs_f64() * 1e3
    );
}

fn log_outcome(outcome: &Outcome) {
    match outcome {
        Outcome::Completed { report_id, stores, csv_bytes, chunks, timings } => log::info!(
            "report_id={report_id} Complete: {stores} stores, {csv_bytes} bytes in {chunks} chunks; read {:.0} ms, \
             compute {:.0} ms, store {:.0} ms, total {:.0} ms",
            ms(timings.read),
            ms(timings.compute),
            ms(timings.store),
            ms(timings.total)
        ),
        Outcome::AlreadyFinished { report_id, status } => {
            log::info!("report_id={report_id} already {}: acknowledged without work", status.as_str())
        }
        Outcome::Failed { report_id, reason } => log::error!("report_id={report_id} Failed: {reason}"),
        Outcome::UnknownReport { report_id } => {
            log::error!("report_id={report_id} no such report: job dropped")
        }
        Outcome::Malformed { reason, report_id } => {
            log::error!("report_id={} {reason}: dead-lettered", report_id.as_deref().unwrap_or("?"))
        }
        Outcome::InvalidReportId { report_id, message_id } => log::error!(
            "message_id={} the job names report_id={} which is not a report id (21 characters of A-Z a-z 0-9 _ -): \
             acknowledged and dropped",
            message_id.as_deref().map_or_else(|| "(none)".into(), printable),
            printable(report_id)
        ),
        Outcome::Retry { report_id, reason } => log::warn!("report_id={report_id} will be retried: {reason}"),
        Outcome::GaveUp { report_id, reason, marked } => log::error!(
            "report_id={report_id} dead-lettered{}: {reason}",
            if *marked { " and marked Failed" } else { " (not yet marked Failed)" }
        ),
    }
}

/// Text from a message, fit for one log line: control characters escaped, at most 64 characters.
pub fn printable(text: &str) -> String {
    const SHOWN: usize = 64;
    let mut shown: String = text.chars().take(SHOWN).flat_map(char::escape_debug).collect();
    if text.chars().nth(SHOWN).is_some() {
        shown.push('…');
    }
    format!("\"{shown}\"")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
