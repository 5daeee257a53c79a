//! Every input is bounded (SPEC §11): connections that never finish their request, or
//! dribble it, hold a bounded number of places for a bounded time (408), past which new ones
//! are refused (429); a head, a query string or a body over its limit gets 431, 414 or 413 as
//! a JSON error; and nothing else is disturbed meanwhile.

mod common;

use std::time::{Duration, Instant};

use common::client::Enc;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PENDING: usize = 8;
const REQUEST_TIMEOUT: Duration = Duration::from_millis(1000);

fn settings() -> ari_mediastream::config::Settings {
    let mut s = test_settings();
    s.http.max_pending_upgrades = PENDING;
    s.http.request_timeout = REQUEST_TIMEOUT;
    s
}

/// Everything the server answers on `tcp` until it closes, within `limit`.
async fn answer(tcp: &mut TcpStream, limit: Duration) -> String {
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(limit, tcp.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

fn status_and_reason(answer: &str) -> (u16, String) {
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    (
        status,
        json["error"]["reason"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test]
async fn half_open_and_dribbling_connections_are_bounded_and_timed_out() {
    let service = Service::start(settings()).await;
    let call = call(&service, "tone").await;
    let mut running = stream(&service, &call, Enc::SlnSlin).await;
    running.listen(Duration::from_millis(200)).await;

    // Connections that say nothing take every place...
    let opened = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..PENDING {
        idle.push(TcpStream::connect(service.addr).await.expect("connect"));
    }
    // ...so one more is refused at once, with a JSON error: the server accepts connections in
    // the order they were made, and each takes its place as it is accepted.
    let mut extra = TcpStream::connect(service.addr).await.expect("connect");
    extra
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let refused = answer(&mut extra, Duration::from_secs(1)).await;
    println!(
        "one connection past {PENDING} pending: {:?}",
        status_and_reason(&refused)
    );
    assert_eq!(status_and_reason(&refused), (429, "LIMIT_EXCEEDED".into()));

    // The stream already running is not disturbed (what arrived meanwhile is read first),
    // judged over three seconds with the tolerance a busy machine needs, while the idle ones
    // are answered 408 and closed once their time is up.
    running.listen(Duration::from_millis(200)).await;
    let answered = futures::future::join_all(idle.iter_mut().map(|tcp| async {
        let answer = answer(tcp, Duration::from_secs(3)).await;
        (answer, opened.elapsed())
    }));
    let ((_, frames), answers) = tokio::join!(running.listen(Duration::from_secs(3)), answered);
    assert!((135..=165).contains(&frames), "{frames} frames in 3 s");
    let closed = answers.iter().map(|(_, at)| *at).max().unwrap_or_default();
    println!("idle connections answered {:?} after opening", closed);
    for (a, _) in &answers {
        assert_eq!(status_and_reason(a), (408, "REQUEST_TIMEOUT".into()), "{a}");
    }
    assert!(
        closed >= REQUEST_TIMEOUT && closed < REQUEST_TIMEOUT * 3,
        "{closed:?}"
    );

    // A client that dribbles its request a byte at a time is cut off at the same time.
    let mut dribbler = TcpStream::connect(service.addr).await.expect("connect");
    let started = Instant::now();
    let request =
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    for byte in request {
        if dribbler.write_all(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if started.elapsed() > REQUEST_TIMEOUT * 2 {
            break;
        }
    }
    let dribbled = answer(&mut dribbler, Duration::from_secs(2)).await;
    println!(
        "dribbling client: {:?} after {:?}",
        status_and_reason(&dribbled),
        started.elapsed()
    );
    assert_eq!(status_and_reason(&dribbled).0, 408);

    // And the service takes requests as before.
    assert_eq!(service.get("/health").await.0, 200);
    running.listen(Duration::from_millis(200)).await;
    let (_, frames) = running.listen(Duration::from_secs(1)).await;
    assert!(frames >= 45, "{frames}");
    running.close().await;
    finish(service, &[&call]).await;
}

#[tokio::test]
async fn oversized_heads_queries_and_bodies_are_refused_with_json() {
    let service = Service::start(settings()).await;

    // A head over http.max_header_bytes (16 KiB).
    let mut tcp = TcpStream::connect(service.addr).await.expect("connect");
    let big = "a".repeat(20 * 1024);
    let request = format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let _ = tcp.write_all(request.as_bytes()).await;
    let head = answer(&mut tcp, Duration::from_secs(2)).await;
    println!("20 KiB header: {:?}", status_and_reason(&head));
    assert_eq!(status_and_reason(&head), (431, "HEADERS_TOO_LARGE".into()));

    // A query string over http.max_query_bytes (4 KiB).
    let (status, body) = service
        .get(&format!("/v1.0/calls?x={}", "q".repeat(5000)))
        .await;
    println!("5,000 B query: {status} {}", reason(&body));
    assert_eq!((status, reason(&body)), (414, "QUERY_TOO_LONG"));

    // A body over http.max_body_bytes (64 KiB), with a length and chunked.
    let huge = serde_json::json!({"external_host": "h:1", "pad": "p".repeat(100 * 1024)});
    let (status, body) = service
        .post("/v1.0/calls/any/external_media", Some(huge))
        .await;
    println!("100 KiB body: {status} {}", reason(&body));
    assert_eq!((status, reason(&body)), (413, "BODY_TOO_LARGE"));
    let mut tcp = TcpStream::connect(service.addr).await.expect("connect");
    let head = format!(
        "POST /v1.0/calls/any/actions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    for _ in 0..20 {
        let chunk = format!("2000\r\n{}\r\n", " ".repeat(8192));
        if tcp.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = tcp.write_all(b"0\r\n\r\n").await;
    let chunked = answer(&mut tcp, Duration::from_secs(2)).await;
    println!("160 KiB chunked body: {:?}", status_and_reason(&chunked));
    assert_eq!(status_and_reason(&chunked), (413, "BODY_TOO_LARGE".into()));

    assert_eq!(service.get("/health").await.0, 200);
    service.stop().await;
}
