//! Models and queries for `reports` and `report_chunks`: the life of a report from the gateway's trigger
//! to the worker's finished CSV.
//!
//! ```text
//! create_or_share (Running, queued_at NULL = in the outbox) --publish confirmed--> mark_queued
//!   --worker--> mark_started (attempts + 1) --> set_progress ... --> store_complete (Complete, chunks)
//!                                                              \--> mark_failed (Failed, error)
//!   --no sign of life for a while (sweep)--> mark_republished (redeliveries + 1) --> queued again
//!   --finished longer than the retention ago, no live sharer (sweep)--> delete_csv (csv_deleted_at)
//! ```
//!
//! A report may share another's computation (`shares_report_id`): it was triggered on the same data
//! version while the other was Running or Complete. It never has a job or chunks of its own; the writes
//! that finish the shared report (`store_complete`, `mark_failed`) finish its sharers in the same
//! transaction, so a sharer's status is always its shared report's. Its CSV is the shared report's chunks,
//! kept until the last report sharing them has expired.
//!
//! The worker's `mark_started` and `set_progress` (every 250 ms while it computes) stamp `heartbeat_at`,
//! so a report whose job was lost after the broker confirmed it is noticed and published again.
//!
//! Every write of the worker is conditional on the status it expects, so duplicate deliveries of one job
//! (the outbox may publish a job twice) stay harmless: the first to finish stores the report, a later one
//! finds it Complete and writes nothing. A Complete report never changes again, so readers may cache it
//! and read its chunks over several queries.
//!
//! The CSV is stored as numbered chunks well under MySQL's 16 MiB `max_allowed_packet`, so a report of a
//! million stores (~60 MB) is written and read in pieces.

use chrono::NaiveDateTime;
use diesel::mysql::MysqlConnection;
use diesel::prelude::*;

use super::idempotency_keys::{self, IdempotencyKeyRow};
use super::text_enum::text_enum;
use super::versions::DataVersion;
use crate::db::NamedLock;
use crate::schema::{report_chunks, reports};

/// Length of a report id (a nanoid of the default alphabet `A-Za-z0-9_-`).
pub const REPORT_ID_LEN: usize = 21;
/// A failure reason is for a person; anything longer is cut.
const MAX_ERROR_CHARS: usize = 2_000;
/// The largest chunk or INSERT statement accepted: 1 MiB under MySQL's default 16 MiB packet.
pub const MAX_STATEMENT_BYTES: usize = 15 << 20;

/// True when `text` could be a report id: 21 characters of the nanoid alphabet. Anything else is
/// unknown without asking the database.
pub fn is_valid_report_id(text: &str) -> bool {
    text.len() == REPORT_ID_LEN && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A report's status, as the `status` column holds it and the API answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, diesel::AsExpression, diesel::FromSqlRow)]
#[diesel(sql_type = diesel::sql_types::Varchar)]
pub enum ReportStatus {
    Running,
    Complete,
    Failed,
}

text_enum!(ReportStatus, Running => "Running", Complete => "Complete", Failed => "Failed");

impl ReportStatus {
    /// Every status, in the order the API documents them.
    pub const ALL: [ReportStatus; 3] = [ReportStatus::Running, ReportStatus::Complete, ReportStatus::Failed];

    /// A status this code does not know reads as Running, so a newer writer's state is never taken for
    /// finished work.
    fn from_word(word: &str) -> Option<ReportStatus> {
        Some(Self::known_word(word).unwrap_or(ReportStatus::Running))
    }
}

/// One row of `reports`. Times are UTC.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = reports, check_for_backend(diesel::mysql::Mysql))]
pub struct Report {
    pub report_id: String,
    pub status: ReportStatus,
    pub created_at: NaiveDateTime,
    /// When the broker confirmed the job; `None` while the job is in the outbox.
    pub queued_at: Option<NaiveDateTime>,
    /// Start of the latest attempt.
    pub started_at: Option<NaiveDateTime>,
    pub finished_at: Option<NaiveDateTime>,
    /// The `now` the report used; `None` for a report of no poll at all (header only).
    pub as_of: Option<NaiveDateTime>,
    pub stores_done: Option<u32>,
    pub stores_total: Option<u32>,
    /// Rows of the finished CSV (stores).
    pub store_count: Option<u32>,
    pub csv_bytes: Option<u64>,
    pub attempts: u32,
    pub error: Option<String>,
    /// The data version seen at the trigger (all three `None` for a report created without one).
    pub data_polls_load_id: Option<u64>,
    pub data_hours_snapshot: Option<u64>,
    pub data_zones_snapshot: Option<u64>,
    /// The report whose computation and CSV this one shares; `None`: it computes its own.
    pub shares_report_id: Option<String>,
    /// The last sign of life of a worker on it (start of an attempt, progress).
    pub heartbeat_at: Option<NaiveDateTime>,
    /// Jobs the sweep published again because no worker showed signs of life.
    pub redeliveries: u32,
    /// When the expired CSV was deleted; `None` while it is kept.
    pub csv_deleted_at: Option<NaiveDateTime>,
    /// The gap horizon of SPEC §2b the report was asked for; `None`: none (SPEC §2's six columns).
    pub unknown_after_minutes: Option<u16>,
    /// How many shards the report was cut into; `None` while unplanned or computed whole.
    pub shards_total: Option<u32>,
    /// Shards stored so far (of a sharded report).
    pub shards_done: Option<u32>,
}

/// How far a running report is. A sharded report counts the stores of the shards started so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub stores_done: u32,
    pub stores_total: u32,
    /// `(shards_done, shards_total)` of a sharded report.
    pub shards: Option<(u32, u32)>,
}

