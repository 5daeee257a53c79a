//! The simulated Asterisk's ARI: the REST requests the service makes on start-up, stream open
//! and teardown, and the events it waits for, in the shapes Asterisk 22 uses (copied from the
//! captured events in `tests/fixtures/ari-events-*.json`).
//!
//! It keeps channels and bridges in memory and nothing else: there is no dialplan, no mixing,
//! no snoop. A call is a name in a table; an externalMedia channel is a slot of the RTP engine
//! that starts sending once it shares a bridge with a call. Requests it does not know are
//! answered 404 and counted, so a run says whether the service asked for anything unsimulated.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::rtp::{Format, Slots};

type Params = Query<HashMap<String, String>>;

#[derive(Debug)]
enum Kind {
    /// The call with this index (the simulation's client number).
    Call(usize),
    /// An externalMedia channel and its RTP slot.
    Media(usize),
}

#[derive(Debug)]
struct Chan {
    id: String,
    name: String,
    kind: Kind,
    app: String,
    created: String,
    bridge: Option<String>,
    vars: Option<Value>,
}

#[derive(Debug)]
struct Br {
    id: String,
    name: String,
    channels: Vec<String>,
    created: String,
}

#[derive(Debug, Default)]
struct World {
    channels: HashMap<String, Chan>,
    bridges: HashMap<String, Br>,
    /// The connected events socket, and a number telling a replaced one from the current.
    events: Option<(u64, mpsc::UnboundedSender<String>)>,
    app: String,
}

#[derive(Debug)]
pub struct Ari {
    /// `Basic …` expected on every request.
    auth: String,
    world: Mutex<World>,
    slots: Arc<Slots>,
    /// `UNICASTRTP_LOCAL_ADDRESS` / `_PORT` of every externalMedia channel.
    rtp_locals: Vec<SocketAddrV4>,
    /// Per call index: the slot + 1 of the externalMedia channel bridged with it (0: none).
    pub call_slot: Vec<AtomicU32>,
    pub events_up: watch::Sender<bool>,
    next_socket: AtomicU64,
    pub requests: AtomicU64,
    pub unknown_requests: Mutex<Vec<String>>,
}

fn timestamp() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "message": message }))).into_response()
}

impl Chan {
    fn json(&self) -> Value {
        let mut v = json!({
            "id": self.id,
            "name": self.name,
            "state": "Up",
            "protocol_id": "",
            "caller": {"name": "", "number": ""},
            "connected": {"name": "", "number": ""},
            "accountcode": "",
            "dialplan": {
                "context": "default", "exten": "s", "priority": 1,
                "app_name": "Stasis", "app_data": self.app,
            },
            "creationtime": self.created,
            "language": "en",
        });
        if let Some(vars) = &self.vars {
            v["channelvars"] = vars.clone();
        }
        v
    }
}

impl Br {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "technology": "simple_bridge",
            "bridge_type": "mixing",
            "bridge_class": "stasis",
            "creator": "Stasis",
            "name": self.name,
            "channels": self.channels,
            "creationtime": self.created,
            "video_mode": "talker",
        })
    }
}

impl World {
    fn emit(&self, kind: &str, body: Value) {
        let Some((_, tx)) = &self.events else {
            return;
        };
        let mut event = json!({
            "type": kind,
            "timestamp": timestamp(),
            "asterisk_id": "00:00:00:00:00:00",
            "application": self.app,
        });
        if let (Value::Object(e), Value::Object(b)) = (&mut event, body) {
            e.extend(b);
        }
        let _ = tx.send(event.to_string());
    }

    fn channel_event(&self, kind: &str, id: &str, extra: Value) {
        if let Some(c) = self.channels.get(id) {
            let mut body = json!({ "channel": c.json() });
            if let (Value::Object(b), Value::Object(x)) = (&mut body, extra) {
                b.extend(x);
            }
            self.emit(kind, body);
        }
    }

    fn bridge_channel_event(&self, kind: &str, bridge: &str, channel: &str) {
        if let (Some(b), Some(c)) = (self.bridges.get(bridge), self.channels.get(channel)) {
            self.emit(kind, json!({ "bridge": b.json(), "channel": c.json() }));
        }
    }

    /// Takes `channel` out of its bridge, with the event.
    fn leave_bridge(&mut self, channel: &str) -> Option<String> {
        let bridge = self.channels.get_mut(channel)?.bridge.take()?;
        if let Some(b) = self.bridges.get_mut(&bridge) {
            b.channels.retain(|c| c != channel);
        }
        self.bridge_channel_event("ChannelLeftBridge", &bridge, channel);
        Some(bridge)
    }
}

