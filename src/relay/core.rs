//! One media stream's decisions, as a state machine without IO: the sans-IO core that the
//! driver in [`super::stream`] runs between a client WebSocket and an Asterisk-facing leg.
//!
//! Owns everything a stream decides: the playout queue and its 20 ms pacing towards Asterisk,
//! marks, `clear`, pause, events, which of Asterisk's audio is dropped when the client reads
//! too slowly, the token's expiry, why and how the stream ends (close code and reason), and its
//! counters. What the client's messages mean and how the stream's messages are worded belong
//! to the client's protocol, one file each under [`dialect`]: the core never asks which
//! protocol it serves.
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

pub mod dialect;

use super::{Inbound, Outbound};
pub use crate::domain::PTIME_MS;
use crate::domain::{Encapsulation, Format, Resource};
use crate::media::pacer::Pacer;
use crate::media::playout::{Playout, Popped};
use crate::media::transcode::SampleFormat;
pub use dialect::rtp::{
    CLIENT_PT_L16, CLIENT_PT_L16_24K, CLIENT_PT_L16_48K, CLIENT_PT_L16_WIDEBAND, CLIENT_PT_ULAW,
};
use dialect::{Arena, Command, Dialect, Event, Inputs, LegFrame, Message, Status, Vocabulary};

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
/// Marks a client may have waiting at once; more ends the stream (1008).
pub const MAX_PENDING_MARKS: usize = 1024;
/// Events that may wait for a client that does not read; more ends the stream (1008).
pub const MAX_PENDING_EVENTS: usize = 2048;
/// DTMF requests that may wait for the session; more are dropped and counted.
const MAX_PENDING_ACTIONS: usize = 16;
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

/// From the stream to the session: what needs Asterisk, or the session's word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Play these DTMF digits into the call.
    Dtmf(String),
    /// Asterisk closed the leg. Usually a hangup, which Asterisk's events report a moment
    /// later: the session decides which, and says so with [`Signal::End`]. Asked once; never
    /// dropped.
    LegClosed,
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
        let stopped = events.then(|| dialect::server_event(&Event::Stopped(self.stopped())));
        let close = Outbound::Close {
            code: self.close_code(),
            reason: self.close_text(),
        };
        stopped.into_iter().chain(std::iter::once(close))
    }
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
    /// Asterisk closed the leg; waiting for the session to say why.
    LegClosed,
    Ended(EndReason),
}

/// One stream's state. See the module documentation for how a driver runs it.
#[derive(Debug)]
pub struct StreamCore {
    /// How the client speaks: decodes its messages, words the stream's.
    dialect: Box<dyn Dialect>,
    /// Client-bound messages are written here (see [`Arena`]).
    arena: Arena,
    /// Everything else, blind to the protocol.
    state: State,
}

/// A stream's decisions, whatever its client's protocol.
#[derive(Debug)]
struct State {
    config: CoreConfig,
    phase: Phase,
    pacer: Pacer,
    /// Frames the pacer has made due and the driver has not yet taken.
    leg_frames_due: u32,
    playout: Playout,
    /// The frame most recently handed to the driver for the leg.
    frame: Vec<u8>,
    /// Conversions of client audio are built here, reused.
    scratch: Vec<u8>,
    /// Marks passed by the frame just popped, reused.
    marks: Vec<String>,
    pending_marks: usize,
    /// Client-bound messages that must arrive, in order: the opening messages, events, the
    /// farewell. Sent before any audio waiting in `audio`.
    events: VecDeque<Queued>,
    /// Since when the client's audio has been dropped unread, the ring full.
    client_stalled_since: Option<Instant>,
    /// When the last audio came from Asterisk.
    last_leg_at: Option<Instant>,
    /// Since when Asterisk has not answered ARI, if it does not.
    asterisk_unreachable: Option<Instant>,
    /// Asterisk's audio waiting for the client.
    audio: AudioRing,
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
    /// Which events the client's protocol has words for, on this stream.
    vocabulary: Vocabulary,
}

/// A message waiting for the client.
#[derive(Debug)]
enum Queued {
    Ready(Outbound),
    /// Worded by the dialect only as it leaves: Twilio numbers its messages in the order the
    /// client receives them (a mark or a `stop` overtakes waiting audio).
    Event(Event),
}

