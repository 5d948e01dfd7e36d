//! A polls load is visible wholly or not at all: a real `ingest-worker --once` killed (SIGKILL) at several
//! points of a large load leaves the polls of the previous load, a reader during a load sees the old or
//! the new polls and never a mix, and the next run completes the load.

use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use diesel::mysql::MysqlConnection;
use diesel::{QueryableByName, RunQueryDsl, sql_query};
use shared_model::models::loads::{self, LoadStatus};
use shared_model::models::polls as polls_table;

use crate::helpers::{TempDir, TestDatabase, count, polls};

/// 1 000 stores × `per_store` polls; `version` flips the status of every 7th poll of each store, so a
/// load seen in part (any key range of it) differs from both the old and the new polls.
fn polls_file(per_store: usize, version: usize) -> (String, Vec<(String, String, bool)>) {
    let mut text = String::from("store_id,timestamp_utc,status\n");
    let mut rows = Vec::with_capacity(1_000 * per_store);
    for store in 0..1_000usize {
        for i in 0..per_store {
            let active = ((store * 7_919 + i * 104_729) % 13 < 9) != (version % 2 == 1 && i % 7 == 0);
            let minutes = i * 30;
            let at = format!(
                "2023-01-{:02} {:02}:{:02}:{:02}.{:06}",
                10 + minutes / 1_440,
                minutes / 60 % 24,
                minutes % 60,
                store % 60,
                store
            );
            text.push_str(&format!("st{store:04},{at} UTC,{}\n", if active { "active" } else { "inactive" }));
            rows.push((format!("st{store:04}"), at, active));
        }
    }
    rows.sort();
    (text, rows)
}

type Rows = Vec<(String, String, bool)>;

fn visible(conn: &mut MysqlConnection) -> Rows {
    polls(conn).into_iter().map(|p| (p.store_id, p.polled_at, p.active)).collect()
}

fn spawn_once(db: &TestDatabase, data_dir: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ingest-worker"))
        .arg("--once")
        .env("DATABASE_URL", db.url())
        .env("DATA_DIR", data_dir)
        .env("APP_CONFIG_DIR", data_dir.join("no-config-here"))
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("the binary starts")
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = diesel::sql_types::Unsigned<diesel::sql_types::BigInt>)]
    id: u64,
}

fn last_load_id(conn: &mut MysqlConnection) -> u64 {
    sql_query("SELECT COALESCE(MAX(load_id), 0) AS id FROM loads").get_result::<Id>(conn).expect("max load id").id
}

/// Where in a load the worker is killed, as another connection sees it.
#[derive(Debug, Clone, Copy)]
enum KillPoint {
    /// The load record is written, nothing else yet.
    Started,
    /// Some rows are staged.
    Staging,
    /// The statement moving the staged rows into `polls` is running.
    Merging,
}

impl KillPoint {
    fn reached(self, conn: &mut MysqlConnection, database: &str, after_load_id: u64) -> bool {
        let running = count(conn, &format!("loads WHERE status = 'running' AND load_id > {after_load_id}")) > 0;
        match self {
            KillPoint::Started => running,
            KillPoint::Staging => running && polls_table::staged_count(conn).expect("staged rows") > 0,
            KillPoint::Merging => {
                count(
                    conn,
                    &format!(
                        "information_schema.PROCESSLIST WHERE DB = '{database}' \
                         AND INFO LIKE 'INSERT INTO polls %SELECT%polls_staging%'"
                    ),
                ) > 0
            }
        }
    }
}

/// Sessions on the test's database other than `conn`'s own.
fn other_sessions(conn: &mut MysqlConnection, database: &str) -> i64 {
    count(conn, &format!("information_schema.PROCESSLIST WHERE DB = '{database}' AND ID <> CONNECTION_ID()"))
}

