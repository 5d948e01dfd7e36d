//! The whole report path in one process, against the real MariaDB and RabbitMQ: the ingest worker loads a
//! fixture folder into the test's own database, the gateway serves on port 0, a report worker consumes
//! the test's own queues, and a client goes trigger → Running → Complete → download over HTTP. The CSV
//! served must equal, byte for byte, what the offline CLI computes from the same folder.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::SecondsFormat;
use report_worker::settings::WorkerSettings;
use shared_model::settings::DatabaseSettings;
use test_support::worker::InProcessWorker;
use test_support::{TempDir, report_fixture};
use uptime_core::engine::Horizon;

use crate::helpers::{TestApp, closed_port, spawn_app, spawn_app_with};

/// Odd cases on purpose: a store id with a comma, a non-ASCII one, ids that differ in letter case, an
/// unknown zone name, overnight hours, and a store whose polls are all outside the lookback range.
fn fixture_folder() -> PathBuf {
    report_fixture("worker-mix")
}

/// What the offline CLI says about the fixture folder.
struct CliReport {
    csv: Vec<u8>,
    as_of: String,
    stores: usize,
}

/// Loads the fixture folder into the test's database with the ingest worker's own load run, and computes
/// the CLI's report of the same folder with the same moment of loading.
async fn load_fixture(app: &TestApp) -> CliReport {
    let database_url = app.settings.database.url.clone();
    tokio::task::spawn_blocking(move || {
        let folder = fixture_folder();
        let loaded_at = chrono::Utc::now();
        let run = ingest_worker::load_once_at(&ingest_worker::Settings::new(database_url, &folder), loaded_at)
            .expect("the ingest run happens");
        assert!(run.succeeded(), "every file loads: {run:?}");

        let scratch = TempDir::new();
        let out = scratch.path.join("cli-report.csv");
        let outcome = report_worker::cli::compute(&folder, Some(&out), Horizon::NONE, loaded_at.timestamp_micros())
            .expect("the CLI computes the report");
        let csv = std::fs::read(&out).expect("the CLI wrote its report");
        let now = outcome.now.expect("the fixture has polls");
        let as_of = chrono::DateTime::from_timestamp_micros(now)
            .expect("now is a valid instant")
            .to_rfc3339_opts(SecondsFormat::Micros, true);
        CliReport { csv, as_of, stores: outcome.stores }
    })
    .await
    .expect("the loading task")
}

/// A report worker in-process on the test's database and queues, as `report-worker run` would be.
fn start_worker(app: &TestApp) -> InProcessWorker {
    InProcessWorker::start(report_worker::settings::Settings {
        database: DatabaseSettings { pool_size: 4, ..app.settings.database.clone() },
        amqp: app.topology.amqp.clone(),
        worker: WorkerSettings::default(),
    })
}

/// Triggers a report and checks the 202 answer; returns the report id and the `Location`.
async fn trigger(app: &TestApp) -> (String, String) {
    let response = app.trigger().await;
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().expect("ascii location").to_owned();
    let body: serde_json::Value = response.json().await.expect("json");
    let report_id = body["report_id"].as_str().expect("report_id").to_owned();
    assert_eq!(body, serde_json::json!({ "report_id": report_id, "status": "Running" }));
    assert_eq!(location, format!("/get_report/{report_id}"));
    (report_id, location)
}

