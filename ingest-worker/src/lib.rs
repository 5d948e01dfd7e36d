//! The ingest worker: loads the three input files from a folder into MySQL at start and every hour
//! (SPEC §4). `load_once` is one run; `scheduler::run` repeats it; the binary only wires them up.

pub mod digest;
mod error;
pub mod load;
mod polls;
pub mod scheduler;
pub mod settings;
mod snapshot;
pub mod sql;
mod store_keys;

pub use error::{FileError, IngestError};
pub use load::{FileReport, INGEST_LOCK, RunReport, load_once, load_once_at};
pub use settings::Settings;
