//! The MySQL connection pool and the embedded migrations.

use diesel::connection::SimpleConnection as _;
use diesel::mysql::MysqlConnection;
use diesel::r2d2::{ConnectionManager, Pool, PooledConnection};
use diesel::sql_types::{BigInt, Nullable, Text, Unsigned};
use diesel::{QueryResult, QueryableByName, RunQueryDsl, sql_query};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::settings::DatabaseSettings;

pub type DbPool = Pool<ConnectionManager<MysqlConnection>>;
pub type DbConn = PooledConnection<ConnectionManager<MysqlConnection>>;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");

/// Named so an operator who sees it in `SHOW PROCESSLIST` knows what holds it.
/// The purpose of the migration lock ([`NamedLock::acquire_for_database`]).
const MIGRATION_LOCK: &str = "migrations";
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
    #[error("DATABASE_URL {url} cannot be used: {why}")]
    BadUrl { url: String, why: String },
    #[error("{0}")]
    BadUser(String),
    #[error(
        "the database schema is behind this release: {} migration(s) pending ({}). Run the migrate step \
         first: `ingest-worker migrate --users` with the administrator's DATABASE_URL (docker compose: the \
         migrate service)", .pending.len(), .pending.join(", ")
    )]
    SchemaBehind { pending: Vec<String> },
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

    /// Takes the lock of `purpose` for the database `conn` uses: named locks belong to the whole server,
    /// so each database gets its own (`restaurant_monitor.<purpose>.<database>`) and the work on one
    /// database never waits for another's. A name over MySQL's 64 characters uses a hash of the
    /// database's name instead.
    pub fn acquire_for_database(
        conn: &mut MysqlConnection,
        purpose: &str,
        wait_seconds: u64,
    ) -> QueryResult<Option<NamedLock>> {
        let database: Option<String> =
            diesel::select(diesel::dsl::sql::<Nullable<Text>>("DATABASE()")).get_result(conn)?;
        let database = database.unwrap_or_default();
        let mut name = format!("restaurant_monitor.{purpose}.{database}");
        if name.len() > 64 {
            let fnv = database
                .bytes()
                .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
            name = format!("restaurant_monitor.{purpose}.{fnv:016x}");
        }
        Self::acquire(conn, &name, wait_seconds)
    }

    /// Releases the lock; `conn` must be the connection that took it.
    pub fn release(self, conn: &mut MysqlConnection) -> QueryResult<()> {
        sql_query("SELECT RELEASE_LOCK(?) AS got").bind::<Text, _>(&self.name).get_result::<LockAnswer>(conn).map(drop)
    }
}

/// Which server a connection talks to, where MySQL 8 and MariaDB accept different SQL (the upsert's
/// reference to the inserted row: MySQL 8 deprecates `VALUES()`, MariaDB rejects the row alias).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerFlavour {
    MariaDb,
    /// MySQL 8.0.20 or later (the row alias of `INSERT … VALUES … AS new`).
    MySql,
}

#[derive(QueryableByName)]
struct ServerVersion {
    #[diesel(sql_type = Text)]
    version: String,
}

impl ServerFlavour {
    /// Asks the server once; a connection keeps its server, so callers keep the answer for the connection.
    pub fn of(conn: &mut MysqlConnection) -> QueryResult<ServerFlavour> {
        let answer: ServerVersion = sql_query("SELECT VERSION() AS version").get_result(conn)?;
        Ok(Self::from_version(&answer.version))
    }

    /// MariaDB says so in its version (`10.11.6-MariaDB-0+deb12u1`); MySQL's is bare (`8.4.3`).
    pub fn from_version(version: &str) -> ServerFlavour {
        if version.to_ascii_lowercase().contains("mariadb") { ServerFlavour::MariaDb } else { ServerFlavour::MySql }
    }
}

