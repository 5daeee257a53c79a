//! The 20 ms send clock for audio towards Asterisk, on absolute deadlines.
//!
//! Owns the schedule (`start + k * period`), the catch-up policy after a late wake-up and the
//! count of frames given up during stalls. It must not sleep, read the clock or send anything:
//! the caller sleeps until [`Pacer::next_deadline`], passes the time it actually woke at to
//! [`Pacer::poll`], and sends as many frames as it is told. Asterisk does not re-time what it
//! receives (SPEC §8), so drift here would be heard as drift in the call.

use std::time::{Duration, Instant};

/// Frames sent at once after a late wake-up unless [`Pacer::with_max_burst`] says otherwise:
/// one frame of catch-up absorbs ordinary scheduler jitter without flooding Asterisk.
const DEFAULT_MAX_BURST: u32 = 2;

/// A periodic schedule anchored at a fixed start.
#[derive(Debug, Clone)]
pub struct Pacer {
    /// Never zero (see [`Pacer::new`]): the catch-up arithmetic divides by it.
    period: Duration,
    /// The earliest deadline not yet served. It only ever moves by whole periods, in exact
    /// integer nanoseconds, so it stays on the grid `start + k * period`: the caller's
    /// lateness never shifts the schedule and rounding never accumulates.
    next: Instant,
    /// Most frames one `poll` returns; at least 1 so a stalled caller always makes progress.
    max_burst: u32,
    /// Frames given up by stalls, for a counter: the audio they would have carried stays
    /// queued and is played later, so this measures added delay, not lost audio.
    skipped: u64,
}

impl Pacer {
    /// First deadline at `start`; then `start + k * period` for k = 1, 2, ... (absolute: no
    /// drift, whatever the caller's lateness). A zero `period` is taken as 1 ns, so the pacer
    /// stays well defined instead of dividing by zero.
    pub fn new(start: Instant, period: Duration) -> Pacer {
        Pacer {
            period: period.max(Duration::from_nanos(1)),
            next: start,
            max_burst: DEFAULT_MAX_BURST,
            skipped: 0,
        }
    }

    /// The most frames one [`Pacer::poll`] may return (default 2). Zero is taken as 1: a pacer
    /// that never sends would starve Asterisk.
    pub fn with_max_burst(mut self, max_burst: u32) -> Pacer {
        self.max_burst = max_burst.max(1);
        self
    }

    /// When the caller should wake next.
    pub fn next_deadline(&self) -> Instant {
        self.next
    }

    /// Called when the caller wakes at `now`: how many frames to send now (0 if woken early),
    /// and advances the deadline past `now`.
    ///
    /// Catch-up policy. Let `n` be the number of deadlines due (those at or before `now`):
    /// - `n <= max_burst` (late by less than `max_burst` periods): all `n` frames are sent, so
    ///   ordinary jitter costs nothing and the long-run rate is exact;
    /// - `n > max_burst` (a stall): `max_burst` frames are sent and the other `n - max_burst`
    ///   are counted in [`Pacer::skipped`]. Asterisk does not jitter-buffer this leg (SPEC
    ///   §8), so a long burst would not be smoothed out, only delivered too fast.
    ///
    /// Either way the next deadline is the first grid point after `now` (re-anchoring on the
    /// same grid), so the schedule never slides.
    pub fn poll(&mut self, now: Instant) -> u32 {
        if now < self.next {
            return 0;
        }
        let late = now.duration_since(self.next).as_nanos();
        // `period` is at least 1 ns, and a u128 of nanoseconds holds any Duration: no overflow.
        let due = late / self.period.as_nanos() + 1;
        // `None` only if the deadline would leave the range of `Instant` (centuries ahead);
        // serving one frame per wake-up from then on beats panicking.
        self.next = grid_after(self.next, self.period, due).unwrap_or(now);
        let burst = u128::from(self.max_burst);
        if due <= burst {
            // `due <= max_burst`, a u32: the conversion cannot fail.
            u32::try_from(due).unwrap_or(self.max_burst)
        } else {
            let skipped = u64::try_from(due - burst).unwrap_or(u64::MAX);
            self.skipped = self.skipped.saturating_add(skipped);
            self.max_burst
        }
    }

    /// Frames skipped by stalls so far.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// How late `now` is relative to the deadline that is due (zero if early); call it before
    /// [`Pacer::poll`] to feed a lateness histogram.
    pub fn lateness(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.next)
    }
}

