use shared_model::models::reports;

use crate::helpers::{new_report_id, sample_csv, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_report_no_worker_has_started_is_running_without_progress() {
    let app = spawn_app().await;
    let report_id = new_report_id();
    app.insert_running(&report_id);

    let response = app.get(&format!("/get_report/{report_id}")).await;

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-report-status"], "Running");
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body, app.with_times(&report_id, serde_json::json!({ "report_id": report_id, "status": "Running" })));
}

#[tokio::test]
async fn a_running_report_shows_its_progress() {
    let app = spawn_app().await;
    let report_id = new_report_id();
    app.insert_running(&report_id);
    reports::mark_started(&mut app.conn(), &report_id).expect("start");
    reports::set_progress(&mut app.conn(), &report_id, 1_200, 14_087).expect("progress");

    let body: serde_json::Value = app.get(&format!("/get_report/{report_id}")).await.json().await.expect("json");

    assert_eq!(
        body,
        app.with_times(
            &report_id,
            serde_json::json!({
                "report_id": report_id, "status": "Running",
                "progress": { "stores_done": 1_200, "stores_total": 14_087 }
            })
        )
    );
    assert!(body["started_at"].is_string(), "a started report says when: {body}");
}

#[tokio::test]
async fn a_complete_report_answers_its_absolute_download_url_as_of_and_store_count() {
    let app = spawn_app().await;
    let report_id = new_report_id();
    app.insert_complete(&report_id, &sample_csv(3), 3, 64);

    let response = app.get(&format!("/get_report/{report_id}")).await;

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-report-status"], "Complete");
    assert!(response.headers()["content-type"].to_str().expect("ascii").starts_with("application/json"));
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(
        body,
        app.with_times(
            &report_id,
            serde_json::json!({
                "report_id": report_id, "status": "Complete",
                "download_url": format!("http://127.0.0.1:{}/download/{report_id}", app.port),
                "as_of": "2023-01-25T18:13:18.647069Z",
                "stores": 3,
                "expires_at": app.expires_at(&report_id)
            })
        )
    );
    assert!(body["completed_at"].is_string(), "a complete report says when it completed: {body}");
    // Twice: the second answer comes from the cache of completed reports and must be the same.
    let again: serde_json::Value = app.get(&format!("/get_report/{report_id}")).await.json().await.expect("json");
    assert_eq!(again, body);
}

#[tokio::test]
async fn the_download_url_follows_the_host_the_client_used_or_the_public_base_url() {
    let app = spawn_app().await;
    let report_id = new_report_id();
    app.insert_complete(&report_id, &sample_csv(1), 1, 1024);
    let via_proxy: serde_json::Value = app
        .client
        .get(format!("{}/get_report/{report_id}", app.address))
        .header("Host", "reports.example.com")
        .header("X-Forwarded-Proto", "https")
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(via_proxy["download_url"], format!("https://reports.example.com/download/{report_id}"));

    let app = spawn_app_with(|s| s.gateway.public_base_url = Some("https://monitor.example.org/api/".into())).await;
    app.insert_complete(&report_id, &sample_csv(1), 1, 1024);
    let configured: serde_json::Value = app.get(&format!("/get_report/{report_id}")).await.json().await.expect("json");
    assert_eq!(configured["download_url"], format!("https://monitor.example.org/api/download/{report_id}"));
}

#[tokio::test]
async fn a_client_that_accepts_csv_gets_the_report_itself() {
    let app = spawn_app().await;
    let report_id = new_report_id();
    let csv = sample_csv(40);
    app.insert_complete(&report_id, &csv, 40, 256);

    let response = app.get_accepting(&format!("/get_report/{report_id}"), "text/csv").await;

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-report-status"], "Complete");
    assert!(response.headers()["content-type"].to_str().expect("ascii").starts_with("text/csv"));
    assert!(response.headers().get("content-disposition").is_none(), "inline, not an attachment");
    assert_eq!(response.bytes().await.expect("body").as_ref(), csv.as_slice());
}

#[tokio::test]
async fn a_client_that_accepts_csv_gets_the_json_status_while_the_report_runs() {
    let app = spawn_app().await;
    let report_id = new_report_id();
    app.insert_running(&report_id);

    let response = app.get_accepting(&format!("/get_report/{report_id}"), "text/csv").await;

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-report-status"], "Running");
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["status"], "Running");
}

#[tokio::test]
async fn a_failed_report_says_what_went_wrong() {
    let app = spawn_app().await;
    let report_id = new_report_id();
    app.insert_running(&report_id);
    reports::mark_failed(&mut app.conn(), &report_id, "the polls table is empty; load store_status.csv first")
        .expect("fail");

    let response = app.get(&format!("/get_report/{report_id}")).await;

    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(
        body,
        app.with_times(
            &report_id,
            serde_json::json!({
                "report_id": report_id, "status": "Failed",
                "error": "the polls table is empty; load store_status.csv first",
                "expires_at": app.expires_at(&report_id)
            })
        )
    );
}

#[tokio::test]
async fn the_query_form_answers_like_the_path_form() {
    let app = spawn_app().await;
    let report_id = new_report_id();
    app.insert_complete(&report_id, &sample_csv(2), 2, 1024);

    let by_path: serde_json::Value = app.get(&format!("/get_report/{report_id}")).await.json().await.expect("json");
    let by_query = app.get(&format!("/get_report?report_id={report_id}")).await;

    assert_eq!(by_query.status(), 200);
    assert_eq!(by_query.json::<serde_json::Value>().await.expect("json"), by_path);
}

#[tokio::test]
async fn an_unknown_report_is_404_in_json() {
    let app = spawn_app().await;

    for path in [
        format!("/get_report/{}", new_report_id()),
        "/get_report/not-a-report".into(),
        format!("/get_report?report_id={}", new_report_id()),
    ] {
        let response = app.get(&path).await;
        assert_eq!(response.status(), 404, "{path}");
        let body: serde_json::Value = response.json().await.expect("json");
        assert!(body["error"].as_str().is_some_and(|e| e.contains("no report")), "{path}: {body}");
    }
}

#[tokio::test]
async fn a_missing_report_id_in_the_query_is_400_in_json() {
    let app = spawn_app().await;

    for path in ["/get_report", "/get_report?report_id=", "/get_report?id=abc"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 400, "{path}");
        let body: serde_json::Value = response.json().await.expect("json");
        assert!(body["error"].as_str().is_some_and(|e| e.contains("report_id")), "{path}: {body}");
    }
}
