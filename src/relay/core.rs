//! One media stream's decisions, as a state machine without IO: the sans-IO core that the
//! driver in [`super::stream`] runs between a client WebSocket and an Asterisk-facing leg.
//!
//! Owns everything a stream decides: decoding what the client sends (audio per
//! encapsulation, control messages), the playout queue and its 20 ms pacing towards Asterisk,
//! marks, `clear`, events, what Asterisk's audio becomes for the client (and which of it is
//! dropped when the client reads too slowly), the token's expiry, why and how the stream ends
//! (close code and reason), and its counters.
//!
//! It must not read the clock, open sockets, spawn or await: time comes in as an argument,
//! inputs are `handle_*` calls and outputs are polled, in the shape of quinn-proto and str0m:
//!
//! ```text
//!   handle_client(now, msg)   handle_leg(now, payload)   handle_leg_closed(now)
//!   handle_signal(now, sig)   handle_timeout(now)        end(reason)
//!        ──►  StreamCore  ──►
//!   poll_to_client()   poll_to_leg()   poll_action()   poll_timeout()   ended()
//! ```
//!
//! The driver sleeps until [`StreamCore::poll_timeout`], calls [`StreamCore::handle_timeout`],
//! sends what [`StreamCore::poll_to_leg`] and [`StreamCore::poll_to_client`] give, and reads
//! the client only while [`StreamCore::wants_client`] is true (backpressure).
//!
//! Overflow policy: Asterisk audio towards the client waits in a ring of
//! [`CLIENT_RING_FRAMES`] messages, the oldest dropped (and counted) when the client does not
//! take them; events wait in a queue of [`MAX_PENDING_EVENTS`], past which the stream ends
//! (1008); client audio towards Asterisk is queued up to `max_queue_ms`, past which the core
//! stops wanting client input, so nothing the client sent is dropped.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};

use super::{Inbound, Outbound};
use crate::codec::audiosocket::{self, Kind};
use crate::codec::control::{ClientControl, ServerEvent, parse_control};
use crate::codec::rtp::{self, RtpSender};
use crate::codec::twilio;
use crate::domain::{Encapsulation, Format, PTIME_MS, Resource};
use crate::media::pacer::Pacer;
use crate::media::playout::{Playout, Popped};
use crate::media::rtp_rx::RtpReorder;
use crate::media::transcode::{SampleFormat, convert};

/// Messages of Asterisk audio that may wait for a slow client before the oldest are dropped.
pub const CLIENT_RING_FRAMES: usize = 25;
/// How long a client may leave its audio unread (the ring full, the oldest dropped) before
/// its stream is closed with 1008.
pub const CLIENT_STALL: Duration = Duration::from_secs(10);
/// How long a leg may be silent while Asterisk does not answer before the stream ends: a live
/// Asterisk sends a frame every 20 ms.
pub const LEG_SILENCE: Duration = Duration::from_millis(300);
/// The largest client message taken; a larger one ends the stream with 1009.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Payload types on the client's RTP: PCMU, and a dynamic one for L16 (RFC 3551).
pub const CLIENT_PT_ULAW: u8 = 0;
pub const CLIENT_PT_L16: u8 = 96;
/// The dynamic payload types of L16 (big-endian) at 16, 24 and 48 kHz towards the client.
pub const CLIENT_PT_L16_WIDEBAND: u8 = 97;
pub const CLIENT_PT_L16_24K: u8 = 98;
pub const CLIENT_PT_L16_48K: u8 = 99;
/// Marks a client may have waiting at once; more ends the stream (1008).
pub const MAX_PENDING_MARKS: usize = 1024;
/// Events that may wait for a client that does not read; more ends the stream (1008).
pub const MAX_PENDING_EVENTS: usize = 2048;
/// DTMF requests that may wait for the session; more are dropped and counted.
const MAX_PENDING_ACTIONS: usize = 16;
/// How long a closed leg waits for the session to say why (usually a hangup, which Asterisk's
/// events report a moment after the media connection closes) before calling it a failure.
pub const LEG_CLOSED_GRACE: Duration = Duration::from_millis(300);
/// Bytes of client-bound messages built in one buffer before a new one is started; a buffer
/// whose messages have all been sent is reused, so a stream whose client keeps up allocates
/// nothing per frame.
const OUT_ARENA_BYTES: usize = 4 * 1024;
pub const PTIME: Duration = Duration::from_millis(PTIME_MS as u64);

