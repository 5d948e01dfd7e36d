//! `GET /openapi.json`: the OpenAPI document of this API, kept beside the code (`src/openapi.json`); a
//! test checks that it lists exactly the routes the app serves.

use actix_web::{HttpResponse, web};

use crate::error::method_not_allowed;

pub const DOCUMENT: &str = include_str!("../openapi.json");

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/openapi.json")
            .route(web::get().to(|| async { HttpResponse::Ok().content_type("application/json").body(DOCUMENT) }))
            .default_service(web::to(method_not_allowed("GET"))),
    );
}
