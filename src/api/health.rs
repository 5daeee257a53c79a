//! Liveness, readiness and metrics: no authentication.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;

use super::AppState;

/// The answer of `/health`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Health)]
pub struct HealthView {
    /// Always `ok`.
    #[schema(pattern = "^ok$")]
    status: &'static str,
}

/// The answer of `/ready`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Readiness)]
pub struct ReadyView {
    /// The ARI event socket is connected.
    ari_connected: bool,
    /// New streams and external medias are taken.
    accepting_streams: bool,
}

/// The Prometheus (OpenMetrics) exposition's content type.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Liveness: 200 while the process runs.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    security(()),
    responses((status = 200, description = "The process runs", body = HealthView))
)]
pub async fn health() -> impl IntoResponse {
    axum::Json(HealthView { status: "ok" })
}

/// Readiness
///
/// 200 while the ARI event socket is connected (without events the service cannot follow
/// calls) and streams are taken: not before the leftovers of a previous run are removed, nor
/// once shutting down. A client that waits for 200 is then not refused with 503.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "Ready", body = ReadyView),
        (status = 503, description = "Not ready: Asterisk's event socket is down, or streams are not taken yet or any more", body = ReadyView),
    )
)]
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let connected = *state.ari_connected.borrow();
    let accepting = state.streams.accepting();
    let status = if connected && accepting {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(ReadyView {
            ari_connected: connected,
            accepting_streams: accepting,
        }),
    )
}

/// Metrics
///
/// The service's metrics: ARI connection, reconnects, events, calls, conferences, streams,
/// HTTP requests.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    security(()),
    responses((
        status = 200,
        description = "Prometheus text (OpenMetrics)",
        body = String,
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"
    ))
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        state.metrics.render(),
    )
}
