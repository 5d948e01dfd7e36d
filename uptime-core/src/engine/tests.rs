//! One named test per rule of SPEC §1–§2, then property tests against a brute-force sampler.

use std::collections::HashMap;
use std::path::Path;

use crate::input::{self, HoursRow, Poll, StoreIds};
use chrono::{DateTime, LocalResult, TimeZone};
use chrono_tz::Tz;
use proptest::prelude::*;

use super::*;
use crate::time::MICROS_PER_SECOND;

/// The report of three CSV texts (an empty text: the file is absent), as the CLI would write it.
fn report(polls: &str, hours: &str, zones: &str) -> String {
    report_with(polls, hours, zones, Horizon::NONE)
}

/// The same with a gap horizon of SPEC §2b.
fn report_with(polls: &str, hours: &str, zones: &str, horizon: Horizon) -> String {
    let mut stores = StoreIds::new();
    // Far in the future: no poll in these tests is rejected as "from the future" unless a test says so.
    let loaded_at = 4_000_000_000 * MICROS_PER_SECOND;
    let polls = input::read_polls_bytes(Path::new("store_status.csv"), polls.as_bytes(), &mut stores, loaded_at)
        .expect("polls file");
    let hours = if hours.is_empty() {
        Vec::new()
    } else {
        input::read_hours_bytes(Path::new("business_hours.csv"), hours.as_bytes(), &mut stores).expect("hours").rows
    };
    let zones: HashMap<u32, Tz> = if zones.is_empty() {
        HashMap::new()
    } else {
        input::read_zones_bytes(Path::new("timezones.csv"), zones.as_bytes(), &mut stores)
            .expect("zones")
            .rows
            .into_iter()
            .filter_map(|r| r.zone.map(|z| (r.store, z)))
            .collect()
    };
    let mut out = Vec::new();
    super::report(Inputs { polls: &polls.polls, hours: &hours, zones: &zones }, horizon, &NoProgress)
        .write_csv(&mut out, |k| stores.id(k))
        .expect("write to memory");
    String::from_utf8(out).expect("utf-8")
}

/// The report line of one store, without its id.
fn line<'a>(report: &'a str, store: &str) -> &'a str {
    report
        .lines()
        .find_map(|l| l.strip_prefix(store).and_then(|rest| rest.strip_prefix(',')))
        .unwrap_or_else(|| panic!("no line for {store} in\n{report}"))
}

const POLLS: &str = "store_id,timestamp_utc,status\n";
const HOURS: &str = "store_id,dayOfWeek,start_time_local,end_time_local\n";
const ZONES: &str = "store_id,timezone_str\n";

#[test]
fn worked_example_of_the_spec() {
    let r = report(
        &format!(
            "{POLLS}A,2023-01-23 15:14:00 UTC,active\nA,2023-01-23 16:15:00 UTC,inactive\nB,2023-01-23 18:00:00 UTC,active\n"
        ),
        &format!("{HOURS}A,0,09:00:00,12:00:00\n"),
        &format!("{ZONES}A,America/New_York\nB,America/New_York\n"),
    );
    assert_eq!(r, format!("{HEADER}\nA,0.00,1.74,1.74,0.00,1.26,1.26\nB,60.00,24.00,168.00,0.00,0.00,0.00\n"));
}

#[test]
fn worked_example_is_exact_to_the_microsecond() {
    // 09:00–10:44:30 up, 10:44:30–12:00 down (New York, Monday 2023-01-23).
    let polls = [
        Poll { store: 0, at: 1_674_486_840 * MICROS_PER_SECOND, active: true },
        Poll { store: 0, at: 1_674_490_500 * MICROS_PER_SECOND, active: false },
    ];
    let hours = [HoursRow { store: 0, weekday: 0, start: 9 * HOUR, end: 12 * HOUR }];
    let zones = HashMap::from([(0, chrono_tz::America::New_York)]);
    let now = 1_674_496_800 * MICROS_PER_SECOND; // 18:00 UTC, after closing
    let rows = compute(Inputs { polls: &polls, hours: &hours, zones: &zones }, now, Horizon::NONE, &NoProgress);
    let up = 2 * (HOUR + 44 * 60 * MICROS_PER_SECOND + 30 * MICROS_PER_SECOND);
    let down = 2 * (HOUR + 15 * 60 * MICROS_PER_SECOND + 30 * MICROS_PER_SECOND);
    assert_eq!(rows[0].uptime, [0, up, up]);
    assert_eq!(rows[0].downtime, [0, down, down]);
}

#[test]
fn midpoint_on_half_a_microsecond_is_kept_exactly() {
    // Two polls one microsecond apart: the boundary is at half a microsecond.
    let now = 1_700_000_000 * MICROS_PER_SECOND;
    let polls = [Poll { store: 0, at: now - 1, active: true }, Poll { store: 0, at: now, active: false }];
    let rows = compute(Inputs { polls: &polls, hours: &[], zones: &HashMap::new() }, now, Horizon::NONE, &NoProgress);
    assert_eq!(rows[0].downtime, [1, 1, 1], "half a microsecond of downtime");
    assert_eq!(rows[0].uptime, [2 * HOUR - 1, 2 * DAY - 1, 2 * WEEK - 1]);
}

