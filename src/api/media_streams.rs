//! Media streams as resources (SPEC §9.4): `media_stream_connect` on a call or conference (the
//! service opens the WebSocket towards a client's server), and the listing and stopping of
//! every stream, inbound and outbound, under `/v1.0/media_streams`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::{ApiError, ApiPath, AppState, Principal, json_body};
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

pub async fn connect_call(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let resource = Resource::Call(super::authorized_call(&id, &principal)?);
    connect(&state, resource, &body).await
}

pub async fn connect_conference(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let resource = Resource::Conference(super::authorized_conference(&id, &principal)?);
    connect(&state, resource, &body).await
}

pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<serde_json::Value>, ApiError> {
    principal.authorize_any()?;
    Ok(Json(
        serde_json::json!({ "result": state.streams.media_streams() }),
    ))
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

pub async fn get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    Ok(Json(visible(&state, &principal, &id)?).into_response())
}

/// Stops a stream (close 1000, `stopped`); answers with its last state.
pub async fn stop(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let view = visible(&state, &principal, &id)?;
    let stopped = state.streams.stop_media_stream(view.id).await?;
    Ok(Json(stopped).into_response())
}
