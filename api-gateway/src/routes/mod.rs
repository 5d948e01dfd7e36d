//! One module per concern.

pub mod health;
pub mod metrics;
pub mod openapi;
pub mod page;
pub mod reports;
pub mod stores;
