//! Wire formats, pure: parse borrowed, encode into the caller's buffer, never panic on input.
//! No tokio, no sockets, no clock.

pub mod audiosocket;
pub mod control;
pub mod g711;
pub mod http;
pub mod rtp;
pub mod twilio;
