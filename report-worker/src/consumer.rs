//! The queue consumer: `report-worker run`.
//!
//! One AMQP connection with three channels — one to declare the topology, one consuming jobs with
//! `basic.qos(prefetch)` (`shared_model::queue::open_consume_channel`), one consuming the failed-marker
//! copy of dead-lettered jobs (`shared_model::queue`). The worker publishes only to the failed-marker
//! queue: a copy it could not mark yet goes back there with its try counted ([`MARKER_ATTEMPTS_HEADER`]).
//! Each job runs on the blocking pool through [`JobHandler::handle`]; its outcome becomes an ack, a
//! requeue or a dead-letter only after the report is stored or marked.
//!
//! Shutdown (the `shutdown` future, SIGTERM/SIGINT in the binary): both consumers are cancelled, jobs in
//! hand finish and are acknowledged, then the connection closes. A lost broker connection is reopened
//! with a backoff; the kept dataset survives it.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use shared_model::db::{self, DbPool};
use shared_model::messages::ReportJob;
use shared_model::models::reports::{self, is_valid_report_id};
use shared_model::queue::{self, header, header_count, header_text};
use shared_model::settings::DatabaseSettings;
use tokio::task::JoinSet;

use crate::job::{Disposition, JobDelivery, JobHandler, printable};
use crate::settings::Settings;

/// The failed-marker's own count of its tries on a message: the marker queue is a classic queue, which
/// counts no deliveries, so a try that fails republishes the message with this header one higher.
pub const MARKER_ATTEMPTS_HEADER: &str = "x-report-worker-marker-attempts";
const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(30);
/// The longest wait before a failed job goes back to the queue.
const RETRY_DELAY_MAX: Duration = Duration::from_secs(60);

/// Connects to MySQL (the schema must be migrated) and runs [`consume`] until `shutdown` resolves.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let pool = open_database(&settings).await?;
    let mut handler = JobHandler::new(pool.clone(), settings.worker.clone(), settings.amqp.delivery_limit);
    if let Some(replica) = open_replica(&settings).await? {
        handler = handler.reading_from(replica);
    }
    consume(&settings, Arc::new(handler), pool, shutdown).await
}

/// Validates the worker's settings, checks the schema is migrated and opens the pool, sized so every job in hand
/// has a connection for its read and writes and another for its progress ticker.
pub async fn open_database(settings: &Settings) -> anyhow::Result<DbPool> {
    settings.worker.validate()?;
    let database = DatabaseSettings {
        pool_size: settings.database.pool_size.max(2 * u32::from(settings.worker.prefetch) + 1),
        ..settings.database.clone()
    };
    off_the_runtime(move || db::check_schema_then_pool(&database)).await
}

/// The pool of the read replica (`database.read_url`), if one is set: a connection per job in hand.
async fn open_replica(settings: &Settings) -> anyhow::Result<Option<DbPool>> {
    let Some(read_url) = settings.database.read_url.clone() else { return Ok(None) };
    let size = settings.database.pool_size.max(u32::from(settings.worker.prefetch) + 1);
    log::info!("reading the report inputs from the replica {}", db::redact_url(&read_url));
    off_the_runtime(move || db::pool(&read_url, size)).await.map(Some)
}

/// Opening a pool blocks (its first connection is made at once): on the blocking pool, not the runtime.
async fn off_the_runtime(
    open: impl FnOnce() -> Result<DbPool, db::DbError> + Send + 'static,
) -> anyhow::Result<DbPool> {
    Ok(tokio::task::spawn_blocking(open).await.context("the MySQL start-up task panicked")??)
}

/// Consumes jobs with `handler` until `shutdown` resolves, reconnecting to the broker when the connection
/// drops.
pub async fn consume(
    settings: &Settings,
    handler: Arc<JobHandler>,
    pool: DbPool,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut shutdown = pin!(shutdown);
    let mut delay = Duration::from_millis(500);
    loop {
        match session(settings, &handler, &pool, shutdown.as_mut()).await {
            Ok(()) => return Ok(()),
            Err(e) => log::error!(
                "broker session at {} ended: {e:#}; reconnecting in {} ms",
                db::redact_url(&settings.amqp.url),
                delay.as_millis()
            ),
        }
        tokio::select! {
            () = shutdown.as_mut() => return Ok(()),
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RECONNECT_DELAY_MAX);
    }
}

