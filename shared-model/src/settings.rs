//! Settings in layers (the `config` crate): built-in defaults, then `config/base.yaml`, then
//! `config/$APP_ENVIRONMENT.yaml` (both optional; the folder is `$APP_CONFIG_DIR` or `./config`), then
//! environment variables `APP__SECTION__KEY`, and last the names every operator tries first:
//! `DATABASE_URL`, `DATABASE_READ_URL`, `AMQP_URL`, `BIND_ADDR`, `DATA_DIR`.
//!
//! Each binary deserialises its own struct from the result; tests build the struct directly.

use serde::Deserialize;
use serde::de::DeserializeOwned;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct DatabaseSettings {
    #[serde(default = "default_database_url")]
    pub url: String,
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    /// A read replica of `url` (env `DATABASE_READ_URL`): the report workers read their inputs there and
    /// write reports to `url`. `None`: everything on `url`.
    #[serde(default)]
    pub read_url: Option<String>,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self { url: default_database_url(), pool_size: default_pool_size(), read_url: None }
    }
}

fn default_database_url() -> String {
    "mysql://root@127.0.0.1:3306/restaurant_monitor".into()
}

fn default_pool_size() -> u32 {
    8
}

/// The RabbitMQ topology names, versioned on purpose: re-declaring a queue with other arguments fails
/// (406), so a change of arguments gets a new name rather than a broken start.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct AmqpSettings {
    #[serde(default = "default_amqp_url")]
    pub url: String,
    #[serde(default = "default_exchange")]
    pub exchange: String,
    #[serde(default = "default_queue")]
    pub queue: String,
    #[serde(default = "default_dead_letter_exchange")]
    pub dead_letter_exchange: String,
    #[serde(default = "default_dead_letter_queue")]
    pub dead_letter_queue: String,
    /// Deliveries of one job before it is dead-lettered (a poison job must not loop).
    #[serde(default = "default_delivery_limit")]
    pub delivery_limit: u32,
    /// Prefix of the shard queues: `<shard_queue>.00`, `.01`, … (one per slot).
    #[serde(default = "default_shard_queue")]
    pub shard_queue: String,
    /// How many shard queues (slots) there are: shard `n` of a report goes to slot `n mod shard_queues`,
    /// and each live worker owns every `workers`-th slot. More slots than workers spread the shards evenly.
    #[serde(default = "default_shard_queues")]
    pub shard_queues: u16,
}

impl Default for AmqpSettings {
    fn default() -> Self {
        Self {
            url: default_amqp_url(),
            exchange: default_exchange(),
            queue: default_queue(),
            dead_letter_exchange: default_dead_letter_exchange(),
            dead_letter_queue: default_dead_letter_queue(),
            delivery_limit: default_delivery_limit(),
            shard_queue: default_shard_queue(),
            shard_queues: default_shard_queues(),
        }
    }
}

impl AmqpSettings {
    /// The same topology with every name suffixed, so parallel tests never share a queue.
    pub fn with_suffix(&self, suffix: &str) -> Self {
        Self {
            exchange: format!("{}.{suffix}", self.exchange),
            queue: format!("{}.{suffix}", self.queue),
            dead_letter_exchange: format!("{}.{suffix}", self.dead_letter_exchange),
            dead_letter_queue: format!("{}.{suffix}", self.dead_letter_queue),
            shard_queue: format!("{}.{suffix}", self.shard_queue),
            ..self.clone()
        }
    }

    /// The report worker's failed-marker queue: bound to the dead-letter exchange beside the dead-letter
    /// queue and named after it, so per-test suffixes carry over. Named here, with the other queues, so
    /// whoever deletes the topology (tests, scripts) knows it without depending on the worker.
    pub fn failed_marker_queue(&self) -> String {
        format!("{}.mark-failed", self.dead_letter_queue)
    }

    /// The slot a report's shard `shard_no` is published to.
    pub fn shard_slot(&self, shard_no: u32) -> u16 {
        shard_slot(shard_no, self.shard_queues)
    }

    /// The queue of shard slot `slot`: two digits, so the management UI lists the slots in order.
    pub fn shard_queue_name(&self, slot: u16) -> String {
        format!("{}.{slot:02}", self.shard_queue)
    }

    /// Every shard queue, slot 0 first.
    pub fn shard_queue_names(&self) -> Vec<String> {
        (0..self.shard_queues).map(|slot| self.shard_queue_name(slot)).collect()
    }
}

/// The slot of shard `shard_no` among `shard_queues` shard queues.
pub fn shard_slot(shard_no: u32, shard_queues: u16) -> u16 {
    u16::try_from(shard_no % u32::from(shard_queues.max(1))).unwrap_or(0)
}

