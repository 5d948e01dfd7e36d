//! The test kit of the workspace's integration tests, against the real MariaDB and RabbitMQ (never mocks).
//!
//! Every test gets a [`TestDatabase`] and a [`TestTopology`] of its own, so tests run in parallel; both are
//! removed in `Drop`, also when the test fails. `DATABASE_URL` and `AMQP_URL` point the tests at other
//! servers (the database name in `DATABASE_URL`, if any, is replaced by the test's own).
//!
//! Features, so that a crate's tests build no more than they use: `broker` adds [`TestTopology`] and the
//! broker helpers (lapin); `worker` adds [`worker::InProcessWorker`], a report worker running in the
//! test's process (report-worker), and implies `broker`.

mod database;
mod files;
mod reports;
mod tokens;
#[cfg(feature = "broker")]
mod topology;
mod wait;
#[cfg(feature = "worker")]
pub mod worker;

pub use database::{TestDatabase, TestUser, server};
pub use files::{TempDir, report_fixture};
pub use reports::{ReportRow, create_report, job_body, new_report_id, report_row, sample_csv};
pub use tokens::{TestTokens, tokens_line};
#[cfg(feature = "broker")]
pub use topology::{TestBrokerUser, TestTopology, amqp_url, take_message};
pub use wait::wait_for;

const LOWERCASE: [char; 36] = [
    'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', 'p', 'q', 'r', 's', 't', 'u', 'v', 'w',
    'x', 'y', 'z', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9',
];

/// Twelve random lowercase letters and digits: what makes a test's database, queue and file names its own.
pub fn unique_suffix() -> String {
    nanoid::nanoid!(12, &LOWERCASE)
}

/// A port nothing listens on (a broker or server that is down).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local address").port()
}

/// Logs of the code under test, captured per test (`RUST_LOG` chooses the level). Call it as often as you like.
pub fn init_logging() {
    let _ = env_logger::builder().is_test(true).try_init();
}
