//! Streams on a bridged call (through a snoop) and on a conference: who hears whom.

mod common;

use std::time::Duration;

use common::audio::{describe, tone, tone_share};
use common::client::{Enc, MediaClient, open};
use common::*;

/// Sends `freq` in real time for `seconds` while listening; returns what was heard in the
/// last second.
async fn talk(client: &mut MediaClient, freq: Option<f64>, seconds: usize) -> Vec<i16> {
    let mut heard = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    let frames = seconds * 50;
    for i in 0..frames {
        ticker.tick().await;
        if let Some(freq) = freq {
            let frame = client.encode_frame(&tone(freq, 160, i * 160, 8000.0));
            client.send_binary(frame).await;
        }
        let (samples, _) = client.listen(Duration::from_millis(1)).await;
        if i >= frames - 50 {
            heard.extend(samples);
        }
    }
    heard
}

#[tokio::test]
async fn a_bridged_call_is_streamed_through_a_snoop_both_ways() {
    let service = Service::start(test_settings()).await;
    // Party A's far end echoes; party B's plays 400 Hz. A and B talk in a conference.
    let a = call(&service, "echo").await;
    let b = call(&service, "play-400").await;
    let conf = conference_with(&service, &[&a, &b]).await;

    let mut client = stream(&service, &a, Enc::SlnSlin).await;
    // Set up after the upgrade: a snoop, not the call itself, goes into the service's bridge.
    eventually(Duration::from_secs(2), || async {
        let objects = leftovers(&service).await;
        objects.iter().any(|id| id.starts_with("mediastream-sn-")) && objects.len() == 3
    })
    .await;
    // The client speaks 600 Hz into A; A's far end echoes it. The client hears party B (400 Hz,
    // what A hears) and its own voice back from party A (what A says).
    let heard = talk(&mut client, Some(600.0), 3).await;
    let report = describe(&heard, &[400.0, 600.0, 1000.0]);
    println!("snoop on a bridged call: {report}");
    assert!(tone_share(&heard, 400.0) > 0.15, "hears party B: {report}");
    assert!(
        tone_share(&heard, 600.0) > 0.15,
        "party A heard the client: {report}"
    );

    client.close().await;
    eventually(Duration::from_secs(1), || async {
        leftovers(&service).await.is_empty()
    })
    .await;
    // The call is still in its conference.
    let (_, view) = service.get(&format!("/v1.0/conferences/{conf}")).await;
    assert_eq!(view["call_ids"].as_array().map(Vec::len), Some(2), "{view}");
    let ari = ari().await;
    hangup(&ari, &a).await;
    hangup(&ari, &b).await;
    service.delete(&format!("/v1.0/conferences/{conf}")).await;
    service.stop().await;
}

#[tokio::test]
async fn conference_streams_hear_members_and_each_other() {
    let service = Service::start(test_settings()).await;
    let member = call(&service, "tone").await;
    let conf = conference_with(&service, &[&member]).await;

    let path = format!("/v1.0/conferences/{conf}");
    let token = format!("token={API_KEY}");
    let mut a = open(service.addr, &path, Enc::RtpSlin, &token)
        .await
        .expect("a opens");
    let mut b = open(service.addr, &path, Enc::SlnUlaw, &token)
        .await
        .expect("b opens");
    let (_, view) = service.get(&path).await;
    assert_eq!(
        view["stream_ids"].as_array().map(Vec::len),
        Some(2),
        "{view}"
    );
    assert_eq!(
        view["call_ids"],
        serde_json::json!([member]),
        "streams are not calls"
    );

    // A speaks 600 Hz; B hears the member's 1000 Hz and A.
    let (heard_b, ()) = tokio::join!(talk(&mut b, None, 3), async {
        talk(&mut a, Some(600.0), 3).await;
    });
    let report = describe(&heard_b, &[1000.0, 600.0, 400.0]);
    println!("conference stream B: {report}");
    assert!(
        tone_share(&heard_b, 1000.0) > 0.15,
        "B hears the member: {report}"
    );
    assert!(
        tone_share(&heard_b, 600.0) > 0.15,
        "B hears stream A: {report}"
    );

    // Destroying the conference ends both streams with 1000.
    let (status, _) = service.delete(&path).await;
    assert_eq!(status, 204);
    for client in [&mut a, &mut b] {
        let close = client.closed(Duration::from_secs(1)).await.expect("closed");
        assert_eq!(close.0, 1000);
    }
    eventually(Duration::from_secs(1), || async {
        leftovers(&service).await.is_empty()
    })
    .await;
    hangup(&ari().await, &member).await;
    service.stop().await;
}

