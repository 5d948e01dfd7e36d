//! SPEC §3: trigger a report, watch it, download it.

use std::collections::VecDeque;
use std::sync::Arc;

use actix_web::http::header::{self, HeaderMap};
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use chrono::Utc;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use shared_model::db::DbPool;
use shared_model::models::reports::{self, Progress, ReportChunk, ReportStatus};

use crate::cache::CompletedReport;
use crate::db;
use crate::error::{ApiError, method_not_allowed};
use crate::publisher;
use crate::state::AppState;

/// Tells a client that asked for CSV what it got (and one that polls with `Accept: text/csv` whether
/// the body is the report or a status).
pub const REPORT_STATUS_HEADER: header::HeaderName = header::HeaderName::from_static("x-report-status");

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/trigger_report")
            .route(web::post().to(trigger_report))
            .default_service(web::to(method_not_allowed("POST"))),
    )
    .service(
        web::resource("/get_report")
            .route(web::get().to(get_report_by_query))
            .default_service(web::to(method_not_allowed("GET"))),
    )
    .service(
        web::resource("/get_report/{report_id}")
            .route(web::get().to(get_report))
            .default_service(web::to(method_not_allowed("GET"))),
    )
    .service(
        web::resource("/download/{report_id}")
            .route(web::get().to(download))
            .default_service(web::to(method_not_allowed("GET"))),
    );
}

#[derive(Serialize)]
struct Triggered<'a> {
    report_id: &'a str,
    status: &'static str,
}

/// Creates the report (in the outbox), publishes its job with a confirm, and answers 202 either way:
/// a job the broker did not confirm in time is published by the outbox relay.
async fn trigger_report(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    discard_body(&request, body, state.settings.max_body_bytes).await?;
    let report_id = nanoid::nanoid!();
    let created_at = Utc::now();
    {
        let report_id = report_id.clone();
        db::call(&state.pool, move |conn| reports::create(conn, &report_id, created_at.naive_utc())).await?;
    }
    let job = publisher::report_job(&report_id, created_at);
    match state.publisher.publish(&job, state.settings.publish_timeout()).await {
        Ok(()) => {
            let id = report_id.clone();
            match db::call(&state.pool, move |conn| reports::mark_queued(conn, &id)).await {
                Ok(_) => log::info!("report_id={report_id} triggered and queued"),
                Err(error) => log::warn!(
                    "report_id={report_id} queued, but recording it failed ({error}); the relay will publish it again"
                ),
            }
        }
        Err(error) => log::warn!("report_id={report_id} triggered; its job waits in the outbox: {error}"),
    }
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, format!("/get_report/{report_id}")))
        .json(Triggered { report_id: &report_id, status: ReportStatus::Running.as_str() }))
}

/// The API reads no body, but refuses one larger than the limit (413) rather than read it for nothing.
async fn discard_body(request: &HttpRequest, mut body: web::Payload, limit: usize) -> Result<(), ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    let mut seen = 0usize;
    while let Some(piece) = body.next().await {
        let piece = piece.map_err(|e| ApiError::BadRequest(format!("the request body could not be read: {e}")))?;
        seen += piece.len();
        if seen > limit {
            return Err(ApiError::PayloadTooLarge(limit));
        }
    }
    Ok(())
}

async fn get_report(
    state: web::Data<AppState>,
    request: HttpRequest,
    report_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    report_answer(&state, &request, report_id.into_inner()).await
}

#[derive(Deserialize)]
struct ReportQuery {
    report_id: Option<String>,
}

async fn get_report_by_query(
    state: web::Data<AppState>,
    request: HttpRequest,
    query: web::Query<ReportQuery>,
) -> Result<HttpResponse, ApiError> {
    let report_id = query.into_inner().report_id.filter(|id| !id.is_empty()).ok_or_else(|| {
        ApiError::BadRequest(
            "the report_id query parameter is missing: ask for /get_report?report_id=<id> or /get_report/<id>".into(),
        )
    })?;
    report_answer(&state, &request, report_id).await
}

async fn download(state: web::Data<AppState>, report_id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let report_id = report_id.into_inner();
    match load_view(&state, &report_id).await? {
        ReportView::Complete(report) => csv_response(&state, report_id, &report, true).await,
        ReportView::Running { progress } => {
            let error = format!("report {report_id} is still running; download it once its status is Complete");
            let body = serde_json::to_value(Running {
                report_id: &report_id,
                status: ReportStatus::Running.as_str(),
                progress,
                error: Some(error),
            })
            .map_err(ApiError::internal)?;
            Err(ApiError::NotComplete { report_id, body })
        }
        ReportView::Failed { error } => {
            let body = serde_json::to_value(Failed {
                report_id: &report_id,
                status: ReportStatus::Failed.as_str(),
                error: &error,
            })
            .map_err(ApiError::internal)?;
            Err(ApiError::NotComplete { report_id, body })
        }
    }
}

