//! SQL for the `polls` table (owned by the ingest work): one row per (store, instant), with the load that
//! last inserted it or changed its status.
//!
//! The ingest writes polls as large multi-row statements built as text (diesel's batched inserts parse
//! several times slower on the server); this module owns the text around the rows, so the table and its
//! columns are spelled only here.

use diesel::mysql::MysqlConnection;
use diesel::prelude::*;

use crate::schema::polls;

/// Start of the upsert: each row that follows is `(store_key, 'polled_at', active, load_id)` with `active`
/// as 0 or 1, rows separated by commas, then [`UPSERT_ON_DUPLICATE`].
pub const UPSERT_PREFIX: &str = "INSERT INTO polls (store_key, polled_at, active, load_id) VALUES ";

/// End of the upsert: a row already there takes the new status, and the new `load_id` only if its status
/// changed, so a reader can fetch what a load changed by `load_id`. MySQL assigns left to right: `load_id`
/// is decided while `active` still holds the old status.
pub const UPSERT_ON_DUPLICATE: &str = " ON DUPLICATE KEY UPDATE \
    load_id = IF(active = VALUES(active), load_id, VALUES(load_id)), active = VALUES(active)";

/// How many polls the table holds.
pub fn count(conn: &mut MysqlConnection) -> QueryResult<u64> {
    let n: i64 = polls::table.count().get_result(conn)?;
    // COUNT(*) is never negative.
    Ok(n.unsigned_abs())
}
