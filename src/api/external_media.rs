//! External media over REST, and flow actions on a call (SPEC §6).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::paths::{CallPath, ConferencePath, ExternalMediaPath};
use super::{ApiError, ApiPath, AppState, ErrorBody, List, Principal, json_body};
use crate::domain::Resource;
use crate::domain::external_media::ExternalMediaBody;
use crate::domain::flow::ActionBody;
use crate::session::{ActionOutcome, ExternalMediaView, MediaStreamView};

use super::authorized_call as call_id;

fn call(id: &str, principal: &Principal) -> Result<Resource, ApiError> {
    call_id(id, principal).map(Resource::Call)
}

fn conference(id: &str, principal: &Principal) -> Result<Resource, ApiError> {
    super::authorized_conference(id, principal).map(Resource::Conference)
}

async fn start(state: &AppState, resource: Resource, body: &[u8]) -> Result<Response, ApiError> {
    let body: ExternalMediaBody = json_body(body)?;
    let spec = body
        .validate()
        .map_err(|e| ApiError::invalid_argument(e.to_string()))?;
    let view = state.streams.start_external_media(resource, spec).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn stop_all(state: &AppState, resource: Resource) -> Result<StatusCode, ApiError> {
    state.streams.find(&resource).await?;
    state.streams.stop_external_medias_of(&resource).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Starts an external media on a call
///
/// Asterisk sends the call's audio to `external_host` itself (RTP over UDP or AudioSocket over
/// TCP), through a snoop on the call (or, for an idle call the host must talk into, a bridge
/// with it). Answers once it runs.
#[utoipa::path(
    post,
    path = "/calls/{id}/external_media",
    tag = "external media",
    params(CallPath),
    request_body(content = ExternalMediaBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The external media, running", body = ExternalMediaView),
        (status = 400, description = "`INVALID_ARGUMENT`: not a call id, a body field (named in the message), a host that does not resolve, or an AudioSocket host Asterisk cannot connect to", body = ErrorBody),
        (status = 403, description = "`PERMISSION_DENIED`: the token is bound to another resource, or the host is outside `external_media.allowed_hosts`", body = ErrorBody),
        (status = 404, description = "`CALL_NOT_FOUND`", body = ErrorBody),
        (status = 409, description = "`STATE_INVALID`: Asterisk refused because of the call's state", body = ErrorBody),
        (status = 429, description = "`LIMIT_EXCEEDED`: `limits.max_streams` or `limits.max_streams_per_resource`", body = ErrorBody),
        (status = 503, description = "`ASTERISK_UNAVAILABLE`: Asterisk did not complete the setup, or the service is not ready", body = ErrorBody),
    )
)]
pub async fn start_on_call(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(CallPath { id }): ApiPath<CallPath>,
    body: Bytes,
) -> Result<Response, ApiError> {
    start(&state, call(&id, &principal)?, &body).await
}

/// Starts an external media on a conference
///
/// Its externalMedia channel joins the conference's bridge, and Asterisk sends the mix to
/// `external_host`. Answers once it runs.
#[utoipa::path(
    post,
    path = "/conferences/{id}/external_media",
    tag = "external media",
    params(ConferencePath),
    request_body(content = ExternalMediaBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The external media, running", body = ExternalMediaView),
        (status = 400, description = "`INVALID_ARGUMENT`: not a conference id, a body field (named in the message), a host that does not resolve, or an AudioSocket host Asterisk cannot connect to", body = ErrorBody),
        (status = 403, description = "`PERMISSION_DENIED`: the token is bound to another resource, or the host is outside `external_media.allowed_hosts`", body = ErrorBody),
        (status = 404, description = "`CONFERENCE_NOT_FOUND`", body = ErrorBody),
        (status = 409, description = "`STATE_INVALID`: Asterisk refused because of the conference's state", body = ErrorBody),
        (status = 429, description = "`LIMIT_EXCEEDED`: `limits.max_streams` or `limits.max_streams_per_resource`", body = ErrorBody),
        (status = 503, description = "`ASTERISK_UNAVAILABLE`: Asterisk did not complete the setup, or the service is not ready", body = ErrorBody),
    )
)]
pub async fn start_on_conference(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(ConferencePath { id }): ApiPath<ConferencePath>,
    body: Bytes,
) -> Result<Response, ApiError> {
    start(&state, conference(&id, &principal)?, &body).await
}

/// Stops every external media of the call; answers once Asterisk holds nothing of them.
#[utoipa::path(
    delete,
    path = "/calls/{id}/external_media",
    tag = "external media",
    params(CallPath),
    responses(
        (status = 204, description = "None is left"),
        (status = 400, description = "`INVALID_ARGUMENT`: not a call id", body = ErrorBody),
        (status = 403, description = "`PERMISSION_DENIED`: the token is bound to another resource", body = ErrorBody),
        (status = 404, description = "`CALL_NOT_FOUND`", body = ErrorBody),
        (status = 503, description = "`ASTERISK_UNAVAILABLE`", body = ErrorBody),
    )
)]
pub async fn stop_on_call(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(CallPath { id }): ApiPath<CallPath>,
) -> Result<StatusCode, ApiError> {
    stop_all(&state, call(&id, &principal)?).await
}

