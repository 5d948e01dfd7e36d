//! The outbox relay: no accepted report is lost.
//!
//! A trigger writes the report row first (`queued_at` NULL: the job is "in the outbox"), then publishes
//! the job and, on the broker's confirm, sets `queued_at`. When the broker is down or slow, the trigger
//! still answers 202 and this relay, running in every gateway, publishes the jobs left in the outbox once
//! they are older than a grace period, reconnecting to the broker as needed. A job may so be published
//! twice (a confirm lost on the way back, two gateways relaying at once): workers treat a job for a
//! report that is already Complete or Failed as done.
//!
//! Each pass also sweeps (SPEC §5, issue 10):
//! - stale jobs: a Running report whose confirmed job no worker started within `stale_after`, or whose
//!   worker's heartbeat is older than that (the job was purged, its queue deleted, the broker lost it, the
//!   worker hangs), has its job published again; after `delivery_limit` such re-publishes it is marked
//!   Failed with the reason, never Running forever;
//! - expired reports: the stored CSV of a report finished longer than the retention ago is deleted (once no
//!   report sharing it is younger), a batch per query, and this gateway's cache forgets expired reports;
//! - expired idempotency keys (older than 24 h) are deleted, oldest first, in bounded statements.

use std::sync::Arc;
use std::time::Duration;

use shared_model::db::DbPool;
use shared_model::models::{idempotency_keys, reports};

