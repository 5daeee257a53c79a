//! Removing what an attachment made, as a state machine without IO: which removals to try,
//! when to try again, and what to keep for later. Asterisk may not answer a removal (it stalls
//! for seconds under load, refuses connections past its HTTP session limit, or has died):
//!
//! - a removal it did not answer is tried again, with a backoff from [`RETRY_FIRST`] doubling
//!   to [`RETRY_MAX`], spread over half to one and a half of itself (so that the teardowns one
//!   stall failed together do not all come back in the same instant), for as long as the
//!   teardown allows (`retry_for`);
//! - not once the service is shutting down (its next start sweeps what is left), nor while
//!   Asterisk is known dead: news of its death ends the wait at once, for one last try that
//!   fails at once, and what is left is kept for its return instead of holding the teardown;
//! - a removal that failed for good, or ran out of time, is kept ([`RemovalCore::unremoved`])
//!   for `Attachments::remove_unremoved`, so that no object outlives its stream unnoticed.
//!
//! ```text
//!   handle_results(now, results, spread)   handle_asterisk_down(now)   handle_shutdown(now)
//!   handle_timeout(now)
//!        ──►  RemovalCore  ──►
//!   poll_attempts()   poll_timeout()   is_done()   unremoved()   not_awaited()
//! ```
//!
//! It must not read the clock, call Asterisk or draw random numbers: `Attachments::remove` is
//! its driver.

use std::time::{Duration, Instant};

/// The first wait before trying a removal again, and the longest.
pub const RETRY_FIRST: Duration = Duration::from_millis(250);
pub const RETRY_MAX: Duration = Duration::from_secs(8);

/// A kind of object the service removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    Channel,
    Bridge,
}

impl Object {
    pub fn name(self) -> &'static str {
        match self {
            Object::Channel => "channel",
            Object::Bridge => "bridge",
        }
    }
}

/// How one removal went, as the driver classifies Asterisk's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Asterisk took it: the object's end will be reported.
    Removed,
    /// It was not there.
    NotFound,
    /// Asterisk did not answer, or could not now: worth trying again.
    Transient,
    /// Refused for good.
    Failed,
}

/// One teardown's removals. See the module documentation.
#[derive(Debug)]
pub struct RemovalCore {
    /// Removals to try at the next attempt.
    left: Vec<(String, Object)>,
    /// When the next attempt is due: now at first, later after a failure.
    due: Option<Instant>,
    /// Past this, a failed removal is not tried again.
    give_up_at: Instant,
    /// The next wait between attempts, before it is spread.
    delay: Duration,
    asterisk_down: bool,
    shutting_down: bool,
    /// Objects no event will report gone (they were not there, or stay).
    not_awaited: Vec<String>,
    /// Objects still in Asterisk when the teardown gave up.
    unremoved: Vec<(String, Object)>,
}

impl RemovalCore {
    /// Removals of `objects`, first tried at once, then again for `retry_for` at most.
    pub fn new(objects: Vec<(String, Object)>, now: Instant, retry_for: Duration) -> RemovalCore {
        RemovalCore {
            left: objects,
            due: Some(now),
            give_up_at: now + retry_for,
            delay: RETRY_FIRST,
            asterisk_down: false,
            shutting_down: false,
            not_awaited: Vec::new(),
            unremoved: Vec::new(),
        }
    }

    /// Asterisk is found dead: a wait for the next attempt ends now, and nothing is tried
    /// again after it.
    pub fn handle_asterisk_down(&mut self, now: Instant) {
        self.asterisk_down = true;
        self.due = self.due.map(|due| due.min(now));
    }

