//! SPEC §3: trigger a report, watch it, download it.

use std::sync::Arc;

use actix_web::http::header::{self, HeaderMap};
use actix_web::middleware::from_fn;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use chrono::{NaiveDateTime, Utc};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use shared_model::db::DbPool;
use shared_model::models::idempotency_keys::{KEY_LIFETIME_HOURS, MAX_KEY_LEN};
use shared_model::models::reports::{
    self, Created, Idempotency, NewReport, Progress, Report, ReportChunk, ReportStatus,
};
use shared_model::models::versions::DataVersion;

use crate::auth::{Caller, Role, require};
use crate::cache::CompletedReport;
use crate::db;
use crate::error::{ApiError, method_not_allowed};
use crate::publisher;
use crate::state::AppState;
use uptime_core::engine::Horizon;

/// Tells a client that asked for CSV what it got (and one that polls with `Accept: text/csv` whether
/// the body is the report or a status).
pub const REPORT_STATUS_HEADER: header::HeaderName = header::HeaderName::from_static("x-report-status");
/// The trigger's deduplication key (as in the IETF draft and the payment APIs that use it).
pub const IDEMPOTENCY_KEY_HEADER: header::HeaderName = header::HeaderName::from_static("idempotency-key");
/// Set on a trigger's answer that replays the report an idempotency key created earlier.
pub const IDEMPOTENT_REPLAYED_HEADER: header::HeaderName = header::HeaderName::from_static("idempotent-replayed");
/// How long a client should wait before asking again about a Running report: progress is written every
/// 250 ms and a full-size report takes about a second, so a couple of seconds keeps polls few.
pub const RETRY_AFTER_SECONDS: u32 = 2;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/trigger_report")
            .wrap(from_fn(require(Role::Reporter)))
            .route(web::post().to(trigger_report))
            .default_service(web::to(method_not_allowed("POST"))),
    )
    .service(
        web::resource("/reports")
            .wrap(from_fn(require(Role::Reader)))
            .route(web::get().to(list_reports))
            .default_service(web::to(method_not_allowed("GET"))),
    )
    .service(
        web::resource("/get_report")
            .wrap(from_fn(require(Role::Reader)))
            .route(web::get().to(get_report_by_query))
            .default_service(web::to(method_not_allowed("GET"))),
    )
    .service(
        web::resource("/get_report/{report_id}")
            .wrap(from_fn(require(Role::Reader)))
            .route(web::get().to(get_report))
            .default_service(web::to(method_not_allowed("GET"))),
    )
    .service(
        web::resource("/download/{report_id}")
            .wrap(from_fn(require(Role::Reader)))
            .route(web::get().to(download))
            .default_service(web::to(method_not_allowed("GET"))),
    );
}

/// How long a trigger refused for too many reports waiting for a worker is told to wait.
const PENDING_RETRY_AFTER_S: u64 = 10;
/// How long a download refused for too many downloads at once is told to wait.
const DOWNLOAD_RETRY_AFTER_S: u64 = 1;

#[derive(Serialize)]
struct Triggered<'a> {
    report_id: &'a str,
    status: &'static str,
}

