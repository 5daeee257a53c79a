//! How an attachment's channel is tied to its call or conference, and how the tie follows the
//! call into and out of bridges (SPEC §5):
//! - **direct**: the call is in Stasis and in no bridge. The service's bridge holds the call
//!   itself and the externalMedia channel(s); every direct attachment of the call shares it,
//!   and the last one destroys it.
//! - **snoop**: the call is bridged elsewhere, or runs dialplan. A snoop channel and the
//!   externalMedia channel share a private bridge. (Whisper needs frames to be written to the
//!   call, which only happens while it is bridged: hence direct when idle.)
//! - **conference**: the externalMedia channel joins the conference's own bridge.

use std::sync::Arc;
use std::time::Duration;

use super::removal::Object;
use super::{Attachment, Attachments, internal_id, lock, wait_stasis_start};
use crate::ari::{AriErrorKind, Channel};
use crate::domain::external_media::Direction;
use crate::domain::{CallId, ConferenceId, Resource};
use crate::session::registry::SessionError;

/// A call's bridge moves come as a leave then an enter: wait this long for the pair before
/// deciding what the call's state is.
pub const MOVE_SETTLE: Duration = Duration::from_millis(200);

/// How an attachment taps a call: the snoop's directions. Whether it speaks also decides
/// whether an idle call is bridged directly (a snoop cannot whisper into an idle call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tap {
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

/// The two ways a call is tied; a conference has only one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    Direct,
    Snoop,
}

/// Which tie fits a call: direct while the call is idle in Stasis — in no bridge, or in the
/// service's own bridge for it (`shared`) — and the attachment speaks; a snoop otherwise. The
/// one place this is decided, for the first tie and after every move.
pub fn fitting(tap: Tap, in_stasis: bool, now_in: Option<&str>, shared: Option<&str>) -> Way {
    let idle_or_ours = now_in.is_none() || now_in == shared;
    if tap.direct_when_idle() && in_stasis && idle_or_ours {
        Way::Direct
    } else {
        Way::Snoop
    }
}

/// Whether a call that moved (it is now in `now_in`) may no longer fit its `tie`, so that its
/// state must be read: a direct tie whose bridge the call left, or a snoop on a call that left
/// every bridge while the attachment speaks. Otherwise the tie stands as it is.
pub fn may_not_fit(tie: Option<&Tie>, tap: Tap, now_in: Option<&str>) -> bool {
    match tie {
        Some(Tie::Direct { bridge, .. }) => now_in != Some(bridge.as_str()),
        Some(Tie::Snoop { .. }) => now_in.is_none() && tap.direct_when_idle(),
        Some(Tie::Conference { .. }) => false,
        None => true,
    }
}

/// How the channel is tied; each names the bridge the channel belongs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tie {
    /// The channel and the call itself in the call's shared bridge, of which the attachment
    /// holds a share.
    Direct { call: CallId, bridge: String },
    /// A snoop on the call and the channel in a private bridge.
    Snoop { snoop: String, bridge: String },
    /// The channel in the conference's bridge, which is not the attachment's.
    Conference { bridge: ConferenceId },
}

impl Tie {
    /// The bridge the channel belongs in.
    pub fn bridge(&self) -> &str {
        match self {
            Tie::Direct { bridge, .. } | Tie::Snoop { bridge, .. } => bridge,
            Tie::Conference { bridge } => bridge.as_str(),
        }
    }

    /// Whether `id` is one of the tie's own objects.
    pub fn owns(&self, id: &str) -> bool {
        match self {
            Tie::Direct { bridge, .. } => bridge == id,
            Tie::Snoop { snoop, bridge } => snoop == id || bridge == id,
            Tie::Conference { .. } => false,
        }
    }
}

/// A call's shared bridge, and how many attachments hold a share of it.
#[derive(Debug)]
pub struct Shared {
    bridge: String,
    shares: usize,
}

fn in_stasis(channel: &Channel) -> bool {
    channel.dialplan.app_name == "Stasis"
}

