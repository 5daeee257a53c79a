//! The Grafana dashboard of the monitoring profile (deploy/monitoring/) asks only for metrics
//! the service exports: every `mediastream_…` name in its queries is one the service
//! registers, so a renamed metric cannot leave a panel silently empty.

use std::collections::BTreeSet;

use ari_mediastream::telemetry::{
    DirectionLabels, EncapsulationLabels, HttpLabels, KindLabels, Metrics, ReasonLabels,
};

/// The service's metrics with one series in every family (a family without any is not
/// rendered at all), as after a stream, an external media and a request.
fn rendered() -> String {
    let m = Metrics::new();
    let _ = m.streams_active.get_or_create(&KindLabels {
        kind: "call/sln".into(),
    });
    let _ = m.stream_frames.get_or_create(&DirectionLabels {
        direction: "to_client",
    });
    for family in [&m.stream_drops, &m.streams_ended] {
        let _ = family.get_or_create(&ReasonLabels { reason: "client" });
    }
    for family in [&m.external_medias_started, &m.external_medias_failed] {
        let _ = family.get_or_create(&EncapsulationLabels {
            encapsulation: "rtp",
        });
    }
    let _ = m
        .external_medias_active
        .get_or_create(&EncapsulationLabels {
            encapsulation: "rtp",
        });
    let _ = m.http_requests.get_or_create(&HttpLabels {
        route: "/health".into(),
        method: "GET".into(),
        status: 200,
    });
    m.render()
}

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/monitoring/grafana/dashboards/ari-mediastream.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("the dashboard")).expect("JSON");
    let exported: BTreeSet<String> = rendered()
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| {
            let (name, kind) = rest.split_once(' ')?;
            Some(match kind {
                "counter" => vec![format!("{name}_total")],
                "histogram" => vec![
                    format!("{name}_bucket"),
                    format!("{name}_sum"),
                    format!("{name}_count"),
                ],
                _ => vec![name.to_owned()],
            })
        })
        .flatten()
        .collect();
    let mut queried = BTreeSet::new();
    let mut panels = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        panels += 1;
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(at) = rest.find("mediastream_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                queried.insert(name);
            }
        }
    }
    println!("{panels} panels query {queried:?}");
    let missing: Vec<&String> = queried.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "not exported: {missing:?}; exported: {exported:?}"
    );
    for wanted in [
        "mediastream_streams_active",
        "mediastream_stream_frames_total",
        "mediastream_stream_drops_total",
        "mediastream_pacer_lateness_seconds_bucket",
        "mediastream_ari_connected",
        "mediastream_external_medias_active",
        "mediastream_http_requests_total",
    ] {
        assert!(queried.contains(wanted), "the dashboard shows {wanted}");
    }
}
