//! One media stream's engine: joins a client WebSocket (as `Stream<Inbound>` / `Sink<Outbound>`)
//! to its Asterisk-facing leg, both ways, until something ends it.
//!
//! Two futures run in the stream's one task:
//! - the main loop owns the leg socket, reads the client, and keeps the 20 ms clock towards
//!   Asterisk (pre-buffer, silence when the queue is empty);
//! - the writer owns the client sink.
//!
//! Overflow policy: audio to the client goes through a ring of [`CLIENT_RING_FRAMES`] frames
//! that drops the oldest when the client reads too slowly (counted); client audio to Asterisk is
//! queued up to `max_queue_ms`, past which the main loop stops reading the client, so TCP pushes
//! back and nothing the client sent is dropped.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::audiosocket_leg::AudioSocketLeg;
use super::rtp_leg::RtpLeg;
use super::{Inbound, Outbound};
use crate::codec::audiosocket::{self, Kind};
use crate::codec::control::{ClientControl, parse_control};
use crate::codec::rtp::{self, RtpSender};
use crate::domain::{Encapsulation, FRAME_SAMPLES, Format, PTIME_MS, Resource, SAMPLE_RATE};
use crate::media::pacer::Pacer;
use crate::media::playout::Playout;
use crate::media::rtp_rx::RtpReorder;
use crate::media::transcode::{SampleFormat, convert};
use crate::telemetry::{DirectionLabels, Metrics, ReasonLabels};

/// Frames of Asterisk audio that may wait for a slow client before the oldest are dropped.
pub const CLIENT_RING_FRAMES: usize = 25;
/// The largest client message taken; a larger one ends the stream with 1009.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Payload types on the client's RTP: PCMU, and a dynamic one for L16 (RFC 3551).
pub const CLIENT_PT_ULAW: u8 = 0;
pub const CLIENT_PT_L16: u8 = 96;
/// Marks a client may have waiting at once; more ends the stream (1008).
const MAX_PENDING_MARKS: usize = 1024;
/// Events that may wait for a client that does not read; more ends the stream (1008).
const MAX_PENDING_EVENTS: usize = 2048;
/// How long one write to Asterisk may take: a peer that stops reading ends the stream (1011)
/// instead of stalling its clock.
const LEG_WRITE_TIMEOUT: Duration = Duration::from_millis(200);
const PTIME: Duration = Duration::from_millis(PTIME_MS as u64);

/// The first 20 ms boundary of the process-wide grid at or after `now`. Every stream's clock
/// ticks on the same grid, so the runtime wakes once per 20 ms for all of them instead of once
/// per stream at scattered moments (each wake-up of an idle runtime is a context switch).
fn shared_grid(now: Instant) -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| now);
    let since = now.duration_since(epoch).as_nanos();
    let period = PTIME.as_nanos();
    let ticks = since.div_ceil(period);
    epoch + Duration::from_nanos(u64::try_from(ticks * period).unwrap_or(u64::MAX))
}

/// How long the writer may take to deliver the last messages once the stream has ended.
const DRAIN: Duration = Duration::from_millis(500);

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
    /// When the client's token expires: the stream ends with 1008 then.
    pub expires_at: Option<SystemTime>,
}

impl StreamSpec {
    /// The layout of audio in the client's messages.
    pub fn client_format(&self) -> SampleFormat {
        match (self.encapsulation, self.format) {
            (_, Format::Ulaw) => SampleFormat::Ulaw,
            (Encapsulation::Rtp, Format::Slin) => SampleFormat::SlinBe,
            (_, Format::Slin) => SampleFormat::SlinLe,
        }
    }
}

/// The Asterisk-facing side.
#[derive(Debug)]
pub enum Leg {
    Rtp(RtpLeg),
    AudioSocket(AudioSocketLeg),
}

impl Leg {
    async fn recv(&mut self) -> std::io::Result<&[u8]> {
        match self {
            Leg::Rtp(leg) => leg.recv().await,
            Leg::AudioSocket(leg) => leg.recv().await,
        }
    }

