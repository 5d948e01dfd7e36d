//! The RabbitMQ side of the report path, shared by the gateway (publisher) and the report workers
//! (consumers): connecting with retry, the topology, publishing a job with confirms, reading one back.
//!
//! Topology (names from [`AmqpSettings`], all durable, declared idempotently by whoever starts first):
//!
//! ```text
//! exchange (direct) --report.requested--> job queue (quorum, x-delivery-limit, x-dead-letter-exchange)
//!                                               | a job returned more than delivery_limit times
//!                                               v
//! dead-letter exchange (direct) --report.dead-lettered--> dead-letter queue (quorum)
//!
//! exchange --report.shard.NN--> shard queue NN (quorum, the job queue's arguments), NN = 00 … shard_queues−1
//! ```
//!
//! A report of many stores is cut into shards by the worker that takes its job; each shard's job goes to
//! the shard queue of its slot (`shard_no mod shard_queues`). Every worker consumes every shard queue,
//! with a higher consumer priority (`x-priority`) on the slots it owns: RabbitMQ hands a queue's messages
//! to its highest-priority consumer that has room, so a slot's shards keep reaching the worker that holds
//! their data, and reach another worker when that one is busy or gone (its unacknowledged shard too).
//!
//! The job queue is a quorum queue because only quorum queues count deliveries (`x-delivery-count`) and
//! enforce `x-delivery-limit`: a job whose worker crashes or rejects it is redelivered, a poison job stops
//! after the limit and lands in the dead-letter queue where a person can read it.
//!
//! Use one channel for publishing ([`open_publish_channel`]) and another for consuming
//! ([`open_consume_channel`]); keep the [`Connection`] alive as long as either is used.

use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer, ExchangeKind};

use crate::db::redact_url;
use crate::messages::{ReportJob, ShardJob};
use crate::settings::AmqpSettings;

/// Routing key of a job, from the exchange to the job queue.
pub const JOB_ROUTING_KEY: &str = "report.requested";
/// Routing key of a dead-lettered job, from the dead-letter exchange to the dead-letter queue.
pub const DEAD_LETTER_ROUTING_KEY: &str = "report.dead-lettered";
/// Routing key of a failed-marker copy put back for another try: bound to the failed-marker queue alone,
/// so the retry goes through the project's own exchange (the app user may not write to the default one).
pub const MARKER_RETRY_ROUTING_KEY: &str = "report.mark-failed-retry";
/// Consumer priority of a worker on the shard queues it owns; [`SHARD_BACKUP_PRIORITY`] on the others.
pub const SHARD_OWNER_PRIORITY: i32 = 10;
/// Consumer priority of a worker on the shard queues other workers own: it gets their shards only when
/// the owner is busy or gone.
pub const SHARD_BACKUP_PRIORITY: i32 = 1;

/// Routing key of the shard jobs of slot `slot`.
pub fn shard_routing_key(slot: u16) -> String {
    format!("report.shard.{slot:02}")
}
/// AMQP `delivery_mode` of a message the broker writes to disk.
const PERSISTENT: u8 = 2;
/// One connection attempt never waits longer than this (a black-holed host would hang for minutes).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("cannot connect to RabbitMQ at {url}: {source}")]
    Connect { url: String, source: lapin::Error },
    #[error("no answer from RabbitMQ at {url} within {timeout:?}")]
    ConnectTimeout { url: String, timeout: Duration },
    #[error(
        "cannot declare {what} {name:?}: {source}. If it already exists with other arguments (PRECONDITION_FAILED), \
         delete it in the management UI or give the topology a new versioned name in the amqp settings"
    )]
    Declare { what: &'static str, name: String, source: lapin::Error },
    #[error("cannot delete {what} {name:?}: {source}")]
    Delete { what: &'static str, name: String, source: lapin::Error },
    #[error("cannot publish the job of report_id={report_id}: {source}")]
    Publish { report_id: String, source: lapin::Error },
    #[error("RabbitMQ refused (nack) the job of report_id={0}")]
    Nacked(String),
    #[error(
        "RabbitMQ could not route the job of report_id={report_id} to any queue ({reply}); is the topology declared?"
    )]
    Unroutable { report_id: String, reply: String },
    #[error("the publishing channel has no publisher confirms; open it with open_publish_channel")]
    ConfirmsNotEnabled,
    #[error("a job message is not valid JSON of a ReportJob: {0}")]
    BadJob(#[from] serde_json::Error),
    #[error("RabbitMQ channel error: {0}")]
    Channel(lapin::Error),
}

