//! Ingest benchmark on a data folder (the full-size set of `tools/make_polls.py`, 1.9 M polls):
//!
//!     cargo bench -p ingest-worker --bench ingest -- /tmp/fullset
//!
//! `DATABASE_URL` names the server (default root@127.0.0.1:3306); a scratch database and a scratch copy
//! of the folder are made and removed. Prints: the first load (seconds, polls/s), a reload of unchanged
//! files, a reload after 1 % new polls were appended, and a reload after an edit in the middle of the
//! polls file (the whole-file upsert path). `RUST_LOG=info` shows the worker's own progress lines.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ingest_worker::{RunReport, Settings, load_once};
use test_support::{TempDir, TestDatabase};
use uptime_core::input::{DataFiles, FileKind};

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    // `cargo bench` passes `--bench`; the folder is the first other argument.
    let Some(source) = std::env::args().skip(1).find(|a| !a.starts_with("--")) else {
        eprintln!("usage: cargo bench -p ingest-worker --bench ingest -- <DATA_DIR>");
        std::process::exit(2);
    };
    let source = DataFiles::find(Path::new(&source)).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2);
    });
    let folder = TempDir::new();
    let polls_path = copy_into(&folder.path, &source.polls);
    for extra in [&source.hours, &source.zones].into_iter().flatten() {
        copy_into(&folder.path, extra);
    }
    let database = TestDatabase::with_prefix("rm_bench_ingest_");
    let settings = Settings::new(database.url(), folder.path.clone());
    let mut conn = database.conn();

    let (first, seconds) = timed(&settings);
    let polls = first.file(FileKind::Polls).map_or(0, |f| f.rows_loaded);
    println!(
        "first load:               {seconds:6.2} s  ({polls} polls, {:.2} M polls/s over the whole run; {})",
        polls as f64 / seconds / 1e6,
        breakdown(&first)
    );

    let (again, seconds) = timed(&settings);
    println!("reload, files unchanged:  {seconds:6.2} s  ({})", breakdown(&again));

    let appended = append_one_percent(&polls_path);
    let (grown, seconds) = timed(&settings);
    let in_db = shared_model::models::polls::count(&mut conn).expect("count the polls");
    println!(
        "reload, 1 % appended:     {seconds:6.2} s  ({appended} rows appended, {in_db} polls in the database; {})",
        breakdown(&grown)
    );
    assert_eq!(in_db, polls + appended, "every appended poll is new");

    edit_first_row(&polls_path);
    let (edited, seconds) = timed(&settings);
    println!("reload, one row edited:   {seconds:6.2} s  (whole-file upsert; {})", breakdown(&edited));
}

fn timed(settings: &Settings) -> (RunReport, f64) {
    let started = Instant::now();
    let report = load_once(settings).expect("the load runs");
    let seconds = started.elapsed().as_secs_f64();
    assert!(report.succeeded(), "every file loads: {report:?}");
    (report, seconds)
}

fn breakdown(report: &RunReport) -> String {
    report
        .files
        .iter()
        .map(|f| format!("{} {} {:.2} s", f.kind.as_str(), f.status.as_str(), f.elapsed.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn copy_into(folder: &Path, file: &Path) -> PathBuf {
    let target = folder.join(file.file_name().expect("a file name"));
    std::fs::copy(file, &target).expect("copy data file");
    target
}

/// Appends new polls for one row in a hundred: same store, a later instant than any in the file (the
/// full set ends on 2023-01-25), rows in the header's column order. The full set has no quoted fields, so
/// splitting at commas is enough here.
fn append_one_percent(path: &Path) -> u64 {
    let text = std::fs::read_to_string(path).expect("read polls");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').map(str::trim).collect();
    let column = |name: &str| header.iter().position(|h| *h == name).expect("column");
    let (store, time, status) = (column("store_id"), column("timestamp_utc"), column("status"));
    let start = chrono::NaiveDate::from_ymd_opt(2023, 1, 26).and_then(|d| d.and_hms_opt(0, 0, 0)).expect("date");
    let mut out = String::new();
    let mut added = 0u64;
    for (i, line) in lines.enumerate().filter(|(i, _)| i % 100 == 0) {
        let fields: Vec<&str> = line.split(',').collect();
        let at = start + chrono::Duration::milliseconds(i as i64 * 7);
        let mut row = vec![String::new(); header.len()];
        row[store] = fields[store].to_owned();
        row[time] = at.format("%Y-%m-%d %H:%M:%S%.6f UTC").to_string();
        row[status] = if i % 200 == 0 { "active" } else { "inactive" }.to_owned();
        out.push_str(&row.join(","));
        out.push('\n');
        added += 1;
    }
    let mut file = std::fs::OpenOptions::new().append(true).open(path).expect("open polls");
    if !text.ends_with('\n') {
        file.write_all(b"\n").expect("append");
    }
    file.write_all(out.as_bytes()).expect("append");
    added
}

/// Flips the status of the first data row, so the file no longer starts as the loaded one did.
fn edit_first_row(path: &Path) {
    let text = std::fs::read_to_string(path).expect("read polls");
    let header_end = text.find('\n').expect("header") + 1;
    let line_end = header_end + text[header_end..].find('\n').expect("a data row");
    let row = &text[header_end..line_end];
    let edited = if row.contains(",inactive") {
        row.replacen(",inactive", ",active", 1)
    } else {
        row.replacen(",active", ",inactive", 1)
    };
    std::fs::write(path, format!("{}{edited}{}", &text[..header_end], &text[line_end..])).expect("write polls");
}
