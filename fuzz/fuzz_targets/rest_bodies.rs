//! Fuzzes the REST request bodies: the input, as JSON, is read as each of
//! `domain::external_media::ExternalMediaBody` (`POST .../external_media`),
//! `domain::connect::ConnectBody` (`POST .../media_stream_connect`) and
//! `domain::flow::ActionBody` (`POST .../actions`, and flows in the configuration), and what
//! reads is validated.
//!
//! Checked: no panic; an accepted body, written back in its canonical form (every field
//! explicit, as JSON), validates to the very same spec, and a connect URL in its normalised form
//! names the same connection; an action's option validates as its own body would, with the
//! error prefixed `option.`; a refusal names a field the body has (serde itself is asked), and
//! says something.
#![no_main]

use ari_mediastream::domain::Encapsulation;
use ari_mediastream::domain::connect::{ConnectBody, ConnectSpec};
use ari_mediastream::domain::external_media::{Direction, ExternalMediaBody, ExternalMediaSpec};
use ari_mediastream::domain::flow::{ActionBody, FlowAction};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(body) = serde_json::from_str::<ExternalMediaBody>(text) {
        external_media(&body);
    }
    if let Ok(body) = serde_json::from_str::<ConnectBody>(text) {
        connect(&body);
    }
    if let Ok(body) = serde_json::from_str::<ActionBody>(text) {
        action(&body);
    }
});

fn external_media(body: &ExternalMediaBody) {
    match body.validate() {
        Ok(spec) => {
            assert!(spec.port != 0 && !spec.host.is_empty(), "{spec:?}");
            assert!(
                spec.direction_listen != Direction::None || spec.direction_speak != Direction::None
            );
            let again = parse::<ExternalMediaBody>(canonical_external_media(&spec))
                .expect("the canonical form reads")
                .validate();
            assert_eq!(again, Ok(spec), "the canonical form validates differently");
        }
        Err(e) => {
            assert!(!e.message.is_empty());
            assert_names_a_field::<ExternalMediaBody>(e.field);
        }
    }
}

fn connect(body: &ConnectBody) {
    match body.validate() {
        Ok(spec) => {
            assert!(spec.port != 0 && !spec.host.is_empty(), "{spec:?}");
            assert!(spec.encapsulation.allows(spec.format));
            assert!(spec.target.starts_with('/'), "target {:?}", spec.target);
            if spec.encapsulation != Encapsulation::Twilio && !spec.parameters.is_empty() {
                assert!(
                    spec.target.contains('?'),
                    "parameters left out of {}",
                    spec.target
                );
            }
            let again = parse::<ConnectBody>(canonical_connect(&spec, &spec.url))
                .expect("the canonical form reads")
                .validate();
            assert_eq!(
                again.as_ref(),
                Ok(&spec),
                "the canonical form validates differently"
            );

            // The URL as the URL standard writes it (no fragment) names the same connection.
            let mut url = url::Url::parse(&spec.url).expect("an accepted URL parses");
            url.set_fragment(None);
            let normal = parse::<ConnectBody>(canonical_connect(&spec, url.as_str()))
                .expect("the canonical form reads")
                .validate()
                .expect("the normalised URL is accepted");
            assert_eq!(
                ConnectSpec {
                    url: spec.url.clone(),
                    ..normal
                },
                spec,
                "the normalised URL {url} names another connection"
            );
        }
        Err(e) => {
            assert!(!e.message.is_empty());
            assert_names_a_field::<ConnectBody>(e.field);
        }
    }
}

fn action(body: &ActionBody) {
    let option = || body.option.clone().unwrap_or(json!({}));
    match body.validate() {
        Ok(action) => {
            let canonical = match &action {
                FlowAction::Answer | FlowAction::Hangup => {
                    assert!(["answer", "hangup"].contains(&body.kind.as_str()));
                    assert_eq!(option(), json!({}), "{} takes no option", body.kind);
                    json!({"type": body.kind})
                }
                FlowAction::ExternalMediaStart(spec) => {
                    let own = parse::<ExternalMediaBody>(option()).map(|b| b.validate());
                    assert_eq!(
                        own,
                        Some(Ok(spec.clone())),
                        "the option validates differently"
                    );
                    json!({"type": "external_media_start", "option": canonical_external_media(spec)})
                }
                FlowAction::MediaStreamConnect(spec) => {
                    let own = parse::<ConnectBody>(option()).map(|b| b.validate());
                    assert_eq!(
                        own,
                        Some(Ok(spec.clone())),
                        "the option validates differently"
                    );
                    json!({"type": "media_stream_connect", "option": canonical_connect(spec, &spec.url)})
                }
                FlowAction::ExternalMediaStop { id: Some(id) } => {
                    json!({"type": "external_media_stop", "option": {"external_media_id": id}})
                }
                FlowAction::ExternalMediaStop { id: None } => {
                    json!({"type": "external_media_stop", "option": {}})
                }
            };
            let again = parse::<ActionBody>(canonical)
                .expect("the canonical form reads")
                .validate();
            assert_eq!(
                again,
                Ok(action),
                "the canonical form validates differently"
            );
        }
        Err(message) => {
            assert!(!message.is_empty());
            // `option.<field>: ...` must name a field of the option's own body, and be what
            // that body says of itself.
            if let Some(rest) = message.strip_prefix("option.") {
                let field = rest.split(':').next().unwrap_or_default();
                match body.kind.as_str() {
                    "external_media_start" => {
                        assert_names_a_field::<ExternalMediaBody>(field);
                        let own = parse::<ExternalMediaBody>(option()).map(|b| b.validate());
                        assert_eq!(
                            own.and_then(|r| r.err()).map(|e| e.to_string()).as_deref(),
                            Some(rest)
                        );
                    }
                    "media_stream_connect" => {
                        assert_names_a_field::<ConnectBody>(field);
                        let own = parse::<ConnectBody>(option()).map(|b| b.validate());
                        assert_eq!(
                            own.and_then(|r| r.err()).map(|e| e.to_string()).as_deref(),
                            Some(rest)
                        );
                    }
                    other => panic!("a field error for action {other}: {message}"),
                }
            }
        }
    }
}

fn parse<T: DeserializeOwned>(value: Value) -> Option<T> {
    serde_json::from_value(value).ok()
}

/// A spec written back as a body with every field explicit.
fn canonical_external_media(spec: &ExternalMediaSpec) -> Value {
    let host = if spec.host.contains(':') {
        format!("[{}]:{}", spec.host, spec.port)
    } else {
        format!("{}:{}", spec.host, spec.port)
    };
    json!({
        "external_host": host,
        "encapsulation": spec.encapsulation.as_str(),
        "transport": spec.transport.as_str(),
        "connection_type": "client",
        "format": spec.format.as_str(),
        "direction_listen": spec.direction_listen.as_str(),
        "direction_speak": spec.direction_speak.as_str(),
    })
}

/// A spec written back as a body with every field explicit, with `url`.
fn canonical_connect(spec: &ConnectSpec, url: &str) -> Value {
    json!({
        "url": url,
        "encapsulation": spec.encapsulation.as_str(),
        "format": spec.format.as_str(),
        "parameters": spec.parameters,
        "events": spec.events,
    })
}

/// `field` is one the body has: serde, given only that field, does not call it unknown.
fn assert_names_a_field<T: DeserializeOwned>(field: &str) {
    assert!(!field.is_empty(), "a refusal that names no field");
    if let Err(e) = serde_json::from_value::<T>(json!({ field: null })) {
        assert!(
            !e.to_string().starts_with("unknown field"),
            "a refusal names `{field}`, which the body does not have"
        );
    }
}
