//! What an attachment decides while it follows its call or conference, as a state machine
//! without IO: the registry's notices and time go in; what to do next comes out — a digit for
//! the stream, a lost object to forget, "re-check the tie now", "ask whether the call is still
//! there" — and, once, why the attachment ended.
//!
//! Every timer of the following lives here, and so does the one decision every kind of
//! attachment shares: did it end because its call hung up (or its conference went), or did
//! something fail? One of its own objects going away (a snoop, a bridge, the channel) is
//! often the first sign of a hangup — Asterisk may report a snoop's end before its call's, and
//! closes a stream's media connection before it reports the call's end — so a loss waits
//! [`LOST_GRACE`] for word of the call; past it, the driver asks Asterisk, and a call that is
//! gone still makes it a hangup.
//!
//! ```text
//!   handle_notice(now, notice)   handle_media_closed(now)   handle_timeout(now)
//!   handle_follow_failed(why)    handle_resource(gone)
//!        ──►  FollowCore  ──►
//!   poll_timeout()   poll()  (Dtmf, Lost, Settled, CheckResource, Ended)
//! ```
//!
//! It must not read the clock, call Asterisk or await: `Attachment::follow` is its driver.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::tie::{MOVE_SETTLE, Tie};
use crate::domain::Resource;
use crate::session::registry::Notice;

/// How long after the loss of one of its own objects an attachment waits for word that its
/// call or conference went too.
pub const LOST_GRACE: Duration = Duration::from_millis(500);

/// Why an attachment ended while it was followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Its call hung up or its conference was destroyed.
    Gone,
    /// Something failed while the call or conference was still there (or could not be asked).
    Failed(String),
}

impl Ended {
    /// The end of an attachment something failed for: a hangup after all if its call or
    /// conference is gone (the failure was a consequence). The one place this is decided.
    pub fn after_failure(resource_gone: bool, why: String) -> Ended {
        if resource_gone {
            Ended::Gone
        } else {
            Ended::Failed(why)
        }
    }
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A digit from the call, for the stream.
    Dtmf(String),
    /// One of the attachment's own objects is gone (forget it: a shared bridge that someone
    /// destroyed must not be reused).
    Lost(String),
    /// A bridge move has settled: read the call's state and re-tie if the tie no longer fits,
    /// then report a failure with [`FollowCore::handle_follow_failed`].
    Settled,
    /// Ask whether the call or conference still exists, and answer with
    /// [`FollowCore::handle_resource`].
    CheckResource,
    /// The attachment has ended; nothing more follows.
    Ended(Ended),
}

/// Where the following is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Following,
    /// One of its own objects went at this moment: waiting for word of the call.
    Lost {
        why: String,
        until: Instant,
    },
    /// Waiting for the driver to say whether the call or conference is still there.
    Checking {
        why: String,
    },
    Ended,
}

/// One attachment's following. See the module documentation.
#[derive(Debug)]
pub struct FollowCore {
    /// The call or conference whose end is the attachment's.
    target: String,
    /// A call's bridge moves are followed; a conference's channels moving are not ours.
    is_call: bool,
    /// The externalMedia channel.
    channel: String,
    /// How the channel is tied, once it is.
    tie: Option<Tie>,
    /// When the last bridge move settles, if one is pending.
    settle: Option<Instant>,
    phase: Phase,
    steps: VecDeque<Step>,
}

impl FollowCore {
    pub fn new(resource: &Resource, channel: String) -> FollowCore {
        let (target, is_call) = match resource {
            Resource::Call(id) => (id.as_str().to_owned(), true),
            Resource::Conference(id) => (id.as_str().to_owned(), false),
        };
        FollowCore {
            target,
            is_call,
            channel,
            tie: None,
            settle: None,
            phase: Phase::Following,
            steps: VecDeque::new(),
        }
    }

    pub fn channel(&self) -> &str {
        &self.channel
    }

    pub fn tie(&self) -> Option<&Tie> {
        self.tie.as_ref()
    }

    /// The channel is now tied this way.
    pub fn set_tie(&mut self, tie: Tie) {
        self.tie = Some(tie);
    }

