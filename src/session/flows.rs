//! Flow actions (SPEC §6): one action on a call, from the REST API, or a named list of them run
//! in order when a call enters the application with `Stasis(<app>,flow=<name>)`. A failing
//! action stops its flow and is logged with the call id; an unknown flow leaves the call alone.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::registry::{CallStart, SessionError};
use super::streams::{ExternalMediaView, MediaStreamView, StreamStatus, Streams};
use crate::domain::flow::FlowAction;
use crate::domain::{CallId, Resource};

/// How long a flow waits for the service to be ready.
const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// What an action did.
#[derive(Debug, Clone)]
pub enum ActionOutcome {
    Done,
    Started(Box<ExternalMediaView>),
    Connected(Box<MediaStreamView>),
}

#[derive(Debug)]
pub struct Flows {
    flows: BTreeMap<String, Vec<FlowAction>>,
    streams: Arc<Streams>,
}

impl Flows {
    pub fn new(flows: BTreeMap<String, Vec<FlowAction>>, streams: Arc<Streams>) -> Flows {
        Flows { flows, streams }
    }

    /// Performs one action on a call.
    pub async fn perform(
        &self,
        call: &CallId,
        action: &FlowAction,
    ) -> Result<ActionOutcome, SessionError> {
        let registry = self.streams.registry();
        match action {
            FlowAction::Answer => registry.answer(call).await?,
            FlowAction::Hangup => registry.hangup(call).await?,
            FlowAction::ExternalMediaStart(spec) => {
                let view = self
                    .streams
                    .start_external_media(Resource::Call(call.clone()), spec.clone())
                    .await?;
                return Ok(ActionOutcome::Started(Box::new(view)));
            }
            FlowAction::MediaStreamConnect(spec) => {
                let view = self
                    .streams
                    .connect(Resource::Call(call.clone()), spec.clone())
                    .await?;
                return Ok(ActionOutcome::Connected(Box::new(view)));
            }
            FlowAction::ExternalMediaStop { id: Some(id) } => {
                let view = self.streams.external_media(*id)?;
                if view.resource != Resource::Call(call.clone()) {
                    return Err(SessionError::ExternalMediaNotFound(*id));
                }
                self.streams.stop_external_media(*id).await?;
            }
            FlowAction::ExternalMediaStop { id: None } => {
                self.streams
                    .stop_external_medias_of(&Resource::Call(call.clone()))
                    .await;
            }
        }
        Ok(ActionOutcome::Done)
    }

    /// Starts the flow named by each call that enters the application with `flow=<name>`.
    pub async fn run(
        self: Arc<Self>,
        mut starts: mpsc::UnboundedReceiver<CallStart>,
        tracker: TaskTracker,
        cancel: CancellationToken,
    ) {
        loop {
            let start = tokio::select! {
                _ = cancel.cancelled() => return,
                start = starts.recv() => match start {
                    Some(start) => start,
                    None => return,
                },
            };
            let Some(name) = start
                .args
                .iter()
                .find_map(|arg| arg.trim().strip_prefix("flow="))
            else {
                continue;
            };
            let call_id = start.channel.id.clone();
            let Some(actions) = self.flows.get(name).cloned() else {
                tracing::warn!(call_id, flow = name, "unknown flow: the call is left alone");
                continue;
            };
            let Ok(call) = CallId::parse(&call_id) else {
                tracing::warn!(call_id, "a call id the service cannot use: flow not run");
                continue;
            };
            let span = tracing::info_span!("flow", call_id, flow = name);
            let this = self.clone();
            let cancel = cancel.clone();
            tracker.spawn(
                async move {
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = this.run_flow(&call, &actions) => {}
                    }
                }
                .instrument(span),
            );
        }
    }

    async fn run_flow(&self, call: &CallId, actions: &[FlowAction]) {
        // A call that arrives while the service starts waits for it rather than getting half
        // a flow (answered, then no media).
        if !self.streams.wait_ready(READY_WAIT).await {
            tracing::warn!("the service is not ready (starting or stopping): flow not run");
            return;
        }
        for (step, action) in actions.iter().enumerate() {
            match self.perform(call, action).await {
                Err(e) => {
                    tracing::warn!(step, action = ?action, error = %e, "flow action failed: flow stopped");
                    return;
                }
                // Like Twilio's <Connect>: the flow goes on once the stream has ended.
                Ok(ActionOutcome::Connected(view)) => {
                    if view.status == StreamStatus::Terminated {
                        tracing::warn!(step, reason = ?view.reason, "media_stream_connect: the client's server was not reached");
                    }
                    self.streams.media_stream_ended(view.id).await;
                    tracing::info!(step, stream_id = %view.id, "media_stream_connect: the stream ended");
                }
                Ok(_) => {}
            }
        }
        tracing::info!(steps = actions.len(), "flow done");
    }
}
