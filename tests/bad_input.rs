//! Malformed requests get the contract's JSON error, never a 500, and change nothing.

mod common;

use common::*;
use reqwest::Method;

#[tokio::test]
async fn malformed_requests_get_json_errors_and_no_500() {
    // Everything the service asks Asterisk goes through a tap: refused requests must ask it to
    // make or remove nothing.
    let tap = common::tap::Tap::start().await;
    let mut settings = test_settings();
    settings.ari.url = tap.url.parse().expect("tap URL");
    let service = Service::start(settings).await;
    // The event socket's upgrade and the start-up sweep are behind us.
    tap.take();

    let long = "x".repeat(300);
    let cases: Vec<(Method, String, Option<&str>, u16, &str)> = vec![
        (
            Method::GET,
            "/v1.0/calls/a%20b".into(),
            None,
            400,
            "INVALID_ARGUMENT",
        ),
        (
            Method::GET,
            "/v1.0/calls/..%2F..%2Fetc".into(),
            None,
            400,
            "INVALID_ARGUMENT",
        ),
        (
            Method::GET,
            format!("/v1.0/calls/{long}"),
            None,
            400,
            "INVALID_ARGUMENT",
        ),
        (
            Method::GET,
            "/v1.0/calls/%FF%FE".into(),
            None,
            400,
            "INVALID_ARGUMENT",
        ),
        (
            Method::GET,
            "/v1.0/conferences/%00".into(),
            None,
            400,
            "INVALID_ARGUMENT",
        ),
        (
            Method::DELETE,
            "/v1.0/conferences/a$b".into(),
            None,
            400,
            "INVALID_ARGUMENT",
        ),
        (
            Method::POST,
            "/v1.0/conferences/c/calls/%20".into(),
            None,
            400,
            "INVALID_ARGUMENT",
        ),
        (
            Method::POST,
            "/v1.0/conferences".into(),
            Some("{not json"),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            Method::POST,
            "/v1.0/conferences".into(),
            Some("\"a string\""),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            Method::POST,
            "/v1.0/conferences".into(),
            Some(r#"{"name": null, "x": 1}"#),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            Method::POST,
            "/v1.0/conferences".into(),
            Some(r#"{"name": "a\u0000b"}"#),
            400,
            "INVALID_ARGUMENT",
        ),
        (Method::GET, "/v1.0/nothing".into(), None, 404, "NOT_FOUND"),
        (Method::GET, "/v2/calls".into(), None, 404, "NOT_FOUND"),
        (Method::GET, "/".into(), None, 404, "NOT_FOUND"),
        (
            Method::PUT,
            "/v1.0/calls".into(),
            None,
            405,
            "METHOD_NOT_ALLOWED",
        ),
        (
            Method::PATCH,
            "/v1.0/conferences/x".into(),
            None,
            405,
            "METHOD_NOT_ALLOWED",
        ),
    ];
    for (method, path, body, want_status, want_reason) in cases {
        let mut req = service
            .http
            .request(method.clone(), service.url(&path))
            .bearer_auth(API_KEY);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let (status, json) = service.send(req).await;
        assert_eq!(
            (status, reason(&json)),
            (want_status, want_reason),
            "{method} {path} {body:?}: {json}"
        );
        assert_eq!(json["error"]["status"], want_status);
        assert!(json["error"]["message"].is_string());
    }

    // The control: a valid id the service must ask Asterisk about.
    let unknown = unique_id("unknown");
    let (status, _) = service.get(&format!("/v1.0/calls/{unknown}")).await;
    assert_eq!(status, 404);
    let asked = tap.take();
    assert!(
        asked.contains(&format!("GET /ari/channels/{unknown} HTTP/1.1")),
        "the tap sees the service's requests: {asked:#?}"
    );
    assert!(
        asked.iter().all(|line| line.starts_with("GET ")),
        "refused requests changed something in Asterisk: {asked:#?}"
    );
    assert!(service.ready().await, "the service is still serving");
    service.stop().await;
}
