use crate::helpers::{closed_port, spawn_app, spawn_app_with};

#[tokio::test]
async fn healthz_and_readyz_answer_200_when_mysql_and_rabbitmq_are_up() {
    let app = spawn_app().await;

    let health = app.get("/healthz").await;
    assert_eq!(health.status(), 200);

    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body, serde_json::json!({ "status": "ready", "mysql": "ok", "rabbitmq": "ok" }));
}

#[tokio::test]
async fn readyz_is_503_in_json_while_rabbitmq_is_unreachable() {
    let port = closed_port();
    let app = spawn_app_with(|s| s.amqp.url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f")).await;

    let health = app.get("/healthz").await;
    assert_eq!(health.status(), 200, "the process itself is fine");

    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body["mysql"], "ok");
    assert_eq!(body["rabbitmq"], "unreachable");
    let error = body["error"].as_str().expect("an error sentence");
    assert!(error.contains("RabbitMQ unreachable"), "{body}");
    // Open to anybody: it names the dependency, never its host, port, user or the driver's words.
    let text = body.to_string().to_lowercase();
    for secret in ["guest", "127.0.0.1", &port.to_string(), "refused", "os error", "amqp"] {
        assert!(!text.contains(secret), "{secret:?} in {body}");
    }
}
