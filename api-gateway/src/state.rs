//! What every request handler shares.

use std::sync::Arc;

use shared_model::db::DbPool;

use crate::admission::{DownloadSlots, TriggerLimiter};
use crate::cache::CompletedReports;
use crate::publisher::JobPublisher;
use crate::settings::{AuthSettings, GatewaySettings, ReportsSettings};

pub struct AppState {
    pub pool: DbPool,
    pub publisher: Arc<JobPublisher>,
    pub settings: GatewaySettings,
    pub reports: ReportsSettings,
    pub auth: AuthSettings,
    /// Shared with the relay, whose sweep forgets expired reports.
    pub completed: Arc<CompletedReports>,
    /// Triggers per token per minute (`auth.triggers_per_minute`).
    pub triggers: Arc<TriggerLimiter>,
    /// Downloads streamed at once (`gateway.max_concurrent_downloads`).
    pub downloads: DownloadSlots,
}
