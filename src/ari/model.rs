//! ARI's JSON resources and events as serde types: exactly what Asterisk sends, nothing more.
//!
//! Unknown fields are ignored and unknown event types are kept as [`Event::Other`], so a newer
//! Asterisk never breaks the event stream.

use serde::{Deserialize, Serialize};

/// The caller's name and number, as Asterisk has them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CallerId {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub number: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct DialplanCep {
    #[serde(default)]
    pub context: String,
    #[serde(default)]
    pub exten: String,
    #[serde(default)]
    pub app_name: String,
    #[serde(default)]
    pub app_data: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Channel {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub caller: CallerId,
    #[serde(default)]
    pub dialplan: DialplanCep,
    #[serde(default)]
    pub creationtime: String,
    /// Present in `externalMedia` answers: `UNICASTRTP_LOCAL_ADDRESS` and `_PORT` for RTP.
    #[serde(default)]
    pub channelvars: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Channel {
    /// Whether the channel is executing `Stasis(app, ...)`. A channel's current dialplan
    /// application is the only place ARI shows which application holds it.
    pub fn is_in_stasis_app(&self, app: &str) -> bool {
        self.dialplan.app_name == "Stasis"
            && self.dialplan.app_data.split(',').next().map(str::trim) == Some(app)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct Bridge {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub bridge_type: String,
    #[serde(default)]
    pub technology: String,
    #[serde(default)]
    pub creator: String,
    #[serde(default)]
    pub channels: Vec<String>,
    #[serde(default)]
    pub creationtime: String,
}

impl Bridge {
    pub fn is_mixing(&self) -> bool {
        self.bridge_type == "mixing"
    }
}

/// An event from `/ari/events`. The variants are the ones the service acts on.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type")]
pub enum Event {
    StasisStart {
        channel: Channel,
        #[serde(default)]
        args: Vec<String>,
    },
    StasisEnd {
        channel: Channel,
    },
    ChannelStateChange {
        channel: Channel,
    },
    ChannelDestroyed {
        channel: Channel,
        #[serde(default)]
        cause: i32,
        #[serde(default)]
        cause_txt: String,
    },
    ChannelEnteredBridge {
        bridge: Bridge,
        channel: Channel,
    },
    ChannelLeftBridge {
        bridge: Bridge,
        channel: Channel,
    },
    BridgeCreated {
        bridge: Bridge,
    },
    BridgeDestroyed {
        bridge: Bridge,
    },
    ChannelDtmfReceived {
        channel: Channel,
        digit: String,
        #[serde(default)]
        duration_ms: u32,
    },
    /// Any other type, or a known type whose body did not match: kept by name, never an error.
    #[serde(skip)]
    Other {
        kind: String,
    },
}

impl Event {
    /// Parses one event message. Never fails: what cannot be understood becomes `Other`.
    pub fn parse(text: &str) -> Event {
        match serde_json::from_str::<Event>(text) {
            Ok(event) => event,
            Err(_) => {
                #[derive(Deserialize)]
                struct Kind {
                    #[serde(rename = "type", default)]
                    kind: String,
                }
                let kind = serde_json::from_str::<Kind>(text)
                    .map(|k| k.kind)
                    .unwrap_or_default();
                Event::Other { kind }
            }
        }
    }

    pub fn kind(&self) -> &str {
        match self {
            Event::StasisStart { .. } => "StasisStart",
            Event::StasisEnd { .. } => "StasisEnd",
            Event::ChannelStateChange { .. } => "ChannelStateChange",
            Event::ChannelDestroyed { .. } => "ChannelDestroyed",
            Event::ChannelEnteredBridge { .. } => "ChannelEnteredBridge",
            Event::ChannelLeftBridge { .. } => "ChannelLeftBridge",
            Event::BridgeCreated { .. } => "BridgeCreated",
            Event::BridgeDestroyed { .. } => "BridgeDestroyed",
            Event::ChannelDtmfReceived { .. } => "ChannelDtmfReceived",
            Event::Other { kind } => kind,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events captured from Asterisk 22.10.1: a Local call originated into an application,
    /// added to and removed from a mixing bridge, hung up; and a bridge created by another
    /// application with the all-bridges subscription.
    const CALL: &str = include_str!("../../tests/fixtures/ari-events-call.json");
    const BRIDGE: &str = include_str!("../../tests/fixtures/ari-events-bridge.json");

    fn events(fixture: &str) -> Vec<Event> {
        let raw: Vec<serde_json::Value> = serde_json::from_str(fixture).expect("fixture");
        raw.iter().map(|v| Event::parse(&v.to_string())).collect()
    }

    #[test]
    fn every_captured_event_parses_and_keeps_its_type() {
        for fixture in [CALL, BRIDGE] {
            let raw: Vec<serde_json::Value> = serde_json::from_str(fixture).expect("fixture");
            for (value, event) in raw.iter().zip(events(fixture)) {
                assert_eq!(Some(event.kind()), value["type"].as_str());
            }
        }
    }

    #[test]
    fn stasis_start_carries_the_channel_and_its_application() {
        let start = events(CALL)
            .into_iter()
            .find_map(|e| match e {
                Event::StasisStart { channel, args } => Some((channel, args)),
                _ => None,
            })
            .expect("a StasisStart");
        assert_eq!(start.0.id, "cap-call-1");
        assert_eq!(start.0.state, "Up");
        assert!(start.0.is_in_stasis_app("cap"));
        assert!(!start.0.is_in_stasis_app("ca"));
        assert!(start.1.is_empty());
    }

    #[test]
    fn bridge_events_carry_membership() {
        let all = events(BRIDGE);
        let created = all
            .iter()
            .find_map(|e| match e {
                Event::BridgeCreated { bridge } => Some(bridge),
                _ => None,
            })
            .expect("BridgeCreated");
        assert!(created.is_mixing());
        assert!(created.channels.is_empty());
        let entered = all
            .iter()
            .find_map(|e| match e {
                Event::ChannelEnteredBridge { bridge, channel } => Some((bridge, channel)),
                _ => None,
            })
            .expect("ChannelEnteredBridge");
        assert_eq!(entered.0.channels, vec![entered.1.id.clone()]);
        assert!(all.iter().any(
            |e| matches!(e, Event::BridgeDestroyed { bridge } if bridge.id == "other-bridge")
        ));
    }

    #[test]
    fn channel_destroyed_has_a_cause() {
        let destroyed = events(CALL)
            .into_iter()
            .find_map(|e| match e {
                Event::ChannelDestroyed {
                    cause, cause_txt, ..
                } => Some((cause, cause_txt)),
                _ => None,
            })
            .expect("ChannelDestroyed");
        assert_eq!(destroyed, (16, "Normal Clearing".to_string()));
    }

    #[test]
    fn unknown_or_malformed_events_are_kept_by_name() {
        assert_eq!(
            Event::parse(r#"{"type":"Dial","dialstatus":""}"#),
            Event::Other {
                kind: "Dial".into()
            }
        );
        // A known type with a body that does not match is not an error either.
        assert_eq!(
            Event::parse(r#"{"type":"StasisStart","channel":42}"#),
            Event::Other {
                kind: "StasisStart".into()
            }
        );
        assert_eq!(
            Event::parse("not json"),
            Event::Other {
                kind: String::new()
            }
        );
    }
}
