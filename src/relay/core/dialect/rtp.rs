//! `encapsulation=rtp`: each binary message is one RTP packet (RFC 3550) — PCMU, or L16
//! big-endian under a dynamic payload type per rate — and text messages are the service's JSON
//! controls and events (SPEC §5).
//!
//! The client's packets are put back in sequence order within the jitter window; packets of
//! the wrong version, payload type or shape are dropped and counted, never fatal. Towards the
//! client, one packet per frame of the call's audio: a frame dropped for a slow client leaves
//! its gap in the sequence numbers and timestamps, as a sender's loss would.

use super::{Arena, Dialect, Inputs, LegFrame, Message, Vocabulary, control, started};
use crate::codec::rtp::{self, RtpSender};
use crate::domain::Format;
use crate::media::rtp_rx::RtpReorder;
use crate::media::transcode::SampleFormat;
use crate::relay::Outbound;
use crate::relay::core::{EndReason, PTIME_MS, StreamSpec};

/// Payload types on the client's RTP: PCMU, and a dynamic one for L16 (RFC 3551).
pub const CLIENT_PT_ULAW: u8 = 0;
pub const CLIENT_PT_L16: u8 = 96;
/// The dynamic payload types of L16 (big-endian) at 16, 24 and 48 kHz towards the client.
pub const CLIENT_PT_L16_WIDEBAND: u8 = 97;
pub const CLIENT_PT_L16_24K: u8 = 98;
pub const CLIENT_PT_L16_48K: u8 = 99;

/// The payload type of a format on the client's RTP.
pub fn payload_type(format: Format) -> u8 {
    match format {
        Format::Ulaw => CLIENT_PT_ULAW,
        Format::Slin => CLIENT_PT_L16,
        Format::Slin16 => CLIENT_PT_L16_WIDEBAND,
        Format::Slin24 => CLIENT_PT_L16_24K,
        Format::Slin48 => CLIENT_PT_L16_48K,
    }
}

#[derive(Debug)]
pub struct Rtp {
    /// The layout of the audio in the client's packets.
    format: SampleFormat,
    payload_type: u8,
    events: bool,
    /// The client's packets, back in order.
    reorder: RtpReorder,
    /// Numbers the packets towards the client.
    sender: RtpSender,
    /// The chunk and the leg's sample position just after the last frame sent, to number a
    /// gap left by dropped frames.
    sent_through: Option<(u64, u64)>,
}

impl Rtp {
    /// `seed`: the SSRC, first sequence number and first timestamp towards the client.
    pub fn new(spec: &StreamSpec, seed: u128) -> Rtp {
        let payload_type = payload_type(spec.format);
        let frame_samples = spec.format.frame_samples();
        let window = spec.jitter_ms.div_ceil(PTIME_MS) as usize;
        Rtp {
            format: spec.client_format(),
            payload_type,
            events: spec.events,
            reorder: RtpReorder::new(window.max(1), 2 * frame_samples * 4),
            sender: RtpSender::new(
                seed as u32,
                (seed >> 32) as u16,
                (seed >> 48) as u32,
                payload_type,
            ),
            sent_through: None,
        }
    }
}

impl Dialect for Rtp {
    fn opening(&mut self, spec: &StreamSpec) -> Vec<Outbound> {
        self.events
            .then(|| started(spec, Some(self.payload_type)))
            .into_iter()
            .collect()
    }

    fn vocabulary(&self) -> Vocabulary {
        Vocabulary::service(self.events)
    }

    fn decode(&mut self, message: Message<'_>, core: &mut dyn Inputs) -> Result<(), EndReason> {
        let bytes = match message {
            Message::Text(text) => return core.command(control(text)?),
            Message::Binary(bytes) => bytes,
        };
        match rtp::parse(bytes) {
            Ok(packet) if packet.header.payload_type == self.payload_type => {
                self.reorder.push(packet.header.sequence, packet.payload);
                let format = self.format;
                self.reorder.drain(|payload| core.play(format, payload));
            }
            // Wrong version, payload type or shape: dropped and counted, not fatal.
            _ => core.refused(),
        }
        Ok(())
    }

    fn audio_layout(&self) -> SampleFormat {
        self.format
    }

    fn audio(&mut self, frame: &LegFrame, arena: &mut Arena) -> Outbound {
        let samples = frame.samples;
        if let Some((chunk, position)) = self.sent_through
            && frame.chunk > chunk
        {
            self.sender.skip(
                (frame.chunk - chunk) as u16,
                frame.position.saturating_sub(position) as u32,
            );
        }
        self.sent_through = Some((frame.chunk + 1, frame.position + samples));
        let mut head = [0u8; rtp::HEADER_LEN];
        rtp::write(&self.sender.next_header(samples as u32), &[], &mut head);
        arena.binary_with(&head, &frame.audio)
    }
}
