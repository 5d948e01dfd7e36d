//! The trigger's options and conventions: the gap horizon body (SPEC §2b), sharing keyed on it,
//! `Idempotency-Key`, and `Retry-After` on a Running report.

use diesel::RunQueryDsl as _;
use shared_model::models::idempotency_keys;

use crate::helpers::{TestApp, spawn_app};

async fn report_id_of(response: reqwest::Response) -> (String, String) {
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().expect("ascii").to_owned();
    let body: serde_json::Value = response.json().await.expect("json");
    (body["report_id"].as_str().expect("report_id").to_owned(), location)
}

fn count(app: &TestApp, sql: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(sql).get_result::<Count>(&mut app.conn()).expect("count").n
}

#[tokio::test]
async fn a_gap_horizon_outside_one_to_1440_or_an_unknown_field_is_400_in_json() {
    let app = spawn_app().await;
    for body in [
        r#"{"unknown_after_minutes": 0}"#,
        r#"{"unknown_after_minutes": 1441}"#,
        r#"{"unknown_after_minutes": -1}"#,
        r#"{"unknown_after_minutes": 70000}"#,
        r#"{"unknown_after_minutes": 1.5}"#,
        r#"{"unknown_after_minutes": "60"}"#,
        r#"{"unknown_after_minutes": 60, "store_id": "x"}"#,
        r#"{"store_id": "x"}"#,
        r#"[60]"#,
        "null",
        "not json",
    ] {
        let response = app.trigger_with(Some(body), None).await;
        assert_eq!(response.status(), 400, "{body}");
        let error: serde_json::Value = response.json().await.expect("a JSON error");
        assert!(error["error"].as_str().is_some_and(|e| e.contains("unknown_after_minutes")), "{body}: {error}");
    }
    assert_eq!(count(&app, "SELECT COUNT(*) AS n FROM reports"), 0, "nothing was created");

    for body in ["", "  \n", "{}", r#"{"unknown_after_minutes": null}"#, r#"{"unknown_after_minutes": 1440}"#] {
        assert_eq!(app.trigger_with(Some(body), None).await.status(), 202, "{body:?}");
    }
}

