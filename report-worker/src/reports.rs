//! The worker's side of the `reports` row and its `report_chunks`: claim an attempt, write progress, store
//! the finished CSV and mark it Complete in one transaction, or mark it Failed.
//!
//! Every write to the status is conditional on the status it expects, so duplicate deliveries of one job
//! (the gateway's outbox may publish twice) stay correct: the first delivery to finish stores the report,
//! a later one finds it Complete and stores nothing.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::mysql::MysqlConnection;
use diesel::prelude::*;
use shared_model::schema::{report_chunks, reports};

pub const RUNNING: &str = "Running";
pub const COMPLETE: &str = "Complete";
pub const FAILED: &str = "Failed";

/// A Failed report's reason is for a person; anything longer than this is cut.
const MAX_ERROR_CHARS: usize = 2_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Running,
    Complete,
    Failed,
}

impl Status {
    fn parse(s: &str) -> Option<Status> {
        match s {
            RUNNING => Some(Status::Running),
            COMPLETE => Some(Status::Complete),
            FAILED => Some(Status::Failed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => RUNNING,
            Status::Complete => COMPLETE,
            Status::Failed => FAILED,
        }
    }
}

fn utc_now() -> NaiveDateTime {
    Utc::now().naive_utc()
}

/// The report's status; `None` for an unknown id. A status this code does not know reads as Running, so a
/// newer writer's state is never mistaken for finished work.
pub fn status(conn: &mut MysqlConnection, report_id: &str) -> QueryResult<Option<Status>> {
    let status: Option<String> =
        reports::table.filter(reports::report_id.eq(report_id)).select(reports::status).first(conn).optional()?;
    Ok(status.map(|s| Status::parse(&s).unwrap_or(Status::Running)))
}

/// Records the start of an attempt: `started_at`, `attempts + 1`, progress cleared. False when the report
/// is not Running (any more).
pub fn mark_started(conn: &mut MysqlConnection, report_id: &str) -> QueryResult<bool> {
    let changed =
        diesel::update(reports::table.filter(reports::report_id.eq(report_id)).filter(reports::status.eq(RUNNING)))
            .set((
                reports::started_at.eq(utc_now()),
                reports::attempts.eq(reports::attempts + 1),
                reports::stores_done.eq(None::<u32>),
                reports::stores_total.eq(None::<u32>),
            ))
            .execute(conn)?;
    Ok(changed == 1)
}

pub fn set_progress(conn: &mut MysqlConnection, report_id: &str, done: u32, total: u32) -> QueryResult<()> {
    diesel::update(reports::table.filter(reports::report_id.eq(report_id)).filter(reports::status.eq(RUNNING)))
        .set((reports::stores_done.eq(done), reports::stores_total.eq(total)))
        .execute(conn)?;
    Ok(())
}

/// A finished report, ready to store.
#[derive(Debug, Clone, Copy)]
pub struct Finished<'a> {
    /// The report's `now` (µs since the epoch); `None` when there was no poll at all.
    pub as_of: Option<i64>,
    pub store_count: u32,
    pub csv: &'a [u8],
}

/// How the CSV is cut into rows and statements; see `WorkerSettings`.
#[derive(Debug, Clone, Copy)]
pub struct Chunking {
    pub chunk_bytes: usize,
    pub chunks_per_insert: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// The CSV is stored in this many chunks and the report is Complete.
    Complete { chunks: u32 },
    /// Another delivery of the same job stored it first.
    AlreadyComplete,
    /// No such report (any more).
    Unknown,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Db(#[from] diesel::result::Error),
    #[error("the report is {0} bytes, more chunks than a report row can number")]
    TooLarge(usize),
}

/// Stores the CSV and marks the report Complete, in one transaction: chunks of an earlier, interrupted
/// attempt go first, so a reader only ever sees a whole report. A Failed report is completed too: the
/// dead-letter path may have given up on a job whose duplicate then finished, and the finished report is
/// the better answer.
pub fn store_complete(
    conn: &mut MysqlConnection,
    report_id: &str,
    report: Finished<'_>,
    chunking: Chunking,
) -> Result<Stored, StoreError> {
    let chunk_bytes = chunking.chunk_bytes.max(1);
    let chunk_count =
        u32::try_from(report.csv.len().div_ceil(chunk_bytes)).map_err(|_| StoreError::TooLarge(report.csv.len()))?;
    conn.transaction(|conn| {
        let current: Option<String> = reports::table
            .filter(reports::report_id.eq(report_id))
            .select(reports::status)
            .for_update()
            .first(conn)
            .optional()?;
        match current.as_deref() {
            None => return Ok(Stored::Unknown),
            Some(COMPLETE) => return Ok(Stored::AlreadyComplete),
            Some(_) => {}
        }
        diesel::delete(report_chunks::table.filter(report_chunks::report_id.eq(report_id))).execute(conn)?;
        let chunks: Vec<_> = report
            .csv
            .chunks(chunk_bytes)
            .zip(0u32..)
            .map(|(data, seq)| {
                (report_chunks::report_id.eq(report_id), report_chunks::seq.eq(seq), report_chunks::data.eq(data))
            })
            .collect();
        for statement in chunks.chunks(chunking.chunks_per_insert.max(1)) {
            diesel::insert_into(report_chunks::table).values(statement).execute(conn)?;
        }
        let as_of = report.as_of.and_then(DateTime::from_timestamp_micros).map(|t| t.naive_utc());
        diesel::update(reports::table.filter(reports::report_id.eq(report_id)))
            .set((
                reports::status.eq(COMPLETE),
                reports::finished_at.eq(utc_now()),
                reports::as_of.eq(as_of),
                reports::store_count.eq(report.store_count),
                reports::csv_bytes.eq(report.csv.len() as u64),
                reports::stores_done.eq(report.store_count),
                reports::stores_total.eq(report.store_count),
                reports::error.eq(None::<String>),
            ))
            .execute(conn)?;
        Ok(Stored::Complete { chunks: chunk_count })
    })
}

/// Marks a Running report Failed with `reason`. False when it was not Running (finished, or unknown).
pub fn mark_failed(conn: &mut MysqlConnection, report_id: &str, reason: &str) -> QueryResult<bool> {
    let reason: String = if reason.chars().count() > MAX_ERROR_CHARS {
        reason.chars().take(MAX_ERROR_CHARS - 1).chain(std::iter::once('…')).collect()
    } else {
        reason.to_owned()
    };
    let changed =
        diesel::update(reports::table.filter(reports::report_id.eq(report_id)).filter(reports::status.eq(RUNNING)))
            .set((reports::status.eq(FAILED), reports::finished_at.eq(utc_now()), reports::error.eq(reason)))
            .execute(conn)?;
    Ok(changed == 1)
}

/// The stored CSV of a report, reassembled; `None` when it has no chunks.
pub fn read_csv(conn: &mut MysqlConnection, report_id: &str) -> QueryResult<Option<Vec<u8>>> {
    let chunks: Vec<Vec<u8>> = report_chunks::table
        .filter(report_chunks::report_id.eq(report_id))
        .order(report_chunks::seq)
        .select(report_chunks::data)
        .load(conn)?;
    if chunks.is_empty() {
        return Ok(None);
    }
    Ok(Some(chunks.concat()))
}
