//! The gateway's link to RabbitMQ: one connection and one confirming channel, shared by every request,
//! (re)connected on demand with a backoff so a dead broker costs a request nothing but a quick error.
//!
//! Connections are always opened on the runtime the publisher was built on (the process's main runtime):
//! lapin keeps tasks on the runtime that connected, and an HTTP worker's runtime is not that.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lapin::{Channel, Connection};
use shared_model::db::redact_url;
use shared_model::messages::ReportJob;
use shared_model::queue::{self, QueueError, RetryPolicy};
use shared_model::settings::AmqpSettings;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// What the management UI shows for this connection.
const CONNECTION_NAME: &str = "api-gateway publisher";

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("RabbitMQ is unreachable ({last_error}); the next connection attempt is in {retry_in:?}")]
    WaitingToReconnect { last_error: String, retry_in: Duration },
    #[error(transparent)]
    Queue(Box<QueueError>),
    #[error("RabbitMQ did not confirm within {0:?}")]
    Timeout(Duration),
    #[error("the task connecting to RabbitMQ stopped: {0}")]
    ConnectTask(String),
}

impl From<QueueError> for PublishError {
    fn from(error: QueueError) -> Self {
        PublishError::Queue(Box::new(error))
    }
}

struct Link {
    connection: Connection,
    channel: Channel,
}

impl Link {
    fn is_open(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }
}

struct LinkState {
    link: Option<Link>,
    retry_at: Option<Instant>,
    retry_delay: Duration,
    last_error: String,
}

impl LinkState {
    fn open_channel(&self) -> Option<Channel> {
        self.link.as_ref().filter(|link| link.is_open()).map(|link| link.channel.clone())
    }
}

/// The job of report `report_id` triggered at `created_at`: one spelling for the trigger and the relay.
pub fn report_job(report_id: &str, created_at: DateTime<Utc>) -> ReportJob {
    ReportJob { report_id: report_id.to_owned(), requested_at: crate::rfc3339_micros(created_at) }
}

/// Between failed connection attempts: 250 ms, doubling up to 5 s, capped lower than
/// `RetryPolicy::default()` (10 s) because the caller here is usually an HTTP request, which should find a
/// broker that is back soon after it is.
fn backoff(connect_timeout: Duration) -> RetryPolicy {
    RetryPolicy {
        initial_delay: Duration::from_millis(250),
        max_delay: Duration::from_secs(5),
        give_up_after: None,
        attempt_timeout: connect_timeout,
    }
}

/// `attempt`, failed with [`PublishError::Timeout`] when it takes longer than `timeout`.
async fn within<T>(
    timeout: Duration,
    attempt: impl Future<Output = Result<T, PublishError>>,
) -> Result<T, PublishError> {
    tokio::time::timeout(timeout, attempt).await.unwrap_or(Err(PublishError::Timeout(timeout)))
}

pub struct JobPublisher {
    /// Publishes that failed (no connection, nack, unroutable, no confirm in time), for `/metrics`.
    failures: std::sync::atomic::AtomicU64,
    settings: AmqpSettings,
    /// Each connection attempt is one `queue::connect_once` within `attempt_timeout`; a request never
    /// waits out a delay: within it, the publisher fails at once (see `reconnect`).
    backoff: RetryPolicy,
    runtime: tokio::runtime::Handle,
    state: Arc<Mutex<LinkState>>,
}

impl JobPublisher {
    /// A publisher that connects on first use, on `runtime`.
    pub fn new(settings: AmqpSettings, connect_timeout: Duration, runtime: tokio::runtime::Handle) -> Self {
        let backoff = backoff(connect_timeout);
        Self {
            failures: std::sync::atomic::AtomicU64::new(0),
            settings,
            backoff,
            runtime,
            state: Arc::new(Mutex::new(LinkState {
                link: None,
                retry_at: None,
                retry_delay: backoff.initial_delay,
                last_error: String::new(),
            })),
        }
    }

