//! Local wall time → UTC for one time zone, by the rules of SPEC §2: a local time in a gap (clocks go
//! forward) means the first instant after the gap; a local time that occurs twice (clocks go back) means
//! its first occurrence.
//!
//! chrono-tz answers one conversion at a time with a search of the whole zone history; a report needs
//! hundreds of thousands of conversions within a two-week range. So each zone's offsets are read once for
//! that range into a short list of periods, and conversions become arithmetic.

use chrono::{DateTime, Offset, TimeZone};
use chrono_tz::Tz;

use crate::time::{MICROS_PER_SECOND, Micros};

/// Offsets are sampled this often to find transitions; tzdb has no two transitions this close together.
const SAMPLE_STEP: Micros = 30 * 60 * MICROS_PER_SECOND;

/// The offsets of one zone over a range of UTC instants.
#[derive(Debug, Clone)]
pub struct ZoneTimeline {
    /// `(first instant, UTC offset)` of each period, in order. The first period reaches back without
    /// limit and the last forward without limit: conversions stay inside the range they were built for.
    periods: Vec<(Micros, Micros)>,
}

fn offset_at(tz: Tz, utc: Micros) -> Micros {
    let seconds = utc.div_euclid(MICROS_PER_SECOND);
    match DateTime::from_timestamp(seconds, 0) {
        Some(t) => i64::from(tz.offset_from_utc_datetime(&t.naive_utc()).fix().local_minus_utc()) * MICROS_PER_SECOND,
        None => 0,
    }
}

impl ZoneTimeline {
    /// Reads the offsets of `tz` between the UTC instants `from` and `to`.
    pub fn new(tz: Tz, from: Micros, to: Micros) -> Self {
        let mut periods = vec![(Micros::MIN, offset_at(tz, from))];
        let mut t = from;
        while t < to {
            let next = t + SAMPLE_STEP;
            let current = periods[periods.len() - 1].1;
            let later = offset_at(tz, next);
            if later != current {
                // Transitions fall on whole seconds: search the second at which the new offset begins.
                let (mut before, mut after) = (t / MICROS_PER_SECOND, next / MICROS_PER_SECOND);
                while after - before > 1 {
                    let mid = before + (after - before) / 2;
                    if offset_at(tz, mid * MICROS_PER_SECOND) == current {
                        before = mid;
                    } else {
                        after = mid;
                    }
                }
                periods.push((after * MICROS_PER_SECOND, later));
            }
            t = next;
        }
        Self { periods }
    }

    /// The UTC offset in force at a UTC instant.
    pub fn offset(&self, utc: Micros) -> Micros {
        match self.periods.iter().rposition(|&(start, _)| start <= utc) {
            Some(i) => self.periods[i].1,
            None => self.periods[0].1,
        }
    }

