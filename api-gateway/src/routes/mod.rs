//! One module per concern. `/metrics` and `/openapi.json` will get modules of their own.

pub mod health;
pub mod reports;
