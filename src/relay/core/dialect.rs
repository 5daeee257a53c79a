//! Client protocols ("dialects"): how one stream's client speaks. One file each — [`rtp`],
//! [`sln`], [`audiosocket`], [`twilio`] — behind one trait, [`Dialect`], so that the stream
//! core never asks which protocol it serves.
//!
//! A dialect owns the wire on the client's side of a stream: decoding what the client sends
//! into the core's [`Inputs`] (audio to play, [`Command`]s), wording what the core says
//! ([`Event`]s, the call's audio) as the protocol's messages, and the messages that open a
//! stream. It keeps what only its protocol needs (RTP's sequence numbers and reordering,
//! Twilio's `sequenceNumber`). It decides nothing about time, queues or the stream's end:
//! the core does, the same way for every dialect.
//!
//! No dialect allocates per frame: audio is decoded into buffers the dialect keeps, and
//! client-bound messages are written into the core's [`Arena`]. Adding a protocol is one
//! file here and one arm in [`for_stream`].

pub mod audiosocket;
pub mod rtp;
pub mod sln;
pub mod twilio;

use bytes::BytesMut;
use tungstenite::Utf8Bytes;

use super::{EndReason, StreamSpec};
use crate::codec::control::{ClientControl, ServerEvent, parse_control};
use crate::domain::Encapsulation;
use crate::media::transcode::SampleFormat;
use crate::relay::Outbound;

/// Bytes of client-bound messages built in one buffer before a new one is started; a buffer
/// whose messages have all been sent is reused, so a stream whose client keeps up allocates
/// nothing per frame.
const ARENA_BYTES: usize = 4 * 1024;

/// One client message, as a dialect reads it (its size already checked by the core).
#[derive(Debug, Clone, Copy)]
pub enum Message<'a> {
    Binary(&'a [u8]),
    Text(&'a str),
}

/// What a client asks of its stream, whatever its protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Report back once the audio sent before it has been played.
    Mark(String),
    /// Drop the audio queued towards the call.
    Clear,
    /// Play these DTMF digits into the call.
    Dtmf(String),
    /// End the stream.
    Stop,
    /// Hold the queued audio (Asterisk gets silence meanwhile).
    Pause,
    Resume,
    /// Ask for the stream's state.
    Status,
}

/// The stream core, as a dialect decoding a client message sees it.
pub trait Inputs {
    /// Client audio, in `format`, to be played after what is queued.
    fn play(&mut self, format: SampleFormat, audio: &[u8]);
    /// A request of the client's; an error ends the stream.
    fn command(&mut self, command: Command) -> Result<(), EndReason>;
    /// A message refused and dropped without ending the stream (client RTP of the wrong
    /// shape), counted.
    fn refused(&mut self);
    /// A message of the protocol the service does not act on, counted.
    fn ignored(&mut self);
}

/// What the core tells the client, before a dialect words it. An event outside the dialect's
/// [`Vocabulary`] is never queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The client's audio up to its mark has been played.
    Mark(String),
    /// A digit from the call.
    Dtmf(String),
    /// The queue was dropped on the client's request.
    Cleared,
    /// The queue is full: the client is no longer read.
    Xoff { queued_ms: u64 },
    /// The queue is below 80 %: the client is read again.
    Xon { queued_ms: u64 },
    /// Everything the client sent has been played.
    Drained,
    /// The answer to [`Command::Status`].
    Status(Status),
    /// The stream ended, for this reason (`EndReason::stopped`).
    Stopped(&'static str),
}

/// A stream's state, as `status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub queued_ms: u64,
    pub paused: bool,
    pub frames_to_client: u64,
    pub frames_to_asterisk: u64,
    pub frames_dropped: u64,
}

/// One frame of the call's audio on its way to the client, in the dialect's
/// [`Dialect::audio_layout`] (converted from the leg's as it arrived).
#[derive(Debug)]
pub struct LegFrame {
    /// Counts the leg's frames from 1 as they arrived: a frame dropped for a slow client leaves
    /// a gap here.
    pub chunk: u64,
    /// Samples the leg had sent before this frame.
    pub position: u64,
    /// Samples in this frame.
    pub samples: u64,
    pub audio: Vec<u8>,
}

/// How one stream's client speaks. See the module documentation.
pub trait Dialect: std::fmt::Debug + Send {
    /// The messages that open the stream, in order, before anything else.
    fn opening(&mut self, spec: &StreamSpec) -> Vec<Outbound>;
    /// Which events the client is told of on this stream.
    fn vocabulary(&self) -> Vocabulary;
    /// The layout the call's audio is worded in: the core converts each frame to it once, as
    /// it arrives.
    fn audio_layout(&self) -> SampleFormat;
    /// Decodes one client message into the core's inputs; an error ends the stream.
    fn decode(&mut self, message: Message<'_>, core: &mut dyn Inputs) -> Result<(), EndReason>;
    /// Words an event as it leaves for the client; `None` for one outside its
    /// [`Dialect::vocabulary`] (never queued). The service's own JSON events unless the
    /// protocol has words of its own.
    fn event(&mut self, event: &Event) -> Option<Outbound> {
        Some(server_event(event))
    }
    /// Words a frame of the call's audio, as it leaves for the client.
    fn audio(&mut self, frame: &LegFrame, arena: &mut Arena) -> Outbound;
}

/// The dialect a stream's encapsulation names. `seed` is the driver's randomness (RTP's SSRC,
/// first sequence number and timestamp).
pub fn for_stream(spec: &StreamSpec, seed: u128) -> Box<dyn Dialect> {
    match spec.encapsulation {
        Encapsulation::Rtp => Box::new(rtp::Rtp::new(spec, seed)),
        Encapsulation::Sln => Box::new(sln::Sln::new(spec)),
        Encapsulation::Audiosocket => Box::new(audiosocket::AudioSocket::new(spec)),
        Encapsulation::Twilio => Box::new(twilio::Twilio::new(spec)),
    }
}

/// Where client-bound messages are written: one buffer, from which each message is split off
/// as a shared view (see [`ARENA_BYTES`]).
#[derive(Debug)]
pub struct Arena {
    buf: BytesMut,
}

impl Default for Arena {
    fn default() -> Arena {
        Arena {
            buf: BytesMut::with_capacity(ARENA_BYTES),
        }
    }
}

impl Arena {
    /// The buffer, with room for `need` more bytes. When every message cut from it has been
    /// sent, making room takes the whole buffer back instead of allocating.
    pub fn room(&mut self, need: usize) -> &mut BytesMut {
        if self.buf.capacity() - self.buf.len() < need {
            self.buf.reserve(ARENA_BYTES.max(need));
        }
        &mut self.buf
    }

