//! `GET /v1.0/calls/{id}/media_stream` and `GET /v1.0/conferences/{id}/media_stream`: every
//! check answered as a JSON error before the upgrade; after it, the stream runs in the session
//! layer on the client's connection.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Response;

use super::paths::{CallPath, ConferencePath};
use super::upgrade::NotAnUpgrade;
use super::{ApiError, ApiPath, AppState, ErrorBody, Principal};
use crate::domain::{CallId, ConferenceId, Encapsulation, Format, Resource};
use crate::session::StreamRequest;

type Upgrade = Result<super::upgrade::Upgrade, NotAnUpgrade>;

/// Query parameters the service reads; any other is the client's own.
const OWN_PARAMETERS: [&str; 4] = ["encapsulation", "format", "events", "token"];

/// The query of an upgrade as the OpenAPI document shows it. The handler reads the raw query
/// (the names in [`OWN_PARAMETERS`], which a test keeps equal to these fields) so that every
/// other parameter reaches the client.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct StreamQuery {
    /// How audio is wrapped on the WebSocket.
    encapsulation: Encapsulation,
    /// Default: `ulaw` for rtp and twilio, `slin` for sln and audiosocket. `twilio` takes
    /// `ulaw` only, `audiosocket` anything but `ulaw`; `slin16`, `slin24` and `slin48` are
    /// 16, 24 and 48 kHz signed linear.
    format: Option<Format>,
    /// Text events (`started`, `mark`, `cleared`, `dtmf`, `xoff`, `xon`, `drained`,
    /// `stopped`); `1` and `0` are taken too. Default `false`.
    events: Option<bool>,
    /// The token, when not sent as `Authorization: Bearer` (browsers cannot set headers on a
    /// WebSocket).
    token: Option<String>,
    /// Any other parameter is the client's own: `customParameters` of the Twilio `start`
    /// message (at most 32).
    #[param(style = Form, explode, value_type = Option<Object>, inline)]
    custom_parameters: Option<HashMap<String, String>>,
}
/// The client's own parameters kept at most (the query string is bounded before this).
const MAX_PARAMETERS: usize = 32;
type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

/// A media stream on a call (WebSocket)
///
/// A WebSocket (RFC 6455) carrying the call's audio both ways in 20 ms frames, in the
/// encapsulation asked for: `rtp`, `sln` and `audiosocket` as binary messages with JSON
/// controls and events, `twilio` as Twilio Media Streams text messages. Every check is made
/// before the upgrade and answered as a JSON error without upgrading. Close codes once open:
/// 1000 ended, 1001 shutdown, 1007 malformed media, 1008 token expired, 1009 a message over
/// 64 KiB, 1011 Asterisk or internal failure.
#[utoipa::path(
    get,
    path = "/calls/{id}/media_stream",
    tag = "media streams",
    params(
        CallPath,
        StreamQuery,
        ("Connection" = String, Header, description = "`Upgrade`"),
        ("Upgrade" = String, Header, description = "`websocket`"),
        ("Sec-WebSocket-Version" = String, Header, description = "`13`"),
        ("Sec-WebSocket-Key" = String, Header, description = "The client's nonce (RFC 6455 §4.1)"),
    ),
    responses(
        (status = 101, description = "Switching Protocols: the WebSocket is open", headers(
            ("Upgrade" = String, description = "`websocket`"),
            ("Connection" = String, description = "`upgrade`"),
            ("Sec-WebSocket-Accept" = String, description = "The accept key of RFC 6455 §4.2.2"),
        )),
        (status = 400, description = "`INVALID_ARGUMENT`: not a call id, encapsulation missing or unknown, a format unknown or not allowed with the encapsulation, `events` not a boolean, or not a WebSocket upgrade (HTTP/1.1 GET with `Upgrade: websocket`, version 13 and a key)", body = ErrorBody),
        (status = 403, description = "`PERMISSION_DENIED`: the token is bound to another resource", body = ErrorBody),
        (status = 404, description = "`CALL_NOT_FOUND`", body = ErrorBody),
        (status = 429, description = "`LIMIT_EXCEEDED`: `limits.max_streams` or `limits.max_streams_per_resource`", body = ErrorBody),
        (status = 503, description = "`ASTERISK_UNAVAILABLE`: Asterisk unreachable, or the service not ready", body = ErrorBody),
    )
)]
pub async fn call(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(CallPath { id }): ApiPath<CallPath>,
    params: Params,
    upgrade: Upgrade,
) -> Result<Response, ApiError> {
    let resource = Resource::Call(CallId::parse(&id)?);
    open(state, principal, resource, params, upgrade).await
}

