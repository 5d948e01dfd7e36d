//! Models and queries for `report_shards`: one report computed by many workers.
//!
//! ```text
//! report job --worker: plan (pins now + snapshots, one row per shard, Running)--> shard jobs published
//!   shard job --any worker: start_shard (attempts + 1) --> set_shard_progress ... --> store_shard
//!        (its chunks under its shard_no, the shard Complete, reports.shards_done + 1; the last one also
//!         marks the report Complete, in the same transaction)
//! ```
//!
//! A shard is a range of store ids in byte order (`first_store_id <= store_id < end_store_id`), which is
//! the report's row order, so the report's CSV is its shards' parts one after the other (the header in
//! shard 0's part). `stores.store_id` is `utf8mb4_bin`, whose order is byte order for every id the table
//! can hold (control characters are refused by the readers; ids differing only by trailing spaces already
//! collide in its unique key), so the ranges are read along its index.
//!
//! Every shard computes with the report's pinned `now` (`reports.as_of`, set by the plan) and the pinned
//! hours and zones snapshots, so its rows are those the whole report would have: polls appended after the
//! plan are after `now` and play no part.
//!
//! Duplicates and redeliveries stay harmless: a shard stored once is never stored again (its row is
//! locked and found Complete), and a report that is no longer Running takes no shard (a Failed report's
//! other shards are acknowledged without work). Lock order is always the shard row, then the report row.

use chrono::NaiveDateTime;
use diesel::mysql::MysqlConnection;
use diesel::prelude::*;

use super::reports::{self as report_model, Chunking, ReportStatus, StoreError, utc_now};
use crate::schema::{report_chunks, report_shards, reports, stores};

/// One shard's stores: `first <= store_id < end`, `None` meaning no bound on that side.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct StoreRange {
    pub first: Option<String>,
    pub end: Option<String>,
}

impl StoreRange {
    /// Every store.
    pub const ALL: StoreRange = StoreRange { first: None, end: None };

    pub fn contains(&self, store_id: &str) -> bool {
        self.first.as_deref().is_none_or(|first| store_id >= first)
            && self.end.as_deref().is_none_or(|end| store_id < end)
    }

    /// The ranges between consecutive cut points (sorted store ids), covering every id.
    pub fn cut_at(cuts: &[String]) -> Vec<StoreRange> {
        let bounds: Vec<Option<&String>> = std::iter::once(None).chain(cuts.iter().map(Some)).chain([None]).collect();
        bounds.windows(2).map(|pair| StoreRange { first: pair[0].cloned(), end: pair[1].cloned() }).collect()
    }
}

impl std::fmt::Display for StoreRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stores [{}, {})", self.first.as_deref().unwrap_or("first"), self.end.as_deref().unwrap_or("last"))
    }
}

/// How many stores the `stores` table names.
pub fn count_stores(conn: &mut MysqlConnection) -> QueryResult<u64> {
    let n: i64 = stores::table.count().get_result(conn)?;
    Ok(n.unsigned_abs())
}

#[derive(QueryableByName)]
struct CutPoint {
    #[diesel(sql_type = diesel::sql_types::Varchar)]
    store_id: String,
}

/// The store ids that start shards 1, 2, …, when every shard holds `stores_per_shard` stores in id order:
/// one walk of the `store_id` index, only the cut points sent.
pub fn cut_points(conn: &mut MysqlConnection, stores_per_shard: u32) -> QueryResult<Vec<String>> {
    let rows: Vec<CutPoint> = diesel::sql_query(
        "SELECT store_id FROM (SELECT store_id, ROW_NUMBER() OVER (ORDER BY store_id) AS position FROM stores) \
         AS ranked WHERE position > 1 AND MOD(position - 1, ?) = 0 ORDER BY position",
    )
    .bind::<diesel::sql_types::Unsigned<diesel::sql_types::Integer>, _>(stores_per_shard.max(1))
    .load(conn)?;
    Ok(rows.into_iter().map(|row| row.store_id).collect())
}

/// What a plan pins for every shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The report's `now` (`None`: no poll at all).
    pub as_of: Option<NaiveDateTime>,
    pub hours_snapshot: Option<u64>,
    pub zones_snapshot: Option<u64>,
    pub shards: Vec<StoreRange>,
}

/// What [`plan`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Planned {
    /// The shards are written (or were, by an earlier delivery of the report's job): publish the jobs
    /// of `pending` (those not stored yet) out of `shards_total`.
    Shards {
        shards_total: u32,
        pending: Vec<u32>,
    },
    /// The report is no longer Running.
    Finished(ReportStatus),
    Unknown,
}

