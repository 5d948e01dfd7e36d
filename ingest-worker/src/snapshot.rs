//! Business hours and time zones, replaced as whole snapshots (SPEC §4): the rows of the new file are
//! written under a new `snapshot_id`, then `current_snapshots` is pointed at it in one transaction (with
//! the load record), then the replaced snapshot is deleted. A reader that reads the pointer and the rows
//! in one transaction sees the old file or the new one, never a mix.
//!
//! No file of a kind in the folder: the pointer is set to NULL, which means the SPEC §1 defaults (every
//! store open all the time; every store in America/Chicago), with a warning each run. The folder is the
//! truth: a file taken away means its data no longer applies. (A folder that cannot be listed at all
//! changes nothing: see `load.rs`.)

use std::collections::BTreeMap;
use std::path::Path;

use chrono::Utc;
use diesel::Connection as _;
use diesel::connection::SimpleConnection as _;
use diesel::mysql::MysqlConnection;
use log::{info, warn};
use shared_model::models::loads::{self, LoadEnd, LoadStatus};
use shared_model::models::snapshots::{self, BUSINESS_HOURS_INSERT_PREFIX, StoreTimezoneRow, TIMEZONE_MAX_CHARS};
use uptime_core::input::{FileKind, read_hours_bytes, read_zones_bytes};

use crate::digest::FileDigest;
use crate::error::{FileError, IngestError};
use crate::record::{LoadRun, LoadedFile, NO_FILE, end_loaded, end_now, json_column};
use crate::sql::{StatementBuilder, push_i64, push_u64};

/// The hours file is small (86 k rows in the real data): 1 MiB statements are plenty.
const STATEMENT_BYTES: usize = 1 << 20;

pub(crate) fn load_hours(
    run: &mut LoadRun<'_>,
    path: &Path,
    bytes: &[u8],
    digest: &FileDigest,
    load_id: u64,
) -> Result<LoadedFile, FileError> {
    let (conn, stores) = run.conn_and_stores()?;
    let mut file = read_hours_bytes(path, bytes, &mut stores.ids)?;
    let new_stores = stores.sync(conn)?;
    file.summary.note("stores new to the database", new_stores as u64);
    // (store key, position in the file): row_no numbers a store's rows in file order.
    let mut rows: Vec<(u32, usize)> = file.rows.iter().enumerate().map(|(i, r)| (stores.key(r.store), i)).collect();
    rows.sort_unstable();
    let end = end_loaded(digest, &file.summary, rows.len() as u64);
    replace(conn, FileKind::Hours, load_id, &end, |conn, snapshot_id| {
        let mut statement = StatementBuilder::new(BUSINESS_HOURS_INSERT_PREFIX, "", STATEMENT_BYTES);
        let mut row_no = 0u64;
        let mut previous_store = None;
        for &(store_key, i) in &rows {
            row_no = if previous_store == Some(store_key) { row_no + 1 } else { 0 };
            previous_store = Some(store_key);
            let row = &file.rows[i];
            let sql = statement.begin_row();
            push_u64(sql, snapshot_id);
            sql.push(',');
            push_u64(sql, u64::from(store_key));
            sql.push(',');
            push_u64(sql, row_no);
            sql.push(',');
            push_u64(sql, u64::from(row.weekday));
            sql.push(',');
            push_i64(sql, row.start);
            sql.push(',');
            push_i64(sql, row.end);
            if let Some(sql) = statement.end_row() {
                conn.batch_execute(sql)?;
            }
        }
        if let Some(sql) = statement.finish() {
            conn.batch_execute(sql)?;
        }
        Ok(())
    })?;
    Ok(LoadedFile { status: LoadStatus::Loaded, end, summary: Some(file.summary) })
}

