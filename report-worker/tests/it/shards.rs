//! Reports cut into shards: the job handler alone (plan, parts, duplicates, a poison shard), then several
//! workers on real MariaDB and RabbitMQ (three workers on one report, a worker killed mid-shard, a
//! dead-lettered shard).

use std::collections::BTreeSet;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use report_worker::job::{Disposition, JobDelivery, JobHandler, Outcome};
use report_worker::settings::WorkerSettings;
use shared_model::messages::ShardJob;
use shared_model::models::reports;
use shared_model::models::shards::{self, ShardRow};
use shared_model::queue::{DEAD_LETTER_ROUTING_KEY, shard_routing_key};
use shared_model::schema::{report_shards, report_workers};
use test_support::worker::{InProcessWorker, worker_settings};
use test_support::{TestTopology, wait_for};
use uptime_core::engine::Horizon;
use uptime_core::input::{HoursRow, Poll};

use crate::consumer::{send_sigterm, spawn_binary, wait_exit, wait_for_ready};
use crate::helpers::*;

const NOW: i64 = 1_700_000_000_000_000;
const DELIVERY_LIMIT: u32 = 3;

/// Settings that cut a report into shards of `shard_stores` stores.
fn cut_every(shard_stores: u32) -> WorkerSettings {
    WorkerSettings { shard_stores, ..WorkerSettings::default() }
}

fn handler(db: &TestDatabase, settings: WorkerSettings) -> JobHandler {
    JobHandler::new(db.pool().clone(), settings, DELIVERY_LIMIT)
}

fn deliver(handler: &JobHandler, report_id: &str) -> Outcome {
    let body = job_body(report_id);
    handler.handle(&JobDelivery { body: &body, message_id: Some(report_id), delivery_count: 0 })
}

fn deliver_shard(handler: &JobHandler, job: &ShardJob) -> Outcome {
    let body = serde_json::to_vec(job).expect("json");
    handler.handle_shard(&JobDelivery { body: &body, message_id: Some(&job.message_id()), delivery_count: 0 })
}

fn planned(outcome: Outcome) -> (u32, Vec<ShardJob>) {
    match outcome {
        Outcome::Planned { shards_total, jobs, .. } => (shards_total, jobs),
        other => panic!("expected a plan, got {other:?}"),
    }
}

/// `generate`'s stores, plus stores whose ids sort before them but whose keys come after: shards are ranges
/// of keys, and the report's order is the ids', so the parts must be merged, not put one after the other.
fn data_in_two_orders(conn: &mut diesel::mysql::MysqlConnection, stores: usize) -> Data {
    let mut data = generate(conn, stores, 12, NOW);
    let early: Vec<String> = (0..stores / 3).map(|i| format!("early-{i:04}")).collect();
    let refs: Vec<&str> = early.iter().map(String::as_str).collect();
    let keys = insert_stores(conn, &refs);
    let load = insert_load(conn, "polls", "running");
    let polls: Vec<Poll> = early
        .iter()
        .enumerate()
        .flat_map(|(i, id)| {
            let store = keys[id];
            (0..6).map(move |n| Poll {
                store,
                at: NOW - (n * 7 + i as i64) * 3_600_000_000,
                active: (n + i as i64) % 3 != 0,
            })
        })
        .collect();
    upsert_polls(conn, load, &polls);
    finish_load(conn, load);
    data.upsert(&polls);
    data.ids.extend(early.iter().map(|id| (keys[id], id.clone())));
    data
}

fn shard_rows(conn: &mut diesel::mysql::MysqlConnection, report_id: &str) -> Vec<ShardRow> {
    shards::shards_of(conn, report_id).expect("shards")
}

