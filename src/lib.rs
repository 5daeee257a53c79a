//! ari-mediastream: a service beside Asterisk that lets API clients reach calls and
//! conferences over HTTP and WebSocket, without SIP.
//!
//! ```text
//!   HTTP clients ──► api ──► session ──► ari ───► Asterisk (REST + /ari/events)
//!                               │
//!                               └──────► relay ──► Asterisk (RTP, AudioSocket) and clients
//!                                          │
//!                                          └──► media ──► codec
//!
//!   config, domain, secret, telemetry, tls: leaves, used by all
//! ```
//!
//! Dependencies point one way: `api` uses `session`; `session` uses `ari` and `relay`; `relay`
//! uses `media` and `codec`; nothing uses `api`. Two sans-IO cores hold the decisions, each run
//! by async drivers that only perform what it asks: `relay::core::StreamCore` (one stream's
//! audio, events and end, with one file per client protocol under `relay::core::dialect`) and
//! the session's attachment core (following a call or conference, and whether an end is a
//! hangup or a failure). [`run`] wires everything together: one event task keeps the ARI
//! socket, one task applies its events to the [`session::Registry`], media workers serve RTP
//! legs, and axum serves the API until the shutdown token fires.

pub mod api;
pub mod ari;
pub mod codec;
pub mod config;
pub mod domain;
pub mod media;
pub mod relay;
pub mod secret;
pub mod session;
pub mod telemetry;
pub mod tls;
#[cfg(test)]
mod virtual_time;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ari::AriClient;
use crate::ari::events::EventStream;
use crate::config::Settings;
use crate::relay::audiosocket_leg::AudioSocketHub;
use crate::relay::worker::Workers;
use crate::session::{Flows, Registry, Streams};
use crate::telemetry::Metrics;

/// Serves the API on `listener` until `shutdown` fires, then drains: stop accepting, finish
/// in-flight requests, close the ARI socket, wait for every task.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let ari = AriClient::new(&settings.ari);
    let (connected_tx, connected_rx) = watch::channel(false);
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let (call_starts_tx, call_starts) = mpsc::unbounded_channel();
    let registry = Arc::new(
        Registry::new(settings.ari.app.clone(), ari.clone(), metrics.clone())
            .with_call_starts(call_starts_tx),
    );

    // Background tasks outlive the HTTP server by a little: they stop after it has drained.
    let background = CancellationToken::new();
    let tracker = TaskTracker::new();
    tracker.spawn(
        EventStream {
            ari: ari.clone(),
            app: settings.ari.app.clone(),
            metrics: metrics.clone(),
            connected: connected_tx,
            out: events_tx,
        }
        .run(background.clone()),
    );
    tracker.spawn(registry.clone().run(events_rx, background.clone()));
    let hub = AudioSocketHub::bind(
        SocketAddr::new(settings.media.bind_ip, settings.media.audiosocket_port),
        &tracker,
        background.clone(),
    )
    .await
    .map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!(
                "media.audiosocket_port {}: {e}",
                settings.media.audiosocket_port
            ),
        )
    })?;
    let stream_shutdown = shutdown.child_token();
    let workers = Workers::start(
        settings.media.workers,
        settings.media.bind_ip,
        settings.media.rtp_ports.clone(),
        stream_shutdown.clone(),
        metrics.clone(),
    )
    .map_err(|e| std::io::Error::new(e.kind(), format!("media.rtp_ports: {e}")))?;
    let connect_tls = tls::client_config(settings.media.connect_ca_file.as_deref())
        .map_err(|e| std::io::Error::other(format!("media.connect_ca_file: {e}")))?;
    let streams = Arc::new(Streams::new(
        registry.clone(),
        &settings,
        hub,
        workers,
        connect_tls,
        metrics.clone(),
        stream_shutdown,
    ));
    tracker.spawn({
        let streams = streams.clone();
        let connected = connected_rx.clone();
        let cancel = background.clone();
        async move { streams.clean_start(connected, cancel).await }
    });
    tracker.spawn({
        let streams = streams.clone();
        let connected = connected_rx.clone();
        let cancel = background.clone();
        async move { streams.watch_asterisk(connected, cancel).await }
    });
    let flows = Arc::new(Flows::new(settings.flows.clone(), streams.clone()));
    tracker.spawn(
        flows
            .clone()
            .run(call_starts, tracker.clone(), background.clone()),
    );
    tracker.close();

    let state = api::AppState {
        registry,
        streams: streams.clone(),
        flows,
        auth: api::Authenticator::new(&settings.auth),
        metrics,
        ari_connected: connected_rx,
        twilio: settings.twilio.clone(),
        input: api::InputLimits {
            max_query_bytes: settings.http.max_query_bytes,
            max_body_bytes: settings.http.max_body_bytes,
        },
    };
    tracing::info!(
        listen = %listener.local_addr()?,
        ari = %settings.ari.url,
        app = %settings.ari.app,
        "serving"
    );
    let tls = match &settings.http.tls {
        Some(tls) => Some(
            tls::server_config(&tls.cert, &tls.key)
                .map_err(|e| std::io::Error::other(format!("http.tls_cert: {e}")))?,
        ),
        None => None,
    };
    let limits = api::ServerLimits {
        max_pending: settings.http.max_pending_upgrades,
        request_timeout: settings.http.request_timeout,
        max_header_bytes: settings.http.max_header_bytes,
    };
    let serve = api::serve(listener, api::router(state), tls, limits, shutdown.clone());
    // A request that never finishes must not hold the shutdown up for ever.
    let served = tokio::select! {
        served = serve => served,
        _ = async {
            shutdown.cancelled().await;
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
        } => {
            tracing::warn!("requests still in flight after 10 s: stopping anyway");
            Ok(())
        }
    };
    // Streams saw the same token: each closes with 1001 and tears down its Asterisk objects.
    if tokio::time::timeout(std::time::Duration::from_secs(10), streams.drained())
        .await
        .is_err()
    {
        tracing::warn!("some streams did not finish tearing down within 10 s");
    }
    tracing::info!("HTTP server and streams drained; closing the ARI socket");
    background.cancel();
    tracker.wait().await;
    served
}
