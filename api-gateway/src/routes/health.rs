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
    mysql: &'static str,
    rabbitmq: &'static str,
}

/// Open to anybody, so it names the dependency that is down and nothing else: the cause (host, user,
/// driver message) goes to the log.
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
    let mut down = Vec::new();
    for (name, outcome) in [("MySQL", &mysql), ("RabbitMQ", &rabbitmq)] {
        if let Err(cause) = outcome {
            log::warn!("not ready: {name} is unreachable: {cause}");
            down.push(name);
        }
    }
    let describe = |outcome: &Result<(), String>| if outcome.is_ok() { "ok" } else { "unreachable" };
    let (mysql, rabbitmq) = (describe(&mysql), describe(&rabbitmq));
    if down.is_empty() {
        HttpResponse::Ok().json(Readiness { status: Some("ready"), error: None, mysql, rabbitmq })
    } else {
        let error = Some(format!("not ready: {} unreachable (the gateway's log says why)", down.join(" and ")));
        HttpResponse::build(StatusCode::SERVICE_UNAVAILABLE).json(Readiness { status: None, error, mysql, rabbitmq })
    }
}
