//! Calls and conferences as Asterisk last told us.
//!
//! A call is a channel in the service's Stasis application; a conference is a mixing bridge.
//! Objects the service creates for itself (ids starting with `mediastream-`) are never either.
//! Events update the maps one at a time; after every (re)connect the maps are replaced by what
//! `GET /channels` and `GET /bridges` say, so a missed event heals at the next reconnect.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::ari::events::StreamItem;
use crate::ari::{AriClient, AriError, AriErrorKind, Bridge, Channel, Event};
use crate::domain::{CallId, ConferenceId, INTERNAL_PREFIX};
use crate::session::calls::{Call, Conference};
use crate::telemetry::Metrics;

/// Why an operation on a call or conference did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("call {0} not found")]
    CallNotFound(CallId),
    #[error("conference {0} not found")]
    ConferenceNotFound(ConferenceId),
    /// Asterisk refused because of the object's state (422, 409), e.g. a call not in Stasis.
    #[error("{0}")]
    StateInvalid(String),
    /// The request is wrong in a way only visible now (a host that does not resolve).
    #[error("{0}")]
    InvalidArgument(String),
    /// The configuration forbids it (a host outside `external_media.allowed_hosts`).
    #[error("{0}")]
    PermissionDenied(String),
    #[error("external media {0} not found")]
    ExternalMediaNotFound(uuid::Uuid),
    #[error("media stream {0} not found")]
    MediaStreamNotFound(uuid::Uuid),
    /// The service cannot do this now: it is still cleaning up after a previous run, or
    /// shutting down, or Asterisk did not complete a step of the setup.
    #[error("{0}")]
    NotReady(String),
    /// A limit of the configuration would be exceeded.
    #[error("{0}")]
    LimitExceeded(String),
    /// Asterisk failed, or did not answer. Its cause is logged, never shown to a client.
    #[error(transparent)]
    Asterisk(AriError),
}

impl From<AriError> for SessionError {
    fn from(e: AriError) -> SessionError {
        match e {
            // Never sent to Asterisk: the id, not Asterisk, is at fault.
            AriError::InvalidId(id) => {
                SessionError::InvalidArgument(format!("`{id}` is not a valid id"))
            }
            e => SessionError::Asterisk(e),
        }
    }
}

/// What a stream following an Asterisk object hears about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The channel or bridge no longer exists.
    Gone { id: String },
    /// The channel entered a bridge (`Some`) or left one (`None`).
    Moved {
        channel: String,
        bridge: Option<String>,
    },
    /// A DTMF digit was received from the channel.
    Dtmf { channel: String, digit: String },
}

/// How long a removal may take to show in Asterisk's events before the service stops waiting.
pub const GONE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Objects being removed, until Asterisk says each is gone.
#[derive(Debug)]
pub struct Gone {
    key: u64,
    rx: mpsc::UnboundedReceiver<Notice>,
    pending: std::collections::HashSet<String>,
}

impl Gone {
    /// No need to wait for `id` (it was gone already).
    pub fn skip(&mut self, id: &str) {
        self.pending.remove(id);
    }

    /// Waits until every pending object is reported gone, or `limit`.
    pub async fn wait(mut self, registry: &Registry, limit: std::time::Duration) {
        let _ = tokio::time::timeout(limit, async {
            while !self.pending.is_empty() {
                match self.rx.recv().await {
                    Some(Notice::Gone { id }) => {
                        self.pending.remove(&id);
                    }
                    Some(_) => {}
                    None => return,
                }
            }
        })
        .await;
        if !self.pending.is_empty() {
            tracing::warn!(pending = ?self.pending, "Asterisk did not report these removed in time");
        }
        registry.unwatch(self.key);
    }
}

/// A follower of objects, identified by a key unique to it (a stream's).
#[derive(Debug)]
struct Watcher {
    key: u64,
    /// Unbounded: notices are rare (a handful per stream) and the event task must not wait.
    tx: mpsc::UnboundedSender<Notice>,
}

