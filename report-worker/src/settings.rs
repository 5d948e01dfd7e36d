//! The worker's settings: `database`, `amqp` (shared pieces) and `worker` (this binary's own knobs).
//! Loaded with [`shared_model::settings::load`]: defaults, `config/*.yaml`, `APP__WORKER__PREFETCH=4`-style
//! variables, then `DATABASE_URL` / `AMQP_URL`. Tests build the struct directly.

use serde::Deserialize;
use shared_model::models::reports::{Chunking, MAX_STATEMENT_BYTES};
use shared_model::settings::{AmqpSettings, DatabaseSettings};

/// MySQL's default `max_allowed_packet` is 16 MiB (MariaDB 10.11; MySQL 8 allows 64 MiB). One INSERT of
/// chunks stays under this, which leaves room for the statement around the data.
pub const MAX_INSERT_BYTES_LIMIT: usize = MAX_STATEMENT_BYTES;

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct Settings {
    #[serde(default)]
    pub database: DatabaseSettings,
    #[serde(default)]
    pub amqp: AmqpSettings,
    #[serde(default)]
    pub worker: WorkerSettings,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct WorkerSettings {
    /// Jobs the broker hands this worker before it acknowledges one (`basic.qos`).
    pub prefetch: u16,
    /// Bytes of CSV per `report_chunks` row.
    pub chunk_bytes: usize,
    /// Bytes of chunk data per INSERT statement: several chunks share one statement while they fit.
    pub max_insert_bytes: usize,
    /// How often the progress of a running report is written to its row.
    pub progress_interval_ms: u64,
    /// Wait before a job that failed for a reason that may pass goes back to the queue; doubled on each
    /// further delivery (capped at a minute), so a short MySQL outage does not use up the delivery limit.
    pub retry_delay_ms: u64,
    /// Wait before the failed-marker tries again to mark the report of a dead-lettered job Failed when
    /// MySQL answered with an error.
    pub marker_retry_delay_ms: u64,
    /// Tries of the failed-marker per dead-lettered job; then the copy is dropped with an error log (the
    /// dead-letter queue still holds the job), so a permanent database error cannot loop forever.
    pub marker_max_attempts: u32,
    /// With a read replica (`database.read_url`): how long a job waits for the replica to hold the data
    /// its report was triggered on before it goes back to the queue.
    pub replica_wait_ms: u64,
    /// A report of more stores than this is cut into shards of this many stores (in store-id order) that
    /// any worker computes; a smaller one is computed whole by the worker that takes its job. 0: never cut.
    pub shard_stores: u32,
    /// Memory the kept shard data may take (MiB, estimated from what is kept): past it the least recently
    /// used shards are forgotten, and read again when their next report needs them.
    pub memory_budget_mb: u64,
    /// How often the worker says it is alive in `report_workers` and looks at who else is, to take the
    /// shard queues it owns (a worker silent for three of these is taken for gone).
    pub registry_interval_ms: u64,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            prefetch: 1,
            chunk_bytes: 1 << 20,
            max_insert_bytes: 8 << 20,
            progress_interval_ms: 250,
            retry_delay_ms: 1_000,
            marker_retry_delay_ms: 5_000,
            marker_max_attempts: 60,
            replica_wait_ms: 30_000,
            shard_stores: 15_000,
            memory_budget_mb: 2_048,
            registry_interval_ms: 2_000,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("worker.prefetch must be at least 1")]
    ZeroPrefetch,
    #[error("worker.chunk_bytes must be between 1 and {MAX_INSERT_BYTES_LIMIT} (got {0})")]
    ChunkBytes(usize),
    #[error(
        "worker.max_insert_bytes must be between worker.chunk_bytes ({chunk}) and {MAX_INSERT_BYTES_LIMIT} \
         (got {got}); MySQL refuses packets over max_allowed_packet (16 MiB by default)"
    )]
    MaxInsertBytes { chunk: usize, got: usize },
    #[error("worker.progress_interval_ms must be at least 1")]
    ZeroProgressInterval,
    #[error("worker.marker_max_attempts must be at least 1")]
    ZeroMarkerAttempts,
    #[error("worker.memory_budget_mb must be at least 1")]
    ZeroMemoryBudget,
    #[error("worker.registry_interval_ms must be at least 100")]
    RegistryInterval,
}

