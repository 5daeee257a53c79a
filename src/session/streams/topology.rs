//! How a stream's externalMedia channel is tied to a call, and how that tie follows the call
//! into and out of bridges (SPEC §5):
//! - **direct**: the call is in Stasis and in no bridge. The service's bridge holds the call
//!   itself and the externalMedia channel(s); all streams of the call share it, and the last
//!   one destroys it.
//! - **snoop**: the call is bridged elsewhere, or runs dialplan. A snoop channel (spy and
//!   whisper both) and the externalMedia channel share a private bridge. (Whisper needs frames
//!   to be written to the call, which only happens while it is bridged: hence direct when idle.)

use std::time::Duration;

use tokio::sync::mpsc;

use super::{Created, SetupError, Streams, internal_id, wait_stasis_start};
use crate::ari::Channel;
use crate::domain::external_media::Direction;
use crate::session::registry::Notice;

/// A call's bridge moves come as a leave then an enter: wait this long for the pair before
/// deciding what the call's state is.
const MOVE_SETTLE: Duration = Duration::from_millis(200);

/// How an attachment taps a call: the snoop's directions, and whether an idle call may be
/// bridged directly (only when it must hear the far side: a snoop cannot whisper into it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tap {
    pub spy: Direction,
    pub whisper: Direction,
}

impl Tap {
    /// A media stream hears both directions and speaks into both.
    pub const STREAM: Tap = Tap {
        spy: Direction::Both,
        whisper: Direction::Both,
    };

    fn direct_when_idle(self) -> bool {
        self.whisper != Direction::None
    }
}