/// Applies pending migrations; returns the versions applied. Several processes may start at once and
/// MySQL DDL is not transactional, so a named lock lets one of them migrate while the others wait and
/// then find nothing to do.
pub fn run_migrations(conn: &mut MysqlConnection) -> Result<Vec<String>, DbError> {
    let lock = NamedLock::acquire_for_database(conn, MIGRATION_LOCK, MIGRATION_LOCK_WAIT_SECONDS.into())?
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

/// What every service does at start: checks that every migration of this release is applied (services
/// never migrate: their users may not change the schema), then builds the pool of `settings.pool_size`
/// connections (at least one). Blocks: call it off the async threads (`spawn_blocking`).
pub fn check_schema_then_pool(settings: &DatabaseSettings) -> Result<DbPool, DbError> {
    check_schema(&mut connect(&settings.url)?)?;
    pool(&settings.url, settings.pool_size.max(1))
}

/// [`DbError::SchemaBehind`] when a migration of this release is not applied; a schema ahead of the
/// release (a newer release migrated it first) is fine.
pub fn check_schema(conn: &mut MysqlConnection) -> Result<(), DbError> {
    let pending = pending_migrations(conn)?;
    if pending.is_empty() { Ok(()) } else { Err(DbError::SchemaBehind { pending }) }
}

#[derive(QueryableByName)]
struct AppliedVersion {
    #[diesel(sql_type = Text)]
    version: String,
}

/// The versions of this release's migrations that the database lacks, oldest first. Reads diesel's table
/// itself: diesel's own `pending_migrations` creates that table when missing, which a service's user
/// may not do.
pub fn pending_migrations(conn: &mut MysqlConnection) -> Result<Vec<String>, DbError> {
    let table = crate::grants::MIGRATIONS_TABLE;
    let applied: Vec<String> = match sql_query(format!("SELECT version FROM {table}")).load::<AppliedVersion>(conn) {
        Ok(rows) => rows.into_iter().map(|row| row.version).collect(),
        // ER_NO_SUCH_TABLE: a database never migrated.
        Err(diesel::result::Error::DatabaseError(_, info)) if info.message().contains("doesn't exist") => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let known = diesel::migration::MigrationSource::<diesel::mysql::Mysql>::migrations(&MIGRATIONS)
        .map_err(|e| DbError::Migration(e.to_string()))?;
    let mut pending: Vec<String> = known
        .iter()
        .map(|migration| migration.name().version().to_string())
        .filter(|version| !applied.contains(version))
        .collect();
    pending.sort();
    Ok(pending)
}

/// Applies pending migrations on a connection of its own and logs what it did: the migrate step.
pub fn migrate(url: &str) -> Result<(), DbError> {
    let applied = run_migrations(&mut connect(url)?)?;
    if applied.is_empty() {
        log::info!("database schema up to date ({})", redact_url(url));
    } else {
        log::info!("applied migrations {} to {}", applied.join(", "), redact_url(url));
    }
    Ok(())
}

/// The parts of a `mysql://user[:password]@host[:port]/database[?query]` URL that administration needs:
/// the server without a database, and the database's name. The one parser of such URLs (services, the
/// local script through `ingest-worker database …`, and the tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    /// `mysql://user[:password]@host[:port]`, credentials as written (percent-encoded).
    server: String,
    host: String,
    port: u16,
    database: String,
    /// `?…` or empty.
    query: String,
}

impl DatabaseUrl {
    pub fn parse(url: &str) -> Result<DatabaseUrl, DbError> {
        let bad = |why: &str| DbError::BadUrl { url: redact_url(url), why: why.to_owned() };
        let rest = url.strip_prefix("mysql://").ok_or_else(|| bad("it must start with mysql://"))?;
        let (rest, query) = match rest.find('?') {
            Some(q) => (&rest[..q], &rest[q..]),
            None => (rest, ""),
        };
        let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
        let (host, port) = match host_port.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().map_err(|_| bad("its port is not a number"))?),
            None => (host_port, 3306),
        };
        if host.is_empty() {
            return Err(bad("it names no host"));
        }
        let server = format!("mysql://{authority}");
        Ok(DatabaseUrl { server, host: host.to_owned(), port, database: database.to_owned(), query: query.to_owned() })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The database's name; empty when the URL names none.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The same server and options with another database.
    pub fn with_database(&self, database: &str) -> DatabaseUrl {
        DatabaseUrl { database: database.to_owned(), ..self.clone() }
    }

    /// The server's own `information_schema`: a database every server has, to connect to before the
    /// URL's database exists.
    pub fn admin(&self) -> DatabaseUrl {
        self.with_database("information_schema")
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}{}", self.server, self.database, self.query)
    }
}

