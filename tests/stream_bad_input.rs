//! Bad input on the media stream: refused before the upgrade with the contract's JSON error and
//! nothing created, or, once streaming, the right close code without disturbing anyone else.

mod common;

use std::time::Duration;

use common::client::{Enc, open};
use common::*;

#[tokio::test]
async fn refusals_before_the_upgrade_create_nothing() {
    let service = Service::start(test_settings()).await;
    let id = call(&service, "tone").await;
    let ari = ari().await;
    // Other tests share this Asterisk: count only this service's application.
    let ours = || async {
        ari.channels()
            .await
            .expect("channels")
            .iter()
            .filter(|c| c.is_in_stasis_app(&service.app))
            .count()
    };
    let channels_before = ours().await;
    let call_path = format!("/v1.0/calls/{id}");
    let key = format!("token={API_KEY}");
    let other = format!("token={}", jwt(60, Some("call:someone-else")));

    let cases: Vec<(&str, String, String, u16, &str)> = vec![
        (
            "unknown encapsulation",
            call_path.clone(),
            format!("encapsulation=opus&{key}"),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "no encapsulation",
            call_path.clone(),
            key.clone(),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "format not allowed",
            call_path.clone(),
            format!("encapsulation=audiosocket&format=ulaw&{key}"),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "unknown format",
            call_path.clone(),
            format!("encapsulation=rtp&format=opus&{key}"),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "bad events flag",
            call_path.clone(),
            format!("encapsulation=rtp&events=maybe&{key}"),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "no token",
            call_path.clone(),
            "encapsulation=rtp".into(),
            401,
            "AUTHENTICATION_REQUIRED",
        ),
        (
            "bad token",
            call_path.clone(),
            "encapsulation=rtp&token=wrong".into(),
            401,
            "INVALID_CREDENTIALS",
        ),
        (
            "token for another call",
            call_path.clone(),
            format!("encapsulation=rtp&{other}"),
            403,
            "PERMISSION_DENIED",
        ),
        (
            "unknown call",
            "/v1.0/calls/no-such-call".into(),
            format!("encapsulation=rtp&{key}"),
            404,
            "CALL_NOT_FOUND",
        ),
        (
            "unknown conference",
            "/v1.0/conferences/no-such-conf".into(),
            format!("encapsulation=rtp&{key}"),
            404,
            "CONFERENCE_NOT_FOUND",
        ),
        (
            "malformed id",
            "/v1.0/calls/a%20b".into(),
            format!("encapsulation=rtp&{key}"),
            400,
            "INVALID_ARGUMENT",
        ),
    ];
    for (what, path, query, status, reason) in cases {
        // As a WebSocket client would try it...
        let url = format!("ws://{}{path}/media_stream?{query}", service.addr);
        match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), status, "{what}");
                let body: serde_json::Value =
                    serde_json::from_slice(resp.body().as_deref().unwrap_or_default())
                        .expect("JSON body");
                assert_eq!(common::reason(&body), reason, "{what}: {body}");
            }
            other => panic!(
                "{what}: expected a refusal, got {:?}",
                other.map(|_| "an upgrade")
            ),
        }
        // ...and as a plain GET.
        let (got, body) = service
            .send(
                service
                    .http
                    .get(service.url(&format!("{path}/media_stream?{query}"))),
            )
            .await;
        assert_eq!(
            (got, common::reason(&body)),
            (status, reason),
            "{what} (plain GET)"
        );
    }
    // A valid request that is not a WebSocket upgrade.
    let (got, body) = service
        .send(
            service
                .http
                .get(service.url(&format!("{call_path}/media_stream?encapsulation=rtp&{key}"))),
        )
        .await;
    assert_eq!(
        (got, common::reason(&body)),
        (400, "INVALID_ARGUMENT"),
        "{body}"
    );

    assert!(leftovers(&service).await.is_empty());
    assert_eq!(ours().await, channels_before, "no channel created");
    hangup(&ari, &id).await;
    service.stop().await;
}