/// Writes the plan of a Running report: its shards, `now`, the snapshots, `shards_done` = 0. A report
/// planned before (its job delivered again) keeps its plan; the answer names its shards not yet stored.
pub fn plan(conn: &mut MysqlConnection, report_id: &str, plan: &Plan) -> QueryResult<Planned> {
    conn.transaction(|conn| {
        let current: Option<(ReportStatus, Option<u32>)> = reports::table
            .find(report_id)
            .select((reports::status, reports::shards_total))
            .for_update()
            .first(conn)
            .optional()?;
        match current {
            None => return Ok(Planned::Unknown),
            Some((status @ (ReportStatus::Complete | ReportStatus::Failed), _)) => {
                return Ok(Planned::Finished(status));
            }
            Some((ReportStatus::Running, Some(shards_total))) => {
                let pending = report_shards::table
                    .filter(report_shards::report_id.eq(report_id))
                    .filter(report_shards::status.ne(ReportStatus::Complete))
                    .select(report_shards::shard_no)
                    .order(report_shards::shard_no)
                    .load(conn)?;
                return Ok(Planned::Shards { shards_total, pending });
            }
            Some((ReportStatus::Running, None)) => {}
        }
        let shards_total = u32::try_from(plan.shards.len()).unwrap_or(u32::MAX);
        let rows: Vec<_> = plan
            .shards
            .iter()
            .zip(0u32..)
            .map(|(range, shard_no)| {
                (
                    report_shards::report_id.eq(report_id),
                    report_shards::shard_no.eq(shard_no),
                    report_shards::first_store_id.eq(range.first.as_deref()),
                    report_shards::end_store_id.eq(range.end.as_deref()),
                    report_shards::status.eq(ReportStatus::Running),
                    report_shards::attempts.eq(0u32),
                )
            })
            .collect();
        for statement in rows.chunks(500) {
            diesel::insert_into(report_shards::table).values(statement).execute(conn)?;
        }
        diesel::update(reports::table.find(report_id))
            .set((
                reports::shards_total.eq(shards_total),
                reports::shards_done.eq(0u32),
                reports::as_of.eq(plan.as_of),
                reports::plan_hours_snapshot.eq(plan.hours_snapshot),
                reports::plan_zones_snapshot.eq(plan.zones_snapshot),
                reports::heartbeat_at.eq(utc_now()),
            ))
            .execute(conn)?;
        Ok(Planned::Shards { shards_total, pending: (0..shards_total).collect() })
    })
}

/// What a worker needs to compute one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardWork {
    pub range: StoreRange,
    pub shards_total: u32,
    pub as_of: Option<NaiveDateTime>,
    pub hours_snapshot: Option<u64>,
    pub zones_snapshot: Option<u64>,
    pub unknown_after_minutes: Option<u16>,
    /// This attempt's number.
    pub attempt: u32,
}

/// What [`start_shard`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartShard {
    Started(ShardWork),
    /// Another delivery stored this shard: acknowledge without work.
    AlreadyStored,
    /// The report is no longer Running (Complete, or Failed by another shard): nothing to do.
    ReportFinished(ReportStatus),
    /// No such report, or the report has no such shard.
    Unknown,
}

/// Records the start of an attempt on a shard of a Running report (`attempts + 1`, its worker, its
/// progress cleared) and stamps the report's heartbeat.
pub fn start_shard(
    conn: &mut MysqlConnection,
    report_id: &str,
    shard_no: u32,
    worker: &str,
) -> QueryResult<StartShard> {
    conn.transaction(|conn| {
        let shard: Option<(ReportStatus, u32, Option<String>, Option<String>)> = report_shards::table
            .find((report_id, shard_no))
            .select((
                report_shards::status,
                report_shards::attempts,
                report_shards::first_store_id,
                report_shards::end_store_id,
            ))
            .for_update()
            .first(conn)
            .optional()?;
        let Some((shard_status, attempts, first, end)) = shard else { return Ok(StartShard::Unknown) };
        type PlanRow = (ReportStatus, Option<u32>, Option<NaiveDateTime>, Option<u64>, Option<u64>, Option<u16>);
        let report: Option<PlanRow> = reports::table
            .find(report_id)
            .select((
                reports::status,
                reports::shards_total,
                reports::as_of,
                reports::plan_hours_snapshot,
                reports::plan_zones_snapshot,
                reports::unknown_after_minutes,
            ))
            .first(conn)
            .optional()?;
        let Some((status, shards_total, as_of, hours_snapshot, zones_snapshot, unknown_after_minutes)) = report else {
            return Ok(StartShard::Unknown);
        };
        if status != ReportStatus::Running {
            return Ok(StartShard::ReportFinished(status));
        }
        if shard_status == ReportStatus::Complete {
            return Ok(StartShard::AlreadyStored);
        }
        let Some(shards_total) = shards_total else { return Ok(StartShard::Unknown) };
        let attempt = attempts.saturating_add(1);
        let now = utc_now();
        diesel::update(report_shards::table.find((report_id, shard_no)))
            .set((
                report_shards::attempts.eq(attempt),
                report_shards::worker.eq(worker),
                report_shards::started_at.eq(now),
                report_shards::stores_done.eq(None::<u32>),
                report_shards::stores_total.eq(None::<u32>),
            ))
            .execute(conn)?;
        diesel::update(reports::table.find(report_id)).set(reports::heartbeat_at.eq(now)).execute(conn)?;
        Ok(StartShard::Started(ShardWork {
            range: StoreRange { first, end },
            shards_total,
            as_of,
            hours_snapshot,
            zones_snapshot,
            unknown_after_minutes,
            attempt,
        }))
    })
}