#[derive(Debug, Default)]
struct State {
    calls: HashMap<CallId, Channel>,
    conferences: HashMap<ConferenceId, Bridge>,
    /// The bridge each channel is in, for every kind of bridge (the `bridge:` subscription
    /// reports them all): tells an idle call from a bridged one.
    channel_bridge: HashMap<String, String>,
    /// The service's own channels whose `StasisStart` someone awaits (ARI refuses to bridge a
    /// channel before it).
    stasis_waiters: HashMap<String, oneshot::Sender<()>>,
    watchers: HashMap<String, Vec<Watcher>>,
}

impl State {
    fn notify(&mut self, id: &str, notice: Notice) {
        if let Some(list) = self.watchers.get_mut(id) {
            list.retain(|w| w.tx.send(notice.clone()).is_ok());
        }
    }
}

/// A call that just entered the application, with the arguments of its `Stasis()`.
#[derive(Debug, Clone)]
pub struct CallStart {
    pub channel: Channel,
    pub args: Vec<String>,
}

#[derive(Debug)]
pub struct Registry {
    app: String,
    /// Told of every call entering the application (flows start from there).
    call_starts: Option<mpsc::UnboundedSender<CallStart>>,
    ari: AriClient,
    metrics: Arc<Metrics>,
    /// Short critical sections only; never held across an await.
    state: Mutex<State>,
    /// Keys for [`Registry::watch`], unique across the service.
    next_key: std::sync::atomic::AtomicU64,
}

fn internal(id: &str) -> bool {
    id.starts_with(INTERNAL_PREFIX)
}

/// The conference a bridge is, if it is one: a mixing bridge not of the service's own, with an
/// id the API can name.
fn conference_id(bridge: &Bridge) -> Option<ConferenceId> {
    if !bridge.is_mixing() || internal(&bridge.id) {
        return None;
    }
    ConferenceId::parse(&bridge.id).ok()
}

/// The call a channel of the application is, if the API can name it.
fn call_id(channel: &Channel) -> Option<CallId> {
    CallId::parse(&channel.id).ok()
}

