//! Storing a finished report: `shared_model::models::reports::store_complete` with two changes that the
//! worker needs under concurrency (measured: two workers finishing different reports at the same moment
//! deadlocked in the shared version).
//! - The stale chunks of an interrupted attempt are deleted only when there are any: a DELETE of an empty
//!   range still takes a gap lock at REPEATABLE READ, and two transactions holding the same gap lock then
//!   deadlock on their inserts into it.
//! - A deadlock that happens anyway (InnoDB may pick this transaction as the victim) is retried at once: the
//!   transaction rolled back whole, and retrying is cheaper than a redelivery.
//!
//! Everything else about the report row (start, progress, failure, reading the CSV back) uses
//! `shared_model::models::reports` as it is.

use diesel::mysql::MysqlConnection;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use shared_model::models::reports::{Chunking, FinishedReport, MAX_STATEMENT_BYTES, ReportStatus, StoreError, Stored};
use shared_model::schema::{report_chunks, reports};

const DEADLOCK_TRIES: u32 = 3;

/// Stores the CSV and marks the report Complete in one transaction, so a reader sees either no report or
/// all of it. A report another delivery completed first is left alone; a Failed one is completed (a
/// duplicate delivery may finish after another gave up, and the finished report is the better answer).
pub fn store_complete(
    conn: &mut MysqlConnection,
    report_id: &str,
    report: FinishedReport<'_>,
    chunking: Chunking,
) -> Result<Stored, StoreError> {
    let Chunking { chunk_bytes, max_statement_bytes } = chunking;
    if chunk_bytes == 0 || chunk_bytes > max_statement_bytes || max_statement_bytes > MAX_STATEMENT_BYTES {
        return Err(StoreError::BadChunking { chunk_bytes, max_statement_bytes });
    }
    if u32::try_from(report.csv.len().div_ceil(chunk_bytes)).is_err() {
        return Err(StoreError::TooLarge(report.csv.len()));
    }
    let mut tries = 0;
    loop {
        tries += 1;
        match store_once(conn, report_id, report, chunking) {
            Err(StoreError::Db(DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, info)))
                if tries < DEADLOCK_TRIES =>
            {
                log::warn!(
                    "report_id={report_id} storing the report hit a deadlock ({}); trying again",
                    info.message()
                );
            }
            result => return result,
        }
    }
}

fn store_once(
    conn: &mut MysqlConnection,
    report_id: &str,
    report: FinishedReport<'_>,
    Chunking { chunk_bytes, max_statement_bytes }: Chunking,
) -> Result<Stored, StoreError> {
    conn.transaction(|conn| {
        let status: Option<String> =
            reports::table.find(report_id).select(reports::status).for_update().first(conn).optional()?;
        match status.as_deref().map(ReportStatus::parse) {
            None => return Ok(Stored::Unknown),
            Some(ReportStatus::Complete) => return Ok(Stored::AlreadyComplete),
            Some(_) => {}
        }
        // A plain read: every writer of this report's chunks holds the row lock taken above, so the count
        // cannot change under us, and it locks no gap.
        let stale: i64 =
            report_chunks::table.filter(report_chunks::report_id.eq(report_id)).count().get_result(conn)?;
        if stale > 0 {
            diesel::delete(report_chunks::table.filter(report_chunks::report_id.eq(report_id))).execute(conn)?;
        }
        let rows: Vec<_> = report
            .csv
            .chunks(chunk_bytes)
            .zip(0u32..)
            .map(|(data, seq)| {
                (report_chunks::report_id.eq(report_id), report_chunks::seq.eq(seq), report_chunks::data.eq(data))
            })
            .collect();
        for statement in rows.chunks((max_statement_bytes / chunk_bytes).max(1)) {
            diesel::insert_into(report_chunks::table).values(statement).execute(conn)?;
        }
        let chunks = u32::try_from(rows.len()).map_err(|_| StoreError::TooLarge(report.csv.len()))?;
        diesel::update(reports::table.find(report_id))
            .set((
                reports::status.eq(ReportStatus::Complete.as_str()),
                reports::finished_at.eq(chrono::Utc::now().naive_utc()),
                reports::as_of.eq(report.as_of),
                reports::store_count.eq(report.store_count),
                reports::csv_bytes.eq(report.csv.len() as u64),
                reports::stores_done.eq(report.store_count),
                reports::stores_total.eq(report.store_count),
                reports::error.eq(None::<String>),
            ))
            .execute(conn)?;
        Ok(Stored::Complete { chunks })
    })
}