    /// Local wall time (µs since the local epoch 1970-01-01 00:00) → UTC instant, by SPEC §2's rules.
    pub fn to_utc(&self, local: Micros) -> Micros {
        let periods = &self.periods;
        if let [(_, offset)] = periods.as_slice() {
            return local - offset;
        }
        for k in 0..periods.len() {
            let (start, offset) = periods[k];
            let end = periods.get(k + 1).map_or(Micros::MAX, |p| p.0);
            let utc = local - offset;
            if utc < start {
                // Too early for this period and (by the loop) too late for the one before: the wall
                // clock skipped this time, which therefore means the first instant after the gap.
                return start;
            }
            if utc < end {
                // Periods are in order, so the first that holds the time is its first occurrence.
                return utc;
            }
        }
        // Unreachable: the last period has no end.
        local - periods[periods.len() - 1].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{LocalResult, NaiveDate, NaiveDateTime};
    use proptest::prelude::*;

    const ZONES: &[Tz] = &[
        chrono_tz::America::Chicago,
        chrono_tz::America::New_York,
        chrono_tz::America::Los_Angeles,
        chrono_tz::America::Santiago,
        chrono_tz::Europe::London,
        chrono_tz::Europe::Berlin,
        chrono_tz::Australia::Lord_Howe,
        chrono_tz::Australia::Sydney,
        chrono_tz::Asia::Kolkata,
        chrono_tz::Pacific::Chatham,
        chrono_tz::America::St_Johns,
        chrono_tz::UTC,
    ];

    /// Days after 2022-01-01 on which some zone above changes its clocks (2024 and 2025).
    const CLOCK_CHANGES: &[i64] =
        &[799, 820, 827, 981, 1002, 1009, 1030, 1037, 1163, 1184, 1191, 1345, 1366, 1373, 1394, 1401];

    fn micros(t: NaiveDateTime) -> Micros {
        t.and_utc().timestamp_micros()
    }

    /// The rules of SPEC §2 written with chrono-tz alone, slowly: the reference for the fast path.
    fn reference(tz: Tz, local: NaiveDateTime) -> Micros {
        match tz.from_local_datetime(&local) {
            LocalResult::Single(t) => t.timestamp_micros(),
            LocalResult::Ambiguous(first, _) => first.timestamp_micros(),
            LocalResult::None => {
                // Walk forward second by second to the first local time that exists: the end of the gap.
                let mut probe = local.and_utc().timestamp() + 1;
                loop {
                    let Some(t) = DateTime::from_timestamp(probe, 0) else { return 0 };
                    if let LocalResult::Single(found) | LocalResult::Ambiguous(found, _) =
                        tz.from_local_datetime(&t.naive_utc())
                    {
                        return found.timestamp_micros();
                    }
                    probe += 1;
                }
            }
        }
    }

    fn timeline_around(tz: Tz, t: NaiveDateTime) -> ZoneTimeline {
        let at = micros(t);
        ZoneTimeline::new(tz, at - 3 * 86_400 * MICROS_PER_SECOND, at + 3 * 86_400 * MICROS_PER_SECOND)
    }

    #[test]
    fn gap_maps_to_first_instant_after_it() {
        let tz = chrono_tz::America::Chicago;
        let local = NaiveDate::from_ymd_opt(2024, 3, 10).and_then(|d| d.and_hms_opt(2, 30, 0)).expect("date");
        let timeline = timeline_around(tz, local);
        // 03:00 CDT = 08:00 UTC.
        let expected = NaiveDate::from_ymd_opt(2024, 3, 10).and_then(|d| d.and_hms_opt(8, 0, 0)).expect("date");
        assert_eq!(timeline.to_utc(micros(local)), micros(expected));
    }

    #[test]
    fn fold_maps_to_first_occurrence() {
        let tz = chrono_tz::America::Chicago;
        let local = NaiveDate::from_ymd_opt(2024, 11, 3).and_then(|d| d.and_hms_opt(1, 30, 0)).expect("date");
        let timeline = timeline_around(tz, local);
        // First occurrence is 01:30 CDT = 06:30 UTC (the second would be 07:30 UTC).
        let expected = NaiveDate::from_ymd_opt(2024, 11, 3).and_then(|d| d.and_hms_opt(6, 30, 0)).expect("date");
        assert_eq!(timeline.to_utc(micros(local)), micros(expected));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn fast_conversion_equals_chrono_tz(
            zone in 0..ZONES.len(),
            day in prop_oneof![0i64..1500, prop::sample::select(CLOCK_CHANGES.to_vec())],
            second in prop_oneof![0i64..86_400, 0i64..4 * 3600],
            micro in 0i64..1_000_000,
        ) {
            let tz = ZONES[zone];
            // 2022-01-01 onwards: four years of DST rules in both hemispheres, clock-change days often.
            let local_micros = (18_993 + day) * 86_400 * MICROS_PER_SECOND + second * MICROS_PER_SECOND + micro;
            let local = DateTime::from_timestamp_micros(local_micros).expect("in range").naive_utc();
            let timeline = timeline_around(tz, local);
            let expected = reference(tz, DateTime::from_timestamp(local_micros.div_euclid(MICROS_PER_SECOND), 0).expect("in range").naive_utc());
            let in_gap = matches!(tz.from_local_datetime(&local), LocalResult::None);
            let got = timeline.to_utc(local_micros);
            if in_gap {
                prop_assert_eq!(got, expected);
            } else {
                prop_assert_eq!(got, expected + micro);
            }
        }
    }
}
