//! How a stream's or external media's externalMedia channel is tied to a call, and how that
//! tie follows the call into and out of bridges (SPEC §5):
//! - **direct**: the call is in Stasis and in no bridge. The service's bridge holds the call
//!   itself and the externalMedia channel(s); every attachment of the call shares it, and the
//!   last one destroys it.
//! - **snoop**: the call is bridged elsewhere, or runs dialplan. A snoop channel and the
//!   externalMedia channel share a private bridge. (Whisper needs frames to be written to the
//!   call, which only happens while it is bridged: hence direct when idle.)
//!
//! Every object is recorded in [`Created`] before the request that makes it, and an object
//! being replaced is moved to the `doomed` lists before anything is awaited: whatever point a
//! change is cancelled at, teardown still finds everything.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{Created, SetupError, Streams, internal_id, wait_stasis_start};
use crate::ari::{AriErrorKind, Channel};
use crate::domain::CallId;
use crate::domain::external_media::Direction;
use crate::session::registry::{GONE_TIMEOUT, Notice, SessionError};

/// A call's bridge moves come as a leave then an enter: wait this long for the pair before
/// deciding what the call's state is.
pub(super) const MOVE_SETTLE: Duration = Duration::from_millis(200);

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

fn in_stasis(channel: &Channel) -> bool {
    channel.dialplan.app_name == "Stasis"
}

type CallGuard = tokio::sync::OwnedMutexGuard<()>;

impl Streams {
    /// Serialises changes to one call's ties (they read, then change, both Asterisk and the
    /// shared-bridge table); other calls go on meanwhile.
    async fn lock_call(&self, call: &str) -> CallGuard {
        let lock = {
            let mut locks = self.call_locks.lock().unwrap_or_else(|p| p.into_inner());
            // Forget the locks nobody holds or waits for.
            locks.retain(|_, l| Arc::strong_count(l) > 1);
            locks.entry(call.to_owned()).or_default().clone()
        };
        lock.lock_owned().await
    }

    async fn call_channel(&self, call: &str) -> Result<Channel, SetupError> {
        self.ari.channel(call).await.map_err(|e| {
            if e.is_not_found() {
                CallId::parse(call)
                    .map(|id| SetupError::Session(SessionError::CallNotFound(id)))
                    .unwrap_or(SetupError::Asterisk(e))
            } else {
                SetupError::Asterisk(e)
            }
        })
    }

    /// Ties `em` to `call`, directly or through a snoop.
    pub(super) async fn attach_call(
        &self,
        call: &str,
        em: &str,
        key: u64,
        notices: &mpsc::UnboundedSender<Notice>,
        created: &mut Created,
    ) -> Result<(), SetupError> {
        let channel = self.call_channel(call).await?;
        let _guard = self.lock_call(call).await;
        let now_in = self.registry.bridge_of(call);
        let shared = self.shared_bridge(call);
        let idle_or_ours = now_in.is_none() || (now_in.is_some() && now_in == shared);
        if created.tap.direct_when_idle() && in_stasis(&channel) && idle_or_ours {
            self.attach_direct(call, em, key, notices, created).await
        } else {
            self.attach_snoop(call, em, key, notices, created).await
        }
    }

    fn shared_bridge(&self, call: &str) -> Option<String> {
        self.lock().call_bridges.get(call).map(|(b, _)| b.clone())
    }