/// Creates the report, and answers 202. A report of data that has not changed since a Running or Complete,
/// unexpired report of the same options shares that computation: no job. Any other is created in the
/// outbox and its job published with a confirm; a job the broker did not confirm in time is published by
/// the outbox relay. An `Idempotency-Key` seen within 24 h answers the report it created (422 when the
/// options differ), creating nothing. Admission first: the caller's triggers per minute, then (in the
/// transaction that would create it) the reports waiting for a worker; a refused trigger stores and queues
/// nothing.
async fn trigger_report(
    state: web::Data<AppState>,
    caller: Caller,
    request: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let options = trigger_options(&request, body, state.settings.max_body_bytes).await?;
    let key = idempotency_key(request.headers())?;
    let admitted = state.triggers.admit(&caller.digest, std::time::Instant::now()).map_err(|retry_after_s| {
        ApiError::TooManyRequests {
            message: format!(
                "this token may trigger {} reports a minute; try again in {retry_after_s} s",
                state.auth.triggers_per_minute
            ),
            retry_after_s,
        }
    })?;
    let report_id = nanoid::nanoid!();
    let created_at = Utc::now();
    let finished_after = created_at.naive_utc() - state.reports.retention();
    let max_pending = state.reports.max_pending;
    let created = {
        let report_id = report_id.clone();
        let digest = options.digest();
        let client = crate::auth::to_hex(&caller.digest);
        db::call(&state.pool, move |conn| {
            let new = NewReport {
                report_id: &report_id,
                created_at: created_at.naive_utc(),
                finished_after,
                unknown_after_minutes: options.unknown_after_minutes,
                max_pending,
                idempotency: key.as_deref().map(|key| Idempotency {
                    key,
                    client: &client,
                    body_digest: &digest,
                    seen_after: created_at.naive_utc() - chrono::Duration::hours(KEY_LIFETIME_HOURS),
                }),
            };
            reports::create_or_share(conn, new)
        })
        .await
    };
    let created = match created {
        Ok(created) => created,
        Err(error) => {
            admitted.refund();
            return Err(error.into());
        }
    };
    match created {
        Created::TooManyPending { pending } => {
            admitted.refund();
            log::warn!("trigger by {:?} refused: {pending} reports wait for a worker", caller.name);
            return Err(ApiError::TooManyRequests {
                message: format!(
                    "{pending} reports are waiting for a worker, the most this service queues; try again shortly"
                ),
                retry_after_s: PENDING_RETRY_AFTER_S,
            });
        }
        // A replayed or refused key creates nothing, so it takes nothing from the caller's quota.
        Created::Replayed { report_id: earlier } => {
            admitted.refund();
            log::info!("trigger with a known idempotency key: answers report_id={earlier}");
            let mut response = triggered(&earlier);
            response.headers_mut().insert(IDEMPOTENT_REPLAYED_HEADER, header::HeaderValue::from_static("true"));
            return Ok(response);
        }
        Created::KeyReused => {
            admitted.refund();
            return Err(ApiError::Unprocessable(format!(
                "this Idempotency-Key was used in the last {KEY_LIFETIME_HOURS} hours with another request body; \
                 use a new key for a new request"
            )));
        }
        Created::Shares { shared_report_id } => {
            log::info!("report_id={report_id} triggered on unchanged data: shares report_id={shared_report_id}");
            return Ok(triggered(&report_id));
        }
        Created::NeedsJob => {}
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
    Ok(triggered(&report_id))
}

/// The trigger's answer. A sharer of a Complete report answers Running too, as SPEC §3 has it: its first
/// poll says Complete.
fn triggered(report_id: &str) -> HttpResponse {
    HttpResponse::Accepted()
        .insert_header((header::LOCATION, format!("/get_report/{report_id}")))
        .json(Triggered { report_id, status: ReportStatus::Running.as_str() })
}

/// The options of a trigger (SPEC §3): its optional JSON body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerOptions {
    /// SPEC §2b's gap horizon, 1 to 1440 minutes.
    unknown_after_minutes: Option<u16>,
}

impl TriggerOptions {
    /// What an idempotency key remembers of the request: its options, not its bytes, so the same options
    /// written with other white space (or an empty body and `{}`) are the same request.
    fn digest(&self) -> String {
        use sha2::Digest as _;
        let canonical = format!("v1;unknown_after_minutes={:?}", self.unknown_after_minutes);
        format!("{:x}", sha2::Sha256::digest(canonical.as_bytes()))
    }
}