/// One connection's worth of consuming. Ok when `shutdown` resolved and the jobs in hand are done.
async fn session(
    settings: &Settings,
    handler: &Arc<JobHandler>,
    pool: &DbPool,
    mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> anyhow::Result<()> {
    let mut broker = Subscriptions::open(settings).await?;
    let stopping = Arc::new(AtomicBool::new(false));
    let retry_delay = Duration::from_millis(settings.worker.retry_delay_ms);
    let mut in_hand = JoinSet::new();
    let ended = loop {
        tokio::select! {
            () = shutdown.as_mut() => break Ok(()),
            next = broker.jobs.next() => match next {
                Some(Ok(delivery)) => {
                    in_hand.spawn(run_job(Arc::clone(handler), delivery, Arc::clone(&stopping), retry_delay));
                }
                Some(Err(e)) => break Err(anyhow::Error::new(e).context("job consumer failed")),
                None => break Err(anyhow::anyhow!("the broker cancelled the job consumer")),
            },
            next = broker.dead.next() => match next {
                Some(Ok(delivery)) => {
                    let marker = Marker {
                        pool: pool.clone(),
                        channel: broker.marker_channel.clone(),
                        exchange: settings.amqp.dead_letter_exchange.clone(),
                        retry_delay: Duration::from_millis(settings.worker.marker_retry_delay_ms),
                        max_attempts: settings.worker.marker_max_attempts,
                    };
                    in_hand.spawn(mark_dead_lettered(marker, delivery));
                }
                Some(Err(e)) => break Err(anyhow::Error::new(e).context("failed-marker consumer failed")),
                None => break Err(anyhow::anyhow!("the broker cancelled the failed-marker consumer")),
            },
            Some(_) = in_hand.join_next(), if !in_hand.is_empty() => {}
        }
    };
    if ended.is_ok() {
        log::info!("stopping: no new jobs; finishing {} in hand", in_hand.len());
        stopping.store(true, Ordering::SeqCst);
        broker.cancel().await;
    }
    // Jobs in hand finish either way: on a lost connection their ack fails and the broker redelivers
    // them, which the handler recognises as already done.
    while in_hand.join_next().await.is_some() {}
    if ended.is_ok() {
        let _ = broker.connection.close(200, "report-worker stopping".into()).await;
        log::info!("stopped");
    }
    ended
}

/// One connection's consumers: jobs, and the failed-marker copies of dead-lettered jobs. The channels
/// and the connection live as long as the consumers are used.
struct Subscriptions {
    connection: lapin::Connection,
    tag: String,
    jobs_channel: lapin::Channel,
    jobs: lapin::Consumer,
    marker_channel: lapin::Channel,
    dead: lapin::Consumer,
}

impl Subscriptions {
    async fn open(settings: &Settings) -> anyhow::Result<Self> {
        let amqp = &settings.amqp;
        let tag = consumer_tag();
        let connection = queue::connect_once(&amqp.url, &tag, queue::DEFAULT_CONNECT_TIMEOUT).await?;
        let declaring = connection.create_channel().await?;
        queue::declare_topology(&declaring, amqp).await?;
        let (jobs_channel, jobs) =
            queue::open_consume_channel(&connection, amqp, settings.worker.prefetch, &tag).await?;
        let marker_channel = connection.create_channel().await?;
        marker_channel.basic_qos(16, BasicQosOptions::default()).await?;
        // A retried copy is acknowledged only once the broker confirms the republished one.
        marker_channel.confirm_select(ConfirmSelectOptions::default()).await?;
        let marker_queue = amqp.failed_marker_queue();
        let dead = marker_channel
            .basic_consume(
                marker_queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("consuming {marker_queue}"))?;
        log::info!("consuming {} (prefetch {}) and {marker_queue} as {tag}", amqp.queue, settings.worker.prefetch);
        Ok(Self { connection, tag, jobs_channel, jobs, marker_channel, dead })
    }

    /// Stops both consumers; deliveries already in hand can still be acknowledged.
    async fn cancel(&self) {
        let _ = self.jobs_channel.basic_cancel(self.tag.as_str().into(), BasicCancelOptions::default()).await;
        let _ = self.marker_channel.basic_cancel(self.tag.as_str().into(), BasicCancelOptions::default()).await;
    }
}

fn consumer_tag() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
    format!("report-worker@{host}:{}:{}", std::process::id(), nanoid_like())
}

