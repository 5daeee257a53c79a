//! Media streams: admission (limits), the Asterisk objects each stream needs (SPEC §5), the
//! relay, and teardown exactly once.
//!
//! Topology, per target:
//! - a call in Stasis (any application) and in no bridge: a mixing bridge holding the call
//!   itself and the externalMedia channel; further streams on the call join that bridge, which
//!   goes away with the last of them;
//! - any other call (bridged, or running dialplan): a snoop channel (spy and whisper both) and
//!   the externalMedia channel in a private mixing bridge;
//! - a conference: the externalMedia channel joins the conference's bridge.
//!
//! Every id created here starts with `mediastream-`. Whatever was created is recorded before
//! the request that creates it, so teardown also removes what a failed setup left half-made.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::{Sink, Stream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

mod external;
mod legs;
mod topology;

pub use external::{ExternalMediaView, Status as ExternalMediaStatus};

use self::topology::{Tap, Topology};
use super::registry::{Notice, Registry, SessionError};
use crate::ari::{AriClient, AriError};
use crate::config::{
    AsteriskTransport, ExternalMediaSettings, LimitSettings, MediaSettings, Settings,
};
use crate::domain::{Encapsulation, Format, INTERNAL_PREFIX, Resource};
use crate::media::transcode::SampleFormat;
use crate::relay::audiosocket_leg::AudioSocketHub;
use crate::relay::port_pool::PortPool;
use crate::relay::stream::{
    self as relay, Action, Channels, EndReason, Leg, Signal, StreamSpec, sleep_until_opt,
};
use crate::relay::{Inbound, Outbound};
use crate::telemetry::{KindLabels, Metrics};

/// How long Asterisk may take to bring a new channel into the application.
const STASIS_START_TIMEOUT: Duration = Duration::from_secs(5);

/// What a client asked for.
#[derive(Debug, Clone)]
pub struct StreamRequest {
    pub resource: Resource,
    pub encapsulation: Encapsulation,
    pub format: Format,
    pub events: bool,
    pub expires_at: Option<SystemTime>,
}

#[derive(Debug, Default)]
struct State {
    total: usize,
    /// Streams and external medias by resource, for limits and listings.
    by_resource: HashMap<Resource, Vec<(Attachment, uuid::Uuid)>>,
    /// External medias, running and recently terminated.
    external: HashMap<uuid::Uuid, external::Entry>,
    /// The service's bridge holding an idle call, shared by that call's streams: (bridge id,
    /// streams using it).
    call_bridges: HashMap<String, (String, usize)>,
}

#[derive(Debug)]
pub struct Streams {
    registry: Arc<Registry>,
    ari: AriClient,
    app: String,
    media: MediaSettings,
    limits: LimitSettings,
    external: ExternalMediaSettings,
    ports: PortPool,
    hub: AudioSocketHub,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    /// One lock per call: changes to a call's ties read, then change, both Asterisk and
    /// `call_bridges`.
    call_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Set once the leftovers of a previous run are gone: before that, a new stream's objects
    /// could be mistaken for leftovers.
    leftovers_removed: tokio::sync::watch::Sender<bool>,
    /// Fires on shutdown: every stream closes with 1001 and tears down.
    shutdown: CancellationToken,
    /// Tracks running streams so that shutdown can wait for their teardown.
    tracker: TaskTracker,
}

/// What is attached to a call or conference; both count against the same limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attachment {
    Stream,
    ExternalMedia,
}

/// A reserved place for one stream or external media; dropping it gives the place back.
#[derive(Debug)]
pub struct Admission {
    streams: Arc<Streams>,
    pub id: uuid::Uuid,
    resource: Resource,
    /// Held from admission on: shutdown waits for it, even before the upgrade completes.
    _running: tokio_util::task::task_tracker::TaskTrackerToken,
}

/// What a running stream hears about its Asterisk objects, and how it watches new ones.
#[derive(Debug)]
struct Watch<'a> {
    rx: mpsc::UnboundedReceiver<Notice>,
    tx: &'a mpsc::UnboundedSender<Notice>,
    /// The stream's key with the registry.
    key: u64,
}

