//! Tests of the gateway against a real MariaDB and RabbitMQ, each with its own database and queues, and
//! the whole report path in one process (`end_to_end`). One test binary for the crate.

mod admission;
mod download;
mod end_to_end;
mod errors;
mod get_report;
mod health;
mod helpers;
mod lifecycle;
mod observability;
mod outbox;
mod page;
mod security;
mod sharded;
mod trigger;
mod trigger_options;
