//! `GET /v1.0/calls` and `GET /v1.0/calls/{id}`.

use axum::extract::State;
use axum::{Extension, Json};
use serde::Serialize;

use super::ErrorBody;
use super::paths::CallPath;
use super::{ApiError, ApiPath, AppState, List, Principal};
use crate::domain::{CallId, Resource};
use crate::session::Call;

/// A call: an Asterisk channel in the service's Stasis application (or, read by id, any
/// channel Asterisk has).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Call)]
pub struct CallView {
    /// The ARI channel id.
    id: String,
    /// The channel's name, e.g. `PJSIP/alice-00000001`.
    name: String,
    /// Asterisk's channel state: `Down`, `Ring`, `Ringing`, `Up`, ...
    state: String,
    caller: CallerView,
    /// When Asterisk created the channel, as ARI says it.
    created: String,
    /// Media streams attached to the call.
    stream_ids: Vec<String>,
    /// External medias attached to the call.
    external_media_ids: Vec<String>,
}

/// The caller's name and number, as Asterisk has them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = CallerId)]
pub struct CallerView {
    name: String,
    number: String,
}

impl CallView {
    fn new(c: Call, state: &AppState) -> CallView {
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
            caller: CallerView {
                name: c.caller.name,
                number: c.caller.number,
            },
            created: c.created,
            stream_ids,
            external_media_ids,
        }
    }
}

/// The calls in the service's Stasis application.
#[utoipa::path(
    get,
    path = "/calls",
    tag = "calls",
    responses(
        (status = 200, description = "The calls", body = List<CallView>),
        (status = 403, description = "`PERMISSION_DENIED`: the token is bound to one resource", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<List<CallView>>, ApiError> {
    principal.authorize_any()?;
    let calls = state
        .registry
        .calls()
        .into_iter()
        .map(|c| CallView::new(c, &state))
        .collect();
    Ok(Json(List { result: calls }))
}

/// One call; a channel of another application, or running dialplan, is looked up in Asterisk.
#[utoipa::path(
    get,
    path = "/calls/{id}",
    tag = "calls",
    params(CallPath),
    responses(
        (status = 200, description = "The call", body = CallView),
        (status = 400, description = "`INVALID_ARGUMENT`: not a call id", body = ErrorBody),
        (status = 403, description = "`PERMISSION_DENIED`: the token is bound to another resource", body = ErrorBody),
        (status = 404, description = "`CALL_NOT_FOUND`", body = ErrorBody),
        (status = 503, description = "`ASTERISK_UNAVAILABLE`", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(CallPath { id }): ApiPath<CallPath>,
) -> Result<Json<CallView>, ApiError> {
    let id = super::authorized_call(&id, &principal)?;
    let channel = state.registry.find_call(&id).await?;
    Ok(Json(CallView::new(channel, &state)))
}
