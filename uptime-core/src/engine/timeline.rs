//! One store's evidence: the business time of its last week cut into the pieces that decide its report
//! row, with the poll that decided each. The figures are the report's own ([`store_uptime`]), and the
//! segments come from the same walk ([`walk_week`]), so the two never disagree.

use chrono_tz::Tz;

use super::{
    HalfMicros, Horizon, LOOKBACK, StoreUptime, ZoneTimeline, business_intervals, in_business, store_uptime, walk_week,
};
use crate::input::{DEFAULT_ZONE, HoursRow, Poll};
use crate::time::{DAY, Micros, WEEK};

/// A stretch of business time in the last week (UTC), with the zone's offset at either end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusinessInterval {
    pub from: Micros,
    pub to: Micros,
    /// Local time minus UTC at `from` and at `to` (they differ across a clock change).
    pub from_offset: Micros,
    pub to_offset: Micros,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentStatus {
    Up,
    Down,
    /// Farther than the horizon from its nearest observation (SPEC §2b).
    Unknown,
}

/// A piece of business time `[from, to)`, in half-microseconds (a boundary between two observations is
/// their midpoint, which may fall on half a microsecond), with its status and the observation nearest to
/// it: the one that decided it, or for unknown time the one that was too far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub from: HalfMicros,
    pub to: HalfMicros,
    pub status: SegmentStatus,
    pub poll: Micros,
}

/// A poll of the lookback range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimelinePoll {
    pub at: Micros,
    pub active: bool,
    /// Inside business hours (half-open: a poll at closing time is outside). A store without hours is
    /// open all the time.
    pub in_business_hours: bool,
    /// One of the observations that decide the store's status: the polls in business hours, or all of
    /// them when none is (SPEC §2).
    pub observation: bool,
}

/// A run of down business time with no up or unknown time in it, `[from, to)` in half-microseconds.
/// Closed time ends an outage: the next down stretch after it is another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    pub from: HalfMicros,
    pub to: HalfMicros,
}

/// One store's last week as the report sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreTimeline {
    pub now: Micros,
    pub zone: Tz,
    pub horizon: Horizon,
    /// `None`: no business-hour rows, open all the time.
    pub business: Option<Vec<BusinessInterval>>,
    pub segments: Vec<Segment>,
    pub polls: Vec<TimelinePoll>,
    pub outages: Vec<Outage>,
    /// The store's report row.
    pub figures: StoreUptime,
}

impl StoreTimeline {
    /// The longest outage (the earliest of equals).
    pub fn longest_outage(&self) -> Option<Outage> {
        self.outages.iter().copied().fold(None, |best: Option<Outage>, o| match best {
            Some(b) if b.to - b.from >= o.to - o.from => Some(b),
            _ => Some(o),
        })
    }
}

/// The timeline of one store at `now` (the report's `now`, the latest poll of all stores): `polls` are
/// its polls, sorted by instant (any range; only the lookback range is used), `rows` its business-hour
/// rows, `zone` its known zone (`None`: America/Chicago). `None` when it has no poll in the lookback
/// range, and so no report row.
pub fn store_timeline(
    store: u32,
    polls: &[Poll],
    rows: &[HoursRow],
    zone: Option<Tz>,
    now: Micros,
    horizon: Horizon,
) -> Option<StoreTimeline> {
    let start = polls.partition_point(|p| p.at < now - LOOKBACK);
    let end = polls.partition_point(|p| p.at <= now);
    let polls = &polls[start..end];
    if polls.is_empty() {
        return None;
    }
    let zone = zone.unwrap_or(DEFAULT_ZONE);
    // The span the report's zone timelines cover, so conversions are the report's.
    let timeline = ZoneTimeline::new(zone, now - LOOKBACK - 3 * DAY, now + 3 * DAY);
    let figures = store_uptime(store, polls, rows, &timeline, now, horizon);

    let intervals = business_intervals(rows, &timeline, now - LOOKBACK, now);
    let open = |at: Micros| intervals.as_deref().is_none_or(|iv| in_business(iv, at));
    let any_inside = polls.iter().any(|p| open(p.at));
    let polls_out = polls
        .iter()
        .map(|p| TimelinePoll {
            at: p.at,
            active: p.active,
            in_business_hours: open(p.at),
            observation: open(p.at) || !any_inside,
        })
        .collect();
    let week_start = now - WEEK;
    let business = intervals.map(|iv| {
        iv.iter()
            .map(|&(from, to)| (from.max(week_start), to.min(now)))
            .filter(|(from, to)| from < to)
            .map(|(from, to)| BusinessInterval {
                from,
                to,
                from_offset: timeline.offset(from),
                to_offset: timeline.offset(to),
            })
            .collect()
    });

    let mut segments: Vec<Segment> = Vec::new();
    walk_week(polls, rows, &timeline, now, horizon, |from, to, nearest, known| {
        let status = match (known, nearest.active) {
            (false, _) => SegmentStatus::Unknown,
            (true, true) => SegmentStatus::Up,
            (true, false) => SegmentStatus::Down,
        };
        segments.push(Segment { from, to, status, poll: nearest.at });
    });
    let mut outages: Vec<Outage> = Vec::new();
    for s in segments.iter().filter(|s| s.status == SegmentStatus::Down) {
        match outages.last_mut() {
            Some(last) if last.to == s.from => last.to = s.to,
            _ => outages.push(Outage { from: s.from, to: s.to }),
        }
    }
    Some(StoreTimeline { now, zone, horizon, business, segments, polls: polls_out, outages, figures })
}

