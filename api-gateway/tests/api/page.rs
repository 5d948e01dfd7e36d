//! The page and its script and style are open, embedded, and served with their content types and a
//! policy that lets the page run only this origin's script and style.

use reqwest::Method;

use crate::helpers::spawn_app;

#[tokio::test]
async fn the_page_its_script_and_its_style_are_served_without_a_token() {
    let app = spawn_app().await;
    for (path, content_type, needle) in [
        ("/", "text/html; charset=utf-8", r#"<script src="/page.js" defer></script>"#),
        ("/page.js", "text/javascript; charset=utf-8", "sessionStorage"),
        ("/page.css", "text/css; charset=utf-8", "@media"),
    ] {
        let response = app.request_as(None, Method::GET, path).await;
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], content_type, "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        let policy = headers["content-security-policy"].to_str().expect("ascii");
        assert!(policy.starts_with("default-src 'self';"), "{path}: {policy}");
        assert!(policy.contains("script-src 'self';") && !policy.contains("unsafe-inline"), "{path}: {policy}");
        let body = response.text().await.expect("body");
        assert!(body.contains(needle), "{path} holds {needle:?}");
    }
}

#[tokio::test]
async fn the_page_has_no_inline_script_or_style_and_loads_nothing_from_elsewhere() {
    let app = spawn_app().await;
    let html = app.request_as(None, Method::GET, "/").await.text().await.expect("body");
    assert!(!html.contains("<style"), "no inline style element");
    assert!(!html.contains(" style="), "no style attribute");
    let handler = html.split(" on").skip(1).find(|rest| {
        let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
        !name.is_empty() && rest[name.len()..].starts_with('=')
    });
    assert!(handler.is_none(), "no inline event handler: on{handler:?}");
    // Every <script> has a src of this origin, and nothing names another host.
    for script in html.split("<script").skip(1) {
        assert!(script.trim_start().starts_with("src=\"/"), "an inline or foreign script: <script{script}");
    }
    for page in [html, app.request_as(None, Method::GET, "/page.css").await.text().await.expect("css")] {
        assert!(!page.contains("http://") && !page.contains("https://"), "no other origin in\n{page}");
    }
}

#[tokio::test]
async fn the_page_answers_only_get() {
    let app = spawn_app().await;
    let response = app.request_as(None, Method::POST, "/").await;
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET");
}

#[tokio::test]
async fn the_script_gets_the_report_statuses_from_the_models() {
    let app = spawn_app().await;
    let script = app.request_as(None, Method::GET, "/page.js").await.text().await.expect("body");
    assert!(!script.contains("/* REPORT_STATUS */"), "the placeholder is filled in");
    let defined = script.lines().find(|l| l.starts_with("const REPORT_STATUS = Object.freeze(")).expect("defined");
    for status in shared_model::models::reports::ReportStatus::ALL {
        assert!(defined.contains(&format!("\"{0}\":\"{0}\"", status.as_str())), "{defined}");
    }
}