    /// The tie is being undone: its objects are the caller's to remove.
    pub fn take_tie(&mut self) -> Option<Tie> {
        self.tie.take()
    }

    /// Whether `id` is one of the attachment's own objects, whose loss ends it.
    pub fn owns(&self, id: &str) -> bool {
        id == self.channel || self.tie.as_ref().is_some_and(|tie| tie.owns(id))
    }

    /// Word from the registry about an object the attachment follows.
    pub fn handle_notice(&mut self, now: Instant, notice: Notice) {
        match (&self.phase, notice) {
            (Phase::Ended, _) => {}
            // The call's end explains everything else, whenever it comes.
            (_, Notice::Gone { id }) if id == self.target => self.end(Ended::Gone),
            (Phase::Following, Notice::Gone { id }) if self.owns(&id) => {
                self.settle = None;
                self.phase = Phase::Lost {
                    why: format!("{id} went away"),
                    until: now + LOST_GRACE,
                };
                self.steps.push_back(Step::Lost(id));
            }
            (Phase::Following, Notice::Dtmf { channel, digit }) if channel == self.target => {
                self.steps.push_back(Step::Dtmf(digit));
            }
            // A move comes as a leave then an enter: act once the pair has settled.
            (Phase::Following, Notice::Moved { channel, .. })
                if (self.is_call && channel == self.target) || channel == self.channel =>
            {
                self.settle = Some(now + MOVE_SETTLE);
            }
            _ => {}
        }
    }

    /// Asterisk closed the channel's media connection (a stream's AudioSocket leg): a loss
    /// like any of the attachment's own objects.
    pub fn handle_media_closed(&mut self, now: Instant) {
        if self.phase == Phase::Following {
            self.settle = None;
            self.phase = Phase::Lost {
                why: "Asterisk closed the media connection".into(),
                until: now + LOST_GRACE,
            };
        }
    }

