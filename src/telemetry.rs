//! Logs and metrics. Tracing is set up once by the binary; [`Metrics`] is one registry shared
//! by every layer, rendered in Prometheus text at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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

/// Every metric the service exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub ari_connected: Gauge,
    pub ari_reconnects: Counter,
    pub ari_connect_failures: Counter,
    pub ari_events: Counter,
    pub calls: Gauge,
    pub conferences: Gauge,
    pub http_requests: Family<HttpLabels, Counter>,
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
        Metrics {
            registry,
            ari_connected,
            ari_reconnects,
            ari_connect_failures,
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
