//! `encapsulation=sln`: raw audio in binary messages (signed linear, little-endian, or μ-law
//! with `format=ulaw`), the service's JSON controls and events in text messages (SPEC §5).

use super::{Arena, Dialect, Inputs, LegFrame, Message, Vocabulary, control, started};
use crate::media::transcode::SampleFormat;
use crate::relay::Outbound;
use crate::relay::core::{EndReason, StreamSpec};

#[derive(Debug)]
pub struct Sln {
    /// The layout of the client's audio.
    format: SampleFormat,
    events: bool,
}

impl Sln {
    pub fn new(spec: &StreamSpec) -> Sln {
        Sln {
            format: spec.client_format(),
            events: spec.events,
        }
    }
}

impl Dialect for Sln {
    fn opening(&mut self, spec: &StreamSpec) -> Vec<Outbound> {
        self.events
            .then(|| started(spec, None))
            .into_iter()
            .collect()
    }

    fn vocabulary(&self) -> Vocabulary {
        Vocabulary::service(self.events)
    }

    fn decode(&mut self, message: Message<'_>, core: &mut dyn Inputs) -> Result<(), EndReason> {
        match message {
            Message::Binary(audio) => {
                if self.format != SampleFormat::Ulaw && !audio.len().is_multiple_of(2) {
                    return Err(EndReason::Malformed(
                        "slin audio must be whole 16-bit samples".into(),
                    ));
                }
                core.play(self.format, audio);
                Ok(())
            }
            Message::Text(text) => core.command(control(text)?),
        }
    }

    fn audio_layout(&self) -> SampleFormat {
        self.format
    }

    fn audio(&mut self, frame: &LegFrame, arena: &mut Arena) -> Outbound {
        arena.binary_with(&[], &frame.audio)
    }
}