/// Distinguishes sessions of one process in the management UI.
fn nanoid_like() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{nanos:08x}")
}

async fn run_job(handler: Arc<JobHandler>, delivery: Delivery, stopping: Arc<AtomicBool>, retry_delay: Duration) {
    if stopping.load(Ordering::SeqCst) {
        // Delivered while stopping and not started: another worker takes it.
        settle(&delivery, Disposition::Requeue).await;
        return;
    }
    let count = queue::previous_deliveries(&delivery);
    let message_id = delivery.properties.message_id().as_ref().map(|id| id.as_str().to_owned());
    let body = delivery.data.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        handler.handle(&JobDelivery { body: &body, message_id: message_id.as_deref(), delivery_count: count })
    })
    .await;
    let disposition = match &outcome {
        Ok(outcome) => outcome.disposition(),
        Err(e) => {
            // A panic in the handler is a bug; the delivery limit keeps it from looping.
            log::error!("a job panicked: {e}; requeued");
            Disposition::Requeue
        }
    };
    if disposition == Disposition::Requeue {
        // Requeued at once, a job would use up its deliveries within seconds of a MySQL restart; waiting
        // longer after each failure lets a short outage pass. The wait ends early when the worker stops.
        let wait = retry_delay.saturating_mul(1 << count.min(5)).min(RETRY_DELAY_MAX);
        let until = tokio::time::Instant::now() + wait;
        while tokio::time::Instant::now() < until && !stopping.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(100).min(wait)).await;
        }
    }
    settle(&delivery, disposition).await;
}

async fn settle(delivery: &Delivery, disposition: Disposition) {
    let result = match disposition {
        Disposition::Ack => delivery.ack(BasicAckOptions::default()).await,
        Disposition::Requeue => delivery.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() }).await,
        Disposition::DeadLetter => delivery.reject(BasicRejectOptions { requeue: false }).await,
    };
    if let Err(e) = result {
        log::warn!("cannot {disposition:?} delivery {}: {e}; the broker will deliver it again", delivery.delivery_tag);
    }
}

/// What the failed-marker needs besides the delivery.
struct Marker {
    pool: DbPool,
    /// The channel the delivery came on: the republished copy is confirmed on it.
    channel: lapin::Channel,
    /// The dead-letter exchange: a copy put back goes through it with [`queue::MARKER_RETRY_ROUTING_KEY`].
    exchange: String,
    retry_delay: Duration,
    max_attempts: u32,
}