#[tokio::test]
async fn reports_share_a_computation_only_with_the_same_gap_horizon() {
    let app = spawn_app().await;
    let (plain, _) = report_id_of(app.trigger().await).await;
    let (sixty, location) = report_id_of(app.trigger_with(Some(r#"{"unknown_after_minutes": 60}"#), None).await).await;
    let (sixty_again, _) = report_id_of(app.trigger_with(Some(r#"{"unknown_after_minutes":60}"#), None).await).await;
    let (thirty, _) = report_id_of(app.trigger_with(Some(r#"{"unknown_after_minutes": 30}"#), None).await).await;
    let (plain_again, _) = report_id_of(app.trigger_with(Some("{}"), None).await).await;

    assert_eq!(app.report(&plain).shares_report_id, None);
    assert_eq!(app.report(&sixty).shares_report_id, None, "a horizon never shares a report without one");
    assert_eq!(app.report(&sixty_again).shares_report_id.as_deref(), Some(sixty.as_str()));
    assert_eq!(app.report(&thirty).shares_report_id, None, "another horizon is another computation");
    assert_eq!(app.report(&plain_again).shares_report_id.as_deref(), Some(plain.as_str()));
    assert_eq!(app.report(&sixty).unknown_after_minutes, Some(60));
    assert_eq!(app.report(&plain).unknown_after_minutes, None);

    let body: serde_json::Value = app.get(&location).await.json().await.expect("json");
    assert_eq!(body["unknown_after_minutes"], 60, "{body}");
    let body: serde_json::Value = app.get(&format!("/get_report/{plain}")).await.json().await.expect("json");
    assert!(body.get("unknown_after_minutes").is_none(), "absent when not asked for: {body}");
}

#[tokio::test]
async fn the_same_idempotency_key_answers_the_same_report_and_another_body_is_422() {
    let app = spawn_app().await;
    let body = Some(r#"{"unknown_after_minutes": 45}"#);
    let first = app.trigger_with(body, Some("order-7f3a")).await;
    assert!(first.headers().get("idempotent-replayed").is_none());
    let (report_id, location) = report_id_of(first).await;

    // Same options written otherwise: the same request.
    let again = app.trigger_with(Some(r#"{ "unknown_after_minutes" : 45 }"#), Some("order-7f3a")).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(report_id_of(again).await, (report_id.clone(), location.clone()));
    assert_eq!(count(&app, "SELECT COUNT(*) AS n FROM reports"), 1, "no second report");

    for other in [None, Some("{}"), Some(r#"{"unknown_after_minutes": 46}"#)] {
        let refused = app.trigger_with(other, Some("order-7f3a")).await;
        assert_eq!(refused.status(), 422, "{other:?}");
        let error: serde_json::Value = refused.json().await.expect("a JSON error");
        assert!(error["error"].as_str().is_some_and(|e| e.contains("Idempotency-Key")), "{error}");
    }
    assert_eq!(count(&app, "SELECT COUNT(*) AS n FROM reports"), 1, "nothing created by a refused trigger");

    // Another key is another request.
    let (other, _) = report_id_of(app.trigger_with(body, Some("order-7f3b")).await).await;
    assert_ne!(other, report_id);

    for bad in ["", "with space", &"k".repeat(256)] {
        let response = app.trigger_with(None, Some(bad)).await;
        assert_eq!(response.status(), 400, "{bad:?}");
    }
}

#[tokio::test]
async fn an_idempotency_key_expires_after_24_hours_and_the_sweep_deletes_it() {
    let app = spawn_app().await;
    let (first, _) = report_id_of(app.trigger_with(None, Some("nightly-run")).await).await;
    let (fresh, _) = report_id_of(app.trigger_with(None, Some("kept")).await).await;
    diesel::sql_query(
        "UPDATE idempotency_keys SET created_at = NOW(6) - INTERVAL 25 HOUR WHERE idempotency_key = 'nightly-run'",
    )
    .execute(&mut app.conn())
    .expect("age the key");

    // An expired key is a new request, even with another body.
    let (second, _) =
        report_id_of(app.trigger_with(Some(r#"{"unknown_after_minutes": 5}"#), Some("nightly-run")).await).await;
    assert_ne!(second, first);
    let admin = api_gateway::auth::to_hex(&api_gateway::auth::digest(&app.tokens.admin));
    let key = idempotency_keys::find_live(
        &mut app.conn(),
        &admin,
        "nightly-run",
        chrono::Utc::now().naive_utc() - chrono::Duration::hours(1),
    )
    .expect("query")
    .expect("the key is stored again");
    assert_eq!(key.report_id, second);

    diesel::sql_query(
        "UPDATE idempotency_keys SET created_at = NOW(6) - INTERVAL 25 HOUR WHERE idempotency_key = 'nightly-run'",
    )
    .execute(&mut app.conn())
    .expect("age the key again");
    let pass = app.relay(std::time::Duration::from_secs(60)).run_once().await.expect("a relay pass");
    assert_eq!(pass.keys_deleted, 1);
    assert_eq!(count(&app, "SELECT COUNT(*) AS n FROM idempotency_keys"), 1, "the live key stays");
    let (replayed, _) = report_id_of(app.trigger_with(None, Some("kept")).await).await;
    assert_eq!(replayed, fresh);
}

#[tokio::test]
async fn a_running_report_says_when_to_ask_again() {
    let app = spawn_app().await;
    let (report_id, location) = report_id_of(app.trigger().await).await;

    let running = app.get(&location).await;
    assert_eq!(running.headers()["retry-after"], api_gateway::routes::reports::RETRY_AFTER_SECONDS.to_string());
    let body: serde_json::Value = running.json().await.expect("json");
    assert_eq!(body["status"], "Running");
    assert!(body["created_at"].as_str().is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()), "{body}");
    assert!(body.get("completed_at").is_none(), "{body}");

    shared_model::models::reports::mark_failed(&mut app.conn(), &report_id, "stopped by the test").expect("fail");
    let failed = app.get(&location).await;
    assert!(failed.headers().get("retry-after").is_none(), "a finished report has nothing to wait for");
    let body: serde_json::Value = failed.json().await.expect("json");
    assert!(body["completed_at"].is_string(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn simultaneous_triggers_with_one_idempotency_key_make_one_report() {
    let app = spawn_app().await;
    let triggers = (0..6).map(|_| app.trigger_with(Some(r#"{"unknown_after_minutes": 15}"#), Some("burst-1")));
    let answers = futures_util::future::join_all(triggers).await;
    let mut ids = Vec::new();
    for answer in answers {
        ids.push(report_id_of(answer).await.0);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one report for one key: {ids:?}");
    assert_eq!(count(&app, "SELECT COUNT(*) AS n FROM reports"), 1);
}

#[tokio::test]
async fn the_same_idempotency_key_of_two_callers_names_two_reports() {
    let app = spawn_app().await;
    let (admins, _) = report_id_of(app.trigger_with(None, Some("daily")).await).await;
    app.record_polls_load(); // new data, so the second report cannot share the first's computation
    let as_reporter = || async {
        let request = app.anonymous.post(format!("{}/trigger_report", app.address));
        request.bearer_auth(&app.tokens.reporter).header("Idempotency-Key", "daily").send().await.expect("request")
    };
    let (reporters, _) = report_id_of(as_reporter().await).await;
    assert_ne!(reporters, admins, "another caller's key never answers the admin's report");
    // The reporter's key answers the reporter's own report.
    assert_eq!(report_id_of(as_reporter().await).await.0, reporters);
}
