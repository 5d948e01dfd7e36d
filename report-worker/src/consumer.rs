//! The queue consumer: `report-worker run`.
//!
//! One AMQP connection with three channels — one to declare the topology, one consuming jobs with
//! `basic.qos(prefetch)` (`shared_model::queue::open_consume_channel`), one consuming the failed-marker
//! copy of dead-lettered jobs (`shared_model::queue`). The worker publishes only to the failed-marker
//! queue: a copy it could not mark yet goes back there with its try counted ([`MARKER_ATTEMPTS_HEADER`]).
//! Each job runs on the blocking pool through [`JobHandler::handle`]; its outcome becomes an ack, a
//! requeue or a dead-letter only after the report is stored or marked.
//!
//! Shards: a fourth channel consumes every shard queue (`basic.qos` 1 per consumer), with the owner's
//! consumer priority on the slots this worker owns and the backup priority on the others. Which slots it
//! owns follows from its rank among the live workers in `report_workers`, which a registry task refreshes
//! every `worker.registry_interval_ms`; when the rank or the number of workers changes, the shard
//! consumers are cancelled and opened again with the new priorities (deliveries in hand stay valid). At
//! most `worker.prefetch` shards are computed at once; the others wait, unacknowledged, in hand. A report
//! job whose outcome is a plan has its shard jobs published (with confirms) before it is acknowledged.
//!
//! Shutdown (the `shutdown` future, SIGTERM/SIGINT in the binary): every consumer is cancelled, jobs in
//! hand finish and are acknowledged, the worker leaves the registry, then the connection closes. A lost
//! broker connection is reopened with a backoff; the kept datasets survive it.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use futures_util::stream::SelectAll;
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
use shared_model::models::workers;
use shared_model::queue::{self, header, header_count, header_text};
use shared_model::settings::DatabaseSettings;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::job::{Disposition, JobDelivery, JobHandler, Outcome, printable};
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
    let mut handler = JobHandler::new(pool.clone(), settings.worker.clone(), settings.amqp.delivery_limit)
        .with_shard_queues(settings.amqp.shard_queues);
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
    let (ranked, ranks) = watch::channel(None);
    let registry = tokio::spawn(keep_registered(
        pool.clone(),
        handler.worker_name().to_owned(),
        Duration::from_millis(settings.worker.registry_interval_ms),
        ranked,
    ));
    let shard_slots = Arc::new(Semaphore::new(usize::from(settings.worker.prefetch)));
    let ended = loop {
        match session(settings, &handler, &pool, ranks.clone(), &shard_slots, shutdown.as_mut()).await {
            Ok(()) => break Ok(()),
            Err(e) => log::error!(
                "broker session at {} ended: {e:#}; reconnecting in {} ms",
                db::redact_url(&settings.amqp.url),
                delay.as_millis()
            ),
        }
        tokio::select! {
            () = shutdown.as_mut() => break Ok(()),
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RECONNECT_DELAY_MAX);
    };
    registry.abort();
    let (leaving, name) = (pool.clone(), handler.worker_name().to_owned());
    let left = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut conn = leaving.get()?;
        Ok(workers::leave(&mut conn, &name)?)
    })
    .await;
    if let Ok(Err(e)) = left {
        log::warn!("cannot leave report_workers (the row ages out by itself): {e:#}");
    }
    ended
}

/// `(rank, live workers)` of this worker, `None` until the registry first answered.
type Rank = Option<(usize, usize)>;

/// Says every `interval` that this worker is alive and sends its rank among the live workers (those
/// heard from within three intervals) whenever it changes. MySQL trouble only delays the news: the
/// shards still reach some worker.
async fn keep_registered(pool: DbPool, name: String, interval: Duration, ranked: watch::Sender<Rank>) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let silence = chrono::TimeDelta::from_std(interval * 3).unwrap_or(chrono::TimeDelta::seconds(6));
    loop {
        ticks.tick().await;
        let (pool, me) = (pool.clone(), name.clone());
        let looked = tokio::task::spawn_blocking(move || -> anyhow::Result<(usize, usize)> {
            let mut conn = pool.get()?;
            let now = chrono::Utc::now().naive_utc();
            workers::heartbeat(&mut conn, &me, now)?;
            let live = workers::live(&mut conn, now - silence)?;
            let rank = live.iter().position(|worker| *worker == me).unwrap_or(0);
            Ok((rank, live.len().max(1)))
        })
        .await;
        match looked {
            Ok(Ok(rank)) => {
                ranked.send_if_modified(|known| {
                    let changed = *known != Some(rank);
                    *known = Some(rank);
                    changed
                });
            }
            Ok(Err(e)) => log::warn!("cannot refresh this worker in report_workers: {e:#}"),
            Err(e) => log::warn!("the registry task panicked: {e}"),
        }
    }
}

