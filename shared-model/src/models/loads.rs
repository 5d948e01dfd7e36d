//! Models and queries for the `loads` table (owned by the ingest work): the record of every load of every
//! file (SPEC §4). A load starts as `running` and ends as `loaded`, `unchanged` or `failed`; a record left
//! `running` by a worker that died is marked `failed` by the next worker that takes the ingest lock.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use diesel::mysql::MysqlConnection;
use diesel::prelude::*;
use diesel::sql_types::Unsigned;

use uptime_core::input::FileSummary;

use super::text_enum::text_enum;
use crate::schema::loads;

/// The life of a load record, as the `status` column holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, diesel::AsExpression, diesel::FromSqlRow)]
#[diesel(sql_type = diesel::sql_types::Varchar)]
pub enum LoadStatus {
    #[default]
    Running,
    /// The file was read and its rows written.
    Loaded,
    /// Same size and digest as the last successful load of that kind: nothing was written.
    Unchanged,
    Failed,
}

text_enum!(LoadStatus, Running => "running", Loaded => "loaded", Unchanged => "unchanged", Failed => "failed");

impl LoadStatus {
    /// A word this code does not know is an error: a load record is never guessed at.
    fn from_word(word: &str) -> Option<LoadStatus> {
        Self::known_word(word)
    }
}

/// One row of `loads`.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = loads, check_for_backend(diesel::mysql::Mysql))]
pub struct Load {
    pub load_id: u64,
    pub file_kind: String,
    pub file_name: String,
    pub file_bytes: Option<u64>,
    pub file_digest: Option<String>,
    pub status: LoadStatus,
    pub started_at: NaiveDateTime,
    pub finished_at: Option<NaiveDateTime>,
    pub rows_read: u64,
    pub rows_loaded: u64,
    pub rows_rejected: u64,
    /// JSON object: reason → count.
    pub rejected_by_reason: Option<String>,
    /// JSON array of `{line, reason, value}`.
    pub sample_rejections: Option<String>,
    /// JSON object: note → count.
    pub notes: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = loads)]
struct NewLoad<'a> {
    file_kind: &'a str,
    file_name: &'a str,
    status: LoadStatus,
    started_at: NaiveDateTime,
}

/// How a load ended: everything `finish` writes. `None` columns are written as NULL.
#[derive(Debug, Clone, Default, PartialEq, Eq, AsChangeset)]
#[diesel(table_name = loads, treat_none_as_null = true)]
pub struct LoadEnd {
    pub status: LoadStatus,
    pub finished_at: Option<NaiveDateTime>,
    pub file_bytes: Option<u64>,
    pub file_digest: Option<String>,
    pub rows_read: u64,
    pub rows_loaded: u64,
    pub rows_rejected: u64,
    pub rejected_by_reason: Option<String>,
    pub sample_rejections: Option<String>,
    pub notes: Option<String>,
    pub error: Option<String>,
}

impl LoadEnd {
    /// The reader's account of the file: rows read and rejected, and the JSON columns — rejections by
    /// reason (`{"bad_status": 2}`), the sample rejected lines (`[{"line", "reason", "value"}]`) and the
    /// notes (`{"duplicate polls (the later row won)": 1}`).
    pub fn with_summary(self, summary: &FileSummary) -> Self {
        let by_reason: BTreeMap<&str, u64> = summary.rejected.iter().map(|(r, n)| (r.as_str(), *n)).collect();
        let samples: Vec<serde_json::Value> = summary
            .samples
            .iter()
            .map(|s| serde_json::json!({"line": s.line, "reason": s.reason.as_str(), "value": s.value}))
            .collect();
        Self {
            rows_read: summary.rows_read,
            rows_rejected: summary.rejected_total(),
            rejected_by_reason: serde_json::to_string(&by_reason).ok(),
            sample_rejections: serde_json::to_string(&samples).ok(),
            notes: serde_json::to_string(&summary.notes).ok(),
            ..self
        }
    }
}

/// The longest file name the column holds; longer names are cut (they only label the record).
pub const FILE_NAME_MAX_CHARS: usize = 255;

#[derive(QueryableByName)]
struct LastId {
    #[diesel(sql_type = Unsigned<diesel::sql_types::BigInt>)]
    id: u64,
}