/// Marks the report of a dead-lettered job Failed, unless it already finished. A message that names no
/// report id is dropped with an error log before any SQL; a try that fails is repeated after a delay, at
/// most `max_attempts` times in all, then dropped with an error log (the report stays Running; the copy in
/// the dead-letter queue remains for a person).
async fn mark_dead_lettered(marker: Marker, delivery: Delivery) {
    let message_id = delivery.properties.message_id().as_ref().map(|id| id.as_str().to_owned());
    let shown_message_id = message_id.as_deref().map_or_else(|| "(none)".into(), printable);
    let report_id = serde_json::from_slice::<ReportJob>(&delivery.data).map(|job| job.report_id).ok().or(message_id);
    let Some(report_id) = report_id.filter(|id| is_valid_report_id(id)) else {
        log::error!(
            "message_id={shown_message_id} a dead-lettered message names no valid report id (job report_id or \
             message id); dropped from the failed-marker queue"
        );
        settle(&delivery, Disposition::Ack).await;
        return;
    };
    let headers = delivery.properties.headers().as_ref();
    let attempt = header(headers, MARKER_ATTEMPTS_HEADER).and_then(header_count).unwrap_or(0).saturating_add(1);
    let reason = dead_letter_reason(headers);
    let id = report_id.clone();
    let pool = marker.pool.clone();
    let marked = tokio::task::spawn_blocking(move || -> anyhow::Result<bool> {
        let mut conn = pool.get()?;
        Ok(reports::mark_failed(&mut conn, &id, &reason)?)
    })
    .await;
    let failure = match marked {
        Ok(Ok(true)) => {
            log::error!("report_id={report_id} marked Failed: its job was dead-lettered");
            settle(&delivery, Disposition::Ack).await;
            return;
        }
        Ok(Ok(false)) => {
            log::info!("report_id={report_id} job dead-lettered; the report had already finished");
            settle(&delivery, Disposition::Ack).await;
            return;
        }
        Ok(Err(e)) => format!("{e:#}"),
        Err(e) => format!("the marking task panicked: {e}"),
    };
    if attempt >= marker.max_attempts {
        log::error!(
            "report_id={report_id} message_id={shown_message_id} cannot mark the dead-lettered report Failed \
             after {attempt} tries; given up (the job stays in the dead-letter queue): {failure}"
        );
        settle(&delivery, Disposition::Ack).await;
        return;
    }
    log::warn!(
        "report_id={report_id} cannot mark the dead-lettered report Failed yet (try {attempt} of {}): {failure}",
        marker.max_attempts
    );
    tokio::time::sleep(marker.retry_delay).await;
    retry_later(&marker, &delivery, attempt).await;
}

/// Puts the copy back at the end of the failed-marker queue with `attempts` counted, then acknowledges the
/// delivery; if the broker does not confirm the new copy, the delivery itself goes back instead.
async fn retry_later(marker: &Marker, delivery: &Delivery, attempts: u32) {
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    headers.insert(ShortString::from(MARKER_ATTEMPTS_HEADER), AMQPValue::LongUInt(attempts));
    let properties: BasicProperties = delivery.properties.clone().with_headers(headers).with_delivery_mode(2);
    let published = marker
        .channel
        .basic_publish(
            marker.exchange.as_str().into(),
            queue::MARKER_RETRY_ROUTING_KEY.into(),
            BasicPublishOptions::default(),
            &delivery.data,
            properties,
        )
        .await;
    let confirmed = match published {
        Ok(confirm) => confirm.await.map(|c| c.is_ack()),
        Err(e) => Err(e),
    };
    match confirmed {
        Ok(true) => settle(delivery, Disposition::Ack).await,
        Ok(false) | Err(_) => {
            log::warn!("the retry of a dead-lettered copy was not confirmed by the broker; handing it back as is");
            settle(delivery, Disposition::Requeue).await;
        }
    }
}

/// A person's sentence from the `x-death` header RabbitMQ adds when it dead-letters a message.
fn dead_letter_reason(headers: Option<&FieldTable>) -> String {
    let death = match header(headers, "x-death") {
        Some(AMQPValue::FieldArray(deaths)) => match deaths.as_slice().first() {
            Some(AMQPValue::FieldTable(death)) => Some(death.clone()),
            _ => None,
        },
        _ => None,
    };
    let field = |name: &str| death.as_ref().and_then(|d| header(Some(d), name));
    let why = field("reason").and_then(header_text);
    // The row is read by the API's users: no queue names or broker words in it.
    let deliveries = header(headers, "x-delivery-count").and_then(header_count);
    match why.as_deref() {
        Some("delivery_limit") => format!(
            "the report job was given up after {} deliveries: workers failed or stopped on every attempt; see the \
             report worker logs for this report_id, then trigger a new report",
            deliveries.map_or_else(|| "the maximum number of".to_owned(), |n| (n + 1).to_string())
        ),
        Some(_) => "the report job was dead-lettered (rejected or expired in the queue); see the report worker logs \
                    for this report_id, then trigger a new report"
            .to_owned(),
        None => "the report job was dead-lettered; see the report worker logs for this report_id, then trigger a \
                 new report"
            .to_owned(),
    }
}