/// Reads the trigger's body (at most `limit` bytes, else 413) and parses its options: no body (or only
/// white space) asks for none; otherwise a JSON object sent as `application/json` with only `unknown_after_minutes` (1 to 1440, or
/// null), else 400.
async fn trigger_options(request: &HttpRequest, body: web::Payload, limit: usize) -> Result<TriggerOptions, ApiError> {
    let bytes = read_body(request, body, limit).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(TriggerOptions::default());
    }
    // Only JSON, so no form of another site can post a trigger.
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::BadRequest(
            "a trigger's body must be JSON sent with Content-Type: application/json (or send no body)".into(),
        ));
    }
    let bad_body = |e: serde_json::Error| {
        ApiError::BadRequest(format!(
            "the body must be a JSON object like {{\"unknown_after_minutes\": 60}} (or empty): {e}"
        ))
    };
    // An object first: serde would also read the struct from an array.
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes).map_err(bad_body)?;
    let options = TriggerOptions::deserialize(serde_json::Value::Object(object)).map_err(bad_body)?;
    match options.unknown_after_minutes {
        Some(minutes) if Horizon::minutes(u32::from(minutes)).is_none() => Err(ApiError::BadRequest(format!(
            "unknown_after_minutes must be a whole number of minutes from 1 to 1440, not {minutes}"
        ))),
        _ => Ok(options),
    }
}

/// The `Idempotency-Key` header, if any: 1 to 255 visible ASCII characters, else 400.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY_HEADER) else { return Ok(None) };
    let key = value.as_bytes();
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.iter().all(u8::is_ascii_graphic) {
        return Err(ApiError::BadRequest(format!(
            "the Idempotency-Key header must be 1 to {MAX_KEY_LEN} visible ASCII characters (no spaces)"
        )));
    }
    Ok(Some(String::from_utf8_lossy(key).into_owned()))
}

/// Reads a body of at most `limit` bytes; a larger one is refused (413) without reading it all.
async fn read_body(request: &HttpRequest, mut body: web::Payload, limit: usize) -> Result<Vec<u8>, ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    let mut read = Vec::new();
    while let Some(piece) = body.next().await {
        let piece = piece.map_err(|e| ApiError::BadRequest(format!("the request body could not be read: {e}")))?;
        if read.len() + piece.len() > limit {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        read.extend_from_slice(&piece);
    }
    Ok(read)
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
        ReportView::Running { progress, data_version, about } => {
            let error = format!("report {report_id} is still running; download it once its status is Complete");
            let body = serde_json::to_value(Running {
                report_id: &report_id,
                status: ReportStatus::Running.as_str(),
                progress,
                data_version,
                about,
                error: Some(error),
            })
            .map_err(ApiError::internal)?;
            Err(ApiError::NotComplete { report_id, body })
        }
        ReportView::Failed { error, data_version, expires_at, about } => {
            let body = serde_json::to_value(Failed {
                report_id: &report_id,
                status: ReportStatus::Failed.as_str(),
                error: &error,
                data_version,
                expires_at: rfc3339(expires_at),
                about,
            })
            .map_err(ApiError::internal)?;
            Err(ApiError::NotComplete { report_id, body })
        }
    }
}

/// What a report answers, read from the cache or MySQL.
enum ReportView {
    Running { progress: Option<ProgressBody>, data_version: Option<DataVersionBody>, about: AboutBody },
    Complete(Arc<CompletedReport>),
    Failed { error: String, data_version: Option<DataVersionBody>, expires_at: NaiveDateTime, about: AboutBody },
}

/// What every report answer says of the report's life and options: when it was created, when its
/// computation started and finished (once known), and the gap horizon it was asked with (when set).
#[derive(Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct AboutBody {
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unknown_after_minutes: Option<u16>,
}

