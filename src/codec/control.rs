//! The JSON text messages of a media stream: the controls a WebSocket client may send
//! alongside its audio (`clear`, `mark`, `dtmf`, `stop`, `pause`, `resume`, `status`) and the
//! events the service sends it.
//!
//! Owns parsing and validation of one message into a [`ClientControl`], and the wire shape of
//! each [`ServerEvent`]. It must not act on a message (clearing queues, sending DTMF to
//! Asterisk and so on belong to the stream) nor know about the socket; a refusal is an error
//! value the caller reports to the client.

use serde::{Deserialize, Serialize};

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
    /// Stop playing queued audio (Asterisk gets silence); the queue and marks are kept.
    Pause,
    /// Play queued audio again.
    Resume,
    /// Ask for the stream's state, answered even without events.
    Status,
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
    Pause,
    Resume,
    Status,
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
        Wire::Pause => Ok(ClientControl::Pause),
        Wire::Resume => Ok(ClientControl::Resume),
        Wire::Status => Ok(ClientControl::Status),
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

/// An event the service sends a client that asked for `events=true` (SPEC §5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerEvent<'a> {
    /// The first message of a stream, before any audio.
    Started {
        stream_id: uuid::Uuid,
        #[serde(skip_serializing_if = "Option::is_none")]
        call_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        conference_id: Option<&'a str>,
        encapsulation: &'a str,
        format: &'a str,
        sample_rate: u32,
        ptime_ms: u32,
        /// The RTP payload type of the stream's packets (`rtp` only).
        #[serde(skip_serializing_if = "Option::is_none")]
        payload_type: Option<u8>,
    },
    /// All audio queued before the client's mark has been sent to Asterisk.
    Mark { name: &'a str },
    /// Queued client audio was dropped on the client's `clear`.
    Cleared,
    /// A digit received from the call.
    Dtmf { digit: &'a str },
    /// The stream ends; the close frame follows.
    Stopped { reason: &'a str },
    /// The answer to `status`.
    Status {
        queued_ms: u64,
        paused: bool,
        frames_to_client: u64,
        frames_to_asterisk: u64,
        frames_dropped: u64,
    },
    /// The queue reached its maximum: the client is not read until `xon`.
    Xoff { queued_ms: u64 },
    /// The queue is below 80 % of its maximum again: the client is read again.
    Xon { queued_ms: u64 },
    /// The queue ran empty after playing audio.
    Drained,
}

impl ServerEvent<'_> {
    pub fn to_json(&self) -> String {
        // Serialising these plain shapes (strings, numbers, a UUID) cannot fail.
        serde_json::to_string(self).unwrap_or_default()
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
    fn events_have_the_documented_shapes() {
        let id = uuid::Uuid::nil();
        let started: serde_json::Value = serde_json::from_str(
            &ServerEvent::Started {
                stream_id: id,
                call_id: Some("c1"),
                conference_id: None,
                encapsulation: "sln",
                format: "slin",
                sample_rate: 8000,
                ptime_ms: 20,
                payload_type: None,
            }
            .to_json(),
        )
        .expect("json");
        assert_eq!(
            started,
            serde_json::json!({
                "type": "started", "stream_id": id, "call_id": "c1", "encapsulation": "sln",
                "format": "slin", "sample_rate": 8000, "ptime_ms": 20,
            })
        );
        let rtp: serde_json::Value = serde_json::from_str(
            &ServerEvent::Started {
                stream_id: id,
                call_id: None,
                conference_id: Some("k1"),
                encapsulation: "rtp",
                format: "slin16",
                sample_rate: 16_000,
                ptime_ms: 20,
                payload_type: Some(97),
            }
            .to_json(),
        )
        .expect("json");
        assert_eq!(rtp["payload_type"], 97);
        assert_eq!(rtp["conference_id"], "k1");
        assert_eq!(
            ServerEvent::Mark { name: "a\"b" }.to_json(),
            r#"{"type":"mark","name":"a\"b"}"#
        );
        assert_eq!(ServerEvent::Cleared.to_json(), r#"{"type":"cleared"}"#);
        assert_eq!(
            ServerEvent::Dtmf { digit: "5" }.to_json(),
            r#"{"type":"dtmf","digit":"5"}"#
        );
        assert_eq!(
            ServerEvent::Stopped { reason: "hangup" }.to_json(),
            r#"{"type":"stopped","reason":"hangup"}"#
        );
    }

    #[test]
    fn flow_control() {
        assert_eq!(
            parse_control(r#"{"type":"pause"}"#),
            Ok(ClientControl::Pause)
        );
        assert_eq!(
            parse_control(r#"{"type":"resume"}"#),
            Ok(ClientControl::Resume)
        );
        assert_eq!(
            parse_control(r#"{"type":"status"}"#),
            Ok(ClientControl::Status)
        );
        assert_eq!(
            ServerEvent::Xoff { queued_ms: 10000 }.to_json(),
            r#"{"type":"xoff","queued_ms":10000}"#
        );
        assert_eq!(ServerEvent::Drained.to_json(), r#"{"type":"drained"}"#);
        assert_eq!(
            ServerEvent::Status {
                queued_ms: 40,
                paused: true,
                frames_to_client: 1,
                frames_to_asterisk: 2,
                frames_dropped: 3
            }
            .to_json(),
            r#"{"type":"status","queued_ms":40,"paused":true,"frames_to_client":1,"frames_to_asterisk":2,"frames_dropped":3}"#
        );
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