impl Report {
    /// `None` until a worker has written progress.
    pub fn progress(&self) -> Option<Progress> {
        let shards = self.shards_total.map(|total| (self.shards_done.unwrap_or(0), total));
        match (self.stores_done, self.stores_total) {
            (Some(stores_done), Some(stores_total)) => Some(Progress { stores_done, stores_total, shards }),
            (None, Some(stores_total)) => Some(Progress { stores_done: 0, stores_total, shards }),
            _ => shards.map(|shards| Progress { stores_done: 0, stores_total: 0, shards: Some(shards) }),
        }
    }

    /// The data version the report reflects; `None` for a report created without one.
    pub fn data_version(&self) -> Option<DataVersion> {
        self.data_polls_load_id.map(|settled_load_id| DataVersion {
            settled_load_id,
            hours_snapshot: self.data_hours_snapshot,
            zones_snapshot: self.data_zones_snapshot,
        })
    }

    /// The report whose chunks hold this report's CSV (and whose progress is this report's).
    pub fn computed_by(&self) -> &str {
        self.shares_report_id.as_deref().unwrap_or(&self.report_id)
    }
}

pub(crate) fn utc_now() -> NaiveDateTime {
    chrono::Utc::now().naive_utc()
}

/// Inserts a new Running report of no known data version, not yet queued (in the outbox). It is never
/// shared; the gateway creates reports with [`create_or_share`].
pub fn create(conn: &mut MysqlConnection, report_id: &str, created_at: NaiveDateTime) -> QueryResult<()> {
    diesel::insert_into(reports::table)
        .values((
            reports::report_id.eq(report_id),
            reports::status.eq(ReportStatus::Running),
            reports::created_at.eq(created_at),
            reports::attempts.eq(0u32),
        ))
        .execute(conn)?;
    Ok(())
}

/// What [`create_or_share`] created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// A report of its own, in the outbox: its job must be published.
    NeedsJob,
    /// A report sharing the computation of `shared_report_id` (Running or Complete): no job.
    Shares { shared_report_id: String },
    /// Nothing stored: the report would need a job, and `pending` reports already wait for a worker
    /// (at least the `max_pending` asked for).
    TooManyPending { pending: u64 },
    /// Nothing: the idempotency key was used for the same options within its lifetime, and this is the
    /// report it created then.
    Replayed { report_id: String },
    /// Nothing: the idempotency key was used for other options within its lifetime.
    KeyReused,
}

/// Reports waiting for a worker: Running, with a job of their own (not sharing), that no worker has
/// started yet (`started_at` NULL; whether the broker confirmed the job or it is still in the outbox).
pub fn count_waiting_for_worker(conn: &mut MysqlConnection) -> QueryResult<u64> {
    let count: i64 = reports::table
        .filter(reports::status.eq(ReportStatus::Running))
        .filter(reports::shares_report_id.is_null())
        .filter(reports::started_at.is_null())
        .count()
        .get_result(conn)?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// A trigger's request: the new report's id and options, and how the trigger deduplicates.
#[derive(Debug, Clone, Copy)]
pub struct NewReport<'a> {
    pub report_id: &'a str,
    pub created_at: NaiveDateTime,
    /// A Complete report that finished before this has expired and is not shared.
    pub finished_after: NaiveDateTime,
    /// The gap horizon of SPEC §2b (1 to 1440), `None` for none.
    pub unknown_after_minutes: Option<u16>,
    /// Nothing is created when a job would be needed while this many reports already wait for a worker
    /// ([`count_waiting_for_worker`]); under the lock that count is exact.
    pub max_pending: u64,
    pub idempotency: Option<Idempotency<'a>>,
}

impl<'a> NewReport<'a> {
    /// A report with no options, no idempotency key and no bound on the reports waiting for a worker.
    pub fn plain(report_id: &'a str, created_at: NaiveDateTime, finished_after: NaiveDateTime) -> Self {
        NewReport {
            report_id,
            created_at,
            finished_after,
            unknown_after_minutes: None,
            max_pending: u64::MAX,
            idempotency: None,
        }
    }
}

/// An `Idempotency-Key` of a trigger.
#[derive(Debug, Clone, Copy)]
pub struct Idempotency<'a> {
    pub key: &'a str,
    /// The caller's token digest (hex): a key is the caller's own.
    pub client: &'a str,
    /// A digest of the trigger's options: the same key with another digest is refused.
    pub body_digest: &'a str,
    /// Keys stored before this have expired.
    pub seen_after: NaiveDateTime,
}

/// How long a trigger waits for another trigger's sharing decision before computing on its own.
const SHARING_LOCK_WAIT_SECONDS: u64 = 5;