/// `from + n * period`, or `None` if it leaves the range of `Duration` or `Instant`.
fn grid_after(from: Instant, period: Duration, n: u128) -> Option<Instant> {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let nanos = period.as_nanos().checked_mul(n)?;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).ok()?;
    // The remainder is below 10^9, so it fits a u32 and `Duration::new` cannot carry over.
    let sub = u32::try_from(nanos % NANOS_PER_SEC).ok()?;
    from.checked_add(Duration::new(secs, sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: Duration = Duration::from_millis(20);

    /// The origin of virtual time. The one clock read in this file: nothing depends on its
    /// value, every other instant is `base() + offset`.
    fn base() -> Instant {
        Instant::now()
    }

    /// Deterministic pseudo-random numbers (Knuth's MMIX LCG), so failures reproduce.
    struct Lcg(u64);

    impl Lcg {
        fn next_below(&mut self, bound: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % bound
        }
    }

    fn on_grid(p: &Pacer, start: Instant) -> bool {
        let offset = p.next_deadline().duration_since(start).as_nanos();
        offset.is_multiple_of(FRAME.as_nanos())
    }

    #[test]
    fn first_deadline_is_start() {
        let t0 = base();
        let mut p = Pacer::new(t0, FRAME);
        assert_eq!(p.next_deadline(), t0);
        assert_eq!(p.poll(t0), 1);
        assert_eq!(p.next_deadline(), t0 + FRAME);
    }

    #[test]
    fn one_hour_with_jitter_has_no_drift() {
        let t0 = base();
        let end = t0 + Duration::from_secs(3600);
        let mut p = Pacer::new(t0, FRAME);
        let mut rng = Lcg(42);
        let mut frames: u64 = 0;
        while p.next_deadline() < end {
            let jitter = Duration::from_micros(rng.next_below(5_000));
            let now = p.next_deadline() + jitter;
            assert_eq!(p.lateness(now), jitter);
            frames += u64::from(p.poll(now));
            assert!(on_grid(&p, t0));
        }
        assert_eq!(frames, 3600 * 50);
        assert_eq!(p.skipped(), 0);
        assert_eq!(p.next_deadline(), end);
    }

    #[test]
    fn lateness_under_max_burst_periods_sends_every_missed_frame() {
        // Wake-ups at arbitrary times, late by up to just under two periods: every deadline
        // is still served, so the count matches the clock exactly.
        let t0 = base();
        let mut p = Pacer::new(t0, FRAME);
        let mut rng = Lcg(7);
        let mut frames: u64 = 0;
        let mut now = t0;
        for _ in 0..100_000 {
            now = p.next_deadline() + Duration::from_micros(rng.next_below(40_000));
            frames += u64::from(p.poll(now));
            assert!(on_grid(&p, t0));
            assert!(p.next_deadline() > now);
        }
        let elapsed = now.duration_since(t0).as_nanos();
        let due = elapsed / FRAME.as_nanos() + 1;
        assert_eq!(u128::from(frames), due);
        assert_eq!(p.skipped(), 0);
    }

    #[test]
    fn early_wake_sends_nothing_and_keeps_the_deadline() {
        let t0 = base();
        let mut p = Pacer::new(t0 + Duration::from_secs(1), FRAME);
        let deadline = p.next_deadline();
        assert_eq!(p.poll(t0 + Duration::from_millis(999)), 0);
        assert_eq!(p.lateness(t0 + Duration::from_millis(999)), Duration::ZERO);
        assert_eq!(p.next_deadline(), deadline);
        assert_eq!(p.poll(deadline), 1);
    }

    #[test]
    fn stall_sends_max_burst_and_counts_the_rest() {
        let t0 = base();
        let mut p = Pacer::new(t0, FRAME);
        assert_eq!(p.poll(t0), 1);
        // Wake a full second after the deadline at 20 ms: deadlines 20, 40, ..., 1020 ms are
        // due, 51 of them.
        let now = t0 + Duration::from_millis(1020);
        assert_eq!(p.lateness(now), Duration::from_secs(1));
        assert_eq!(p.poll(now), 2);
        assert_eq!(p.skipped(), 49);
        assert_eq!(p.next_deadline(), t0 + Duration::from_millis(1040));
        assert!(on_grid(&p, t0));
        // Back to normal afterwards.
        assert_eq!(p.poll(t0 + Duration::from_millis(1041)), 1);
        assert_eq!(p.skipped(), 49);
    }

    #[test]
    fn stall_with_a_custom_burst() {
        let t0 = base();
        let mut p = Pacer::new(t0, FRAME).with_max_burst(5);
        // 100 ms + 5 ms late at the first deadline: deadlines 0..=100 ms, 6 of them.
        assert_eq!(p.poll(t0 + Duration::from_millis(105)), 5);
        assert_eq!(p.skipped(), 1);
        assert_eq!(p.next_deadline(), t0 + Duration::from_millis(120));
    }

    #[test]
    fn lateness_of_exactly_max_burst_periods_is_a_stall() {
        let t0 = base();
        let mut p = Pacer::new(t0, FRAME);
        // Late by 39.999 ms: two deadlines due, both sent.
        assert_eq!(p.poll(t0 + Duration::from_micros(39_999)), 2);
        assert_eq!(p.skipped(), 0);
        // Late by exactly two periods: three due, one skipped.
        let due = p.next_deadline();
        assert_eq!(p.poll(due + 2 * FRAME), 2);
        assert_eq!(p.skipped(), 1);
    }

    #[test]
    fn degenerate_settings_do_not_panic() {
        let t0 = base();
        let mut p = Pacer::new(t0, Duration::ZERO).with_max_burst(0);
        assert_eq!(p.poll(t0 + Duration::from_secs(3600)), 1);
        assert!(p.skipped() > 0);
        assert!(p.next_deadline() > t0 + Duration::from_secs(3600));

        let mut p = Pacer::new(t0, Duration::MAX);
        assert_eq!(p.poll(t0), 1);
        // The next deadline would be beyond what `Instant` holds: no panic, still serving.
        assert_eq!(p.poll(t0 + Duration::from_secs(1)), 1);
    }
}
