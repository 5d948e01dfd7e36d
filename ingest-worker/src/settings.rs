//! The ingest worker's settings, loaded by `shared_model::settings::load` (defaults, `config/*.yaml`,
//! `APP__…` variables, then `DATABASE_URL` and `DATA_DIR`).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
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
}

impl Settings {
    /// Settings for a database and a folder, everything else at its default (tests, the benchmark).
    pub fn new(database_url: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            database: DatabaseSettings { url: database_url.into(), ..DatabaseSettings::default() },
            data_dir: data_dir.into(),
            ingest_interval_seconds: default_interval_seconds(),
            ingest_lock_wait_seconds: default_lock_wait_seconds(),
        }
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
