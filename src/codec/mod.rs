//! Wire formats, pure: parse borrowed, encode into the caller's buffer, never panic on input.
//! No tokio, no sockets, no clock.
