//! The Twilio Media Streams protocol (bi-directional), as `encapsulation=twilio` speaks it
//! (SPEC §9.2): JSON text messages, μ-law audio in base64, numbers as strings.
//!
//! Owns the wire shape of each message both ways: parsing what a client sends into a
//! [`ClientMessage`], and writing what the service sends. It must not decide when to send
//! anything, count sequence numbers on its own, or touch a socket: the stream core does.

use std::borrow::Cow;
use std::fmt::Write as _;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// A message from the client, as far as the service acts on it. Borrowed from the text: a
/// media message's audio stays base64 until [`decode_payload`] writes it into the caller's
/// buffer, so that no message allocates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage<'a> {
    /// μ-law audio, any length, in base64.
    Media(Cow<'a, str>),
    /// Report back once the audio sent before it has been played.
    Mark(Cow<'a, str>),
    /// Drop the audio queued towards the call.
    Clear,
    /// Any other event (`connected`, `start`, `dtmf`, `stop`, …): ignored.
    Other,
}

/// Why a client message was refused: the stream closes with 1007.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TwilioError(pub String);

// Strings are `Cow` so that they borrow from the text unless JSON escapes make a copy
// necessary; fields the service does not read are skipped without being kept.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default, borrow)]
    media: Option<WireMedia<'a>>,
    #[serde(default, borrow)]
    mark: Option<WireMark<'a>>,
}

#[derive(Deserialize)]
struct WireMedia<'a> {
    #[serde(borrow)]
    payload: Cow<'a, str>,
}

#[derive(Deserialize)]
struct WireMark<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

pub fn parse(text: &str) -> Result<ClientMessage<'_>, TwilioError> {
    let wire: Wire<'_> = serde_json::from_str(text)
        .map_err(|e| TwilioError(format!("not a Twilio Media Streams message: {e}")))?;
    match wire.event.as_ref() {
        "media" => {
            let payload = wire
                .media
                .ok_or_else(|| TwilioError("a media message without media".into()))?
                .payload;
            Ok(ClientMessage::Media(payload))
        }
        "mark" => {
            let name = wire
                .mark
                .ok_or_else(|| TwilioError("a mark message without mark".into()))?
                .name;
            Ok(ClientMessage::Mark(name))
        }
        "clear" => Ok(ClientMessage::Clear),
        _ => Ok(ClientMessage::Other),
    }
}

/// A media message's audio, decoded from base64 into `audio` (cleared first; it keeps its
/// capacity, so a buffer reused for every message allocates once).
pub fn decode_payload(payload: &str, audio: &mut Vec<u8>) -> Result<(), TwilioError> {
    audio.clear();
    STANDARD
        .decode_vec(payload.as_bytes(), audio)
        .map_err(|e| TwilioError(format!("media payload is not base64: {e}")))
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

/// 20 ms of the call's audio, appended to `out`: `chunk` counts from 1, `timestamp_ms` from
/// the stream's start. Written field by field rather than through a JSON value, so that a
/// stream's steady flow of these allocates nothing when the caller has made room for
/// [`media_len_bound`] bytes (the buffer grows otherwise).
pub fn write_media(
    out: &mut BytesMut,
    seq: u64,
    stream_sid: &str,
    chunk: u64,
    timestamp_ms: u64,
    ulaw: &[u8],
) {
    // Writing into a `BytesMut` cannot fail.
    let _ = write!(
        out,
        r#"{{"event":"media","sequenceNumber":"{seq}","media":{{"track":"inbound","chunk":"{chunk}","timestamp":"{timestamp_ms}","payload":""#
    );
    let start = out.len();
    out.resize(
        start + base64::encoded_len(ulaw.len(), true).unwrap_or(0),
        0,
    );
    let written = STANDARD.encode_slice(ulaw, &mut out[start..]).unwrap_or(0);
    out.truncate(start + written);
    out.extend_from_slice(br#""},"streamSid":"#);
    write_json_string(out, stream_sid);
    out.extend_from_slice(b"}");
}

/// At least the bytes [`write_media`] writes: its fixed text, three numbers of up to 20
/// digits, the base64 and the escaped stream id.
pub fn media_len_bound(stream_sid: &str, ulaw: usize) -> usize {
    128 + 3 * 20 + ulaw.div_ceil(3) * 4 + 6 * stream_sid.len() + 2
}

/// `text` as a JSON string, escaped as serde_json escapes it.
fn write_json_string(out: &mut BytesMut, text: &str) {
    let mut writer = bytes::BufMut::writer(out);
    // Serialising a `str` into memory cannot fail.
    let _ = serde_json::to_writer(&mut writer, text);
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

    fn media(seq: u64, stream_sid: &str, chunk: u64, timestamp_ms: u64, ulaw: &[u8]) -> String {
        let mut out = BytesMut::new();
        write_media(&mut out, seq, stream_sid, chunk, timestamp_ms, ulaw);
        String::from_utf8(out.to_vec()).expect("UTF-8")
    }

    fn value(text: &str) -> Value {
        serde_json::from_str(text).expect("JSON")
    }

    #[test]
    fn parses_what_clients_send() {
        let media = parse(r#"{"event":"media","streamSid":"S","media":{"payload":"/38A"}}"#);
        assert_eq!(media, Ok(ClientMessage::Media("/38A".into())));
        let mut audio = Vec::new();
        assert_eq!(decode_payload("/38A", &mut audio), Ok(()));
        assert_eq!(audio, [0xff, 0x7f, 0x00]);
        assert_eq!(
            parse(r#"{"event":"mark","streamSid":"S","mark":{"name":"m1"}}"#),
            Ok(ClientMessage::Mark("m1".into()))
        );
        // Escapes are undone.
        assert_eq!(
            parse(r#"{"event":"mark","mark":{"name":"a\"b\u00e9"}}"#),
            Ok(ClientMessage::Mark("a\"bé".into()))
        );
        assert_eq!(
            parse(r#"{"event":"clear","streamSid":"S"}"#),
            Ok(ClientMessage::Clear)
        );
        assert_eq!(
            parse(r#"{"event":"dtmf","dtmf":{"digit":"1"}}"#),
            Ok(ClientMessage::Other)
        );
    }

    #[test]
    fn refuses_what_is_not_the_protocol() {
        for bad in [
            "not json",
            r#"{"streamSid":"S"}"#,
            r#"{"event":"media"}"#,
            r#"{"event":"mark","mark":{}}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refuses_a_payload_that_is_not_base64() {
        let mut audio = vec![1, 2, 3];
        assert!(decode_payload("not base64!", &mut audio).is_err());
    }

    #[test]
    fn a_media_message_escapes_its_stream_sid() {
        let text = media(1, "a\"b\\c", 2, 20, &[1, 2, 3, 4]);
        let parsed = value(&text);
        assert_eq!(parsed["streamSid"], "a\"b\\c");
        assert_eq!(parsed["media"]["payload"], "AQIDBA==");
        // The bound holds for the longest numbers.
        let mut out = BytesMut::new();
        write_media(
            &mut out,
            u64::MAX,
            "\u{1}\u{1}",
            u64::MAX,
            u64::MAX,
            &[0; 161],
        );
        assert!(
            out.len() <= media_len_bound("\u{1}\u{1}", 161),
            "{}",
            out.len()
        );
        value(std::str::from_utf8(&out).expect("UTF-8"));
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