/// What a report answers, read from the cache or MySQL.
enum ReportView {
    Running { progress: Option<ProgressBody> },
    Complete(Arc<CompletedReport>),
    Failed { error: String },
}

#[derive(Serialize, Clone, Copy)]
struct ProgressBody {
    stores_done: u32,
    stores_total: u32,
}

impl From<Progress> for ProgressBody {
    fn from(p: Progress) -> Self {
        Self { stores_done: p.stores_done, stores_total: p.stores_total }
    }
}

#[derive(Serialize)]
struct Running<'a> {
    report_id: &'a str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<ProgressBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct Complete<'a> {
    report_id: &'a str,
    status: &'static str,
    download_url: String,
    as_of: Option<&'a str>,
    stores: u32,
}

#[derive(Serialize)]
struct Failed<'a> {
    report_id: &'a str,
    status: &'static str,
    error: &'a str,
}

async fn load_view(state: &AppState, report_id: &str) -> Result<ReportView, ApiError> {
    if !reports::is_valid_report_id(report_id) {
        return Err(ApiError::unknown_report(report_id));
    }
    if let Some(report) = state.completed.get(report_id) {
        return Ok(ReportView::Complete(report));
    }
    let id = report_id.to_owned();
    let report = db::call(&state.pool, move |conn| reports::find(conn, &id))
        .await?
        .ok_or_else(|| ApiError::unknown_report(report_id))?;
    Ok(match report.status {
        ReportStatus::Running => ReportView::Running { progress: report.progress().map(ProgressBody::from) },
        ReportStatus::Failed => ReportView::Failed {
            error: report.error.clone().unwrap_or_else(|| "the report failed for an unrecorded reason".into()),
        },
        ReportStatus::Complete => {
            let completed = Arc::new(CompletedReport {
                as_of: report.as_of.map(|t| crate::rfc3339_micros(t.and_utc())),
                stores: report.store_count.unwrap_or(0),
                csv_bytes: report.csv_bytes,
            });
            state.completed.insert(report_id, completed.clone());
            ReportView::Complete(completed)
        }
    })
}

async fn report_answer(state: &AppState, request: &HttpRequest, report_id: String) -> Result<HttpResponse, ApiError> {
    let view = load_view(state, &report_id).await?;
    let status = match &view {
        ReportView::Running { .. } => ReportStatus::Running,
        ReportView::Complete(_) => ReportStatus::Complete,
        ReportView::Failed { .. } => ReportStatus::Failed,
    };
    let mut response = match view {
        ReportView::Complete(report) if prefers_csv(request.headers()) => {
            csv_response(state, report_id, &report, false).await?
        }
        ReportView::Complete(report) => HttpResponse::Ok().json(Complete {
            report_id: &report_id,
            status: status.as_str(),
            download_url: download_url(request, state.settings.public_base_url.as_deref(), &report_id),
            as_of: report.as_of.as_deref(),
            stores: report.stores,
        }),
        ReportView::Running { progress } => {
            HttpResponse::Ok().json(Running { report_id: &report_id, status: status.as_str(), progress, error: None })
        }
        ReportView::Failed { error } => {
            HttpResponse::Ok().json(Failed { report_id: &report_id, status: status.as_str(), error: &error })
        }
    };
    let headers = response.headers_mut();
    headers.insert(header::VARY, header::HeaderValue::from_static("Accept"));
    headers.insert(REPORT_STATUS_HEADER, header::HeaderValue::from_static(status.as_str()));
    Ok(response)
}

/// The absolute URL of the download: under `public_base_url` when set, else the scheme and host the
/// client used (`Forwarded` / `X-Forwarded-*` first, as a reverse proxy sets them, then `Host`).
fn download_url(request: &HttpRequest, public_base_url: Option<&str>, report_id: &str) -> String {
    match public_base_url {
        Some(base) => format!("{}/download/{report_id}", base.trim_end_matches('/')),
        None => {
            let info = request.connection_info();
            format!("{}://{}/download/{report_id}", info.scheme(), info.host())
        }
    }
}

/// True when the client prefers `text/csv` to `application/json` (RFC 9110 content negotiation: the
/// most specific range that matches each type gives its weight; at equal weight the type named
/// explicitly wins over one matched by a wildcard, and a full tie goes to JSON, the default).
pub fn prefers_csv(headers: &HeaderMap) -> bool {
    let mut csv = Weight::NONE;
    let mut json = Weight::NONE;
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for range in value.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            csv = csv.consider(&media, "text", "csv", q);
            json = json.consider(&media, "application", "json", q);
        }
    }
    csv.q > 0.0 && (csv.q, csv.specificity) > (json.q, json.specificity)
}

#[derive(Clone, Copy)]
struct Weight {
    specificity: u8,
    q: f32,
}

impl Weight {
    const NONE: Weight = Weight { specificity: 0, q: 0.0 };