/// What a stream is, as the client asked for it.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    pub stream_id: uuid::Uuid,
    pub resource: Resource,
    pub encapsulation: Encapsulation,
    pub format: Format,
    pub events: bool,
    /// The layout Asterisk sends and expects on the leg.
    pub leg_format: SampleFormat,
    pub jitter_ms: u32,
    pub max_queue_ms: u32,
    /// When the client's token expires (wall clock): the stream ends with 1008 then.
    pub expires_at: Option<SystemTime>,
    /// The client's own parameters, which the service does not use itself: Twilio's
    /// `customParameters`.
    pub parameters: BTreeMap<String, String>,
    /// The `accountSid` a Twilio stream reports (`twilio.account_sid`).
    pub account_sid: String,
}

impl StreamSpec {
    /// The layout of audio in the client's messages.
    pub fn client_format(&self) -> SampleFormat {
        match (self.encapsulation, self.format) {
            (_, Format::Ulaw) => SampleFormat::Ulaw,
            (Encapsulation::Rtp, _) => SampleFormat::SlinBe,
            (_, _) => SampleFormat::SlinLe,
        }
    }

    fn client_payload_type(&self) -> u8 {
        match self.format {
            Format::Ulaw => CLIENT_PT_ULAW,
            Format::Slin => CLIENT_PT_L16,
            Format::Slin16 => CLIENT_PT_L16_WIDEBAND,
            Format::Slin24 => CLIENT_PT_L16_24K,
            Format::Slin48 => CLIENT_PT_L16_48K,
        }
    }
}

/// A stream in the core's terms: the spec, and time and randomness given by the driver.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub spec: StreamSpec,
    /// The token's expiry in the core's time (`spec.expires_at` is the wall clock's).
    pub expires_at: Option<Instant>,
    /// The first 20 ms deadline towards Asterisk; later ones follow on the same grid.
    pub clock_start: Instant,
    /// Randomness for the client-facing RTP stream (SSRC, first sequence and timestamp).
    pub seed: u128,
}

/// From the session to the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    End(EndReason),
    /// A digit received from the call.
    Dtmf(String),
    /// Asterisk does not answer its REST interface (`true`), or answers again (`false`).
    /// A stream whose leg has gone quiet meanwhile ends: Asterisk is dead, not only out of
    /// reach of ARI.
    AsteriskUnreachable(bool),
}

/// From the stream to the session: what needs Asterisk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Play these DTMF digits into the call.
    Dtmf(String),
}

/// Why a stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The client closed or sent `stop` (or an AudioSocket hangup).
    Client,
    /// The call hung up or the conference was destroyed.
    Hangup,
    /// Stopped through the API (`DELETE /v1.0/media_streams/{id}`).
    Stopped,
    Shutdown,
    /// The client sent something that is not what its encapsulation allows.
    Malformed(String),
    TooLarge,
    TokenExpired,
    /// The client let more pile up than the service keeps for it (marks, unread events).
    Overflow(String),
    /// The client read nothing for [`CLIENT_STALL`] while its audio was being dropped.
    ClientStalled,
    /// Asterisk or the service failed.
    Failure(String),
}

impl EndReason {
    pub fn close_code(&self) -> u16 {
        match self {
            EndReason::Client | EndReason::Hangup | EndReason::Stopped => 1000,
            EndReason::Shutdown => 1001,
            EndReason::Malformed(_) => 1007,
            EndReason::TokenExpired | EndReason::Overflow(_) | EndReason::ClientStalled => 1008,
            EndReason::TooLarge => 1009,
            EndReason::Failure(_) => 1011,
        }
    }

