//! One load run: take the ingest lock, find the files, and load each of the three (SPEC §4).
//!
//! Each file is its own load with its own record in `loads`. A file that cannot be read or lacks a
//! required column fails its load (recorded `failed`, the previous data of that kind untouched) and the
//! other files are still loaded. An unchanged file (same size and SHA-256 as the last successful load of
//! its kind) is recorded `unchanged` and not parsed.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel::mysql::MysqlConnection;
use log::{error, info, warn};
use shared_model::db::{self, NamedLock};
use shared_model::models::loads::{self, LoadStatus};
use shared_model::models::polls as polls_table;
use uptime_core::input::{DataFiles, FileKind, FileSummary, InputError, open_regular};

use crate::digest::FileDigest;
use crate::error::{FileError, IngestError};
pub use crate::record::NO_FILE;
use crate::record::{LoadRun, LoadedFile, end_failed, end_now, json_column};
use crate::settings::Settings;
use crate::{polls, snapshot};

/// Named so an operator who sees it in `SHOW PROCESSLIST` knows what holds it. A second worker waits for
/// it (up to `ingest_lock_wait_seconds`) and then finds the files unchanged, so two workers never write at
/// once and never load the same file twice.
pub const INGEST_LOCK: &str = "ingest";

/// What happened to one file.
#[derive(Debug, Clone)]
pub struct FileReport {
    pub kind: FileKind,
    /// The file's name, or [`NO_FILE`] when the folder has no file of this kind.
    pub file_name: String,
    /// The record in `loads`.
    pub load_id: Option<u64>,
    pub status: LoadStatus,
    pub rows_read: u64,
    pub rows_loaded: u64,
    pub rows_rejected: u64,
    /// The reader's account of the rows, when the file was parsed.
    pub summary: Option<FileSummary>,
    pub error: Option<String>,
    pub elapsed: Duration,
}

/// What happened in one run: one report per kind, polls first.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The moment of loading: polls stamped more than an hour after it were rejected.
    pub loaded_at: DateTime<Utc>,
    pub files: Vec<FileReport>,
}

impl RunReport {
    /// No file failed.
    pub fn succeeded(&self) -> bool {
        self.files.iter().all(|f| f.status != LoadStatus::Failed)
    }

    pub fn file(&self, kind: FileKind) -> Option<&FileReport> {
        self.files.iter().find(|f| f.kind == kind)
    }
}

/// Loads the files of `settings.data_dir` once. The moment of loading is the wall clock when the lock is
/// taken. `Err` means the run could not happen at all (no database, lock not obtained); a file that failed
/// is in the report with status `Failed`.
pub fn load_once(settings: &Settings) -> Result<RunReport, IngestError> {
    run(settings, None)
}

/// [`load_once`] with a given moment of loading (tests of the future-poll rule).
pub fn load_once_at(settings: &Settings, loaded_at: DateTime<Utc>) -> Result<RunReport, IngestError> {
    run(settings, Some(loaded_at))
}

fn run(settings: &Settings, loaded_at: Option<DateTime<Utc>>) -> Result<RunReport, IngestError> {
    let mut conn = db::connect(&settings.database.url)?;
    let lock = acquire_lock(&mut conn, settings.ingest_lock_wait_seconds)?;
    let loaded_at = loaded_at.unwrap_or_else(Utc::now);
    let result = run_locked(settings, &mut conn, loaded_at);
    if let Err(e) = lock.release(&mut conn) {
        // The lock goes with the connection, which is closed right after this anyway.
        warn!("cannot release the ingest lock: {e}");
    }
    result
}

fn acquire_lock(conn: &mut MysqlConnection, wait_seconds: u64) -> Result<NamedLock, IngestError> {
    if let Some(lock) = NamedLock::acquire_for_database(conn, INGEST_LOCK, 0)? {
        return Ok(lock);
    }
    info!("another ingest worker is loading this database; waiting up to {wait_seconds} s for it to finish");
    NamedLock::acquire_for_database(conn, INGEST_LOCK, wait_seconds)?
        .ok_or(IngestError::LockTimeout { lock: INGEST_LOCK, seconds: wait_seconds })
}

