//! What the two drivers of a stream core share, written once: the media worker (`worker.rs`),
//! which serves many streams from one thread, and the task of a stream whose leg has a socket
//! of its own (`stream.rs`). Both hold a [`SessionLink`] — the session's signals in, the core's
//! requests out, the stream's counters reported every [`REPORT_EVERY`] — and give a stream's
//! farewell [`DRAIN`] to reach its client, however each writes it.
//!
//! It decides nothing about the stream: the core does. It must not read the clock (time comes
//! in) nor own a socket.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::core::{Action, EndReason, Signal, Stats, StreamCore};
use crate::telemetry::{DirectionLabels, Metrics, ReasonLabels};

/// How long the last messages (`stopped`, the close frame) may take to reach the client once
/// the stream has ended.
pub const DRAIN: Duration = Duration::from_millis(500);
/// How often a stream adds its counters to the shared metrics: no shared write per frame.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);

/// The session's side of a running stream.
#[derive(Debug)]
pub struct Channels {
    pub signals: mpsc::UnboundedReceiver<Signal>,
    /// Bounded: a client flooding DTMF requests has them dropped (counted), not queued forever.
    pub actions: mpsc::Sender<Action>,
}

/// A stream's link to its session and to the shared metrics, as its driver holds it.
#[derive(Debug)]
pub struct SessionLink {
    channels: Channels,
    reporter: Reporter,
    /// A request that must reach the session and found no room: a closed leg, which the stream
    /// waits on. Handed over before anything else.
    waiting: Option<Action>,
    next_report: Instant,
}

impl SessionLink {
    pub fn new(channels: Channels, metrics: Arc<Metrics>, now: Instant) -> SessionLink {
        SessionLink {
            channels,
            reporter: Reporter::new(metrics),
            waiting: None,
            next_report: now + REPORT_EVERY,
        }
    }

    /// The session's signals, for a driver that waits on them.
    pub fn signals(&mut self) -> &mut mpsc::UnboundedReceiver<Signal> {
        &mut self.channels.signals
    }

    /// One signal, as received: `None` when the session is gone, which ends the stream.
    pub fn signal(&mut self, core: &mut StreamCore, now: Instant, signal: Option<Signal>) {
        let signal = signal.unwrap_or_else(|| Signal::End(session_ended()));
        core.handle_signal(now, signal);
    }

    /// Every signal waiting now, for a driver that polls.
    pub fn take_signals(&mut self, core: &mut StreamCore, now: Instant) {
        loop {
            match self.channels.signals.try_recv() {
                Ok(signal) => self.signal(core, now, Some(signal)),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.signal(core, now, None);
                    break;
                }
            }
        }
    }

    /// Hands the core's requests to the session without waiting. Digits past the channel's
    /// room are dropped and counted; a closed leg waits (see [`SessionLink::waiting`]).
    pub fn give_actions(&mut self, core: &mut StreamCore) {
        if let Some(action) = self.waiting.take() {
            self.send(action);
        }
        while let Some(action) = core.poll_action() {
            self.send(action);
        }
    }

    /// Whether a request must still reach the session; a driver that can wait awaits
    /// [`SessionLink::room`] then gives again.
    pub fn waiting(&self) -> bool {
        self.waiting.is_some()
    }

    /// Until the session has room for one more request.
    pub async fn room(&self) {
        if let Ok(permit) = self.channels.actions.reserve().await {
            drop(permit);
        }
    }

    fn send(&mut self, action: Action) {
        match self.channels.actions.try_send(action) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(Action::LegClosed)) => {
                self.waiting = Some(Action::LegClosed);
            }
            // A session that is gone has its answer already: the stream ends.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(Action::Dtmf(_))) => {
                self.reporter.dtmf_backlog += 1;
            }
        }
    }

    /// Packets on the leg that were not Asterisk's audio.
    pub fn bad_leg_packets(&mut self, n: u64) {
        self.reporter.bad_leg_packets += n;
    }

    /// Reports the counters when [`REPORT_EVERY`] has passed since the last report.
    pub fn report_due(&mut self, core: &mut StreamCore, now: Instant) {
        if now >= self.next_report {
            self.next_report = now + REPORT_EVERY;
            self.reporter.report(core);
        }
    }

    /// Reports the counters now (at the stream's end).
    pub fn report(&mut self, core: &mut StreamCore) {
        self.reporter.report(core);
    }
}

/// Why a stream ends whose session went away without a word.
fn session_ended() -> EndReason {
    EndReason::Failure("the session ended".into())
}

/// Adds a stream's counters to the shared metrics, and keeps its share of the queue gauge.
#[derive(Debug)]
struct Reporter {
    metrics: Arc<Metrics>,
    queue_reported: i64,
    /// DTMF requests the session did not take.
    dtmf_backlog: u64,
    /// Packets on the leg that were not Asterisk's audio.
    bad_leg_packets: u64,
}

impl Reporter {
    fn new(metrics: Arc<Metrics>) -> Reporter {
        Reporter {
            metrics,
            queue_reported: 0,
            dtmf_backlog: 0,
            bad_leg_packets: 0,
        }
    }

    fn report(&mut self, core: &mut StreamCore) {
        let Stats {
            to_client,
            to_asterisk,
            bad_client_rtp,
            client_slow,
            dtmf_backlog,
            ignored,
            worst_lateness,
        } = core.take_stats();
        let m = &*self.metrics;
        m.pacer_lateness.observe(worst_lateness.as_secs_f64());
        let frames = |direction| {
            m.stream_frames
                .get_or_create(&DirectionLabels { direction })
        };
        frames("to_client").inc_by(to_client);
        frames("to_asterisk").inc_by(to_asterisk);
        let drops = |reason, n| {
            if n > 0 {
                m.stream_drops
                    .get_or_create(&ReasonLabels { reason })
                    .inc_by(n);
            }
        };
        drops(
            "bad_rtp",
            bad_client_rtp + std::mem::take(&mut self.bad_leg_packets),
        );
        drops("client_slow", client_slow);
        drops("ignored_event", ignored);
        drops(
            "dtmf_backlog",
            dtmf_backlog + std::mem::take(&mut self.dtmf_backlog),
        );
        let queued = core.queued_frames() as i64;
        m.stream_queue_frames.inc_by(queued - self.queue_reported);
        self.queue_reported = queued;
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.metrics.stream_queue_frames.dec_by(self.queue_reported);
    }
}