impl AboutBody {
    /// A sharer's computation is its shared report's: it started when that one did.
    fn of(report: &Report, computed_by: Option<&Report>) -> Self {
        Self {
            created_at: rfc3339(report.created_at),
            started_at: report.started_at.or_else(|| computed_by.and_then(|c| c.started_at)).map(rfc3339),
            completed_at: report.finished_at.filter(|_| report.status != ReportStatus::Running).map(rfc3339),
            unknown_after_minutes: report.unknown_after_minutes,
        }
    }
}

/// The load ids a report reflects: the settled polls load, the hours and the zones snapshots.
#[derive(Serialize, Clone, Copy)]
struct DataVersionBody {
    polls_load_id: u64,
    hours_snapshot: Option<u64>,
    zones_snapshot: Option<u64>,
}

impl From<DataVersion> for DataVersionBody {
    fn from(v: DataVersion) -> Self {
        Self { polls_load_id: v.settled_load_id, hours_snapshot: v.hours_snapshot, zones_snapshot: v.zones_snapshot }
    }
}

fn rfc3339(at: NaiveDateTime) -> String {
    crate::rfc3339_micros(at.and_utc())
}

/// A sharded report also says how many of its shards are stored; its stores count those of the shards
/// started so far.
#[derive(Serialize, Clone, Copy)]
struct ProgressBody {
    stores_done: u32,
    stores_total: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    shards_done: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shards_total: Option<u32>,
}

impl From<Progress> for ProgressBody {
    fn from(p: Progress) -> Self {
        Self {
            stores_done: p.stores_done,
            stores_total: p.stores_total,
            shards_done: p.shards.map(|(done, _)| done),
            shards_total: p.shards.map(|(_, total)| total),
        }
    }
}

#[derive(Serialize)]
struct Running<'a> {
    report_id: &'a str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<ProgressBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_version: Option<DataVersionBody>,
    #[serde(flatten)]
    about: AboutBody,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    data_version: Option<DataVersionBody>,
    expires_at: String,
    #[serde(flatten)]
    about: &'a AboutBody,
}

#[derive(Serialize)]
struct Failed<'a> {
    report_id: &'a str,
    status: &'static str,
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_version: Option<DataVersionBody>,
    expires_at: String,
    #[serde(flatten)]
    about: AboutBody,
}

async fn load_view(state: &AppState, report_id: &str) -> Result<ReportView, ApiError> {
    if !reports::is_valid_report_id(report_id) {
        return Err(ApiError::unknown_report(report_id));
    }
    let now = Utc::now().naive_utc();
    if let Some(report) = state.completed.get(report_id, now) {
        return Ok(ReportView::Complete(report));
    }
    let id = report_id.to_owned();
    let (report, computed_by) = db::call(&state.pool, move |conn| {
        let Some(report) = reports::find(conn, &id)? else { return Ok((None, None)) };
        // A sharer's progress and start are its shared report's.
        let computed_by = match &report.shares_report_id {
            Some(shared) => reports::find(conn, shared)?,
            None => None,
        };
        Ok((Some(report), computed_by))
    })
    .await?;
    let report = report.ok_or_else(|| ApiError::unknown_report(report_id))?;
    let view = view_of(state, &report, computed_by.as_ref(), now)?;
    if let ReportView::Complete(completed) = &view {
        state.completed.insert(report_id, completed.clone());
    }
    Ok(view)
}

/// What a report read from MySQL answers (410 once expired).
fn view_of(
    state: &AppState,
    report: &Report,
    computed_by: Option<&Report>,
    now: NaiveDateTime,
) -> Result<ReportView, ApiError> {
    let data_version = report.data_version().map(DataVersionBody::from);
    // A finished report without a finish time (written by hand) counts from its creation.
    let expires_at = (report.status != ReportStatus::Running)
        .then(|| report.finished_at.unwrap_or(report.created_at) + state.reports.retention());
    if let Some(expired_at) = expires_at.filter(|at| *at <= now) {
        return Err(ApiError::Gone { report_id: report.report_id.clone(), expired_at: rfc3339(expired_at) });
    }
    let about = AboutBody::of(report, computed_by);
    Ok(match (report.status, expires_at) {
        (ReportStatus::Running, _) | (_, None) => ReportView::Running {
            progress: computed_by.unwrap_or(report).progress().map(ProgressBody::from),
            data_version,
            about,
        },
        (ReportStatus::Failed, Some(expires_at)) => ReportView::Failed {
            error: report.error.clone().unwrap_or_else(|| "the report failed for an unrecorded reason".into()),
            data_version,
            expires_at,
            about,
        },
        (ReportStatus::Complete, Some(expires_at)) => {
            ReportView::Complete(Arc::new(completed_report(report, expires_at, about)))
        }
    })
}