impl Ari {
    pub fn new(
        user: &str,
        password: &str,
        slots: Arc<Slots>,
        rtp_locals: Vec<SocketAddrV4>,
        calls: usize,
    ) -> Ari {
        use base64::Engine;
        let raw = format!("{user}:{password}");
        Ari {
            auth: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            ),
            world: Mutex::new(World::default()),
            slots,
            rtp_locals,
            call_slot: (0..calls).map(|_| AtomicU32::new(0)).collect(),
            events_up: watch::Sender::new(false),
            next_socket: AtomicU64::new(1),
            requests: AtomicU64::new(0),
            unknown_requests: Mutex::new(Vec::new()),
        }
    }

    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts `count` calls into the application `app` (a `StasisStart` each if the service
    /// listens). Call `i` has the id `call_id(i)`.
    pub fn create_calls(&self, app: &str, count: usize) {
        let mut w = self.world();
        for i in 0..count {
            let id = call_id(i);
            w.channels.insert(
                id.clone(),
                Chan {
                    id: id.clone(),
                    name: format!("PJSIP/sim-{i:05}"),
                    kind: Kind::Call(i),
                    app: app.to_owned(),
                    created: timestamp(),
                    bridge: None,
                    vars: None,
                },
            );
            w.channel_event("StasisStart", &id, json!({ "args": [] }));
        }
    }

    /// Hangs up every call (the end of the run), with the events Asterisk sends.
    pub fn hang_up_calls(&self) {
        let mut w = self.world();
        let ids: Vec<String> = w
            .channels
            .values()
            .filter(|c| matches!(c.kind, Kind::Call(_)))
            .map(|c| c.id.clone())
            .collect();
        for id in ids {
            destroy_channel(&mut w, &self.slots, &id);
        }
    }

    /// Channels and bridges the service created (`mediastream-…`) that still exist.
    pub fn leftovers(&self) -> (usize, usize) {
        let w = self.world();
        let own = |id: &String| id.starts_with("mediastream-");
        (
            w.channels.keys().filter(|id| own(id)).count(),
            w.bridges.keys().filter(|id| own(id)).count(),
        )
    }

    /// Re-reads which externalMedia channel is bridged with which call, and which send.
    fn refresh_media(&self, w: &World, bridge: &str) {
        let Some(b) = w.bridges.get(bridge) else {
            return;
        };
        let kinds: Vec<&Kind> = b
            .channels
            .iter()
            .filter_map(|c| w.channels.get(c).map(|c| &c.kind))
            .collect();
        let call = kinds.iter().find_map(|k| match k {
            Kind::Call(i) => Some(*i),
            Kind::Media(_) => None,
        });
        for kind in &kinds {
            if let Kind::Media(slot) = kind {
                self.slots.slots[*slot]
                    .active
                    .store(call.is_some(), Ordering::Relaxed);
                if let Some(call) = call {
                    self.call_slot[call].store(*slot as u32 + 1, Ordering::Relaxed);
                }
            }
        }
    }
}

pub fn call_id(i: usize) -> String {
    format!("sim-call-{i}")
}

fn destroy_channel(w: &mut World, slots: &Slots, id: &str) -> bool {
    if !w.channels.contains_key(id) {
        return false;
    }
    w.leave_bridge(id);
    w.channel_event("ChannelHangupRequest", id, json!({ "cause": 16 }));
    w.channel_event("StasisEnd", id, json!({}));
    w.channel_event(
        "ChannelDestroyed",
        id,
        json!({ "cause": 16, "cause_txt": "Normal Clearing" }),
    );
    if let Some(Chan {
        kind: Kind::Media(slot),
        ..
    }) = w.channels.remove(id)
    {
        slots.release(slot);
    }
    true
}

pub fn router(ari: Arc<Ari>) -> axum::Router {
    axum::Router::new()
        .route("/ari/events", get(events))
        .route("/ari/asterisk/info", get(info))
        .route("/ari/applications/{app}/subscription", post(subscribe))
        .route("/ari/channels", get(list_channels))
        .route("/ari/channels/externalMedia", post(external_media))
        .route("/ari/channels/{id}", get(get_channel).delete(hangup))
        .route("/ari/channels/{id}/answer", post(answer))
        .route("/ari/bridges", get(list_bridges).post(create_bridge))
        .route("/ari/bridges/{id}", get(get_bridge).delete(destroy_bridge))
        .route("/ari/bridges/{id}/addChannel", post(add_channel))
        .route("/ari/bridges/{id}/removeChannel", post(remove_channel))
        .fallback(unknown)
        .layer(axum::middleware::from_fn_with_state(ari.clone(), auth))
        .with_state(ari)
}