/// Writes a running shard's progress, and the report's (the sums over its shards) with its heartbeat.
/// False when the report is not Running (any more).
pub fn set_shard_progress(
    conn: &mut MysqlConnection,
    report_id: &str,
    shard_no: u32,
    stores_done: u32,
    stores_total: u32,
) -> QueryResult<bool> {
    conn.transaction(|conn| {
        diesel::update(
            report_shards::table.find((report_id, shard_no)).filter(report_shards::status.eq(ReportStatus::Running)),
        )
        .set((report_shards::stores_done.eq(stores_done), report_shards::stores_total.eq(stores_total)))
        .execute(conn)?;
        let changed = diesel::sql_query(
            "UPDATE reports SET \
               stores_done = (SELECT COALESCE(SUM(COALESCE(s.stores_done, s.store_count, 0)), 0) \
                              FROM report_shards s WHERE s.report_id = ?), \
               stores_total = (SELECT COALESCE(SUM(COALESCE(s.stores_total, s.store_count, 0)), 0) \
                               FROM report_shards s WHERE s.report_id = ?), \
               heartbeat_at = ? \
             WHERE report_id = ? AND status = ?",
        )
        .bind::<diesel::sql_types::Char, _>(report_id)
        .bind::<diesel::sql_types::Char, _>(report_id)
        .bind::<diesel::sql_types::Datetime, _>(utc_now())
        .bind::<diesel::sql_types::Char, _>(report_id)
        .bind::<diesel::sql_types::Varchar, _>(ReportStatus::Running)
        .execute(conn)?;
        Ok(changed == 1)
    })
}

/// A computed shard, ready to store.
#[derive(Debug, Clone, Copy)]
pub struct ShardPart<'a> {
    /// Rows (stores) of this part.
    pub store_count: u32,
    /// This shard's part of the report's CSV (shard 0's begins with the header).
    pub csv: &'a [u8],
    /// The consumer that computed it.
    pub worker: &'a str,
}

/// What [`store_shard`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardStored {
    /// The part is stored in `chunks` chunks; `report_complete`: it was the last, the report is Complete.
    Stored {
        chunks: u32,
        shards_done: u32,
        shards_total: u32,
        report_complete: bool,
    },
    /// Another delivery stored this shard first: nothing written.
    AlreadyStored,
    /// The report is no longer Running: nothing written.
    ReportFinished(ReportStatus),
    Unknown,
}

/// Stores a shard's part of the CSV and marks the shard Complete in one transaction, counts it on the
/// report, and when it is the last one marks the report (and its sharers) Complete with the sums of its
/// shards: a reader sees every part of a Complete report, or no report.
pub fn store_shard(
    conn: &mut MysqlConnection,
    report_id: &str,
    shard_no: u32,
    part: ShardPart<'_>,
    chunking: Chunking,
) -> Result<ShardStored, StoreError> {
    report_model::check_chunking(chunking, part.csv.len())?;
    report_model::retry_on_deadlock(report_id, || store_shard_once(conn, report_id, shard_no, part, chunking))
}

