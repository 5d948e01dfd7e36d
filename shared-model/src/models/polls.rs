//! SQL for the `polls` table (owned by the ingest work): one row per (store, instant), with the load that
//! last inserted it or changed its status, and for `polls_staging`, where a large load is written before
//! one statement moves it into `polls`.
//!
//! The ingest writes polls as large multi-row statements built as text (diesel's batched inserts parse
//! several times slower on the server); this module owns the text around the rows, so the tables and their
//! columns are spelled only here. Where MySQL 8 and MariaDB differ the text is chosen by
//! [`ServerFlavour`]: MySQL 8 deprecates `VALUES(col)` in `ON DUPLICATE KEY UPDATE`, MariaDB rejects the
//! row alias that replaces it.

use diesel::connection::DefaultLoadingMode;
use diesel::connection::SimpleConnection as _;
use diesel::mysql::MysqlConnection;
use diesel::mysql::data_types::MysqlTime;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Unsigned};
use uptime_core::input::Poll;
use uptime_core::time::{DAY, MICROS_PER_SECOND, Micros, civil_from_days, days_from_civil};

use crate::db::ServerFlavour;
use crate::schema::{polls, polls_staging};

/// Start of the upsert: each row that follows is `(store_key, 'polled_at', active, load_id)` with `active`
/// as 0 or 1, rows separated by commas, then [`upsert_on_duplicate`].
pub const UPSERT_PREFIX: &str = "INSERT INTO polls (store_key, polled_at, active, load_id) VALUES ";

/// [`upsert_on_duplicate`] of MariaDB, which MySQL 8 still accepts (with a deprecation warning).
pub const UPSERT_ON_DUPLICATE: &str = " ON DUPLICATE KEY UPDATE \
    load_id = IF(polls.active = VALUES(active), polls.load_id, VALUES(load_id)), active = VALUES(active)";

const UPSERT_ON_DUPLICATE_MYSQL: &str = " AS new ON DUPLICATE KEY UPDATE \
    load_id = IF(polls.active = new.active, polls.load_id, new.load_id), active = new.active";

/// End of the upsert: a row already there takes the new status, and the new `load_id` only if its status
/// changed, so a reader can fetch what a load changed by `load_id`. MySQL assigns left to right: `load_id`
/// is decided while `active` still holds the old status.
pub fn upsert_on_duplicate(flavour: ServerFlavour) -> &'static str {
    match flavour {
        ServerFlavour::MariaDb => UPSERT_ON_DUPLICATE,
        ServerFlavour::MySql => UPSERT_ON_DUPLICATE_MYSQL,
    }
}

/// Start of a plain insert into `polls_staging`, rows as after [`UPSERT_PREFIX`] (same columns, same
/// order), with no end: a load stages each of its polls once.
pub const STAGE_PREFIX: &str = "INSERT INTO polls_staging (store_key, polled_at, active, load_id) VALUES ";

/// The upsert of one load's staged rows into `polls` (`?` is the load id), with
/// the `load_id` rule of [`upsert_on_duplicate`]. In key order, which is the staging table's order within
/// a load, so the server sorts nothing.
pub fn merge_staged_sql(flavour: ServerFlavour) -> &'static str {
    match flavour {
        ServerFlavour::MariaDb => {
            "INSERT INTO polls (store_key, polled_at, active, load_id) \
             SELECT store_key, polled_at, active, load_id FROM polls_staging \
             WHERE load_id = ? ORDER BY store_key, polled_at \
             ON DUPLICATE KEY UPDATE \
             load_id = IF(polls.active = VALUES(active), polls.load_id, VALUES(load_id)), active = VALUES(active)"
        }
        // MySQL 8.0.19+ lets the update name the columns of a single-table SELECT instead of VALUES().
        ServerFlavour::MySql => {
            "INSERT INTO polls (store_key, polled_at, active, load_id) \
             SELECT s.store_key, s.polled_at, s.active, s.load_id FROM polls_staging AS s \
             WHERE s.load_id = ? ORDER BY s.store_key, s.polled_at \
             ON DUPLICATE KEY UPDATE \
             load_id = IF(polls.active = s.active, polls.load_id, s.load_id), active = s.active"
        }
    }
}

