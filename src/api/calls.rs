//! `GET /v1.0/calls` and `GET /v1.0/calls/{id}`.

use axum::extract::State;
use axum::{Extension, Json};
use serde::Serialize;

use super::{ApiError, ApiPath, AppState, Principal};
use crate::ari::Channel;
use crate::ari::model::CallerId;
use crate::domain::{CallId, Resource};

#[derive(Debug, Serialize)]
pub struct CallView {
    id: String,
    name: String,
    state: String,
    caller: CallerId,
    created: String,
    stream_ids: Vec<String>,
    external_media_ids: Vec<String>,
}

impl CallView {
    fn new(c: Channel, state: &AppState) -> CallView {
        let resource = CallId::parse(&c.id).ok().map(Resource::Call);
        let (stream_ids, external_media_ids) = resource
            .map(|r| {
                (
                    state.streams.ids_for(&r),
                    state.streams.external_ids_for(&r),
                )
            })
            .unwrap_or_default();
        CallView {
            id: c.id,
            name: c.name,
            state: c.state,
            caller: c.caller,
            created: c.creationtime,
            stream_ids,
            external_media_ids,
        }
    }
}

pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<serde_json::Value>, ApiError> {
    principal.authorize_any()?;
    let calls: Vec<CallView> = state
        .registry
        .calls()
        .into_iter()
        .map(|c| CallView::new(c, &state))
        .collect();
    Ok(Json(serde_json::json!({ "result": calls })))
}

pub async fn get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<CallView>, ApiError> {
    let id = super::authorized_call(&id, &principal)?;
    let channel = state.registry.find_call(&id).await?;
    Ok(Json(CallView::new(channel, &state)))
}
