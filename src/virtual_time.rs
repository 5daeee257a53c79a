//! The virtual clock of the sans-IO cores' tests: one real instant read once, and every other
//! instant an offset from it that only the test moves.

use std::time::{Duration, Instant};

/// The origin of virtual time.
pub fn t0() -> Instant {
    static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *T0.get_or_init(Instant::now)
}

/// `ms` milliseconds after [`t0`].
pub fn at(ms: u64) -> Instant {
    t0() + Duration::from_millis(ms)
}

/// Milliseconds from [`t0`] to `instant`.
pub fn ms(instant: Instant) -> u64 {
    instant.saturating_duration_since(t0()).as_millis() as u64
}
