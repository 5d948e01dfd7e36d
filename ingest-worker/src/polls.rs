//! The polls file: upserted by (store, instant), the later row of the file winning (the reader already
//! keeps only the last of equal rows). A row's `load_id` moves only when its status changes, so a reader
//! can fetch what a load changed by `load_id`.
//!
//! Two paths:
//! - the file only grew since the last successful load (the digest of its first N bytes is that load's
//!   digest, and those N bytes end a line): only the appended rows are parsed and upserted;
//! - otherwise the whole file is parsed and upserted.
//!
//! Writing: multi-row `INSERT` statements built as text, in primary-key order. Every load becomes visible
//! in one commit, the one that finishes its load record, so a reader sees all of a load's polls or none,
//! and a load killed at any point leaves the previous polls as they were:
//! - a small load upserts into `polls` on one connection, in one transaction with the load record;
//! - a large one is first written into `polls_staging` on several connections at once (the server's work
//!   is CPU-bound: one core each), then one `INSERT … SELECT … ON DUPLICATE KEY UPDATE` moves it into
//!   `polls` in the transaction that finishes the record. Staged rows are cleared after the load, and
//!   at the start of the next run if a killed worker left some.
//!
//! Rows in the database that a new version of the file no longer has are kept: polls are upserted (SPEC
//! §4). Reading is streamed (`read_polls_from`, from the appended part's offset on that path), and polls
//! older than the retention window are dropped by the reader; the run deletes expired rows (`load.rs`).

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection as _;
use diesel::mysql::MysqlConnection;
use diesel::{Connection as _, QueryableByName, RunQueryDsl, sql_query};
use log::{info, warn};
use shared_model::db::{self, ServerFlavour};
use shared_model::models::loads::{self, Load, LoadEnd, LoadStatus};
use shared_model::models::polls::{self as polls_table, STAGE_PREFIX, UPSERT_PREFIX, upsert_on_duplicate};
use uptime_core::input::{InputError, Poll, PollsFile, Retention, StoreIds, read_polls_from};
use uptime_core::time::DAY;

use crate::digest::FileDigest;
use crate::error::FileError;
use crate::record::{LoadRun, LoadedFile, end_loaded};
use crate::sql::{StatementBuilder, push_datetime, push_u64};

/// Connections staging one large load at once: the server's work is CPU-bound, one core per connection.
/// Two matched this 2-core machine; three or four were no faster here (measured).
const WRITERS: usize = 2;
/// Below this many rows a second connection and the staging costs more than they save.
const PARALLEL_FROM_ROWS: usize = 100_000;
/// Statement size (~25 k rows): per-statement costs vanish (256 KiB to 8 MiB measured the same within
/// noise on the full set) and the server's memory per statement stays small. Far below the 16 MiB
/// default `max_allowed_packet` of MariaDB (MySQL 8 allows 64 MiB), and halved if a server allows less.
const STATEMENT_BYTES: usize = 1 << 20;
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

