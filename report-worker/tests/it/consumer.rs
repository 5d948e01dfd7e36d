//! The consumer loop against a real MariaDB and RabbitMQ: in-process workers, and the real binary where a
//! process must be killed or signalled.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use report_worker::consumer;
use report_worker::job::JobHandler;
use report_worker::settings::{Settings, WorkerSettings};
use shared_model::models::reports;
use shared_model::queue::{DEAD_LETTER_ROUTING_KEY, JOB_ROUTING_KEY};
use test_support::worker::{InProcessWorker, worker_settings};
use test_support::{TestTopology, wait_for};

use crate::helpers::*;

pub(crate) async fn wait_for_ready(broker: &TestTopology, queue: &str, n: u32, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let ready = broker.ready(queue).await;
        if ready == n {
            return;
        }
        assert!(Instant::now() < deadline, "{queue} holds {ready} messages, expected {n}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_share_twenty_jobs_and_every_report_completes_once() {
    let db = TestDatabase::new();
    let broker = TestTopology::new();
    let mut conn = db.conn();
    let data = generate(&mut conn, 50, 20, 1_700_000_000_000_000);
    let expected = data.expected_csv();
    let ids: Vec<String> = (0..20).map(|_| create_report(&mut conn)).collect();

    let workers = [
        InProcessWorker::start(worker_settings(&db, &broker, WorkerSettings::default())),
        InProcessWorker::start(worker_settings(&db, &broker, WorkerSettings::default())),
    ];
    broker.publish(&ids).await;
    wait_for("20 complete reports", Duration::from_secs(60), || {
        ids.iter().all(|id| report_row(&mut conn, id).status == "Complete")
    })
    .await;
    for id in &ids {
        let row = report_row(&mut conn, id);
        assert_eq!(row.attempts, 1, "report {id} was worked on once: {row:?}");
        let csv = reports::read_csv(&mut conn, id).expect("read");
        assert_eq!(csv, expected);
    }
    for worker in workers {
        worker.stop().await;
    }
    assert_eq!(broker.ready(&broker.amqp.queue).await, 0);
    assert_eq!(broker.ready(&broker.amqp.dead_letter_queue).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_that_always_fails_is_dead_lettered_and_its_report_reads_failed() {
    let db = TestDatabase::new();
    let broker = TestTopology::new();
    let mut conn = db.conn();
    generate(&mut conn, 5, 5, 1_700_000_000_000_000);
    let report_id = create_report(&mut conn);
    // Every attempt fails where the report is stored, as a broken database would make it.
    conn.batch_execute("RENAME TABLE report_chunks TO report_chunks_gone").expect("break the schema");

    let worker = InProcessWorker::start(worker_settings(
        &db,
        &broker,
        WorkerSettings { retry_delay_ms: 50, ..WorkerSettings::default() },
    ));
    let started = Instant::now();
    broker.publish(std::slice::from_ref(&report_id)).await;
    wait_for_ready(&broker, &broker.amqp.dead_letter_queue, 1, Duration::from_secs(60)).await;
    assert!(started.elapsed() >= Duration::from_millis(50 + 100 + 200), "requeues wait longer each time");
    wait_for("the report to read Failed", Duration::from_secs(30), || {
        report_row(&mut conn, &report_id).status == "Failed"
    })
    .await;
    worker.stop().await;

    let row = report_row(&mut conn, &report_id);
    let limit = broker.amqp.delivery_limit;
    assert_eq!(row.attempts, limit + 1, "delivered once and redelivered up to the limit");
    let error = row.error.expect("a reason");
    assert!(error.contains(&format!("gave up after {} deliveries", limit + 1)), "{error}");
    assert!(!error.contains("report_chunks"), "the cause stays in the log, out of the row users read: {error}");
    assert_eq!(broker.ready(&broker.amqp.queue).await, 0);
    assert_eq!(broker.ready(&broker.amqp.dead_letter_queue).await, 1, "kept for a person to inspect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_lettered_job_marks_its_running_report_failed_but_leaves_a_complete_one() {
    let db = TestDatabase::new();
    let broker = TestTopology::new();
    let mut conn = db.conn();
    generate(&mut conn, 5, 5, 1_700_000_000_000_000);
    let running = create_report(&mut conn);
    let complete = create_report(&mut conn);

    let worker = InProcessWorker::start(worker_settings(&db, &broker, WorkerSettings::default()));
    broker.publish(std::slice::from_ref(&complete)).await;
    wait_for("the report to complete", Duration::from_secs(30), || {
        report_row(&mut conn, &complete).status == "Complete"
    })
    .await;
    // As if a worker had died on the last delivery the queue allowed: the job arrives dead-lettered.
    for id in [&running, &complete] {
        broker.publish_raw(&broker.amqp.dead_letter_exchange, DEAD_LETTER_ROUTING_KEY, &job_body(id), Some(id)).await;
    }
    wait_for("the running report to read Failed", Duration::from_secs(30), || {
        report_row(&mut conn, &running).status == "Failed"
    })
    .await;
    wait_for_ready(&broker, &broker.amqp.dead_letter_queue, 2, Duration::from_secs(10)).await;
    wait_for_ready(&broker, &broker.amqp.failed_marker_queue(), 0, Duration::from_secs(10)).await;
    worker.stop().await;
    assert!(report_row(&mut conn, &running).error.expect("reason").contains("dead-lettered"));
    assert_eq!(report_row(&mut conn, &complete).status, "Complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_that_is_not_a_job_is_dead_lettered_and_its_report_fails() {
    let db = TestDatabase::new();
    let broker = TestTopology::new();
    let mut conn = db.conn();
    let report_id = create_report(&mut conn);
    let worker = InProcessWorker::start(worker_settings(&db, &broker, WorkerSettings::default()));
    broker.publish_raw(&broker.amqp.exchange, JOB_ROUTING_KEY, b"this is not json", Some(&report_id)).await;
    wait_for_ready(&broker, &broker.amqp.dead_letter_queue, 1, Duration::from_secs(30)).await;
    worker.stop().await;
    let row = report_row(&mut conn, &report_id);
    assert_eq!((row.status.as_str(), row.attempts), ("Failed", 0));
    assert!(row.error.expect("reason").contains("not a report job"));
}

/// The real binary, configured through its environment as an operator would.
/// Set for a copy of this test binary that is to act as a paced report worker: the pause per store, µs.
const PACED_WORKER_VAR: &str = "REPORT_WORKER_TEST_PACE_PER_STORE_MICROS";

/// A report worker in a process of its own, with the settings of `db` and `broker`: the real binary, or
/// with a pause after each store (so a report lasts long enough to be killed or stopped in the middle),
/// this test binary running [`paced_worker_process`] alone.
pub(crate) fn spawn_binary(
    db: &TestDatabase,
    broker: &TestTopology,
    delay_per_store_micros: u64,
    settings: &[(&str, &str)],
) -> Child {
    let amqp = &broker.amqp;
    let mut command = if delay_per_store_micros == 0 {
        let mut command = Command::new(env!("CARGO_BIN_EXE_report-worker"));
        command.arg("run");
        command
    } else {
        let mut command = Command::new(std::env::current_exe().expect("the test binary's path"));
        let test = format!("{}paced_worker_process", module_prefix());
        command.args([test.as_str(), "--exact", "--ignored", "--nocapture", "--test-threads=1"]);
        command.env(PACED_WORKER_VAR, delay_per_store_micros.to_string());
        command
    };
    command
        .env("APP_CONFIG_DIR", "/nonexistent")
        .env("DATABASE_URL", db.url())
        .env("AMQP_URL", &amqp.url)
        .env("APP__AMQP__EXCHANGE", &amqp.exchange)
        .env("APP__AMQP__QUEUE", &amqp.queue)
        .env("APP__AMQP__DEAD_LETTER_EXCHANGE", &amqp.dead_letter_exchange)
        .env("APP__AMQP__DEAD_LETTER_QUEUE", &amqp.dead_letter_queue)
        .env("APP__AMQP__SHARD_QUEUE", &amqp.shard_queue)
        .env("APP__WORKER__PROGRESS_INTERVAL_MS", "50")
        .envs(settings.iter().copied())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start report-worker")
}

/// The test-name prefix of this module (`""` at the root of the test binary).
fn module_prefix() -> String {
    module_path!().split_once("::").map_or_else(String::new, |(_, rest)| format!("{rest}::"))
}

/// Not a test of its own: the body of the paced worker process [`spawn_binary`] starts. It runs the real
/// consumer, stopping on SIGTERM like the binary, with a pause after each store.
#[test]
#[ignore = "the body of a worker process that other tests start"]
fn paced_worker_process() {
    let pace: u64 = std::env::var(PACED_WORKER_VAR).expect("started by spawn_binary").parse().expect("µs");
    env_logger::init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let settings: Settings = shared_model::settings::load().expect("settings");
        let pool = consumer::open_database(&settings).await.expect("database");
        let handler = JobHandler::new(pool.clone(), settings.worker.clone(), settings.amqp.delivery_limit)
            .with_shard_queues(settings.amqp.shard_queues)
            .observed_by(PacePerStore(Duration::from_micros(pace)));
        consumer::consume(&settings, Arc::new(handler), pool, shared_model::shutdown::signalled())
            .await
            .expect("the worker runs until stopped");
    });
}

pub(crate) fn send_sigterm(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
}

pub(crate) async fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "the worker did not exit in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_report_completes_after_its_worker_is_killed_mid_report() {
    let db = TestDatabase::new();
    let broker = TestTopology::new();
    let mut conn = db.conn();
    let data = generate(&mut conn, 200, 10, 1_700_000_000_000_000);
    let report_id = create_report(&mut conn);
    broker.channel().await; // the queue exists before the job is published

    // 200 stores × 20 ms: about four seconds of work, killed in the middle.
    let mut doomed = spawn_binary(&db, &broker, 20_000, &[]);
    broker.publish(std::slice::from_ref(&report_id)).await;
    wait_for("progress on the first worker", Duration::from_secs(60), || {
        report_row(&mut conn, &report_id).stores_done.is_some_and(|done| done > 0)
    })
    .await;
    doomed.kill().expect("SIGKILL");
    let _ = doomed.wait();
    let row = report_row(&mut conn, &report_id);
    assert_eq!((row.status.as_str(), row.attempts), ("Running", 1), "killed mid-report: {row:?}");
    assert!(row.stores_done.is_some_and(|done| done < 200), "{row:?}");

    let mut survivor = spawn_binary(&db, &broker, 0, &[]);
    wait_for("the report to complete on the second worker", Duration::from_secs(60), || {
        report_row(&mut conn, &report_id).status == "Complete"
    })
    .await;
    let row = report_row(&mut conn, &report_id);
    assert_eq!(row.attempts, 2, "the broker delivered the job again");
    let csv = reports::read_csv(&mut conn, &report_id).expect("read");
    assert_eq!(csv, data.expected_csv());
    send_sigterm(&survivor);
    assert!(wait_exit(&mut survivor, Duration::from_secs(30)).await.success());
    assert_eq!(broker.ready(&broker.amqp.queue).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_sigterm_the_worker_finishes_the_job_in_hand_then_exits() {
    let db = TestDatabase::new();
    let broker = TestTopology::new();
    let mut conn = db.conn();
    generate(&mut conn, 100, 10, 1_700_000_000_000_000);
    let first = create_report(&mut conn);
    let second = create_report(&mut conn);
    broker.channel().await;

    let mut worker = spawn_binary(&db, &broker, 20_000, &[]);
    broker.publish(&[first.clone(), second.clone()]).await;
    wait_for("progress", Duration::from_secs(60), || {
        report_row(&mut conn, &first).stores_done.is_some_and(|done| done > 0)
    })
    .await;
    send_sigterm(&worker);
    let status = wait_exit(&mut worker, Duration::from_secs(60)).await;
    assert!(status.success(), "{status:?}");
    let row = report_row(&mut conn, &first);
    assert_eq!((row.status.as_str(), row.attempts), ("Complete", 1), "the job in hand finished: {row:?}");
    let row = report_row(&mut conn, &second);
    assert_eq!((row.status.as_str(), row.attempts), ("Running", 0), "no new job was started: {row:?}");
    assert_eq!(broker.ready(&broker.amqp.queue).await, 1, "the next job waits for another worker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_worker_comes_back_when_the_broker_cancels_its_consumer() {
    let db = TestDatabase::new();
    let broker = TestTopology::new();
    let mut conn = db.conn();
    let data = generate(&mut conn, 10, 10, 1_700_000_000_000_000);
    let worker = InProcessWorker::start(worker_settings(&db, &broker, WorkerSettings::default()));
    let (channel_conn, channel) = broker.channel().await;
    wait_for_consumers(&channel, &broker.amqp.queue, 1).await;

    // Deleting the queue cancels the consumer (as a failover of the queue leader can); the worker must
    // notice, reconnect and declare the topology again.
    channel.queue_delete(broker.amqp.queue.as_str().into(), Default::default()).await.expect("delete the queue");
    let (_again, channel) = broker.channel().await;
    wait_for_consumers(&channel, &broker.amqp.queue, 1).await;
    let report_id = create_report(&mut conn);
    broker.publish(std::slice::from_ref(&report_id)).await;
    wait_for("the report to complete", Duration::from_secs(30), || {
        report_row(&mut conn, &report_id).status == "Complete"
    })
    .await;
    assert_eq!(reports::read_csv(&mut conn, &report_id).expect("read"), data.expected_csv());
    worker.stop().await;
    let _ = channel_conn.close(200, "done".into()).await;
}

async fn wait_for_consumers(channel: &lapin::Channel, queue: &str, n: u32) {
    let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let q = channel.queue_declare(queue.into(), passive, Default::default()).await.expect("queue exists");
        if q.consumer_count() >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{queue} has {} consumers, expected {n}", q.consumer_count());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_with_a_malformed_report_id_is_acknowledged_and_nothing_loops() {
    let db = TestDatabase::new();
    let broker = TestTopology::new();
    let mut conn = db.conn();
    generate(&mut conn, 5, 5, 1_700_000_000_000_000);
    let valid = create_report(&mut conn);
    let worker = InProcessWorker::start(worker_settings(&db, &broker, WorkerSettings::default()));
    let hostile = "x'; DROP TABLE reports; --";
    broker.publish_raw(&broker.amqp.exchange, JOB_ROUTING_KEY, &job_body(hostile), Some(hostile)).await;
    // The same on the dead-letter path: the failed-marker drops it before any SQL.
    broker.publish_raw(&broker.amqp.dead_letter_exchange, DEAD_LETTER_ROUTING_KEY, &job_body(hostile), None).await;
    broker.publish(std::slice::from_ref(&valid)).await;
    wait_for("the valid report to complete", Duration::from_secs(30), || {
        report_row(&mut conn, &valid).status == "Complete"
    })
    .await;
    wait_for_ready(&broker, &broker.amqp.failed_marker_queue(), 0, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Stopped, the worker hands back whatever it had not acknowledged: nothing must come back.
    worker.stop().await;
    assert_eq!(broker.ready(&broker.amqp.queue).await, 0, "the hostile job was acknowledged, not requeued");
    assert_eq!(broker.ready(&broker.amqp.failed_marker_queue()).await, 0);
    assert_eq!(
        broker.ready(&broker.amqp.dead_letter_queue).await,
        1,
        "only the copy published there by the test: the job itself was not dead-lettered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_marker_message_whose_database_error_persists_is_given_up_after_the_cap() {
    let db = TestDatabase::new();
    let broker = TestTopology::new();
    let mut conn = db.conn();
    let report_id = create_report(&mut conn);
    let settings = WorkerSettings { marker_retry_delay_ms: 100, marker_max_attempts: 3, ..WorkerSettings::default() };
    let worker = InProcessWorker::start(worker_settings(&db, &broker, settings.clone()));
    // Every try to mark the report fails as a permanently broken database would make it.
    conn.batch_execute("RENAME TABLE reports TO reports_gone").expect("break the schema");
    let started = Instant::now();
    let body = job_body(&report_id);
    broker.publish_raw(&broker.amqp.dead_letter_exchange, DEAD_LETTER_ROUTING_KEY, &body, Some(&report_id)).await;
    // Uncapped, a copy would be in the queue or in hand all the time; three tries take about 0.2 s.
    tokio::time::sleep(Duration::from_secs(3)).await;
    worker.stop().await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(broker.ready(&broker.amqp.failed_marker_queue()).await, 0, "given up after the cap, not looping");
    assert_eq!(broker.ready(&broker.amqp.dead_letter_queue).await, 1, "the job stays for a person");
    conn.batch_execute("RENAME TABLE reports_gone TO reports").expect("repair the schema");
    assert_eq!(report_row(&mut conn, &report_id).status, "Running", "never marked: every try failed");

    // With the database back, the same copy is marked at its first try.
    let worker = InProcessWorker::start(worker_settings(&db, &broker, settings));
    broker.publish_raw(&broker.amqp.dead_letter_exchange, DEAD_LETTER_ROUTING_KEY, &body, Some(&report_id)).await;
    wait_for("the report to read Failed", Duration::from_secs(30), || {
        report_row(&mut conn, &report_id).status == "Failed"
    })
    .await;
    worker.stop().await;
}

#[tokio::test]
async fn the_worker_refuses_to_start_on_a_database_that_is_not_migrated() {
    let db = test_support::TestDatabase::empty("rm_t_");
    let topology = TestTopology::new();
    let settings = worker_settings(&db, &topology, WorkerSettings::default());
    let error = format!("{:#}", consumer::open_database(&settings).await.expect_err("an empty database is refused"));
    assert!(error.contains("migration(s) pending (20261128000001"), "{error}");
    assert!(error.contains("ingest-worker migrate --users"), "{error}");
}
