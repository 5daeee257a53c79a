//! Flow control on a real call (SPEC §9.3): `pause`/`resume`, `status`, `xoff`/`xon` and
//! `drained`, heard through Asterisk's `Echo()`: what the client sends comes back to it, so
//! the audio it hears is what the service played into the call.

mod common;

use std::time::{Duration, Instant};

use common::audio::{rms, slin_le, tone, tone_share};
use common::client::{Enc, MediaClient};
use common::*;

/// Reads until an event of `kind` has arrived (or `limit`); the samples heard meanwhile.
async fn until_event(client: &mut MediaClient, kind: &str, limit: Duration) -> Vec<i16> {
    let deadline = Instant::now() + limit;
    let mut heard = Vec::new();
    while !client.texts.iter().any(|t| t["type"] == kind) && Instant::now() < deadline {
        heard.extend(client.listen(Duration::from_millis(20)).await.0);
    }
    assert!(
        client.texts.iter().any(|t| t["type"] == kind),
        "no {kind} event within {limit:?}: {:?}",
        client.texts
    );
    heard
}

fn event<'a>(client: &'a MediaClient, kind: &str) -> &'a serde_json::Value {
    client
        .texts
        .iter()
        .find(|t| t["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} event"))
}

#[tokio::test]
async fn pause_holds_the_queue_and_resume_plays_it_then_drained() {
    let service = Service::start(test_settings()).await;
    let id = call(&service, "echo").await;
    let mut client = stream_with_events(&service, &id, Enc::SlnSlin).await;
    client.listen(Duration::from_millis(300)).await;

    // Two seconds of 600 Hz, then a pause after half a second of it.
    client
        .send_binary(slin_le(&tone(600.0, 16_000, 0, 8000.0)))
        .await;
    client.listen(Duration::from_millis(500)).await;
    client.send_text(r#"{"type":"pause"}"#).await;
    // Echo's round trip settles, then the call hears silence: nothing is played while paused.
    client.listen(Duration::from_millis(300)).await;
    let (paused, _) = client.listen(Duration::from_millis(800)).await;
    println!("while paused: rms {:.0}", rms(&paused));
    assert!(
        rms(&paused) < 50.0,
        "silence while paused: rms {}",
        rms(&paused)
    );

    client.send_text(r#"{"type":"status"}"#).await;
    until_event(&mut client, "status", Duration::from_secs(1)).await;
    let status = event(&client, "status").clone();
    println!("status while paused: {status}");
    assert_eq!(status["paused"], true);
    let queued = status["queued_ms"].as_u64().expect("queued_ms");
    assert!(
        (1_200..=1_600).contains(&queued),
        "about 1.5 s still queued: {queued}"
    );
    assert!(status["frames_to_asterisk"].as_u64() > Some(50));
    assert!(status["frames_to_client"].as_u64() > Some(50));

    // Resume: the rest of the tone is heard, and `drained` says when it is all played.
    let resumed = Instant::now();
    client.send_text(r#"{"type":"resume"}"#).await;
    let heard = until_event(&mut client, "drained", Duration::from_secs(3)).await;
    let took = resumed.elapsed();
    println!(
        "drained {took:?} after resume; 600 Hz share {:.2}",
        tone_share(&heard, 600.0)
    );
    assert!(
        took >= Duration::from_millis(1_200),
        "the queued audio played first: {took:?}"
    );
    assert!(tone_share(&heard, 600.0) > 0.5, "the held tone is heard");
    client.close().await;
    hangup(&ari().await, &id).await;
    service.stop().await;
}

#[tokio::test]
async fn a_full_queue_says_xoff_then_xon_and_loses_nothing() {
    let mut settings = test_settings();
    settings.media.max_queue_ms = 400;
    let service = Service::start(settings).await;
    let id = call(&service, "echo").await;
    let mut client = stream_with_events(&service, &id, Enc::SlnSlin).await;
    client.listen(Duration::from_millis(300)).await;

    // 1.6 s at once, four times the queue: the service reads until the queue is full, then
    // stops reading (TCP holds the rest) and says so.
    let sent = Instant::now();
    client
        .send_binary(slin_le(&tone(600.0, 12_800, 0, 8000.0)))
        .await;
    // Everything the call sends back, from the first message on.
    let mut heard = until_event(&mut client, "xoff", Duration::from_secs(1)).await;
    let xoff = event(&client, "xoff").clone();
    let queued_ms = |event: &serde_json::Value| event["queued_ms"].as_u64().expect("queued_ms");
    assert!(queued_ms(&xoff) >= 400, "{xoff}");
    heard.extend(until_event(&mut client, "xon", Duration::from_secs(2)).await);
    let xon = event(&client, "xon").clone();
    assert!(queued_ms(&xon) < 320, "below 80 %: {xon}");
    heard.extend(until_event(&mut client, "drained", Duration::from_secs(4)).await);
    let took = sent.elapsed();
    // Echo's round trip: the last of it comes back a moment after `drained`.
    heard.extend(client.listen(Duration::from_millis(400)).await.0);
    // Nothing was dropped: each of the 80 frames sent was played, and so heard back.
    let tone_frames = heard
        .chunks(160)
        .filter(|frame| rms(frame) > 1_000.0 && tone_share(frame, 600.0) > 0.5)
        .count();
    println!("xoff {xoff}, xon {xon}, drained after {took:?}; {tone_frames} frames of tone heard");
    assert!(
        (76..=82).contains(&tone_frames),
        "80 frames of tone sent, {tone_frames} heard back"
    );
    assert!(
        took >= Duration::from_millis(1_600),
        "played at 20 ms a frame: {took:?}"
    );
    client.close().await;
    hangup(&ari().await, &id).await;
    service.stop().await;
}

#[tokio::test]
async fn status_is_answered_without_events() {
    let service = Service::start(test_settings()).await;
    let id = call(&service, "tone").await;
    let mut client = stream(&service, &id, Enc::RtpUlaw).await;
    client.listen(Duration::from_millis(500)).await;
    client.send_text(r#"{"type":"status"}"#).await;
    until_event(&mut client, "status", Duration::from_secs(1)).await;
    let status = event(&client, "status");
    assert_eq!(status["paused"], false);
    assert!(status["frames_to_client"].as_u64() >= Some(20), "{status}");
    assert_eq!(client.texts.len(), 1, "no other event: {:?}", client.texts);
    client.close().await;
    hangup(&ari().await, &id).await;
    service.stop().await;
}
