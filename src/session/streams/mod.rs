//! Media streams and external medias (SPEC §5, §6): admission within the limits, and what each
//! does while it runs. Both are attachments (`session::attachment`), which make, tie, follow
//! and remove their Asterisk objects; a media stream relays its channel's audio to a client
//! WebSocket, an external media lets Asterisk send it to a host and only watches.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

mod connect;
mod external;
mod legs;
mod liveness;

pub use connect::{Direction as StreamDirection, MediaStreamView, StreamStatus};
pub use external::{ExternalMediaView, Status as ExternalMediaStatus};

use super::attachment::{Attachment, Attachments, Ended, Tap, internal_id, internal_id_of};
use super::registry::{Registry, SessionError};
use crate::ari::{AriClient, AriError};
use crate::config::{
    ExternalMediaSettings, LimitSettings, MediaSettings, Settings, TwilioSettings,
};
use crate::domain::{Encapsulation, Format, INTERNAL_PREFIX, Resource};
use crate::relay::audiosocket_leg::AudioSocketHub;
use crate::relay::client::ClientConn;
use crate::relay::dial::Dialer;
use crate::relay::stream::{Action, Channels, EndReason, Signal, StreamSpec};
use crate::relay::worker::Workers;
use crate::relay::{self, MediaLeg};
use crate::telemetry::{KindLabels, Metrics, ReasonLabels};

/// A stream ends as its attachment did: a hangup, or a failure.
impl From<Ended> for EndReason {
    fn from(ended: Ended) -> EndReason {
        match ended {
            Ended::Gone => EndReason::Hangup,
            Ended::Failed(why) => EndReason::Failure(why),
        }
    }
}

/// What a client asked for.
#[derive(Debug, Clone)]
pub struct StreamRequest {
    pub resource: Resource,
    pub encapsulation: Encapsulation,
    pub format: Format,
    pub events: bool,
    pub expires_at: Option<SystemTime>,
    /// The client's own query parameters (Twilio's `customParameters`).
    pub parameters: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Default)]
struct State {
    total: usize,
    /// Streams and external medias by resource, for limits and listings.
    by_resource: HashMap<Resource, Vec<(Kind, uuid::Uuid)>>,
    /// External medias, running and recently terminated.
    external: HashMap<uuid::Uuid, external::Entry>,
    /// Media streams, inbound and outbound; outbound ones recently terminated too.
    media_streams: HashMap<uuid::Uuid, connect::Entry>,
}

#[derive(Debug)]
pub struct Streams {
    registry: Arc<Registry>,
    attachments: Attachments,
    ari: AriClient,
    app: String,
    media: MediaSettings,
    limits: LimitSettings,
    external: ExternalMediaSettings,
    twilio: TwilioSettings,
    /// The media workers that serve RTP legs.
    workers: Workers,
    /// Opens the WebSockets of `media_stream_connect`.
    dialer: Dialer,
    hub: AudioSocketHub,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    /// Set once the leftovers of a previous run are gone: before that, a new stream's objects
    /// could be mistaken for leftovers.
    leftovers_removed: tokio::sync::watch::Sender<bool>,
    /// Fires on shutdown: every stream closes with 1001 and tears down.
    shutdown: CancellationToken,
    /// True while Asterisk does not answer at all (`liveness`): every stream ends with 1011.
    asterisk_down: tokio::sync::watch::Sender<bool>,
    /// Tracks running streams so that shutdown can wait for their teardown.
    tracker: TaskTracker,
}

/// What is attached to a call or conference; both count against the same limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
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

