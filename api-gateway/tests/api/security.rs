//! SPEC §3 access: every route but health, readiness and the document needs a bearer token of a high
//! enough role; answers carry `nosniff` and no CORS headers; a trigger's body is JSON or nothing.

use reqwest::Method;

use crate::helpers::{new_report_id, sample_csv, spawn_app, spawn_app_with, start_error};

/// Every protected route with the least role that may call it.
fn protected_routes(report_id: &str) -> Vec<(Method, String, &'static str)> {
    vec![
        (Method::POST, "/trigger_report".into(), "reporter"),
        (Method::GET, format!("/get_report/{report_id}"), "reader"),
        (Method::GET, format!("/get_report?report_id={report_id}"), "reader"),
        (Method::GET, format!("/download/{report_id}"), "reader"),
        (Method::GET, "/metrics".into(), "admin"),
    ]
}

const ROLES: [&str; 3] = ["reader", "reporter", "admin"];

async fn json_error(response: reqwest::Response) -> String {
    assert!(response.headers()["content-type"].to_str().expect("ascii").starts_with("application/json"));
    let body: serde_json::Value = response.json().await.expect("json");
    body["error"].as_str().expect("an error sentence").to_owned()
}

#[tokio::test]
async fn every_protected_route_is_401_without_a_token_403_below_its_role_and_served_from_it() {
    let app = spawn_app().await;
    let report_id = new_report_id();
    app.insert_complete(&report_id, &sample_csv(3), 3, 1024);

    for (method, path, least) in protected_routes(&report_id) {
        let response = app.request_as(None, method.clone(), &path).await;
        assert_eq!(response.status(), 401, "{method} {path} without a token");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert!(json_error(response).await.contains("Authorization: Bearer"));

        let least_rank = ROLES.iter().position(|r| *r == least).expect("a role");
        for (rank, role) in ROLES.iter().enumerate() {
            let response = app.request_as(Some(role), method.clone(), &path).await;
            if rank < least_rank {
                assert_eq!(response.status(), 403, "{method} {path} as {role}");
                assert!(json_error(response).await.contains(&format!("needs the {least} role")));
            } else {
                assert!(response.status().is_success(), "{method} {path} as {role}: {}", response.status());
            }
        }
    }
}

