//! `GET /stores/{store_id}/timeline[?unknown_after_minutes=H]`: one store's evidence on the current data
//! (issue 13): its business intervals of the last week, the segments of business time with their status
//! and deciding poll, its polls, its outages and its report row — computed by the engine's own report
//! path, so the figures equal that store's row of a report on the same data. It reads one store's polls.

use actix_web::middleware::from_fn;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize};
use shared_model::models::{polls, snapshots, stores};
use uptime_core::engine::{self, Horizon, LOOKBACK, SegmentStatus, StoreTimeline};
use uptime_core::input::{FileKind, HoursRow, Poll, known_zone};
use uptime_core::time::Micros;

use crate::auth::{Role, require};
use crate::db;
use crate::error::{ApiError, method_not_allowed};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/stores/{store_id}/timeline")
            .wrap(from_fn(require(Role::Reader)))
            .route(web::get().to(timeline))
            .default_service(web::to(method_not_allowed("GET"))),
    );
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TimelineQuery {
    unknown_after_minutes: Option<u32>,
}

/// What one consistent read gives for a store.
struct StoreData {
    store_key: u32,
    now: Micros,
    polls: Vec<Poll>,
    hours: Vec<HoursRow>,
    zone_name: Option<String>,
}

async fn timeline(
    state: web::Data<AppState>,
    store_id: web::Path<String>,
    query: web::Query<TimelineQuery>,
) -> Result<HttpResponse, ApiError> {
    let store_id = store_id.into_inner();
    let horizon = match query.unknown_after_minutes {
        None => Horizon::NONE,
        Some(minutes) => Horizon::minutes(minutes).ok_or_else(|| {
            ApiError::BadRequest(format!("unknown_after_minutes must be from 1 to 1440, not {minutes}"))
        })?,
    };
    let id = store_id.clone();
    let data = db::call(&state.pool, move |conn| {
        shared_model::db::with_consistent_snapshot(conn, |conn| read_store(conn, &id))
    })
    .await?;
    let unknown =
        || ApiError::NotFound(format!("the current data has no poll of store {store_id:?} in its last 8 days"));
    let data = data.ok_or_else(unknown)?;
    let zone = data.zone_name.as_deref().and_then(known_zone);
    let timeline = engine::store_timeline(data.store_key, &data.polls, &data.hours, zone, data.now, horizon)
        .ok_or_else(unknown)?;
    Ok(HttpResponse::Ok().json(TimelineBody::new(&store_id, data.zone_name, &timeline)))
}

/// The store's polls of the lookback range, hours and zone in one consistent read; `None` for a store
/// the data does not know.
fn read_store(conn: &mut diesel::MysqlConnection, store_id: &str) -> diesel::QueryResult<Option<StoreData>> {
    let Some(store) = stores::find(conn, &[store_id])?.into_iter().next() else { return Ok(None) };
    let Some(now) = polls::newest_polled_at(conn)? else { return Ok(None) };
    let polls = polls::read_store(conn, store.store_key, now - LOOKBACK, now)?;
    let hours_snapshot = snapshots::current(conn, FileKind::Hours)?.snapshot_id;
    let zones_snapshot = snapshots::current(conn, FileKind::Zones)?.snapshot_id;
    Ok(Some(StoreData {
        store_key: store.store_key,
        now,
        polls,
        hours: snapshots::store_business_hours(conn, hours_snapshot, store.store_key)?,
        zone_name: snapshots::store_zone_name(conn, zones_snapshot, store.store_key)?,
    }))
}

#[derive(Serialize)]
struct TimelineBody<'a> {
    store_id: &'a str,
    as_of: String,
    /// The zone used; `timezone_str` is the name the data gave (absent without one).
    timezone: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    timezone_str: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unknown_after_minutes: Option<u32>,
    open_all_the_time: bool,
    business_intervals: Vec<IntervalBody>,
    segments: Vec<SegmentBody>,
    polls: Vec<PollBody>,
    outages: OutagesBody,
    figures: serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize)]
struct IntervalBody {
    from: String,
    to: String,
    from_local: String,
    to_local: String,
}

#[derive(Serialize)]
struct SegmentBody {
    from: String,
    to: String,
    status: &'static str,
    poll: String,
}

#[derive(Serialize)]
struct PollBody {
    at: String,
    status: &'static str,
    in_business_hours: bool,
    /// One of the polls that decide the status (all of them when none is in business hours).
    observation: bool,
}

#[derive(Serialize)]
struct OutagesBody {
    count: usize,
    longest: Option<OutageBody>,
}

#[derive(Serialize)]
struct OutageBody {
    from: String,
    to: String,
    minutes: f64,
}

impl<'a> TimelineBody<'a> {
    fn new(store_id: &'a str, timezone_str: Option<String>, t: &StoreTimeline) -> Self {
        let with_unknown = t.horizon.length().is_some();
        let figures = t
            .figures
            .figures(with_unknown)
            .map(|(name, text)| {
                // The report's two-decimal text as a JSON number: the same value the CSV holds.
                let number = text.parse::<f64>().ok().and_then(serde_json::Number::from_f64);
                (name.to_owned(), number.map_or(serde_json::Value::Null, serde_json::Value::Number))
            })
            .collect();
        let longest = t.longest_outage().map(|o| OutageBody {
            from: half(o.from),
            to: half(o.to),
            minutes: ((o.to - o.from) as f64 / 2.0 / 60e6 * 100.0).round() / 100.0,
        });
        TimelineBody {
            store_id,
            as_of: utc(t.now),
            timezone: t.zone.name(),
            timezone_str,
            unknown_after_minutes: t.horizon.as_minutes(),
            open_all_the_time: t.business.is_none(),
            business_intervals: t
                .business
                .iter()
                .flatten()
                .map(|b| IntervalBody {
                    from: utc(b.from),
                    to: utc(b.to),
                    from_local: local(b.from, b.from_offset),
                    to_local: local(b.to, b.to_offset),
                })
                .collect(),
            segments: t
                .segments
                .iter()
                .map(|s| SegmentBody {
                    from: half(s.from),
                    to: half(s.to),
                    status: match s.status {
                        SegmentStatus::Up => "up",
                        SegmentStatus::Down => "down",
                        SegmentStatus::Unknown => "unknown",
                    },
                    poll: utc(s.poll),
                })
                .collect(),
            polls: t
                .polls
                .iter()
                .map(|p| PollBody {
                    at: utc(p.at),
                    status: if p.active { "active" } else { "inactive" },
                    in_business_hours: p.in_business_hours,
                    observation: p.observation,
                })
                .collect(),
            outages: OutagesBody { count: t.outages.len(), longest },
            figures,
        }
    }
}

fn utc(at: Micros) -> String {
    DateTime::<Utc>::from_timestamp_micros(at).map_or_else(|| at.to_string(), crate::rfc3339_micros)
}

/// A boundary in half-microseconds, written to the microsecond (a midpoint on half a microsecond is
/// written rounded down).
fn half(at: engine::HalfMicros) -> String {
    utc(at.div_euclid(2))
}

/// The local wall time of an instant with its offset, RFC 3339 (`2024-01-08T09:00:00-05:00`).
fn local(at: Micros, offset: Micros) -> String {
    let offset = FixedOffset::east_opt(i32::try_from(offset / 1_000_000).unwrap_or(0));
    match (DateTime::<Utc>::from_timestamp_micros(at), offset) {
        (Some(t), Some(offset)) => t.with_timezone(&offset).to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        _ => utc(at),
    }
}