pub(crate) fn load(
    run: &mut LoadRun<'_>,
    path: &Path,
    source: &mut File,
    digest: &FileDigest,
    previous: Option<&Load>,
    load_id: u64,
) -> Result<LoadedFile, FileError> {
    let loaded_at = run.loaded_at.timestamp_micros();
    let url = run.settings.database.url.clone();
    let flavour = run.flavour()?;
    let window = run.settings.retention_micros();
    let (conn, stores) = run.conn_and_stores()?;
    let retention = Retention { window, newest_known: polls_table::newest_polled_at(conn)? };
    let parse_started = Instant::now();
    let unreadable = |source| InputError::Unreadable { file: path.to_owned(), source };
    source.seek(SeekFrom::Start(0)).map_err(unreadable)?;
    let mut head = Vec::new();
    source.by_ref().take(HEAD_BYTES.min(digest.bytes)).read_to_end(&mut head).map_err(unreadable)?;
    let appended = appended_part(&head, digest, previous);
    let mut file = match appended {
        Some(ref part) => read_appended(path, source, &head, part, digest, &mut stores.ids, loaded_at, retention)?,
        None => {
            source.seek(SeekFrom::Start(0)).map_err(unreadable)?;
            read_polls_from(path, source.by_ref().take(digest.bytes), &mut stores.ids, loaded_at, Some(retention))?
        }
    };
    let parse_seconds = parse_started.elapsed().as_secs_f64();
    info!(
        "load_id={load_id} polls: parsed {} rows in {parse_seconds:.2} s{}",
        file.summary.rows_read,
        if appended.is_some() { " (appended part only)" } else { "" }
    );
    let new_stores = stores.sync(conn)?;
    file.summary.note("stores new to the database", new_stores as u64);

    // The reader accepts only years 1000–9999, which is what a DATETIME holds.
    let mut polls: Vec<Poll> = file.polls.iter().map(|p| Poll { store: stores.key(p.store), ..*p }).collect();
    drop(file.polls);
    // Keys were handed out in the order the ids were first seen, so this holds unless another writer
    // added stores meanwhile; primary-key order is what makes the inserts fast.
    if !polls.windows(2).all(|w| (w[0].store, w[0].at) < (w[1].store, w[1].at)) {
        polls.sort_unstable_by_key(|p| (p.store, p.at));
    }

    let end = end_loaded(digest, &file.summary, polls.len() as u64);
    make_room(conn, &polls, load_id);
    write(conn, &url, flavour, &polls, load_id, &end)?;
    Ok(LoadedFile { status: LoadStatus::Loaded, end, summary: Some(file.summary) })
}

/// How long the ingest's DDL on `polls` waits for running reads of it (a report's read takes seconds).
pub(crate) const DDL_LOCK_WAIT_SECONDS: u32 = 30;

/// Adds the day partitions the polls about to be written need (and a few days ahead), before the load's
/// transaction: DDL commits. Without them the polls land in `p_future`, which only costs speed (the next
/// run splits them off), so a failure here is logged, not fatal.
fn make_room(conn: &mut MysqlConnection, polls: &[Poll], load_id: u64) {
    let (Some(first), Some(last)) = (polls.iter().map(|p| p.at).min(), polls.iter().map(|p| p.at).max()) else {
        return;
    };
    let (first, last) = (first.div_euclid(DAY), last.div_euclid(DAY) + polls_table::PARTITION_DAYS_AHEAD);
    match polls_table::add_day_partitions(conn, first, last, DDL_LOCK_WAIT_SECONDS) {
        Ok(0) => {}
        Ok(added) => info!("load_id={load_id} polls: added {added} day partitions"),
        Err(e) => warn!("load_id={load_id} polls: cannot add day partitions now ({e}); the polls go to p_future"),
    }
}

/// How much of the file's start is read to find its header row for the appended path; a longer header
/// goes the whole-file way.
const HEAD_BYTES: u64 = 64 << 10;