/// Stops every external media of the conference; answers once Asterisk holds nothing of them.
#[utoipa::path(
    delete,
    path = "/conferences/{id}/external_media",
    tag = "external media",
    params(ConferencePath),
    responses(
        (status = 204, description = "None is left"),
        (status = 400, description = "`INVALID_ARGUMENT`: not a conference id", body = ErrorBody),
        (status = 403, description = "`PERMISSION_DENIED`: the token is bound to another resource", body = ErrorBody),
        (status = 404, description = "`CONFERENCE_NOT_FOUND`", body = ErrorBody),
        (status = 503, description = "`ASTERISK_UNAVAILABLE`", body = ErrorBody),
    )
)]
pub async fn stop_on_conference(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(ConferencePath { id }): ApiPath<ConferencePath>,
) -> Result<StatusCode, ApiError> {
    stop_all(&state, conference(&id, &principal)?).await
}

/// Every external media, running or recently terminated (kept for
/// `external_media.retention_secs`).
#[utoipa::path(
    get,
    path = "/external_medias",
    tag = "external media",
    responses(
        (status = 200, description = "The external medias", body = List<ExternalMediaView>),
        (status = 403, description = "`PERMISSION_DENIED`: the token is bound to one resource", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<List<ExternalMediaView>>, ApiError> {
    principal.authorize_any()?;
    Ok(Json(List {
        result: state.streams.external_medias(),
    }))
}

/// The external media `id`, if the caller may see it.
fn visible(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<crate::session::ExternalMediaView, ApiError> {
    super::visible(
        principal,
        id,
        "an external media",
        |id| state.streams.external_media(id),
        |view| &view.resource,
    )
}

/// One external media.
#[utoipa::path(
    get,
    path = "/external_medias/{id}",
    tag = "external media",
    params(ExternalMediaPath),
    responses(
        (status = 200, description = "The external media", body = ExternalMediaView),
        (status = 400, description = "`INVALID_ARGUMENT`: not a UUID", body = ErrorBody),
        (status = 403, description = "`PERMISSION_DENIED`: it is attached to a resource the token does not open", body = ErrorBody),
        (status = 404, description = "`EXTERNAL_MEDIA_NOT_FOUND`", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(ExternalMediaPath { id }): ApiPath<ExternalMediaPath>,
) -> Result<Json<ExternalMediaView>, ApiError> {
    Ok(Json(visible(&state, &principal, &id)?))
}

/// Stops one external media; answers once Asterisk holds nothing of it.
#[utoipa::path(
    delete,
    path = "/external_medias/{id}",
    tag = "external media",
    params(ExternalMediaPath),
    responses(
        (status = 204, description = "Stopped"),
        (status = 400, description = "`INVALID_ARGUMENT`: not a UUID", body = ErrorBody),
        (status = 403, description = "`PERMISSION_DENIED`: it is attached to a resource the token does not open", body = ErrorBody),
        (status = 404, description = "`EXTERNAL_MEDIA_NOT_FOUND`", body = ErrorBody),
        (status = 503, description = "`ASTERISK_UNAVAILABLE`", body = ErrorBody),
    )
)]
pub async fn stop(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(ExternalMediaPath { id }): ApiPath<ExternalMediaPath>,
) -> Result<StatusCode, ApiError> {
    let view = visible(&state, &principal, &id)?;
    state.streams.stop_external_media(view.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Runs one flow action on a call
///
/// `answer`, `external_media_start` (answers 201 with the external media),
/// `external_media_stop`, `media_stream_connect` (answers 201 with the media stream at once,
/// without waiting for it to end), `hangup`.
#[utoipa::path(
    post,
    path = "/calls/{id}/actions",
    tag = "flow actions",
    params(CallPath),
    request_body(content = ActionBody, content_type = "application/json"),
    responses(
        (status = 201, description = "`external_media_start`: the external media; `media_stream_connect`: the media stream", body = Started),
        (status = 204, description = "`answer`, `external_media_stop` and `hangup`: done"),
        (status = 400, description = "`INVALID_ARGUMENT`: not a call id, no body, an unknown type or a bad option (named in the message)", body = ErrorBody),
        (status = 403, description = "`PERMISSION_DENIED`: the token is bound to another resource, or the host is outside `external_media.allowed_hosts`", body = ErrorBody),
        (status = 404, description = "`CALL_NOT_FOUND`, or `EXTERNAL_MEDIA_NOT_FOUND` for an `external_media_stop` of a media the call does not have", body = ErrorBody),
        (status = 409, description = "`STATE_INVALID`: Asterisk refused because of the call's state", body = ErrorBody),
        (status = 429, description = "`LIMIT_EXCEEDED`: `limits.max_streams` or `limits.max_streams_per_resource`", body = ErrorBody),
        (status = 503, description = "`ASTERISK_UNAVAILABLE`", body = ErrorBody),
    )
)]
pub async fn action(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(CallPath { id }): ApiPath<CallPath>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let call_id = call_id(&id, &principal)?;
    let body: Option<ActionBody> = json_body(&body)?;
    let action = body
        .ok_or_else(|| {
            ApiError::invalid_argument("body: an action {\"type\": ..., \"option\": {...}}")
        })?
        .validate()
        .map_err(ApiError::invalid_argument)?;
    state.registry.find_call(&call_id).await?;
    let started = match state.flows.perform(&call_id, &action).await? {
        ActionOutcome::Done => return Ok(StatusCode::NO_CONTENT.into_response()),
        ActionOutcome::Started(view) => Started::ExternalMedia(view),
        ActionOutcome::Connected(view) => Started::MediaStream(view),
    };
    Ok((StatusCode::CREATED, Json(started)).into_response())
}

/// What an action started: an external media or a media stream.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[schema(as = ActionResult)]
pub enum Started {
    ExternalMedia(Box<ExternalMediaView>),
    MediaStream(Box<MediaStreamView>),
}