impl Admission {
    /// Gives the place on the call or conference back while the stream's objects are still
    /// being removed: a client that closed its stream and opens the next one is not refused
    /// for the one that is going. (The service-wide count waits for the removal.)
    fn leave_resource(&self) {
        let mut state = self.streams.lock();
        if let Some(ids) = state.by_resource.get_mut(&self.resource) {
            ids.retain(|(_, id)| *id != self.id);
            if ids.is_empty() {
                state.by_resource.remove(&self.resource);
            }
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.leave_resource();
        let mut state = self.streams.lock();
        state.total = state.total.saturating_sub(1);
    }
}

impl Streams {
    pub fn new(
        registry: Arc<Registry>,
        settings: &Settings,
        hub: AudioSocketHub,
        workers: Workers,
        connect_tls: Arc<rustls::ClientConfig>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Streams {
        let tracker = TaskTracker::new();
        let asterisk_down = tokio::sync::watch::Sender::new(false);
        Streams {
            workers,
            dialer: Dialer::new(connect_tls, tracker.clone()),
            attachments: Attachments::new(
                registry.clone(),
                settings.ari.app.clone(),
                shutdown.clone(),
                asterisk_down.subscribe(),
            ),
            ari: registry.ari().clone(),
            hub,
            registry,
            app: settings.ari.app.clone(),
            media: settings.media.clone(),
            limits: settings.limits.clone(),
            external: settings.external_media.clone(),
            twilio: settings.twilio.clone(),
            metrics,
            state: Mutex::new(State::default()),
            leftovers_removed: tokio::sync::watch::Sender::new(false),
            asterisk_down,
            shutdown,
            tracker,
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The tasks of running streams: shutdown waits for them ([`Streams::drained`]).
    pub fn tasks(&self) -> &TaskTracker {
        &self.tracker
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stream ids attached to a resource.
    pub fn ids_for(&self, resource: &Resource) -> Vec<String> {
        self.attached(resource, Kind::Stream)
    }

    /// Running external medias of a resource.
    pub fn external_ids_for(&self, resource: &Resource) -> Vec<String> {
        self.attached(resource, Kind::ExternalMedia)
    }

    fn attached(&self, resource: &Resource, kind: Kind) -> Vec<String> {
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
        self.reserve(&request.resource, Kind::Stream)
    }

    /// Waits (up to `limit`) until new attachments are taken; false if they are not.
    pub async fn wait_ready(&self, limit: Duration) -> bool {
        let mut ready = self.leftovers_removed.subscribe();
        let waited = tokio::time::timeout(limit, ready.wait_for(|up| *up)).await;
        matches!(waited, Ok(Ok(_))) && !self.shutdown.is_cancelled()
    }

    /// Whether new streams and external medias are taken now.
    pub fn accepting(&self) -> bool {
        self.check_ready().is_ok()
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

    /// Why a stream whose setup failed should end: `Hangup` if its call or conference is gone
    /// (the failure was a consequence), else a failure ([`Ended::after_failure`]).
    async fn ended_or_failed(&self, resource: &Resource, why: String) -> EndReason {
        let gone = self.attachments.resource_gone(resource).await;
        Ended::after_failure(gone, why).into()
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
        kind: Kind,
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
    pub async fn run(
        self: Arc<Self>,
        admission: Admission,
        request: StreamRequest,
        client: ClientConn,
    ) {
        let view = Streams::inbound_view(admission.id, &request);
        let (registration, stop) = self.register(view, false);
        self.serve(admission, request, client, stop).await;
        drop(registration);
    }

    /// Runs a stream on its client's connection until it ends (or `stop`), then tears down;
    /// why it ended.
    async fn serve(
        self: Arc<Self>,
        admission: Admission,
        request: StreamRequest,
        client: ClientConn,
        stop: CancellationToken,
    ) -> EndReason {
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
            let channel = internal_id("em");
            let resource = request.resource.clone();
            let mut attachment =
                Attachment::new(&self.attachments, resource, channel.clone(), Tap::STREAM);
            let started = std::time::Instant::now();
            let setup = tokio::select! {
                setup = attachment.start(self.leg(&channel, &request)) => setup,
                _ = self.shutdown.cancelled() => {
                    Err(SessionError::NotReady("shutting down".into()))
                }
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
                        parameters: request.parameters.clone(),
                        account_sid: self.twilio.account_sid.clone(),
                    };
                    self.relay(spec, leg, client, &mut attachment, stop).await
                }
                Err(e) => {
                    let reason = if self.shutdown.is_cancelled() {
                        EndReason::Shutdown
                    } else {
                        self.ended_or_failed(&request.resource, e.to_string()).await
                    };
                    tracing::warn!(error = %e, ?reason, "stream setup did not complete");
                    relay::say_goodbye(client, request.events, &reason).await;
                    reason
                }
            };
            self.metrics
                .streams_ended
                .get_or_create(&ReasonLabels {
                    reason: reason.label(),
                })
                .inc();
            admission.leave_resource();
            let teardown = std::time::Instant::now();
            attachment.teardown().await;
            tracing::info!(
                reason = ?reason,
                teardown_ms = teardown.elapsed().as_millis() as u64,
                "stream ended"
            );
            active.dec();
            drop(admission);
            reason
        }
        .instrument(span)
        .await
    }

    /// Relays the stream until it ends, while its attachment follows the call.
    async fn relay(
        &self,
        spec: StreamSpec,
        leg: MediaLeg,
        client: ClientConn,
        attachment: &mut Attachment<'_>,
        stop: CancellationToken,
    ) -> EndReason {
        let (signal_tx, signal_rx) = mpsc::unbounded_channel();
        let stopped = async {
            stop.cancelled().await;
            let _ = signal_tx.send(Signal::End(EndReason::Stopped));
            std::future::pending::<Infallible>().await
        };
        // Whether Asterisk answers ARI: the stream decides with its own leg's audio.
        let reachability = async {
            let mut down = self.asterisk_down.subscribe();
            loop {
                let unreachable = *down.borrow_and_update();
                let _ = signal_tx.send(Signal::AsteriskUnreachable(unreachable));
                if down.changed().await.is_err() {
                    return std::future::pending::<Infallible>().await;
                }
            }
        };
        let (action_tx, mut action_rx) = mpsc::channel(16);
        let (leg_closed_tx, leg_closed) = tokio::sync::oneshot::channel();
        let resource = spec.resource.clone();
        let follow = async {
            let media_closed = async {
                // Never completes if the stream ends without its leg closing.
                if leg_closed.await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            let ended = attachment
                .follow(
                    |digit| {
                        let _ = signal_tx.send(Signal::Dtmf(digit));
                    },
                    media_closed,
                )
                .await;
            let _ = signal_tx.send(Signal::End(ended.into()));
            std::future::pending::<Infallible>().await
        };
        let perform_actions = async {
            let mut leg_closed_tx = Some(leg_closed_tx);
            while let Some(action) = action_rx.recv().await {
                match (action, &resource) {
                    (Action::LegClosed, _) => {
                        if let Some(tx) = leg_closed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    (Action::Dtmf(digits), Resource::Call(call)) => {
                        if let Err(e) = self.ari.send_dtmf(call.as_str(), &digits).await {
                            tracing::warn!(error = %e, "DTMF into the call failed");
                        }
                    }
                    (Action::Dtmf(_), Resource::Conference(_)) => {
                        tracing::debug!("DTMF has no single channel to go to in a conference")
                    }
                }
            }
            std::future::pending::<Infallible>().await
        };
        let channels = Channels {
            signals: signal_rx,
            actions: action_tx,
        };
        let run = relay::run(
            spec,
            leg,
            client,
            channels,
            &self.workers,
            self.shutdown.clone(),
            self.metrics.clone(),
        );
        tokio::select! {
            reason = run => reason,
            never = follow => match never {},
            never = perform_actions => match never {},
            never = stopped => match never {},
            never = reachability => match never {},
        }
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