    /// Joins the call's shared bridge, making it (with the call in it) if there is none, and
    /// putting the call back in if it was taken out. The caller holds the call's lock.
    async fn attach_direct(
        &self,
        call: &str,
        em: &str,
        key: u64,
        notices: &mpsc::UnboundedSender<Notice>,
        created: &mut Created,
    ) -> Result<(), SetupError> {
        let bridge = match self.shared_bridge(call) {
            Some(bridge) => bridge,
            None => {
                let bridge = internal_id("br");
                self.lock()
                    .call_bridges
                    .insert(call.to_owned(), (bridge.clone(), 0));
                bridge
            }
        };
        self.take_call_bridge(call, created);
        if self.registry.bridge_of(call).as_ref() != Some(&bridge) {
            match self.ari.create_bridge(&bridge, &self.app).await {
                Ok(_) => {}
                // It exists already: the call was taken out of it, not the bridge destroyed.
                Err(e) if e.kind() == AriErrorKind::WrongState => {}
                Err(e) => return Err(e.into()),
            }
            self.ari.add_channel(&bridge, call).await?;
        }
        self.registry.watch(key, &bridge, notices.clone());
        self.ari.add_channel(&bridge, em).await?;
        created.topology = Topology::Direct;
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
        self.registry.watch(key, &snoop, notices.clone());
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

    /// The call entered or left a bridge (and [`MOVE_SETTLE`] has passed): re-tie the
    /// attachment if its topology no longer fits. The client stays connected throughout; it may
    /// hear a short silence.
    pub(super) async fn follow(
        &self,
        call: &str,
        key: u64,
        notices: &mpsc::UnboundedSender<Notice>,
        created: &mut Created,
    ) -> Result<(), SetupError> {
        let Some(em) = created.external_media.clone() else {
            return Ok(());
        };
        let _guard = self.lock_call(call).await;
        let now_in = self.registry.bridge_of(call);
        match created.topology {
            Topology::Direct => {
                let shared = created.shared.as_ref().map(|(_, b)| b.clone());
                if now_in.is_some() && now_in == shared {
                    return Ok(());
                }
                let channel = self.call_channel(call).await?;
                if now_in.is_none() && in_stasis(&channel) {
                    // Taken out of the service's bridge and left idle: put it back.
                    tracing::info!("call left the stream's bridge: bridging it again");
                    self.attach_direct(call, &em, key, notices, created).await
                } else {
                    // In someone else's bridge, or back in dialplan: listen through a snoop.
                    tracing::info!(bridge = ?now_in, "call moved: following through a snoop");
                    if let Some((_, shared)) = &created.shared {
                        let _ = self.ari.remove_channel(shared, &em).await;
                    }
                    if let Some(bridge) = self.release_call_bridge(created) {
                        created.doomed_bridges.push(bridge);
                    }
                    let attached = self.attach_snoop(call, &em, key, notices, created).await;
                    self.remove_doomed(created).await;
                    attached
                }
            }
            Topology::Snoop if now_in.is_none() && created.tap.direct_when_idle() => {
                let channel = self.call_channel(call).await?;
                if !in_stasis(&channel) {
                    return Ok(());
                }
                // Back to idle: whisper would go nowhere; bridge the call itself.
                tracing::info!("call left its bridge: following it directly");
                created.doomed_channels.extend(created.snoop.take());
                created.doomed_bridges.extend(created.bridge.take());
                if let Some(private) = created.doomed_bridges.last() {
                    let _ = self.ari.remove_channel(private, &em).await;
                }
                let attached = self.attach_direct(call, &em, key, notices, created).await;
                self.remove_doomed(created).await;
                attached
            }
            _ => Ok(()),
        }
    }

    /// After a settle: follows the call (if any), then puts the externalMedia channel back
    /// into the bridge its topology says, should someone else have taken it out.
    pub(super) async fn retie(
        &self,
        call: Option<&str>,
        conference: Option<&str>,
        key: u64,
        notices: &mpsc::UnboundedSender<Notice>,
        created: &mut Created,
    ) -> Result<(), SetupError> {
        if let Some(call) = call {
            self.follow(call, key, notices, created).await?;
        }
        let Some(em) = created.external_media.clone() else {
            return Ok(());
        };
        let expected = match created.topology {
            Topology::Direct => created.shared.as_ref().map(|(_, bridge)| bridge.clone()),
            Topology::Snoop => created.bridge.clone(),
            Topology::Conference => conference.map(str::to_owned),
            Topology::None => None,
        };
        let Some(expected) = expected else {
            return Ok(());
        };
        if self.registry.bridge_of(&em).as_ref() == Some(&expected) {
            return Ok(());
        }
        tracing::info!(bridge = %expected, "media channel taken out of its bridge: putting it back");
        match self.ari.add_channel(&expected, &em).await {
            Ok(()) => Ok(()),
            // Back in already (the events were behind).
            Err(e) if e.kind() == AriErrorKind::WrongState => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn take_call_bridge(&self, call: &str, created: &mut Created) {
        if created.shared.is_some() {
            return;
        }
        if let Some((bridge, refs)) = self.lock().call_bridges.get_mut(call) {
            *refs += 1;
            created.shared = Some((call.to_owned(), bridge.clone()));
        }
    }

    /// Gives up the attachment's share of its call's bridge; the bridge to destroy if it was
    /// the last share.
    fn release_call_bridge(&self, created: &mut Created) -> Option<String> {
        let (call, bridge) = created.shared.take()?;
        let mut state = self.lock();
        let (current, refs) = state.call_bridges.get_mut(&call)?;
        if *current != bridge {
            return None;
        }
        *refs = refs.saturating_sub(1);
        if *refs > 0 {
            return None;
        }
        state.call_bridges.remove(&call);
        Some(bridge)
    }

    /// The shared bridge of a call is gone (destroyed by someone): forget it, so that the next
    /// attachment makes a new one.
    pub(super) fn forget_call_bridge(&self, bridge: &str) {
        self.lock().call_bridges.retain(|_, (b, _)| b != bridge);
    }

    async fn remove_doomed(&self, created: &mut Created) {
        let channels = std::mem::take(&mut created.doomed_channels);
        let bridges = std::mem::take(&mut created.doomed_bridges);
        self.remove(channels, bridges).await;
    }

    /// Removes what the attachment created; every step is tried, failures are logged.
    pub(super) async fn teardown(&self, mut created: Created) {
        let mut bridges = std::mem::take(&mut created.doomed_bridges);
        bridges.extend(created.bridge.take());
        bridges.extend(self.release_call_bridge(&mut created));
        let mut channels = std::mem::take(&mut created.doomed_channels);
        channels.extend(created.external_media.take());
        channels.extend(created.snoop.take());
        self.remove(channels, bridges).await;
    }

    /// Hangs up `channels` and destroys `bridges`, all at once, and returns once Asterisk has
    /// reported them gone (ARI answers a removal before it is complete), or after
    /// [`GONE_TIMEOUT`]. One already gone is fine; other failures are logged.
    async fn remove(&self, channels: Vec<String>, bridges: Vec<String>) {
        let all: Vec<String> = channels.iter().chain(&bridges).cloned().collect();
        let mut gone = self.registry.expect_gone(&all);
        let hangups = channels
            .iter()
            .map(|id| async move { (id, "channel", self.ari.hangup(id).await) });
        let destroys = bridges
            .iter()
            .map(|id| async move { (id, "bridge", self.ari.destroy_bridge(id).await) });
        let (hung_up, destroyed) = futures::future::join(
            futures::future::join_all(hangups),
            futures::future::join_all(destroys),
        )
        .await;
        for (id, what, result) in hung_up.into_iter().chain(destroyed) {
            if let Err(e) = result {
                // Nothing will report it gone: it was not there, or it stays.
                gone.skip(id);
                if !e.is_not_found() {
                    tracing::warn!(what, %id, error = %e, "teardown: removal failed");
                }
            }
        }
        gone.wait(&self.registry, GONE_TIMEOUT).await;
    }
}
