//! External media over REST, and flow actions on a call (SPEC §6).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::{ApiError, ApiPath, AppState, Principal, json_body};
use crate::domain::Resource;
use crate::domain::external_media::ExternalMediaBody;
use crate::domain::flow::ActionBody;
use crate::session::ActionOutcome;

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

pub async fn start_on_call(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    start(&state, call(&id, &principal)?, &body).await
}

pub async fn start_on_conference(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    start(&state, conference(&id, &principal)?, &body).await
}

pub async fn stop_on_call(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    stop_all(&state, call(&id, &principal)?).await
}

pub async fn stop_on_conference(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    stop_all(&state, conference(&id, &principal)?).await
}

pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<serde_json::Value>, ApiError> {
    principal.authorize_any()?;
    Ok(Json(
        serde_json::json!({ "result": state.streams.external_medias() }),
    ))
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

pub async fn get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    Ok(Json(visible(&state, &principal, &id)?).into_response())
}

pub async fn stop(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let view = visible(&state, &principal, &id)?;
    state.streams.stop_external_media(view.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1.0/calls/{id}/actions`: one flow action.
pub async fn action(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
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
    match state.flows.perform(&call_id, &action).await? {
        ActionOutcome::Done => Ok(StatusCode::NO_CONTENT.into_response()),
        ActionOutcome::Started(view) => Ok((StatusCode::CREATED, Json(*view)).into_response()),
        ActionOutcome::Connected(view) => Ok((StatusCode::CREATED, Json(*view)).into_response()),
    }
}
