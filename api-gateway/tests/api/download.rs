use shared_model::models::reports;

use crate::helpers::{new_report_id, sample_csv, spawn_app_with};

#[tokio::test]
async fn a_complete_report_downloads_as_a_private_csv_attachment_read_one_chunk_per_query() {
    // 2,000 stores in 1 KiB chunks, one chunk per query: the download takes dozens of queries.
    let app = spawn_app_with(|_| {}).await;
    let report_id = new_report_id();
    let csv = sample_csv(2_000);
    app.insert_complete(&report_id, &csv, 2_000, 1024);

    let response = app.get(&format!("/download/{report_id}")).await;

    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert!(headers["content-type"].to_str().expect("ascii").starts_with("text/csv"));
    assert_eq!(headers["content-disposition"], format!("attachment; filename=\"report-{report_id}.csv\""));
    assert_eq!(headers["content-length"], csv.len().to_string());
    assert_eq!(headers["cache-control"], "private, no-store");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(response.bytes().await.expect("body").as_ref(), csv.as_slice());
}

#[tokio::test]
async fn a_report_that_is_not_complete_cannot_be_downloaded_409() {
    let app = spawn_app_with(|_| {}).await;
    let running = new_report_id();
    app.insert_running(&running);
    let failed = new_report_id();
    app.insert_running(&failed);
    reports::mark_failed(&mut app.conn(), &failed, "no data loaded").expect("fail");

    let response = app.get(&format!("/download/{running}")).await;
    assert_eq!(response.status(), 409);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["report_id"], running.as_str());
    assert_eq!(body["status"], "Running");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("still running")), "{body}");

    let response = app.get(&format!("/download/{failed}")).await;
    assert_eq!(response.status(), 409);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(
        body,
        app.with_times(
            &failed,
            serde_json::json!({
                "report_id": failed, "status": "Failed", "error": "no data loaded", "expires_at": app.expires_at(&failed)
            })
        )
    );
}

#[tokio::test]
async fn an_unknown_report_cannot_be_downloaded_404() {
    let app = spawn_app_with(|_| {}).await;

    let response = app.get(&format!("/download/{}", new_report_id())).await;

    assert_eq!(response.status(), 404);
    let body: serde_json::Value = response.json().await.expect("json");
    assert!(body["error"].is_string());
}

#[tokio::test]
async fn a_download_whose_stored_chunk_is_missing_is_cut_short_rather_than_completed() {
    use diesel::prelude::*;
    use shared_model::schema::report_chunks;
    let app = spawn_app_with(|_| {}).await;
    let report_id = new_report_id();
    let csv = sample_csv(200);
    app.insert_complete(&report_id, &csv, 200, 1024);
    diesel::delete(
        report_chunks::table.filter(report_chunks::report_id.eq(&report_id)).filter(report_chunks::seq.eq(3)),
    )
    .execute(&mut app.conn())
    .expect("lose a chunk");

    let response = app.get(&format!("/download/{report_id}")).await;

    assert_eq!(response.status(), 200, "the first chunk was there");
    assert!(response.bytes().await.is_err(), "the client sees a cut download, not a shorter report");
}
