//! External media (SPEC §6): a call's or conference's audio sent by Asterisk straight to a host
//! the user names, over RTP or AudioSocket. The service relays nothing: the attachment makes
//! the externalMedia channel, ties it to the call or conference like a stream's, follows it,
//! and removes it when it is stopped or its call or conference ends.
//!
//! The host is resolved here, checked against `external_media.allowed_hosts`, and handed to
//! Asterisk as an address, so that a name cannot resolve one way for the check and another
//! way for Asterisk.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Admission, Attachment, Ended, Kind, Streams, Tap, internal_id_of};
use crate::ari::AriErrorKind;
use crate::ari::rest::ExternalMediaParams;
use crate::domain::external_media::{
    Direction, ExternalMediaSpec, MediaEncapsulation, MediaFormat, MediaTransport,
};
use crate::domain::{ReferenceType, Resource};
use crate::session::registry::SessionError;
use crate::telemetry::EncapsulationLabels;

/// How long the host name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a stop may take before the answer says so anyway.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = ExternalMediaStatus)]
pub enum Status {
    Running,
    Terminated,
}

/// The external media resource as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = ExternalMedia)]
pub struct ExternalMediaView {
    pub id: uuid::Uuid,
    /// The call or conference, shown as `reference_type` and `reference_id`.
    #[serde(skip)]
    pub resource: Resource,
    pub reference_type: ReferenceType,
    pub reference_id: String,
    pub status: Status,
    /// The address Asterisk sends to (the resolved `external_host`).
    pub external_host: String,
    pub encapsulation: MediaEncapsulation,
    pub transport: MediaTransport,
    pub format: MediaFormat,
    pub direction_listen: Direction,
    pub direction_speak: Direction,
    /// The externalMedia channel in Asterisk.
    pub channel_id: String,
    /// Asterisk's side of an RTP external media: where the host may send audio back.
    pub local_ip: Option<String>,
    pub local_port: Option<u16>,
    /// The UUID Asterisk announces first on an AudioSocket connection.
    pub audiosocket_uuid: Option<uuid::Uuid>,
    #[schema(format = DateTime)]
    pub created: String,
    #[schema(format = DateTime)]
    pub terminated: Option<String>,
}

/// One external media in the service's state.
#[derive(Debug)]
pub(super) struct Entry {
    /// `None` while it is being made.
    view: Option<ExternalMediaView>,
    /// Cancelling it stops the media.
    stop: CancellationToken,
    /// Becomes true once everything it created is gone.
    ended: watch::Receiver<bool>,
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

impl Streams {
    /// Starts an external media on a call or conference: checks, creates, watches. Answers
    /// with the running resource, or why it could not start (nothing is left behind then).
    pub async fn start_external_media(
        self: &Arc<Self>,
        resource: Resource,
        spec: ExternalMediaSpec,
    ) -> Result<ExternalMediaView, SessionError> {
        self.check_ready()?;
        self.find(&resource).await?;
        let host = self
            .resolve_host("external_host", &spec.host, spec.port)
            .await?;
        let admission = self.reserve(&resource, Kind::ExternalMedia)?;
        let id = admission.id;
        // Stoppable from now on, even while it is being made.
        let stop = self.shutdown.child_token();
        let (ended_tx, ended) = watch::channel(false);
        self.lock().external.insert(
            id,
            Entry {
                view: None,
                stop: stop.clone(),
                ended,
            },
        );
        // The making and the watching run in a task of their own: a client that gives up on
        // its request must not leave a half-made media behind.
        let (answer_tx, answer) = oneshot::channel();
        let span = tracing::info_span!("external_media", external_media_id = %id, %resource);
        let start = Starting {
            admission,
            resource,
            spec,
            host,
            stop,
            ended: ended_tx,
            answer: answer_tx,
        };
        let this = self.clone();
        self.tracker
            .spawn(async move { this.run_external(start).await }.instrument(span));
        answer.await.unwrap_or_else(|_| {
            Err(SessionError::NotReady(
                "the service is shutting down".into(),
            ))
        })
    }