/// Upserts the staged rows of `load_id` into `polls`, on whatever transaction `conn` has open; returns
/// the server's count of affected rows (1 per row inserted or found unchanged, 2 per row changed).
pub fn merge_staged(conn: &mut MysqlConnection, flavour: ServerFlavour, load_id: u64) -> QueryResult<usize> {
    diesel::sql_query(merge_staged_sql(flavour)).bind::<Unsigned<BigInt>, _>(load_id).execute(conn)
}

/// How many rows `polls_staging` holds.
pub fn staged_count(conn: &mut MysqlConnection) -> QueryResult<u64> {
    let n: i64 = polls_staging::table.count().get_result(conn)?;
    Ok(n.unsigned_abs())
}

/// Empties `polls_staging`; true if it held rows. Only the holder of the ingest lock may call this (no
/// other load is staging then). TRUNCATE rather than DELETE: it drops a killed load's million rows at
/// once, with no undo log; it commits implicitly, so never call it inside a transaction.
pub fn clear_staging(conn: &mut MysqlConnection) -> QueryResult<bool> {
    let held = diesel::select(diesel::dsl::exists(polls_staging::table.select(polls_staging::load_id)))
        .get_result::<bool>(conn)?;
    if held {
        diesel::sql_query("TRUNCATE TABLE polls_staging").execute(conn)?;
    }
    Ok(held)
}

/// How many polls the table holds.
pub fn count(conn: &mut MysqlConnection) -> QueryResult<u64> {
    let n: i64 = polls::table.count().get_result(conn)?;
    // COUNT(*) is never negative.
    Ok(n.unsigned_abs())
}

// ---- Retention: how long polls are kept (the ingest's `retention_days`) ----

/// Rows one retention DELETE removes at most: each statement holds its row locks for milliseconds, so
/// neither a load nor a report's read ever waits long behind it.
pub const RETENTION_DELETE_BATCH: u64 = 10_000;

#[derive(QueryableByName)]
struct Newest {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Datetime>)]
    at: Option<chrono::NaiveDateTime>,
}

/// The newest poll's instant (µs since the epoch), `None` for an empty table: the report's `now`, and
/// the end of the retention window. Partition by partition from the newest day back, so the server
/// reads one day's rows, not the table (there is no index on `polled_at` to read it from).
pub fn newest_polled_at(conn: &mut MysqlConnection) -> QueryResult<Option<Micros>> {
    let days = day_partitions(conn)?;
    let newest_in = |conn: &mut MysqlConnection, from: Option<i64>| -> QueryResult<Option<Micros>> {
        let newest: Newest = match from {
            Some(day) => diesel::sql_query("SELECT MAX(polled_at) AS at FROM polls WHERE polled_at >= ?")
                .bind::<diesel::sql_types::Datetime, _>(datetime(day * DAY))
                .get_result(conn)?,
            None => diesel::sql_query("SELECT MAX(polled_at) AS at FROM polls").get_result(conn)?,
        };
        Ok(newest.at.map(|at| at.and_utc().timestamp_micros()))
    };
    // p_future first (from the day after the last day partition), then each day back; the first day
    // partition also holds everything older, so the last look has no lower bound.
    let after_last = days.last().map(|last| last + 1);
    let later_days = days.iter().skip(1).rev().copied();
    for from in after_last.into_iter().chain(later_days) {
        if let Some(at) = newest_in(conn, Some(from))? {
            return Ok(Some(at));
        }
    }
    newest_in(conn, None)
}
/// Deletes every poll before `cutoff` (µs since the epoch; a poll exactly at it stays), oldest first, in
/// statements of at most `batch` rows that each commit on their own (autocommit). The server reads only
/// the partitions before `cutoff`: after [`drop_day_partitions_before`], the cutoff's own day. Returns how
/// many were deleted.
pub fn delete_polled_before(conn: &mut MysqlConnection, cutoff: Micros, batch: u64) -> QueryResult<u64> {
    let Some(cutoff) = chrono::DateTime::from_timestamp_micros(cutoff).map(|at| at.naive_utc()) else {
        return Ok(0);
    };
    let mut deleted = 0u64;
    loop {
        let n = diesel::sql_query("DELETE FROM polls WHERE polled_at < ? LIMIT ?")
            .bind::<diesel::sql_types::Datetime, _>(cutoff)
            .bind::<diesel::sql_types::Unsigned<diesel::sql_types::BigInt>, _>(batch.max(1))
            .execute(conn)? as u64;
        deleted += n;
        if n < batch.max(1) {
            return Ok(deleted);
        }
    }
}

