//! Instants and lengths as integer microseconds, the one unit of the readers, the engine and the stores
//! of the services, and the civil-date arithmetic that turns them into calendar dates and back without
//! building a chrono value for each of millions of polls.

/// Microseconds since the Unix epoch (instants) or a length in microseconds.
pub type Micros = i64;

pub const MICROS_PER_SECOND: Micros = 1_000_000;
pub const MINUTE: Micros = 60 * MICROS_PER_SECOND;
pub const HOUR: Micros = 60 * MINUTE;
pub const DAY: Micros = 24 * HOUR;
pub const WEEK: Micros = 7 * DAY;

/// (year, month, day) of the proleptic Gregorian calendar → days since 1970-01-01
/// (H. Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (month, day) = (i64::from(month), i64::from(day));
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Formats microseconds since the epoch as `YYYY-MM-DD HH:MM:SS.ffffff UTC`, for messages and the CLI.
pub fn format_micros(micros: Micros) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map_or_else(|| format!("{micros} µs"), |t| t.format("%Y-%m-%d %H:%M:%S%.6f UTC").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip_and_agree_with_chrono() {
        for days in (-719_162..=2_932_896).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
            let expected = chrono::DateTime::from_timestamp(days * 86_400, 0).expect("in range").date_naive();
            assert_eq!(
                (y, m, d),
                (
                    i64::from(chrono::Datelike::year(&expected)),
                    chrono::Datelike::month(&expected),
                    chrono::Datelike::day(&expected)
                )
            );
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
    }

    #[test]
    fn instants_are_formatted_to_the_microsecond() {
        assert_eq!(format_micros(1_674_670_402_479_220), "2023-01-25 18:13:22.479220 UTC");
    }
}
