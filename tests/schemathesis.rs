//! The service against its own OpenAPI document, fuzzed by schemathesis (`scripts/api-fuzz`,
//! which installs it into a cached venv): the service runs in-process against the real
//! Asterisk with calls, a conference, an external media and media streams in it, whose ids the
//! generated requests use half of the time; every operation but the WebSocket upgrades gets
//! valid and invalid requests, and no answer may be a 5xx or differ from the document (status,
//! content type, body schema).
//!
//! The fuzzer creates conferences (mixing bridges outlive the service): the service reaches
//! Asterisk through a tap that notes each bridge it creates, and the test removes them.
//! `external_media.allowed_hosts` keeps generated hosts to 127.0.0.1.
//!
//! No test here skips when schemathesis cannot be installed: it fails and says why.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::client::Enc;
use common::tap::Tap;
use common::*;

/// The `bridgeId` of a `POST /ari/bridges?...` request line: a conference the fuzzer made.
fn bridge_created(line: &str) -> Option<String> {
    let target = line.strip_prefix("POST /ari/bridges?")?;
    let query = target.split(' ').next()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "bridgeId")
        .map(|(_, id)| id.into_owned())
}

/// Reads a stream until it ends (the fuzzer may stop it or hang its call up) or `stop`.
async fn drain(mut stream: client::MediaClient, stop: tokio_util::sync::CancellationToken) {
    let ended = tokio::select! {
        _ = stop.cancelled() => false,
        _ = stream.closed(Duration::from_secs(600)) => true,
    };
    if !ended {
        stream.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_conforms_to_the_document() {
    let tap = Tap::start().await;
    let mut settings = test_settings();
    settings.ari.url = tap.url.parse().expect("tap URL");
    settings.external_media.allowed_hosts = vec!["127.0.0.1/32".parse().expect("net")];
    let service = Service::start(settings).await;

    // What the generated requests find: calls (the fuzzer hangs some up), a conference with
    // one of them, an external media, a stream a client holds open and one the service opened.
    let calls = [
        call(&service, "silence").await,
        call(&service, "silence").await,
        call(&service, "echo").await,
    ];
    let conference = conference_with(&service, &[&calls[0]]).await;
    let host = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("udp");
    let (status, external) = service
        .post(
            &format!("/v1.0/calls/{}/external_media", calls[1]),
            Some(
                serde_json::json!({"external_host": host.local_addr().expect("addr").to_string()}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{external}");
    let (status, connected) = service
        .post(
            &format!("/v1.0/calls/{}/media_stream_connect", calls[1]),
            Some(serde_json::json!({"url": "ws://127.0.0.1:9/nobody"})),
        )
        .await;
    assert_eq!(status, 201, "{connected}");
    let stop = tokio_util::sync::CancellationToken::new();
    let held = tokio::spawn(drain(
        stream(&service, &calls[2], Enc::SlnSlin).await,
        stop.clone(),
    ));
    let (_, streams) = service.get("/v1.0/media_streams").await;
    let stream_ids: Vec<&str> = streams["result"]
        .as_array()
        .expect("streams")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(stream_ids.len(), 2, "{streams}");

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/api-fuzz");
    let report = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/api-fuzz");
    let started = Instant::now();
    let mut command = tokio::process::Command::new(&script);
    command
        .arg(format!("http://{}", service.addr))
        .arg(API_KEY)
        .env("API_FUZZ_CALLS", calls.join(","))
        .env("API_FUZZ_CONFERENCES", &conference)
        .env(
            "API_FUZZ_EXTERNAL_MEDIAS",
            external["id"].as_str().expect("id"),
        )
        .env("API_FUZZ_MEDIA_STREAMS", stream_ids.join(","))
        .env("API_FUZZ_REPORT_DIR", &report)
        .kill_on_drop(true);
    // Its outcome is judged once what it made is removed.
    let outcome = tokio::time::timeout(Duration::from_secs(300), command.output()).await;
    let elapsed = started.elapsed();
    let passed = match &outcome {
        Ok(Ok(output)) => {
            println!("{}", String::from_utf8_lossy(&output.stdout));
            eprintln!("{}", String::from_utf8_lossy(&output.stderr));
            println!(
                "scripts/api-fuzz: {} in {:.0} s (JUnit report in {})",
                output.status,
                elapsed.as_secs_f64(),
                report.display()
            );
            output.status.success()
        }
        Ok(Err(e)) => {
            eprintln!("run {}: {e}", script.display());
            false
        }
        Err(_) => {
            eprintln!("scripts/api-fuzz did not finish within 5 minutes");
            false
        }
    };

    // Whatever the outcome, nothing the fuzzer made stays in Asterisk.
    stop.cancel();
    let _ = held.await;
    let ari = ari().await;
    let mut left: Vec<String> = tap
        .take()
        .iter()
        .filter_map(|line| bridge_created(line))
        .filter(|bridge| !bridge.starts_with("mediastream-"))
        .collect();
    println!("the fuzzer made {} conferences: removing them", left.len());
    // Asterisk may be slow to answer for a while: try again, for up to a minute.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !left.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for bridge in left {
            match ari.destroy_bridge(&bridge).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(_) => still.push(bridge),
            }
        }
        left = still;
        if !left.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let refs: Vec<&str> = calls.iter().map(String::as_str).collect();
    finish(service, &refs).await;
    assert!(
        left.is_empty(),
        "the fuzzer's conferences {left:?} are still in Asterisk"
    );

    assert!(
        passed,
        "schemathesis found answers that are 5xx or differ from the document, or did not run \
         (above)"
    );
}
