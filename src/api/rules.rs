//! What validation accepts across the fields of a request, as JSON Schema for the OpenAPI
//! document (presentation: the domain only validates): which transport and formats go with an encapsulation, that an external media
//! listens or speaks, which option goes with a flow action's type. Built from the tables that
//! validation itself reads ([`MediaEncapsulation::formats`], [`Encapsulation::allows`],
//! [`ActionType`]), so the document cannot promise what validation refuses.
//!
//! What no schema can say is left to the descriptions: a host that does not resolve or is
//! outside `external_media.allowed_hosts`.

use serde_json::Value;
use utoipa::ToSchema;
use utoipa::openapi::schema::{
    AllOfBuilder, AnyOfBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::{Ref, RefOr};

use crate::domain::connect::{ConnectBody, MAX_PARAMETERS};
use crate::domain::external_media::{Direction, ExternalMediaBody, MediaEncapsulation};
use crate::domain::flow::{ActionType, ExternalMediaStopOption};
use crate::domain::{Encapsulation, Format};

/// A value among `values`, or `null` (the default) when `nullable`.
fn one_of_values<I: IntoIterator<Item = &'static str>>(values: I, nullable: bool) -> Schema {
    let mut values: Vec<Value> = values.into_iter().map(Value::from).collect();
    if nullable {
        values.push(Value::Null);
    }
    ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .enum_values(Some(values))
        .into()
}

/// An object whose `properties` (when present) each match their schema.
fn when(properties: Vec<(&str, RefOr<Schema>)>, required: &[&str]) -> Schema {
    let mut object = ObjectBuilder::new().schema_type(SchemaType::AnyValue);
    for (name, schema) in properties {
        object = object.property(name, schema);
    }
    for name in required {
        object = object.required(*name);
    }
    object.into()
}

/// `schema` and `rules` at once.
pub fn constrained(schema: RefOr<Schema>, rules: Vec<Schema>) -> Schema {
    let mut all = AllOfBuilder::new().item(schema);
    for rule in rules {
        all = all.item(rule);
    }
    all.into()
}

/// An external media request: the transport and formats of each encapsulation (rtp when
/// absent), and `direction_listen` and `direction_speak` not both `none` (`direction_listen`
/// defaults to `both`).
pub fn external_media() -> Vec<Schema> {
    let mut encapsulations = OneOfBuilder::new();
    for encapsulation in MediaEncapsulation::ALL {
        let default = encapsulation == MediaEncapsulation::Rtp;
        encapsulations = encapsulations.item(when(
            vec![
                (
                    "encapsulation",
                    one_of_values([encapsulation.as_str()], default).into(),
                ),
                (
                    "transport",
                    one_of_values([encapsulation.transport().as_str()], true).into(),
                ),
                (
                    "format",
                    one_of_values(encapsulation.formats().iter().map(|f| f.as_str()), true).into(),
                ),
            ],
            if default { &[] } else { &["encapsulation"] },
        ));
    }
    let speaking = [Direction::In, Direction::Out, Direction::Both].map(Direction::as_str);
    let directions = AnyOfBuilder::new()
        .item(when(
            vec![("direction_listen", one_of_values(speaking, true).into())],
            &[],
        ))
        .item(when(
            vec![("direction_speak", one_of_values(speaking, false).into())],
            &["direction_speak"],
        ));
    vec![encapsulations.into(), directions.into()]
}

/// A media stream connect request: the formats each encapsulation allows (twilio when absent),
/// and how many parameters.
pub fn connect() -> Vec<Schema> {
    let parameters = when(
        vec![(
            "parameters",
            ObjectBuilder::new()
                .schema_type(SchemaType::AnyValue)
                .max_properties(Some(MAX_PARAMETERS))
                .into(),
        )],
        &[],
    );
    let mut encapsulations = OneOfBuilder::new();
    for encapsulation in Encapsulation::ALL {
        let default = encapsulation == Encapsulation::Twilio;
        let formats = Format::ALL
            .into_iter()
            .filter(|f| encapsulation.allows(*f))
            .map(Format::as_str);
        encapsulations = encapsulations.item(when(
            vec![
                (
                    "encapsulation",
                    one_of_values([encapsulation.as_str()], default).into(),
                ),
                ("format", one_of_values(formats, true).into()),
            ],
            if default { &[] } else { &["encapsulation"] },
        ));
    }
    vec![encapsulations.into(), parameters]
}

