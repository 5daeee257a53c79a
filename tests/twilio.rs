//! `encapsulation=twilio` on real calls (SPEC §9.2): the Twilio Media Streams messages, the
//! call's tone in the `media` payloads, and μ-law sent as `media` heard back through `Echo()`.

mod common;

use std::time::{Duration, Instant};

use ari_mediastream::codec::g711::{ulaw_decode, ulaw_encode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::audio::{tone, tone_share};
use common::*;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(service: &Service, call: &str, extra: &str) -> Ws {
    let url = format!(
        "ws://{}/v1.0/calls/{call}/media_stream?encapsulation=twilio&token={API_KEY}{extra}",
        service.addr
    );
    tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade")
        .0
}

/// The next text message, parsed; binary messages are a protocol violation here.
async fn next_json(ws: &mut Ws, limit: Duration) -> Option<serde_json::Value> {
    loop {
        match tokio::time::timeout(limit, ws.next()).await.ok()?? {
            Ok(Message::Text(t)) => return Some(serde_json::from_str(&t).expect("JSON")),
            Ok(Message::Binary(b)) => panic!("a binary message on a Twilio stream: {b:?}"),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Reads `media` messages for `window`: the audio they carry, and every other event.
async fn listen(ws: &mut Ws, window: Duration) -> (Vec<i16>, Vec<serde_json::Value>) {
    let end = Instant::now() + window;
    let (mut audio, mut others) = (Vec::new(), Vec::new());
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        let Some(message) = next_json(ws, left).await else {
            break;
        };
        if message["event"] == "media" {
            let payload = message["media"]["payload"].as_str().expect("payload");
            let ulaw = STANDARD.decode(payload).expect("base64");
            assert_eq!(ulaw.len(), 160, "20 ms of μ-law");
            audio.extend(ulaw.iter().map(|b| ulaw_decode(*b)));
        } else {
            others.push(message);
        }
    }
    (audio, others)
}

#[tokio::test]
async fn the_call_is_heard_in_twilio_media_messages() {
    let service = Service::start(test_settings()).await;
    let id = call(&service, "tone").await;
    let mut ws = connect(&service, &id, "&bot=echo&lang=en").await;
    let connected = next_json(&mut ws, Duration::from_secs(2))
        .await
        .expect("connected");
    assert_eq!(
        connected,
        serde_json::json!({"event":"connected","protocol":"Call","version":"1.0.0"})
    );
    let start = next_json(&mut ws, Duration::from_secs(2))
        .await
        .expect("start");
    println!("start: {start}");
    assert_eq!(start["event"], "start");
    assert_eq!(start["sequenceNumber"], "1");
    assert_eq!(start["start"]["callSid"], id.as_str());
    assert_eq!(
        start["start"]["accountSid"],
        "AC00000000000000000000000000000000"
    );
    assert_eq!(
        start["start"]["customParameters"],
        serde_json::json!({"bot": "echo", "lang": "en"})
    );
    assert_eq!(
        start["start"]["mediaFormat"],
        serde_json::json!({"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1})
    );
    let stream_sid = start["streamSid"].clone();

    // Playtones starts about half a second late.
    listen(&mut ws, Duration::from_millis(700)).await;
    let (audio, _) = listen(&mut ws, Duration::from_secs(1)).await;
    let share = tone_share(&audio, 1000.0);
    println!("1000 Hz share {share:.2} over {} samples", audio.len());
    assert!(
        audio.len() >= 7_200,
        "about 50 messages a second: {}",
        audio.len()
    );
    assert!(share > 0.8, "the call's tone: {share}");

    hangup(&ari().await, &id).await;
    let (_, rest) = listen(&mut ws, Duration::from_secs(2)).await;
    let stop = rest.iter().find(|m| m["event"] == "stop").expect("stop");
    assert_eq!(stop["streamSid"], stream_sid);
    assert_eq!(stop["stop"]["callSid"], id.as_str());
    service.stop().await;
}

#[tokio::test]
async fn twilio_media_sent_is_heard_back_through_echo_and_marks_return() {
    let service = Service::start(test_settings()).await;
    let id = call(&service, "echo").await;
    let mut ws = connect(&service, &id, "").await;
    listen(&mut ws, Duration::from_millis(300)).await;

    // 1.5 s of 600 Hz in 20 ms media messages, as a bot's TTS would send it, then a mark.
    let ulaw: Vec<u8> = tone(600.0, 12_000, 0, 8000.0)
        .into_iter()
        .map(ulaw_encode)
        .collect();
    for chunk in ulaw.chunks(160) {
        let media = serde_json::json!({
            "event": "media", "streamSid": "x", "media": {"payload": STANDARD.encode(chunk)},
        });
        ws.send(Message::Text(media.to_string().into()))
            .await
            .expect("send");
    }
    ws.send(Message::Text(
        r#"{"event":"mark","streamSid":"x","mark":{"name":"spoken"}}"#.into(),
    ))
    .await
    .expect("send");
    let sent = Instant::now();
    let (audio, events) = listen(&mut ws, Duration::from_millis(2_500)).await;
    let share = tone_share(&audio, 600.0);
    println!("600 Hz share {share:.2}; events {events:?}");
    assert!(share > 0.5, "the bot's audio heard back: {share}");
    let mark = events
        .iter()
        .find(|m| m["event"] == "mark")
        .expect("the mark comes back");
    assert_eq!(mark["mark"]["name"], "spoken");
    println!("mark back {:?} after sending", sent.elapsed());

    // Not JSON: closed with 1007.
    ws.send(Message::Text("not json".into()))
        .await
        .expect("send");
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(2), ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => {}
            _ => break None,
        }
    };
    assert_eq!(close, Some(1007));
    hangup(&ari().await, &id).await;
    service.stop().await;
}

#[tokio::test]
async fn twilio_takes_ulaw_only() {
    let service = Service::start(test_settings()).await;
    let id = call(&service, "tone").await;
    // A real upgrade, refused for its format alone: the same request in μ-law is taken.
    let url = |format: &str| {
        format!(
            "ws://{}/v1.0/calls/{id}/media_stream?encapsulation=twilio&format={format}&token={API_KEY}",
            service.addr
        )
    };
    match tokio_tungstenite::connect_async(url("slin")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 400);
            let body: serde_json::Value =
                serde_json::from_slice(resp.body().as_deref().unwrap_or_default())
                    .expect("a JSON error");
            assert_eq!(reason(&body), "INVALID_ARGUMENT", "{body}");
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("format slin") && message.contains("twilio"),
                "{message}"
            );
        }
        Ok(_) => panic!("a Twilio stream in slin was taken"),
        Err(e) => panic!("connect: {e}"),
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(url("ulaw"))
        .await
        .expect("a Twilio stream in μ-law is taken");
    assert_eq!(
        next_json(&mut ws, Duration::from_secs(5))
            .await
            .expect("connected")["event"],
        "connected"
    );
    let _ = ws.close(None).await;
    hangup(&ari().await, &id).await;
    service.stop().await;
}

#[tokio::test]
async fn the_call_update_endpoint_hangs_up_as_twilio_does() {
    let service = Service::start(test_settings()).await;
    let id = call(&service, "tone").await;
    let mut ws = connect(&service, &id, "").await;
    listen(&mut ws, Duration::from_millis(300)).await;
    let account = "AC00000000000000000000000000000000";
    let update = |account: &str, token: &str, call: &str| {
        reqwest::Client::new()
            .post(service.url(&format!("/2010-04-01/Accounts/{account}/Calls/{call}.json")))
            .basic_auth(account, Some(token))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("Status=completed")
    };

    // A wrong account SID or token, and an unknown call.
    let (status, _) = service.send(update("ACwrong", API_KEY, &id)).await;
    assert_eq!(status, 401);
    let (status, _) = service
        .send(update(account, "not-a-token-0123456789", &id))
        .await;
    assert_eq!(status, 401);
    let (status, body) = service.send(update(account, API_KEY, "no-such-call")).await;
    assert_eq!(
        (status, body["code"].as_u64()),
        (404, Some(20404)),
        "{body}"
    );
    assert_eq!(body["status"], 404);

    let (status, body) = service.send(update(account, API_KEY, &id)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        serde_json::json!({"sid": id, "account_sid": account, "status": "completed"})
    );
    // The stream ends as with any hangup: stop, then close 1000.
    let (_, rest) = listen(&mut ws, Duration::from_secs(2)).await;
    assert!(rest.iter().any(|m| m["event"] == "stop"), "{rest:?}");
    let (status, _) = service.get(&format!("/v1.0/calls/{id}")).await;
    assert_eq!(status, 404, "the call is gone");
    service.stop().await;
}
