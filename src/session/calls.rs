//! Calls and conferences as the service shows them (SPEC §4): the session's own shapes, drawn
//! from Asterisk's channels and bridges, so that nothing above the session sees ARI's; and the
//! operations on a call that are not an attachment's (answer, hang up), written once for the
//! API, flows and the Twilio endpoint alike. Calls the service places will keep their own
//! lifecycle here.

use crate::ari::{Bridge, Channel};
use crate::domain::INTERNAL_PREFIX;

/// A call: an Asterisk channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The ARI channel id.
    pub id: String,
    /// The channel's name, e.g. `PJSIP/alice-00000001`.
    pub name: String,
    /// Asterisk's channel state: `Down`, `Ring`, `Ringing`, `Up`, ...
    pub state: String,
    pub caller: Caller,
    /// When Asterisk created the channel, as ARI says it.
    pub created: String,
}

/// The caller's name and number, as Asterisk has them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Caller {
    pub name: String,
    pub number: String,
}

/// A conference: an Asterisk mixing bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conference {
    /// The ARI bridge id.
    pub id: String,
    pub name: String,
    /// The calls in it; the service's own channels are not calls.
    pub call_ids: Vec<String>,
    /// When Asterisk created the bridge.
    pub created: String,
}

impl From<Channel> for Call {
    fn from(c: Channel) -> Call {
        Call {
            id: c.id,
            name: c.name,
            state: c.state,
            caller: Caller {
                name: c.caller.name,
                number: c.caller.number,
            },
            created: c.creationtime,
        }
    }
}

impl From<Bridge> for Conference {
    fn from(b: Bridge) -> Conference {
        Conference {
            id: b.id,
            name: b.name,
            call_ids: b
                .channels
                .into_iter()
                .filter(|c| !c.starts_with(INTERNAL_PREFIX))
                .collect(),
            created: b.creationtime,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conference_lists_calls_not_the_service_own_channels() {
        let bridge = Bridge {
            id: "conf".into(),
            name: "standup".into(),
            channels: vec![
                "alice".into(),
                format!("{INTERNAL_PREFIX}em-1"),
                "bob".into(),
            ],
            ..Bridge::default()
        };
        let conference = Conference::from(bridge);
        assert_eq!(conference.call_ids, ["alice", "bob"]);
        assert_eq!(conference.name, "standup");
    }
}
