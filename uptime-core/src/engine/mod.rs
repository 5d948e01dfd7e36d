//! The uptime engine: SPEC §2 to the letter. Pure — data and `now` in, report rows out; no clock, no I/O —
//! so the CLI and the queue worker share it and it is tested exhaustively without services.
//!
//! Exactness: every instant is an integer number of microseconds. The boundary between two observations
//! is their midpoint, which may fall on half a microsecond, so lengths are summed in half-microseconds
//! ([`HalfMicros`]) and rounded only when written.
//!
//! SPEC §2b (on request): with a gap horizon `H`, an instant whose nearest observation is more than `H`
//! away is unknown. Each observation's cell is cut to `[at − H, at + H]`, so the horizon costs two
//! comparisons per piece of a cell and nothing when it is absent.

mod parts;
mod timeline;
mod zone;

use std::collections::HashMap;
use std::io::{self, Write};

use crate::input::{DEFAULT_ZONE, HoursRow, Poll};
use crate::time::{DAY, HOUR, MINUTE, Micros, WEEK};
use chrono_tz::Tz;

pub use parts::{PartError, merge_parts};
pub use timeline::{BusinessInterval, Outage, Segment, SegmentStatus, StoreTimeline, TimelinePoll, store_timeline};
pub use zone::ZoneTimeline;

/// A length in half-microseconds: exact for spans that end at the midpoint of two observations.
pub type HalfMicros = i64;

/// Polls older than this before `now` play no part (SPEC §2, lookback range).
pub const LOOKBACK: Micros = 8 * DAY;
/// The three windows, in the report's column order.
pub const WINDOWS: [Micros; 3] = [HOUR, DAY, WEEK];

/// The report's header line, exactly as SPEC §2 gives it.
pub const HEADER: &str = "store_id,uptime_last_hour,uptime_last_day,uptime_last_week,downtime_last_hour,downtime_last_day,downtime_last_week";
/// The header of a report with a gap horizon (SPEC §2b): three columns after the six.
pub const HEADER_WITH_UNKNOWN: &str = "store_id,uptime_last_hour,uptime_last_day,uptime_last_week,downtime_last_hour,downtime_last_day,downtime_last_week,unknown_last_hour,unknown_last_day,unknown_last_week";

/// The gap horizons SPEC §2b allows, in minutes.
pub const UNKNOWN_AFTER_MINUTES: std::ops::RangeInclusive<u32> = 1..=1440;

/// SPEC §2b's gap horizon: how far from its observation an instant may be and still take its status.
/// `None`: without limit (SPEC §2, no unknown time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Horizon(Option<Micros>);

impl Horizon {
    /// No horizon: every instant takes its nearest observation's status (SPEC §2).
    pub const NONE: Horizon = Horizon(None);

    /// A horizon of `minutes`, `None` outside [`UNKNOWN_AFTER_MINUTES`].
    pub fn minutes(minutes: u32) -> Option<Horizon> {
        UNKNOWN_AFTER_MINUTES.contains(&minutes).then(|| Horizon(Some(i64::from(minutes) * MINUTE)))
    }

    /// The horizon as a length, `None` when there is none.
    pub fn length(self) -> Option<Micros> {
        self.0
    }

    /// The horizon in whole minutes, `None` when there is none.
    pub fn as_minutes(self) -> Option<u32> {
        self.0.and_then(|h| u32::try_from(h / MINUTE).ok())
    }
}

/// The data a report is computed from. Store keys are whatever the caller uses (interned ids in the CLI,
/// surrogate keys from MySQL in the worker).
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// Sorted by (store, at), at most one poll per (store, at) — as the readers and the polls table give them.
    pub polls: &'a [Poll],
    /// Any order. A store without rows is open all the time.
    pub hours: &'a [HoursRow],
    /// Known zones only; a store not in the map is in America/Chicago.
    pub zones: &'a HashMap<u32, Tz>,
}

/// One store's figures, in half-microseconds, windows in [`WINDOWS`] order. `unknown` stays 0 without a
/// horizon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreUptime {
    pub store: u32,
    pub uptime: [HalfMicros; 3],
    pub downtime: [HalfMicros; 3],
    pub unknown: [HalfMicros; 3],
}