#[tokio::test]
async fn an_oversized_message_closes_its_stream_only() {
    let service = Service::start(test_settings()).await;
    let id = call(&service, "tone").await;
    let mut victim = stream(&service, &id, Enc::SlnSlin).await;
    let mut bystander = stream(&service, &id, Enc::RtpUlaw).await;
    victim.listen(Duration::from_millis(500)).await;
    bystander.listen(Duration::from_millis(100)).await;

    victim.send_binary(vec![0u8; 100 * 1024]).await;
    let close = victim.closed(Duration::from_secs(2)).await.expect("closed");
    assert_eq!(close.0, 1009, "{close:?}");
    // Text has the same cap.
    let mut talker = stream(&service, &id, Enc::SlnSlin).await;
    talker.send_text(&"x".repeat(70 * 1024)).await;
    let close = talker.closed(Duration::from_secs(2)).await.expect("closed");
    assert_eq!(close.0, 1009, "{close:?}");

    let (_, messages) = bystander.listen(Duration::from_secs(1)).await;
    assert!(
        messages >= 45,
        "the other stream keeps flowing: {messages} messages in 1 s"
    );
    bystander.close().await;
    eventually(Duration::from_secs(1), || async {
        leftovers(&service).await.is_empty()
    })
    .await;
    hangup(&ari().await, &id).await;
    service.stop().await;
}

#[tokio::test]
async fn malformed_audiosocket_closes_with_1007() {
    let service = Service::start(test_settings()).await;
    let id = call(&service, "tone").await;
    for (what, bytes) in [
        ("unknown kind", vec![0x42, 0x00, 0x01, 0x00]),
        ("partial frame", vec![0x10, 0x01, 0x40, 0x00, 0x00]),
        ("odd audio length", vec![0x10, 0x00, 0x03, 1, 2, 3]),
    ] {
        let mut client = stream(&service, &id, Enc::AudioSocket).await;
        client.listen(Duration::from_millis(200)).await;
        client.send_binary(bytes).await;
        let close = client.closed(Duration::from_secs(2)).await.expect("closed");
        assert_eq!(close.0, 1007, "{what}: {close:?}");
    }
    eventually(Duration::from_secs(1), || async {
        leftovers(&service).await.is_empty()
    })
    .await;
    hangup(&ari().await, &id).await;
    service.stop().await;
}

#[tokio::test]
async fn garbage_rtp_is_dropped_and_counted_and_the_stream_goes_on() {
    let service = Service::start(test_settings()).await;
    let id = call(&service, "tone").await;
    let mut client = stream(&service, &id, Enc::RtpUlaw).await;
    client.listen(Duration::from_millis(300)).await;
    let before = service
        .metric(r#"mediastream_stream_drops_total{reason="bad_rtp"}"#)
        .await;
    for garbage in [
        vec![0xde, 0xad, 0xbe, 0xef],
        vec![0x40; 200],                               // version 1
        [&[0x80u8, 96][..], &[0u8; 170][..]].concat(), // L16 on a ulaw stream
    ] {
        client.send_binary(garbage).await;
    }
    let (_, messages) = client.listen(Duration::from_millis(1500)).await;
    assert!(messages >= 60, "still streaming: {messages}");
    let after = service
        .metric(r#"mediastream_stream_drops_total{reason="bad_rtp"}"#)
        .await;
    assert_eq!(after - before, 3.0, "counted");
    assert!(client.close.is_none(), "not closed");
    client.close().await;
    hangup(&ari().await, &id).await;
    service.stop().await;
}

/// A stream on `call` is refused with 429 for the reason `limit`.
async fn assert_limited(service: &Service, call: &str, limit: &str) {
    let refused = open(
        service.addr,
        &format!("/v1.0/calls/{call}"),
        Enc::SlnSlin,
        &format!("token={API_KEY}"),
    )
    .await
    .err()
    .unwrap_or_else(|| panic!("{limit}: the stream was not refused"));
    assert_eq!(
        (refused.status, common::reason(&refused.body)),
        (429, "LIMIT_EXCEEDED"),
        "{limit}"
    );
}

#[tokio::test]
async fn limits_answer_429_before_anything_is_created() {
    let mut settings = test_settings();
    settings.limits.max_streams = 2;
    settings.limits.max_streams_per_resource = 1;
    let service = Service::start(settings).await;
    let first = call(&service, "tone").await;
    let second = call(&service, "tone").await;
    let third = call(&service, "tone").await;
    let _a = stream(&service, &first, Enc::SlnSlin).await;

    assert_limited(&service, &first, "per-call limit").await;
    let _b = stream(&service, &second, Enc::SlnSlin).await;
    assert_limited(&service, &third, "total limit").await;
    eventually(Duration::from_secs(2), || async {
        leftovers(&service).await.len() == 4
    })
    .await;

    let ari = ari().await;
    for id in [&first, &second, &third] {
        hangup(&ari, id).await;
    }
    eventually(Duration::from_secs(1), || async {
        leftovers(&service).await.is_empty()
    })
    .await;
    service.stop().await;
}