/// Creates a Running report of the data version this connection sees. When a report of the same version
/// and options is Running, or Complete with its CSV kept and finished at or after `finished_after` (not
/// expired), the new report shares it instead (and is Complete at once when the shared one is). Triggers
/// decide one at a time under a named lock of this database, so simultaneous triggers of unchanged data
/// still make one computation; a trigger that cannot take the lock within a few seconds creates a report
/// of its own. A report that would need a job while `max_pending` reports wait for a worker is not
/// created (`TooManyPending`). With an idempotency key seen within its lifetime nothing is created: the answer names the
/// report the key created (or says the key was used for other options).
pub fn create_or_share(conn: &mut MysqlConnection, new: NewReport<'_>) -> QueryResult<Created> {
    let report_id = new.report_id;
    let lock = NamedLock::acquire_for_database(conn, "report_sharing", SHARING_LOCK_WAIT_SECONDS)?;
    if lock.is_none() {
        log::warn!("report_id={report_id}: another trigger held the sharing lock too long; computing on its own");
    }
    let created = conn.transaction(|conn| {
        if let Some(known) = new.idempotency.map(|key| replayed(conn, key)).transpose()?.flatten() {
            return Ok(known);
        }
        let version = super::versions::current(conn)?;
        let shared = match &lock {
            Some(_) => shareable(conn, version, new.unknown_after_minutes, new.finished_after)?,
            None => None,
        };
        if shared.is_none() {
            let pending = count_waiting_for_worker(conn)?;
            if pending >= new.max_pending {
                return Ok(Created::TooManyPending { pending });
            }
        }
        insert_with_version(conn, &new, version, shared.as_ref())?;
        if let Some(key) = new.idempotency {
            let row = IdempotencyKeyRow {
                idempotency_key: key.key.to_owned(),
                client: key.client.to_owned(),
                body_digest: key.body_digest.to_owned(),
                report_id: report_id.to_owned(),
                created_at: new.created_at,
            };
            idempotency_keys::insert(conn, &row, key.seen_after)?;
        }
        Ok(match shared {
            Some(shared) => Created::Shares { shared_report_id: shared.report_id },
            None => Created::NeedsJob,
        })
    });
    if let Some(lock) = lock {
        lock.release(conn)?;
    }
    match (created, new.idempotency) {
        // Without the lock, a simultaneous trigger with the same key can insert it first: answer its report.
        (
            Err(diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)),
            Some(key),
        ) => conn.transaction(|conn| replayed(conn, key))?.ok_or(diesel::result::Error::NotFound),
        (created, _) => created,
    }
}

/// The answer for a key stored within its lifetime, `None` for a new (or expired) key.
fn replayed(conn: &mut MysqlConnection, key: Idempotency<'_>) -> QueryResult<Option<Created>> {
    Ok(idempotency_keys::find_live(conn, key.client, key.key, key.seen_after)?.map(|row| {
        if row.body_digest == key.body_digest {
            Created::Replayed { report_id: row.report_id }
        } else {
            Created::KeyReused
        }
    }))
}

/// The fields of a shareable report a new sharer copies.
#[derive(Debug, Queryable)]
struct Shareable {
    report_id: String,
    status: ReportStatus,
    finished_at: Option<NaiveDateTime>,
    as_of: Option<NaiveDateTime>,
    store_count: Option<u32>,
    csv_bytes: Option<u64>,
    csv_deleted_at: Option<NaiveDateTime>,
}

/// The newest report of `version` that computes its own CSV and may be shared, locked (its finishing
/// writes then wait for the sharer to be inserted, and see it).
fn shareable(
    conn: &mut MysqlConnection,
    version: DataVersion,
    unknown_after_minutes: Option<u16>,
    finished_after: NaiveDateTime,
) -> QueryResult<Option<Shareable>> {
    let mut candidates = reports::table
        .filter(reports::shares_report_id.is_null())
        .filter(reports::data_polls_load_id.eq(version.settled_load_id))
        .filter(
            reports::status
                .eq(ReportStatus::Running)
                .or(reports::status.eq(ReportStatus::Complete).and(reports::finished_at.ge(finished_after))),
        )
        .select(reports::report_id)
        .order(reports::created_at.desc())
        .into_boxed();
    candidates = match version.hours_snapshot {
        Some(id) => candidates.filter(reports::data_hours_snapshot.eq(id)),
        None => candidates.filter(reports::data_hours_snapshot.is_null()),
    };
    candidates = match version.zones_snapshot {
        Some(id) => candidates.filter(reports::data_zones_snapshot.eq(id)),
        None => candidates.filter(reports::data_zones_snapshot.is_null()),
    };
    // Another horizon is another computation (SPEC §3: "with the same options").
    candidates = match unknown_after_minutes {
        Some(minutes) => candidates.filter(reports::unknown_after_minutes.eq(minutes)),
        None => candidates.filter(reports::unknown_after_minutes.is_null()),
    };
    let Some(candidate) = candidates.first::<String>(conn).optional()? else {
        return Ok(None);
    };
    // Read again under the row lock: the plain read above may be older than a finish or a CSV deletion.
    let locked: Option<Shareable> = reports::table
        .find(&candidate)
        .select((
            reports::report_id,
            reports::status,
            reports::finished_at,
            reports::as_of,
            reports::store_count,
            reports::csv_bytes,
            reports::csv_deleted_at,
        ))
        .for_update()
        .first(conn)
        .optional()?;
    Ok(locked.filter(|shared| match shared.status {
        ReportStatus::Running => true,
        ReportStatus::Complete => {
            shared.csv_deleted_at.is_none() && shared.finished_at.is_some_and(|at| at >= finished_after)
        }
        ReportStatus::Failed => false,
    }))
}