    /// When [`FollowCore::handle_timeout`] wants to be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Following => self.settle,
            Phase::Lost { until, .. } => Some(*until),
            Phase::Checking { .. } | Phase::Ended => None,
        }
    }

    /// Time has passed: a move may have settled, a loss may have waited long enough.
    pub fn handle_timeout(&mut self, now: Instant) {
        match &self.phase {
            Phase::Following => {
                if self.settle.is_some_and(|at| now >= at) {
                    self.settle = None;
                    self.steps.push_back(Step::Settled);
                }
            }
            Phase::Lost { why, until } if now >= *until => {
                let why = why.clone();
                self.check(why);
            }
            Phase::Lost { .. } | Phase::Checking { .. } | Phase::Ended => {}
        }
    }

    /// Re-tying after a move failed.
    pub fn handle_follow_failed(&mut self, why: String) {
        if self.phase == Phase::Following {
            self.check(format!("following the call: {why}"));
        }
    }

    /// The answer to [`Step::CheckResource`].
    pub fn handle_resource(&mut self, gone: bool) {
        if let Phase::Checking { why } = &self.phase {
            let ended = Ended::after_failure(gone, why.clone());
            self.end(ended);
        }
    }

    /// The next thing to do.
    pub fn poll(&mut self) -> Option<Step> {
        self.steps.pop_front()
    }

    fn check(&mut self, why: String) {
        self.settle = None;
        self.phase = Phase::Checking { why };
        self.steps.push_back(Step::CheckResource);
    }

    fn end(&mut self, ended: Ended) {
        self.settle = None;
        self.phase = Phase::Ended;
        // Nothing queued before the end matters any more.
        self.steps.clear();
        self.steps.push_back(Step::Ended(ended));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CallId, ConferenceId};
    use crate::virtual_time::{at, t0};

    /// A core following call `call` through channel `em`, tied through snoop `sn` and bridge
    /// `br`, with its clock and everything it asked.
    struct Harness {
        core: FollowCore,
        now: Instant,
        steps: Vec<(u64, Step)>,
    }

    impl Harness {
        fn call() -> Harness {
            let resource = Resource::Call(CallId::parse("call").expect("id"));
            let mut core = FollowCore::new(&resource, "em".into());
            core.set_tie(Tie::Snoop {
                snoop: "sn".into(),
                bridge: "br".into(),
            });
            Harness {
                core,
                now: t0(),
                steps: Vec::new(),
            }
        }

        fn conference() -> Harness {
            let id = ConferenceId::parse("conf").expect("id");
            let mut core = FollowCore::new(&Resource::Conference(id.clone()), "em".into());
            core.set_tie(Tie::Conference { bridge: id });
            Harness {
                core,
                now: t0(),
                steps: Vec::new(),
            }
        }

        fn ms(&self) -> u64 {
            crate::virtual_time::ms(self.now)
        }

        /// Runs the clock to `ms`, serving every deadline on the way as the driver does, and
        /// answers what the driver would (`gone` for a resource check).
        fn run_to(&mut self, ms: u64, gone: Option<bool>) {
            loop {
                self.collect(gone);
                match self.core.poll_timeout() {
                    Some(deadline) if deadline <= at(ms) => {
                        self.now = deadline.max(self.now);
                        self.core.handle_timeout(self.now);
                    }
                    _ => break,
                }
            }
            self.now = at(ms).max(self.now);
        }

        fn collect(&mut self, gone: Option<bool>) {
            while let Some(step) = self.core.poll() {
                let check = step == Step::CheckResource;
                self.steps.push((self.ms(), step));
                if let (true, Some(gone)) = (check, gone) {
                    self.core.handle_resource(gone);
                }
            }
        }

        fn notice(&mut self, ms: u64, notice: Notice) {
            self.run_to(ms, None);
            self.core.handle_notice(self.now, notice);
            self.collect(None);
        }

        fn gone(&mut self, ms: u64, id: &str) {
            self.notice(ms, Notice::Gone { id: id.into() });
        }

        fn moved(&mut self, ms: u64, channel: &str, bridge: Option<&str>) {
            let notice = Notice::Moved {
                channel: channel.into(),
                bridge: bridge.map(Into::into),
            };
            self.notice(ms, notice);
        }

        fn ended(&self) -> Option<(u64, Ended)> {
            self.steps.iter().find_map(|(ms, step)| match step {
                Step::Ended(ended) => Some((*ms, ended.clone())),
                _ => None,
            })
        }
    }

    #[test]
    fn a_hangup_ends_it_at_once() {
        let mut h = Harness::call();
        h.gone(100, "call");
        assert_eq!(h.ended(), Some((100, Ended::Gone)));
        assert_eq!(h.core.poll_timeout(), None);
    }

    #[test]
    fn a_snoop_that_ends_just_before_its_call_is_a_hangup() {
        // Asterisk reports the snoop's end, then the call's, 120 ms apart.
        let mut h = Harness::call();
        h.gone(100, "sn");
        h.gone(220, "call");
        h.run_to(2_000, Some(false));
        assert_eq!(
            h.steps,
            vec![
                (100, Step::Lost("sn".into())),
                (220, Step::Ended(Ended::Gone))
            ]
        );
    }

    #[test]
    fn a_lost_object_with_the_call_still_there_is_a_failure_after_the_grace() {
        let mut h = Harness::call();
        h.gone(100, "br");
        h.run_to(599, Some(false));
        assert_eq!(h.ended(), None, "still within the grace");
        h.run_to(2_000, Some(false));
        assert_eq!(
            h.steps,
            vec![
                (100, Step::Lost("br".into())),
                (600, Step::CheckResource),
                (600, Step::Ended(Ended::Failed("br went away".into()))),
            ]
        );
    }

    #[test]
    fn a_call_found_gone_after_the_grace_is_still_a_hangup() {
        // The call's end was reported late (or the event socket was down): Asterisk says the
        // call is gone when asked.
        let mut h = Harness::call();
        h.gone(100, "em");
        h.run_to(2_000, Some(true));
        assert_eq!(h.ended(), Some((600, Ended::Gone)));
    }

    #[test]
    fn the_hangup_may_come_while_the_driver_asks() {
        let mut h = Harness::call();
        h.gone(100, "sn");
        h.run_to(600, None);
        assert_eq!(h.steps.last(), Some(&(600, Step::CheckResource)));
        h.gone(650, "call");
        // The answer that comes after is too late to change anything.
        h.core.handle_resource(false);
        h.collect(None);
        assert_eq!(h.ended(), Some((650, Ended::Gone)));
        assert_eq!(h.steps.len(), 3);
    }

    #[test]
    fn a_media_connection_closed_by_a_hangup_is_a_hangup() {
        // Asterisk closes the AudioSocket connection, then reports the call's end.
        let mut h = Harness::call();
        h.run_to(100, None);
        h.core.handle_media_closed(h.now);
        h.gone(180, "call");
        assert_eq!(h.steps, vec![(180, Step::Ended(Ended::Gone))]);
    }

    #[test]
    fn a_media_connection_closed_with_the_call_still_there_is_a_failure() {
        for (gone, ended) in [
            (
                false,
                Ended::Failed("Asterisk closed the media connection".into()),
            ),
            // Asterisk died, or its events are behind: the call is not there when asked.
            (true, Ended::Gone),
        ] {
            let mut h = Harness::call();
            h.run_to(100, None);
            h.core.handle_media_closed(h.now);
            h.run_to(599, Some(gone));
            assert_eq!(h.ended(), None);
            h.run_to(2_000, Some(gone));
            assert_eq!(
                h.steps,
                vec![(600, Step::CheckResource), (600, Step::Ended(ended))]
            );
        }
    }

    #[test]
    fn a_bridge_move_is_acted_on_once_it_has_settled() {
        let mut h = Harness::call();
        // A move: the call leaves one bridge and enters another, 50 ms apart.
        h.moved(100, "call", None);
        h.moved(150, "call", Some("theirs"));
        h.run_to(349, None);
        assert!(h.steps.is_empty(), "{:?}", h.steps);
        h.run_to(1_000, None);
        assert_eq!(h.steps, vec![(350, Step::Settled)]);
    }

    #[test]
    fn only_the_call_and_the_channel_moving_count() {
        let mut h = Harness::call();
        h.moved(100, "someone-else", Some("b"));
        h.moved(100, "sn", Some("b"));
        h.run_to(1_000, None);
        assert!(h.steps.is_empty());
        h.moved(1_000, "em", None);
        h.run_to(2_000, None);
        assert_eq!(h.steps, vec![(1_200, Step::Settled)]);
        // A conference's members come and go: only its channel's own moves count.
        let mut h = Harness::conference();
        h.moved(100, "conf", None);
        h.run_to(1_000, None);
        assert!(h.steps.is_empty());
        h.moved(1_000, "em", None);
        h.run_to(2_000, None);
        assert_eq!(h.steps, vec![(1_200, Step::Settled)]);
    }

    #[test]
    fn a_hangup_while_a_move_settles_ends_it_without_a_re_tie() {
        let mut h = Harness::call();
        h.moved(100, "call", None);
        h.gone(150, "call");
        h.run_to(1_000, None);
        assert_eq!(h.steps, vec![(150, Step::Ended(Ended::Gone))]);
    }

    #[test]
    fn a_failed_re_tie_is_a_failure_unless_the_call_is_gone() {
        for (gone, ended) in [
            (false, Ended::Failed("following the call: refused".into())),
            (true, Ended::Gone),
        ] {
            let mut h = Harness::call();
            h.moved(100, "call", None);
            h.run_to(300, None);
            h.core.handle_follow_failed("refused".into());
            h.run_to(400, Some(gone));
            assert_eq!(h.ended(), Some((300, ended)));
        }
    }

    #[test]
    fn digits_come_from_the_call_only_and_not_once_it_is_lost() {
        let mut h = Harness::call();
        let dtmf = |channel: &str, digit: &str| Notice::Dtmf {
            channel: channel.into(),
            digit: digit.into(),
        };
        h.notice(100, dtmf("call", "1"));
        h.notice(120, dtmf("em", "2"));
        h.gone(140, "sn");
        h.notice(160, dtmf("call", "3"));
        assert_eq!(
            h.steps,
            vec![
                (100, Step::Dtmf("1".into())),
                (140, Step::Lost("sn".into()))
            ]
        );
    }

    #[test]
    fn a_conference_ends_with_its_bridge_which_is_not_its_own_object() {
        let mut h = Harness::conference();
        h.gone(100, "someone");
        assert!(h.steps.is_empty());
        h.gone(200, "conf");
        assert_eq!(h.ended(), Some((200, Ended::Gone)));
    }

    #[test]
    fn objects_of_an_undone_tie_are_not_its_own_any_more() {
        let mut h = Harness::call();
        assert!(h.core.owns("sn") && h.core.owns("br") && h.core.owns("em"));
        let undone = h.core.take_tie();
        assert!(matches!(undone, Some(Tie::Snoop { .. })));
        // The old snoop, removed while re-tying, is reported gone: that ends nothing.
        h.gone(100, "sn");
        h.run_to(2_000, Some(false));
        assert!(h.steps.is_empty());
    }

    #[test]
    fn nothing_follows_the_end() {
        let mut h = Harness::call();
        h.gone(100, "call");
        h.gone(120, "sn");
        h.moved(130, "call", None);
        h.core.handle_follow_failed("x".into());
        h.run_to(2_000, Some(false));
        assert_eq!(h.steps, vec![(100, Step::Ended(Ended::Gone))]);
        assert_eq!(h.core.phase, Phase::Ended);
    }

    /// The events Asterisk 22 sent for a call that entered a bridge, left it and hung up
    /// (captured), through the registry as the service receives them, each at its own time.
    /// `extra` adds events (with their offset in ms from the first) to try other orderings.
    fn replay(extra: &[(u64, &str)]) -> Harness {
        use crate::ari::Event;

        let registry = crate::session::registry::unconnected();
        let resource = Resource::Call(CallId::parse("cap-call-1").expect("id"));
        let mut h = Harness::call();
        h.core = FollowCore::new(&resource, "mediastream-em-1".into());
        h.core.set_tie(Tie::Snoop {
            snoop: "mediastream-sn-1".into(),
            bridge: "mediastream-br-1".into(),
        });
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for id in [
            "cap-call-1",
            "mediastream-em-1",
            "mediastream-sn-1",
            "mediastream-br-1",
        ] {
            registry.watch(1, id, tx.clone());
        }
        let captured: Vec<serde_json::Value> =
            serde_json::from_str(include_str!("../../../tests/fixtures/ari-events-call.json"))
                .expect("fixture");
        let time = |v: &serde_json::Value| {
            let stamp = v["timestamp"].as_str().expect("timestamp");
            humantime::parse_rfc3339_weak(&stamp[..23]).expect("time")
        };
        let first = time(&captured[0]);
        let mut events: Vec<(u64, String)> = captured
            .iter()
            .map(|v| {
                let ms = time(v).duration_since(first).expect("ordered").as_millis();
                (ms as u64, v.to_string())
            })
            .collect();
        events.extend(extra.iter().map(|(ms, e)| (*ms, e.to_string())));
        // Stable: an added event comes after the captured ones of the same millisecond.
        events.sort_by_key(|(ms, _)| *ms);
        for (ms, event) in events {
            registry.apply(&Event::parse(&event));
            while let Ok(notice) = rx.try_recv() {
                h.notice(ms, notice);
            }
        }
        h.run_to(10_000, Some(true));
        h
    }

    #[test]
    fn a_captured_call_is_followed_through_its_bridge_to_its_hangup() {
        let h = replay(&[]);
        // Entered a bridge at +1002 ms, left it at +1504, hung up at +2010: each move is
        // re-checked once it has settled, and the hangup ends the attachment.
        assert_eq!(
            h.steps,
            vec![
                (1_202, Step::Settled),
                (1_704, Step::Settled),
                (2_010, Step::Ended(Ended::Gone)),
            ]
        );
    }

    #[test]
    fn a_captured_call_whose_snoop_ends_first_is_a_hangup() {
        // As Asterisk may report it: the snoop's end (a StasisEnd, no ChannelDestroyed) just
        // before its call's.
        let snoop_end = r#"{"type":"StasisEnd","channel":{"id":"mediastream-sn-1","dialplan":{"app_name":"Stasis","app_data":"cap"}}}"#;
        let h = replay(&[(2_000, snoop_end)]);
        assert_eq!(
            &h.steps[2..],
            [
                (2_000, Step::Lost("mediastream-sn-1".into())),
                (2_010, Step::Ended(Ended::Gone)),
            ]
        );
    }
}
