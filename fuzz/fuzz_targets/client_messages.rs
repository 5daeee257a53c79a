//! Fuzzes a whole stream from the client's side: the sans-IO `relay::core::StreamCore`, run as
//! a driver runs it on a virtual clock, for every encapsulation, format and leg layout, fed a
//! sequence of client messages (control and Twilio JSON, media of each encapsulation, closes)
//! interleaved with time passing, Asterisk audio, a closing leg, signals from the session and
//! a client that reads when it pleases.
//!
//! Input: 8 bytes choosing the stream (see `stream_config`: encapsulation, format, leg, flags,
//! expiry, jitter, queue, seed), then records
//! `op: u8, len: u16 (big-endian), len bytes` until the input ends (see `Op`).
//!
//! Checked after every step (see `Checker`): no panic; a driver that reads the client only
//! while `wants_client()` never has more than `max_queue_ms` plus one message's worth queued;
//! once ended the stream stays ended, for the same reason, and asks for nothing more; the
//! client gets at most one close frame, last, with a code SPEC allows and a reason of at most
//! 123 bytes, after `stopped`/`stop`; messages waiting for the client stay bounded; every
//! message to the client has its encapsulation's shape; marks come back in order and by name;
//! DTMF asked of the session is valid; the core never asks to be woken in the past.
#![no_main]

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use ari_mediastream::codec::audiosocket::{self, Kind};
use ari_mediastream::codec::control::{ClientControl, parse_control};
use ari_mediastream::codec::{rtp, twilio};
use ari_mediastream::domain::{CallId, ConferenceId, Encapsulation, Format, Resource};
use ari_mediastream::media::transcode::SampleFormat;
use ari_mediastream::relay::core::{
    Action, CLIENT_RING_FRAMES, CoreConfig, EndReason, MAX_MESSAGE_BYTES, MAX_PENDING_EVENTS,
    Signal, StreamCore, StreamSpec,
};
use ari_mediastream::relay::{Inbound, Outbound};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

/// The close codes SPEC allows (README "Close codes").
const CLOSE_CODES: [u16; 6] = [1000, 1001, 1007, 1008, 1009, 1011];
/// Largest payload an Asterisk leg hands over: an AudioSocket frame's.
const MAX_LEG_PAYLOAD: usize = u16::MAX as usize;
/// Steps per input, so that an input of repeated tiny records stays fast.
const MAX_STEPS: usize = 512;
/// Most repetitions of one `Op::Repeat` record.
const MAX_REPEAT: usize = 4096;
/// Bytes of messages and leg audio one input may make the core handle (see `cost`): an input
/// stops there, so that every input runs in milliseconds.
const WORK_BUDGET: usize = 1 << 20;

/// The origin of virtual time: the only clock read; every other instant is an offset.
fn t0() -> Instant {
    static T0: OnceLock<Instant> = OnceLock::new();
    *T0.get_or_init(Instant::now)
}

/// Reads the input front to back; reads past the end give zeros.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    /// A record: `op`, then up to `len` bytes (fewer at the end of the input).
    fn record(&mut self) -> Option<(u8, &'a [u8])> {
        if self.0.is_empty() {
            return None;
        }
        let op = self.byte();
        let len = usize::from(self.u16()).min(self.0.len());
        let (body, rest) = self.0.split_at(len);
        self.0 = rest;
        Some((op, body))
    }
}

