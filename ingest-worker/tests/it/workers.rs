//! Several workers and readers at once, the loop, and the binary's commands: against the real MariaDB,
//! each test with its own database.

use std::process::Command;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection as _;
use ingest_worker::{INGEST_LOCK, IngestError, Settings, load_once_at, scheduler};
use shared_model::db::{self, NamedLock};
use shared_model::models::loads::LoadStatus;
use uptime_core::input::FileKind;

use crate::helpers::{TestDatabase, basic_folder, count, current_hours, loaded_at, polls};

#[test]
fn two_workers_loading_at_once_load_each_file_once() {
    let db = TestDatabase::new();
    let folder = basic_folder();
    let settings = Settings::new(db.url(), &folder.path);
    let start = Barrier::new(2);
    let reports = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    start.wait();
                    load_once_at(&settings, loaded_at())
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("no panic").expect("both runs happen")).collect::<Vec<_>>()
    });
    for kind in [FileKind::Polls, FileKind::Hours, FileKind::Zones] {
        let mut statuses: Vec<LoadStatus> = reports.iter().map(|r| r.file(kind).expect("reported").status).collect();
        statuses.sort_by_key(|s| s.as_str());
        assert_eq!(statuses, [LoadStatus::Loaded, LoadStatus::Unchanged], "{kind:?}: one loads, the other waits");
    }
    let mut conn = db.conn();
    assert_eq!(count(&mut conn, "polls"), 6);
    assert_eq!(count(&mut conn, "stores"), 4);
    assert_eq!(current_hours(&mut conn).len(), 5);
    assert_eq!(count(&mut conn, "snapshots"), 2);
}

#[test]
fn migrations_started_twice_at_once_apply_once() {
    let db = TestDatabase::empty("rm_t_");
    let start = Barrier::new(2);
    let applied: Vec<Vec<String>> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let mut conn = db::connect(db.url()).expect("connect");
                    start.wait();
                    db::run_migrations(&mut conn).expect("no error in either process")
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().expect("no panic")).collect()
    });
    let total = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations"))
        .expect("the migrations folder")
        .filter_map(Result::ok)
        .filter(|e| e.path().join("up.sql").is_file())
        .count();
    let mut all: Vec<String> = applied.concat();
    all.sort();
    all.dedup();
    assert_eq!(applied.iter().map(Vec::len).sum::<usize>(), all.len(), "no migration applied twice");
    let mut conn = db.conn();
    assert_eq!(count(&mut conn, "__diesel_schema_migrations") as usize, all.len());
    assert_eq!(all.len(), total, "every migration applied");
    let folder = basic_folder();
    assert!(load_once_at(&Settings::new(db.url(), &folder.path), loaded_at()).expect("run").succeeded());
}

#[test]
fn a_worker_that_cannot_get_the_lock_in_time_gives_up_without_writing() {
    let db = TestDatabase::new();
    let folder = basic_folder();
    let mut holder = db.conn();
    // The lock is this database's own: no other test's run takes it.
    let lock = NamedLock::acquire_for_database(&mut holder, INGEST_LOCK, 0)
        .expect("query")
        .expect("the test holds the ingest lock");
    let settings = Settings { ingest_lock_wait_seconds: 1, ..Settings::new(db.url(), &folder.path) };
    match load_once_at(&settings, loaded_at()) {
        Err(IngestError::LockTimeout { seconds: 1, .. }) => {}
        other => panic!("expected a lock timeout, got {other:?}"),
    }
    let mut conn = db.conn();
    assert_eq!(count(&mut conn, "loads") + count(&mut conn, "polls"), 0);
    lock.release(&mut holder).expect("release");
    assert!(load_once_at(&settings, loaded_at()).expect("run").succeeded());
}

/// An hours file of `stores` stores, each open on `weekday` only: a reader that sees rows of two weekdays
/// has seen two files at once.
fn hours_file(stores: usize, weekday: u8) -> String {
    let mut text = String::from("store_id,dayOfWeek,start_time_local,end_time_local\n");
    for s in 0..stores {
        text.push_str(&format!("store-{s},{weekday},09:00,17:00\nstore-{s},{weekday},18:00,22:00\n"));
    }
    text
}