#[test]
fn midpoint_ties_go_to_the_earlier_observation_and_split_evenly() {
    // Always open; polls at now-2h (up) and now (down): the midpoint now-1h splits the last two hours.
    let r = report(&format!("{POLLS}s,2024-01-01 10:00:00,active\ns,2024-01-01 12:00:00,inactive\n"), "", "");
    assert_eq!(line(&r, "s"), "0.00,23.00,167.00,60.00,1.00,1.00");
}

#[test]
fn gap_at_a_start_means_the_first_instant_after_the_gap() {
    // Sunday 2024-03-10, Chicago: 02:30 does not exist; the shift starts at 03:00 CDT = 08:00 UTC.
    let r = report(
        &format!("{POLLS}g,2024-03-10 08:30:00,active\ng,2024-03-10 09:30:00,active\n"),
        &format!("{HOURS}g,6,02:30,05:00\n"),
        &format!("{ZONES}g,America/Chicago\n"),
    );
    // Day: 08:00–09:30 UTC; week adds the previous Sunday's 08:30–11:00 UTC from 09:30 on.
    assert_eq!(line(&r, "g"), "60.00,1.50,3.00,0.00,0.00,0.00");
}

#[test]
fn gap_at_an_end_means_the_first_instant_after_the_gap() {
    // 00:00–02:30 on 2024-03-10 in Chicago: 06:00 UTC to 03:00 CDT = 08:00 UTC, two hours.
    let r = report(
        &format!(
            "{POLLS}g,2024-03-10 06:30:00,active\ng,2024-03-10 07:30:00,inactive\ng,2024-03-10 09:00:00,inactive\n"
        ),
        &format!("{HOURS}g,6,00:00,02:30\n"),
        &format!("{ZONES}g,America/Chicago\n"),
    );
    assert_eq!(line(&r, "g"), "0.00,1.00,1.00,0.00,1.00,1.00");
}

#[test]
fn time_occurring_twice_means_its_first_occurrence() {
    // 2024-11-03 in Chicago, 01:00–02:00 happens twice (CDT then CST).
    let r = report(
        &format!(
            "{POLLS}end,2024-11-03 05:15:00,active\nend,2024-11-03 12:00:00,active\n\
             start,2024-11-03 07:00:00,inactive\nstart,2024-11-03 12:00:00,inactive\n"
        ),
        &format!("{HOURS}end,6,00:00,01:30\nstart,6,01:30,03:00\n"),
        &format!("{ZONES}end,America/Chicago\nstart,America/Chicago\n"),
    );
    // Ends at the first 01:30 (06:30 UTC): 1.5 h, not 2.5 h.
    assert_eq!(line(&r, "end"), "0.00,1.50,1.50,0.00,0.00,0.00");
    // Starts at the first 01:30 (06:30 UTC) and ends at 03:00 CST (09:00 UTC): 2.5 h.
    assert_eq!(line(&r, "start"), "0.00,0.00,0.00,0.00,2.50,2.50");
}

#[test]
fn overnight_shift_runs_into_the_next_day_and_closing_time_is_outside() {
    // Monday 22:00 → Tuesday 02:00 UTC. The poll at exactly 02:00 is outside business hours and unused.
    let r = report(
        &format!("{POLLS}n,2024-01-02 01:00:00,inactive\nn,2024-01-02 02:00:00,active\n"),
        &format!("{HOURS}n,0,22:00,02:00\n"),
        &format!("{ZONES}n,UTC\n"),
    );
    assert_eq!(line(&r, "n"), "0.00,0.00,0.00,60.00,4.00,4.00");
}

#[test]
fn start_equal_to_end_is_open_twenty_four_hours() {
    // Wednesday 09:00 → Thursday 09:00 UTC.
    let r = report(
        &format!("{POLLS}e,2024-01-03 10:00:00,inactive\ne,2024-01-04 12:00:00,active\n"),
        &format!("{HOURS}e,2,09:00,09:00\n"),
        &format!("{ZONES}e,UTC\n"),
    );
    assert_eq!(line(&r, "e"), "0.00,0.00,0.00,0.00,21.00,24.00");
}

#[test]
fn ends_at_23_59_and_23_59_59_mean_the_end_of_the_day() {
    // Tuesday 2024-01-02, UTC; now is Wednesday 00:00, which is outside both stores' hours.
    let r = report(
        &format!(
            "{POLLS}m,2024-01-02 12:00:00,active\nm,2024-01-03 00:00:00,inactive\n\
             s,2024-01-02 12:00:00,active\ns,2024-01-03 00:00:00,inactive\n"
        ),
        &format!("{HOURS}m,1,00:00:00,23:59:00\ns,1,00:00:00,23:59:59\n"),
        &format!("{ZONES}m,UTC\ns,UTC\n"),
    );
    assert_eq!(line(&r, "m"), "60.00,24.00,24.00,0.00,0.00,0.00");
    assert_eq!(line(&r, "s"), "60.00,24.00,24.00,0.00,0.00,0.00");
}