    /// The `reason` of the `stopped` event.
    pub fn stopped(&self) -> &'static str {
        match self {
            EndReason::Client => "client",
            EndReason::Hangup => "hangup",
            EndReason::Stopped => "stopped",
            EndReason::Shutdown => "shutdown",
            _ => "error",
        }
    }

    /// A short name for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            EndReason::Client => "client",
            EndReason::Hangup => "hangup",
            EndReason::Stopped => "stopped",
            EndReason::Shutdown => "shutdown",
            EndReason::Malformed(_) => "malformed",
            EndReason::TooLarge => "too_large",
            EndReason::TokenExpired => "token_expired",
            EndReason::Overflow(_) => "overflow",
            EndReason::ClientStalled => "client_stalled",
            EndReason::Failure(_) => "failure",
        }
    }

    /// The close frame's reason text (at most 123 bytes by the protocol).
    pub fn close_text(&self) -> String {
        let text = match self {
            EndReason::Client => "stopped by the client".to_owned(),
            EndReason::Hangup => "the call or conference ended".to_owned(),
            EndReason::Stopped => "stopped through the API".to_owned(),
            EndReason::Shutdown => "the service is shutting down".to_owned(),
            EndReason::Malformed(why) => format!("malformed media: {why}"),
            EndReason::TooLarge => format!("message over {MAX_MESSAGE_BYTES} bytes"),
            EndReason::TokenExpired => "the token expired".to_owned(),
            EndReason::Overflow(why) => format!("policy: {why}"),
            EndReason::ClientStalled => format!(
                "policy: the client read nothing for {} s",
                CLIENT_STALL.as_secs()
            ),
            EndReason::Failure(_) => "internal or Asterisk failure".to_owned(),
        };
        let mut end = text.len().min(120);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text[..end].to_owned()
    }

    /// The last messages of a stream: `stopped` (with `events`), then the close frame.
    pub fn farewell(&self, events: bool) -> impl Iterator<Item = Outbound> {
        let stopped = events.then(|| {
            event(&ServerEvent::Stopped {
                reason: self.stopped(),
            })
        });
        let close = Outbound::Close {
            code: self.close_code(),
            reason: self.close_text(),
        };
        stopped.into_iter().chain(std::iter::once(close))
    }
}

fn event(event: &ServerEvent<'_>) -> Outbound {
    Outbound::Text(event.to_json())
}

/// Counters since the last [`StreamCore::take_stats`]; the driver adds them to the metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub to_client: u64,
    pub to_asterisk: u64,
    /// Client RTP packets dropped: wrong version, payload type or shape.
    pub bad_client_rtp: u64,
    /// Asterisk audio dropped because the client did not read it in time.
    pub client_slow: u64,
    /// DTMF requests dropped because the session had too many waiting.
    pub dtmf_backlog: u64,
    /// Client messages of a protocol the service does not act on (Twilio's other events).
    pub ignored: u64,
    /// The clock's latest wake-up behind its deadline.
    pub worst_lateness: Duration,
}

/// Where the stream is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Running,
    /// Asterisk closed the leg at this moment; waiting for the session to say why.
    LegClosed(Instant),
    Ended(EndReason),
}

/// One stream's state. See the module documentation for how a driver runs it.
#[derive(Debug)]
pub struct StreamCore {
    config: CoreConfig,
    client_format: SampleFormat,
    client_pt: u8,
    phase: Phase,
    pacer: Pacer,
    /// Frames the pacer has made due and the driver has not yet taken.
    leg_frames_due: u32,
    playout: Playout,
    reorder: RtpReorder,
    client_rtp: RtpSender,
    /// The frame most recently handed to the driver for the leg.
    frame: Vec<u8>,
    /// Conversions of client audio are built here, reused.
    scratch: Vec<u8>,
    /// Client-bound audio is built here and split off as shared views (see [`OUT_ARENA_BYTES`]).
    out: BytesMut,
    /// Marks passed by the frame just popped, reused.
    marks: Vec<String>,
    pending_marks: usize,
    /// Client-bound messages that must arrive, in order: events, the AudioSocket UUID frame,
    /// the farewell. Sent before any audio waiting in `audio`.
    events: VecDeque<Queued>,
    /// Since when the client's audio has been dropped unread, the ring full.
    client_stalled_since: Option<Instant>,
    /// When the last audio came from Asterisk.
    last_leg_at: Option<Instant>,
    /// Since when Asterisk has not answered ARI, if it does not.
    asterisk_unreachable: Option<Instant>,
    /// Client-bound audio, oldest first, at most [`CLIENT_RING_FRAMES`].
    audio: VecDeque<Queued>,
    actions: VecDeque<Action>,
    stats: Stats,
    /// Frames the playout queue holds at most (`max_queue_ms`): past it, `xoff`.
    max_frames: usize,
    /// Not reading the client: the queue reached `max_frames` and has not yet fallen below
    /// 80 % of it.
    xoff: bool,
    /// The client asked for queued audio to wait (Asterisk gets silence meanwhile).
    paused: bool,
    /// Client audio was played since the queue last ran empty (`drained` is due when it does).
    played: bool,
    /// Totals since the start, for `status`.
    totals: Totals,
    /// A Twilio Media Streams stream's numbering; `None` for the other encapsulations.
    twilio: Option<TwilioState>,
}

/// What a Twilio stream counts and says of itself.
#[derive(Debug)]
struct TwilioState {
    /// The `sequenceNumber` of the last message sent (`start` is 1).
    seq: u64,
    /// The `chunk` of the last media message received from Asterisk (the first is 1).
    chunk: u64,
    stream_sid: String,
    call_sid: String,
}

