//! Churn: a thousand media streams and external medias opened and closed one after another on
//! sixteen calls (`loadgen --churn`), against the service and a real Asterisk. None may be
//! refused or fail, and nothing may be left behind: no `mediastream-` channel or bridge, no
//! stream still listed, no external media still running.

mod common;

use std::time::{Duration, Instant};

use common::{API_KEY, Service, ari_url, leftovers, test_settings};

const CYCLES: u64 = 1000;

#[tokio::test]
async fn a_thousand_opens_and_closes_leave_nothing_behind() {
    common::ari().await;
    let service = Service::start(test_settings()).await;
    let started = Instant::now();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--service", &service.addr.to_string()])
        .args(["--token", API_KEY])
        .args(["--app", &service.app])
        .args(["--ari-url", &ari_url()])
        .args([
            "--ari-user",
            &std::env::var("MEDIASTREAM_TEST_ARI_USER").unwrap_or_else(|_| "mediastream".into()),
        ])
        .args([
            "--ari-password",
            &std::env::var("MEDIASTREAM_TEST_ARI_PASSWORD")
                .unwrap_or_else(|_| "mediastream".into()),
        ])
        .args(["--churn", &CYCLES.to_string()])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the churn ends within 4 minutes")
        .expect("loadgen runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    println!("churn of {CYCLES} cycles took {:?}", started.elapsed());

    let report: serde_json::Value = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("the report is JSON"))
        .expect("a JSON report line");
    assert_eq!(report["failed_opens"], 0, "{report}");
    assert_eq!(report["orphans"], 0, "{report}");
    assert_eq!(report["failed"], serde_json::json!({}), "{report}");
    assert_eq!(report["completed"], CYCLES, "{report}");
    assert!(output.status.success(), "loadgen exited {}", output.status);

    // The test's own look, through the service and Asterisk.
    assert!(
        leftovers(&service).await.is_empty(),
        "channels or bridges left"
    );
    let (status, streams) = service.get("/v1.0/media_streams").await;
    assert_eq!(status, 200);
    assert_eq!(streams["result"], serde_json::json!([]), "streams left");
    let (_, externals) = service.get("/v1.0/external_medias").await;
    assert!(
        externals["result"]
            .as_array()
            .expect("a list")
            .iter()
            .all(|e| e["status"] == "terminated"),
        "external medias left running: {externals}"
    );
    service.stop().await;
}
