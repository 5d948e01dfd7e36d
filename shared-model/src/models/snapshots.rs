//! Models and queries for `snapshots` and `current_snapshots` (owned by the ingest work), and the rows
//! that hang off a snapshot: `business_hours` and `store_timezones`.
//!
//! A snapshot is one whole hours or zones file. Its rows are written under a fresh `snapshot_id` that no
//! reader looks at; then `current_snapshots` is pointed at it in one short transaction. A reader that reads
//! the pointer and the rows in one transaction therefore sees one file, old or new, never a mix. A NULL
//! pointer means "no file": every store open all the time (hours) or in America/Chicago (zones).

use chrono::NaiveDateTime;
use diesel::mysql::MysqlConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Unsigned};

use crate::schema::{business_hours, current_snapshots, snapshots, store_timezones};
use uptime_core::input::{FileKind, HoursRow};

/// Where a kind's pointer stands: the snapshot readers use and the load that moved the pointer there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Queryable)]
pub struct CurrentSnapshot {
    pub snapshot_id: Option<u64>,
    pub load_id: Option<u64>,
}

/// Start of a multi-row insert into `business_hours`: each row that follows is
/// `(snapshot_id, store_key, row_no, weekday, start_us, end_us)`, rows separated by commas. `row_no`
/// numbers a store's rows in file order, `weekday` is 0 = Monday … 6 = Sunday, and the times are
/// microseconds since local midnight (`end_us` may be 24:00).
pub const BUSINESS_HOURS_INSERT_PREFIX: &str =
    "INSERT INTO business_hours (snapshot_id, store_key, row_no, weekday, start_us, end_us) VALUES ";

/// One row of `store_timezones`: the zone name as the file wrote it (an unknown name is kept).
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = store_timezones, check_for_backend(diesel::mysql::Mysql))]
pub struct StoreTimezoneRow {
    pub snapshot_id: u64,
    pub store_key: u32,
    pub timezone_str: String,
}

/// `store_timezones.timezone_str` holds at most this many characters.
pub const TIMEZONE_MAX_CHARS: usize = 64;

#[derive(Insertable)]
#[diesel(table_name = snapshots)]
struct NewSnapshot<'a> {
    file_kind: &'a str,
    load_id: u64,
    created_at: NaiveDateTime,
}

#[derive(QueryableByName)]
struct LastId {
    #[diesel(sql_type = Unsigned<BigInt>)]
    id: u64,
}

/// Registers a new, not yet current, snapshot and returns its id.
pub fn create(conn: &mut MysqlConnection, kind: FileKind, load_id: u64, created_at: NaiveDateTime) -> QueryResult<u64> {
    diesel::insert_into(snapshots::table)
        .values(NewSnapshot { file_kind: kind.as_str(), load_id, created_at })
        .execute(conn)?;
    Ok(diesel::sql_query("SELECT LAST_INSERT_ID() AS id").get_result::<LastId>(conn)?.id)
}

/// The pointer of a kind. A missing pointer row reads as "no file".
pub fn current(conn: &mut MysqlConnection, kind: FileKind) -> QueryResult<CurrentSnapshot> {
    Ok(current_snapshots::table
        .find(kind.as_str())
        .select((current_snapshots::snapshot_id, current_snapshots::load_id))
        .first::<CurrentSnapshot>(conn)
        .optional()?
        .unwrap_or(CurrentSnapshot { snapshot_id: None, load_id: None }))
}

/// Moves the pointer of a kind. Call it inside the transaction that makes the new snapshot visible.
pub fn point_to(
    conn: &mut MysqlConnection,
    kind: FileKind,
    snapshot_id: Option<u64>,
    load_id: Option<u64>,
) -> QueryResult<()> {
    // REPLACE rather than UPDATE: the row exists after the migration, but a pointer row lost by hand must
    // not turn a load into a silent no-op.
    diesel::replace_into(current_snapshots::table)
        .values((
            current_snapshots::file_kind.eq(kind.as_str()),
            current_snapshots::snapshot_id.eq(snapshot_id),
            current_snapshots::load_id.eq(load_id),
        ))
        .execute(conn)
        .map(drop)
}

/// Snapshots of a kind that the pointer does not name: replaced ones, and ones a failed load left behind.
pub fn stale(conn: &mut MysqlConnection, kind: FileKind) -> QueryResult<Vec<u64>> {
    let current = current(conn, kind)?.snapshot_id;
    let mut query = snapshots::table.filter(snapshots::file_kind.eq(kind.as_str())).into_boxed();
    if let Some(current) = current {
        query = query.filter(snapshots::snapshot_id.ne(current));
    }
    query.select(snapshots::snapshot_id).order(snapshots::snapshot_id.asc()).load(conn)
}

/// Deletes a snapshot and its rows. Readers still inside a transaction that saw it keep seeing it
/// (InnoDB keeps old row versions for them); the rows disappear for new transactions only.
pub fn delete(conn: &mut MysqlConnection, kind: FileKind, snapshot_id: u64) -> QueryResult<usize> {
    let rows = match kind {
        FileKind::Hours => {
            diesel::delete(business_hours::table.filter(business_hours::snapshot_id.eq(snapshot_id))).execute(conn)?
        }
        FileKind::Zones => {
            diesel::delete(store_timezones::table.filter(store_timezones::snapshot_id.eq(snapshot_id))).execute(conn)?
        }
        // Polls are never kept as snapshots: no rows hang off such an id.
        FileKind::Polls => 0,
    };
    diesel::delete(snapshots::table.find(snapshot_id)).execute(conn)?;
    Ok(rows)
}