impl StoreUptime {
    /// The row's figures under their column names, in the report's column order, as the CSV writes them:
    /// the six of SPEC §2, then with `with_unknown` the three of §2b.
    pub fn figures(&self, with_unknown: bool) -> impl Iterator<Item = (&'static str, String)> + '_ {
        let columns = HEADER_WITH_UNKNOWN.split(',').skip(1);
        let lengths = self.uptime.iter().chain(&self.downtime).chain(&self.unknown);
        let units = [MINUTE, HOUR, HOUR].into_iter().cycle();
        columns
            .zip(lengths.zip(units))
            .take(if with_unknown { 9 } else { 6 })
            .map(|(name, (&length, unit))| (name, two_decimals(length, unit)))
    }
}

/// Watches a report being computed: told how many stores it will have, then once per finished store.
/// The engine calls it from several threads at once.
pub trait Progress: Sync {
    fn started(&self, _stores_total: usize) {}
    fn store_done(&self) {}
}

/// The observer that watches nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// A computed report: its `now` (`None` when there was no poll at all, and then no row), the horizon it
/// was computed with, and one row per store with a poll in the lookback range, in store-key order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    pub now: Option<Micros>,
    pub horizon: Horizon,
    pub rows: Vec<StoreUptime>,
}

/// SPEC §2 (and §2b with a horizon) over a whole data set: `now` is the latest poll, then every store is
/// computed.
pub fn report(inputs: Inputs<'_>, horizon: Horizon, progress: &dyn Progress) -> Report {
    match latest_poll(inputs.polls) {
        Some(now) => Report { now: Some(now), horizon, rows: compute(inputs, now, horizon, progress) },
        None => {
            progress.started(0);
            Report { horizon, ..Report::default() }
        }
    }
}

impl Report {
    /// Writes the report CSV: the header, then one line per store sorted by store id (byte order); the
    /// three unknown columns only with a horizon.
    pub fn write_csv<'a, W: Write>(&self, out: &mut W, store_id: impl Fn(u32) -> &'a str) -> io::Result<()> {
        write_rows(out, &self.rows, self.horizon.length().is_some(), true, store_id)
    }

    /// Writes the rows as one part of a report computed in parts: no header, the rows sorted by store id.
    /// [`merge_parts`] with [`Report::header`] makes the whole report's CSV of the parts.
    pub fn write_csv_part<'a, W: Write>(&self, out: &mut W, store_id: impl Fn(u32) -> &'a str) -> io::Result<()> {
        write_rows(out, &self.rows, self.horizon.length().is_some(), false, store_id)
    }

    /// The header line of a report computed with `horizon`.
    pub fn header(horizon: Horizon) -> &'static str {
        if horizon.length().is_some() { HEADER_WITH_UNKNOWN } else { HEADER }
    }
}

/// `now` of SPEC §2: the latest poll of all stores.
pub fn latest_poll(polls: &[Poll]) -> Option<Micros> {
    polls.iter().map(|p| p.at).max()
}

/// Computes every store with a poll in the lookback range at a given `now`, in store-key order.
pub fn compute(inputs: Inputs<'_>, now: Micros, horizon: Horizon, progress: &dyn Progress) -> Vec<StoreUptime> {
    let groups = store_groups(inputs.polls, now);
    progress.started(groups.len());
    let hours = hours_by_store(inputs.hours);
    let timelines = timelines(inputs.zones, now);
    let chicago = &timelines[&DEFAULT_ZONE];
    let one_store = |group: &(u32, &[Poll])| {
        let (store, polls) = *group;
        let timeline = inputs.zones.get(&store).map_or(chicago, |tz| &timelines[tz]);
        let rows = hours.get(&store).map_or(&[][..], Vec::as_slice);
        let result = store_uptime(store, polls, rows, timeline, now, horizon);
        progress.store_done();
        result
    };
    // Two halves by poll count, one per core: the work per store is proportional to its polls.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    if threads == 1 || groups.len() < 256 {
        return groups.iter().map(one_store).collect();
    }
    let total: usize = groups.iter().map(|g| g.1.len()).sum();
    let mut parts = Vec::with_capacity(threads);
    let mut rest = &groups[..];
    for i in (1..threads).rev() {
        let target = rest.iter().map(|g| g.1.len()).sum::<usize>() / (i + 1);
        let mut taken = 0;
        let cut = rest
            .iter()
            .position(|g| {
                taken += g.1.len();
                taken >= target
            })
            .map_or(rest.len(), |p| p + 1);
        let (head, tail) = rest.split_at(cut);
        parts.push(head);
        rest = tail;
    }
    parts.push(rest);
    debug_assert_eq!(parts.iter().flat_map(|p| p.iter()).map(|g| g.1.len()).sum::<usize>(), total);
    std::thread::scope(|scope| {
        let handles: Vec<_> =
            parts.iter().map(|part| scope.spawn(move || part.iter().map(one_store).collect::<Vec<_>>())).collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    })
}

