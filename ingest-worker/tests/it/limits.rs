//! What a load never does, whatever the folder holds: read more than `ingest.max_file_bytes`, block on
//! an entry that is not a regular file, or keep polls past the retention window.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::Duration;

use chrono::{DateTime, TimeZone as _, Utc};
use ingest_worker::load::NOTE_EXPIRED_DELETED;
use ingest_worker::{RunReport, Settings, load_once_at};
use shared_model::models::loads::{self, LoadStatus};
use uptime_core::input::{FileKind, NOTE_OLDER_THAN_RETENTION};

use crate::helpers::{TestDatabase, basic_folder, count, current_hours, current_zones, loaded_at, polls};

fn run(settings: &Settings, at: DateTime<Utc>) -> RunReport {
    load_once_at(settings, at).expect("the run happens")
}

fn file(report: &RunReport, kind: FileKind) -> &ingest_worker::FileReport {
    report.file(kind).expect("a report per kind")
}

fn notes(db: &TestDatabase, report: &RunReport) -> BTreeMap<String, u64> {
    let load_id = file(report, FileKind::Polls).load_id.expect("a record");
    let record = loads::get(&mut db.conn(), load_id).expect("the record");
    record.notes.as_deref().map(|n| serde_json::from_str(n).expect("JSON notes")).unwrap_or_default()
}

fn mkfifo(path: &std::path::Path) {
    let made = std::process::Command::new("mkfifo").arg(path).status().expect("mkfifo runs");
    assert!(made.success(), "mkfifo {}", path.display());
}

#[test]
fn a_file_over_max_file_bytes_fails_its_load_unread_and_keeps_the_previous_data() {
    let db = TestDatabase::new();
    let folder = basic_folder();
    let mut settings = Settings::new(db.url(), &folder.path);
    assert!(run(&settings, loaded_at()).succeeded());
    let mut conn = db.conn();
    let (polls_before, hours_before) = (polls(&mut conn), current_hours(&mut conn));

    let mut grown = std::fs::read_to_string(folder.path.join("store_status.csv")).expect("fixture");
    grown.push_str("1001,inactive,2023-01-25 05:00:00 UTC\n");
    folder.write("store_status.csv", &grown);
    folder.write("business_hours.csv", "store_id,dayOfWeek,start_time_local,end_time_local\n1001,0,09:00,10:00\n");
    settings.ingest.max_file_bytes = 40;
    let report = run(&settings, loaded_at());
    for kind in [FileKind::Polls, FileKind::Hours] {
        let loaded = file(&report, kind);
        assert_eq!(loaded.status, LoadStatus::Failed, "{kind:?}");
        let error = loaded.error.as_deref().expect("a reason");
        assert!(error.contains("over the limit of 40 bytes (ingest.max_file_bytes)"), "{error}");
    }
    assert_eq!(polls(&mut conn), polls_before);
    assert_eq!(current_hours(&mut conn), hours_before);

    settings.ingest.max_file_bytes = 4 << 30;
    let report = run(&settings, loaded_at());
    assert!(report.succeeded(), "{report:?}");
    assert_eq!(polls(&mut conn).len(), polls_before.len() + 1, "within the limit the file loads");
}

#[test]
fn a_fifo_or_a_directory_named_like_a_data_file_fails_its_load_at_once() {
    let db = TestDatabase::new();
    let folder = basic_folder();
    let settings = Settings::new(db.url(), &folder.path);
    assert!(run(&settings, loaded_at()).succeeded());
    let mut conn = db.conn();
    let (polls_before, hours_before, zones_before) =
        (polls(&mut conn), current_hours(&mut conn), current_zones(&mut conn));
    assert!(!hours_before.is_empty() && !zones_before.is_empty());

    folder.remove("store_status.csv");
    mkfifo(&folder.path.join("store_status.csv"));
    folder.remove("business_hours.csv");
    mkfifo(&folder.path.join("business_hours.csv"));
    folder.remove("timezones.csv");
    std::fs::create_dir(folder.path.join("timezones.csv")).expect("a directory");

    // Opening a FIFO blocks until a writer comes: run the load on a thread, so a hang fails the test.
    let (done, finished) = mpsc::channel();
    let thread_settings = settings.clone();
    std::thread::spawn(move || {
        let _ = done.send(load_once_at(&thread_settings, loaded_at()));
    });
    let report = finished.recv_timeout(Duration::from_secs(120)).expect("the load ends: nothing blocks").expect("run");
    for (kind, what) in [(FileKind::Polls, "a FIFO"), (FileKind::Hours, "a FIFO"), (FileKind::Zones, "a directory")] {
        let loaded = file(&report, kind);
        assert_eq!(loaded.status, LoadStatus::Failed, "{kind:?}");
        let error = loaded.error.as_deref().expect("a reason");
        assert!(error.contains(&format!("not a regular file but {what}")), "{kind:?}: {error}");
    }
    assert_eq!(polls(&mut conn), polls_before);
    assert_eq!(current_hours(&mut conn), hours_before, "a FIFO is not taken for a missing hours file");
    assert_eq!(current_zones(&mut conn), zones_before);
}

