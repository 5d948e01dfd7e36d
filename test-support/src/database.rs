//! A MySQL database of its own per test: created and migrated at once, dropped with the value.

use std::sync::OnceLock;

use diesel::mysql::MysqlConnection;
use shared_model::db::{self, DatabaseUrl, DbPool};
use shared_model::grants::{self, Role};
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

    /// A MySQL user of `role` on this database with exactly the grants of the migrate step
    /// (`shared_model::grants`), named uniquely and dropped with the value.
    pub fn user(&self, role: Role) -> TestUser {
        let name = format!("rm_t_{}_{}", role.name(), crate::unique_suffix());
        let password = format!("pw_{}_{}", crate::unique_suffix(), crate::unique_suffix());
        let mut conn = self.conn();
        grants::apply(&mut conn, role, &self.name, &name, &password).expect("create the test user");
        let url = format!("mysql://{name}:{password}@{}:{}/{}", self.admin.host(), self.admin.port(), self.name);
        TestUser { name, url, admin: self.admin.clone() }
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

/// A MySQL user made by [`TestDatabase::user`], dropped with the value.
pub struct TestUser {
    pub name: String,
    /// The test database's URL with this user's name and password.
    pub url: String,
    admin: DatabaseUrl,
}

impl TestUser {
    /// A new connection as this user.
    pub fn conn(&self) -> MysqlConnection {
        db::connect(&self.url).expect("connect as the test user")
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let dropped =
            db::connect(&self.admin.admin().to_string()).and_then(|mut conn| grants::drop_user(&mut conn, &self.name));
        if let Err(error) = dropped {
            eprintln!("could not drop the test user {}: {error}", self.name);
        }
    }
}
