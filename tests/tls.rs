//! TLS both ways (SPEC §11): the service reaches an `https://` Asterisk (REST over TLS, events
//! over `wss://`) whose certificate a private CA signed, trusted through `ari.ca_file`; and it
//! serves HTTPS and WSS itself with `http.tls_cert` and `http.tls_key`.
//!
//! The sandbox Asterisk serves ARI over TLS too (scripts/asterisk-sandbox), with a certificate
//! for localhost signed by a CA it makes; `scripts/test` gives its URL and CA.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::audio::{describe, from_le, tone_share};
use common::client::Enc;
use common::*;
use futures::StreamExt;

/// Asterisk's ARI over TLS and the CA that signs its certificate. A test that cannot run
/// fails, never skips: scripts/test sets both for its sandbox.
fn ari_tls() -> (String, std::path::PathBuf) {
    match (
        std::env::var("MEDIASTREAM_TEST_ARI_TLS_URL"),
        std::env::var("MEDIASTREAM_TEST_ARI_CA"),
    ) {
        (Ok(url), Ok(ca)) => (url, ca.into()),
        _ => panic!(
            "MEDIASTREAM_TEST_ARI_TLS_URL and MEDIASTREAM_TEST_ARI_CA are needed: ARI over TLS \
             and its CA (scripts/test sets them for its sandbox)"
        ),
    }
}

#[tokio::test]
async fn asterisk_over_tls_with_a_private_ca() {
    let (url, ca) = ari_tls();
    // Without the CA, the certificate is refused: the service is not ready.
    let mut settings = test_settings();
    settings.ari.url = url.parse().expect("url");
    let untrusting = Service::start_unready(settings.clone()).await;
    eventually(Duration::from_secs(5), || async {
        untrusting
            .metric("mediastream_ari_connect_failures_total")
            .await
            >= 1.0
    })
    .await;
    let failures = untrusting
        .metric("mediastream_ari_connect_failures_total")
        .await;
    println!(
        "without ari.ca_file: /ready {}, {failures} connect failures",
        untrusting.ready().await
    );
    assert!(!untrusting.ready().await);
    assert!(failures >= 1.0);
    untrusting.stop().await;

    // With it: ready, and a stream works (set up over REST on TLS, followed over wss://).
    settings.ari.ca_file = Some(ca);
    let service = Service::start(settings).await;
    let call = call(&service, "tone").await;
    let mut client = stream(&service, &call, Enc::SlnSlin).await;
    client.listen(Duration::from_millis(700)).await;
    let (samples, _) = client.listen(Duration::from_secs(1)).await;
    let report = describe(&samples, &[1000.0]);
    println!("ARI over TLS: {report}");
    assert!(tone_share(&samples, 1000.0) > 0.8, "{report}");
    client.close().await;
    // The hangup reaches the service as an event over wss://.
    hangup(&ari().await, &call).await;
    eventually(Duration::from_secs(2), || async {
        service.get(&format!("/v1.0/calls/{call}")).await.0 == 404
    })
    .await;
    finish(service, &[]).await;
}

#[tokio::test]
async fn the_service_serves_https_and_wss() {
    let ca = common::tls::TestCa::new("serve");
    let mut settings = test_settings();
    settings.http.tls = Some(ari_mediastream::config::HttpTls {
        cert: ca.cert_file.clone(),
        key: ca.key_file.clone(),
    });
    let service = Service::start_unready(settings).await;
    let port = service.addr.port();
    let trust = ari_mediastream::tls::client_config(Some(&ca.ca_file)).expect("client config");
    let https = reqwest::Client::builder()
        .tls_backend_preconfigured(rustls::ClientConfig::clone(&trust))
        .build()
        .expect("client");
    eventually(Duration::from_secs(10), || async {
        https
            .get(format!("https://localhost:{port}/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let health = https
        .get(format!("https://localhost:{port}/health"))
        .send()
        .await
        .expect("https");
    println!("GET https://localhost:{port}/health: {}", health.status());
    assert_eq!(health.status(), 200);
    // Plain HTTP to the TLS port gets no answer.
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/health")).await;
    assert!(plain.is_err(), "{plain:?}");

    // A media stream over WSS hears its call.
    let call = originate(&ari().await, &service.app, "tone").await;
    eventually(Duration::from_secs(5), || async {
        https
            .get(format!("https://localhost:{port}/v1.0/calls/{call}"))
            .bearer_auth(API_KEY)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("tcp");
    let tls = tokio_rustls::TlsConnector::from(Arc::clone(&trust))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").expect("name"),
            tcp,
        )
        .await
        .expect("TLS");
    let url = format!(
        "wss://localhost:{port}/v1.0/calls/{call}/media_stream?{}&token={API_KEY}",
        Enc::SlnSlin.query()
    );
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls)
        .await
        .expect("upgrade");
    let mut audio = Vec::new();
    let end = tokio::time::Instant::now() + Duration::from_millis(1800);
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(end, ws.next()).await {
        if let tokio_tungstenite::tungstenite::Message::Binary(b) = message {
            audio.extend_from_slice(&b);
        }
    }
    let samples = from_le(&audio);
    let tail = &samples[samples.len().saturating_sub(8000)..];
    let report = describe(tail, &[1000.0]);
    println!("WSS stream: {} samples; {report}", samples.len());
    assert!(
        samples.len() > 12_000 && tone_share(tail, 1000.0) > 0.8,
        "{report}"
    );
    drop(ws);
    hangup(&ari().await, &call).await;
    service.stop().await;
}
