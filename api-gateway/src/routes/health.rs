//! `/healthz`: the process answers. `/readyz`: MySQL and RabbitMQ are reachable (503 when not), so a
//! load balancer sends no traffic to a gateway that could not serve it.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use diesel::RunQueryDsl;
use serde::Serialize;

use crate::db;
use crate::error::method_not_allowed;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/healthz").route(web::get().to(healthz)).default_service(web::to(method_not_allowed("GET"))),
    )
    .service(web::resource("/readyz").route(web::get().to(readyz)).default_service(web::to(method_not_allowed("GET"))));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

#[derive(Serialize)]
struct Readiness {
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    mysql: String,
    rabbitmq: String,
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let timeout = state.settings.readiness_timeout();
    let mysql = async {
        let ping = db::call(&state.pool, |conn| diesel::sql_query("SELECT 1").execute(conn));
        match tokio::time::timeout(timeout, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    };
    let rabbitmq = async { state.publisher.check_reachable(timeout).await.map_err(|error| error.to_string()) };
    let (mysql, rabbitmq) = tokio::join!(mysql, rabbitmq);
    let describe = |outcome: &Result<(), String>| match outcome {
        Ok(()) => "ok".to_owned(),
        Err(error) => error.clone(),
    };
    let mut problems = Vec::new();
    if let Err(error) = &mysql {
        problems.push(format!("MySQL is unreachable ({error})"));
    }
    if let Err(error) = &rabbitmq {
        problems.push(format!("RabbitMQ is unreachable ({error})"));
    }
    let (status, body) = if problems.is_empty() {
        (
            StatusCode::OK,
            Readiness { status: Some("ready"), error: None, mysql: describe(&mysql), rabbitmq: describe(&rabbitmq) },
        )
    } else {
        log::warn!("not ready: {}", problems.join("; "));
        let error = Some(format!("not ready: {}", problems.join("; ")));
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Readiness { status: None, error, mysql: describe(&mysql), rabbitmq: describe(&rabbitmq) },
        )
    };
    HttpResponse::build(status).json(body)
}
