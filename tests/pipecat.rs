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

use common::*;

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