impl WorkerSettings {
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.prefetch == 0 {
            return Err(SettingsError::ZeroPrefetch);
        }
        if self.chunk_bytes == 0 || self.chunk_bytes > MAX_INSERT_BYTES_LIMIT {
            return Err(SettingsError::ChunkBytes(self.chunk_bytes));
        }
        if self.max_insert_bytes < self.chunk_bytes || self.max_insert_bytes > MAX_INSERT_BYTES_LIMIT {
            return Err(SettingsError::MaxInsertBytes { chunk: self.chunk_bytes, got: self.max_insert_bytes });
        }
        if self.progress_interval_ms == 0 {
            return Err(SettingsError::ZeroProgressInterval);
        }
        if self.marker_max_attempts == 0 {
            return Err(SettingsError::ZeroMarkerAttempts);
        }
        if self.memory_budget_mb == 0 {
            return Err(SettingsError::ZeroMemoryBudget);
        }
        if self.registry_interval_ms < 100 {
            return Err(SettingsError::RegistryInterval);
        }
        Ok(())
    }

    /// The memory budget of kept shard data, in bytes.
    pub fn memory_budget_bytes(&self) -> usize {
        usize::try_from(self.memory_budget_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX)
    }

    pub fn chunking(&self) -> Chunking {
        Chunking { chunk_bytes: self.chunk_bytes, max_statement_bytes: self.max_insert_bytes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_keep_one_insert_under_the_packet_limit() {
        let s = WorkerSettings::default();
        assert_eq!(s.validate(), Ok(()));
        assert!(s.max_insert_bytes <= MAX_INSERT_BYTES_LIMIT && s.chunk_bytes <= s.max_insert_bytes);
        assert_eq!(s.chunking(), Chunking::default(), "the same defaults as the shared model");
        assert_eq!(s.prefetch, 1);
    }

    #[test]
    fn settings_that_would_break_mysql_are_refused() {
        let s = WorkerSettings { chunk_bytes: 20 << 20, ..WorkerSettings::default() };
        assert_eq!(s.validate(), Err(SettingsError::ChunkBytes(20 << 20)));
        let s = WorkerSettings { chunk_bytes: 1 << 20, max_insert_bytes: 1 << 10, ..WorkerSettings::default() };
        assert!(matches!(s.validate(), Err(SettingsError::MaxInsertBytes { .. })));
        let s = WorkerSettings { prefetch: 0, ..WorkerSettings::default() };
        assert_eq!(s.validate(), Err(SettingsError::ZeroPrefetch));
        let s = WorkerSettings { marker_max_attempts: 0, ..WorkerSettings::default() };
        assert_eq!(s.validate(), Err(SettingsError::ZeroMarkerAttempts));
        let s = WorkerSettings { memory_budget_mb: 0, ..WorkerSettings::default() };
        assert_eq!(s.validate(), Err(SettingsError::ZeroMemoryBudget));
        let s = WorkerSettings { registry_interval_ms: 10, ..WorkerSettings::default() };
        assert_eq!(s.validate(), Err(SettingsError::RegistryInterval));
    }

    #[test]
    fn a_partial_worker_section_keeps_the_other_defaults() {
        let s: Settings = serde_json::from_str(r#"{"worker": {"prefetch": 4}}"#).expect("parses");
        assert_eq!(s.worker.prefetch, 4);
        assert_eq!(s.worker.chunk_bytes, WorkerSettings::default().chunk_bytes);
        assert_eq!(s.database, DatabaseSettings::default());
    }
}
