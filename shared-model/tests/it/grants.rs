//! The services' MySQL users (`shared_model::grants`) on the real MariaDB: each may do what its service
//! does and is refused the rest. Each test makes users of unique names, dropped at the end.

use chrono::Utc;
use diesel::RunQueryDsl as _;
use diesel::mysql::MysqlConnection;
use shared_model::db;
use shared_model::grants::{self, Role};
use shared_model::models::reports::{self, Chunking, Created, FinishedReport, StartOutcome};
use shared_model::models::{polls, stores, versions};
use test_support::{TestDatabase, new_report_id};

/// The statement fails because a privilege is missing (not for any other reason).
fn assert_denied(conn: &mut MysqlConnection, statement: &str) {
    match diesel::sql_query(statement).execute(conn) {
        Ok(_) => panic!("{statement:?} was allowed"),
        Err(e) => assert!(e.to_string().contains("denied"), "{statement:?} failed otherwise: {e}"),
    }
}

/// 2024-01-01 00:00 UTC in microseconds: the day of [`a_store_and_a_poll`]'s poll.
const DAY_2024_01_01: i64 = 1_704_067_200_000_000;

fn a_store_and_a_poll(db: &TestDatabase) {
    let mut admin = db.conn();
    stores::insert_missing(&mut admin, &["store-1"]).expect("a store");
    diesel::sql_query(
        "INSERT INTO polls (store_key, polled_at, active, load_id) \
         SELECT store_key, '2024-01-01 10:00:00', 1, 0 FROM stores",
    )
    .execute(&mut admin)
    .expect("a poll");
}

#[test]
fn the_gateway_user_creates_reports_but_writes_no_input_and_drops_nothing() {
    let db = TestDatabase::new();
    a_store_and_a_poll(&db);
    let gateway = db.user(Role::Gateway);
    let mut conn = gateway.conn();
    db::check_schema(&mut conn).expect("the gateway reads the migrations table");

    let id = new_report_id();
    let now = Utc::now().naive_utc();
    let created = reports::create_or_share(&mut conn, reports::NewReport::plain(&id, now, now))
        .expect("the gateway creates a report");
    assert!(matches!(created, Created::NeedsJob));
    assert!(reports::mark_queued(&mut conn, &id).expect("mark queued"));
    assert!(reports::find(&mut conn, &id).expect("read it back").is_some());
    versions::current(&mut conn).expect("the gateway reads the data version");

    assert_denied(&mut conn, "INSERT INTO polls (store_key, polled_at, active, load_id) VALUES (1, NOW(), 1, 0)");
    assert_denied(&mut conn, "INSERT INTO stores (store_id) VALUES ('x')");
    assert_denied(&mut conn, "DELETE FROM loads");
    assert_denied(&mut conn, "UPDATE current_snapshots SET snapshot_id = NULL");
    // A store's timeline reads that store's polls.
    let store = stores::find(&mut conn, &["store-1"]).expect("the gateway reads stores").remove(0);
    let week = polls::read_store(&mut conn, store.store_key, DAY_2024_01_01, DAY_2024_01_01 + 86_400_000_000)
        .expect("and a store's polls");
    assert_eq!(week.len(), 1);
    assert_denied(&mut conn, "DROP TABLE reports");
    assert_denied(&mut conn, "DROP TABLE polls");
    assert_denied(&mut conn, "TRUNCATE TABLE report_chunks");
    assert_denied(&mut conn, "ALTER TABLE reports ADD COLUMN x INT");
    assert_denied(&mut conn, "CREATE TABLE x (id INT)");
    assert_denied(&mut conn, &format!("DROP DATABASE `{}`", db.name()));
}

