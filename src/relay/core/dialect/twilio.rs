//! `encapsulation=twilio`: Twilio Media Streams, bi-directional (SPEC §9.2). JSON text messages
//! with μ-law audio in base64; the stream opens with `connected` and `start` and ends with
//! `stop`. Twilio's protocol has words for marks and digits, not for the service's flow-control
//! events, and makes none of them optional.
//!
//! Every message the service sends carries a `sequenceNumber`, given as it leaves: a mark, a
//! digit or the `stop` that overtakes waiting audio is numbered in the order the client
//! receives it.

use super::{Arena, Command, Dialect, Event, Inputs, LegFrame, Message, Vocabulary};
use crate::codec::twilio::{self, ClientMessage, Identity};
use crate::domain::{PTIME_MS, Resource};
use crate::media::transcode::SampleFormat;
use crate::relay::Outbound;
use crate::relay::core::{EndReason, StreamSpec};

#[derive(Debug)]
pub struct Twilio {
    /// The `sequenceNumber` of the last message sent (`start` is 1).
    seq: u64,
    stream_sid: String,
    call_sid: String,
    account_sid: String,
    /// The client's audio, decoded from base64 here, reused.
    audio: Vec<u8>,
}

impl Twilio {
    pub fn new(spec: &StreamSpec) -> Twilio {
        let call_sid = match &spec.resource {
            Resource::Call(id) => id.as_str().to_owned(),
            Resource::Conference(id) => id.as_str().to_owned(),
        };
        Twilio {
            seq: 0,
            stream_sid: spec.stream_id.to_string(),
            call_sid,
            account_sid: spec.account_sid.clone(),
            audio: Vec::new(),
        }
    }

    fn next(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn identity(&self) -> Identity<'_> {
        Identity {
            account_sid: &self.account_sid,
            stream_sid: &self.stream_sid,
            call_sid: &self.call_sid,
        }
    }
}

impl Dialect for Twilio {
    fn opening(&mut self, spec: &StreamSpec) -> Vec<Outbound> {
        let parameters = spec
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
            .collect();
        let seq = self.next();
        let start = twilio::start(seq, &self.identity(), &parameters);
        vec![
            Outbound::Text(twilio::connected().into()),
            Outbound::Text(start.into()),
        ]
    }

    fn vocabulary(&self) -> Vocabulary {
        Vocabulary {
            marks: true,
            digits: true,
            flow: false,
            status: false,
            stopped: true,
        }
    }

    fn decode(&mut self, message: Message<'_>, core: &mut dyn Inputs) -> Result<(), EndReason> {
        let text = match message {
            Message::Text(text) => text,
            Message::Binary(_) => {
                return Err(EndReason::Malformed(
                    "Twilio Media Streams messages are text".into(),
                ));
            }
        };
        let malformed = |e: twilio::TwilioError| EndReason::Malformed(e.to_string());
        match twilio::parse(text).map_err(malformed)? {
            ClientMessage::Media(payload) => {
                twilio::decode_payload(&payload, &mut self.audio).map_err(malformed)?;
                core.play(SampleFormat::Ulaw, &self.audio);
                Ok(())
            }
            ClientMessage::Mark(name) => core.command(Command::Mark(name.into_owned())),
            ClientMessage::Clear => core.command(Command::Clear),
            ClientMessage::Other => {
                core.ignored();
                Ok(())
            }
        }
    }

    fn event(&mut self, event: &Event) -> Option<Outbound> {
        let text = match event {
            Event::Mark(name) => twilio::mark(self.next(), &self.stream_sid, name),
            Event::Dtmf(digit) => twilio::dtmf(self.next(), &self.stream_sid, digit),
            Event::Stopped(_) => twilio::stop(self.next(), &self.identity()),
            Event::Cleared
            | Event::Xoff { .. }
            | Event::Xon { .. }
            | Event::Drained
            | Event::Status(_) => return None,
        };
        Some(Outbound::Text(text.into()))
    }

    fn audio_layout(&self) -> SampleFormat {
        SampleFormat::Ulaw
    }

    fn audio(&mut self, frame: &LegFrame, arena: &mut Arena) -> Outbound {
        let seq = self.next();
        let timestamp = frame.chunk.saturating_sub(1) * u64::from(PTIME_MS);
        let need = twilio::media_len_bound(&self.stream_sid, frame.audio.len());
        let buf = arena.room(need);
        twilio::write_media(
            buf,
            seq,
            &self.stream_sid,
            frame.chunk,
            timestamp,
            &frame.audio,
        );
        arena.text()
    }
}
