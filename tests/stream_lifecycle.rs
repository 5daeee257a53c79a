//! A stream's life: events in order, every way it can end, and nothing left in Asterisk after.

mod common;

use std::time::{Duration, Instant};

use common::audio::{rms, slin_le, tone, tone_share};
use common::client::{Enc, open};
use common::*;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// Waits until the service's objects are gone from Asterisk; how long it took.
async fn gone_within(service: &Service, limit: Duration) -> Duration {
    let start = Instant::now();
    eventually(limit, || async { leftovers(service).await.is_empty() }).await;
    start.elapsed()
}

#[tokio::test]
async fn client_close_removes_everything_within_a_second() {
    let service = Service::start(test_settings()).await;
    let id = call(&service, "tone").await;
    let mut client = stream(&service, &id, Enc::SlnSlin).await;
    let (_, messages) = client.listen(Duration::from_millis(500)).await;
    assert!(messages > 0);
    let made = leftovers(&service).await;
    assert_eq!(
        made.len(),
        2,
        "an externalMedia channel and a bridge: {made:?}"
    );
    let (_, call_view) = service.get(&format!("/v1.0/calls/{id}")).await;
    assert_eq!(call_view["stream_ids"].as_array().map(Vec::len), Some(1));

    client.close().await;
    let took = gone_within(&service, Duration::from_secs(1)).await;
    println!("teardown after client close: {took:?}");
    // The call itself is untouched, back in the application.
    let (status, call_view) = service.get(&format!("/v1.0/calls/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(call_view["stream_ids"], serde_json::json!([]));
    hangup(&ari().await, &id).await;
    service.stop().await;
}

/// The service answers a client's close with a close frame (RFC 6455), in every
/// encapsulation, with and without events: after the client's close it may send nothing else,
/// but that answer must still go out.
#[tokio::test]
async fn a_client_close_is_answered_with_a_close_frame() {
    let service = Service::start(test_settings()).await;
    let id = call(&service, "tone").await;
    for enc in Enc::ALL {
        for events in ["", "&events=true"] {
            let mut client = open(
                service.addr,
                &format!("/v1.0/calls/{id}"),
                enc,
                &format!("token={API_KEY}{events}"),
            )
            .await
            .expect("upgraded");
            let (_, messages) = client.listen(Duration::from_millis(300)).await;
            assert!(messages > 0, "{enc:?}{events}");
            client
                .ws
                .close(Some(CloseFrame {
                    code: 1000u16.into(),
                    reason: "done".into(),
                }))
                .await
                .expect("the close frame is sent");
            let close = client.closed(Duration::from_secs(1)).await;
            assert_eq!(close.map(|c| c.0), Some(1000), "{enc:?}{events}");
        }
    }
    hangup(&ari().await, &id).await;
    service.stop().await;
}

#[tokio::test]
async fn call_hangup_closes_with_1000_and_removes_everything() {
    let service = Service::start(test_settings()).await;
    let id = call(&service, "tone").await;
    let mut client = stream_with_events(&service, &id, Enc::RtpUlaw).await;
    client.listen(Duration::from_millis(300)).await;
    let hung_up = Instant::now();
    hangup(&ari().await, &id).await;
    let close = client
        .closed(Duration::from_secs(1))
        .await
        .expect("closed within a second");
    println!("close after hangup: {:?} in {:?}", close, hung_up.elapsed());
    assert_eq!(close.0, 1000);
    let stopped = client.texts.last().expect("events");
    assert_eq!(stopped["type"], "stopped");
    assert_eq!(stopped["reason"], "hangup");
    let took = gone_within(&service, Duration::from_secs(1)).await;
    println!("teardown after hangup: {took:?}");
    service.stop().await;
}

#[tokio::test]
async fn events_come_in_the_contract_order() {
    let service = Service::start(test_settings()).await;
    let id = call(&service, "echo").await;
    let mut client = stream_with_events(&service, &id, Enc::SlnSlin).await;
    // `started` is the very first message.
    use futures::StreamExt;
    let first = client.ws.next().await.expect("a message").expect("ok");
    let started: serde_json::Value =
        serde_json::from_str(first.to_text().expect("text first")).expect("JSON");
    assert_eq!(started["type"], "started");
    assert_eq!(started["call_id"], id.as_str());
    assert_eq!(started["encapsulation"], "sln");
    assert_eq!(started["format"], "slin");
    assert_eq!(started["sample_rate"], 8000);
    assert_eq!(started["ptime_ms"], 20);
    assert!(started["stream_id"].as_str().is_some_and(|s| s.len() == 36));

    // A mark after 200 ms of audio comes back once that audio has gone to Asterisk.
    let audio = common::audio::slin_le(&tone(600.0, 1600, 0, 8000.0));
    let sent = Instant::now();
    client.send_binary(audio).await;
    client
        .send_text(r#"{"type":"mark","name":"after-hello"}"#)
        .await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while !client.texts.iter().any(|t| t["type"] == "mark") && Instant::now() < deadline {
        client.listen(Duration::from_millis(20)).await;
    }
    let mark = client
        .texts
        .iter()
        .find(|t| t["type"] == "mark")
        .expect("mark event");
    assert_eq!(mark["name"], "after-hello");
    let took = sent.elapsed();
    println!("mark after 200 ms of audio: {took:?}");
    // Ten frames leave at ten ticks of the 20 ms clock: the last no sooner than 180 ms after
    // the first.
    assert!(
        took >= Duration::from_millis(180),
        "not before its audio was sent: {took:?}"
    );

    // Clear drops queued audio (here 3.75 s, one message under the 64 KiB cap) and says so.
    client
        .send_binary(common::audio::slin_le(&tone(600.0, 30_000, 0, 8000.0)))
        .await;
    client.send_text(r#"{"type":"clear"}"#).await;
    let deadline = Instant::now() + Duration::from_secs(2);
    while !client.texts.iter().any(|t| t["type"] == "cleared") && Instant::now() < deadline {
        client.listen(Duration::from_millis(20)).await;
    }
    assert!(client.texts.iter().any(|t| t["type"] == "cleared"));

    client.send_text(r#"{"type":"stop"}"#).await;
    let close = client.closed(Duration::from_secs(2)).await.expect("closed");
    assert_eq!(close.0, 1000);
    let last = client.texts.last().expect("stopped");
    assert_eq!(
        (last["type"].as_str(), last["reason"].as_str()),
        (Some("stopped"), Some("client"))
    );
    gone_within(&service, Duration::from_secs(1)).await;
    hangup(&ari().await, &id).await;
    service.stop().await;
}

/// The digits of the first `n` `dtmf` events, waited for 5 s at most.
async fn digits_back(client: &mut common::client::MediaClient, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let digits = |client: &common::client::MediaClient| -> Vec<String> {
        client
            .texts
            .iter()
            .filter(|t| t["type"] == "dtmf")
            .filter_map(|t| t["digit"].as_str().map(str::to_owned))
            .collect()
    };
    while digits(client).len() < n && Instant::now() < deadline {
        client.listen(Duration::from_millis(50)).await;
    }
    digits(client)
}

#[tokio::test]
async fn dtmf_goes_into_the_call_and_comes_back_as_an_event() {
    let service = Service::start(test_settings()).await;
    // Echo returns DTMF too: what the client plays into the call comes back from it.
    let id = call(&service, "echo").await;
    let mut client = stream_with_events(&service, &id, Enc::SlnSlin).await;
    client.listen(Duration::from_millis(300)).await;
    client.send_text(r#"{"type":"dtmf","digits":"5#"}"#).await;
    let digits = digits_back(&mut client, 2).await;
    assert_eq!(digits, vec!["5", "#"], "{:?}", client.texts);
    client.close().await;
    hangup(&ari().await, &id).await;
    service.stop().await;
}

#[tokio::test]
async fn an_audiosocket_client_plays_digits_and_hangs_up_with_frames() {
    let service = Service::start(test_settings()).await;
    // Echo returns DTMF: a digit the client's DTMF frame played into the call comes back.
    let id = call(&service, "echo").await;
    let mut client = stream_with_events(&service, &id, Enc::AudioSocket).await;
    client.listen(Duration::from_millis(300)).await;
    // Two DTMF frames in one message (0x03, one ASCII digit each).
    client
        .send_binary(vec![0x03, 0, 1, b'7', 0x03, 0, 1, b'*'])
        .await;
    let digits = digits_back(&mut client, 2).await;
    assert_eq!(digits, vec!["7", "*"], "{:?}", client.texts);

    // A hangup frame (0x00, empty) ends the stream as the client's own close does; the call
    // stays.
    client.send_binary(vec![0x00, 0, 0]).await;
    let close = client.closed(Duration::from_secs(2)).await;
    assert_eq!(close.map(|c| c.0), Some(1000));
    let stopped: Vec<&serde_json::Value> = client
        .texts
        .iter()
        .filter(|t| t["type"] == "stopped")
        .collect();
    assert_eq!(stopped.len(), 1, "{:?}", client.texts);
    assert_eq!(stopped[0]["reason"], "client");
    gone_within(&service, Duration::from_secs(1)).await;
    let (status, _) = service.get(&format!("/v1.0/calls/{id}")).await;
    assert_eq!(status, 200, "the call is not hung up");
    hangup(&ari().await, &id).await;
    service.stop().await;
}

#[tokio::test]
async fn clear_drops_what_is_queued_and_says_cleared_not_drained() {
    let service = Service::start(test_settings()).await;
    let id = call(&service, "echo").await;
    let mut client = stream_with_events(&service, &id, Enc::SlnSlin).await;
    client.listen(Duration::from_millis(300)).await;
    // 3.5 s of 600 Hz queued at once (one message within the 64 KiB limit); after a second
    // of it, `clear`.
    client
        .send_binary(slin_le(&tone(600.0, 28_000, 0, 8000.0)))
        .await;
    let (playing, _) = client.listen(Duration::from_secs(1)).await;
    assert!(
        tone_share(&playing, 600.0) > 0.5,
        "the tone plays before the clear"
    );
    client.send_text(r#"{"type":"clear"}"#).await;
    // Echo's round trip settles, then the call sends nothing of the tone back.
    client.listen(Duration::from_millis(400)).await;
    let (after, _) = client.listen(Duration::from_secs(1)).await;
    println!(
        "after clear: rms {:.0}, 600 Hz share {:.2}",
        rms(&after),
        tone_share(&after, 600.0)
    );
    assert!(
        rms(&after) < 50.0,
        "silence after clear: rms {}",
        rms(&after)
    );
    let kinds: Vec<&str> = client
        .texts
        .iter()
        .filter_map(|t| t["type"].as_str())
        .collect();
    assert!(kinds.contains(&"cleared"), "{kinds:?}");
    assert!(
        !kinds.contains(&"drained"),
        "what was cleared did not finish playing: {kinds:?}"
    );
    client.close().await;
    hangup(&ari().await, &id).await;
    service.stop().await;
}

#[tokio::test]
async fn shutdown_closes_with_1001_and_removes_everything() {
    let service = Service::start(test_settings()).await;
    let app = service.app.clone();
    let id = call(&service, "tone").await;
    // Both drivers: an AudioSocket leg's task and a media worker's RTP leg, with events.
    let mut own_task = stream_with_events(&service, &id, Enc::AudioSocket).await;
    let mut on_worker = stream_with_events(&service, &id, Enc::RtpUlaw).await;
    own_task.listen(Duration::from_millis(300)).await;
    on_worker.listen(Duration::from_millis(100)).await;
    let stopping = tokio::spawn(service.stop());
    for client in [&mut own_task, &mut on_worker] {
        let close = client.closed(Duration::from_secs(2)).await.expect("closed");
        assert_eq!(close.0, 1001);
        let stopped: Vec<&serde_json::Value> = client
            .texts
            .iter()
            .filter(|t| t["type"] == "stopped")
            .collect();
        assert_eq!(stopped.len(), 1, "{:?}", client.texts);
        assert_eq!(stopped[0]["reason"], "shutdown");
    }
    stopping.await.expect("stopped");
    assert!(
        leftovers_of(&app).await.is_empty(),
        "teardown before the service exits"
    );
    hangup(&ari().await, &id).await;
}

#[tokio::test]
async fn a_restart_removes_what_a_killed_service_left() {
    let ari = ari().await;
    // A service in a process of its own, killed without a chance to clean up.
    let app = unique_app();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let settings = ari_settings(&app);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ari-mediastream"))
        .env_clear()
        .envs([
            ("MEDIASTREAM__ARI__URL", settings.url.as_str()),
            ("MEDIASTREAM__ARI__USERNAME", &settings.username),
            ("MEDIASTREAM__ARI__PASSWORD", settings.password.expose()),
            ("MEDIASTREAM__ARI__APP", &app),
            ("MEDIASTREAM__HTTP__LISTEN", &listen),
            ("MEDIASTREAM__MEDIA__AUDIOSOCKET_PORT", "0"),
            ("MEDIASTREAM__AUTH__API_KEYS", API_KEY),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let http = reqwest::Client::new();
    eventually(Duration::from_secs(20), || async {
        matches!(http.get(format!("http://{listen}/ready")).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    // 20 streams on four calls (every encapsulation), and two external medias on a fifth.
    let addr: std::net::SocketAddr = listen.parse().expect("addr");
    let calls: Vec<String> = futures::future::join_all(
        (0..5).map(|i| originate(&ari, &app, if i < 4 { "tone" } else { "silence" })),
    )
    .await;
    let mut clients = Vec::new();
    for id in &calls[..4] {
        for enc in Enc::ALL {
            // The first stream needs the leftover sweep of the new process: retry until admitted.
            let mut client = None;
            for _ in 0..50 {
                match open(
                    addr,
                    &format!("/v1.0/calls/{id}"),
                    enc,
                    &format!("token={API_KEY}"),
                )
                .await
                {
                    Ok(c) => {
                        client = Some(c);
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            clients.push(client.expect("stream opens"));
        }
    }
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("udp");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("tcp");
    let tcp_addr = tcp.local_addr().expect("addr");
    // Asterisk connects to an AudioSocket host during the request: accept and hold.
    let accepting = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = tcp.accept().await {
            held.push(socket);
        }
    });
    for body in [
        serde_json::json!({"external_host": udp.local_addr().expect("addr").to_string()}),
        serde_json::json!({"external_host": tcp_addr.to_string(), "encapsulation": "audiosocket"}),
    ] {
        let answer = http
            .post(format!(
                "http://{listen}/v1.0/calls/{}/external_media",
                calls[4]
            ))
            .bearer_auth(API_KEY)
            .json(&body)
            .send()
            .await
            .expect("external media");
        assert_eq!(answer.status(), 201);
    }
    accepting.abort();
    for client in &mut clients {
        client.listen(Duration::from_millis(50)).await;
    }
    let before = leftovers_of(&app).await.len();
    child.kill().expect("kill -9");
    child.wait().expect("reaped");
    let after = leftovers_of(&app).await.len();
    println!("a killed service left {after} channels and bridges ({before} before the kill)");
    // Asterisk hangs up an AudioSocket channel whose connection closes (the four streams
    // with AudioSocket legs); the rest stays behind.
    assert!(
        after >= before - 5 && after > 15,
        "a killed service leaves its objects"
    );

    let mut settings = test_settings();
    settings.ari = ari_settings(&app);
    let restarted = Instant::now();
    let service = Service::start(settings).await;
    eventually(Duration::from_secs(2), || async {
        leftovers(&service).await.is_empty()
    })
    .await;
    println!(
        "leftovers removed {:?} after the restart",
        restarted.elapsed()
    );
    // And the calls themselves survived, still in the application.
    for id in &calls {
        assert_eq!(service.get(&format!("/v1.0/calls/{id}")).await.0, 200);
    }
    let ids: Vec<&str> = calls.iter().map(String::as_str).collect();
    finish(service, &ids).await;
}

#[tokio::test]
async fn token_expiry_closes_with_1008() {
    let service = Service::start(test_settings()).await;
    let id = call(&service, "tone").await;
    let token = jwt(2, Some(&format!("call:{id}")));
    let mut client = open(
        service.addr,
        &format!("/v1.0/calls/{id}"),
        Enc::SlnSlin,
        &format!("token={token}"),
    )
    .await
    .expect("opens");
    let close = client
        .closed(Duration::from_secs(10))
        .await
        .expect("closed");
    assert_eq!(close.0, 1008, "{close:?}");
    gone_within(&service, Duration::from_secs(1)).await;
    hangup(&ari().await, &id).await;
    service.stop().await;
}

#[tokio::test]
async fn two_streams_on_one_call_share_its_bridge() {
    let service = Service::start(test_settings()).await;
    let id = call(&service, "tone").await;
    let mut a = stream(&service, &id, Enc::SlnSlin).await;
    let mut b = stream(&service, &id, Enc::RtpUlaw).await;
    a.listen(Duration::from_millis(800)).await;
    let (heard, _) = b.listen(Duration::from_secs(1)).await;
    assert!(tone_share(&heard, 1000.0) > 0.5, "rms {}", rms(&heard));
    let objects = leftovers(&service).await;
    assert_eq!(
        objects.len(),
        3,
        "two externalMedia channels, one bridge: {objects:?}"
    );
    a.close().await;
    eventually(Duration::from_secs(1), || async {
        leftovers(&service).await.len() == 2
    })
    .await;
    let (heard, _) = b.listen(Duration::from_millis(500)).await;
    assert!(!heard.is_empty(), "the second stream keeps flowing");
    b.close().await;
    gone_within(&service, Duration::from_secs(1)).await;
    hangup(&ari().await, &id).await;
    service.stop().await;
}

#[tokio::test]
async fn hangup_of_a_bridged_call_closes_with_1000_too() {
    let service = Service::start(test_settings()).await;
    let a = call(&service, "tone").await;
    let b = call(&service, "silence").await;
    let conf = conference_with(&service, &[&a, &b]).await;
    let mut client = stream_with_events(&service, &a, Enc::SlnSlin).await;
    eventually(Duration::from_secs(2), || async {
        leftovers(&service).await.len() == 3
    })
    .await;
    client.listen(Duration::from_millis(300)).await;
    // The snoop goes down with the call, sometimes before the call's own event.
    hangup(&ari().await, &a).await;
    let close = client.closed(Duration::from_secs(2)).await.expect("closed");
    assert_eq!(close.0, 1000, "{close:?}");
    let last = client.texts.last().expect("stopped");
    assert_eq!(last["reason"], "hangup");
    gone_within(&service, Duration::from_secs(1)).await;
    hangup(&ari().await, &b).await;
    service.delete(&format!("/v1.0/conferences/{conf}")).await;
    service.stop().await;
}