/// A media stream on a conference (WebSocket)
///
/// A WebSocket (RFC 6455) carrying the conference's mix, and speaking into it, in 20 ms frames, in the
/// encapsulation asked for: `rtp`, `sln` and `audiosocket` as binary messages with JSON
/// controls and events, `twilio` as Twilio Media Streams text messages. Every check is made
/// before the upgrade and answered as a JSON error without upgrading. Close codes once open:
/// 1000 ended, 1001 shutdown, 1007 malformed media, 1008 token expired, 1009 a message over
/// 64 KiB, 1011 Asterisk or internal failure.
#[utoipa::path(
    get,
    path = "/conferences/{id}/media_stream",
    tag = "media streams",
    params(
        ConferencePath,
        StreamQuery,
        ("Connection" = String, Header, description = "`Upgrade`"),
        ("Upgrade" = String, Header, description = "`websocket`"),
        ("Sec-WebSocket-Version" = String, Header, description = "`13`"),
        ("Sec-WebSocket-Key" = String, Header, description = "The client's nonce (RFC 6455 §4.1)"),
    ),
    responses(
        (status = 101, description = "Switching Protocols: the WebSocket is open", headers(
            ("Upgrade" = String, description = "`websocket`"),
            ("Connection" = String, description = "`upgrade`"),
            ("Sec-WebSocket-Accept" = String, description = "The accept key of RFC 6455 §4.2.2"),
        )),
        (status = 400, description = "`INVALID_ARGUMENT`: not a conference id, encapsulation missing or unknown, a format unknown or not allowed with the encapsulation, `events` not a boolean, or not a WebSocket upgrade (HTTP/1.1 GET with `Upgrade: websocket`, version 13 and a key)", body = ErrorBody),
        (status = 403, description = "`PERMISSION_DENIED`: the token is bound to another resource", body = ErrorBody),
        (status = 404, description = "`CONFERENCE_NOT_FOUND`", body = ErrorBody),
        (status = 429, description = "`LIMIT_EXCEEDED`: `limits.max_streams` or `limits.max_streams_per_resource`", body = ErrorBody),
        (status = 503, description = "`ASTERISK_UNAVAILABLE`: Asterisk unreachable, or the service not ready", body = ErrorBody),
    )
)]
pub async fn conference(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(ConferencePath { id }): ApiPath<ConferencePath>,
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
    let upgrade = upgrade.map_err(|e| ApiError::invalid_argument(e.to_string()))?;
    let streams = state.streams.clone();
    Ok(
        upgrade.respond(state.streams.tasks(), move |client| async move {
            streams.run(admission, request, client).await;
        }),
    )
}

fn parse_request(
    params: &HashMap<String, String>,
    resource: Resource,
    principal: &Principal,
) -> Result<StreamRequest, ApiError> {
    let encapsulation: Encapsulation = params
        .get("encapsulation")
        .ok_or_else(|| {
            ApiError::invalid_argument("encapsulation is required: rtp, sln, audiosocket or twilio")
        })?
        .parse()
        .map_err(|()| {
            ApiError::invalid_argument("encapsulation must be rtp, sln, audiosocket or twilio")
        })?;
    let format = match params.get("format") {
        None => encapsulation.default_format(),
        Some(f) => f.parse().map_err(|()| {
            ApiError::invalid_argument("format must be ulaw, slin, slin16, slin24 or slin48")
        })?,
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
    // What the service does not read itself belongs to the client (Twilio's customParameters).
    let parameters = params
        .iter()
        .filter(|(k, _)| !OWN_PARAMETERS.contains(&k.as_str()))
        .take(MAX_PARAMETERS)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(StreamRequest {
        resource,
        encapsulation,
        format,
        events,
        // A signed `exp` beyond what the clock can hold means "never" in practice.
        expires_at: principal
            .expires_at
            .and_then(|exp| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(exp))),
        parameters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_names_the_parameters_the_service_reads() {
        let documented: Vec<String> = <StreamQuery as utoipa::IntoParams>::into_params(|| None)
            .into_iter()
            .map(|p| p.name)
            .filter(|name| name != "custom_parameters")
            .collect();
        assert_eq!(documented, OWN_PARAMETERS);
    }
}
