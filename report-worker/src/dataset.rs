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
//! A report cut into shards keeps one dataset per shard: the same, for the stores of one range of store
//! keys ([`Scope::range`]), at the report's pinned `now` and snapshots ([`Pin::Plan`]); the changes are
//! fetched as above and only those of the range kept. [`DatasetCache`] keeps the datasets of the shards a
//! worker computed, least recently used out first past the memory budget.
//!
//! [`refresh`] must run inside one consistent-snapshot transaction
//! ([`shared_model::db::with_consistent_snapshot`]), so the
//! polls, hours and zones of one report all come from the same moment.

use std::collections::HashMap;
use std::sync::Arc;

use shared_model::models::shards::KeyRange;
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
    /// The stores it holds (every store for a report computed whole).
    pub range: KeyRange,
}

impl Dataset {
    pub fn store_id(&self, key: u32) -> Option<&str> {
        self.store_ids.get(&key).map(|id| &**id)
    }

    /// About how much memory it takes: what the budget of [`DatasetCache`] counts.
    pub fn approx_bytes(&self) -> usize {
        const MAP_ENTRY: usize = 48;
        let ids: usize = self.store_ids.values().map(|id| id.len() + MAP_ENTRY).sum();
        self.polls.capacity() * std::mem::size_of::<Poll>()
            + ids
            + self.hours.capacity() * std::mem::size_of::<HoursRow>()
            + self.zones.len() * MAP_ENTRY
    }
}

/// Which data a refresh brings a dataset to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub range: KeyRange,
    pub pin: Pin,
    /// The dataset holds about one `share`-th of the window's polls (a shard of a report cut in that many):
    /// it weighs how many changed polls are still worth merging rather than reading the range again.
    pub share: u32,
}

impl Scope {
    /// Every store, at the latest data: a report computed whole.
    pub const WHOLE: Scope = Scope { range: KeyRange::ALL, pin: Pin::Latest, share: 1 };
}

/// The `now` and snapshots of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// `now` is the newest poll, hours and zones the current snapshots.
    Latest,
    /// A shard of a planned report: the plan's `now` and snapshots, so all its shards see the same.
    Plan { now: Micros, hours_snapshot: Option<u64>, zones_snapshot: Option<u64> },
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