    fn consider(self, media: &str, kind: &str, subtype: &str, q: f32) -> Weight {
        let specificity = match media.split_once('/') {
            Some((k, s)) if k == kind && s == subtype => 3,
            Some((k, "*")) if k == kind => 2,
            Some(("*", "*")) => 1,
            _ => 0,
        };
        if specificity > self.specificity { Weight { specificity, q } } else { self }
    }
}

/// The stored CSV, streamed chunk by chunk; the first batch is read before answering, so a report with
/// no stored data is a clean 500 rather than a cut download.
async fn csv_response(
    state: &AppState,
    report_id: String,
    report: &CompletedReport,
    attachment: bool,
) -> Result<HttpResponse, ApiError> {
    let batch = state.settings.download_chunks_per_query;
    let id = report_id.clone();
    let first = db::call(&state.pool, move |conn| reports::read_chunks(conn, &id, 0, batch)).await?;
    if first.is_empty() {
        return Err(ApiError::internal(anyhow::anyhow!("report_id={report_id} is Complete but has no stored CSV")));
    }
    let mut response = HttpResponse::Ok();
    response
        .content_type("text/csv; charset=utf-8")
        .insert_header((REPORT_STATUS_HEADER, ReportStatus::Complete.as_str()));
    if attachment {
        response
            .insert_header((header::CONTENT_DISPOSITION, format!("attachment; filename=\"report-{report_id}.csv\"")));
    }
    if let Some(length) = report.csv_bytes {
        response.no_chunking(length);
    }
    let chunks = ChunkReader {
        pool: state.pool.clone(),
        exhausted: first.len() < batch as usize,
        pending: first.into(),
        report_id,
        next_seq: 0,
        batch,
        sent: 0,
        expected: report.csv_bytes,
        failed: false,
    };
    Ok(response.streaming(futures_util::stream::unfold(chunks, ChunkReader::next)))
}

/// Reads a report's chunks a batch at a time, each batch on its own pooled connection, and checks that
/// they come in sequence and add up to the size recorded with the report.
struct ChunkReader {
    pool: DbPool,
    report_id: String,
    pending: VecDeque<ReportChunk>,
    next_seq: u32,
    batch: u32,
    exhausted: bool,
    sent: u64,
    expected: Option<u64>,
    failed: bool,
}

impl ChunkReader {
    async fn next(mut self) -> Option<(Result<Bytes, ApiError>, ChunkReader)> {
        if self.failed {
            return None;
        }
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                if chunk.seq != self.next_seq {
                    let problem = format!("chunk {} is missing (found {})", self.next_seq, chunk.seq);
                    return Some(self.fail(problem));
                }
                self.next_seq += 1;
                self.sent += chunk.data.len() as u64;
                return Some((Ok(Bytes::from(chunk.data)), self));
            }
            if self.exhausted {
                return match self.expected {
                    Some(expected) if expected != self.sent => {
                        let problem =
                            format!("the stored chunks hold {} bytes, the report records {expected}", self.sent);
                        Some(self.fail(problem))
                    }
                    _ => None,
                };
            }
            let (id, from, batch) = (self.report_id.clone(), self.next_seq, self.batch);
            match db::call(&self.pool, move |conn| reports::read_chunks(conn, &id, from, batch)).await {
                Ok(chunks) => {
                    self.exhausted = chunks.len() < batch as usize;
                    self.pending.extend(chunks);
                }
                Err(error) => {
                    self.failed = true;
                    log::error!("report_id={}: reading its CSV failed mid-download: {error}", self.report_id);
                    return Some((Err(error.into()), self));
                }
            }
        }
    }

    fn fail(mut self, problem: String) -> (Result<Bytes, ApiError>, ChunkReader) {
        self.failed = true;
        let error = anyhow::anyhow!("report_id={}: the stored CSV is damaged: {problem}", self.report_id);
        log::error!("{error}");
        (Err(ApiError::Internal(error)), self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).expect("header"));
        headers
    }

    #[test]
    fn csv_only_when_the_client_prefers_it() {
        assert!(prefers_csv(&accept("text/csv")));
        assert!(prefers_csv(&accept("text/*")));
        assert!(prefers_csv(&accept("text/csv, application/json;q=0.5")));
        assert!(prefers_csv(&accept("application/json;q=0.1, text/csv;q=0.9")));
        assert!(!prefers_csv(&HeaderMap::new()));
        assert!(!prefers_csv(&accept("*/*")));
        assert!(!prefers_csv(&accept("application/json")));
        assert!(!prefers_csv(&accept("text/csv;q=0.5, application/json")));
        assert!(!prefers_csv(&accept("text/csv;q=0")));
        assert!(prefers_csv(&accept("text/csv, */*;q=0.8")));
        assert!(prefers_csv(&accept("text/csv, */*")));
        assert!(!prefers_csv(&accept("text/csv, application/json")));
    }
}