#[test]
fn overlapping_rows_are_counted_once() {
    let r = report(
        &format!("{POLLS}o,2024-01-01 10:00:00,active\no,2024-01-01 20:00:00,active\n"),
        &format!("{HOURS}o,0,09:00,12:00\no,0,11:00,13:00\no,0,12:30,12:45\n"),
        &format!("{ZONES}o,UTC\n"),
    );
    assert_eq!(line(&r, "o"), "0.00,4.00,4.00,0.00,0.00,0.00");
}

#[test]
fn store_without_observations_in_business_hours_falls_back_to_all_its_polls() {
    // Open Monday 09:00–10:00 UTC; polls only outside it. Nearest to 09:00–10:00 is the 07:00 poll.
    let r = report(
        &format!("{POLLS}f,2024-01-01 07:00:00,inactive\nf,2024-01-01 13:00:00,active\n"),
        &format!("{HOURS}f,0,09:00,10:00\n"),
        &format!("{ZONES}f,UTC\n"),
    );
    assert_eq!(line(&r, "f"), "0.00,0.00,0.00,0.00,1.00,1.00");
}

// ---- SPEC §2b: unknown time ------------------------------------------------------------------------------

fn minutes(m: u32) -> Horizon {
    Horizon::minutes(m).expect("a horizon SPEC §2b allows")
}

#[test]
fn horizons_outside_one_minute_to_a_day_are_refused() {
    assert_eq!(Horizon::minutes(0), None);
    assert_eq!(Horizon::minutes(1441), None);
    assert_eq!(minutes(1).length(), Some(MINUTE));
    assert_eq!(minutes(1440).as_minutes(), Some(1440));
    assert_eq!(Horizon::NONE.as_minutes(), None);
}

#[test]
fn a_store_silent_for_a_whole_day_is_unknown_for_that_day() {
    // Always open (UTC). Hourly active polls from 2024-01-02 12:00 to now (2024-01-10 12:00), but none
    // from 2024-01-05 01:00 to 2024-01-06 00:00, and the one at 2024-01-06 01:00 inactive.
    let start = 1_704_196_800 * MICROS_PER_SECOND; // 2024-01-02 12:00 UTC
    let gap_from = 1_704_416_400 * MICROS_PER_SECOND; // 2024-01-05 01:00
    let back = 1_704_502_800 * MICROS_PER_SECOND; // 2024-01-06 01:00
    let mut text = String::from(POLLS);
    for hour in 0..=8 * 24 {
        let at = start + hour * HOUR;
        if (gap_from..back).contains(&at) {
            continue;
        }
        let stamp = DateTime::from_timestamp_micros(at).expect("range").format("%Y-%m-%d %H:%M:%S");
        text.push_str(&format!("s,{stamp},{}\n", if at == back { "inactive" } else { "active" }));
    }
    // Without a horizon the 25 h between the 00:00 and 01:00 polls split at their midpoint: 12.5 h down,
    // plus the half hour after the inactive poll.
    assert_eq!(line(&report(&text, "", ""), "s"), "60.00,24.00,155.00,0.00,0.00,13.00");
    // H = 60 min: the 00:00 poll reaches 01:00, the 01:00 (next day) poll back to 00:00: 23 h unknown,
    // and the inactive poll is down from 00:00 to 01:30.
    assert_eq!(
        line(&report_with(&text, "", "", minutes(60)), "s"),
        "60.00,24.00,143.50,0.00,0.00,1.50,0.00,0.00,23.00"
    );
    // H = 1440 min covers the gap: nothing unknown, the figures of no horizon.
    assert_eq!(
        line(&report_with(&text, "", "", minutes(1440)), "s"),
        "60.00,24.00,155.00,0.00,0.00,13.00,0.00,0.00,0.00"
    );
    // Hourly polls are 30 min from the farthest instant of their cells: H = 30 leaves only the gap,
    // 00:30 to 00:30 the next day, and the inactive poll is down from 00:30 to 01:30.
    assert_eq!(
        line(&report_with(&text, "", "", minutes(30)), "s"),
        "60.00,24.00,143.00,0.00,0.00,1.00,0.00,0.00,24.00"
    );
}