/// A flow action: the option each type takes.
pub fn flow_action() -> Vec<Schema> {
    let none: Schema = AnyOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .max_properties(Some(0)),
        )
        .into();
    let reference = |name: std::borrow::Cow<'static, str>| RefOr::Ref(Ref::from_schema_name(name));
    let mut types = OneOfBuilder::new();
    for kind in ActionType::ALL {
        let (option, required): (RefOr<Schema>, &[&str]) = match kind {
            ActionType::Answer | ActionType::Hangup => (none.clone().into(), &["type"]),
            ActionType::ExternalMediaStart => {
                (reference(ExternalMediaBody::name()), &["type", "option"])
            }
            ActionType::MediaStreamConnect => (reference(ConnectBody::name()), &["type", "option"]),
            ActionType::ExternalMediaStop => (
                Schema::from(
                    AnyOfBuilder::new()
                        .item(ObjectBuilder::new().schema_type(Type::Null))
                        .item(Ref::from_schema_name(ExternalMediaStopOption::name())),
                )
                .into(),
                &["type"],
            ),
        };
        types = types.item(when(
            vec![
                ("type", one_of_values([kind.as_str()], false).into()),
                ("option", option),
            ],
            required,
        ));
    }
    vec![types.into()]
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    /// Whether `value` satisfies `schema`, for the keywords these rules use.
    fn satisfies(schema: &Value, value: &Value) -> bool {
        let all = |key: &str| {
            schema[key]
                .as_array()
                .is_none_or(|s| s.iter().all(|s| satisfies(s, value)))
        };
        let count = |key: &str| {
            schema[key]
                .as_array()
                .map(|s| s.iter().filter(|s| satisfies(s, value)).count())
        };
        if let Some(values) = schema["enum"].as_array()
            && !values.contains(value)
        {
            return false;
        }
        if let Some(max) = schema["maxProperties"].as_u64()
            && value.as_object().is_some_and(|o| o.len() as u64 > max)
        {
            return false;
        }
        if let Some(required) = schema["required"].as_array()
            && required
                .iter()
                .any(|name| value.get(name.as_str().unwrap_or("")).is_none())
        {
            return false;
        }
        if let Some(properties) = schema["properties"].as_object()
            && properties
                .iter()
                .any(|(name, s)| value.get(name).is_some_and(|v| !satisfies(s, v)))
        {
            return false;
        }
        all("allOf")
            && count("oneOf").is_none_or(|n| n == 1)
            && count("anyOf").is_none_or(|n| n >= 1)
    }

    fn rules(rules: Vec<Schema>) -> Value {
        json!({ "allOf": serde_json::to_value(rules).expect("json") })
    }

    /// `[absent, null, values...]` as optional JSON fields.
    fn choices(values: &[&str]) -> Vec<Option<Value>> {
        let mut out = vec![None, Some(Value::Null)];
        out.extend(values.iter().map(|v| Some(json!(v))));
        out
    }

    fn with(body: &mut serde_json::Map<String, Value>, name: &str, value: &Option<Value>) {
        if let Some(value) = value {
            body.insert(name.into(), value.clone());
        }
    }

    #[test]
    fn external_media_rules_accept_what_validation_accepts() {
        let schema = rules(external_media());
        let directions = ["in", "out", "both", "none"];
        let mut tried = 0;
        for encapsulation in choices(&["rtp", "audiosocket"]) {
            for transport in choices(&["udp", "tcp"]) {
                for format in choices(&["ulaw", "slin", "slin16"]) {
                    for listen in choices(&directions) {
                        for speak in choices(&directions) {
                            let mut body = serde_json::Map::new();
                            body.insert("external_host".into(), json!("h:1"));
                            with(&mut body, "encapsulation", &encapsulation);
                            with(&mut body, "transport", &transport);
                            with(&mut body, "format", &format);
                            with(&mut body, "direction_listen", &listen);
                            with(&mut body, "direction_speak", &speak);
                            let body = Value::Object(body);
                            let valid = serde_json::from_value::<ExternalMediaBody>(body.clone())
                                .expect("shape")
                                .validate()
                                .is_ok();
                            assert_eq!(satisfies(&schema, &body), valid, "{body}");
                            tried += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(tried, 4 * 4 * 5 * 6 * 6);
    }

    #[test]
    fn connect_rules_accept_what_validation_accepts() {
        let schema = rules(connect());
        let encapsulations: Vec<&str> = Encapsulation::ALL.map(Encapsulation::as_str).to_vec();
        let formats: Vec<&str> = Format::ALL.map(Format::as_str).to_vec();
        for encapsulation in choices(&encapsulations) {
            for format in choices(&formats) {
                let mut body = serde_json::Map::new();
                body.insert("url".into(), json!("ws://h:1/"));
                with(&mut body, "encapsulation", &encapsulation);
                with(&mut body, "format", &format);
                let body = Value::Object(body);
                let valid = serde_json::from_value::<ConnectBody>(body.clone())
                    .expect("shape")
                    .validate()
                    .is_ok();
                assert_eq!(satisfies(&schema, &body), valid, "{body}");
            }
        }
        let many: serde_json::Map<String, Value> =
            (0..33).map(|i| (format!("p{i}"), json!("v"))).collect();
        let body = json!({"url": "ws://h:1/", "parameters": many});
        assert!(!satisfies(&schema, &body));
        assert!(
            serde_json::from_value::<ConnectBody>(body)
                .expect("shape")
                .validate()
                .is_err()
        );
    }
}