/// GETs `location` until the report is no longer Running; returns the last answer.
async fn wait_until_finished(app: &TestApp, location: &str, limit: Duration) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let response = app.get(location).await;
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.expect("json");
        if body["status"] != "Running" {
            return body;
        }
        assert!(Instant::now() < deadline, "still Running after {limit:?}: {body}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The finished report over HTTP: its JSON status, the download and the CSV by content negotiation.
async fn assert_served_like_the_cli(app: &TestApp, report_id: &str, finished: serde_json::Value, cli: &CliReport) {
    assert_eq!(
        finished,
        app.with_times(
            report_id,
            serde_json::json!({
                "report_id": report_id, "status": "Complete",
                "download_url": format!("{}/download/{report_id}", app.address),
                "as_of": cli.as_of, "stores": cli.stores,
                "data_version": app.data_version(report_id), "expires_at": app.expires_at(report_id)
            })
        )
    );

    let download = app.get(&format!("/download/{report_id}")).await;
    assert_eq!(download.status(), 200);
    let headers = download.headers();
    assert!(headers["content-type"].to_str().expect("ascii").starts_with("text/csv"), "{headers:?}");
    assert_eq!(headers["content-disposition"], format!("attachment; filename=\"report-{report_id}.csv\""));
    let body = download.bytes().await.expect("download body");
    // As text first, so a failure shows which rows differ.
    assert_eq!(String::from_utf8_lossy(&body), String::from_utf8_lossy(&cli.csv));
    assert!(body.as_ref() == cli.csv.as_slice(), "byte for byte");

    let negotiated = app.get_accepting(&format!("/get_report/{report_id}"), "text/csv").await;
    assert_eq!(negotiated.status(), 200);
    assert_eq!(negotiated.headers()["x-report-status"], "Complete");
    assert!(negotiated.headers()["content-type"].to_str().expect("ascii").starts_with("text/csv"));
    assert!(negotiated.bytes().await.expect("body").as_ref() == cli.csv.as_slice(), "the same CSV as the download");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_triggered_report_runs_completes_and_downloads_exactly_the_clis_report() {
    let app = spawn_app().await;
    let cli = load_fixture(&app).await;
    assert_eq!(cli.stores, 7, "the fixture's stores with polls in the lookback range");

    // Triggered before any worker runs, so the report is certainly seen Running.
    let (report_id, location) = trigger(&app).await;
    assert!(app.report(&report_id).queued_at.is_some(), "the broker confirmed the job at once");
    let running = app.get(&location).await;
    assert_eq!(running.status(), 200);
    assert_eq!(running.headers()["x-report-status"], "Running");
    let body: serde_json::Value = running.json().await.expect("json");
    assert_eq!(body["status"], "Running");
    let early = app.get(&format!("/download/{report_id}")).await;
    assert_eq!(early.status(), 409, "no download while Running");

    let worker = start_worker(&app);
    let finished = wait_until_finished(&app, &location, Duration::from_secs(60)).await;

    assert_served_like_the_cli(&app, &report_id, finished, &cli).await;
    let row = app.report(&report_id);
    assert_eq!(row.attempts, 1, "one delivery, one attempt: {row:?}");
    assert_eq!((row.stores_done, row.stores_total), (Some(7), Some(7)));
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_report_triggered_while_the_broker_is_unreachable_completes_once_it_is_back() {
    let port = closed_port();
    let app = spawn_app_with(|s| s.amqp.url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f")).await;
    let cli = load_fixture(&app).await;

    let (report_id, location) = trigger(&app).await;
    assert!(app.report(&report_id).queued_at.is_none(), "the job waits in the outbox");
    let body: serde_json::Value = app.get(&location).await.json().await.expect("json");
    assert_eq!(body["status"], "Running");

    // The broker "comes back": a relay that reaches it (as the gateway's own would, with the right URL)
    // and a worker on the same queues.
    let relay = app.start_relay(Duration::from_millis(300));
    let worker = start_worker(&app);

    let finished = wait_until_finished(&app, &location, Duration::from_secs(60)).await;

    assert_served_like_the_cli(&app, &report_id, finished, &cli).await;
    let row = app.report(&report_id);
    assert!(row.queued_at.is_some(), "the relay took the job out of the outbox");
    assert_eq!(row.attempts, 1, "published once, computed once: {row:?}");
    relay.stop().await;
    worker.stop().await;
}

/// The report of the fixture folder with a gap horizon, as the offline CLI writes it.
fn cli_csv_with_horizon(minutes: u32) -> Vec<u8> {
    let scratch = TempDir::new();
    let out = scratch.path.join("cli-report.csv");
    let horizon = Horizon::minutes(minutes).expect("a valid horizon");
    report_worker::cli::compute(&fixture_folder(), Some(&out), horizon, chrono::Utc::now().timestamp_micros())
        .expect("the CLI computes the report");
    std::fs::read(&out).expect("the CLI wrote its report")
}

/// A CSV's rows by store id, each as its numbers.
fn rows(csv: &[u8]) -> std::collections::BTreeMap<String, Vec<f64>> {
    let mut reader = csv::Reader::from_reader(csv);
    reader
        .records()
        .map(|r| {
            let r = r.expect("a CSV row");
            (r[0].to_owned(), r.iter().skip(1).map(|v| v.parse::<f64>().expect("a number")).collect())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_report_with_a_gap_horizon_has_nine_columns_that_add_up_to_business_time() {
    let app = spawn_app().await;
    let cli = load_fixture(&app).await;
    let worker = start_worker(&app);

    let response = app.trigger_with(Some(r#"{"unknown_after_minutes": 60}"#), None).await;
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().expect("ascii").to_owned();
    let with_h: serde_json::Value = response.json().await.expect("json");
    let report_id = with_h["report_id"].as_str().expect("id").to_owned();
    let finished = wait_until_finished(&app, &location, Duration::from_secs(60)).await;
    assert_eq!(finished["status"], "Complete", "{finished}");
    assert_eq!(finished["unknown_after_minutes"], 60, "{finished}");
    let times: Vec<chrono::DateTime<chrono::FixedOffset>> = ["created_at", "started_at", "completed_at"]
        .iter()
        .map(|k| chrono::DateTime::parse_from_rfc3339(finished[k].as_str().expect("a time")).expect("RFC 3339"))
        .collect();
    assert!(times[0] <= times[1] && times[1] <= times[2], "created ≤ started ≤ completed: {finished}");

    let csv = app.get(&format!("/download/{report_id}")).await.bytes().await.expect("csv");
    assert_eq!(String::from_utf8_lossy(&csv), String::from_utf8_lossy(&cli_csv_with_horizon(60)));
    let header = csv.split(|b| *b == b'\n').next().expect("a header");
    assert_eq!(header, uptime_core::engine::HEADER_WITH_UNKNOWN.as_bytes());

    // Business time per window is uptime + downtime of the report without a horizon; with one, the three
    // parts add up to it (to the rounding of three written figures against two).
    let without = rows(&cli.csv);
    let with = rows(&csv);
    assert_eq!(with.keys().collect::<Vec<_>>(), without.keys().collect::<Vec<_>>());
    let mut some_unknown = false;
    for (store, w) in &with {
        let plain = &without[store];
        for window in 0..3 {
            let business = plain[window] + plain[3 + window];
            let parts = w[window] + w[3 + window] + w[6 + window];
            assert!((business - parts).abs() <= 0.02, "{store} window {window}: {parts} vs {business}");
            some_unknown |= w[6 + window] > 0.0;
        }
    }
    assert!(some_unknown, "the fixture has gaps longer than an hour");
    worker.stop().await;
}

/// GET /stores/{store_id}/timeline[?query], the id escaped as one path segment.
async fn timeline(app: &TestApp, store_id: &str, query: &str) -> reqwest::Response {
    let mut url = reqwest::Url::parse(&app.address).expect("base url");
    url.path_segments_mut().expect("a base").extend(["stores", store_id, "timeline"]);
    url.set_query((!query.is_empty()).then_some(query));
    app.client.get(url).send().await.expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stores_timeline_has_the_figures_of_its_report_row_and_segments_that_add_up() {
    let app = spawn_app().await;
    let cli = load_fixture(&app).await;
    let with_h = cli_csv_with_horizon(60);
    for (csv, query) in [(&cli.csv, ""), (&with_h, "unknown_after_minutes=60")] {
        let mut reader = csv::Reader::from_reader(csv.as_slice());
        let header: Vec<String> = reader.headers().expect("a header").iter().map(str::to_owned).collect();
        for record in reader.records() {
            let record = record.expect("a row");
            let response = timeline(&app, &record[0], query).await;
            assert_eq!(response.status(), 200, "{}", &record[0]);
            let body: serde_json::Value = response.json().await.expect("json");
            assert_eq!(body["store_id"], &record[0]);
            assert_eq!(body["as_of"], cli.as_of);
            let figures = body["figures"].as_object().expect("figures");
            assert_eq!(figures.len(), header.len() - 1, "{body}");
            for (name, value) in header.iter().zip(record.iter()).skip(1) {
                let expected: f64 = value.parse().expect("a number");
                assert_eq!(figures[name].as_f64(), Some(expected), "{} {name}", &record[0]);
            }
            // The segments of the week add up to the week's figures (to the rounding of each figure).
            let mut by_status = std::collections::HashMap::<String, f64>::new();
            for segment in body["segments"].as_array().expect("segments") {
                let t = |k: &str| {
                    chrono::DateTime::parse_from_rfc3339(segment[k].as_str().expect("time")).expect("RFC 3339")
                };
                let hours = (t("to") - t("from")).num_microseconds().expect("short") as f64 / 3.6e9;
                *by_status.entry(segment["status"].as_str().expect("status").to_owned()).or_default() += hours;
                assert!(body["polls"].as_array().expect("polls").iter().any(|p| p["at"] == segment["poll"]));
            }
            for (status, column) in
                [("up", "uptime_last_week"), ("down", "downtime_last_week"), ("unknown", "unknown_last_week")]
            {
                let Some(figure) = figures.get(column).and_then(|v| v.as_f64()) else { continue };
                let sum = by_status.get(status).copied().unwrap_or(0.0);
                assert!((sum - figure).abs() <= 0.006, "{} {status}: segments {sum} vs {figure}", &record[0]);
            }
            let outages = &body["outages"];
            assert_eq!(
                outages["count"].as_u64().map(|n| n > 0),
                Some(figures["downtime_last_week"].as_f64() > Some(0.0))
            );
        }
    }

    let unknown = timeline(&app, "no-such-store", "").await;
    assert_eq!(unknown.status(), 404);
    assert!(unknown.json::<serde_json::Value>().await.expect("json")["error"].is_string());
    let old = timeline(&app, "only-old-polls", "").await;
    assert_eq!(old.status(), 404, "a store with no poll in the lookback range has no report row");
    for bad in ["unknown_after_minutes=0", "unknown_after_minutes=1441", "unknown_after_minutes=x", "other=1"] {
        let response = timeline(&app, "a-lower", bad).await;
        assert_eq!(response.status(), 400, "{bad}");
        assert!(response.json::<serde_json::Value>().await.expect("json")["error"].is_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recent_reports_are_listed_newest_first_with_their_report_json() {
    let app = spawn_app().await;
    load_fixture(&app).await;
    let worker = start_worker(&app);
    let (first, location) = trigger(&app).await;
    wait_until_finished(&app, &location, Duration::from_secs(60)).await;
    let second = app.trigger_with(Some(r#"{"unknown_after_minutes": 90}"#), None).await;
    let second: serde_json::Value = second.json().await.expect("json");
    let second = second["report_id"].as_str().expect("id").to_owned();
    wait_until_finished(&app, &format!("/get_report/{second}"), Duration::from_secs(60)).await;
    let (third, _) = trigger(&app).await; // shares the first

    let listed: serde_json::Value = app.get("/reports").await.json().await.expect("json");
    let ids: Vec<&str> =
        listed["reports"].as_array().expect("reports").iter().map(|r| r["report_id"].as_str().expect("id")).collect();
    assert_eq!(ids, vec![third.as_str(), second.as_str(), first.as_str()]);
    for entry in listed["reports"].as_array().expect("reports") {
        let id = entry["report_id"].as_str().expect("id");
        let single: serde_json::Value = app.get(&format!("/get_report/{id}")).await.json().await.expect("json");
        assert_eq!(entry, &single, "the same JSON as GET /get_report/{id}");
    }
    let limited: serde_json::Value = app.get("/reports?limit=1").await.json().await.expect("json");
    assert_eq!(limited["reports"].as_array().map(Vec::len), Some(1));
    for bad in ["/reports?limit=0", "/reports?limit=101", "/reports?limit=x", "/reports?page=2"] {
        let response = app.get(bad).await;
        assert_eq!(response.status(), 400, "{bad}");
        assert!(response.json::<serde_json::Value>().await.expect("json")["error"].is_string());
    }
    worker.stop().await;
}