/// How [`connect`] retries: exponential delays from `initial_delay` up to `max_delay`, until `give_up_after`
/// has passed (`None`: forever).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial_delay: Duration,
    pub max_delay: Duration,
    pub give_up_after: Option<Duration>,
    /// Limit of each attempt.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(10),
            give_up_after: None,
            attempt_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

impl RetryPolicy {
    /// A single attempt.
    pub fn once(attempt_timeout: Duration) -> Self {
        Self { give_up_after: Some(Duration::ZERO), attempt_timeout, ..Self::default() }
    }

    /// The delay after one of `delay`: doubled, at most `max_delay`. For callers that keep their own
    /// schedule of attempts (the gateway's publisher fails requests fast instead of sleeping in [`connect`]).
    pub fn next_delay(&self, delay: Duration) -> Duration {
        delay.saturating_mul(2).min(self.max_delay)
    }
}

/// One connection attempt. `connection_name` is what the management UI shows for the connection.
pub async fn connect_once(url: &str, connection_name: &str, timeout: Duration) -> Result<Connection, QueueError> {
    let properties = ConnectionProperties::default().with_connection_name(connection_name.into());
    match tokio::time::timeout(timeout, Connection::connect(url, properties)).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(source)) => Err(QueueError::Connect { url: redact_url(url), source }),
        Err(_) => Err(QueueError::ConnectTimeout { url: redact_url(url), timeout }),
    }
}

/// Connects, retrying with exponential backoff as `retry` says; returns the last error when it gives up.
/// Each failed attempt is logged at warn with the delay before the next one.
pub async fn connect(url: &str, connection_name: &str, retry: &RetryPolicy) -> Result<Connection, QueueError> {
    let started = tokio::time::Instant::now();
    let mut delay = retry.initial_delay;
    loop {
        match connect_once(url, connection_name, retry.attempt_timeout).await {
            Ok(connection) => return Ok(connection),
            Err(error) => {
                let out_of_time = retry.give_up_after.is_some_and(|limit| started.elapsed() + delay > limit);
                if out_of_time {
                    return Err(error);
                }
                log::warn!("{error}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = retry.next_delay(delay);
            }
        }
    }
}

fn short(name: &str) -> ShortString {
    name.into()
}

/// The arguments of the job queue. They are part of the queue's identity: RabbitMQ refuses (406) to
/// re-declare a queue with other ones, which is why the queue name carries a version.
pub fn job_queue_arguments(settings: &AmqpSettings) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(short("x-queue-type"), AMQPValue::LongString("quorum".into()));
    arguments.insert(
        short("x-delivery-limit"),
        AMQPValue::LongInt(i32::try_from(settings.delivery_limit).unwrap_or(i32::MAX)),
    );
    arguments
        .insert(short("x-dead-letter-exchange"), AMQPValue::LongString(settings.dead_letter_exchange.as_str().into()));
    arguments.insert(short("x-dead-letter-routing-key"), AMQPValue::LongString(DEAD_LETTER_ROUTING_KEY.into()));
    arguments
}

fn quorum_arguments() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(short("x-queue-type"), AMQPValue::LongString("quorum".into()));
    arguments
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() }
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() }
}