/// Inserts zone rows, in statements well under the 65,535-placeholder limit.
pub fn insert_zones(conn: &mut MysqlConnection, rows: &[StoreTimezoneRow]) -> QueryResult<usize> {
    let mut written = 0;
    for chunk in rows.chunks(10_000) {
        written += diesel::insert_into(store_timezones::table).values(chunk).execute(conn)?;
    }
    Ok(written)
}

/// The business hours of a snapshot as the engine takes them (store key, weekday 0 = Monday, start and
/// end in µs since local midnight), in no particular order. `None`: no file, no rows.
pub fn business_hours(conn: &mut MysqlConnection, snapshot_id: Option<u64>) -> QueryResult<Vec<HoursRow>> {
    let Some(snapshot_id) = snapshot_id else { return Ok(Vec::new()) };
    let rows: Vec<(u32, u8, i64, i64)> = business_hours::table
        .filter(business_hours::snapshot_id.eq(snapshot_id))
        .select((business_hours::store_key, business_hours::weekday, business_hours::start_us, business_hours::end_us))
        .load(conn)?;
    Ok(rows.into_iter().map(|(store, weekday, start, end)| HoursRow { store, weekday, start, end }).collect())
}

/// The zone names of a snapshot as the file wrote them (unknown names included), by store key.
pub fn zone_names(conn: &mut MysqlConnection, snapshot_id: Option<u64>) -> QueryResult<Vec<(u32, String)>> {
    let Some(snapshot_id) = snapshot_id else { return Ok(Vec::new()) };
    store_timezones::table
        .filter(store_timezones::snapshot_id.eq(snapshot_id))
        .select((store_timezones::store_key, store_timezones::timezone_str))
        .load(conn)
}

/// The business hours of a snapshot for the stores of a key range (one shard of a report): a range of
/// the primary key (snapshot_id, store_key, row_no).
pub fn business_hours_in(
    conn: &mut MysqlConnection,
    snapshot_id: Option<u64>,
    range: crate::models::shards::KeyRange,
) -> QueryResult<Vec<HoursRow>> {
    let Some(snapshot_id) = snapshot_id else { return Ok(Vec::new()) };
    let mut query = business_hours::table
        .filter(business_hours::snapshot_id.eq(snapshot_id))
        .filter(business_hours::store_key.ge(range.first))
        .select((business_hours::store_key, business_hours::weekday, business_hours::start_us, business_hours::end_us))
        .into_boxed();
    if let Some(end) = range.end {
        query = query.filter(business_hours::store_key.lt(end));
    }
    let rows: Vec<(u32, u8, i64, i64)> = query.load(conn)?;
    Ok(rows.into_iter().map(|(store, weekday, start, end)| HoursRow { store, weekday, start, end }).collect())
}

/// The zone names of a snapshot for the stores of a key range, as [`zone_names`] gives them.
pub fn zone_names_in(
    conn: &mut MysqlConnection,
    snapshot_id: Option<u64>,
    range: crate::models::shards::KeyRange,
) -> QueryResult<Vec<(u32, String)>> {
    let Some(snapshot_id) = snapshot_id else { return Ok(Vec::new()) };
    let mut query = store_timezones::table
        .filter(store_timezones::snapshot_id.eq(snapshot_id))
        .filter(store_timezones::store_key.ge(range.first))
        .select((store_timezones::store_key, store_timezones::timezone_str))
        .into_boxed();
    if let Some(end) = range.end {
        query = query.filter(store_timezones::store_key.lt(end));
    }
    query.load(conn)
}

/// Whether a snapshot's rows are still there (a replaced snapshot is deleted by the next load of its
/// kind); `None` (no file) always is.
pub fn exists(conn: &mut MysqlConnection, snapshot_id: Option<u64>) -> QueryResult<bool> {
    let Some(snapshot_id) = snapshot_id else { return Ok(true) };
    let found: i64 = snapshots::table.filter(snapshots::snapshot_id.eq(snapshot_id)).count().get_result(conn)?;
    Ok(found > 0)
}

/// One store's business hours in a snapshot (a range of the primary key), as [`business_hours`] gives them.
pub fn store_business_hours(
    conn: &mut MysqlConnection,
    snapshot_id: Option<u64>,
    store_key: u32,
) -> QueryResult<Vec<HoursRow>> {
    let Some(snapshot_id) = snapshot_id else { return Ok(Vec::new()) };
    let rows: Vec<(u32, u8, i64, i64)> = business_hours::table
        .filter(business_hours::snapshot_id.eq(snapshot_id))
        .filter(business_hours::store_key.eq(store_key))
        .select((business_hours::store_key, business_hours::weekday, business_hours::start_us, business_hours::end_us))
        .load(conn)?;
    Ok(rows.into_iter().map(|(store, weekday, start, end)| HoursRow { store, weekday, start, end }).collect())
}

/// One store's zone name in a snapshot, as the file wrote it; `None` without a file or a row.
pub fn store_zone_name(
    conn: &mut MysqlConnection,
    snapshot_id: Option<u64>,
    store_key: u32,
) -> QueryResult<Option<String>> {
    let Some(snapshot_id) = snapshot_id else { return Ok(None) };
    store_timezones::table.find((snapshot_id, store_key)).select(store_timezones::timezone_str).first(conn).optional()
}
