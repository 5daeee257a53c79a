//! Flow actions (SPEC §6): what a call can be told to do, one action at a time, from the REST
//! API or from a flow in the configuration.

use serde::{Deserialize, Serialize};

use super::connect::{ConnectBody, ConnectSpec};
use super::external_media::{ExternalMediaBody, ExternalMediaSpec};

/// An action as written: `{ "type": ..., "option": {...} }`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = FlowActionRequest)]
pub struct ActionBody {
    #[serde(rename = "type")]
    #[schema(value_type = ActionType)]
    pub kind: String,
    /// `external_media_start`: the external media request; `media_stream_connect`: the
    /// media stream connect request; `external_media_stop`: `{"external_media_id": ...}` or
    /// nothing for all of the call's; `answer` and `hangup`: none (or `{}`).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub option: Option<serde_json::Value>,
}

/// The kinds of flow action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActionType {
    Answer,
    ExternalMediaStart,
    ExternalMediaStop,
    MediaStreamConnect,
    Hangup,
}

impl ActionType {
    pub const ALL: [ActionType; 5] = [
        ActionType::Answer,
        ActionType::ExternalMediaStart,
        ActionType::ExternalMediaStop,
        ActionType::MediaStreamConnect,
        ActionType::Hangup,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionType::Answer => "answer",
            ActionType::ExternalMediaStart => "external_media_start",
            ActionType::ExternalMediaStop => "external_media_stop",
            ActionType::MediaStreamConnect => "media_stream_connect",
            ActionType::Hangup => "hangup",
        }
    }
}

impl std::str::FromStr for ActionType {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        ActionType::deserialize(
            serde::de::value::StrDeserializer::<serde::de::value::Error>::new(s),
        )
        .map_err(|_| ())
    }
}

/// The option of `external_media_stop`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExternalMediaStopOption {
    /// The external media to stop; without it, every one of the call's.
    #[serde(default)]
    pub external_media_id: Option<uuid::Uuid>,
}

/// A validated action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowAction {
    Answer,
    ExternalMediaStart(ExternalMediaSpec),
    /// Stops one external media of the call, or all of them.
    ExternalMediaStop {
        id: Option<uuid::Uuid>,
    },
    /// Streams the call to a client's server (SPEC §9.4); in a flow, the next action waits
    /// until that stream has ended.
    MediaStreamConnect(ConnectSpec),
    Hangup,
}

impl ActionBody {
    /// Checks the type and its option; the error is a sentence naming what is wrong.
    pub fn validate(&self) -> Result<FlowAction, String> {
        let option = self
            .option
            .clone()
            .unwrap_or(serde_json::Value::Object(Default::default()));
        let no_option = |name: &str| match &option {
            serde_json::Value::Object(map) if map.is_empty() => Ok(()),
            _ => Err(format!("{name} takes no option")),
        };
        let Ok(kind) = self.kind.parse::<ActionType>() else {
            return Err(format!(
                "type `{}` is not answer, external_media_start, external_media_stop, \
                 media_stream_connect or hangup",
                self.kind
            ));
        };
        match kind {
            ActionType::Answer => no_option("answer").map(|()| FlowAction::Answer),
            ActionType::Hangup => no_option("hangup").map(|()| FlowAction::Hangup),
            ActionType::ExternalMediaStart => {
                let body: ExternalMediaBody =
                    serde_json::from_value(option).map_err(|e| format!("option: {e}"))?;
                body.validate()
                    .map(FlowAction::ExternalMediaStart)
                    .map_err(|e| format!("option.{e}"))
            }
            ActionType::MediaStreamConnect => {
                let body: ConnectBody =
                    serde_json::from_value(option).map_err(|e| format!("option: {e}"))?;
                body.validate()
                    .map(FlowAction::MediaStreamConnect)
                    .map_err(|e| format!("option.{e}"))
            }
            ActionType::ExternalMediaStop => {
                let stop: ExternalMediaStopOption =
                    serde_json::from_value(option).map_err(|e| format!("option: {e}"))?;
                Ok(FlowAction::ExternalMediaStop {
                    id: stop.external_media_id,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(json: serde_json::Value) -> Result<FlowAction, String> {
        serde_json::from_value::<ActionBody>(json)
            .map_err(|e| e.to_string())?
            .validate()
    }

    #[test]
    fn each_type_is_understood() {
        assert_eq!(
            action(serde_json::json!({"type": "answer"})),
            Ok(FlowAction::Answer)
        );
        assert_eq!(
            action(serde_json::json!({"type": "hangup", "option": {}})),
            Ok(FlowAction::Hangup)
        );
        assert_eq!(
            action(serde_json::json!({"type": "external_media_stop"})),
            Ok(FlowAction::ExternalMediaStop { id: None })
        );
        assert!(matches!(
            action(
                serde_json::json!({"type": "external_media_start", "option": {"external_host": "h:1"}})
            ),
            Ok(FlowAction::ExternalMediaStart(_))
        ));
        assert!(matches!(
            action(
                serde_json::json!({"type": "media_stream_connect", "option": {"url": "ws://bot:80/"}})
            ),
            Ok(FlowAction::MediaStreamConnect(_))
        ));
        let e = action(serde_json::json!({"type": "media_stream_connect"})).expect_err("no url");
        assert!(e.starts_with("option.url"), "{e}");
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        let e =
            action(serde_json::json!({"type": "external_media_start", "option": {"format": "x"}}))
                .expect_err("no host");
        assert!(e.starts_with("option.external_host"), "{e}");
        let e = action(serde_json::json!({"type": "dance"})).expect_err("type");
        assert!(e.contains("dance"), "{e}");
        let e =
            action(serde_json::json!({"type": "answer", "option": {"x": 1}})).expect_err("option");
        assert!(e.contains("no option"), "{e}");
        assert!(action(serde_json::json!({"kind": "answer"})).is_err());
    }
}
