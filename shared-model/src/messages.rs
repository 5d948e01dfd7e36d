//! What travels over RabbitMQ, and the names of the topology, shared by the publisher and the consumers.

use serde::{Deserialize, Serialize};

/// The job a report worker receives: compute report `report_id`. JSON, `content_type: application/json`,
/// `message_id` = `report_id`, persistent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportJob {
    pub report_id: String,
    /// When the report was triggered (RFC 3339), for a person reading the message in the management UI.
    pub requested_at: String,
}

impl ReportJob {
    pub const CONTENT_TYPE: &'static str = "application/json";
}
