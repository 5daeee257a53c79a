//! The ARI connection comes and goes: `/ready` follows it, the service keeps retrying, and
//! after each reconnect the registry matches Asterisk again.
//!
//! A TCP proxy owned by the test stands between the service and Asterisk, so the test can cut
//! and restore the connection without disturbing other tests that share the Asterisk.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Forwards every connection on `listen` to Asterisk until dropped; dropping cuts them all.
struct Proxy {
    tasks: JoinSet<()>,
}

impl Proxy {
    async fn start(listen: SocketAddr) -> Proxy {
        let upstream: SocketAddr = {
            let url: reqwest::Url = ari_url().parse().expect("url");
            tokio::net::lookup_host((
                url.host_str().expect("host").to_owned(),
                url.port_or_known_default().expect("port"),
            ))
            .await
            .expect("resolve")
            .next()
            .expect("an address")
        };
        let listener = TcpListener::bind(listen).await.expect("proxy binds");
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                conns.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Proxy { tasks }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

async fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr")
}

#[tokio::test]
async fn ready_follows_the_ari_connection_and_the_registry_heals() {
    let ari = ari().await;
    let proxy_addr = free_port().await;
    let mut settings = test_settings();
    settings.ari.url = format!("http://{proxy_addr}").parse().expect("url");

    // Asterisk unreachable at start: not ready, and retrying.
    let service = Service::start_unready(settings).await;
    assert!(!service.ready().await);
    eventually(Duration::from_secs(10), || async {
        service
            .metric("mediastream_ari_connect_failures_total")
            .await
            >= 2.0
    })
    .await;
    assert!(
        !service.ready().await,
        "still not ready while Asterisk is away"
    );
    let (status, body) = service.get("/v1.0/calls/anything").await;
    assert_eq!((status, reason(&body)), (503, "ASTERISK_UNAVAILABLE"));

    // Asterisk appears: ready, and calls are followed.
    let proxy = Proxy::start(proxy_addr).await;
    service.wait_ready(true).await;
    let stays = originate(&ari, &service.app, "silence").await;
    let goes = originate(&ari, &service.app, "silence").await;
    let listed = || async {
        let (_, list) = service.get("/v1.0/calls").await;
        let mut ids: Vec<String> = list["result"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    };
    let mut both = vec![stays.clone(), goes.clone()];
    both.sort();
    eventually(Duration::from_secs(5), || async { listed().await == both }).await;

    // The connection drops; a call ends while the service cannot see it.
    drop(proxy);
    service.wait_ready(false).await;
    hangup(&ari, &goes).await;
    assert_eq!(
        listed().await,
        both,
        "the last known state is kept while disconnected"
    );

    // Back: the reconnect reconciles, and the vanished call is gone.
    let _proxy = Proxy::start(proxy_addr).await;
    service.wait_ready(true).await;
    eventually(Duration::from_secs(5), || async {
        listed().await == vec![stays.clone()]
    })
    .await;
    assert!(service.metric("mediastream_ari_reconnects_total").await >= 1.0);

    hangup(&ari, &stays).await;
    service.stop().await;
}

/// ARI entirely out of reach (REST too), Asterisk alive: a stream whose audio flows goes on; one
/// whose call hangs up meanwhile ends (1011) when its audio stops, and what it made in Asterisk
/// is removed once ARI answers again.
#[tokio::test]
async fn streams_keep_flowing_while_ari_is_away_and_end_if_their_call_went_meanwhile() {
    let ari = ari().await;
    let proxy_addr = free_port().await;
    let mut settings = test_settings();
    settings.ari.url = format!("http://{proxy_addr}").parse().expect("url");
    let proxy = Proxy::start(proxy_addr).await;
    let service = Service::start(settings).await;
    let id = call(&service, "tone").await;
    let mut client = stream(&service, &id, common::client::Enc::SlnSlin).await;
    client.listen(Duration::from_millis(500)).await;

    drop(proxy);
    service.wait_ready(false).await;
    let (_, messages) = client.listen(Duration::from_secs(1)).await;
    assert!(
        messages >= 45,
        "media does not go through ARI: {messages} messages in 1 s"
    );

    // The call ends while the service cannot ask Asterisk anything: its stream's audio stops,
    // and with ARI out of reach the service cannot tell a hangup from a crash. It closes the
    // stream as a failure rather than leave it open and silent.
    hangup(&ari, &id).await;
    let close = client
        .closed(Duration::from_secs(3))
        .await
        .expect("closed once its audio stopped");
    assert_eq!(close.0, 1011, "{close:?}");
    // Its objects could not be removed meanwhile: they are, once ARI answers again.
    assert!(
        !leftovers(&service).await.is_empty(),
        "nothing could be removed yet"
    );
    let _proxy = Proxy::start(proxy_addr).await;
    service.wait_ready(true).await;
    eventually(Duration::from_secs(2), || async {
        leftovers(&service).await.is_empty()
    })
    .await;
    service.stop().await;
}
