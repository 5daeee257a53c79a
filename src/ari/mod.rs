//! Asterisk's REST Interface: typed resources and events ([`model`]), the REST client
//! ([`rest`]) and the reconnecting event socket ([`events`]). Knows nothing of streams or HTTP
//! clients of the service.

pub mod events;
pub mod model;
pub mod rest;

pub use model::{Bridge, Channel, Event};
pub use rest::{AriClient, AriError, AriErrorKind};
