//! The SQL that differs between MySQL 8 and MariaDB, run against the real MariaDB. The MySQL 8 row-alias
//! upsert does not parse here (its exact text is a unit test of shared-model); the MySQL form of the
//! staged merge does, so both merges run here and must follow the same `load_id` rule.

use diesel::connection::SimpleConnection as _;
use diesel::mysql::MysqlConnection;
use diesel::{QueryableByName, RunQueryDsl, sql_query};
use shared_model::db::ServerFlavour;
use shared_model::models::polls::{self as polls_table, STAGE_PREFIX, UPSERT_PREFIX, upsert_on_duplicate};

use crate::helpers::TestDatabase;

#[derive(QueryableByName, Debug, PartialEq, Eq)]
struct Row {
    #[diesel(sql_type = diesel::sql_types::Unsigned<diesel::sql_types::Integer>)]
    store_key: u32,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    active: bool,
    #[diesel(sql_type = diesel::sql_types::Unsigned<diesel::sql_types::BigInt>)]
    load_id: u64,
}

fn rows(conn: &mut MysqlConnection) -> Vec<(u32, bool, u64)> {
    sql_query("SELECT store_key, active, load_id FROM polls ORDER BY store_key")
        .load::<Row>(conn)
        .expect("read polls")
        .into_iter()
        .map(|r| (r.store_key, r.active, r.load_id))
        .collect()
}

/// Load 1 wrote stores 1 and 2 active; load 2 brings 1 unchanged, 2 inactive, 3 new.
fn load_two_over_load_one(conn: &mut MysqlConnection, write_load_two: impl FnOnce(&mut MysqlConnection)) {
    conn.batch_execute(&format!(
        "{UPSERT_PREFIX}(1,'2023-01-01 00:00:00',1,1),(2,'2023-01-01 00:00:00',1,1){}",
        upsert_on_duplicate(ServerFlavour::MariaDb)
    ))
    .expect("load 1");
    write_load_two(conn);
    assert_eq!(rows(conn), [(1, true, 1), (2, false, 2), (3, true, 2)], "only changed or new rows take load 2");
}

const LOAD_TWO_ROWS: &str = "(1,'2023-01-01 00:00:00',1,2),(2,'2023-01-01 00:00:00',0,2),(3,'2023-01-01 00:00:00',1,2)";

#[test]
fn this_server_is_mariadb_and_its_upsert_keeps_the_load_id_of_unchanged_rows() {
    let db = TestDatabase::new();
    let mut conn = db.conn();
    assert_eq!(ServerFlavour::of(&mut conn).expect("version"), ServerFlavour::MariaDb);
    load_two_over_load_one(&mut conn, |conn| {
        let upsert = format!("{UPSERT_PREFIX}{LOAD_TWO_ROWS}{}", upsert_on_duplicate(ServerFlavour::MariaDb));
        conn.batch_execute(&upsert).expect("load 2");
    });
}

#[test]
fn both_forms_of_the_staged_merge_keep_the_load_id_of_unchanged_rows() {
    for flavour in [ServerFlavour::MariaDb, ServerFlavour::MySql] {
        let db = TestDatabase::new();
        let mut conn = db.conn();
        load_two_over_load_one(&mut conn, |conn| {
            conn.batch_execute(&format!("{STAGE_PREFIX}{LOAD_TWO_ROWS}")).expect("stage load 2");
            // Rows of another load left staged are not this load's.
            conn.batch_execute(&format!("{STAGE_PREFIX}(4,'2023-01-01 00:00:00',1,7)")).expect("stage load 7");
            // diesel's connections count rows found unchanged (CLIENT_FOUND_ROWS): 1 + 2 changed + 1 new.
            assert_eq!(polls_table::merge_staged(conn, flavour, 2).expect("merge"), 1 + 2 + 1, "{flavour:?}");
        });
        assert!(polls_table::clear_staging(&mut conn).expect("clear"));
        assert_eq!(polls_table::staged_count(&mut conn).expect("count"), 0);
        assert!(!polls_table::clear_staging(&mut conn).expect("clear"), "nothing left to clear");
    }
}