#[test]
fn a_large_report_is_cut_into_shards_whose_parts_are_the_whole_report_byte_for_byte() {
    let db = TestDatabase::new();
    let mut conn = db.conn();
    let data = data_in_two_orders(&mut conn, 60);
    let whole = create_report(&mut conn);
    let sharded = create_report(&mut conn);
    assert!(matches!(deliver(&handler(&db, WorkerSettings::default()), &whole), Outcome::Completed { .. }));

    let worker = handler(&db, cut_every(15));
    let (shards_total, jobs) = planned(deliver(&worker, &sharded));
    assert_eq!((shards_total, jobs.len()), (6, 6), "80 stores in shards of 15");
    let row = report_row(&mut conn, &sharded);
    assert_eq!(row.status, "Running");
    assert_eq!(row.as_of, Some(naive(NOW)), "the plan pins now for every shard");

    // The report job again (as after a lost ack): the same plan, every shard still to publish.
    let numbers = |jobs: &[ShardJob]| jobs.iter().map(|job| job.shard_no).collect::<Vec<_>>();
    assert_eq!(numbers(&planned(deliver(&worker, &sharded)).1), numbers(&jobs));
    // Shards in any order; a redelivered report job then publishes only the shards not stored yet.
    for job in [&jobs[4], &jobs[1]] {
        assert!(matches!(deliver_shard(&worker, job), Outcome::ShardStored { report_complete: false, .. }));
    }
    assert_eq!(numbers(&planned(deliver(&worker, &sharded)).1), vec![0, 2, 3, 5]);
    let progress = reports::find(&mut conn, &sharded).expect("read").expect("report").progress().expect("progress");
    assert_eq!(progress.shards, Some((2, 6)));

    let mut last = None;
    for job in [&jobs[5], &jobs[0], &jobs[3], &jobs[2]] {
        last = Some(deliver_shard(&worker, job));
    }
    let Some(Outcome::ShardStored { shards_done: 6, report_complete: true, .. }) = last else {
        panic!("the last shard completes the report: {last:?}")
    };
    let expected = data.expected_csv();
    assert_eq!(reports::read_csv(&mut conn, &sharded).expect("read"), expected);
    assert_eq!(reports::read_csv(&mut conn, &whole).expect("read"), expected, "the same as computed whole");
    let (row, whole_row) = (report_row(&mut conn, &sharded), report_row(&mut conn, &whole));
    assert_eq!(row.status, "Complete");
    assert_eq!(
        (row.store_count, row.csv_bytes, row.as_of),
        (whole_row.store_count, whole_row.csv_bytes, whole_row.as_of)
    );
    assert_eq!(row.stores_done, row.store_count);

    // Duplicates of a shard, and of the report job, change nothing.
    let stored = shard_rows(&mut conn, &sharded);
    for job in &jobs {
        let outcome = deliver_shard(&worker, job);
        assert_eq!(outcome.disposition(), Disposition::Ack, "{outcome:?}");
        assert!(matches!(outcome, Outcome::AlreadyFinished { .. } | Outcome::ShardAlreadyStored { .. }), "{outcome:?}");
    }
    assert!(matches!(deliver(&worker, &sharded), Outcome::AlreadyFinished { .. }));
    assert_eq!(shard_rows(&mut conn, &sharded), stored);
    assert_eq!(reports::read_csv(&mut conn, &sharded).expect("read"), expected);
}

#[test]
fn a_sharded_report_with_unknown_time_equals_the_whole_one() {
    let db = TestDatabase::new();
    let mut conn = db.conn();
    let data = data_in_two_orders(&mut conn, 30);
    let report_id = create_report(&mut conn);
    conn.batch_execute(&format!("UPDATE reports SET unknown_after_minutes = 90 WHERE report_id = '{report_id}'"))
        .expect("ask for unknown time");
    let worker = handler(&db, cut_every(7));
    let (_, jobs) = planned(deliver(&worker, &report_id));
    for job in &jobs {
        deliver_shard(&worker, job);
    }
    let horizon = Horizon::minutes(90).expect("in range");
    assert_eq!(reports::read_csv(&mut conn, &report_id).expect("read"), data.expected_csv_with(horizon));
}

#[test]
fn a_poison_shard_fails_its_report_with_a_reason_and_the_other_shards_do_no_work() {
    let db = TestDatabase::new();
    let mut conn = db.conn();
    let data = generate(&mut conn, 40, 8, NOW);
    // One store of the third shard (keys 21 to 30) has an hours row no engine can read (weekday 9).
    let victim = data.ids.iter().find(|(_, id)| id.as_str() == "gen-store-000025").map(|(key, _)| *key).expect("store");
    let load = insert_load(&mut conn, "hours", "running");
    let mut hours = data.hours.clone();
    hours.push(HoursRow { store: victim, weekday: 9, start: 0, end: 3_600_000_000 });
    replace_hours(&mut conn, load, &hours);
    finish_load(&mut conn, load);

    let report_id = create_report(&mut conn);
    let worker = handler(&db, cut_every(10));
    let (_, jobs) = planned(deliver(&worker, &report_id));
    let outcomes: Vec<Outcome> = jobs.iter().map(|job| deliver_shard(&worker, job)).collect();
    assert!(matches!(outcomes[0], Outcome::ShardStored { .. }) && matches!(outcomes[1], Outcome::ShardStored { .. }));
    let Outcome::Failed { reason, .. } = &outcomes[2] else { panic!("shard 2 fails: {:?}", outcomes[2]) };
    assert!(reason.contains("impossible row"), "{reason}");
    assert!(matches!(outcomes[3], Outcome::AlreadyFinished { .. }), "{:?}", outcomes[3]);
    assert!(outcomes.iter().all(|o| o.disposition() == Disposition::Ack), "nothing loops: {outcomes:?}");
    let row = report_row(&mut conn, &report_id);
    assert_eq!(row.status, "Failed");
    assert!(row.error.expect("a reason").contains("impossible row"));
}