/// The stream, from the input's first 8 bytes: encapsulation, format (among those its
/// encapsulation allows), the leg's layout (among those Asterisk gives for that format), events,
/// resource, token expiry, queue limits and the RTP seed. Limits are those `config.rs` accepts.
fn stream_config(input: &mut Input<'_>) -> CoreConfig {
    let encapsulation = [
        Encapsulation::Rtp,
        Encapsulation::Sln,
        Encapsulation::Audiosocket,
        Encapsulation::Twilio,
    ][usize::from(input.byte() % 4)];
    let formats: Vec<Format> = [
        Format::Ulaw,
        Format::Slin,
        Format::Slin16,
        Format::Slin24,
        Format::Slin48,
    ]
    .into_iter()
    .filter(|f| encapsulation.allows(*f))
    .collect();
    let format = formats[usize::from(input.byte()) % formats.len()];
    // An RTP leg carries ulaw, or slin big-endian; an AudioSocket leg little-endian slin at
    // any rate (see session/streams/legs.rs).
    let leg = input.byte();
    let audiosocket_leg = format.is_wideband() || leg % 2 == 1;
    let leg_format = match format {
        _ if audiosocket_leg => SampleFormat::SlinLe,
        Format::Ulaw => SampleFormat::Ulaw,
        _ => SampleFormat::SlinBe,
    };
    let flags = input.byte();
    let events = flags & 1 != 0;
    let resource = if flags & 2 != 0 {
        Resource::Conference(ConferenceId::parse("conf-1").expect("a valid id"))
    } else {
        Resource::Call(CallId::parse("1732551234.17").expect("a valid id"))
    };
    let expiry = input.byte();
    let expires_in = (flags & 4 != 0).then(|| Duration::from_millis(20 * u64::from(expiry)));
    let jitter_ms = 20 + 4 * u32::from(input.byte()); // 20..=1040, the config allows 20..=1000
    let jitter_ms = jitter_ms.min(1000);
    let max_queue_ms = jitter_ms + 20 * u32::from(input.byte());
    let seed = u128::from(input.byte()).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
    let mut parameters = BTreeMap::new();
    parameters.insert("lang".to_owned(), "en-US".to_owned());
    CoreConfig {
        spec: StreamSpec {
            stream_id: uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
            resource,
            encapsulation,
            format,
            events,
            leg_format,
            jitter_ms,
            max_queue_ms,
            expires_at: expires_in.map(|d| SystemTime::UNIX_EPOCH + d),
            parameters,
            account_sid: "AC0123".to_owned(),
        },
        expires_at: expires_in.map(|d| t0() + d),
        clock_start: t0() + Duration::from_millis(20),
        seed,
    }
}

/// What a record does; the op byte is taken modulo the number of kinds.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// A text message: the body, or `Malformed` if it is not UTF-8 (the WebSocket layer's
    /// refusal).
    Text,
    /// A binary message: the body as it is.
    Binary,
    /// Media of the stream's encapsulation built from `len: u16, fill: u8, seq: u16`, so that
    /// long and well-formed messages are cheap to reach.
    Media,
    /// Time passes by `ms: u16` (at most 5 s); a driver that wakes late serves what is due.
    Advance,
    /// Asterisk audio: the body as the leg payload.
    Leg,
    /// Asterisk audio of `len: u16` bytes of `fill: u8`.
    LegFill,
    /// Asterisk closed the leg.
    LegClosed,
    /// From the session: `0` DTMF (the next byte a digit), otherwise an end reason.
    Signal,
    /// The client reads `n: u8` messages (0: all it has).
    Read,
    /// The session takes the DTMF it was asked for.
    Actions,
    /// The client's connection: `0` closed, `1` a message too large, otherwise an unreadable
    /// frame.
    Connection,
    /// `count: u16` times (at most 4096) the op `op: u8` with the rest of the body: reaches
    /// the limits (pending marks, events, DTMF, the audio ring) within a short input.
    Repeat,
}

const OPS: [Op; 12] = [
    Op::Text,
    Op::Binary,
    Op::Media,
    Op::Advance,
    Op::Leg,
    Op::LegFill,
    Op::LegClosed,
    Op::Signal,
    Op::Read,
    Op::Actions,
    Op::Connection,
    Op::Repeat,
];

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let config = stream_config(&mut input);
    let mut h = Harness::new(config);
    let mut budget = WORK_BUDGET;
    let mut step = |h: &mut Harness, op: Op, body: &[u8]| {
        let Some(left) = budget.checked_sub(cost(op, body)) else {
            return false;
        };
        budget = left;
        h.step(op, body);
        h.check_state();
        true
    };
    'input: for (op, body) in std::iter::from_fn(|| input.record()).take(MAX_STEPS) {
        match OPS[usize::from(op) % OPS.len()] {
            Op::Repeat => {
                let mut b = Input(body);
                let count = usize::from(b.u16()) % (MAX_REPEAT + 1);
                let op = OPS[usize::from(b.byte()) % OPS.len()];
                if matches!(op, Op::Repeat) {
                    continue;
                }
                for _ in 0..count {
                    if !step(&mut h, op, b.0) {
                        break 'input;
                    }
                }
            }
            op => {
                if !step(&mut h, op, body) {
                    break;
                }
            }
        }
    }
    // The client reads everything left, and the session takes its actions.
    h.read(usize::MAX);
    h.take_actions();
    h.check_state();
    if h.core.ended().is_some() {
        assert!(
            h.checker.closed,
            "an ended stream's client got no close frame"
        );
    }
});