    /// The service is shutting down: as for a dead Asterisk.
    pub fn handle_shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        self.due = self.due.map(|due| due.min(now));
    }

    /// When the next attempt is due, if one is to come.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.due.filter(|_| !self.left.is_empty())
    }

    /// The removals to try now (all at once), once their time has come.
    pub fn poll_attempts(&mut self, now: Instant) -> Vec<(String, Object)> {
        match self.due {
            Some(due) if now >= due && !self.left.is_empty() => {
                self.due = None;
                std::mem::take(&mut self.left)
            }
            _ => Vec::new(),
        }
    }

    /// How the attempts went. `spread`, in `0.0..1.0`, places the next wait within half to
    /// one and a half of the backoff.
    pub fn handle_results(
        &mut self,
        now: Instant,
        results: Vec<(String, Object, Outcome)>,
        spread: f64,
    ) {
        let again =
            now + self.delay < self.give_up_at && !self.shutting_down && !self.asterisk_down;
        for (id, what, outcome) in results {
            match outcome {
                Outcome::Removed => {}
                Outcome::Transient if again => self.left.push((id, what)),
                Outcome::NotFound => self.not_awaited.push(id),
                Outcome::Transient | Outcome::Failed => {
                    self.not_awaited.push(id.clone());
                    self.unremoved.push((id, what));
                }
            }
        }
        if !self.left.is_empty() {
            let wait = self.delay / 2 + self.delay.mul_f64(spread.clamp(0.0, 1.0));
            self.due = Some(now + wait);
            self.delay = (self.delay * 2).min(RETRY_MAX);
        }
    }

    /// The next wait's backoff, before it is spread (for logs).
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// Objects no event will report gone: the driver need not wait for them.
    pub fn not_awaited(&mut self) -> Vec<String> {
        std::mem::take(&mut self.not_awaited)
    }

    /// Objects the teardown could not remove, for later.
    pub fn unremoved(&mut self) -> Vec<(String, Object)> {
        std::mem::take(&mut self.unremoved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtual_time::{at, ms};

    fn objects() -> Vec<(String, Object)> {
        vec![
            ("em".into(), Object::Channel),
            ("sn".into(), Object::Channel),
            ("br".into(), Object::Bridge),
        ]
    }

    /// Runs a teardown on a virtual clock: `asterisk` answers each attempt (by its number,
    /// from 0, and the object) and may change the world before it (`before`). Returns when each
    /// attempt was made.
    fn run(
        core: &mut RemovalCore,
        mut before: impl FnMut(usize, &mut RemovalCore, Instant),
        mut asterisk: impl FnMut(usize, &str) -> Outcome,
    ) -> Vec<u64> {
        let mut attempts = Vec::new();
        while let Some(due) = core.poll_timeout() {
            assert!(attempts.len() < 100, "it never ends");
            let n = attempts.len();
            before(n, core, due);
            let now = core.poll_timeout().unwrap_or(due);
            let tried = core.poll_attempts(now);
            attempts.push(ms(now));
            let results = tried
                .into_iter()
                .map(|(id, what)| {
                    let outcome = asterisk(n, &id);
                    (id, what, outcome)
                })
                .collect();
            // The middle of the spread: waits of exactly the backoff.
            core.handle_results(now, results, 0.5);
        }
        attempts
    }

    #[test]
    fn removals_asterisk_takes_are_done_at_once() {
        let mut core = RemovalCore::new(objects(), at(0), Duration::from_secs(60));
        let attempts = run(&mut core, |_, _, _| {}, |_, _| Outcome::Removed);
        assert_eq!(attempts, [0]);
        assert_eq!(core.poll_timeout(), None);
        assert!(core.unremoved().is_empty() && core.not_awaited().is_empty());
    }

    #[test]
    fn what_was_not_there_is_not_waited_for_nor_kept() {
        let mut core = RemovalCore::new(objects(), at(0), Duration::from_secs(60));
        run(
            &mut core,
            |_, _, _| {},
            |_, id| match id {
                "sn" => Outcome::NotFound,
                _ => Outcome::Removed,
            },
        );
        assert_eq!(core.not_awaited(), ["sn"]);
        assert!(core.unremoved().is_empty());
    }

    #[test]
    fn removals_refused_while_streams_end_are_tried_again_with_backoff_until_taken() {
        // Asterisk's HTTP sessions are exhausted for the first four attempts.
        let mut core = RemovalCore::new(objects(), at(0), Duration::from_secs(60));
        let attempts = run(
            &mut core,
            |_, _, _| {},
            |n, _| {
                if n < 4 {
                    Outcome::Transient
                } else {
                    Outcome::Removed
                }
            },
        );
        // 250 ms, then 500, 1000, 2000.
        assert_eq!(attempts, [0, 250, 750, 1_750, 3_750]);
        assert!(core.unremoved().is_empty() && core.not_awaited().is_empty());
    }

    #[test]
    fn the_backoff_is_spread_and_capped() {
        let mut core = RemovalCore::new(objects(), at(0), Duration::from_secs(600));
        let mut waits = Vec::new();
        let mut now = at(0);
        for spread in [0.0, 0.99, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5] {
            let tried = core.poll_attempts(now);
            let results = tried
                .into_iter()
                .map(|(id, what)| (id, what, Outcome::Transient))
                .collect();
            core.handle_results(now, results, spread);
            let next = core.poll_timeout().expect("again");
            waits.push((next - now).as_millis() as u64);
            now = next;
        }
        // Half the backoff at spread 0, just under one and a half at 0.99; 8 s at most.
        assert_eq!(waits, [125, 745, 500, 1_000, 2_000, 4_000, 4_000, 8_000]);
    }

    #[test]
    fn removals_still_refused_when_time_runs_out_are_kept_for_later() {
        let mut core = RemovalCore::new(objects(), at(0), Duration::from_secs(60));
        let attempts = run(&mut core, |_, _, _| {}, |_, _| Outcome::Transient);
        assert!(*attempts.last().expect("tried") < 60_000, "{attempts:?}");
        let kept: Vec<String> = core.unremoved().into_iter().map(|(id, _)| id).collect();
        assert_eq!(kept, ["em", "sn", "br"]);
        assert_eq!(core.not_awaited(), ["em", "sn", "br"]);
    }

    #[test]
    fn asterisk_found_dead_during_a_teardown_ends_the_wait_and_keeps_what_is_left() {
        let mut core = RemovalCore::new(objects(), at(0), Duration::from_secs(60));
        // The first attempt is not answered; 100 ms into the wait, the probes find Asterisk
        // dead: one more try at once, which fails, and nothing after it.
        let attempts = run(
            &mut core,
            |n, core, _| {
                if n == 1 {
                    core.handle_asterisk_down(at(100));
                }
            },
            |_, _| Outcome::Transient,
        );
        assert_eq!(attempts, [0, 100]);
        assert_eq!(core.unremoved().len(), 3);
    }

    #[test]
    fn a_shutdown_tries_once_more_and_keeps_the_rest_for_the_next_start() {
        let mut core = RemovalCore::new(objects(), at(0), Duration::from_secs(60));
        let attempts = run(
            &mut core,
            |n, core, _| {
                if n == 1 {
                    core.handle_shutdown(at(50));
                }
            },
            |_, id| {
                if id == "br" {
                    Outcome::Transient
                } else {
                    Outcome::Removed
                }
            },
        );
        assert_eq!(attempts, [0, 50]);
        assert_eq!(core.unremoved(), [("br".to_owned(), Object::Bridge)]);
    }

    #[test]
    fn a_removal_refused_for_good_is_kept_at_once() {
        let mut core = RemovalCore::new(objects(), at(0), Duration::from_secs(60));
        let attempts = run(
            &mut core,
            |_, _, _| {},
            |_, id| {
                if id == "em" {
                    Outcome::Failed
                } else {
                    Outcome::Removed
                }
            },
        );
        assert_eq!(attempts, [0]);
        assert_eq!(core.unremoved(), [("em".to_owned(), Object::Channel)]);
    }
}
