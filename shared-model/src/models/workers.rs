//! Models and queries for `report_workers`: which report workers are alive, so each can rank itself
//! among them and take the shard queues it owns (`shared_model::queue::owns_slot`).
//!
//! Each worker refreshes its row every few seconds and deletes it when it stops; a worker killed leaves a
//! row that simply ages out of [`live`] (and is deleted by the next heartbeat of any worker an hour on).
//! The registry only steers which worker a shard reaches first: the broker still delivers every shard
//! to some worker whatever the registry says.

use chrono::NaiveDateTime;
use diesel::mysql::MysqlConnection;
use diesel::prelude::*;

use crate::schema::report_workers;

/// Rows older than this are deleted by any worker's heartbeat.
const FORGET_AFTER: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// Records that `worker` is alive now (first call: it started now).
pub fn heartbeat(conn: &mut MysqlConnection, worker: &str, now: NaiveDateTime) -> QueryResult<()> {
    let refreshed =
        diesel::update(report_workers::table.find(worker)).set(report_workers::heartbeat_at.eq(now)).execute(conn)?;
    if refreshed == 0 {
        diesel::insert_into(report_workers::table)
            .values((
                report_workers::worker.eq(worker),
                report_workers::started_at.eq(now),
                report_workers::heartbeat_at.eq(now),
            ))
            .execute(conn)?;
        diesel::delete(report_workers::table.filter(report_workers::heartbeat_at.lt(now - FORGET_AFTER)))
            .execute(conn)?;
    }
    Ok(())
}

/// The workers with a heartbeat at or after `since`, in name order (every worker sees the same order).
pub fn live(conn: &mut MysqlConnection, since: NaiveDateTime) -> QueryResult<Vec<String>> {
    report_workers::table
        .filter(report_workers::heartbeat_at.ge(since))
        .select(report_workers::worker)
        .order(report_workers::worker)
        .load(conn)
}

/// Removes `worker` (it is stopping): the others take its slots at their next look.
pub fn leave(conn: &mut MysqlConnection, worker: &str) -> QueryResult<()> {
    diesel::delete(report_workers::table.find(worker)).execute(conn)?;
    Ok(())
}