    async fn send(&mut self, frame: &[u8]) -> std::io::Result<()> {
        let send = async {
            match self {
                Leg::Rtp(leg) => leg.send(frame, FRAME_SAMPLES as u32).await,
                Leg::AudioSocket(leg) => leg.send(frame).await,
            }
        };
        match tokio::time::timeout(LEG_WRITE_TIMEOUT, send).await {
            Ok(sent) => sent,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "Asterisk is not reading",
            )),
        }
    }

    /// Packets dropped since the last call: not from Asterisk, or not parseable.
    fn take_drops(&mut self) -> u64 {
        match self {
            Leg::Rtp(leg) => std::mem::take(&mut leg.malformed) + std::mem::take(&mut leg.foreign),
            Leg::AudioSocket(leg) => std::mem::take(&mut leg.malformed),
        }
    }
}

/// From the session to the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    End(EndReason),
    /// A digit received from the call.
    Dtmf(String),
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
    Shutdown,
    /// The client sent something that is not what its encapsulation allows.
    Malformed(String),
    TooLarge,
    TokenExpired,
    /// The client let more pile up than the service keeps for it (marks, unread events).
    Overflow(String),
    /// Asterisk or the service failed.
    Failure(String),
}

impl EndReason {
    pub fn close_code(&self) -> u16 {
        match self {
            EndReason::Client | EndReason::Hangup => 1000,
            EndReason::Shutdown => 1001,
            EndReason::Malformed(_) => 1007,
            EndReason::TokenExpired | EndReason::Overflow(_) => 1008,
            EndReason::TooLarge => 1009,
            EndReason::Failure(_) => 1011,
        }
    }

    /// The `reason` of the `stopped` event.
    pub fn stopped(&self) -> &'static str {
        match self {
            EndReason::Client => "client",
            EndReason::Hangup => "hangup",
            EndReason::Shutdown => "shutdown",
            _ => "error",
        }
    }

    /// The close frame's reason text (at most 123 bytes by the protocol).
    fn close_text(&self) -> String {
        let text = match self {
            EndReason::Client => "stopped by the client".to_owned(),
            EndReason::Hangup => "the call or conference ended".to_owned(),
            EndReason::Shutdown => "the service is shutting down".to_owned(),
            EndReason::Malformed(why) => format!("malformed media: {why}"),
            EndReason::TooLarge => format!("message over {MAX_MESSAGE_BYTES} bytes"),
            EndReason::TokenExpired => "the token expired".to_owned(),
            EndReason::Overflow(why) => format!("policy: {why}"),
            EndReason::Failure(_) => "internal or Asterisk failure".to_owned(),
        };
        let mut end = text.len().min(120);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text[..end].to_owned()
    }
}

/// Everything the stream's loops share.
#[derive(Debug)]
pub struct Channels {
    pub signals: mpsc::UnboundedReceiver<Signal>,
    /// Bounded: a client flooding DTMF requests has them dropped (counted), not queued forever.
    pub actions: mpsc::Sender<Action>,
}

/// Runs the stream until it ends; returns why. The client has been sent `stopped` (with
/// `events`) and a close frame by then, as far as it was reading.
pub async fn run<S, K>(
    spec: StreamSpec,
    leg: Leg,
    client_rx: S,
    client_tx: K,
    channels: Channels,
    cancel: CancellationToken,
    metrics: Arc<Metrics>,
) -> EndReason
where
    S: Stream<Item = Inbound> + Unpin,
    K: Sink<Outbound> + Unpin,
{
    let (audio_tx, audio_rx) = broadcast::channel::<Bytes>(CLIENT_RING_FRAMES);
    let (ctl_tx, ctl_rx) = mpsc::channel::<Outbound>(MAX_PENDING_EVENTS);
    let done = CancellationToken::new();

    let writer = async {
        tokio::select! {
            _ = write_loop(client_tx, ctl_rx, audio_rx, &metrics) => {}
            _ = async { done.cancelled().await; tokio::time::sleep(DRAIN).await } => {}
        }
    };
    let main = async {
        let mut engine = Engine::new(spec, leg, audio_tx, ctl_tx.clone(), channels, &metrics);
        let reason = engine.run(client_rx, &cancel).await;
        engine.flush_metrics();
        // The last words wait for room (briefly: a client that does not read gets the close
        // frame as far as TCP lets it).
        let last = async {
            if engine.spec.events {
                let stopped = event(serde_json::json!({
                    "type": "stopped",
                    "reason": reason.stopped(),
                }));
                ctl_tx.send(stopped).await.ok()?;
            }
            let close = Outbound::Close {
                code: reason.close_code(),
                reason: reason.close_text(),
            };
            ctl_tx.send(close).await.ok()
        };
        let _ = tokio::time::timeout(DRAIN, last).await;
        drop(engine);
        done.cancel();
        reason
    };
    let (reason, ()) = tokio::join!(main, writer);
    reason
}