use crate::cache::CompletedReports;
use crate::db;
use crate::error::DbCallError;
use crate::publisher::{self, JobPublisher, PublishError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelaySettings {
    pub interval: Duration,
    pub grace: Duration,
    pub batch: u32,
    pub publish_timeout: Duration,
    /// A report finished longer ago than this is expired.
    pub retention: chrono::Duration,
    /// A Running report with no sign of life for this long has its job published again.
    pub stale_after: chrono::Duration,
    /// Re-publishes of one report's job before it is marked Failed.
    pub delivery_limit: u32,
    /// Reports the sweep handles per query.
    pub sweep_batch: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("reading the outbox failed: {0}")]
    Db(#[from] DbCallError),
    #[error("publishing report_id={report_id} failed: {source}")]
    Publish { report_id: String, source: PublishError },
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayPass {
    /// Jobs the broker confirmed.
    pub published: usize,
    /// Jobs of stale Running reports published again.
    pub republished: usize,
    /// Stale Running reports marked Failed (their job was lost more often than the delivery limit).
    pub failed_stale: usize,
    /// Expired reports whose CSV was deleted.
    pub csvs_deleted: usize,
    /// Idempotency keys older than their lifetime, deleted.
    pub keys_deleted: usize,
}

impl RelayPass {
    fn did_nothing(&self) -> bool {
        *self == RelayPass::default()
    }
}

/// Expired idempotency keys one statement of the sweep deletes.
const KEYS_PER_STATEMENT: u32 = 1_000;
/// Statements of expired keys one pass runs.
const KEY_STATEMENTS_PER_PASS: u32 = 10;

pub struct OutboxRelay {
    pool: DbPool,
    publisher: Arc<JobPublisher>,
    settings: RelaySettings,
    completed: Option<Arc<CompletedReports>>,
}

impl OutboxRelay {
    pub fn new(pool: DbPool, publisher: Arc<JobPublisher>, settings: RelaySettings) -> Self {
        Self { pool, publisher, settings, completed: None }
    }

    /// The cache of completed reports whose expired entries the sweep forgets.
    pub fn forgetting_expired_in(mut self, completed: Arc<CompletedReports>) -> Self {
        self.completed = Some(completed);
        self
    }

    /// One pass: the outbox, then stale jobs, then expired CSVs. A failure of one part does not keep the
    /// others from running; the first error is returned after all ran.
    pub async fn run_once(&self) -> Result<RelayPass, RelayError> {
        let mut pass = RelayPass::default();
        let outbox = self.publish_outbox(&mut pass).await;
        let stale = self.republish_stale(&mut pass).await;
        let expired = self.delete_expired(&mut pass).await;
        let keys = self.delete_expired_keys(&mut pass).await;
        outbox.and(stale).and(expired).and(keys).map(|()| pass)
    }

    /// Publishes every job in the outbox older than the grace period, oldest first, until the outbox is
    /// empty or a publish fails (the broker is in trouble: the rest waits for the next pass).
    async fn publish_outbox(&self, pass: &mut RelayPass) -> Result<(), RelayError> {
        loop {
            let grace = chrono::Duration::from_std(self.settings.grace).unwrap_or(chrono::Duration::MAX);
            let created_before = chrono::Utc::now().naive_utc() - grace;
            let batch = self.settings.batch;
            let due = db::call(&self.pool, move |conn| reports::outbox(conn, created_before, batch)).await?;
            let full_batch = due.len() >= batch as usize;
            for report in due {
                let job = publisher::report_job(&report.report_id, report.created_at.and_utc());
                self.publisher
                    .publish(&job, self.settings.publish_timeout)
                    .await
                    .map_err(|source| RelayError::Publish { report_id: job.report_id.clone(), source })?;
                let id = job.report_id.clone();
                db::call(&self.pool, move |conn| reports::mark_queued(conn, &id)).await?;
                log::info!("report_id={} published from the outbox", job.report_id);
                pass.published += 1;
            }
            if !full_batch {
                return Ok(());
            }
        }
    }

    /// Publishes again the jobs of Running reports that showed no sign of life for `stale_after`, or marks
    /// them Failed once they were published again `delivery_limit` times. One batch per pass: what a
    /// pass publishes is not stale again before `stale_after`.
    async fn republish_stale(&self, pass: &mut RelayPass) -> Result<(), RelayError> {
        let quiet_since = chrono::Utc::now().naive_utc() - self.settings.stale_after;
        let batch = self.settings.sweep_batch;
        let stale = db::call(&self.pool, move |conn| reports::stale_running(conn, quiet_since, batch)).await?;
        for report in stale {
            let id = report.report_id.clone();
            if report.redeliveries >= self.settings.delivery_limit {
                let reason = format!(
                    "the report's job was lost {} times (no worker started it or its worker stopped for more than {} s each time); trigger a new report",
                    report.redeliveries + 1,
                    self.settings.stale_after.num_seconds()
                );
                if db::call(&self.pool, move |conn| reports::mark_failed(conn, &id, &reason)).await? {
                    log::warn!("report_id={} marked Failed: its job was lost too often", report.report_id);
                    pass.failed_stale += 1;
                }
                continue;
            }
            let job = publisher::report_job(&report.report_id, report.created_at.and_utc());
            self.publisher
                .publish(&job, self.settings.publish_timeout)
                .await
                .map_err(|source| RelayError::Publish { report_id: job.report_id.clone(), source })?;
            if db::call(&self.pool, move |conn| reports::mark_republished(conn, &id)).await? {
                log::warn!(
                    "report_id={} showed no sign of life for {} s: its job is published again ({} of {})",
                    report.report_id,
                    self.settings.stale_after.num_seconds(),
                    report.redeliveries + 1,
                    self.settings.delivery_limit
                );
                pass.republished += 1;
            }
        }
        Ok(())
    }

    /// Deletes the CSVs of expired reports, a batch per query, and forgets expired reports in the cache.
    async fn delete_expired(&self, pass: &mut RelayPass) -> Result<(), RelayError> {
        let now = chrono::Utc::now().naive_utc();
        if let Some(completed) = &self.completed {
            completed.forget_expired(now);
        }
        let finished_before = now - self.settings.retention;
        let batch = self.settings.sweep_batch;
        loop {
            let expired = db::call(&self.pool, move |conn| reports::expired_csvs(conn, finished_before, batch)).await?;
            let full_batch = expired.len() >= batch as usize;
            let mut deleted_any = false;
            for report_id in expired {
                let id = report_id.clone();
                if let Some(chunks) =
                    db::call(&self.pool, move |conn| reports::delete_csv(conn, &id, finished_before)).await?
                {
                    log::info!("report_id={report_id} expired: {chunks} stored chunk(s) deleted");
                    pass.csvs_deleted += 1;
                    deleted_any = true;
                }
            }
            // A batch of which nothing could go (shared meanwhile) would be read again: wait for a pass.
            if !full_batch || !deleted_any {
                return Ok(());
            }
        }
    }

    /// Deletes idempotency keys past their lifetime along their `created_at` index, [`KEYS_PER_STATEMENT`]
    /// at a time, at most [`KEY_STATEMENTS_PER_PASS`] statements a pass: a trigger rate the sweep cannot
    /// follow only lets old keys wait (they are ignored once expired, whether deleted or not).
    async fn delete_expired_keys(&self, pass: &mut RelayPass) -> Result<(), RelayError> {
        let before = chrono::Utc::now().naive_utc() - chrono::Duration::hours(idempotency_keys::KEY_LIFETIME_HOURS);
        for _ in 0..KEY_STATEMENTS_PER_PASS {
            let deleted =
                db::call(&self.pool, move |conn| idempotency_keys::delete_expired(conn, before, KEYS_PER_STATEMENT))
                    .await?;
            pass.keys_deleted += deleted;
            if deleted < KEYS_PER_STATEMENT as usize {
                break;
            }
        }
        Ok(())
    }

    /// Runs a pass every interval until `shutdown` resolves. A pass cut by the shutdown leaves at worst a
    /// job published but not marked queued, which is published again later (duplicates are harmless).
    pub async fn run_until(self, shutdown: impl std::future::Future<Output = ()>) {
        let mut ticks = tokio::time::interval(self.settings.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let work = async {
            loop {
                ticks.tick().await;
                match self.run_once().await {
                    Ok(pass) if pass.did_nothing() => {}
                    Ok(pass) => log::info!(
                        "outbox relay: {} job(s) published, {} stale job(s) published again, {} stale report(s) \
                         failed, {} expired CSV(s) deleted",
                        pass.published,
                        pass.republished,
                        pass.failed_stale,
                        pass.csvs_deleted
                    ),
                    Err(error) => log::warn!("outbox relay: {error}; trying again in {:?}", self.settings.interval),
                }
            }
        };
        tokio::select! {
            () = work => {}
            () = shutdown => log::info!("outbox relay stopped"),
        }
    }
}
