//! Models and queries for `report_shards`: one report computed by many workers.
//!
//! ```text
//! report job --worker: plan (pins now + snapshots, one row per shard, Running)--> shard jobs published
//!   shard job --any worker: start_shard (attempts + 1) --> set_shard_progress ... --> store_shard
//!        (its part under its shard_no, the shard Complete, reports.shards_done + 1; the last one also
//!         merges the parts into the report's CSV and marks the report Complete, in one transaction)
//! ```
//!
//! A shard is a range of store keys (`first_store_key <= store_key < end_store_key`), so it reads its
//! polls, hours and zones as ranges of their primary keys. Keys only grow, so new stores join the last
//! shard and the earlier ranges (and the data workers keep for them) stay as they are: a plan reuses the
//! previous plan's cuts while every shard still holds between half and one and a half times its share
//! ([`reusable_cuts`]). A part holds its stores' rows in store-id order; the report's order is store-id
//! order over all stores, which is why the last shard merges the parts rather than concatenating them.
//!
//! Every shard computes with the report's pinned `now` (`reports.as_of`, set by the plan) and the pinned
//! hours and zones snapshots, so its rows are those the whole report would have: polls appended after the
//! plan are after `now` and play no part.
//!
//! Duplicates and redeliveries stay harmless: a shard stored once is never stored again (its row is
//! locked and found Complete), and a report that is no longer Running takes no shard (a Failed report's
//! other shards are acknowledged without work). Locks are taken shard row first, then report row.

use chrono::NaiveDateTime;
use diesel::mysql::MysqlConnection;
use diesel::prelude::*;

use super::reports::{self as report_model, Chunking, ReportStatus, StoreError, utc_now};
use crate::schema::{report_chunks, report_shards, reports, stores};

/// One shard's stores: `first <= store_key < end` (`None`: no end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct KeyRange {
    pub first: u32,
    pub end: Option<u32>,
}

impl KeyRange {
    /// Every store.
    pub const ALL: KeyRange = KeyRange { first: 0, end: None };

    pub fn contains(&self, store_key: u32) -> bool {
        store_key >= self.first && self.end.is_none_or(|end| store_key < end)
    }

    /// The ranges between consecutive cut points (ascending keys), covering every key.
    pub fn cut_at(cuts: &[u32]) -> Vec<KeyRange> {
        let starts = std::iter::once(0).chain(cuts.iter().copied());
        let ends = cuts.iter().copied().map(Some).chain([None]);
        starts.zip(ends).map(|(first, end)| KeyRange { first, end }).collect()
    }
}

impl std::fmt::Display for KeyRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.end {
            Some(end) => write!(f, "store keys [{}, {end})", self.first),
            None => write!(f, "store keys [{}, …)", self.first),
        }
    }
}

/// How many stores the `stores` table names.
pub fn count_stores(conn: &mut MysqlConnection) -> QueryResult<u64> {
    let n: i64 = stores::table.count().get_result(conn)?;
    Ok(n.unsigned_abs())
}

fn count_in(conn: &mut MysqlConnection, range: KeyRange) -> QueryResult<u64> {
    let mut query = stores::table.filter(stores::store_key.ge(range.first)).count().into_boxed();
    if let Some(end) = range.end {
        query = query.filter(stores::store_key.lt(end));
    }
    let n: i64 = query.get_result(conn)?;
    Ok(n.unsigned_abs())
}

/// Cut points so that every shard holds `stores_per_shard` stores in key order, from key `from` on (the
/// first cut is the first key after the first `stores_per_shard` stores).
fn fresh_cuts(conn: &mut MysqlConnection, from: u32, stores_per_shard: u32) -> QueryResult<Vec<u32>> {
    let keys: Vec<u32> = stores::table
        .filter(stores::store_key.ge(from))
        .select(stores::store_key)
        .order(stores::store_key)
        .load_iter::<u32, diesel::connection::DefaultLoadingMode>(conn)?
        .collect::<QueryResult<_>>()?;
    let every = usize::try_from(stores_per_shard.max(1)).unwrap_or(usize::MAX);
    Ok(keys.iter().copied().skip(every).step_by(every).collect())
}

/// The cut points of the newest planned report, `None` when no report was planned yet.
fn previous_cuts(conn: &mut MysqlConnection) -> QueryResult<Option<Vec<u32>>> {
    let newest: Option<String> = reports::table
        .filter(reports::shards_total.is_not_null())
        .order(reports::created_at.desc())
        .select(reports::report_id)
        .first(conn)
        .optional()?;
    let Some(report_id) = newest else { return Ok(None) };
    let starts: Vec<u32> = report_shards::table
        .filter(report_shards::report_id.eq(&report_id))
        .filter(report_shards::shard_no.gt(0))
        .order(report_shards::shard_no)
        .select(report_shards::first_store_key)
        .load(conn)?;
    Ok(Some(starts))
}

