//! The report worker's integration tests, one binary: the offline CLI (`cli`), the job handler against a
//! real MariaDB (`job`), and the consumer loop against MariaDB and RabbitMQ (`consumer`).

mod cli;
mod consumer;
mod helpers;
mod job;