fn run_locked(
    settings: &Settings,
    conn: &mut MysqlConnection,
    loaded_at: DateTime<Utc>,
) -> Result<RunReport, IngestError> {
    let interrupted = loads::fail_interrupted(conn, Utc::now().naive_utc())?;
    if interrupted > 0 {
        warn!("{interrupted} load(s) left 'running' by a worker that stopped are now marked failed");
    }
    polls::clear_stale_staging(conn)?;
    let mut report = RunReport { loaded_at, files: Vec::with_capacity(3) };
    let files = match DataFiles::find(&settings.data_dir) {
        Ok(files) => files,
        Err(e) => {
            // Without the folder's listing nothing can be told about any kind: all three fail, and a
            // missing hours or zones file is not taken to mean "no file" (that would reset them).
            let message = bounded(e.to_string());
            error!("{message}; nothing loaded, previous data kept");
            let folder = settings.data_dir.display().to_string();
            for kind in [FileKind::Polls, FileKind::Hours, FileKind::Zones] {
                let started = Instant::now();
                let load_id = loads::start(conn, kind.as_str(), &folder, Utc::now().naive_utc())?;
                loads::finish(conn, load_id, &end_failed(&message, None))?;
                report.files.push(FileReport::failed(kind, folder.clone(), load_id, message.clone(), started));
            }
            return Ok(report);
        }
    };
    let mut run = LoadRun::new(settings, conn, loaded_at);
    report.files.push(load_file(&mut run, FileKind::Polls, &files.polls)?);
    report.files.push(match &files.hours {
        Some(path) => load_file(&mut run, FileKind::Hours, path)?,
        None => load_absent(&mut run, FileKind::Hours)?,
    });
    report.files.push(match &files.zones {
        Some(path) => load_file(&mut run, FileKind::Zones, path)?,
        None => load_absent(&mut run, FileKind::Zones)?,
    });
    Ok(report)
}

fn load_absent(run: &mut LoadRun<'_>, kind: FileKind) -> Result<FileReport, IngestError> {
    let started = Instant::now();
    let (load_id, loaded) = snapshot::absent(run, kind)?;
    Ok(FileReport::loaded(kind, NO_FILE.into(), load_id, loaded, started))
}

fn load_file(run: &mut LoadRun<'_>, kind: FileKind, path: &Path) -> Result<FileReport, IngestError> {
    let started = Instant::now();
    let file_name = display_name(path);
    let load_id = loads::start(run.conn, kind.as_str(), &file_name, Utc::now().naive_utc())?;
    info!("load_id={load_id} {} {file_name}: started", kind.as_str());
    let mut digest = None;
    let outcome = load_present(run, kind, path, load_id, &mut digest);
    match outcome {
        Ok(mut loaded) => {
            if kind == FileKind::Polls {
                let deleted = expire_polls(run, load_id)?;
                if deleted > 0 {
                    loaded.end.notes = with_note(loaded.end.notes.as_deref(), NOTE_EXPIRED_DELETED, deleted);
                    loads::finish(run.conn, load_id, &loaded.end)?;
                    if let Some(summary) = loaded.summary.as_mut() {
                        summary.note(NOTE_EXPIRED_DELETED, deleted);
                    }
                }
            }
            let report = FileReport::loaded(kind, file_name, load_id, loaded, started);
            info!(
                "load_id={load_id} {} {}: {} in {:.2} s{}",
                kind.as_str(),
                report.file_name,
                report.status.as_str(),
                report.elapsed.as_secs_f64(),
                report.summary.as_ref().map(|s| format!(" ({s})")).unwrap_or_default()
            );
            Ok(report)
        }
        Err(e) => {
            run.forget_store_keys();
            let message = bounded(e.to_string());
            let mut end = end_failed(&message, digest.as_ref());
            if kind == FileKind::Polls {
                // What the table already holds still ages, whatever became of this file.
                let deleted = expire_polls(run, load_id)?;
                if deleted > 0 {
                    end.notes = with_note(end.notes.as_deref(), NOTE_EXPIRED_DELETED, deleted);
                }
            }
            loads::finish(run.conn, load_id, &end)?;
            error!("load_id={load_id} {} {file_name}: failed, previous data kept: {message}", kind.as_str());
            Ok(FileReport::failed(kind, file_name, load_id, message, started))
        }
    }
}

/// The note in the polls load record counting the polls its run deleted for retention.
pub const NOTE_EXPIRED_DELETED: &str = "polls older than the retention window (deleted from the table)";

