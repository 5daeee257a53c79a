//! Asterisk crashes (`kill -9`) under 20 open streams. A test binary of its own: `cargo test`
//! runs binaries one after another, so no other test loses its Asterisk meanwhile.
//!
//! What a client must see: a close frame 1011 within 2 s (not a silent stream that stays open
//! until Asterisk is back: ARI does not answer and the stream's audio stopped); `/ready` says
//! 503 while Asterisk is gone; once Asterisk's ARI answers again, new streams work within 5 s;
//! nothing of the old run is left (the external media is terminated by the reconcile).

mod common;

use std::time::{Duration, Instant};

use common::audio::tone_share;
use common::client::Enc;
use common::*;

const STREAMS: usize = 20;

/// The command in `var`. A test that cannot run fails, never skips: scripts/test sets it for
/// its sandbox.
fn command(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is needed: a command for this Asterisk (scripts/test sets it for its sandbox)"
        )
    })
}

/// Starts Asterisk again when dropped, should the test fail while it is down: the tests that
/// run after this one need it.
struct Restart(String);

impl Drop for Restart {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = std::process::Command::new("sh")
                .arg("-c")
                .arg(&self.0)
                .status();
        }
    }
}

async fn sh(cmd: &str) {
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .status()
        .await
        .expect("the command runs");
    assert!(status.success(), "{cmd} failed");
}

#[tokio::test]
async fn streams_end_with_1011_when_asterisk_dies_and_work_again_when_it_is_back() {
    let (kill, start) = (
        command("MEDIASTREAM_TEST_KILL_CMD"),
        command("MEDIASTREAM_TEST_START_CMD"),
    );
    let service = Service::start(test_settings()).await;
    // 20 streams over 4 calls, every encapsulation, both transports towards Asterisk.
    let mut clients = Vec::new();
    for _ in 0..4 {
        let id = call(&service, "tone").await;
        for enc in Enc::ALL {
            clients.push(stream(&service, &id, enc).await);
        }
    }
    assert_eq!(clients.len(), STREAMS);
    // And an external media on a fifth call.
    let fifth = call(&service, "tone").await;
    let (status, external) = service
        .post(
            &format!("/v1.0/calls/{fifth}/external_media"),
            Some(serde_json::json!({"external_host": "127.0.0.1:9"})),
        )
        .await;
    assert_eq!(status, 201, "{external}");
    for client in &mut clients {
        let (samples, _) = client.listen(Duration::from_millis(100)).await;
        assert!(
            !samples.is_empty(),
            "{:?}: audio before the crash",
            client.enc
        );
    }

    let _restart = Restart(start.clone());
    let killed = Instant::now();
    sh(&kill).await;
    let closes = futures::future::join_all(clients.iter_mut().map(|client| async {
        let close = client.closed(Duration::from_secs(5)).await;
        (client.enc, close, killed.elapsed())
    }))
    .await;
    let ready = service.ready().await;
    let slowest = closes.iter().map(|c| c.2).max().expect("closes");
    println!(
        "after kill -9: {} closes, slowest {slowest:?}; codes {:?}; /ready {}",
        closes.len(),
        closes
            .iter()
            .map(|(_, c, _)| c.as_ref().map(|c| c.0))
            .collect::<Vec<_>>(),
        if ready { 200 } else { 503 }
    );
    for (enc, close, after) in &closes {
        let (code, reason) = close
            .clone()
            .unwrap_or_else(|| panic!("{enc:?}: no close frame"));
        assert_eq!(code, 1011, "{enc:?}: {reason}");
        assert!(
            *after < Duration::from_secs(2),
            "{enc:?}: closed after {after:?}"
        );
    }
    assert!(!ready, "/ready says 503 while Asterisk is gone");
    // A stream is listed until its teardown is over: with Asterisk dead, that is at once for
    // the removals, which wait for its return.
    eventually(Duration::from_secs(1), || async {
        let (_, streams) = service.get("/v1.0/media_streams").await;
        streams["result"] == serde_json::json!([])
    })
    .await;

    // Asterisk back: from its ARI answering to a new stream with audio.
    sh(&start).await;
    let ari = ari().await;
    while ari.asterisk_info().await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answering = Instant::now();
    // A call made before the service has registered its application again would be refused
    // by Asterisk: the service says when it is back.
    while !service.ready().await {
        assert!(
            answering.elapsed() < Duration::from_secs(5),
            "not ready within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready_after = answering.elapsed();
    let id = call(&service, "tone").await;
    let mut client = stream(&service, &id, Enc::SlnSlin).await;
    let mut heard = Vec::new();
    while tone_share(&heard, 1000.0) < 0.8 || heard.len() < 1600 {
        let (samples, _) = client.listen(Duration::from_millis(100)).await;
        heard = [heard, samples].concat();
        let tail = heard.len().saturating_sub(1600);
        heard.drain(..tail);
        assert!(
            answering.elapsed() < Duration::from_secs(5),
            "no tone within 5 s"
        );
    }
    println!(
        "after the restart: /ready 200 {ready_after:?} and a new stream hears its call's tone \
         {:?} after ARI answered",
        answering.elapsed()
    );
    assert!(service.ready().await, "/ready says 200 again");
    // The external media's channel died with Asterisk: the reconcile tells its watcher.
    let em = external["id"].as_str().expect("external media id");
    eventually(Duration::from_secs(3), || async {
        service.get(&format!("/v1.0/external_medias/{em}")).await.1["status"] == "terminated"
    })
    .await;
    client.close().await;
    let (_, calls) = service.get("/v1.0/calls").await;
    assert_eq!(calls["result"].as_array().map(Vec::len), Some(1), "{calls}");
    finish(service, &[&id]).await;
}
