//! Churn: a thousand media streams and external medias opened and closed one after another on
//! sixteen calls (`loadgen --churn`), against the service and a real Asterisk. None may be
//! refused or fail, and nothing may be left behind: no `mediastream-` channel or bridge, no
//! stream still listed, no external media still running. And what a stream made is removed
//! even when Asterisk refuses the removal at first, as it does under heavy churn.

mod common;

use std::time::{Duration, Instant};

use common::client::Enc;
use common::proxy::AriProxy;
use common::{
    API_KEY, Service, ari_url, call, eventually, hangup, leftovers, stream, test_settings,
};

const CYCLES: u64 = 1000;
/// Cycles a second. Unthrottled (about 160 a second here), the sandbox Asterisk of a busy CI
/// machine has stalled: every new stream silent, then its HTTP session limit exceeded
/// (bench/README.md, "Churn and soak"). The test is about the service, not that limit.
const RATE: u32 = 50;

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
        .args(["--rate", &RATE.to_string()])
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

#[tokio::test]
async fn removals_asterisk_refused_are_tried_again() {
    let ari = common::ari().await;
    let proxy = AriProxy::in_front_of_asterisk().await;
    let service = Service::start(proxy.settings()).await;
    let id = call(&service, "tone").await;
    let mut client = stream(&service, &id, Enc::SlnSlin).await;
    client.listen(Duration::from_millis(200)).await;
    let made = leftovers(&service).await;
    assert!(!made.is_empty(), "the stream's channel and bridge");

    proxy.refuse_rest();
    client.close().await;
    // The first removals and at least one more try are refused.
    eventually(Duration::from_secs(5), || async {
        proxy.refused_rest() >= 2 * made.len() as u64
    })
    .await;
    assert!(
        !leftovers(&service).await.is_empty(),
        "nothing could be removed while Asterisk refused"
    );
    let restored = Instant::now();
    proxy.restore_rest();
    eventually(Duration::from_secs(15), || async {
        leftovers(&service).await.is_empty()
    })
    .await;
    println!(
        "{} requests refused; everything removed {:?} after Asterisk answered again",
        proxy.refused_rest(),
        restored.elapsed()
    );
    hangup(&ari, &id).await;
    service.stop().await;
}
