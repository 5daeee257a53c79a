//! Wideband (SPEC §9.1) against a real Asterisk: `format=slin16` carries 16 kHz end to end.
//! The proof is a 5000 Hz tone, which cannot survive 8 kHz: the dialplan's `tone16` plays it
//! from a 16 kHz file, whole on a call that carries `slin16` and gone on one that carries μ-law.

mod common;

use std::time::Duration;

use common::audio::{describe, rms, tone_at, tone_share_at};
use common::client::{Enc, MediaClient};
use common::*;

const WIDE: f64 = 5000.0;

/// What a client hears on a 16 kHz stream, after Playback's start.
async fn hear(client: &mut MediaClient) -> (Vec<i16>, usize) {
    client.listen(Duration::from_millis(600)).await;
    client.listen(Duration::from_secs(2)).await
}

#[tokio::test]
async fn every_encapsulation_hears_a_wideband_call_whole() {
    let service = Service::start(test_settings()).await;
    for enc in Enc::WIDEBAND {
        let id = call_with(&service, "tone16", Some("slin16")).await;
        let mut client = stream_with_events(&service, &id, enc).await;
        let (samples, messages) = hear(&mut client).await;
        let report = describe_wide(&samples);
        println!("{enc:?}: {messages} messages in 2 s; {report}");
        let started = client
            .texts
            .iter()
            .find(|t| t["type"] == "started")
            .expect("a started event");
        assert_eq!(started["format"], "slin16", "{started}");
        assert_eq!(started["sample_rate"], 16_000, "{started}");
        if enc == Enc::RtpSlin16 {
            assert_eq!(started["payload_type"], 97, "{started}");
        } else {
            assert!(started.get("payload_type").is_none(), "{started}");
        }
        assert!(
            (90..=110).contains(&messages),
            "{enc:?}: ~50 messages a second, got {messages} in 2 s"
        );
        assert!(rms(&samples) > 1000.0, "{enc:?}: {report}");
        assert!(
            tone_share_at(&samples, 16_000, WIDE) > 0.9,
            "{enc:?}: {report}"
        );
        client.close().await;
        hangup(&ari().await, &id).await;
    }
    finish(service, &[]).await;
}

/// The control: the same file on a call that carries μ-law reaches a wideband stream with
/// nothing of the tone left, so the test above cannot pass on an 8 kHz path.
#[tokio::test]
async fn a_narrowband_call_has_no_5000_hz_left() {
    let service = Service::start(test_settings()).await;
    let id = call_with(&service, "tone16", Some("ulaw")).await;
    let mut client = stream(&service, &id, Enc::SlnSlin16).await;
    let (samples, messages) = hear(&mut client).await;
    let report = describe_wide(&samples);
    println!("ulaw call, slin16 stream: {messages} messages; {report}");
    assert!((90..=110).contains(&messages), "{messages}");
    assert!(
        rms(&samples) < 100.0 || tone_share_at(&samples, 16_000, WIDE) < 0.05,
        "{report}"
    );
    client.close().await;
    hangup(&ari().await, &id).await;
    service.stop().await;
}

/// The client's 16 kHz audio reaches the call and comes back through `Echo()` whole.
#[tokio::test]
async fn wideband_audio_comes_back_through_echo_in_every_encapsulation() {
    let service = Service::start(test_settings()).await;
    for enc in Enc::WIDEBAND {
        let id = call_with(&service, "echo", Some("slin16")).await;
        let mut client = stream(&service, &id, enc).await;
        let heard = talk_and_listen(&mut client, WIDE, 3).await;
        let report = describe_wide(&heard);
        println!("{enc:?} echo: {report}");
        assert!(rms(&heard) > 1000.0, "{enc:?}: {report}");
        assert!(
            tone_share_at(&heard, 16_000, WIDE) > 0.8,
            "{enc:?}: {report}"
        );
        client.close().await;
        hangup(&ari().await, &id).await;
    }
    finish(service, &[]).await;
}

/// Beyond SPEC §9.1: a call carrying 48 kHz is heard at 48 kHz (a 15000 Hz tone), and the
/// client's 48 kHz audio comes back through `Echo()`, in every encapsulation.
#[tokio::test]
async fn a_48_khz_call_is_heard_and_answered_at_48_khz() {
    const FULL: f64 = 15_000.0;
    let service = Service::start(test_settings()).await;
    for enc in Enc::FULLBAND {
        let id = call_with(&service, "tone48", Some("slin48")).await;
        let mut client = stream(&service, &id, enc).await;
        let (samples, messages) = hear(&mut client).await;
        let share = tone_share_at(&samples, 48_000, FULL);
        println!(
            "{enc:?}: {messages} messages in 2 s, rms {:.0}, share 15000 Hz {share:.3}",
            rms(&samples)
        );
        assert!((90..=110).contains(&messages), "{enc:?}: {messages}");
        assert!(share > 0.9, "{enc:?}: {share}");
        client.close().await;
        hangup(&ari().await, &id).await;

        let id = call_with(&service, "echo", Some("slin48")).await;
        let mut client = stream(&service, &id, enc).await;
        let heard = talk_and_listen(&mut client, FULL, 3).await;
        let share = tone_share_at(&heard, 48_000, FULL);
        println!(
            "{enc:?} echo: rms {:.0}, share 15000 Hz {share:.3}",
            rms(&heard)
        );
        assert!(rms(&heard) > 1000.0 && share > 0.8, "{enc:?}: {share}");
        client.close().await;
        hangup(&ari().await, &id).await;
    }
    finish(service, &[]).await;
}