/// The previous plan's cuts when they still fit: no shard grew past 1.5 times `stores_per_shard` or
/// shrank under half of it, but the last, which new stores join; a last shard grown too large is cut
/// again from its start. `None`: cut afresh.
pub fn reusable_cuts(conn: &mut MysqlConnection, stores_per_shard: u32) -> QueryResult<Option<Vec<u32>>> {
    let Some(mut cuts) = previous_cuts(conn)? else { return Ok(None) };
    if cuts.is_empty() {
        return Ok(None);
    }
    let (low, high) = (u64::from(stores_per_shard / 2), u64::from(stores_per_shard) * 3 / 2);
    let ranges = KeyRange::cut_at(&cuts);
    let Some((last, earlier)) = ranges.split_last() else { return Ok(None) };
    for range in earlier {
        let stores = count_in(conn, *range)?;
        if stores < low || stores > high {
            return Ok(None);
        }
    }
    if count_in(conn, *last)? > high {
        cuts.extend(fresh_cuts(conn, last.first, stores_per_shard)?);
    }
    Ok(Some(cuts))
}

/// The cut points of a new plan: the previous plan's while they fit ([`reusable_cuts`]), else every
/// `stores_per_shard`-th store in key order.
pub fn plan_cuts(conn: &mut MysqlConnection, stores_per_shard: u32) -> QueryResult<Vec<u32>> {
    match reusable_cuts(conn, stores_per_shard)? {
        Some(cuts) => Ok(cuts),
        None => fresh_cuts(conn, 0, stores_per_shard),
    }
}

/// What a plan pins for every shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The report's `now` (`None`: no poll at all).
    pub as_of: Option<NaiveDateTime>,
    pub hours_snapshot: Option<u64>,
    pub zones_snapshot: Option<u64>,
    pub shards: Vec<KeyRange>,
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
                    report_shards::first_store_key.eq(range.first),
                    report_shards::end_store_key.eq(range.end),
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
    pub range: KeyRange,
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
        let shard: Option<(ReportStatus, u32, u32, Option<u32>)> = report_shards::table
            .find((report_id, shard_no))
            .select((
                report_shards::status,
                report_shards::attempts,
                report_shards::first_store_key,
                report_shards::end_store_key,
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
            range: KeyRange { first, end },
            shards_total,
            as_of,
            hours_snapshot,
            zones_snapshot,
            unknown_after_minutes,
            attempt,
        }))
    })
}

/// Writes a running shard's progress, then the report's (the sums over its shards) with its heartbeat.
/// Three statements of one row lock each, not one transaction: progress writers of sibling shards must
/// never hold one shard's row while they wait for another's. False when the report is not Running.
pub fn set_shard_progress(
    conn: &mut MysqlConnection,
    report_id: &str,
    shard_no: u32,
    stores_done: u32,
    stores_total: u32,
) -> QueryResult<bool> {
    diesel::update(
        report_shards::table.find((report_id, shard_no)).filter(report_shards::status.eq(ReportStatus::Running)),
    )
    .set((report_shards::stores_done.eq(stores_done), report_shards::stores_total.eq(stores_total)))
    .execute(conn)?;
    let sums: (Option<i64>, Option<i64>) = report_shards::table
        .filter(report_shards::report_id.eq(report_id))
        .select((
            diesel::dsl::sql::<diesel::sql_types::Nullable<diesel::sql_types::BigInt>>(
                "CAST(SUM(COALESCE(stores_done, store_count, 0)) AS SIGNED)",
            ),
            diesel::dsl::sql::<diesel::sql_types::Nullable<diesel::sql_types::BigInt>>(
                "CAST(SUM(COALESCE(stores_total, store_count, 0)) AS SIGNED)",
            ),
        ))
        .first(conn)?;
    let count = |n: Option<i64>| u32::try_from(n.unwrap_or(0)).unwrap_or(u32::MAX);
    let changed = diesel::update(reports::table.find(report_id).filter(reports::status.eq(ReportStatus::Running)))
        .set((
            reports::stores_done.eq(count(sums.0)),
            reports::stores_total.eq(count(sums.1)),
            reports::heartbeat_at.eq(utc_now()),
        ))
        .execute(conn)?;
    Ok(changed == 1)
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

/// Makes the report's CSV of its parts (in shard order), or says why it cannot: the worker passes the
/// engine's merge, so this module never reads a CSV.
pub type MergeParts = dyn Fn(&[&[u8]]) -> Result<Vec<u8>, String>;

/// What [`store_shard`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardStored {
    /// Stored: in `chunks` chunks, the part's, or the merged report's when `report_complete` (it was the
    /// last part, the report is Complete).
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

/// Stores a shard's part of the CSV and marks the shard Complete in one transaction, and counts it on the
/// report. The last one also reads every part, makes the report's CSV of them with `merge` (the parts in
/// shard order), stores it as the report's chunks in place of the parts and marks the report (and its
/// sharers) Complete: a reader sees the whole CSV of a Complete report, or no report.
pub fn store_shard(
    conn: &mut MysqlConnection,
    report_id: &str,
    shard_no: u32,
    part: ShardPart<'_>,
    chunking: Chunking,
    merge: &MergeParts,
) -> Result<ShardStored, StoreError> {
    report_model::check_chunking(chunking, part.csv.len())?;
    report_model::retry_on_deadlock(report_id, || store_shard_once(conn, report_id, shard_no, part, chunking, merge))
}

fn store_shard_once(
    conn: &mut MysqlConnection,
    report_id: &str,
    shard_no: u32,
    part: ShardPart<'_>,
    chunking: Chunking,
    merge: &MergeParts,
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
        let shards_done = shards_done.unwrap_or(0).saturating_add(1);
        let report_complete = shards_done >= shards_total;
        // The last part is merged from memory: written only to be read back and deleted otherwise.
        let chunks = if report_complete {
            merge_into_report(conn, report_id, shard_no, part, as_of, chunking, merge)?
        } else {
            report_model::insert_chunks(conn, report_id, shard_no, part.csv, chunking)?
        };
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
        diesel::update(reports::table.find(report_id))
            .set((reports::shards_done.eq(shards_done), reports::heartbeat_at.eq(utc_now())))
            .execute(conn)?;
        Ok(ShardStored::Stored { chunks, shards_done, shards_total, report_complete })
    })
}

