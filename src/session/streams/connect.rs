//! Media streams as resources (SPEC §9.4): every stream is listed under
//! `/v1.0/media_streams`, those a client opened (`inbound`) and those the service opened
//! towards a client's server with `media_stream_connect` (`outbound`), and any of them can be
//! stopped there. An outbound stream dials first and only then makes its Asterisk objects: a
//! server that cannot be reached costs Asterisk nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::external::stop_and_wait;
use super::{Admission, Kind, StreamRequest, Streams};
use crate::domain::connect::ConnectSpec;
use crate::domain::{Encapsulation, Format, ReferenceType, Resource};
use crate::relay::dial;
use crate::relay::stream::EndReason;
use crate::session::registry::SessionError;

/// Who opened the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = StreamDirection)]
pub enum Direction {
    /// Opened by a client.
    Inbound,
    /// Opened by the service (`media_stream_connect`).
    Outbound,
}

/// `connecting` while an outbound stream dials its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StreamStatus {
    Connecting,
    Running,
    Terminated,
}

/// A media stream as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = MediaStream)]
pub struct MediaStreamView {
    pub id: uuid::Uuid,
    /// The call or conference, shown as `reference_type` and `reference_id`.
    #[serde(skip)]
    pub resource: Resource,
    pub direction: Direction,
    pub reference_type: ReferenceType,
    pub reference_id: String,
    /// The client's server, for an outbound stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub encapsulation: Encapsulation,
    pub format: Format,
    pub status: StreamStatus,
    /// Why it ended, once terminated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[schema(format = DateTime)]
    pub created: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub terminated: Option<String>,
}

impl MediaStreamView {
    fn new(id: uuid::Uuid, direction: Direction, request: &StreamRequest) -> MediaStreamView {
        let (reference_type, reference_id) = request.resource.reference();
        MediaStreamView {
            id,
            resource: request.resource.clone(),
            direction,
            reference_type,
            reference_id,
            url: None,
            encapsulation: request.encapsulation,
            format: request.format,
            status: StreamStatus::Running,
            reason: None,
            created: now(),
            terminated: None,
        }
    }
}

/// One stream in the service's state.
#[derive(Debug)]
pub(super) struct Entry {
    view: MediaStreamView,
    /// Cancelling it ends the stream (`Stopped`).
    pub(super) stop: CancellationToken,
    /// Becomes true once the stream has ended and torn down.
    ended: watch::Receiver<bool>,
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Marks the stream ended when dropped, whatever path its task took.
pub(super) struct Registration {
    streams: Arc<Streams>,
    id: uuid::Uuid,
    ended: watch::Sender<bool>,
    /// Kept readable for `external_media.retention_secs` after it ends (outbound streams,
    /// whose caller did not see the end).
    keep: bool,
}

impl Streams {
    /// Lists a stream from its start; the token stops it.
    pub(super) fn register(
        self: &Arc<Self>,
        view: MediaStreamView,
        keep: bool,
    ) -> (Registration, CancellationToken) {
        // Not the shutdown's child: a stream that shuts down ends as `Shutdown` (1001), not as
        // stopped.
        let stop = CancellationToken::new();
        let (ended_tx, ended) = watch::channel(false);
        let id = view.id;
        self.lock().media_streams.insert(
            id,
            Entry {
                view,
                stop: stop.clone(),
                ended,
            },
        );
        let registration = Registration {
            streams: self.clone(),
            id,
            ended: ended_tx,
            keep,
        };
        (registration, stop)
    }

    fn update(&self, id: uuid::Uuid, change: impl FnOnce(&mut MediaStreamView)) {
        if let Some(entry) = self.lock().media_streams.get_mut(&id) {
            change(&mut entry.view);
        }
    }

    /// An inbound stream's entry.
    pub(super) fn inbound_view(id: uuid::Uuid, request: &StreamRequest) -> MediaStreamView {
        MediaStreamView::new(id, Direction::Inbound, request)
    }

    /// Opens a stream towards a client's server. Answers once the server has answered (or
    /// could not be reached, `terminated` with its reason); the stream then runs on its own.
    pub async fn connect(
        self: &Arc<Self>,
        resource: Resource,
        spec: ConnectSpec,
    ) -> Result<MediaStreamView, SessionError> {
        self.check_ready()?;
        self.find(&resource).await?;
        let addr = self.resolve_host("url", &spec.host, spec.port).await?;
        let admission = self.reserve(&resource, Kind::Stream)?;
        let request = StreamRequest {
            resource,
            encapsulation: spec.encapsulation,
            format: spec.format,
            events: spec.events,
            expires_at: None,
            parameters: spec.parameters.clone(),
        };
        let mut view = MediaStreamView::new(admission.id, Direction::Outbound, &request);
        view.url = Some(spec.url.clone());
        view.status = StreamStatus::Connecting;
        let (registration, stop) = self.register(view, true);
        let (answer_tx, answer) = oneshot::channel();
        let span =
            tracing::info_span!("connect", stream_id = %admission.id, url = spec.url_for_logs());
        let this = self.clone();
        let dialing = Dialing {
            admission,
            request,
            addr,
            spec,
            registration,
            stop,
            answer: answer_tx,
        };
        self.tracker
            .spawn(async move { this.run_outbound(dialing).await }.instrument(span));
        answer.await.unwrap_or_else(|_| {
            Err(SessionError::NotReady(
                "the service is shutting down".into(),
            ))
        })
    }