fn store_shard_once(
    conn: &mut MysqlConnection,
    report_id: &str,
    shard_no: u32,
    part: ShardPart<'_>,
    chunking: Chunking,
) -> Result<ShardStored, StoreError> {
    conn.transaction(|conn| {
        let shard_status: Option<ReportStatus> = report_shards::table
            .find((report_id, shard_no))
            .select(report_shards::status)
            .for_update()
            .first(conn)
            .optional()?;
        match shard_status {
            None => return Ok(ShardStored::Unknown),
            Some(ReportStatus::Complete) => return Ok(ShardStored::AlreadyStored),
            Some(_) => {}
        }
        // The report row is locked before any chunk is written: shards of one report count themselves one
        // at a time, and a report Failed meanwhile takes no more chunks.
        type Counts = (ReportStatus, Option<u32>, Option<u32>, Option<NaiveDateTime>);
        let report: Option<Counts> = reports::table
            .find(report_id)
            .select((reports::status, reports::shards_done, reports::shards_total, reports::as_of))
            .for_update()
            .first(conn)
            .optional()?;
        let Some((status, shards_done, Some(shards_total), as_of)) = report else { return Ok(ShardStored::Unknown) };
        if status != ReportStatus::Running {
            return Ok(ShardStored::ReportFinished(status));
        }
        let stale: i64 = report_chunks::table
            .filter(report_chunks::report_id.eq(report_id))
            .filter(report_chunks::shard_no.eq(shard_no))
            .count()
            .get_result(conn)?;
        if stale > 0 {
            diesel::delete(
                report_chunks::table
                    .filter(report_chunks::report_id.eq(report_id))
                    .filter(report_chunks::shard_no.eq(shard_no)),
            )
            .execute(conn)?;
        }
        let chunks = report_model::insert_chunks(conn, report_id, shard_no, part.csv, chunking)?;
        diesel::update(report_shards::table.find((report_id, shard_no)))
            .set((
                report_shards::status.eq(ReportStatus::Complete),
                report_shards::store_count.eq(part.store_count),
                report_shards::stores_done.eq(part.store_count),
                report_shards::stores_total.eq(part.store_count),
                report_shards::csv_bytes.eq(part.csv.len() as u64),
                report_shards::chunks.eq(chunks),
                report_shards::worker.eq(part.worker),
                report_shards::finished_at.eq(utc_now()),
            ))
            .execute(conn)?;
        let shards_done = shards_done.unwrap_or(0).saturating_add(1);
        diesel::update(reports::table.find(report_id))
            .set((reports::shards_done.eq(shards_done), reports::heartbeat_at.eq(utc_now())))
            .execute(conn)?;
        let report_complete = shards_done >= shards_total;
        if report_complete {
            let (stores, bytes): (Option<i64>, Option<i64>) = report_shards::table
                .filter(report_shards::report_id.eq(report_id))
                .select((
                    diesel::dsl::sql::<diesel::sql_types::Nullable<diesel::sql_types::BigInt>>(
                        "CAST(SUM(store_count) AS SIGNED)",
                    ),
                    diesel::dsl::sql::<diesel::sql_types::Nullable<diesel::sql_types::BigInt>>(
                        "CAST(SUM(csv_bytes) AS SIGNED)",
                    ),
                ))
                .first(conn)?;
            let store_count = u32::try_from(stores.unwrap_or(0)).unwrap_or(u32::MAX);
            let csv_bytes = u64::try_from(bytes.unwrap_or(0)).unwrap_or(0);
            report_model::mark_complete(conn, report_id, as_of, store_count, csv_bytes)?;
        }
        Ok(ShardStored::Stored { chunks, shards_done, shards_total, report_complete })
    })
}

/// The chunk counts of a sharded report's parts, by shard number (empty for a report computed whole):
/// a download reads `(shard_no, 0 .. chunks)` of each in turn, so a missing chunk is noticed where it is.
pub fn chunk_layout(conn: &mut MysqlConnection, report_id: &str) -> QueryResult<Vec<(u32, u32)>> {
    let rows: Vec<(u32, Option<u32>)> = report_shards::table
        .filter(report_shards::report_id.eq(report_id))
        .select((report_shards::shard_no, report_shards::chunks))
        .order(report_shards::shard_no)
        .load(conn)?;
    Ok(rows.into_iter().map(|(shard_no, chunks)| (shard_no, chunks.unwrap_or(0))).collect())
}

/// One shard as a person following a report across workers sees it.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = report_shards, check_for_backend(diesel::mysql::Mysql))]
pub struct ShardRow {
    pub shard_no: u32,
    pub status: ReportStatus,
    pub attempts: u32,
    pub store_count: Option<u32>,
    pub worker: Option<String>,
}

/// The shards of a report, by number.
pub fn shards_of(conn: &mut MysqlConnection, report_id: &str) -> QueryResult<Vec<ShardRow>> {
    report_shards::table
        .filter(report_shards::report_id.eq(report_id))
        .order(report_shards::shard_no)
        .select(ShardRow::as_select())
        .load(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_points_make_ranges_that_cover_every_id_once() {
        let ranges = StoreRange::cut_at(&["b".into(), "d".into()]);
        assert_eq!(ranges.len(), 3);
        for id in ["", "a", "b", "c", "d", "zz", "\u{10ffff}"] {
            assert_eq!(ranges.iter().filter(|r| r.contains(id)).count(), 1, "{id:?}");
        }
        assert!(ranges[1].contains("b") && !ranges[1].contains("d"));
        assert_eq!(StoreRange::cut_at(&[]), vec![StoreRange::ALL]);
        assert_eq!(ranges[1].to_string(), "stores [b, d)");
    }
}