/// Declares the exchanges, queues and bindings. Idempotent: every service calls it at start; a second
/// declaration with the same arguments changes nothing.
pub async fn declare_topology(channel: &Channel, settings: &AmqpSettings) -> Result<(), QueueError> {
    let declare = |what: &'static str, name: &str| {
        let name = name.to_owned();
        move |source| QueueError::Declare { what, name, source }
    };
    channel
        .exchange_declare(
            short(&settings.dead_letter_exchange),
            ExchangeKind::Direct,
            durable_exchange(),
            FieldTable::default(),
        )
        .await
        .map_err(declare("dead-letter exchange", &settings.dead_letter_exchange))?;
    channel
        .queue_declare(short(&settings.dead_letter_queue), durable_queue(), quorum_arguments())
        .await
        .map_err(declare("dead-letter queue", &settings.dead_letter_queue))?;
    channel
        .queue_bind(
            short(&settings.dead_letter_queue),
            short(&settings.dead_letter_exchange),
            short(DEAD_LETTER_ROUTING_KEY),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(declare("binding of dead-letter queue", &settings.dead_letter_queue))?;
    channel
        .exchange_declare(short(&settings.exchange), ExchangeKind::Direct, durable_exchange(), FieldTable::default())
        .await
        .map_err(declare("exchange", &settings.exchange))?;
    channel
        .queue_declare(short(&settings.queue), durable_queue(), job_queue_arguments(settings))
        .await
        .map_err(declare("job queue", &settings.queue))?;
    channel
        .queue_bind(
            short(&settings.queue),
            short(&settings.exchange),
            short(JOB_ROUTING_KEY),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(declare("binding of job queue", &settings.queue))?;
    for slot in 0..settings.shard_queues {
        let name = settings.shard_queue_name(slot);
        channel
            .queue_declare(short(&name), durable_queue(), job_queue_arguments(settings))
            .await
            .map_err(declare("shard queue", &name))?;
        channel
            .queue_bind(
                short(&name),
                short(&settings.exchange),
                short(&shard_routing_key(slot)),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(declare("binding of shard queue", &name))?;
    }
    declare_failed_marker(channel, settings).await
}

/// The *failed-marker* queue, bound to the dead-letter exchange with the same routing key as the
/// dead-letter queue. Every dead-lettered job thus reaches both: the dead-letter queue keeps it for a
/// person to inspect, and the report workers consume the copy to mark its report Failed — the one path
/// that still works when a worker died on the last delivery the queue allowed, or MySQL was down when it
/// gave up.
async fn declare_failed_marker(channel: &Channel, settings: &AmqpSettings) -> Result<(), QueueError> {
    let marker = settings.failed_marker_queue();
    let declare_error = |source| QueueError::Declare { what: "failed-marker queue", name: marker.clone(), source };
    // A classic durable queue: the marker hands a message back while MySQL is down, as often as it takes,
    // and quorum queues of RabbitMQ 4 drop a message after 20 returns by default.
    channel.queue_declare(short(&marker), durable_queue(), FieldTable::default()).await.map_err(declare_error)?;
    for routing_key in [DEAD_LETTER_ROUTING_KEY, MARKER_RETRY_ROUTING_KEY] {
        channel
            .queue_bind(
                short(&marker),
                short(&settings.dead_letter_exchange),
                short(routing_key),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(declare_error)?;
    }
    Ok(())
}

/// RabbitMQ permissions (regular expressions of resource names) of one user on the vhost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub configure: String,
    pub write: String,
    pub read: String,
}

/// `^(a|b|…)$` matching exactly these names.
fn exactly(names: &[&str]) -> String {
    let escaped: Vec<String> = names
        .iter()
        .map(|name| {
            name.chars().fold(String::new(), |mut out, c| {
                if r"\.^$|?*+()[]{}".contains(c) {
                    out.push('\\');
                }
                out.push(c);
                out
            })
        })
        .collect();
    format!("^({})$", escaped.join("|"))
}

/// What the services' user may do: declare, delete, bind, publish to and consume exactly the exchanges
/// and queues of [`declare_topology`] (queue.bind needs write on the queue and read on the exchange;
/// publishing, write on the exchange), and nothing else on the vhost.
pub fn app_permissions(settings: &AmqpSettings) -> Permissions {
    let marker = settings.failed_marker_queue();
    let shard_queues = settings.shard_queue_names();
    let mut names = vec![
        settings.exchange.as_str(),
        settings.queue.as_str(),
        settings.dead_letter_exchange.as_str(),
        settings.dead_letter_queue.as_str(),
        marker.as_str(),
    ];
    names.extend(shard_queues.iter().map(String::as_str));
    let all = exactly(&names);
    Permissions { configure: all.clone(), write: all.clone(), read: all }
}

/// What the operators' `monitoring` user may do besides seeing everything in the management UI: read
/// (*Get messages*) the dead-letter queue, and change nothing.
pub fn monitoring_permissions(settings: &AmqpSettings) -> Permissions {
    Permissions { configure: "^$".into(), write: "^$".into(), read: exactly(&[&settings.dead_letter_queue]) }
}

/// Deletes what [`declare_topology`] declared, messages included: for tests and smoke runs with names of
/// their own (`report-worker topology delete`).
pub async fn delete_topology(channel: &Channel, settings: &AmqpSettings) -> Result<(), QueueError> {
    let marker = settings.failed_marker_queue();
    let shard_queues = settings.shard_queue_names();
    let mut queues = vec![
        ("failed-marker queue", &marker),
        ("job queue", &settings.queue),
        ("dead-letter queue", &settings.dead_letter_queue),
    ];
    queues.extend(shard_queues.iter().map(|name| ("shard queue", name)));
    for (what, queue) in queues {
        channel
            .queue_delete(short(queue), QueueDeleteOptions::default())
            .await
            .map_err(|source| QueueError::Delete { what, name: queue.clone(), source })?;
    }
    for (what, exchange) in [("exchange", &settings.exchange), ("dead-letter exchange", &settings.dead_letter_exchange)]
    {
        channel
            .exchange_delete(short(exchange), ExchangeDeleteOptions::default())
            .await
            .map_err(|source| QueueError::Delete { what, name: exchange.clone(), source })?;
    }
    Ok(())
}

/// A new channel with the topology declared and publisher confirms on: what [`publish_job`] needs.
pub async fn open_publish_channel(connection: &Connection, settings: &AmqpSettings) -> Result<Channel, QueueError> {
    let channel = connection.create_channel().await.map_err(QueueError::Channel)?;
    declare_topology(&channel, settings).await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(QueueError::Channel)?;
    Ok(channel)
}

/// A new channel with the topology declared, `prefetch` unacknowledged jobs at most (per consumer, as
/// quorum queues require), consuming the job queue with manual acknowledgements. Keep the channel (and the
/// connection) alive while consuming; ack a job only when its report is stored Complete or marked Failed.
pub async fn open_consume_channel(
    connection: &Connection,
    settings: &AmqpSettings,
    prefetch: u16,
    consumer_tag: &str,
) -> Result<(Channel, Consumer), QueueError> {
    let channel = connection.create_channel().await.map_err(QueueError::Channel)?;
    declare_topology(&channel, settings).await?;
    channel.basic_qos(prefetch, BasicQosOptions { global: false }).await.map_err(QueueError::Channel)?;
    let consumer = channel
        .basic_consume(
            short(&settings.queue),
            short(consumer_tag),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(QueueError::Channel)?;
    Ok((channel, consumer))
}

/// The AMQP properties of a job: persistent JSON, `message_id` = report id, stamped with the time sent.
pub fn job_properties(job: &ReportJob) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_content_type(ReportJob::CONTENT_TYPE.into())
        .with_message_id(job.report_id.as_str().into())
        .with_type("report.requested".into())
        .with_timestamp(u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0))
}

/// Publishes `job` to the job exchange and waits for the broker's confirm. Success means the job is on
/// a queue (written to disk, replicated on a quorum queue); a nack, a message the broker could not
/// route (`mandatory`), or a channel without confirms is an error. Callers bound the wait with a timeout.
pub async fn publish_job(channel: &Channel, settings: &AmqpSettings, job: &ReportJob) -> Result<(), QueueError> {
    let payload = serde_json::to_vec(job)?;
    let publish_error = |source| QueueError::Publish { report_id: job.report_id.clone(), source };
    let confirmation = channel
        .basic_publish(
            short(&settings.exchange),
            short(JOB_ROUTING_KEY),
            BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() },
            &payload,
            job_properties(job),
        )
        .await
        .map_err(publish_error)?
        .await
        .map_err(publish_error)?;
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(returned)) => Err(QueueError::Unroutable {
            report_id: job.report_id.clone(),
            reply: format!("{} {}", returned.reply_code, returned.reply_text),
        }),
        Confirmation::Nack(_) => Err(QueueError::Nacked(job.report_id.clone())),
        Confirmation::NotRequested => Err(QueueError::ConfirmsNotEnabled),
    }
}

