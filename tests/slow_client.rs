//! A client that stops reading. The other streams on the same call keep their 50 frames a
//! second; what the service holds for the stalled one is bounded (kernel: the socket's send
//! buffer, `CLIENT_SNDBUF` which Linux doubles; user space: the stream's ring of
//! `CLIENT_RING_FRAMES` messages); after `CLIENT_STALL` of dropping its audio unread, the stream
//! is closed (1008) and counted as `client_stalled`.

mod common;

use std::time::{Duration, Instant};

use ari_mediastream::relay::client::CLIENT_SNDBUF;
use ari_mediastream::relay::stream::{CLIENT_RING_FRAMES, CLIENT_STALL};
use common::client::Enc;
use common::*;

/// Bytes queued in the kernel for sending on the TCP connection `local` → `remote` (the
/// `tx_queue` column of /proc/net/tcp).
fn tx_queue(local: std::net::SocketAddr, remote: std::net::SocketAddr) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let hex = |a: std::net::SocketAddr| {
        let std::net::IpAddr::V4(ip) = a.ip() else {
            return String::new();
        };
        format!("{:08X}:{:04X}", u32::from_le_bytes(ip.octets()), a.port())
    };
    let (want_local, want_remote) = (hex(local), hex(remote));
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&want_local.as_str())
            && fields.get(2) == Some(&want_remote.as_str()))
        .then(|| u64::from_str_radix(fields[4].split(':').next()?, 16).ok())
        .flatten()
    })
}

#[tokio::test]
async fn a_client_that_stops_reading_is_bounded_then_closed_and_harms_no_other() {
    let service = Service::start(test_settings()).await;
    let call = call(&service, "tone").await;
    let mut reader = stream(&service, &call, Enc::SlnSlin).await;

    // The stalled client: 48 kHz audio (96 kB/s) fills buffers fast, and a small receive
    // buffer of its own keeps what its kernel takes small.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let tcp = socket.connect(service.addr).await.expect("connect");
    let client_addr = tcp.local_addr().expect("addr");
    let url = format!(
        "ws://{}/v1.0/calls/{call}/media_stream?{}&token={API_KEY}",
        service.addr,
        Enc::SlnSlin48.query()
    );
    let (stalled, _) = tokio_tungstenite::client_async(url, tcp)
        .await
        .expect("upgrade");
    let stopped_reading = Instant::now();

    // Meanwhile the other stream keeps its rate, and the stalled one's backlog stays bounded.
    let mut most_queued = 0;
    let mut rates = Vec::new();
    reader.listen(Duration::from_millis(200)).await;
    let ended_at = loop {
        let (_, frames) = reader.listen(Duration::from_secs(1)).await;
        rates.push(frames);
        if let Some(queued) = tx_queue(service.addr, client_addr) {
            most_queued = most_queued.max(queued);
        }
        let (_, list) = service.get("/v1.0/media_streams").await;
        if list["result"].as_array().map(Vec::len) == Some(1) {
            break stopped_reading.elapsed();
        }
        assert!(
            stopped_reading.elapsed() < CLIENT_STALL + Duration::from_secs(10),
            "still open"
        );
    };
    let kernel_bound = 2 * CLIENT_SNDBUF as u64;
    println!(
        "stalled client: closed {ended_at:?} after it stopped reading; most bytes queued in the \
         service's kernel {most_queued} (bound {kernel_bound}); user space at most \
         {CLIENT_RING_FRAMES} messages of 1,920 B; the other stream's frames each second: \
         {rates:?}"
    );
    assert!(
        ended_at >= CLIENT_STALL,
        "not before the stall time: {ended_at:?}"
    );
    assert!(
        most_queued > 0 && most_queued <= kernel_bound,
        "{most_queued}"
    );
    // Judged over the whole time, as a busy machine's scheduler allows: the other stream keeps
    // 50 frames a second, and no second of it stalls.
    let mean = rates.iter().sum::<usize>() as f64 / rates.len() as f64;
    assert!(
        (47.0..=53.0).contains(&mean),
        "the other stream keeps 50 a second: {mean:.1} on average, {rates:?}"
    );
    assert!(
        rates.iter().all(|&f| f >= 35),
        "no second of the other stream stalls: {rates:?}"
    );
    assert_eq!(
        service
            .metric("mediastream_streams_ended_total{reason=\"client_stalled\"}")
            .await,
        1.0
    );

    // What the stalled client finds when it reads again: the end, 1008 if the close frame got
    // through, else the connection closed.
    let mut stalled = stalled;
    let close = tokio::time::timeout(Duration::from_secs(5), async {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        while let Some(Ok(message)) = stalled.next().await {
            if let Message::Close(frame) = message {
                return frame.map(|f| (u16::from(f.code), f.reason.to_string()));
            }
        }
        None
    })
    .await
    .expect("the connection ends");
    println!("the stalled client reads again and finds {close:?}");
    assert!(matches!(close, Some((1008, _)) | None), "{close:?}");
    reader.close().await;
    finish(service, &[&call]).await;
}
