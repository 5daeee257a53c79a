//! Media timing and buffering, pure: time comes in as an argument. No tokio, no sockets, no
//! clock reads.
