//! What every request handler shares.

use std::sync::Arc;

use shared_model::db::DbPool;

use crate::cache::CompletedReports;
use crate::publisher::JobPublisher;
use crate::settings::{GatewaySettings, ReportsSettings};

pub struct AppState {
    pub pool: DbPool,
    pub publisher: Arc<JobPublisher>,
    pub settings: GatewaySettings,
    pub reports: ReportsSettings,
    /// Shared with the relay, whose sweep forgets expired reports.
    pub completed: Arc<CompletedReports>,
}