#[test]
fn a_worker_keeps_only_the_shards_it_owns_once_it_knows_its_rank() {
    let db = TestDatabase::new();
    let mut conn = db.conn();
    generate(&mut conn, 60, 8, NOW);
    let report_id = create_report(&mut conn);
    let worker = handler(&db, cut_every(10));
    let (_, jobs) = planned(deliver(&worker, &report_id));
    for job in &jobs {
        deliver_shard(&worker, job);
    }
    assert_eq!(worker.cached_datasets().0, 6, "a lone worker keeps every shard it computed");
    // Number 1 of 3 live workers owns slots 1, 4, 7, 10: shards 1 and 4 of six.
    worker.set_ownership(1, 3);
    assert_eq!(worker.cached_datasets().0, 2);
    // A shard it computes for a busy owner is not kept.
    let next = create_report(&mut conn);
    let (_, jobs) = planned(deliver(&worker, &next));
    deliver_shard(&worker, &jobs[0]);
    assert_eq!(worker.cached_datasets().0, 2);
}

/// Waits until `n` workers are in the registry, then long enough for each to take its shard queues.
async fn wait_for_registered_workers(conn: &mut diesel::mysql::MysqlConnection, n: i64, interval_ms: u64) {
    wait_for("the workers to register", Duration::from_secs(30), || {
        report_workers::table.count().get_result::<i64>(conn).expect("count") >= n
    })
    .await;
    tokio::time::sleep(Duration::from_millis(interval_ms * 3)).await;
}