/// Reads only the part of a file that was appended since the last load, streaming from its offset, with
/// line numbers of the whole file in the rejected samples.
#[allow(clippy::too_many_arguments)]
fn read_appended(
    path: &Path,
    source: &mut File,
    head: &[u8],
    part: &AppendedPart,
    digest: &FileDigest,
    ids: &mut StoreIds,
    loaded_at: i64,
    retention: Retention,
) -> Result<PollsFile, FileError> {
    source
        .seek(SeekFrom::Start(part.from))
        .map_err(|source| InputError::Unreadable { file: path.to_owned(), source })?;
    let appended = source.by_ref().take(digest.bytes - part.from);
    let mut file = read_polls_from(path, (&head[..part.header_end]).chain(appended), ids, loaded_at, Some(retention))?;
    if !file.summary.samples.is_empty() {
        // The reader numbered the appended rows from line 2; they start after the loaded lines.
        for sample in &mut file.summary.samples {
            sample.line += digest.prefix_line_ends - 1;
        }
    }
    file.summary.note("bytes loaded earlier and skipped (the file only grew)", part.from);
    Ok(file)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AppendedPart {
    /// Where the header row ends (the header is parsed again in front of the appended rows).
    header_end: usize,
    /// Where the appended bytes start: the length of the file at the last successful load.
    from: u64,
}

/// The appended part, when the file is the last successfully loaded one with rows added at the end.
/// `head` is the start of the file (up to [`HEAD_BYTES`]).
fn appended_part(head: &[u8], digest: &FileDigest, previous: Option<&Load>) -> Option<AppendedPart> {
    let previous = previous?;
    let (len, prefix_digest) = digest.prefix.as_ref()?;
    if previous.file_bytes != Some(*len) || previous.file_digest.as_deref() != Some(prefix_digest.as_str()) {
        return None;
    }
    // A last line without its line end may have been cut while being written: read it again whole.
    if !digest.prefix_ends_a_line {
        return None;
    }
    let header_end = memchr::memchr(b'\n', head)? + 1;
    // A quoted header could hold a line end; the whole-file path handles such files.
    if header_end as u64 > *len || memchr::memchr(b'"', &head[..header_end]).is_some() {
        return None;
    }
    Some(AppendedPart { header_end, from: *len })
}

/// Upserts `polls` (sorted by key) and writes the load record, all or nothing.
fn write(
    conn: &mut MysqlConnection,
    url: &str,
    flavour: ServerFlavour,
    polls: &[Poll],
    load_id: u64,
    end: &LoadEnd,
) -> Result<(), FileError> {
    let upsert = Upsert {
        load_id,
        statement_bytes: statement_bytes(conn)?,
        progress: Progress::new(load_id, polls.len() as u64),
        give_up: AtomicBool::new(false),
    };
    if polls.len() < PARALLEL_FROM_ROWS {
        write_on_one_connection(conn, flavour, polls, &upsert, end)?;
    } else {
        write_staged(conn, url, flavour, polls, &upsert, end)?;
    }
    upsert.progress.finished();
    Ok(())
}

#[derive(QueryableByName)]
struct PacketLimit {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    bytes: i64,
}

/// [`STATEMENT_BYTES`], or half the server's packet limit if that is less.
fn statement_bytes(conn: &mut MysqlConnection) -> Result<usize, FileError> {
    let packet: PacketLimit = sql_query("SELECT CAST(@@max_allowed_packet AS SIGNED) AS bytes").get_result(conn)?;
    Ok(STATEMENT_BYTES.min(usize::try_from(packet.bytes / 2).unwrap_or(STATEMENT_BYTES)).max(4096))
}

fn write_on_one_connection(
    conn: &mut MysqlConnection,
    flavour: ServerFlavour,
    polls: &[Poll],
    upsert: &Upsert,
    end: &LoadEnd,
) -> Result<(), FileError> {
    conn.transaction::<_, FileError, _>(|conn| {
        upsert.rows(conn, Destination::Polls(flavour), polls)?;
        loads::finish(conn, upsert.load_id, end)?;
        Ok(())
    })
}

/// Clears what a worker killed during a large load left in `polls_staging`. Only the holder of the ingest
/// lock may call this, before its loads: no load is staging then.
pub(crate) fn clear_stale_staging(conn: &mut MysqlConnection) -> diesel::QueryResult<()> {
    if polls_table::clear_staging(conn)? {
        warn!("removed the staged polls of a load that did not finish");
    }
    Ok(())
}

/// Stages `polls` on several connections, then moves them into `polls` and finishes the record in one
/// transaction: the only commit that changes what a reader sees.
fn write_staged(
    conn: &mut MysqlConnection,
    url: &str,
    flavour: ServerFlavour,
    polls: &[Poll],
    upsert: &Upsert,
    end: &LoadEnd,
) -> Result<(), FileError> {
    let load_id = upsert.load_id;
    // The run cleared what a killed worker left staged before this load started (`clear_stale_staging`),
    // and the merge takes this load's rows only.
    let merged = stage_in_parallel(conn, url, polls, upsert).and_then(|()| {
        let started = Instant::now();
        conn.transaction::<_, FileError, _>(|conn| {
            polls_table::merge_staged(conn, flavour, load_id)?;
            loads::finish(conn, load_id, end)?;
            Ok(())
        })?;
        info!("load_id={load_id} polls: staged rows moved into polls in {:.2} s", started.elapsed().as_secs_f64());
        Ok(())
    });
    // Committed or not, the staged rows are of no more use. Failing to clear them must not fail a load
    // that committed: the next large load clears them first.
    if let Err(e) = polls_table::clear_staging(conn) {
        warn!("load_id={load_id} polls: cannot clear the staged rows now, the next load will: {e}");
    }
    merged
}

/// Writes the first part into `polls_staging` on `conn` and each other part on a connection of its own,
/// one thread each. Each statement commits by itself: staged rows are visible to no reader of `polls`,
/// and a writer that stops leaves only rows the next load clears.
fn stage_in_parallel(conn: &mut MysqlConnection, url: &str, polls: &[Poll], upsert: &Upsert) -> Result<(), FileError> {
    // Split in key order: the parts touch disjoint key ranges, so the writers never wait for each other.
    let mut parts = polls.chunks(polls.len().div_ceil(WRITERS));
    let own_part = parts.next().unwrap_or_default();
    let helpers: Vec<_> = parts.map(|rows| Ok((db::connect(url)?, rows))).collect::<Result<_, FileError>>()?;
    std::thread::scope(|scope| {
        let running: Vec<_> = helpers
            .into_iter()
            .map(|(mut other, rows)| {
                scope.spawn(move || {
                    let result = upsert.rows(&mut other, Destination::Staging, rows);
                    upsert.give_up_if_failed(&result);
                    result
                })
            })
            .collect();
        let own = upsert.rows(conn, Destination::Staging, own_part);
        upsert.give_up_if_failed(&own);
        let helpers: Vec<Result<(), FileError>> = running
            .into_iter()
            .map(|helper| helper.join().map_err(|_| FileError::WriterPanicked))
            .collect::<Result<_, _>>()?;
        own?;
        helpers.into_iter().collect()
    })
}

/// Where a writer's statements go.
#[derive(Debug, Clone, Copy)]
enum Destination {
    /// Upserted straight into `polls`, with the text this server accepts.
    Polls(ServerFlavour),
    /// Inserted into `polls_staging`.
    Staging,
}

impl Destination {
    /// The text before and after the rows.
    fn statement_ends(self) -> (&'static str, &'static str) {
        match self {
            Destination::Polls(flavour) => (UPSERT_PREFIX, upsert_on_duplicate(flavour)),
            Destination::Staging => (STAGE_PREFIX, ""),
        }
    }
}

/// What the writers of one load share.
struct Upsert {
    load_id: u64,
    statement_bytes: usize,
    progress: Progress,
    /// Set by a writer that failed, so the others stop instead of writing rows that will be rolled back.
    give_up: AtomicBool,
}

impl Upsert {
    /// Writes `polls` to `destination` in statements of about `statement_bytes`, on whatever transaction
    /// `conn` has open (or in autocommit).
    fn rows(&self, conn: &mut MysqlConnection, destination: Destination, polls: &[Poll]) -> Result<(), FileError> {
        let (prefix, suffix) = destination.statement_ends();
        let mut statement = StatementBuilder::new(prefix, suffix, self.statement_bytes);
        let mut rows_in_statement = 0u64;
        for p in polls {
            push_row(statement.begin_row(), p, self.load_id);
            rows_in_statement += 1;
            if let Some(sql) = statement.end_row() {
                if self.give_up.load(Ordering::Relaxed) {
                    return Err(FileError::Abandoned);
                }
                conn.batch_execute(sql)?;
                self.progress.advance(std::mem::take(&mut rows_in_statement));
            }
        }
        if let Some(sql) = statement.finish() {
            conn.batch_execute(sql)?;
            self.progress.advance(rows_in_statement);
        }
        Ok(())
    }

    fn give_up_if_failed(&self, result: &Result<(), FileError>) {
        if result.is_err() {
            self.give_up.store(true, Ordering::Relaxed);
        }
    }
}

/// One row, in the column order of [`UPSERT_PREFIX`] and [`STAGE_PREFIX`].
fn push_row(sql: &mut String, p: &Poll, load_id: u64) {
    push_u64(sql, u64::from(p.store));
    sql.push(',');
    push_datetime(sql, p.at);
    sql.push_str(if p.active { ",1," } else { ",0," });
    push_u64(sql, load_id);
}

/// Rows written so far, logged every few seconds by whichever writer notices the time.
struct Progress {
    load_id: u64,
    total: u64,
    written: AtomicU64,
    started: Instant,
    last_logged: Mutex<Instant>,
}

impl Progress {
    fn new(load_id: u64, total: u64) -> Self {
        let started = Instant::now();
        Progress { load_id, total, written: AtomicU64::new(0), started, last_logged: Mutex::new(started) }
    }

    fn advance(&self, rows: u64) {
        let written = self.written.fetch_add(rows, Ordering::Relaxed) + rows;
        let Ok(mut last) = self.last_logged.try_lock() else { return };
        if last.elapsed() >= PROGRESS_EVERY {
            *last = Instant::now();
            let seconds = self.started.elapsed().as_secs_f64();
            info!(
                "load_id={} polls: {written} of {} rows written ({:.0} rows/s)",
                self.load_id,
                self.total,
                written as f64 / seconds
            );
        }
    }

    fn finished(&self) {
        let seconds = self.started.elapsed().as_secs_f64();
        info!(
            "load_id={} polls: {} rows written and committed in {seconds:.2} s ({:.0} rows/s)",
            self.load_id,
            self.total,
            self.total as f64 / seconds.max(1e-9)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_record(bytes: u64, digest: &str) -> Load {
        let at = chrono::DateTime::UNIX_EPOCH.naive_utc();
        Load {
            load_id: 1,
            file_kind: "polls".into(),
            file_name: "store_status.csv".into(),
            file_bytes: Some(bytes),
            file_digest: Some(digest.into()),
            status: LoadStatus::Loaded,
            started_at: at,
            finished_at: Some(at),
            rows_read: 0,
            rows_loaded: 0,
            rows_rejected: 0,
            rejected_by_reason: None,
            sample_rejections: None,
            notes: None,
            error: None,
        }
    }

    const OLD: &[u8] = b"store_id,status,timestamp_utc\na,active,2023-01-01 00:00:00\n";

    #[test]
    fn a_file_that_only_grew_is_read_from_where_the_last_load_stopped() {
        let before = FileDigest::of(OLD, None);
        let grown = [OLD, b"b,active,2023-01-01 00:00:01\n"].concat();
        let digest = FileDigest::of(&grown, Some(before.bytes));
        let part = appended_part(&grown, &digest, Some(&load_record(before.bytes, &before.hex)));
        assert_eq!(part, Some(AppendedPart { header_end: 30, from: OLD.len() as u64 }));
    }

    #[test]
    fn a_changed_prefix_or_a_cut_last_line_means_reading_everything() {
        let cut = &OLD[..OLD.len() - 1];
        let before = FileDigest::of(cut, None);
        let grown = [OLD, b"b,active,2023-01-01 00:00:01\n"].concat();
        let digest = FileDigest::of(&grown, Some(before.bytes));
        assert_eq!(appended_part(&grown, &digest, Some(&load_record(before.bytes, &before.hex))), None);

        let edited = [b"store_id,status,timestamp_utc\nA,active,2023-01-01 00:00:00\n".as_slice(), b"b,x,y\n"].concat();
        let before = FileDigest::of(OLD, None);
        let digest = FileDigest::of(&edited, Some(before.bytes));
        assert_eq!(appended_part(&edited, &digest, Some(&load_record(before.bytes, &before.hex))), None);
        assert_eq!(appended_part(&edited, &digest, None), None);
    }
}