    /// `header` then `body`, as one binary message.
    pub fn binary_with(&mut self, header: &[u8], body: &[u8]) -> Outbound {
        let buf = self.room(header.len() + body.len());
        buf.extend_from_slice(header);
        buf.extend_from_slice(body);
        Outbound::Binary(buf.split().freeze())
    }

    /// What was written since the last message, as a text message. Dialects write only
    /// `str`s and JSON into the arena, so it is UTF-8; were it not, the client would get an
    /// empty text rather than invalid UTF-8.
    pub fn text(&mut self) -> Outbound {
        Outbound::Text(Utf8Bytes::try_from(self.buf.split().freeze()).unwrap_or_default())
    }
}

/// The JSON controls that `rtp`, `sln` and `audiosocket` clients send as text, as commands.
pub fn control(text: &str) -> Result<Command, EndReason> {
    let control =
        parse_control(text).map_err(|e| EndReason::Malformed(format!("control message: {e}")))?;
    Ok(match control {
        ClientControl::Clear => Command::Clear,
        ClientControl::Mark { name } => Command::Mark(name),
        ClientControl::Dtmf { digits } => Command::Dtmf(digits),
        ClientControl::Stop => Command::Stop,
        ClientControl::Pause => Command::Pause,
        ClientControl::Resume => Command::Resume,
        ClientControl::Status => Command::Status,
    })
}

/// Which events a client is told of: those its protocol has words for, and of those the ones
/// the stream asked for where the protocol makes them optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vocabulary {
    pub marks: bool,
    pub digits: bool,
    /// `cleared`, `xoff`, `xon`, `drained`.
    pub flow: bool,
    pub status: bool,
    pub stopped: bool,
}

impl Vocabulary {
    /// The service's own JSON events (`rtp`, `sln`, `audiosocket`): `status` always (the
    /// client asked), the rest when the stream has events.
    pub fn service(events: bool) -> Vocabulary {
        Vocabulary {
            marks: events,
            digits: events,
            flow: events,
            status: true,
            stopped: events,
        }
    }

    pub fn speaks(&self, event: &Event) -> bool {
        match event {
            Event::Mark(_) => self.marks,
            Event::Dtmf(_) => self.digits,
            Event::Cleared | Event::Xoff { .. } | Event::Xon { .. } | Event::Drained => self.flow,
            Event::Status(_) => self.status,
            Event::Stopped(_) => self.stopped,
        }
    }
}

/// `event` as the service's own JSON event (`rtp`, `sln`, `audiosocket`).
pub fn server_event(event: &Event) -> Outbound {
    let json = match event {
        Event::Mark(name) => ServerEvent::Mark { name }.to_json(),
        Event::Dtmf(digit) => ServerEvent::Dtmf { digit }.to_json(),
        Event::Cleared => ServerEvent::Cleared.to_json(),
        Event::Xoff { queued_ms } => ServerEvent::Xoff {
            queued_ms: *queued_ms,
        }
        .to_json(),
        Event::Xon { queued_ms } => ServerEvent::Xon {
            queued_ms: *queued_ms,
        }
        .to_json(),
        Event::Drained => ServerEvent::Drained.to_json(),
        Event::Status(s) => ServerEvent::Status {
            queued_ms: s.queued_ms,
            paused: s.paused,
            frames_to_client: s.frames_to_client,
            frames_to_asterisk: s.frames_to_asterisk,
            frames_dropped: s.frames_dropped,
        }
        .to_json(),
        Event::Stopped(reason) => ServerEvent::Stopped { reason }.to_json(),
    };
    Outbound::Text(json.into())
}

/// The `started` event of the service's own dialects; `payload_type` for RTP.
pub fn started(spec: &StreamSpec, payload_type: Option<u8>) -> Outbound {
    use crate::domain::{PTIME_MS, Resource};
    let (call_id, conference_id) = match &spec.resource {
        Resource::Call(id) => (Some(id.as_str()), None),
        Resource::Conference(id) => (None, Some(id.as_str())),
    };
    let json = ServerEvent::Started {
        stream_id: spec.stream_id,
        call_id,
        conference_id,
        encapsulation: spec.encapsulation.as_str(),
        format: spec.format.as_str(),
        sample_rate: spec.format.sample_rate(),
        ptime_ms: PTIME_MS,
        payload_type,
    }
    .to_json();
    Outbound::Text(json.into())
}