#[test]
fn unknown_time_in_a_week_with_a_clock_change() {
    // Chicago, open Sundays all day. Sunday 2024-03-10 has 23 hours (06:00 UTC to Monday 05:00 UTC).
    // Polls on 03-10 at 07:00 UTC (active) and 18:00 UTC (inactive); now is Monday 03-11 12:00 UTC
    // (closed); the week starts 03-04 12:00 UTC, after the Sunday before has closed.
    let polls =
        format!("{POLLS}d,2024-03-10 07:00:00,active\nd,2024-03-10 18:00:00,inactive\nd,2024-03-11 12:00:00,active\n");
    let hours = format!("{HOURS}d,6,00:00,23:59:59\n");
    let zones = format!("{ZONES}d,America/Chicago\n");
    // Without a horizon: 06:00–12:30 up; 12:30 to Monday 05:00 down.
    assert_eq!(line(&report(&polls, &hours, &zones), "d"), "0.00,0.50,6.50,0.00,16.50,16.50");
    // H = 60: 06:00–08:00 up, 17:00–19:00 down, the other 19 of the 23 hours unknown. The day window
    // starts Sunday 12:00 UTC: 17 business hours, 2 down, 15 unknown.
    assert_eq!(
        line(&report_with(&polls, &hours, &zones, minutes(60)), "d"),
        "0.00,0.00,2.00,0.00,2.00,2.00,0.00,15.00,19.00"
    );
}

#[test]
fn unknown_time_when_no_poll_is_in_business_hours() {
    // Open Monday 09:00–10:00 UTC, polls at 08:45 (inactive) and 10:50 (active), both outside: all polls
    // are the observations; the midpoint is 09:47:30. Now is 10:50: the last hour holds 09:50–10:00.
    let polls = format!("{POLLS}f,2024-01-01 08:45:00,inactive\nf,2024-01-01 10:50:00,active\n");
    let hours = format!("{HOURS}f,0,09:00,10:00\n");
    let zones = format!("{ZONES}f,UTC\n");
    assert_eq!(line(&report(&polls, &hours, &zones), "f"), "10.00,0.21,0.21,0.00,0.79,0.79");
    // H = 30: 08:45 reaches 09:15 (down); 10:50 reaches back to 10:20, after closing: 45 min unknown.
    assert_eq!(
        line(&report_with(&polls, &hours, &zones, minutes(30)), "f"),
        "0.00,0.00,0.00,0.00,0.25,0.25,10.00,0.75,0.75"
    );
    // H = 75: 08:45 reaches 10:00, but its cell ends at 09:47:30; 10:50 reaches back to 09:35.
    assert_eq!(
        line(&report_with(&polls, &hours, &zones, minutes(75)), "f"),
        "10.00,0.21,0.21,0.00,0.79,0.79,0.00,0.00,0.00"
    );
}

#[test]
fn a_report_without_a_horizon_keeps_its_six_columns() {
    let polls = format!("{POLLS}a,2024-01-01 12:00:00,active\n");
    assert_eq!(report(&polls, "", ""), format!("{HEADER}\na,60.00,24.00,168.00,0.00,0.00,0.00\n"));
    assert_eq!(
        report_with(&polls, "", "", minutes(30)),
        format!("{HEADER_WITH_UNKNOWN}\na,30.00,0.50,0.50,0.00,0.00,0.00,30.00,23.50,167.50\n")
    );
    assert_eq!(
        report_with(&format!("{POLLS}x,never,active\n"), "", "", minutes(30)),
        format!("{HEADER_WITH_UNKNOWN}\n"),
        "no valid poll: the header of the columns asked for"
    );
}

#[test]
fn observations_in_business_hours_outrank_nearer_polls_outside() {
    // The 09:55 poll is outside hours (after 09:50 close) and ignored, though nearest to the end of the shift.
    let r = report(
        &format!(
            "{POLLS}x,2024-01-01 09:05:00,active\nx,2024-01-01 09:55:00,inactive\nx,2024-01-01 12:00:00,inactive\n"
        ),
        &format!("{HOURS}x,0,09:00,09:50\n"),
        &format!("{ZONES}x,UTC\n"),
    );
    assert_eq!(line(&r, "x"), "0.00,0.83,0.83,0.00,0.00,0.00");
}

#[test]
fn lookback_range_is_eight_days_inclusive() {
    // Always open. `old` has a poll 1 µs before the range (ignored) and `edge` one exactly at its start.
    let r = report(
        &format!(
            "{POLLS}old,2024-01-01 11:59:59.999999,inactive\nold,2024-01-09 12:00:00,active\n\
             edge,2024-01-01 12:00:00,inactive\nedge,2024-01-09 12:00:00,active\n\
             gone,2023-12-31 00:00:00,active\n"
        ),
        "",
        "",
    );
    assert_eq!(line(&r, "old"), "60.00,24.00,168.00,0.00,0.00,0.00");
    // Midpoint at now − 4 d: the first three days of the week are down.
    assert_eq!(line(&r, "edge"), "60.00,24.00,96.00,0.00,0.00,72.00");
    assert!(!r.contains("gone"), "a store with no poll in the lookback range is not in the report");
}