#[test]
fn polls_past_the_retention_window_are_skipped_then_deleted_at_the_exact_boundary() {
    let db = TestDatabase::new();
    let folder = basic_folder();
    let settings = Settings::new(db.url(), &folder.path);
    assert_eq!(settings.ingest.retention_days, 14);
    // The newest poll is 2023-01-25 12:00; 14 days before it is 2023-01-11 12:00.
    let first = "store_id,status,timestamp_utc\n\
                 a,active,2023-01-25 12:00:00\n\
                 a,active,2023-01-11 12:00:00\n\
                 a,inactive,2023-01-11 11:59:59.999999\n\
                 b,active,2023-01-12 12:00:00\n\
                 b,inactive,2023-01-12 11:59:59.999999\n\
                 c,active,2023-01-01 00:00:00\n";
    folder.write("store_status.csv", first);
    let report = run(&settings, loaded_at());
    assert!(report.succeeded(), "{report:?}");
    let mut conn = db.conn();
    let kept: Vec<(String, String)> = polls(&mut conn).into_iter().map(|p| (p.store_id, p.polled_at)).collect();
    assert_eq!(
        kept,
        [
            ("a", "2023-01-11 12:00:00.000000"),
            ("a", "2023-01-25 12:00:00.000000"),
            ("b", "2023-01-12 11:59:59.999999"),
            ("b", "2023-01-12 12:00:00.000000"),
        ]
        .map(|(s, t)| (s.to_owned(), t.to_owned()))
    );
    // One partition per day from the oldest poll kept to two days past the newest.
    let days = |conn: &mut diesel::MysqlConnection| {
        let days = shared_model::models::polls::day_partitions(conn).expect("partitions");
        days.iter().map(|&d| uptime_core::time::civil_from_days(d)).collect::<Vec<_>>()
    };
    let first_days = days(&mut conn);
    assert_eq!(first_days.first(), Some(&(2023, 1, 11)));
    assert_eq!(first_days.last(), Some(&(2023, 1, 27)));
    assert_eq!(first_days.len(), 17, "{first_days:?}");
    let first_notes = notes(&db, &report);
    assert_eq!(first_notes.get(NOTE_OLDER_THAN_RETENTION), Some(&2), "{first_notes:?}");
    assert_eq!(first_notes.get(NOTE_EXPIRED_DELETED), None, "nothing in the table was old yet");
    let polls_record = file(&report, FileKind::Polls);
    assert_eq!((polls_record.rows_read, polls_record.rows_loaded, polls_record.rows_rejected), (6, 4, 0));

    // A day later the window ends at 2023-01-26 12:00: 2023-01-12 12:00 is exactly at its start and
    // stays, a microsecond older goes, and so does what was older still.
    folder.write("store_status.csv", &format!("{first}a,active,2023-01-26 12:00:00\n"));
    let later = Utc.with_ymd_and_hms(2023, 1, 27, 0, 0, 0).single().expect("valid date");
    let report = run(&settings, later);
    assert!(report.succeeded(), "{report:?}");
    let kept: Vec<(String, String)> = polls(&mut conn).into_iter().map(|p| (p.store_id, p.polled_at)).collect();
    assert_eq!(
        kept,
        [("a", "2023-01-25 12:00:00.000000"), ("a", "2023-01-26 12:00:00.000000"), ("b", "2023-01-12 12:00:00.000000")]
            .map(|(s, t)| (s.to_owned(), t.to_owned()))
    );
    let second_notes = notes(&db, &report);
    // One of the two went with its whole day's partition, the other row by row from the cutoff's day.
    assert_eq!(second_notes.get(NOTE_EXPIRED_DELETED), Some(&2), "{second_notes:?}");
    let second_days = days(&mut conn);
    assert_eq!(second_days.first(), Some(&(2023, 1, 12)), "the 11th's partition is gone");
    assert_eq!(second_days.last(), Some(&(2023, 1, 28)), "the 28th's was added for the new newest day");
    assert!(second_notes.contains_key("bytes loaded earlier and skipped (the file only grew)"), "{second_notes:?}");

    // An unchanged file still ages nothing further, and says so by saying nothing.
    let report = run(&settings, later);
    assert_eq!(file(&report, FileKind::Polls).status, LoadStatus::Unchanged);
    assert_eq!(notes(&db, &report).get(NOTE_EXPIRED_DELETED), None);
    assert_eq!(count(&mut conn, "polls"), 3);
}

