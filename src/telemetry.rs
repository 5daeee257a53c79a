//! Logs and metrics. Tracing is set up once by the binary; [`Metrics`] is one registry shared
//! by every layer, rendered in Prometheus text at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. The filter follows `RUST_LOG` (default `info`).
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The route pattern (`/v1.0/calls/{id}`), never the raw path: ids would explode cardinality.
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `call` or `conference`, with the encapsulation: `call/rtp`.
    pub kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    /// `to_client` (Asterisk to client) or `to_asterisk` (client to Asterisk).
    pub direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EncapsulationLabels {
    pub encapsulation: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// Every metric the service exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub ari_connected: Gauge,
    pub ari_reconnects: Counter,
    pub ari_connect_failures: Counter,
    pub asterisk_lost: Counter,
    pub ari_events: Counter,
    pub calls: Gauge,
    pub conferences: Gauge,
    pub http_requests: Family<HttpLabels, Counter>,
    pub streams_active: Family<KindLabels, Gauge>,
    pub streams_started: Counter,
    pub streams_ended: Family<ReasonLabels, Counter>,
    pub stream_frames: Family<DirectionLabels, Counter>,
    pub stream_drops: Family<ReasonLabels, Counter>,
    pub stream_queue_frames: Gauge,
    pub pacer_lateness: Histogram,
    pub external_medias_active: Family<EncapsulationLabels, Gauge>,
    pub external_medias_started: Family<EncapsulationLabels, Counter>,
    pub external_medias_failed: Family<EncapsulationLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("mediastream");
        let ari_connected = Gauge::default();
        registry.register(
            "ari_connected",
            "1 while the ARI event socket is connected",
            ari_connected.clone(),
        );
        let asterisk_lost = Counter::default();
        registry.register(
            "asterisk_lost",
            "Times Asterisk stopped answering altogether (every stream then ended with 1011)",
            asterisk_lost.clone(),
        );
        let ari_reconnects = Counter::default();
        registry.register(
            "ari_reconnects",
            "Times the ARI event socket was connected again after a loss",
            ari_reconnects.clone(),
        );
        let ari_connect_failures = Counter::default();
        registry.register(
            "ari_connect_failures",
            "Attempts to connect the ARI event socket that failed",
            ari_connect_failures.clone(),
        );
        let ari_events = Counter::default();
        registry.register("ari_events", "ARI events received", ari_events.clone());
        let calls = Gauge::default();
        registry.register("calls", "Calls in the Stasis application", calls.clone());
        let conferences = Gauge::default();
        registry.register(
            "conferences",
            "Mixing bridges known as conferences",
            conferences.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route, method and status",
            http_requests.clone(),
        );
        let streams_active = Family::<KindLabels, Gauge>::default();
        registry.register(
            "streams_active",
            "Media streams open, by resource kind and encapsulation",
            streams_active.clone(),
        );
        let streams_started = Counter::default();
        registry.register(
            "streams_started",
            "Media streams accepted",
            streams_started.clone(),
        );
        let stream_frames = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "stream_frames",
            "20 ms frames relayed, by direction",
            stream_frames.clone(),
        );
        let streams_ended = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "streams_ended",
            "Media streams ended, by why (client, hangup, client_stalled, failure, ...)",
            streams_ended.clone(),
        );
        let stream_drops = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "stream_drops",
            "Packets or frames dropped, by reason",
            stream_drops.clone(),
        );
        let stream_queue_frames = Gauge::default();
        registry.register(
            "stream_queue_frames",
            "Client audio frames queued towards Asterisk, summed over streams",
            stream_queue_frames.clone(),
        );
        let pacer_lateness = Histogram::new([0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05]);
        registry.register(
            "pacer_lateness_seconds",
            "How late the 20 ms send clock woke: each stream's worst wake-up of each second",
            pacer_lateness.clone(),
        );
        let external_medias_active = Family::<EncapsulationLabels, Gauge>::default();
        registry.register(
            "external_medias_active",
            "External medias running, by encapsulation",
            external_medias_active.clone(),
        );
        let external_medias_started = Family::<EncapsulationLabels, Counter>::default();
        registry.register(
            "external_medias_started",
            "External medias started, by encapsulation",
            external_medias_started.clone(),
        );
        let external_medias_failed = Family::<EncapsulationLabels, Counter>::default();
        registry.register(
            "external_medias_failed",
            "External medias that could not be started, by encapsulation",
            external_medias_failed.clone(),
        );
        Metrics {
            registry,
            external_medias_active,
            external_medias_started,
            external_medias_failed,
            streams_active,
            streams_started,
            streams_ended,
            stream_frames,
            stream_drops,
            stream_queue_frames,
            pacer_lateness,
            ari_connected,
            ari_reconnects,
            ari_connect_failures,
            asterisk_lost,
            ari_events,
            calls,
            conferences,
            http_requests,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        m.ari_connected.set(1);
        m.http_requests
            .get_or_create(&HttpLabels {
                route: "/health".into(),
                method: "GET".into(),
                status: 200,
            })
            .inc();
        let text = m.render();
        assert!(text.contains("mediastream_ari_connected 1"), "{text}");
        assert!(
            text.contains(
                r#"mediastream_http_requests_total{route="/health",method="GET",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
