//! The ingest worker against the real MariaDB: each test has its own database and data folder.

use std::collections::BTreeMap;

use chrono::Utc;
use diesel::connection::SimpleConnection as _;
use diesel::mysql::MysqlConnection;
use ingest_worker::{RunReport, Settings, load_once, load_once_at};
use shared_model::models::loads::{self, Load, LoadStatus};
use shared_model::models::snapshots;
use uptime_core::input::FileKind;

use crate::helpers::{
    HoursRow, PollRow, TempDir, TestDatabase, ZoneRow, basic_folder, count, current_hours, current_zones, fixture,
    loaded_at, polls, store_ids,
};

fn load(settings: &Settings) -> RunReport {
    let report = load_once_at(settings, loaded_at()).expect("the run happens");
    for file in &report.files {
        assert_ne!(file.status, LoadStatus::Running);
    }
    report
}

fn status(report: &RunReport, kind: FileKind) -> LoadStatus {
    report.file(kind).expect("a report per kind").status
}

fn record(conn: &mut MysqlConnection, report: &RunReport, kind: FileKind) -> Load {
    let load_id = report.file(kind).and_then(|f| f.load_id).expect("a load record");
    loads::get(conn, load_id).expect("the record exists")
}

/// Everything a report reads, keyed by store id so snapshot ids and store keys do not matter.
#[derive(Debug, PartialEq, Eq)]
struct Contents {
    polls: Vec<PollRow>,
    stores: Vec<String>,
    hours: Vec<HoursRow>,
    zones: Vec<ZoneRow>,
}

fn contents(conn: &mut MysqlConnection) -> Contents {
    let mut stores = store_ids(conn);
    stores.sort();
    Contents { polls: polls(conn), stores, hours: current_hours(conn), zones: current_zones(conn) }
}

fn poll(store_id: &str, polled_at: &str, active: bool, load_id: u64) -> PollRow {
    PollRow { store_id: store_id.into(), polled_at: polled_at.into(), active, load_id }
}

#[test]
fn the_three_files_are_loaded_as_the_spec_reads_them() {
    let db = TestDatabase::new();
    let folder = basic_folder();
    let report = load(&Settings::new(db.url(), &folder.path));
    assert!(report.succeeded(), "{report:?}");
    let mut conn = db.conn();
    let polls_load = report.file(FileKind::Polls).and_then(|f| f.load_id).expect("load id");
    let c = contents(&mut conn);
    assert_eq!(
        c.polls,
        vec![
            poll("1001", "2023-01-24 09:00:00.123456", true, polls_load),
            poll("1001", "2023-01-24 10:00:00.000000", false, polls_load),
            // The same store and instant twice: the later row of the file won.
            poll("2002", "2023-01-24 09:30:00.500000", false, polls_load),
            poll("2002", "2023-01-24 10:30:00.250000", true, polls_load),
            poll("3003", "2023-01-23 00:00:00.000000", true, polls_load),
            poll("c0ffee00-0000-4000-8000-000000000001", "2023-01-25 18:13:22.479220", false, polls_load),
        ]
    );
    assert_eq!(c.stores, ["1001", "2002", "3003", "c0ffee00-0000-4000-8000-000000000001"]);
    let hour = |store: &str, row_no: u32, weekday: u8, start_h: i64, end_us: i64| HoursRow {
        store_id: store.into(),
        row_no,
        weekday,
        start_us: start_h * 3_600_000_000,
        end_us,
    };
    let h = 3_600_000_000;
    assert_eq!(
        c.hours,
        vec![
            hour("1001", 0, 0, 9, 17 * h),
            hour("1001", 1, 1, 9, 17 * h),
            hour("2002", 0, 6, 22, 2 * h),
            hour("2002", 1, 6, 0, 600_000_000),
            // 23:59 means the end of the day.
            hour("3003", 0, 2, 0, 24 * h),
        ]
    );
    let zones: Vec<(String, String)> = c.zones.into_iter().map(|z| (z.store_id, z.timezone_str)).collect();
    assert_eq!(
        zones,
        [("1001", "America/New_York"), ("2002", "Asia/Kolkata"), ("3003", "Mars/Olympus_Mons")]
            .map(|(s, z)| (s.to_owned(), z.to_owned()))
    );
    let polls_record = record(&mut conn, &report, FileKind::Polls);
    assert_eq!((polls_record.status.as_str(), polls_record.rows_read, polls_record.rows_loaded), ("loaded", 7, 6));
    assert_eq!(polls_record.file_name, "store_status.csv");
    assert_eq!(polls_record.file_bytes, Some(fixture("basic/store_status.csv").len() as u64));
    assert_eq!(polls_record.file_digest.as_ref().map(String::len), Some(64));
    let notes: BTreeMap<String, u64> =
        serde_json::from_str(polls_record.notes.as_deref().expect("notes")).expect("notes are JSON");
    assert_eq!(notes.get("duplicate polls (the later row won)"), Some(&1));
    assert!(polls_record.finished_at.is_some());
}