#[test]
fn the_ingest_user_writes_inputs_and_cannot_touch_reports() {
    let db = TestDatabase::new();
    let ingest = db.user(Role::Ingest);
    let mut conn = ingest.conn();
    db::check_schema(&mut conn).expect("the ingest reads the migrations table");

    stores::insert_missing(&mut conn, &["store-1", "store-2"]).expect("the ingest writes stores");
    assert_eq!(stores::all(&mut conn).expect("and reads them").len(), 2);
    polls::clear_staging(&mut conn).expect("the ingest empties the staging table (TRUNCATE)");

    assert_denied(&mut conn, "SELECT COUNT(*) FROM reports");
    assert_denied(&mut conn, "SELECT COUNT(*) FROM report_chunks");
    assert_denied(&mut conn, "UPDATE reports SET status = 'Failed'");
    assert_denied(&mut conn, "DELETE FROM report_chunks");
    // It keeps the day partitions of polls (and may so alter that one table), and no other table.
    assert_eq!(polls::add_day_partitions(&mut conn, 19_000, 19_002, 5).expect("the ingest adds days"), 3);
    assert_eq!(polls::drop_day_partitions_before(&mut conn, 19_001 * 86_400_000_000, 5).expect("and drops them"), 0);
    assert_eq!(polls::day_partitions(&mut conn).expect("it sees the partitions"), [19_001, 19_002]);
    assert_denied(&mut conn, "DROP TABLE stores");
    assert_denied(&mut conn, "ALTER TABLE stores ADD COLUMN x INT");
    assert_denied(&mut conn, "ALTER TABLE reports ADD COLUMN x INT");
}

#[test]
fn the_worker_user_reads_inputs_and_writes_reports() {
    let db = TestDatabase::new();
    a_store_and_a_poll(&db);
    let id = new_report_id();
    reports::create(&mut db.conn(), &id, Utc::now().naive_utc()).expect("a report, as the gateway makes it");
    let worker = db.user(Role::Worker);
    let mut conn = worker.conn();
    db::check_schema(&mut conn).expect("the worker reads the migrations table");

    assert_eq!(stores::all(&mut conn).expect("the worker reads stores").len(), 1);
    assert_eq!(polls::read_all(&mut conn).expect("and polls").len(), 1);
    versions::current(&mut conn).expect("and the data version");
    db::with_consistent_snapshot(&mut conn, versions::current).expect("in one snapshot");

    assert!(matches!(reports::mark_started(&mut conn, &id).expect("start"), StartOutcome::Started { .. }));
    assert!(reports::set_progress(&mut conn, &id, 1, 2).expect("progress and heartbeat"));
    let csv = b"store_id\nstore-1\n";
    let finished = FinishedReport { as_of: None, store_count: 1, csv };
    reports::store_complete(&mut conn, &id, finished, Chunking::default()).expect("the worker stores the CSV");
    assert_eq!(reports::read_csv(&mut conn, &id).expect("read it back"), csv);

    assert_denied(&mut conn, "INSERT INTO polls (store_key, polled_at, active, load_id) VALUES (1, NOW(), 0, 0)");
    assert_denied(&mut conn, "DELETE FROM stores");
    assert_denied(&mut conn, "INSERT INTO reports (report_id) VALUES ('x')");
    assert_denied(&mut conn, "DROP TABLE report_chunks");
}

#[test]
fn running_the_grants_again_rotates_the_password() {
    let db = TestDatabase::new();
    let worker = db.user(Role::Worker);
    let new_password = "rotated-password-0123456789";
    grants::apply(&mut db.conn(), Role::Worker, db.name(), &worker.name, new_password).expect("rotate");
    assert!(db::connect(&worker.url).is_err(), "the old password is refused");
    let server_and_database = &worker.url[worker.url.find('@').expect("a user in the URL")..];
    let rotated = format!("mysql://{}:{new_password}{server_and_database}", worker.name);
    let mut conn = db::connect(&rotated).expect("the new password works");
    db::check_schema(&mut conn).expect("with the same grants");
}

#[test]
fn a_database_never_migrated_lists_every_migration_as_pending() {
    let db = TestDatabase::empty("rm_t_");
    let error = db::check_schema(&mut db.conn()).expect_err("an empty database is behind");
    let message = error.to_string();
    assert!(message.contains("pending") && message.contains("ingest-worker migrate"), "{message}");
    let pending = db::pending_migrations(&mut db.conn()).expect("pending");
    assert!(pending.len() >= 6, "{pending:?}");
    db::run_migrations(&mut db.conn()).expect("migrate");
    assert_eq!(db::pending_migrations(&mut db.conn()).expect("none pending"), Vec::<String>::new());
}