/// Ends a stream that never started: `stopped` (with `events`) and a close frame.
pub async fn say_goodbye<K>(mut client_tx: K, events: bool, reason: &EndReason)
where
    K: Sink<Outbound> + Unpin,
{
    let goodbye = async {
        if events {
            let stopped = serde_json::json!({ "type": "stopped", "reason": reason.stopped() });
            client_tx.send(event(stopped)).await.ok()?;
        }
        let close = Outbound::Close {
            code: reason.close_code(),
            reason: reason.close_text(),
        };
        client_tx.send(close).await.ok()?;
        client_tx.close().await.ok()
    };
    let _ = tokio::time::timeout(DRAIN, goodbye).await;
}

fn event(value: serde_json::Value) -> Outbound {
    Outbound::Text(value.to_string())
}

/// Delivers control messages first (they are few and some must precede audio), then audio.
async fn write_loop<K>(
    mut sink: K,
    mut ctl: mpsc::Receiver<Outbound>,
    mut audio: broadcast::Receiver<Bytes>,
    metrics: &Metrics,
) where
    K: Sink<Outbound> + Unpin,
{
    let mut audio_open = true;
    loop {
        tokio::select! {
            biased;
            message = ctl.recv() => match message {
                Some(close @ Outbound::Close { .. }) => {
                    let _ = sink.send(close).await;
                    let _ = sink.close().await;
                    return;
                }
                Some(message) => {
                    if sink.send(message).await.is_err() {
                        return;
                    }
                }
                None => return,
            },
            frame = audio.recv(), if audio_open => match frame {
                Ok(frame) => {
                    if sink.send(Outbound::Binary(frame)).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    metrics
                        .stream_drops
                        .get_or_create(&ReasonLabels { reason: "client_slow" })
                        .inc_by(n);
                }
                Err(broadcast::error::RecvError::Closed) => audio_open = false,
            },
        }
    }
}

/// The main loop's state.
struct Engine<'m> {
    spec: StreamSpec,
    leg: Leg,
    client_format: SampleFormat,
    audio_tx: broadcast::Sender<Bytes>,
    ctl_tx: mpsc::Sender<Outbound>,
    channels: Channels,
    playout: Playout,
    reorder: RtpReorder,
    client_rtp: RtpSender,
    /// One frame towards Asterisk, reused.
    frame: Vec<u8>,
    /// Conversions and client messages are built here, reused.
    scratch: Vec<u8>,
    marks: Vec<String>,
    metrics: &'m Metrics,
    /// Counted locally and added to the shared metrics once a second: no shared write per frame.
    to_client: u64,
    to_asterisk: u64,
    dropped_rtp: u64,
    queue_reported: i64,
    /// The clock's worst wake-up since the last flush: one histogram sample a second.
    worst_lateness: Duration,
    pending_marks: usize,
    /// Set when the client left more events unread than the queue holds.
    overflowed: bool,
}

