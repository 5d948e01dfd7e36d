//! Errors of a load run. [`IngestError`] stops the whole run (no database, no lock); [`FileError`] fails
//! the load of one file, which is recorded as `failed` while the other files are still loaded.

use shared_model::db::DbError;
use uptime_core::input::InputError;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("database error: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("another ingest worker held this database's {lock} lock for {seconds} s; is a load stuck?")]
    LockTimeout { lock: &'static str, seconds: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file cannot be read, or lacks a required column: its previous data stays as it was.
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("database error: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("store id {0:?} is in neither the database nor the insert that should have added it")]
    StoreKeyMissing(String),
    #[error("stopped writing: the other writer of this load failed")]
    Abandoned,
    #[error("a writer thread panicked")]
    WriterPanicked,
}
