//! Conferences: list, read, create, destroy, add and remove calls.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::paths::{ConferenceCallPath, ConferencePath};
use super::{ApiError, ApiPath, AppState, ErrorBody, List, Principal};
use crate::domain::{CallId, ConferenceId, Resource};
use crate::session::Conference;

/// A conference: an Asterisk mixing bridge (those created by others included).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Conference)]
pub struct ConferenceView {
    /// The ARI bridge id.
    id: String,
    name: String,
    /// The calls in it (the service's own channels left out).
    call_ids: Vec<String>,
    /// Media streams attached to it.
    stream_ids: Vec<String>,
    /// External medias attached to it.
    external_media_ids: Vec<String>,
}

impl ConferenceView {
    fn new(b: Conference, state: &AppState) -> ConferenceView {
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
            call_ids: b.call_ids,
            stream_ids,
            external_media_ids,
        }
    }
}

/// The body of `POST /v1.0/conferences`; optional.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ConferenceRequest)]
pub struct CreateConference {
    /// At most 256 characters, no control characters.
    #[serde(default)]
    #[schema(max_length = 256, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    name: Option<String>,
}

/// The mixing bridges in Asterisk.
#[utoipa::path(
    get,
    path = "/conferences",
    tag = "conferences",
    responses(
        (status = 200, description = "The conferences", body = List<ConferenceView>),
        (status = 403, description = "`PERMISSION_DENIED`: the token is bound to one resource", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<List<ConferenceView>>, ApiError> {
    principal.authorize_any()?;
    let conferences = state
        .registry
        .conferences()
        .into_iter()
        .map(|b| ConferenceView::new(b, &state))
        .collect();
    Ok(Json(List {
        result: conferences,
    }))
}

use super::authorized_conference as conference_id;

/// One conference.
#[utoipa::path(
    get,
    path = "/conferences/{id}",
    tag = "conferences",
    params(ConferencePath),
    responses(
        (status = 200, description = "The conference", body = ConferenceView),
        (status = 400, description = "`INVALID_ARGUMENT`: not a conference id", body = ErrorBody),
        (status = 403, description = "`PERMISSION_DENIED`: the token is bound to another resource", body = ErrorBody),
        (status = 404, description = "`CONFERENCE_NOT_FOUND`", body = ErrorBody),
        (status = 503, description = "`ASTERISK_UNAVAILABLE`", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(ConferencePath { id }): ApiPath<ConferencePath>,
) -> Result<Json<ConferenceView>, ApiError> {
    let id = conference_id(&id, &principal)?;
    let bridge = state.registry.find_conference(&id).await?;
    Ok(Json(ConferenceView::new(bridge, &state)))
}

/// Creates a conference
///
/// A mixing bridge with a plain UUID id: it is the user's and outlives the service. The body
/// is optional: no body, `{}` and `{"name": "..."}` are all fine.
#[utoipa::path(
    post,
    path = "/conferences",
    tag = "conferences",
    request_body(content = Option<CreateConference>, content_type = "application/json"),
    responses(
        (status = 201, description = "The conference", body = ConferenceView),
        (status = 400, description = "`INVALID_ARGUMENT`: the body", body = ErrorBody),
        (status = 403, description = "`PERMISSION_DENIED`: the token is bound to one resource", body = ErrorBody),
        (status = 503, description = "`ASTERISK_UNAVAILABLE`", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Result<(StatusCode, Json<ConferenceView>), ApiError> {
    principal.authorize_any()?;
    let request: CreateConference = super::json_body(&body)?;
    let name = request.name.unwrap_or_default();
    if name.chars().count() > 256 || name.chars().any(char::is_control) {
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

/// Destroys a conference (its calls stay, out of it).
#[utoipa::path(
    delete,
    path = "/conferences/{id}",
    tag = "conferences",
    params(ConferencePath),
    responses(
        (status = 204, description = "Destroyed"),
        (status = 400, description = "`INVALID_ARGUMENT`: not a conference id", body = ErrorBody),
        (status = 403, description = "`PERMISSION_DENIED`: the token is bound to another resource", body = ErrorBody),
        (status = 404, description = "`CONFERENCE_NOT_FOUND`", body = ErrorBody),
        (status = 503, description = "`ASTERISK_UNAVAILABLE`", body = ErrorBody),
    )
)]
pub async fn destroy(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(ConferencePath { id }): ApiPath<ConferencePath>,
) -> Result<StatusCode, ApiError> {
    let id = conference_id(&id, &principal)?;
    state.registry.destroy_conference(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Adds a call to a conference.
#[utoipa::path(
    post,
    path = "/conferences/{id}/calls/{call_id}",
    tag = "conferences",
    params(ConferenceCallPath),
    responses(
        (status = 204, description = "The call is in the conference"),
        (status = 400, description = "`INVALID_ARGUMENT`: not a conference or call id", body = ErrorBody),
        (status = 403, description = "`PERMISSION_DENIED`: the token is bound to another resource", body = ErrorBody),
        (status = 404, description = "`CONFERENCE_NOT_FOUND` or `CALL_NOT_FOUND`", body = ErrorBody),
        (status = 409, description = "`STATE_INVALID`: the call is not in Stasis", body = ErrorBody),
        (status = 503, description = "`ASTERISK_UNAVAILABLE`", body = ErrorBody),
    )
)]
pub async fn add_call(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(ConferenceCallPath { id, call_id }): ApiPath<ConferenceCallPath>,
) -> Result<StatusCode, ApiError> {
    let id = conference_id(&id, &principal)?;
    let call_id = CallId::parse(&call_id)?;
    state.registry.add_call(&id, &call_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a call from a conference.
#[utoipa::path(
    delete,
    path = "/conferences/{id}/calls/{call_id}",
    tag = "conferences",
    params(ConferenceCallPath),
    responses(
        (status = 204, description = "The call is out of the conference"),
        (status = 400, description = "`INVALID_ARGUMENT`: not a conference or call id", body = ErrorBody),
        (status = 403, description = "`PERMISSION_DENIED`: the token is bound to another resource", body = ErrorBody),
        (status = 404, description = "`CONFERENCE_NOT_FOUND` or `CALL_NOT_FOUND`", body = ErrorBody),
        (status = 409, description = "`STATE_INVALID`: the call is not in the conference", body = ErrorBody),
        (status = 503, description = "`ASTERISK_UNAVAILABLE`", body = ErrorBody),
    )
)]
pub async fn remove_call(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(ConferenceCallPath { id, call_id }): ApiPath<ConferenceCallPath>,
) -> Result<StatusCode, ApiError> {
    let id = conference_id(&id, &principal)?;
    let call_id = CallId::parse(&call_id)?;
    state.registry.remove_call(&id, &call_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
