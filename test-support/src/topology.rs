//! RabbitMQ names of its own per test, deleted with the value; publishing and looking at the queues.

use std::time::Duration;

use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};
use shared_model::messages::ReportJob;
use shared_model::queue::{self, QueueError};
use shared_model::settings::AmqpSettings;

/// `AMQP_URL` when set, else guest on 127.0.0.1:5672.
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| AmqpSettings::default().url)
}

/// The topology names of one test ([`AmqpSettings::with_suffix`]). On drop, every queue and exchange the
/// services declare is deleted with its messages: the job topology and the worker's failed-marker queue.
pub struct TestTopology {
    pub amqp: AmqpSettings,
}

impl TestTopology {
    pub fn new() -> TestTopology {
        let amqp = AmqpSettings { url: amqp_url(), ..AmqpSettings::default() }.with_suffix(&crate::unique_suffix());
        TestTopology { amqp }
    }

    /// A connection and a channel with the job topology declared (as a service starting first would).
    /// Keep the connection: the channel closes with it.
    pub async fn channel(&self) -> (Connection, Channel) {
        let connection = self.connect("test observer").await;
        let channel = connection.create_channel().await.expect("channel");
        queue::declare_topology(&channel, &self.amqp).await.expect("declare the topology");
        (connection, channel)
    }

    /// Publishes jobs as the gateway does (`shared_model::queue::publish_job`: persistent, confirmed).
    pub async fn publish(&self, report_ids: &[String]) {
        let connection = self.connect("test publisher").await;
        let channel = queue::open_publish_channel(&connection, &self.amqp).await.expect("publish channel");
        for id in report_ids {
            let job = ReportJob { report_id: id.clone(), requested_at: chrono::Utc::now().to_rfc3339() };
            queue::publish_job(&channel, &self.amqp, &job).await.expect("the broker took the job");
        }
        let _ = connection.close(200, "done".into()).await;
    }

    /// Publishes raw bytes to `exchange` with `routing_key`, confirmed (tests of broken messages and of
    /// the dead-letter path). The job topology is declared first.
    pub async fn publish_raw(&self, exchange: &str, routing_key: &str, body: &[u8], message_id: Option<&str>) {
        let (connection, channel) = self.channel().await;
        channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
        let mut properties =
            BasicProperties::default().with_delivery_mode(2).with_content_type("application/json".into());
        if let Some(id) = message_id {
            properties = properties.with_message_id(id.into());
        }
        let confirm = channel
            .basic_publish(exchange.into(), routing_key.into(), BasicPublishOptions::default(), body, properties)
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(confirm.is_ack());
        let _ = connection.close(200, "done".into()).await;
    }

    /// Messages ready in `queue_name` (unacknowledged ones not counted); the queue must exist.
    pub async fn ready(&self, queue_name: &str) -> u32 {
        let connection = self.connect("test observer").await;
        let channel = connection.create_channel().await.expect("channel");
        let declared = channel
            .queue_declare(
                queue_name.into(),
                QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() },
                FieldTable::default(),
            )
            .await
            .expect("the queue exists");
        let _ = connection.close(200, "done".into()).await;
        declared.message_count()
    }

    async fn connect(&self, name: &str) -> Connection {
        queue::connect_once(&self.amqp.url, name, Duration::from_secs(5)).await.expect("connect to RabbitMQ")
    }
}

impl Default for TestTopology {
    fn default() -> Self {
        TestTopology::new()
    }
}

/// Deletes every queue and exchange the services declare (queues before their exchanges).
async fn delete_all(amqp: &AmqpSettings) -> Result<(), QueueError> {
    let connection = queue::connect_once(&amqp.url, "test cleanup", Duration::from_secs(5)).await?;
    let channel = connection.create_channel().await.map_err(QueueError::Channel)?;
    queue::delete_topology(&channel, amqp).await?;
    let _ = connection.close(200, "OK".into()).await;
    Ok(())
}

impl Drop for TestTopology {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime may be the one running this: clean up on a thread
        // with a runtime of its own (this works inside and outside a tokio test).
        let amqp = self.amqp.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(delete_all(&amqp)).map_err(|error| error.to_string())
        });
        match cleanup.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("could not delete the test topology {}: {error}", self.amqp.queue),
            Err(_) => eprintln!("the cleanup of the test topology {} panicked", self.amqp.queue),
        }
    }
}

/// Waits up to `within` for a message on `queue_name` and takes it (acknowledged).
pub async fn take_message(channel: &Channel, queue_name: &str, within: Duration) -> Option<lapin::message::Delivery> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let got = channel.basic_get(queue_name.into(), BasicGetOptions { no_ack: true }).await.expect("basic.get");
        if let Some(message) = got {
            return Some(message.delivery);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A RabbitMQ user of its own with the given permissions on the broker's vhost, made with `rabbitmqctl`
/// (the broker must be this machine's) and deleted with the value.
pub struct TestBrokerUser {
    pub name: String,
    /// `AMQP_URL` with this user's name and password.
    pub url: String,
}

fn rabbitmqctl(args: &[&str]) {
    let output = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs (the tests make broker users with it, so the broker must be local)");
    assert!(output.status.success(), "rabbitmqctl {}: {}", args[0], String::from_utf8_lossy(&output.stderr));
}

impl TestBrokerUser {
    pub fn new(permissions: &queue::Permissions) -> TestBrokerUser {
        let name = format!("rm-t-{}", crate::unique_suffix());
        let password = crate::unique_suffix();
        let base = amqp_url();
        let uri: lapin::uri::AMQPUri = base.parse().expect("AMQP_URL is an amqp:// URL");
        rabbitmqctl(&["add_user", &name, &password]);
        let user = TestBrokerUser {
            url: format!(
                "amqp://{name}:{password}@{}:{}/{}",
                uri.authority.host,
                uri.authority.port,
                vhost_path(&uri.vhost)
            ),
            name,
        };
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            &uri.vhost,
            &user.name,
            &permissions.configure,
            &permissions.write,
            &permissions.read,
        ]);
        user
    }
}

/// The vhost as the path of a URL (`/` is `%2f`).
fn vhost_path(vhost: &str) -> String {
    vhost.replace('%', "%25").replace('/', "%2f")
}

impl Drop for TestBrokerUser {
    fn drop(&mut self) {
        let deleted = std::process::Command::new("rabbitmqctl").args(["delete_user", &self.name]).output();
        if !deleted.is_ok_and(|output| output.status.success()) {
            eprintln!("could not delete the test broker user {}", self.name);
        }
    }
}