/// The AMQP properties of a shard's job: persistent JSON, `message_id` = `<report_id>.<shard_no>`.
pub fn shard_job_properties(job: &ShardJob) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_content_type(ReportJob::CONTENT_TYPE.into())
        .with_message_id(job.message_id().into())
        .with_type("report.shard".into())
        .with_timestamp(u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0))
}

/// Publishes the jobs of a report's shards, each to the shard queue of its slot, and waits for the
/// broker's confirms of all of them (published first, confirmed after, so the broker writes them
/// together). The same guarantees and errors as [`publish_job`].
pub async fn publish_shard_jobs(
    channel: &Channel,
    settings: &AmqpSettings,
    jobs: &[ShardJob],
) -> Result<(), QueueError> {
    let mut pending = Vec::with_capacity(jobs.len());
    for job in jobs {
        let payload = serde_json::to_vec(job)?;
        let publish_error = |source| QueueError::Publish { report_id: job.message_id(), source };
        let confirm = channel
            .basic_publish(
                short(&settings.exchange),
                short(&shard_routing_key(settings.shard_slot(job.shard_no))),
                BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() },
                &payload,
                shard_job_properties(job),
            )
            .await
            .map_err(publish_error)?;
        pending.push((job, confirm));
    }
    for (job, confirm) in pending {
        let confirmation =
            confirm.await.map_err(|source| QueueError::Publish { report_id: job.message_id(), source })?;
        match confirmation {
            Confirmation::Ack(None) => {}
            Confirmation::Ack(Some(returned)) => {
                return Err(QueueError::Unroutable {
                    report_id: job.message_id(),
                    reply: format!("{} {}", returned.reply_code, returned.reply_text),
                });
            }
            Confirmation::Nack(_) => return Err(QueueError::Nacked(job.message_id())),
            Confirmation::NotRequested => return Err(QueueError::ConfirmsNotEnabled),
        }
    }
    Ok(())
}