/// Asterisk's audio waiting for a client, oldest first, at most [`CLIENT_RING_FRAMES`]
/// frames, in buffers that are reused: a frame is converted in as it arrives and worded by
/// the dialect as it leaves.
#[derive(Debug)]
struct AudioRing {
    /// The leg's layout, and the one the dialect words audio in: each frame is converted once,
    /// as it arrives.
    from: SampleFormat,
    to: SampleFormat,
    frames: VecDeque<LegFrame>,
    /// Buffers of frames that have left, for the next ones.
    spare: Vec<Vec<u8>>,
    /// Frames the leg has sent so far.
    arrived: u64,
    /// Samples the leg has sent so far.
    position: u64,
}

impl AudioRing {
    fn new(from: SampleFormat, to: SampleFormat, frames: usize) -> AudioRing {
        AudioRing {
            from,
            to,
            frames: VecDeque::with_capacity(frames),
            spare: Vec::with_capacity(frames),
            arrived: 0,
            position: 0,
        }
    }

    /// Takes a frame of the leg's audio; `false` when the ring was full and the oldest frame
    /// was dropped for it.
    fn push(&mut self, payload: &[u8]) -> bool {
        let samples = (payload.len() / self.from.sample_bytes()) as u64;
        let mut kept = true;
        if self.frames.len() == CLIENT_RING_FRAMES
            && let Some(oldest) = self.frames.pop_front()
        {
            self.spare.push(oldest.audio);
            kept = false;
        }
        let mut audio = self.spare.pop().unwrap_or_default();
        audio.clear();
        crate::media::transcode::convert(self.from, self.to, payload, &mut audio);
        self.arrived += 1;
        self.frames.push_back(LegFrame {
            chunk: self.arrived,
            position: self.position,
            samples,
            audio,
        });
        self.position += samples;
        kept
    }

    fn pop(&mut self) -> Option<LegFrame> {
        self.frames.pop_front()
    }

    /// A buffer back from a frame that left.
    fn recycle(&mut self, audio: Vec<u8>) {
        self.spare.push(audio);
    }

    fn clear(&mut self) {
        while let Some(frame) = self.frames.pop_front() {
            self.spare.push(frame.audio);
        }
    }

    fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
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
    /// A running stream, opening with its protocol's first messages (`started` with events;
    /// the UUID frame of an AudioSocket stream; Twilio's `connected` and `start`).
    pub fn new(config: CoreConfig) -> StreamCore {
        let mut dialect = dialect::for_stream(&config.spec, config.seed);
        let opening = dialect.opening(&config.spec);
        let vocabulary = dialect.vocabulary();
        let layout = dialect.audio_layout();
        let mut state = State::new(config, vocabulary, layout);
        state.events.extend(opening.into_iter().map(Queued::Ready));
        StreamCore {
            dialect,
            arena: Arena::default(),
            state,
        }
    }

    pub fn config(&self) -> &CoreConfig {
        &self.state.config
    }

    /// Why the stream ended, once it has. Its farewell may still be waiting in
    /// [`StreamCore::poll_to_client`].
    pub fn ended(&self) -> Option<&EndReason> {
        self.state.ended()
    }

    /// Ends the stream (the first reason wins); the farewell is queued for the client.
    pub fn end(&mut self, reason: EndReason) {
        self.state.end(reason);
    }

    /// Whether the stream runs: not ended, and its leg not closed.
    pub fn is_running(&self) -> bool {
        self.state.phase == Phase::Running
    }

    /// Whether the driver should read the client now: false from the moment the playout queue
    /// is full until it is below 80 % again (backpressure, `xoff`/`xon`), while the leg is
    /// closing and once the stream has ended.
    pub fn wants_client(&self) -> bool {
        let state = &self.state;
        state.phase == Phase::Running && !state.xoff && state.playout.has_room()
    }

