//! Tests of the gateway against a real MariaDB and RabbitMQ, each with its own database and queues.

mod download;
mod errors;
mod get_report;
mod health;
mod helpers;
mod observability;
mod outbox;
mod trigger;
