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

/// One shard of a planned report (`report_shards`), for any worker to compute. Published by the worker
/// that planned the report, to the shard queue of its slot. JSON, `message_id` = `<report_id>.<shard_no>`.
/// It carries `report_id` and `requested_at` like a [`ReportJob`], so the failed-marker reads a
/// dead-lettered shard as the job of its report (and marks the report Failed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardJob {
    pub report_id: String,
    pub shard_no: u32,
    /// How many shards the report has, for a person reading the message in the management UI.
    pub shards_total: u32,
    pub requested_at: String,
}

impl ShardJob {
    /// The message id of the shard's job.
    pub fn message_id(&self) -> String {
        format!("{}.{}", self.report_id, self.shard_no)
    }
}