#[test]
fn loading_the_same_files_twice_leaves_the_database_as_loading_them_once() {
    let db = TestDatabase::new();
    let folder = basic_folder();
    let settings = Settings::new(db.url(), &folder.path);
    load(&settings);
    let mut conn = db.conn();
    let once = contents(&mut conn);
    let pointers_once =
        [snapshots::current(&mut conn, FileKind::Hours), snapshots::current(&mut conn, FileKind::Zones)];

    let again = load(&settings);
    for kind in [FileKind::Polls, FileKind::Hours, FileKind::Zones] {
        assert_eq!(status(&again, kind), LoadStatus::Unchanged, "{kind:?}");
    }
    assert_eq!(contents(&mut conn), once);
    let pointers_twice =
        [snapshots::current(&mut conn, FileKind::Hours), snapshots::current(&mut conn, FileKind::Zones)];
    assert_eq!(pointers_twice.map(Result::ok), pointers_once.map(Result::ok), "no new snapshot for an unchanged file");
    assert_eq!(count(&mut conn, "snapshots"), 2);
}

#[test]
fn rereading_the_same_rows_from_rewritten_files_changes_no_row() {
    let db = TestDatabase::new();
    let folder = basic_folder();
    let settings = Settings::new(db.url(), &folder.path);
    load(&settings);
    let mut conn = db.conn();
    let once = contents(&mut conn);

    // Same rows, other bytes (CRLF line ends, rows of other stores reordered): every file is read again.
    let crlf = |text: String| text.replace('\n', "\r\n");
    let mut poll_lines: Vec<String> = fixture("basic/store_status.csv").lines().map(str::to_owned).collect();
    let last = poll_lines.pop().expect("a row");
    poll_lines.insert(1, last);
    folder.write("store_status.csv", &crlf(poll_lines.join("\n") + "\n"));
    folder.write("business_hours.csv", &crlf(fixture("basic/business_hours.csv")));
    folder.write("timezones.csv", &crlf(fixture("basic/timezones.csv")));
    let again = load(&settings);
    for kind in [FileKind::Polls, FileKind::Hours, FileKind::Zones] {
        assert_eq!(status(&again, kind), LoadStatus::Loaded, "{kind:?}");
    }
    assert_eq!(contents(&mut conn), once, "load ids of unchanged polls stay those of the first load");
    assert_eq!(count(&mut conn, "snapshots"), 2, "the replaced snapshots are gone");
    assert_eq!(count(&mut conn, "business_hours"), 5);
}

