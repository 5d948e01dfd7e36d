use std::time::Duration;

use shared_model::queue;

use crate::helpers::{closed_port, spawn_app_with, take_message};

#[tokio::test]
async fn a_report_triggered_while_the_broker_is_down_is_queued_by_the_relay_later() {
    let port = closed_port();
    let app = spawn_app_with(|s| s.amqp.url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f")).await;

    let response = app.trigger().await;

    assert_eq!(response.status(), 202, "accepted although the broker is down");
    let body: serde_json::Value = response.json().await.expect("json");
    let report_id = body["report_id"].as_str().expect("report_id").to_owned();
    assert!(app.report(&report_id).queued_at.is_none(), "the job waits in the outbox");
    let polled: serde_json::Value = app.get(&format!("/get_report/{report_id}")).await.json().await.expect("json");
    assert_eq!(polled["status"], "Running");

    // The broker "comes back": a relay that reaches it publishes the job.
    let good = app.topology.amqp.clone();
    let relay = app.start_relay(Duration::from_millis(300));

    let (_connection, channel) = app.topology.channel().await;
    let message = take_message(&channel, &good.queue, Duration::from_secs(10)).await.expect("the job arrives");
    relay.stop().await;

    assert_eq!(message.properties.message_id().as_ref().map(|s| s.as_str()), Some(report_id.as_str()));
    assert_eq!(queue::decode_job(&message.data).expect("job").report_id, report_id);
    assert!(app.report(&report_id).queued_at.is_some(), "the report left the outbox");
}

#[tokio::test]
async fn the_relay_leaves_young_and_queued_reports_alone() {
    // The gateway's own relay must not step in either.
    let app = spawn_app_with(|s| s.gateway.relay_grace_ms = 600_000).await;
    let queued: serde_json::Value = app.trigger().await.json().await.expect("json");
    let queued_id = queued["report_id"].as_str().expect("id").to_owned();
    let young = crate::helpers::new_report_id();
    app.insert_running(&young);
    let relay = app.relay(Duration::from_secs(60));

    let pass = relay.run_once().await.expect("pass");

    assert_eq!(pass.published, 0);
    assert!(app.report(&young).queued_at.is_none());
    let (_connection, channel) = app.topology.channel().await;
    let only = take_message(&channel, &app.topology.amqp.queue, Duration::from_secs(5)).await.expect("job");
    assert_eq!(only.properties.message_id().as_ref().map(|s| s.as_str()), Some(queued_id.as_str()));
    assert!(take_message(&channel, &app.topology.amqp.queue, Duration::from_millis(300)).await.is_none());
}
