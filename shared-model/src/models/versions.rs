//! The data version: which state of the ingest a reader sees. Two reads of the same version see the same
//! polls, hours and zones, so a report of one version is the same report whoever computes it.

use diesel::QueryResult;
use diesel::mysql::MysqlConnection;
use uptime_core::input::FileKind;

use super::{loads, snapshots};

/// Which state of the ingest a read reflects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DataVersion {
    /// Every load with an id up to this one had finished when the data was read.
    pub settled_load_id: u64,
    /// `current_snapshots.snapshot_id` of the hours and zones files (`None`: no file).
    pub hours_snapshot: Option<u64>,
    pub zones_snapshot: Option<u64>,
}

/// The data version this connection (or its transaction) sees now.
pub fn current(conn: &mut MysqlConnection) -> QueryResult<DataVersion> {
    Ok(DataVersion {
        settled_load_id: loads::settled_load_id(conn)?,
        hours_snapshot: snapshots::current(conn, FileKind::Hours)?.snapshot_id,
        zones_snapshot: snapshots::current(conn, FileKind::Zones)?.snapshot_id,
    })
}