#[test]
fn readers_never_see_a_mix_of_two_hours_files() {
    const STORES: usize = 3_000;
    let db = TestDatabase::new();
    let folder = basic_folder();
    folder.write("business_hours.csv", &hours_file(STORES, 0));
    let settings = Settings::new(db.url(), &folder.path);
    assert!(load_once_at(&settings, loaded_at()).expect("run").succeeded());

    let done = AtomicBool::new(false);
    let seen = std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut conn = db.conn();
            conn.batch_execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ").expect("isolation");
            let mut seen = [0usize; 2];
            while !done.load(Ordering::Relaxed) {
                conn.batch_execute("START TRANSACTION WITH CONSISTENT SNAPSHOT").expect("begin");
                let rows = current_hours(&mut conn);
                conn.batch_execute("COMMIT").expect("commit");
                let weekday = rows.first().map(|r| r.weekday).expect("a current snapshot at all times");
                assert_eq!(rows.len(), 2 * STORES, "one whole file");
                assert!(rows.iter().all(|r| r.weekday == weekday), "rows of two files in one view");
                seen[usize::from(weekday)] += 1;
            }
            seen
        });
        for swap in 1..=6u8 {
            folder.write("business_hours.csv", &hours_file(STORES, swap % 2));
            let report = load_once_at(&settings, loaded_at()).expect("run");
            assert_eq!(report.file(FileKind::Hours).map(|f| f.status), Some(LoadStatus::Loaded));
        }
        done.store(true, Ordering::Relaxed);
        reader.join().expect("the reader saw no mix")
    });
    assert!(seen.iter().sum::<usize>() > 0);
    let mut conn = db.conn();
    assert_eq!(count(&mut conn, "business_hours"), 2 * STORES as i64, "replaced snapshots are deleted");
}

#[test]
fn the_loop_loads_at_start_and_stops_when_asked() {
    let db = TestDatabase::new();
    let folder = basic_folder();
    let settings = Settings { ingest_interval_seconds: 1, ..Settings::new(db.url(), &folder.path) };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = runtime.spawn(scheduler::run(settings, async {
        let _ = stopped.await;
    }));
    // Two runs: the first loads, a later one finds the files unchanged.
    let mut conn = db.conn();
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&mut conn, "loads WHERE status = 'unchanged' AND file_kind = 'polls'") == 0 {
        assert!(Instant::now() < deadline, "the loop made no second run");
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.send(()).expect("the loop listens");
    let runs = runtime.block_on(async { tokio::time::timeout(Duration::from_secs(60), worker).await });
    let runs = runs.expect("the loop stops").expect("no panic");
    assert!(runs >= 2);
    assert_eq!(polls(&mut conn).len(), 6);
}

fn binary(db: &TestDatabase, data_dir: &std::path::Path, args: &[&str]) -> std::process::ExitStatus {
    Command::new(env!("CARGO_BIN_EXE_ingest-worker"))
        .args(args)
        .env("DATABASE_URL", db.url())
        .env("DATA_DIR", data_dir)
        .env("APP_CONFIG_DIR", data_dir.join("no-config-here"))
        .env("RUST_LOG", "warn")
        .status()
        .expect("the binary runs")
}

#[test]
fn once_exits_zero_when_every_file_loads_and_non_zero_when_one_fails() {
    let db = TestDatabase::empty("rm_t_");
    let folder = basic_folder();
    assert!(binary(&db, &folder.path, &["migrate"]).success());
    let mut conn = db.conn();
    assert_eq!(count(&mut conn, "polls"), 0, "migrate only migrates");
    assert!(binary(&db, &folder.path, &["--once"]).success());
    assert_eq!(count(&mut conn, "polls"), 6);
    folder.write("timezones.csv", "store_id,zone\n1001,UTC\n");
    let status = binary(&db, &folder.path, &["--once"]);
    assert_eq!(status.code(), Some(1));
    assert_eq!(binary(&db, &folder.path, &["--twice"]).code(), Some(2));
}