/// One connection's worth of consuming. Ok when `shutdown` resolved and the jobs in hand are done.
async fn session(
    settings: &Settings,
    handler: &Arc<JobHandler>,
    pool: &DbPool,
    mut ranks: watch::Receiver<Rank>,
    shard_slots: &Arc<Semaphore>,
    mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> anyhow::Result<()> {
    let mut broker = Subscriptions::open(settings, handler.worker_name()).await?;
    let rank = *ranks.borrow_and_update();
    broker.take_rank(settings, handler, rank).await?;
    let stopping = Arc::new(AtomicBool::new(false));
    let retry_delay = Duration::from_millis(settings.worker.retry_delay_ms);
    let mut in_hand = JoinSet::new();
    let ended = loop {
        tokio::select! {
                () = shutdown.as_mut() => break Ok(()),
                next = broker.jobs.next() => match next {
                    Some(Ok(delivery)) => {
                        let job = Job { kind: JobKind::Report, publisher: Some(broker.publisher(settings)) };
                        in_hand.spawn(run_job(Arc::clone(handler), delivery, job, Arc::clone(&stopping), retry_delay));
                    }
                    Some(Err(e)) => break Err(anyhow::Error::new(e).context("job consumer failed")),
                    None => break Err(anyhow::anyhow!("the broker cancelled the job consumer")),
                },
                Some(next) = broker.shards.next(), if !broker.shards.is_empty() => match next {
                    Ok(delivery) => {
                        let job = Job { kind: JobKind::Shard(Arc::clone(shard_slots)), publisher: None };
                        in_hand.spawn(run_job(Arc::clone(handler), delivery, job, Arc::clone(&stopping), retry_delay));
                    }
                    Err(e) => break Err(anyhow::Error::new(e).context("shard consumer failed")),
                },
                changed = ranks.changed() => {
                    if changed.is_err() {
                        break Err(anyhow::anyhow!("the registry task stopped"));
                    }
                    let rank = *ranks.borrow_and_update();
        broker.take_rank(settings, handler, rank).await?;
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

/// One connection's consumers: jobs, shards, and the failed-marker copies of dead-lettered jobs; and the
/// channel that publishes the shard jobs of the reports this worker plans. The channels and the
/// connection live as long as the consumers are used.
struct Subscriptions {
    connection: lapin::Connection,
    tag: String,
    jobs_channel: lapin::Channel,
    jobs: lapin::Consumer,
    marker_channel: lapin::Channel,
    dead: lapin::Consumer,
    publish_channel: lapin::Channel,
    shards_channel: lapin::Channel,
    shards: SelectAll<lapin::Consumer>,
    /// Tags of the shard consumers open now (cancelled ones drain out of `shards` by themselves).
    shard_tags: Vec<String>,
    /// Counts re-subscriptions, so a new consumer never reuses the tag of one still draining.
    generation: u32,
}

impl Subscriptions {
    async fn open(settings: &Settings, worker_name: &str) -> anyhow::Result<Self> {
        let amqp = &settings.amqp;
        let tag = format!("{worker_name}.{}", session_number());
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
        let publish_channel = queue::open_publish_channel(&connection, amqp).await?;
        let shards_channel = connection.create_channel().await?;
        // One shard in hand per shard queue: the queue's next shard goes to another consumer meanwhile.
        shards_channel.basic_qos(1, BasicQosOptions { global: false }).await?;
        log::info!(
            "consuming {} (prefetch {}), {} shard queues {}.NN and {marker_queue} as {tag}",
            amqp.queue,
            settings.worker.prefetch,
            amqp.shard_queues,
            amqp.shard_queue
        );
        Ok(Self {
            connection,
            tag,
            jobs_channel,
            jobs,
            marker_channel,
            dead,
            publish_channel,
            shards_channel,
            shards: SelectAll::new(),
            shard_tags: Vec::new(),
            generation: 0,
        })
    }

    /// Takes the shard queues of this worker's `rank` (its consumers' priorities) and tells `handler`, which
    /// forgets the data of the slots it no longer owns.
    async fn take_rank(&mut self, settings: &Settings, handler: &JobHandler, rank: Rank) -> anyhow::Result<()> {
        if let Some((rank, workers)) = rank {
            log::info!("this worker is {} of {workers} live workers: taking its shard queues", rank + 1);
            handler.set_ownership(rank, workers);
        }
        self.consume_shards(settings, rank).await
    }

    /// (Re)opens a consumer on every shard queue: the owner's priority on the slots this worker owns as
    /// number `rank` of the live workers, the backup priority on the others (every slot the owner's while
    /// the rank is unknown, so a lone worker takes everything at once).
    async fn consume_shards(&mut self, settings: &Settings, rank: Rank) -> anyhow::Result<()> {
        for tag in self.shard_tags.drain(..) {
            self.shards_channel
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await
                .with_context(|| format!("cancelling the shard consumer {tag}"))?;
        }
        self.generation += 1;
        let mut owned = Vec::new();
        for slot in 0..settings.amqp.shard_queues {
            let owner = rank.is_none_or(|(rank, workers)| queue::owns_slot(slot, rank, workers));
            let priority = if owner { queue::SHARD_OWNER_PRIORITY } else { queue::SHARD_BACKUP_PRIORITY };
            let tag = format!("{}.g{}", self.tag, self.generation);
            let consumer = queue::consume_shard_queue(&self.shards_channel, &settings.amqp, slot, priority, &tag)
                .await
                .with_context(|| format!("consuming {}", settings.amqp.shard_queue_name(slot)))?;
            self.shard_tags.push(queue::shard_consumer_tag(&tag, slot));
            self.shards.push(consumer);
            if owner {
                owned.push(slot);
            }
        }
        log::info!("shard queues owned (consumer priority {}): {owned:?}", queue::SHARD_OWNER_PRIORITY);
        Ok(())
    }

    fn publisher(&self, settings: &Settings) -> Publisher {
        Publisher { channel: self.publish_channel.clone(), amqp: settings.amqp.clone() }
    }

    /// Stops every consumer; deliveries already in hand can still be acknowledged.
    async fn cancel(&self) {
        let _ = self.jobs_channel.basic_cancel(self.tag.as_str().into(), BasicCancelOptions::default()).await;
        let _ = self.marker_channel.basic_cancel(self.tag.as_str().into(), BasicCancelOptions::default()).await;
        for tag in &self.shard_tags {
            let _ = self.shards_channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
        }
    }
}

/// Numbers the broker sessions of this process (a reconnect is a new session).
fn session_number() -> u32 {
    static SESSIONS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    SESSIONS.fetch_add(1, Ordering::Relaxed)
}

/// What a delivery is, and what its run needs besides the handler.
struct Job {
    kind: JobKind,
    /// Where a report job's planned shards are published.
    publisher: Option<Publisher>,
}

enum JobKind {
    Report,
    /// A shard, computed once a permit of the worker's shard gate is free (at most `worker.prefetch` at
    /// once, whatever the number of shard queues delivering to it).
    Shard(Arc<Semaphore>),
}

/// The channel (with confirms) and names to publish shard jobs with.
struct Publisher {
    channel: lapin::Channel,
    amqp: shared_model::settings::AmqpSettings,
}

/// How long the broker may take to confirm a plan's shard jobs before the report job goes back.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

async fn run_job(
    handler: Arc<JobHandler>,
    delivery: Delivery,
    job: Job,
    stopping: Arc<AtomicBool>,
    retry_delay: Duration,
) {
    let _permit = match &job.kind {
        JobKind::Shard(gate) => match Arc::clone(gate).acquire_owned().await {
            Ok(permit) => Some(permit),
            Err(_) => {
                settle(&delivery, Disposition::Requeue).await;
                return;
            }
        },
        JobKind::Report => None,
    };
    if stopping.load(Ordering::SeqCst) {
        // Delivered while stopping and not started: another worker takes it.
        settle(&delivery, Disposition::Requeue).await;
        return;
    }
    let count = queue::previous_deliveries(&delivery);
    let message_id = delivery.properties.message_id().as_ref().map(|id| id.as_str().to_owned());
    let body = delivery.data.clone();
    let shard = matches!(job.kind, JobKind::Shard(_));
    let outcome = tokio::task::spawn_blocking(move || {
        let delivered = JobDelivery { body: &body, message_id: message_id.as_deref(), delivery_count: count };
        if shard { handler.handle_shard(&delivered) } else { handler.handle(&delivered) }
    })
    .await;
    let mut disposition = match &outcome {
        Ok(outcome) => outcome.disposition(),
        Err(e) => {
            // A panic in the handler is a bug; the delivery limit keeps it from looping.
            log::error!("a job panicked: {e}; requeued");
            Disposition::Requeue
        }
    };
    if let (Ok(Outcome::Planned { report_id, jobs, .. }), Some(publisher)) = (&outcome, &job.publisher) {
        // The report job is acknowledged only once every shard job is on its queue; otherwise it comes
        // back, and its next delivery publishes the shards not stored yet again.
        let published =
            tokio::time::timeout(PUBLISH_TIMEOUT, queue::publish_shard_jobs(&publisher.channel, &publisher.amqp, jobs))
                .await;
        match published {
            Ok(Ok(())) => log::info!("report_id={report_id} published {} shard jobs", jobs.len()),
            Ok(Err(e)) => {
                log::warn!("report_id={report_id} cannot publish its shard jobs: {e}; the report job goes back");
                disposition = Disposition::Requeue;
            }
            Err(_) => {
                log::warn!(
                    "report_id={report_id} the broker did not confirm its shard jobs in time; the report job goes back"
                );
                disposition = Disposition::Requeue;
            }
        }
    }
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