impl Default for Tap {
    fn default() -> Self {
        Tap::STREAM
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum Topology {
    #[default]
    None,
    Direct,
    Snoop,
    Conference,
}

fn idle_in_stasis(channel: &Channel, bridge: Option<&String>) -> bool {
    channel.dialplan.app_name == "Stasis" && bridge.is_none()
}

impl Streams {
    /// Ties `em` to `call`, directly or through a snoop.
    pub(super) async fn attach_call(
        &self,
        call: &str,
        em: &str,
        key: u64,
        notices: &mpsc::UnboundedSender<Notice>,
        created: &mut Created,
    ) -> Result<(), SetupError> {
        let channel = self.ari.channel(call).await?;
        let serial = self.call_setup.lock().await;
        let shared = self.shared_bridge(call);
        let bridge = self.registry.bridge_of(call);
        let idle = idle_in_stasis(&channel, bridge.as_ref());
        if created.tap.direct_when_idle() && (shared.is_some() || idle) {
            self.attach_direct(call, em, key, notices, created).await
        } else {
            drop(serial);
            self.attach_snoop(call, em, key, notices, created).await
        }
    }

    fn shared_bridge(&self, call: &str) -> Option<String> {
        self.lock().call_bridges.get(call).map(|(b, _)| b.clone())
    }

    /// Joins the call's shared bridge, making it (with the call in it) if there is none.
    /// The caller holds `call_setup`.
    async fn attach_direct(
        &self,
        call: &str,
        em: &str,
        key: u64,
        notices: &mpsc::UnboundedSender<Notice>,
        created: &mut Created,
    ) -> Result<(), SetupError> {
        let bridge = match self.shared_bridge(call) {
            Some(bridge) => {
                self.take_call_bridge(call, created);
                bridge
            }
            None => {
                let bridge = internal_id("br");
                self.ari.create_bridge(&bridge, &self.app).await?;
                self.lock()
                    .call_bridges
                    .insert(call.to_owned(), (bridge.clone(), 0));
                self.take_call_bridge(call, created);
                self.ari.add_channel(&bridge, call).await?;
                bridge
            }
        };
        self.registry.watch(key, &bridge, notices.clone());
        self.ari.add_channel(&bridge, em).await?;
        created.topology = super::topology::Topology::Direct;
        Ok(())
    }

    /// A snoop on the call and a private bridge with `em`.
    async fn attach_snoop(
        &self,
        call: &str,
        em: &str,
        key: u64,
        notices: &mpsc::UnboundedSender<Notice>,
        created: &mut Created,
    ) -> Result<(), SetupError> {
        let snoop = internal_id("sn");
        created.snoop = Some(snoop.clone());
        let entered = self.registry.expect_stasis_start(&snoop);
        self.registry.watch(key, &snoop, notices.clone());
        self.ari
            .snoop(
                call,
                &snoop,
                &self.app,
                created.tap.spy.as_str(),
                created.tap.whisper.as_str(),
            )
            .await
            .inspect_err(|_| self.registry.cancel_stasis_start(&snoop))?;
        wait_stasis_start(entered, &snoop).await?;
        let bridge = internal_id("br");
        created.bridge = Some(bridge.clone());
        self.ari.create_bridge(&bridge, &self.app).await?;
        self.registry.watch(key, &bridge, notices.clone());
        self.ari.add_channel(&bridge, &snoop).await?;
        self.ari.add_channel(&bridge, em).await?;
        created.topology = Topology::Snoop;
        Ok(())
    }

    /// The call entered or left a bridge: re-tie the stream if its topology no longer fits.
    /// The client stays connected throughout; it may hear a short silence.
    pub(super) async fn follow(
        &self,
        call: &str,
        key: u64,
        notices: &mpsc::UnboundedSender<Notice>,
        created: &mut Created,
    ) -> Result<(), SetupError> {
        tokio::time::sleep(MOVE_SETTLE).await;
        let Some(em) = created.external_media.clone() else {
            return Ok(());
        };
        let serial = self.call_setup.lock().await;
        let bridge = self.registry.bridge_of(call);
        match created.topology {
            Topology::Direct if bridge.is_some() && bridge != self.shared_bridge(call) => {
                // Taken into someone else's bridge: listen through a snoop instead.
                drop(serial);
                tracing::info!(bridge = ?bridge, "call moved into a bridge: following through a snoop");
                if let Some(shared) = self.shared_bridge(call) {
                    let _ = self.ari.remove_channel(&shared, &em).await;
                }
                let released = self.release_call_bridge(created);
                self.attach_snoop(call, &em, key, notices, created).await?;
                self.destroy_bridges(released.into_iter().collect()).await;
            }
            Topology::Snoop if bridge.is_none() && created.tap.direct_when_idle() => {
                let channel = self.ari.channel(call).await?;
                if !idle_in_stasis(&channel, None) {
                    return Ok(());
                }
                // Back to idle: whisper would go nowhere; bridge the call itself.
                tracing::info!("call left its bridge: following it directly");
                let (snoop, private) = (created.snoop.take(), created.bridge.take());
                if let Some(private) = &private {
                    let _ = self.ari.remove_channel(private, &em).await;
                }
                self.attach_direct(call, &em, key, notices, created).await?;
                drop(serial);
                self.hang_up(snoop.into_iter().collect()).await;
                self.destroy_bridges(private.into_iter().collect()).await;
            }
            _ => {}
        }
        Ok(())
    }

    fn take_call_bridge(&self, call: &str, created: &mut Created) {
        if let Some((_, refs)) = self.lock().call_bridges.get_mut(call) {
            *refs += 1;
            created.shared_call_bridge = Some(call.to_owned());
        }
    }

    /// Gives up the stream's share of its call's bridge; the bridge to destroy if it was the
    /// last share.
    fn release_call_bridge(&self, created: &mut Created) -> Option<String> {
        let call = created.shared_call_bridge.take()?;
        let mut state = self.lock();
        let (bridge, refs) = state.call_bridges.get_mut(&call)?;
        *refs = refs.saturating_sub(1);
        if *refs > 0 {
            return None;
        }
        let bridge = bridge.clone();
        state.call_bridges.remove(&call);
        Some(bridge)
    }

    /// Removes what the stream created; every step is tried, failures are logged.
    pub(super) async fn teardown(&self, mut created: Created) {
        let mut bridges: Vec<String> = created.bridge.take().into_iter().collect();
        bridges.extend(self.release_call_bridge(&mut created));
        let channels = [created.external_media.take(), created.snoop.take()]
            .into_iter()
            .flatten()
            .collect();
        futures::future::join(self.hang_up(channels), self.destroy_bridges(bridges)).await;
    }

    async fn hang_up(&self, channels: Vec<String>) {
        let hangups = channels.iter().map(|id| async move {
            match self.ari.hangup(id).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => tracing::warn!(channel = %id, error = %e, "teardown: hangup failed"),
            }
        });
        futures::future::join_all(hangups).await;
    }

    async fn destroy_bridges(&self, bridges: Vec<String>) {
        let destroys = bridges.iter().map(|id| async move {
            match self.ari.destroy_bridge(id).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => tracing::warn!(bridge = %id, error = %e, "teardown: destroy failed"),
            }
        });
        futures::future::join_all(destroys).await;
    }
}