impl Attachments {
    /// Serialises changes to one call's ties (they read, then change, both Asterisk and the
    /// shared bridges); other calls go on meanwhile.
    async fn lock_call(&self, call: &CallId) -> tokio::sync::OwnedMutexGuard<()> {
        let call_lock = {
            let mut locks = lock(&self.call_locks);
            // Forget the locks nobody holds or waits for.
            locks.retain(|_, l| Arc::strong_count(l) > 1);
            locks.entry(call.clone()).or_default().clone()
        };
        call_lock.lock_owned().await
    }

    async fn call_channel(&self, call: &CallId) -> Result<Channel, SessionError> {
        self.ari.channel(call.as_str()).await.map_err(|e| {
            if e.is_not_found() {
                SessionError::CallNotFound(call.clone())
            } else {
                e.into()
            }
        })
    }

    /// Events of a call owned by another application (hangup, DTMF, bridge moves) come only
    /// with a subscription.
    async fn subscribe_call(&self, call: &CallId) {
        let source = format!("channel:{call}");
        if let Err(e) = self.ari.subscribe(&self.app, &source).await {
            tracing::debug!(error = %e, "subscribing to the call's events");
        }
    }

    fn shared_bridge(&self, call: &CallId) -> Option<String> {
        lock(&self.shared).get(call).map(|s| s.bridge.clone())
    }

    /// Takes a share of the call's bridge, naming a new one if it has none.
    fn take_share(&self, call: &CallId) -> String {
        let mut shared = lock(&self.shared);
        let entry = shared.entry(call.clone()).or_insert_with(|| Shared {
            bridge: internal_id("br"),
            shares: 0,
        });
        entry.shares += 1;
        entry.bridge.clone()
    }

    /// Gives back a share of the call's bridge; the bridge to destroy if it was the last.
    fn release_share(&self, call: &CallId, bridge: &str) -> Option<String> {
        let mut shared = lock(&self.shared);
        let entry = shared.get_mut(call)?;
        if entry.bridge != bridge {
            return None;
        }
        entry.shares = entry.shares.saturating_sub(1);
        if entry.shares > 0 {
            return None;
        }
        shared.remove(call);
        Some(bridge.to_owned())
    }

    /// Forgets a call's shared bridge that is gone.
    fn forget_shared(&self, bridge: &str) {
        lock(&self.shared).retain(|_, s| s.bridge != bridge);
    }
}

