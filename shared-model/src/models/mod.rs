//! One file per table (or pair of tables), each with its queries as functions.

mod text_enum;

pub mod idempotency_keys;
pub mod loads;
pub mod polls;
pub mod reports;
pub mod shards;
pub mod snapshots;
pub mod stores;
pub mod versions;
pub mod workers;
