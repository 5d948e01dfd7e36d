//! What the three services share: the diesel schema and one model file per table (the only place a table,
//! column or status is spelled), the connection pool and migrations, settings, the job message, and —
//! with the `queue` feature, for the gateway and the report workers — the RabbitMQ topology.

pub mod db;
pub mod grants;
pub mod messages;
pub mod models;
#[cfg(feature = "queue")]
pub mod queue;
pub mod schema;
pub mod settings;
#[cfg(feature = "shutdown")]
pub mod shutdown;
