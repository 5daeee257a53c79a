//! Timing report: how evenly frames reach the Asterisk-facing socket while a client sends in
//! bursts. Printed, not asserted (shared machines are noisy); what is asserted is that every
//! frame the client sent arrived, in order, and nothing else but silence.
//!
//! A media worker runs on real sockets: a real WebSocket client over loopback on one side, a
//! UDP socket of the test where Asterisk would be on the other, so each arrival is timed where
//! Asterisk would see it. No Asterisk is needed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ari_mediastream::domain::{CallId, Encapsulation, Format, Resource};
use ari_mediastream::media::transcode::SampleFormat;
use ari_mediastream::relay::client::ClientConn;
use ari_mediastream::relay::stream::{Channels, StreamSpec};
use ari_mediastream::relay::worker::{WorkerStream, Workers};
use ari_mediastream::telemetry::Metrics;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The server's half of a WebSocket handshake, by hand: the service's own upgrade lives in its
/// HTTP layer, and this test has none.
async fn accept_websocket(listener: &TcpListener) -> ClientConn {
    let (mut stream, _) = listener.accept().await.expect("accept");
    let mut request = Vec::new();
    while !request.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.expect("request");
        request.push(byte[0]);
    }
    let request = String::from_utf8(request).expect("ascii");
    let key = request
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_owned())
        })
        .expect("a WebSocket key");
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await.expect("101");
    ClientConn::new(stream, Bytes::new())
}

#[tokio::test]
async fn frames_reach_asterisk_every_20_ms_while_the_client_sends_in_bursts() {
    let asterisk = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let probe = UdpSocket::bind("127.0.0.1:0").await.expect("probe");
    let port = probe.local_addr().expect("addr").port();
    drop(probe);
    let cancel = CancellationToken::new();
    let metrics = Arc::new(Metrics::new());
    let workers = Workers::start(
        1,
        "127.0.0.1".parse().expect("ip"),
        port..=port,
        cancel.clone(),
        metrics.clone(),
    )
    .expect("a media worker");

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("listen");
    let url = format!("ws://{}/", listener.local_addr().expect("addr"));
    let (connected, client) = tokio::join!(
        tokio_tungstenite::connect_async(url),
        accept_websocket(&listener)
    );
    let (mut client_tx, mut client_rx) = connected.expect("client").0.split();
    tokio::spawn(async move { while client_rx.next().await.is_some() {} });

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
        parameters: Default::default(),
        account_sid: "AC1".into(),
    };
    let (_signals_tx, signals) = tokio::sync::mpsc::unbounded_channel();
    let (actions, _actions_rx) = tokio::sync::mpsc::channel(4);
    let stream = WorkerStream {
        spec,
        peer: asterisk.local_addr().expect("addr"),
        leg_payload_type: 10,
        client,
        channels: Channels { signals, actions },
    };
    let engine = tokio::spawn(async move {
        let reason = workers.run(0, stream).await;
        drop(workers);
        reason
    });

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
                    .send(Message::Binary(Bytes::copy_from_slice(chunk)))
                    .await
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

    // Lateness against the stream's own grid, anchored on its earliest frame: what Asterisk,
    // which plays frames as they come, turns into jitter.
    let first = arrivals[0];
    let offsets: Vec<f64> = arrivals
        .iter()
        .enumerate()
        .map(|(k, at)| at.duration_since(first).as_secs_f64() * 1000.0 - k as f64 * 20.0)
        .collect();
    let earliest = offsets.iter().copied().fold(f64::INFINITY, f64::min);
    let mut lateness: Vec<f64> = offsets.iter().map(|o| o - earliest).collect();
    lateness.sort_by(f64::total_cmp);

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
    println!(
        "  lateness on the 20 ms grid, ms: p50 {:.3}, p99 {:.3}, max {:.3}",
        percentile(&lateness, 0.5),
        percentile(&lateness, 0.99),
        lateness[lateness.len() - 1]
    );
}
