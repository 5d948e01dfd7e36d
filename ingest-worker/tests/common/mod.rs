//! Test helpers: a database of its own per test (created, migrated, dropped), a data folder of its own,
//! and readers of what the ingest wrote. Used by the integration tests and the benchmark.
#![allow(dead_code)] // each test file uses its own part of this

use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone as _, Utc};
use diesel::mysql::MysqlConnection;
use diesel::{Connection, QueryableByName, RunQueryDsl, sql_query};
use shared_model::db;

const ALPHABET: [char; 36] = [
    'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', 'p', 'q', 'r', 's', 't', 'u', 'v', 'w',
    'x', 'y', 'z', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9',
];

pub fn random_suffix() -> String {
    nanoid::nanoid!(12, &ALPHABET)
}

/// The server part of `DATABASE_URL` (default: root on 127.0.0.1:3306), and its query string if any.
pub fn server_url() -> (String, String) {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
    let (url, query) = match url.find('?') {
        Some(q) => (url[..q].to_owned(), url[q..].to_owned()),
        None => (url, String::new()),
    };
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let server = match url[after_scheme..].find('/') {
        Some(slash) => url[..after_scheme + slash].to_owned(),
        None => url,
    };
    (server, query)
}

/// A database named `<prefix><random>`, dropped when this value is dropped.
pub struct TestDb {
    pub name: String,
    pub url: String,
    admin_url: String,
}

impl TestDb {
    /// A new database with every migration applied.
    pub fn migrated() -> TestDb {
        TestDb::migrated_with_prefix("rm_t_")
    }

    /// [`TestDb::migrated`] with another name prefix (the benchmark's databases say so in their name).
    pub fn migrated_with_prefix(prefix: &str) -> TestDb {
        let test_db = TestDb::empty(prefix);
        let mut conn = test_db.conn();
        db::run_migrations(&mut conn).expect("migrations apply");
        test_db
    }

    /// A new database without any table.
    pub fn empty(prefix: &str) -> TestDb {
        let (server, query) = server_url();
        let name = format!("{prefix}{}", random_suffix());
        let admin_url = format!("{server}/information_schema{query}");
        let mut admin = MysqlConnection::establish(&admin_url).expect("the MySQL server answers");
        sql_query(format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4")).execute(&mut admin).expect("create db");
        TestDb { url: format!("{server}/{name}{query}"), name, admin_url }
    }

    pub fn conn(&self) -> MysqlConnection {
        MysqlConnection::establish(&self.url).expect("connect to the test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = MysqlConnection::establish(&self.admin_url) {
            let _ = sql_query(format!("DROP DATABASE IF EXISTS `{}`", self.name)).execute(&mut admin);
        }
    }
}

/// A folder removed when this value is dropped.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!("rm_ingest_{}", random_suffix()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path.join(name);
        std::fs::write(&path, text).expect("write data file");
        path
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.path.join(name)).expect("remove data file");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

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
