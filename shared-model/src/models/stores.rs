//! Models and queries for the `stores` table (owned by the ingest work): store ids (strings of up to 64
//! bytes, compared byte for byte) and the 4-byte surrogate `store_key` every other table uses.

use diesel::mysql::MysqlConnection;
use diesel::prelude::*;

use crate::schema::stores;

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = stores, check_for_backend(diesel::mysql::Mysql))]
pub struct Store {
    pub store_key: u32,
    pub store_id: String,
}

#[derive(Insertable)]
#[diesel(table_name = stores)]
struct NewStore<'a> {
    store_id: &'a str,
}

/// Every store, in key order.
pub fn all(conn: &mut MysqlConnection) -> QueryResult<Vec<Store>> {
    stores::table.order(stores::store_key.asc()).select(Store::as_select()).load(conn)
}

/// Stores with a key above `store_key`, in key order: the ones added since a reader last looked.
pub fn after(conn: &mut MysqlConnection, store_key: u32) -> QueryResult<Vec<Store>> {
    stores::table
        .filter(stores::store_key.gt(store_key))
        .order(stores::store_key.asc())
        .select(Store::as_select())
        .load(conn)
}

/// Looks up the keys of the given ids (ids not in the table are absent from the answer).
pub fn find(conn: &mut MysqlConnection, ids: &[&str]) -> QueryResult<Vec<Store>> {
    let mut found = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(10_000) {
        found.extend(stores::table.filter(stores::store_id.eq_any(chunk)).select(Store::as_select()).load(conn)?);
    }
    Ok(found)
}

/// Adds the ids not yet in the table, in the order given (so keys ascend in that order); ids already
/// there are left alone. Returns how many were added.
pub fn insert_missing(conn: &mut MysqlConnection, ids: &[&str]) -> QueryResult<usize> {
    let mut added = 0;
    // One placeholder per row: far below the 65,535-placeholder limit of one statement.
    for chunk in ids.chunks(10_000) {
        let rows: Vec<NewStore<'_>> = chunk.iter().map(|store_id| NewStore { store_id }).collect();
        added += diesel::insert_or_ignore_into(stores::table).values(&rows).execute(conn)?;
    }
    Ok(added)
}

/// Every store as (key, id), the ids boxed: what a reader keeps in memory for a million stores.
pub fn all_ids(conn: &mut MysqlConnection) -> QueryResult<Vec<(u32, Box<str>)>> {
    stores::table
        .select((stores::store_key, stores::store_id))
        .load_iter::<(u32, String), diesel::connection::DefaultLoadingMode>(conn)?
        .map(|row| row.map(|(key, id)| (key, id.into_boxed_str())))
        .collect()
}

/// The stores of a key range as (key, id), the ids boxed: the names of one shard's stores.
pub fn ids_in_range(
    conn: &mut MysqlConnection,
    range: crate::models::shards::KeyRange,
) -> QueryResult<Vec<(u32, Box<str>)>> {
    let mut query = stores::table
        .filter(stores::store_key.ge(range.first))
        .select((stores::store_key, stores::store_id))
        .into_boxed();
    if let Some(end) = range.end {
        query = query.filter(stores::store_key.lt(end));
    }
    query
        .load_iter::<(u32, String), diesel::connection::DefaultLoadingMode>(conn)?
        .map(|row| row.map(|(key, id)| (key, id.into_boxed_str())))
        .collect()
}

/// The stores of the given keys (keys not in the table are absent from the answer).
pub fn with_keys(conn: &mut MysqlConnection, keys: &[u32]) -> QueryResult<Vec<Store>> {
    let mut found = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(10_000) {
        found.extend(stores::table.filter(stores::store_key.eq_any(chunk)).select(Store::as_select()).load(conn)?);
    }
    Ok(found)
}
