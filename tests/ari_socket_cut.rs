//! The ARI event socket is cut while Asterisk stays up (a proxy between the service and
//! Asterisk drops the event WebSocket and refuses it for a while; REST still passes). Streams
//! keep their audio at 50 frames a second meanwhile; the service reconnects; a call hung up
//! during the cut ends its stream once the service has reconciled with Asterisk.

mod common;

use std::time::{Duration, Instant};

use common::client::Enc;
use common::proxy::AriProxy;
use common::*;

#[tokio::test]
async fn streams_keep_their_audio_while_the_event_socket_is_cut() {
    let proxy = AriProxy::in_front_of_asterisk().await;
    let service = Service::start(proxy.settings()).await;
    let kept = call(&service, "tone").await;
    let ended = call(&service, "tone").await;
    let mut keeps = stream(&service, &kept, Enc::RtpUlaw).await;
    let mut ends = stream(&service, &ended, Enc::AudioSocket).await;
    keeps.listen(Duration::from_millis(300)).await;
    ends.listen(Duration::from_millis(300)).await;

    proxy.cut();
    let cut = Instant::now();
    service.wait_ready(false).await;
    println!("/ready 503 {:?} after the cut", cut.elapsed());
    // The call hangs up while the service cannot hear of it.
    hangup(&ari().await, &ended).await;
    // What arrived meanwhile is read first; then the rate is measured.
    tokio::join!(
        keeps.listen(Duration::from_millis(200)),
        ends.listen(Duration::from_millis(200))
    );
    let ((_, frames), _) = tokio::join!(
        keeps.listen(Duration::from_secs(2)),
        ends.listen(Duration::from_secs(2))
    );
    println!("during the cut: {frames} frames in 2 s on the other call's stream");
    assert!(
        (95..=105).contains(&frames),
        "50 frames a second: {frames} in 2 s"
    );
    assert!(ends.close.is_none(), "nothing tells the service yet");

    proxy.restore();
    let restored = Instant::now();
    service.wait_ready(true).await;
    let reconnected = restored.elapsed();
    let close = ends.closed(Duration::from_secs(5)).await;
    println!(
        "after the restore: /ready 200 after {reconnected:?}; the hung-up call's stream closed \
         {close:?} {:?} after the restore",
        restored.elapsed()
    );
    assert_eq!(close.map(|c| c.0), Some(1000));
    keeps.listen(Duration::from_millis(200)).await;
    // Over three seconds, with the tolerance a busy machine needs.
    let (_, frames) = keeps.listen(Duration::from_secs(3)).await;
    assert!(
        (135..=165).contains(&frames),
        "still 50 a second: {frames} in 3 s"
    );
    assert!(keeps.close.is_none());
    keeps.close().await;
    finish(service, &[&kept]).await;
}
