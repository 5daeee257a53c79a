//! Timing report: how evenly frames reach the Asterisk-facing socket while a client sends in
//! bursts. Printed, not asserted (shared machines are noisy); what is asserted is that every
//! frame the client sent arrived, in order, and nothing else but silence.
//!
//! The stream engine runs on real sockets; a UDP socket of the test stands where Asterisk
//! would, so each arrival is timed where Asterisk would see it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ari_mediastream::domain::{CallId, Encapsulation, Format, Resource};
use ari_mediastream::media::transcode::SampleFormat;
use ari_mediastream::relay::Inbound;
use ari_mediastream::relay::rtp_leg::RtpLeg;
use ari_mediastream::relay::stream::{self, Channels, Leg, StreamSpec};
use ari_mediastream::telemetry::Metrics;
use bytes::Bytes;
use futures::StreamExt;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test]
async fn frames_reach_asterisk_every_20_ms_while_the_client_sends_in_bursts() {
    let asterisk = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let relay_socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let leg = Leg::Rtp(RtpLeg::new(
        relay_socket,
        asterisk.local_addr().expect("addr"),
        10,
    ));
    let spec = StreamSpec {
        stream_id: uuid::Uuid::new_v4(),
        resource: Resource::Call(CallId::parse("timing").expect("id")),
        encapsulation: Encapsulation::Sln,
        format: Format::Slin,
        events: false,
        leg_format: SampleFormat::SlinBe,
        jitter_ms: 40,
        max_queue_ms: 10_000,
        expires_at: None,
    };
    let (client_tx, client_rx) = futures::channel::mpsc::unbounded::<Inbound>();
    let (sink, mut sink_rx) = futures::channel::mpsc::unbounded();
    let (_signals_tx, signals) = tokio::sync::mpsc::unbounded_channel();
    let (actions, _actions_rx) = tokio::sync::mpsc::channel(4);
    let cancel = CancellationToken::new();
    let metrics = Arc::new(Metrics::new());
    let engine = tokio::spawn(stream::run(
        spec,
        leg,
        client_rx,
        sink,
        Channels { signals, actions },
        cancel.clone(),
        metrics.clone(),
    ));
    tokio::spawn(async move { while sink_rx.next().await.is_some() {} });

    // Five bursts of one second of audio each, one a second; every frame numbered in its first
    // sample so that order and completeness can be checked.
    const BURSTS: u16 = 5;
    let sender = tokio::spawn(async move {
        for burst in 0..BURSTS {
            let mut audio = Vec::with_capacity(50 * 320);
            for frame in 0..50u16 {
                let number = burst * 50 + frame + 1;
                for _ in 0..160 {
                    audio.extend_from_slice(&number.to_le_bytes());
                }
            }
            // Cut into odd-sized messages, as a TTS engine might deliver.
            for chunk in audio.chunks(998) {
                client_tx
                    .unbounded_send(Inbound::Binary(Bytes::copy_from_slice(chunk)))
                    .expect("send");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        client_tx
    });

    let mut arrivals = Vec::new();
    let mut numbers = Vec::new();
    let mut buf = [0u8; 2048];
    let end = Instant::now() + Duration::from_millis(u64::from(BURSTS) * 1000 + 1500);
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        let Ok(Ok(len)) = tokio::time::timeout(left, asterisk.recv(&mut buf)).await else {
            break;
        };
        arrivals.push(Instant::now());
        let payload = &buf[12..len];
        assert_eq!(payload.len(), 320, "20 ms of big-endian slin");
        let number = u16::from_be_bytes([payload[0], payload[1]]);
        if number != 0 {
            numbers.push(number);
        }
    }
    cancel.cancel();
    engine.await.expect("engine");
    drop(sender);

    let expected: Vec<u16> = (1..=BURSTS * 50).collect();
    assert_eq!(numbers, expected, "every client frame, once, in order");

    let mut intervals: Vec<f64> = arrivals
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).as_secs_f64() * 1000.0)
        .collect();
    let span = arrivals
        .last()
        .expect("frames")
        .duration_since(arrivals[0])
        .as_secs_f64();
    intervals.sort_by(f64::total_cmp);
    let mean = intervals.iter().sum::<f64>() / intervals.len() as f64;
    println!(
        "timing report: {} frames to Asterisk in {:.3} s ({:.2} frames/s; {} audio, {} silence)",
        arrivals.len(),
        span,
        (arrivals.len() - 1) as f64 / span,
        numbers.len(),
        arrivals.len() - numbers.len()
    );
    println!(
        "  interval ms: min {:.3}, p1 {:.3}, p50 {:.3}, mean {:.3}, p99 {:.3}, max {:.3}",
        intervals[0],
        percentile(&intervals, 0.01),
        percentile(&intervals, 0.5),
        mean,
        percentile(&intervals, 0.99),
        intervals[intervals.len() - 1]
    );
    // Absolute deadlines: the n-th frame leaves at start + n * 20 ms, whatever the jitter.
    let drift_ms = (span - (arrivals.len() - 1) as f64 * 0.020) * 1000.0;
    println!("  drift over the run: {drift_ms:+.3} ms");
}