/// Roughly the bytes a step makes the core handle.
fn cost(op: Op, body: &[u8]) -> usize {
    let mut b = Input(body);
    64 + match op {
        Op::Text | Op::Binary | Op::Leg => body.len(),
        Op::Media => 2 * usize::from(b.u16()),
        Op::LegFill => 4 * MAX_LEG_PAYLOAD.min(usize::from(b.u16())),
        _ => 0,
    }
}

/// A driver around one core, on a virtual clock.
struct Harness {
    core: StreamCore,
    now: Instant,
    encapsulation: Encapsulation,
    format: Format,
    /// Bytes of one 20 ms frame on the leg.
    leg_frame_bytes: usize,
    /// Frames the playout queue holds before the core stops wanting client input.
    max_frames: usize,
    /// The most bytes the core's RTP reorder holds and can release at once.
    reorder_bytes: usize,
    /// The reason the stream ended with, once it has.
    ended: Option<EndReason>,
    /// Whether the session was asked about a closed leg.
    leg_closed_asked: bool,
    checker: Checker,
}

impl Harness {
    fn new(config: CoreConfig) -> Harness {
        let spec = &config.spec;
        let frame_samples = spec.format.frame_samples();
        let leg_frame_bytes = frame_samples * spec.leg_format.sample_bytes();
        // As the core sizes its queue and reorder window (core.rs and core/dialect/rtp.rs).
        let prebuffer = spec.jitter_ms.div_ceil(20) as usize;
        let max_frames = ((spec.max_queue_ms / 20).max(1) as usize).max(prebuffer);
        let window = prebuffer.clamp(1, 64);
        let reorder_bytes = (window + 1) * 2 * frame_samples * 4;
        let checker = Checker::new(spec);
        Harness {
            encapsulation: spec.encapsulation,
            format: spec.format,
            leg_frame_bytes,
            max_frames,
            reorder_bytes,
            now: t0(),
            ended: None,
            leg_closed_asked: false,
            checker,
            core: StreamCore::new(config),
        }
    }

    fn step(&mut self, op: Op, body: &[u8]) {
        let mut b = Input(body);
        match op {
            Op::Text => {
                let message = match std::str::from_utf8(body) {
                    Ok(text) => Inbound::Text(text.into()),
                    Err(_) => Inbound::Malformed("a text frame that is not UTF-8".into()),
                };
                self.client(message);
            }
            Op::Binary => self.client(Inbound::Binary(Bytes::copy_from_slice(body))),
            Op::Media => {
                let (len, fill, seq) = (usize::from(b.u16()), b.byte(), b.u16());
                let message = self.media(len, fill, seq);
                self.client(message);
            }
            Op::Advance => {
                let ms = u64::from(b.u16() % 5001);
                self.advance(Duration::from_millis(ms));
            }
            Op::Leg => self.leg(&body[..body.len().min(MAX_LEG_PAYLOAD)]),
            Op::LegFill => {
                let (len, fill) = (usize::from(b.u16()), b.byte());
                // Mostly whole frames, as Asterisk sends; otherwise any length.
                let len = if len & 0x8000 == 0 {
                    self.leg_frame_bytes * (len % 4 + 1)
                } else {
                    len & 0x7fff
                };
                self.leg(&vec![fill; len]);
            }
            Op::LegClosed => self.core.handle_leg_closed(),
            Op::Signal => {
                let signal = match b.byte() % 10 {
                    0 => {
                        let digit = [b'0', b'1', b'9', b'*', b'#', b'A', b'D'];
                        let d = digit[usize::from(b.byte()) % digit.len()];
                        Signal::Dtmf(char::from(d).to_string())
                    }
                    1 => Signal::End(EndReason::Client),
                    2 => Signal::End(EndReason::Hangup),
                    3 => Signal::End(EndReason::Stopped),
                    4 => Signal::End(EndReason::Shutdown),
                    5 => Signal::End(EndReason::Malformed("x".repeat(usize::from(b.byte())))),
                    6 => Signal::End(EndReason::TooLarge),
                    7 => Signal::End(EndReason::TokenExpired),
                    8 => Signal::End(EndReason::Overflow("é".repeat(usize::from(b.byte())))),
                    _ => Signal::End(EndReason::Failure("the leg failed".into())),
                };
                self.core.handle_signal(self.now, signal);
            }
            Op::Read => {
                let n = match b.byte() {
                    0 => usize::MAX,
                    n => usize::from(n),
                };
                self.read(n);
            }
            Op::Actions => self.take_actions(),
            Op::Repeat => unreachable!("repeats are unrolled by the caller"),
            Op::Connection => {
                let message = match b.byte() {
                    0 => Inbound::Close,
                    1 => Inbound::TooLarge,
                    _ => Inbound::Malformed("invalid UTF-8 in a text frame".into()),
                };
                self.client(message);
            }
        }
    }