    pub fn settings(&self) -> &AmqpSettings {
        &self.settings
    }

    /// The open channel, connecting first if needed. Within the backoff after a failed attempt, fails at
    /// once unless `force`. The attempt runs as its own task, so a caller that gives up (timeout) does
    /// not cancel it: its outcome and the backoff are still recorded.
    async fn channel(&self, force: bool) -> Result<Channel, PublishError> {
        if let Some(channel) = self.state.lock().await.open_channel() {
            return Ok(channel);
        }
        let attempt = self.runtime.spawn(reconnect(self.state.clone(), self.settings.clone(), self.backoff, force));
        attempt.await.unwrap_or_else(|join_error| Err(PublishError::ConnectTask(join_error.to_string())))
    }

    /// Publishes `job` and waits for the broker's confirm, all within `timeout`.
    pub async fn publish(&self, job: &ReportJob, timeout: Duration) -> Result<(), PublishError> {
        let attempt = async {
            let channel = self.channel(false).await?;
            queue::publish_job(&channel, &self.settings, job).await.map_err(PublishError::from)
        };
        let outcome = within(timeout, attempt).await;
        if outcome.is_err() {
            self.failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        outcome
    }

    /// How many publishes have failed since the process started.
    pub fn failures(&self) -> u64 {
        self.failures.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Readiness: connected now, or able to connect within `timeout` (ignoring the backoff).
    pub async fn check_reachable(&self, timeout: Duration) -> Result<(), PublishError> {
        within(timeout, self.channel(true)).await.map(|_| ())
    }

    /// Closes the connection politely (at shutdown).
    pub async fn close(&self) {
        let link = self.state.lock().await.link.take();
        if let Some(link) = link
            && let Err(error) = link.connection.close(200, "gateway shutting down".into()).await
        {
            log::debug!("closing the RabbitMQ connection: {error}");
        }
    }
}

async fn reconnect(
    state: Arc<Mutex<LinkState>>,
    settings: AmqpSettings,
    backoff: RetryPolicy,
    force: bool,
) -> Result<Channel, PublishError> {
    let mut state = state.lock().await;
    // Another caller may have reconnected while this one waited for the lock.
    if let Some(channel) = state.open_channel() {
        return Ok(channel);
    }
    if state.link.is_some() {
        log::warn!("the publisher's RabbitMQ connection is closed; reconnecting");
        state.link = None;
    }
    let now = Instant::now();
    if let Some(retry_at) = state.retry_at
        && now < retry_at
        && !force
    {
        return Err(PublishError::WaitingToReconnect {
            last_error: state.last_error.clone(),
            retry_in: retry_at - now,
        });
    }
    match open_link(&settings, backoff.attempt_timeout).await {
        Ok(link) => {
            log::info!(
                "connected to RabbitMQ at {}; topology declared (exchange {:?}, queue {:?})",
                redact_url(&settings.url),
                settings.exchange,
                settings.queue
            );
            let channel = link.channel.clone();
            state.link = Some(link);
            state.retry_at = None;
            state.retry_delay = backoff.initial_delay;
            Ok(channel)
        }
        Err(error) => {
            log::warn!("RabbitMQ connection failed: {error}; next attempt in {:?}", state.retry_delay);
            state.retry_at = Some(Instant::now() + state.retry_delay);
            state.retry_delay = backoff.next_delay(state.retry_delay);
            state.last_error = error.to_string();
            Err(error.into())
        }
    }
}

async fn open_link(settings: &AmqpSettings, timeout: Duration) -> Result<Link, QueueError> {
    let connection = queue::connect_once(&settings.url, CONNECTION_NAME, timeout).await?;
    let channel = tokio::time::timeout(timeout, queue::open_publish_channel(&connection, settings))
        .await
        .map_err(|_| QueueError::ConnectTimeout { url: redact_url(&settings.url), timeout })??;
    Ok(Link { connection, channel })
}
