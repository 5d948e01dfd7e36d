//! The report inputs as the worker keeps them in memory between jobs, and how they are brought up to date
//! from MySQL.
//!
//! Reading all 1.9 M polls costs most of a second, so the worker reads them once and afterwards fetches only
//! what the ingest changed, keyed by the ingest record:
//! - every poll row carries the load that last changed it (`polls.load_id`), and `loads` records every load
//!   with its status; a load that is no longer `running` has committed all its rows. The dataset remembers
//!   the highest load id up to which every load had finished ([`IngestVersion::settled_load_id`]), and the
//!   next refresh fetches the polls with a higher `load_id` and merges them in (same store and instant:
//!   the fetched row replaces the kept one). Rows of loads still running are fetched again next time.
//! - business hours and zones are whole snapshots named by `current_snapshots`; they are read again only
//!   when the pointer moved.
//!
//! This relies on what the ingest does: a load's `loads` row exists (as `running`) before its polls are
//! written and leaves `running` only after they are committed; polls are upserted, never deleted; a
//! snapshot's rows do not change once it is current. A database reset (load ids going back) is noticed
//! and read whole; polls deleted by hand are not noticed until the worker restarts.
//!
//! [`refresh`] must run inside one consistent-snapshot transaction ([`with_consistent_snapshot`]), so the
//! polls, hours and zones of one report all come from the same moment.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono_tz::Tz;
use diesel::connection::SimpleConnection;
use diesel::mysql::MysqlConnection;
use diesel::mysql::data_types::MysqlTime;
use diesel::prelude::*;
use shared_model::schema::{business_hours, current_snapshots, polls, store_timezones, stores};
use uptime_core::input::{HoursRow, Poll};

use uptime_core::time::{DAY, MICROS_PER_SECOND, days_from_civil};

/// Which state of the ingest a dataset reflects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IngestVersion {
    /// Every load with an id up to this one had finished when the data was read.
    pub settled_load_id: u64,
    /// `current_snapshots.snapshot_id` of the hours and zones files (`None`: no file).
    pub hours_snapshot: Option<u64>,
    pub zones_snapshot: Option<u64>,
}

/// The inputs of a report, in the engine's terms (store keys are `stores.store_key`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dataset {
    /// Sorted by (store, at), one per (store, at).
    pub polls: Vec<Poll>,
    /// The store id of every store that has a poll (and possibly more).
    pub store_ids: HashMap<u32, Box<str>>,
    pub hours: Vec<HoursRow>,
    /// Known zones only: a name chrono-tz does not know leaves the store in America/Chicago.
    pub zones: HashMap<u32, Tz>,
    pub version: IngestVersion,
}

