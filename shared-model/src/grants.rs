//! The MySQL users of the services and what each may do: the one place the grants are written, used by
//! the migrate step (`ingest-worker migrate --users`) and by the tests that prove them.
//!
//! Each service connects with a user of its own that holds table privileges on its database only, and
//! none holds DDL except the ingest on its own two tables (`DROP` on `polls_staging`, which `TRUNCATE`
//! needs; `ALTER`, `CREATE`, `DROP` on `polls`, whose day partitions it adds and drops): migrations
//! run only in the migrate step, with the administrator's URL. The statements run on MySQL 8 and MariaDB
//! 10.11 alike (`CREATE USER IF NOT EXISTS`, `ALTER USER … IDENTIFIED BY`, table-level `GRANT`).

use diesel::RunQueryDsl as _;
use diesel::mysql::MysqlConnection;
use diesel::sql_query;

use crate::db::DbError;

/// Diesel's own table of applied migrations: every service reads it at start (the schema check).
pub const MIGRATIONS_TABLE: &str = "__diesel_schema_migrations";

/// The tables a load writes (inputs); `polls_staging` is apart, since only the ingest ever sees it.
const INPUT_TABLES: [&str; 7] =
    ["stores", "polls", "loads", "snapshots", "current_snapshots", "business_hours", "store_timezones"];

/// Which service a user is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Creates and reads reports, deletes expired CSVs; reads the data version and one store's inputs (its
    /// timeline). Writes no input.
    Gateway,
    /// Writes the inputs; never sees a report.
    Ingest,
    /// Reads the inputs, writes reports (status, progress, heartbeat, CSV chunks).
    Worker,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Gateway, Role::Ingest, Role::Worker];

    /// `(privileges, table)` pairs of this role on its database.
    pub fn privileges(self) -> Vec<(&'static str, &'static str)> {
        let mut grants = vec![("SELECT", MIGRATIONS_TABLE)];
        match self {
            Role::Gateway => {
                // The data version and metrics (loads, snapshots), and a store's timeline (its polls,
                // hours and zone).
                grants.extend(INPUT_TABLES.map(|table| ("SELECT", table)));
                grants.push(("SELECT, INSERT, UPDATE", "reports"));
                grants.push(("SELECT, DELETE", "report_chunks"));
            }
            Role::Ingest => {
                grants.extend(
                    INPUT_TABLES
                        .iter()
                        .filter(|&&table| table != "polls")
                        .map(|&table| ("SELECT, INSERT, UPDATE, DELETE", table)),
                );
                // ALTER (with the CREATE MySQL asks of any ALTER TABLE) and DROP because the ingest keeps
                // the day partitions of `polls`: it adds days (REORGANIZE PARTITION) and drops expired
                // ones (DROP PARTITION); MySQL has no privilege narrower than the table for either.
                grants.push(("SELECT, INSERT, UPDATE, DELETE, ALTER, CREATE, DROP", "polls"));
                // DROP only because TRUNCATE needs it (an interrupted load's staged rows).
                grants.push(("SELECT, INSERT, UPDATE, DELETE, DROP", "polls_staging"));
            }
            Role::Worker => {
                grants.extend(INPUT_TABLES.map(|table| ("SELECT", table)));
                grants.push(("SELECT, UPDATE", "reports"));
                grants.push(("SELECT, INSERT, DELETE", "report_chunks"));
                grants.push(("SELECT, INSERT, UPDATE", "report_shards"));
                grants.push(("SELECT, INSERT, UPDATE, DELETE", "report_workers"));
            }
        }
        grants
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::Ingest => "ingest",
            Role::Worker => "worker",
        }
    }
}

/// A user name MySQL takes unquoted-safe: 1 to 32 lowercase letters, digits or underscores.
fn checked_user(user: &str) -> Result<&str, DbError> {
    let fine =
        !user.is_empty() && user.len() <= 32 && user.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'));
    fine.then_some(user).ok_or_else(|| DbError::BadUser(format!("user name {user:?}: use 1 to 32 of a-z, 0-9, _")))
}

