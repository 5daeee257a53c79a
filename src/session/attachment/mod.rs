//! One attachment: an externalMedia channel tied to a call or conference (SPEC §5, §6). A media
//! stream and an external media are both attachments; they differ only in how the channel is
//! asked for and in what runs while it stands.
//!
//! The lifecycle, the same for both:
//! - [`Attachment::start`] makes the channel (with the caller's request), waits for it to enter
//!   the application and ties it to its call or conference (`tie.rs`);
//! - [`Attachment::follow`] follows the call into and out of bridges and puts the channel back
//!   into its bridge if someone takes it out, until the call or conference, or one of the
//!   attachment's own objects, goes away; what it decides, and when, is `core.rs`'s
//!   [`FollowCore`], which it drives;
//! - [`Attachment::teardown`] removes everything it made and waits for Asterisk to report each
//!   gone. It takes the attachment, so it happens once.
//!
//! Every object is recorded before the request that makes it, and an object being replaced is
//! recorded as doomed before anything is awaited: wherever a start or a change is cut short,
//! teardown still finds everything. Every id made here starts with `mediastream-`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::registry::{GONE_TIMEOUT, Notice, Registry, SessionError};
use crate::ari::{AriClient, AriErrorKind};
use crate::domain::{CallId, INTERNAL_PREFIX, Resource};

mod core;
mod removal;
mod tie;

pub use self::core::Ended;
use self::core::{FollowCore, Step};
use removal::{Object, Outcome, RemovalCore};
pub use tie::Tap;
use tie::{Shared, Tie};
/// How long Asterisk may take to bring a new channel into the application.
pub const STASIS_START_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a teardown tries again the removals Asterisk does not answer (`removal.rs` has the
/// backoff).
pub const REMOVAL_RETRY: Duration = Duration::from_secs(60);

/// What every attachment shares.
#[derive(Debug)]
pub struct Attachments {
    registry: Arc<Registry>,
    ari: AriClient,
    /// The application every channel and bridge made here belongs to.
    app: String,
    /// The service's bridge holding an idle call, shared by that call's direct attachments.
    shared: Mutex<HashMap<CallId, Shared>>,
    /// One lock per call: tying reads, then changes, both Asterisk and `shared`.
    call_locks: Mutex<HashMap<CallId, Arc<tokio::sync::Mutex<()>>>>,
    /// What a teardown could not remove (Asterisk out of reach): removed again once it answers.
    unremoved: Mutex<Removal>,
    /// The service's shutdown: failed removals are not tried again past it.
    shutdown: CancellationToken,
    /// Whether Asterisk is known not to answer at all (it died): failed removals then wait
    /// for it to answer again ([`Attachments::remove_unremoved`]) rather than hold up their
    /// teardowns.
    asterisk_down: watch::Receiver<bool>,
}

/// One externalMedia channel tied to a call or conference, and what it made for that.
#[derive(Debug)]
pub struct Attachment<'a> {
    all: &'a Attachments,
    /// What it hangs on: its end is the attachment's end.
    resource: Resource,
    tap: Tap,
    /// The following's decisions; holds the externalMedia channel's id (named before it is
    /// made) and how it is tied.
    core: FollowCore,
    /// Objects being replaced while following the call; removed once the new ones stand.
    doomed: Removal,
    /// The attachment's key with the registry, for every object it follows.
    key: u64,
    notices: mpsc::UnboundedReceiver<Notice>,
    /// Given to the registry with every watch; held here, so that `notices` never closes.
    notify: mpsc::UnboundedSender<Notice>,
}

/// Channels to hang up and bridges to destroy.
type Removal = Vec<(String, Object)>;

impl Attachments {
    pub fn new(
        registry: Arc<Registry>,
        app: String,
        shutdown: CancellationToken,
        asterisk_down: watch::Receiver<bool>,
    ) -> Attachments {
        Attachments {
            ari: registry.ari().clone(),
            registry,
            app,
            shared: Mutex::default(),
            call_locks: Mutex::default(),
            unremoved: Mutex::default(),
            shutdown,
            asterisk_down,
        }
    }

    /// Whether the call or conference is known to Asterisk no more. Any other answer (Asterisk
    /// out of reach) is not taken for a hangup.
    pub async fn resource_gone(&self, resource: &Resource) -> bool {
        match resource {
            Resource::Call(id) => matches!(
                self.registry.find_call(id).await,
                Err(SessionError::CallNotFound(_))
            ),
            Resource::Conference(id) => matches!(
                self.registry.find_conference(id).await,
                Err(SessionError::ConferenceNotFound(_))
            ),
        }
    }

