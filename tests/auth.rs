//! Authentication and authorization on the real service (SPEC §3).

mod common;

use std::time::Duration;

use common::*;

async fn status_with(
    service: &Service,
    path: &str,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut req = service.http.get(service.url(path));
    if let Some(t) = token {
        req = req.query(&[("token", t)]);
    }
    service.send(req).await
}

#[tokio::test]
async fn tokens_are_checked_before_anything_else() {
    let ari = ari().await;
    let service = Service::start(test_settings()).await;
    let call = originate(&ari, &service.app, "silence").await;
    let path = format!("/v1.0/calls/{call}");
    eventually(Duration::from_secs(5), || async {
        service.get(&path).await.0 == 200
    })
    .await;

    let (status, body) = status_with(&service, &path, None).await;
    assert_eq!((status, reason(&body)), (401, "AUTHENTICATION_REQUIRED"));
    let (status, body) = status_with(&service, &path, Some("not-a-key")).await;
    assert_eq!((status, reason(&body)), (401, "INVALID_CREDENTIALS"));
    let (status, body) = status_with(&service, &path, Some(&jwt(-120, None))).await;
    assert_eq!((status, reason(&body)), (401, "INVALID_CREDENTIALS"));
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("expired")
    );

    // Bound to another call: forbidden, whether that call exists or not.
    let other = jwt(60, Some("call:someone-else"));
    let (status, body) = status_with(&service, &path, Some(&other)).await;
    assert_eq!((status, reason(&body)), (403, "PERMISSION_DENIED"));
    // Bound to this call: allowed here, and nowhere else.
    let own = jwt(60, Some(&format!("call:{call}")));
    assert_eq!(status_with(&service, &path, Some(&own)).await.0, 200);
    assert_eq!(
        status_with(&service, "/v1.0/calls", Some(&own)).await.0,
        403
    );
    assert_eq!(
        status_with(&service, "/v1.0/conferences", Some(&own))
            .await
            .0,
        403
    );
    // Unbound JWTs and API keys open everything, from the query or the header.
    assert_eq!(
        status_with(&service, &path, Some(&jwt(60, Some("*"))))
            .await
            .0,
        200
    );
    assert_eq!(
        status_with(&service, &path, Some(&jwt(60, None))).await.0,
        200
    );
    assert_eq!(status_with(&service, &path, Some(API_KEY)).await.0, 200);
    let (status, _) = service
        .send(service.http.get(service.url(&path)).bearer_auth(API_KEY))
        .await;
    assert_eq!(status, 200);

    hangup(&ari, &call).await;
    service.stop().await;
}

#[tokio::test]
async fn health_ready_and_metrics_need_no_token() {
    let _ari = ari().await;
    let service = Service::start(test_settings()).await;
    for path in ["/health", "/ready", "/metrics"] {
        let resp = service
            .http
            .get(service.url(path))
            .send()
            .await
            .expect("answer");
        assert_eq!(resp.status(), 200, "{path}");
    }
    service.stop().await;
}

#[tokio::test]
async fn a_conference_token_opens_only_its_conference() {
    let _ari = ari().await;
    let service = Service::start(test_settings()).await;
    let (_, conf) = service.post("/v1.0/conferences", None).await;
    let id = conf["id"].as_str().expect("id").to_owned();
    let own = jwt(60, Some(&format!("conference:{id}")));
    let path = format!("/v1.0/conferences/{id}");
    assert_eq!(status_with(&service, &path, Some(&own)).await.0, 200);
    let (status, body) = service
        .send(
            service
                .http
                .post(service.url("/v1.0/conferences"))
                .bearer_auth(&own),
        )
        .await;
    assert_eq!((status, reason(&body)), (403, "PERMISSION_DENIED"));
    let call_token = jwt(60, Some("call:x"));
    assert_eq!(status_with(&service, &path, Some(&call_token)).await.0, 403);
    service.delete(&path).await;
    service.stop().await;
}
