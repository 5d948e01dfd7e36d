//! The offline CLI, run as a user runs it: `report-worker compute --data <DIR> [--out <FILE>]`.

use std::path::Path;
use std::process::{Command, Output};

use test_support::TempDir;

use crate::helpers::fixture;

fn compute(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_report-worker")).arg("compute").args(args).output().expect("runs the binary")
}

fn assert_report_equals_expected(name: &str) {
    assert_report_with_args_equals_expected(name, &[]);
}

fn assert_report_with_args_equals_expected(name: &str, args: &[&str]) {
    let dir = fixture(name);
    let mut all = vec!["--data", dir.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    let out = compute(&all);
    assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    let expected = std::fs::read_to_string(dir.join("expected_report.csv")).expect("expected report");
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected, "{name}");
}

#[test]
fn worked_example_report_is_byte_for_byte() {
    assert_report_equals_expected("worked-example");
}

#[test]
fn overnight_shift_across_a_clock_change_with_real_file_names() {
    // menu_hours.csv with `day` and a BOM, bq-results-*.csv zones, CRLF polls in store_id,status,timestamp order.
    assert_report_equals_expected("overnight-across-dst");
}

#[test]
fn defaults_and_bad_rows_report_and_summary() {
    assert_report_equals_expected("defaults-and-bad-rows");
    let out = compute(&["--data", fixture("defaults-and-bad-rows").to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "store_status.csv: 15 rows, 9 accepted, 6 rejected (malformed_row 1, empty_store_id 1, bad_timestamp 2, future_timestamp 1, bad_status 1)",
        "duplicate polls (the later row won): 1",
        "line 16: malformed_row (\"active,x\")",
        "business_hours.csv: 6 rows, 3 accepted, 3 rejected (bad_day_of_week 1, bad_start_time 1, bad_end_time 1)",
        "unknown time zones (America/Chicago used): 1",
    ] {
        assert!(stderr.contains(expected), "stderr lacks {expected:?}:\n{stderr}");
    }
}

#[test]
fn gap_horizon_adds_the_unknown_columns_worked_out_by_hand() {
    // The expected figures are derived in the fixture's README.md.
    assert_report_with_args_equals_expected("gap-horizon-30", &["--unknown-after", "30"]);
}

#[test]
fn gap_horizon_outside_one_minute_to_a_day_is_refused() {
    let dir = fixture("gap-horizon-30");
    let help = compute(&["--help"]);
    assert!(help.status.success() && String::from_utf8_lossy(&help.stdout).contains("--unknown-after"));
    for bad in ["0", "1441", "sixty", "-5"] {
        let out = compute(&["--data", dir.to_str().expect("utf-8"), "--unknown-after", bad]);
        assert_eq!(out.status.code(), Some(2), "--unknown-after {bad}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("1 to 1440"));
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn out_file_gets_the_same_report() {
    let scratch = TempDir::new();
    let dir = scratch.path.clone();
    let out_file = dir.join("report.csv");
    let out = compute(&[
        "--data",
        fixture("worked-example").to_str().expect("utf-8"),
        "--out",
        out_file.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty(), "nothing on stdout with --out");
    let expected = std::fs::read_to_string(fixture("worked-example").join("expected_report.csv")).expect("expected");
    assert_eq!(std::fs::read_to_string(&out_file).expect("written"), expected);
}

fn assert_fails_cleanly(data: &Path, message_part: &str) {
    let scratch = TempDir::new();
    let dir = scratch.path.clone();
    let out_file = dir.join("report.csv");
    let out = compute(&["--data", data.to_str().expect("utf-8"), "--out", out_file.to_str().expect("utf-8")]);
    assert!(!out.status.success(), "must fail for {}", data.display());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(message_part), "{stderr:?} should mention {message_part:?}");
    assert!(!out_file.exists(), "no partial output");
    assert_eq!(std::fs::read_dir(&dir).expect("dir").count(), 0, "no temporary file left behind");
}

#[test]
fn missing_folder_is_a_one_line_error() {
    assert_fails_cleanly(Path::new("/nonexistent/restaurant-monitor-data"), "restaurant-monitor-data: no such folder");
}

#[test]
fn missing_polls_file_is_a_one_line_error() {
    let scratch = TempDir::new();
    let dir = scratch.path.clone();
    std::fs::write(dir.join("timezones.csv"), "store_id,timezone_str\n").expect("write");
    assert_fails_cleanly(&dir, "no polls file");
}

#[test]
fn file_without_a_required_column_is_a_one_line_error() {
    let scratch = TempDir::new();
    let dir = scratch.path.clone();
    std::fs::write(dir.join("store_status.csv"), "store_id,timestamp_utc\nx,2024-01-01 00:00:00\n").expect("write");
    assert_fails_cleanly(&dir, "store_status.csv: missing required column \"status\"");
    std::fs::write(dir.join("store_status.csv"), "store_id,timestamp_utc,status\nx,2024-01-01 00:00:00,active\n")
        .expect("write");
    std::fs::write(dir.join("menu_hours.csv"), "store_id,day,start_time_local\n").expect("write");
    assert_fails_cleanly(&dir, "menu_hours.csv: missing required column \"end_time_local\"");
}

#[test]
fn absent_hours_and_zones_files_are_warnings_not_errors() {
    let scratch = TempDir::new();
    let dir = scratch.path.clone();
    std::fs::write(dir.join("store_status.csv"), "store_id,timestamp_utc,status\nx,2024-01-01 00:00:00,inactive\n")
        .expect("write");
    let out = compute(&["--data", dir.to_str().expect("utf-8")]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no business hours file: every store is open all the time"), "{stderr}");
    assert!(stderr.contains("no time zone file: every store is in America/Chicago"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("\nx,0.00,0.00,0.00,60.00,24.00,168.00\n"));
}
