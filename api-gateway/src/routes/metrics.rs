//! `GET /metrics` in the Prometheus text format.
//!
//! The workers write everything they do to MySQL (report status and timings, every load with its row
//! counts), so the gateway reads their figures from there at scrape time: one scrape target for the whole
//! system, correct however many workers run, and nothing lost when a worker restarts. Figures only this
//! process knows (publish failures) come from its own counters.

use std::fmt::Write as _;

use actix_web::{HttpResponse, web};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Nullable, Text};

use crate::db;
use crate::error::{ApiError, method_not_allowed};
use crate::state::AppState;

/// Upper bounds of the report-duration histogram, in seconds.
const DURATION_BUCKETS: [f64; 9] = [0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0];

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/metrics").route(web::get().to(metrics)).default_service(web::to(method_not_allowed("GET"))),
    );
}

#[derive(QueryableByName)]
struct CountBy {
    #[diesel(sql_type = Text)]
    label: String,
    #[diesel(sql_type = BigInt)]
    count: i64,
}

#[derive(QueryableByName)]
struct LoadTotals {
    #[diesel(sql_type = Text)]
    file_kind: String,
    #[diesel(sql_type = BigInt)]
    loads: i64,
    #[diesel(sql_type = BigInt)]
    failed: i64,
    #[diesel(sql_type = BigInt)]
    rows_loaded: i64,
    #[diesel(sql_type = BigInt)]
    rows_rejected: i64,
}

#[derive(QueryableByName)]
struct Duration {
    #[diesel(sql_type = Nullable<Double>)]
    seconds: Option<f64>,
}

struct Snapshot {
    reports: Vec<CountBy>,
    outbox: i64,
    durations: Vec<f64>,
    loads: Vec<LoadTotals>,
}

fn read_snapshot(conn: &mut MysqlConnection) -> QueryResult<Snapshot> {
    let reports =
        diesel::sql_query("SELECT status AS label, COUNT(*) AS count FROM reports GROUP BY status").load(conn)?;
    let outbox = diesel::sql_query(
        "SELECT 'outbox' AS label, COUNT(*) AS count FROM reports WHERE status = 'Running' AND queued_at IS NULL",
    )
    .get_result::<CountBy>(conn)?
    .count;
    // Trigger to completion, as a user waits for it; computed in SQL so only numbers cross the wire.
    let durations = diesel::sql_query(
        "SELECT TIMESTAMPDIFF(MICROSECOND, created_at, finished_at) / 1e6 AS seconds \
         FROM reports WHERE status = 'Complete' AND finished_at IS NOT NULL",
    )
    .load::<Duration>(conn)?
    .into_iter()
    .filter_map(|d| d.seconds)
    .collect();
    let loads = diesel::sql_query(
        "SELECT file_kind, COUNT(*) AS loads, CAST(SUM(status = 'failed') AS SIGNED) AS failed, \
         CAST(SUM(rows_loaded) AS SIGNED) AS rows_loaded, CAST(SUM(rows_rejected) AS SIGNED) AS rows_rejected \
         FROM loads GROUP BY file_kind ORDER BY file_kind",
    )
    .load(conn)?;
    Ok(Snapshot { reports, outbox, durations, loads })
}

async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let snapshot = db::call(&state.pool, read_snapshot).await?;
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
    let reports = ["Running", "Complete", "Failed"].map(|status| {
        let count = s.reports.iter().find(|r| r.label == status).map_or(0, |r| r.count);
        (format!("{{status=\"{status}\"}}"), count.to_string())
    });
    family(&mut out, "restaurant_monitor_reports", "gauge", "Reports by status.", reports);
    family(
        &mut out,
        "restaurant_monitor_reports_in_outbox",
        "gauge",
        "Running reports whose job the broker has not confirmed yet.",
        [(String::new(), s.outbox.to_string())],
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

    let per_file = |value: fn(&LoadTotals) -> i64| -> Vec<(String, String)> {
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
