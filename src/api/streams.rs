//! `GET /v1.0/calls/{id}/media_stream` and `GET /v1.0/conferences/{id}/media_stream`: every
//! check answered as a JSON error before the upgrade; after it, the stream runs in the session
//! layer on the client's connection.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Response;

use super::upgrade::NotAnUpgrade;
use super::{ApiError, ApiPath, AppState, Principal};
use crate::domain::{CallId, ConferenceId, Encapsulation, Resource};
use crate::session::StreamRequest;

type Upgrade = Result<super::upgrade::Upgrade, NotAnUpgrade>;

/// Query parameters the service reads; any other is the client's own.
const OWN_PARAMETERS: [&str; 4] = ["encapsulation", "format", "events", "token"];
/// The client's own parameters kept at most (the query string is bounded before this).
const MAX_PARAMETERS: usize = 32;
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
    let upgrade = upgrade.map_err(|e| ApiError::invalid_argument(e.to_string()))?;
    let streams = state.streams.clone();
    Ok(upgrade.respond(move |client| async move {
        streams.run(admission, request, client).await;
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