/// A database name that can be quoted as an identifier with no escaping, and that a person can read.
fn checked_database_name(url: &DatabaseUrl) -> Result<&str, DbError> {
    let name = url.database();
    if is_plain_database_name(name) {
        Ok(name)
    } else {
        Err(DbError::BadUrl {
            url: redact_url(&url.to_string()),
            why: "its database name must be 1 to 64 letters, digits or underscores".into(),
        })
    }
}

pub(crate) fn is_plain_database_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Creates the URL's database (utf8mb4) unless it exists; true when this call created it.
pub fn create_database_if_missing(url: &DatabaseUrl) -> Result<bool, DbError> {
    let name = checked_database_name(url)?;
    let mut admin = connect(&url.admin().to_string())?;
    let created =
        sql_query(format!("CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4")).execute(&mut admin)?;
    // MySQL and MariaDB count one affected row for a database created, none for one that existed.
    Ok(created > 0)
}

/// Drops the URL's database, if it exists.
pub fn drop_database(url: &DatabaseUrl) -> Result<(), DbError> {
    let name = checked_database_name(url)?;
    let mut admin = connect(&url.admin().to_string())?;
    sql_query(format!("DROP DATABASE IF EXISTS `{name}`")).execute(&mut admin)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{DatabaseUrl, ServerFlavour, redact_url};

    #[test]
    fn the_server_flavour_is_read_from_its_version() {
        assert_eq!(ServerFlavour::from_version("10.11.6-MariaDB-0+deb12u1"), ServerFlavour::MariaDb);
        assert_eq!(ServerFlavour::from_version("5.5.5-10.11.6-MariaDB"), ServerFlavour::MariaDb);
        assert_eq!(ServerFlavour::from_version("8.4.3"), ServerFlavour::MySql);
        assert_eq!(ServerFlavour::from_version("8.0.36-0ubuntu0.22.04.1"), ServerFlavour::MySql);
    }

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(redact_url("mysql://root:secret@db:3306/x"), "mysql://root:***@db:3306/x");
        assert_eq!(redact_url("mysql://root@127.0.0.1/test"), "mysql://root@127.0.0.1/test");
    }

    #[test]
    fn database_urls_split_into_server_and_database() {
        let url = DatabaseUrl::parse("mysql://app:s%40cret@db.internal:3307/restaurant_monitor?ssl_mode=REQUIRED")
            .expect("a good URL");
        assert_eq!((url.host(), url.port(), url.database()), ("db.internal", 3307, "restaurant_monitor"));
        assert_eq!(
            url.with_database("rm_smoke").to_string(),
            "mysql://app:s%40cret@db.internal:3307/rm_smoke?ssl_mode=REQUIRED"
        );
        let local = DatabaseUrl::parse("mysql://root@127.0.0.1/test").expect("no port");
        assert_eq!((local.host(), local.port()), ("127.0.0.1", 3306));
        assert_eq!(local.admin().to_string(), "mysql://root@127.0.0.1/information_schema");
        assert_eq!(DatabaseUrl::parse("mysql://root@127.0.0.1:3306").expect("no database").database(), "");
        for bad in ["postgres://x@y/z", "mysql://root@:3306/x", "mysql://root@h:port/x"] {
            assert!(DatabaseUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
