//! The report inputs as the worker keeps them in memory between jobs, and how they are brought up to date
//! from MySQL.
//!
//! The report looks only at the polls in `[now − 8 d, now]` (`now`: the latest poll; SPEC §2), so the worker
//! finds `now` first (`MAX(polled_at)`) and reads and keeps only the polls of that window: neither its
//! memory nor a report's cost grows with the history the table holds. As `now` moves, kept polls that fall
//! out of the window are dropped.
//!
//! Reading the 1.9 M polls of a week costs most of a second, so the worker reads them once and afterwards
//! fetches only what the ingest changed in the window, keyed by the ingest record:
//! - every poll row carries the load that last changed it (`polls.load_id`), and `loads` records every load
//!   with its status; a load that is no longer `running` has committed all its rows. The dataset remembers
//!   the highest load id up to which every load had finished ([`IngestVersion::settled_load_id`]), and the
//!   next refresh fetches the polls with a higher `load_id` and merges them in (same store and instant:
//!   the fetched row replaces the kept one). Rows of loads still running are fetched again next time.
//! - business hours and zones are whole snapshots named by `current_snapshots`; they are read again only
//!   when the pointer moved.
//!
//! This relies on what the ingest does: a load's `loads` row exists (as `running`) before its polls are
//! written and leaves `running` only after they are committed; polls are upserted, and deleted only when
//! older than the window (retention); a snapshot's rows do not change once it is current. A database
//! reset (load ids going back) or a `now` going back (the latest polls deleted) is noticed and the window
//! read whole; other polls deleted by hand are not noticed until the worker restarts.
//!
//! [`refresh`] must run inside one consistent-snapshot transaction
//! ([`shared_model::db::with_consistent_snapshot`]), so the
//! polls, hours and zones of one report all come from the same moment.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono_tz::Tz;
use diesel::mysql::MysqlConnection;
use shared_model::models::{polls, snapshots, stores};
use uptime_core::engine::LOOKBACK;
use uptime_core::input::{HoursRow, Poll};
use uptime_core::time::{DAY, Micros};

/// Which state of the ingest a dataset reflects (the gateway records the same version on a report).
pub type IngestVersion = shared_model::models::versions::DataVersion;

/// The inputs of a report, in the engine's terms (store keys are `stores.store_key`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dataset {
    /// Sorted by (store, at), one per (store, at); none before [`Dataset::window_start`].
    pub polls: Vec<Poll>,
    /// `now − 8 d` of the data read (`None`: no poll at all). Older polls cannot change the report.
    pub window_start: Option<Micros>,
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
    /// All polls of the window were read (first job, or more changed than is worth merging).
    pub full_read: bool,
    pub polls_read: usize,
    /// Kept polls that fell out of the window as `now` moved.
    pub polls_dropped: usize,
    pub stores_read: usize,
    pub hours_read: Option<usize>,
    pub zones_read: Option<usize>,
    /// Zone names in the snapshot that chrono-tz does not know (those stores use America/Chicago).
    pub unknown_zones: usize,
    pub elapsed: Duration,
}

/// Brings `cache` up to the state of the database as `conn`'s transaction sees it. An unchanged dataset
/// keeps its `Arc` (no copy); a changed one is copied only if a job still uses the old one.
pub fn refresh(cache: &mut Option<Arc<Dataset>>, conn: &mut MysqlConnection) -> Result<RefreshStats, DatasetError> {
    let started = Instant::now();
    let version = read_version(conn)?;
    let window_start = polls::newest_polled_at(conn)?.map(|now| now - LOOKBACK);
    let mut stats = RefreshStats::default();
    match cache {
        None => {
            let mut fresh = Dataset { version, window_start, ..Dataset::default() };
            read_everything(&mut fresh, conn, &mut stats)?;
            *cache = Some(Arc::new(fresh));
        }
        Some(kept) => {
            let previous = kept.version;
            // Polls of loads that were running last time are fetched again, so "changed" means any row
            // above the old settled id, not only above the new one.
            let changed = match window_start {
                Some(from) => polls::count_changed_since(conn, previous.settled_load_id, from)?,
                None => 0,
            };
            if changed > 0 || version != previous || window_start != kept.window_start {
                catch_up(Arc::make_mut(kept), conn, version, window_start, changed, &mut stats)?;
            }
        }
    }
    stats.elapsed = started.elapsed();
    Ok(stats)
}