// ---- Partitions: one per UTC day, named `pYYYYMMDD`, holding the polls before the next day ----

/// The catch-all partition after the last day's (the migration creates it).
const FUTURE_PARTITION: &str = "p_future";

/// Days whose partitions the ingest creates past the newest poll it loads, so the next loads of the
/// coming hours find theirs and the table's layout changes about once a day.
pub const PARTITION_DAYS_AHEAD: i64 = 2;

/// At most this many partitions are added at once (a year of days; MySQL allows 8192 in all).
const MAX_NEW_PARTITIONS: i64 = 366;

#[derive(QueryableByName)]
struct PartitionName {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    name: Option<String>,
}

/// The days (since the epoch) of the day partitions, oldest first. Empty if `polls` is not partitioned.
pub fn day_partitions(conn: &mut MysqlConnection) -> QueryResult<Vec<i64>> {
    let names: Vec<PartitionName> = diesel::sql_query(
        "SELECT PARTITION_NAME AS name FROM information_schema.PARTITIONS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'polls' ORDER BY PARTITION_ORDINAL_POSITION",
    )
    .load(conn)?;
    Ok(names.iter().filter_map(|p| p.name.as_deref().and_then(partition_day)).collect())
}

fn partition_name(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("p{y:04}{m:02}{d:02}")
}

fn partition_day(name: &str) -> Option<i64> {
    let digits = name.strip_prefix('p').filter(|d| d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()))?;
    let (y, m, d) = (digits[..4].parse().ok()?, digits[4..6].parse().ok()?, digits[6..].parse().ok()?);
    Some(days_from_civil(y, m, d))
}

/// The partition bound of `day`: its midnight, as SQL text.
fn day_literal(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("'{y:04}-{m:02}-{d:02} 00:00:00'")
}

/// Makes sure every day from `first` to `last` (days since the epoch) has its partition, by splitting new
/// days off `p_future`; days before the first day partition need none (it holds everything older).
/// Returns how many were added. A DDL statement: it commits, so never call it inside a transaction, and
/// it waits at most `lock_wait_seconds` for readers of `polls` to finish.
pub fn add_day_partitions(
    conn: &mut MysqlConnection,
    first: i64,
    last: i64,
    lock_wait_seconds: u32,
) -> QueryResult<usize> {
    let existing = day_partitions(conn)?;
    let from = existing.last().map_or(first, |&newest| newest + 1).max(last - MAX_NEW_PARTITIONS + 1);
    if from > last {
        return Ok(0);
    }
    let days: Vec<String> = (from..=last)
        .map(|day| format!("PARTITION {} VALUES LESS THAN ({})", partition_name(day), day_literal(day + 1)))
        .collect();
    let ddl = format!(
        "ALTER TABLE polls REORGANIZE PARTITION {FUTURE_PARTITION} INTO ({}, PARTITION {FUTURE_PARTITION} VALUES LESS THAN (MAXVALUE))",
        days.join(", ")
    );
    with_lock_wait(conn, lock_wait_seconds, |conn| conn.batch_execute(&ddl))?;
    Ok(days.len())
}

