//! `/metrics` exposes the named series; `/openapi.json` documents exactly the routes the app serves.

use std::collections::BTreeSet;

use diesel::RunQueryDsl;

use crate::helpers::{closed_port, new_report_id, sample_csv, spawn_app_with};

fn line_value(metrics: &str, series: &str) -> Option<String> {
    metrics.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).map(str::to_owned))
}

#[tokio::test]
async fn metrics_expose_reports_durations_rows_and_publish_failures() {
    // A broker nobody listens on: the trigger's publish fails (and the report waits in the outbox).
    let port = closed_port();
    let app = spawn_app_with(|s| {
        s.amqp.url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
        s.gateway.publish_timeout_ms = 500;
    })
    .await;
    app.insert_complete(&new_report_id(), &sample_csv(3), 3, 1 << 20);
    assert_eq!(app.trigger().await.status(), 202);
    diesel::sql_query(
        "INSERT INTO loads (file_kind, file_name, status, started_at, finished_at, rows_read, rows_loaded, rows_rejected) \
         VALUES ('polls', 'store_status.csv', 'loaded', NOW(6), NOW(6), 12, 10, 2), \
                ('hours', 'menu_hours.csv', 'failed', NOW(6), NOW(6), 0, 0, 0)",
    )
    .execute(&mut app.conn())
    .expect("insert load records");

    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/plain")),
        "Prometheus text format"
    );
    let body = response.text().await.expect("body");
    let expect = |series: &str, value: &str| {
        assert_eq!(line_value(&body, series).as_deref(), Some(value), "{series} in\n{body}");
    };
    expect("restaurant_monitor_reports{status=\"Running\"}", "1");
    expect("restaurant_monitor_reports{status=\"Complete\"}", "1");
    expect("restaurant_monitor_reports{status=\"Failed\"}", "0");
    expect("restaurant_monitor_reports_in_outbox", "1");
    expect("restaurant_monitor_report_duration_seconds_count", "1");
    expect("restaurant_monitor_report_duration_seconds_bucket{le=\"+Inf\"}", "1");
    expect("restaurant_monitor_ingest_rows_loaded_total{file=\"polls\"}", "10");
    expect("restaurant_monitor_ingest_rows_rejected_total{file=\"polls\"}", "2");
    expect("restaurant_monitor_ingest_failed_loads_total{file=\"hours\"}", "1");
    expect("restaurant_monitor_ingest_loads_total{file=\"hours\"}", "1");
    expect("restaurant_monitor_queue_publish_failures_total", "1");
    for family in [
        "restaurant_monitor_reports gauge",
        "restaurant_monitor_report_duration_seconds histogram",
        "restaurant_monitor_ingest_rows_loaded_total counter",
        "restaurant_monitor_ingest_rows_rejected_total counter",
        "restaurant_monitor_queue_publish_failures_total counter",
    ] {
        assert!(body.contains(&format!("# TYPE {family}\n")), "# TYPE {family} in\n{body}");
    }
}

/// (path, method) of every route the sources register: `web::resource("PATH")` then `.route(web::METHOD()`.
fn routes_in_sources() -> BTreeSet<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/routes");
    let mut routes = BTreeSet::new();
    for entry in std::fs::read_dir(dir).expect("routes folder") {
        let source = std::fs::read_to_string(entry.expect("entry").path()).expect("source");
        for resource in source.split("web::resource(\"").skip(1) {
            let Some((path, rest)) = resource.split_once('"') else { continue };
            let declaration = rest.split("web::resource(").next().unwrap_or(rest);
            for route in declaration.split(".route(web::").skip(1) {
                let method = route.split('(').next().unwrap_or_default().to_lowercase();
                routes.insert((path.to_owned(), method));
            }
        }
    }
    routes
}

#[tokio::test]
async fn openapi_document_lists_every_route_the_app_serves() {
    let app = spawn_app_with(|_| {}).await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), 200);
    let document: serde_json::Value = response.json().await.expect("json");
    assert_eq!(document["openapi"], "3.0.3");
    let documented: BTreeSet<(String, String)> = document["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object().expect("path item").keys().map(move |method| (path.clone(), method.clone()))
        })
        .collect();
    let served = routes_in_sources();
    assert!(served.len() >= 8, "the source scan found the routes: {served:?}");
    assert_eq!(documented, served, "documented routes == routes in the sources");

    // And each documented route answers as a route (not "nothing at …", not 405).
    let id = new_report_id();
    for (path, method) in &documented {
        let url = format!("{}{}", app.address, path.replace("{report_id}", &id));
        let request = match method.as_str() {
            "get" => app.client.get(&url),
            "post" => app.client.post(&url),
            other => panic!("unexpected method {other}"),
        };
        let response = request.send().await.expect("request");
        assert_ne!(response.status(), 405, "{method} {path}");
        let body = response.text().await.unwrap_or_default();
        assert!(!body.contains("there is nothing at"), "{method} {path} is not served: {body}");
    }
}

#[tokio::test]
async fn every_answer_is_a_status_the_document_lists_and_only_open_routes_answer_without_a_token() {
    let app = spawn_app_with(|_| {}).await;
    let document: serde_json::Value = app.get("/openapi.json").await.json().await.expect("json");
    let complete = new_report_id();
    app.insert_complete(&complete, &crate::helpers::sample_csv(3), 3, 1024);
    let running = new_report_id();
    app.insert_running(&running);
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            let listed: BTreeSet<u16> = operation["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .map(|status| status.parse().expect("a numeric status"))
                .collect();
            let open = operation["security"].as_array().is_some_and(|s| s.is_empty());
            let method: reqwest::Method = method.to_uppercase().parse().expect("a method");
            for id in [&complete, &running, &new_report_id()] {
                let path = path.replace("{report_id}", id);
                let path = if path == "/get_report" { format!("/get_report?report_id={id}") } else { path };
                for role in [None, Some("reader"), Some("admin")] {
                    let status = app.request_as(role, method.clone(), &path).await.status().as_u16();
                    assert!(listed.contains(&status), "{method} {path} as {role:?}: {status} is not in {listed:?}");
                    if role.is_none() {
                        assert_eq!(status == 401, !open, "{method} {path} without a token: {status}");
                    }
                }
            }
        }
    }
}
