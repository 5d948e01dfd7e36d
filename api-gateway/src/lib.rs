//! The HTTP API of SPEC §3: trigger a report, watch it, download it. A library so tests (and other
//! crates' end-to-end tests) can run the gateway in-process on port 0.

pub mod admission;
pub mod auth;
pub mod cache;
pub mod db;
pub mod error;
pub mod outbox;
pub mod publisher;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod state;

/// A UTC time as the API and the job messages write it: RFC 3339, microseconds, `Z`.
pub fn rfc3339_micros(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