/// Inserts a `running` record and returns its `load_id`.
pub fn start(
    conn: &mut MysqlConnection,
    file_kind: &str,
    file_name: &str,
    started_at: NaiveDateTime,
) -> QueryResult<u64> {
    let file_name: String = file_name.chars().take(FILE_NAME_MAX_CHARS).collect();
    diesel::insert_into(loads::table)
        .values(NewLoad { file_kind, file_name: &file_name, status: LoadStatus::Running, started_at })
        .execute(conn)?;
    Ok(diesel::sql_query("SELECT LAST_INSERT_ID() AS id").get_result::<LastId>(conn)?.id)
}

/// Writes how the load ended.
pub fn finish(conn: &mut MysqlConnection, load_id: u64, end: &LoadEnd) -> QueryResult<()> {
    diesel::update(loads::table.find(load_id)).set(end).execute(conn).map(drop)
}

pub fn get(conn: &mut MysqlConnection, load_id: u64) -> QueryResult<Load> {
    loads::table.find(load_id).select(Load::as_select()).first(conn)
}

/// The latest `loaded` or `unchanged` record of a kind: what the database holds for that kind came from
/// the file it describes, so a file of the same size and digest need not be read again.
pub fn last_successful(conn: &mut MysqlConnection, file_kind: &str) -> QueryResult<Option<Load>> {
    loads::table
        .filter(loads::file_kind.eq(file_kind))
        .filter(loads::status.eq_any([LoadStatus::Loaded, LoadStatus::Unchanged]))
        .order(loads::load_id.desc())
        .select(Load::as_select())
        .first(conn)
        .optional()
}

/// Marks records still `running` as failed. Only the holder of the ingest lock may call this: then no
/// other load can be in progress, so a `running` record belongs to a worker that stopped mid-load.
pub fn fail_interrupted(conn: &mut MysqlConnection, now: NaiveDateTime) -> QueryResult<usize> {
    diesel::update(loads::table.filter(loads::status.eq(LoadStatus::Running)))
        .set((
            loads::status.eq(LoadStatus::Failed),
            loads::finished_at.eq(now),
            loads::error.eq("interrupted: the worker stopped before this load finished"),
        ))
        .execute(conn)
}

/// Every record, oldest first (tests and operators' tools).
pub fn all(conn: &mut MysqlConnection) -> QueryResult<Vec<Load>> {
    loads::table.order(loads::load_id.asc()).select(Load::as_select()).load(conn)
}

#[derive(QueryableByName)]
struct LoadsSummary {
    #[diesel(sql_type = diesel::sql_types::Nullable<Unsigned<diesel::sql_types::BigInt>>)]
    max_id: Option<u64>,
    #[diesel(sql_type = diesel::sql_types::Nullable<Unsigned<diesel::sql_types::BigInt>>)]
    first_running: Option<u64>,
}

/// The highest load id up to which every load has finished (0 before the first): a load that is no
/// longer running has committed all its rows, so everything a reader has fetched up to this id is final.
pub fn settled_load_id(conn: &mut MysqlConnection) -> QueryResult<u64> {
    let summary: LoadsSummary = diesel::sql_query(
        "SELECT MAX(load_id) AS max_id, MIN(CASE WHEN status = ? THEN load_id END) AS first_running FROM loads",
    )
    .bind::<diesel::sql_types::Varchar, _>(LoadStatus::Running)
    .get_result(conn)?;
    Ok(match summary.first_running {
        Some(first) => first.saturating_sub(1),
        None => summary.max_id.unwrap_or(0),
    })
}

/// What the loads of one file kind add up to, every load since the database was created.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct FileTotals {
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub file_kind: String,
    /// Loads of every outcome, running ones included.
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub loads: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub failed: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub rows_loaded: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub rows_rejected: i64,
}

/// The totals of each file kind that was ever loaded, by file kind. Summed in SQL: the table keeps every
/// load for ever, and only a row per kind needs to cross the wire.
pub fn totals_by_file(conn: &mut MysqlConnection) -> QueryResult<Vec<FileTotals>> {
    diesel::sql_query(
        "SELECT file_kind, COUNT(*) AS loads, CAST(SUM(status = ?) AS SIGNED) AS failed, \
         CAST(SUM(rows_loaded) AS SIGNED) AS rows_loaded, CAST(SUM(rows_rejected) AS SIGNED) AS rows_rejected \
         FROM loads GROUP BY file_kind ORDER BY file_kind",
    )
    .bind::<diesel::sql_types::Varchar, _>(LoadStatus::Failed)
    .load(conn)
}
