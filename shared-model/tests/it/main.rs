//! shared-model's own database and queue code against the real MariaDB and RabbitMQ, each test with its
//! own database and queue names (the `test-support` kit).

mod broker_users;
mod grants;
mod queue;
mod reports;
mod shards;