impl Dataset {
    pub fn store_id(&self, key: u32) -> Option<&str> {
        self.store_ids.get(&key).map(|id| &**id)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// MySQL failed to answer; trying again may work.
    #[error("reading the data from MySQL failed: {0}")]
    Db(#[from] diesel::result::Error),
    /// The stored data breaks a rule the report relies on; no retry will change that.
    #[error("{0}")]
    Data(String),
}

/// What a refresh did, for the log line of the job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshStats {
    /// All polls were read (first job, or more changed than is worth merging).
    pub full_read: bool,
    pub polls_read: usize,
    pub stores_read: usize,
    pub hours_read: Option<usize>,
    pub zones_read: Option<usize>,
    /// Zone names in the snapshot that chrono-tz does not know (those stores use America/Chicago).
    pub unknown_zones: usize,
    pub elapsed: Duration,
}

/// Runs `read` inside `START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY` at REPEATABLE READ, so
/// everything it reads comes from one moment. The transaction is committed after `read` returns Ok and
/// rolled back otherwise.
pub fn with_consistent_snapshot<T, E>(
    conn: &mut MysqlConnection,
    read: impl FnOnce(&mut MysqlConnection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<diesel::result::Error>,
{
    // Only the next transaction: the pooled connection keeps its session default afterwards.
    conn.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")?;
    conn.batch_execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")?;
    match read(conn) {
        Ok(value) => {
            conn.batch_execute("COMMIT")?;
            Ok(value)
        }
        Err(e) => {
            // The read failed; a failing rollback (a dropped connection) changes nothing for the caller.
            let _ = conn.batch_execute("ROLLBACK");
            Err(e)
        }
    }
}

/// Brings `cache` up to the state of the database as `conn`'s transaction sees it. An unchanged dataset
/// keeps its `Arc` (no copy); a changed one is copied only if a job still uses the old one.
pub fn refresh(cache: &mut Option<Arc<Dataset>>, conn: &mut MysqlConnection) -> Result<RefreshStats, DatasetError> {
    let started = Instant::now();
    let version = read_version(conn)?;
    let mut stats = RefreshStats::default();
    match cache {
        None => {
            let mut fresh = Dataset { version, ..Dataset::default() };
            read_everything(&mut fresh, conn, &mut stats)?;
            *cache = Some(Arc::new(fresh));
        }
        Some(arc) => {
            let previous = arc.version;
            // Polls of loads that were running last time are fetched again, so "changed" means any row
            // above the old settled id, not only above the new one.
            let changed = count_polls_after(conn, previous.settled_load_id)?;
            if changed == 0 && version == previous {
                stats.elapsed = started.elapsed();
                return Ok(stats);
            }
            let dataset = Arc::make_mut(arc);
            // Load ids only grow; fewer loads than before means the database was reset or restored, and
            // nothing kept can be trusted. Past a quarter of the table, one ordered scan also beats that many
            // lookups through the load_id index.
            let reset = version.settled_load_id < previous.settled_load_id;
            if reset || (changed > 0 && changed.saturating_mul(4) > dataset.polls.len() as u64) {
                *dataset = Dataset { version, ..Dataset::default() };
                read_everything(dataset, conn, &mut stats)?;
            } else {
                if changed > 0 {
                    merge_changed_polls(dataset, conn, previous.settled_load_id, &mut stats)?;
                }
                if version.hours_snapshot != previous.hours_snapshot {
                    dataset.hours = read_hours(conn, version.hours_snapshot)?;
                    stats.hours_read = Some(dataset.hours.len());
                }
                if version.zones_snapshot != previous.zones_snapshot {
                    let (zones, unknown) = read_zones(conn, version.zones_snapshot)?;
                    dataset.zones = zones;
                    stats.zones_read = Some(dataset.zones.len() + unknown);
                    stats.unknown_zones = unknown;
                }
                dataset.version = version;
            }
        }
    }
    stats.elapsed = started.elapsed();
    Ok(stats)
}

fn read_everything(
    dataset: &mut Dataset,
    conn: &mut MysqlConnection,
    stats: &mut RefreshStats,
) -> Result<(), DatasetError> {
    stats.full_read = true;
    let started = Instant::now();
    dataset.polls = read_all_polls(conn)?;
    stats.polls_read = dataset.polls.len();
    log::debug!("read {} polls in {:.0} ms", dataset.polls.len(), started.elapsed().as_secs_f64() * 1e3);
    let started = Instant::now();
    dataset.store_ids = stores::table
        .select((stores::store_key, stores::store_id))
        .load_iter::<(u32, String), diesel::connection::DefaultLoadingMode>(conn)?
        .map(|row| row.map(|(key, id)| (key, id.into_boxed_str())))
        .collect::<Result<_, _>>()?;
    stats.stores_read = dataset.store_ids.len();
    check_every_store_is_named(dataset, &dataset.polls)?;
    dataset.hours = read_hours(conn, dataset.version.hours_snapshot)?;
    stats.hours_read = Some(dataset.hours.len());
    let (zones, unknown) = read_zones(conn, dataset.version.zones_snapshot)?;
    dataset.zones = zones;
    stats.zones_read = Some(dataset.zones.len() + unknown);
    stats.unknown_zones = unknown;
    log::debug!("read stores, hours and zones in {:.0} ms", started.elapsed().as_secs_f64() * 1e3);
    Ok(())
}

#[derive(QueryableByName)]
struct LoadsSummary {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Unsigned<diesel::sql_types::BigInt>>)]
    max_id: Option<u64>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Unsigned<diesel::sql_types::BigInt>>)]
    first_running: Option<u64>,
}

