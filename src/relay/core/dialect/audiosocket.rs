//! `encapsulation=audiosocket`: Asterisk's AudioSocket frames (type, length, payload) in binary
//! messages, several to a message if the client likes; the service's JSON controls and events
//! in text messages (SPEC §5, §7). A stream opens with its UUID frame, as Asterisk's own
//! AudioSocket connections do; a client's hangup frame ends it, a DTMF frame plays the digit
//! into the call.

use bytes::Bytes;

use super::{Arena, Command, Dialect, Inputs, LegFrame, Message, Vocabulary, control, started};
use crate::codec::audiosocket::{self, Kind};
use crate::media::transcode::SampleFormat;
use crate::relay::Outbound;
use crate::relay::core::{EndReason, MAX_MESSAGE_BYTES, StreamSpec};

#[derive(Debug)]
pub struct AudioSocket {
    /// The layout of the client's audio.
    format: SampleFormat,
    /// The rate every audio frame must carry, both ways.
    rate_hz: u32,
    events: bool,
}

impl AudioSocket {
    pub fn new(spec: &StreamSpec) -> AudioSocket {
        AudioSocket {
            format: spec.client_format(),
            rate_hz: spec.format.sample_rate(),
            events: spec.events,
        }
    }
}

impl Dialect for AudioSocket {
    fn opening(&mut self, spec: &StreamSpec) -> Vec<Outbound> {
        let mut uuid = Vec::with_capacity(audiosocket::HEADER_LEN + 16);
        audiosocket::encode(Kind::Uuid, spec.stream_id.as_bytes(), &mut uuid);
        let uuid = Outbound::Binary(Bytes::from(uuid));
        self.events
            .then(|| started(spec, None))
            .into_iter()
            .chain([uuid])
            .collect()
    }

    fn vocabulary(&self) -> Vocabulary {
        Vocabulary::service(self.events)
    }

    fn decode(&mut self, message: Message<'_>, core: &mut dyn Inputs) -> Result<(), EndReason> {
        let mut rest = match message {
            Message::Text(text) => return core.command(control(text)?),
            Message::Binary(bytes) => bytes,
        };
        while !rest.is_empty() {
            let (frame, used) = match audiosocket::decode(rest, MAX_MESSAGE_BYTES) {
                Ok(Some(decoded)) => decoded,
                Ok(None) => {
                    return Err(EndReason::Malformed("a partial AudioSocket frame".into()));
                }
                Err(e) => return Err(EndReason::Malformed(e.to_string())),
            };
            rest = &rest[used..];
            match frame.kind {
                Kind::Audio { rate_hz } if rate_hz == self.rate_hz => {
                    core.play(SampleFormat::SlinLe, frame.payload);
                }
                Kind::Dtmf => {
                    let digit = audiosocket::dtmf_of(&frame).ok_or_else(|| {
                        EndReason::Malformed("a DTMF frame that is not a digit".into())
                    })?;
                    core.command(Command::Dtmf(digit.to_string()))?;
                }
                Kind::Hangup => core.command(Command::Stop)?,
                Kind::Uuid => {}
                Kind::Audio { rate_hz } => {
                    return Err(EndReason::Malformed(format!(
                        "audio at {rate_hz} Hz: this stream is {} Hz",
                        self.rate_hz
                    )));
                }
                Kind::Error => {
                    return Err(EndReason::Malformed("an AudioSocket error frame".into()));
                }
            }
        }
        Ok(())
    }

    fn audio_layout(&self) -> SampleFormat {
        self.format
    }

    fn audio(&mut self, frame: &LegFrame, arena: &mut Arena) -> Outbound {
        let len = frame.audio.len().min(usize::from(u16::MAX)) as u16;
        let [hi, lo] = len.to_be_bytes();
        let head = [
            Kind::Audio {
                rate_hz: self.rate_hz,
            }
            .to_byte(),
            hi,
            lo,
        ];
        arena.binary_with(&head, &frame.audio)
    }
}