/// Runs `ingest-worker --once` and kills it with SIGKILL once `point` is reached, then checks that the
/// polls are `old` both at once and once the server has finished with the dead worker's sessions (a
/// statement the worker sent runs to its end, then its transaction is rolled back).
fn kill_at(db: &TestDatabase, data_dir: &Path, point: KillPoint, old: &Rows) {
    let mut monitor = db.conn();
    let after = last_load_id(&mut monitor);
    let sessions_before = other_sessions(&mut monitor, db.name());
    let mut child = spawn_once(db, data_dir);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !point.reached(&mut monitor, db.name(), after) {
        if let Some(status) = child.try_wait().expect("wait") {
            panic!("the worker finished ({status:?}) before {point:?}");
        }
        assert!(Instant::now() < deadline, "{point:?} not reached in two minutes");
        std::thread::sleep(Duration::from_millis(2));
    }
    // Child::kill sends SIGKILL on Unix: the worker gets no chance to clean up.
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    assert!(visible(&mut monitor) == *old, "killed while {point:?}: the polls are not the old ones");
    while other_sessions(&mut monitor, db.name()) > sessions_before {
        assert!(Instant::now() < deadline, "the dead worker's sessions still open after two minutes");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(visible(&mut monitor) == *old, "killed while {point:?}: once settled, the polls are not the old ones");
}

#[test]
fn a_polls_load_killed_at_any_point_leaves_the_old_polls_and_the_next_run_completes_it() {
    let db = TestDatabase::new();
    let folder = TempDir::new();
    let (text, old) = polls_file(200, 0);
    folder.write("store_status.csv", &text);
    let first = spawn_once(&db, &folder.path).wait().expect("first load");
    assert!(first.success(), "{first:?}");
    let mut conn = db.conn();
    assert_eq!(visible(&mut conn), old);

    // The new version: every 7th status flipped, and ten more polls per store.
    let (text, new) = polls_file(210, 1);
    folder.write("store_status.csv", &text);
    let before_kills = last_load_id(&mut conn);
    for point in [KillPoint::Started, KillPoint::Staging, KillPoint::Merging] {
        kill_at(&db, &folder.path, point, &old);
    }

    // The next run completes the load while a reader keeps reading: every read is old or new.
    let done = AtomicBool::new(false);
    let (status, reads) = std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut reader = db.conn();
            let mut reads = (0usize, 0usize);
            while !done.load(Ordering::Relaxed) {
                let rows = visible(&mut reader);
                if rows == old {
                    reads.0 += 1;
                } else {
                    assert!(rows == new, "a reader saw {} polls that are neither the old nor the new ones", rows.len());
                    reads.1 += 1;
                }
            }
            reads
        });
        let status = spawn_once(&db, &folder.path).wait();
        done.store(true, Ordering::Relaxed);
        (status, reader.join().expect("the reader saw no mix"))
    });
    assert!(status.expect("completing run").success());
    assert!(reads.0 + reads.1 > 0, "the reader read during the load");
    assert_eq!(visible(&mut conn), new);
    assert_eq!(polls_table::staged_count(&mut conn).expect("staged"), 0, "the staging is cleared");

    // Only the statuses that changed took the new load id (what the report worker fetches by).
    let records = loads::all(&mut conn).expect("records");
    let polls_records: Vec<_> = records.iter().filter(|l| l.file_kind == "polls" && l.load_id > before_kills).collect();
    let (completed, killed) = polls_records.split_last().expect("records of the kills and of the completing run");
    assert_eq!(killed.len(), 3, "{polls_records:?}");
    for record in killed {
        assert_eq!(record.status, LoadStatus::Failed);
        assert!(record.error.as_deref().is_some_and(|e| e.contains("interrupted")), "{record:?}");
    }
    assert_eq!(completed.status, LoadStatus::Loaded);
    assert_eq!(completed.rows_loaded, 210_000);
    let changed = polls(&mut conn).into_iter().filter(|p| p.load_id == completed.load_id).count();
    assert_eq!(changed, 1_000 * (200usize.div_ceil(7) + 10), "flipped plus new polls");
}

/// A worker killed after its load committed but maybe before it cleared the staging: the new polls are
/// visible, and the next run finds the file unchanged and leaves nothing staged.
#[test]
fn a_worker_killed_after_its_load_committed_leaves_the_new_polls_and_no_staged_rows() {
    let db = TestDatabase::new();
    let folder = TempDir::new();
    let (text, new) = polls_file(120, 1);
    folder.write("store_status.csv", &text);
    let mut monitor = db.conn();
    let mut child = spawn_once(&db, &folder.path);
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(&mut monitor, "loads WHERE file_kind = 'polls' AND status = 'loaded'") == 0 {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "no loaded record in two minutes");
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().ok();
    child.wait().expect("reaped");
    assert_eq!(visible(&mut monitor), new);

    let again = spawn_once(&db, &folder.path).wait().expect("next run");
    assert!(again.success());
    assert_eq!(visible(&mut monitor), new);
    assert_eq!(polls_table::staged_count(&mut monitor).expect("staged"), 0);
    let last = loads::last_successful(&mut monitor, "polls").expect("record").expect("a successful load");
    assert_eq!(last.status, LoadStatus::Unchanged);
}
