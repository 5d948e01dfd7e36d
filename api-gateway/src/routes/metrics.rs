//! `GET /metrics` in the Prometheus text format.
//!
//! The workers write everything they do to MySQL (report status and timings, every load with its row
//! counts), so the gateway reads their figures from there at scrape time: one scrape target for the whole
//! system, correct however many workers run, and nothing lost when a worker restarts. Figures only this
//! process knows (publish failures) come from its own counters.

use std::fmt::Write as _;

use actix_web::middleware::from_fn;
use actix_web::{HttpResponse, web};
use diesel::QueryResult;
use diesel::mysql::MysqlConnection;
use shared_model::models::loads::{self, FileTotals};
use shared_model::models::reports::{self, ReportStatus};

use crate::auth::{Role, require};
use crate::db;
use crate::error::{ApiError, method_not_allowed};
use crate::state::AppState;

/// Upper bounds of the report-duration histogram, in seconds.
const DURATION_BUCKETS: [f64; 9] = [0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0];

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/metrics")
            .wrap(from_fn(require(Role::Admin)))
            .route(web::get().to(metrics))
            .default_service(web::to(method_not_allowed("GET"))),
    );
}

struct Snapshot {
    reports: Vec<(ReportStatus, i64)>,
    outbox: i64,
    stale_running: i64,
    computations: i64,
    durations: Vec<f64>,
    loads: Vec<FileTotals>,
}

fn read_snapshot(conn: &mut MysqlConnection, quiet_since: chrono::NaiveDateTime) -> QueryResult<Snapshot> {
    Ok(Snapshot {
        reports: reports::count_by_status(conn)?,
        outbox: reports::count_unconfirmed(conn)?,
        stale_running: reports::count_stale_running(conn, quiet_since)?,
        computations: reports::count_computations(conn)?,
        durations: reports::completion_seconds(conn)?,
        loads: loads::totals_by_file(conn)?,
    })
}

async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let quiet_since = chrono::Utc::now().naive_utc() - state.reports.stale_after();
    let snapshot = db::call(&state.pool, move |conn| read_snapshot(conn, quiet_since)).await?;
    let body = render(&snapshot, state.publisher.failures());
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(body))
}

/// Writes one metric family: its help and type lines, then `name{labels} value` per sample.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: impl IntoIterator<Item = (String, String)>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

fn render(s: &Snapshot, publish_failures: u64) -> String {
    let mut out = String::with_capacity(4096);
    let reports =
        s.reports.iter().map(|(status, count)| (format!("{{status=\"{}\"}}", status.as_str()), count.to_string()));
    family(&mut out, "restaurant_monitor_reports", "gauge", "Reports by status.", reports);
    family(
        &mut out,
        "restaurant_monitor_reports_in_outbox",
        "gauge",
        "Running reports whose job the broker has not confirmed yet.",
        [(String::new(), s.outbox.to_string())],
    );
    family(
        &mut out,
        "restaurant_monitor_reports_stale_running",
        "gauge",
        "Running reports whose confirmed job showed no sign of life for reports.stale_after_seconds (the relay publishes them again).",
        [(String::new(), s.stale_running.to_string())],
    );
    family(
        &mut out,
        "restaurant_monitor_report_computations_total",
        "counter",
        "Report computations the workers ran (reports sharing a computation add none).",
        [(String::new(), s.computations.to_string())],
    );

    let mut histogram: Vec<(String, String)> = DURATION_BUCKETS
        .iter()
        .map(|bound| {
            (format!("_bucket{{le=\"{bound}\"}}"), s.durations.iter().filter(|&&d| d <= *bound).count().to_string())
        })
        .collect();
    histogram.push(("_bucket{le=\"+Inf\"}".into(), s.durations.len().to_string()));
    histogram.push(("_sum".into(), s.durations.iter().sum::<f64>().to_string()));
    histogram.push(("_count".into(), s.durations.len().to_string()));
    family(
        &mut out,
        "restaurant_monitor_report_duration_seconds",
        "histogram",
        "Time from trigger to Complete of the completed reports.",
        histogram,
    );

    let per_file = |value: fn(&FileTotals) -> i64| -> Vec<(String, String)> {
        s.loads.iter().map(|l| (format!("{{file=\"{}\"}}", l.file_kind), value(l).to_string())).collect()
    };
    family(
        &mut out,
        "restaurant_monitor_ingest_loads_total",
        "counter",
        "Loads of each input file, every outcome.",
        per_file(|l| l.loads),
    );
    family(
        &mut out,
        "restaurant_monitor_ingest_failed_loads_total",
        "counter",
        "Loads that failed (the previous data was kept).",
        per_file(|l| l.failed),
    );
    family(
        &mut out,
        "restaurant_monitor_ingest_rows_loaded_total",
        "counter",
        "Rows accepted and written by the ingest worker.",
        per_file(|l| l.rows_loaded),
    );
    family(
        &mut out,
        "restaurant_monitor_ingest_rows_rejected_total",
        "counter",
        "Rows rejected by the ingest worker (the loads table has the reasons and sample lines).",
        per_file(|l| l.rows_rejected),
    );
    family(
        &mut out,
        "restaurant_monitor_queue_publish_failures_total",
        "counter",
        "Job publishes of this gateway that failed (the outbox relay retries them).",
        [(String::new(), publish_failures.to_string())],
    );
    out
}