fn insert_with_version(
    conn: &mut MysqlConnection,
    new: &NewReport<'_>,
    version: DataVersion,
    shared: Option<&Shareable>,
) -> QueryResult<()> {
    let (report_id, created_at) = (new.report_id, new.created_at);
    let complete = shared.filter(|shared| shared.status == ReportStatus::Complete);
    diesel::insert_into(reports::table)
        .values((
            reports::report_id.eq(report_id),
            reports::status.eq(if complete.is_some() { ReportStatus::Complete } else { ReportStatus::Running }),
            reports::created_at.eq(created_at),
            reports::attempts.eq(0u32),
            reports::data_polls_load_id.eq(version.settled_load_id),
            reports::data_hours_snapshot.eq(version.hours_snapshot),
            reports::data_zones_snapshot.eq(version.zones_snapshot),
            reports::shares_report_id.eq(shared.map(|shared| shared.report_id.as_str())),
            reports::finished_at.eq(complete.map(|_| created_at)),
            reports::as_of.eq(complete.and_then(|shared| shared.as_of)),
            reports::store_count.eq(complete.and_then(|shared| shared.store_count)),
            reports::stores_done.eq(complete.and_then(|shared| shared.store_count)),
            reports::stores_total.eq(complete.and_then(|shared| shared.store_count)),
            reports::csv_bytes.eq(complete.and_then(|shared| shared.csv_bytes)),
            reports::unknown_after_minutes.eq(new.unknown_after_minutes),
        ))
        .execute(conn)?;
    Ok(())
}

/// The report, or `None` for an unknown id.
pub fn find(conn: &mut MysqlConnection, report_id: &str) -> QueryResult<Option<Report>> {
    reports::table.find(report_id).select(Report::as_select()).first(conn).optional()
}

/// Up to `limit` reports, newest first, that have not expired: Running, or finished at or after
/// `finished_after` (a finished report without a finish time counts from its creation), each with the
/// report it shares when it shares one. Walks the `created_at` index from its end.
pub fn recent(
    conn: &mut MysqlConnection,
    finished_after: NaiveDateTime,
    limit: u32,
) -> QueryResult<Vec<(Report, Option<Report>)>> {
    let listed: Vec<Report> = reports::table
        .filter(
            reports::status
                .eq(ReportStatus::Running)
                .or(diesel::dsl::sql::<diesel::sql_types::Bool>("COALESCE(finished_at, created_at) >= ")
                    .bind::<diesel::sql_types::Datetime, _>(finished_after)),
        )
        .order((reports::created_at.desc(), reports::report_id.desc()))
        .limit(i64::from(limit))
        .select(Report::as_select())
        .load(conn)?;
    let shared_ids: Vec<&str> = listed.iter().filter_map(|r| r.shares_report_id.as_deref()).collect();
    let shared: Vec<Report> = if shared_ids.is_empty() {
        Vec::new()
    } else {
        reports::table.filter(reports::report_id.eq_any(&shared_ids)).select(Report::as_select()).load(conn)?
    };
    Ok(listed
        .into_iter()
        .map(|report| {
            let computed_by =
                report.shares_report_id.as_deref().and_then(|id| shared.iter().find(|s| s.report_id == id)).cloned();
            (report, computed_by)
        })
        .collect())
}

/// Records that the broker confirmed the job: the report leaves the outbox. False when it had already
/// left it (or is unknown).
pub fn mark_queued(conn: &mut MysqlConnection, report_id: &str) -> QueryResult<bool> {
    let changed = diesel::update(reports::table.find(report_id).filter(reports::queued_at.is_null()))
        .set(reports::queued_at.eq(utc_now()))
        .execute(conn)?;
    Ok(changed == 1)
}

/// Reports whose job the broker has not confirmed, created before `created_before` (so a trigger still
/// publishing its own job is left alone), oldest first. A report a worker has already started is not in
/// the outbox, whatever `queued_at` says: its job evidently reached the queue.
pub fn outbox(conn: &mut MysqlConnection, created_before: NaiveDateTime, limit: u32) -> QueryResult<Vec<Report>> {
    reports::table
        .filter(reports::queued_at.is_null())
        .filter(reports::created_at.lt(created_before))
        .filter(reports::status.eq(ReportStatus::Running))
        .filter(reports::started_at.is_null())
        .filter(reports::shares_report_id.is_null())
        .order(reports::created_at)
        .limit(i64::from(limit))
        .select(Report::as_select())
        .load(conn)
}

