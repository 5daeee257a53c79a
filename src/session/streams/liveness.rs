//! Telling a dead Asterisk from a quiet call. When the ARI event socket drops, the service asks
//! Asterisk's REST interface whether it is still there: if it is (only the socket was cut),
//! streams keep their audio while the socket reconnects; if nothing answers, every stream ends
//! at once with 1011 and every external media is stopped, instead of staying open and silent
//! until Asterisk comes back.

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Streams;

/// How often, and how many times, Asterisk is asked before it is called unreachable.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);
const PROBES: u32 = 3;
/// How long one probe may take: a live Asterisk answers `asterisk/info` in milliseconds.
const PROBE_TIMEOUT: Duration = Duration::from_millis(700);

impl Streams {
    /// Follows the event socket (`connected`) until `cancel`, and sets `asterisk_down` while
    /// Asterisk does not answer.
    pub async fn watch_asterisk(
        &self,
        mut connected: watch::Receiver<bool>,
        cancel: CancellationToken,
    ) {
        loop {
            // Connected first, then lost.
            for want in [true, false] {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    up = connected.wait_for(|up| *up == want) => if up.is_err() { return },
                }
            }
            if self.asterisk_answers(&cancel).await {
                tracing::info!("the ARI event socket dropped; Asterisk still answers");
                continue;
            }
            tracing::error!("Asterisk does not answer: every stream ends");
            self.metrics.asterisk_lost.inc();
            self.asterisk_down.send_replace(true);
            self.stop_every_external_media().await;
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = connected.wait_for(|up| *up) => {}
            }
            self.asterisk_down.send_replace(false);
            tracing::info!("Asterisk answers again");
        }
    }

    /// Whether Asterisk answers its REST interface within a few probes.
    async fn asterisk_answers(&self, cancel: &CancellationToken) -> bool {
        for probe in 0..PROBES {
            if probe > 0 {
                tokio::select! {
                    _ = cancel.cancelled() => return true,
                    _ = tokio::time::sleep(PROBE_INTERVAL) => {}
                }
            }
            match tokio::time::timeout(PROBE_TIMEOUT, self.ari.asterisk_info()).await {
                Ok(Ok(_)) => return true,
                // It answered, if with an error: it is there.
                Ok(Err(e)) if !e.is_unreachable() => return true,
                _ => {}
            }
        }
        false
    }

    /// Ends when Asterisk is found unreachable.
    pub(super) async fn asterisk_lost(&self) {
        let mut down = self.asterisk_down.subscribe();
        let _ = down.wait_for(|down| *down).await;
    }

    async fn stop_every_external_media(&self) {
        let ids: Vec<uuid::Uuid> = self.external_medias().iter().map(|v| v.id).collect();
        let stops = ids.iter().map(|id| self.stop_external_media(*id));
        futures::future::join_all(stops).await;
    }
}