/// Drops the day partitions wholly before `cutoff` (µs since the epoch) and returns how many polls they
/// held. A DDL statement, like [`add_day_partitions`]. The polls of the day `cutoff` falls in are left to
/// [`delete_polled_before`].
pub fn drop_day_partitions_before(
    conn: &mut MysqlConnection,
    cutoff: Micros,
    lock_wait_seconds: u32,
) -> QueryResult<u64> {
    let cutoff_day = cutoff.div_euclid(DAY);
    // A partition of day d holds the polls before d + 1; the one before the cutoff's day ends at or before it.
    let expired: Vec<i64> = day_partitions(conn)?.into_iter().filter(|&day| day < cutoff_day).collect();
    let Some(&last) = expired.last() else { return Ok(0) };
    let held: i64 = polls::table.filter(polls::polled_at.lt(datetime((last + 1) * DAY))).count().get_result(conn)?;
    let names: Vec<String> = expired.iter().map(|&day| partition_name(day)).collect();
    let ddl = format!("ALTER TABLE polls DROP PARTITION {}", names.join(", "));
    with_lock_wait(conn, lock_wait_seconds, |conn| conn.batch_execute(&ddl))?;
    Ok(held.unsigned_abs())
}

/// Runs DDL with a bound on its wait for the table's metadata lock (the server's default is a year), and
/// the session's default restored after.
fn with_lock_wait<T>(
    conn: &mut MysqlConnection,
    seconds: u32,
    ddl: impl FnOnce(&mut MysqlConnection) -> QueryResult<T>,
) -> QueryResult<T> {
    conn.batch_execute(&format!("SET SESSION lock_wait_timeout = {}", seconds.max(1)))?;
    let done = ddl(conn);
    let restored = conn.batch_execute("SET SESSION lock_wait_timeout = DEFAULT");
    let done = done?;
    restored?;
    Ok(done)
}

// ---- Reads ----

/// Every poll, in primary-key order, which is the engine's (store, at) order. Plain columns: converting
/// the DATETIME on the client is cheaper than any SQL expression for it (measured: TIMESTAMPDIFF adds
/// 0.1–0.25 s of server time per 1.9 M rows). No COUNT(*) to size the vector: it costs a fifth of the
/// read (a scan of its own), growing costs milliseconds.
pub fn read_all(conn: &mut MysqlConnection) -> QueryResult<Vec<Poll>> {
    polls::table
        .select((polls::store_key, polls::polled_at, polls::active))
        .order((polls::store_key, polls::polled_at))
        .load_iter::<(u32, MysqlTime, bool), DefaultLoadingMode>(conn)?
        .map(|row| row.map(poll))
        .collect()
}

/// The polls a load after `load_id` inserted or changed, in no particular order.
pub fn read_changed_after(conn: &mut MysqlConnection, load_id: u64) -> QueryResult<Vec<Poll>> {
    polls::table
        .filter(polls::load_id.gt(load_id))
        .select((polls::store_key, polls::polled_at, polls::active))
        .load_iter::<(u32, MysqlTime, bool), DefaultLoadingMode>(conn)?
        .map(|row| row.map(poll))
        .collect()
}

/// How many polls a load after `load_id` inserted or changed.
pub fn count_changed_after(conn: &mut MysqlConnection, load_id: u64) -> QueryResult<u64> {
    let n: i64 = polls::table.filter(polls::load_id.gt(load_id)).count().get_result(conn)?;
    Ok(n.unsigned_abs())
}

fn poll((store, at, active): (u32, MysqlTime, bool)) -> Poll {
    Poll { store, at: mysql_micros(&at), active }
}

/// A DATETIME as the client library hands it over, to µs since the epoch, without building a chrono
/// value first (measured on the 1.9 M-row set: the read drops from ~0.75 s to ~0.6 s).
/// µs since the epoch as a DATETIME(6) parameter. Out of chrono's range (never for a real poll) the
/// bound is clamped, which keeps the comparison's meaning: everything, or nothing.
fn datetime(at: Micros) -> chrono::NaiveDateTime {
    chrono::DateTime::from_timestamp_micros(at)
        .map_or_else(|| if at < 0 { chrono::NaiveDateTime::MIN } else { chrono::NaiveDateTime::MAX }, |t| t.naive_utc())
}