#[test]
fn duplicate_polls_the_later_row_wins() {
    let r = report(&format!("{POLLS}d,2024-01-01 12:00:00,inactive\nd,2024-01-01T12:00:00Z,active\n"), "", "");
    assert_eq!(line(&r, "d"), "60.00,24.00,168.00,0.00,0.00,0.00");
}

#[test]
fn polls_more_than_an_hour_after_loading_are_rejected() {
    let loaded_at = 1_704_110_400 * MICROS_PER_SECOND; // 2024-01-01 12:00 UTC
    let text = format!(
        "{POLLS}p,2024-01-01 13:00:00,active\np,2024-01-01 13:00:00.000001,inactive\np,2099-01-01 00:00:00,inactive\n"
    );
    let mut stores = StoreIds::new();
    let file = input::read_polls_bytes(Path::new("s.csv"), text.as_bytes(), &mut stores, loaded_at).expect("reads");
    assert_eq!(file.polls.len(), 1);
    assert_eq!(file.summary.rejected.get(&input::RejectReason::FutureTimestamp), Some(&2));
    assert_eq!(file.summary.samples.iter().map(|s| s.line).collect::<Vec<_>>(), vec![3, 4]);
}

#[test]
fn unknown_or_missing_zone_is_america_chicago() {
    let polls = format!(
        "{POLLS}mars,2024-01-03 15:00:00,inactive\nnone,2024-01-03 15:00:00,inactive\n\
         chicago,2024-01-03 15:00:00,inactive\nutc,2024-01-03 15:00:00,inactive\n"
    );
    let hours = format!("{HOURS}mars,2,08:00,10:00\nnone,2,08:00,10:00\nchicago,2,08:00,10:00\nutc,2,08:00,10:00\n");
    let r = report(&polls, &hours, &format!("{ZONES}mars,Mars/Olympus_Mons\nchicago,America/Chicago\nutc,UTC\n"));
    // 08:00–10:00 CST is 14:00–16:00 UTC: an hour of it lies before now (15:00), and an hour of the
    // previous Wednesday lies after the week's start.
    assert_eq!(line(&r, "chicago"), "0.00,0.00,0.00,60.00,1.00,2.00");
    assert_eq!(line(&r, "mars"), line(&r, "chicago"));
    assert_eq!(line(&r, "none"), line(&r, "chicago"));
    assert_eq!(line(&r, "utc"), "0.00,0.00,0.00,0.00,2.00,2.00");
}

#[test]
fn store_whose_hour_rows_were_all_rejected_is_open_all_the_time() {
    let r = report(
        &format!("{POLLS}b,2024-01-01 12:00:00,inactive\nopen,2024-01-01 12:00:00,inactive\n"),
        &format!("{HOURS}b,7,09:00:00,17:00:00\nb,2,25:00:00,26:00:00\n"),
        "",
    );
    assert_eq!(line(&r, "b"), "0.00,0.00,0.00,60.00,24.00,168.00");
    assert_eq!(line(&r, "b"), line(&r, "open"));
}

#[test]
fn no_valid_poll_gives_the_header_alone() {
    assert_eq!(report(&format!("{POLLS},2024-01-01 12:00:00,active\nx,never,active\n"), "", ""), format!("{HEADER}\n"));
}

#[test]
fn store_ids_sort_by_bytes_and_odd_ids_are_quoted() {
    let r = report(
        &format!(
            "{POLLS}b,2024-01-01 12:00:00,active\nB,2024-01-01 12:00:00,active\n\"a,1\",2024-01-01 12:00:00,active\n"
        ),
        "",
        "",
    );
    let ids: Vec<&str> = r.lines().skip(1).map(|l| l.rsplitn(7, ',').last().unwrap_or_default()).collect();
    assert_eq!(ids, vec!["B", "\"a,1\"", "b"]);
}

#[test]
fn rounding_is_half_up_at_two_decimals() {
    assert_eq!(two_decimals(2 * 60 * MICROS_PER_SECOND * 5 / 1000, 60 * MICROS_PER_SECOND), "0.01"); // 0.005 min
    assert_eq!(two_decimals(2 * 60 * MICROS_PER_SECOND * 4 / 1000, 60 * MICROS_PER_SECOND), "0.00");
    assert_eq!(two_decimals(2 * 168 * HOUR, HOUR), "168.00");
    assert_eq!(two_decimals(0, HOUR), "0.00");
}

// ---- Property tests against a brute-force sampler -------------------------------------------------------

const STEP: Micros = 30 * MICROS_PER_SECOND;

/// SPEC §2's local → UTC rules with chrono-tz alone (independent of `ZoneTimeline`). Minute-grained times
/// only: a gap is walked minute by minute to its end.
fn reference_utc(tz: Tz, local: Micros) -> Micros {
    let mut probe = local;
    loop {
        let naive = DateTime::from_timestamp_micros(probe).expect("in range").naive_utc();
        match tz.from_local_datetime(&naive) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => return t.timestamp_micros(),
            LocalResult::None => probe += 60 * MICROS_PER_SECOND,
        }
    }
}

