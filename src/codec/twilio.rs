//! The Twilio Media Streams protocol (bi-directional), as `encapsulation=twilio` speaks it
//! (SPEC §9.2): JSON text messages, μ-law audio in base64, numbers as strings.
//!
//! Owns the wire shape of each message both ways: parsing what a client sends into a
//! [`ClientMessage`], and writing what the service sends. It must not decide when to send
//! anything, count sequence numbers on its own, or touch a socket: the stream core does.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// A message from the client, as far as the service acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// μ-law audio, any length.
    Media(Vec<u8>),
    /// Report back once the audio sent before it has been played.
    Mark(String),
    /// Drop the audio queued towards the call.
    Clear,
    /// Any other event (`connected`, `start`, `dtmf`, `stop`, …): ignored.
    Other(String),
}

/// Why a client message was refused: the stream closes with 1007.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TwilioError(pub String);

#[derive(Deserialize)]
struct Wire {
    event: String,
    #[serde(default)]
    media: Option<WireMedia>,
    #[serde(default)]
    mark: Option<WireMark>,
}

#[derive(Deserialize)]
struct WireMedia {
    payload: String,
}

#[derive(Deserialize)]
struct WireMark {
    name: String,
}

pub fn parse(text: &str) -> Result<ClientMessage, TwilioError> {
    let wire: Wire = serde_json::from_str(text)
        .map_err(|e| TwilioError(format!("not a Twilio Media Streams message: {e}")))?;
    match wire.event.as_str() {
        "media" => {
            let payload = wire
                .media
                .ok_or_else(|| TwilioError("a media message without media".into()))?
                .payload;
            let audio = STANDARD
                .decode(payload.as_bytes())
                .map_err(|e| TwilioError(format!("media payload is not base64: {e}")))?;
            Ok(ClientMessage::Media(audio))
        }
        "mark" => {
            let name = wire
                .mark
                .ok_or_else(|| TwilioError("a mark message without mark".into()))?
                .name;
            Ok(ClientMessage::Mark(name))
        }
        "clear" => Ok(ClientMessage::Clear),
        other => Ok(ClientMessage::Other(other.to_owned())),
    }
}

/// Who the stream is, as every `start` and `stop` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity<'a> {
    pub account_sid: &'a str,
    pub stream_sid: &'a str,
    pub call_sid: &'a str,
}

/// The first message of a stream.
pub fn connected() -> String {
    json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}).to_string()
}

/// The second: what the stream carries. `parameters` are the client's custom parameters.
pub fn start(seq: u64, who: &Identity<'_>, parameters: &Map<String, Value>) -> String {
    json!({
        "event": "start",
        "sequenceNumber": seq.to_string(),
        "start": {
            "accountSid": who.account_sid,
            "streamSid": who.stream_sid,
            "callSid": who.call_sid,
            "tracks": ["inbound"],
            "customParameters": parameters,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
        "streamSid": who.stream_sid,
    })
    .to_string()
}

/// 20 ms of the call's audio: `chunk` counts from 1, `timestamp_ms` from the stream's start.
pub fn media(seq: u64, stream_sid: &str, chunk: u64, timestamp_ms: u64, ulaw: &[u8]) -> String {
    json!({
        "event": "media",
        "sequenceNumber": seq.to_string(),
        "media": {
            "track": "inbound",
            "chunk": chunk.to_string(),
            "timestamp": timestamp_ms.to_string(),
            "payload": STANDARD.encode(ulaw),
        },
        "streamSid": stream_sid,
    })
    .to_string()
}

pub fn mark(seq: u64, stream_sid: &str, name: &str) -> String {
    json!({
        "event": "mark",
        "sequenceNumber": seq.to_string(),
        "streamSid": stream_sid,
        "mark": {"name": name},
    })
    .to_string()
}

pub fn dtmf(seq: u64, stream_sid: &str, digit: &str) -> String {
    json!({
        "event": "dtmf",
        "streamSid": stream_sid,
        "sequenceNumber": seq.to_string(),
        "dtmf": {"track": "inbound_track", "digit": digit},
    })
    .to_string()
}

pub fn stop(seq: u64, who: &Identity<'_>) -> String {
    json!({
        "event": "stop",
        "sequenceNumber": seq.to_string(),
        "streamSid": who.stream_sid,
        "stop": {"accountSid": who.account_sid, "callSid": who.call_sid},
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> Value {
        serde_json::from_str(text).expect("JSON")
    }

    #[test]
    fn parses_what_clients_send() {
        assert_eq!(
            parse(r#"{"event":"media","streamSid":"S","media":{"payload":"/38A"}}"#),
            Ok(ClientMessage::Media(vec![0xff, 0x7f, 0x00]))
        );
        assert_eq!(
            parse(r#"{"event":"mark","streamSid":"S","mark":{"name":"m1"}}"#),
            Ok(ClientMessage::Mark("m1".into()))
        );
        assert_eq!(
            parse(r#"{"event":"clear","streamSid":"S"}"#),
            Ok(ClientMessage::Clear)
        );
        assert_eq!(
            parse(r#"{"event":"dtmf","dtmf":{"digit":"1"}}"#),
            Ok(ClientMessage::Other("dtmf".into()))
        );
    }

    #[test]
    fn refuses_what_is_not_the_protocol() {
        for bad in [
            "not json",
            r#"{"streamSid":"S"}"#,
            r#"{"event":"media","media":{"payload":"not base64!"}}"#,
            r#"{"event":"media"}"#,
            r#"{"event":"mark","mark":{}}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn writes_twilio_shapes() {
        let who = Identity {
            account_sid: "AC1",
            stream_sid: "S1",
            call_sid: "C1",
        };
        assert_eq!(
            value(&connected()),
            json!({"event":"connected","protocol":"Call","version":"1.0.0"})
        );
        let mut params = Map::new();
        params.insert("bot".into(), "echo".into());
        assert_eq!(
            value(&start(1, &who, &params)),
            json!({"event":"start","sequenceNumber":"1","start":{"accountSid":"AC1",
                "streamSid":"S1","callSid":"C1","tracks":["inbound"],
                "customParameters":{"bot":"echo"},"mediaFormat":{"encoding":"audio/x-mulaw",
                "sampleRate":8000,"channels":1}},"streamSid":"S1"})
        );
        assert_eq!(
            value(&media(2, "S1", 1, 0, &[0xff, 0x7f, 0x00])),
            json!({"event":"media","sequenceNumber":"2","media":{"track":"inbound",
                "chunk":"1","timestamp":"0","payload":"/38A"},"streamSid":"S1"})
        );
        assert_eq!(
            value(&mark(3, "S1", "m")),
            json!({"event":"mark","sequenceNumber":"3","streamSid":"S1","mark":{"name":"m"}})
        );
        assert_eq!(
            value(&dtmf(4, "S1", "5")),
            json!({"event":"dtmf","streamSid":"S1","sequenceNumber":"4",
                "dtmf":{"track":"inbound_track","digit":"5"}})
        );
        assert_eq!(
            value(&stop(5, &who)),
            json!({"event":"stop","sequenceNumber":"5","streamSid":"S1",
                "stop":{"accountSid":"AC1","callSid":"C1"}})
        );
    }
}
