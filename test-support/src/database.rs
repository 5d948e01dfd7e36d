//! A MySQL database of its own per test: created and migrated at once, dropped with the value.

use std::sync::OnceLock;

use diesel::mysql::MysqlConnection;
use diesel::{Connection as _, RunQueryDsl as _};
use shared_model::db::{self, DbPool};
use shared_model::settings::DatabaseSettings;

/// Connections in [`TestDatabase::pool`] and in [`TestDatabase::settings`].
const POOL_SIZE: u32 = 6;

/// The server the tests use, `mysql://user@host:port` without a database name, and the query string of
/// `DATABASE_URL` (`?…`, or empty). `DATABASE_URL` when set, else root on 127.0.0.1:3306.
pub fn server_url() -> (String, String) {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
    let (url, query) = match url.find('?') {
        Some(q) => (url[..q].to_owned(), url[q..].to_owned()),
        None => (url, String::new()),
    };
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let server = match url[after_scheme..].find('/') {
        Some(slash) => url[..after_scheme + slash].to_owned(),
        None => url,
    };
    (server, query)
}

/// A database named `rm_t_<random>` (or another prefix), dropped when the value is.
pub struct TestDatabase {
    name: String,
    url: String,
    admin_url: String,
    pool: OnceLock<DbPool>,
}

impl TestDatabase {
    /// A new database with every migration applied.
    pub fn new() -> TestDatabase {
        TestDatabase::with_prefix("rm_t_")
    }

    /// [`TestDatabase::new`] with another name prefix (a benchmark's database says so in its name).
    pub fn with_prefix(prefix: &str) -> TestDatabase {
        let database = TestDatabase::empty(prefix);
        db::run_migrations(&mut database.conn()).expect("the migrations apply");
        database
    }

    /// A new database without any table (for tests of the migrations themselves).
    pub fn empty(prefix: &str) -> TestDatabase {
        let (server, query) = server_url();
        let name = format!("{prefix}{}", crate::unique_suffix());
        let admin_url = format!("{server}/information_schema{query}");
        let mut admin = MysqlConnection::establish(&admin_url).expect("the MySQL server answers");
        diesel::sql_query(format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
            .execute(&mut admin)
            .expect("create the test database");
        TestDatabase { url: format!("{server}/{name}{query}"), name, admin_url, pool: OnceLock::new() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL of this database, as the services take it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A new connection of its own.
    pub fn conn(&self) -> MysqlConnection {
        db::connect(&self.url).expect("connect to the test database")
    }

    /// A pool of [`POOL_SIZE`] connections, made on first use and shared by later calls.
    pub fn pool(&self) -> &DbPool {
        self.pool.get_or_init(|| db::pool(&self.url, POOL_SIZE).expect("a pool on the test database"))
    }

    /// The settings a service takes to use this database.
    pub fn settings(&self) -> DatabaseSettings {
        DatabaseSettings { url: self.url.clone(), pool_size: POOL_SIZE }
    }
}

impl Default for TestDatabase {
    fn default() -> Self {
        TestDatabase::new()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let dropped = MysqlConnection::establish(&self.admin_url).map_err(|e| e.to_string()).and_then(|mut admin| {
            diesel::sql_query(format!("DROP DATABASE IF EXISTS `{}`", self.name))
                .execute(&mut admin)
                .map_err(|e| e.to_string())
        });
        if let Err(error) = dropped {
            eprintln!("could not drop the test database {}: {error}", self.name);
        }
    }
}