/// Brings `cache` up to the state of the database as `conn`'s transaction sees it, for `scope`. An
/// unchanged dataset keeps its `Arc` (no copy); a changed one is copied only if a job still uses the old
/// one.
pub fn refresh(
    cache: &mut Option<Arc<Dataset>>,
    conn: &mut MysqlConnection,
    scope: &Scope,
) -> Result<RefreshStats, DatasetError> {
    let started = Instant::now();
    let mut version = read_version(conn)?;
    let window_start = match scope.pin {
        Pin::Latest => polls::newest_polled_at(conn)?.map(|now| now - LOOKBACK),
        Pin::Plan { now, hours_snapshot, zones_snapshot } => {
            for (what, pinned, current) in [
                ("business hours", hours_snapshot, version.hours_snapshot),
                ("time zones", zones_snapshot, version.zones_snapshot),
            ] {
                if pinned != current && !snapshots::exists(conn, pinned)? {
                    return Err(DatasetError::Data(format!(
                        "the {what} file was loaded again while the report was being computed, and the {what} \
                         it started with are gone; trigger a new report"
                    )));
                }
            }
            version.hours_snapshot = hours_snapshot;
            version.zones_snapshot = zones_snapshot;
            Some(now - LOOKBACK)
        }
    };
    let mut stats = RefreshStats::default();
    if cache.as_ref().is_some_and(|kept| kept.range != scope.range) {
        *cache = None;
    }
    match cache {
        None => {
            let mut fresh = Dataset { version, window_start, range: scope.range, ..Dataset::default() };
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
                catch_up(Arc::make_mut(kept), conn, version, window_start, changed, scope.share, &mut stats)?;
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
    share: u32,
    stats: &mut RefreshStats,
) -> Result<(), DatasetError> {
    let previous = dataset.version;
    let range = dataset.range;
    // Load ids only grow; fewer loads than before means the database was reset or restored, and nothing
    // kept can be trusted. A window that starts earlier than before (the latest polls were deleted) needs
    // polls that were never kept. Past a quarter of the window, one ordered scan also beats that many
    // lookups through the load_id index.
    let reset = version.settled_load_id < previous.settled_load_id;
    let Some(from) = window_start.filter(|from| Some(*from) >= dataset.window_start) else {
        *dataset = Dataset { version, window_start, range, ..Dataset::default() };
        return read_everything(dataset, conn, stats);
    };
    let window_polls = (dataset.polls.len() as u64).saturating_mul(u64::from(share.max(1)));
    if reset || (changed > 0 && changed.saturating_mul(4) > window_polls) {
        *dataset = Dataset { version, window_start, range, ..Dataset::default() };
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
        dataset.hours = read_hours(conn, version.hours_snapshot, dataset.range)?;
        stats.hours_read = Some(dataset.hours.len());
    }
    if version.zones_snapshot != previous.zones_snapshot {
        let (zones, unknown) = read_zones(conn, version.zones_snapshot, dataset.range)?;
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
    let whole = dataset.range == KeyRange::ALL;
    dataset.polls = match dataset.window_start {
        Some(from) if whole => polls::read_since(conn, from)?,
        Some(from) => polls::read_range_since(conn, dataset.range, from)?,
        None => Vec::new(),
    };
    stats.polls_read = dataset.polls.len();
    log::debug!("read {} polls in {:.0} ms", dataset.polls.len(), started.elapsed().as_secs_f64() * 1e3);
    let started = Instant::now();
    let ids = if whole { stores::all_ids(conn)? } else { stores::ids_in_range(conn, dataset.range)? };
    dataset.store_ids = ids.into_iter().collect();
    stats.stores_read = dataset.store_ids.len();
    check_every_store_is_named(dataset, &dataset.polls)?;
    dataset.hours = read_hours(conn, dataset.version.hours_snapshot, dataset.range)?;
    stats.hours_read = Some(dataset.hours.len());
    let (zones, unknown) = read_zones(conn, dataset.version.zones_snapshot, dataset.range)?;
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

    // A shard keeps the stores of its range only; the changes of the others are theirs.
    let range = dataset.range;
    changed.retain(|p| range.contains(p.store));
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

fn read_hours(
    conn: &mut MysqlConnection,
    snapshot: Option<u64>,
    range: KeyRange,
) -> Result<Vec<HoursRow>, DatasetError> {
    let rows = if range == KeyRange::ALL {
        snapshots::business_hours(conn, snapshot)?
    } else {
        snapshots::business_hours_in(conn, snapshot, range)?
    };
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
    range: KeyRange,
) -> Result<(HashMap<u32, Tz>, usize), diesel::result::Error> {
    let rows = if range == KeyRange::ALL {
        snapshots::zone_names(conn, snapshot)?
    } else {
        snapshots::zone_names_in(conn, snapshot, range)?
    };
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

/// The datasets a worker keeps between jobs, one per store range (the whole set for reports computed
/// whole, one per shard it computed), within a memory budget.
#[derive(Debug, Default)]
pub struct DatasetCache {
    entries: HashMap<KeyRange, Kept>,
    budget_bytes: usize,
    clock: u64,
}

#[derive(Debug)]
struct Kept {
    data: Arc<Dataset>,
    last_used: u64,
    /// The shard queue slot its shard came from (`None`: a report computed whole).
    slot: Option<u16>,
}

impl DatasetCache {
    pub fn new(budget_bytes: usize) -> Self {
        Self { budget_bytes, ..Self::default() }
    }

    /// The kept dataset of `range`, to refresh (the cache keeps it meanwhile, for other jobs).
    pub fn get(&self, range: KeyRange) -> Option<Arc<Dataset>> {
        self.entries.get(&range).map(|kept| Arc::clone(&kept.data))
    }

    /// Keeps `data` as the most recent dataset of its range, then forgets the least recently used others
    /// while the kept data is over the budget (the newest is kept even alone over it: its job needs it).
    pub fn keep(&mut self, data: Arc<Dataset>, slot: Option<u16>) -> Vec<KeyRange> {
        self.clock += 1;
        let range = data.range;
        self.entries.insert(range, Kept { data, last_used: self.clock, slot });
        let mut forgotten = Vec::new();
        while self.bytes() > self.budget_bytes {
            let oldest = self
                .entries
                .iter()
                .filter(|(kept_range, _)| **kept_range != range)
                .min_by_key(|(_, kept)| kept.last_used)
                .map(|(kept_range, _)| *kept_range);
            let Some(oldest) = oldest else { break };
            self.entries.remove(&oldest);
            forgotten.push(oldest);
        }
        forgotten
    }

    /// Forgets the shard datasets whose slot `keep_slot` refuses (slots another worker owns now), so a
    /// worker holds the data of its own shards only.
    pub fn forget_slots(&mut self, keep_slot: impl Fn(u16) -> bool) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, kept| kept.slot.is_none_or(&keep_slot));
        before - self.entries.len()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// The estimated size of everything kept.
    pub fn bytes(&self) -> usize {
        self.entries.values().map(|kept| kept.data.approx_bytes()).sum()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
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

    fn shard(first: u32, polls: usize) -> Arc<Dataset> {
        Arc::new(Dataset {
            polls: (0..polls).map(|at| p(1, at as i64, true)).collect(),
            range: KeyRange { first, end: None },
            ..Dataset::default()
        })
    }

    #[test]
    fn the_cache_forgets_the_least_recently_used_shards_past_its_budget() {
        let one = shard(1, 1000);
        let budget = one.approx_bytes() * 2;
        let mut cache = DatasetCache::new(budget);
        assert!(cache.keep(Arc::clone(&one), Some(0)).is_empty());
        assert!(cache.keep(shard(2, 1000), Some(1)).is_empty());
        // "a" used again: "b" is now the least recently used.
        cache.keep(Arc::clone(&one), Some(0));
        let forgotten = cache.keep(shard(3, 1000), Some(2));
        assert_eq!(forgotten, vec![KeyRange { first: 2, end: None }]);
        assert!(cache.bytes() <= budget && cache.len() == 2);
        // Alone over the budget, the newest is still kept.
        let mut small = DatasetCache::new(1);
        small.keep(shard(1, 10), None);
        assert_eq!(small.keep(shard(2, 10), None).len(), 1);
        assert_eq!(small.len(), 1);
        // Slots another worker owns now are forgotten; a whole-set dataset is never.
        let mut cache = DatasetCache::new(usize::MAX);
        cache.keep(shard(1, 1), Some(0));
        cache.keep(shard(2, 1), Some(1));
        cache.keep(Arc::new(Dataset::default()), None);
        assert_eq!(cache.forget_slots(|slot| slot == 1), 1);
        assert_eq!(cache.len(), 2);
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