/// Every business interval of the store near `now`, unmerged, straight from the rows.
fn reference_intervals(rows: &[HoursRow], tz: Tz, now: Micros) -> Option<Vec<(Micros, Micros)>> {
    if rows.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    let first_day = (now - 12 * DAY).div_euclid(DAY);
    for day in first_day..first_day + 15 {
        let weekday = (day + 3).rem_euclid(7) as u8;
        for r in rows.iter().filter(|r| r.weekday == weekday) {
            let end = match r.start.cmp(&r.end) {
                std::cmp::Ordering::Less => day * DAY + r.end,
                std::cmp::Ordering::Greater => (day + 1) * DAY + r.end,
                std::cmp::Ordering::Equal => (day + 1) * DAY + r.start,
            };
            out.push((reference_utc(tz, day * DAY + r.start), reference_utc(tz, end)));
        }
    }
    Some(out)
}

/// Samples the last week every `step` at the middle of each step: open? which observation is nearest,
/// and is it within the horizon (SPEC §2b)? Each sample stands for its whole step.
fn sample(polls: &[Poll], rows: &[HoursRow], tz: Tz, now: Micros, horizon: Horizon, step: Micros) -> StoreUptime {
    let intervals = reference_intervals(rows, tz, now);
    let open = |t: Micros| intervals.as_ref().is_none_or(|iv| iv.iter().any(|&(s, e)| s <= t && t < e));
    let in_range: Vec<Poll> = polls.iter().filter(|p| p.at >= now - LOOKBACK && p.at <= now).copied().collect();
    let inside: Vec<Poll> = in_range.iter().filter(|p| open(p.at)).copied().collect();
    let observations = if inside.is_empty() { &in_range } else { &inside };
    let mut result = StoreUptime { store: polls[0].store, ..StoreUptime::default() };
    let mut t = now - WEEK + step / 2;
    while t < now {
        if open(t) {
            let nearest = observations
                .iter()
                .min_by_key(|o| ((o.at - t).abs(), o.at))
                .expect("a store in the report has an observation");
            let totals = match horizon.length() {
                Some(h) if (nearest.at - t).abs() > h => &mut result.unknown,
                _ if nearest.active => &mut result.uptime,
                _ => &mut result.downtime,
            };
            for (total, window) in totals.iter_mut().zip(WINDOWS) {
                if t >= now - window {
                    *total += 2 * step;
                }
            }
        }
        t += step;
    }
    result
}

/// The sampler on the 30 s grid. Polls, hours and horizons are on whole minutes and zone offsets are
/// whole minutes, so every boundary (an interval end, a midpoint, an observation ± H) lies on the grid
/// and the sampled totals are exact.
fn brute_force(polls: &[Poll], rows: &[HoursRow], tz: Tz, now: Micros, horizon: Horizon) -> StoreUptime {
    sample(polls, rows, tz, now, horizon, STEP)
}

const PROPERTY_ZONES: &[Tz] = &[
    chrono_tz::America::Chicago,
    chrono_tz::America::New_York,
    chrono_tz::Australia::Sydney,
    chrono_tz::Australia::Lord_Howe,
    chrono_tz::America::Santiago,
    chrono_tz::Europe::London,
    chrono_tz::Asia::Kolkata,
    chrono_tz::Pacific::Chatham,
    chrono_tz::UTC,
];

/// Days on which clocks change in 2024 for the zones above (US, EU, Australia, Chile, New Zealand).
const CLOCK_CHANGE_DAYS: &[&str] =
    &["2024-03-10", "2024-11-03", "2024-03-31", "2024-10-27", "2024-04-07", "2024-10-06", "2024-09-08", "2024-09-29"];

/// "now" within eight days after a clock change, so the week holds it; on a whole minute.
fn now_strategy() -> impl Strategy<Value = Micros> {
    (0..CLOCK_CHANGE_DAYS.len(), 0i64..8 * 1440).prop_map(|(day, minutes)| {
        let date = chrono::NaiveDate::parse_from_str(CLOCK_CHANGE_DAYS[day], "%Y-%m-%d").expect("date");
        date.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp_micros() + minutes * 60 * MICROS_PER_SECOND
    })
}

/// A minute of the day, half the time between 00:00 and 04:00 where clocks change.
fn minute_of_day() -> impl Strategy<Value = i64> {
    prop_oneof![0i64..1440, 0i64..240]
}

fn rows_strategy() -> impl Strategy<Value = Vec<HoursRow>> {
    prop::collection::vec(
        (0u8..7, minute_of_day(), prop_oneof![minute_of_day(), Just(1440)]).prop_map(|(weekday, start, end)| {
            HoursRow { store: 0, weekday, start: start * 60 * MICROS_PER_SECOND, end: end * 60 * MICROS_PER_SECOND }
        }),
        0..6,
    )
}