impl Created {
    /// Whether `id` is one of the attachment's own objects (whose loss ends it).
    fn owns(&self, id: &str) -> bool {
        [&self.external_media, &self.snoop, &self.bridge]
            .into_iter()
            .flatten()
            .chain(self.shared.as_ref().map(|(_, bridge)| bridge))
            .any(|own| own == id)
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut state = self.streams.lock();
        state.total = state.total.saturating_sub(1);
        if let Some(ids) = state.by_resource.get_mut(&self.resource) {
            ids.retain(|(_, id)| *id != self.id);
            if ids.is_empty() {
                state.by_resource.remove(&self.resource);
            }
        }
    }
}

/// What a stream created in Asterisk, to remove at its end.
#[derive(Debug, Default)]
struct Created {
    external_media: Option<String>,
    snoop: Option<String>,
    /// A private bridge (snoop topology).
    bridge: Option<String>,
    /// The call and its shared bridge, of which this attachment holds a share.
    shared: Option<(String, String)>,
    /// Objects being replaced while following the call; removed once the new ones stand.
    doomed_channels: Vec<String>,
    doomed_bridges: Vec<String>,
    topology: Topology,
    tap: Tap,
}

/// Why a stream could not be set up.
#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error("Asterisk: {0}")]
    Asterisk(#[from] AriError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("no RTP port: {0}")]
    Port(std::io::Error),
    #[error("{0}")]
    Incomplete(String),
}

