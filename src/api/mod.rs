//! The HTTP API: routes, authentication, JSON errors. Handlers are thin: they check input and
//! permissions, call the session layer, and render its answer.

mod auth;
mod calls;
mod conferences;
mod error;
mod external_media;
mod health;
mod media_streams;
mod openapi;
mod paths;
mod rules;
mod server;
mod streams;
mod twilio;
pub use server::{Limits as ServerLimits, serve};
mod upgrade;

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use tokio::sync::watch;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::{Authenticator, Principal, Scope};
pub use error::{ApiError, ErrorBody, Reason};

use crate::session::{Flows, Registry, Streams};
use crate::telemetry::{HttpLabels, Metrics};

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub streams: Arc<Streams>,
    pub flows: Arc<Flows>,
    pub auth: Authenticator,
    pub metrics: Arc<Metrics>,
    /// `true` while the ARI event socket is connected.
    pub ari_connected: watch::Receiver<bool>,
    /// What the Twilio-compatible routes say and accept.
    pub twilio: crate::config::TwilioSettings,
    /// Bounds on what a request may carry.
    pub input: InputLimits,
}

/// A list, as every list route answers it: `{"result": [...]}`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct List<T> {
    pub result: Vec<T>,
}

/// Bounds on a request's query string and body (the head's size and time are the server's).
#[derive(Debug, Clone, Copy)]
pub struct InputLimits {
    pub max_query_bytes: usize,
    pub max_body_bytes: usize,
}

/// The API: every route, registered from its handler's `#[utoipa::path]` so that the router
/// and the OpenAPI document (served at `/openapi.json`) are made from the same list.
pub fn router(state: AppState) -> Router {
    let (router, document) = routes(state.clone());
    let json = document.to_json().expect("the OpenAPI document serialises");
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Extension(openapi::Document(json.into())))
        .layer(middleware::from_fn_with_state(state.input, bounded_input))
        .layer(axum::extract::DefaultBodyLimit::max(
            state.input.max_body_bytes,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

/// The routes and their document, before the layers every route shares.
fn routes(state: AppState) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let v1 = OpenApiRouter::new()
        .routes(routes!(calls::list))
        .routes(routes!(calls::get))
        .routes(routes!(streams::call))
        .routes(routes!(
            external_media::start_on_call,
            external_media::stop_on_call
        ))
        .routes(routes!(
            external_media::start_on_conference,
            external_media::stop_on_conference
        ))
        .routes(routes!(external_media::action))
        .routes(routes!(external_media::list))
        .routes(routes!(external_media::get, external_media::stop))
        .routes(routes!(streams::conference))
        .routes(routes!(media_streams::connect_call))
        .routes(routes!(media_streams::connect_conference))
        .routes(routes!(media_streams::list))
        .routes(routes!(media_streams::get, media_streams::stop))
        .routes(routes!(conferences::list, conferences::create))
        .routes(routes!(conferences::get, conferences::destroy))
        .routes(routes!(conferences::add_call, conferences::remove_call))
        .route_layer(middleware::from_fn_with_state(state, auth::require_token));
    let (router, mut document) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(health::health))
        .routes(routes!(health::ready))
        .routes(routes!(health::metrics))
        .nest("/v1.0", openapi::authenticated(v1))
        .routes(routes!(twilio::update_call))
        .routes(routes!(openapi::document))
        .routes(routes!(openapi::docs_page))
        .routes(routes!(openapi::docs_asset))
        .split_for_parts();
    openapi::refusals(&mut document);
    openapi::cross_field_rules(&mut document);
    (router, document)
}

/// 414 for a query string over the limit and 413 for a body over it, as JSON errors, before
/// any handler runs (a body without a length is cut at the limit while it is read).
async fn bounded_input(
    State(limits): State<InputLimits>,
    req: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    let too_large = || {
        ApiError::new(
            Reason::BodyTooLarge,
            format!(
                "request bodies are limited to {} bytes",
                limits.max_body_bytes
            ),
        )
        .into_response()
    };
    if req
        .uri()
        .query()
        .is_some_and(|q| q.len() > limits.max_query_bytes)
    {
        return ApiError::new(
            Reason::QueryTooLong,
            format!(
                "query strings are limited to {} bytes",
                limits.max_query_bytes
            ),
        )
        .into_response();
    }
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return too_large();
    }
    let response = next.run(req).await;
    // The body limit's own answer is plain text: say it the service's way.
    if response.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE
        && response.headers().get(axum::http::header::CONTENT_TYPE)
            != Some(&axum::http::HeaderValue::from_static("application/json"))
    {
        return too_large();
    }
    response
}

/// A call id from a URL, if the caller may act on that call.
fn authorized_call(id: &str, principal: &Principal) -> Result<crate::domain::CallId, ApiError> {
    let id = crate::domain::CallId::parse(id)?;
    principal.authorize(&crate::domain::Resource::Call(id.clone()))?;
    Ok(id)
}

/// A conference id from a URL, if the caller may act on that conference.
fn authorized_conference(
    id: &str,
    principal: &Principal,
) -> Result<crate::domain::ConferenceId, ApiError> {
    let id = crate::domain::ConferenceId::parse(id)?;
    principal.authorize(&crate::domain::Resource::Conference(id.clone()))?;
    Ok(id)
}

/// A resource attached to a call or conference, by its id in the path, if the caller may see
/// it: 400 for an id that is not a UUID (`what` names the kind), the lookup's error else.
fn visible<V>(
    principal: &Principal,
    id: &str,
    what: &str,
    lookup: impl FnOnce(uuid::Uuid) -> Result<V, crate::session::SessionError>,
    resource: impl FnOnce(&V) -> &crate::domain::Resource,
) -> Result<V, ApiError> {
    let id: uuid::Uuid = id
        .parse()
        .map_err(|_| ApiError::invalid_argument(format!("`{id}` is not {what} id")))?;
    let view = lookup(id)?;
    principal.authorize(resource(&view))?;
    Ok(view)
}

/// A JSON body; an empty one, or `null`, is the type's default (no body). Any other body that
/// does not parse is a 400 saying why.
fn json_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.trim_ascii().is_empty() || body.trim_ascii() == b"null" {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::invalid_argument(format!("body: {e}")))
}

/// `Path`, with its rejections (bad percent-encoding, wrong arity) as JSON errors.
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

async fn not_found() -> ApiError {
    ApiError::route_not_found()
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// Counts every answer by route pattern; logs at debug without the query (it may hold a token).
async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().to_string();
    let response = next.run(req).await;
    let status = response.status().as_u16();
    tracing::debug!(%method, %route, status, "http request");
    state
        .metrics
        .http_requests
        .get_or_create(&HttpLabels {
            route,
            method,
            status,
        })
        .inc();
    response
}
