//! Every test gets its own MySQL database and its own RabbitMQ names (`test_support`), and a gateway
//! in-process on port 0. Both are removed when the test ends, also when it fails.

use std::sync::Arc;
use std::time::Duration;

use api_gateway::outbox::{OutboxRelay, RelaySettings};
use api_gateway::publisher::JobPublisher;
use api_gateway::settings::{GatewaySettings, ReportsSettings, Settings};
use api_gateway::startup::Application;
use shared_model::db::DbPool;
use shared_model::models::reports::{self, Chunking, FinishedReport};
use shared_model::settings::DatabaseSettings;
use test_support::{TestDatabase, TestTopology, init_logging};
pub use test_support::{closed_port, new_report_id, sample_csv, take_message};

pub struct TestApp {
    /// Dropped first: the gateway stops (gracefully) when the test ends.
    _stop: tokio::sync::oneshot::Sender<()>,
    pub address: String,
    pub port: u16,
    pub pool: DbPool,
    pub settings: Settings,
    pub client: reqwest::Client,
    pub topology: TestTopology,
    /// Dropped last: the database goes when the test ends.
    pub _database: TestDatabase,
}

/// Settings for a test: its database, its topology, one HTTP worker, a quick relay.
pub fn test_settings(database: &TestDatabase, topology: &TestTopology) -> Settings {
    Settings {
        bind_addr: "127.0.0.1:0".into(),
        database: DatabaseSettings { pool_size: 4, ..database.settings() },
        amqp: topology.amqp.clone(),
        gateway: GatewaySettings {
            workers: 1,
            publish_timeout_ms: 2_000,
            amqp_connect_timeout_ms: 2_000,
            relay_interval_ms: 200,
            relay_grace_ms: 2_500,
            ..GatewaySettings::default()
        },
        reports: ReportsSettings::default(),
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A gateway with the test's settings, changed by `customize` first.
pub async fn spawn_app_with(customize: impl FnOnce(&mut Settings)) -> TestApp {
    init_logging();
    let database = TestDatabase::new();
    let topology = TestTopology::new();
    let mut settings = test_settings(&database, &topology);
    customize(&mut settings);
    let listener = std::net::TcpListener::bind(&settings.bind_addr).expect("bind port 0");
    let application = Application::build_with_listener(settings.clone(), listener).await.expect("the gateway starts");
    let port = application.port();
    let pool = application.pool().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(application.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    TestApp {
        _stop: stop,
        address: format!("http://127.0.0.1:{port}"),
        port,
        pool,
        settings,
        client,
        topology,
        _database: database,
    }
}

impl TestApp {
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(format!("{}{path}", self.address)).send().await.expect("request")
    }

    pub async fn get_accepting(&self, path: &str, accept: &str) -> reqwest::Response {
        self.client.get(format!("{}{path}", self.address)).header("Accept", accept).send().await.expect("request")
    }

    pub async fn trigger(&self) -> reqwest::Response {
        self.client.post(format!("{}/trigger_report", self.address)).send().await.expect("request")
    }

    pub fn conn(&self) -> shared_model::db::DbConn {
        self.pool.get().expect("pooled connection")
    }

    /// A Running report created directly in the database (as a trigger would, without a job).
    pub fn insert_running(&self, report_id: &str) {
        reports::create(&mut self.conn(), report_id, chrono::Utc::now().naive_utc()).expect("create report");
    }

    /// A Complete report with `csv`, stored in chunks of `chunk_bytes`.
    pub fn insert_complete(&self, report_id: &str, csv: &[u8], store_count: u32, chunk_bytes: usize) {
        self.insert_running(report_id);
        let as_of = chrono::NaiveDate::from_ymd_opt(2023, 1, 25)
            .and_then(|d| d.and_hms_micro_opt(18, 13, 18, 647_069))
            .expect("date");
        let stored = reports::store_complete(
            &mut self.conn(),
            report_id,
            FinishedReport { as_of: Some(as_of), store_count, csv },
            Chunking { chunk_bytes, max_statement_bytes: chunk_bytes * 4 },
        )
        .expect("store report");
        assert!(matches!(stored, reports::Stored::Complete { .. }));
    }

    /// The `expires_at` a finished report answers: its finish plus the retention, RFC 3339.
    pub fn expires_at(&self, report_id: &str) -> String {
        let finished = self.report(report_id).finished_at.expect("a finished report");
        api_gateway::rfc3339_micros((finished + self.settings.reports.retention()).and_utc())
    }

    /// The `data_version` a report triggered on the test's data answers.
    pub fn data_version(&self, report_id: &str) -> serde_json::Value {
        let version = self.report(report_id).data_version().expect("a report with a data version");
        serde_json::json!({
            "polls_load_id": version.settled_load_id,
            "hours_snapshot": version.hours_snapshot,
            "zones_snapshot": version.zones_snapshot,
        })
    }

    /// `expected` plus the times every report answer carries, as the report's row holds them: `created_at`,
    /// and `started_at` and `completed_at` once known (RFC 3339).
    pub fn with_times(&self, report_id: &str, mut expected: serde_json::Value) -> serde_json::Value {
        let row = self.report(report_id);
        let rfc = |at: chrono::NaiveDateTime| serde_json::Value::from(api_gateway::rfc3339_micros(at.and_utc()));
        let map = expected.as_object_mut().expect("an object");
        map.insert("created_at".into(), rfc(row.created_at));
        if let Some(started) = row.started_at {
            map.insert("started_at".into(), rfc(started));
        }
        if let Some(finished) = row.finished_at.filter(|_| row.status != reports::ReportStatus::Running) {
            map.insert("completed_at".into(), rfc(finished));
        }
        expected
    }

    pub async fn trigger_with(&self, body: Option<&str>, key: Option<&str>) -> reqwest::Response {
        let mut request = self.client.post(format!("{}/trigger_report", self.address));
        if let Some(body) = body {
            request = request.header("Content-Type", "application/json").body(body.to_owned());
        }
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request.send().await.expect("request")
    }

    pub fn report(&self, report_id: &str) -> reports::Report {
        reports::find(&mut self.conn(), report_id).expect("query").expect("report exists")
    }

    /// An outbox relay that reaches the test's own broker and queues (as the gateway's own would), polling
    /// every 100 ms; it publishes reports older than `grace`.
    pub fn relay(&self, grace: Duration) -> OutboxRelay {
        let publisher = Arc::new(JobPublisher::new(
            self.topology.amqp.clone(),
            Duration::from_secs(2),
            tokio::runtime::Handle::current(),
        ));
        let settings = RelaySettings {
            interval: Duration::from_millis(100),
            grace,
            batch: 10,
            publish_timeout: Duration::from_secs(2),
            retention: self.settings.reports.retention(),
            stale_after: self.settings.reports.stale_after(),
            delivery_limit: self.settings.amqp.delivery_limit,
            sweep_batch: self.settings.reports.sweep_batch,
        };
        OutboxRelay::new(self.pool.clone(), publisher, settings)
    }

    /// `relay(grace)` running in the background until `RunningRelay::stop`.
    pub fn start_relay(&self, grace: Duration) -> RunningRelay {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(self.relay(grace).run_until(async {
            let _ = stopped.await;
        }));
        RunningRelay { stop, task }
    }
}

pub struct RunningRelay {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningRelay {
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("the relay stops");
    }
}