    /// A client message, delivered as a driver does: only while the core wants one.
    fn client(&mut self, message: Inbound) {
        if !self.core.wants_client() {
            return;
        }
        let before = self.core.queued_frames();
        assert!(before < self.max_frames, "wants input with a full queue");
        let accepted_mark = self.accepted_mark(&message);
        self.core.handle_client(self.now, &message);
        // Backpressure: at most the queue's limit plus what this one message carried (twice
        // its bytes: μ-law becomes 16-bit; for RTP what the reorder window released with it),
        // plus the partial frame that was waiting.
        let carried = match (&message, self.encapsulation) {
            (Inbound::Binary(_), Encapsulation::Rtp) => self.reorder_bytes,
            (Inbound::Binary(b), _) => b.len(),
            (Inbound::Text(t), _) => t.len(),
            _ => 0,
        };
        let bound = self.max_frames + (2 * carried).div_ceil(self.leg_frame_bytes) + 1;
        let after = self.core.queued_frames();
        assert!(
            after <= bound,
            "{after} frames queued, over the limit of {} plus one message ({bound})",
            self.max_frames
        );
        if self.core.ended().is_none() {
            if let Some(name) = accepted_mark {
                self.checker.marks_sent.push_back(name);
            }
        }
        self.check_ended();
    }

    /// The mark a message places, if the stream takes it (the same parsers the core uses).
    fn accepted_mark(&self, message: &Inbound) -> Option<String> {
        let Inbound::Text(text) = message else {
            return None;
        };
        if text.len() > MAX_MESSAGE_BYTES {
            return None;
        }
        match self.encapsulation {
            Encapsulation::Twilio => match twilio::parse(text) {
                Ok(twilio::ClientMessage::Mark(name)) => Some(name.into_owned()),
                _ => None,
            },
            _ => match parse_control(text) {
                Ok(ClientControl::Mark { name }) => Some(name),
                _ => None,
            },
        }
    }

    /// Media of this stream's encapsulation: `len` bytes of audio of `fill` (a little more
    /// than the largest message accepted is possible, to cross the limit).
    fn media(&self, len: usize, fill: u8, seq: u16) -> Inbound {
        let len = len * 2; // up to 131070 bytes, past MAX_MESSAGE_BYTES
        let mut audio = vec![fill; len];
        for (i, b) in audio.iter_mut().enumerate() {
            *b = b.wrapping_add((i / 7) as u8);
        }
        match self.encapsulation {
            Encapsulation::Sln => Inbound::Binary(Bytes::from(audio)),
            Encapsulation::Rtp => {
                let pt = match self.format {
                    Format::Ulaw => 0,
                    Format::Slin => 96,
                    Format::Slin16 => 97,
                    Format::Slin24 => 98,
                    Format::Slin48 => 99,
                };
                let header = rtp::RtpHeader {
                    marker: false,
                    payload_type: pt,
                    sequence: seq,
                    timestamp: u32::from(seq) * 160,
                    ssrc: 0x5eed,
                };
                let mut out = vec![0; rtp::HEADER_LEN + audio.len()];
                let n = rtp::write(&header, &audio, &mut out).expect("room for the packet");
                out.truncate(n);
                Inbound::Binary(Bytes::from(out))
            }
            Encapsulation::Audiosocket => {
                let kind = Kind::audio(self.format.sample_rate()).expect("a rate AudioSocket has");
                let mut out = Vec::with_capacity(audio.len() + 16);
                // Whole samples, at most 64 KiB a frame; a DTMF frame after the first.
                for (i, chunk) in audio.chunks(65_534).enumerate() {
                    audiosocket::encode(kind, chunk, &mut out);
                    if i == 0 && seq % 5 == 0 {
                        audiosocket::encode(Kind::Dtmf, b"5", &mut out);
                    }
                }
                Inbound::Binary(Bytes::from(out))
            }
            Encapsulation::Twilio => {
                let payload = STANDARD.encode(&audio[..len / 2]);
                Inbound::Text(
                    format!(
                        r#"{{"event":"media","sequenceNumber":"{seq}","media":{{"track":"outbound","payload":"{payload}"}},"streamSid":"MZ1"}}"#
                    )
                    .into(),
                )
            }
        }
    }