/// Polls on whole minutes within nine days before `now`, the last one at `now`.
fn polls_strategy(now: Micros) -> impl Strategy<Value = Vec<Poll>> {
    prop::collection::vec((0i64..9 * 1440, any::<bool>()), 0..40).prop_flat_map(move |raw| {
        any::<bool>().prop_map(move |last_active| {
            let mut polls: Vec<Poll> = raw
                .iter()
                .map(|&(m, active)| Poll { store: 0, at: now - m * 60 * MICROS_PER_SECOND, active })
                .collect();
            polls.push(Poll { store: 0, at: now, active: last_active });
            polls.sort_by_key(|p| p.at);
            polls.dedup_by_key(|p| p.at);
            polls
        })
    })
}

fn case_strategy() -> impl Strategy<Value = (Micros, usize, Vec<HoursRow>, Vec<Poll>)> {
    now_strategy().prop_flat_map(|now| (Just(now), 0..PROPERTY_ZONES.len(), rows_strategy(), polls_strategy(now)))
}

/// No horizon a quarter of the time; otherwise short ones (the gaps of hourly polls) and any up to a day.
fn horizon_strategy() -> impl Strategy<Value = Horizon> {
    prop_oneof![
        1 => Just(Horizon::NONE),
        2 => (1u32..=120).prop_map(|m| Horizon::minutes(m).expect("in range")),
        1 => (1u32..=1440).prop_map(|m| Horizon::minutes(m).expect("in range")),
    ]
}

fn business_time(rows: &[HoursRow], tz: Tz, now: Micros, window: Micros) -> HalfMicros {
    let intervals = reference_intervals(rows, tz, now);
    let open = |t: Micros| intervals.as_ref().is_none_or(|iv| iv.iter().any(|&(s, e)| s <= t && t < e));
    let mut total = 0;
    let mut t = now - window + STEP / 2;
    while t < now {
        if open(t) {
            total += 2 * STEP;
        }
        t += STEP;
    }
    total
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn engine_equals_brute_force_sampler((now, zone, rows, polls) in case_strategy(), horizon in horizon_strategy()) {
        let tz = PROPERTY_ZONES[zone];
        let zones = HashMap::from([(0, tz)]);
        let rows_out = compute(Inputs { polls: &polls, hours: &rows, zones: &zones }, now, horizon, &NoProgress);
        prop_assert_eq!(rows_out.len(), 1);
        let expected = brute_force(&polls, &rows, tz, now, horizon);
        prop_assert_eq!(rows_out[0], expected);
    }

    #[test]
    fn uptime_plus_downtime_plus_unknown_is_business_time(
        (now, zone, rows, polls) in case_strategy(),
        horizon in horizon_strategy(),
    ) {
        let tz = PROPERTY_ZONES[zone];
        let zones = HashMap::from([(0, tz)]);
        let got = compute(Inputs { polls: &polls, hours: &rows, zones: &zones }, now, horizon, &NoProgress);
        for (i, window) in WINDOWS.iter().enumerate() {
            let total = got[0].uptime[i] + got[0].downtime[i] + got[0].unknown[i];
            prop_assert_eq!(total, business_time(&rows, tz, now, *window));
        }
        if horizon.length().is_none() {
            prop_assert_eq!(got[0].unknown, [0; 3]);
        }
    }

    #[test]
    fn a_horizon_only_turns_known_time_unknown(
        (now, zone, rows, polls) in case_strategy(),
        minutes in 1u32..=1440,
    ) {
        // Up and down can only shrink, each by what becomes unknown; a longer horizon knows at least as much.
        let tz = PROPERTY_ZONES[zone];
        let zones = HashMap::from([(0, tz)]);
        let inputs = Inputs { polls: &polls, hours: &rows, zones: &zones };
        let without = compute(inputs, now, Horizon::NONE, &NoProgress)[0];
        let with = compute(inputs, now, Horizon::minutes(minutes).expect("in range"), &NoProgress)[0];
        let longer = compute(inputs, now, Horizon::minutes(1440).expect("in range"), &NoProgress)[0];
        for i in 0..3 {
            prop_assert!(with.uptime[i] <= without.uptime[i] && with.downtime[i] <= without.downtime[i]);
            prop_assert_eq!(without.uptime[i] - with.uptime[i] + without.downtime[i] - with.downtime[i], with.unknown[i]);
            prop_assert!(longer.unknown[i] <= with.unknown[i]);
        }
    }

    #[test]
    fn engine_is_within_the_sampling_bound_off_the_grid(
        (_now, zone, rows, polls) in case_strategy(),
        jitter in prop::collection::vec(0i64..60 * MICROS_PER_SECOND, 41),
        horizon in horizon_strategy(),
        horizon_jitter in 0i64..60 * MICROS_PER_SECOND,
    ) {
        // Polls and the horizon off the whole minute (to the microsecond), sampled every 60 s: each boundary
        // inside the week moves a sampled total by at most one step, and there are at most two per business
        // interval, one per pair of neighbouring observations, two per observation (± H) and the window's.
        let polls: Vec<Poll> = polls.iter().zip(&jitter).map(|(p, j)| Poll { at: p.at - j, ..*p }).collect();
        let now = polls.iter().map(|p| p.at).max().expect("a poll");
        let horizon = Horizon(horizon.length().map(|h| h + horizon_jitter));
        let tz = PROPERTY_ZONES[zone];
        let zones = HashMap::from([(0, tz)]);
        let exact = compute(Inputs { polls: &polls, hours: &rows, zones: &zones }, now, horizon, &NoProgress)[0];
        let step = 60 * MICROS_PER_SECOND;
        let sampled = sample(&polls, &rows, tz, now, horizon, step);
        let intervals = reference_intervals(&rows, tz, now).map_or(1, |iv| iv.len()) as i64;
        let bound = 2 * step * (2 * intervals + 3 * polls.len() as i64 + 2);
        for i in 0..3 {
            for (got, want) in [(exact.uptime[i], sampled.uptime[i]), (exact.downtime[i], sampled.downtime[i]), (exact.unknown[i], sampled.unknown[i])] {
                prop_assert!((got - want).abs() <= bound, "window {}: exact {} sampled {} bound {}", i, got, want, bound);
            }
        }
    }

    #[test]
    fn shuffling_input_rows_changes_nothing(
        (_now, zone, rows, polls) in case_strategy(),
        seed in any::<u64>(),
    ) {
        // Three stores sharing the case's data under other ids; the CSV rows then go in a shuffled order.
        let tz = PROPERTY_ZONES[zone];
        let stamp = |at: Micros| DateTime::from_timestamp_micros(at).expect("range").format("%Y-%m-%d %H:%M:%S").to_string();
        let hhmm = |t: Micros| format!("{:02}:{:02}", t / HOUR, t % HOUR / (60 * MICROS_PER_SECOND));
        let mut poll_lines = Vec::new();
        let mut hour_lines = Vec::new();
        let mut zone_lines = Vec::new();
        for store in ["s1", "s2", "s3"] {
            poll_lines.extend(polls.iter().map(|p| format!("{store},{},{}", stamp(p.at), if p.active { "active" } else { "inactive" })));
            hour_lines.extend(rows.iter().map(|r| format!("{store},{},{},{}", r.weekday, hhmm(r.start), hhmm(r.end))));
            zone_lines.push(format!("{store},{}", tz.name()));
        }
        let csv = |header: &str, lines: &[String]| format!("{header}{}\n", lines.join("\n"));
        let hours_csv = |lines: &[String]| if lines.is_empty() { String::new() } else { csv(HOURS, lines) };
        let ordered = report(&csv(POLLS, &poll_lines), &hours_csv(&hour_lines), &csv(ZONES, &zone_lines));
        let mut state = seed | 1;
        let mut shuffle = |v: &mut Vec<String>| {
            for i in (1..v.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                v.swap(i, (state % (i as u64 + 1)) as usize);
            }
        };
        shuffle(&mut poll_lines);
        shuffle(&mut hour_lines);
        shuffle(&mut zone_lines);
        let shuffled = report(&csv(POLLS, &poll_lines), &hours_csv(&hour_lines), &csv(ZONES, &zone_lines));
        prop_assert_eq!(ordered, shuffled);
    }
}