pub(crate) fn load_zones(
    run: &mut LoadRun<'_>,
    path: &Path,
    bytes: &[u8],
    digest: &FileDigest,
    load_id: u64,
) -> Result<LoadedFile, FileError> {
    let (conn, stores) = run.conn_and_stores()?;
    let mut file = read_zones_bytes(path, bytes, &mut stores.ids)?;
    let new_stores = stores.sync(conn)?;
    file.summary.note("stores new to the database", new_stores as u64);
    let mut too_long = 0u64;
    let mut rows: Vec<StoreTimezoneRow> = file
        .rows
        .iter()
        .map(|r| {
            // No zone name is this long, so a longer one is unknown either way; cut it to fit the column.
            let timezone_str = if r.name.chars().count() > TIMEZONE_MAX_CHARS {
                too_long += 1;
                r.name.chars().take(TIMEZONE_MAX_CHARS).collect()
            } else {
                r.name.clone()
            };
            StoreTimezoneRow { snapshot_id: 0, store_key: stores.key(r.store), timezone_str }
        })
        .collect();
    file.summary.note("zone names longer than 64 characters (cut; unknown either way)", too_long);
    rows.sort_unstable_by_key(|r| r.store_key);
    let end = end_loaded(digest, &file.summary, rows.len() as u64);
    replace(conn, FileKind::Zones, load_id, &end, |conn, snapshot_id| {
        for row in &mut rows {
            row.snapshot_id = snapshot_id;
        }
        snapshots::insert_zones(conn, &rows)?;
        Ok(())
    })?;
    Ok(LoadedFile { status: LoadStatus::Loaded, end, summary: Some(file.summary) })
}

/// Writes a new snapshot with `write_rows`, makes it current together with the load record, and deletes
/// the snapshot it replaced.
fn replace(
    conn: &mut MysqlConnection,
    kind: FileKind,
    load_id: u64,
    end: &LoadEnd,
    write_rows: impl FnOnce(&mut MysqlConnection, u64) -> Result<(), FileError>,
) -> Result<(), FileError> {
    // Leftovers of a load that failed before its swap: nobody reads them.
    remove_stale(conn, kind)?;
    let snapshot_id = snapshots::create(conn, kind, load_id, Utc::now().naive_utc())?;
    // Each statement commits on its own: no reader looks at this snapshot until the pointer moves.
    if let Err(e) = write_rows(conn, snapshot_id) {
        if let Err(cleanup) = snapshots::delete(conn, kind, snapshot_id) {
            warn!("load_id={load_id}: cannot delete the unfinished snapshot {snapshot_id}: {cleanup}");
        }
        return Err(e);
    }
    conn.transaction::<_, FileError, _>(|conn| {
        snapshots::point_to(conn, kind, Some(snapshot_id), Some(load_id))?;
        loads::finish(conn, load_id, end)?;
        Ok(())
    })?;
    info!("load_id={load_id} {}: snapshot {snapshot_id} is current", kind.as_str());
    // The swap is done and recorded: a failure to tidy up must not turn the load into a failure. The
    // next load of this kind deletes what is left.
    if let Err(e) = remove_stale(conn, kind) {
        warn!("load_id={load_id}: cannot delete replaced {} snapshots yet: {e}", kind.as_str());
    }
    Ok(())
}

fn remove_stale(conn: &mut MysqlConnection, kind: FileKind) -> Result<(), diesel::result::Error> {
    for snapshot_id in snapshots::stale(conn, kind)? {
        snapshots::delete(conn, kind, snapshot_id)?;
    }
    Ok(())
}

/// No file of this kind in the folder: point the kind at "no file" (the defaults). Returns the record.
pub(crate) fn absent(run: &mut LoadRun<'_>, kind: FileKind) -> Result<(u64, LoadedFile), IngestError> {
    let conn = &mut *run.conn;
    let default = match kind {
        FileKind::Hours => "every store is open all the time",
        FileKind::Zones => "every store is in America/Chicago",
        FileKind::Polls => unreachable!("the polls file is required: the folder's listing fails without one"),
    };
    warn!("no {} file in {}: {default}", kind.as_str(), run.settings.data_dir.display());
    let load_id = loads::start(conn, kind.as_str(), NO_FILE, Utc::now().naive_utc())?;
    let note = format!("no {} file in the data folder: {default}", kind.as_str());
    if snapshots::current(conn, kind)?.snapshot_id.is_none() {
        let mut end = end_now(LoadStatus::Unchanged, None);
        end.notes = json_column(&BTreeMap::from([(note, 1u64)]));
        loads::finish(conn, load_id, &end)?;
        return Ok((load_id, LoadedFile { status: LoadStatus::Unchanged, end, summary: None }));
    }
    let mut end = end_now(LoadStatus::Loaded, None);
    end.notes = json_column(&BTreeMap::from([(note, 1u64)]));
    conn.transaction::<_, diesel::result::Error, _>(|conn| {
        snapshots::point_to(conn, kind, None, Some(load_id))?;
        loads::finish(conn, load_id, &end)
    })?;
    if let Err(e) = remove_stale(conn, kind) {
        warn!("load_id={load_id}: cannot delete replaced {} snapshots yet: {e}", kind.as_str());
    }
    Ok((load_id, LoadedFile { status: LoadStatus::Loaded, end, summary: None }))
}