async fn auth(State(ari): State<Arc<Ari>>, req: Request, next: Next) -> Response {
    ari.requests.fetch_add(1, Ordering::Relaxed);
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if given != Some(ari.auth.as_str()) {
        return error(StatusCode::UNAUTHORIZED, "Authentication required");
    }
    next.run(req).await
}

async fn unknown(State(ari): State<Arc<Ari>>, req: Request) -> Response {
    let what = format!("{} {}", req.method(), req.uri().path());
    let mut list = ari
        .unknown_requests
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if list.len() < 20 {
        list.push(what);
    }
    error(StatusCode::NOT_FOUND, "simulation: resource not simulated")
}

async fn events(State(ari): State<Arc<Ari>>, q: Params, ws: WebSocketUpgrade) -> Response {
    let app = q.get("app").cloned().unwrap_or_default();
    ws.on_upgrade(move |socket| events_session(ari, app, socket))
}

/// One events socket: the latest one replaces the previous, as in Asterisk.
async fn events_session(ari: Arc<Ari>, app: String, mut socket: WebSocket) {
    let number = ari.next_socket.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::unbounded_channel();
    {
        let mut w = ari.world();
        w.events = Some((number, tx));
        w.app = app;
    }
    ari.events_up.send_replace(true);
    loop {
        tokio::select! {
            event = rx.recv() => match event {
                Some(text) => if socket.send(Message::Text(text.into())).await.is_err() { break },
                None => break,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    let mut w = ari.world();
    if w.events.as_ref().is_some_and(|(n, _)| *n == number) {
        w.events = None;
        ari.events_up.send_replace(false);
    }
}

async fn info() -> Response {
    Json(json!({
        "system": {"version": "22.0.0-simulation", "entity_id": "00:00:00:00:00:00"},
        "build": {"os": "Linux"},
    }))
    .into_response()
}

async fn subscribe(Path(app): Path<String>) -> Response {
    Json(json!({
        "name": app, "channel_ids": [], "bridge_ids": [], "endpoint_ids": [],
        "device_names": [], "events_allowed": [], "events_disallowed": [],
    }))
    .into_response()
}

async fn list_channels(State(ari): State<Arc<Ari>>) -> Response {
    let w = ari.world();
    let list: Vec<Value> = w.channels.values().map(Chan::json).collect();
    Json(list).into_response()
}

async fn get_channel(State(ari): State<Arc<Ari>>, Path(id): Path<String>) -> Response {
    match ari.world().channels.get(&id) {
        Some(c) => Json(c.json()).into_response(),
        None => error(StatusCode::NOT_FOUND, "Channel not found"),
    }
}

async fn answer(State(ari): State<Arc<Ari>>, Path(id): Path<String>) -> Response {
    if ari.world().channels.contains_key(&id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(StatusCode::NOT_FOUND, "Channel not found")
    }
}

async fn hangup(State(ari): State<Arc<Ari>>, Path(id): Path<String>) -> Response {
    let mut w = ari.world();
    if destroy_channel(&mut w, &ari.slots, &id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(StatusCode::NOT_FOUND, "Channel not found")
    }
}

async fn external_media(State(ari): State<Arc<Ari>>, q: Params) -> Response {
    let get = |k: &str| q.get(k).map(String::as_str);
    if get("encapsulation").unwrap_or("rtp") != "rtp" || get("transport").unwrap_or("udp") != "udp"
    {
        return error(
            StatusCode::NOT_IMPLEMENTED,
            "simulation: only RTP over UDP is simulated",
        );
    }
    let Some(format) = get("format").and_then(Format::parse) else {
        // Asterisk answers a format it cannot use with 500 (SPEC §8).
        return error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
    };
    let Some(dest) = get("external_host")
        .and_then(|h| h.parse::<SocketAddrV4>().ok())
        .filter(|a| IpAddr::V4(*a.ip()).is_loopback())
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "simulation: external_host must be a loopback IPv4 host:port",
        );
    };
    let id = get("channelId")
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let app = get("app").unwrap_or_default().to_owned();
    let mut w = ari.world();
    if w.channels.contains_key(&id) {
        return error(
            StatusCode::CONFLICT,
            "Channel with given unique ID already exists",
        );
    }
    let Some(slot) = ari.slots.allocate(dest, format) else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "simulation: out of RTP slots",
        );
    };
    let chan = Chan {
        id: id.clone(),
        name: format!("UnicastRTP/{dest}-{slot:#010x}"),
        kind: Kind::Media(slot),
        app,
        created: timestamp(),
        bridge: None,
        vars: Some(json!({
            "UNICASTRTP_LOCAL_ADDRESS": ari.rtp_locals[slot].ip().to_string(),
            "UNICASTRTP_LOCAL_PORT": ari.rtp_locals[slot].port().to_string(),
        })),
    };
    let body = chan.json();
    w.channels.insert(id.clone(), chan);
    w.channel_event("StasisStart", &id, json!({ "args": [] }));
    Json(body).into_response()
}

