//! Admission control (issue 11, item 2): triggers per token per minute, reports waiting for a worker
//! over all clients, and downloads at once. A refused trigger stores and queues nothing.

use std::time::Duration;

use crate::helpers::{TestApp, new_report_id, sample_csv, spawn_app_with, take_message};

fn retry_after(response: &reqwest::Response) -> u64 {
    response.headers()["retry-after"].to_str().expect("ascii").parse().expect("Retry-After in seconds")
}

async fn jobs_queued(app: &TestApp) -> usize {
    let (_connection, channel) = app.topology.channel().await;
    let mut jobs = 0;
    while take_message(&channel, &app.settings.amqp.queue, Duration::from_millis(500)).await.is_some() {
        jobs += 1;
    }
    jobs
}

async fn trigger_as(app: &TestApp, role: &str) -> reqwest::Response {
    app.request_as(Some(role), reqwest::Method::POST, "/trigger_report").await
}

#[tokio::test]
async fn a_token_beyond_its_triggers_per_minute_gets_429_with_retry_after_and_nothing_is_stored() {
    let app = spawn_app_with(|s| s.auth.triggers_per_minute = 2).await;

    assert_eq!(trigger_as(&app, "reporter").await.status(), 202);
    app.record_polls_load();
    assert_eq!(trigger_as(&app, "reporter").await.status(), 202);
    app.record_polls_load();
    let refused = trigger_as(&app, "reporter").await;

    assert_eq!(refused.status(), 429);
    let wait = retry_after(&refused);
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    let body: serde_json::Value = refused.json().await.expect("json");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("2 reports a minute")), "{body}");
    assert_eq!(app.report_rows(), 2, "the refused trigger stored nothing");
    assert_eq!(jobs_queued(&app).await, 2, "and queued nothing");

    assert_eq!(trigger_as(&app, "admin").await.status(), 202, "another token has a limit of its own");
}

#[tokio::test]
async fn beyond_max_pending_reports_waiting_for_a_worker_a_trigger_gets_429_but_sharing_is_admitted() {
    let app = spawn_app_with(|s| s.reports.max_pending = 1).await;

    let first = trigger_as(&app, "reporter").await;
    assert_eq!(first.status(), 202);
    // Unchanged data: it shares the first report's computation, which needs no worker.
    assert_eq!(trigger_as(&app, "reporter").await.status(), 202);
    app.record_polls_load();
    let refused = trigger_as(&app, "reporter").await;

    assert_eq!(refused.status(), 429);
    assert_eq!(retry_after(&refused), 10);
    let body: serde_json::Value = refused.json().await.expect("json");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("waiting for a worker")), "{body}");
    assert_eq!(app.report_rows(), 2, "the refused trigger stored nothing");
    assert_eq!(jobs_queued(&app).await, 1, "one job: the first report's");

    // Once a worker has started the first report, nothing waits and triggers are admitted again.
    let first: serde_json::Value = first.json().await.expect("json");
    let first_id = first["report_id"].as_str().expect("report_id");
    shared_model::models::reports::mark_started(&mut app.conn(), first_id).expect("start");
    assert_eq!(trigger_as(&app, "reporter").await.status(), 202);
}

#[tokio::test]
async fn beyond_max_concurrent_downloads_a_download_gets_503_with_retry_after() {
    let app = spawn_app_with(|s| s.gateway.max_concurrent_downloads = 1).await;
    let report_id = new_report_id();
    // ~22 MB: more than the socket buffers hold, so the first download stays open while unread.
    let csv = sample_csv(400_000);
    app.insert_complete(&report_id, &csv, 400_000, 256 * 1024);

    let held = app.get(&format!("/download/{report_id}")).await;
    assert_eq!(held.status(), 200);
    let refused = app.get(&format!("/download/{report_id}")).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(retry_after(&refused), 1);
    let body: serde_json::Value = refused.json().await.expect("json");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("at once")), "{body}");
    assert_eq!(held.bytes().await.expect("the whole report").len(), csv.len());

    // The slot is given back when the first download ends.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let again = app.get(&format!("/download/{report_id}")).await;
        if again.status() == 200 {
            assert_eq!(again.bytes().await.expect("body").len(), csv.len());
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the slot was not given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
