//! Report rows as the tests create and read them, job bodies, and report CSV text.

use chrono::{NaiveDateTime, Utc};
use diesel::mysql::MysqlConnection;
use diesel::prelude::*;
use shared_model::models;
use shared_model::schema::reports;

/// A new report id, as the gateway makes them.
pub fn new_report_id() -> String {
    nanoid::nanoid!()
}

/// A report row as the gateway creates it: Running, queued. Returns its id.
pub fn create_report(conn: &mut MysqlConnection) -> String {
    let id = new_report_id();
    models::reports::create(conn, &id, Utc::now().naive_utc()).expect("insert report");
    assert!(models::reports::mark_queued(conn, &id).expect("mark queued"), "a new report is in the outbox");
    id
}

/// The columns of a report that tests look at.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct ReportRow {
    pub status: String,
    pub attempts: u32,
    pub stores_done: Option<u32>,
    pub stores_total: Option<u32>,
    pub store_count: Option<u32>,
    pub csv_bytes: Option<u64>,
    pub as_of: Option<NaiveDateTime>,
    pub error: Option<String>,
}

pub fn report_row(conn: &mut MysqlConnection, id: &str) -> ReportRow {
    reports::table
        .find(id)
        .select((
            reports::status,
            reports::attempts,
            reports::stores_done,
            reports::stores_total,
            reports::store_count,
            reports::csv_bytes,
            reports::as_of,
            reports::error,
        ))
        .first(conn)
        .expect("report row")
}

/// The body of a job message for `report_id`, as the gateway publishes it.
pub fn job_body(report_id: &str) -> Vec<u8> {
    serde_json::to_vec(&shared_model::messages::ReportJob {
        report_id: report_id.to_owned(),
        requested_at: Utc::now().to_rfc3339(),
    })
    .expect("json")
}

/// A CSV of `stores` rows in the report's format (19-digit store ids, the same figures on every row).
pub fn sample_csv(stores: usize) -> Vec<u8> {
    let mut csv = String::from(
        "store_id,uptime_last_hour,uptime_last_day,uptime_last_week,downtime_last_hour,downtime_last_day,downtime_last_week\n",
    );
    for i in 0..stores {
        csv.push_str(&format!("{:019},60.00,23.50,160.25,0.00,0.50,7.75\n", 1_000_000_000_000_000_000u64 + i as u64));
    }
    csv.into_bytes()
}