#[test]
fn a_poll_takes_the_new_load_id_only_when_its_status_changes() {
    let db = TestDatabase::new();
    let folder = basic_folder();
    let settings = Settings::new(db.url(), &folder.path);
    let first = load(&settings).file(FileKind::Polls).and_then(|f| f.load_id).expect("load id");
    let text = fixture("basic/store_status.csv")
        .replace("3003,active,2023-01-23 00:00:00 UTC", "3003,inactive,2023-01-23 00:00:00 UTC");
    folder.write("store_status.csv", &format!("{text}5005,active,2023-01-25 00:00:00 UTC\n"));
    let second = load(&settings).file(FileKind::Polls).and_then(|f| f.load_id).expect("load id");
    let mut conn = db.conn();
    let changed: Vec<PollRow> = sql_changed_since(&mut conn, first);
    assert_eq!(
        changed,
        vec![
            poll("3003", "2023-01-23 00:00:00.000000", false, second),
            poll("5005", "2023-01-25 00:00:00.000000", true, second),
        ]
    );
    assert_eq!(count(&mut conn, &format!("polls WHERE load_id = {first}")), 5);
}

fn sql_changed_since(conn: &mut MysqlConnection, load_id: u64) -> Vec<PollRow> {
    polls(conn).into_iter().filter(|p| p.load_id > load_id).collect()
}

#[test]
fn a_store_dropped_from_the_hours_file_becomes_open_all_the_time() {
    let db = TestDatabase::new();
    let folder = basic_folder();
    let settings = Settings::new(db.url(), &folder.path);
    load(&settings);
    folder.write("business_hours.csv", &fixture("basic/business_hours_v2.csv"));
    let report = load(&settings);
    assert_eq!(status(&report, FileKind::Hours), LoadStatus::Loaded);
    assert_eq!(status(&report, FileKind::Polls), LoadStatus::Unchanged);
    let mut conn = db.conn();
    let hours: Vec<(String, u8)> = current_hours(&mut conn).into_iter().map(|h| (h.store_id, h.weekday)).collect();
    assert_eq!(hours, [("1001".to_owned(), 0), ("4004".to_owned(), 3)], "2002 and 3003 have no rows: 24×7");
    assert_eq!(count(&mut conn, "business_hours"), 2, "the old snapshot's rows are deleted");
    assert_eq!(count(&mut conn, "snapshots WHERE file_kind = 'hours'"), 1);
    let pointer = snapshots::current(&mut conn, FileKind::Hours).expect("pointer");
    assert_eq!(pointer.load_id, report.file(FileKind::Hours).and_then(|f| f.load_id));
}

#[test]
fn without_an_hours_or_zones_file_every_store_falls_back_to_the_defaults() {
    let db = TestDatabase::new();
    let folder = basic_folder();
    let settings = Settings::new(db.url(), &folder.path);
    load(&settings);
    folder.remove("business_hours.csv");
    folder.remove("timezones.csv");
    let report = load(&settings);
    assert!(report.succeeded());
    assert_eq!(status(&report, FileKind::Hours), LoadStatus::Loaded);
    assert_eq!(status(&report, FileKind::Zones), LoadStatus::Loaded);
    let mut conn = db.conn();
    for kind in [FileKind::Hours, FileKind::Zones] {
        assert_eq!(snapshots::current(&mut conn, kind).expect("pointer").snapshot_id, None);
    }
    assert_eq!(count(&mut conn, "business_hours") + count(&mut conn, "store_timezones"), 0);
    let hours_record = record(&mut conn, &report, FileKind::Hours);
    assert_eq!(hours_record.file_name, "(none)");
    assert!(hours_record.notes.as_deref().is_some_and(|n| n.contains("open all the time")));

    let again = load(&settings);
    assert_eq!(status(&again, FileKind::Hours), LoadStatus::Unchanged);
    folder.write("business_hours.csv", &fixture("basic/business_hours.csv"));
    let back = load(&settings);
    assert_eq!(status(&back, FileKind::Hours), LoadStatus::Loaded, "the same file as two loads ago is loaded again");
    assert_eq!(current_hours(&mut conn).len(), 5);
}

