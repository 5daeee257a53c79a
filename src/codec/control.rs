//! The JSON text messages a WebSocket client may send alongside its audio: `clear`, `mark`,
//! `dtmf` and `stop`.
//!
//! Owns parsing and validation of one message into a [`ClientControl`]. It must not act on the
//! message (clearing queues, sending DTMF to Asterisk and so on belong to the session) nor
//! know about the socket; a refusal is an error value the caller reports to the client.

use serde::Deserialize;

/// Longest mark name accepted, in characters; marks are echoed back, so they stay small.
const MAX_MARK_CHARS: usize = 256;
/// Longest DTMF string accepted in one message, in characters.
const MAX_DTMF_CHARS: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientControl {
    /// Drop the audio queued towards the call.
    Clear,
    /// Report back when playback reaches this point.
    Mark { name: String },
    /// Send these digits into the call; upper-case, each of `0-9 * # A-D`.
    Dtmf { digits: String },
    /// End the stream.
    Stop,
}

/// A human-readable reason the message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ControlError(pub String);

/// Shape on the wire. Serde's internally tagged enum gives "unknown type" and "missing field"
/// errors for free and ignores unknown fields, which is what clients expect from JSON APIs.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Wire {
    Clear,
    Mark { name: String },
    Dtmf { digits: String },
    Stop,
}

pub fn parse_control(text: &str) -> Result<ClientControl, ControlError> {
    // Through a map first: serde's tagged enums would also accept `["clear"]`, which is not
    // a form we document and so not one clients should come to rely on.
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
        .map_err(|e| ControlError(format!("control message is not a JSON object: {e}")))?;
    let wire = Wire::deserialize(serde_json::Value::Object(object))
        .map_err(|e| ControlError(format!("invalid control message: {e}")))?;
    match wire {
        Wire::Clear => Ok(ClientControl::Clear),
        Wire::Stop => Ok(ClientControl::Stop),
        Wire::Mark { name } => {
            let chars = name.chars().count();
            if chars == 0 || chars > MAX_MARK_CHARS {
                return Err(ControlError(format!(
                    "mark name must be 1 to {MAX_MARK_CHARS} characters, got {chars}"
                )));
            }
            Ok(ClientControl::Mark { name })
        }
        Wire::Dtmf { digits } => {
            let chars = digits.chars().count();
            if chars == 0 || chars > MAX_DTMF_CHARS {
                return Err(ControlError(format!(
                    "dtmf digits must be 1 to {MAX_DTMF_CHARS} characters, got {chars}"
                )));
            }
            if let Some(bad) = digits
                .chars()
                .find(|c| !matches!(c.to_ascii_uppercase(), '0'..='9' | '*' | '#' | 'A'..='D'))
            {
                return Err(ControlError(format!(
                    "dtmf digit {bad:?} is not one of 0-9 * # A-D"
                )));
            }
            Ok(ClientControl::Dtmf {
                digits: digits.to_ascii_uppercase(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> String {
        match parse_control(text) {
            Err(ControlError(reason)) => {
                assert!(!reason.is_empty());
                reason
            }
            Ok(c) => panic!("{text} was accepted as {c:?}"),
        }
    }

    #[test]
    fn clear_and_stop() {
        assert_eq!(
            parse_control(r#"{"type":"clear"}"#),
            Ok(ClientControl::Clear)
        );
        assert_eq!(parse_control(r#"{"type":"stop"}"#), Ok(ClientControl::Stop));
        assert_eq!(
            parse_control(r#" { "type" : "stop" } "#),
            Ok(ClientControl::Stop)
        );
    }

    #[test]
    fn mark() {
        assert_eq!(
            parse_control(r#"{"type":"mark","name":"intro-done"}"#),
            Ok(ClientControl::Mark {
                name: "intro-done".into()
            })
        );
        let longest = "é".repeat(256); // 512 bytes, 256 characters
        let text = format!(r#"{{"type":"mark","name":"{longest}"}}"#);
        assert_eq!(
            parse_control(&text),
            Ok(ClientControl::Mark { name: longest })
        );
    }

    #[test]
    fn dtmf_is_normalised_to_upper_case() {
        assert_eq!(
            parse_control(r#"{"type":"dtmf","digits":"0123456789*#abcdABCD"}"#),
            Ok(ClientControl::Dtmf {
                digits: "0123456789*#ABCDABCD".into()
            })
        );
        let longest = "1".repeat(32);
        let text = format!(r#"{{"type":"dtmf","digits":"{longest}"}}"#);
        assert_eq!(
            parse_control(&text),
            Ok(ClientControl::Dtmf { digits: longest })
        );
    }

    #[test]
    fn unknown_fields_are_ignored() {
        assert_eq!(
            parse_control(r#"{"extra":[1,{"a":2}],"type":"clear","x":null}"#),
            Ok(ClientControl::Clear)
        );
        assert_eq!(
            parse_control(r#"{"type":"dtmf","digits":"1","duration":100}"#),
            Ok(ClientControl::Dtmf { digits: "1".into() })
        );
    }

    #[test]
    fn refuses_malformed_json() {
        refused("");
        refused("{");
        refused("not json");
        refused(r#"{"type":"clear"} trailing"#);
        refused(r#"["clear"]"#);
        refused(r#"["mark","x"]"#);
        refused(r#""clear""#);
        refused("null");
    }

    #[test]
    fn refuses_unknown_or_missing_type() {
        assert!(refused(r#"{"type":"media"}"#).contains("media"));
        refused(r#"{"type":"Clear"}"#);
        refused(r#"{"type":""}"#);
        refused(r#"{"type":7}"#);
        refused(r#"{"name":"x"}"#);
        refused("{}");
    }

    #[test]
    fn refuses_missing_or_mistyped_fields() {
        assert!(refused(r#"{"type":"mark"}"#).contains("name"));
        assert!(refused(r#"{"type":"dtmf"}"#).contains("digits"));
        refused(r#"{"type":"mark","name":5}"#);
        refused(r#"{"type":"mark","name":null}"#);
        refused(r#"{"type":"dtmf","digits":["1"]}"#);
    }

    #[test]
    fn refuses_bad_mark_names() {
        refused(r#"{"type":"mark","name":""}"#);
        let too_long = "a".repeat(257);
        refused(&format!(r#"{{"type":"mark","name":"{too_long}"}}"#));
    }

    #[test]
    fn refuses_bad_digits() {
        refused(r#"{"type":"dtmf","digits":""}"#);
        refused(&format!(
            r#"{{"type":"dtmf","digits":"{}"}}"#,
            "1".repeat(33)
        ));
        assert!(refused(r#"{"type":"dtmf","digits":"12E"}"#).contains("'E'"));
        refused(r#"{"type":"dtmf","digits":"1 2"}"#);
        refused(r#"{"type":"dtmf","digits":"１"}"#); // full-width digit one
        refused(r#"{"type":"dtmf","digits":"w"}"#);
    }
}
