//! `media_stream_connect` (SPEC §9.4) against a real Asterisk: the service opens the WebSocket
//! towards a server the test runs, streams the call there in the encapsulation asked for,
//! both ways; every stream is listed and can be stopped under `/v1.0/media_streams`; a flow
//! waits for the stream to end; unreachable or refusing servers end as `terminated`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use common::audio::{describe, from_le, rms, slin_le, tone, tone_share};
use common::client::Enc;
use common::*;
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

type Ws = WebSocketStream<TcpStream>;

/// A WebSocket server, as a client's bot server would run: each accepted connection, with the
/// path and query it asked for.
#[allow(clippy::result_large_err)] // the callback's type is tungstenite's
async fn server() -> (SocketAddr, mpsc::UnboundedReceiver<(String, Ws)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut target = String::new();
                let callback = |request: &Request, response: Response| {
                    target = request.uri().to_string();
                    Ok(response)
                };
                if let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await {
                    let _ = tx.send((target, ws));
                }
            });
        }
    });
    (addr, rx)
}

async fn accepted(rx: &mut mpsc::UnboundedReceiver<(String, Ws)>) -> (String, Ws) {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("the service connects within 5 s")
        .expect("a connection")
}

/// Binary audio and text messages read from the service for `window`; the close code if
/// one came.
async fn read_for(ws: &mut Ws, window: Duration) -> (Vec<u8>, Vec<serde_json::Value>, Option<u16>) {
    let end = tokio::time::Instant::now() + window;
    let (mut audio, mut texts) = (Vec::new(), Vec::new());
    loop {
        match tokio::time::timeout_at(end, ws.next()).await {
            Err(_) => return (audio, texts, None),
            Ok(Some(Ok(Message::Binary(b)))) => audio.extend_from_slice(&b),
            Ok(Some(Ok(Message::Text(t)))) => {
                texts.push(serde_json::from_str(&t).expect("JSON"));
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                return (
                    audio,
                    texts,
                    Some(frame.map_or(1005, |f| u16::from(f.code))),
                );
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => return (audio, texts, Some(1006)),
        }
    }
}

fn path(call: &str) -> String {
    call.replace(';', "%3B")
}

#[tokio::test]
async fn the_service_dials_a_server_streams_both_ways_and_lists_and_stops_it() {
    let service = Service::start(test_settings()).await;
    let call = call(&service, "echo").await;
    let (addr, mut rx) = server().await;
    let (status, view) = service
        .post(
            &format!("/v1.0/calls/{call}/media_stream_connect"),
            Some(serde_json::json!({
                "url": format!("ws://{addr}/bot?x=1"),
                "encapsulation": "sln",
                "events": true,
                "parameters": {"lang": "en"},
            })),
        )
        .await;
    println!("connect: {status} {view}");
    assert_eq!(status, 201, "{view}");
    assert_eq!(view["status"], "running");
    assert_eq!(view["direction"], "outbound");
    assert_eq!(view["reference_type"], "call");
    assert_eq!(view["reference_id"], call.as_str());
    assert_eq!(
        (view["encapsulation"].as_str(), view["format"].as_str()),
        (Some("sln"), Some("slin"))
    );
    let id = view["id"].as_str().expect("id").to_owned();

    let (target, mut ws) = accepted(&mut rx).await;
    assert_eq!(target, "/bot?x=1&lang=en", "parameters go in the query");
    // The stream behaves as an inbound one: `started`, then audio both ways.
    let first = ws.next().await.expect("a message").expect("ok");
    let started: serde_json::Value =
        serde_json::from_str(first.to_text().expect("text")).expect("json");
    assert_eq!(started["type"], "started");
    assert_eq!(started["stream_id"], id.as_str());
    let mut heard = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    for i in 0..150 {
        ticker.tick().await;
        let frame = slin_le(&tone(600.0, 160, i * 160, 8000.0));
        ws.send(Message::Binary(frame.into())).await.expect("send");
        let (audio, _, close) = read_for(&mut ws, Duration::from_millis(1)).await;
        assert_eq!(close, None);
        if i >= 75 {
            heard.extend(audio);
        }
    }
    let heard = from_le(&heard);
    let report = describe(&heard, &[600.0]);
    println!("outbound sln through Echo(): {report}");
    assert!(
        rms(&heard) > 500.0 && tone_share(&heard, 600.0) > 0.8,
        "{report}"
    );

    // Listed with an inbound stream of the same call.
    let inbound = stream(&service, &call, Enc::SlnSlin).await;
    let (status, list) = service.get("/v1.0/media_streams").await;
    assert_eq!(status, 200);
    let mut directions: Vec<&str> = list["result"]
        .as_array()
        .expect("result")
        .iter()
        .filter(|s| s["reference_id"] == call.as_str())
        .map(|s| s["direction"].as_str().expect("direction"))
        .collect();
    directions.sort();
    println!("media streams of the call: {directions:?}");
    assert_eq!(directions, ["inbound", "outbound"]);
    let (status, one) = service.get(&format!("/v1.0/media_streams/{id}")).await;
    assert_eq!((status, one["status"].as_str()), (200, Some("running")));

    // Stopped through the API: the server sees `stopped` and a close 1000; the call goes on.
    let (status, stopped) = service.delete(&format!("/v1.0/media_streams/{id}")).await;
    println!("stop: {status} {stopped}");
    assert_eq!(
        (status, stopped["status"].as_str()),
        (200, Some("terminated"))
    );
    let (_, texts, close) = read_for(&mut ws, Duration::from_secs(2)).await;
    assert_eq!(close, Some(1000));
    assert!(
        texts
            .iter()
            .any(|t| t["type"] == "stopped" && t["reason"] == "stopped"),
        "{texts:?}"
    );
    assert_eq!(service.get(&format!("/v1.0/calls/{call}")).await.0, 200);
    inbound.close().await;
    finish(service, &[&call]).await;
}

#[tokio::test]
async fn twilio_by_default_and_the_servers_close_ends_the_stream_not_the_call() {
    let service = Service::start(test_settings()).await;
    let call = call(&service, "tone").await;
    let (addr, mut rx) = server().await;
    let (status, view) = service
        .post(
            &format!("/v1.0/calls/{call}/media_stream_connect"),
            Some(serde_json::json!({"url": format!("ws://{addr}/twilio"), "parameters": {"bot": "7"}})),
        )
        .await;
    assert_eq!(status, 201, "{view}");
    assert_eq!(view["encapsulation"], "twilio");
    let id = view["id"].as_str().expect("id").to_owned();
    let (target, mut ws) = accepted(&mut rx).await;
    assert_eq!(
        target, "/twilio",
        "Twilio parameters travel in `start`, not the query"
    );
    let (_, texts, _) = read_for(&mut ws, Duration::from_millis(1500)).await;
    assert_eq!(texts[0]["event"], "connected");
    let start = &texts[1];
    assert_eq!(start["event"], "start");
    assert_eq!(start["start"]["callSid"], call.as_str());
    assert_eq!(start["start"]["streamSid"], id.as_str());
    assert_eq!(
        start["start"]["customParameters"],
        serde_json::json!({"bot": "7"})
    );
    let ulaw: Vec<u8> = texts
        .iter()
        .filter(|t| t["event"] == "media")
        .skip(40)
        .flat_map(|t| {
            base64::engine::general_purpose::STANDARD
                .decode(t["media"]["payload"].as_str().expect("payload"))
                .expect("base64")
        })
        .collect();
    let samples: Vec<i16> = ulaw
        .iter()
        .map(|&b| ari_mediastream::codec::g711::ulaw_decode(b))
        .collect();
    let report = describe(&samples, &[1000.0]);
    println!("outbound twilio: {report}");
    assert!(tone_share(&samples, 1000.0) > 0.8, "{report}");

    ws.close(None).await.expect("close");
    eventually(Duration::from_secs(2), || async {
        service.get(&format!("/v1.0/media_streams/{id}")).await.1["status"] == "terminated"
    })
    .await;
    let (_, ended) = service.get(&format!("/v1.0/media_streams/{id}")).await;
    println!("after the server's close: {ended}");
    assert_eq!(
        service.get(&format!("/v1.0/calls/{call}")).await.0,
        200,
        "the call goes on"
    );
    eventually(Duration::from_secs(2), || async {
        leftovers(&service).await.is_empty()
    })
    .await;

    // A conference is streamed the same way.
    let conf = conference_with(&service, &[&call]).await;
    let (status, view) = service
        .post(
            &format!("/v1.0/conferences/{conf}/media_stream_connect"),
            Some(serde_json::json!({"url": format!("ws://{addr}/conf"), "encapsulation": "sln", "format": "slin16"})),
        )
        .await;
    assert_eq!(status, 201, "{view}");
    assert_eq!(view["reference_type"], "conference");
    let (_, mut ws) = accepted(&mut rx).await;
    read_for(&mut ws, Duration::from_millis(500)).await;
    let (audio, _, _) = read_for(&mut ws, Duration::from_secs(1)).await;
    let samples = from_le(&audio);
    let share = common::audio::tone_share_at(&samples, 16_000, 1000.0);
    println!(
        "outbound conference slin16: {} samples, 1000 Hz share {share:.3}",
        samples.len()
    );
    assert!(samples.len() > 12_000 && share > 0.8);
    drop(ws);
    hangup(&ari().await, &call).await;
    service.stop().await;
}

#[tokio::test]
async fn media_stream_connect_as_an_action_over_rest() {
    let (addr, mut rx) = server().await;
    let service = Service::start(test_settings()).await;
    let call = call(&service, "tone").await;
    let (status, started) = service
        .post(
            &format!("/v1.0/calls/{}/actions", path(&call)),
            Some(serde_json::json!({"type": "media_stream_connect",
                "option": {"url": format!("ws://{addr}/action?x=1"), "encapsulation": "sln"}})),
        )
        .await;
    assert_eq!(status, 201, "{started}");
    let id = started["id"].as_str().expect("the stream's id").to_owned();
    assert_eq!(started["direction"], "outbound", "{started}");
    let (target, mut ws) = accepted(&mut rx).await;
    assert_eq!(target, "/action?x=1");
    read_for(&mut ws, Duration::from_millis(800)).await;
    let (audio, _, _) = read_for(&mut ws, Duration::from_secs(1)).await;
    let samples = from_le(&audio);
    let report = describe(&samples, &[1000.0]);
    println!("a stream connected by an action: {report}");
    assert!(tone_share(&samples, 1000.0) > 0.8, "{report}");
    // Listed like any other, and stopped there.
    let (status, view) = service.get(&format!("/v1.0/media_streams/{id}")).await;
    assert_eq!((status, view["status"].as_str()), (200, Some("running")));
    let (status, _) = service.delete(&format!("/v1.0/media_streams/{id}")).await;
    assert_eq!(status, 200);
    let (_, _, close) = read_for(&mut ws, Duration::from_secs(2)).await;
    assert_eq!(close, Some(1000));
    hangup(&ari().await, &call).await;
    service.stop().await;
}

#[tokio::test]
async fn a_flow_waits_for_the_stream_then_goes_on() {
    let (addr, mut rx) = server().await;
    let mut settings = test_settings();
    settings.flows.insert(
        "bot".into(),
        vec![
            flow_action(serde_json::json!({"type": "answer"})),
            flow_action(serde_json::json!({"type": "media_stream_connect",
                "option": {"url": format!("ws://{addr}/flow"), "encapsulation": "sln"}})),
            flow_action(serde_json::json!({"type": "hangup"})),
        ],
    );
    let service = Service::start(settings).await;
    let near = into_flow(&service.app, "bot", "tone").await;
    let flowing = format!("{near};2");
    let (_, mut ws) = accepted(&mut rx).await;
    read_for(&mut ws, Duration::from_millis(800)).await;
    let (audio, _, _) = read_for(&mut ws, Duration::from_secs(1)).await;
    let samples = from_le(&audio);
    let report = describe(&samples, &[1000.0]);
    println!("flow's stream: {report}");
    assert!(tone_share(&samples, 1000.0) > 0.8, "{report}");
    // What the call hears while the server sends nothing: silence. (A snoop tapping only what
    // the tone's half receives, as the Pipecat bot test uses to hear the bot's echo.)
    let ear = unique_id("ear");
    ari()
        .await
        .snoop(&near, &ear, &service.app, "in", "none")
        .await
        .expect("snoop");
    eventually(Duration::from_secs(5), || async {
        service.get(&format!("/v1.0/calls/{ear}")).await.0 == 200
    })
    .await;
    let mut listener = stream(&service, &ear, Enc::SlnSlin).await;
    let (quiet, _) = listener.listen(Duration::from_secs(1)).await;
    println!("the call hears a silent server as: rms {:.0}", rms(&quiet));
    assert!(quiet.len() > 6000 && rms(&quiet) < 50.0);
    listener.close().await;
    hangup(&ari().await, &ear).await;
    // The flow is still waiting: its `hangup` has not run.
    assert_eq!(
        service
            .get(&format!("/v1.0/calls/{}", path(&flowing)))
            .await
            .0,
        200
    );
    let closed = std::time::Instant::now();
    ws.close(None).await.expect("close");
    eventually(Duration::from_secs(3), || async {
        service
            .get(&format!("/v1.0/calls/{}", path(&flowing)))
            .await
            .0
            == 404
    })
    .await;
    println!(
        "the flow's hangup ran {:?} after the server closed",
        closed.elapsed()
    );
    finish(service, &[]).await;
}

#[tokio::test]
async fn unreachable_refusing_and_forbidden_servers() {
    let mut settings = test_settings();
    let service = Service::start(settings.clone()).await;
    let call = call(&service, "silence").await;
    let connect = |url: String| {
        let service = &service;
        let call = call.clone();
        async move {
            service
                .post(
                    &format!("/v1.0/calls/{call}/media_stream_connect"),
                    Some(serde_json::json!({"url": url})),
                )
                .await
        }
    };

    // Nothing listens there.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let (status, view) = connect(format!("ws://127.0.0.1:{port}/")).await;
    println!("closed port: {status} {view}");
    assert_eq!((status, view["status"].as_str()), (201, Some("terminated")));
    assert!(
        view["reason"]
            .as_str()
            .expect("reason")
            .contains("cannot connect"),
        "{view}"
    );

    // An HTTP server that refuses the upgrade.
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let http_addr = http.local_addr().expect("addr");
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut tcp, _)) = http.accept().await {
            let mut buf = [0u8; 2048];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp
                .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    });
    let (status, view) = connect(format!("ws://{http_addr}/nope")).await;
    println!("refused upgrade: {status} {view}");
    assert_eq!((status, view["status"].as_str()), (201, Some("terminated")));
    assert!(
        view["reason"]
            .as_str()
            .expect("reason")
            .contains("HTTP 404"),
        "{view}"
    );
    let id = view["id"].as_str().expect("id");
    assert_eq!(
        service.get(&format!("/v1.0/media_streams/{id}")).await.1["status"],
        "terminated"
    );

    // Bad requests.
    for (body, want) in [
        (serde_json::json!({}), 400),
        (serde_json::json!({"url": "http://127.0.0.1/"}), 400),
        (
            serde_json::json!({"url": "ws://127.0.0.1/", "format": "slin"}),
            400,
        ),
        (
            serde_json::json!({"url": "ws://127.0.0.1/", "colour": "red"}),
            400,
        ),
        (
            serde_json::json!({"url": "ws://no-such-host.invalid/"}),
            400,
        ),
    ] {
        let (status, answer) = service
            .post(
                &format!("/v1.0/calls/{call}/media_stream_connect"),
                Some(body.clone()),
            )
            .await;
        println!("{body}: {status} {}", reason(&answer));
        assert_eq!(status, want, "{body}: {answer}");
    }
    let (status, _) = service
        .post(
            "/v1.0/calls/no-such-call/media_stream_connect",
            Some(serde_json::json!({"url": "ws://127.0.0.1:9/"})),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(service.get("/v1.0/media_streams/not-a-uuid").await.0, 400);
    let unknown = uuid::Uuid::new_v4();
    assert_eq!(
        service
            .get(&format!("/v1.0/media_streams/{unknown}"))
            .await
            .0,
        404
    );
    assert_eq!(
        service
            .delete(&format!("/v1.0/media_streams/{unknown}"))
            .await
            .0,
        404
    );
    assert!(leftovers(&service).await.is_empty());
    hangup(&ari().await, &call).await;
    service.stop().await;

    // external_media.allowed_hosts applies to the URL's host.
    settings.external_media.allowed_hosts = vec!["10.0.0.0/8".parse().expect("net")];
    let service = Service::start(settings).await;
    let call = common::call(&service, "silence").await;
    let (status, answer) = service
        .post(
            &format!("/v1.0/calls/{call}/media_stream_connect"),
            Some(serde_json::json!({"url": "ws://127.0.0.1:9/"})),
        )
        .await;
    println!("outside allowed_hosts: {status} {}", reason(&answer));
    assert_eq!(status, 403, "{answer}");
    hangup(&ari().await, &call).await;
    service.stop().await;
}

