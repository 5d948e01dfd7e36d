//! The life of a report row after its trigger (issue 10): expiry (410, CSV deleted), one computation
//! per data version, and the sweep that publishes again a job lost after the broker confirmed it.

use std::time::{Duration, Instant};

use diesel::prelude::*;
use report_worker::settings::WorkerSettings;
use shared_model::models::reports;
use shared_model::schema::report_chunks;
use shared_model::settings::DatabaseSettings;
use test_support::worker::InProcessWorker;
use test_support::{TempDir, report_fixture};

use crate::helpers::{TestApp, new_report_id, sample_csv, spawn_app_with};

fn chunk_count(app: &TestApp, report_id: &str) -> i64 {
    report_chunks::table
        .filter(report_chunks::report_id.eq(report_id))
        .count()
        .get_result(&mut app.conn())
        .expect("count chunks")
}

async fn wait_until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} did not happen within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn json(app: &TestApp, path: &str) -> (u16, serde_json::Value) {
    let response = app.get(path).await;
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

#[tokio::test]
async fn an_expired_report_answers_410_and_its_csv_is_deleted() {
    let app = spawn_app_with(|s| s.reports.retention_seconds = 2).await;
    let report_id = new_report_id();
    app.insert_complete(&report_id, &sample_csv(5), 5, 64);
    assert!(chunk_count(&app, &report_id) > 1);

    let (status, fresh) = json(&app, &format!("/get_report/{report_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(fresh["status"], "Complete");
    let finished = app.report(&report_id).finished_at.expect("finished");
    let expected = api_gateway::rfc3339_micros((finished + chrono::Duration::seconds(2)).and_utc());
    assert_eq!(fresh["expires_at"], expected.as_str());
    assert_eq!(app.get(&format!("/download/{report_id}")).await.status(), 200);

    // The gateway's own relay sweeps every 200 ms.
    wait_until("the CSV is deleted", Duration::from_secs(10), async || chunk_count(&app, &report_id) == 0).await;
    let (status, gone) = json(&app, &format!("/get_report/{report_id}")).await;
    assert_eq!(status, 410, "{gone}");
    assert!(gone["error"].as_str().is_some_and(|e| e.contains("expired")), "{gone}");
    let (status, gone) = json(&app, &format!("/download/{report_id}")).await;
    assert_eq!(status, 410, "{gone}");
    assert!(app.report(&report_id).csv_deleted_at.is_some());
    let (status, _) = json(&app, &format!("/get_report/{}", new_report_id())).await;
    assert_eq!(status, 404, "an unknown id stays unknown");
}

#[tokio::test]
async fn a_failed_report_expires_too() {
    let app = spawn_app_with(|s| s.reports.retention_seconds = 1).await;
    let report_id = new_report_id();
    app.insert_running(&report_id);
    assert!(reports::mark_failed(&mut app.conn(), &report_id, "broken on purpose").expect("fail"));
    let (status, failed) = json(&app, &format!("/get_report/{report_id}")).await;
    assert_eq!((status, failed["status"].as_str()), (200, Some("Failed")));
    assert!(failed["expires_at"].is_string(), "{failed}");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(app.get(&format!("/get_report/{report_id}")).await.status(), 410);
}

fn start_worker(app: &TestApp) -> InProcessWorker {
    InProcessWorker::start(report_worker::settings::Settings {
        database: DatabaseSettings { pool_size: 4, ..app.settings.database.clone() },
        amqp: app.topology.amqp.clone(),
        worker: WorkerSettings::default(),
    })
}

async fn load_fixture(app: &TestApp) {
    let database_url = app.settings.database.url.clone();
    tokio::task::spawn_blocking(move || {
        let folder = report_fixture("worker-mix");
        let run = ingest_worker::load_once_at(&ingest_worker::Settings::new(database_url, &folder), chrono::Utc::now())
            .expect("the ingest run happens");
        assert!(run.succeeded(), "every file loads: {run:?}");
    })
    .await
    .expect("the loading task");
}

async fn trigger_id(app: &TestApp) -> String {
    let response = app.trigger().await;
    assert_eq!(response.status(), 202);
    let body: serde_json::Value = response.json().await.expect("json");
    body["report_id"].as_str().expect("report_id").to_owned()
}

fn metric(body: &str, name: &str) -> Option<String> {
    body.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ').map(str::to_owned))
}

#[tokio::test]
async fn twenty_triggers_on_unchanged_data_share_one_computation() {
    let app = spawn_app_with(|_| {}).await;
    load_fixture(&app).await;
    let worker = start_worker(&app);

    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(trigger_id(&app).await);
    }
    for id in &ids {
        wait_until("every report completes", Duration::from_secs(30), async || {
            json(&app, &format!("/get_report/{id}")).await.1["status"] == "Complete"
        })
        .await;
    }
    worker.stop().await;

    let own: Vec<reports::Report> =
        ids.iter().map(|id| app.report(id)).filter(|r| r.shares_report_id.is_none()).collect();
    assert_eq!(own.len(), 1, "one report computes, the others share it");
    assert_eq!(own[0].attempts, 1, "computed once");
    let computing = own[0].report_id.clone();
    let chunk_owners: Vec<String> =
        report_chunks::table.select(report_chunks::report_id).distinct().load(&mut app.conn()).expect("chunk owners");
    assert_eq!(chunk_owners, vec![computing.clone()], "one stored CSV");
    let expected = app.get(&format!("/download/{computing}")).await.bytes().await.expect("csv");
    assert!(!expected.is_empty());
    for id in &ids {
        let (status, body) = json(&app, &format!("/get_report/{id}")).await;
        assert_eq!(status, 200);
        assert_eq!(body["report_id"], id.as_str());
        assert!(body["data_version"]["polls_load_id"].as_u64().is_some_and(|n| n > 0), "{body}");
        assert_eq!(body["data_version"], json(&app, &format!("/get_report/{computing}")).await.1["data_version"]);
        let csv = app.get(&format!("/download/{id}")).await;
        assert_eq!(csv.status(), 200);
        assert_eq!(csv.bytes().await.expect("csv"), expected, "report {id} serves the shared CSV");
    }
    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    assert_eq!(metric(&metrics, "restaurant_monitor_report_computations_total").as_deref(), Some("1"), "{metrics}");

    // New data: the next trigger computes again.
    load_fixture_changed(&app).await;
    let fresh = trigger_id(&app).await;
    assert!(app.report(&fresh).shares_report_id.is_none(), "changed data is computed anew");
}

/// A new load of a changed polls file, so the data version moves.
async fn load_fixture_changed(app: &TestApp) {
    let database_url = app.settings.database.url.clone();
    tokio::task::spawn_blocking(move || {
        let scratch = TempDir::new();
        for entry in std::fs::read_dir(report_fixture("worker-mix")).expect("fixture folder") {
            let path = entry.expect("entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).expect("name").to_owned();
            let mut text = std::fs::read_to_string(&path).expect("fixture file");
            if name == "store_status.csv" {
                text.push_str("9999999999999999999,active,2023-01-25 18:00:00.000000 UTC\n");
            }
            scratch.write(&name, &text);
        }
        let run =
            ingest_worker::load_once_at(&ingest_worker::Settings::new(database_url, &scratch.path), chrono::Utc::now())
                .expect("the ingest run happens");
        assert!(run.succeeded(), "every file loads: {run:?}");
    })
    .await
    .expect("the loading task");
}

/// Empties the test's job queue, as a broker losing the job would; returns the jobs dropped.
async fn purge_jobs(app: &TestApp) -> u32 {
    let (_connection, channel) = app.topology.channel().await;
    channel
        .queue_purge(app.topology.amqp.queue.as_str().into(), lapin::options::QueuePurgeOptions::default())
        .await
        .expect("purge")
}

async fn stale_gauge(app: &TestApp) -> Option<String> {
    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    metric(&metrics, "restaurant_monitor_reports_stale_running")
}

/// A gateway whose own relay makes one pass at start and no other, so the test runs the sweeps.
async fn spawn_quiet_app(stale_after_seconds: u64) -> TestApp {
    spawn_app_with(|s| {
        s.reports.stale_after_seconds = stale_after_seconds;
        s.gateway.relay_interval_ms = 600_000;
    })
    .await
}

#[tokio::test]
async fn a_job_purged_from_the_queue_completes_after_the_sweep() {
    let app = spawn_quiet_app(1).await;
    let report_id = trigger_id(&app).await;
    assert!(app.report(&report_id).queued_at.is_some(), "the broker confirmed the job");
    assert_eq!(purge_jobs(&app).await, 1, "the job is lost");
    assert_eq!(stale_gauge(&app).await.as_deref(), Some("0"), "not stale yet");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(stale_gauge(&app).await.as_deref(), Some("1"), "no worker started it for a second");

    let worker = start_worker(&app);
    let relay = app.start_relay(Duration::from_secs(60));
    wait_until("the report completes", Duration::from_secs(20), async || {
        json(&app, &format!("/get_report/{report_id}")).await.1["status"] == "Complete"
    })
    .await;
    relay.stop().await;
    worker.stop().await;
    let report = app.report(&report_id);
    // Once, unless a busy machine kept the new worker from starting the job within a second.
    assert!(report.redeliveries >= 1, "published again");
    assert!(report.heartbeat_at.is_some(), "the worker stamped its heartbeat");
    assert_eq!(stale_gauge(&app).await.as_deref(), Some("0"));
}

#[tokio::test]
async fn a_job_lost_more_often_than_the_delivery_limit_fails_with_a_reason() {
    let app = spawn_quiet_app(1).await;
    let report_id = trigger_id(&app).await;
    let publisher = std::sync::Arc::new(api_gateway::publisher::JobPublisher::new(
        app.topology.amqp.clone(),
        Duration::from_secs(2),
        tokio::runtime::Handle::current(),
    ));
    let relay = api_gateway::outbox::OutboxRelay::new(
        app.pool.clone(),
        publisher,
        api_gateway::outbox::RelaySettings {
            interval: Duration::from_millis(100),
            grace: Duration::from_secs(60),
            batch: 10,
            publish_timeout: Duration::from_secs(2),
            retention: app.settings.reports.retention(),
            stale_after: chrono::Duration::seconds(1),
            delivery_limit: 1,
            sweep_batch: 10,
        },
    );

    // Nobody consumes, and every job published is lost.
    assert_eq!(purge_jobs(&app).await, 1);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let first = relay.run_once().await.expect("pass");
    assert_eq!((first.republished, first.failed_stale), (1, 0), "published again");
    assert_eq!(purge_jobs(&app).await, 1);
    let (_, running) = json(&app, &format!("/get_report/{report_id}")).await;
    assert_eq!(running["status"], "Running");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let second = relay.run_once().await.expect("pass");
    assert_eq!((second.republished, second.failed_stale), (0, 1), "the delivery limit is reached");

    let (_, failed) = json(&app, &format!("/get_report/{report_id}")).await;
    assert_eq!(failed["status"], "Failed");
    assert!(failed["error"].as_str().is_some_and(|e| e.contains("lost")), "{failed}");
    assert_eq!(app.report(&report_id).redeliveries, 1);
    assert_eq!(purge_jobs(&app).await, 0, "nothing published after the limit");
}

#[tokio::test]
async fn the_gateway_refuses_to_start_on_a_database_that_is_not_migrated() {
    let database = test_support::TestDatabase::empty("rm_t_");
    let error = crate::helpers::start_error_on(&database, |_| {}).await;
    assert!(error.contains("migration(s) pending (20261128000001"), "{error}");
    assert!(error.contains("ingest-worker migrate --users"), "{error}");
    let pending = shared_model::db::pending_migrations(&mut database.conn()).expect("read");
    assert!(pending.len() >= 6, "the gateway migrated nothing: {pending:?}");
}
