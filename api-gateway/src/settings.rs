//! The gateway's settings: `bind_addr`, `database`, `amqp` (shared pieces) and `gateway` (this binary's
//! own knobs). Loaded with [`shared_model::settings::load`]: defaults, `config/*.yaml`, variables such as
//! `APP__GATEWAY__PUBLIC_BASE_URL=https://reports.example.com`, then `BIND_ADDR`, `DATABASE_URL`,
//! `AMQP_URL`. Tests build the struct directly.

use std::time::Duration;

use serde::Deserialize;
use shared_model::settings::{AmqpSettings, DatabaseSettings};

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Settings {
    #[serde(default = "default_bind_addr")]
    pub bind_addr: String,
    #[serde(default)]
    pub database: DatabaseSettings,
    #[serde(default)]
    pub amqp: AmqpSettings,
    #[serde(default)]
    pub gateway: GatewaySettings,
    #[serde(default)]
    pub reports: ReportsSettings,
    #[serde(default)]
    pub auth: AuthSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            bind_addr: default_bind_addr(),
            database: DatabaseSettings::default(),
            amqp: AmqpSettings::default(),
            gateway: GatewaySettings::default(),
            reports: ReportsSettings::default(),
            auth: AuthSettings::default(),
        }
    }
}

fn default_bind_addr() -> String {
    "0.0.0.0:8080".into()
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct GatewaySettings {
    /// Base of the absolute `download_url` (e.g. `https://reports.example.com`). Unset: built from the
    /// request (`Forwarded` / `X-Forwarded-*` headers, then `Host`).
    pub public_base_url: Option<String>,
    /// HTTP worker threads; 0 = one per CPU core.
    pub workers: usize,
    /// How long a trigger waits for the broker to confirm its job before leaving it to the outbox relay.
    pub publish_timeout_ms: u64,
    /// How long one connection attempt to RabbitMQ may take.
    pub amqp_connect_timeout_ms: u64,
    /// How often the outbox relay looks for jobs the broker has not confirmed.
    pub relay_interval_ms: u64,
    /// A report younger than this is left to its trigger; longer than `publish_timeout_ms`, so the relay
    /// does not publish a job its trigger is still waiting on.
    pub relay_grace_ms: u64,
    /// Reports the relay reads from the outbox per query.
    pub relay_batch: u32,
    /// Largest request body accepted (the API reads none; larger ones get 413).
    pub max_body_bytes: usize,
    /// Downloads (CSV answers) this gateway streams at once; one more gets 503 with `Retry-After`. Each
    /// holds one stored chunk (~1 MiB) in memory at a time and a MySQL connection only while it reads one.
    pub max_concurrent_downloads: usize,
    /// Completed reports whose status is kept in memory (they never change); 0 turns the cache off.
    pub completed_cache_entries: usize,
    /// How long `/readyz` waits for MySQL and RabbitMQ.
    pub readiness_timeout_ms: u64,
    /// Seconds a SIGTERM waits for requests in flight before the server stops.
    pub shutdown_timeout_s: u64,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            public_base_url: None,
            workers: 0,
            publish_timeout_ms: 2_000,
            amqp_connect_timeout_ms: 3_000,
            relay_interval_ms: 2_000,
            relay_grace_ms: 5_000,
            relay_batch: 100,
            max_body_bytes: 64 * 1024,
            max_concurrent_downloads: 32,
            completed_cache_entries: 100_000,
            readiness_timeout_ms: 2_000,
            shutdown_timeout_s: 30,
        }
    }
}

/// The life of a report row (`APP__REPORTS__…`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ReportsSettings {
    /// A Complete or Failed report this long after it finished answers 410; its CSV is then deleted
    /// (once no report sharing it is younger).
    pub retention_seconds: u64,
    /// A Running report whose job no worker started this long after it was queued, or whose worker's
    /// heartbeat is this old, has its job published again (up to `amqp.delivery_limit` times, then Failed).
    pub stale_after_seconds: u64,
    /// Reports the sweep handles per query (expired CSVs, stale jobs).
    pub sweep_batch: u32,
    /// Reports waiting for a worker (Running, with a job of their own that no worker has started), over
    /// all clients, beyond which a trigger that needs a job gets 429. A trigger that shares a computation
    /// needs no worker and is not refused by it.
    pub max_pending: u64,
}

impl Default for ReportsSettings {
    fn default() -> Self {
        Self { retention_seconds: 7 * 24 * 3600, stale_after_seconds: 120, sweep_batch: 50, max_pending: 100 }
    }
}

/// Who may call the API (`APP__AUTH__…`), and how often a client may trigger.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct AuthSettings {
    /// The tokens file: lines `<role> <sha256 lowercase hex> [<name>]` (see `auth.rs`).
    pub tokens_file: Option<std::path::PathBuf>,
    /// Serve without tokens (everybody is an admin); logged as a warning at start. For local experiments.
    pub disabled: bool,
    /// Triggers one token may make in any 60 seconds (per gateway process); more get 429.
    pub triggers_per_minute: u32,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self { tokens_file: None, disabled: false, triggers_per_minute: 30 }
    }
}

impl AuthSettings {
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.triggers_per_minute == 0 {
            return Err(SettingsError::ZeroAuth("triggers_per_minute"));
        }
        Ok(())
    }
}