#[test]
fn parts_merged_are_the_whole_report_byte_for_byte() {
    let ids = ["b", "a,1", "\"quoted\"", "z", "", "line\nbreak", "a", "m\u{e9}", "10", "9"];
    let row = |store: u32| StoreUptime { store, uptime: [1, 2, 3], downtime: [4, 5, 6], unknown: [0; 3] };
    let store_id = |key: u32| ids[key as usize];
    let whole = Report { now: Some(0), horizon: Horizon::NONE, rows: (0..ids.len() as u32).map(row).collect() };
    let mut expected = Vec::new();
    whole.write_csv(&mut expected, store_id).expect("memory");
    // Keys split into parts whatever their ids: odd and even keys, and one empty part.
    let mut parts = Vec::new();
    for keep in [|k: u32| k.is_multiple_of(2), |k: u32| !k.is_multiple_of(2), |_: u32| false] {
        let part = Report { rows: whole.rows.iter().copied().filter(|r| keep(r.store)).collect(), ..whole.clone() };
        let mut out = Vec::new();
        part.write_csv_part(&mut out, store_id).expect("memory");
        parts.push(out);
    }
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    let merged = merge_parts(Report::header(Horizon::NONE), &refs).expect("our own parts");
    assert_eq!(String::from_utf8_lossy(&merged), String::from_utf8_lossy(&expected));
    assert!(merge_parts(HEADER, &[b"\"open,1\n"]).is_err());
    assert!(merge_parts(HEADER, &[b"no comma\n"]).is_err());
    assert!(merge_parts(HEADER, &[b"id,1"]).is_err(), "a row without its line end");
}