fn mysql_micros(t: &MysqlTime) -> Micros {
    let days = days_from_civil(i64::from(t.year), t.month, t.day);
    let seconds = days * 86_400 + i64::from(t.hour) * 3_600 + i64::from(t.minute) * 60 + i64::from(t.second);
    seconds * MICROS_PER_SECOND + t.second_part as i64
}

#[cfg(test)]
mod tests {
    use chrono::{Datelike, NaiveDateTime, Timelike};
    use diesel::mysql::data_types::MysqlTimestampType;

    use super::*;

    #[test]
    fn each_server_gets_the_upsert_it_accepts() {
        assert_eq!(
            upsert_on_duplicate(ServerFlavour::MySql),
            " AS new ON DUPLICATE KEY UPDATE load_id = IF(polls.active = new.active, polls.load_id, new.load_id), \
             active = new.active"
        );
        assert_eq!(
            upsert_on_duplicate(ServerFlavour::MariaDb),
            " ON DUPLICATE KEY UPDATE load_id = IF(polls.active = VALUES(active), polls.load_id, VALUES(load_id)), \
             active = VALUES(active)"
        );
        assert_eq!(
            merge_staged_sql(ServerFlavour::MySql),
            "INSERT INTO polls (store_key, polled_at, active, load_id) SELECT s.store_key, s.polled_at, s.active, \
             s.load_id FROM polls_staging AS s WHERE s.load_id = ? ORDER BY s.store_key, s.polled_at ON DUPLICATE KEY \
             UPDATE load_id = IF(polls.active = s.active, polls.load_id, s.load_id), active = s.active"
        );
        assert_eq!(
            merge_staged_sql(ServerFlavour::MariaDb),
            "INSERT INTO polls (store_key, polled_at, active, load_id) SELECT store_key, polled_at, active, load_id \
             FROM polls_staging WHERE load_id = ? ORDER BY store_key, polled_at ON DUPLICATE KEY UPDATE \
             load_id = IF(polls.active = VALUES(active), polls.load_id, VALUES(load_id)), active = VALUES(active)"
        );
        assert!(!upsert_on_duplicate(ServerFlavour::MySql).contains("VALUES("), "deprecated in MySQL 8");
        assert!(!merge_staged_sql(ServerFlavour::MySql).contains("VALUES("), "deprecated in MySQL 8");
    }

    #[test]
    fn mysql_datetimes_convert_like_chrono() {
        for text in [
            "1970-01-01 00:00:00",
            "2023-01-25 18:13:22.479220",
            "2024-02-29 23:59:59.999999",
            "1969-12-31 23:59:59.5",
            "2100-03-01 00:00:00",
        ] {
            let at = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").expect("valid");
            let t = MysqlTime::new(
                at.year() as _,
                at.month() as _,
                at.day() as _,
                at.hour() as _,
                at.minute() as _,
                at.second() as _,
                (at.nanosecond() / 1_000) as _,
                false,
                MysqlTimestampType::MYSQL_TIMESTAMP_DATETIME,
                0,
            );
            assert_eq!(mysql_micros(&t), at.and_utc().timestamp_micros(), "{text}");
        }
    }
}

// --- reads of the report worker ---
//
// The report only looks at `[now − 8 d, now]` (`uptime_core::engine::LOOKBACK`), `now` being the latest
// poll, so the worker finds `now` first and reads no poll before the window: its cost and memory follow
// the window, not the history the table holds.
//
// A module of their own, so this part can follow the tests above (clippy: items_after_test_module).
pub use worker_reads::{count_changed_since, read_changed_since, read_range_since, read_since, read_store};

/// Store keys per query of [`read_range_since`]: about 270,000 polls of a real-shaped week (135 a store),
/// some 13 MB in the client library's buffer.
pub const RANGE_READ_KEYS: u32 = 2_000;

mod worker_reads {
    use super::*;