/// `wss://`: TLS to a server whose certificate a private CA signed, trusted through
/// `media.connect_ca_file`; without it the connection is refused for its certificate.
#[tokio::test]
async fn wss_to_a_server_of_a_private_ca() {
    let ca = common::tls::TestCa::new("connect");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server.clone());
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    let _ = tx.send(None);
                    return;
                };
                if let Ok(ws) = tokio_tungstenite::accept_async(tls).await {
                    let _ = tx.send(Some(ws));
                }
            });
        }
    });
    let url = format!("wss://localhost:{port}/secure");

    // The system's roots do not know the test's CA.
    let service = Service::start(test_settings()).await;
    let call = common::call(&service, "tone").await;
    let (status, view) = service
        .post(
            &format!("/v1.0/calls/{call}/media_stream_connect"),
            Some(serde_json::json!({"url": url, "encapsulation": "sln"})),
        )
        .await;
    println!("wss without the CA: {status} {}", view["reason"]);
    assert_eq!((status, view["status"].as_str()), (201, Some("terminated")));
    assert!(
        view["reason"].as_str().expect("reason").contains("TLS"),
        "{view}"
    );
    hangup(&ari().await, &call).await;
    service.stop().await;
    while rx.try_recv().is_ok() {}

    let mut settings = test_settings();
    settings.media.connect_ca_file = Some(ca.ca_file.clone());
    let service = Service::start(settings).await;
    let call = common::call(&service, "tone").await;
    let (status, view) = service
        .post(
            &format!("/v1.0/calls/{call}/media_stream_connect"),
            Some(serde_json::json!({"url": url, "encapsulation": "sln"})),
        )
        .await;
    assert_eq!(
        (status, view["status"].as_str()),
        (201, Some("running")),
        "{view}"
    );
    let mut ws = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("in time")
        .flatten()
        .expect("a TLS WebSocket");
    let mut audio = Vec::new();
    let end = tokio::time::Instant::now() + Duration::from_millis(1800);
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(end, ws.next()).await {
        if let Message::Binary(b) = message {
            audio.extend_from_slice(&b);
        }
    }
    let samples = from_le(&audio);
    let tail = &samples[samples.len().saturating_sub(8000)..];
    let report = describe(tail, &[1000.0]);
    println!(
        "wss with connect_ca_file: {} samples; {report}",
        samples.len()
    );
    assert!(
        samples.len() > 12_000 && tone_share(tail, 1000.0) > 0.8,
        "{report}"
    );
    // Audio back over TLS reaches the call: the stream's own echo is not needed, the
    // server's close is enough to end it cleanly.
    ws.close(None).await.expect("close");
    let id = view["id"].as_str().expect("id").to_owned();
    eventually(Duration::from_secs(2), || async {
        service.get(&format!("/v1.0/media_streams/{id}")).await.1["status"] == "terminated"
    })
    .await;
    finish(service, &[&call]).await;
}
