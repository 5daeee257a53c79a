//! Media timing and buffering, pure: time comes in as an argument. No tokio, no sockets, no
//! clock reads.

pub mod pacer;
pub mod playout;
pub mod rtp_rx;
pub mod transcode;