#[test]
fn a_reader_in_a_transaction_sees_the_old_snapshot_until_it_commits() {
    let db = TestDatabase::new();
    let folder = basic_folder();
    let settings = Settings::new(db.url(), &folder.path);
    load(&settings);
    let mut reader = db.conn();
    let old = current_hours(&mut reader);
    reader
        .batch_execute(
            "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ; START TRANSACTION WITH CONSISTENT SNAPSHOT",
        )
        .expect("begin");
    assert_eq!(current_hours(&mut reader), old);

    folder.write("business_hours.csv", &fixture("basic/business_hours_v2.csv"));
    assert_eq!(status(&load(&settings), FileKind::Hours), LoadStatus::Loaded);
    assert_eq!(current_hours(&mut reader), old, "the old snapshot, rows deleted since included");

    reader.batch_execute("COMMIT").expect("commit");
    let new = current_hours(&mut reader);
    assert_eq!(new.len(), 2);
    assert_ne!(new, old);
}

#[test]
fn a_file_without_a_required_column_fails_its_load_and_keeps_the_old_data() {
    let db = TestDatabase::new();
    let folder = basic_folder();
    let settings = Settings::new(db.url(), &folder.path);
    load(&settings);
    let mut conn = db.conn();
    let before = contents(&mut conn);

    folder.write("business_hours.csv", "store_id,dayOfWeek,start_time_local\n1001,0,09:00\n");
    folder.write("store_status.csv", "store_id,timestamp_utc\n1001,2023-01-24 09:00:00\n");
    let report = load(&settings);
    assert!(!report.succeeded());
    assert_eq!(status(&report, FileKind::Hours), LoadStatus::Failed);
    assert_eq!(status(&report, FileKind::Polls), LoadStatus::Failed);
    assert_eq!(status(&report, FileKind::Zones), LoadStatus::Unchanged, "the other files still load");
    let hours_record = record(&mut conn, &report, FileKind::Hours);
    assert_eq!(hours_record.status, LoadStatus::Failed);
    let error = hours_record.error.expect("an error text");
    assert!(error.contains("business_hours.csv") && error.contains("end_time_local"), "{error}");
    let polls_error = record(&mut conn, &report, FileKind::Polls).error.expect("an error text");
    assert!(polls_error.contains("status"), "{polls_error}");
    assert_eq!(contents(&mut conn), before);

    // The last good load is still what a fixed file is compared with.
    folder.write("business_hours.csv", &fixture("basic/business_hours.csv"));
    folder.write("store_status.csv", &fixture("basic/store_status.csv"));
    let fixed = load(&settings);
    assert_eq!(status(&fixed, FileKind::Hours), LoadStatus::Unchanged);
    assert_eq!(status(&fixed, FileKind::Polls), LoadStatus::Unchanged);
}

#[test]
fn an_unreadable_polls_file_fails_its_load_and_keeps_the_old_polls() {
    let db = TestDatabase::new();
    let folder = basic_folder();
    let settings = Settings::new(db.url(), &folder.path);
    load(&settings);
    let mut conn = db.conn();
    let before = contents(&mut conn);
    folder.remove("store_status.csv");
    // A link to nowhere: the folder lists the file, reading it fails.
    std::os::unix::fs::symlink(folder.path.join("gone.csv"), folder.path.join("store_status.csv")).expect("symlink");
    let report = load(&settings);
    assert_eq!(status(&report, FileKind::Polls), LoadStatus::Failed);
    assert!(report.file(FileKind::Polls).and_then(|f| f.error.as_deref()).is_some_and(|e| e.contains("cannot read")));
    assert_eq!(contents(&mut conn), before);
}

#[test]
fn a_missing_data_folder_fails_every_kind_and_resets_nothing() {
    let db = TestDatabase::new();
    let folder = basic_folder();
    load(&Settings::new(db.url(), &folder.path));
    let mut conn = db.conn();
    let before = contents(&mut conn);
    let report = load(&Settings::new(db.url(), folder.path.join("not-there")));
    assert_eq!(report.files.len(), 3);
    assert!(report.files.iter().all(|f| f.status == LoadStatus::Failed && f.error.is_some()));
    assert_eq!(contents(&mut conn), before, "hours and zones are not taken as absent");
}

fn reasons(load: &Load) -> BTreeMap<String, u64> {
    serde_json::from_str(load.rejected_by_reason.as_deref().expect("reasons")).expect("reasons are JSON")
}