    /// Removes again what earlier teardowns could not (call it when Asterisk answers again);
    /// what still fails waits for the next call.
    pub async fn remove_unremoved(&self) {
        let removal = std::mem::take(&mut *lock(&self.unremoved));
        if removal.is_empty() {
            return;
        }
        tracing::info!(
            objects = removal.len(),
            "removing what earlier teardowns could not"
        );
        // Tried once: what fails again waits for the next time Asterisk answers, so that this
        // never holds up noticing that it stopped answering.
        self.remove(removal, Duration::ZERO).await;
    }

    /// Hangs up and destroys everything in `removal` at once, and returns once Asterisk has
    /// reported it gone (ARI answers a removal before it is complete), or after
    /// [`GONE_TIMEOUT`]. One already gone is fine. A removal Asterisk did not answer (it may
    /// stall for seconds under load, or refuse connections past its HTTP session limit) is
    /// tried again, with backoff, for `retry_for` ([`REMOVAL_RETRY`] in a teardown), but not
    /// once shutdown has begun (the next start removes what is left) nor while Asterisk is known
    /// dead. What still fails is kept for [`Attachments::remove_unremoved`]: otherwise the
    /// object would outlive its stream.
    async fn remove(&self, removal: Removal, retry_for: Duration) {
        let all: Vec<String> = removal.iter().map(|(id, _)| id.clone()).collect();
        let mut gone = self.registry.expect_gone(&all);
        let mut core = RemovalCore::new(removal, Instant::now().into_std(), retry_for);
        let mut down = self.asterisk_down.clone();
        loop {
            let now = Instant::now().into_std();
            if self.shutdown.is_cancelled() {
                core.handle_shutdown(now);
            }
            if *down.borrow_and_update() {
                core.handle_asterisk_down(now);
            }
            let attempts = core.poll_attempts(now).into_iter().map(|(id, what)| async move {
                let removed = match what {
                    Object::Channel => self.ari.hangup(&id).await,
                    Object::Bridge => self.ari.destroy_bridge(&id).await,
                };
                let outcome = match removed {
                    Ok(()) => Outcome::Removed,
                    Err(e) if e.is_not_found() => Outcome::NotFound,
                    Err(e) if e.is_transient() => Outcome::Transient,
                    Err(e) => {
                        tracing::warn!(what = what.name(), %id, error = %e, "teardown: removal failed");
                        Outcome::Failed
                    }
                };
                (id, what, outcome)
            });
            let results = futures::future::join_all(attempts).await;
            if !results.is_empty() {
                core.handle_results(Instant::now().into_std(), results, spread());
            }
            let Some(due) = core.poll_timeout() else {
                break;
            };
            tracing::info!(
                delay = ?core.delay(),
                "teardown: Asterisk did not answer; trying the removals again"
            );
            tokio::select! {
                _ = tokio::time::sleep_until(Instant::from_std(due)) => {}
                _ = self.shutdown.cancelled() => {}
                // Asterisk found dead meanwhile: one more try, which fails at once, and what
                // is left waits for its return instead.
                _ = async {
                    if down.wait_for(|down| *down).await.is_err() {
                        // No one can say so any more: wait out the delay.
                        std::future::pending::<()>().await;
                    }
                } => {}
            }
        }
        for id in core.not_awaited() {
            gone.skip(&id);
        }
        let unremoved_now = core.unremoved();
        for (id, what) in &unremoved_now {
            tracing::info!(what = what.name(), %id, "teardown: kept for when Asterisk answers");
        }
        lock(&self.unremoved).extend(unremoved_now);
        gone.wait(&self.registry, GONE_TIMEOUT).await;
    }
}

/// Where the next wait falls within half to one and a half of the backoff: random, so that
/// the teardowns one stall of Asterisk failed together do not all try again in the same
/// instant.
fn spread() -> f64 {
    let random = uuid::Uuid::new_v4().as_u64_pair().0;
    (random % 1_000_000) as f64 / 1_000_000.0
}