    /// When [`StreamCore::handle_timeout`] wants to be called next; `None` once ended, and
    /// while a closed leg waits for the session.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.state.poll_timeout()
    }

    /// Time has passed: frames may be due towards Asterisk, the token may have expired.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.state.handle_timeout(now);
    }

    /// The next 20 ms frame for Asterisk, in the leg's format, if one is due. Marks passed by
    /// it are reported to the client as it is taken.
    pub fn poll_to_leg(&mut self) -> Option<&[u8]> {
        self.state.poll_to_leg()
    }

    /// The next message for the client: events and other messages that must arrive first,
    /// then audio, oldest first.
    pub fn poll_to_client(&mut self) -> Option<Outbound> {
        let state = &mut self.state;
        while let Some(queued) = state.events.pop_front() {
            // The client takes what it is given again.
            state.client_stalled_since = None;
            match queued {
                Queued::Ready(message) => return Some(message),
                Queued::Event(event) => {
                    if let Some(message) = self.dialect.event(&event) {
                        return Some(message);
                    }
                }
            }
        }
        let frame = state.audio.pop()?;
        state.client_stalled_since = None;
        let message = self.dialect.audio(&frame, &mut self.arena);
        state.audio.recycle(frame.audio);
        Some(message)
    }

    /// Whether [`StreamCore::poll_to_client`] has something.
    pub fn has_client_output(&self) -> bool {
        !self.state.events.is_empty() || !self.state.audio.is_empty()
    }

    /// The next request for the session.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.state.actions.pop_front()
    }

    /// Counters since the last call.
    pub fn take_stats(&mut self) -> Stats {
        std::mem::take(&mut self.state.stats)
    }

    /// Whole frames of client audio waiting to be played.
    pub fn queued_frames(&self) -> usize {
        self.state.playout.queued_frames()
    }

    /// One payload of audio from Asterisk, in the leg's format.
    pub fn handle_leg(&mut self, now: Instant, payload: &[u8]) {
        self.state.handle_leg(now, payload);
    }

    /// Asterisk closed the leg: the session is asked why ([`Action::LegClosed`]), and the
    /// stream waits for its word.
    pub fn handle_leg_closed(&mut self) {
        if self.state.phase == Phase::Running {
            self.state.phase = Phase::LegClosed;
            self.state.actions.push_back(Action::LegClosed);
        }
    }

    /// Word from the session.
    pub fn handle_signal(&mut self, now: Instant, signal: Signal) {
        self.state.handle_signal(now, signal);
    }

    /// One message from the client.
    pub fn handle_client(&mut self, _now: Instant, message: &Inbound) {
        let state = &mut self.state;
        if state.phase != Phase::Running {
            return;
        }
        let outcome = match message {
            Inbound::Close => Err(EndReason::Client),
            Inbound::TooLarge => Err(EndReason::TooLarge),
            Inbound::Malformed(why) => Err(EndReason::Malformed(why.clone())),
            Inbound::Binary(bytes) if bytes.len() > MAX_MESSAGE_BYTES => Err(EndReason::TooLarge),
            Inbound::Text(text) if text.len() > MAX_MESSAGE_BYTES => Err(EndReason::TooLarge),
            Inbound::Binary(bytes) => self.dialect.decode(Message::Binary(bytes), state),
            Inbound::Text(text) => self.dialect.decode(Message::Text(text), state),
        };
        if let Err(reason) = outcome {
            state.end(reason);
            return;
        }
        if !state.xoff && !state.playout.has_room() {
            state.xoff = true;
            let queued_ms = state.queued_ms();
            state.emit(Event::Xoff { queued_ms });
        }
    }
}

impl Inputs for State {
    fn play(&mut self, format: SampleFormat, audio: &[u8]) {
        self.scratch.clear();
        crate::media::transcode::convert(
            format,
            self.config.spec.leg_format,
            audio,
            &mut self.scratch,
        );
        self.playout.push(&self.scratch);
    }

    fn command(&mut self, command: Command) -> Result<(), EndReason> {
        match command {
            Command::Clear => {
                self.clear_queue();
                self.emit(Event::Cleared);
            }
            Command::Mark(name) => {
                self.pending_marks += 1;
                if self.pending_marks > MAX_PENDING_MARKS {
                    return Err(EndReason::Overflow("too many marks pending".into()));
                }
                self.playout.push_mark(name);
            }
            Command::Dtmf(digits) => self.request(Action::Dtmf(digits)),
            Command::Stop => return Err(EndReason::Client),
            Command::Pause => self.paused = true,
            Command::Resume => self.paused = false,
            Command::Status => self.emit(Event::Status(Status {
                queued_ms: self.queued_ms(),
                paused: self.paused,
                frames_to_client: self.totals.to_client,
                frames_to_asterisk: self.totals.to_asterisk,
                frames_dropped: self.totals.dropped,
            })),
        }
        Ok(())
    }

    fn refused(&mut self) {
        self.stats.bad_client_rtp += 1;
        self.totals.dropped += 1;
    }

