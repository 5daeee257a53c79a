//! Ids never shape a path (STYLE 16): an id from a URL that is not one (`.`, `..`, encoded
//! slashes, NUL, too long) is refused with the contract's JSON error in every id position of
//! every route, with every method the route takes, and Asterisk is never asked for anything
//! but the one object a valid id names. Requests are written on raw TCP, so that `.` and `..`
//! reach the service as sent (an HTTP client library would resolve them first), and the
//! service talks to Asterisk through a tap that records every request line it sends.

mod common;

use std::time::Duration;

use common::tap::Tap;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An answer read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: serde_json::Value,
}

/// Sends one request exactly as written (`path` is not normalised) and reads the answer.
async fn raw(
    service: &Service,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        service.addr,
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    let mut socket = TcpStream::connect(service.addr).await.expect("connect");
    socket.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer))
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer within 10 s"))
        .expect("read");
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {path}: not HTTP: {text}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: no status: {head}"));
    let body = serde_json::from_str(body).unwrap_or_else(|_| {
        panic!("{method} {path}: {status} with a body that is not JSON: {body}")
    });
    Answer { status, body }
}

/// Ids as they are written in the path: none of them may name anything.
const HOSTILE: [&str; 13] = [
    ".",
    "..",
    "%2E%2E",
    "%2e",
    "%2e%2E",
    ".%2E",
    "..%2F..",
    "a%2Fb",
    "%00",
    "%2F",
    "%5C",
    "%252E%252E",
    "x-129",
];

fn written(id: &str) -> String {
    if id == "x-129" {
        "x".repeat(129)
    } else {
        id.to_owned()
    }
}

/// Where an id goes, and what a valid but unknown one gets there.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Call,
    Conference,
    /// A UUID: external medias and media streams.
    ExternalMedia,
    MediaStream,
}

impl Kind {
    fn unknown(self) -> (u16, &'static str) {
        match self {
            Kind::Call => (404, "CALL_NOT_FOUND"),
            Kind::Conference => (404, "CONFERENCE_NOT_FOUND"),
            Kind::ExternalMedia => (404, "EXTERNAL_MEDIA_NOT_FOUND"),
            Kind::MediaStream => (404, "MEDIA_STREAM_NOT_FOUND"),
        }
    }
}

/// Every route with an id, each method it takes, a body that would be accepted with a real
/// id, and the kind of the id at `{}`.
fn routes(conference: &str) -> Vec<(&'static str, String, &'static str, Kind)> {
    let em = r#"{"external_host": "127.0.0.1:9"}"#;
    let connect = r#"{"url": "ws://127.0.0.1:9/"}"#;
    let action = r#"{"type": "answer"}"#;
    vec![
        ("GET", "/v1.0/calls/{}".into(), "", Kind::Call),
        (
            "GET",
            "/v1.0/calls/{}/media_stream?encapsulation=sln".into(),
            "",
            Kind::Call,
        ),
        (
            "POST",
            "/v1.0/calls/{}/external_media".into(),
            em,
            Kind::Call,
        ),
        (
            "DELETE",
            "/v1.0/calls/{}/external_media".into(),
            "",
            Kind::Call,
        ),
        ("POST", "/v1.0/calls/{}/actions".into(), action, Kind::Call),
        (
            "POST",
            "/v1.0/calls/{}/media_stream_connect".into(),
            connect,
            Kind::Call,
        ),
        ("GET", "/v1.0/conferences/{}".into(), "", Kind::Conference),
        (
            "DELETE",
            "/v1.0/conferences/{}".into(),
            "",
            Kind::Conference,
        ),
        (
            "GET",
            "/v1.0/conferences/{}/media_stream?encapsulation=sln".into(),
            "",
            Kind::Conference,
        ),
        (
            "POST",
            "/v1.0/conferences/{}/external_media".into(),
            em,
            Kind::Conference,
        ),
        (
            "DELETE",
            "/v1.0/conferences/{}/external_media".into(),
            "",
            Kind::Conference,
        ),
        (
            "POST",
            "/v1.0/conferences/{}/media_stream_connect".into(),
            connect,
            Kind::Conference,
        ),
        (
            "POST",
            "/v1.0/conferences/{}/calls/call-1".into(),
            "",
            Kind::Conference,
        ),
        (
            "DELETE",
            "/v1.0/conferences/{}/calls/call-1".into(),
            "",
            Kind::Conference,
        ),
        (
            "POST",
            format!("/v1.0/conferences/{conference}/calls/{{}}"),
            "",
            Kind::Call,
        ),
        (
            "DELETE",
            format!("/v1.0/conferences/{conference}/calls/{{}}"),
            "",
            Kind::Call,
        ),
        (
            "GET",
            "/v1.0/external_medias/{}".into(),
            "",
            Kind::ExternalMedia,
        ),
        (
            "DELETE",
            "/v1.0/external_medias/{}".into(),
            "",
            Kind::ExternalMedia,
        ),
        (
            "GET",
            "/v1.0/media_streams/{}".into(),
            "",
            Kind::MediaStream,
        ),
        (
            "DELETE",
            "/v1.0/media_streams/{}".into(),
            "",
            Kind::MediaStream,
        ),
    ]
}