async fn list_bridges(State(ari): State<Arc<Ari>>) -> Response {
    let w = ari.world();
    let list: Vec<Value> = w.bridges.values().map(Br::json).collect();
    Json(list).into_response()
}

async fn get_bridge(State(ari): State<Arc<Ari>>, Path(id): Path<String>) -> Response {
    match ari.world().bridges.get(&id) {
        Some(b) => Json(b.json()).into_response(),
        None => error(StatusCode::NOT_FOUND, "Bridge not found"),
    }
}

async fn create_bridge(State(ari): State<Arc<Ari>>, q: Params) -> Response {
    let id = q
        .get("bridgeId")
        .cloned()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut w = ari.world();
    if w.bridges.contains_key(&id) {
        return error(StatusCode::CONFLICT, "Bridge with this id already exists");
    }
    let bridge = Br {
        id: id.clone(),
        name: q.get("name").cloned().unwrap_or_default(),
        channels: Vec::new(),
        created: timestamp(),
    };
    let body = bridge.json();
    w.bridges.insert(id, bridge);
    w.emit("BridgeCreated", json!({ "bridge": body }));
    Json(body).into_response()
}

async fn destroy_bridge(State(ari): State<Arc<Ari>>, Path(id): Path<String>) -> Response {
    let mut w = ari.world();
    let Some(members) = w.bridges.get(&id).map(|b| b.channels.clone()) else {
        return error(StatusCode::NOT_FOUND, "Bridge not found");
    };
    for channel in &members {
        w.leave_bridge(channel);
        if let Some(Kind::Media(slot)) = w.channels.get(channel).map(|c| &c.kind) {
            ari.slots.slots[*slot]
                .active
                .store(false, Ordering::Relaxed);
        }
    }
    if let Some(b) = w.bridges.remove(&id) {
        w.emit("BridgeDestroyed", json!({ "bridge": b.json() }));
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn add_channel(State(ari): State<Arc<Ari>>, Path(id): Path<String>, q: Params) -> Response {
    let Some(channel) = q.get("channel").cloned() else {
        return error(StatusCode::BAD_REQUEST, "channel: missing");
    };
    let mut w = ari.world();
    if !w.bridges.contains_key(&id) {
        return error(StatusCode::NOT_FOUND, "Bridge not found");
    }
    let Some(current) = w.channels.get(&channel).map(|c| c.bridge.clone()) else {
        return error(StatusCode::BAD_REQUEST, "Channel not found");
    };
    if current.as_deref() == Some(id.as_str()) {
        return StatusCode::NO_CONTENT.into_response();
    }
    if let Some(old) = w.leave_bridge(&channel) {
        ari.refresh_media(&w, &old);
    }
    if let Some(b) = w.bridges.get_mut(&id) {
        b.channels.push(channel.clone());
    }
    if let Some(c) = w.channels.get_mut(&channel) {
        c.bridge = Some(id.clone());
    }
    w.bridge_channel_event("ChannelEnteredBridge", &id, &channel);
    ari.refresh_media(&w, &id);
    StatusCode::NO_CONTENT.into_response()
}

async fn remove_channel(
    State(ari): State<Arc<Ari>>,
    Path(id): Path<String>,
    q: Params,
) -> Response {
    let Some(channel) = q.get("channel").cloned() else {
        return error(StatusCode::BAD_REQUEST, "channel: missing");
    };
    let mut w = ari.world();
    if !w.bridges.contains_key(&id) {
        return error(StatusCode::NOT_FOUND, "Bridge not found");
    }
    if w.channels.get(&channel).and_then(|c| c.bridge.as_deref()) != Some(id.as_str()) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Channel not in this bridge",
        );
    }
    w.leave_bridge(&channel);
    if let Some(Kind::Media(slot)) = w.channels.get(&channel).map(|c| &c.kind) {
        ari.slots.slots[*slot]
            .active
            .store(false, Ordering::Relaxed);
    }
    StatusCode::NO_CONTENT.into_response()
}
