//! The outbox relay: no accepted report is lost.
//!
//! A trigger writes the report row first (`queued_at` NULL: the job is "in the outbox"), then publishes
//! the job and, on the broker's confirm, sets `queued_at`. When the broker is down or slow, the trigger
//! still answers 202 and this relay, running in every gateway, publishes the jobs left in the outbox once
//! they are older than a grace period, reconnecting to the broker as needed. A job may so be published
//! twice (a confirm lost on the way back, two gateways relaying at once): workers treat a job for a
//! report that is already Complete or Failed as done.

use std::sync::Arc;
use std::time::Duration;

use shared_model::db::DbPool;
use shared_model::models::reports;

use crate::db;
use crate::error::DbCallError;
use crate::publisher::{self, JobPublisher, PublishError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelaySettings {
    pub interval: Duration,
    pub grace: Duration,
    pub batch: u32,
    pub publish_timeout: Duration,
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
}

pub struct OutboxRelay {
    pool: DbPool,
    publisher: Arc<JobPublisher>,
    settings: RelaySettings,
}

impl OutboxRelay {
    pub fn new(pool: DbPool, publisher: Arc<JobPublisher>, settings: RelaySettings) -> Self {
        Self { pool, publisher, settings }
    }

    /// Publishes every job in the outbox older than the grace period, oldest first, until the outbox is
    /// empty or a publish fails (the broker is in trouble: the rest waits for the next pass).
    pub async fn run_once(&self) -> Result<RelayPass, RelayError> {
        let mut pass = RelayPass::default();
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
                return Ok(pass);
            }
        }
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
                    Ok(RelayPass { published: 0 }) => {}
                    Ok(pass) => log::info!("outbox relay: {} job(s) published", pass.published),
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
