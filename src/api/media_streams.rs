//! Media streams as resources (SPEC §9.4): `media_stream_connect` on a call or conference (the
//! service opens the WebSocket towards a client's server), and the listing and stopping of
//! every stream, inbound and outbound, under `/v1.0/media_streams`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::paths::{CallPath, ConferencePath, MediaStreamPath};
use super::{ApiError, ApiPath, AppState, ErrorBody, List, Principal, json_body};
use crate::domain::Resource;
use crate::domain::connect::ConnectBody;
use crate::session::MediaStreamView;

async fn connect(state: &AppState, resource: Resource, body: &[u8]) -> Result<Response, ApiError> {
    let body: Option<ConnectBody> = json_body(body)?;
    let spec = body
        .ok_or_else(|| ApiError::invalid_argument("body: {\"url\": \"ws://...\", ...}"))?
        .validate()
        .map_err(|e| ApiError::invalid_argument(e.to_string()))?;
    let view = state.streams.connect(resource, spec).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// Connects a call to a client's server
///
/// The service opens the media stream itself (as Twilio's `<Connect><Stream>`): it dials
/// `url`, and the stream then behaves as one the client opened. Answers at once with the
/// resource (`connecting`); a server that cannot be reached or refuses the upgrade ends it
/// `terminated` with a `reason`.
#[utoipa::path(
    post,
    path = "/calls/{id}/media_stream_connect",
    tag = "media streams",
    params(CallPath),
    request_body(content = ConnectBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The media stream", body = MediaStreamView),
        (status = 400, description = "`INVALID_ARGUMENT`: not a call id, no body, a body field (named in the message), or a host that does not resolve", body = ErrorBody),
        (status = 403, description = "`PERMISSION_DENIED`: the token is bound to another resource, or the host is outside `external_media.allowed_hosts`", body = ErrorBody),
        (status = 404, description = "`CALL_NOT_FOUND`", body = ErrorBody),
        (status = 429, description = "`LIMIT_EXCEEDED`: `limits.max_streams` or `limits.max_streams_per_resource`", body = ErrorBody),
        (status = 503, description = "`ASTERISK_UNAVAILABLE`: Asterisk did not answer, or the service is not ready", body = ErrorBody),
    )
)]
pub async fn connect_call(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(CallPath { id }): ApiPath<CallPath>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let resource = Resource::Call(super::authorized_call(&id, &principal)?);
    connect(&state, resource, &body).await
}

/// Connects a conference to a client's server
///
/// The service opens the media stream itself (as Twilio's `<Connect><Stream>`): it dials
/// `url`, and the stream then behaves as one the client opened. Answers at once with the
/// resource (`connecting`); a server that cannot be reached or refuses the upgrade ends it
/// `terminated` with a `reason`.
#[utoipa::path(
    post,
    path = "/conferences/{id}/media_stream_connect",
    tag = "media streams",
    params(ConferencePath),
    request_body(content = ConnectBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The media stream", body = MediaStreamView),
        (status = 400, description = "`INVALID_ARGUMENT`: not a conference id, no body, a body field (named in the message), or a host that does not resolve", body = ErrorBody),
        (status = 403, description = "`PERMISSION_DENIED`: the token is bound to another resource, or the host is outside `external_media.allowed_hosts`", body = ErrorBody),
        (status = 404, description = "`CONFERENCE_NOT_FOUND`", body = ErrorBody),
        (status = 429, description = "`LIMIT_EXCEEDED`: `limits.max_streams` or `limits.max_streams_per_resource`", body = ErrorBody),
        (status = 503, description = "`ASTERISK_UNAVAILABLE`: Asterisk did not answer, or the service is not ready", body = ErrorBody),
    )
)]
pub async fn connect_conference(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(ConferencePath { id }): ApiPath<ConferencePath>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let resource = Resource::Conference(super::authorized_conference(&id, &principal)?);
    connect(&state, resource, &body).await
}

/// Every media stream: those clients opened (`inbound`) and those the service opened with
/// `media_stream_connect` (`outbound`).
#[utoipa::path(
    get,
    path = "/media_streams",
    tag = "media streams",
    responses(
        (status = 200, description = "The media streams", body = List<MediaStreamView>),
        (status = 403, description = "`PERMISSION_DENIED`: the token is bound to one resource", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<List<MediaStreamView>>, ApiError> {
    principal.authorize_any()?;
    Ok(Json(List {
        result: state.streams.media_streams(),
    }))
}

/// The stream `id`, if the caller may see it.
fn visible(state: &AppState, principal: &Principal, id: &str) -> Result<MediaStreamView, ApiError> {
    super::visible(
        principal,
        id,
        "a media stream",
        |id| state.streams.media_stream(id),
        |view| &view.resource,
    )
}

/// One media stream.
#[utoipa::path(
    get,
    path = "/media_streams/{id}",
    tag = "media streams",
    params(MediaStreamPath),
    responses(
        (status = 200, description = "The media stream", body = MediaStreamView),
        (status = 400, description = "`INVALID_ARGUMENT`: not a UUID", body = ErrorBody),
        (status = 403, description = "`PERMISSION_DENIED`: it is attached to a resource the token does not open", body = ErrorBody),
        (status = 404, description = "`MEDIA_STREAM_NOT_FOUND`", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(MediaStreamPath { id }): ApiPath<MediaStreamPath>,
) -> Result<Json<MediaStreamView>, ApiError> {
    Ok(Json(visible(&state, &principal, &id)?))
}

/// Stops a stream (close 1000, `stopped`); answers with its last state.
#[utoipa::path(
    delete,
    path = "/media_streams/{id}",
    tag = "media streams",
    params(MediaStreamPath),
    responses(
        (status = 200, description = "The media stream, terminated", body = MediaStreamView),
        (status = 400, description = "`INVALID_ARGUMENT`: not a UUID", body = ErrorBody),
        (status = 403, description = "`PERMISSION_DENIED`: it is attached to a resource the token does not open", body = ErrorBody),
        (status = 404, description = "`MEDIA_STREAM_NOT_FOUND`", body = ErrorBody),
        (status = 503, description = "`ASTERISK_UNAVAILABLE`: it is still stopping (Asterisk is slow to remove its objects); it goes on stopping", body = ErrorBody),
    )
)]
pub async fn stop(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(MediaStreamPath { id }): ApiPath<MediaStreamPath>,
) -> Result<Json<MediaStreamView>, ApiError> {
    let view = visible(&state, &principal, &id)?;
    let stopped = state.streams.stop_media_stream(view.id).await?;
    Ok(Json(stopped))
}