#[tokio::test]
async fn an_unknown_token_or_another_scheme_is_401_and_the_scheme_is_case_blind() {
    let app = spawn_app().await;
    let url = format!("{}/get_report/{}", app.address, new_report_id());
    for header in ["Bearer not-a-token", "Basic YWRtaW46YWRtaW4=", "Bearer ", "Bearer", &app.tokens.reader] {
        let response = app.anonymous.get(&url).header("Authorization", header).send().await.expect("request");
        assert_eq!(response.status(), 401, "{header:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        json_error(response).await;
    }
    let lowercase = format!("bearer {}", app.tokens.reader);
    let response = app.anonymous.get(&url).header("Authorization", lowercase).send().await.expect("request");
    assert_eq!(response.status(), 404, "a known token, an unknown report");
}

#[tokio::test]
async fn health_readiness_and_the_document_are_open() {
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz", "/openapi.json"] {
        let response = app.request_as(None, Method::GET, path).await;
        assert_eq!(response.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn without_a_tokens_file_the_gateway_refuses_to_start_unless_auth_is_disabled() {
    let error = start_error(|s| s.auth.tokens_file = None).await;
    assert!(error.contains("no tokens file") && error.contains("APP__AUTH__TOKENS_FILE"), "{error}");

    let folder = test_support::TempDir::new();
    let bad = folder.write("tokens", &format!("# ok\n{}\nadmin 1234\n", test_support::tokens_line("reader", "t", "x")));
    let error = start_error(|s| s.auth.tokens_file = Some(bad.clone())).await;
    assert!(error.contains("line 3") && error.contains("64 lowercase"), "{error}");

    let open = spawn_app_with(|s| {
        s.auth.tokens_file = None;
        s.auth.disabled = true;
    })
    .await;
    assert_eq!(open.request_as(None, Method::GET, "/metrics").await.status(), 200);
    assert_eq!(open.request_as(None, Method::POST, "/trigger_report").await.status(), 202);
}

#[tokio::test]
async fn answers_say_nosniff_reports_are_not_stored_and_no_cors_header_is_sent() {
    let app = spawn_app().await;
    let report_id = new_report_id();
    app.insert_complete(&report_id, &sample_csv(3), 3, 1024);

    let paths = [
        format!("/get_report/{report_id}"),
        format!("/download/{report_id}"),
        format!("/get_report/{}", new_report_id()),
        "/healthz".into(),
        "/no/such/route".into(),
    ];
    for path in &paths {
        let response = app
            .client
            .get(format!("{}{path}", app.address))
            .header("Origin", "https://evil.example")
            .send()
            .await
            .expect("request");
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        let cors: Vec<_> = headers.keys().filter(|k| k.as_str().starts_with("access-control-")).collect();
        assert!(cors.is_empty(), "{path}: {cors:?}");
    }
    let csv = app.get_accepting(&format!("/get_report/{report_id}"), "text/csv").await;
    assert_eq!(csv.headers()["cache-control"], "private, no-store");
    assert_eq!(csv.headers()["x-content-type-options"], "nosniff");

    let preflight = app
        .anonymous
        .request(Method::OPTIONS, format!("{}/trigger_report", app.address))
        .header("Origin", "https://evil.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .expect("request");
    assert!(!preflight.status().is_success(), "no preflight is granted: {}", preflight.status());
    assert!(preflight.headers().keys().all(|k| !k.as_str().starts_with("access-control-")));
}

#[tokio::test]
async fn a_trigger_body_must_be_a_json_object_sent_as_json() {
    let app = spawn_app().await;
    let post = |content_type: Option<&'static str>, body: &'static str| {
        let mut request = app.client.post(format!("{}/trigger_report", app.address)).body(body);
        if let Some(content_type) = content_type {
            request = request.header("Content-Type", content_type);
        }
        request.send()
    };

    for (content_type, body) in [
        (Some("application/x-www-form-urlencoded"), "unknown_after_minutes=60"),
        (Some("text/plain"), "{}"),
        (None, "{}"),
        (Some("application/json"), "[1, 2]"),
        (Some("application/json"), "{\"unknown_after_minutes\": "),
        (Some("application/json"), "60"),
        (Some("application/json"), "{\"unknown_after_minutes\": 1441}"),
        (Some("application/json"), "{\"unknown_after_minutes\": 0}"),
        (Some("application/json"), "{\"unknown_after_minutes\": \"60\"}"),
    ] {
        let response = post(content_type, body).await.expect("request");
        assert_eq!(response.status(), 400, "{content_type:?} {body:?}");
        json_error(response).await;
    }
    assert_eq!(app.report_rows(), 0, "a refused trigger stores nothing");

    for (content_type, body) in [
        (Some("application/json; charset=utf-8"), "{\"unknown_after_minutes\": 60}"),
        (Some("application/json"), "{}"),
        (Some("text/plain"), ""),
        (None, ""),
    ] {
        let response = post(content_type, body).await.expect("request");
        assert_eq!(response.status(), 202, "{content_type:?} {body:?}");
    }
}

#[tokio::test]
async fn token_new_prints_a_token_and_the_line_that_lets_it_in_with_its_role() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_api-gateway"))
        .args(["token", "new", "--role", "reporter", "--name", "deploy-script"])
        .output()
        .expect("run api-gateway token new");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "exactly two lines: {stdout:?}");
    let (token, line) = (lines[0], lines[1]);
    assert_eq!(line, test_support::tokens_line("reporter", token, "deploy-script"));

    let folder = test_support::TempDir::new();
    let file = folder.write("tokens", &format!("{line}\n"));
    let app = spawn_app_with(|s| s.auth.tokens_file = Some(file.clone())).await;
    let trigger = app.anonymous.post(format!("{}/trigger_report", app.address)).bearer_auth(token).send();
    assert_eq!(trigger.await.expect("request").status(), 202);
    let metrics = app.anonymous.get(format!("{}/metrics", app.address)).bearer_auth(token).send();
    assert_eq!(metrics.await.expect("request").status(), 403, "a reporter is no admin");

    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_api-gateway"))
        .args(["token", "new", "--role", "root"])
        .output()
        .expect("run api-gateway token new");
    assert!(!refused.status.success() && refused.stdout.is_empty());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unknown role"));
}