/// Deletes the polls older than the retention window before the newest poll of the table. The window
/// ends at the newest poll rather than the wall clock: the data sets are static (SPEC §2's `now` is the
/// newest poll), and a report needs the 8 days before that whatever the date is.
fn expire_polls(run: &mut LoadRun<'_>, load_id: u64) -> Result<u64, IngestError> {
    let Some(newest) = polls_table::newest_polled_at(run.conn)? else { return Ok(0) };
    let cutoff = newest.saturating_sub(run.settings.retention_micros());
    let started = Instant::now();
    // Whole days go at once; only the cutoff's own day (or, if the DDL cannot run now, every old day)
    // is deleted row by row.
    let dropped = polls_table::drop_day_partitions_before(run.conn, cutoff, polls::DDL_LOCK_WAIT_SECONDS)
        .unwrap_or_else(|e| {
            warn!("load_id={load_id} polls: cannot drop expired day partitions now ({e}); deleting row by row");
            0
        });
    let deleted = dropped + polls_table::delete_polled_before(run.conn, cutoff, polls_table::RETENTION_DELETE_BATCH)?;
    if deleted > 0 {
        info!(
            "load_id={load_id} polls: deleted {deleted} polls older than {} days before the newest poll in {:.2} s",
            run.settings.ingest.retention_days,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(deleted)
}

/// A record's notes (a JSON object, or nothing yet) with one more count.
fn with_note(notes: Option<&str>, what: &str, count: u64) -> Option<String> {
    let mut object: serde_json::Map<String, serde_json::Value> =
        notes.and_then(|text| serde_json::from_str(text).ok()).unwrap_or_default();
    object.insert(what.to_owned(), count.into());
    json_column(&object)
}

fn load_present(
    run: &mut LoadRun<'_>,
    kind: FileKind,
    path: &Path,
    load_id: u64,
    digest_out: &mut Option<FileDigest>,
) -> Result<LoadedFile, FileError> {
    let unreadable = |source| InputError::Unreadable { file: path.to_owned(), source };
    // Checked before opening: a FIFO would block the open, a device might never end.
    let (mut file, len) = open_regular(path)?;
    let limit = run.settings.ingest.max_file_bytes;
    if len > limit {
        return Err(InputError::TooLarge { file: path.to_owned(), bytes: len, limit }.into());
    }
    let previous = loads::last_successful(run.conn, kind.as_str())?;
    // Only the polls file is ever appended to, so only its prefix is worth comparing.
    let prefix_len = previous.as_ref().filter(|_| kind == FileKind::Polls).and_then(|p| p.file_bytes);
    // Only the `len` bytes seen now: a file still being appended to is read to the same end by the
    // parse below, and the rest is the next run's appended part.
    let digest = FileDigest::of_reader((&mut file).take(len), prefix_len).map_err(unreadable)?;
    let digest = digest_out.insert(digest);
    if let Some(previous) = previous.as_ref().filter(|p| digest.same_as(p.file_bytes, p.file_digest.as_deref())) {
        let mut end = end_now(LoadStatus::Unchanged, Some(digest));
        end.notes =
            json_column(&std::collections::BTreeMap::from([("same size and digest as load_id", previous.load_id)]));
        loads::finish(run.conn, load_id, &end)?;
        return Ok(LoadedFile { status: LoadStatus::Unchanged, end, summary: None });
    }
    let digest = digest.clone();
    match kind {
        FileKind::Polls => polls::load(run, path, &mut file, &digest, previous.as_ref(), load_id),
        FileKind::Hours => snapshot::load_hours(run, path, &read_whole(path, &mut file, &digest)?, &digest, load_id),
        FileKind::Zones => snapshot::load_zones(run, path, &read_whole(path, &mut file, &digest)?, &digest, load_id),
    }
}

/// The bytes that were digested. Hours and zones are small (a few rows per store) and their loaders
/// take bytes.
fn read_whole(path: &Path, file: &mut std::fs::File, digest: &FileDigest) -> Result<Vec<u8>, InputError> {
    let unreadable = |source| InputError::Unreadable { file: path.to_owned(), source };
    file.seek(SeekFrom::Start(0)).map_err(unreadable)?;
    let mut bytes = Vec::with_capacity(usize::try_from(digest.bytes).unwrap_or(0));
    file.take(digest.bytes).read_to_end(&mut bytes).map_err(unreadable)?;
    Ok(bytes)
}

impl FileReport {
    fn loaded(kind: FileKind, file_name: String, load_id: u64, loaded: LoadedFile, started: Instant) -> Self {
        FileReport {
            kind,
            file_name,
            load_id: Some(load_id),
            status: loaded.status,
            rows_read: loaded.end.rows_read,
            rows_loaded: loaded.end.rows_loaded,
            rows_rejected: loaded.end.rows_rejected,
            summary: loaded.summary,
            error: None,
            elapsed: started.elapsed(),
        }
    }

    fn failed(kind: FileKind, file_name: String, load_id: u64, error: String, started: Instant) -> Self {
        FileReport {
            kind,
            file_name,
            load_id: Some(load_id),
            status: LoadStatus::Failed,
            rows_read: 0,
            rows_loaded: 0,
            rows_rejected: 0,
            summary: None,
            error: Some(error),
            elapsed: started.elapsed(),
        }
    }
}

/// Error texts quote the header row, which for a file that is not CSV at all can be the whole file; the
/// column is a TEXT (64 KiB).
const ERROR_MAX_CHARS: usize = 4_000;

fn bounded(error: String) -> String {
    match error.char_indices().nth(ERROR_MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &error[..cut]),
        None => error,
    }
}

fn display_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}
