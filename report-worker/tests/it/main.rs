//! The report worker's integration tests, one binary: the offline CLI (`cli`), the job handler against a
//! real MariaDB (`job`), the consumer loop against MariaDB and RabbitMQ (`consumer`), and reports cut into shards over
//! several workers (`shards`).

mod cli;
mod consumer;
mod helpers;
mod job;
mod shards;
