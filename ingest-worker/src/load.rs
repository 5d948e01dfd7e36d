//! One load run: take the ingest lock, find the files, and load each of the three (SPEC §4).
//!
//! Each file is its own load with its own record in `loads`. A file that cannot be read or lacks a
//! required column fails its load (recorded `failed`, the previous data of that kind untouched) and the
//! other files are still loaded. An unchanged file (same size and SHA-256 as the last successful load of
//! its kind) is recorded `unchanged` and not parsed.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel::mysql::MysqlConnection;
use diesel::{QueryableByName, RunQueryDsl, sql_query};
use log::{error, info, warn};
use shared_model::db;
use shared_model::models::loads::{self, LoadEnd, LoadStatus};
use shared_model::models::snapshots::SnapshotKind;
use uptime_core::input::{DataFiles, FileKind, FileSummary, InputError};

use crate::digest::FileDigest;
use crate::error::{FileError, IngestError};
use crate::settings::Settings;
use crate::store_keys::StoreKeys;
use crate::{polls, snapshot};

/// Named so an operator who sees it in `SHOW PROCESSLIST` knows what holds it. A second worker waits for
/// it (up to `ingest_lock_wait_seconds`) and then finds the files unchanged, so two workers never write at
/// once and never load the same file twice.
pub const INGEST_LOCK: &str = "restaurant_monitor.ingest";

/// The file name recorded for an hours or zones file that is not in the folder.
pub const NO_FILE: &str = "(none)";

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
    acquire_lock(&mut conn, settings.ingest_lock_wait_seconds)?;
    let loaded_at = loaded_at.unwrap_or_else(Utc::now);
    let result = run_locked(settings, &mut conn, loaded_at);
    if let Err(e) = sql_query(format!("DO RELEASE_LOCK('{INGEST_LOCK}')")).execute(&mut conn) {
        // The lock goes with the connection, which is closed right after this anyway.
        warn!("cannot release the ingest lock: {e}");
    }
    result
}

#[derive(QueryableByName)]
struct LockAnswer {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Integer>)]
    got: Option<i32>,
}

fn acquire_lock(conn: &mut MysqlConnection, wait_seconds: u64) -> Result<(), IngestError> {
    let try_lock = |conn: &mut MysqlConnection, seconds: u64| -> Result<bool, IngestError> {
        let answer: LockAnswer =
            sql_query(format!("SELECT GET_LOCK('{INGEST_LOCK}', {seconds}) AS got")).get_result(conn)?;
        Ok(answer.got == Some(1))
    };
    if try_lock(conn, 0)? {
        return Ok(());
    }
    info!("another ingest worker is loading (lock '{INGEST_LOCK}'); waiting up to {wait_seconds} s for it to finish");
    if try_lock(conn, wait_seconds)? {
        return Ok(());
    }
    Err(IngestError::LockTimeout { lock: INGEST_LOCK, seconds: wait_seconds })
}

/// What a load run needs while it holds the lock.
pub(crate) struct Ctx<'a> {
    pub settings: &'a Settings,
    pub conn: &'a mut MysqlConnection,
    pub loaded_at: DateTime<Utc>,
    /// Read from the database on first use, then kept for the next files of the run.
    stores: Option<StoreKeys>,
}

impl Ctx<'_> {
    /// The connection and the store keys, reading the keys if this run has not yet.
    pub fn conn_and_stores(&mut self) -> Result<(&mut MysqlConnection, &mut StoreKeys), FileError> {
        let stores = match self.stores.take() {
            Some(stores) => stores,
            None => StoreKeys::load(self.conn)?,
        };
        let stores = self.stores.insert(stores);
        Ok((&mut *self.conn, stores))
    }
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
                loads::finish(conn, load_id, &failed_end(&message, None))?;
                report.files.push(FileReport::failed(kind, folder.clone(), load_id, message.clone(), started));
            }
            return Ok(report);
        }
    };
    let mut ctx = Ctx { settings, conn, loaded_at, stores: None };
    report.files.push(load_file(&mut ctx, FileKind::Polls, &files.polls)?);
    report.files.push(match &files.hours {
        Some(path) => load_file(&mut ctx, FileKind::Hours, path)?,
        None => load_absent(&mut ctx, FileKind::Hours, SnapshotKind::Hours)?,
    });
    report.files.push(match &files.zones {
        Some(path) => load_file(&mut ctx, FileKind::Zones, path)?,
        None => load_absent(&mut ctx, FileKind::Zones, SnapshotKind::Zones)?,
    });
    Ok(report)
}

