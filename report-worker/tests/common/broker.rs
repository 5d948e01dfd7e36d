//! Per-test RabbitMQ names (AmqpSettings::with_suffix), publishing like the gateway does, queue counts, and
//! removal of everything the test declared.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use report_worker::topology;
use shared_model::messages::ReportJob;
use shared_model::queue;
use shared_model::settings::AmqpSettings;

/// The topology names of one test; everything is deleted when the value is dropped.
pub struct TestBroker {
    pub amqp: AmqpSettings,
}

impl TestBroker {
    pub fn new() -> TestBroker {
        let mut amqp = AmqpSettings::default().with_suffix(&format!("t-{}", super::random_suffix()));
        if let Ok(url) = std::env::var("AMQP_URL") {
            amqp.url = url;
        }
        TestBroker { amqp }
    }

    pub async fn channel(&self) -> (Connection, Channel) {
        let conn =
            Connection::connect(&self.amqp.url, ConnectionProperties::default()).await.expect("connect to RabbitMQ");
        let channel = conn.create_channel().await.expect("channel");
        topology::declare(&channel, &self.amqp).await.expect("declare topology");
        (conn, channel)
    }

    /// Publishes jobs as the gateway does (`shared_model::queue::publish_job`: persistent, confirmed).
    pub async fn publish(&self, report_ids: &[String]) {
        let conn = Connection::connect(&self.amqp.url, ConnectionProperties::default()).await.expect("connect");
        let channel = queue::open_publish_channel(&conn, &self.amqp).await.expect("publish channel");
        for id in report_ids {
            let job = ReportJob { report_id: id.clone(), requested_at: chrono::Utc::now().to_rfc3339() };
            queue::publish_job(&channel, &self.amqp, &job).await.expect("the broker took the job");
        }
        let _ = conn.close(200, "done".into()).await;
    }

    /// Publishes raw bytes to an exchange with `routing_key` (tests of broken messages and of the
    /// dead-letter path).
    pub async fn publish_raw(&self, exchange: &str, routing_key: &str, body: &[u8], message_id: Option<&str>) {
        let (conn, channel) = self.channel().await;
        channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
        let mut props = BasicProperties::default().with_delivery_mode(2).with_content_type("application/json".into());
        if let Some(id) = message_id {
            props = props.with_message_id(id.into());
        }
        let confirm = channel
            .basic_publish(exchange.into(), routing_key.into(), BasicPublishOptions::default(), body, props)
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(confirm.is_ack());
        let _ = conn.close(200, "done".into()).await;
    }

    /// Messages ready in a queue (unacknowledged ones not counted).
    pub async fn ready(&self, queue: &str) -> u32 {
        let conn = Connection::connect(&self.amqp.url, ConnectionProperties::default()).await.expect("connect");
        let channel = conn.create_channel().await.expect("channel");
        let q = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() },
                FieldTable::default(),
            )
            .await
            .expect("queue exists");
        let _ = conn.close(200, "done".into()).await;
        q.message_count()
    }
}

async fn delete_all(amqp: AmqpSettings) {
    let Ok(conn) = Connection::connect(&amqp.url, ConnectionProperties::default()).await else { return };
    if let Ok(channel) = conn.create_channel().await {
        let _ = topology::delete(&channel, &amqp).await;
    }
    let _ = conn.close(200, "cleanup".into()).await;
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let amqp = self.amqp.clone();
        // Drop cannot await; a thread with its own runtime works inside and outside a tokio test.
        let cleanup = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                rt.block_on(delete_all(amqp));
            }
        });
        let _ = cleanup.join();
    }
}
