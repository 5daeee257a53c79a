//! What moves audio: the Asterisk-facing sockets ([`rtp_leg`], [`port_pool`],
//! [`audiosocket_leg`]), each stream's decisions as a pure state machine ([`core`]), and the
//! driver ([`stream`]) that runs one core between a leg and a client's WebSocket, written
//! against `Stream`/`Sink` of [`Inbound`]/[`Outbound`] so that it knows nothing of axum.
//!
//! Knows nothing of ARI either: what needs Asterisk (DTMF into the call) is asked of the
//! session through [`stream::Action`].

pub mod audiosocket_leg;
pub mod core;
pub mod port_pool;
pub mod rtp_leg;
pub mod stream;

use bytes::Bytes;

/// A message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    Binary(Bytes),
    Text(String),
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
    Text(String),
    Close { code: u16, reason: String },
}