impl TwilioState {
    fn next(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// `message` as it leaves, with the next `sequenceNumber`.
    fn render(&mut self, message: TwilioMessage, account_sid: &str) -> String {
        let seq = self.next();
        match message {
            TwilioMessage::Media { chunk, ulaw } => {
                let timestamp = (chunk - 1) * u64::from(PTIME_MS);
                twilio::media(seq, &self.stream_sid, chunk, timestamp, &ulaw)
            }
            TwilioMessage::Mark(name) => twilio::mark(seq, &self.stream_sid, &name),
            TwilioMessage::Dtmf(digit) => twilio::dtmf(seq, &self.stream_sid, &digit),
            TwilioMessage::Stop => {
                let who = twilio::Identity {
                    account_sid,
                    stream_sid: &self.stream_sid,
                    call_sid: &self.call_sid,
                };
                twilio::stop(seq, &who)
            }
        }
    }
}

/// A message waiting for the client.
#[derive(Debug)]
enum Queued {
    Ready(Outbound),
    /// A Twilio message gets its `sequenceNumber` only as it leaves, so that the numbers follow
    /// the order the client receives them in (a mark or a `stop` overtakes waiting audio).
    Twilio(TwilioMessage),
}

/// A Twilio message, but for its `sequenceNumber`.
#[derive(Debug)]
enum TwilioMessage {
    /// 20 ms of the call's audio in μ-law; `chunk` counts from 1 as Asterisk sent them (a
    /// chunk dropped towards a slow client leaves a gap there, not in the sequence).
    Media {
        chunk: u64,
        ulaw: Vec<u8>,
    },
    Mark(String),
    Dtmf(String),
    Stop,
}

/// Frame counts since the stream started.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    to_client: u64,
    to_asterisk: u64,
    /// Asterisk audio a slow client missed, and client RTP packets refused.
    dropped: u64,
}

impl StreamCore {
    /// A running stream: with `events`, `started` is the first message; an AudioSocket stream
    /// then opens with its UUID frame, as Asterisk's own do.
    pub fn new(config: CoreConfig) -> StreamCore {
        // The leg carries the client's rate: audio is never resampled on the way.
        let frame_samples = config.spec.format.frame_samples();
        let frame_bytes = frame_samples * config.spec.leg_format.sample_bytes();
        let prebuffer = config.spec.jitter_ms.div_ceil(PTIME_MS) as usize;
        let capacity = (config.spec.max_queue_ms / PTIME_MS).max(1) as usize;
        let seed = config.seed;
        let client_pt = config.spec.client_payload_type();
        let mut core = StreamCore {
            client_format: config.spec.client_format(),
            client_pt,
            phase: Phase::Running,
            pacer: Pacer::new(config.clock_start, PTIME),
            leg_frames_due: 0,
            playout: Playout::new(
                frame_bytes,
                config.spec.leg_format.silence(),
                prebuffer,
                capacity,
            ),
            reorder: RtpReorder::new(prebuffer.max(1), 2 * frame_samples * 4),
            client_rtp: RtpSender::new(
                seed as u32,
                (seed >> 32) as u16,
                (seed >> 48) as u32,
                client_pt,
            ),
            frame: vec![0; frame_bytes],
            // Grows, once, to the largest message converted.
            scratch: Vec::with_capacity(4 * frame_bytes),
            out: BytesMut::with_capacity(OUT_ARENA_BYTES),
            marks: Vec::new(),
            pending_marks: 0,
            events: VecDeque::new(),
            audio: VecDeque::with_capacity(CLIENT_RING_FRAMES),
            client_stalled_since: None,
            last_leg_at: None,
            asterisk_unreachable: None,
            actions: VecDeque::new(),
            stats: Stats::default(),
            max_frames: capacity,
            xoff: false,
            paused: false,
            played: false,
            totals: Totals::default(),
            twilio: None,
            config,
        };
        if core.config.spec.encapsulation == Encapsulation::Twilio {
            core.start_twilio();
            return core;
        }
        if core.config.spec.events {
            core.send_started();
        }
        if core.config.spec.encapsulation == Encapsulation::Audiosocket {
            let mut frame = Vec::with_capacity(audiosocket::HEADER_LEN + 16);
            audiosocket::encode(
                Kind::Uuid,
                core.config.spec.stream_id.as_bytes(),
                &mut frame,
            );
            core.events
                .push_back(Queued::Ready(Outbound::Binary(Bytes::from(frame))));
        }
        core
    }

    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// Why the stream ended, once it has. Its farewell may still be waiting in
    /// [`StreamCore::poll_to_client`].
    pub fn ended(&self) -> Option<&EndReason> {
        match &self.phase {
            Phase::Ended(reason) => Some(reason),
            _ => None,
        }
    }

