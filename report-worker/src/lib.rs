//! The report worker: the uptime engine (pure), the offline CLI, and the queue consumer.

pub mod cli;
pub mod consumer;
pub mod dataset;
pub mod engine;
pub mod job;
pub mod settings;
pub mod topology;
