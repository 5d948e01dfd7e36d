//! The report worker: the offline CLI and the queue consumer around the pure engine of `uptime_core`.

pub mod cli;
pub mod consumer;
pub mod dataset;
pub mod job;
pub mod packet;
pub mod settings;