#[tokio::test]
async fn a_stream_follows_its_call_into_and_out_of_a_conference() {
    let service = Service::start(test_settings()).await;
    let caller = call(&service, "tone").await;
    let other = call(&service, "play-400").await;
    let conf = conference_with(&service, &[&other]).await;

    // Idle: the stream hears the caller only.
    let mut client = stream(&service, &caller, Enc::SlnSlin).await;
    let first = talk(&mut client, None, 2).await;
    let report = describe(&first, &[1000.0, 400.0]);
    println!("idle: {report}");
    assert!(tone_share(&first, 1000.0) > 0.8, "{report}");

    // Into the conference: now through a snoop, hearing the caller and the conference.
    let (status, body) = service
        .post(&format!("/v1.0/conferences/{conf}/calls/{caller}"), None)
        .await;
    assert_eq!(status, 204, "{body}");
    eventually(Duration::from_secs(3), || async {
        leftovers(&service)
            .await
            .iter()
            .any(|id| id.starts_with("mediastream-sn-"))
    })
    .await;
    let bridged = talk(&mut client, None, 2).await;
    let report = describe(&bridged, &[1000.0, 400.0]);
    println!("bridged: {report}");
    assert!(tone_share(&bridged, 1000.0) > 0.15, "{report}");
    assert!(tone_share(&bridged, 400.0) > 0.15, "{report}");

    // Out again: back to a direct bridge, the caller only, same client connection.
    let (status, body) = service
        .delete(&format!("/v1.0/conferences/{conf}/calls/{caller}"))
        .await;
    assert_eq!(status, 204, "{body}");
    eventually(Duration::from_secs(3), || async {
        let objects = leftovers(&service).await;
        !objects.iter().any(|id| id.starts_with("mediastream-sn-")) && objects.len() == 2
    })
    .await;
    let back = talk(&mut client, None, 2).await;
    let report = describe(&back, &[1000.0, 400.0]);
    println!("idle again: {report}");
    assert!(tone_share(&back, 1000.0) > 0.8, "{report}");
    assert!(client.close.is_none(), "the client stayed connected");

    client.close().await;
    eventually(Duration::from_secs(1), || async {
        leftovers(&service).await.is_empty()
    })
    .await;
    let ari = ari().await;
    hangup(&ari, &caller).await;
    hangup(&ari, &other).await;
    service.delete(&format!("/v1.0/conferences/{conf}")).await;
    service.stop().await;
}

#[tokio::test]
async fn a_media_channel_taken_out_of_its_bridge_is_put_back() {
    let service = Service::start(test_settings()).await;
    let id = call(&service, "tone").await;
    let mut client = stream(&service, &id, Enc::SlnSlin).await;
    eventually(Duration::from_secs(2), || async {
        leftovers(&service).await.len() == 2
    })
    .await;
    let objects = leftovers(&service).await;
    let em = objects
        .iter()
        .find(|o| o.starts_with("mediastream-em-"))
        .expect("em")
        .clone();
    let bridge = objects
        .iter()
        .find(|o| o.starts_with("mediastream-br-"))
        .expect("bridge")
        .clone();
    talk(&mut client, None, 1).await;

    // Someone else takes the stream's channel out of its bridge.
    let ari = ari().await;
    ari.remove_channel(&bridge, &em).await.expect("removed");
    eventually(Duration::from_secs(2), || async {
        ari.bridge(&bridge)
            .await
            .is_ok_and(|b| b.channels.contains(&em))
    })
    .await;
    let heard = talk(&mut client, None, 1).await;
    let report = describe(&heard, &[1000.0]);
    println!("after being put back: {report}");
    assert!(tone_share(&heard, 1000.0) > 0.8, "{report}");
    assert!(client.close.is_none(), "the client stayed connected");
    client.close().await;
    hangup(&ari, &id).await;
    service.stop().await;
}