/// The binary repeats its load at the configured interval and stops cleanly on SIGTERM (what `docker stop`
/// sends).
#[test]
fn the_worker_repeats_at_the_configured_interval_and_stops_on_sigterm() {
    let db = TestDatabase::new();
    let folder = basic_folder();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ingest-worker"))
        .env("DATABASE_URL", db.url())
        .env("DATA_DIR", &folder.path)
        .env("APP_CONFIG_DIR", folder.path.join("no-config-here"))
        .env("APP__INGEST_INTERVAL_SECONDS", "1")
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("the binary starts");
    let mut conn = db.conn();
    let deadline = Instant::now() + Duration::from_secs(60);
    // A second run finds the polls unchanged: the interval came from the environment.
    while count(&mut conn, "loads WHERE file_kind = 'zones' AND status = 'unchanged'") == 0 {
        assert!(Instant::now() < deadline, "no second run within a minute");
        std::thread::sleep(Duration::from_millis(100));
    }
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill runs");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "still running 30 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn the_worker_refuses_a_database_that_is_not_migrated_and_says_how_to_migrate() {
    let db = TestDatabase::empty("rm_t_");
    let folder = basic_folder();
    let output = Command::new(env!("CARGO_BIN_EXE_ingest-worker"))
        .arg("--once")
        .env("DATABASE_URL", db.url())
        .env("DATA_DIR", &folder.path)
        .env("APP_CONFIG_DIR", folder.path.join("no-config-here"))
        .env("RUST_LOG", "error")
        .output()
        .expect("the binary runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("migration(s) pending (20261128000001"), "{stderr}");
    assert!(stderr.contains("ingest-worker migrate --users"), "{stderr}");
    let mut conn = db.conn();
    assert!(db::pending_migrations(&mut conn).expect("read").len() >= 6, "nothing was migrated");
}

/// `migrate --users` (the migrate step of compose and `deploy/local.sh`) makes the three users; the
/// ingest then loads as its own user, its password read from a file.
#[test]
fn the_migrate_step_creates_the_service_users_and_the_ingest_loads_as_its_own() {
    let db = TestDatabase::empty("rm_t_");
    let folder = basic_folder();
    let suffix = test_support::unique_suffix();
    let users: Vec<(&str, String)> = ["GATEWAY", "INGEST", "WORKER"]
        .iter()
        .map(|role| (*role, format!("rm_t_{}_{suffix}", role.to_lowercase())))
        .collect();
    let mut migrate = Command::new(env!("CARGO_BIN_EXE_ingest-worker"));
    migrate.args(["migrate", "--users"]).env("DATABASE_URL", db.url()).env("APP_CONFIG_DIR", &folder.path);
    for (role, user) in &users {
        let file = folder.write(&format!("{role}.password"), &format!("password-of-{user}\n"));
        migrate.env(format!("APP__DATABASE_USERS__{role}_USER"), user);
        migrate.env(format!("APP__DATABASE_USERS__{role}_PASSWORD_FILE"), file);
    }
    let drop_users = || {
        let mut drop = Command::new(env!("CARGO_BIN_EXE_ingest-worker"));
        drop.args(["database", "drop-users"]).env("DATABASE_URL", db.url()).env("APP_CONFIG_DIR", &folder.path);
        for (role, user) in &users {
            drop.env(format!("APP__DATABASE_USERS__{role}_USER"), user);
        }
        drop.status().expect("drop-users runs")
    };
    let migrated = migrate.status().expect("migrate runs");
    let ingest_user = &users[1].1;
    let url = db.url().replacen("root@", &format!("{ingest_user}@"), 1);
    let loaded = Command::new(env!("CARGO_BIN_EXE_ingest-worker"))
        .arg("--once")
        .env("DATABASE_URL", &url)
        .env("DATABASE_PASSWORD_FILE", folder.path.join("INGEST.password"))
        .env("DATA_DIR", &folder.path)
        .env("APP_CONFIG_DIR", folder.path.join("no-config-here"))
        .env("RUST_LOG", "warn")
        .status()
        .expect("the binary runs");
    let dropped = drop_users();
    assert!(migrated.success(), "migrate --users");
    assert!(loaded.success(), "the ingest loads as {ingest_user}");
    assert_eq!(count(&mut db.conn(), "polls"), 6);
    assert!(dropped.success());
    let left: i64 = count(&mut db.conn(), &format!("mysql.user WHERE user LIKE 'rm_t_%{suffix}'"));
    assert_eq!(left, 0, "drop-users dropped them");
}