/// What a successful load of one file hands back for the report. The kind's loader has already written
/// the record (inside the transaction that made its rows visible).
pub(crate) struct Done {
    pub status: LoadStatus,
    pub end: LoadEnd,
    pub summary: Option<FileSummary>,
}

fn load_absent(ctx: &mut Ctx<'_>, kind: FileKind, snapshot_kind: SnapshotKind) -> Result<FileReport, IngestError> {
    let started = Instant::now();
    let (load_id, done) = snapshot::absent(ctx, snapshot_kind)?;
    Ok(FileReport::done(kind, NO_FILE.into(), load_id, done, started))
}

fn load_file(ctx: &mut Ctx<'_>, kind: FileKind, path: &Path) -> Result<FileReport, IngestError> {
    let started = Instant::now();
    let file_name = display_name(path);
    let load_id = loads::start(ctx.conn, kind.as_str(), &file_name, Utc::now().naive_utc())?;
    info!("load_id={load_id} {} {file_name}: started", kind.as_str());
    let mut digest = None;
    let outcome = load_present(ctx, kind, path, load_id, &mut digest);
    match outcome {
        Ok(done) => {
            let report = FileReport::done(kind, file_name, load_id, done, started);
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
            // The store keys may be ahead of the database if the failure hit half-way: read them afresh.
            ctx.stores = None;
            let message = bounded(e.to_string());
            loads::finish(ctx.conn, load_id, &failed_end(&message, digest.as_ref()))?;
            error!("load_id={load_id} {} {file_name}: failed, previous data kept: {message}", kind.as_str());
            Ok(FileReport::failed(kind, file_name, load_id, message, started))
        }
    }
}

fn load_present(
    ctx: &mut Ctx<'_>,
    kind: FileKind,
    path: &Path,
    load_id: u64,
    digest_out: &mut Option<FileDigest>,
) -> Result<Done, FileError> {
    let bytes = std::fs::read(path).map_err(|source| InputError::Unreadable { file: path.to_owned(), source })?;
    let previous = loads::last_successful(ctx.conn, kind.as_str())?;
    // Only the polls file is ever appended to, so only its prefix is worth comparing.
    let prefix_len = previous.as_ref().filter(|_| kind == FileKind::Polls).and_then(|p| p.file_bytes);
    let digest = digest_out.insert(FileDigest::of(&bytes, prefix_len));
    if let Some(previous) = previous.as_ref().filter(|p| digest.same_as(p.file_bytes, p.file_digest.as_deref())) {
        let mut end = ended(LoadStatus::Unchanged, Some(digest));
        end.notes = json(&std::collections::BTreeMap::from([("same size and digest as load_id", previous.load_id)]));
        loads::finish(ctx.conn, load_id, &end)?;
        return Ok(Done { status: LoadStatus::Unchanged, end, summary: None });
    }
    let digest = digest.clone();
    match kind {
        FileKind::Polls => polls::load(ctx, path, &bytes, &digest, previous.as_ref(), load_id),
        FileKind::Hours => snapshot::load_hours(ctx, path, &bytes, &digest, load_id),
        FileKind::Zones => snapshot::load_zones(ctx, path, &bytes, &digest, load_id),
    }
}

impl FileReport {
    fn done(kind: FileKind, file_name: String, load_id: u64, done: Done, started: Instant) -> Self {
        FileReport {
            kind,
            file_name,
            load_id: Some(load_id),
            status: done.status,
            rows_read: done.end.rows_read,
            rows_loaded: done.end.rows_loaded,
            rows_rejected: done.end.rows_rejected,
            summary: done.summary,
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

/// A record's end with the given status, stamped now.
pub(crate) fn ended(status: LoadStatus, digest: Option<&FileDigest>) -> LoadEnd {
    LoadEnd {
        status: status.as_str().to_owned(),
        finished_at: Some(Utc::now().naive_utc()),
        file_bytes: digest.map(|d| d.bytes),
        file_digest: digest.map(|d| d.hex.clone()),
        ..LoadEnd::default()
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

fn failed_end(error: &str, digest: Option<&FileDigest>) -> LoadEnd {
    LoadEnd { error: Some(error.to_owned()), ..ended(LoadStatus::Failed, digest) }
}

/// The end of a load that wrote `rows_loaded` rows, with the reader's account of the file.
pub(crate) fn loaded_end(digest: &FileDigest, summary: &FileSummary, rows_loaded: u64) -> LoadEnd {
    LoadEnd { rows_loaded, ..ended(LoadStatus::Loaded, Some(digest)).with_summary(summary) }
}

pub(crate) fn json<T: serde::Serialize>(value: &T) -> Option<String> {
    serde_json::to_string(value).ok()
}

fn display_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}
