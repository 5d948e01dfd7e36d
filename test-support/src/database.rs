//! A MySQL database of its own per test: created and migrated at once, dropped with the value.

use std::sync::OnceLock;

use diesel::mysql::MysqlConnection;
use shared_model::db::{self, DatabaseUrl, DbPool};
use shared_model::settings::DatabaseSettings;

/// Connections in [`TestDatabase::pool`] and in [`TestDatabase::settings`].
const POOL_SIZE: u32 = 6;

/// The server the tests use: `DATABASE_URL` when set (its database is replaced by each test's own), else
/// root on 127.0.0.1:3306.
pub fn server() -> DatabaseUrl {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
    DatabaseUrl::parse(&url).expect("DATABASE_URL is a mysql:// URL")
}

/// A database named `rm_t_<random>` (or another prefix), dropped when the value is.
pub struct TestDatabase {
    name: String,
    url: String,
    /// This database's URL, to drop it with.
    admin: DatabaseUrl,
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
        let name = format!("{prefix}{}", crate::unique_suffix());
        let url = server().with_database(&name);
        assert!(db::create_database_if_missing(&url).expect("create the test database"), "{name} is new");
        TestDatabase { url: url.to_string(), name, admin: url, pool: OnceLock::new() }
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
        DatabaseSettings { url: self.url.clone(), pool_size: POOL_SIZE, read_url: None }
    }
}

impl Default for TestDatabase {
    fn default() -> Self {
        TestDatabase::new()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Err(error) = db::drop_database(&self.admin) {
            eprintln!("could not drop the test database {}: {error}", self.name);
        }
    }
}