/// What [`mark_started`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOutcome {
    /// The attempt is recorded (`attempts` now holds `attempt`); progress is cleared. The report is to
    /// be computed with this gap horizon (SPEC §2b; `None`: none).
    Started { attempt: u32, unknown_after_minutes: Option<u16> },
    /// Another delivery finished it: ack the job without work.
    AlreadyComplete,
    /// It was marked Failed: ack the job without work.
    AlreadyFailed,
    /// No such report (a job for a report that was never created, or a database that was reset).
    Unknown,
}

/// Records the start of an attempt on a Running report: `started_at`, `attempts + 1`, progress cleared.
pub fn mark_started(conn: &mut MysqlConnection, report_id: &str) -> QueryResult<StartOutcome> {
    conn.transaction(|conn| {
        let current: Option<(ReportStatus, u32, Option<u16>)> = reports::table
            .find(report_id)
            .select((reports::status, reports::attempts, reports::unknown_after_minutes))
            .for_update()
            .first(conn)
            .optional()?;
        let Some((status, attempts, unknown_after_minutes)) = current else {
            return Ok(StartOutcome::Unknown);
        };
        match status {
            ReportStatus::Complete => return Ok(StartOutcome::AlreadyComplete),
            ReportStatus::Failed => return Ok(StartOutcome::AlreadyFailed),
            ReportStatus::Running => {}
        }
        let attempt = attempts.saturating_add(1);
        let now = utc_now();
        diesel::update(reports::table.find(report_id))
            .set((
                reports::started_at.eq(now),
                reports::heartbeat_at.eq(now),
                reports::attempts.eq(attempt),
                reports::stores_done.eq(None::<u32>),
                reports::stores_total.eq(None::<u32>),
            ))
            .execute(conn)?;
        Ok(StartOutcome::Started { attempt, unknown_after_minutes })
    })
}

/// Writes the progress of a Running report, and so its heartbeat. False when it is not Running (any more).
pub fn set_progress(
    conn: &mut MysqlConnection,
    report_id: &str,
    stores_done: u32,
    stores_total: u32,
) -> QueryResult<bool> {
    let changed = diesel::update(reports::table.find(report_id).filter(reports::status.eq(ReportStatus::Running)))
        .set((
            reports::stores_done.eq(stores_done),
            reports::stores_total.eq(stores_total),
            reports::heartbeat_at.eq(utc_now()),
        ))
        .execute(conn)?;
    Ok(changed == 1)
}

/// Marks a Running report Failed with a reason a person can act on (cut to 2,000 characters), and the
/// Running reports sharing it with it. False when it was not Running (finished already, or unknown).
pub fn mark_failed(conn: &mut MysqlConnection, report_id: &str, reason: &str) -> QueryResult<bool> {
    let reason: String = if reason.chars().count() > MAX_ERROR_CHARS {
        reason.chars().take(MAX_ERROR_CHARS - 1).chain(std::iter::once('…')).collect()
    } else {
        reason.to_owned()
    };
    conn.transaction(|conn| {
        let now = utc_now();
        let failed =
            (reports::status.eq(ReportStatus::Failed), reports::finished_at.eq(now), reports::error.eq(&reason));
        let changed = diesel::update(reports::table.find(report_id).filter(reports::status.eq(ReportStatus::Running)))
            .set(failed)
            .execute(conn)?;
        if changed == 1 {
            diesel::update(
                reports::table
                    .filter(reports::shares_report_id.eq(report_id))
                    .filter(reports::status.eq(ReportStatus::Running)),
            )
            .set(failed)
            .execute(conn)?;
        }
        Ok(changed == 1)
    })
}

/// A finished report, ready to store.
#[derive(Debug, Clone, Copy)]
pub struct FinishedReport<'a> {
    /// The report's `now` (UTC); `None` when there was no poll at all.
    pub as_of: Option<NaiveDateTime>,
    pub store_count: u32,
    pub csv: &'a [u8],
}

/// How the CSV is cut: `chunk_bytes` per `report_chunks` row, several rows per INSERT while they fit in
/// `max_statement_bytes`. Both at most [`MAX_STATEMENT_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunking {
    pub chunk_bytes: usize,
    pub max_statement_bytes: usize,
}

impl Default for Chunking {
    fn default() -> Self {
        Self { chunk_bytes: 1 << 20, max_statement_bytes: 8 << 20 }
    }
}

/// What [`store_complete`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// The CSV is stored in this many chunks and the report is Complete.
    Complete { chunks: u32 },
    /// Another delivery of the same job stored it first; nothing was written.
    AlreadyComplete,
    /// No such report.
    Unknown,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Db(#[from] diesel::result::Error),
    #[error(
        "chunk_bytes ({chunk_bytes}) and max_statement_bytes ({max_statement_bytes}) must be between 1 and {MAX_STATEMENT_BYTES}, chunks no larger than a statement"
    )]
    BadChunking { chunk_bytes: usize, max_statement_bytes: usize },
    #[error("a report of {0} bytes needs more chunks than a report can number")]
    TooLarge(usize),
    /// The stored parts of a report cut into shards could not be merged.
    #[error("the parts of the report cannot be merged: {0}")]
    Merge(String),
}