#[test]
fn the_retention_delete_goes_in_small_batches_and_keeps_the_boundary() {
    let db = TestDatabase::new();
    let mut conn = db.conn();
    let folder = basic_folder();
    let mut text = String::from("store_id,status,timestamp_utc\n");
    for i in 0..25 {
        text.push_str(&format!("s{i},active,2023-01-20 00:00:{i:02}\n"));
    }
    folder.write("store_status.csv", &text);
    assert!(run(&Settings::new(db.url(), &folder.path), loaded_at()).succeeded());
    let cutoff = Utc.with_ymd_and_hms(2023, 1, 20, 0, 0, 10).single().expect("valid date").timestamp_micros();
    let deleted = shared_model::models::polls::delete_polled_before(&mut conn, cutoff, 3).expect("delete");
    assert_eq!(deleted, 10, "ten polls were before 00:00:10, deleted three at a time");
    assert_eq!(count(&mut conn, "polls"), 15);
    assert_eq!(count(&mut conn, "polls WHERE polled_at = '2023-01-20 00:00:10'"), 1, "the boundary stays");
    assert_eq!(
        shared_model::models::polls::newest_polled_at(&mut conn).expect("newest"),
        Some(cutoff + 14 * 1_000_000)
    );
}

#[test]
fn a_polls_file_of_several_pieces_loads_with_whole_file_line_numbers_and_the_later_row_winning() {
    const ROWS: usize = 420_000;
    let db = TestDatabase::new();
    let folder = basic_folder();
    let start = Utc.with_ymd_and_hms(2023, 1, 20, 0, 0, 0).single().expect("valid date");
    let bad = [100_000usize, 200_000, 300_000];
    let mut text = String::from("store_id,timestamp_utc,status\n");
    for i in 0..ROWS {
        let at = (start + chrono::Duration::seconds(i as i64)).format("%Y-%m-%d %H:%M:%S");
        let status = if bad.contains(&i) {
            "sleepy"
        } else if i % 3 == 0 {
            "inactive"
        } else {
            "active"
        };
        text.push_str(&format!("store-{:04},{at} UTC,{status}\n", i % 2_000));
    }
    // Row 5 again, last in the file and pieces away from the first: it wins.
    text.push_str("store-0005,2023-01-20 00:00:05 UTC,inactive\n");
    assert!(text.len() > 2 * uptime_core::input::STREAM_CHUNK_BYTES, "the file spans several pieces");
    folder.write("store_status.csv", &text);
    let report = run(&Settings::new(db.url(), &folder.path), loaded_at());
    assert!(report.succeeded(), "{report:?}");

    let polls_report = file(&report, FileKind::Polls);
    assert_eq!(
        (polls_report.rows_read, polls_report.rows_loaded, polls_report.rows_rejected),
        (ROWS as u64 + 1, (ROWS - bad.len()) as u64, bad.len() as u64)
    );
    let summary = polls_report.summary.as_ref().expect("parsed");
    let lines: Vec<u64> = summary.samples.iter().map(|s| s.line).collect();
    assert_eq!(lines, bad.map(|i| i as u64 + 2), "line numbers of the whole file");
    assert_eq!(summary.notes.get("duplicate polls (the later row won)"), Some(&1));
    let mut conn = db.conn();
    assert_eq!(count(&mut conn, "polls"), (ROWS - bad.len()) as i64);
    assert_eq!(count(&mut conn, "polls WHERE polled_at = '2023-01-20 00:00:05' AND active = 0"), 1, "the later row");
}
