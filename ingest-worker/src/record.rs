//! What the loaders of the three kinds share: the run they load within ([`LoadRun`]), what a finished load
//! hands back ([`LoadedFile`]), and how the end of a load record is put together. It sits below `load.rs`
//! (which runs the loads) and `polls.rs`/`snapshot.rs` (which load one kind each), so those import from
//! here and never from each other.

use chrono::{DateTime, Utc};
use diesel::mysql::MysqlConnection;
use shared_model::db::ServerFlavour;
use shared_model::models::loads::{LoadEnd, LoadStatus};
use uptime_core::input::FileSummary;

use crate::digest::FileDigest;
use crate::error::FileError;
use crate::settings::Settings;
use crate::store_keys::StoreKeys;

/// The file name recorded for an hours or zones file that is not in the folder.
pub const NO_FILE: &str = "(none)";

/// One load run while it holds the ingest lock: what every file's load needs.
pub(crate) struct LoadRun<'a> {
    pub settings: &'a Settings,
    pub conn: &'a mut MysqlConnection,
    /// The moment of loading (for the future-poll rule).
    pub loaded_at: DateTime<Utc>,
    /// Read from the database on first use, then kept for the next files of the run.
    stores: Option<StoreKeys>,
    /// Asked of the server on first use: the whole run talks to one server.
    flavour: Option<ServerFlavour>,
}

impl<'a> LoadRun<'a> {
    pub fn new(settings: &'a Settings, conn: &'a mut MysqlConnection, loaded_at: DateTime<Utc>) -> Self {
        LoadRun { settings, conn, loaded_at, stores: None, flavour: None }
    }

    /// The connection and the store keys, reading the keys if this run has not yet.
    pub fn conn_and_stores(&mut self) -> Result<(&mut MysqlConnection, &mut StoreKeys), FileError> {
        let stores = match self.stores.take() {
            Some(stores) => stores,
            None => StoreKeys::load(self.conn)?,
        };
        let stores = self.stores.insert(stores);
        Ok((&mut *self.conn, stores))
    }

    /// Which server the run talks to, asking it on first use.
    pub fn flavour(&mut self) -> Result<ServerFlavour, FileError> {
        if let Some(flavour) = self.flavour {
            return Ok(flavour);
        }
        let flavour = ServerFlavour::of(self.conn)?;
        self.flavour = Some(flavour);
        Ok(flavour)
    }

    /// After a failed load the keys may be ahead of the database (a failure half-way): the next file
    /// reads them afresh.
    pub fn forget_store_keys(&mut self) {
        self.stores = None;
    }
}

/// A load that ended well (`loaded` or `unchanged`). The kind's loader has already written the record,
/// inside the transaction that made its rows visible; this is what it wrote, for the run's report.
pub(crate) struct LoadedFile {
    pub status: LoadStatus,
    pub end: LoadEnd,
    /// The reader's account of the rows, when the file was parsed.
    pub summary: Option<FileSummary>,
}

/// The end of a record with the given status, stamped now.
pub(crate) fn end_now(status: LoadStatus, digest: Option<&FileDigest>) -> LoadEnd {
    LoadEnd {
        status,
        finished_at: Some(Utc::now().naive_utc()),
        file_bytes: digest.map(|d| d.bytes),
        file_digest: digest.map(|d| d.hex.clone()),
        ..LoadEnd::default()
    }
}

/// The end of a load that wrote `rows_loaded` rows, with the reader's account of the file.
pub(crate) fn end_loaded(digest: &FileDigest, summary: &FileSummary, rows_loaded: u64) -> LoadEnd {
    LoadEnd { rows_loaded, ..end_now(LoadStatus::Loaded, Some(digest)).with_summary(summary) }
}

/// The end of a failed load, with its error.
pub(crate) fn end_failed(error: &str, digest: Option<&FileDigest>) -> LoadEnd {
    LoadEnd { error: Some(error.to_owned()), ..end_now(LoadStatus::Failed, digest) }
}

/// A value for one of the record's JSON columns. These only describe the load, so a value that cannot
/// be serialised leaves the column empty rather than failing the load.
pub(crate) fn json_column<T: serde::Serialize>(value: &T) -> Option<String> {
    serde_json::to_string(value).ok()
}
