//! Diesel is synchronous: every query runs on the blocking pool (`web::block`), pool checkout included,
//! so an HTTP worker thread never waits on MySQL.

use actix_web::web;
use diesel::QueryResult;
use diesel::mysql::MysqlConnection;
use shared_model::db::DbPool;

use crate::error::DbCallError;

/// Runs `query` with a pooled connection on the blocking pool.
pub async fn call<T, F>(pool: &DbPool, query: F) -> Result<T, DbCallError>
where
    F: FnOnce(&mut MysqlConnection) -> QueryResult<T> + Send + 'static,
    T: Send + 'static,
{
    let pool = pool.clone();
    web::block(move || {
        let mut conn = pool.get()?;
        Ok(query(&mut conn)?)
    })
    .await
    .map_err(|_| DbCallError::Canceled)?
}
