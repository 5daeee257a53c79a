//! `encapsulation=twilio` (SPEC §9.2) against the real client: Pipecat's `TwilioFrameSerializer`
//! (pipecat-ai 1.14.0), driven by `tests/pipecat/twilio_serializer.py` on real calls. The call's
//! tone is in the audio it deserialises, the audio it serialises is heard back through `Echo()`,
//! its interruption (`clear`) empties the queue at once, and its automatic hang-up ends the call
//! through the service's Twilio call-update endpoint.
//!
//! The python is `MEDIASTREAM_TEST_PIPECAT_PYTHON`, which `scripts/test` sets from
//! `scripts/pipecat-venv`; without it, the venv that script caches. No test here skips when
//! Pipecat is missing: it fails and says how to provide it.

mod common;

use std::path::Path;
use std::time::Duration;

use common::audio::{describe, rms, tone_share};
use common::client::Enc;
use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};

const ACCOUNT_SID: &str = "AC00000000000000000000000000000000";
const DEFAULT_PYTHON: &str = "/var/cache/ari-mediastream/pipecat-venv/bin/python";

/// The venv's python; fails the test if there is none.
fn python() -> String {
    let python =
        std::env::var("MEDIASTREAM_TEST_PIPECAT_PYTHON").unwrap_or_else(|_| DEFAULT_PYTHON.into());
    assert!(
        Path::new(&python).exists(),
        "no Pipecat python at {python}. Run the tests with scripts/test (as root it builds the \
         venv), or run scripts/pipecat-venv and point MEDIASTREAM_TEST_PIPECAT_PYTHON at the \
         python it prints"
    );
    python
}

/// Runs the Pipecat side of `scenario` on a Twilio stream of `call`; its JSON summary.
async fn pipecat(service: &Service, call: &str, scenario: &str) -> serde_json::Value {
    let python = python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pipecat/twilio_serializer.py");
    let args = [
        "--ws".to_owned(),
        format!(
            "ws://{}/v1.0/calls/{call}/media_stream?encapsulation=twilio&token={API_KEY}",
            service.addr
        ),
        "--base-url".to_owned(),
        format!("http://{}", service.addr),
        "--account-sid".to_owned(),
        ACCOUNT_SID.to_owned(),
        "--auth-token".to_owned(),
        API_KEY.to_owned(),
        "--scenario".to_owned(),
        scenario.to_owned(),
    ];
    // The script blocks for seconds; the service runs on this test's runtime meanwhile.
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&python)
            .arg(&script)
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("run {python}: {e}"))
    })
    .await
    .expect("the script's thread");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Pipecat script failed ({}): {stderr}",
        output.status
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "the Pipecat script's summary is not JSON ({e}): {}\n{stderr}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    eprint!("{stderr}");
    println!("pipecat {scenario}: {summary}");
    summary
}

/// What both scenarios end with: the serializer's `EndFrame` hang-up ends the call and the stream.
async fn assert_hung_up(service: &Service, call: &str, summary: &serde_json::Value) {
    assert_eq!(summary["hangup_ok"], true, "{}", summary["hangup_log"]);
    assert_eq!(summary["stopped"], true, "a stop after the hang-up");
    assert_eq!(summary["close_code"], 1000);
    let (status, _) = service.get(&format!("/v1.0/calls/{call}")).await;
    assert_eq!(status, 404, "the call is gone");
}

#[tokio::test]
async fn pipecat_hears_the_call_and_hangs_it_up() {
    let service = Service::start(test_settings()).await;
    let id = call(&service, "tone").await;
    let summary = pipecat(&service, &id, "tone").await;
    assert_eq!(summary["connected"], "connected");
    assert_eq!(summary["call_sid"], id.as_str());
    let messages = summary["media_messages"].as_u64().expect("media_messages");
    assert!(
        messages >= 45,
        "a media message every 20 ms: {messages} in 1 s"
    );
    let samples = summary["input_samples"].as_u64().expect("input_samples");
    assert!(
        samples >= 14_400,
        "about a second of 16 kHz input audio: {samples}"
    );
    let share = summary["share_1000"].as_f64().expect("share_1000");
    assert!(share > 0.8, "the call's 1000 Hz tone: {share}");
    assert_hung_up(&service, &id, &summary).await;
    service.stop().await;
}

#[tokio::test]
async fn pipecat_audio_is_heard_back_and_its_interruption_clears_the_queue() {
    let service = Service::start(test_settings()).await;
    let id = call(&service, "echo").await;
    let summary = pipecat(&service, &id, "echo").await;

    // 1.5 s sent as OutputAudioRawFrame at 16 kHz comes back through Echo().
    let echo_ms = summary["echo_ms"].as_u64().expect("echo_ms");
    assert!(echo_ms >= 1_000, "the 1.5 s tone heard back: {echo_ms} ms");

    // InterruptionFrame is Twilio's clear; the 5 s queued behind it are dropped at once.
    assert_eq!(summary["clear_message"]["event"], "clear");
    assert_eq!(summary["clear_message"]["streamSid"], summary["stream_sid"]);
    let before = summary["interrupt_heard_before_ms"]
        .as_u64()
        .expect("before");
    assert!(before >= 500, "the 5 s tone was playing: {before} ms");
    let last = summary["interrupt_last_echo_ms"].as_u64().expect("last");
    let after = summary["interrupt_echo_after_clear_ms"]
        .as_u64()
        .expect("after");
    assert!(
        last < 500 && after < 500,
        "the echo stops within 0.5 s of the clear: last {last} ms, {after} ms of it"
    );
    assert_hung_up(&service, &id, &summary).await;
    service.stop().await;
}