/// Consumes shard queue `slot` on `channel` (whose `basic.qos` applies per consumer) with consumer
/// priority `priority`, under the tag `<consumer_tag>.shard-NN`.
pub async fn consume_shard_queue(
    channel: &Channel,
    settings: &AmqpSettings,
    slot: u16,
    priority: i32,
    consumer_tag: &str,
) -> Result<Consumer, QueueError> {
    let mut arguments = FieldTable::default();
    arguments.insert(short("x-priority"), AMQPValue::LongInt(priority));
    channel
        .basic_consume(
            short(&settings.shard_queue_name(slot)),
            short(&shard_consumer_tag(consumer_tag, slot)),
            BasicConsumeOptions::default(),
            arguments,
        )
        .await
        .map_err(QueueError::Channel)
}

/// The tag of a worker's consumer on shard queue `slot`.
pub fn shard_consumer_tag(consumer_tag: &str, slot: u16) -> String {
    format!("{consumer_tag}.shard-{slot:02}")
}

/// The slots a worker owns when it is number `rank` (0-based) of `workers` live workers: every
/// `workers`-th slot from `rank` on, so the slots of a report's first shards spread evenly.
pub fn owns_slot(slot: u16, rank: usize, workers: usize) -> bool {
    workers == 0 || usize::from(slot) % workers == rank % workers
}

/// The job in a delivery's body.
pub fn decode_job(data: &[u8]) -> Result<ReportJob, QueueError> {
    Ok(serde_json::from_slice(data)?)
}

/// How many times the broker delivered this message before (the quorum queue's `x-delivery-count`;
/// 0 on the first delivery). With `delivery_limit` N the broker dead-letters the message instead of
/// delivering it again once this would exceed N, so a delivery with `previous_deliveries == N` is the last.
pub fn previous_deliveries(delivery: &Delivery) -> u32 {
    header(delivery.properties.headers().as_ref(), "x-delivery-count").and_then(header_count).unwrap_or(0)
}

/// A header of a message (or a field of a table inside one, such as an `x-death` entry).
pub fn header<'a>(headers: Option<&'a FieldTable>, name: &str) -> Option<&'a AMQPValue> {
    headers?.inner().iter().find(|(k, _)| k.as_str() == name).map(|(_, v)| v)
}