impl<'m> Engine<'m> {
    fn new(
        spec: StreamSpec,
        leg: Leg,
        audio_tx: broadcast::Sender<Bytes>,
        ctl_tx: mpsc::Sender<Outbound>,
        channels: Channels,
        metrics: &'m Metrics,
    ) -> Engine<'m> {
        let frame_bytes = FRAME_SAMPLES * spec.leg_format.sample_bytes();
        let prebuffer = spec.jitter_ms.div_ceil(PTIME_MS) as usize;
        let capacity = (spec.max_queue_ms / PTIME_MS).max(1) as usize;
        let client_format = spec.client_format();
        let pt = if spec.format == Format::Ulaw {
            CLIENT_PT_ULAW
        } else {
            CLIENT_PT_L16
        };
        let random = uuid::Uuid::new_v4().as_u128();
        Engine {
            playout: Playout::new(frame_bytes, spec.leg_format.silence(), prebuffer, capacity),
            reorder: RtpReorder::new(prebuffer.max(1), 2 * FRAME_SAMPLES * 4),
            client_rtp: RtpSender::new(
                random as u32,
                (random >> 32) as u16,
                (random >> 48) as u32,
                pt,
            ),
            frame: vec![0; frame_bytes],
            scratch: Vec::with_capacity(MAX_MESSAGE_BYTES * 2),
            marks: Vec::new(),
            client_format,
            spec,
            leg,
            audio_tx,
            ctl_tx,
            channels,
            metrics,
            to_client: 0,
            to_asterisk: 0,
            dropped_rtp: 0,
            queue_reported: 0,
            worst_lateness: Duration::ZERO,
            pending_marks: 0,
            overflowed: false,
        }
    }

    async fn run<S>(&mut self, mut client_rx: S, cancel: &CancellationToken) -> EndReason
    where
        S: Stream<Item = Inbound> + Unpin,
    {
        if self.spec.events {
            self.send_started();
        }
        if self.spec.encapsulation == Encapsulation::Audiosocket {
            // AudioSocket streams open with the UUID frame, as Asterisk's own do.
            let mut frame = Vec::with_capacity(audiosocket::HEADER_LEN + 16);
            audiosocket::encode(Kind::Uuid, self.spec.stream_id.as_bytes(), &mut frame);
            self.emit(Outbound::Binary(Bytes::from(frame)));
        }
        let expiry = self.spec.expires_at.map(|at| {
            let left = at.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::time::Instant::now() + left
        });
        let mut pacer = Pacer::new(shared_grid(Instant::now()), PTIME);
        let mut metrics_due = tokio::time::Instant::now() + Duration::from_secs(1);
        // One timer for the clock and one for the token, re-armed rather than re-created.
        let tick = tokio::time::sleep_until(tokio::time::Instant::from_std(pacer.next_deadline()));
        tokio::pin!(tick);
        let expire = sleep_until_opt(expiry);
        tokio::pin!(expire);
        loop {
            if self.overflowed {
                return EndReason::Overflow("the client is not reading its events".into());
            }
            tokio::select! {
                _ = cancel.cancelled() => return EndReason::Shutdown,
                signal = self.channels.signals.recv() => match signal {
                    Some(Signal::End(reason)) => return reason,
                    Some(Signal::Dtmf(digit)) => {
                        if self.spec.events {
                            self.emit(event(serde_json::json!({
                                "type": "dtmf", "digit": digit,
                            })));
                        }
                    }
                    None => return EndReason::Failure("the session ended".into()),
                },
                _ = &mut tick => {
                    let now = Instant::now();
                    self.worst_lateness = self.worst_lateness.max(pacer.lateness(now));
                    for _ in 0..pacer.poll(now) {
                        if let Err(e) = self.send_frame().await {
                            return EndReason::Failure(format!("sending to Asterisk: {e}"));
                        }
                    }
                    tick.as_mut().reset(tokio::time::Instant::from_std(pacer.next_deadline()));
                    if tokio::time::Instant::now() >= metrics_due {
                        metrics_due += Duration::from_secs(1);
                        self.flush_metrics();
                    }
                }
                received = self.leg.recv() => match received {
                    Ok(payload) => {
                        let message = encapsulate(
                            self.spec.encapsulation,
                            self.spec.leg_format,
                            self.client_format,
                            payload,
                            &mut self.client_rtp,
                            &mut self.scratch,
                        );
                        self.to_client += 1;
                        // Err only when the writer is gone: the client is leaving anyway.
                        let _ = self.audio_tx.send(message);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                        return self.leg_closed().await;
                    }
                    Err(e) => return EndReason::Failure(format!("receiving from Asterisk: {e}")),
                },
                message = client_rx.next(), if self.playout.has_room() => {
                    let outcome = match message {
                        None | Some(Inbound::Close) => Err(EndReason::Client),
                        Some(Inbound::TooLarge) => Err(EndReason::TooLarge),
                        Some(Inbound::Malformed(why)) => Err(EndReason::Malformed(why)),
                        Some(Inbound::Binary(bytes)) if bytes.len() > MAX_MESSAGE_BYTES => {
                            Err(EndReason::TooLarge)
                        }
                        Some(Inbound::Text(text)) if text.len() > MAX_MESSAGE_BYTES => {
                            Err(EndReason::TooLarge)
                        }
                        Some(Inbound::Binary(bytes)) => self.client_media(&bytes),
                        Some(Inbound::Text(text)) => self.client_control(&text),
                    };
                    if let Err(reason) = outcome {
                        return reason;
                    }
                }
                _ = &mut expire => return EndReason::TokenExpired,
            }
        }
    }

    /// Asterisk closed the leg: usually because the call ended, which the session learns from
    /// events a moment later. Wait briefly for that word before calling it a failure.
    async fn leg_closed(&mut self) -> EndReason {
        let grace = tokio::time::sleep(Duration::from_millis(300));
        tokio::pin!(grace);
        loop {
            tokio::select! {
                _ = &mut grace => return EndReason::Failure("Asterisk closed the media leg".into()),
                signal = self.channels.signals.recv() => match signal {
                    Some(Signal::End(reason)) => return reason,
                    Some(Signal::Dtmf(_)) => {}
                    None => return EndReason::Failure("the session ended".into()),
                },
            }
        }
    }

    /// Queues a message for the writer; a client so far behind that the queue is full is
    /// flagged, and the main loop ends its stream.
    fn emit(&mut self, message: Outbound) {
        if self.ctl_tx.try_send(message).is_err() {
            self.overflowed = true;
        }
    }

    fn send_started(&mut self) {
        let mut started = serde_json::json!({
            "type": "started",
            "stream_id": self.spec.stream_id,
            "encapsulation": self.spec.encapsulation.as_str(),
            "format": self.spec.format.as_str(),
            "sample_rate": SAMPLE_RATE,
            "ptime_ms": PTIME_MS,
        });
        match &self.spec.resource {
            Resource::Call(id) => started["call_id"] = id.as_str().into(),
            Resource::Conference(id) => started["conference_id"] = id.as_str().into(),
        }
        self.emit(event(started));
    }

    async fn send_frame(&mut self) -> std::io::Result<()> {
        self.playout.pop_frame(&mut self.frame, &mut self.marks);
        self.leg.send(&self.frame).await?;
        self.to_asterisk += 1;
        self.pending_marks = self.pending_marks.saturating_sub(self.marks.len());
        let marks = std::mem::take(&mut self.marks);
        if self.spec.events {
            for name in &marks {
                self.emit(event(serde_json::json!({ "type": "mark", "name": name })));
            }
        }
        self.marks = marks;
        self.marks.clear();
        Ok(())
    }

    /// A binary message from the client, per its encapsulation.
    fn client_media(&mut self, bytes: &[u8]) -> Result<(), EndReason> {
        let leg = self.spec.leg_format;
        match self.spec.encapsulation {
            Encapsulation::Rtp => {
                let want_pt = if self.spec.format == Format::Ulaw {
                    CLIENT_PT_ULAW
                } else {
                    CLIENT_PT_L16
                };
                match rtp::parse(bytes) {
                    Ok(packet) if packet.header.payload_type == want_pt => {
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
                    _ => self.dropped_rtp += 1,
                }
            }
            Encapsulation::Sln => {
                if self.client_format != SampleFormat::Ulaw && !bytes.len().is_multiple_of(2) {
                    return Err(EndReason::Malformed(
                        "slin audio must be whole 16-bit samples".into(),
                    ));
                }
                self.scratch.clear();
                convert(self.client_format, leg, bytes, &mut self.scratch);
                self.playout.push(&self.scratch);
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
                        Kind::Audio { rate_hz: 8000 } => {
                            self.scratch.clear();
                            convert(SampleFormat::SlinLe, leg, frame.payload, &mut self.scratch);
                            self.playout.push(&self.scratch);
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
                                "audio at {rate_hz} Hz: this stream is 8000 Hz"
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

    fn client_control(&mut self, text: &str) -> Result<(), EndReason> {
        let control = parse_control(text)
            .map_err(|e| EndReason::Malformed(format!("control message: {e}")))?;
        match control {
            ClientControl::Clear => {
                self.playout.clear();
                if self.spec.events {
                    self.emit(event(serde_json::json!({ "type": "cleared" })));
                }
            }
            ClientControl::Mark { name } => {
                self.pending_marks += 1;
                if self.pending_marks > MAX_PENDING_MARKS {
                    return Err(EndReason::Overflow("too many marks pending".into()));
                }
                self.playout.push_mark(name);
            }
            ClientControl::Dtmf { digits } => self.request(Action::Dtmf(digits)),
            ClientControl::Stop => return Err(EndReason::Client),
        }
        Ok(())
    }

    fn request(&self, action: Action) {
        if self.channels.actions.try_send(action).is_err() {
            self.metrics
                .stream_drops
                .get_or_create(&ReasonLabels {
                    reason: "dtmf_backlog",
                })
                .inc();
        }
    }

    fn flush_metrics(&mut self) {
        self.metrics
            .pacer_lateness
            .observe(std::mem::take(&mut self.worst_lateness).as_secs_f64());
        let frames = &self.metrics.stream_frames;
        frames
            .get_or_create(&DirectionLabels {
                direction: "to_client",
            })
            .inc_by(std::mem::take(&mut self.to_client));
        frames
            .get_or_create(&DirectionLabels {
                direction: "to_asterisk",
            })
            .inc_by(std::mem::take(&mut self.to_asterisk));
        let mut dropped = std::mem::take(&mut self.dropped_rtp);
        dropped += self.leg.take_drops();
        if dropped > 0 {
            self.metrics
                .stream_drops
                .get_or_create(&ReasonLabels { reason: "bad_rtp" })
                .inc_by(dropped);
        }
        let queued = self.playout.queued_frames() as i64;
        self.metrics
            .stream_queue_frames
            .inc_by(queued - self.queue_reported);
        self.queue_reported = queued;
    }
}

impl Drop for Engine<'_> {
    fn drop(&mut self) {
        self.metrics.stream_queue_frames.dec_by(self.queue_reported);
    }
}

/// Sleeps until `at`, or for ever when there is no `at` (a `select!` branch that never fires).
pub async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Wraps one frame from Asterisk for the client.
fn encapsulate(
    encapsulation: Encapsulation,
    from: SampleFormat,
    to: SampleFormat,
    payload: &[u8],
    client_rtp: &mut RtpSender,
    scratch: &mut Vec<u8>,
) -> Bytes {
    scratch.clear();
    match encapsulation {
        Encapsulation::Sln => convert(from, to, payload, scratch),
        Encapsulation::Rtp => {
            scratch.resize(rtp::HEADER_LEN, 0);
            convert(from, to, payload, scratch);
            let samples = (scratch.len() - rtp::HEADER_LEN) / to.sample_bytes();
            let header = client_rtp.next_header(samples as u32);
            rtp::write(&header, &[], &mut scratch[..rtp::HEADER_LEN]);
        }
        Encapsulation::Audiosocket => {
            scratch.resize(audiosocket::HEADER_LEN, 0);
            convert(from, to, payload, scratch);
            let len = (scratch.len() - audiosocket::HEADER_LEN).min(usize::from(u16::MAX)) as u16;
            scratch[0] = Kind::Audio { rate_hz: 8000 }.to_byte();
            scratch[1..3].copy_from_slice(&len.to_be_bytes());
        }
    }
    Bytes::copy_from_slice(scratch)
}