    /// The polls at or after `from`, in the engine's (store, at) order. The server picks the plan: the primary
    /// key in order (the rows before `from` are skipped on the server, never sent), or an index on
    /// `polled_at` and a sort when the window is a small part of the table.
    pub fn read_since(conn: &mut MysqlConnection, from: Micros) -> QueryResult<Vec<Poll>> {
        polls::table
            .filter(polls::polled_at.ge(datetime(from)))
            .select((polls::store_key, polls::polled_at, polls::active))
            .order((polls::store_key, polls::polled_at))
            .load_iter::<(u32, MysqlTime, bool), DefaultLoadingMode>(conn)?
            .map(|row| row.map(poll))
            .collect()
    }

    /// The polls at or after `from` of the stores in `range` (one shard of a report), in the engine's
    /// (store, at) order: ranges of the primary key, [`RANGE_READ_KEYS`] store keys per query, so the
    /// client library never buffers more than one such piece (it holds a whole result in memory). A
    /// DATETIME(6) at a polls' instant is unique per store, so the sort is the table's key order.
    pub fn read_range_since(
        conn: &mut MysqlConnection,
        range: crate::models::shards::KeyRange,
        from: Micros,
    ) -> QueryResult<Vec<Poll>> {
        let highest: Option<u32> =
            crate::schema::stores::table.select(diesel::dsl::max(crate::schema::stores::store_key)).first(conn)?;
        let Some(highest) = highest else { return Ok(Vec::new()) };
        let end = range.end.unwrap_or(highest.saturating_add(1)).min(highest.saturating_add(1));
        let mut polls: Vec<Poll> = Vec::new();
        let mut first = range.first;
        while first < end {
            let piece_end = first.saturating_add(RANGE_READ_KEYS).min(end);
            let piece = polls::table
                .filter(polls::store_key.ge(first))
                .filter(polls::store_key.lt(piece_end))
                .filter(polls::polled_at.ge(datetime(from)))
                .select((polls::store_key, polls::polled_at, polls::active))
                .load_iter::<(u32, MysqlTime, bool), DefaultLoadingMode>(conn)?;
            let sorted_from = polls.len();
            for row in piece {
                polls.push(poll(row?));
            }
            // Unordered, the server streams each day's partition in turn instead of merging them (measured:
            // a quarter less server time); a piece sorted here keeps the whole in order, pieces ascending.
            polls[sorted_from..].sort_unstable_by_key(|p| (p.store, p.at));
            first = piece_end;
        }
        polls.shrink_to_fit();
        Ok(polls)
    }

    /// The polls at or after `from` that a load after `load_id` inserted or changed, in no particular order.
    /// The `load_id` index holds the primary key too, so the `polled_at` test needs no row lookup.
    pub fn read_changed_since(conn: &mut MysqlConnection, load_id: u64, from: Micros) -> QueryResult<Vec<Poll>> {
        polls::table
            .filter(polls::load_id.gt(load_id))
            .filter(polls::polled_at.ge(datetime(from)))
            .select((polls::store_key, polls::polled_at, polls::active))
            .load_iter::<(u32, MysqlTime, bool), DefaultLoadingMode>(conn)?
            .map(|row| row.map(poll))
            .collect()
    }

    /// How many polls at or after `from` a load after `load_id` inserted or changed.
    pub fn count_changed_since(conn: &mut MysqlConnection, load_id: u64, from: Micros) -> QueryResult<u64> {
        let n: i64 = polls::table
            .filter(polls::load_id.gt(load_id))
            .filter(polls::polled_at.ge(datetime(from)))
            .count()
            .get_result(conn)?;
        Ok(n.unsigned_abs())
    }

    /// One store's polls in `[from, to]`, by instant: a range of the primary key (store_key, polled_at),
    /// so the server reads only those rows, whatever the table holds.
    pub fn read_store(conn: &mut MysqlConnection, store_key: u32, from: Micros, to: Micros) -> QueryResult<Vec<Poll>> {
        polls::table
            .filter(polls::store_key.eq(store_key))
            .filter(polls::polled_at.ge(datetime(from)))
            .filter(polls::polled_at.le(datetime(to)))
            .select((polls::store_key, polls::polled_at, polls::active))
            .order(polls::polled_at)
            .load_iter::<(u32, MysqlTime, bool), DefaultLoadingMode>(conn)?
            .map(|row| row.map(poll))
            .collect()
    }
}
