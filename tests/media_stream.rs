//! Media streams against a real Asterisk: what the client hears and what the call hears, by
//! frequency, in every encapsulation.

mod common;

use std::time::Duration;

use ari_mediastream::config::AsteriskTransport;
use common::audio::{describe, rms, tone, tone_share};
use common::client::{Enc, MediaClient};
use common::*;

#[tokio::test]
async fn every_encapsulation_hears_the_call_tone_over_rtp() {
    hears_the_call_tone(AsteriskTransport::Rtp).await;
}

#[tokio::test]
async fn every_encapsulation_hears_the_call_tone_over_audiosocket() {
    hears_the_call_tone(AsteriskTransport::Audiosocket).await;
}

async fn hears_the_call_tone(transport: AsteriskTransport) {
    let service = Service::start(with_transport(transport)).await;
    for enc in Enc::ALL {
        let id = call(&service, "tone").await;
        let mut client = stream(&service, &id, enc).await;
        // Playtones starts about half a second late: skip the first second.
        client.listen(Duration::from_secs(1)).await;
        let (samples, messages) = client.listen(Duration::from_secs(2)).await;
        let report = describe(&samples, &[1000.0, 600.0, 400.0]);
        println!("{transport:?} {enc:?}: {messages} messages in 2 s; {report}");
        assert!(
            (90..=110).contains(&messages),
            "{enc:?}: ~50 messages a second, got {messages} in 2 s"
        );
        assert!(rms(&samples) > 500.0, "{enc:?}: {report}");
        assert!(tone_share(&samples, 1000.0) > 0.8, "{enc:?}: {report}");
        client.close().await;
        hangup(&ari().await, &id).await;
    }
    eventually(Duration::from_secs(2), || async {
        leftovers(&service).await.is_empty()
    })
    .await;
    service.stop().await;
}

/// Sends `seconds` of `freq` in real time, 20 ms a message (for `sln`, in odd-sized chunks),
/// while listening; returns what was heard in the second half.
async fn talk_and_listen(client: &mut MediaClient, freq: f64, seconds: u32) -> Vec<i16> {
    let frames = seconds as usize * 50;
    let mut heard = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    for i in 0..frames {
        ticker.tick().await;
        let samples = tone(freq, 160, i * 160, 8000.0);
        let bytes = client.encode_frame(&samples);
        if matches!(client.enc, Enc::SlnSlin | Enc::SlnUlaw) {
            // Re-cut into odd-sized chunks (whole samples for slin): the service re-chunks.
            pending.extend(bytes);
            let unit = if client.enc == Enc::SlnSlin { 2 } else { 1 };
            let chunk = 97 * unit;
            while pending.len() >= chunk {
                let rest = pending.split_off(chunk);
                let piece = std::mem::replace(&mut pending, rest);
                client.send_binary(piece).await;
            }
        } else {
            client.send_binary(bytes).await;
        }
        let (samples, _) = client.listen(Duration::from_millis(1)).await;
        if i >= frames / 2 {
            heard.extend(samples);
        }
    }
    heard
}

#[tokio::test]
async fn every_encapsulation_is_heard_by_the_call_over_rtp() {
    is_heard_by_the_call(AsteriskTransport::Rtp).await;
}

#[tokio::test]
async fn every_encapsulation_is_heard_by_the_call_over_audiosocket() {
    is_heard_by_the_call(AsteriskTransport::Audiosocket).await;
}

async fn is_heard_by_the_call(transport: AsteriskTransport) {
    let service = Service::start(with_transport(transport)).await;
    for enc in Enc::ALL {
        let id = call(&service, "echo").await;
        let mut client = stream(&service, &id, enc).await;
        let heard = talk_and_listen(&mut client, 600.0, 3).await;
        let report = describe(&heard, &[600.0, 1000.0, 400.0]);
        println!("{transport:?} {enc:?} echo: {report}");
        assert!(rms(&heard) > 500.0, "{enc:?}: {report}");
        assert!(tone_share(&heard, 600.0) > 0.8, "{enc:?}: {report}");
        client.close().await;
        hangup(&ari().await, &id).await;
    }
    service.stop().await;
}

#[tokio::test]
async fn client_rtp_out_of_order_is_played_in_sequence_order() {
    let service = Service::start(test_settings()).await;
    let id = call(&service, "echo").await;
    let mut client = stream(&service, &id, Enc::RtpSlin).await;
    client.listen(Duration::from_millis(300)).await;
    // 120 frames in pairs of two tones (600 Hz twice, 1400 Hz twice, ...), numbered in that
    // order; each group of four sent with its middle two swapped, one packet every 20 ms.
    let tone_of = |k: usize| {
        if (k / 2).is_multiple_of(2) {
            600.0
        } else {
            1400.0
        }
    };
    let packets: Vec<Vec<u8>> = (0..120)
        .map(|k| client.encode_frame(&tone(tone_of(k), 160, k * 160, 8000.0)))
        .collect();
    let order: Vec<usize> = (0..120)
        .map(|k| match k % 4 {
            1 => k + 1,
            2 => k - 1,
            _ => k,
        })
        .collect();
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    let mut heard = Vec::new();
    for &k in &order {
        pace.tick().await;
        client.send_binary(packets[k].clone()).await;
        heard.extend(client.listen(Duration::from_millis(1)).await.0);
    }
    heard.extend(client.listen(Duration::from_millis(600)).await.0);
    // Name the tone of every 10 ms heard back (whole periods of both tones): Asterisk's
    // frames need not start where the client's did, so a window astride two frames is mixed.
    let names: String = heard
        .chunks_exact(80)
        .map(|window| {
            if tone_share(window, 600.0) > 0.8 {
                'a'
            } else if tone_share(window, 1400.0) > 0.8 {
                'b'
            } else {
                '.'
            }
        })
        .collect();
    println!("10 ms windows heard back: {names}");
    // Runs of one tone: 40 ms (three or four windows) when the packets were put back in
    // order, 20 ms (two at most) had they been played as they came.
    let mut runs: Vec<usize> = Vec::new();
    let mut last = None;
    for c in names.chars().filter(|&c| c != '.') {
        if Some(c) == last {
            if let Some(n) = runs.last_mut() {
                *n += 1;
            }
        } else {
            runs.push(1);
            last = Some(c);
        }
    }
    let inner = &runs[1.min(runs.len())..runs.len().saturating_sub(1)];
    assert!(inner.len() >= 50, "most of the 60 pairs came back: {names}");
    let whole = inner.iter().filter(|&&n| (3..=4).contains(&n)).count();
    assert!(
        whole * 10 >= inner.len() * 9,
        "{whole} of {} runs are the 40 ms sent: {names}",
        inner.len()
    );
    client.close().await;
    hangup(&ari().await, &id).await;
    service.stop().await;
}