/// The last shard: reads the other shards' parts, merges them with `part`, stores the result as the
/// report's chunks in place of the parts and marks the report Complete. Returns the report's chunk count.
fn merge_into_report(
    conn: &mut MysqlConnection,
    report_id: &str,
    shard_no: u32,
    part: ShardPart<'_>,
    as_of: Option<NaiveDateTime>,
    chunking: Chunking,
    merge: &MergeParts,
) -> Result<u32, StoreError> {
    let others: Option<i64> = report_shards::table
        .filter(report_shards::report_id.eq(report_id))
        .filter(report_shards::shard_no.ne(shard_no))
        .select(diesel::dsl::sql::<diesel::sql_types::Nullable<diesel::sql_types::BigInt>>(
            "CAST(SUM(store_count) AS SIGNED)",
        ))
        .first(conn)?;
    let store_count = u32::try_from(others.unwrap_or(0)).unwrap_or(u32::MAX).saturating_add(part.store_count);
    let chunks_of_parts: Vec<(u32, Vec<u8>)> = report_chunks::table
        .filter(report_chunks::report_id.eq(report_id))
        .order((report_chunks::shard_no, report_chunks::seq))
        .select((report_chunks::shard_no, report_chunks::data))
        .load(conn)?;
    let mut parts: Vec<Vec<u8>> = Vec::new();
    let mut last_shard = None;
    for (shard, data) in chunks_of_parts {
        if last_shard != Some(shard) {
            parts.push(Vec::new());
            last_shard = Some(shard);
        }
        if let Some(stored) = parts.last_mut() {
            stored.extend_from_slice(&data);
        }
    }
    // The merge sorts every row by store id, so the parts may come in any order.
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).chain([part.csv]).collect();
    let csv = merge(&refs).map_err(StoreError::Merge)?;
    drop(parts);
    report_model::check_chunking(chunking, csv.len())?;
    diesel::delete(report_chunks::table.filter(report_chunks::report_id.eq(report_id))).execute(conn)?;
    let chunks = report_model::insert_chunks(conn, report_id, 0, &csv, chunking)?;
    report_model::mark_complete(conn, report_id, as_of, store_count, csv.len() as u64)?;
    Ok(chunks)
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
    fn cut_points_make_ranges_that_cover_every_key_once() {
        let ranges = KeyRange::cut_at(&[10, 20]);
        assert_eq!(ranges.len(), 3);
        for key in [0, 1, 9, 10, 19, 20, u32::MAX] {
            assert_eq!(ranges.iter().filter(|r| r.contains(key)).count(), 1, "{key}");
        }
        assert!(ranges[1].contains(10) && !ranges[1].contains(20));
        assert_eq!(KeyRange::cut_at(&[]), vec![KeyRange::ALL]);
        assert_eq!(ranges[1].to_string(), "store keys [10, 20)");
        assert_eq!(ranges[2].to_string(), "store keys [20, …)");
    }
}
