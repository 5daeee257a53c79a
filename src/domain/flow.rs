//! Flow actions (SPEC §6): what a call can be told to do, one action at a time, from the REST
//! API or from a flow in the configuration.

use serde::Deserialize;

use super::connect::{ConnectBody, ConnectSpec};
use super::external_media::{ExternalMediaBody, ExternalMediaSpec};

/// An action as written: `{ "type": ..., "option": {...} }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub option: Option<serde_json::Value>,
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
        match self.kind.as_str() {
            "answer" => no_option("answer").map(|()| FlowAction::Answer),
            "hangup" => no_option("hangup").map(|()| FlowAction::Hangup),
            "external_media_start" => {
                let body: ExternalMediaBody =
                    serde_json::from_value(option).map_err(|e| format!("option: {e}"))?;
                body.validate()
                    .map(FlowAction::ExternalMediaStart)
                    .map_err(|e| format!("option.{e}"))
            }
            "media_stream_connect" => {
                let body: ConnectBody =
                    serde_json::from_value(option).map_err(|e| format!("option: {e}"))?;
                body.validate()
                    .map(FlowAction::MediaStreamConnect)
                    .map_err(|e| format!("option.{e}"))
            }
            "external_media_stop" => {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Stop {
                    #[serde(default)]
                    external_media_id: Option<uuid::Uuid>,
                }
                let stop: Stop =
                    serde_json::from_value(option).map_err(|e| format!("option: {e}"))?;
                Ok(FlowAction::ExternalMediaStop {
                    id: stop.external_media_id,
                })
            }
            other => Err(format!(
                "type `{other}` is not answer, external_media_start, external_media_stop, \
                 media_stream_connect or hangup"
            )),
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
