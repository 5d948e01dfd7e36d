//! Every test gets its own MySQL database and its own RabbitMQ names, and a gateway in-process on port 0.
//! Both are removed when the test ends, also when it fails (the guards clean up in `Drop`).
//! `DATABASE_URL` and `AMQP_URL` point the tests at other servers (the database name in the URL is
//! replaced by the test's own).

use std::sync::Arc;
use std::time::Duration;

use api_gateway::outbox::{OutboxRelay, RelaySettings};
use api_gateway::publisher::JobPublisher;
use api_gateway::settings::{GatewaySettings, Settings};
use api_gateway::startup::Application;
use diesel::{Connection as _, MysqlConnection, RunQueryDsl};
use lapin::options::BasicGetOptions;
use lapin::{Channel, Connection};
use shared_model::db::DbPool;
use shared_model::models::reports::{self, Chunking, FinishedReport};
use shared_model::queue;
use shared_model::settings::{AmqpSettings, DatabaseSettings};

const LOWERCASE: [char; 36] = [
    'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', 'p', 'q', 'r', 's', 't', 'u', 'v', 'w',
    'x', 'y', 'z', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9',
];

pub fn unique_suffix() -> String {
    nanoid::nanoid!(12, &LOWERCASE)
}

/// `mysql://user@host:port` of the server the tests use.
fn mysql_server() -> String {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/x".into());
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(slash) => url[..after_scheme + slash].to_owned(),
        None => url,
    }
}

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| AmqpSettings::default().url)
}

pub fn init_logging() {
    let _ = env_logger::builder().is_test(true).try_init();
}

/// A database of its own, dropped with the guard.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub fn create() -> TestDatabase {
        let name = format!("rm_t_{}", unique_suffix());
        let server = mysql_server();
        let mut conn = MysqlConnection::establish(&format!("{server}/mysql")).expect("connect to the MySQL server");
        diesel::sql_query(format!("CREATE DATABASE `{name}`")).execute(&mut conn).expect("create the test database");
        TestDatabase { url: format!("{server}/{name}"), name }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let server = mysql_server();
        match MysqlConnection::establish(&format!("{server}/mysql")) {
            Ok(mut conn) => {
                if let Err(error) =
                    diesel::sql_query(format!("DROP DATABASE IF EXISTS `{}`", self.name)).execute(&mut conn)
                {
                    eprintln!("could not drop test database {}: {error}", self.name);
                }
            }
            Err(error) => eprintln!("could not drop test database {}: {error}", self.name),
        }
    }
}

/// Queue and exchange names of its own, deleted (with their messages) with the guard.
pub struct TestTopology {
    pub settings: AmqpSettings,
}

impl TestTopology {
    pub fn new() -> TestTopology {
        let settings = AmqpSettings { url: amqp_url(), ..AmqpSettings::default() }.with_suffix(&unique_suffix());
        TestTopology { settings }
    }
}

impl Drop for TestTopology {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime may be the one running this: clean up on a thread
        // with a runtime of its own.
        let settings = self.settings.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            let deleted = runtime.block_on(async {
                let connection = queue::connect_once(&settings.url, "test cleanup", Duration::from_secs(5)).await?;
                let channel = connection.create_channel().await.map_err(queue::QueueError::Channel)?;
                queue::delete_topology(&channel, &settings).await?;
                let _ = connection.close(200, "OK".into()).await;
                Ok::<(), queue::QueueError>(())
            });
            deleted.map_err(|error| error.to_string())
        });
        match cleanup.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("could not delete the test topology {}: {error}", self.settings.queue),
            Err(_) => eprintln!("the cleanup of the test topology {} panicked", self.settings.queue),
        }
    }
}

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
        database: DatabaseSettings { url: database.url.clone(), pool_size: 4 },
        amqp: topology.settings.clone(),
        gateway: GatewaySettings {
            workers: 1,
            publish_timeout_ms: 2_000,
            amqp_connect_timeout_ms: 2_000,
            relay_interval_ms: 200,
            relay_grace_ms: 2_500,
            ..GatewaySettings::default()
        },
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A gateway with the test's settings, changed by `customize` first.
pub async fn spawn_app_with(customize: impl FnOnce(&mut Settings)) -> TestApp {
    init_logging();
    let database = TestDatabase::create();
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

/// A port nothing listens on.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
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

    pub fn report(&self, report_id: &str) -> reports::Report {
        reports::find(&mut self.conn(), report_id).expect("query").expect("report exists")
    }

    /// An outbox relay that reaches the test's own broker and queues (as the gateway's own would), polling
    /// every 100 ms; it publishes reports older than `grace`.
    pub fn relay(&self, grace: Duration) -> OutboxRelay {
        let publisher = Arc::new(JobPublisher::new(
            self.topology.settings.clone(),
            Duration::from_secs(2),
            tokio::runtime::Handle::current(),
        ));
        let settings = RelaySettings {
            interval: Duration::from_millis(100),
            grace,
            batch: 10,
            publish_timeout: Duration::from_secs(2),
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

pub fn new_report_id() -> String {
    nanoid::nanoid!()
}

/// A connection and channel to look at the test's queues, declared if nobody has yet (as a worker
/// starting first would).
pub async fn broker(settings: &AmqpSettings) -> (Connection, Channel) {
    let connection =
        queue::connect_once(&settings.url, "test observer", Duration::from_secs(5)).await.expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    queue::declare_topology(&channel, settings).await.expect("declare");
    (connection, channel)
}

/// Waits up to `within` for a message on `queue_name` and takes it (acknowledged).
pub async fn take_message(channel: &Channel, queue_name: &str, within: Duration) -> Option<lapin::message::Delivery> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let got = channel.basic_get(queue_name.into(), BasicGetOptions { no_ack: true }).await.expect("basic.get");
        if let Some(message) = got {
            return Some(message.delivery);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A CSV of `stores` rows in the report's format.
pub fn sample_csv(stores: usize) -> Vec<u8> {
    let mut csv = String::from(
        "store_id,uptime_last_hour,uptime_last_day,uptime_last_week,downtime_last_hour,downtime_last_day,downtime_last_week\n",
    );
    for i in 0..stores {
        csv.push_str(&format!("{:019},60.00,23.50,160.25,0.00,0.50,7.75\n", 1_000_000_000_000_000_000u64 + i as u64));
    }
    csv.into_bytes()
}
