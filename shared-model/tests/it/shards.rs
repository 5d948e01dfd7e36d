//! How reports are cut into shards (`shared_model::models::shards`) on the real MariaDB: the cuts of a
//! new plan, kept from the previous plan while they fit, so the data workers keep for a shard stays good.

use shared_model::models::shards::{self, KeyRange, Plan};
use shared_model::models::stores;
use test_support::{TestDatabase, create_report};

fn add_stores(db: &TestDatabase, from: usize, count: usize) {
    let ids: Vec<String> = (from..from + count).map(|i| format!("store-{i:05}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    stores::insert_missing(&mut db.conn(), &refs).expect("stores");
}

/// Plans a new report with the cuts a worker would choose now, and returns them.
fn plan_now(db: &TestDatabase, stores_per_shard: u32) -> Vec<u32> {
    let mut conn = db.conn();
    let cuts = shards::plan_cuts(&mut conn, stores_per_shard).expect("cuts");
    let report_id = create_report(&mut conn);
    let plan = Plan { as_of: None, hours_snapshot: None, zones_snapshot: None, shards: KeyRange::cut_at(&cuts) };
    shards::plan(&mut conn, &report_id, &plan).expect("plan");
    cuts
}

#[test]
fn a_plan_keeps_the_previous_cuts_while_they_fit_and_cuts_only_a_last_shard_grown_too_large() {
    let db = TestDatabase::new();
    add_stores(&db, 0, 100);
    // Keys 1 to 100 in shards of 25.
    assert_eq!(plan_now(&db, 25), vec![26, 51, 76]);
    // New stores join the last shard: up to 1.5 times its share, nothing moves.
    add_stores(&db, 100, 12);
    assert_eq!(plan_now(&db, 25), vec![26, 51, 76]);
    // Past it, only the last shard is cut again: the earlier ranges (and what workers keep) stay.
    add_stores(&db, 112, 30);
    assert_eq!(plan_now(&db, 25), vec![26, 51, 76, 101, 126]);
    // Shards of 25 are still at least half of 50: kept. Under half of 60: cut afresh.
    assert_eq!(plan_now(&db, 50), vec![26, 51, 76, 101, 126]);
    assert_eq!(plan_now(&db, 60), vec![61, 121]);
}
