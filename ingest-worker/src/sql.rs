//! Multi-row INSERT statements built as text. Only numbers and timestamps formatted here go into them,
//! never text from a file, so there is nothing to escape. Text goes through diesel's bound parameters.
//!
//! Why text: the server's cost per row is mostly parsing, and one statement of thousands of rows parses
//! far faster than diesel's batched inserts (measured ~0.11 M rows/s) or `LOAD DATA LOCAL INFILE`
//! (~0.18 M rows/s); see the benchmark figures in the report of the ingest work.

/// 1000-01-01 00:00:00 UTC in µs since the epoch: the earliest value of a MySQL `DATETIME`.
pub const DATETIME_MIN_MICROS: i64 = -30_610_224_000 * 1_000_000;
/// 9999-12-31 23:59:59.999999 UTC: the latest value of a MySQL `DATETIME(6)`.
pub const DATETIME_MAX_MICROS: i64 = 253_402_300_800 * 1_000_000 - 1;

use uptime_core::time::civil_from_days;

/// Builds `prefix (row),(row),… suffix` statements of at most about `max_bytes` each.
pub struct StatementBuilder<'a> {
    prefix: &'a str,
    suffix: &'a str,
    max_bytes: usize,
    sql: String,
    rows: usize,
}

impl<'a> StatementBuilder<'a> {
    pub fn new(prefix: &'a str, suffix: &'a str, max_bytes: usize) -> Self {
        Self { prefix, suffix, max_bytes, sql: String::with_capacity(max_bytes + 256), rows: 0 }
    }

    /// Starts a row: call this, then push the row's values, then [`Self::end_row`].
    pub fn begin_row(&mut self) -> &mut String {
        if self.rows == 0 {
            self.sql.clear();
            self.sql.push_str(self.prefix);
            self.sql.push('(');
        } else {
            self.sql.push_str(",(");
        }
        &mut self.sql
    }

    /// Ends a row; returns a finished statement when this one is full.
    pub fn end_row(&mut self) -> Option<&str> {
        self.sql.push(')');
        self.rows += 1;
        if self.sql.len() + self.suffix.len() >= self.max_bytes { self.finish() } else { None }
    }

    /// The statement holding the rows pushed since the last one, if any.
    pub fn finish(&mut self) -> Option<&str> {
        if self.rows == 0 {
            return None;
        }
        self.rows = 0;
        self.sql.push_str(self.suffix);
        Some(&self.sql)
    }
}

/// Appends an unsigned integer.
pub fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        out.push(d as char);
    }
}

/// Appends a signed integer.
pub fn push_i64(out: &mut String, n: i64) {
    if n < 0 {
        out.push('-');
    }
    push_u64(out, n.unsigned_abs());
}

fn push_padded(out: &mut String, n: u32, width: u32) {
    let mut div = 10u32.pow(width - 1);
    while div > 0 {
        out.push((b'0' + ((n / div) % 10) as u8) as char);
        div /= 10;
    }
}

/// Appends `'YYYY-MM-DD HH:MM:SS.ffffff'` for µs since the epoch (UTC). The value must lie within
/// [`DATETIME_MIN_MICROS`]..=[`DATETIME_MAX_MICROS`]; chrono's formatter is ten times slower and this runs
/// for every poll.
pub fn push_datetime(out: &mut String, micros: i64) {
    debug_assert!((DATETIME_MIN_MICROS..=DATETIME_MAX_MICROS).contains(&micros));
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400) as u32;
    let (year, month, day) = civil_from_days(days);
    out.push('\'');
    push_padded(out, year as u32, 4);
    out.push('-');
    push_padded(out, month, 2);
    out.push('-');
    push_padded(out, day, 2);
    out.push(' ');
    push_padded(out, of_day / 3600, 2);
    out.push(':');
    push_padded(out, of_day / 60 % 60, 2);
    out.push(':');
    push_padded(out, of_day % 60, 2);
    out.push('.');
    push_padded(out, frac, 6);
    out.push('\'');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn formatted(micros: i64) -> String {
        let mut s = String::new();
        push_datetime(&mut s, micros);
        s
    }

    #[test]
    fn datetimes_match_chrono_across_the_whole_range() {
        let mut micros = DATETIME_MIN_MICROS;
        // A step that is no round number of days, seconds or µs, so every field gets exercised.
        let step = 86_400_000_000 * 367 + 3_600_000_000 * 7 + 61_000_123;
        while micros <= DATETIME_MAX_MICROS {
            let chrono = chrono::DateTime::from_timestamp_micros(micros).expect("in range");
            assert_eq!(formatted(micros), chrono.format("'%Y-%m-%d %H:%M:%S%.6f'").to_string(), "{micros}");
            micros += step;
        }
        assert_eq!(formatted(DATETIME_MIN_MICROS), "'1000-01-01 00:00:00.000000'");
        assert_eq!(formatted(DATETIME_MAX_MICROS), "'9999-12-31 23:59:59.999999'");
        assert_eq!(formatted(-1), "'1969-12-31 23:59:59.999999'");
        assert_eq!(formatted(1_674_670_402_479_220), "'2023-01-25 18:13:22.479220'");
    }

    #[test]
    fn integers() {
        for n in [0i64, 7, -7, 10, 86_400_000_000, i64::MAX, i64::MIN] {
            let mut s = String::new();
            push_i64(&mut s, n);
            assert_eq!(s, n.to_string());
        }
    }

    #[test]
    fn statements_close_when_full_and_keep_every_row() {
        let mut b = StatementBuilder::new("INSERT INTO t VALUES ", ";", 40);
        let mut statements = Vec::new();
        for i in 0..10u64 {
            push_u64(b.begin_row(), i);
            if let Some(sql) = b.end_row() {
                statements.push(sql.to_owned());
            }
        }
        statements.extend(b.finish().map(str::to_owned));
        assert!(statements.iter().all(|s| s.starts_with("INSERT INTO t VALUES (") && s.ends_with(");")));
        let rows: usize = statements.iter().map(|s| s.matches('(').count()).sum();
        assert_eq!(rows, 10);
        assert_eq!(b.finish(), None);
    }
}
