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
//!
//! A report of more than `worker.shard_stores` stores is planned instead of computed: the report job's
//! outcome is [`Outcome::Planned`] with one [`ShardJob`] per shard, which the consumer publishes before it
//! acknowledges the report job (a redelivered report job finds the plan and publishes the shards not yet
//! stored again). Each shard job runs through [`JobHandler::handle_shard`] under the same policy: a shard
//! that cannot be computed fails its report, and the report's other shards are then acknowledged without
//! work.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use diesel::mysql::MysqlConnection;
use shared_model::db::{self, DbPool};
use shared_model::messages::{ReportJob, ShardJob};
use shared_model::models::reports::{
    self, FinishedReport, ReportStatus, StartOutcome, StoreError, Stored, is_valid_report_id, store_complete,
};
use shared_model::models::shards::{self, KeyRange, Plan, Planned, ShardPart, ShardStored, StartShard};
use shared_model::models::{polls, versions};
use shared_model::settings::AmqpSettings;
use uptime_core::engine::{self, Horizon, Inputs, Progress};
use uptime_core::time::Micros;

use crate::dataset::{self, Dataset, DatasetCache, DatasetError, IngestVersion, Pin, RefreshStats, Scope};
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
    /// The report is cut into shards: publish `jobs` (the shards not stored yet), then acknowledge.
    Planned { report_id: String, shards_total: u32, jobs: Vec<ShardJob> },
    /// A shard's part of the CSV is stored; `report_complete`: it was the last, the report is Complete.
    ShardStored {
        report_id: String,
        shard_no: u32,
        shards_done: u32,
        shards_total: u32,
        stores: u32,
        report_complete: bool,
        timings: JobTimings,
    },
    /// Nothing to do: another delivery of this shard's job stored it.
    ShardAlreadyStored { report_id: String, shard_no: u32 },
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
            | Outcome::Planned { .. }
            | Outcome::ShardStored { .. }
            | Outcome::ShardAlreadyStored { .. }
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
            e @ (StoreError::TooLarge(_) | StoreError::BadChunking { .. } | StoreError::Merge(_)) => {
                JobError::Permanent(e.to_string())
            }
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
    /// Held while a job brings a dataset up to date, so two jobs never merge into one at once.
    cache: Mutex<DatasetCache>,
    /// The consumer this handler works for, recorded on the shards it stores.
    worker_name: String,
    /// How many shard queues there are (a shard's slot is its number modulo this).
    shard_queues: u16,
    /// `(rank, live workers)` of this worker, once the registry has said: the shard slots it owns.
    ownership: Mutex<Option<(usize, usize)>>,
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
            delivery_limit,
            cache: Mutex::new(DatasetCache::new(settings.memory_budget_bytes())),
            worker_name: unique_worker_name(),
            shard_queues: AmqpSettings::default().shard_queues,
            ownership: Mutex::new(None),
            observer: None,
            lowered_for_packet: AtomicU64::new(0),
            settings,
        }
    }

    /// The name this worker goes by in `report_workers`, on the shards it stores and (with a session
    /// number) as its consumer tag.
    pub fn worker_name(&self) -> &str {
        &self.worker_name
    }

    /// The number of shard queues of the topology (`amqp.shard_queues`).
    pub fn with_shard_queues(mut self, shard_queues: u16) -> Self {
        self.shard_queues = shard_queues.max(1);
        self
    }

    /// Records that this worker is number `rank` of `workers` live ones, and forgets the shard data of
    /// slots it no longer owns.
    pub fn set_ownership(&self, rank: usize, workers: usize) {
        *self.ownership.lock().unwrap_or_else(PoisonError::into_inner) = Some((rank, workers));
        let forgotten = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .forget_slots(|slot| shared_model::queue::owns_slot(slot, rank, workers));
        if forgotten > 0 {
            log::info!("forgot the data of {forgotten} shards another worker owns now");
        }
    }

    /// How many shard datasets (or the whole set) are kept, and their estimated bytes.
    pub fn cached_datasets(&self) -> (usize, usize) {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        (cache.len(), cache.bytes())
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

    /// The ingest state the kept whole-set dataset reflects (`None` before the first whole report).
    pub fn cached_version(&self) -> Option<IngestVersion> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner).get(KeyRange::ALL).map(|d| d.version)
    }

    /// How many polls the kept whole-set dataset holds (`None` before the first whole report): those of
    /// the report's window.
    pub fn cached_poll_count(&self) -> Option<usize> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner).get(KeyRange::ALL).map(|d| d.polls.len())
    }

    /// Forgets every kept dataset: the next job reads everything (benchmarks measure the cold path so).
    pub fn clear_cache(&self) {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }

    pub fn handle(&self, delivery: &JobDelivery<'_>) -> Outcome {
        self.run(delivery, |job: &ReportJob| {
            log::info!("report_id={} job received (earlier deliveries: {})", job.report_id, delivery.delivery_count);
            self.attempt(job)
        })
    }

    /// One shard of a planned report (a delivery from a shard queue): computed with the plan's `now` and
    /// snapshots, stored as its part of the CSV, the report completed by the last part.
    pub fn handle_shard(&self, delivery: &JobDelivery<'_>) -> Outcome {
        self.run(delivery, |job: &ShardJob| {
            log::info!(
                "report_id={} shard {} of {} received (earlier deliveries: {})",
                job.report_id,
                job.shard_no,
                job.shards_total,
                delivery.delivery_count
            );
            self.attempt_shard(job)
        })
    }

    /// A delivery's way for either kind of job: read, its report id checked before any SQL, the attempt,
    /// its failures settled by the policy of the module doc, the outcome logged.
    fn run<J: serde::de::DeserializeOwned + NamesReport>(
        &self,
        delivery: &JobDelivery<'_>,
        attempt: impl FnOnce(&J) -> Result<Outcome, JobError>,
    ) -> Outcome {
        let job: J = match serde_json::from_slice(delivery.body) {
            Ok(job) => job,
            Err(e) => return self.malformed(delivery, e),
        };
        let report_id = job.report_id().to_owned();
        if !is_valid_report_id(&report_id) {
            let outcome = Outcome::InvalidReportId { report_id, message_id: delivery.message_id.map(str::to_owned) };
            log_outcome(&outcome);
            return outcome;
        }
        let attempted = attempt(&job);
        let outcome = self.settle(report_id, delivery, attempted);
        log_outcome(&outcome);
        outcome
    }

    /// The failure policy of the module doc, the same for a report's job and a shard's.
    fn settle(&self, report_id: String, delivery: &JobDelivery<'_>, attempt: Result<Outcome, JobError>) -> Outcome {
        match attempt {
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
        }
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

    fn attempt(&self, job: &ReportJob) -> Result<Outcome, JobError> {
        let report_id = job.report_id.as_str();
        let started = Instant::now();
        let mut conn = self.pool.get()?;
        let finished = |status| Ok(Outcome::AlreadyFinished { report_id: report_id.to_owned(), status });
        let unknown_after = match reports::mark_started(&mut conn, report_id)? {
            StartOutcome::Unknown => return Ok(Outcome::UnknownReport { report_id: report_id.to_owned() }),
            StartOutcome::AlreadyComplete => return finished(ReportStatus::Complete),
            StartOutcome::AlreadyFailed => return finished(ReportStatus::Failed),
            StartOutcome::Started { unknown_after_minutes, .. } => unknown_after_minutes,
        };
        let horizon = horizon_of(unknown_after)?;

        if let Some(planned) = self.plan_if_large(&mut conn, job)? {
            return Ok(planned);
        }

        let (data, stats) = self.read_inputs(&mut conn, report_id, &Scope::WHOLE, None)?;
        log_refresh(report_id, &stats, data.version);
        let read = started.elapsed();

        let computing = Instant::now();
        let report = self.compute_with_progress(&mut conn, report_id, &data, horizon, None, |conn, done, total| {
            reports::set_progress(conn, report_id, done, total)
        });
        let csv = render_csv(&report, &data, false)?;
        let compute = computing.elapsed();

        let storing = Instant::now();
        let stored = self.store(&mut conn, report_id, &report, &csv)?;
        let timings = JobTimings { read, compute, store: storing.elapsed(), total: started.elapsed() };
        Ok(stored.into_outcome(report_id, csv.len(), timings))
    }

    /// Cuts a report of more than `worker.shard_stores` stores into shards (reading where the inputs are
    /// read) and writes the plan; `None` for a report computed whole. A report planned before keeps its
    /// plan, whatever the data says now.
    fn plan_if_large(&self, conn: &mut MysqlConnection, job: &ReportJob) -> Result<Option<Outcome>, JobError> {
        let report_id = job.report_id.as_str();
        let planned_before = reports::find(conn, report_id)?.is_some_and(|report| report.shards_total.is_some());
        let plan = if planned_before {
            Plan { as_of: None, hours_snapshot: None, zones_snapshot: None, shards: Vec::new() }
        } else {
            let shard_stores = self.settings.shard_stores;
            if shard_stores == 0 {
                return Ok(None);
            }
            let cut = |read: &mut MysqlConnection| {
                db::with_consistent_snapshot(read, |read| -> Result<Option<Plan>, diesel::result::Error> {
                    if shards::count_stores(read)? <= u64::from(shard_stores) {
                        return Ok(None);
                    }
                    let Some(now) = polls::newest_polled_at(read)? else { return Ok(None) };
                    let version = versions::current(read)?;
                    let cuts = shards::plan_cuts(read, shard_stores)?;
                    Ok(Some(Plan {
                        as_of: chrono::DateTime::from_timestamp_micros(now).map(|t| t.naive_utc()),
                        hours_snapshot: version.hours_snapshot,
                        zones_snapshot: version.zones_snapshot,
                        shards: KeyRange::cut_at(&cuts),
                    }))
                })
            };
            let plan = self.on_inputs(conn, report_id, |read| Ok(cut(read)?))?;
            match plan {
                Some(plan) if plan.shards.len() > 1 => plan,
                _ => return Ok(None),
            }
        };
        let outcome = match shards::plan(conn, report_id, &plan)? {
            Planned::Shards { shards_total, pending } => Outcome::Planned {
                report_id: report_id.to_owned(),
                shards_total,
                jobs: pending
                    .into_iter()
                    .map(|shard_no| ShardJob {
                        report_id: report_id.to_owned(),
                        shard_no,
                        shards_total,
                        requested_at: job.requested_at.clone(),
                    })
                    .collect(),
            },
            Planned::Finished(status) => Outcome::AlreadyFinished { report_id: report_id.to_owned(), status },
            Planned::Unknown => Outcome::UnknownReport { report_id: report_id.to_owned() },
        };
        Ok(Some(outcome))
    }

    fn attempt_shard(&self, job: &ShardJob) -> Result<Outcome, JobError> {
        let (report_id, shard_no) = (job.report_id.as_str(), job.shard_no);
        let started = Instant::now();
        let mut conn = self.pool.get()?;
        let work = match shards::start_shard(&mut conn, report_id, shard_no, &self.worker_name)? {
            StartShard::Started(work) => work,
            StartShard::AlreadyStored => {
                return Ok(Outcome::ShardAlreadyStored { report_id: report_id.to_owned(), shard_no });
            }
            StartShard::ReportFinished(status) => {
                return Ok(Outcome::AlreadyFinished { report_id: report_id.to_owned(), status });
            }
            StartShard::Unknown => return Ok(Outcome::UnknownReport { report_id: report_id.to_owned() }),
        };
        let horizon = horizon_of(work.unknown_after_minutes)?;
        let now: Micros = work
            .as_of
            .map(|at| at.and_utc().timestamp_micros())
            .ok_or_else(|| JobError::Permanent("the report was cut into shards without a time to compute at".into()))?;
        let scope = Scope {
            range: work.range,
            pin: Pin::Plan { now, hours_snapshot: work.hours_snapshot, zones_snapshot: work.zones_snapshot },
            share: work.shards_total,
        };
        let slot = shared_model::settings::shard_slot(shard_no, self.shard_queues);
        let (data, stats) = self.read_inputs(&mut conn, report_id, &scope, Some(slot))?;
        log_refresh(&format!("{report_id} shard={shard_no}"), &stats, data.version);
        let read = started.elapsed();

        let computing = Instant::now();
        let report =
            self.compute_with_progress(&mut conn, report_id, &data, horizon, Some(now), |conn, done, total| {
                shards::set_shard_progress(conn, report_id, shard_no, done, total)
            });
        let csv = render_csv(&report, &data, true)?;
        let compute = computing.elapsed();
        drop(data);
        self.forget_unless_owned(slot, scope.range);

        let storing = Instant::now();
        let store_count = u32::try_from(report.rows.len())
            .map_err(|_| JobError::Permanent(format!("{} stores do not fit in a report row", report.rows.len())))?;
        let chunking = self.chunking_under_packet_limit(&mut conn)?;
        let part = ShardPart { store_count, csv: &csv, worker: &self.worker_name };
        let header = engine::Report::header(horizon);
        let merge = |parts: &[&[u8]]| engine::merge_parts(header, parts).map_err(|e| e.to_string());
        let stored = shards::store_shard(&mut conn, report_id, shard_no, part, chunking, &merge)?;
        let timings = JobTimings { read, compute, store: storing.elapsed(), total: started.elapsed() };
        let report_id = report_id.to_owned();
        Ok(match stored {
            ShardStored::Stored { shards_done, shards_total, report_complete, .. } => Outcome::ShardStored {
                report_id,
                shard_no,
                shards_done,
                shards_total,
                stores: store_count,
                report_complete,
                timings,
            },
            ShardStored::AlreadyStored => Outcome::ShardAlreadyStored { report_id, shard_no },
            ShardStored::ReportFinished(status) => Outcome::AlreadyFinished { report_id, status },
            ShardStored::Unknown => Outcome::UnknownReport { report_id },
        })
    }

    /// A worker keeps the data of the shards it owns only: a shard it computed because its owner was busy
    /// or not yet known goes when it is done.
    fn forget_unless_owned(&self, slot: u16, range: KeyRange) {
        let Some((rank, workers)) = *self.ownership.lock().unwrap_or_else(PoisonError::into_inner) else { return };
        if !shared_model::queue::owns_slot(slot, rank, workers) {
            self.cache.lock().unwrap_or_else(PoisonError::into_inner).forget_slots(|kept| kept != slot);
            log::debug!("forgot {range}: slot {slot} belongs to another worker");
        }
    }

    /// Reads the inputs of `scope` where they are read ([`Self::on_inputs`]), bringing the kept dataset of
    /// its range up to date.
    fn read_inputs(
        &self,
        conn: &mut MysqlConnection,
        report_id: &str,
        scope: &Scope,
        slot: Option<u16>,
    ) -> Result<(Arc<Dataset>, RefreshStats), JobError> {
        self.on_inputs(conn, report_id, |read| self.read_dataset(read, scope, slot))
    }

    /// Runs `read` on the connection the inputs are read from: the replica once it holds the report's
    /// data, or `primary` itself.
    fn on_inputs<T>(
        &self,
        primary: &mut MysqlConnection,
        report_id: &str,
        read: impl FnOnce(&mut MysqlConnection) -> Result<T, JobError>,
    ) -> Result<T, JobError> {
        match &self.replica {
            None => read(primary),
            Some(replica) => {
                let mut replica_conn = replica.get()?;
                self.wait_for_replica(primary, &mut replica_conn, report_id)?;
                read(&mut replica_conn)
            }
        }
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
    fn read_dataset(
        &self,
        conn: &mut MysqlConnection,
        scope: &Scope,
        slot: Option<u16>,
    ) -> Result<(Arc<Dataset>, RefreshStats), JobError> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        // Refresh a copy of the handle: on error the kept dataset stays as it was.
        let mut working = cache.get(scope.range);
        let stats = db::with_consistent_snapshot(conn, |conn| dataset::refresh(&mut working, conn, scope))?;
        let data = working.ok_or_else(|| JobError::Retryable("the data was not read".into()))?;
        let forgotten = cache.keep(Arc::clone(&data), slot);
        if !forgotten.is_empty() {
            log::info!(
                "over worker.memory_budget_mb ({} MiB): forgot the data of {} shards ({} MiB kept)",
                self.settings.memory_budget_mb,
                forgotten.len(),
                cache.bytes() >> 20
            );
        }
        Ok((data, stats))
    }

    /// Runs the engine (at `now`, or the newest poll's) while a ticker writes `stores_done` /
    /// `stores_total` with `write_progress` every `progress_interval_ms` (the read transaction is over by
    /// now, so these writes are visible at once).
    fn compute_with_progress(
        &self,
        conn: &mut MysqlConnection,
        report_id: &str,
        data: &Dataset,
        horizon: Horizon,
        now: Option<Micros>,
        write_progress: impl Fn(&mut MysqlConnection, u32, u32) -> diesel::QueryResult<bool> + Send + Sync,
    ) -> engine::Report {
        let interval = Duration::from_millis(self.settings.progress_interval_ms);
        let (ticks, ticked) = mpsc::channel();
        let progress = ProgressCounter::new(ticks.clone(), self.observer.as_deref());
        std::thread::scope(|scope| {
            let counted = &progress;
            let write = &write_progress;
            scope.spawn(move || write_progress_until_stopped(conn, report_id, counted, &ticked, interval, write));
            let inputs = Inputs { polls: &data.polls, hours: &data.hours, zones: &data.zones };
            let report = match now {
                None => engine::report(inputs, horizon, &progress),
                Some(now) => {
                    engine::Report { now: Some(now), horizon, rows: engine::compute(inputs, now, horizon, &progress) }
                }
            };
            // The ticker may already be gone (it never fails); nothing waits for this message then.
            let _ = ticks.send(Tick::Stop);
            report
        })
    }
}