impl<'a> Attachment<'a> {
    /// An attachment to `resource` whose externalMedia channel will be called `channel`.
    /// Nothing is made yet.
    pub fn new(
        all: &'a Attachments,
        resource: Resource,
        channel: String,
        tap: Tap,
    ) -> Attachment<'a> {
        let (notify, notices) = mpsc::unbounded_channel();
        Attachment {
            all,
            core: FollowCore::new(&resource, channel),
            resource,
            tap,
            doomed: Removal::new(),
            key: all.registry.new_key(),
            notices,
            notify,
        }
    }

    /// Makes the channel with `request` (which asks Asterisk for an externalMedia channel with
    /// the id this attachment was given), waits until it has entered the application, and ties
    /// it to the call or conference. Whatever fails, [`Attachment::teardown`] removes what was
    /// made.
    pub async fn start<T>(
        &mut self,
        request: impl Future<Output = Result<T, SessionError>>,
    ) -> Result<T, SessionError> {
        let registry = &self.all.registry;
        let channel = self.core.channel().to_owned();
        let entered = registry.expect_stasis_start(&channel);
        self.watch(&channel);
        let made = request
            .await
            .inspect_err(|_| registry.cancel_stasis_start(&channel))?;
        wait_stasis_start(entered, &channel).await?;
        self.tie().await?;
        Ok(made)
    }

    /// Follows the call or conference until the attachment ends, and says why. Meanwhile the
    /// channel follows the call's bridge moves, is put back into its bridge if someone takes it
    /// out, and digits received from the call go to `dtmf`. `media_closed` completes if
    /// Asterisk closes the channel's media connection. May be dropped at any point.
    pub async fn follow(
        &mut self,
        mut dtmf: impl FnMut(String),
        media_closed: impl Future<Output = ()>,
    ) -> Ended {
        tokio::pin!(media_closed);
        let mut closed = false;
        loop {
            while let Some(step) = self.core.poll() {
                match step {
                    Step::Dtmf(digit) => dtmf(digit),
                    Step::Lost(id) => self.lost(&id),
                    Step::Settled => {
                        if let Err(e) = self.settled().await {
                            self.core.handle_follow_failed(e.to_string());
                        }
                    }
                    Step::CheckResource => {
                        let gone = self.all.resource_gone(&self.resource).await;
                        self.core.handle_resource(gone);
                    }
                    Step::Ended(ended) => return ended,
                }
            }
            let deadline = self.core.poll_timeout().map(Instant::from_std);
            tokio::select! {
                // `self.notify` keeps the channel open: there is always a next notice.
                Some(notice) = self.notices.recv() => {
                    self.core.handle_notice(Instant::now().into_std(), notice);
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)),
                    if deadline.is_some() =>
                {
                    self.core.handle_timeout(Instant::now().into_std());
                }
                () = &mut media_closed, if !closed => {
                    closed = true;
                    self.core.handle_media_closed(Instant::now().into_std());
                }
            }
        }
    }

    /// Removes everything the attachment made, and returns once Asterisk has reported it gone
    /// (or after [`GONE_TIMEOUT`]).
    pub async fn teardown(mut self) {
        self.all.registry.unwatch(self.key);
        self.retire();
        let mut removal = std::mem::take(&mut self.doomed);
        removal.push((self.core.channel().to_owned(), Object::Channel));
        self.all.remove(removal, REMOVAL_RETRY).await;
    }

    /// Sends the registry's notices about `id` to this attachment, until its teardown.
    fn watch(&self, id: &str) {
        self.all.registry.watch(self.key, id, self.notify.clone());
    }

    /// After a bridge move has settled: follows the call, then puts the channel back into its
    /// bridge should someone else have taken it out.
    async fn settled(&mut self) -> Result<(), SessionError> {
        if let Resource::Call(call) = &self.resource {
            let call = call.clone();
            self.follow_call(&call).await?;
        }
        let Some(bridge) = self.core.tie().map(Tie::bridge) else {
            return Ok(());
        };
        let channel = self.core.channel();
        if self.all.registry.bridge_of(channel).as_deref() == Some(bridge) {
            return Ok(());
        }
        tracing::info!(%bridge, "media channel taken out of its bridge: putting it back");
        match self.all.ari.add_channel(bridge, channel).await {
            Ok(()) => Ok(()),
            // Back in already (the events were behind).
            Err(e) if e.kind() == AriErrorKind::WrongState => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn remove_doomed(&mut self) {
        let doomed = std::mem::take(&mut self.doomed);
        self.all.remove(doomed, REMOVAL_RETRY).await;
    }
}

/// A fresh id for an object of the service's own: `mediastream-<kind>-<uuid>`.
pub fn internal_id(kind: &str) -> String {
    internal_id_of(kind, uuid::Uuid::new_v4())
}

/// The id of an object of the service's own that serves `id` (an external media's channel
/// carries the media's id), in the same scheme as [`internal_id`].
pub fn internal_id_of(kind: &str, id: uuid::Uuid) -> String {
    format!("{INTERNAL_PREFIX}{kind}-{}", id.simple())
}

async fn wait_stasis_start(entered: oneshot::Receiver<()>, id: &str) -> Result<(), SessionError> {
    match tokio::time::timeout(STASIS_START_TIMEOUT, entered).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(SessionError::NotReady(format!(
            "{id} did not enter the application"
        ))),
    }
}

/// Locks a map for a short critical section. A panic while holding it leaves plain maps
/// behind, still consistent enough to use.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
