//! Liveness, readiness and metrics: no authentication.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use super::AppState;

pub async fn health() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// 200 while the ARI event socket is connected (without events the service cannot follow
/// calls) and streams are taken: not before the leftovers of a previous run are removed, nor
/// once shutting down. A client that waits for 200 is then not refused with 503.
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
        axum::Json(serde_json::json!({
            "ari_connected": connected,
            "accepting_streams": accepting,
        })),
    )
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