fn completed_report(report: &Report, expires_at: NaiveDateTime, about: AboutBody) -> CompletedReport {
    CompletedReport {
        about,
        as_of: report.as_of.map(rfc3339),
        stores: report.store_count.unwrap_or(0),
        csv_bytes: report.csv_bytes,
        csv_report_id: report.computed_by().to_owned(),
        data_version: report.data_version(),
        expires_at,
    }
}

async fn report_answer(state: &AppState, request: &HttpRequest, report_id: String) -> Result<HttpResponse, ApiError> {
    let view = load_view(state, &report_id).await?;
    let status = view.status();
    let mut response = match view {
        ReportView::Complete(report) if prefers_csv(request.headers()) => {
            csv_response(state, report_id, &report, false).await?
        }
        ReportView::Running { .. } => HttpResponse::Ok()
            .insert_header((header::RETRY_AFTER, RETRY_AFTER_SECONDS.to_string()))
            .json(report_body(state, request, &report_id, view)?),
        view => HttpResponse::Ok().json(report_body(state, request, &report_id, view)?),
    };
    let headers = response.headers_mut();
    headers.insert(header::VARY, header::HeaderValue::from_static("Accept"));
    headers.insert(REPORT_STATUS_HEADER, header::HeaderValue::from_static(status.as_str()));
    Ok(response)
}

impl ReportView {
    fn status(&self) -> ReportStatus {
        match self {
            ReportView::Running { .. } => ReportStatus::Running,
            ReportView::Complete(_) => ReportStatus::Complete,
            ReportView::Failed { .. } => ReportStatus::Failed,
        }
    }
}

/// The report JSON of `GET /get_report/{id}` (and of each entry of `GET /reports`).
fn report_body(
    state: &AppState,
    request: &HttpRequest,
    report_id: &str,
    view: ReportView,
) -> Result<serde_json::Value, ApiError> {
    let status = view.status().as_str();
    match view {
        ReportView::Complete(report) => serde_json::to_value(Complete {
            report_id,
            status,
            download_url: download_url(request, state.settings.public_base_url.as_deref(), report_id),
            as_of: report.as_of.as_deref(),
            stores: report.stores,
            data_version: report.data_version.map(DataVersionBody::from),
            expires_at: rfc3339(report.expires_at),
            about: &report.about,
        }),
        ReportView::Running { progress, data_version, about } => {
            serde_json::to_value(Running { report_id, status, progress, data_version, about, error: None })
        }
        ReportView::Failed { error, data_version, expires_at, about } => serde_json::to_value(Failed {
            report_id,
            status,
            error: &error,
            data_version,
            expires_at: rfc3339(expires_at),
            about,
        }),
    }
    .map_err(ApiError::internal)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<u32>,
}

/// Reports `GET /reports` lists by default and at most.
const LIST_DEFAULT: u32 = 20;
const LIST_MAX: u32 = 100;