/// The next JSON line the bot prints, within `limit`.
async fn bot_says(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    limit: Duration,
) -> serde_json::Value {
    let line = tokio::time::timeout(limit, lines.next_line())
        .await
        .expect("the bot speaks in time")
        .expect("the bot's stdout")
        .expect("the bot is still running");
    println!("bot: {line}");
    serde_json::from_str(&line).expect("a JSON line")
}

/// SPEC §9.4 with a real Pipecat bot: `tests/pipecat/echo_bot.py`, a Pipecat pipeline served by
/// its FastAPI WebSocket transport with `TwilioFrameSerializer`, echoing what it hears. A call
/// whose dialplan runs `Stasis(<app>,flow=bot)` makes the service connect to the bot; the call
/// hears its own tone back through the bot; the bot ends its conversation and its serializer
/// hangs the call up through the service.
#[tokio::test]
async fn a_pipecat_bot_dialled_by_a_flow_echoes_the_call_and_hangs_it_up() {
    const BOT_SECONDS: u64 = 6;
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("addr").port()
    };
    let mut settings = test_settings();
    settings.flows.insert(
        "bot".into(),
        vec![
            flow_action(serde_json::json!({"type": "answer"})),
            flow_action(
                serde_json::json!({"type": "media_stream_connect", "option": {
                    "url": format!("ws://127.0.0.1:{port}/bot"),
                    "parameters": {"persona": "echo"},
                }}),
            ),
            flow_action(serde_json::json!({"type": "hangup"})),
        ],
    );
    let service = Service::start(settings).await;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pipecat/echo_bot.py");
    let mut bot = tokio::process::Command::new(python())
        .arg(&script)
        .args(["--port", &port.to_string()])
        .args(["--base-url", &format!("http://{}", service.addr)])
        .args(["--account-sid", ACCOUNT_SID, "--auth-token", API_KEY])
        .args(["--seconds", &BOT_SECONDS.to_string()])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the bot");
    let mut lines = BufReader::new(bot.stdout.take().expect("stdout")).lines();
    assert_eq!(
        bot_says(&mut lines, Duration::from_secs(30)).await["event"],
        "listening"
    );

    // One half of a Local channel plays 1000 Hz; the other runs Stasis(<app>,flow=bot).
    let near = into_flow(&service.app, "bot", "tone").await;
    let ari = ari().await;
    let flowing = format!("{near};2");
    let start = bot_says(&mut lines, Duration::from_secs(10)).await;
    assert_eq!(start["event"], "start");
    assert_eq!(start["callSid"], flowing.as_str());
    assert_eq!(
        start["customParameters"],
        serde_json::json!({"persona": "echo"})
    );
    let (_, listed) = service.get("/v1.0/media_streams").await;
    let outbound = listed["result"]
        .as_array()
        .expect("result")
        .iter()
        .find(|s| s["direction"] == "outbound")
        .cloned()
        .expect("the flow's stream is listed");
    assert_eq!(outbound["status"], "running");
    assert_eq!(outbound["id"], start["streamSid"]);

    // What the call hears: a snoop on the tone's half that taps only what it receives, made
    // in the service's application and streamed like any call.
    let ear = unique_id("ear");
    ari.snoop(&near, &ear, &service.app, "in", "none")
        .await
        .expect("snoop");
    eventually(Duration::from_secs(5), || async {
        service.get(&format!("/v1.0/calls/{ear}")).await.0 == 200
    })
    .await;
    let mut listener = stream(&service, &ear, Enc::SlnSlin).await;
    assert_eq!(
        bot_says(&mut lines, Duration::from_secs(5)).await["event"],
        "echoed"
    );
    let (heard, _) = listener.listen(Duration::from_secs(2)).await;
    let report = describe(&heard, &[1000.0]);
    println!("the call hears through the bot: {report}");
    assert!(rms(&heard) > 500.0, "{report}");
    assert!(tone_share(&heard, 1000.0) > 0.8, "{report}");

    // The bot ends its conversation: its serializer hangs the call up through the service.
    assert_eq!(
        bot_says(&mut lines, Duration::from_secs(BOT_SECONDS + 5)).await["event"],
        "ending"
    );
    let ending = std::time::Instant::now();
    eventually(Duration::from_secs(3), || async {
        service
            .get(&format!("/v1.0/calls/{}", flowing.replace(';', "%3B")))
            .await
            .0
            == 404
    })
    .await;
    println!(
        "the call was hung up {:?} after the bot's EndFrame",
        ending.elapsed()
    );
    assert_eq!(
        bot_says(&mut lines, Duration::from_secs(5)).await["event"],
        "closed"
    );
    let id = outbound["id"].as_str().expect("id");
    eventually(Duration::from_secs(2), || async {
        service.get(&format!("/v1.0/media_streams/{id}")).await.1["status"] == "terminated"
    })
    .await;
    let (_, ended) = service.get(&format!("/v1.0/media_streams/{id}")).await;
    println!("the bot's stream: {ended}");
    listener.close().await;
    hangup(&ari, &ear).await;
    eventually(Duration::from_secs(2), || async {
        leftovers(&service).await.is_empty()
    })
    .await;
    let _ = bot.start_kill();
    service.stop().await;
}