fn default_amqp_url() -> String {
    "amqp://guest:guest@127.0.0.1:5672/%2f".into()
}
fn default_exchange() -> String {
    "restaurant-monitor.reports".into()
}
fn default_queue() -> String {
    "restaurant-monitor.report-jobs.v1".into()
}
fn default_dead_letter_exchange() -> String {
    "restaurant-monitor.reports.dead-letter".into()
}
fn default_dead_letter_queue() -> String {
    "restaurant-monitor.report-jobs.dead-letter".into()
}
fn default_delivery_limit() -> u32 {
    3
}
fn default_shard_queue() -> String {
    "restaurant-monitor.report-shards.v1".into()
}
fn default_shard_queues() -> u16 {
    12
}

/// Environment variables that override one setting each, by their usual names.
const PLAIN_OVERRIDES: &[(&str, &str)] = &[
    ("DATABASE_URL", "database.url"),
    ("DATABASE_READ_URL", "database.read_url"),
    ("AMQP_URL", "amqp.url"),
    ("BIND_ADDR", "bind_addr"),
    ("DATA_DIR", "data_dir"),
];

/// Files holding the password of a URL setting (Docker secrets): the URL is written without one and the
/// password is read from the file (first line) and put in it. Read here, so every binary takes them.
const PASSWORD_FILES: &[(&str, &str)] = &[
    ("DATABASE_PASSWORD_FILE", "database.url"),
    ("DATABASE_READ_PASSWORD_FILE", "database.read_url"),
    ("AMQP_PASSWORD_FILE", "amqp.url"),
];

/// Loads settings of type `T` from the layers described above.
pub fn load<T: DeserializeOwned>() -> Result<T, config::ConfigError> {
    let dir = std::env::var("APP_CONFIG_DIR").unwrap_or_else(|_| "config".into());
    let environment = std::env::var("APP_ENVIRONMENT").unwrap_or_else(|_| "local".into());
    let mut builder = config::Config::builder()
        .add_source(config::File::with_name(&format!("{dir}/base")).required(false))
        .add_source(config::File::with_name(&format!("{dir}/{environment}")).required(false))
        .add_source(config::Environment::with_prefix("APP").prefix_separator("__").separator("__"));
    for (var, key) in PLAIN_OVERRIDES {
        if let Ok(value) = std::env::var(var) {
            builder = builder.set_override(*key, value)?;
        }
    }
    let mut built = builder.build()?;
    let mut with_passwords = config::Config::builder().add_source(built.clone());
    let mut changed = false;
    for (var, key) in PASSWORD_FILES {
        let Ok(file) = std::env::var(var) else { continue };
        let url = built
            .get_string(key)
            .map_err(|_| config::ConfigError::Message(format!("{var} is set, but {key} is not: give the URL too")))?;
        let password = std::fs::read_to_string(&file)
            .map_err(|e| config::ConfigError::Message(format!("{var}: cannot read {file}: {e}")))?;
        let password = password.lines().next().unwrap_or("").trim();
        if password.is_empty() {
            return Err(config::ConfigError::Message(format!("{var}: {file} holds no password")));
        }
        let url =
            url_with_password(&url, password).map_err(|why| config::ConfigError::Message(format!("{key}: {why}")))?;
        with_passwords = with_passwords.set_override(*key, url)?;
        changed = true;
    }
    if changed {
        built = with_passwords.build()?;
    }
    built.try_deserialize()
}

/// `scheme://user@host…` with `password` (percent-encoded) after the user. A URL that already has a
/// password, or names no user, is refused: two sources of one password would be a trap.
pub fn url_with_password(url: &str, password: &str) -> Result<String, String> {
    let scheme_end = url.find("://").ok_or("it is not a URL")? + 3;
    let authority_end = url[scheme_end..].find('/').map_or(url.len(), |i| scheme_end + i);
    let at = url[scheme_end..authority_end].rfind('@').ok_or("it names no user to give the password to")? + scheme_end;
    if url[scheme_end..at].contains(':') {
        return Err("it has a password already; write it without one".into());
    }
    let mut encoded = String::with_capacity(password.len());
    for byte in password.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    Ok(format!("{}:{encoded}{}", &url[..at], &url[at..]))
}

#[cfg(test)]
mod tests {
    use super::url_with_password;

    #[test]
    fn a_password_from_a_file_goes_after_the_user() {
        assert_eq!(
            url_with_password("mysql://rm_gateway@mysql:3306/restaurant_monitor", "s3cret-x").as_deref(),
            Ok("mysql://rm_gateway:s3cret-x@mysql:3306/restaurant_monitor")
        );
        assert_eq!(
            url_with_password("amqp://restaurant-monitor@rabbitmq:5672/%2f", "a/b@c").as_deref(),
            Ok("amqp://restaurant-monitor:a%2Fb%40c@rabbitmq:5672/%2f")
        );
        assert!(url_with_password("mysql://u:p@h/db", "x").is_err());
        assert!(url_with_password("mysql://h/db", "x").is_err());
    }
}
