//! `GET /`, `/page.js`, `/page.css`: the one page of the service (issue 13), open like `/healthz` — it
//! holds no data; the API calls it makes carry the token the user types. The files live in `src/page/`
//! and are compiled into the binary: no build step, nothing fetched from elsewhere. The policy lets the
//! page load only its own script and style (no inline code) and talk only to this origin.

use actix_web::http::header;
use std::sync::LazyLock;

use actix_web::{HttpResponse, web};
use shared_model::models::reports::ReportStatus;

use crate::error::method_not_allowed;

const HTML: &str = include_str!("../page/index.html");
/// The script as written: its `/* REPORT_STATUS */` line becomes the statuses' names ([`script`]).
const JS: &str = include_str!("../page/page.js");

/// The script with `REPORT_STATUS` defined from [`ReportStatus`], so the page spells no status itself.
fn script() -> &'static str {
    static SCRIPT: LazyLock<String> = LazyLock::new(|| {
        let names: serde_json::Map<String, serde_json::Value> =
            ReportStatus::ALL.iter().map(|s| (s.as_str().to_owned(), s.as_str().into())).collect();
        JS.replacen(
            "/* REPORT_STATUS */",
            &format!("const REPORT_STATUS = Object.freeze({});", serde_json::Value::Object(names)),
            1,
        )
    });
    &SCRIPT
}
const CSS: &str = include_str!("../page/page.css");

/// `default-src 'self'` covers scripts, styles, fetches and images; `blob:` is for the CSV download
/// link only; no frames, no plugins, no other form targets.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/")
            .route(web::get().to(|| async { asset("text/html; charset=utf-8", HTML) }))
            .default_service(web::to(method_not_allowed("GET"))),
    )
    .service(
        web::resource("/page.js")
            .route(web::get().to(|| async { asset("text/javascript; charset=utf-8", script()) }))
            .default_service(web::to(method_not_allowed("GET"))),
    )
    .service(
        web::resource("/page.css")
            .route(web::get().to(|| async { asset("text/css; charset=utf-8", CSS) }))
            .default_service(web::to(method_not_allowed("GET"))),
    );
}

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}