/// A call already bridged to another (so heard through a snoop channel) stays wideband.
#[tokio::test]
async fn a_bridged_call_is_heard_wideband_through_its_snoop() {
    let service = Service::start(test_settings()).await;
    let caller = call_with(&service, "tone16", Some("slin16")).await;
    let callee = call_with(&service, "silence", Some("slin16")).await;
    let ari = ari().await;
    let bridge = unique_id("bridge");
    ari.create_bridge(&bridge, "call to call")
        .await
        .expect("bridge");
    ari.add_channel(&bridge, &format!("{caller},{callee}"))
        .await
        .expect("add");
    let mut client = stream(&service, &caller, Enc::SlnSlin16).await;
    let (samples, messages) = hear(&mut client).await;
    let report = describe_wide(&samples);
    println!("bridged call, slin16 stream: {messages} messages; {report}");
    assert!(rms(&samples) > 500.0, "{report}");
    assert!(tone_share_at(&samples, 16_000, WIDE) > 0.8, "{report}");
    client.close().await;
    for id in [&caller, &callee] {
        hangup(&ari, id).await;
    }
    let _ = ari.destroy_bridge(&bridge).await;
    service.stop().await;
}

/// A conference of an 8 kHz and a 16 kHz member: a wideband stream hears both, the 5000 Hz of
/// the wideband member included; a narrowband stream on it hears the 1000 Hz only.
#[tokio::test]
async fn a_mixed_conference_is_heard_wideband() {
    let service = Service::start(test_settings()).await;
    let wide = call_with(&service, "tone16", Some("slin16")).await;
    let narrow = call_with(&service, "play-1000", Some("ulaw")).await;
    let conf = conference_with(&service, &[&wide, &narrow]).await;
    let mut wideband = open_conference(&service, &conf, Enc::SlnSlin16).await;
    let mut narrowband = open_conference(&service, &conf, Enc::SlnSlin).await;
    narrowband.listen(Duration::from_millis(600)).await;
    let (samples, messages) = hear(&mut wideband).await;
    let report = describe_wide(&samples);
    println!("mixed conference, slin16 stream: {messages} messages; {report}");
    let (share_wide, share_narrow) = (
        tone_share_at(&samples, 16_000, WIDE),
        tone_share_at(&samples, 16_000, 1000.0),
    );
    assert!(share_wide > 0.2 && share_narrow > 0.2, "{report}");
    assert!(share_wide + share_narrow > 0.8, "{report}");
    let (samples, _) = narrowband.listen(Duration::from_secs(1)).await;
    let report = describe(&samples, &[1000.0]);
    println!("mixed conference, slin stream: {report}");
    assert!(tone_share_at(&samples, 8000, 1000.0) > 0.8, "{report}");
    wideband.close().await;
    narrowband.close().await;
    for id in [&wide, &narrow] {
        hangup(&ari().await, id).await;
    }
    service.stop().await;
}

/// A wideband stream refuses narrowband AudioSocket frames (1007), and Twilio stays μ-law.
#[tokio::test]
async fn wideband_refusals() {
    let service = Service::start(test_settings()).await;
    let id = call_with(&service, "silence", Some("slin16")).await;
    let refused = common::client::open(
        service.addr,
        &format!("/v1.0/calls/{id}"),
        Enc::SlnSlin16,
        &format!("encapsulation=twilio&token={API_KEY}"),
    )
    .await;
    // The later `encapsulation` is the one the service reads.
    let refused = refused.err().expect("twilio with slin16 is refused");
    assert_eq!(refused.status, 400, "{}", refused.body);
    println!("twilio + slin16: {} {}", refused.status, refused.body);

    let mut client = stream(&service, &id, Enc::AudioSocket16).await;
    let mut frame = vec![0x10, 0x01, 0x40];
    frame.extend(std::iter::repeat_n(0u8, 320));
    client.send_binary(frame).await;
    let close = client.closed(Duration::from_secs(3)).await;
    println!("0x10 on a slin16 AudioSocket stream: {close:?}");
    assert_eq!(close.map(|c| c.0), Some(1007));
    finish(service, &[&id]).await;
}

async fn open_conference(service: &Service, conf: &str, enc: Enc) -> MediaClient {
    match common::client::open(
        service.addr,
        &format!("/v1.0/conferences/{conf}"),
        enc,
        &format!("token={API_KEY}"),
    )
    .await
    {
        Ok(c) => c,
        Err(r) => panic!("refused {}: {}", r.status, r.body),
    }
}

/// Sends `seconds` of `freq` at the stream's rate in real time while listening; what was
/// heard in the second half.
async fn talk_and_listen(client: &mut MediaClient, freq: f64, seconds: u32) -> Vec<i16> {
    let frames = seconds as usize * 50;
    let n = client.enc.frame_samples();
    let mut heard = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    for i in 0..frames {
        ticker.tick().await;
        let samples = tone_at(client.enc.rate(), freq, n, i * n, 8000.0);
        let bytes = client.encode_frame(&samples);
        client.send_binary(bytes).await;
        let (samples, _) = client.listen(Duration::from_millis(1)).await;
        if i >= frames / 2 {
            heard.extend(samples);
        }
    }
    heard
}

fn describe_wide(samples: &[i16]) -> String {
    format!(
        "{} samples, rms {:.0}, share 5000 Hz {:.3}, 1000 Hz {:.3}",
        samples.len(),
        rms(samples),
        tone_share_at(samples, 16_000, WIDE),
        tone_share_at(samples, 16_000, 1000.0)
    )
}