/// Stores the CSV and marks the report Complete in one transaction, so a reader sees either no report or
/// all of it. Chunks of an earlier interrupted attempt are replaced. A Failed report is completed too: a
/// duplicate delivery may finish after another gave up, and the finished report is the better answer.
///
/// Safe for workers storing different reports at the same moment: stale chunks are deleted only when
/// there are any (a DELETE of an empty range still takes a gap lock at REPEATABLE READ, and two such gap
/// locks deadlock the inserts that follow), and a deadlock InnoDB reports anyway is retried at once.
pub fn store_complete(
    conn: &mut MysqlConnection,
    report_id: &str,
    report: FinishedReport<'_>,
    chunking: Chunking,
) -> Result<Stored, StoreError> {
    check_chunking(chunking, report.csv.len())?;
    retry_on_deadlock(report_id, || store_once(conn, report_id, report, chunking))
}

/// Runs a storing transaction again (at most [`DEADLOCK_TRIES`] times in all) when InnoDB picks it as a
/// deadlock victim: the whole transaction was rolled back, so running it again is safe.
pub(crate) fn retry_on_deadlock<T>(
    report_id: &str,
    mut store: impl FnMut() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut tries = 0;
    loop {
        tries += 1;
        match store() {
            Err(StoreError::Db(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::SerializationFailure,
                info,
            ))) if tries < DEADLOCK_TRIES => {
                log::warn!(
                    "report_id={report_id}: storing the report hit a deadlock ({}); trying again",
                    info.message()
                );
            }
            outcome => return outcome,
        }
    }
}

/// Tries of [`store_complete`] when InnoDB picks its transaction as a deadlock victim.
const DEADLOCK_TRIES: u32 = 3;

fn store_once(
    conn: &mut MysqlConnection,
    report_id: &str,
    report: FinishedReport<'_>,
    chunking: Chunking,
) -> Result<Stored, StoreError> {
    conn.transaction(|conn| {
        let status: Option<ReportStatus> =
            reports::table.find(report_id).select(reports::status).for_update().first(conn).optional()?;
        match status {
            None => return Ok(Stored::Unknown),
            Some(ReportStatus::Complete) => return Ok(Stored::AlreadyComplete),
            Some(_) => {}
        }
        // A plain (non-locking) read: every writer of this report's chunks holds the row lock taken above.
        let stale: i64 =
            report_chunks::table.filter(report_chunks::report_id.eq(report_id)).count().get_result(conn)?;
        if stale > 0 {
            diesel::delete(report_chunks::table.filter(report_chunks::report_id.eq(report_id))).execute(conn)?;
        }
        let chunks = insert_chunks(conn, report_id, 0, report.csv, chunking)?;
        mark_complete(conn, report_id, report.as_of, report.store_count, report.csv.len() as u64)?;
        Ok(Stored::Complete { chunks })
    })
}

/// Marks a report Complete with its figures, and the reports sharing it (a Failed sharer too, as its
/// shared report was completed after all). Inside the transaction that stored its last chunk.
pub(crate) fn mark_complete(
    conn: &mut MysqlConnection,
    report_id: &str,
    as_of: Option<NaiveDateTime>,
    store_count: u32,
    csv_bytes: u64,
) -> QueryResult<()> {
    let complete = (
        reports::status.eq(ReportStatus::Complete),
        reports::finished_at.eq(utc_now()),
        reports::as_of.eq(as_of),
        reports::store_count.eq(store_count),
        reports::csv_bytes.eq(csv_bytes),
        reports::stores_done.eq(store_count),
        reports::stores_total.eq(store_count),
        reports::error.eq(None::<String>),
    );
    diesel::update(reports::table.find(report_id)).set(complete.clone()).execute(conn)?;
    diesel::update(
        reports::table
            .filter(reports::shares_report_id.eq(report_id))
            .filter(reports::status.ne(ReportStatus::Complete)),
    )
    .set(complete)
    .execute(conn)?;
    Ok(())
}

/// Writes `csv` as the chunks of `(report_id, shard_no)`, numbered from 0, several per INSERT while they
/// fit in a statement; returns how many.
pub(crate) fn insert_chunks(
    conn: &mut MysqlConnection,
    report_id: &str,
    shard_no: u32,
    csv: &[u8],
    Chunking { chunk_bytes, max_statement_bytes }: Chunking,
) -> Result<u32, StoreError> {
    let rows: Vec<_> = csv
        .chunks(chunk_bytes)
        .zip(0u32..)
        .map(|(data, seq)| {
            (
                report_chunks::report_id.eq(report_id),
                report_chunks::shard_no.eq(shard_no),
                report_chunks::seq.eq(seq),
                report_chunks::data.eq(data),
            )
        })
        .collect();
    for statement in rows.chunks((max_statement_bytes / chunk_bytes).max(1)) {
        diesel::insert_into(report_chunks::table).values(statement).execute(conn)?;
    }
    u32::try_from(rows.len()).map_err(|_| StoreError::TooLarge(csv.len()))
}

/// Checks a chunking before anything is written.
pub(crate) fn check_chunking(chunking: Chunking, csv_len: usize) -> Result<(), StoreError> {
    let Chunking { chunk_bytes, max_statement_bytes } = chunking;
    if chunk_bytes == 0 || chunk_bytes > max_statement_bytes || max_statement_bytes > MAX_STATEMENT_BYTES {
        return Err(StoreError::BadChunking { chunk_bytes, max_statement_bytes });
    }
    if u32::try_from(csv_len.div_ceil(chunk_bytes)).is_err() {
        return Err(StoreError::TooLarge(csv_len));
    }
    Ok(())
}

