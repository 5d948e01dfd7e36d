//! The topology of `shared_model::queue` on the real broker (RabbitMQ 3.10 here).

use std::time::Duration;

use futures_util::StreamExt as _;
use lapin::options::BasicNackOptions;
use shared_model::messages::ReportJob;
use shared_model::queue::{self, QueueError, RetryPolicy};

use test_support::{TestTopology, closed_port, init_logging, new_report_id, take_message};

fn job() -> ReportJob {
    ReportJob { report_id: new_report_id(), requested_at: "2024-01-01T00:00:00.000000Z".into() }
}

#[tokio::test]
async fn a_job_requeued_past_the_delivery_limit_ends_in_the_dead_letter_queue() {
    init_logging();
    let mut topology = TestTopology::new();
    topology.amqp.delivery_limit = 2;
    let settings = topology.amqp.clone();
    let connection = queue::connect(&settings.url, "delivery limit test", &RetryPolicy::once(Duration::from_secs(5)))
        .await
        .expect("connect");
    let publishing = queue::open_publish_channel(&connection, &settings).await.expect("publish channel");
    let job = job();
    queue::publish_job(&publishing, &settings, &job).await.expect("confirmed");

    let (_consuming, mut consumer) =
        queue::open_consume_channel(&connection, &settings, 1, "poison-test").await.expect("consumer");
    let mut seen = Vec::new();
    while let Ok(Some(delivery)) = tokio::time::timeout(Duration::from_secs(2), consumer.next()).await {
        let delivery = delivery.expect("delivery");
        seen.push((queue::previous_deliveries(&delivery), queue::is_last_delivery(&delivery, &settings)));
        delivery.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() }).await.expect("nack");
    }

    // delivery_limit 2: the first delivery and two more, the last of them known as the last.
    assert_eq!(seen, vec![(0, false), (1, false), (2, true)]);
    let observer = connection.create_channel().await.expect("channel");
    let dead = take_message(&observer, &settings.dead_letter_queue, Duration::from_secs(5))
        .await
        .expect("the job is in the dead-letter queue");
    assert_eq!(dead.properties.message_id().as_ref().map(|s| s.as_str()), Some(job.report_id.as_str()));
    assert_eq!(queue::decode_job(&dead.data).expect("still the job"), job);
    assert!(take_message(&observer, &settings.queue, Duration::from_millis(200)).await.is_none());
}

#[tokio::test]
async fn declaring_the_topology_twice_is_harmless_but_other_arguments_are_refused_clearly() {
    init_logging();
    let topology = TestTopology::new();
    let settings = topology.amqp.clone();
    let connection =
        queue::connect_once(&settings.url, "topology test", Duration::from_secs(5)).await.expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    queue::declare_topology(&channel, &settings).await.expect("first declaration");
    queue::declare_topology(&channel, &settings).await.expect("second declaration");

    let changed =
        shared_model::settings::AmqpSettings { delivery_limit: settings.delivery_limit + 1, ..settings.clone() };
    let other = connection.create_channel().await.expect("channel");
    let error = queue::declare_topology(&other, &changed).await.expect_err("406 PRECONDITION_FAILED");

    assert!(matches!(error, QueueError::Declare { what: "job queue", .. }), "{error}");
    assert!(error.to_string().contains("versioned name"), "{error}");
}

#[tokio::test]
async fn publishing_to_a_missing_topology_is_an_error_not_a_lost_job() {
    init_logging();
    let topology = TestTopology::new();
    let settings = topology.amqp.clone();
    let connection =
        queue::connect_once(&settings.url, "unroutable test", Duration::from_secs(5)).await.expect("connect");
    let channel = queue::open_publish_channel(&connection, &settings).await.expect("publish channel");
    lapin::Channel::queue_unbind(
        &channel,
        settings.queue.as_str().into(),
        settings.exchange.as_str().into(),
        queue::JOB_ROUTING_KEY.into(),
        lapin::types::FieldTable::default(),
    )
    .await
    .expect("unbind");

    let error = queue::publish_job(&channel, &settings, &job()).await.expect_err("unroutable");

    assert!(matches!(error, QueueError::Unroutable { .. }), "{error}");
}

#[tokio::test]
async fn connect_gives_up_after_its_deadline_with_the_last_error() {
    let port = closed_port();
    let retry = RetryPolicy {
        initial_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(100),
        give_up_after: Some(Duration::from_millis(400)),
        attempt_timeout: Duration::from_secs(1),
    };
    let started = std::time::Instant::now();

    let error = queue::connect(&format!("amqp://guest:guest@127.0.0.1:{port}/%2f"), "retry test", &retry)
        .await
        .expect_err("nothing listens");

    assert!(matches!(error, QueueError::Connect { .. }), "{error}");
    assert!(started.elapsed() >= Duration::from_millis(100), "it retried");
    assert!(started.elapsed() < Duration::from_secs(3), "it gave up");
}