/// Each store's polls within the lookback range `[now − 8 d, now]`.
fn store_groups(polls: &[Poll], now: Micros) -> Vec<(u32, &[Poll])> {
    let from = now - LOOKBACK;
    let mut groups = Vec::new();
    let mut rest = polls;
    while let Some(first) = rest.first() {
        let len = rest.partition_point(|p| p.store == first.store);
        let (store_polls, tail) = rest.split_at(len);
        let start = store_polls.partition_point(|p| p.at < from);
        let end = store_polls.partition_point(|p| p.at <= now);
        if start < end {
            groups.push((first.store, &store_polls[start..end]));
        }
        rest = tail;
    }
    groups
}

fn hours_by_store(rows: &[HoursRow]) -> HashMap<u32, Vec<HoursRow>> {
    let mut by_store: HashMap<u32, Vec<HoursRow>> = HashMap::new();
    for row in rows {
        by_store.entry(row.store).or_default().push(*row);
    }
    by_store
}

/// One timeline per zone in use, covering every instant a business interval near the lookback range
/// can start or end at (local dates reach a day beyond it on either side, and offsets stay within ±1 d).
fn timelines(zones: &HashMap<u32, Tz>, now: Micros) -> HashMap<Tz, ZoneTimeline> {
    let (from, to) = (now - LOOKBACK - 3 * DAY, now + 3 * DAY);
    let mut distinct: Vec<Tz> = zones.values().copied().collect();
    distinct.push(DEFAULT_ZONE);
    distinct.sort_unstable_by_key(|tz| tz.name());
    distinct.dedup();
    distinct.into_iter().map(|tz| (tz, ZoneTimeline::new(tz, from, to))).collect()
}