/// Moves a kept dataset to `version`: merges the `changed` polls and re-reads what moved, or reads
/// everything again when merging would not pay or cannot be trusted.
fn catch_up(
    dataset: &mut Dataset,
    conn: &mut MysqlConnection,
    version: IngestVersion,
    window_start: Option<Micros>,
    changed: u64,
    stats: &mut RefreshStats,
) -> Result<(), DatasetError> {
    let previous = dataset.version;
    // Load ids only grow; fewer loads than before means the database was reset or restored, and nothing
    // kept can be trusted. A window that starts earlier than before (the latest polls were deleted) needs
    // polls that were never kept. Past a quarter of the window, one ordered scan also beats that many
    // lookups through the load_id index.
    let reset = version.settled_load_id < previous.settled_load_id;
    let Some(from) = window_start.filter(|from| Some(*from) >= dataset.window_start) else {
        *dataset = Dataset { version, window_start, ..Dataset::default() };
        return read_everything(dataset, conn, stats);
    };
    if reset || (changed > 0 && changed.saturating_mul(4) > dataset.polls.len() as u64) {
        *dataset = Dataset { version, window_start, ..Dataset::default() };
        return read_everything(dataset, conn, stats);
    }
    if changed > 0 {
        merge_changed_polls(dataset, conn, previous.settled_load_id, from, stats)?;
    }
    if dataset.window_start != Some(from) {
        stats.polls_dropped = drop_polls_before(&mut dataset.polls, from);
        dataset.window_start = Some(from);
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
    Ok(())
}

fn read_everything(
    dataset: &mut Dataset,
    conn: &mut MysqlConnection,
    stats: &mut RefreshStats,
) -> Result<(), DatasetError> {
    stats.full_read = true;
    let started = Instant::now();
    dataset.polls = match dataset.window_start {
        Some(from) => polls::read_since(conn, from)?,
        None => Vec::new(),
    };
    stats.polls_read = dataset.polls.len();
    log::debug!("read {} polls in {:.0} ms", dataset.polls.len(), started.elapsed().as_secs_f64() * 1e3);
    let started = Instant::now();
    dataset.store_ids = stores::all_ids(conn)?.into_iter().collect();
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

/// The ingest state this transaction sees.
pub fn read_version(conn: &mut MysqlConnection) -> Result<IngestVersion, diesel::result::Error> {
    shared_model::models::versions::current(conn)
}

fn merge_changed_polls(
    dataset: &mut Dataset,
    conn: &mut MysqlConnection,
    after_load_id: u64,
    from: Micros,
    stats: &mut RefreshStats,
) -> Result<(), DatasetError> {
    let mut changed = polls::read_changed_since(conn, after_load_id, from)?;
    changed.sort_unstable_by_key(|p| (p.store, p.at));
    stats.polls_read = changed.len();

    let mut unnamed: Vec<u32> =
        changed.iter().map(|p| p.store).filter(|key| !dataset.store_ids.contains_key(key)).collect();
    unnamed.dedup();
    let named = stores::with_keys(conn, &unnamed)?;
    stats.stores_read += named.len();
    dataset.store_ids.extend(named.into_iter().map(|store| (store.store_key, store.store_id.into_boxed_str())));
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

/// Removes the polls before `from` and returns how many; memory the dataset no longer needs is given back
/// (a week of polls moves through the window every week).
pub fn drop_polls_before(polls: &mut Vec<Poll>, from: Micros) -> usize {
    let before = polls.len();
    polls.retain(|p| p.at >= from);
    if polls.capacity() > polls.len() + polls.len() / 4 {
        polls.shrink_to_fit();
    }
    before - polls.len()
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
    let rows = snapshots::business_hours(conn, snapshot)?;
    rows.into_iter()
        .map(|row @ HoursRow { store, weekday, start, end }| {
            // The engine trusts these bounds (SPEC §1); a row outside them would be counted wrongly, silently.
            if weekday > 6 || !(0..DAY).contains(&start) || !(0..=DAY).contains(&end) {
                Err(DatasetError::Data(format!(
                    "business hours snapshot {} has an impossible row for store_key {store}: weekday \
                     {weekday}, start {start} µs, end {end} µs (expected weekday 0-6, times within the day); \
                     load the hours file again",
                    snapshot.unwrap_or_default()
                )))
            } else {
                Ok(row)
            }
        })
        .collect()
}

/// The snapshot's zones that chrono-tz knows, and how many it did not.
fn read_zones(
    conn: &mut MysqlConnection,
    snapshot: Option<u64>,
) -> Result<(HashMap<u32, Tz>, usize), diesel::result::Error> {
    let rows = snapshots::zone_names(conn, snapshot)?;
    let mut unknown = 0;
    let zones = rows
        .into_iter()
        .filter_map(|(store, name)| match uptime_core::input::known_zone(&name) {
            Some(tz) => Some((store, tz)),
            None => {
                unknown += 1;
                None
            }
        })
        .collect();
    Ok((zones, unknown))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(store: u32, at: i64, active: bool) -> Poll {
        Poll { store, at, active }
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

    #[test]
    fn dropping_old_polls_keeps_the_rest_in_order_and_counts_what_went() {
        let mut polls = vec![p(1, 10, true), p(1, 20, true), p(2, 5, false), p(2, 30, true), p(3, 19, true)];
        assert_eq!(drop_polls_before(&mut polls, 20), 3);
        assert_eq!(polls, vec![p(1, 20, true), p(2, 30, true)]);
        assert_eq!(drop_polls_before(&mut polls, 20), 0, "the bound itself is kept");

        let mut week: Vec<Poll> = (0..100).map(|at| p(1, at, true)).collect();
        assert_eq!(drop_polls_before(&mut week, 90), 90);
        assert!(week.capacity() < 20, "memory given back: capacity {} for 10 polls", week.capacity());
    }
}