/// A header holding a count, whichever integer type the broker chose; clamped to `0..=u32::MAX`.
pub fn header_count(value: &AMQPValue) -> Option<u32> {
    let n = match value {
        AMQPValue::LongLongInt(n) => *n,
        AMQPValue::LongInt(n) => i64::from(*n),
        AMQPValue::LongUInt(n) => i64::from(*n),
        AMQPValue::ShortInt(n) => i64::from(*n),
        AMQPValue::ShortUInt(n) => i64::from(*n),
        AMQPValue::ShortShortInt(n) => i64::from(*n),
        AMQPValue::ShortShortUInt(n) => i64::from(*n),
        _ => return None,
    };
    Some(u32::try_from(n.max(0)).unwrap_or(u32::MAX))
}

/// A header holding text.
pub fn header_text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// True when the broker will not deliver this message again if it is returned (rejected with requeue,
/// or its consumer dies): a worker should mark the report Failed rather than requeue it.
pub fn is_last_delivery(delivery: &Delivery, settings: &AmqpSettings) -> bool {
    previous_deliveries(delivery) >= settings.delivery_limit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_queue_counts_deliveries_and_dead_letters() {
        let settings = AmqpSettings { delivery_limit: 5, ..AmqpSettings::default() };
        let arguments = job_queue_arguments(&settings);
        let get = |key: &str| arguments.inner().get(key).cloned();
        assert_eq!(get("x-queue-type"), Some(AMQPValue::LongString("quorum".into())));
        assert_eq!(get("x-delivery-limit"), Some(AMQPValue::LongInt(5)));
        assert_eq!(
            get("x-dead-letter-exchange"),
            Some(AMQPValue::LongString(settings.dead_letter_exchange.as_str().into()))
        );
    }

    #[test]
    fn jobs_are_persistent_json_named_by_their_report() {
        let job = ReportJob { report_id: "V1StGXR8_Z5jdHi6B-myT".into(), requested_at: "2024-01-01T00:00:00Z".into() };
        let properties = job_properties(&job);
        assert_eq!(properties.delivery_mode(), &Some(PERSISTENT));
        assert_eq!(properties.content_type().as_ref().map(|c| c.as_str()), Some("application/json"));
        assert_eq!(properties.message_id().as_ref().map(|c| c.as_str()), Some("V1StGXR8_Z5jdHi6B-myT"));
    }

    #[test]
    fn the_app_user_may_touch_exactly_the_topology() {
        let settings = AmqpSettings { shard_queues: 3, ..AmqpSettings::default() }.with_suffix("t1");
        let permissions = app_permissions(&settings);
        assert_eq!(
            permissions.configure,
            "^(restaurant-monitor\\.reports\\.t1|restaurant-monitor\\.report-jobs\\.v1\\.t1|\
             restaurant-monitor\\.reports\\.dead-letter\\.t1|restaurant-monitor\\.report-jobs\\.dead-letter\\.t1|\
             restaurant-monitor\\.report-jobs\\.dead-letter\\.t1\\.mark-failed|\
             restaurant-monitor\\.report-shards\\.v1\\.t1\\.00|restaurant-monitor\\.report-shards\\.v1\\.t1\\.01|\
             restaurant-monitor\\.report-shards\\.v1\\.t1\\.02)$"
        );
        assert_eq!(monitoring_permissions(&settings).write, "^$");
    }

    #[test]
    fn shards_spread_over_the_slots_and_each_slot_has_one_owner() {
        let settings = AmqpSettings { shard_queues: 12, ..AmqpSettings::default() };
        assert_eq!(settings.shard_slot(0), 0);
        assert_eq!(settings.shard_slot(13), 1);
        assert_eq!(settings.shard_queue_name(3), "restaurant-monitor.report-shards.v1.03");
        assert_eq!(shard_routing_key(3), "report.shard.03");
        for workers in 1..=5 {
            for slot in 0..12 {
                let owners = (0..workers).filter(|&rank| owns_slot(slot, rank, workers)).count();
                assert_eq!(owners, 1, "slot {slot} of {workers} workers");
            }
        }
        // Ten shards over three workers: 4, 3, 3.
        let per_worker: Vec<usize> =
            (0..3).map(|rank| (0..10u32).filter(|&n| owns_slot(settings.shard_slot(n), rank, 3)).count()).collect();
        assert_eq!(per_worker, vec![4, 3, 3]);
    }

    #[test]
    fn a_job_that_is_not_json_is_a_clear_error() {
        assert!(matches!(decode_job(b"not json"), Err(QueueError::BadJob(_))));
    }
}
