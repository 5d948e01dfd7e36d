//! Every test gets its own MySQL database and its own RabbitMQ names (`test_support`), and a gateway
//! in-process on port 0. Both are removed when the test ends, also when it fails.

use std::sync::Arc;
use std::time::Duration;

use api_gateway::outbox::{OutboxRelay, RelaySettings};
use api_gateway::publisher::JobPublisher;
use api_gateway::settings::{AuthSettings, GatewaySettings, ReportsSettings, Settings};
use api_gateway::startup::Application;
use shared_model::db::DbPool;
use shared_model::models::reports::{self, Chunking, FinishedReport};
use shared_model::settings::DatabaseSettings;
use test_support::{TestDatabase, TestTokens, TestTopology, init_logging};
pub use test_support::{closed_port, new_report_id, sample_csv, take_message};

pub struct TestApp {
    /// Dropped first: the gateway stops (gracefully) when the test ends.
    _stop: tokio::sync::oneshot::Sender<()>,
    pub address: String,
    pub port: u16,
    pub pool: DbPool,
    pub settings: Settings,
    /// Sends the admin token with every request (one that sets its own `Authorization` keeps it).
    pub client: reqwest::Client,
    /// Sends no token.
    pub anonymous: reqwest::Client,
    /// A token per role, in the gateway's tokens file.
    pub tokens: TestTokens,
    pub topology: TestTopology,
    /// Dropped last: the database goes when the test ends.
    pub _database: TestDatabase,
}

/// Settings for a test: its database, its topology, its tokens, one HTTP worker, a quick relay.
pub fn test_settings(database: &TestDatabase, topology: &TestTopology, tokens: &TestTokens) -> Settings {
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
        auth: AuthSettings { tokens_file: Some(tokens.file.clone()), ..AuthSettings::default() },
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// The error a gateway with the test's settings, changed by `customize`, refuses to start with.
pub async fn start_error(customize: impl FnOnce(&mut Settings)) -> String {
    start_error_on(&TestDatabase::new(), customize).await
}

/// [`start_error`] on a database of the test's choosing (an unmigrated one, say).
pub async fn start_error_on(database: &TestDatabase, customize: impl FnOnce(&mut Settings)) -> String {
    let (settings, _topology, _tokens) = settings_on(database, customize);
    let listener = std::net::TcpListener::bind(&settings.bind_addr).expect("bind port 0");
    match Application::build_with_listener(settings, listener).await {
        Ok(_) => panic!("the gateway started"),
        Err(error) => format!("{error:#}"),
    }
}

/// The test's settings on `database` with a topology and tokens of their own (removed when dropped),
/// changed by `customize`.
fn settings_on(database: &TestDatabase, customize: impl FnOnce(&mut Settings)) -> (Settings, TestTopology, TestTokens) {
    init_logging();
    let topology = TestTopology::new();
    let tokens = TestTokens::new();
    let mut settings = test_settings(database, &topology, &tokens);
    customize(&mut settings);
    (settings, topology, tokens)
}

/// A gateway with the test's settings, changed by `customize` first.
pub async fn spawn_app_with(customize: impl FnOnce(&mut Settings)) -> TestApp {
    let database = TestDatabase::new();
    let (settings, topology, tokens) = settings_on(&database, customize);
    let listener = std::net::TcpListener::bind(&settings.bind_addr).expect("bind port 0");
    let application = Application::build_with_listener(settings.clone(), listener).await.expect("the gateway starts");
    let port = application.port();
    let pool = application.pool().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(application.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let mut admin = reqwest::header::HeaderMap::new();
    let bearer = format!("Bearer {}", tokens.admin);
    admin.insert(reqwest::header::AUTHORIZATION, bearer.parse().expect("header value"));
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(admin)
        .build()
        .expect("client");
    let anonymous = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    TestApp {
        _stop: stop,
        address: format!("http://127.0.0.1:{port}"),
        port,
        pool,
        settings,
        client,
        anonymous,
        tokens,
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

    /// `method path` with the token of `role` ("reader", "reporter", "admin"), or none.
    pub async fn request_as(&self, role: Option<&str>, method: reqwest::Method, path: &str) -> reqwest::Response {
        let url = format!("{}{path}", self.address);
        let request = match role {
            Some(role) => self.client.request(method, url).bearer_auth(self.tokens.of(role)),
            None => self.anonymous.request(method, url),
        };
        request.send().await.expect("request")
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

    /// How many report rows the database holds.
    pub fn report_rows(&self) -> i64 {
        use diesel::prelude::*;
        shared_model::schema::reports::table.count().get_result(&mut self.conn()).expect("count reports")
    }

    /// A new settled polls load: the data changed, so the next trigger cannot share an earlier report.
    pub fn record_polls_load(&self) {
        use diesel::RunQueryDsl as _;
        diesel::sql_query(
            "INSERT INTO loads (file_kind, file_name, status, started_at, finished_at, rows_read, rows_loaded, rows_rejected) \
             VALUES ('polls', 'store_status.csv', 'loaded', NOW(6), NOW(6), 1, 1, 0)",
        )
        .execute(&mut self.conn())
        .expect("insert a load record");
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
