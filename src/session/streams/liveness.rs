//! Telling a dead Asterisk from a quiet call. When the ARI event socket drops, the service asks
//! Asterisk's REST interface whether it is still there. If it is (only the socket was cut),
//! streams keep their audio while the socket reconnects. If nothing answers, every stream is
//! told so, and one whose leg has gone quiet too ends with 1011 ([`Signal::AsteriskUnreachable`]
//! in the stream core): a dead Asterisk sends no audio, while one merely out of ARI's reach
//! still does, and its streams go on.
//!
//! [`Signal::AsteriskUnreachable`]: crate::relay::stream::Signal::AsteriskUnreachable

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Streams;

/// How often, and how many times, Asterisk is asked before it is called unreachable.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);
const PROBES: u32 = 3;
/// How often what teardowns could not remove is tried again while the event socket stays up.
const UNREMOVED_SWEEP: Duration = Duration::from_secs(30);
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
            // Connected first: what teardowns left while Asterisk did not answer goes now.
            tokio::select! {
                _ = cancel.cancelled() => return,
                up = connected.wait_for(|up| *up) => if up.is_err() { return },
            }
            self.attachments.remove_unremoved().await;
            // Then lost. Meanwhile, what a long stall of a connected Asterisk (its HTTP sessions
            // exhausted for minutes) left past the teardowns' retries is tried again now and
            // then.
            let mut sweep = tokio::time::interval(UNREMOVED_SWEEP);
            sweep.tick().await;
            loop {
                let lost = tokio::select! {
                    _ = cancel.cancelled() => return,
                    down = connected.wait_for(|up| !*up) => Some(down.is_ok()),
                    _ = sweep.tick() => None,
                };
                match lost {
                    Some(true) => break,
                    Some(false) => return,
                    None => self.attachments.remove_unremoved().await,
                }
            }
            if self.asterisk_answers(&cancel).await {
                tracing::info!("the ARI event socket dropped; Asterisk still answers");
                continue;
            }
            tracing::error!("Asterisk does not answer: streams whose audio stopped end");
            self.metrics.asterisk_lost.inc();
            self.asterisk_down.send_replace(true);
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
}