/// One stored piece of a report's CSV.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = report_chunks, check_for_backend(diesel::mysql::Mysql))]
pub struct ReportChunk {
    pub seq: u32,
    pub data: Vec<u8>,
}

/// The chunk `seq` of the report, or `None` past its last chunk. A download reads one chunk per query,
/// so it holds one chunk in memory and a connection only for the query. (The chunks of a report are
/// `shard_no` 0's: a sharded report's parts are merged into them when it completes.)
pub fn read_chunk(conn: &mut MysqlConnection, report_id: &str, seq: u32) -> QueryResult<Option<ReportChunk>> {
    report_chunks::table
        .filter(report_chunks::report_id.eq(report_id))
        .filter(report_chunks::shard_no.eq(0))
        .filter(report_chunks::seq.eq(seq))
        .select(ReportChunk::as_select())
        .first(conn)
        .optional()
}

/// The whole stored CSV, reassembled (empty when nothing is stored). For small reports and tests; the
/// gateway streams with [`read_chunk`].
pub fn read_csv(conn: &mut MysqlConnection, report_id: &str) -> QueryResult<Vec<u8>> {
    let chunks: Vec<Vec<u8>> = report_chunks::table
        .filter(report_chunks::report_id.eq(report_id))
        .filter(report_chunks::shard_no.eq(0))
        .order(report_chunks::seq)
        .select(report_chunks::data)
        .load(conn)?;
    Ok(chunks.concat())
}

/// How many reports are in each status; a status with no report counts 0. A row whose status is none of
/// [`ReportStatus::ALL`] (spelled otherwise, written by newer code) is left out rather than guessed at.
pub fn count_by_status(conn: &mut MysqlConnection) -> QueryResult<Vec<(ReportStatus, i64)>> {
    let groups: Vec<(String, i64)> =
        reports::table.group_by(reports::status).select((reports::status, diesel::dsl::count_star())).load(conn)?;
    Ok(ReportStatus::ALL
        .into_iter()
        .map(|status| {
            let count = groups.iter().find(|(text, _)| text == status.as_str()).map_or(0, |(_, count)| *count);
            (status, count)
        })
        .collect())
}

/// Running reports whose job the broker has not confirmed (`queued_at` NULL), started or not: what an
/// operator watches to see that the gateway cannot reach the broker. Wider than [`outbox`], which leaves
/// out reports a worker has already started.
pub fn count_unconfirmed(conn: &mut MysqlConnection) -> QueryResult<i64> {
    reports::table
        .filter(reports::status.eq(ReportStatus::Running))
        .filter(reports::queued_at.is_null())
        .filter(reports::shares_report_id.is_null())
        .count()
        .get_result(conn)
}

/// Running reports with a job of their own, confirmed by the broker, that showed no sign of life since
/// `quiet_since`: no worker started the job since it was queued, or the worker's heartbeat stopped.
fn stale_running_query(quiet_since: NaiveDateTime) -> reports::BoxedQuery<'static, diesel::mysql::Mysql> {
    reports::table
        .filter(reports::status.eq(ReportStatus::Running))
        .filter(reports::shares_report_id.is_null())
        .filter(reports::queued_at.is_not_null())
        .filter(
            reports::heartbeat_at
                .lt(quiet_since)
                .or(reports::heartbeat_at.is_null().and(reports::queued_at.lt(quiet_since))),
        )
        .into_boxed()
}

/// Up to `limit` stale Running reports (see [`count_stale_running`]), the quietest first.
pub fn stale_running(conn: &mut MysqlConnection, quiet_since: NaiveDateTime, limit: u32) -> QueryResult<Vec<Report>> {
    stale_running_query(quiet_since)
        .order(reports::queued_at)
        .limit(i64::from(limit))
        .select(Report::as_select())
        .load(conn)
}

/// How many Running reports with a confirmed job showed no sign of life since `quiet_since`: jobs lost
/// after the broker confirmed them, or workers stuck, until the sweep publishes them again.
pub fn count_stale_running(conn: &mut MysqlConnection, quiet_since: NaiveDateTime) -> QueryResult<i64> {
    stale_running_query(quiet_since).count().get_result(conn)
}

/// Records that the sweep published the job of a Running report again: queued now, no heartbeat yet,
/// `redeliveries + 1`. False when it is not Running any more.
pub fn mark_republished(conn: &mut MysqlConnection, report_id: &str) -> QueryResult<bool> {
    let changed = diesel::update(reports::table.find(report_id).filter(reports::status.eq(ReportStatus::Running)))
        .set((
            reports::queued_at.eq(utc_now()),
            reports::heartbeat_at.eq(None::<NaiveDateTime>),
            reports::redeliveries.eq(reports::redeliveries + 1),
        ))
        .execute(conn)?;
    Ok(changed == 1)
}

#[derive(QueryableByName)]
struct ReportIdRow {
    #[diesel(sql_type = diesel::sql_types::Char)]
    report_id: String,
}