impl Streams {
    pub fn new(
        registry: Arc<Registry>,
        settings: &Settings,
        hub: AudioSocketHub,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Streams {
        Streams {
            ari: registry.ari().clone(),
            ports: PortPool::new(settings.media.bind_ip, settings.media.rtp_ports.clone()),
            hub,
            registry,
            app: settings.ari.app.clone(),
            media: settings.media.clone(),
            limits: settings.limits.clone(),
            external: settings.external_media.clone(),
            metrics,
            state: Mutex::new(State::default()),
            call_locks: Mutex::default(),
            leftovers_removed: tokio::sync::watch::Sender::new(false),
            shutdown,
            tracker: TaskTracker::new(),
        }
    }

    pub fn ari(&self) -> &AriClient {
        &self.ari
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stream ids attached to a resource.
    pub fn ids_for(&self, resource: &Resource) -> Vec<String> {
        self.attached(resource, Attachment::Stream)
    }

    /// Running external medias of a resource.
    pub fn external_ids_for(&self, resource: &Resource) -> Vec<String> {
        self.attached(resource, Attachment::ExternalMedia)
    }

    fn attached(&self, resource: &Resource, kind: Attachment) -> Vec<String> {
        self.lock()
            .by_resource
            .get(resource)
            .map(|ids| {
                ids.iter()
                    .filter(|(k, _)| *k == kind)
                    .map(|(_, id)| id.to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until every stream has torn down (after shutdown fired).
    pub async fn drained(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Checks that the target exists and reserves a place within the limits. Creates nothing.
    pub async fn admit(
        self: &Arc<Self>,
        request: &StreamRequest,
    ) -> Result<Admission, SessionError> {
        self.check_ready()?;
        self.find(&request.resource).await?;
        self.reserve(&request.resource, Attachment::Stream)
    }

    /// Waits (up to `limit`) until new attachments are taken; false if they are not.
    pub async fn wait_ready(&self, limit: Duration) -> bool {
        let mut ready = self.leftovers_removed.subscribe();
        let waited = tokio::time::timeout(limit, ready.wait_for(|up| *up)).await;
        matches!(waited, Ok(Ok(_))) && !self.shutdown.is_cancelled()
    }

    /// Refuses new attachments until the leftovers of a previous run are gone.
    fn check_ready(&self) -> Result<(), SessionError> {
        if self.shutdown.is_cancelled() {
            return Err(SessionError::NotReady(
                "the service is shutting down".into(),
            ));
        }
        if *self.leftovers_removed.borrow() {
            Ok(())
        } else {
            Err(SessionError::NotReady(
                "not connected to Asterisk yet; try again shortly".into(),
            ))
        }
    }

    /// Why an attachment whose setup or objects failed should end: `Hangup` if its call or
    /// conference is gone (the failure was a consequence), else a failure.
    async fn ended_or_failed(&self, resource: &Resource, why: String) -> EndReason {
        match self.find(resource).await {
            Err(SessionError::CallNotFound(_) | SessionError::ConferenceNotFound(_)) => {
                EndReason::Hangup
            }
            _ => EndReason::Failure(why),
        }
    }

    /// One of an attachment's objects is gone: if it was its call's shared bridge, forget it.
    fn lost(&self, created: &Created, id: &str) {
        if created
            .shared
            .as_ref()
            .is_some_and(|(_, bridge)| bridge == id)
        {
            self.forget_call_bridge(id);
        }
    }

    fn next_key(&self) -> u64 {
        self.registry.new_key()
    }

    /// Events of a call owned by another application (hangup, DTMF, bridge moves) come only
    /// with a subscription.
    async fn subscribe_call(&self, call: &str) {
        if let Err(e) = self
            .ari
            .subscribe(&self.app, &format!("channel:{call}"))
            .await
        {
            tracing::debug!(error = %e, "subscribing to the call's events");
        }
    }

    /// Fails with the resource's 404 unless it exists.
    pub async fn find(&self, resource: &Resource) -> Result<(), SessionError> {
        match resource {
            Resource::Call(id) => self.registry.find_call(id).await.map(drop),
            Resource::Conference(id) => self.registry.find_conference(id).await.map(drop),
        }
    }

    /// Takes a place within the limits, or says which limit is reached.
    fn reserve(
        self: &Arc<Self>,
        resource: &Resource,
        kind: Attachment,
    ) -> Result<Admission, SessionError> {
        let id = uuid::Uuid::new_v4();
        let mut state = self.lock();
        if state.total >= self.limits.max_streams {
            return Err(SessionError::LimitExceeded(format!(
                "{} streams and external medias are open: the limit",
                self.limits.max_streams
            )));
        }
        let ids = state.by_resource.entry(resource.clone()).or_default();
        if ids.len() >= self.limits.max_streams_per_resource {
            return Err(SessionError::LimitExceeded(format!(
                "{resource} already has {} streams and external medias: the limit",
                self.limits.max_streams_per_resource
            )));
        }
        ids.push((kind, id));
        state.total += 1;
        drop(state);
        Ok(Admission {
            streams: self.clone(),
            id,
            resource: resource.clone(),
            _running: self.tracker.token(),
        })
    }

    /// Runs an admitted stream on an upgraded WebSocket until it ends, then tears down.
    pub async fn run<S, K>(
        self: Arc<Self>,
        admission: Admission,
        request: StreamRequest,
        client_rx: S,
        client_tx: K,
    ) where
        S: Stream<Item = Inbound> + Unpin,
        K: Sink<Outbound> + Unpin,
    {
        let stream_id = admission.id;
        let span = match &request.resource {
            Resource::Call(id) => tracing::info_span!("stream", %stream_id, call_id = %id),
            Resource::Conference(id) => {
                tracing::info_span!("stream", %stream_id, conference_id = %id)
            }
        };
        async move {
            let kind = format!(
                "{}/{}",
                match request.resource {
                    Resource::Call(_) => "call",
                    Resource::Conference(_) => "conference",
                },
                request.encapsulation.as_str()
            );
            let active = self
                .metrics
                .streams_active
                .get_or_create(&KindLabels { kind })
                .clone();
            active.inc();
            self.metrics.streams_started.inc();
            let key = self.next_key();
            let (notice_tx, notice_rx) = mpsc::unbounded_channel();
            let mut created = Created::default();
            let started = std::time::Instant::now();
            let setup = tokio::select! {
                setup = self.setup(&request, key, notice_tx.clone(), &mut created) => setup,
                _ = self.shutdown.cancelled() => Err(SetupError::Incomplete("shutting down".into())),
            };
            let reason = match setup {
                Ok((leg, leg_format)) => {
                    tracing::info!(
                        setup_ms = started.elapsed().as_millis() as u64,
                        "stream started"
                    );
                    let spec = StreamSpec {
                        stream_id,
                        resource: request.resource.clone(),
                        encapsulation: request.encapsulation,
                        format: request.format,
                        events: request.events,
                        leg_format,
                        jitter_ms: self.media.jitter_ms,
                        max_queue_ms: self.media.max_queue_ms,
                        expires_at: request.expires_at,
                    };
                    self.relay(
                        spec,
                        leg,
                        client_rx,
                        client_tx,
                        Watch {
                            rx: notice_rx,
                            tx: &notice_tx,
                            key,
                        },
                        &mut created,
                    )
                    .await
                }
                Err(e) => {
                    let reason = if self.shutdown.is_cancelled() {
                        EndReason::Shutdown
                    } else {
                        self.ended_or_failed(&request.resource, e.to_string()).await
                    };
                    tracing::warn!(error = %e, ?reason, "stream setup did not complete");
                    relay::say_goodbye(client_tx, request.events, &reason).await;
                    reason
                }
            };
            self.registry.unwatch(key);
            let teardown = std::time::Instant::now();
            self.teardown(created).await;
            tracing::info!(
                reason = ?reason,
                teardown_ms = teardown.elapsed().as_millis() as u64,
                "stream ended"
            );
            active.dec();
            drop(admission);
        }
        .instrument(span)
        .await
    }

    async fn relay<S, K>(
        &self,
        spec: StreamSpec,
        leg: Leg,
        client_rx: S,
        client_tx: K,
        watch: Watch<'_>,
        created: &mut Created,
    ) -> EndReason
    where
        S: Stream<Item = Inbound> + Unpin,
        K: Sink<Outbound> + Unpin,
    {
        let (signal_tx, signal_rx) = mpsc::unbounded_channel();
        let (action_tx, mut action_rx) = mpsc::channel(16);
        let target = match &spec.resource {
            Resource::Call(id) => id.to_string(),
            Resource::Conference(id) => id.to_string(),
        };
        let call = match &spec.resource {
            Resource::Call(id) => Some(id.to_string()),
            Resource::Conference(_) => None,
        };
        let Watch { mut rx, tx, key } = watch;
        let spec_resource = spec.resource.clone();
        let forward_notices = async {
            // A bridge move comes as a leave then an enter: act once the pair has settled,
            // reading other notices (a hangup) meanwhile.
            let mut settle: Option<tokio::time::Instant> = None;
            loop {
                let notice = tokio::select! {
                    notice = rx.recv() => match notice {
                        Some(notice) => notice,
                        None => break,
                    },
                    _ = sleep_until_opt(settle), if settle.is_some() => {
                        settle = None;
                        let conference = call.is_none().then_some(target.as_str());
                        match self.retie(call.as_deref(), conference, key, tx, created).await {
                            Ok(()) => continue,
                            Err(e) => {
                                let why = format!("following the call: {e}");
                                let end = self.ended_or_failed(&spec_resource, why).await;
                                let _ = signal_tx.send(Signal::End(end));
                                break;
                            }
                        }
                    }
                };
                let signal = match notice {
                    Notice::Gone { id } if id == target => Signal::End(EndReason::Hangup),
                    Notice::Gone { id } if created.owns(&id) => {
                        self.lost(created, &id);
                        // A call's hangup takes its snoop with it, sometimes first.
                        let why = format!("{id} went away");
                        Signal::End(self.ended_or_failed(&spec_resource, why).await)
                    }
                    Notice::Dtmf { channel, digit } if channel == target => Signal::Dtmf(digit),
                    Notice::Moved { channel, .. }
                        if Some(&channel) == call.as_ref()
                            || Some(&channel) == created.external_media.as_ref() =>
                    {
                        settle = Some(tokio::time::Instant::now() + topology::MOVE_SETTLE);
                        continue;
                    }
                    _ => continue,
                };
                if signal_tx.send(signal).is_err() {
                    break;
                }
            }
            std::future::pending::<()>().await;
        };
        let perform_actions = async {
            while let Some(Action::Dtmf(digits)) = action_rx.recv().await {
                match &call {
                    Some(call) => {
                        if let Err(e) = self.ari.send_dtmf(call, &digits).await {
                            tracing::warn!(error = %e, "DTMF into the call failed");
                        }
                    }
                    None => tracing::debug!("DTMF has no single channel to go to in a conference"),
                }
            }
            std::future::pending::<()>().await;
        };
        let channels = Channels {
            signals: signal_rx,
            actions: action_tx,
        };
        let run = relay::run(
            spec,
            leg,
            client_rx,
            client_tx,
            channels,
            self.shutdown.clone(),
            self.metrics.clone(),
        );
        tokio::select! {
            reason = run => reason,
            _ = forward_notices => unreachable!("pending forever"),
            _ = perform_actions => unreachable!("pending forever"),
        }
    }

    /// Creates the leg and ties it to the target. Records everything in `created` first.
    async fn setup(
        &self,
        request: &StreamRequest,
        key: u64,
        notices: mpsc::UnboundedSender<Notice>,
        created: &mut Created,
    ) -> Result<(Leg, SampleFormat), SetupError> {
        let em_id = internal_id("em");
        created.external_media = Some(em_id.clone());
        let entered = self.registry.expect_stasis_start(&em_id);
        self.registry.watch(key, &em_id, notices.clone());
        let leg = match self.transport_for(request.encapsulation) {
            AsteriskTransport::Audiosocket => self.audiosocket_leg(&em_id).await,
            _ => self.rtp_leg(&em_id, request.format).await,
        };
        let (leg, leg_format) = leg.inspect_err(|_| self.registry.cancel_stasis_start(&em_id))?;
        wait_stasis_start(entered, &em_id).await?;

        match &request.resource {
            Resource::Conference(id) => {
                self.registry.watch(key, id.as_str(), notices);
                self.ari.add_channel(id.as_str(), &em_id).await?;
                created.topology = Topology::Conference;
            }
            Resource::Call(id) => {
                let call = id.as_str();
                self.registry.watch(key, call, notices.clone());
                self.subscribe_call(call).await;
                self.attach_call(call, &em_id, key, &notices, created)
                    .await
                    .map_err(|e| match e {
                        SetupError::Asterisk(e) if e.is_not_found() => {
                            SetupError::Session(SessionError::CallNotFound(id.clone()))
                        }
                        other => other,
                    })?;
            }
        }
        Ok((leg, leg_format))
    }

    /// Removes the leftovers of a previous run once Asterisk is reachable, then lets streams
    /// in. Retries while Asterisk refuses; ends with `cancel`.
    pub async fn clean_start(
        &self,
        mut connected: tokio::sync::watch::Receiver<bool>,
        cancel: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                up = connected.wait_for(|up| *up) => if up.is_err() { return },
            }
            match self.remove_leftovers().await {
                Ok(removed) => {
                    if removed > 0 {
                        tracing::info!(removed, "removed leftovers of a previous run");
                    }
                    self.leftovers_removed.send_replace(true);
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "removing leftovers of a previous run failed");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    /// Removes what a previous run of this application left in Asterisk: its own channels
    /// (`mediastream-…` in this application) and bridges (`mediastream-…` named after it).
    async fn remove_leftovers(&self) -> Result<usize, AriError> {
        let mut removed = 0;
        for channel in self.ari.channels().await? {
            if channel.id.starts_with(INTERNAL_PREFIX)
                && channel.is_in_stasis_app(&self.app)
                && self.ari.hangup(&channel.id).await.is_ok()
            {
                removed += 1;
            }
        }
        for bridge in self.ari.bridges().await? {
            if bridge.id.starts_with(INTERNAL_PREFIX)
                && bridge.name == self.app
                && self.ari.destroy_bridge(&bridge.id).await.is_ok()
            {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

fn internal_id(kind: &str) -> String {
    format!("{INTERNAL_PREFIX}{kind}-{}", uuid::Uuid::new_v4().simple())
}

async fn wait_stasis_start(
    entered: tokio::sync::oneshot::Receiver<()>,
    id: &str,
) -> Result<(), SetupError> {
    match tokio::time::timeout(STASIS_START_TIMEOUT, entered).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(SetupError::Incomplete(format!(
            "{id} did not enter the application"
        ))),
    }
}