/// Headers of a request: the API key, JSON, and for a media stream a WebSocket upgrade.
fn headers_for(path: &str) -> Vec<(&'static str, &'static str)> {
    let mut headers = vec![
        ("Authorization", "Bearer test-api-key-0123456789"),
        ("Content-Type", "application/json"),
    ];
    if path.contains("/media_stream?") {
        headers.extend([
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]);
    }
    headers
}

fn assert_error_shape(answer: &Answer, want: (u16, &str), what: &str) {
    assert_eq!(
        (answer.status, reason(&answer.body)),
        want,
        "{what}: {}",
        answer.body
    );
    assert_eq!(answer.body["error"]["status"], want.0, "{what}");
    assert!(answer.body["error"]["message"].is_string(), "{what}");
}

#[tokio::test]
async fn no_id_reaches_another_path_in_asterisk() {
    let _ari = ari().await;
    let tap = Tap::start().await;
    let mut settings = test_settings();
    settings.ari.url = tap.url.parse().expect("tap URL");
    let service = Service::start(settings).await;
    let (status, conference) = service.post("/v1.0/conferences", None).await;
    assert_eq!(status, 201, "{conference}");
    let conference = conference["id"].as_str().expect("id").to_owned();
    // The event socket's upgrade and the start-up sweep are behind us.
    tap.take();

    let unknown_name = unique_id("unknown");
    let unknown_uuid = uuid::Uuid::new_v4().to_string();
    let mut tried = 0;
    for (method, template, body, kind) in routes(&conference) {
        for id in HOSTILE {
            let path = template.replace("{}", &written(id));
            let what = format!("{method} {path}");
            let answer = raw(&service, method, &path, &headers_for(&path), body).await;
            assert_error_shape(&answer, (400, "INVALID_ARGUMENT"), &what);
            let message = answer.body["error"]["message"].as_str().unwrap_or("");
            if matches!(kind, Kind::Call | Kind::Conference)
                && matches!(id, "." | ".." | "%2E%2E" | "%2e" | "%2e%2E" | ".%2E")
            {
                assert!(message.contains("path steps"), "{what}: {message}");
            }
            tried += 1;
        }
        // A valid shape that names nothing is looked up, and not found.
        let ids: &[&str] = match kind {
            Kind::Call | Kind::Conference => &[&unknown_name, "..."],
            Kind::ExternalMedia | Kind::MediaStream => &[&unknown_uuid],
        };
        for id in ids {
            let path = template.replace("{}", id);
            let answer = raw(&service, method, &path, &headers_for(&path), body).await;
            assert_error_shape(&answer, kind.unknown(), &format!("{method} {path}"));
            tried += 1;
        }
    }

    // Twilio's call update: the call SID and the account SID.
    let basic = {
        use base64::Engine;
        let raw = format!("AC00000000000000000000000000000000:{API_KEY}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    };
    let twilio_headers = [
        ("Authorization", basic.as_str()),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    for id in HOSTILE.iter().chain(&["...", unknown_name.as_str()]) {
        let path = format!(
            "/2010-04-01/Accounts/AC00000000000000000000000000000000/Calls/{}.json",
            written(id)
        );
        let answer = raw(&service, "POST", &path, &twilio_headers, "Status=completed").await;
        assert_eq!(
            (answer.status, &answer.body["code"]),
            (404, &serde_json::json!(20404)),
            "POST {path}: {}",
            answer.body
        );
        let path = format!("/2010-04-01/Accounts/{}/Calls/call-1.json", written(id));
        let answer = raw(&service, "POST", &path, &twilio_headers, "Status=completed").await;
        assert_eq!(
            (answer.status, &answer.body["code"]),
            (401, &serde_json::json!(20003)),
            "POST {path}: {}",
            answer.body
        );
        tried += 2;
    }

    // What Asterisk was asked: only the one object each valid id names.
    let asked = tap.take();
    let mut allowed: Vec<String> = [unknown_name.as_str(), "...", conference.as_str()]
        .iter()
        .flat_map(|id| {
            [
                format!("GET /ari/channels/{id} HTTP/1.1"),
                format!("GET /ari/bridges/{id} HTTP/1.1"),
            ]
        })
        .collect();
    // The start-up reconcile may still be reading the lists; an id never leads there (`.` led
    // to `/ari/channels/`, with its slash, and `..` to `/ari/`).
    allowed.extend([
        "GET /ari/channels HTTP/1.1".to_owned(),
        "GET /ari/bridges HTTP/1.1".to_owned(),
    ]);
    for line in &asked {
        assert!(
            allowed.contains(line),
            "Asterisk was asked `{line}`; all it was asked: {asked:#?}"
        );
    }
    assert!(
        asked
            .iter()
            .any(|l| l == &format!("GET /ari/channels/{unknown_name} HTTP/1.1")),
        "the tap sees the service's requests: {asked:#?}"
    );
    println!(
        "{tried} requests refused or not found; Asterisk asked {} times",
        asked.len()
    );

    // Nothing was created: the tap saw only the reads above.
    assert!(leftovers(&service).await.is_empty());
    assert!(service.ready().await, "the service still serves");
    let (status, _) = service
        .delete(&format!("/v1.0/conferences/{conference}"))
        .await;
    assert_eq!(status, 204);
    service.stop().await;
}