fn fast_registry(shard_stores: u32) -> WorkerSettings {
    WorkerSettings { registry_interval_ms: 100, ..cut_every(shard_stores) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_workers_compute_one_report_each_taking_its_own_shards() {
    let db = TestDatabase::new();
    let broker = TestTopology::new();
    let mut conn = db.conn();
    let data = data_in_two_orders(&mut conn, 45);
    let workers: Vec<InProcessWorker> =
        (0..3).map(|_| InProcessWorker::start(worker_settings(&db, &broker, fast_registry(10)))).collect();
    wait_for_registered_workers(&mut conn, 3, 100).await;

    let report_id = create_report(&mut conn);
    broker.publish(std::slice::from_ref(&report_id)).await;
    wait_for("the report to complete", Duration::from_secs(60), || {
        report_row(&mut conn, &report_id).status == "Complete"
    })
    .await;
    assert_eq!(reports::read_csv(&mut conn, &report_id).expect("read"), data.expected_csv());
    let shards = shard_rows(&mut conn, &report_id);
    assert_eq!(shards.len(), 6, "60 stores in shards of 10");
    let by: BTreeSet<String> = shards.iter().filter_map(|s| s.worker.clone()).collect();
    assert_eq!(by.len(), 3, "each of the three workers computed shards: {shards:?}");
    assert!(shards.iter().all(|s| s.attempts == 1), "each shard computed once: {shards:?}");

    // A second report on the same data: each slot's shard goes back to the worker that holds it.
    let next = create_report(&mut conn);
    broker.publish(std::slice::from_ref(&next)).await;
    wait_for("the second report to complete", Duration::from_secs(60), || {
        report_row(&mut conn, &next).status == "Complete"
    })
    .await;
    let again = shard_rows(&mut conn, &next);
    for (first, second) in shards.iter().zip(&again) {
        assert_eq!(first.worker, second.worker, "shard {} stays with its worker", first.shard_no);
    }
    for worker in workers {
        worker.stop().await;
    }
    for slot in 0..broker.amqp.shard_queues {
        assert_eq!(broker.ready(&broker.amqp.shard_queue_name(slot)).await, 0);
    }
    let left: i64 = report_workers::table.count().get_result(&mut conn).expect("count");
    assert_eq!(left, 0, "stopped workers leave the registry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sharded_report_completes_after_a_worker_is_killed_mid_shard() {
    let db = TestDatabase::new();
    let broker = TestTopology::new();
    let mut conn = db.conn();
    let data = data_in_two_orders(&mut conn, 60);
    let report_id = create_report(&mut conn);
    broker.channel().await;
    let settings = [("APP__WORKER__SHARD_STORES", "20"), ("APP__WORKER__REGISTRY_INTERVAL_MS", "200")];

    // 80 stores × 20 ms in four shards: seconds of work, killed during a shard.
    let mut doomed = spawn_binary(&db, &broker, 20_000, &settings);
    broker.publish(std::slice::from_ref(&report_id)).await;
    wait_for("a shard in progress", Duration::from_secs(60), || {
        report_shards::table
            .filter(report_shards::report_id.eq(&report_id))
            .filter(report_shards::status.eq("Running"))
            .select(report_shards::stores_done)
            .load::<Option<u32>>(&mut conn)
            .expect("shards")
            .iter()
            .any(|done| done.is_some_and(|n| n > 0))
    })
    .await;
    doomed.kill().expect("SIGKILL");
    let _ = doomed.wait();
    assert_eq!(report_row(&mut conn, &report_id).status, "Running");

    let mut survivor = spawn_binary(&db, &broker, 0, &settings);
    wait_for("the report to complete on the survivor", Duration::from_secs(60), || {
        report_row(&mut conn, &report_id).status == "Complete"
    })
    .await;
    assert_eq!(reports::read_csv(&mut conn, &report_id).expect("read"), data.expected_csv());
    let shards = shard_rows(&mut conn, &report_id);
    assert!(shards.iter().any(|s| s.attempts == 2), "the killed shard was delivered again: {shards:?}");
    send_sigterm(&survivor);
    assert!(wait_exit(&mut survivor, Duration::from_secs(30)).await.success());
    for slot in 0..broker.amqp.shard_queues {
        assert_eq!(broker.ready(&broker.amqp.shard_queue_name(slot)).await, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_lettered_shard_fails_its_report_and_duplicate_shards_change_nothing() {
    let db = TestDatabase::new();
    let broker = TestTopology::new();
    let mut conn = db.conn();
    let data = generate(&mut conn, 30, 8, NOW);
    let worker = InProcessWorker::start(worker_settings(&db, &broker, fast_registry(10)));

    let complete = create_report(&mut conn);
    broker.publish(std::slice::from_ref(&complete)).await;
    wait_for("the report to complete", Duration::from_secs(60), || {
        report_row(&mut conn, &complete).status == "Complete"
    })
    .await;
    let stored = shard_rows(&mut conn, &complete);
    // Duplicates of every shard (as the outbox or a lost ack makes them): acknowledged without work.
    for shard_no in 0..3 {
        let job = ShardJob {
            report_id: complete.clone(),
            shard_no,
            shards_total: 3,
            requested_at: chrono::Utc::now().to_rfc3339(),
        };
        let body = serde_json::to_vec(&job).expect("json");
        let slot = broker.amqp.shard_slot(shard_no);
        broker.publish_raw(&broker.amqp.exchange, &shard_routing_key(slot), &body, Some(&job.message_id())).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for slot in 0..3 {
        wait_for_ready(&broker, &broker.amqp.shard_queue_name(slot), 0, Duration::from_secs(10)).await;
    }
    assert_eq!(shard_rows(&mut conn, &complete), stored);
    assert_eq!(reports::read_csv(&mut conn, &complete).expect("read"), data.expected_csv());

    // A shard whose job died on its last delivery reaches the failed-marker: its report fails.
    let running = create_report(&mut conn);
    let plan = shards::Plan {
        as_of: Some(naive(NOW)),
        hours_snapshot: None,
        zones_snapshot: None,
        shards: shards::KeyRange::cut_at(&[11]),
    };
    shards::plan(&mut conn, &running, &plan).expect("plan");
    let dead = ShardJob { report_id: running.clone(), shard_no: 1, shards_total: 2, requested_at: "now".into() };
    let body = serde_json::to_vec(&dead).expect("json");
    broker
        .publish_raw(&broker.amqp.dead_letter_exchange, DEAD_LETTER_ROUTING_KEY, &body, Some(&dead.message_id()))
        .await;
    wait_for("the report to read Failed", Duration::from_secs(30), || {
        report_row(&mut conn, &running).status == "Failed"
    })
    .await;
    assert!(report_row(&mut conn, &running).error.expect("reason").contains("dead-lettered"));
    worker.stop().await;
}