/// Up to `limit` reports whose stored CSV may go: computed by themselves, finished before
/// `finished_before`, CSV still kept, and no report sharing it Running or finished since.
pub fn expired_csvs(
    conn: &mut MysqlConnection,
    finished_before: NaiveDateTime,
    limit: u32,
) -> QueryResult<Vec<String>> {
    let rows: Vec<ReportIdRow> = diesel::sql_query(
        "SELECT r.report_id FROM reports r \
         WHERE r.shares_report_id IS NULL AND r.status IN (?, ?) AND r.csv_deleted_at IS NULL \
           AND r.finished_at < ? \
           AND NOT EXISTS (SELECT 1 FROM reports s WHERE s.shares_report_id = r.report_id \
                             AND (s.finished_at IS NULL OR s.finished_at >= ?)) \
         ORDER BY r.finished_at LIMIT ?",
    )
    .bind::<diesel::sql_types::Varchar, _>(ReportStatus::Complete)
    .bind::<diesel::sql_types::Varchar, _>(ReportStatus::Failed)
    .bind::<diesel::sql_types::Datetime, _>(finished_before)
    .bind::<diesel::sql_types::Datetime, _>(finished_before)
    .bind::<diesel::sql_types::Unsigned<diesel::sql_types::Integer>, _>(limit)
    .load(conn)?;
    Ok(rows.into_iter().map(|row| row.report_id).collect())
}

/// Deletes the stored CSV of a report [`expired_csvs`] named, if it is still expired under the row lock
/// (a trigger may have made it shared meanwhile). Returns the chunks deleted; `None` when it was kept.
pub fn delete_csv(
    conn: &mut MysqlConnection,
    report_id: &str,
    finished_before: NaiveDateTime,
) -> QueryResult<Option<usize>> {
    conn.transaction(|conn| {
        // Locking first makes a trigger sharing it finish first; the reads after it then see its sharer.
        let finished_at: Option<Option<NaiveDateTime>> = reports::table
            .find(report_id)
            .filter(reports::csv_deleted_at.is_null())
            .select(reports::finished_at)
            .for_update()
            .first(conn)
            .optional()?;
        if finished_at.flatten().is_none_or(|at| at >= finished_before) {
            return Ok(None);
        }
        let live_sharers: i64 = reports::table
            .filter(reports::shares_report_id.eq(report_id))
            .filter(reports::finished_at.is_null().or(reports::finished_at.ge(finished_before)))
            .count()
            .get_result(conn)?;
        if live_sharers > 0 {
            return Ok(None);
        }
        let deleted =
            diesel::delete(report_chunks::table.filter(report_chunks::report_id.eq(report_id))).execute(conn)?;
        diesel::update(reports::table.find(report_id)).set(reports::csv_deleted_at.eq(utc_now())).execute(conn)?;
        Ok(Some(deleted))
    })
}

/// Computations the workers ran: attempts on reports of their own (a shared report is computed once for
/// all its sharers; a retried or duplicated job counts each time it ran).
pub fn count_computations(conn: &mut MysqlConnection) -> QueryResult<i64> {
    let sum: Option<i64> = reports::table
        .filter(reports::shares_report_id.is_null())
        .select(diesel::dsl::sql::<diesel::sql_types::Nullable<diesel::sql_types::BigInt>>(
            "CAST(SUM(attempts) AS SIGNED)",
        ))
        .first(conn)?;
    Ok(sum.unwrap_or(0))
}

#[derive(QueryableByName)]
struct Seconds {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Double>)]
    seconds: Option<f64>,
}

/// Seconds from trigger to completion of every Complete report, as a user waits for it. Computed in SQL
/// so only numbers cross the wire.
pub fn completion_seconds(conn: &mut MysqlConnection) -> QueryResult<Vec<f64>> {
    let rows: Vec<Seconds> = diesel::sql_query(
        "SELECT TIMESTAMPDIFF(MICROSECOND, created_at, finished_at) / 1e6 AS seconds \
         FROM reports WHERE status = ? AND finished_at IS NOT NULL",
    )
    .bind::<diesel::sql_types::Varchar, _>(ReportStatus::Complete)
    .load(conn)?;
    Ok(rows.into_iter().filter_map(|row| row.seconds).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_ids_are_21_nanoid_characters() {
        assert!(is_valid_report_id("V1StGXR8_Z5jdHi6B-myT"));
        assert!(!is_valid_report_id("V1StGXR8_Z5jdHi6B-my"));
        assert!(!is_valid_report_id("V1StGXR8_Z5jdHi6B-myT1"));
        assert!(!is_valid_report_id("V1StGXR8_Z5jdHi6B/myT"));
        assert!(!is_valid_report_id("V1StGXR8_Z5jdHi6B-my\u{e9}"));
    }

    #[test]
    fn an_unknown_status_reads_as_running() {
        assert_eq!(ReportStatus::from_word("Complete"), Some(ReportStatus::Complete));
        assert_eq!(ReportStatus::from_word("Failed"), Some(ReportStatus::Failed));
        assert_eq!(ReportStatus::from_word("Paused"), Some(ReportStatus::Running));
    }
}