    /// Ends the stream (the first reason wins); the farewell is queued for the client.
    pub fn end(&mut self, reason: EndReason) {
        if self.ended().is_some() {
            return;
        }
        let events = if self.twilio.is_some() {
            self.events.push_back(Queued::Twilio(TwilioMessage::Stop));
            false
        } else {
            self.config.spec.events
        };
        self.events
            .extend(reason.farewell(events).map(Queued::Ready));
        self.audio.clear();
        self.phase = Phase::Ended(reason);
    }

    /// Whether the stream runs: not ended, and its leg not closed.
    pub fn is_running(&self) -> bool {
        self.phase == Phase::Running
    }

    /// Whether the driver should read the client now: false from the moment the playout queue
    /// is full until it is below 80 % again (backpressure, `xoff`/`xon`), while the leg is
    /// closing and once the stream has ended.
    pub fn wants_client(&self) -> bool {
        self.phase == Phase::Running && !self.xoff && self.playout.has_room()
    }

    /// When [`StreamCore::handle_timeout`] wants to be called next; `None` once ended.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Running => Some(
                self.config
                    .expires_at
                    .map_or(self.pacer.next_deadline(), |at| {
                        at.min(self.pacer.next_deadline())
                    }),
            ),
            Phase::LegClosed(at) => Some(at + LEG_CLOSED_GRACE),
            Phase::Ended(_) => None,
        }
    }

    /// Time has passed: frames may be due towards Asterisk, the token may have expired, a
    /// closed leg may have waited long enough.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Running => {}
            Phase::LegClosed(at) => {
                if now >= at + LEG_CLOSED_GRACE {
                    self.end(EndReason::Failure("Asterisk closed the media leg".into()));
                }
                return;
            }
            Phase::Ended(_) => return,
        }
        if self.config.expires_at.is_some_and(|at| now >= at) {
            self.end(EndReason::TokenExpired);
            return;
        }
        if self
            .client_stalled_since
            .is_some_and(|since| now >= since + CLIENT_STALL)
        {
            self.end(EndReason::ClientStalled);
            return;
        }
        if let Some(since) = self.asterisk_unreachable {
            let quiet_since = self.last_leg_at.map_or(since, |at| at.max(since));
            if now >= quiet_since + LEG_SILENCE {
                self.end(EndReason::Failure(
                    "Asterisk does not answer and its audio stopped".into(),
                ));
                return;
            }
        }
        self.stats.worst_lateness = self.stats.worst_lateness.max(self.pacer.lateness(now));
        self.leg_frames_due += self.pacer.poll(now);
    }

    /// The next 20 ms frame for Asterisk, in the leg's format, if one is due. Marks passed by
    /// it are reported to the client as it is taken.
    pub fn poll_to_leg(&mut self) -> Option<&[u8]> {
        if self.leg_frames_due == 0 || self.phase != Phase::Running {
            return None;
        }
        self.leg_frames_due -= 1;
        self.stats.to_asterisk += 1;
        self.totals.to_asterisk += 1;
        if self.paused {
            // The queue and its marks wait; Asterisk must not starve meanwhile.
            self.frame.fill(self.config.spec.leg_format.silence());
            return Some(&self.frame);
        }
        self.marks.clear();
        let popped = self.playout.pop_frame(&mut self.frame, &mut self.marks);
        self.pending_marks = self.pending_marks.saturating_sub(self.marks.len());
        self.played |= popped == Popped::Audio;
        // The flow-control events are not part of the Twilio protocol; its marks are.
        let events = self.config.spec.events && self.twilio.is_none();
        for i in 0..self.marks.len() {
            let mark = match self.twilio.as_mut() {
                Some(_) => Queued::Twilio(TwilioMessage::Mark(std::mem::take(&mut self.marks[i]))),
                None if events => Queued::Ready(event(&ServerEvent::Mark {
                    name: &self.marks[i],
                })),
                None => continue,
            };
            self.emit_queued(mark);
        }
        let queued = self.playout.queued_frames();
        if self.xoff && queued * 5 < self.max_frames * 4 {
            self.xoff = false;
            if events {
                self.emit(event(&ServerEvent::Xon {
                    queued_ms: self.queued_ms(),
                }));
            }
        }
        if self.played && queued == 0 {
            self.played = false;
            if events {
                self.emit(event(&ServerEvent::Drained));
            }
        }
        Some(&self.frame)
    }

    /// The next message for the client: events and other messages that must arrive first,
    /// then audio, oldest first.
    pub fn poll_to_client(&mut self) -> Option<Outbound> {
        let queued = self.events.pop_front().or_else(|| self.audio.pop_front())?;
        // The client takes what it is given again.
        self.client_stalled_since = None;
        Some(match queued {
            Queued::Ready(message) => message,
            Queued::Twilio(message) => {
                let t = self
                    .twilio
                    .as_mut()
                    .expect("Twilio messages are queued on Twilio streams only");
                Outbound::Text(t.render(message, &self.config.spec.account_sid))
            }
        })
    }

    /// Whether [`StreamCore::poll_to_client`] has something.
    pub fn has_client_output(&self) -> bool {
        !self.events.is_empty() || !self.audio.is_empty()
    }

    /// The next request for the session.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Counters since the last call.
    pub fn take_stats(&mut self) -> Stats {
        std::mem::take(&mut self.stats)
    }

    /// Whole frames of client audio waiting to be played.
    pub fn queued_frames(&self) -> usize {
        self.playout.queued_frames()
    }

    fn queued_ms(&self) -> u64 {
        self.playout.queued_frames() as u64 * u64::from(PTIME_MS)
    }

    /// One payload of audio from Asterisk, in the leg's format.
    pub fn handle_leg(&mut self, now: Instant, payload: &[u8]) {
        if self.ended().is_some() {
            return;
        }
        self.last_leg_at = Some(now);
        if self.audio.len() == CLIENT_RING_FRAMES {
            self.client_stalled_since.get_or_insert(now);
            self.audio.pop_front();
            self.stats.client_slow += 1;
            self.totals.dropped += 1;
        }
        let message = match self.twilio.as_mut() {
            Some(t) => {
                let mut ulaw = Vec::with_capacity(payload.len());
                convert(
                    self.config.spec.leg_format,
                    SampleFormat::Ulaw,
                    payload,
                    &mut ulaw,
                );
                t.chunk += 1;
                Queued::Twilio(TwilioMessage::Media {
                    chunk: t.chunk,
                    ulaw,
                })
            }
            None => Queued::Ready(Outbound::Binary(self.encapsulate(payload))),
        };
        self.audio.push_back(message);
        self.stats.to_client += 1;
        self.totals.to_client += 1;
    }

    /// Asterisk closed the leg.
    pub fn handle_leg_closed(&mut self, now: Instant) {
        if self.phase == Phase::Running {
            self.phase = Phase::LegClosed(now);
        }
    }

    /// Word from the session.
    pub fn handle_signal(&mut self, now: Instant, signal: Signal) {
        match signal {
            Signal::End(reason) => self.end(reason),
            Signal::AsteriskUnreachable(unreachable) => {
                // The leg's silence is counted from the news, at the earliest.
                self.asterisk_unreachable = unreachable.then_some(now);
            }
            Signal::Dtmf(digit) if self.ended().is_none() => {
                if self.twilio.is_some() {
                    self.emit_queued(Queued::Twilio(TwilioMessage::Dtmf(digit)));
                } else if self.config.spec.events {
                    self.emit(event(&ServerEvent::Dtmf { digit: &digit }));
                }
            }
            Signal::Dtmf(_) => {}
        }
    }

    /// One message from the client.
    pub fn handle_client(&mut self, _now: Instant, message: &Inbound) {
        if self.phase != Phase::Running {
            return;
        }
        let outcome = match message {
            Inbound::Close => Err(EndReason::Client),
            Inbound::TooLarge => Err(EndReason::TooLarge),
            Inbound::Malformed(why) => Err(EndReason::Malformed(why.clone())),
            Inbound::Binary(bytes) if bytes.len() > MAX_MESSAGE_BYTES => Err(EndReason::TooLarge),
            Inbound::Text(text) if text.len() > MAX_MESSAGE_BYTES => Err(EndReason::TooLarge),
            Inbound::Text(text) if self.twilio.is_some() => self.twilio_message(text),
            Inbound::Binary(bytes) => self.client_media(bytes),
            Inbound::Text(text) => self.client_control(text),
        };
        if let Err(reason) = outcome {
            self.end(reason);
            return;
        }
        if !self.xoff && !self.playout.has_room() {
            self.xoff = true;
            if self.config.spec.events && self.twilio.is_none() {
                self.emit(event(&ServerEvent::Xoff {
                    queued_ms: self.queued_ms(),
                }));
            }
        }
    }

    /// Queues a message that must arrive; a client so far behind that the queue is full ends
    /// the stream.
    fn emit(&mut self, message: Outbound) {
        self.emit_queued(Queued::Ready(message));
    }

    fn emit_queued(&mut self, message: Queued) {
        if self.events.len() >= MAX_PENDING_EVENTS {
            self.end(EndReason::Overflow(
                "the client is not reading its events".into(),
            ));
            return;
        }
        self.events.push_back(message);
    }

    /// A Twilio stream opens with `connected` and `start`.
    fn start_twilio(&mut self) {
        let spec = &self.config.spec;
        let call_sid = match &spec.resource {
            Resource::Call(id) => id.as_str().to_owned(),
            Resource::Conference(id) => id.as_str().to_owned(),
        };
        let mut state = TwilioState {
            seq: 0,
            chunk: 0,
            stream_sid: spec.stream_id.to_string(),
            call_sid,
        };
        let parameters = spec
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
            .collect();
        let seq = state.next();
        let who = twilio::Identity {
            account_sid: &spec.account_sid,
            stream_sid: &state.stream_sid,
            call_sid: &state.call_sid,
        };
        let start = twilio::start(seq, &who, &parameters);
        self.events
            .push_back(Queued::Ready(Outbound::Text(twilio::connected())));
        self.events.push_back(Queued::Ready(Outbound::Text(start)));
        self.twilio = Some(state);
    }

    /// A Twilio client's message: audio, a mark, a clear; other events are ignored.
    fn twilio_message(&mut self, text: &str) -> Result<(), EndReason> {
        match twilio::parse(text).map_err(|e| EndReason::Malformed(e.to_string()))? {
            twilio::ClientMessage::Media(ulaw) => self.play(SampleFormat::Ulaw, &ulaw),
            twilio::ClientMessage::Mark(name) => self.mark(name)?,
            twilio::ClientMessage::Clear => self.clear_queue(),
            twilio::ClientMessage::Other(_) => self.stats.ignored += 1,
        }
        Ok(())
    }

    fn send_started(&mut self) {
        let (call_id, conference_id) = match &self.config.spec.resource {
            Resource::Call(id) => (Some(id.as_str()), None),
            Resource::Conference(id) => (None, Some(id.as_str())),
        };
        let started = event(&ServerEvent::Started {
            stream_id: self.config.spec.stream_id,
            call_id,
            conference_id,
            encapsulation: self.config.spec.encapsulation.as_str(),
            format: self.config.spec.format.as_str(),
            sample_rate: self.config.spec.format.sample_rate(),
            ptime_ms: PTIME_MS,
            payload_type: (self.config.spec.encapsulation == Encapsulation::Rtp)
                .then_some(self.client_pt),
        });
        self.emit(started);
    }

    /// A binary message from the client, per its encapsulation.
    fn client_media(&mut self, bytes: &[u8]) -> Result<(), EndReason> {
        let leg = self.config.spec.leg_format;
        match self.config.spec.encapsulation {
            Encapsulation::Rtp => match rtp::parse(bytes) {
                Ok(packet) if packet.header.payload_type == self.client_pt => {
                    self.reorder.push(packet.header.sequence, packet.payload);
                    let (playout, scratch, from) =
                        (&mut self.playout, &mut self.scratch, self.client_format);
                    self.reorder.drain(|payload| {
                        scratch.clear();
                        convert(from, leg, payload, scratch);
                        playout.push(scratch);
                    });
                }
                // Wrong version, payload type or shape: dropped and counted, not fatal.
                _ => {
                    self.stats.bad_client_rtp += 1;
                    self.totals.dropped += 1;
                }
            },
            Encapsulation::Sln => {
                if self.client_format != SampleFormat::Ulaw && !bytes.len().is_multiple_of(2) {
                    return Err(EndReason::Malformed(
                        "slin audio must be whole 16-bit samples".into(),
                    ));
                }
                self.play(self.client_format, bytes);
            }
            Encapsulation::Twilio => {
                return Err(EndReason::Malformed(
                    "Twilio Media Streams messages are text".into(),
                ));
            }
            Encapsulation::Audiosocket => {
                let mut rest = bytes;
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
                        Kind::Audio { rate_hz }
                            if rate_hz == self.config.spec.format.sample_rate() =>
                        {
                            self.play(SampleFormat::SlinLe, frame.payload);
                        }
                        Kind::Dtmf => {
                            let digit = audiosocket::dtmf_of(&frame).ok_or_else(|| {
                                EndReason::Malformed("a DTMF frame that is not a digit".into())
                            })?;
                            self.request(Action::Dtmf(digit.to_string()));
                        }
                        Kind::Hangup => return Err(EndReason::Client),
                        Kind::Uuid => {}
                        Kind::Audio { rate_hz } => {
                            return Err(EndReason::Malformed(format!(
                                "audio at {rate_hz} Hz: this stream is {} Hz",
                                self.config.spec.format.sample_rate()
                            )));
                        }
                        Kind::Error => {
                            return Err(EndReason::Malformed("an AudioSocket error frame".into()));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Queues client audio in `from` for playing, in the leg's format.
    fn play(&mut self, from: SampleFormat, audio: &[u8]) {
        self.scratch.clear();
        convert(from, self.config.spec.leg_format, audio, &mut self.scratch);
        self.playout.push(&self.scratch);
    }

    fn client_control(&mut self, text: &str) -> Result<(), EndReason> {
        let control = parse_control(text)
            .map_err(|e| EndReason::Malformed(format!("control message: {e}")))?;
        match control {
            ClientControl::Clear => {
                self.clear_queue();
                if self.config.spec.events {
                    self.emit(event(&ServerEvent::Cleared));
                }
            }
            ClientControl::Mark { name } => self.mark(name)?,
            ClientControl::Dtmf { digits } => self.request(Action::Dtmf(digits)),
            ClientControl::Stop => return Err(EndReason::Client),
            ClientControl::Pause => self.paused = true,
            ClientControl::Resume => self.paused = false,
            // Answered with or without events: the client asked.
            ClientControl::Status => self.emit(event(&ServerEvent::Status {
                queued_ms: self.queued_ms(),
                paused: self.paused,
                frames_to_client: self.totals.to_client,
                frames_to_asterisk: self.totals.to_asterisk,
                frames_dropped: self.totals.dropped,
            })),
        }
        Ok(())
    }

    /// A client's mark, placed after the audio queued so far.
    fn mark(&mut self, name: String) -> Result<(), EndReason> {
        self.pending_marks += 1;
        if self.pending_marks > MAX_PENDING_MARKS {
            return Err(EndReason::Overflow("too many marks pending".into()));
        }
        self.playout.push_mark(name);
        Ok(())
    }

    /// Drops the queued client audio: it did not finish playing, so no `drained` follows.
    fn clear_queue(&mut self) {
        self.playout.clear();
        self.played = false;
    }

    fn request(&mut self, action: Action) {
        if self.actions.len() >= MAX_PENDING_ACTIONS {
            self.stats.dtmf_backlog += 1;
            return;
        }
        self.actions.push_back(action);
    }

    /// Wraps one frame from Asterisk for the client, in the shared output buffer.
    fn encapsulate(&mut self, payload: &[u8]) -> Bytes {
        let (from, to) = (self.config.spec.leg_format, self.client_format);
        let header = match self.config.spec.encapsulation {
            Encapsulation::Sln | Encapsulation::Twilio => 0,
            Encapsulation::Rtp => rtp::HEADER_LEN,
            Encapsulation::Audiosocket => audiosocket::HEADER_LEN,
        };
        // Room for the header and the payload at up to twice its size (μ-law to linear).
        let need = header + 2 * payload.len();
        if self.out.capacity() < need {
            // Takes back the whole buffer when every message cut from it has been sent.
            self.out.reserve(OUT_ARENA_BYTES.max(need));
        }
        self.scratch.clear();
        convert(from, to, payload, &mut self.scratch);
        let body = &self.scratch[..];
        match self.config.spec.encapsulation {
            Encapsulation::Sln | Encapsulation::Twilio => {}
            Encapsulation::Rtp => {
                let samples = (body.len() / to.sample_bytes()) as u32;
                let mut head = [0u8; rtp::HEADER_LEN];
                rtp::write(&self.client_rtp.next_header(samples), &[], &mut head);
                self.out.extend_from_slice(&head);
            }
            Encapsulation::Audiosocket => {
                let len = body.len().min(usize::from(u16::MAX)) as u16;
                let rate_hz = self.config.spec.format.sample_rate();
                self.out
                    .extend_from_slice(&[Kind::Audio { rate_hz }.to_byte()]);
                self.out.extend_from_slice(&len.to_be_bytes());
            }
        }
        self.out.extend_from_slice(body);
        self.out.split().freeze()
    }
}

#[cfg(test)]
mod tests;
