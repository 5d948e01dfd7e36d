//! The MySQL connection pool and the embedded migrations.

use diesel::connection::SimpleConnection as _;
use diesel::mysql::MysqlConnection;
use diesel::r2d2::{ConnectionManager, Pool, PooledConnection};
use diesel::sql_types::{BigInt, Text, Unsigned};
use diesel::{QueryResult, QueryableByName, RunQueryDsl, sql_query};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::settings::DatabaseSettings;

pub type DbPool = Pool<ConnectionManager<MysqlConnection>>;
pub type DbConn = PooledConnection<ConnectionManager<MysqlConnection>>;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");

/// Named so an operator who sees it in `SHOW PROCESSLIST` knows what holds it.
const MIGRATION_LOCK: &str = "restaurant_monitor.migrations";
const MIGRATION_LOCK_WAIT_SECONDS: u32 = 120;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open a MySQL connection pool to {url}: {source}")]
    Pool { url: String, source: diesel::r2d2::PoolError },
    #[error("cannot connect to MySQL at {url}: {source}")]
    Connect { url: String, source: diesel::ConnectionError },
    #[error("migrations failed: {0}")]
    Migration(String),
    #[error("another process held the migration lock for {0} s; is a migration stuck?")]
    MigrationLockTimeout(u32),
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
}

/// The URL with its password replaced, for log lines and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!("{}{}:***{}", &url[..scheme + 3], &creds[..colon], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Builds the pool. Connections are tested on checkout: MySQL drops idle ones after `wait_timeout`.
pub fn pool(url: &str, max_size: u32) -> Result<DbPool, DbError> {
    Pool::builder()
        .max_size(max_size)
        .min_idle(Some(1))
        .test_on_check_out(true)
        .connection_timeout(std::time::Duration::from_secs(10))
        .build(ConnectionManager::new(url))
        .map_err(|source| DbError::Pool { url: redact_url(url), source })
}

/// A single connection outside any pool, for migrations and long loads.
pub fn connect(url: &str) -> Result<MysqlConnection, DbError> {
    use diesel::Connection as _;
    MysqlConnection::establish(url).map_err(|source| DbError::Connect { url: redact_url(url), source })
}

/// A MySQL named lock (`GET_LOCK`) held by one connection. It is not released on drop (that would need
/// the connection): call [`NamedLock::release`]; a lock never released goes when its connection closes.
#[must_use = "a named lock is held until released or until its connection closes"]
#[derive(Debug)]
pub struct NamedLock {
    name: String,
}

#[derive(QueryableByName)]
struct LockAnswer {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Integer>)]
    got: Option<i32>,
}

impl NamedLock {
    /// Takes the lock `name`, waiting up to `wait_seconds` (0: only if free now). `None` when another
    /// session held it for the whole wait.
    pub fn acquire(conn: &mut MysqlConnection, name: &str, wait_seconds: u64) -> QueryResult<Option<NamedLock>> {
        let answer: LockAnswer = sql_query("SELECT GET_LOCK(?, ?) AS got")
            .bind::<Text, _>(name)
            .bind::<Unsigned<BigInt>, _>(wait_seconds)
            .get_result(conn)?;
        // NULL is an error inside GET_LOCK (e.g. the session was killed): not held either way.
        Ok((answer.got == Some(1)).then(|| NamedLock { name: name.to_owned() }))
    }

    /// Releases the lock; `conn` must be the connection that took it.
    pub fn release(self, conn: &mut MysqlConnection) -> QueryResult<()> {
        sql_query("SELECT RELEASE_LOCK(?) AS got").bind::<Text, _>(&self.name).get_result::<LockAnswer>(conn).map(drop)
    }
}

/// Applies pending migrations; returns the versions applied. Several processes may start at once and
/// MySQL DDL is not transactional, so a named lock lets one of them migrate while the others wait and
/// then find nothing to do.
pub fn run_migrations(conn: &mut MysqlConnection) -> Result<Vec<String>, DbError> {
    let lock = NamedLock::acquire(conn, MIGRATION_LOCK, MIGRATION_LOCK_WAIT_SECONDS.into())?
        .ok_or(DbError::MigrationLockTimeout(MIGRATION_LOCK_WAIT_SECONDS))?;
    let applied = conn
        .run_pending_migrations(MIGRATIONS)
        .map(|versions| versions.iter().map(ToString::to_string).collect())
        .map_err(|e| DbError::Migration(e.to_string()));
    let released = lock.release(conn);
    let applied = applied?;
    released?;
    Ok(applied)
}

/// Runs `read` inside `START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY` at REPEATABLE READ, so
/// everything it reads comes from one moment. The transaction is committed after `read` returns Ok and
/// rolled back otherwise.
pub fn with_consistent_snapshot<T, E>(
    conn: &mut MysqlConnection,
    read: impl FnOnce(&mut MysqlConnection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<diesel::result::Error>,
{
    // Only the next transaction: the pooled connection keeps its session default afterwards.
    conn.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")?;
    conn.batch_execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")?;
    match read(conn) {
        Ok(value) => {
            conn.batch_execute("COMMIT")?;
            Ok(value)
        }
        Err(e) => {
            // The read failed; a failing rollback (a dropped connection) changes nothing for the caller.
            let _ = conn.batch_execute("ROLLBACK");
            Err(e)
        }
    }
}

/// What every service does at start: applies pending migrations on a connection of its own (MySQL DDL
/// commits implicitly, so it must not run inside a pooled session that may hold a transaction), then
/// builds the pool of `settings.pool_size` connections (at least one). Blocks: call it off the async
/// threads (`spawn_blocking`).
pub fn migrate_then_pool(settings: &DatabaseSettings) -> Result<DbPool, DbError> {
    migrate(&settings.url)?;
    pool(&settings.url, settings.pool_size.max(1))
}

/// Applies pending migrations on a connection of its own and logs what it did.
pub fn migrate(url: &str) -> Result<(), DbError> {
    let applied = run_migrations(&mut connect(url)?)?;
    if applied.is_empty() {
        log::info!("database schema up to date ({})", redact_url(url));
    } else {
        log::info!("applied migrations {} to {}", applied.join(", "), redact_url(url));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(redact_url("mysql://root:secret@db:3306/x"), "mysql://root:***@db:3306/x");
        assert_eq!(redact_url("mysql://root@127.0.0.1/test"), "mysql://root@127.0.0.1/test");
    }
}
