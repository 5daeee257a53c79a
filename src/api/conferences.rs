//! Conferences: list, read, create, destroy, add and remove calls.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiPath, AppState, Principal};
use crate::ari::Bridge;
use crate::domain::{CallId, ConferenceId, Resource};

#[derive(Debug, Serialize)]
pub struct ConferenceView {
    id: String,
    name: String,
    call_ids: Vec<String>,
    stream_ids: Vec<String>,
    external_media_ids: Vec<String>,
}

impl ConferenceView {
    fn new(b: Bridge, state: &AppState) -> ConferenceView {
        let resource = ConferenceId::parse(&b.id).ok().map(Resource::Conference);
        let (stream_ids, external_media_ids) = resource
            .map(|r| {
                (
                    state.streams.ids_for(&r),
                    state.streams.external_ids_for(&r),
                )
            })
            .unwrap_or_default();
        ConferenceView {
            id: b.id,
            name: b.name,
            call_ids: b
                .channels
                .into_iter()
                .filter(|c| !c.starts_with(crate::domain::INTERNAL_PREFIX))
                .collect(),
            stream_ids,
            external_media_ids,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateConference {
    #[serde(default)]
    name: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<serde_json::Value>, ApiError> {
    principal.authorize_any()?;
    let conferences: Vec<ConferenceView> = state
        .registry
        .conferences()
        .into_iter()
        .map(|b| ConferenceView::new(b, &state))
        .collect();
    Ok(Json(serde_json::json!({ "result": conferences })))
}

use super::authorized_conference as conference_id;

pub async fn get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ConferenceView>, ApiError> {
    let id = conference_id(&id, &principal)?;
    let bridge = state.registry.find_conference(&id).await?;
    Ok(Json(ConferenceView::new(bridge, &state)))
}

/// The body is optional: no body, `{}` and `{"name": "..."}` are all fine.
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Result<(StatusCode, Json<ConferenceView>), ApiError> {
    principal.authorize_any()?;
    let request: CreateConference = super::json_body(&body)?;
    let name = request.name.unwrap_or_default();
    if name.len() > 256 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid_argument(
            "name: at most 256 characters, no control characters",
        ));
    }
    let bridge = state.registry.create_conference(&name).await?;
    Ok((
        StatusCode::CREATED,
        Json(ConferenceView::new(bridge, &state)),
    ))
}

pub async fn destroy(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = conference_id(&id, &principal)?;
    state.registry.destroy_conference(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn add_call(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath((id, call_id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = conference_id(&id, &principal)?;
    let call_id = CallId::parse(&call_id)?;
    state.registry.add_call(&id, &call_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn remove_call(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath((id, call_id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = conference_id(&id, &principal)?;
    let call_id = CallId::parse(&call_id)?;
    state.registry.remove_call(&id, &call_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
