//! Asterisk itself restarts under a running service. A test binary of its own: `cargo test`
//! runs binaries one after another, so no other test loses its Asterisk meanwhile.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test]
async fn the_service_survives_an_asterisk_restart() {
    // A test that cannot run fails, never skips: scripts/test sets it for its sandbox.
    let restart = std::env::var_os("MEDIASTREAM_TEST_RESTART_CMD").unwrap_or_else(|| {
        panic!("MEDIASTREAM_TEST_RESTART_CMD is needed: a command that restarts this Asterisk")
    });
    let ari = ari().await;
    let service = Service::start(test_settings()).await;
    let before = originate(&ari, &service.app, "silence").await;
    eventually(Duration::from_secs(5), || async {
        service.get(&format!("/v1.0/calls/{before}")).await.0 == 200
    })
    .await;

    let restarting = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&restart)
        .status();
    // The socket drops while Asterisk stops...
    let (status, ()) = tokio::join!(restarting, service.wait_ready(false));
    assert!(
        status.expect("restart command runs").success(),
        "restart failed"
    );
    // ...and comes back by itself.
    service.wait_ready(true).await;

    // The old call died with Asterisk; the registry says so, and follows new calls.
    let ari = common::ari().await;
    let after = originate(&ari, &service.app, "silence").await;
    eventually(Duration::from_secs(10), || async {
        let (_, list) = service.get("/v1.0/calls").await;
        list["result"] == serde_json::json!([{ "id": after }])
            || (list["result"].as_array().map(Vec::len) == Some(1)
                && list["result"][0]["id"] == after.as_str())
    })
    .await;
    let (status, _) = service.get(&format!("/v1.0/calls/{before}")).await;
    assert_eq!(status, 404);

    hangup(&ari, &after).await;
    service.stop().await;
}