#[cfg(test)]
mod tests {
    use super::super::{NoProgress, WINDOWS, compute};
    use super::*;
    use crate::time::{HOUR, MICROS_PER_SECOND, MINUTE};
    use std::collections::HashMap;

    const NOW: Micros = 1_704_736_800 * MICROS_PER_SECOND; // Monday 2024-01-08 18:00 UTC

    fn poll(minutes_before_now: i64, active: bool) -> Poll {
        Poll { store: 0, at: NOW - minutes_before_now * MINUTE, active }
    }

    #[test]
    fn segments_add_up_to_the_report_row_and_outages_are_runs_of_down_time() {
        // Open 09:00–17:00 New York every day; polls every 45 min with a few gaps and outages.
        let rows: Vec<HoursRow> =
            (0..7).map(|weekday| HoursRow { store: 0, weekday, start: 9 * HOUR, end: 17 * HOUR }).collect();
        let mut polls: Vec<Poll> =
            (0..(8 * 24 * 60 / 45)).filter(|i| i % 17 != 3).map(|i| poll(i * 45, i % 11 > 2)).collect();
        polls.sort_by_key(|p| p.at);
        let zone = chrono_tz::America::New_York;
        for horizon in [Horizon::NONE, Horizon::minutes(20).expect("valid"), Horizon::minutes(90).expect("valid")] {
            let t = store_timeline(0, &polls, &rows, Some(zone), NOW, horizon).expect("a timeline");
            let zones = HashMap::from([(0, zone)]);
            let report =
                compute(super::super::Inputs { polls: &polls, hours: &rows, zones: &zones }, NOW, horizon, &NoProgress);
            assert_eq!(t.figures, report[0], "the report's row");
            let mut sums = StoreUptime::default();
            for s in &t.segments {
                let totals = match s.status {
                    SegmentStatus::Up => &mut sums.uptime,
                    SegmentStatus::Down => &mut sums.downtime,
                    SegmentStatus::Unknown => &mut sums.unknown,
                };
                for (total, window) in totals.iter_mut().zip(WINDOWS) {
                    *total += (s.to - s.from.max(2 * (NOW - window))).max(0);
                }
            }
            assert_eq!(
                (sums.uptime, sums.downtime, sums.unknown),
                (t.figures.uptime, t.figures.downtime, t.figures.unknown)
            );
            let down: HalfMicros = t.outages.iter().map(|o| o.to - o.from).sum();
            assert_eq!(down, t.figures.downtime[2]);
            assert!(t.outages.windows(2).all(|w| w[0].to < w[1].from), "outages are apart");
            assert!(t.segments.windows(2).all(|w| w[0].to <= w[1].from), "segments in order, apart");
            let business: Micros = t.business.as_ref().expect("hours").iter().map(|b| b.to - b.from).sum();
            assert_eq!(2 * business, t.segments.iter().map(|s| s.to - s.from).sum::<HalfMicros>());
        }
    }

    #[test]
    fn polls_are_marked_inside_or_outside_business_hours_and_the_fallback_is_shown() {
        let rows = [HoursRow { store: 0, weekday: 0, start: 9 * HOUR, end: 10 * HOUR }];
        // Monday 2024-01-08, UTC: 08:45 and 10:50 are outside 09:00–10:00; 09:30 inside.
        let at = |h: i64, m: i64| Poll { store: 0, at: NOW - 18 * HOUR + h * HOUR + m * MINUTE, active: true };
        let t = store_timeline(0, &[at(8, 45), at(10, 50)], &rows, Some(chrono_tz::UTC), NOW, Horizon::NONE)
            .expect("a timeline");
        assert!(t.polls.iter().all(|p| !p.in_business_hours && p.observation), "no poll inside: all observe");
        let t = store_timeline(0, &[at(8, 45), at(9, 30), at(10, 50)], &rows, Some(chrono_tz::UTC), NOW, Horizon::NONE)
            .expect("a timeline");
        let marks: Vec<(bool, bool)> = t.polls.iter().map(|p| (p.in_business_hours, p.observation)).collect();
        assert_eq!(marks, vec![(false, false), (true, true), (false, false)]);
        assert_eq!(t.segments.len(), 1);
        assert_eq!(t.segments[0].poll, at(9, 30).at);
        let interval = t.business.as_ref().expect("hours")[0];
        assert_eq!((interval.to - interval.from, interval.from_offset), (HOUR, 0));
        assert!(
            store_timeline(
                0,
                &[Poll { store: 0, at: NOW - LOOKBACK - 1, active: true }],
                &rows,
                None,
                NOW,
                Horizon::NONE
            )
            .is_none()
        );
    }
}