/// `GET /reports?limit=N`: the newest reports that have not expired, newest first, each as
/// `GET /get_report/{id}` answers it in JSON.
async fn list_reports(
    state: web::Data<AppState>,
    request: HttpRequest,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(LIST_DEFAULT);
    if !(1..=LIST_MAX).contains(&limit) {
        return Err(ApiError::BadRequest(format!("limit must be from 1 to {LIST_MAX}, not {limit}")));
    }
    let now = Utc::now().naive_utc();
    let finished_after = now - state.reports.retention();
    let listed = db::call(&state.pool, move |conn| reports::recent(conn, finished_after, limit)).await?;
    let mut bodies = Vec::with_capacity(listed.len());
    for (report, computed_by) in &listed {
        match view_of(&state, report, computed_by.as_ref(), now) {
            Ok(view) => bodies.push(report_body(&state, &request, &report.report_id, view)?),
            // Expired between the query and now.
            Err(ApiError::Gone { .. }) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({ "reports": bodies })))
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

/// The stored CSV, streamed one chunk per query; the first is read before answering, so a report with no
/// stored data is a clean 500 rather than a cut download. A download holds one of the gateway's download
/// slots until its stream ends (503 with `Retry-After` when none is free).
async fn csv_response(
    state: &AppState,
    report_id: String,
    report: &CompletedReport,
    attachment: bool,
) -> Result<HttpResponse, ApiError> {
    let slot = state.downloads.try_take().ok_or_else(|| ApiError::Busy {
        message: format!(
            "this gateway is already sending {} reports, the most it sends at once; try again shortly",
            state.settings.max_concurrent_downloads
        ),
        retry_after_s: DOWNLOAD_RETRY_AFTER_S,
    })?;
    let id = report.csv_report_id.clone();
    let first = db::call(&state.pool, move |conn| reports::read_chunk(conn, &id, 0)).await?;
    let Some(first) = first else {
        return Err(ApiError::internal(anyhow::anyhow!("report_id={report_id} is Complete but has no stored CSV")));
    };
    let mut response = HttpResponse::Ok();
    response
        .content_type("text/csv; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "private, no-store"))
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
        pending: Some(first),
        report_id: report.csv_report_id.clone(),
        next_seq: 0,
        sent: 0,
        expected: report.csv_bytes,
        done: false,
        _slot: slot,
    };
    Ok(response.streaming(futures_util::stream::unfold(chunks, ChunkReader::next)))
}

/// Reads a report's chunks one per query (by sequence number, so a missing one ends the stream early),
/// each on a pooled connection taken for that query only, and checks that they add up to the size
/// recorded with the report.
struct ChunkReader {
    pool: DbPool,
    report_id: String,
    /// The chunk read but not sent yet.
    pending: Option<ReportChunk>,
    next_seq: u32,
    sent: u64,
    expected: Option<u64>,
    done: bool,
    /// The download slot, given back when the stream is dropped (finished or cut).
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl ChunkReader {
    async fn next(mut self) -> Option<(Result<Bytes, ApiError>, ChunkReader)> {
        if self.done {
            return None;
        }
        let chunk = match self.pending.take() {
            Some(chunk) => chunk,
            None => {
                let (id, seq) = (self.report_id.clone(), self.next_seq);
                match db::call(&self.pool, move |conn| reports::read_chunk(conn, &id, seq)).await {
                    Ok(Some(chunk)) => chunk,
                    Ok(None) => {
                        self.done = true;
                        return match self.expected {
                            Some(expected) if expected != self.sent => {
                                let problem = format!(
                                    "the stored chunks hold {} bytes, the report records {expected}",
                                    self.sent
                                );
                                Some(self.fail(problem))
                            }
                            _ => None,
                        };
                    }
                    Err(error) => {
                        self.done = true;
                        log::error!("report_id={}: reading its CSV failed mid-download: {error}", self.report_id);
                        return Some((Err(error.into()), self));
                    }
                }
            }
        };
        self.next_seq += 1;
        self.sent += chunk.data.len() as u64;
        Some((Ok(Bytes::from(chunk.data)), self))
    }

    fn fail(mut self, problem: String) -> (Result<Bytes, ApiError>, ChunkReader) {
        self.done = true;
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