    /// Time passes; the driver, woken (late, perhaps), serves what is due.
    fn advance(&mut self, by: Duration) {
        self.now += by;
        if self.core.poll_timeout().is_some_and(|at| at <= self.now) {
            self.core.handle_timeout(self.now);
            while let Some(frame) = self.core.poll_to_leg() {
                assert_eq!(frame.len(), self.leg_frame_bytes, "a leg frame of 20 ms");
            }
            if let Some(at) = self.core.poll_timeout() {
                assert!(
                    at > self.now,
                    "asks to be woken in the past after a wake-up"
                );
            }
        }
        self.check_ended();
    }

    fn leg(&mut self, payload: &[u8]) {
        self.core.handle_leg(self.now, payload);
        self.checker.largest_leg = self.checker.largest_leg.max(payload.len());
        self.check_ended();
    }

    /// The client reads up to `n` messages.
    fn read(&mut self, n: usize) {
        let mut read = 0;
        while read < n {
            let Some(message) = self.core.poll_to_client() else {
                break;
            };
            read += 1;
            self.checker.message(message, self.core.ended().is_some());
        }
        assert!(
            read == n || !self.core.has_client_output(),
            "has_client_output disagrees with poll_to_client"
        );
        if n == usize::MAX {
            assert!(
                read <= MAX_PENDING_EVENTS + CLIENT_RING_FRAMES + 3,
                "{read} messages were waiting for the client"
            );
        }
    }

    fn take_actions(&mut self) {
        let mut n = 0;
        while let Some(action) = self.core.poll_action() {
            let Action::Dtmf(digits) = action else {
                assert!(!self.leg_closed_asked, "the session was asked twice");
                self.leg_closed_asked = true;
                continue;
            };
            n += 1;
            assert!((1..=32).contains(&digits.len()), "DTMF {digits:?}");
            assert!(
                digits.bytes().all(|b| b"0123456789*#ABCD".contains(&b)),
                "DTMF {digits:?}"
            );
        }
        assert!(n <= 16, "{n} DTMF requests waited for the session");
    }

    /// Once ended, the stream stays ended for the same reason.
    fn check_ended(&mut self) {
        match (&self.ended, self.core.ended()) {
            (None, Some(reason)) => {
                assert!(CLOSE_CODES.contains(&reason.close_code()));
                self.ended = Some(reason.clone());
            }
            (Some(was), now) => assert_eq!(Some(was), now, "the end reason changed"),
            (None, None) => {}
        }
    }

    fn check_state(&mut self) {
        self.check_ended();
        if self.core.ended().is_some() {
            assert!(!self.core.is_running());
            assert!(!self.core.wants_client());
            assert_eq!(
                self.core.poll_timeout(),
                None,
                "an ended stream wants waking"
            );
            assert!(
                self.core.poll_to_leg().is_none(),
                "an ended stream sends audio"
            );
        }
        if self.checker.closed {
            assert!(self.core.ended().is_some(), "closed but not ended");
            assert!(
                !self.core.has_client_output(),
                "a message after the close frame"
            );
        }
    }
}

/// What the client has seen, and what it must see.
struct Checker {
    encapsulation: Encapsulation,
    events: bool,
    /// The payload type and the audio kind the stream's binary messages carry.
    rtp_pt: u8,
    audio_kind: Kind,
    /// Marks placed, not yet reported.
    marks_sent: VecDeque<String>,
    /// Messages read so far.
    seen: usize,
    /// `stopped` (or Twilio's `stop`) has been read.
    stopped: bool,
    closed: bool,
    /// An RTP stream's SSRC, from its first packet.
    ssrc: Option<u32>,
    /// Binary messages read (the first of an AudioSocket stream is its UUID frame).
    binaries: usize,
    /// Twilio `sequenceNumber`s read: each used once.
    twilio_seqs: HashSet<u64>,
    largest_leg: usize,
}

impl Checker {
    fn new(spec: &StreamSpec) -> Checker {
        Checker {
            encapsulation: spec.encapsulation,
            events: spec.events,
            rtp_pt: match spec.format {
                Format::Ulaw => 0,
                Format::Slin => 96,
                Format::Slin16 => 97,
                Format::Slin24 => 98,
                Format::Slin48 => 99,
            },
            audio_kind: Kind::audio(spec.format.sample_rate()).expect("a rate AudioSocket has"),
            marks_sent: VecDeque::new(),
            seen: 0,
            stopped: false,
            closed: false,
            ssrc: None,
            binaries: 0,
            twilio_seqs: HashSet::new(),
            largest_leg: 0,
        }
    }

