//! What moves audio between Asterisk and clients:
//! - [`core`]: each stream's decisions, as a pure state machine;
//! - [`worker`]: media workers, the driver for streams whose leg is RTP (most of them): one
//!   thread serves many streams on one UDP socket and one 20 ms timer;
//! - [`stream`]: the driver that gives a stream a task of its own, for legs with a socket of
//!   their own (AudioSocket, [`audiosocket_leg`]);
//! - [`driver`]: what the two drivers share (the session's side of a stream, metrics cadence,
//!   the farewell's time);
//! - [`client`]: the client's WebSocket connection, taken over after the upgrade.
//!
//! Written against [`Inbound`]/[`Outbound`] and plain sockets, so it knows nothing of axum,
//! and nothing of ARI either: what needs Asterisk (DTMF into the call) is asked of the session
//! through [`stream::Action`].

pub mod audiosocket_leg;
pub mod client;
pub mod core;
pub mod dial;
pub mod driver;
pub mod stream;
pub mod worker;

use bytes::Bytes;
pub use tungstenite::Utf8Bytes;

/// A message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    Binary(Bytes),
    Text(Utf8Bytes),
    /// The client closed, or its connection ended.
    Close,
    /// The message was larger than the WebSocket layer accepts.
    TooLarge,
    /// The WebSocket layer refused what the client sent (a text frame that is not UTF-8).
    Malformed(String),
}

/// A message to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    Binary(Bytes),
    Text(Utf8Bytes),
    Close { code: u16, reason: String },
}

/// The Asterisk-facing side of a stream, and so which driver runs it.
#[derive(Debug)]
pub enum MediaLeg {
    /// An RTP leg served by a media worker, on the worker's shared socket.
    Shared {
        worker: usize,
        /// Asterisk's side of the externalMedia channel.
        peer: std::net::SocketAddr,
        /// What Asterisk expects for the channel's format.
        payload_type: u8,
    },
    /// A leg with a socket of its own (AudioSocket), driven by a task of its own.
    Own(stream::Leg),
}

/// Runs a stream until it ends, with the driver its leg calls for; returns why. The client
/// has been sent `stopped` (with `events`) and a close frame by then, as far as it was reading.
pub async fn run(
    spec: stream::StreamSpec,
    leg: MediaLeg,
    client: client::ClientConn,
    channels: stream::Channels,
    workers: &worker::Workers,
    cancel: tokio_util::sync::CancellationToken,
    metrics: std::sync::Arc<crate::telemetry::Metrics>,
) -> core::EndReason {
    match leg {
        MediaLeg::Shared {
            worker,
            peer,
            payload_type,
        } => {
            let stream = worker::WorkerStream {
                spec,
                peer,
                leg_payload_type: payload_type,
                client,
                channels,
            };
            workers.run(worker, stream).await
        }
        MediaLeg::Own(leg) => {
            let (client_rx, client_tx) = client.into_async().await;
            stream::run(spec, leg, client_rx, client_tx, channels, cancel, metrics).await
        }
    }
}

/// Ends a stream that never started: `stopped` (with `events`) and a close frame.
pub async fn say_goodbye(client: client::ClientConn, events: bool, reason: &core::EndReason) {
    let (_, client_tx) = client.into_async().await;
    stream::say_goodbye(client_tx, events, reason).await;
}