impl ReportsSettings {
    pub fn validate(&self) -> Result<(), SettingsError> {
        for (name, value) in [
            ("retention_seconds", self.retention_seconds),
            ("stale_after_seconds", self.stale_after_seconds),
            ("sweep_batch", u64::from(self.sweep_batch)),
            ("max_pending", self.max_pending),
        ] {
            if value == 0 {
                return Err(SettingsError::ZeroReports(name));
            }
        }
        // chrono durations hold ±i64 milliseconds; a retention beyond that is "forever" anyway.
        if self.retention_seconds > MAX_SECONDS || self.stale_after_seconds > MAX_SECONDS {
            return Err(SettingsError::TooLong(MAX_SECONDS));
        }
        Ok(())
    }

    pub fn retention(&self) -> chrono::Duration {
        chrono::Duration::seconds(i64::try_from(self.retention_seconds).unwrap_or(i64::MAX / 1000))
    }

    pub fn stale_after(&self) -> chrono::Duration {
        chrono::Duration::seconds(i64::try_from(self.stale_after_seconds).unwrap_or(i64::MAX / 1000))
    }
}

/// 100 years: longer is refused rather than overflowing date arithmetic.
const MAX_SECONDS: u64 = 100 * 366 * 24 * 3600;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("reports.{0} must be at least 1")]
    ZeroReports(&'static str),
    #[error("reports.retention_seconds and reports.stale_after_seconds must be at most {0} (100 years)")]
    TooLong(u64),
    #[error(
        "gateway.relay_grace_ms ({grace}) must be longer than gateway.publish_timeout_ms ({timeout}), or the relay \
         would publish again jobs whose trigger is still waiting for the broker"
    )]
    GraceShorterThanPublish { grace: u64, timeout: u64 },
    #[error("auth.{0} must be at least 1")]
    ZeroAuth(&'static str),
    #[error("gateway.{0} must be at least 1")]
    Zero(&'static str),
    #[error("gateway.public_base_url must start with http:// or https:// (got {0:?})")]
    BadPublicBaseUrl(String),
}

impl GatewaySettings {
    pub fn validate(&self) -> Result<(), SettingsError> {
        for (name, value) in [
            ("publish_timeout_ms", self.publish_timeout_ms),
            ("amqp_connect_timeout_ms", self.amqp_connect_timeout_ms),
            ("relay_interval_ms", self.relay_interval_ms),
            ("relay_batch", u64::from(self.relay_batch)),
            ("max_concurrent_downloads", self.max_concurrent_downloads as u64),
            ("readiness_timeout_ms", self.readiness_timeout_ms),
        ] {
            if value == 0 {
                return Err(SettingsError::Zero(name));
            }
        }
        if self.relay_grace_ms <= self.publish_timeout_ms {
            return Err(SettingsError::GraceShorterThanPublish {
                grace: self.relay_grace_ms,
                timeout: self.publish_timeout_ms,
            });
        }
        if let Some(base) = &self.public_base_url
            && !(base.starts_with("http://") || base.starts_with("https://"))
        {
            return Err(SettingsError::BadPublicBaseUrl(base.clone()));
        }
        Ok(())
    }

    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.publish_timeout_ms)
    }
    pub fn amqp_connect_timeout(&self) -> Duration {
        Duration::from_millis(self.amqp_connect_timeout_ms)
    }
    pub fn relay_interval(&self) -> Duration {
        Duration::from_millis(self.relay_interval_ms)
    }
    pub fn relay_grace(&self) -> Duration {
        Duration::from_millis(self.relay_grace_ms)
    }
    pub fn readiness_timeout(&self) -> Duration {
        Duration::from_millis(self.readiness_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(GatewaySettings::default().validate(), Ok(()));
        assert_eq!(Settings::default().bind_addr, "0.0.0.0:8080");
    }

    #[test]
    fn report_settings_default_to_a_week_and_two_minutes_and_refuse_zero() {
        let s: Settings = serde_json::from_str(r#"{"reports": {"retention_seconds": 3}}"#).expect("parses");
        assert_eq!(s.reports.retention_seconds, 3);
        assert_eq!(s.reports.stale_after_seconds, 120);
        assert_eq!(ReportsSettings::default().retention_seconds, 604_800);
        assert_eq!(s.reports.validate(), Ok(()));
        let zero = ReportsSettings { stale_after_seconds: 0, ..ReportsSettings::default() };
        assert_eq!(zero.validate(), Err(SettingsError::ZeroReports("stale_after_seconds")));
        let huge = ReportsSettings { retention_seconds: u64::MAX, ..ReportsSettings::default() };
        assert_eq!(huge.validate(), Err(SettingsError::TooLong(MAX_SECONDS)));
    }

    #[test]
    fn a_grace_shorter_than_the_publish_timeout_is_refused() {
        let s = GatewaySettings { relay_grace_ms: 1_000, publish_timeout_ms: 2_000, ..GatewaySettings::default() };
        assert!(matches!(s.validate(), Err(SettingsError::GraceShorterThanPublish { .. })));
    }

    #[test]
    fn a_public_base_url_must_be_absolute() {
        let s = GatewaySettings { public_base_url: Some("reports.example.com".into()), ..GatewaySettings::default() };
        assert!(matches!(s.validate(), Err(SettingsError::BadPublicBaseUrl(_))));
    }

    #[test]
    fn a_partial_gateway_section_keeps_the_other_defaults() {
        let s: Settings = serde_json::from_str(r#"{"gateway": {"workers": 4}}"#).expect("parses");
        assert_eq!(s.gateway.workers, 4);
        assert_eq!(s.gateway.publish_timeout_ms, GatewaySettings::default().publish_timeout_ms);
        assert_eq!(s.amqp, AmqpSettings::default());
    }
}