impl Attachment<'_> {
    /// Ties the channel, which has entered the application, to its call or conference.
    pub(super) async fn tie(&mut self) -> Result<(), SessionError> {
        let all = self.all;
        let call = match &self.resource {
            Resource::Conference(id) => {
                self.watch(id.as_str());
                self.core.set_tie(Tie::Conference { bridge: id.clone() });
                all.ari
                    .add_channel(id.as_str(), self.core.channel())
                    .await?;
                return Ok(());
            }
            Resource::Call(id) => id.clone(),
        };
        self.watch(call.as_str());
        all.subscribe_call(&call).await;
        let channel = all.call_channel(&call).await?;
        let _guard = all.lock_call(&call).await;
        let now_in = all.registry.bridge_of(call.as_str());
        let shared = all.shared_bridge(&call);
        match fitting(
            self.tap,
            in_stasis(&channel),
            now_in.as_deref(),
            shared.as_deref(),
        ) {
            Way::Direct => self.tie_direct(&call).await,
            Way::Snoop => self.tie_snoop(&call).await,
        }
    }

    /// Joins the call's shared bridge, making it (with the call in it) if there is none, and
    /// putting the call back in if it was taken out. The caller holds the call's lock.
    async fn tie_direct(&mut self, call: &CallId) -> Result<(), SessionError> {
        let all = self.all;
        let bridge = match self.core.tie() {
            Some(Tie::Direct { bridge, .. }) => bridge.clone(),
            _ => {
                let bridge = all.take_share(call);
                self.core.set_tie(Tie::Direct {
                    call: call.clone(),
                    bridge: bridge.clone(),
                });
                bridge
            }
        };
        if all.registry.bridge_of(call.as_str()).as_ref() != Some(&bridge) {
            match all.ari.create_bridge(&bridge, &all.app).await {
                Ok(_) => {}
                // It exists already: the call was taken out of it, not the bridge destroyed.
                Err(e) if e.kind() == AriErrorKind::WrongState => {}
                Err(e) => return Err(e.into()),
            }
            all.ari.add_channel(&bridge, call.as_str()).await?;
        }
        self.watch(&bridge);
        all.ari.add_channel(&bridge, self.core.channel()).await?;
        Ok(())
    }

    /// A snoop on the call and a private bridge with the channel.
    async fn tie_snoop(&mut self, call: &CallId) -> Result<(), SessionError> {
        let all = self.all;
        let (snoop, bridge) = (internal_id("sn"), internal_id("br"));
        self.core.set_tie(Tie::Snoop {
            snoop: snoop.clone(),
            bridge: bridge.clone(),
        });
        let entered = all.registry.expect_stasis_start(&snoop);
        let (spy, whisper) = (self.tap.spy.as_str(), self.tap.whisper.as_str());
        all.ari
            .snoop(call.as_str(), &snoop, &all.app, spy, whisper)
            .await
            .inspect_err(|_| all.registry.cancel_stasis_start(&snoop))?;
        self.watch(&snoop);
        wait_stasis_start(entered, &snoop).await?;
        all.ari.create_bridge(&bridge, &all.app).await?;
        self.watch(&bridge);
        all.ari.add_channel(&bridge, &snoop).await?;
        all.ari.add_channel(&bridge, self.core.channel()).await?;
        Ok(())
    }

    /// The call entered or left a bridge (and the move has settled): re-ties the channel if
    /// its tie no longer fits. The client stays connected throughout; it may hear a short
    /// silence.
    pub(super) async fn follow_call(&mut self, call: &CallId) -> Result<(), SessionError> {
        let all = self.all;
        let _guard = all.lock_call(call).await;
        let now_in = all.registry.bridge_of(call.as_str());
        if !may_not_fit(self.core.tie(), self.tap, now_in.as_deref()) {
            return Ok(());
        }
        let in_stasis = in_stasis(&all.call_channel(call).await?);
        let shared = all.shared_bridge(call);
        let way = fitting(self.tap, in_stasis, now_in.as_deref(), shared.as_deref());
        let channel = self.core.channel().to_owned();
        match (self.core.tie(), way) {
            (Some(Tie::Direct { .. }), Way::Direct) => {
                // Taken out of the service's bridge and left idle: put it back.
                tracing::info!("call left the stream's bridge: bridging it again");
                self.tie_direct(call).await
            }
            (Some(Tie::Direct { bridge, .. }), Way::Snoop) => {
                // In someone else's bridge, or back in dialplan: listen through a snoop.
                tracing::info!(bridge = ?now_in, "call moved: following through a snoop");
                let _ = all.ari.remove_channel(bridge, &channel).await;
                self.retire();
                let tied = self.tie_snoop(call).await;
                self.remove_doomed().await;
                tied
            }
            (Some(Tie::Snoop { bridge, .. }), Way::Direct) => {
                // Back to idle: whisper would go nowhere; bridge the call itself.
                tracing::info!("call left its bridge: following it directly");
                let private = bridge.clone();
                self.retire();
                let _ = all.ari.remove_channel(&private, &channel).await;
                let tied = self.tie_direct(call).await;
                self.remove_doomed().await;
                tied
            }
            _ => Ok(()),
        }
    }

    /// One of the attachment's objects is gone. A call's shared bridge destroyed by someone is
    /// forgotten, so that the call's next attachment makes a new one.
    pub(super) fn lost(&self, id: &str) {
        if let Some(Tie::Direct { bridge, .. }) = self.core.tie()
            && bridge == id
        {
            self.all.forget_shared(bridge);
        }
    }

    /// Moves the tie's own objects to the doomed ones: a share of a shared bridge is given
    /// back, and the bridge doomed only with its last share. Awaits nothing, so that no object
    /// is lost if what follows is cut short.
    pub(super) fn retire(&mut self) {
        match self.core.take_tie() {
            Some(Tie::Direct { call, bridge }) => {
                let last = self.all.release_share(&call, &bridge);
                self.doomed.extend(last.map(|b| (b, Object::Bridge)));
            }
            Some(Tie::Snoop { snoop, bridge }) => {
                self.doomed.push((snoop, Object::Channel));
                self.doomed.push((bridge, Object::Bridge));
            }
            Some(Tie::Conference { .. }) | None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attachments() -> Attachments {
        Attachments::new(
            Arc::new(crate::session::registry::unconnected()),
            "cap".into(),
            tokio_util::sync::CancellationToken::new(),
            tokio::sync::watch::channel(false).1,
        )
    }

    #[test]
    fn the_last_share_of_a_call_bridge_dooms_it() {
        let all = attachments();
        let call = CallId::parse("c1").expect("id");
        let first = all.take_share(&call);
        assert_eq!(all.take_share(&call), first);
        assert_eq!(all.release_share(&call, &first), None);
        assert_eq!(all.release_share(&call, &first), Some(first.clone()));
        assert_ne!(
            all.take_share(&call),
            first,
            "a new bridge after the last share"
        );
    }

    #[test]
    fn a_forgotten_bridge_is_not_destroyed_by_its_shares() {
        let all = attachments();
        let call = CallId::parse("c1").expect("id");
        let bridge = all.take_share(&call);
        all.forget_shared(&bridge);
        assert_eq!(all.release_share(&call, &bridge), None);
    }

    const LISTEN: Tap = Tap {
        spy: Direction::Both,
        whisper: Direction::None,
    };

    #[test]
    fn an_idle_call_is_tied_directly_when_the_attachment_speaks() {
        assert_eq!(fitting(Tap::STREAM, true, None, None), Way::Direct);
        // In the service's own bridge for it (another attachment's): joined there.
        assert_eq!(
            fitting(Tap::STREAM, true, Some("ours"), Some("ours")),
            Way::Direct
        );
        // In someone else's bridge, in dialplan, or heard only: a snoop.
        assert_eq!(
            fitting(Tap::STREAM, true, Some("theirs"), Some("ours")),
            Way::Snoop
        );
        assert_eq!(fitting(Tap::STREAM, false, None, None), Way::Snoop);
        assert_eq!(fitting(LISTEN, true, None, None), Way::Snoop);
    }

    #[test]
    fn a_tie_is_read_again_only_when_a_move_may_have_broken_it() {
        let direct = Tie::Direct {
            call: CallId::parse("c1").expect("id"),
            bridge: "ours".into(),
        };
        assert!(!may_not_fit(Some(&direct), Tap::STREAM, Some("ours")));
        assert!(may_not_fit(Some(&direct), Tap::STREAM, None));
        assert!(may_not_fit(Some(&direct), Tap::STREAM, Some("theirs")));
        let snoop = Tie::Snoop {
            snoop: "sn".into(),
            bridge: "br".into(),
        };
        assert!(!may_not_fit(Some(&snoop), Tap::STREAM, Some("theirs")));
        assert!(may_not_fit(Some(&snoop), Tap::STREAM, None));
        // One that only listens stays a snoop whatever the call does.
        assert!(!may_not_fit(Some(&snoop), LISTEN, None));
        let conference = Tie::Conference {
            bridge: ConferenceId::parse("conf").expect("id"),
        };
        assert!(!may_not_fit(Some(&conference), Tap::STREAM, None));
        assert!(may_not_fit(None, Tap::STREAM, None));
    }

    #[test]
    fn each_tie_names_its_bridge_and_owns_only_what_it_made() {
        let conference = ConferenceId::parse("conf").expect("id");
        let tie = Tie::Conference {
            bridge: conference.clone(),
        };
        assert_eq!(tie.bridge(), "conf");
        assert!(!tie.owns("conf"));
        let tie = Tie::Snoop {
            snoop: "sn".into(),
            bridge: "br".into(),
        };
        assert_eq!(tie.bridge(), "br");
        assert!(tie.owns("sn") && tie.owns("br") && !tie.owns("em"));
    }
}