    async fn run_outbound(self: Arc<Self>, dialing: Dialing) {
        let Dialing {
            admission,
            request,
            addr,
            spec,
            registration,
            stop,
            answer,
        } = dialing;
        let id = admission.id;
        let target = dial::Target {
            addr,
            host: &spec.host,
            path: &spec.target,
            secure: spec.secure,
        };
        let dialed = tokio::select! {
            dialed = self.dialer.dial(target) => dialed.map_err(|e| {
                tracing::warn!(error = %e, "the client's server could not be reached");
                e.to_string()
            }),
            _ = stop.cancelled() => Err("stopped before the server answered".into()),
            _ = self.shutdown.cancelled() => Err(EndReason::Shutdown.close_text()),
        };
        let client = match dialed {
            Ok(client) => client,
            Err(reason) => {
                self.terminate(id, reason);
                let _ = answer.send(self.media_stream(id));
                return;
            }
        };
        self.update(id, |view| view.status = StreamStatus::Running);
        let _ = answer.send(self.media_stream(id));
        let reason = self.clone().serve(admission, request, client, stop).await;
        self.terminate(id, reason.close_text());
        drop(registration);
    }

    fn terminate(&self, id: uuid::Uuid, reason: String) {
        self.update(id, |view| {
            view.status = StreamStatus::Terminated;
            view.reason = Some(reason);
            view.terminated = Some(now());
        });
    }

    pub fn media_stream(&self, id: uuid::Uuid) -> Result<MediaStreamView, SessionError> {
        self.lock()
            .media_streams
            .get(&id)
            .map(|e| e.view.clone())
            .ok_or(SessionError::MediaStreamNotFound(id))
    }

    /// Every stream still known, oldest first.
    pub fn media_streams(&self) -> Vec<MediaStreamView> {
        let mut all: Vec<MediaStreamView> = self
            .lock()
            .media_streams
            .values()
            .map(|e| e.view.clone())
            .collect();
        all.sort_by(|a, b| (&a.created, a.id).cmp(&(&b.created, b.id)));
        all
    }

    /// Waits until the stream has ended and torn down (at once if it is not known).
    pub async fn media_stream_ended(&self, id: uuid::Uuid) {
        let ended = self.lock().media_streams.get(&id).map(|e| e.ended.clone());
        if let Some(mut ended) = ended {
            let _ = ended.wait_for(|done| *done).await;
        }
    }

    /// Stops a stream (close 1000, `stopped`) and waits until it is gone from Asterisk.
    pub async fn stop_media_stream(&self, id: uuid::Uuid) -> Result<MediaStreamView, SessionError> {
        let (stop, mut ended, mut last) = {
            let state = self.lock();
            let entry = state
                .media_streams
                .get(&id)
                .ok_or(SessionError::MediaStreamNotFound(id))?;
            (entry.stop.clone(), entry.ended.clone(), entry.view.clone())
        };
        stop_and_wait(&stop, &mut ended, &format!("media stream {id}")).await?;
        // An inbound stream is forgotten as it ends: its last state, ended.
        Ok(self.media_stream(id).unwrap_or_else(|_| {
            last.status = StreamStatus::Terminated;
            last.reason = Some(EndReason::Stopped.close_text());
            last.terminated = Some(now());
            last
        }))
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = self.ended.send(true);
        let (streams, id) = (self.streams.clone(), self.id);
        if !self.keep {
            streams.lock().media_streams.remove(&id);
            return;
        }
        // Readable for a while, then forgotten (at once on shutdown, which waits for it).
        let retention = streams.external.retention;
        let shutdown = streams.shutdown.clone();
        if tokio::runtime::Handle::try_current().is_ok() {
            let tracker = streams.tracker.clone();
            tracker.spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(retention) => {}
                    _ = shutdown.cancelled() => {}
                }
                streams.lock().media_streams.remove(&id);
            });
        } else {
            streams.lock().media_streams.remove(&id);
        }
    }
}

/// What the task of an outbound stream is given.
struct Dialing {
    admission: Admission,
    request: StreamRequest,
    addr: SocketAddr,
    spec: ConnectSpec,
    registration: Registration,
    stop: CancellationToken,
    answer: oneshot::Sender<Result<MediaStreamView, SessionError>>,
}