/// A password that needs no escaping in SQL or in a URL: 16 to 128 letters, digits or `-_.~`.
fn checked_password(user: &str, password: &str) -> Result<(), DbError> {
    let fine = (16..=128).contains(&password.len())
        && password.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'));
    if fine {
        Ok(())
    } else {
        Err(DbError::BadUser(format!("the password of {user}: use 16 to 128 of A-Z, a-z, 0-9, -, _, ., ~")))
    }
}

/// The statements that make `user` exactly what `role` needs on `database`: created when missing, its
/// password set (so running them again rotates it), every earlier privilege revoked, then the role's
/// grants. The database name must be one [`crate::db`] accepts.
pub fn statements(role: Role, database: &str, user: &str, password: &str) -> Result<Vec<String>, DbError> {
    let user = checked_user(user)?;
    checked_password(user, password)?;
    if !crate::db::is_plain_database_name(database) {
        return Err(DbError::BadUser(format!("database name {database:?}: use 1 to 64 letters, digits or _")));
    }
    let account = format!("'{user}'@'%'");
    let mut statements = vec![
        format!("CREATE USER IF NOT EXISTS {account} IDENTIFIED BY '{password}'"),
        format!("ALTER USER {account} IDENTIFIED BY '{password}'"),
        // Grants the code no longer gives must not linger from an older release.
        format!("REVOKE ALL PRIVILEGES, GRANT OPTION FROM {account}"),
    ];
    for (privileges, table) in role.privileges() {
        statements.push(format!("GRANT {privileges} ON `{database}`.`{table}` TO {account}"));
    }
    Ok(statements)
}

/// Applies [`statements`] on an administrator's connection. Run it after the migrations: MySQL refuses a
/// table grant on a table that does not exist.
pub fn apply(
    conn: &mut MysqlConnection,
    role: Role,
    database: &str,
    user: &str,
    password: &str,
) -> Result<(), DbError> {
    for statement in statements(role, database, user, password)? {
        sql_query(statement).execute(conn)?;
    }
    Ok(())
}

/// Drops `user` if it exists (smoke runs and tests drop the users they made).
pub fn drop_user(conn: &mut MysqlConnection, user: &str) -> Result<(), DbError> {
    let user = checked_user(user)?;
    sql_query(format!("DROP USER IF EXISTS '{user}'@'%'")).execute(conn)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_role_may_alter_or_drop_but_the_ingest_its_polls_partitions_and_staging_table() {
        for role in Role::ALL {
            for (privileges, table) in role.privileges() {
                for ddl in ["INDEX", "REFERENCES", "GRANT"] {
                    assert!(!privileges.contains(ddl), "{role:?} has {ddl} on {table}");
                }
                if privileges.contains("ALTER") || privileges.contains("CREATE") {
                    assert_eq!((role, table), (Role::Ingest, "polls"));
                }
                if privileges.contains("DROP") {
                    assert!(role == Role::Ingest && ["polls", "polls_staging"].contains(&table), "{role:?} {table}");
                }
            }
        }
    }

    #[test]
    fn the_gateway_writes_no_input_and_the_ingest_sees_no_report() {
        let writes = |role: Role, table: &str| {
            role.privileges().iter().any(|(p, t)| *t == table && (p.contains("INSERT") || p.contains("UPDATE")))
        };
        for table in INPUT_TABLES {
            assert!(!writes(Role::Gateway, table), "gateway writes {table}");
            assert!(!writes(Role::Worker, table), "worker writes {table}");
        }
        assert!(!Role::Ingest.privileges().iter().any(|(_, t)| t.starts_with("report")));
    }

    #[test]
    fn names_and_passwords_that_would_need_escaping_are_refused() {
        let good = "abcdefghijklmnop";
        assert!(statements(Role::Gateway, "db", "rm_gateway", good).is_ok());
        assert!(statements(Role::Gateway, "db", "rm'x", good).is_err());
        assert!(statements(Role::Gateway, "db", "rm_gateway", "short").is_err());
        assert!(statements(Role::Gateway, "db", "rm_gateway", "abcdefghijklmnop'; DROP").is_err());
    }
}
