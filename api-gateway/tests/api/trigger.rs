use std::time::Duration;

use shared_model::messages::ReportJob;
use shared_model::models::reports::{ReportStatus, is_valid_report_id};
use shared_model::queue;

use crate::helpers::{spawn_app, take_message};

#[tokio::test]
async fn trigger_answers_202_with_location_and_queues_a_persistent_json_job() {
    let app = spawn_app().await;

    let response = app.trigger().await;

    assert_eq!(response.status(), 202);
    let location = response.headers().get("location").expect("Location").to_str().expect("ascii").to_owned();
    let body: serde_json::Value = response.json().await.expect("json");
    let report_id = body["report_id"].as_str().expect("report_id").to_owned();
    assert!(is_valid_report_id(&report_id), "{report_id:?} is a 21-character nanoid");
    assert_eq!(body["status"], "Running");
    assert_eq!(body.as_object().map(|o| o.len()), Some(2), "only report_id and status: {body}");
    assert_eq!(location, format!("/get_report/{report_id}"));

    let (_connection, channel) = app.topology.channel().await;
    let message = take_message(&channel, &app.settings.amqp.queue, Duration::from_secs(5)).await.expect("a job");
    let properties = &message.properties;
    assert_eq!(properties.delivery_mode(), &Some(2), "persistent");
    assert_eq!(properties.content_type().as_ref().map(|s| s.as_str()), Some("application/json"));
    assert_eq!(properties.message_id().as_ref().map(|s| s.as_str()), Some(report_id.as_str()));
    assert_eq!(message.routing_key.as_str(), queue::JOB_ROUTING_KEY);
    let job: ReportJob = queue::decode_job(&message.data).expect("a ReportJob");
    assert_eq!(job.report_id, report_id);
    assert!(chrono::DateTime::parse_from_rfc3339(&job.requested_at).is_ok(), "{}", job.requested_at);

    let report = app.report(&report_id);
    assert_eq!(report.status, ReportStatus::Running);
    assert!(report.queued_at.is_some(), "the confirmed job left the outbox");
}

#[tokio::test]
async fn every_trigger_of_new_data_is_a_new_report() {
    let app = spawn_app().await;

    let first = app
        .client
        .post(format!("{}/trigger_report", app.address))
        .header("Content-Type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("request");
    // New data in between: a trigger of unchanged data would share the first report's job.
    app.record_polls_load();
    let second = app.trigger().await;

    assert_eq!(first.status(), 202);
    assert_eq!(second.status(), 202);
    let first: serde_json::Value = first.json().await.expect("json");
    let second: serde_json::Value = second.json().await.expect("json");
    assert_ne!(first["report_id"], second["report_id"]);
    let (_connection, channel) = app.topology.channel().await;
    for _ in 0..2 {
        assert!(take_message(&channel, &app.settings.amqp.queue, Duration::from_secs(5)).await.is_some());
    }
}