/// The ingest state this transaction sees.
pub fn read_version(conn: &mut MysqlConnection) -> Result<IngestVersion, diesel::result::Error> {
    let summary: LoadsSummary = diesel::sql_query(
        "SELECT MAX(load_id) AS max_id, MIN(CASE WHEN status = 'running' THEN load_id END) AS first_running FROM loads",
    )
    .get_result(conn)?;
    let settled_load_id = match summary.first_running {
        Some(first) => first.saturating_sub(1),
        None => summary.max_id.unwrap_or(0),
    };
    let pointers: Vec<(String, Option<u64>)> =
        current_snapshots::table.select((current_snapshots::file_kind, current_snapshots::snapshot_id)).load(conn)?;
    let pointer = |kind: &str| pointers.iter().find(|(k, _)| k == kind).and_then(|(_, id)| *id);
    Ok(IngestVersion { settled_load_id, hours_snapshot: pointer("hours"), zones_snapshot: pointer("zones") })
}

fn count_polls_after(conn: &mut MysqlConnection, load_id: u64) -> Result<u64, diesel::result::Error> {
    let n: i64 = polls::table.filter(polls::load_id.gt(load_id)).count().get_result(conn)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// A DATETIME as the client library hands it over, to µs since the epoch, without building a chrono
/// value first (measured on the 1.9 M-row set: the read drops from ~0.75 s to ~0.6 s).
fn mysql_micros(t: &MysqlTime) -> i64 {
    let days = days_from_civil(i64::from(t.year), t.month, t.day);
    let seconds = days * 86_400 + i64::from(t.hour) * 3_600 + i64::from(t.minute) * 60 + i64::from(t.second);
    seconds * MICROS_PER_SECOND + t.second_part as i64
}

/// Every poll, in primary-key order, which is the engine's (store, at) order. Plain columns: converting
/// the DATETIME on the client is cheaper than any SQL expression for it (measured: TIMESTAMPDIFF adds
/// 0.1–0.25 s of server time per 1.9 M rows).
fn read_all_polls(conn: &mut MysqlConnection) -> Result<Vec<Poll>, diesel::result::Error> {
    // No COUNT(*) to size the vector: it costs a fifth of the read (a scan of its own), growing costs ~ms.
    let mut out = Vec::new();
    let rows = polls::table
        .select((polls::store_key, polls::polled_at, polls::active))
        .order((polls::store_key, polls::polled_at))
        .load_iter::<(u32, MysqlTime, bool), diesel::connection::DefaultLoadingMode>(conn)?;
    for row in rows {
        let (store, at, active) = row?;
        out.push(Poll { store, at: mysql_micros(&at), active });
    }
    Ok(out)
}

fn merge_changed_polls(
    dataset: &mut Dataset,
    conn: &mut MysqlConnection,
    after_load_id: u64,
    stats: &mut RefreshStats,
) -> Result<(), DatasetError> {
    let mut changed: Vec<Poll> = polls::table
        .filter(polls::load_id.gt(after_load_id))
        .select((polls::store_key, polls::polled_at, polls::active))
        .load_iter::<(u32, MysqlTime, bool), diesel::connection::DefaultLoadingMode>(conn)?
        .map(|row| row.map(|(store, at, active)| Poll { store, at: mysql_micros(&at), active }))
        .collect::<Result<_, _>>()?;
    changed.sort_unstable_by_key(|p| (p.store, p.at));
    stats.polls_read = changed.len();

    let mut unnamed: Vec<u32> =
        changed.iter().map(|p| p.store).filter(|key| !dataset.store_ids.contains_key(key)).collect();
    unnamed.dedup();
    for keys in unnamed.chunks(10_000) {
        let named: Vec<(u32, String)> = stores::table
            .filter(stores::store_key.eq_any(keys))
            .select((stores::store_key, stores::store_id))
            .load(conn)?;
        stats.stores_read += named.len();
        dataset.store_ids.extend(named.into_iter().map(|(key, id)| (key, id.into_boxed_str())));
    }
    check_every_store_is_named(dataset, &changed)?;
    dataset.polls = merge_polls(&dataset.polls, &changed);
    Ok(())
}

/// Merges two lists sorted by (store, at) with unique keys; on equal keys the `newer` poll wins.
pub fn merge_polls(kept: &[Poll], newer: &[Poll]) -> Vec<Poll> {
    let mut out = Vec::with_capacity(kept.len() + newer.len());
    let (mut i, mut j) = (0, 0);
    while i < kept.len() && j < newer.len() {
        let (a, b) = (&kept[i], &newer[j]);
        match (a.store, a.at).cmp(&(b.store, b.at)) {
            std::cmp::Ordering::Less => {
                out.push(*a);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(*b);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(*b);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&kept[i..]);
    out.extend_from_slice(&newer[j..]);
    out
}

/// A poll of a store missing from `stores` could not be written in the report.
fn check_every_store_is_named(dataset: &Dataset, polls: &[Poll]) -> Result<(), DatasetError> {
    let mut last = None;
    for poll in polls {
        if last == Some(poll.store) {
            continue;
        }
        last = Some(poll.store);
        if !dataset.store_ids.contains_key(&poll.store) {
            return Err(DatasetError::Data(format!(
                "polls refer to store_key {} which is not in the stores table; the polls data is inconsistent \
                 and needs to be loaded again",
                poll.store
            )));
        }
    }
    Ok(())
}

fn read_hours(conn: &mut MysqlConnection, snapshot: Option<u64>) -> Result<Vec<HoursRow>, DatasetError> {
    let Some(snapshot) = snapshot else { return Ok(Vec::new()) };
    let rows: Vec<(u32, u8, i64, i64)> = business_hours::table
        .filter(business_hours::snapshot_id.eq(snapshot))
        .select((business_hours::store_key, business_hours::weekday, business_hours::start_us, business_hours::end_us))
        .load(conn)?;
    rows.into_iter()
        .map(|(store, weekday, start, end)| {
            // The engine trusts these bounds (SPEC §1); a row outside them would be counted wrongly, silently.
            if weekday > 6 || !(0..DAY).contains(&start) || !(0..=DAY).contains(&end) {
                Err(DatasetError::Data(format!(
                    "business hours snapshot {snapshot} has an impossible row for store_key {store}: weekday \
                     {weekday}, start {start} µs, end {end} µs (expected weekday 0-6, times within the day); \
                     load the hours file again"
                )))
            } else {
                Ok(HoursRow { store, weekday, start, end })
            }
        })
        .collect()
}

/// The snapshot's zones that chrono-tz knows, and how many it did not.
fn read_zones(
    conn: &mut MysqlConnection,
    snapshot: Option<u64>,
) -> Result<(HashMap<u32, Tz>, usize), diesel::result::Error> {
    let Some(snapshot) = snapshot else { return Ok((HashMap::new(), 0)) };
    let rows: Vec<(u32, String)> = store_timezones::table
        .filter(store_timezones::snapshot_id.eq(snapshot))
        .select((store_timezones::store_key, store_timezones::timezone_str))
        .load(conn)?;
    let mut unknown = 0;
    let zones = rows
        .into_iter()
        .filter_map(|(store, name)| match Tz::from_str(&name) {
            Ok(tz) => Some((store, tz)),
            Err(_) => {
                unknown += 1;
                None
            }
        })
        .collect();
    Ok((zones, unknown))
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDateTime;

    use super::*;

    fn micros(at: NaiveDateTime) -> i64 {
        at.and_utc().timestamp_micros()
    }

    fn p(store: u32, at: i64, active: bool) -> Poll {
        Poll { store, at, active }
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
                chrono::Datelike::year(&at) as _,
                chrono::Datelike::month(&at) as _,
                chrono::Datelike::day(&at) as _,
                chrono::Timelike::hour(&at) as _,
                chrono::Timelike::minute(&at) as _,
                chrono::Timelike::second(&at) as _,
                (chrono::Timelike::nanosecond(&at) / 1_000) as _,
                false,
                diesel::mysql::data_types::MysqlTimestampType::MYSQL_TIMESTAMP_DATETIME,
                0,
            );
            assert_eq!(mysql_micros(&t), micros(at), "{text}");
        }
    }

    #[test]
    fn merging_keeps_order_and_lets_the_newer_poll_win() {
        let kept = [p(1, 10, true), p(1, 20, true), p(3, 5, false)];
        let newer = [p(1, 20, false), p(2, 1, true), p(3, 6, true)];
        assert_eq!(
            merge_polls(&kept, &newer),
            vec![p(1, 10, true), p(1, 20, false), p(2, 1, true), p(3, 5, false), p(3, 6, true)]
        );
        assert_eq!(merge_polls(&kept, &[]), kept.to_vec());
        assert_eq!(merge_polls(&[], &newer), newer.to_vec());
    }
}
