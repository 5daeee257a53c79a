//! `GET /v1.0/calls/{id}/media_stream` and `GET /v1.0/conferences/{id}/media_stream`: every
//! check answered as a JSON error before the upgrade; after it, the stream runs in the session
//! layer on adapters that turn axum's WebSocket into [`Inbound`] / [`Outbound`].

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use futures::{SinkExt, StreamExt};

use super::{ApiError, ApiPath, AppState, Principal};
use crate::domain::{CallId, ConferenceId, Encapsulation, Resource};
use crate::relay::stream::MAX_MESSAGE_BYTES;
use crate::relay::{Inbound, Outbound};
use crate::session::StreamRequest;

/// The WebSocket layer refuses messages beyond this (1009); the stream refuses any over
/// [`MAX_MESSAGE_BYTES`] itself, so that it can close with the right code.
const WS_LIMIT: usize = 16 * MAX_MESSAGE_BYTES;

/// Bytes read from the client's socket at a time.
const READ_BUFFER: usize = 4096;

type Upgrade = Result<WebSocketUpgrade, WebSocketUpgradeRejection>;
type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

pub async fn call(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    params: Params,
    upgrade: Upgrade,
) -> Result<Response, ApiError> {
    let resource = Resource::Call(CallId::parse(&id)?);
    open(state, principal, resource, params, upgrade).await
}

pub async fn conference(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    params: Params,
    upgrade: Upgrade,
) -> Result<Response, ApiError> {
    let resource = Resource::Conference(ConferenceId::parse(&id)?);
    open(state, principal, resource, params, upgrade).await
}

async fn open(
    state: AppState,
    principal: Principal,
    resource: Resource,
    params: Params,
    upgrade: Upgrade,
) -> Result<Response, ApiError> {
    let Query(params) = params?;
    let request = parse_request(&params, resource, &principal)?;
    principal.authorize(&request.resource)?;
    let admission = state.streams.admit(&request).await?;
    let upgrade = upgrade.map_err(|_| {
        ApiError::invalid_argument(
            "this route takes a WebSocket upgrade (GET with Upgrade: websocket)",
        )
    })?;
    let streams = state.streams.clone();
    Ok(upgrade
        .max_message_size(WS_LIMIT)
        .max_frame_size(WS_LIMIT)
        // The library zero-fills its read buffer for every read: 128 KiB by default, which
        // cost more than everything else per packet. A frame is at most a few hundred bytes.
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| async move {
            let (client_rx, client_tx) = adapt(socket);
            streams.run(admission, request, client_rx, client_tx).await;
        }))
}

fn parse_request(
    params: &HashMap<String, String>,
    resource: Resource,
    principal: &Principal,
) -> Result<StreamRequest, ApiError> {
    let encapsulation: Encapsulation = params
        .get("encapsulation")
        .ok_or_else(|| {
            ApiError::invalid_argument("encapsulation is required: rtp, sln or audiosocket")
        })?
        .parse()
        .map_err(|()| {
            ApiError::invalid_argument("encapsulation must be rtp, sln or audiosocket")
        })?;
    let format = match params.get("format") {
        None => encapsulation.default_format(),
        Some(f) => f
            .parse()
            .map_err(|()| ApiError::invalid_argument("format must be ulaw or slin"))?,
    };
    if !encapsulation.allows(format) {
        return Err(ApiError::invalid_argument(format!(
            "format {} is not allowed with encapsulation {}",
            format.as_str(),
            encapsulation.as_str()
        )));
    }
    let events = match params.get("events").map(String::as_str) {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(_) => return Err(ApiError::invalid_argument("events must be true or false")),
    };
    Ok(StreamRequest {
        resource,
        encapsulation,
        format,
        events,
        // A signed `exp` beyond what the clock can hold means "never" in practice.
        expires_at: principal
            .expires_at
            .and_then(|exp| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(exp))),
    })
}

/// Splits axum's socket into the stream engine's message types.
fn adapt(
    socket: WebSocket,
) -> (
    impl futures::Stream<Item = Inbound> + Unpin,
    impl futures::Sink<Outbound> + Unpin,
) {
    let (sink, stream) = socket.split();
    let inbound = stream.filter_map(|message| async move {
        match message {
            Ok(Message::Binary(bytes)) => Some(Inbound::Binary(bytes)),
            Ok(Message::Text(text)) => Some(Inbound::Text(text.as_str().to_owned())),
            Ok(Message::Close(_)) => Some(Inbound::Close),
            Ok(Message::Ping(_) | Message::Pong(_)) => None,
            // axum hides the WebSocket library's error type (and its version); its text is
            // what there is to tell a refused message from a lost connection.
            Err(e) => {
                let text = e.to_string();
                Some(if text.contains("Space limit exceeded") {
                    Inbound::TooLarge
                } else if text.contains("UTF-8") || text.contains("utf-8") {
                    Inbound::Malformed("a text message that is not UTF-8".into())
                } else {
                    Inbound::Close
                })
            }
        }
    });
    let outbound = sink.with(|message: Outbound| async move {
        Ok::<_, axum::Error>(match message {
            Outbound::Binary(bytes) => Message::Binary(bytes),
            Outbound::Text(text) => Message::Text(text.into()),
            Outbound::Close { code, reason } => Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })),
        })
    });
    (Box::pin(inbound), Box::pin(outbound))
}
