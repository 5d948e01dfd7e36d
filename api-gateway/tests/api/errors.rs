use crate::helpers::{spawn_app, spawn_app_with};

async fn json_error(response: reqwest::Response) -> String {
    assert!(
        response.headers()["content-type"].to_str().expect("ascii").starts_with("application/json"),
        "{:?}",
        response.headers()
    );
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body.as_object().map(|o| o.len()), Some(1), "only an error: {body}");
    body["error"].as_str().expect("error is a sentence").to_owned()
}

#[tokio::test]
async fn an_unknown_route_is_404_in_json() {
    let app = spawn_app().await;

    let response = app.get("/reports/latest").await;

    assert_eq!(response.status(), 404);
    assert!(json_error(response).await.contains("/reports/latest"));
}

#[tokio::test]
async fn a_wrong_method_is_405_in_json_with_the_allowed_one() {
    let app = spawn_app().await;

    let get_trigger = app.get("/trigger_report").await;
    assert_eq!(get_trigger.status(), 405);
    assert_eq!(get_trigger.headers()["allow"], "POST");
    assert!(json_error(get_trigger).await.contains("POST"));

    let post_download = app.client.post(format!("{}/download/abc", app.address)).send().await.expect("request");
    assert_eq!(post_download.status(), 405);
    assert_eq!(post_download.headers()["allow"], "GET");
    json_error(post_download).await;
}

#[tokio::test]
async fn an_oversize_body_is_413_in_json() {
    let app = spawn_app_with(|s| s.gateway.max_body_bytes = 1_024).await;

    let response = app
        .client
        .post(format!("{}/trigger_report", app.address))
        .body(vec![b'x'; 4_096])
        .send()
        .await
        .expect("request");

    assert_eq!(response.status(), 413);
    assert!(json_error(response).await.contains("1024 bytes"));
}

#[tokio::test]
async fn a_query_string_that_does_not_parse_is_400_in_json() {
    let app = spawn_app().await;

    let response = app.get("/get_report?report_id=a&report_id=b").await;

    assert_eq!(response.status(), 400);
    json_error(response).await;
}
