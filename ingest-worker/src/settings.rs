//! The ingest worker's settings, loaded by `shared_model::settings::load` (defaults, `config/*.yaml`,
//! `APP__…` variables, then `DATABASE_URL` and `DATA_DIR`).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use shared_model::grants::Role;
use shared_model::settings::DatabaseSettings;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Settings {
    #[serde(default)]
    pub database: DatabaseSettings,
    /// The folder holding the three input files (`DATA_DIR`).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Seconds between the starts of two scheduled loads (`APP__INGEST_INTERVAL_SECONDS`).
    #[serde(default = "default_interval_seconds")]
    pub ingest_interval_seconds: u64,
    /// How long a load waits for another worker's load to finish before giving up
    /// (`APP__INGEST_LOCK_WAIT_SECONDS`).
    #[serde(default = "default_lock_wait_seconds")]
    pub ingest_lock_wait_seconds: u64,
    /// How files are read and how long polls are kept (`APP__INGEST__…`).
    #[serde(default)]
    pub ingest: IngestSettings,
    /// The services' MySQL users that `ingest-worker migrate --users` creates (`APP__DATABASE_USERS__…`).
    #[serde(default)]
    pub database_users: DatabaseUsersSettings,
}

/// The `database_users` section: the name of each service's user and the file holding its password.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct DatabaseUsersSettings {
    #[serde(default = "default_gateway_user")]
    pub gateway_user: String,
    #[serde(default = "default_ingest_user")]
    pub ingest_user: String,
    #[serde(default = "default_worker_user")]
    pub worker_user: String,
    /// Files with one password each (first line); required by `migrate --users`.
    #[serde(default)]
    pub gateway_password_file: Option<PathBuf>,
    #[serde(default)]
    pub ingest_password_file: Option<PathBuf>,
    #[serde(default)]
    pub worker_password_file: Option<PathBuf>,
}

impl Default for DatabaseUsersSettings {
    fn default() -> Self {
        DatabaseUsersSettings {
            gateway_user: default_gateway_user(),
            ingest_user: default_ingest_user(),
            worker_user: default_worker_user(),
            gateway_password_file: None,
            ingest_password_file: None,
            worker_password_file: None,
        }
    }
}

impl DatabaseUsersSettings {
    /// The user name and password file of `role`.
    pub fn of(&self, role: Role) -> (&str, Option<&std::path::Path>) {
        match role {
            Role::Gateway => (&self.gateway_user, self.gateway_password_file.as_deref()),
            Role::Ingest => (&self.ingest_user, self.ingest_password_file.as_deref()),
            Role::Worker => (&self.worker_user, self.worker_password_file.as_deref()),
        }
    }
}

fn default_gateway_user() -> String {
    "rm_gateway".into()
}
fn default_ingest_user() -> String {
    "rm_ingest".into()
}
fn default_worker_user() -> String {
    "rm_worker".into()
}

/// The `ingest` section.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct IngestSettings {
    /// A data file larger than this fails its load, unread (`APP__INGEST__MAX_FILE_BYTES`).
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
    /// Polls older than this many days before the newest poll are not loaded and are deleted from the
    /// table on each run (`APP__INGEST__RETENTION_DAYS`, at least [`MIN_RETENTION_DAYS`]).
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
}

impl Default for IngestSettings {
    fn default() -> Self {
        IngestSettings { max_file_bytes: default_max_file_bytes(), retention_days: default_retention_days() }
    }
}

/// The report looks back 8 days from its `now` (SPEC §2); one day more keeps what a report computed
/// just before a load needs, whatever the load brought.
pub const MIN_RETENTION_DAYS: u32 = 9;

impl Settings {
    /// Settings for a database and a folder, everything else at its default (tests, the benchmark).
    pub fn new(database_url: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            database: DatabaseSettings { url: database_url.into(), ..DatabaseSettings::default() },
            data_dir: data_dir.into(),
            ingest_interval_seconds: default_interval_seconds(),
            ingest_lock_wait_seconds: default_lock_wait_seconds(),
            ingest: IngestSettings::default(),
            database_users: DatabaseUsersSettings::default(),
        }
    }

    /// Refuses settings that would lose data a report needs; the message names the setting and why.
    pub fn validate(&self) -> Result<(), String> {
        let days = self.ingest.retention_days;
        if days < MIN_RETENTION_DAYS {
            return Err(format!(
                "ingest.retention_days (APP__INGEST__RETENTION_DAYS) is {days}, but must be at least \
                 {MIN_RETENTION_DAYS}: reports look back 8 days and would lose polls they need"
            ));
        }
        if self.ingest.max_file_bytes == 0 {
            return Err("ingest.max_file_bytes (APP__INGEST__MAX_FILE_BYTES) is 0: no file could be loaded".into());
        }
        Ok(())
    }

    /// The retention window in microseconds. Never under [`MIN_RETENTION_DAYS`], even for settings that
    /// skipped [`Settings::validate`]: a shorter window would delete polls reports need.
    pub fn retention_micros(&self) -> i64 {
        i64::from(self.ingest.retention_days.max(MIN_RETENTION_DAYS)) * 86_400 * 1_000_000
    }

    pub fn interval(&self) -> Duration {
        // Zero would make the loop spin; one second is the shortest sensible period.
        Duration::from_secs(self.ingest_interval_seconds.max(1))
    }
}

fn default_data_dir() -> PathBuf {
    // The bundled sample, so `ingest-worker` run from a checkout shows something.
    PathBuf::from("data/sample")
}

fn default_interval_seconds() -> u64 {
    3_600
}

fn default_lock_wait_seconds() -> u64 {
    600
}

fn default_max_file_bytes() -> u64 {
    4 << 30
}

fn default_retention_days() -> u32 {
    14
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retention_under_nine_days_is_refused_with_the_setting_named() {
        let mut settings = Settings::new("mysql://x", "data");
        assert_eq!(settings.validate(), Ok(()));
        assert_eq!((settings.ingest.retention_days, settings.ingest.max_file_bytes), (14, 4 << 30));
        settings.ingest.retention_days = 9;
        assert_eq!(settings.validate(), Ok(()));
        settings.ingest.retention_days = 8;
        let error = settings.validate().expect_err("8 days is too short");
        assert!(error.contains("APP__INGEST__RETENTION_DAYS") && error.contains("at least 9"), "{error}");
    }
}