    fn ignored(&mut self) {
        self.stats.ignored += 1;
    }
}

impl State {
    fn new(config: CoreConfig, vocabulary: Vocabulary, layout: SampleFormat) -> State {
        // The leg carries the client's rate: audio is never resampled on the way.
        let frame_samples = config.spec.format.frame_samples();
        let frame_bytes = frame_samples * config.spec.leg_format.sample_bytes();
        let prebuffer = config.spec.jitter_ms.div_ceil(PTIME_MS) as usize;
        let capacity = (config.spec.max_queue_ms / PTIME_MS).max(1) as usize;
        State {
            phase: Phase::Running,
            pacer: Pacer::new(config.clock_start, PTIME),
            leg_frames_due: 0,
            playout: Playout::new(
                frame_bytes,
                config.spec.leg_format.silence(),
                prebuffer,
                capacity,
            ),
            frame: vec![0; frame_bytes],
            // Grows, once, to the largest message converted.
            scratch: Vec::with_capacity(4 * frame_bytes),
            marks: Vec::new(),
            pending_marks: 0,
            events: VecDeque::new(),
            audio: AudioRing::new(config.spec.leg_format, layout, CLIENT_RING_FRAMES),
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
            vocabulary,
            config,
        }
    }

    fn ended(&self) -> Option<&EndReason> {
        match &self.phase {
            Phase::Ended(reason) => Some(reason),
            _ => None,
        }
    }

    fn end(&mut self, reason: EndReason) {
        if self.ended().is_some() {
            return;
        }
        let stopped = Event::Stopped(reason.stopped());
        if self.vocabulary.speaks(&stopped) {
            self.events.push_back(Queued::Event(stopped));
        }
        self.events.push_back(Queued::Ready(Outbound::Close {
            code: reason.close_code(),
            reason: reason.close_text(),
        }));
        self.audio.clear();
        self.phase = Phase::Ended(reason);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Running => Some(
                self.config
                    .expires_at
                    .map_or(self.pacer.next_deadline(), |at| {
                        at.min(self.pacer.next_deadline())
                    }),
            ),
            Phase::LegClosed | Phase::Ended(_) => None,
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.phase != Phase::Running {
            return;
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

    fn poll_to_leg(&mut self) -> Option<&[u8]> {
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
        for i in 0..self.marks.len() {
            let mark = Event::Mark(std::mem::take(&mut self.marks[i]));
            self.emit(mark);
        }
        let queued = self.playout.queued_frames();
        if self.xoff && queued * 5 < self.max_frames * 4 {
            self.xoff = false;
            let queued_ms = self.queued_ms();
            self.emit(Event::Xon { queued_ms });
        }
        if self.played && queued == 0 {
            self.played = false;
            self.emit(Event::Drained);
        }
        Some(&self.frame)
    }

    fn queued_ms(&self) -> u64 {
        self.playout.queued_frames() as u64 * u64::from(PTIME_MS)
    }

    fn handle_leg(&mut self, now: Instant, payload: &[u8]) {
        if self.ended().is_some() {
            return;
        }
        self.last_leg_at = Some(now);
        if !self.audio.push(payload) {
            self.client_stalled_since.get_or_insert(now);
            self.stats.client_slow += 1;
            self.totals.dropped += 1;
        }
        self.stats.to_client += 1;
        self.totals.to_client += 1;
    }

    fn handle_signal(&mut self, now: Instant, signal: Signal) {
        match signal {
            Signal::End(reason) => self.end(reason),
            Signal::AsteriskUnreachable(unreachable) => {
                // The leg's silence is counted from the news, at the earliest.
                self.asterisk_unreachable = unreachable.then_some(now);
            }
            Signal::Dtmf(digit) if self.ended().is_none() => self.emit(Event::Dtmf(digit)),
            Signal::Dtmf(_) => {}
        }
    }

    /// Queues an event the client's protocol has words for; a client so far behind that the
    /// queue is full ends the stream.
    fn emit(&mut self, event: Event) {
        if !self.vocabulary.speaks(&event) {
            return;
        }
        if self.events.len() >= MAX_PENDING_EVENTS {
            self.end(EndReason::Overflow(
                "the client is not reading its events".into(),
            ));
            return;
        }
        self.events.push_back(Queued::Event(event));
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
}

#[cfg(test)]
mod tests;
