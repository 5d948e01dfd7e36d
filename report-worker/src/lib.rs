//! The report worker: the uptime engine (pure), the offline CLI, and the queue consumer.

pub mod cli;
pub mod engine;
