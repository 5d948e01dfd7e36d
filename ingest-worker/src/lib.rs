//! The ingest worker: loads the three input files from a folder into MySQL at start and every hour
//! (SPEC §4). `load_once` is one run; `scheduler::run` repeats it; the binary only wires them up.
//!
//! Decisions, each explained where it is made:
//! - one run at a time, across processes: the run holds `GET_LOCK('restaurant_monitor.ingest')`; a second
//!   worker waits for it (`ingest_lock_wait_seconds`, default 600) and then finds the files unchanged
//!   (`load.rs`);
//! - an unchanged file (same size and SHA-256 as the last `loaded`/`unchanged` load of its kind) is not
//!   parsed; it gets a record with status `unchanged` (`load.rs`);
//! - a polls file that only grew is read from where the last load stopped (`polls.rs`);
//! - a poll's `load_id` is the load that last inserted it or changed its status (`polls.rs`);
//! - hours and zones are whole snapshots behind a pointer; a file missing from the folder sets the pointer
//!   to NULL, i.e. the SPEC §1 defaults (`snapshot.rs`);
//! - the moment of loading (for the future-poll rule) is the wall clock when the run takes the lock;
//! - files are checked to be regular and at most `ingest.max_file_bytes` before they are opened, then
//!   digested and parsed as streams (`load.rs`, `digest.rs`);
//! - polls older than `ingest.retention_days` before the newest poll are not loaded and are deleted from
//!   the table on every run, in small batches (`load.rs`).

pub mod digest;
mod error;
pub mod load;
mod polls;
mod record;
pub mod scheduler;
pub mod settings;
mod snapshot;
mod sql;
mod store_keys;

pub use error::{FileError, IngestError};
pub use load::{FileReport, INGEST_LOCK, RunReport, load_once, load_once_at};
pub use settings::Settings;