fn sample_lines(load: &Load) -> Vec<(u64, String)> {
    let samples: Vec<serde_json::Value> =
        serde_json::from_str(load.sample_rejections.as_deref().expect("samples")).expect("samples are JSON");
    samples
        .iter()
        .map(|s| (s["line"].as_u64().expect("line"), s["reason"].as_str().expect("reason").to_owned()))
        .collect()
}

fn expected(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

fn lines(pairs: &[(u64, &str)]) -> Vec<(u64, String)> {
    pairs.iter().map(|(l, r)| (*l, (*r).to_owned())).collect()
}

#[test]
fn every_kind_of_bad_row_is_counted_by_reason_with_its_line() {
    let db = TestDatabase::new();
    let folder = TempDir::new();
    folder.write("store_status.csv", &fixture("rejects/store_status.csv"));
    folder.write("menu_hours.csv", &fixture("rejects/menu_hours.csv"));
    folder.write("timezones.csv", &fixture("rejects/timezones.csv"));
    let report = load(&Settings::new(db.url(), &folder.path));
    assert!(report.succeeded(), "bad rows do not fail a load");
    let mut conn = db.conn();

    let polls_record = record(&mut conn, &report, FileKind::Polls);
    assert_eq!((polls_record.rows_read, polls_record.rows_loaded, polls_record.rows_rejected), (12, 4, 7));
    assert_eq!(
        reasons(&polls_record),
        expected(&[
            ("malformed_row", 1),
            ("empty_store_id", 1),
            ("store_id_too_long", 1),
            // 2023-02-30, and the year 999 that no DATETIME holds.
            ("bad_timestamp", 2),
            ("future_timestamp", 1),
            ("bad_status", 1),
        ])
    );
    assert_eq!(
        sample_lines(&polls_record),
        lines(&[
            (3, "malformed_row"),
            (4, "empty_store_id"),
            (5, "store_id_too_long"),
            (6, "bad_timestamp"),
            (7, "future_timestamp"),
            (8, "bad_status"),
            (13, "bad_timestamp"),
        ])
    );
    let loaded = polls(&mut conn);
    let loaded: Vec<(&str, &str, bool)> =
        loaded.iter().map(|p| (p.store_id.as_str(), p.polled_at.as_str(), p.active)).collect();
    assert_eq!(
        loaded,
        [
            ("s1", "2023-01-24 09:00:00.000000", true),
            ("s2", "2023-01-24 09:10:00.000000", false),
            ("s3", "2023-01-24 09:00:00.000000", false),
            // Exactly one hour after the moment of loading is not yet "in the future".
            ("s4", "2023-01-26 01:00:00.000000", true),
        ]
    );

    let hours_record = record(&mut conn, &report, FileKind::Hours);
    assert_eq!((hours_record.rows_read, hours_record.rows_loaded, hours_record.rows_rejected), (7, 1, 6));
    assert_eq!(
        reasons(&hours_record),
        expected(&[
            ("bad_day_of_week", 1),
            ("bad_start_time", 2),
            ("bad_end_time", 1),
            ("empty_store_id", 1),
            ("malformed_row", 1),
        ])
    );
    assert_eq!(
        sample_lines(&hours_record),
        lines(&[
            (3, "bad_day_of_week"),
            (4, "bad_start_time"),
            (5, "bad_end_time"),
            (6, "empty_store_id"),
            (7, "bad_start_time"),
            (8, "malformed_row"),
        ])
    );
    assert!(hours_record.notes.as_deref().is_some_and(|n| n.contains("all rejected")), "h2 counts as 24×7");
    assert_eq!(current_hours(&mut conn).len(), 1);

    let zones_record = record(&mut conn, &report, FileKind::Zones);
    assert_eq!((zones_record.rows_read, zones_record.rows_loaded, zones_record.rows_rejected), (4, 2, 2));
    assert_eq!(reasons(&zones_record), expected(&[("empty_store_id", 1), ("malformed_row", 1)]));
    assert_eq!(sample_lines(&zones_record), lines(&[(4, "empty_store_id"), (5, "malformed_row")]));
    let notes: BTreeMap<String, u64> =
        serde_json::from_str(zones_record.notes.as_deref().expect("notes")).expect("JSON");
    assert_eq!(notes.get("unknown time zones (America/Chicago used)"), Some(&1));
    let zones: Vec<String> = current_zones(&mut conn).into_iter().map(|z| z.timezone_str).collect();
    assert_eq!(zones, ["Asia/Tokyo", "Not/A_Zone"], "an unknown zone is kept as written");
}

#[test]
fn an_appended_polls_file_is_read_from_where_the_last_load_stopped() {
    let db = TestDatabase::new();
    let folder = basic_folder();
    let settings = Settings::new(db.url(), &folder.path);
    load(&settings);
    let original = fixture("basic/store_status.csv");
    let appended = "1001,active,2023-01-25 00:00:00 UTC\n1001,sleepy,2023-01-25 01:00:00 UTC\n\
                    2002,inactive,2023-01-24 10:30:00.25 UTC\n";
    folder.write("store_status.csv", &format!("{original}{appended}"));
    let report = load(&settings);
    let mut conn = db.conn();
    let record = record(&mut conn, &report, FileKind::Polls);
    assert_eq!((record.rows_read, record.rows_loaded, record.rows_rejected), (3, 2, 1), "only the new rows are read");
    let notes: BTreeMap<String, u64> = serde_json::from_str(record.notes.as_deref().expect("notes")).expect("JSON");
    assert_eq!(notes.get("bytes loaded earlier and skipped (the file only grew)"), Some(&(original.len() as u64)));
    assert_eq!(sample_lines(&record), lines(&[(10, "bad_status")]), "line numbers count the whole file");

    // The same database as one load of the whole file gives.
    let fresh = TestDatabase::new();
    let fresh_settings = Settings::new(fresh.url(), &folder.path);
    load(&fresh_settings);
    let strip = |rows: Vec<PollRow>| -> Vec<(String, String, bool)> {
        rows.into_iter().map(|p| (p.store_id, p.polled_at, p.active)).collect()
    };
    assert_eq!(strip(polls(&mut conn)), strip(polls(&mut fresh.conn())));
    assert_eq!(count(&mut conn, "polls"), 7);
}

#[test]
fn a_load_left_running_by_a_stopped_worker_is_marked_failed_by_the_next() {
    let db = TestDatabase::new();
    let folder = basic_folder();
    let mut conn = db.conn();
    let orphan = loads::start(&mut conn, "polls", "store_status.csv", Utc::now().naive_utc()).expect("insert");
    load(&Settings::new(db.url(), &folder.path));
    let orphan = loads::get(&mut conn, orphan).expect("record");
    assert_eq!(orphan.status, LoadStatus::Failed);
    assert!(orphan.error.is_some_and(|e| e.contains("interrupted")));
    assert!(loads::all(&mut conn).expect("records").iter().all(|l| l.status != LoadStatus::Running));
}

#[test]
fn the_moment_of_loading_is_the_wall_clock_by_default() {
    let db = TestDatabase::new();
    let folder = TempDir::new();
    let soon = (Utc::now() + chrono::Duration::minutes(30)).format("%Y-%m-%d %H:%M:%S UTC");
    let later = (Utc::now() + chrono::Duration::hours(2)).format("%Y-%m-%d %H:%M:%S UTC");
    folder.write("store_status.csv", &format!("store_id,status,timestamp_utc\na,active,{soon}\na,active,{later}\n"));
    let report = load_once(&Settings::new(db.url(), &folder.path)).expect("run");
    let mut conn = db.conn();
    let record = record(&mut conn, &report, FileKind::Polls);
    assert_eq!(reasons(&record), expected(&[("future_timestamp", 1)]));
    assert_eq!(sample_lines(&record), lines(&[(3, "future_timestamp")]));
}

#[test]
fn a_file_that_is_not_csv_at_all_fails_with_an_error_short_enough_to_record() {
    let db = TestDatabase::new();
    let folder = basic_folder();
    let settings = Settings::new(db.url(), &folder.path);
    load(&settings);
    // One "header" of 100 000 bytes: the missing-column error quotes it.
    folder.write("store_status.csv", &"x".repeat(100_000));
    let report = load(&settings);
    assert_eq!(status(&report, FileKind::Polls), LoadStatus::Failed);
    let mut conn = db.conn();
    let error = record(&mut conn, &report, FileKind::Polls).error.expect("error text");
    assert!(error.contains("store_id") && error.chars().count() <= 4_001, "{} chars", error.len());
    assert_eq!(count(&mut conn, "polls"), 6);
}

#[test]
fn a_zone_name_longer_than_the_column_is_cut_and_noted() {
    let db = TestDatabase::new();
    let folder = basic_folder();
    let long = format!("Europe/{}", "é".repeat(70));
    folder.write("timezones.csv", &format!("store_id,timezone_str\n1001,{long}\n"));
    let report = load(&Settings::new(db.url(), &folder.path));
    assert_eq!(status(&report, FileKind::Zones), LoadStatus::Loaded);
    let mut conn = db.conn();
    let zones = current_zones(&mut conn);
    assert_eq!(zones.len(), 1);
    assert_eq!(zones[0].timezone_str, long.chars().take(64).collect::<String>());
    let notes = record(&mut conn, &report, FileKind::Zones).notes.expect("notes");
    assert!(notes.contains("longer than 64 characters"), "{notes}");
}

/// 1 000 stores × 120 polls: above the size from which the worker writes on several connections.
fn large_polls_file(flipped: impl Fn(usize) -> bool, reversed: bool) -> (String, Vec<(String, String, bool)>) {
    let mut rows = Vec::new();
    for store in 0..1_000usize {
        for minute in 0..120usize {
            let i = store * 120 + minute;
            let active = (i * 7919 % 13 < 9) != flipped(i);
            let at = format!("2023-01-24 {:02}:{:02}:{:02}.{:06}", minute % 24, minute / 24, store % 60, i);
            rows.push((format!("st{store:04}"), at, active));
        }
    }
    let mut text = String::from("store_id,timestamp_utc,status\n");
    let ordered: Vec<&(String, String, bool)> =
        if reversed { rows.iter().rev().collect() } else { rows.iter().collect() };
    for (store, at, active) in ordered {
        text.push_str(&format!("{store},{at} UTC,{}\n", if *active { "active" } else { "inactive" }));
    }
    rows.sort();
    (text, rows)
}

#[test]
fn a_large_polls_file_written_on_several_connections_gives_the_same_rows() {
    let db = TestDatabase::new();
    let folder = TempDir::new();
    let (text, expected_rows) = large_polls_file(|_| false, false);
    folder.write("store_status.csv", &text);
    let settings = Settings::new(db.url(), &folder.path);
    let first = load(&settings).file(FileKind::Polls).and_then(|f| f.load_id).expect("load id");
    let mut conn = db.conn();
    let strip = |rows: Vec<PollRow>| -> Vec<(String, String, bool)> {
        rows.into_iter().map(|p| (p.store_id, p.polled_at, p.active)).collect()
    };
    assert_eq!(strip(polls(&mut conn)), expected_rows);

    // The same rows in reverse order with every 240th status flipped: read whole, upserted.
    let (text, expected_rows) = large_polls_file(|i| i % 240 == 0, true);
    folder.write("store_status.csv", &text);
    let second = load(&settings).file(FileKind::Polls).and_then(|f| f.load_id).expect("load id");
    let rows = polls(&mut conn);
    assert_eq!(rows.iter().filter(|p| p.load_id == second).count(), 500, "only the flipped rows changed");
    assert_eq!(rows.iter().filter(|p| p.load_id == first).count(), 120_000 - 500);
    assert_eq!(strip(rows), expected_rows);
}