/// The gap horizon a report row asks for (SPEC §2b); a value the API would have refused is a report no
/// retry can compute.
fn horizon_of(unknown_after_minutes: Option<u16>) -> Result<Horizon, JobError> {
    match unknown_after_minutes {
        None => Ok(Horizon::NONE),
        Some(minutes) => Horizon::minutes(u32::from(minutes)).ok_or_else(|| {
            JobError::Permanent(format!("the report asks for unknown_after_minutes = {minutes}, outside 1 to 1440"))
        }),
    }
}

/// A job message that names the report it works for.
trait NamesReport {
    fn report_id(&self) -> &str;
}

impl NamesReport for ReportJob {
    fn report_id(&self) -> &str {
        &self.report_id
    }
}

impl NamesReport for ShardJob {
    fn report_id(&self) -> &str {
        &self.report_id
    }
}

/// `report-worker@<host>:<pid>:<n>`: unique among the workers of a deployment (and the handlers of a test
/// process), readable in the management UI and in `report_workers`.
fn unique_worker_name() -> String {
    static HANDLERS: AtomicU64 = AtomicU64::new(0);
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let n = HANDLERS.fetch_add(1, Ordering::Relaxed);
    format!("report-worker@{host}:{}:{nanos:08x}{n}", std::process::id())
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

/// The report's CSV, or with `part` a shard's part of it (its rows in store-id order, no header).
fn render_csv(report: &engine::Report, data: &Dataset, part: bool) -> Result<Vec<u8>, JobError> {
    let mut csv = Vec::with_capacity(report.rows.len() * 80 + engine::HEADER_WITH_UNKNOWN.len() + 1);
    let store_id = |key| data.store_id(key).unwrap_or_default();
    let written = if part { report.write_csv_part(&mut csv, store_id) } else { report.write_csv(&mut csv, store_id) };
    written.map_err(|e| JobError::Permanent(format!("writing the CSV in memory failed: {e}")))?;
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
    write_progress: &(impl Fn(&mut MysqlConnection, u32, u32) -> diesel::QueryResult<bool> + Sync),
) {
    loop {
        match ticked.recv_timeout(interval) {
            Ok(Tick::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Ok(Tick::Started) | Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let Some((done, total)) = progress.figures() else { continue };
        if let Err(e) = write_progress(conn, done, total) {
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
        Outcome::Planned { report_id, shards_total, jobs } => log::info!(
            "report_id={report_id} cut into {shards_total} shards; publishing the jobs of {} of them",
            jobs.len()
        ),
        Outcome::ShardStored { report_id, shard_no, shards_done, shards_total, stores, report_complete, timings } => {
            log::info!(
                "report_id={report_id} shard {shard_no} stored: {stores} stores ({shards_done} of {shards_total} \
                 shards done{}); read {:.0} ms, compute {:.0} ms, store {:.0} ms, total {:.0} ms",
                if *report_complete { ", report Complete" } else { "" },
                ms(timings.read),
                ms(timings.compute),
                ms(timings.store),
                ms(timings.total)
            )
        }
        Outcome::ShardAlreadyStored { report_id, shard_no } => {
            log::info!("report_id={report_id} shard {shard_no} already stored: acknowledged without work")
        }
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
