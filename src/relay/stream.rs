//! The driver of one media stream: runs its [`StreamCore`] between a client WebSocket (as
//! `Stream<Inbound>` / `Sink<Outbound>`) and its Asterisk-facing leg until something ends it.
//!
//! Owns the IO and nothing else: the leg socket, the client's stream and sink, the one timer
//! the core asks for, and the session's channels. Every decision (what to send, when, what to
//! drop, why to end) is the core's; the driver feeds it inputs with the time they arrived and
//! carries out what it polls. One task, one `select!`: no other future shares the stream's
//! state.

use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio_util::sync::CancellationToken;

use super::audiosocket_leg::AudioSocketLeg;
pub use super::core::{
    Action, CLIENT_PT_L16, CLIENT_PT_L16_WIDEBAND, CLIENT_PT_ULAW, CLIENT_RING_FRAMES,
    CLIENT_STALL, EndReason, MAX_MESSAGE_BYTES, PTIME, Signal, StreamSpec,
};
use super::core::{CoreConfig, StreamCore};
pub use super::driver::Channels;
use super::driver::{DRAIN, SessionLink};
use super::{Inbound, Outbound};
use crate::telemetry::Metrics;

/// How long one write to Asterisk may take: a peer that stops reading ends the stream (1011)
/// instead of stalling its clock.
const LEG_WRITE_TIMEOUT: Duration = Duration::from_millis(200);

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

/// The core's configuration for `spec`: the wall-clock expiry turned into the core's time
/// (`now`), and the clock's first deadline at `clock_start`.
pub fn core_config(spec: StreamSpec, now: Instant, clock_start: Instant) -> CoreConfig {
    let expires_at = spec.expires_at.map(|at| {
        let left = at.duration_since(SystemTime::now()).unwrap_or_default();
        now.checked_add(left)
            .unwrap_or(now + Duration::from_secs(86_400 * 365))
    });
    CoreConfig {
        spec,
        expires_at,
        clock_start,
        seed: uuid::Uuid::new_v4().as_u128(),
    }
}

/// The Asterisk-facing side of a stream with a socket of its own.
#[derive(Debug)]
pub enum Leg {
    AudioSocket(AudioSocketLeg),
}

impl Leg {
    async fn recv(&mut self) -> std::io::Result<&[u8]> {
        match self {
            Leg::AudioSocket(leg) => leg.recv().await,
        }
    }

    async fn send(&mut self, frame: &[u8]) -> std::io::Result<()> {
        let send = async {
            match self {
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
            Leg::AudioSocket(leg) => std::mem::take(&mut leg.malformed),
        }
    }
}

/// Runs the stream until it ends; returns why. The client has been sent `stopped` (with
/// `events`) and a close frame by then, as far as it was reading.
pub async fn run<S, K>(
    spec: StreamSpec,
    mut leg: Leg,
    mut client_rx: S,
    mut client_tx: K,
    channels: Channels,
    cancel: CancellationToken,
    metrics: Arc<Metrics>,
) -> EndReason
where
    S: Stream<Item = Inbound> + Unpin,
    K: Sink<Outbound> + Unpin,
{
    let now = Instant::now();
    let mut core = StreamCore::new(core_config(spec, now, shared_grid(now)));
    let mut session = SessionLink::new(channels, metrics, now);
    // One timer, re-armed only when the core's deadline moves.
    let mut armed = core.poll_timeout();
    let timer = sleep_until_opt(armed.map(tokio::time::Instant::from_std));
    tokio::pin!(timer);
    let mut client_gone = false;

    while core.ended().is_none() {
        let deadline = core.poll_timeout();
        if deadline != armed {
            armed = deadline;
            timer.set(sleep_until_opt(
                deadline.map(tokio::time::Instant::from_std),
            ));
        }
        let (wants_client, leg_open) = (core.wants_client(), core.is_running());
        tokio::select! {
            _ = cancel.cancelled() => core.end(EndReason::Shutdown),
            signal = session.signals().recv() => session.signal(&mut core, Instant::now(), signal),
            _ = &mut timer => {
                let now = Instant::now();
                core.handle_timeout(now);
                while let Some(frame) = core.poll_to_leg() {
                    if let Err(e) = leg.send(frame).await {
                        core.end(EndReason::Failure(format!("sending to Asterisk: {e}")));
                    }
                }
                session.bad_leg_packets(leg.take_drops());
                session.report_due(&mut core, now);
            }
            received = leg.recv(), if leg_open => match received {
                Ok(payload) => core.handle_leg(Instant::now(), payload),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    core.handle_leg_closed();
                }
                Err(e) => core.end(EndReason::Failure(format!("receiving from Asterisk: {e}"))),
            },
            message = client_rx.next(), if wants_client => {
                core.handle_client(Instant::now(), &message.unwrap_or(Inbound::Close));
            }
            written = write_client(&mut client_tx, &mut core), if !client_gone => {
                // The client's connection is gone: the stream ends as if it had closed.
                if written.is_err() {
                    client_gone = true;
                    core.end(EndReason::Client);
                }
            }
        }
        session.give_actions(&mut core);
        // A closed leg waits for the session's word on it: the question must arrive.
        while session.waiting() {
            session.room().await;
            session.give_actions(&mut core);
        }
    }
    session.bad_leg_packets(leg.take_drops());
    session.report(&mut core);
    if !client_gone {
        // The farewell waits for room, briefly: a client that does not read gets the close
        // frame as far as TCP lets it. A client that closed first takes no more messages, but
        // its close frame is still to be answered: the WebSocket library holds the answer until
        // the sink is flushed or closed, so the sink is closed whatever the writes gave.
        let _ = tokio::time::timeout(DRAIN, async {
            while core.has_client_output() {
                if write_client(&mut client_tx, &mut core).await.is_err() {
                    break;
                }
            }
            let _ = client_tx.close().await;
        })
        .await;
    }
    core.ended().cloned().unwrap_or(EndReason::Client)
}

/// Hands the client as much of the core's output as its sink takes, then flushes. Pending
/// while there is nothing to write (the next loop turn builds it anew) or the sink is full
/// (the core's ring then drops the oldest audio); ready with `Err` when the client is gone,
/// with `Ok` once the close frame has been written.
async fn write_client<K>(sink: &mut K, core: &mut StreamCore) -> Result<(), ()>
where
    K: Sink<Outbound> + Unpin,
{
    futures::future::poll_fn(|cx| {
        loop {
            if !core.has_client_output() {
                return match sink.poll_flush_unpin(cx) {
                    Poll::Ready(Err(_)) => Poll::Ready(Err(())),
                    Poll::Ready(Ok(())) if core.ended().is_some() => Poll::Ready(Ok(())),
                    _ => Poll::Pending,
                };
            }
            match sink.poll_ready_unpin(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(Err(())),
                Poll::Pending => return Poll::Pending,
            }
            if let Some(message) = core.poll_to_client()
                && sink.start_send_unpin(message).is_err()
            {
                return Poll::Ready(Err(()));
            }
        }
    })
    .await
}

/// Ends a stream that never started: `stopped` (with `events`) and a close frame.
pub async fn say_goodbye<K>(mut client_tx: K, events: bool, reason: &EndReason)
where
    K: Sink<Outbound> + Unpin,
{
    let goodbye = async {
        for message in reason.farewell(events) {
            client_tx.send(message).await.ok()?;
        }
        client_tx.close().await.ok()
    };
    let _ = tokio::time::timeout(DRAIN, goodbye).await;
}

/// Sleeps until `at`, or for ever when there is no `at` (a `select!` branch that never fires).
pub async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
