//! The services' RabbitMQ user (`shared_model::queue::app_permissions`) on the real broker: with exactly
//! those permissions it declares the topology, publishes and consumes a job, and is refused anything
//! outside the project's names. Each test makes a user of its own (rabbitmqctl), deleted at the end.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection};
use shared_model::messages::ReportJob;
use shared_model::queue;
use shared_model::settings::AmqpSettings;
use test_support::{TestBrokerUser, TestTopology, init_logging, new_report_id, take_message};

async fn connect_as(user: &TestBrokerUser) -> Connection {
    queue::connect_once(&user.url, "broker user test", Duration::from_secs(5)).await.expect("the user logs in")
}

fn refused(error: impl std::fmt::Display) {
    let text = error.to_string();
    assert!(text.contains("ACCESS_REFUSED") || text.contains("access to"), "refused for another reason: {text}");
}

#[tokio::test]
async fn the_app_user_runs_the_job_path_and_nothing_else() {
    init_logging();
    let topology = TestTopology::new();
    let user = TestBrokerUser::new(&queue::app_permissions(&topology.amqp));
    let settings = AmqpSettings { url: user.url.clone(), ..topology.amqp.clone() };
    let connection = connect_as(&user).await;

    // The gateway's side: declare, publish with confirms.
    let publishing = queue::open_publish_channel(&connection, &settings).await.expect("declare and publish");
    let job = ReportJob { report_id: new_report_id(), requested_at: "2024-01-01T00:00:00Z".into() };
    queue::publish_job(&publishing, &settings, &job).await.expect("the broker took the job");
    // The worker's side: take the job, consume the queue, put a failed-marker copy back through the
    // dead-letter exchange.
    let reading = connection.create_channel().await.expect("channel");
    let taken = take_message(&reading, &settings.queue, Duration::from_secs(5)).await.expect("the job is there");
    assert_eq!(queue::decode_job(&taken.data).expect("the job"), job);
    let (_consuming, _consumer) =
        queue::open_consume_channel(&connection, &settings, 1, "broker-user-test").await.expect("consume");
    let retry = reading
        .basic_publish(
            settings.dead_letter_exchange.as_str().into(),
            queue::MARKER_RETRY_ROUTING_KEY.into(),
            BasicPublishOptions::default(),
            b"{}",
            BasicProperties::default(),
        )
        .await;
    assert!(retry.is_ok(), "the marker's retry is allowed");
    let marker = settings.failed_marker_queue();
    assert!(take_message(&reading, &marker, Duration::from_secs(5)).await.is_some(), "the retry reached the marker");

    // Outside the project's names: refused, and the channel with it.
    let other = connection.create_channel().await.expect("channel");
    let declared =
        other.queue_declare("someone-elses-queue".into(), QueueDeclareOptions::default(), FieldTable::default()).await;
    refused(declared.expect_err("a queue outside the project's names is refused"));
    let other_test = TestTopology::new();
    let channel = connection.create_channel().await.expect("channel");
    refused(
        queue::declare_topology(&channel, &other_test.amqp).await.expect_err("another topology's names are refused"),
    );
    let channel = connection.create_channel().await.expect("channel");
    let to_default = channel
        .basic_publish(
            "".into(),
            settings.queue.as_str().into(),
            BasicPublishOptions::default(),
            b"{}",
            BasicProperties::default(),
        )
        .await;
    // A publish is refused asynchronously: the channel closes, and the next call on it fails.
    let after = channel
        .queue_declare(
            settings.queue.as_str().into(),
            QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() },
            FieldTable::default(),
        )
        .await;
    assert!(to_default.is_err() || after.is_err(), "publishing to the default exchange is refused");
    let _ = connection.close(200, "done".into()).await;
}

#[tokio::test]
async fn the_monitoring_user_reads_the_dead_letters_and_changes_nothing() {
    init_logging();
    let topology = TestTopology::new();
    let (_admin, _channel) = topology.channel().await; // the topology exists, as the services declared it
    let user = TestBrokerUser::new(&queue::monitoring_permissions(&topology.amqp));
    let connection = connect_as(&user).await;
    let channel = connection.create_channel().await.expect("channel");
    assert!(
        take_message(&channel, &topology.amqp.dead_letter_queue, Duration::from_millis(100)).await.is_none(),
        "reads the (empty) dead-letter queue"
    );
    let channel = connection.create_channel().await.expect("channel");
    refused(queue::declare_topology(&channel, &topology.amqp).await.expect_err("declares nothing"));
    let _ = connection.close(200, "done".into()).await;
}