    /// Makes the external media, answers the request that started it, then follows it until
    /// it is stopped or its call or conference ends, and removes it.
    async fn run_external(self: Arc<Self>, start: Starting) {
        let Starting {
            admission,
            resource,
            spec,
            host,
            stop,
            ended,
            answer,
        } = start;
        let id = admission.id;
        let labels = EncapsulationLabels {
            encapsulation: spec.encapsulation.as_str(),
        };
        let tap = Tap {
            spy: spec.direction_listen,
            whisper: spec.direction_speak,
        };
        let channel = internal_id_of("xm", id);
        let mut attachment =
            Attachment::new(&self.attachments, resource.clone(), channel.clone(), tap);
        let made = tokio::select! {
            made = attachment.start(self.request_external(&spec, host, &channel)) => made,
            _ = stop.cancelled() => Err(SessionError::StateInvalid("stopped while starting".into())),
        };
        let (local, audiosocket_uuid) = match made {
            Ok(made) => made,
            Err(e) => {
                tracing::warn!(error = %e, "external media failed to start");
                attachment.teardown().await;
                self.metrics
                    .external_medias_failed
                    .get_or_create(&labels)
                    .inc();
                let e = self.explain(&resource, e).await;
                self.lock().external.remove(&id);
                drop(admission);
                let _ = ended.send(true);
                let _ = answer.send(Err(e));
                return;
            }
        };
        let (reference_type, reference_id) = resource.reference();
        let view = ExternalMediaView {
            id,
            resource: resource.clone(),
            reference_type,
            reference_id,
            status: Status::Running,
            external_host: host.to_string(),
            encapsulation: spec.encapsulation,
            transport: spec.transport,
            format: spec.format,
            direction_listen: spec.direction_listen,
            direction_speak: spec.direction_speak,
            channel_id: channel,
            local_ip: local.map(|a| a.ip().to_string()),
            local_port: local.map(|a| a.port()),
            audiosocket_uuid,
            created: now(),
            terminated: None,
        };
        if let Some(entry) = self.lock().external.get_mut(&id) {
            entry.view = Some(view.clone());
        }
        self.metrics
            .external_medias_started
            .get_or_create(&labels)
            .inc();
        self.metrics
            .external_medias_active
            .get_or_create(&labels)
            .inc();
        tracing::info!(host = %host, "external media started");
        let _ = answer.send(Ok(view));

        let why = tokio::select! {
            _ = stop.cancelled() => "stopped",
            // Asterisk's connection to the host is not the service's to see.
            end = attachment.follow(|_| {}, std::future::pending()) => match end {
                Ended::Gone => "its call or conference ended",
                Ended::Failed(why) => {
                    tracing::warn!(%why, "external media failed");
                    "it failed"
                }
            },
        };
        attachment.teardown().await;
        if let Some(view) = self
            .lock()
            .external
            .get_mut(&id)
            .and_then(|e| e.view.as_mut())
        {
            view.status = Status::Terminated;
            view.terminated = Some(now());
        }
        drop(admission);
        let _ = ended.send(true);
        self.metrics
            .external_medias_active
            .get_or_create(&labels)
            .dec();
        tracing::info!(why, "external media terminated");
        // Readable for a while, then forgotten (at once on shutdown). The wait is a small task
        // of its own: this one's state (kilobytes, sized for making the media) goes now, not
        // after the retention, which a churn of external medias would pile up.
        let this = self.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(this.external.retention) => {}
                _ = this.shutdown.cancelled() => {}
            }
            this.lock().external.remove(&id);
        });
    }

    /// What a failed start tells the client: the call or conference gone (404), in the wrong
    /// state (409), or the failure itself.
    async fn explain(&self, resource: &Resource, e: SessionError) -> SessionError {
        if let Err(gone @ (SessionError::CallNotFound(_) | SessionError::ConferenceNotFound(_))) =
            self.find(resource).await
        {
            return gone;
        }
        match e {
            SessionError::Asterisk(ari) if ari.kind() == AriErrorKind::WrongState => {
                SessionError::StateInvalid(ari.to_string())
            }
            other => other,
        }
    }

    /// The address of a host the user named (`field`), if it resolves into the allowed
    /// networks (`external_media.allowed_hosts`).
    pub(super) async fn resolve_host(
        &self,
        field: &str,
        host: &str,
        port: u16,
    ) -> Result<SocketAddr, SessionError> {
        let lookup = tokio::net::lookup_host((host, port));
        let addrs: Vec<SocketAddr> = match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
            Ok(Ok(addrs)) => addrs.collect(),
            _ => Vec::new(),
        };
        // An IPv4 address written as IPv6 (`::ffff:a.b.c.d`) is checked, and used, as IPv4.
        let addrs: Vec<SocketAddr> = addrs
            .into_iter()
            .map(|a| SocketAddr::new(a.ip().to_canonical(), a.port()))
            .collect();
        let Some(first) = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
        else {
            return Err(SessionError::InvalidArgument(format!(
                "{field}: `{host}` does not resolve"
            )));
        };
        let allowed = &self.external.allowed_hosts;
        if !allowed.is_empty() && !allowed.iter().any(|net| net.contains(first.ip())) {
            return Err(SessionError::PermissionDenied(format!(
                "{field}: {} is outside external_media.allowed_hosts",
                first.ip()
            )));
        }
        Ok(first)
    }

    /// Asks Asterisk for the externalMedia channel `channel`, sending to `host`. Answers with
    /// Asterisk's side of an RTP media and the UUID an AudioSocket connection announces.
    async fn request_external(
        &self,
        spec: &ExternalMediaSpec,
        host: SocketAddr,
        channel: &str,
    ) -> Result<(Option<SocketAddr>, Option<uuid::Uuid>), SessionError> {
        let audiosocket_uuid =
            (spec.encapsulation == MediaEncapsulation::Audiosocket).then(uuid::Uuid::new_v4);
        let data = audiosocket_uuid.map(|u| u.to_string());
        let external_host = host.to_string();
        let made = self
            .ari
            .external_media(&ExternalMediaParams {
                channel_id: channel,
                app: &self.app,
                external_host: &external_host,
                encapsulation: spec.encapsulation.as_str(),
                transport: spec.transport.as_str(),
                format: spec.format.as_str(),
                direction: "both",
                data: data.as_deref(),
            })
            .await
            .map_err(|e| match (spec.encapsulation, e.kind()) {
                // Asterisk connects during the request and fails it when it cannot.
                (MediaEncapsulation::Audiosocket, AriErrorKind::Failed) => {
                    SessionError::InvalidArgument(format!(
                        "external_host: Asterisk could not connect to {external_host} over TCP"
                    ))
                }
                _ => e.into(),
            })?;
        Ok((super::legs::rtp_peer(&made), audiosocket_uuid))
    }

    pub fn external_media(&self, id: uuid::Uuid) -> Result<ExternalMediaView, SessionError> {
        self.lock()
            .external
            .get(&id)
            .and_then(|e| e.view.clone())
            .ok_or(SessionError::ExternalMediaNotFound(id))
    }

    /// Every external media still known, oldest first.
    pub fn external_medias(&self) -> Vec<ExternalMediaView> {
        let mut all: Vec<ExternalMediaView> = self
            .lock()
            .external
            .values()
            .filter_map(|e| e.view.clone())
            .collect();
        all.sort_by(|a, b| (&a.created, a.id).cmp(&(&b.created, b.id)));
        all
    }

    /// Stops one external media and waits until it is gone from Asterisk.
    pub async fn stop_external_media(
        &self,
        id: uuid::Uuid,
    ) -> Result<Option<ExternalMediaView>, SessionError> {
        let (stop, mut ended) = {
            let state = self.lock();
            let entry = state
                .external
                .get(&id)
                .ok_or(SessionError::ExternalMediaNotFound(id))?;
            (entry.stop.clone(), entry.ended.clone())
        };
        stop_and_wait(&stop, &mut ended, &format!("external media {id}")).await?;
        // Gone already when it was stopped while being made.
        Ok(self.external_media(id).ok())
    }

    /// Stops every running external media of a resource; how many there were.
    pub async fn stop_external_medias_of(&self, resource: &Resource) -> usize {
        let ids: Vec<uuid::Uuid> = self
            .external_ids_for(resource)
            .iter()
            .filter_map(|id| id.parse().ok())
            .collect();
        let stops = ids.iter().map(|id| self.stop_external_media(*id));
        futures::future::join_all(stops).await.len()
    }
}

/// Cancels `stop` and waits until `ended` says everything is gone, a few seconds at most.
pub(super) async fn stop_and_wait(
    stop: &CancellationToken,
    ended: &mut watch::Receiver<bool>,
    what: &str,
) -> Result<(), SessionError> {
    stop.cancel();
    match tokio::time::timeout(STOP_TIMEOUT, ended.wait_for(|done| *done)).await {
        Ok(_) => Ok(()),
        Err(_) => {
            tracing::warn!("{what} did not finish stopping in time");
            Err(SessionError::NotReady(format!(
                "{what} is still stopping; Asterisk is slow to answer"
            )))
        }
    }
}

/// What the task making an external media is given.
#[derive(Debug)]
struct Starting {
    admission: Admission,
    resource: Resource,
    spec: ExternalMediaSpec,
    host: SocketAddr,
    stop: CancellationToken,
    ended: watch::Sender<bool>,
    answer: oneshot::Sender<Result<ExternalMediaView, SessionError>>,
}