    fn message(&mut self, message: Outbound, ended: bool) {
        assert!(!self.closed, "a message after the close frame: {message:?}");
        let first = self.seen == 0;
        self.seen += 1;
        match message {
            Outbound::Close { code, reason } => {
                assert!(ended, "a close frame from a stream that has not ended");
                assert!(CLOSE_CODES.contains(&code), "close code {code}");
                assert!(
                    reason.len() <= 123,
                    "a close reason of {} bytes",
                    reason.len()
                );
                let says_stopped = self.events || self.encapsulation == Encapsulation::Twilio;
                assert!(!says_stopped || self.stopped, "closed without stopped/stop");
                self.closed = true;
            }
            Outbound::Text(text) => self.text(&text, first),
            Outbound::Binary(bytes) => self.binary(&bytes, first),
        }
    }

    fn text(&mut self, text: &str, first: bool) {
        // A Twilio mark echoes a name of up to a whole message.
        assert!(
            text.len() <= MAX_MESSAGE_BYTES + 1024,
            "{} bytes",
            text.len()
        );
        let value: serde_json::Value = serde_json::from_str(text).expect("events are JSON");
        if self.encapsulation == Encapsulation::Twilio {
            let event = value["event"]
                .as_str()
                .expect("a Twilio message has an event");
            assert!(
                ["connected", "start", "media", "mark", "dtmf", "stop"].contains(&event),
                "Twilio event {event}"
            );
            assert_eq!(first, event == "connected", "connected comes first, once");
            if event != "connected" {
                let seq: u64 = value["sequenceNumber"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .expect("sequenceNumber is a number in a string");
                assert!(
                    seq >= 1 && self.twilio_seqs.insert(seq),
                    "sequenceNumber {seq}"
                );
                assert_eq!(event == "start", seq == 1, "start is message 1");
            }
            match event {
                "mark" => self.mark(value["mark"]["name"].as_str()),
                "stop" => self.stopped = true,
                _ => {}
            }
            return;
        }
        let kind = value["type"].as_str().expect("an event has a type");
        // Without events, only the answer to `status`.
        assert!(
            self.events || kind == "status",
            "event {kind} without events"
        );
        assert_eq!(
            self.events && first,
            kind == "started",
            "started comes first, once"
        );
        match kind {
            "mark" => self.mark(value["name"].as_str()),
            "stopped" => {
                assert!(!self.stopped, "stopped twice");
                self.stopped = true;
            }
            "started" | "cleared" | "dtmf" | "status" | "xoff" | "xon" | "drained" => {}
            other => panic!("unknown event {other}"),
        }
    }

    /// A mark reported: the oldest placed and not yet reported.
    fn mark(&mut self, name: Option<&str>) {
        let name = name.expect("a mark has a name");
        let expected = self.marks_sent.pop_front();
        assert_eq!(Some(name), expected.as_deref(), "marks out of order");
    }

    fn binary(&mut self, bytes: &[u8], first: bool) {
        self.binaries += 1;
        let audio_bound = 2 * self.largest_leg;
        match self.encapsulation {
            Encapsulation::Twilio => panic!("a binary message on a Twilio stream"),
            Encapsulation::Sln => assert!(bytes.len() <= audio_bound),
            Encapsulation::Rtp => {
                let packet = rtp::parse(bytes).expect("RTP to the client parses");
                assert_eq!(packet.header.payload_type, self.rtp_pt);
                assert_eq!(
                    *self.ssrc.get_or_insert(packet.header.ssrc),
                    packet.header.ssrc
                );
                assert!(packet.payload.len() <= audio_bound);
            }
            Encapsulation::Audiosocket => {
                let (frame, used) = audiosocket::decode(bytes, u16::MAX.into())
                    .expect("a valid AudioSocket frame")
                    .expect("a whole AudioSocket frame");
                assert_eq!(used, bytes.len(), "one frame per message");
                if self.binaries == 1 {
                    assert_eq!(frame.kind, Kind::Uuid, "the UUID frame comes first");
                    assert!(first || self.events, "the UUID frame follows started");
                } else {
                    assert_eq!(frame.kind, self.audio_kind);
                    assert!(frame.payload.len() <= audio_bound);
                }
            }
        }
    }
}
