//! The service's view of Asterisk's calls and conferences, and the operations on them.
//!
//! [`Registry`] is fed by ARI events and reconciled from ARI's REST view on every (re)connect.
//! It owns no socket: the event task in `ari::events` does.

mod attachment;
mod calls;
mod flows;
mod registry;
mod streams;

pub use calls::{Call, Caller, Conference};
pub use flows::{ActionOutcome, Flows};
pub use registry::{CallStart, Gone, Notice, Registry, SessionError};
pub use streams::{
    Admission, ExternalMediaStatus, ExternalMediaView, MediaStreamView, StreamDirection,
    StreamRequest, StreamStatus, Streams,
};