impl Registry {
    pub fn new(app: String, ari: AriClient, metrics: Arc<Metrics>) -> Registry {
        Registry {
            app,
            call_starts: None,
            ari,
            metrics,
            state: Mutex::new(State::default()),
            next_key: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// Sends every call entering the application to `tx`.
    pub fn with_call_starts(mut self, tx: mpsc::UnboundedSender<CallStart>) -> Registry {
        self.call_starts = Some(tx);
        self
    }

    pub fn ari(&self) -> &AriClient {
        &self.ari
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind, still consistent enough to
        // read; the next reconcile replaces them anyway.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Calls in the application, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        let mut calls: Vec<Call> = self
            .lock()
            .calls
            .values()
            .cloned()
            .map(Call::from)
            .collect();
        calls.sort_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)));
        calls
    }

    /// Conferences, oldest first.
    pub fn conferences(&self) -> Vec<Conference> {
        let mut conferences: Vec<Conference> = self
            .lock()
            .conferences
            .values()
            .cloned()
            .map(Conference::from)
            .collect();
        conferences.sort_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)));
        conferences
    }

    /// A call by id: from the registry, else from Asterisk (a channel owned by another
    /// application or running dialplan is a valid call too).
    pub async fn find_call(&self, id: &CallId) -> Result<Call, SessionError> {
        self.call_channel(id).await.map(Call::from)
    }

    /// A conference by id: from the registry, else from Asterisk.
    pub async fn find_conference(&self, id: &ConferenceId) -> Result<Conference, SessionError> {
        self.conference_bridge(id).await.map(Conference::from)
    }

    /// Answers a call.
    pub async fn answer(&self, id: &CallId) -> Result<(), SessionError> {
        self.ari
            .answer(id.as_str())
            .await
            .map_err(|e| call_error(e, id))
    }

    /// Hangs a call up: a call Asterisk does not know is `CallNotFound`.
    pub async fn hangup(&self, id: &CallId) -> Result<(), SessionError> {
        if id.is_internal() {
            return Err(SessionError::CallNotFound(id.clone()));
        }
        self.ari
            .hangup(id.as_str())
            .await
            .map_err(|e| call_error(e, id))
    }

    async fn call_channel(&self, id: &CallId) -> Result<Channel, SessionError> {
        if id.is_internal() {
            return Err(SessionError::CallNotFound(id.clone()));
        }
        if let Some(call) = self.lock().calls.get(id.as_str()) {
            return Ok(call.clone());
        }
        match self.ari.channel(id.as_str()).await {
            Ok(channel) => Ok(channel),
            Err(e) if e.is_not_found() => Err(SessionError::CallNotFound(id.clone())),
            Err(e) => Err(e.into()),
        }
    }

    async fn conference_bridge(&self, id: &ConferenceId) -> Result<Bridge, SessionError> {
        let not_found = || SessionError::ConferenceNotFound(id.clone());
        if id.is_internal() {
            return Err(not_found());
        }
        if let Some(bridge) = self.lock().conferences.get(id.as_str()) {
            return Ok(bridge.clone());
        }
        match self.ari.bridge(id.as_str()).await {
            Ok(bridge) if bridge.is_mixing() => Ok(bridge),
            Ok(_) => Err(not_found()),
            Err(e) if e.is_not_found() => Err(not_found()),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates a mixing bridge. Its id is a fresh UUID, not `mediastream-…`: a conference
    /// belongs to the user and outlives the service.
    pub async fn create_conference(&self, name: &str) -> Result<Conference, SessionError> {
        let id = uuid::Uuid::new_v4().to_string();
        let bridge = self.ari.create_bridge(&id, name).await?;
        self.upsert_conference(bridge.clone());
        Ok(Conference::from(bridge))
    }

    /// Destroys a conference and answers once Asterisk reports it gone (ARI answers the
    /// request before the bridge has left its lists).
    pub async fn destroy_conference(&self, id: &ConferenceId) -> Result<(), SessionError> {
        self.find_conference(id).await?;
        let gone = self.expect_gone(&[id.to_string()]);
        match self.ari.destroy_bridge(id.as_str()).await {
            Ok(()) => {}
            Err(e) => {
                self.unwatch(gone.key);
                return Err(if e.is_not_found() {
                    SessionError::ConferenceNotFound(id.clone())
                } else {
                    e.into()
                });
            }
        }
        gone.wait(self, GONE_TIMEOUT).await;
        self.lock().conferences.remove(id.as_str());
        self.update_gauges();
        Ok(())
    }

    /// A fresh key for [`Registry::watch`].
    pub fn new_key(&self) -> u64 {
        self.next_key
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Starts following objects about to be removed; [`Gone::wait`] then waits for Asterisk to
    /// report each of them gone. Make it before the removal, so that no event is missed.
    pub fn expect_gone(&self, ids: &[String]) -> Gone {
        let key = self.new_key();
        let (tx, rx) = mpsc::unbounded_channel();
        for id in ids {
            self.watch(key, id, tx.clone());
        }
        Gone {
            key,
            rx,
            pending: ids.iter().cloned().collect(),
        }
    }

    pub async fn add_call(&self, conf: &ConferenceId, call: &CallId) -> Result<(), SessionError> {
        self.find_conference(conf).await?;
        self.find_call(call).await?;
        self.ari
            .add_channel(conf.as_str(), call.as_str())
            .await
            .map_err(|e| state_error(e, conf))
    }

    pub async fn remove_call(
        &self,
        conf: &ConferenceId,
        call: &CallId,
    ) -> Result<(), SessionError> {
        let bridge = self.conference_bridge(conf).await?;
        self.find_call(call).await?;
        if !bridge.channels.iter().any(|c| c == call.as_str()) {
            // Asterisk's own answer may lag an event behind; ask it when unsure.
            let fresh = self.ari.bridge(conf.as_str()).await?;
            if !fresh.channels.iter().any(|c| c == call.as_str()) {
                return Err(SessionError::StateInvalid(format!(
                    "call {call} is not in conference {conf}"
                )));
            }
        }
        self.ari
            .remove_channel(conf.as_str(), call.as_str())
            .await
            .map_err(|e| state_error(e, conf))
    }

    /// Applies the event stream until it ends or `cancel` fires.
    pub async fn run(
        self: Arc<Self>,
        mut events: mpsc::UnboundedReceiver<StreamItem>,
        cancel: CancellationToken,
    ) {
        loop {
            let item = tokio::select! {
                _ = cancel.cancelled() => return,
                item = events.recv() => match item {
                    Some(item) => item,
                    None => return,
                },
            };
            match item {
                StreamItem::Connected => {
                    if let Err(e) = self.reconcile().await {
                        // The socket is up but REST failed: the events still flow, and the next
                        // reconnect tries again.
                        tracing::warn!(error = %e, "reconcile with Asterisk failed");
                    }
                }
                StreamItem::Event(event) => self.apply(&event),
                StreamItem::Disconnected => {}
            }
        }
    }

    /// Replaces the maps with Asterisk's current view, after subscribing to every bridge so
    /// that conferences created by others are followed too.
    async fn reconcile(&self) -> Result<(), AriError> {
        self.ari.subscribe(&self.app, "bridge:").await?;
        // Only what was followed before the lists were fetched can be missing from them: an
        // object made meanwhile is not gone.
        let watched_before: std::collections::HashSet<String> =
            self.lock().watchers.keys().cloned().collect();
        let channels = self.ari.channels().await?;
        let bridges = self.ari.bridges().await?;
        let channel_ids: std::collections::HashSet<String> =
            channels.iter().map(|c| c.id.clone()).collect();
        let channel_bridge: HashMap<String, String> = bridges
            .iter()
            .flat_map(|b| b.channels.iter().map(|c| (c.clone(), b.id.clone())))
            .collect();
        let bridge_ids: std::collections::HashSet<String> =
            bridges.iter().map(|b| b.id.clone()).collect();
        let calls: HashMap<CallId, Channel> = channels
            .into_iter()
            .filter(|c| !internal(&c.id) && c.is_in_stasis_app(&self.app))
            .filter_map(|c| Some((call_id(&c)?, c)))
            .collect();
        let conferences: HashMap<ConferenceId, Bridge> = bridges
            .into_iter()
            .filter_map(|b| Some((conference_id(&b)?, b)))
            .collect();
        tracing::info!(
            calls = calls.len(),
            conferences = conferences.len(),
            "reconciled with Asterisk"
        );
        {
            let mut state = self.lock();
            state.calls = calls;
            state.conferences = conferences;
            state.channel_bridge = channel_bridge;
            // What vanished while the socket was down: tell whoever follows it.
            let gone: Vec<String> = state
                .watchers
                .keys()
                .filter(|id| watched_before.contains(*id))
                .filter(|id| !channel_ids.contains(*id) && !bridge_ids.contains(*id))
                // Still being created: not gone, not there yet.
                .filter(|id| !state.stasis_waiters.contains_key(*id))
                .cloned()
                .collect();
            for id in gone {
                state.notify(&id, Notice::Gone { id: id.clone() });
            }
        }
        self.update_gauges();
        Ok(())
    }

    pub(in crate::session) fn apply(&self, event: &Event) {
        {
            let mut state = self.lock();
            match event {
                Event::StasisStart { channel, .. } if internal(&channel.id) => {
                    if let Some(waiter) = state.stasis_waiters.remove(&channel.id) {
                        let _ = waiter.send(());
                    }
                    return;
                }
                Event::StasisStart { channel, args } => {
                    if let Some(id) = call_id(channel) {
                        state.calls.insert(id, channel.clone());
                    }
                    if let Some(tx) = &self.call_starts {
                        let _ = tx.send(CallStart {
                            channel: channel.clone(),
                            args: args.clone(),
                        });
                    }
                }
                Event::ChannelStateChange { channel } => {
                    let Some(call) = state.calls.get_mut(channel.id.as_str()) else {
                        return;
                    };
                    *call = channel.clone();
                }
                // An own channel leaves the application only as it is hung up, and Asterisk
                // does not always tell the application of its destruction afterwards: a snoop
                // channel's `ChannelDestroyed` never comes (its removal was awaited in vain
                // for `GONE_TIMEOUT`). Leaving is its end.
                Event::StasisEnd { channel } if internal(&channel.id) => {
                    state.channel_bridge.remove(&channel.id);
                    state.notify(
                        &channel.id,
                        Notice::Gone {
                            id: channel.id.clone(),
                        },
                    );
                    return;
                }
                Event::StasisEnd { channel } => {
                    state.calls.remove(channel.id.as_str());
                }
                Event::ChannelDestroyed { channel, .. } => {
                    state.calls.remove(channel.id.as_str());
                    state.channel_bridge.remove(&channel.id);
                    state.stasis_waiters.remove(&channel.id);
                    for bridge in state.conferences.values_mut() {
                        bridge.channels.retain(|c| c != &channel.id);
                    }
                    state.notify(
                        &channel.id,
                        Notice::Gone {
                            id: channel.id.clone(),
                        },
                    );
                }
                Event::ChannelEnteredBridge { bridge, channel } => {
                    state
                        .channel_bridge
                        .insert(channel.id.clone(), bridge.id.clone());
                    if let Some(id) = conference_id(bridge) {
                        state.conferences.insert(id, bridge.clone());
                    }
                    let moved = Notice::Moved {
                        channel: channel.id.clone(),
                        bridge: Some(bridge.id.clone()),
                    };
                    state.notify(&channel.id, moved);
                }
                Event::ChannelLeftBridge { bridge, channel } => {
                    if state.channel_bridge.get(&channel.id) == Some(&bridge.id) {
                        state.channel_bridge.remove(&channel.id);
                    }
                    if let Some(id) = conference_id(bridge) {
                        state.conferences.insert(id, bridge.clone());
                    }
                    let moved = Notice::Moved {
                        channel: channel.id.clone(),
                        bridge: None,
                    };
                    state.notify(&channel.id, moved);
                }
                Event::BridgeCreated { bridge } => {
                    let Some(id) = conference_id(bridge) else {
                        return;
                    };
                    state.conferences.insert(id, bridge.clone());
                }
                Event::BridgeDestroyed { bridge } => {
                    state.conferences.remove(bridge.id.as_str());
                    state.channel_bridge.retain(|_, b| b != &bridge.id);
                    state.notify(
                        &bridge.id,
                        Notice::Gone {
                            id: bridge.id.clone(),
                        },
                    );
                }
                Event::ChannelDtmfReceived { channel, digit, .. } => {
                    let dtmf = Notice::Dtmf {
                        channel: channel.id.clone(),
                        digit: digit.clone(),
                    };
                    state.notify(&channel.id, dtmf);
                    return;
                }
                _ => return,
            }
        }
        self.update_gauges();
    }

    /// Resolves when the service's own channel `id` has entered the application. Call before
    /// creating the channel: the event may come before the REST answer.
    pub fn expect_stasis_start(&self, id: &str) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.lock().stasis_waiters.insert(id.to_owned(), tx);
        rx
    }

    /// Forgets a wait that will not be fulfilled (the creation failed).
    pub fn cancel_stasis_start(&self, id: &str) {
        self.lock().stasis_waiters.remove(id);
    }

    /// Sends `tx` what happens to the channel or bridge `id`, until [`Registry::unwatch`].
    pub fn watch(&self, key: u64, id: &str, tx: mpsc::UnboundedSender<Notice>) {
        self.lock()
            .watchers
            .entry(id.to_owned())
            .or_default()
            .push(Watcher { key, tx });
    }

    /// Stops every watch made with `key`.
    pub fn unwatch(&self, key: u64) {
        let mut state = self.lock();
        state.watchers.retain(|_, list| {
            list.retain(|w| w.key != key);
            !list.is_empty()
        });
    }

    /// The bridge a channel is in, as far as the events tell.
    pub fn bridge_of(&self, channel: &str) -> Option<String> {
        self.lock().channel_bridge.get(channel).cloned()
    }

    fn upsert_conference(&self, bridge: Bridge) {
        if let Some(id) = conference_id(&bridge) {
            self.lock().conferences.insert(id, bridge);
            self.update_gauges();
        }
    }

    fn update_gauges(&self) {
        let (calls, conferences) = {
            let state = self.lock();
            (state.calls.len(), state.conferences.len())
        };
        self.metrics.calls.set(calls as i64);
        self.metrics.conferences.set(conferences as i64);
    }
}

/// On bridge membership, Asterisk's "not found" is the conference's, and its state refusals
/// mean the call or bridge is in the wrong state.
/// A failed request on a call: one Asterisk does not know, or one in the wrong state for it.
fn call_error(e: AriError, call: &CallId) -> SessionError {
    match (e.kind(), e) {
        (AriErrorKind::NotFound, _) => SessionError::CallNotFound(call.clone()),
        (AriErrorKind::WrongState, e) => SessionError::StateInvalid(e.to_string()),
        (_, e) => e.into(),
    }
}

fn state_error(e: AriError, conf: &ConferenceId) -> SessionError {
    match (e.kind(), e) {
        (AriErrorKind::NotFound, _) => SessionError::ConferenceNotFound(conf.clone()),
        (AriErrorKind::WrongState, AriError::Status { message, .. }) => {
            SessionError::StateInvalid(message)
        }
        (_, e) => e.into(),
    }
}

/// A registry of application `cap` whose Asterisk never answers, for tests that feed it
/// events themselves.
#[cfg(test)]
pub(crate) fn unconnected() -> Registry {
    let ari = AriClient::new(&crate::config::AriSettings {
        url: "http://127.0.0.1:9".parse().expect("url"),
        username: "u".into(),
        password: "p".into(),
        app: "cap".into(),
        ca_file: None,
    });
    Registry::new("cap".into(), ari, Arc::new(Metrics::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        unconnected()
    }

    fn replay(r: &Registry, fixture: &str, until: usize) {
        let raw: Vec<serde_json::Value> = serde_json::from_str(fixture).expect("fixture");
        for v in raw.iter().take(until) {
            r.apply(&Event::parse(&v.to_string()));
        }
    }

    const CALL: &str = include_str!("../../tests/fixtures/ari-events-call.json");
    const BRIDGE: &str = include_str!("../../tests/fixtures/ari-events-bridge.json");

    fn position(fixture: &str, kind: &str) -> usize {
        let raw: Vec<serde_json::Value> = serde_json::from_str(fixture).expect("fixture");
        raw.iter()
            .position(|v| v["type"] == kind)
            .expect("event in fixture")
            + 1
    }

    #[test]
    fn a_call_appears_on_stasis_start_and_goes_on_stasis_end() {
        let r = registry();
        replay(&r, CALL, position(CALL, "StasisStart"));
        assert_eq!(r.calls().len(), 1);
        assert_eq!(r.calls()[0].id, "cap-call-1");
        assert_eq!(r.metrics.calls.get(), 1);
        replay(&r, CALL, usize::MAX);
        assert!(r.calls().is_empty());
        assert_eq!(r.metrics.calls.get(), 0);
    }

    #[test]
    fn conferences_follow_bridge_events() {
        let r = registry();
        replay(&r, BRIDGE, position(BRIDGE, "ChannelEnteredBridge"));
        let confs = r.conferences();
        assert_eq!(confs.len(), 1);
        assert_eq!(confs[0].call_ids, vec!["cap2-call".to_string()]);
        replay(&r, BRIDGE, usize::MAX);
        assert!(r.conferences().is_empty());
    }

    #[test]
    fn internal_objects_are_never_calls_or_conferences() {
        let r = registry();
        let start = r#"{"type":"StasisStart","args":[],"channel":{"id":"mediastream-em-1","dialplan":{"app_name":"Stasis","app_data":"cap"}}}"#;
        let bridge =
            r#"{"type":"BridgeCreated","bridge":{"id":"mediastream-br-1","bridge_type":"mixing"}}"#;
        let holding =
            r#"{"type":"BridgeCreated","bridge":{"id":"hold-1","bridge_type":"holding"}}"#;
        for e in [start, bridge, holding] {
            r.apply(&Event::parse(e));
        }
        assert!(r.calls().is_empty());
        assert!(r.conferences().is_empty());
    }

    #[test]
    fn an_own_channel_leaving_the_application_is_gone() {
        let r = registry();
        let (tx, mut rx) = mpsc::unbounded_channel();
        r.watch(1, "mediastream-sn-1", tx);
        // As Asterisk 22 reports a snoop channel's hangup: no ChannelDestroyed follows.
        let end = r#"{"type":"StasisEnd","channel":{"id":"mediastream-sn-1","dialplan":{"app_name":"Stasis","app_data":"cap"}}}"#;
        r.apply(&Event::parse(end));
        assert_eq!(
            rx.try_recv().ok(),
            Some(Notice::Gone {
                id: "mediastream-sn-1".into()
            })
        );
    }
}
