//! Conferences over REST against a real Asterisk.

mod common;

use std::time::Duration;

use common::*;

fn ids(list: &serde_json::Value, key: &str) -> Vec<String> {
    list[key]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|v| v.as_str().or_else(|| v["id"].as_str()).map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn create_add_list_remove_delete() {
    let ari = ari().await;
    let service = Service::start(test_settings()).await;
    let call = originate(&ari, &service.app, "silence").await;
    eventually(Duration::from_secs(5), || async {
        service.get(&format!("/v1.0/calls/{call}")).await.0 == 200
    })
    .await;

    let (status, conf) = service
        .post(
            "/v1.0/conferences",
            Some(serde_json::json!({"name": "standup"})),
        )
        .await;
    assert_eq!(status, 201, "{conf}");
    assert_eq!(conf["name"], "standup");
    assert_eq!(conf["call_ids"], serde_json::json!([]));
    let conf_id = conf["id"].as_str().expect("id").to_owned();
    // It is real: Asterisk has it as a mixing bridge.
    assert_eq!(
        ari.bridge(&conf_id).await.expect("bridge").bridge_type,
        "mixing"
    );

    let member = format!("/v1.0/conferences/{conf_id}/calls/{call}");
    let (status, body) = service.post(&member, None).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(
        ari.bridge(&conf_id).await.expect("bridge").channels,
        vec![call.clone()]
    );
    eventually(Duration::from_secs(5), || async {
        ids(
            &service.get(&format!("/v1.0/conferences/{conf_id}")).await.1,
            "call_ids",
        ) == vec![call.clone()]
    })
    .await;
    let (status, list) = service.get("/v1.0/conferences").await;
    assert_eq!(status, 200);
    let entry = list["result"]
        .as_array()
        .expect("result")
        .iter()
        .find(|c| c["id"] == conf_id.as_str())
        .expect("listed")
        .clone();
    assert_eq!(ids(&entry, "call_ids"), vec![call.clone()]);

    let (status, body) = service.delete(&member).await;
    assert_eq!(status, 204, "{body}");
    assert!(
        ari.bridge(&conf_id)
            .await
            .expect("bridge")
            .channels
            .is_empty()
    );
    // Removing it again: the call is not in the conference.
    eventually(Duration::from_secs(5), || async {
        ids(
            &service.get(&format!("/v1.0/conferences/{conf_id}")).await.1,
            "call_ids",
        )
        .is_empty()
    })
    .await;
    let (status, body) = service.delete(&member).await;
    assert_eq!((status, reason(&body)), (409, "STATE_INVALID"), "{body}");

    let (status, _) = service
        .delete(&format!("/v1.0/conferences/{conf_id}"))
        .await;
    assert_eq!(status, 204);
    assert!(ari.bridge(&conf_id).await.expect_err("gone").is_not_found());
    let (status, body) = service.get(&format!("/v1.0/conferences/{conf_id}")).await;
    assert_eq!((status, reason(&body)), (404, "CONFERENCE_NOT_FOUND"));
    let (status, body) = service
        .delete(&format!("/v1.0/conferences/{conf_id}"))
        .await;
    assert_eq!((status, reason(&body)), (404, "CONFERENCE_NOT_FOUND"));

    hangup(&ari, &call).await;
    service.stop().await;
}

#[tokio::test]
async fn a_conference_needs_no_body_and_refuses_a_bad_one() {
    let _ari = ari().await;
    let service = Service::start(test_settings()).await;
    let (status, conf) = service.post("/v1.0/conferences", None).await;
    assert_eq!(status, 201, "{conf}");
    assert_eq!(conf["name"], "");
    for bad in [
        serde_json::json!({"name": 5}),
        serde_json::json!({"nmae": "typo"}),
        serde_json::json!([1, 2]),
    ] {
        let (status, body) = service.post("/v1.0/conferences", Some(bad.clone())).await;
        assert_eq!((status, reason(&body)), (400, "INVALID_ARGUMENT"), "{bad}");
    }
    let (status, _) = service
        .delete(&format!(
            "/v1.0/conferences/{}",
            conf["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(status, 204);
    service.stop().await;
}

#[tokio::test]
async fn bridges_created_by_others_are_listed_and_followed() {
    let ari = ari().await;
    let service = Service::start(test_settings()).await;
    let bridge_id = unique_id("foreign");
    ari.create_bridge(&bridge_id, "made elsewhere")
        .await
        .expect("bridge");

    let listed = || async {
        let (_, list) = service.get("/v1.0/conferences").await;
        ids(&list, "result").contains(&bridge_id)
    };
    eventually(Duration::from_secs(5), listed).await;
    let (status, conf) = service.get(&format!("/v1.0/conferences/{bridge_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(conf["name"], "made elsewhere");

    ari.destroy_bridge(&bridge_id).await.expect("destroy");
    eventually(Duration::from_secs(5), || async { !listed().await }).await;
    service.stop().await;
}

#[tokio::test]
async fn a_call_outside_stasis_cannot_join_and_unknown_ids_are_404() {
    let ari = ari().await;
    let service = Service::start(test_settings()).await;
    let call = originate(&ari, &service.app, "silence").await;
    let (_, conf) = service.post("/v1.0/conferences", None).await;
    let conf_id = conf["id"].as_str().expect("id").to_owned();

    // The far half of a Local channel runs dialplan: ARI cannot bridge it.
    let far = format!("{call}%3B2");
    let (status, body) = service
        .post(&format!("/v1.0/conferences/{conf_id}/calls/{far}"), None)
        .await;
    assert_eq!((status, reason(&body)), (409, "STATE_INVALID"), "{body}");

    let (status, body) = service
        .post(
            &format!("/v1.0/conferences/{conf_id}/calls/no-such-call"),
            None,
        )
        .await;
    assert_eq!((status, reason(&body)), (404, "CALL_NOT_FOUND"));
    let (status, body) = service
        .post(
            &format!("/v1.0/conferences/no-such-conf/calls/{call}"),
            None,
        )
        .await;
    assert_eq!((status, reason(&body)), (404, "CONFERENCE_NOT_FOUND"));

    service
        .delete(&format!("/v1.0/conferences/{conf_id}"))
        .await;
    hangup(&ari, &call).await;
    service.stop().await;
}
