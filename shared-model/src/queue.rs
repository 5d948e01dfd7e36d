//! RabbitMQ topology and publishing (owned by the report-path work).
