//! What the three services share: the input readers (pure), domain types, and — for the services —
//! the diesel schema and models, the connection pool and migrations, settings and queue messages.

pub mod db;
pub mod input;
pub mod messages;
pub mod models;
pub mod queue;
pub mod schema;
pub mod settings;
