//! `idempotency_keys`: the `Idempotency-Key` of a trigger and the report it created. A key answers the
//! same report for [`KEY_LIFETIME_HOURS`]; then it is ignored, and the gateway's sweep deletes it.
//!
//! Keys belong to a caller (`client`, the hex SHA-256 of its token): the same key of two callers names
//! two reports, and one caller never learns of another's report through a key.

use chrono::NaiveDateTime;
use diesel::mysql::MysqlConnection;
use diesel::prelude::*;

use crate::schema::idempotency_keys;

/// How long a key answers the report it created.
pub const KEY_LIFETIME_HOURS: i64 = 24;
/// The longest key accepted (the column's width).
pub const MAX_KEY_LEN: usize = 255;

/// One stored key.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = idempotency_keys, check_for_backend(diesel::mysql::Mysql))]
pub struct IdempotencyKeyRow {
    pub idempotency_key: String,
    pub client: String,
    pub body_digest: String,
    pub report_id: String,
    pub created_at: NaiveDateTime,
}

/// The key as stored, if it was stored at or after `seen_after` (an older one has expired), locked so a
/// concurrent trigger with the same key waits for this transaction.
pub fn find_live(
    conn: &mut MysqlConnection,
    client: &str,
    key: &str,
    seen_after: NaiveDateTime,
) -> QueryResult<Option<IdempotencyKeyRow>> {
    idempotency_keys::table
        .find((client, key))
        .filter(idempotency_keys::created_at.ge(seen_after))
        .select(IdempotencyKeyRow::as_select())
        .for_update()
        .first(conn)
        .optional()
}

/// Records a key for the report it created; an expired row of the same key (not yet swept) is replaced.
pub fn insert(conn: &mut MysqlConnection, row: &IdempotencyKeyRow, seen_after: NaiveDateTime) -> QueryResult<()> {
    diesel::delete(
        idempotency_keys::table
            .find((&row.client, &row.idempotency_key))
            .filter(idempotency_keys::created_at.lt(seen_after)),
    )
    .execute(conn)?;
    diesel::insert_into(idempotency_keys::table)
        .values((
            idempotency_keys::idempotency_key.eq(&row.idempotency_key),
            idempotency_keys::client.eq(&row.client),
            idempotency_keys::body_digest.eq(&row.body_digest),
            idempotency_keys::report_id.eq(&row.report_id),
            idempotency_keys::created_at.eq(row.created_at),
        ))
        .execute(conn)?;
    Ok(())
}

/// Deletes up to `limit` keys stored before `before`, oldest first, along the `created_at` index, so
/// one statement never holds many locks. Returns how many went.
pub fn delete_expired(conn: &mut MysqlConnection, before: NaiveDateTime, limit: u32) -> QueryResult<usize> {
    diesel::sql_query("DELETE FROM idempotency_keys WHERE created_at < ? ORDER BY created_at LIMIT ?")
        .bind::<diesel::sql_types::Datetime, _>(before)
        .bind::<diesel::sql_types::Unsigned<diesel::sql_types::Integer>, _>(limit)
        .execute(conn)
}
