//! Calls over REST against a real Asterisk.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn a_call_in_the_app_is_listed_and_disappears_after_hangup() {
    let ari = ari().await;
    let service = Service::start(test_settings()).await;
    let id = originate(&ari, &service.app, "silence").await;

    eventually(Duration::from_secs(5), || async {
        service.get(&format!("/v1.0/calls/{id}")).await.0 == 200
    })
    .await;
    let (status, call) = service.get(&format!("/v1.0/calls/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(call["id"], id.as_str());
    assert!(
        call["name"]
            .as_str()
            .expect("name")
            .starts_with("Local/silence@test")
    );
    assert!(call["state"].is_string());
    assert!(call["caller"]["number"].is_string());
    assert!(call["created"].as_str().expect("created").starts_with("20"));
    assert_eq!(call["stream_ids"], serde_json::json!([]));
    assert_eq!(call["external_media_ids"], serde_json::json!([]));

    // A single call is looked up in Asterisk when the events have not told of it yet; the
    // list is what the events said: wait for them.
    let listed = || async {
        let (status, list) = service.get("/v1.0/calls").await;
        assert_eq!(status, 200);
        list["result"]
            .as_array()
            .expect("result")
            .iter()
            .filter_map(|c| c["id"].as_str().map(str::to_owned))
            .collect::<Vec<String>>()
    };
    eventually(Duration::from_secs(5), || async {
        !listed().await.is_empty()
    })
    .await;
    assert_eq!(
        listed().await,
        vec![id.clone()],
        "only this service's call is listed"
    );
    assert_eq!(service.metric("mediastream_calls").await, 1.0);

    hangup(&ari, &id).await;
    eventually(Duration::from_secs(5), || async {
        service.get(&format!("/v1.0/calls/{id}")).await.0 == 404
    })
    .await;
    let (status, body) = service.get(&format!("/v1.0/calls/{id}")).await;
    assert_eq!((status, reason(&body)), (404, "CALL_NOT_FOUND"));
    let (_, list) = service.get("/v1.0/calls").await;
    assert_eq!(list["result"], serde_json::json!([]));
    service.stop().await;
}

#[tokio::test]
async fn a_call_of_another_application_is_found_on_demand() {
    let ari = ari().await;
    let service = Service::start(test_settings()).await;

    // Another ARI application, with its own event socket, owns this call.
    let other_app = unique_app();
    let mut request = ari
        .events_url(&other_app)
        .as_str()
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "Authorization",
        ari.basic_auth_header().expose().parse().expect("header"),
    );
    let (mut other_socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("other application connects");
    let id = originate(&ari, &other_app, "silence").await;
    // Wait for the other application to see its call enter Stasis.
    tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(msg)) = other_socket.next().await {
            if msg.to_text().is_ok_and(|t| t.contains("StasisStart")) {
                return;
            }
        }
    })
    .await
    .expect("StasisStart in the other application");

    let (status, call) = service.get(&format!("/v1.0/calls/{id}")).await;
    assert_eq!(status, 200, "{call}");
    assert_eq!(call["id"], id.as_str());
    let (_, list) = service.get("/v1.0/calls").await;
    assert_eq!(
        list["result"],
        serde_json::json!([]),
        "not in this app's list"
    );

    // The far half of the Local channel runs dialplan and is in no application: a call too.
    let far = format!("{id};2");
    let (status, call) = service
        .get(&format!("/v1.0/calls/{}", far.replace(';', "%3B")))
        .await;
    assert_eq!(status, 200, "{call}");
    assert_eq!(call["id"], far.as_str());

    hangup(&ari, &id).await;
    service.stop().await;
}

#[tokio::test]
async fn the_service_own_channels_are_never_calls() {
    let ari = ari().await;
    let service = Service::start(test_settings()).await;
    let id = call(&service, "tone").await;
    // A stream makes the service's own externalMedia channel, which Asterisk has like any other.
    let mut client = stream(&service, &id, client::Enc::SlnSlin).await;
    let (samples, _) = client.listen(Duration::from_millis(200)).await;
    assert!(!samples.is_empty(), "the stream runs");
    let mut own = Vec::new();
    for object in leftovers(&service).await {
        // Channels only: the bridges are not asked for as calls.
        if ari.channel(&object).await.is_ok() {
            own.push(object);
        }
    }
    assert!(!own.is_empty(), "the stream's channel is in Asterisk");
    for channel in &own {
        let (status, body) = service.get(&format!("/v1.0/calls/{channel}")).await;
        assert_eq!(
            (status, reason(&body)),
            (404, "CALL_NOT_FOUND"),
            "{channel}"
        );
    }
    let (status, calls) = service.get("/v1.0/calls").await;
    assert_eq!(status, 200);
    let listed: Vec<&str> = calls["result"]
        .as_array()
        .expect("result")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert!(listed.contains(&id.as_str()), "{listed:?}");
    assert!(
        own.iter().all(|o| !listed.contains(&o.as_str())),
        "{listed:?}"
    );
    client.close().await;
    finish(service, &[&id]).await;
}