/// The store's business time as sorted, disjoint, non-touching `[start, end)` UTC intervals, limited to
/// what can meet `[from, to]`. `None` when the store has no hour rows: open all the time.
fn business_intervals(
    rows: &[HoursRow],
    timeline: &ZoneTimeline,
    from: Micros,
    to: Micros,
) -> Option<Vec<(Micros, Micros)>> {
    if rows.is_empty() {
        return None;
    }
    let local_day = |utc: Micros| (utc + timeline.offset(utc)).div_euclid(DAY);
    // A shift that starts the day before the range can reach into it.
    let (first_day, last_day) = (local_day(from) - 1, local_day(to));
    let mut intervals = Vec::new();
    for day in first_day..=last_day {
        // 1970-01-01 was a Thursday; weekday 0 is Monday.
        let weekday = (day + 3).rem_euclid(7) as u8;
        let midnight = day * DAY;
        for row in rows.iter().filter(|r| r.weekday == weekday) {
            let end_local = if row.start < row.end {
                midnight + row.end
            } else if row.start > row.end {
                midnight + DAY + row.end
            } else {
                midnight + DAY + row.start
            };
            let start = timeline.to_utc(midnight + row.start);
            let end = timeline.to_utc(end_local);
            // Both ends in one gap make an empty interval; the conversion is monotonic, never inverted.
            if start < end && end > from && start <= to {
                intervals.push((start, end));
            }
        }
    }
    intervals.sort_unstable();
    let mut merged: Vec<(Micros, Micros)> = Vec::with_capacity(intervals.len());
    for (start, end) in intervals {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    Some(merged)
}

fn in_business(intervals: &[(Micros, Micros)], at: Micros) -> bool {
    let i = intervals.partition_point(|&(start, _)| start <= at);
    i > 0 && at < intervals[i - 1].1
}

/// SPEC §2 (§2b with a horizon) for one store. `polls` are its polls in the lookback range, sorted, unique.
pub(crate) fn store_uptime(
    store: u32,
    polls: &[Poll],
    rows: &[HoursRow],
    timeline: &ZoneTimeline,
    now: Micros,
    horizon: Horizon,
) -> StoreUptime {
    let mut result = StoreUptime { store, ..StoreUptime::default() };
    let window_starts = WINDOWS.map(|w| 2 * (now - w));
    let add = |totals: &mut [HalfMicros; 3], from: HalfMicros, to: HalfMicros| {
        for (total, &window_start) in totals.iter_mut().zip(&window_starts) {
            *total += (to - from.max(window_start)).max(0);
        }
    };
    walk_week(polls, rows, timeline, now, horizon, |from, to, nearest, known| match (known, nearest.active) {
        (true, true) => add(&mut result.uptime, from, to),
        (true, false) => add(&mut result.downtime, from, to),
        (false, _) => add(&mut result.unknown, from, to),
    });
    result
}

/// Walks the store's business time in the last week, `[now − 7 d, now)`, in order, and hands each piece
/// `[from, to)` (half-microseconds) to `piece` with its nearest observation and whether it takes that
/// observation's status (false: unknown, SPEC §2b). The report's figures and a store's timeline are both
/// made of these pieces.
pub(crate) fn walk_week(
    polls: &[Poll],
    rows: &[HoursRow],
    timeline: &ZoneTimeline,
    now: Micros,
    horizon: Horizon,
    mut piece: impl FnMut(HalfMicros, HalfMicros, &Poll, bool),
) {
    let business = business_intervals(rows, timeline, now - LOOKBACK, now);
    let observed: Vec<Poll> = match &business {
        Some(intervals) => polls.iter().filter(|p| in_business(intervals, p.at)).copied().collect(),
        None => Vec::new(),
    };
    let observations = if observed.is_empty() { polls } else { &observed };
    if observations.is_empty() {
        return;
    }

    // Everything below in half-microseconds, so midpoints are integers.
    let week_start = 2 * (now - WEEK);
    let end = 2 * now;
    let business: Vec<(HalfMicros, HalfMicros)> = match business {
        Some(intervals) => {
            intervals.iter().map(|&(s, e)| ((2 * s).max(week_start), (2 * e).min(end))).filter(|(s, e)| s < e).collect()
        }
        None => vec![(week_start, end)],
    };
    let reach = horizon.length().map(|h| 2 * h);

    // Walk the observations' cells (each reaches halfway to its neighbours) against business intervals.
    let mut cell = 0;
    for &(b_start, b_end) in &business {
        let mut at = b_start;
        while at < b_end {
            // Advance to the cell holding `at`: cell i ends at the midpoint with observation i + 1
            // (a tie belongs to the earlier observation, which changes no length).
            while cell + 1 < observations.len() && observations[cell].at + observations[cell + 1].at <= at {
                cell += 1;
            }
            let cell_end = observations.get(cell + 1).map_or(HalfMicros::MAX, |next| observations[cell].at + next.at);
            let piece_end = cell_end.min(b_end);
            let observation = &observations[cell];
            match reach {
                None => piece(at, piece_end, observation, true),
                Some(reach) => {
                    // The instants within H of the observation: [at − H, at + H] (its ends have no length).
                    let known_from = (2 * observation.at - reach).clamp(at, piece_end);
                    let known_to = (2 * observation.at + reach).clamp(known_from, piece_end);
                    if at < known_from {
                        piece(at, known_from, observation, false);
                    }
                    if known_from < known_to {
                        piece(known_from, known_to, observation, true);
                    }
                    if known_to < piece_end {
                        piece(known_to, piece_end, observation, false);
                    }
                }
            }
            at = piece_end;
        }
    }
}

/// A length in half-microseconds as minutes or hours with two decimals, rounded half up: how the report
/// writes its figures.
pub fn two_decimals(length: HalfMicros, unit: Micros) -> String {
    let unit = i128::from(2 * unit);
    let hundredths = (i128::from(length) * 100 + unit / 2) / unit;
    format!("{}.{:02}", hundredths / 100, hundredths % 100)
}

fn write_rows<'a, W: Write>(
    out: &mut W,
    rows: &[StoreUptime],
    with_unknown: bool,
    with_header: bool,
    store_id: impl Fn(u32) -> &'a str,
) -> io::Result<()> {
    let mut sorted: Vec<(&str, &StoreUptime)> = rows.iter().map(|r| (store_id(r.store), r)).collect();
    sorted.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    if with_header {
        writeln!(out, "{}", if with_unknown { HEADER_WITH_UNKNOWN } else { HEADER })?;
    }
    for (id, r) in sorted {
        // Ids are written as read; one with a comma, quote or line break needs CSV quoting.
        if id.contains([',', '"', '\n', '\r']) {
            write!(out, "\"{}\"", id.replace('"', "\"\""))?;
        } else {
            out.write_all(id.as_bytes())?;
        }
        for (_, figure) in r.figures(with_unknown) {
            write!(out, ",{figure}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
