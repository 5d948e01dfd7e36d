//! The ingest's test data: the fixture files, a data folder holding them, and readers of what the ingest
//! wrote. The database and the folder of a test are `test_support`'s.

use std::path::Path;

use chrono::{DateTime, TimeZone as _, Utc};
use diesel::mysql::MysqlConnection;
use diesel::{QueryableByName, RunQueryDsl, sql_query};
pub use test_support::{TempDir, TestDatabase};

/// The fixture text of `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// A data folder holding the `basic` fixture's three files.
pub fn basic_folder() -> TempDir {
    let folder = TempDir::new();
    folder.write("store_status.csv", &fixture("basic/store_status.csv"));
    folder.write("business_hours.csv", &fixture("basic/business_hours.csv"));
    folder.write("timezones.csv", &fixture("basic/timezones.csv"));
    folder
}

/// A moment after every poll of the fixtures, so none of them is "in the future".
pub fn loaded_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2023, 1, 26, 0, 0, 0).single().expect("valid date")
}

#[derive(QueryableByName, Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PollRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub store_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub polled_at: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub active: bool,
    #[diesel(sql_type = diesel::sql_types::Unsigned<diesel::sql_types::BigInt>)]
    pub load_id: u64,
}

/// Every poll with its store id, in (store id, time) order.
pub fn polls(conn: &mut MysqlConnection) -> Vec<PollRow> {
    sql_query(
        "SELECT s.store_id, DATE_FORMAT(p.polled_at, '%Y-%m-%d %H:%i:%s.%f') AS polled_at, p.active, p.load_id \
         FROM polls p JOIN stores s ON s.store_key = p.store_key ORDER BY s.store_id, p.polled_at",
    )
    .load(conn)
    .expect("read polls")
}

#[derive(QueryableByName, Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HoursRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub store_id: String,
    #[diesel(sql_type = diesel::sql_types::Unsigned<diesel::sql_types::Integer>)]
    pub row_no: u32,
    #[diesel(sql_type = diesel::sql_types::Unsigned<diesel::sql_types::TinyInt>)]
    pub weekday: u8,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub start_us: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub end_us: i64,
}

/// The business hours of the current snapshot (none when the pointer is NULL), read in one statement so
/// pointer and rows come from the same view.
pub fn current_hours(conn: &mut MysqlConnection) -> Vec<HoursRow> {
    sql_query(
        "SELECT s.store_id, h.row_no, h.weekday, h.start_us, h.end_us FROM current_snapshots c \
         JOIN business_hours h ON h.snapshot_id = c.snapshot_id JOIN stores s ON s.store_key = h.store_key \
         WHERE c.file_kind = 'hours' ORDER BY s.store_id, h.row_no",
    )
    .load(conn)
    .expect("read hours")
}

#[derive(QueryableByName, Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ZoneRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub store_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub timezone_str: String,
}

pub fn current_zones(conn: &mut MysqlConnection) -> Vec<ZoneRow> {
    sql_query(
        "SELECT s.store_id, z.timezone_str FROM current_snapshots c \
         JOIN store_timezones z ON z.snapshot_id = c.snapshot_id JOIN stores s ON s.store_key = z.store_key \
         WHERE c.file_kind = 'zones' ORDER BY s.store_id",
    )
    .load(conn)
    .expect("read zones")
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

pub fn count(conn: &mut MysqlConnection, sql_from_where: &str) -> i64 {
    sql_query(format!("SELECT COUNT(*) AS n FROM {sql_from_where}")).get_result::<Count>(conn).expect("count").n
}

pub fn store_ids(conn: &mut MysqlConnection) -> Vec<String> {
    shared_model::models::stores::all(conn).expect("stores").into_iter().map(|s| s.store_id).collect()
}
