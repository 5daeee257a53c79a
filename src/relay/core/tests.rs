//! The stream core under virtual time: no sockets, no runtime, one clock that only the test
//! moves. Each test drives the core as a driver would and checks what it polls.

use bytes::Bytes;

use super::*;
use crate::codec::audiosocket::Kind;
use crate::codec::rtp;
use crate::domain::{CallId, ConferenceId};
use crate::virtual_time::{at, t0};

/// Bytes of one 20 ms frame of 16-bit audio.
const SLIN_FRAME: usize = 320;

fn config(encapsulation: Encapsulation, format: Format, events: bool) -> CoreConfig {
    CoreConfig {
        spec: StreamSpec {
            stream_id: uuid::Uuid::from_u128(7),
            resource: Resource::Call(CallId::parse("call-1").expect("id")),
            encapsulation,
            format,
            events,
            leg_format: SampleFormat::SlinBe,
            jitter_ms: 40,
            max_queue_ms: 200,
            expires_at: None,
            parameters: Default::default(),
            account_sid: "AC1".into(),
        },
        expires_at: None,
        clock_start: at(20),
        seed: 0x1234_5678_9abc_def0_1122_3344_5566_7788,
    }
}

/// A core and what it has said, with the virtual clock.
struct Harness {
    core: StreamCore,
    now: Instant,
    /// Frames towards Asterisk, with the time each left.
    to_leg: Vec<(Instant, Vec<u8>)>,
}

impl Harness {
    fn new(config: CoreConfig) -> Harness {
        Harness {
            core: StreamCore::new(config),
            now: t0(),
            to_leg: Vec::new(),
        }
    }

    fn sln(events: bool) -> Harness {
        Harness::new(config(Encapsulation::Sln, Format::Slin, events))
    }

    /// Runs the clock to `until`, serving every deadline on the way as a driver would.
    fn run_until(&mut self, until: Instant) {
        while let Some(deadline) = self.core.poll_timeout() {
            if deadline > until {
                break;
            }
            self.now = deadline.max(self.now);
            self.core.handle_timeout(self.now);
            while let Some(frame) = self.core.poll_to_leg() {
                self.to_leg.push((self.now, frame.to_vec()));
            }
        }
        self.now = until.max(self.now);
    }

    fn run_ms(&mut self, ms: u64) {
        self.run_until(self.now + Duration::from_millis(ms));
    }

    fn client(&mut self, message: Inbound) {
        self.core.handle_client(self.now, &message);
    }

    fn text(&mut self, text: &str) {
        self.client(Inbound::Text(text.into()));
    }

    fn binary(&mut self, bytes: Vec<u8>) {
        self.client(Inbound::Binary(Bytes::from(bytes)));
    }

    /// Everything waiting for the client.
    fn drain_client(&mut self) -> Vec<Outbound> {
        std::iter::from_fn(|| self.core.poll_to_client()).collect()
    }

    /// The events (text messages) waiting for the client, parsed.
    fn events(&mut self) -> Vec<serde_json::Value> {
        self.drain_client()
            .into_iter()
            .filter_map(|m| match m {
                Outbound::Text(t) => Some(serde_json::from_str(&t).expect("event json")),
                _ => None,
            })
            .collect()
    }

    /// The close frame, once the stream has ended and said so.
    fn close_code(&mut self) -> Option<u16> {
        self.drain_client().into_iter().find_map(|m| match m {
            Outbound::Close { code, .. } => Some(code),
            _ => None,
        })
    }
}

/// `frames` frames of 16-bit little-endian audio, every sample of frame `k` equal to
/// `first + k`.
fn numbered_le(first: i16, frames: usize) -> Vec<u8> {
    (0..frames)
        .flat_map(|k| std::iter::repeat_n(first + k as i16, SLIN_FRAME / 2))
        .flat_map(i16::to_le_bytes)
        .collect()
}

/// The number a big-endian frame carries (its first sample), or `None` for silence.
fn number_be(frame: &[u8]) -> Option<i16> {
    let n = i16::from_be_bytes([frame[0], frame[1]]);
    (n != 0).then_some(n)
}

fn types(events: &[serde_json::Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("?"))
        .collect()
}

#[test]
fn started_comes_first_with_the_stream_description() {
    let mut h = Harness::sln(true);
    h.core.handle_leg(h.now, &[0, 1, 0, 2]);
    let out = h.drain_client();
    let Outbound::Text(started) = &out[0] else {
        panic!("first message {:?}", out[0]);
    };
    let started: serde_json::Value = serde_json::from_str(started).expect("json");
    assert_eq!(
        started,
        serde_json::json!({
            "type": "started", "stream_id": uuid::Uuid::from_u128(7), "call_id": "call-1",
            "encapsulation": "sln", "format": "slin", "sample_rate": 8000, "ptime_ms": 20,
        })
    );
    // The leg's big-endian samples reach an sln client little-endian.
    assert_eq!(out[1], Outbound::Binary(Bytes::from_static(&[1, 0, 2, 0])));
    assert_eq!(out.len(), 2);
}

#[test]
fn a_conference_stream_names_its_conference() {
    let mut c = config(Encapsulation::Sln, Format::Slin, true);
    c.spec.resource = Resource::Conference(ConferenceId::parse("conf-9").expect("id"));
    let mut h = Harness::new(c);
    let started = &h.events()[0];
    assert_eq!(started["conference_id"], "conf-9");
    assert!(started.get("call_id").is_none());
}

#[test]
fn without_events_only_audio_is_sent() {
    let mut h = Harness::sln(false);
    h.text(r#"{"type":"mark","name":"m"}"#);
    h.text(r#"{"type":"clear"}"#);
    h.core.handle_signal(h.now, Signal::Dtmf("5".into()));
    h.core.handle_leg(h.now, &[0; SLIN_FRAME]);
    h.run_ms(100);
    let out = h.drain_client();
    assert_eq!(out.len(), 1);
    assert!(matches!(out[0], Outbound::Binary(_)));
}

#[test]
fn an_audiosocket_stream_opens_with_its_uuid_frame_then_audio_frames() {
    let mut h = Harness::new(config(Encapsulation::Audiosocket, Format::Slin, false));
    h.core.handle_leg(h.now, &[0x12, 0x34]);
    let out = h.drain_client();
    let mut uuid = vec![0x01, 0, 16];
    uuid.extend_from_slice(uuid::Uuid::from_u128(7).as_bytes());
    assert_eq!(out[0], Outbound::Binary(Bytes::from(uuid)));
    assert_eq!(
        out[1],
        Outbound::Binary(Bytes::from_static(&[0x10, 0, 2, 0x34, 0x12]))
    );
}

#[test]
fn rtp_to_the_client_counts_sequence_and_timestamp() {
    let mut h = Harness::new(config(Encapsulation::Rtp, Format::Ulaw, false));
    for _ in 0..3 {
        h.core.handle_leg(h.now, &[0; SLIN_FRAME]);
    }
    let headers: Vec<_> = h
        .drain_client()
        .into_iter()
        .map(|m| match m {
            Outbound::Binary(b) => {
                let packet = rtp::parse(&b).expect("rtp");
                assert_eq!(packet.payload.len(), 160, "μ-law: one byte a sample");
                packet.header
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(headers.iter().all(|h| h.payload_type == CLIENT_PT_ULAW));
    for pair in headers.windows(2) {
        assert_eq!(pair[1].sequence, pair[0].sequence.wrapping_add(1));
        assert_eq!(pair[1].timestamp, pair[0].timestamp.wrapping_add(160));
        assert_eq!(pair[1].ssrc, pair[0].ssrc);
    }
    assert!(headers[0].marker && !headers[1].marker);
}

#[test]
fn the_clock_sends_one_frame_every_20_ms_on_the_grid_and_silence_when_idle() {
    let mut h = Harness::sln(false);
    h.run_until(at(1_010));
    // Deadlines at 20, 40, ..., 1000 ms: 50 frames, each on its deadline, all silence.
    assert_eq!(h.to_leg.len(), 50);
    for (k, (sent, frame)) in h.to_leg.iter().enumerate() {
        assert_eq!(*sent, at(20 * (k as u64 + 1)));
        assert_eq!(frame.len(), SLIN_FRAME);
        assert!(frame.iter().all(|b| *b == 0));
    }
    assert_eq!(h.core.take_stats().to_asterisk, 50);
}

#[test]
fn a_late_wake_up_catches_up_within_the_burst_limit_and_reports_its_lateness() {
    let mut h = Harness::sln(false);
    // Woken 25 ms after the first deadline (20 ms): two deadlines are due.
    h.core.handle_timeout(at(45));
    let mut sent = 0;
    while h.core.poll_to_leg().is_some() {
        sent += 1;
    }
    assert_eq!(sent, 2);
    assert_eq!(
        h.core.take_stats().worst_lateness,
        Duration::from_millis(25)
    );
    assert_eq!(h.core.poll_timeout(), Some(at(60)), "back on the grid");
}

#[test]
fn client_audio_waits_for_the_prebuffer_then_plays_in_order() {
    let mut h = Harness::sln(false);
    // One frame is below the 40 ms pre-buffer: silence.
    h.binary(numbered_le(1, 1));
    h.run_until(at(20));
    assert_eq!(number_be(&h.to_leg[0].1), None);
    // A second frame completes it: both play, in order, then silence.
    h.binary(numbered_le(2, 1));
    h.run_until(at(80));
    let played: Vec<_> = h.to_leg[1..].iter().map(|(_, f)| number_be(f)).collect();
    assert_eq!(played, [Some(1), Some(2), None]);
}

#[test]
fn a_burst_is_played_one_frame_per_tick_without_loss() {
    let mut h = Harness::sln(false);
    // 200 ms of audio at once, in odd-sized messages, as a TTS engine might send it.
    let audio = numbered_le(1, 10);
    for chunk in audio.chunks(998) {
        h.binary(chunk.to_vec());
    }
    h.run_until(at(300));
    let played: Vec<_> = h.to_leg.iter().filter_map(|(_, f)| number_be(f)).collect();
    assert_eq!(played, (1..=10).collect::<Vec<_>>());
    for pair in h.to_leg.windows(2) {
        assert_eq!(pair[1].0 - pair[0].0, PTIME);
    }
}

#[test]
fn a_full_queue_stops_reading_the_client_until_it_falls_below_80_percent() {
    let mut h = Harness::sln(true);
    h.events();
    // max_queue_ms 200: ten frames fill it.
    h.binary(numbered_le(1, 9));
    assert!(h.core.wants_client());
    assert!(h.events().is_empty());
    h.binary(numbered_le(10, 1));
    assert!(!h.core.wants_client(), "backpressure at the maximum");
    assert_eq!(
        h.events(),
        [serde_json::json!({"type":"xoff","queued_ms":200})]
    );
    // Nine, then eight frames queued: still at or above 80 %.
    h.run_until(at(40));
    assert!(!h.core.wants_client());
    assert!(h.events().is_empty());
    // Seven: below 80 %, the client is read again.
    h.run_until(at(60));
    assert!(h.core.wants_client());
    assert_eq!(
        h.events(),
        [serde_json::json!({"type":"xon","queued_ms":140})]
    );
    // Nothing the client sent was dropped.
    h.binary(numbered_le(11, 1));
    h.run_until(at(400));
    let played: Vec<_> = h.to_leg.iter().filter_map(|(_, f)| number_be(f)).collect();
    assert_eq!(played, (1..=11).collect::<Vec<_>>());
}

#[test]
fn drained_is_said_each_time_the_queue_runs_empty_after_audio() {
    let mut h = Harness::sln(true);
    h.events();
    h.run_until(at(100));
    assert!(h.events().is_empty(), "silence alone drains nothing");
    h.binary(numbered_le(1, 3));
    h.run_until(at(140));
    assert!(h.events().is_empty(), "two of three frames played");
    h.run_until(at(160));
    assert_eq!(types(&h.events()), ["drained"]);
    h.run_until(at(300));
    assert!(h.events().is_empty(), "once per emptying");
    h.binary(numbered_le(4, 2));
    h.run_until(at(400));
    assert_eq!(types(&h.events()), ["drained"]);
}

#[test]
fn pause_plays_silence_and_keeps_the_queue_and_its_marks() {
    let mut h = Harness::sln(true);
    h.events();
    h.binary(numbered_le(1, 4));
    h.text(r#"{"type":"mark","name":"m"}"#);
    h.run_until(at(40));
    h.text(r#"{"type":"pause"}"#);
    h.run_until(at(200));
    assert!(h.events().is_empty(), "the mark waits while paused");
    assert_eq!(h.core.queued_frames(), 2);
    h.text(r#"{"type":"status"}"#);
    let status = h.events();
    assert_eq!(status[0]["paused"], true);
    assert_eq!(status[0]["queued_ms"], 40);
    assert_eq!(status[0]["frames_to_asterisk"], 10);
    h.text(r#"{"type":"resume"}"#);
    h.run_until(at(260));
    assert_eq!(types(&h.events()), ["mark", "drained"]);
    let played: Vec<_> = h.to_leg.iter().map(|(_, f)| number_be(f)).collect();
    let mut expected = vec![Some(1), Some(2)];
    expected.extend(std::iter::repeat_n(None, 8));
    expected.extend([Some(3), Some(4), None]);
    assert_eq!(played, expected);
}

#[test]
fn status_is_answered_even_without_events() {
    let mut h = Harness::sln(false);
    for _ in 0..3 {
        h.core.handle_leg(h.now, &[0; SLIN_FRAME]);
    }
    h.run_until(at(60));
    h.drain_client();
    for _ in 0..(CLIENT_RING_FRAMES + 2) {
        h.core.handle_leg(h.now, &[0; SLIN_FRAME]);
    }
    h.text(r#"{"type":"status"}"#);
    assert_eq!(
        h.events(),
        [serde_json::json!({
            "type": "status", "queued_ms": 0, "paused": false,
            "frames_to_client": 30, "frames_to_asterisk": 3, "frames_dropped": 2,
        })]
    );
}

#[test]
fn a_mark_is_reported_when_the_audio_before_it_has_been_sent() {
    let mut h = Harness::sln(true);
    h.events();
    h.binary(numbered_le(1, 5));
    h.text(r#"{"type":"mark","name":"after-five"}"#);
    h.binary(numbered_le(6, 3));
    h.text(r#"{"type":"mark","name":"after-eight"}"#);
    h.run_until(at(80));
    assert!(h.events().is_empty(), "four frames sent, the mark waits");
    h.run_until(at(100));
    assert_eq!(
        h.events(),
        [serde_json::json!({"type":"mark","name":"after-five"})]
    );
    h.run_until(at(160));
    assert_eq!(h.events()[0]["name"], "after-eight");
}

#[test]
fn clear_drops_queued_audio_at_once_and_releases_pending_marks() {
    let mut h = Harness::sln(true);
    h.events();
    h.binary(numbered_le(1, 9));
    h.text(r#"{"type":"mark","name":"m"}"#);
    h.run_until(at(40));
    h.text(r#"{"type":"clear"}"#);
    assert_eq!(types(&h.events()), ["cleared"]);
    assert_eq!(h.core.queued_frames(), 0);
    h.run_until(at(60));
    assert_eq!(
        types(&h.events()),
        ["mark"],
        "the pending mark passes at once"
    );
    assert_eq!(number_be(&h.to_leg.last().expect("frame").1), None);
}

#[test]
fn dtmf_both_ways() {
    let mut h = Harness::sln(true);
    h.events();
    h.text(r#"{"type":"dtmf","digits":"12#"}"#);
    assert_eq!(h.core.poll_action(), Some(Action::Dtmf("12#".into())));
    assert_eq!(h.core.poll_action(), None);
    h.core.handle_signal(h.now, Signal::Dtmf("5".into()));
    assert_eq!(h.events(), [serde_json::json!({"type":"dtmf","digit":"5"})]);
    // A flood of requests the session does not take is bounded, and counted.
    for _ in 0..MAX_PENDING_ACTIONS + 3 {
        h.text(r#"{"type":"dtmf","digits":"1"}"#);
    }
    assert_eq!(h.core.take_stats().dtmf_backlog, 3);
}

#[test]
fn a_slow_client_loses_the_oldest_audio_and_it_is_counted() {
    let mut h = Harness::sln(false);
    for n in 1..=30u8 {
        h.core.handle_leg(h.now, &[0, n]);
    }
    let out = h.drain_client();
    assert_eq!(out.len(), CLIENT_RING_FRAMES);
    assert_eq!(out[0], Outbound::Binary(Bytes::from_static(&[6, 0])));
    let stats = h.core.take_stats();
    assert_eq!((stats.client_slow, stats.to_client), (5, 30));
}

#[test]
fn events_are_never_dropped_but_a_client_that_reads_none_is_ended() {
    let mut h = Harness::sln(true);
    for _ in 0..MAX_PENDING_EVENTS {
        h.core.handle_signal(h.now, Signal::Dtmf("1".into()));
    }
    assert_eq!(
        h.core.ended(),
        Some(&EndReason::Overflow(
            "the client is not reading its events".into()
        ))
    );
    assert_eq!(h.close_code(), Some(1008));
}

#[test]
fn the_token_expires_on_time() {
    let mut c = config(Encapsulation::Sln, Format::Slin, true);
    c.expires_at = Some(at(1_005));
    let mut h = Harness::new(c);
    h.run_until(at(1_004));
    assert!(h.core.ended().is_none());
    h.run_until(at(1_005));
    assert_eq!(h.core.ended(), Some(&EndReason::TokenExpired));
    let last = h.events();
    assert_eq!(
        last.last(),
        Some(&serde_json::json!({"type":"stopped","reason":"error"}))
    );
    h.core.end(EndReason::Client);
    assert_eq!(h.core.ended(), Some(&EndReason::TokenExpired), "first wins");
    assert_eq!(h.core.poll_timeout(), None);
}

/// Something that ends a stream, with the close code and `stopped` reason it must give.
type EndCase = (Box<dyn Fn(&mut Harness)>, u16, &'static str);

#[test]
fn every_end_has_its_close_code_and_stopped_reason() {
    let cases: Vec<EndCase> = vec![
        (Box::new(|h| h.client(Inbound::Close)), 1000, "client"),
        (Box::new(|h| h.text(r#"{"type":"stop"}"#)), 1000, "client"),
        (
            Box::new(|h| h.core.handle_signal(h.now, Signal::End(EndReason::Hangup))),
            1000,
            "hangup",
        ),
        (
            Box::new(|h| h.core.end(EndReason::Shutdown)),
            1001,
            "shutdown",
        ),
        (Box::new(|h| h.text("not json")), 1007, "error"),
        (Box::new(|h| h.binary(vec![1, 2, 3])), 1007, "error"),
        (
            Box::new(|h| h.client(Inbound::Malformed("not UTF-8".into()))),
            1007,
            "error",
        ),
        (Box::new(|h| h.client(Inbound::TooLarge)), 1009, "error"),
        (
            Box::new(|h| h.binary(vec![0; MAX_MESSAGE_BYTES + 2])),
            1009,
            "error",
        ),
        (
            Box::new(|h| h.core.end(EndReason::Failure("x".into()))),
            1011,
            "error",
        ),
    ];
    for (i, (act, code, reason)) in cases.into_iter().enumerate() {
        let mut h = Harness::sln(true);
        h.events();
        act(&mut h);
        let out = h.drain_client();
        let n = out.len();
        assert!(n >= 2, "case {i}: {out:?}");
        assert_eq!(
            out[n - 2],
            Outbound::Text(format!(r#"{{"type":"stopped","reason":"{reason}"}}"#).into()),
            "case {i}"
        );
        assert!(
            matches!(&out[n - 1], Outbound::Close { code: c, reason } if *c == code && reason.len() <= 123),
            "case {i}: {:?}",
            out[n - 1]
        );
        // Nothing more once ended: no frames, no input taken.
        assert!(!h.core.wants_client() && h.core.poll_to_leg().is_none());
    }
}

#[test]
fn too_many_pending_marks_end_the_stream() {
    let mut h = Harness::sln(false);
    for i in 0..=MAX_PENDING_MARKS {
        h.text(&format!(r#"{{"type":"mark","name":"m{i}"}}"#));
    }
    assert_eq!(h.close_code(), Some(1008));
}

#[test]
fn a_closed_leg_waits_for_the_session_to_say_why() {
    let mut h = Harness::sln(false);
    h.run_until(at(20));
    h.core.handle_leg_closed();
    assert!(!h.core.is_running() && !h.core.wants_client());
    // Asked once, whatever else the stream had for the session.
    assert_eq!(h.core.poll_action(), Some(Action::LegClosed));
    h.core.handle_leg_closed();
    assert_eq!(h.core.poll_action(), None);
    // No time of its own: the session decides, however long it takes.
    assert_eq!(h.core.poll_timeout(), None);
    h.run_until(at(5_000));
    assert!(h.core.ended().is_none());
    assert_eq!(h.to_leg.len(), 1, "no frames towards a closed leg");
    h.core
        .handle_signal(at(5_000), Signal::End(EndReason::Hangup));
    assert_eq!(h.close_code(), Some(1000));
}

#[test]
fn rtp_from_the_client_is_reordered_and_bad_packets_are_counted() {
    let mut h = Harness::new(config(Encapsulation::Rtp, Format::Slin, false));
    let packet = |seq: u16, pt: u8, number: i16| {
        let header = rtp::RtpHeader {
            marker: false,
            payload_type: pt,
            sequence: seq,
            timestamp: u32::from(seq) * 160,
            ssrc: 9,
        };
        let payload: Vec<u8> = std::iter::repeat_n(number, 160)
            .flat_map(i16::to_be_bytes)
            .collect();
        let mut buf = vec![0; rtp::HEADER_LEN + payload.len()];
        rtp::write(&header, &payload, &mut buf).expect("fits");
        buf
    };
    for (seq, number) in [(100, 1), (102, 3), (101, 2), (101, 2), (103, 4)] {
        h.binary(packet(seq, CLIENT_PT_L16, number));
    }
    h.binary(packet(104, CLIENT_PT_ULAW, 5));
    h.binary(vec![0x80]);
    h.run_until(at(200));
    let played: Vec<_> = h.to_leg.iter().filter_map(|(_, f)| number_be(f)).collect();
    assert_eq!(played, [1, 2, 3, 4]);
    assert_eq!(h.core.take_stats().bad_client_rtp, 2);
}

#[test]
fn audiosocket_from_the_client() {
    let frame = |kind: u8, payload: &[u8]| {
        let mut f = vec![kind];
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        f.extend_from_slice(payload);
        f
    };
    let audiosocket = || Harness::new(config(Encapsulation::Audiosocket, Format::Slin, false));

    // Two audio frames and a digit in one message.
    let mut h = audiosocket();
    let mut message = frame(0x10, &numbered_le(1, 1));
    message.extend(frame(0x03, b"7"));
    message.extend(frame(0x10, &numbered_le(2, 1)));
    h.binary(message);
    assert_eq!(h.core.poll_action(), Some(Action::Dtmf("7".into())));
    h.run_until(at(60));
    let played: Vec<_> = h.to_leg.iter().filter_map(|(_, f)| number_be(f)).collect();
    assert_eq!(played, [1, 2]);

    // A hangup frame ends the stream as the client's close.
    let mut h = audiosocket();
    h.binary(frame(0x00, &[]));
    assert_eq!(h.core.ended(), Some(&EndReason::Client));

    // Audio at another rate, a partial frame, a digit that is not one: malformed.
    for bad in [
        frame(0x12, &[0; 640]),
        frame(0x10, &[0; 10])[..8].to_vec(),
        frame(0x03, b"x"),
        frame(0xff, &[1]),
    ] {
        let mut h = audiosocket();
        h.binary(bad);
        assert_eq!(h.close_code(), Some(1007));
    }
}

#[test]
fn sln_audio_must_be_whole_samples_unless_it_is_ulaw() {
    let mut h = Harness::sln(false);
    h.binary(vec![0; 3]);
    assert_eq!(h.close_code(), Some(1007));

    let mut h = Harness::new(config(Encapsulation::Sln, Format::Ulaw, false));
    h.binary(vec![0xff; 161]);
    assert!(h.core.ended().is_none());
    assert_eq!(
        h.core.queued_frames(),
        1,
        "161 μ-law bytes: one whole frame"
    );
}

fn twilio_core() -> Harness {
    let mut c = config(Encapsulation::Twilio, Format::Ulaw, false);
    c.spec.parameters.insert("bot".into(), "echo".into());
    Harness::new(c)
}

/// The JSON of every text message waiting for the client.
fn texts(h: &mut Harness) -> Vec<serde_json::Value> {
    h.events()
}

#[test]
fn twilio_opens_with_connected_and_start_then_numbers_media() {
    let mut h = twilio_core();
    for _ in 0..2 {
        h.core.handle_leg(h.now, &[0; SLIN_FRAME]);
    }
    let out = texts(&mut h);
    assert_eq!(out[0]["event"], "connected");
    assert_eq!(out[1]["event"], "start");
    assert_eq!(out[1]["sequenceNumber"], "1");
    assert_eq!(out[1]["start"]["callSid"], "call-1");
    assert_eq!(out[1]["start"]["accountSid"], "AC1");
    assert_eq!(out[1]["start"]["customParameters"]["bot"], "echo");
    let sid = uuid::Uuid::from_u128(7).to_string();
    assert_eq!(out[1]["streamSid"], sid.as_str());
    for (k, media) in out[2..].iter().enumerate() {
        assert_eq!(media["event"], "media");
        assert_eq!(media["sequenceNumber"], (k + 2).to_string().as_str());
        assert_eq!(media["media"]["chunk"], (k + 1).to_string().as_str());
        assert_eq!(media["media"]["timestamp"], (k * 20).to_string().as_str());
        let payload = media["media"]["payload"].as_str().expect("base64");
        use base64::Engine;
        let ulaw = base64::engine::general_purpose::STANDARD
            .decode(payload)
            .expect("base64");
        assert_eq!(ulaw, vec![0xff; 160], "160 B of μ-law silence");
    }
    assert_eq!(out.len(), 4);
}

#[test]
fn twilio_media_is_played_and_marks_come_back_after_it() {
    use base64::Engine;
    let mut h = twilio_core();
    texts(&mut h);
    let ulaw: Vec<u8> = (0..480)
        .map(|i| if i < 320 { 0x10 } else { 0x20 })
        .collect();
    let payload = base64::engine::general_purpose::STANDARD.encode(&ulaw);
    h.text(&format!(
        r#"{{"event":"media","streamSid":"x","media":{{"payload":"{payload}"}}}}"#
    ));
    h.text(r#"{"event":"mark","streamSid":"x","mark":{"name":"said"}}"#);
    h.text(r#"{"event":"start","start":{}}"#);
    assert_eq!(h.core.take_stats().ignored, 1);
    h.run_until(at(40));
    assert!(texts(&mut h).is_empty(), "two of three frames played");
    h.run_until(at(60));
    let mark = texts(&mut h);
    assert_eq!(mark[0]["event"], "mark");
    assert_eq!(mark[0]["mark"]["name"], "said");
    assert_eq!(mark[0]["sequenceNumber"], "2");
    // The three frames reached Asterisk as audio (the leg is big-endian slin).
    let loud = h
        .to_leg
        .iter()
        .filter(|(_, f)| f.iter().any(|b| *b != 0))
        .count();
    assert_eq!(loud, 3);
}

#[test]
fn twilio_sequence_numbers_follow_the_order_the_client_receives() {
    use base64::Engine;
    let mut h = twilio_core();
    texts(&mut h);
    // Audio from the call waits for a client that has not read yet ...
    for _ in 0..5 {
        h.core.handle_leg(h.now, &[0; SLIN_FRAME]);
    }
    // ... while a mark passes, a digit arrives and the stream ends: each of them overtakes the
    // waiting audio, and the numbers still count up in the order the client gets them.
    let payload = base64::engine::general_purpose::STANDARD.encode([0x10; 160]);
    h.text(&format!(
        r#"{{"event":"media","streamSid":"x","media":{{"payload":"{payload}"}}}}"#
    ));
    h.text(r#"{"event":"mark","streamSid":"x","mark":{"name":"said"}}"#);
    h.core.handle_signal(h.now, Signal::Dtmf("5".into()));
    h.core.handle_leg(h.now, &[0; SLIN_FRAME]);
    h.run_until(at(200));
    let out = texts(&mut h);
    let events: Vec<&str> = out.iter().map(|m| m["event"].as_str().unwrap()).collect();
    assert_eq!(events[..2], ["dtmf", "mark"], "{events:?}");
    assert_eq!(events[2..].iter().filter(|e| **e == "media").count(), 6);
    let numbers: Vec<u64> = out
        .iter()
        .map(|m| m["sequenceNumber"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(numbers, (2..10).collect::<Vec<u64>>(), "{out:?}");
    // Chunks count the call's audio as it came, whatever overtook it.
    let chunks: Vec<&str> = out[2..]
        .iter()
        .map(|m| m["media"]["chunk"].as_str().unwrap())
        .collect();
    assert_eq!(chunks, ["1", "2", "3", "4", "5", "6"]);
    h.core.end(EndReason::Stopped);
    let stop = texts(&mut h);
    assert_eq!(stop[0]["event"], "stop");
    assert_eq!(stop[0]["sequenceNumber"], "10");
}

#[test]
fn twilio_clear_releases_marks_and_stop_ends_with_1000() {
    use base64::Engine;
    let mut h = twilio_core();
    texts(&mut h);
    let payload = base64::engine::general_purpose::STANDARD.encode(vec![0x10; 1600]);
    h.text(&format!(
        r#"{{"event":"media","media":{{"payload":"{payload}"}}}}"#
    ));
    h.text(r#"{"event":"mark","mark":{"name":"m"}}"#);
    h.run_until(at(40));
    h.text(r#"{"event":"clear"}"#);
    h.run_until(at(60));
    assert_eq!(
        texts(&mut h)[0]["event"],
        "mark",
        "the pending mark, at once"
    );
    h.core.handle_signal(h.now, Signal::Dtmf("5".into()));
    assert_eq!(texts(&mut h)[0]["dtmf"]["digit"], "5");
    h.core.handle_signal(h.now, Signal::End(EndReason::Hangup));
    let out = h.drain_client();
    let Outbound::Text(stop) = &out[0] else {
        panic!("{out:?}")
    };
    let stop: serde_json::Value = serde_json::from_str(stop).expect("json");
    assert_eq!(stop["event"], "stop");
    assert_eq!(stop["stop"]["callSid"], "call-1");
    assert!(matches!(out[1], Outbound::Close { code: 1000, .. }));
}

#[test]
fn twilio_refuses_binary_and_malformed_messages_with_1007() {
    for bad in [
        Inbound::Binary(Bytes::from_static(&[1, 2, 3])),
        Inbound::Text("not json".into()),
        Inbound::Text(r#"{"event":"media","media":{"payload":"%%%"}}"#.into()),
    ] {
        let mut h = twilio_core();
        h.client(bad);
        assert_eq!(h.close_code(), Some(1007));
    }
}

#[test]
fn wideband_frames_are_20_ms_at_the_format_rate_in_every_encapsulation() {
    for (format, rate, pt) in [
        (Format::Slin16, 16_000u32, CLIENT_PT_L16_WIDEBAND),
        (Format::Slin48, 48_000, CLIENT_PT_L16_48K),
    ] {
        let samples = (rate / 50) as usize;
        let leg_frame = vec![0u8; 2 * samples];

        // RTP: the format's payload type, big-endian, timestamp + one frame's samples.
        let mut h = Harness::new(config(Encapsulation::Rtp, format, false));
        for _ in 0..2 {
            h.core.handle_leg(h.now, &leg_frame);
        }
        let headers: Vec<_> = h
            .drain_client()
            .into_iter()
            .map(|m| match m {
                Outbound::Binary(b) => {
                    let packet = rtp::parse(&b).expect("rtp");
                    assert_eq!(packet.payload.len(), 2 * samples);
                    packet.header
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(headers.iter().all(|h| h.payload_type == pt));
        assert_eq!(
            headers[1].timestamp,
            headers[0].timestamp.wrapping_add(samples as u32)
        );

        // AudioSocket: the rate's kind, both ways; the leg gets whole frames at that rate.
        let mut h = Harness::new(config(Encapsulation::Audiosocket, format, false));
        h.core.handle_leg(h.now, &leg_frame);
        let kinds: Vec<_> = h
            .drain_client()
            .into_iter()
            .filter_map(|m| match m {
                Outbound::Binary(b) => Some((b[0], b.len() - 3)),
                _ => None,
            })
            .collect();
        let kind = Kind::Audio { rate_hz: rate }.to_byte();
        assert_eq!(kinds, [(0x01, 16), (kind, 2 * samples)]);
        let mut message = Vec::new();
        for _ in 0..3 {
            message.push(kind);
            message.extend_from_slice(&((2 * samples) as u16).to_be_bytes());
            message.extend(std::iter::repeat_n(1u8, 2 * samples));
        }
        h.binary(message);
        h.run_until(at(200));
        assert!(h.to_leg.iter().all(|(_, f)| f.len() == 2 * samples));
        assert!(h.to_leg.iter().any(|(_, f)| f.iter().all(|&b| b == 1)));

        // sln: raw little-endian at the rate; `started` says the rate.
        let mut h = Harness::new(config(Encapsulation::Sln, format, true));
        h.core.handle_leg(h.now, &leg_frame);
        let out = h.drain_client();
        match &out[0] {
            Outbound::Text(t) => {
                let started: serde_json::Value = serde_json::from_str(t).expect("json");
                assert_eq!(started["sample_rate"], rate);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&out[1], Outbound::Binary(b) if b.len() == 2 * samples));
    }
}

#[test]
fn a_client_that_reads_nothing_for_the_stall_time_is_closed_with_1008() {
    // Audio every 20 ms; the client takes nothing.
    let mut h = Harness::sln(false);
    let frame = [0u8; SLIN_FRAME];
    let mut ms = 0;
    while h.core.ended().is_none() && ms < 20_000 {
        ms += 20;
        h.core.handle_leg(at(ms), &frame);
        h.core.handle_timeout(at(ms));
    }
    assert_eq!(h.core.ended(), Some(&EndReason::ClientStalled));
    // The ring fills in half a second, then the stall is counted.
    let full = CLIENT_RING_FRAMES as u64 * 20;
    let stall = CLIENT_STALL.as_millis() as u64;
    assert!(
        (full + stall..=full + stall + 40).contains(&ms),
        "ended at {ms} ms"
    );
    assert_eq!(h.close_code(), Some(1008));

    // A client that takes something now and then is not stalled.
    let mut h = Harness::sln(false);
    for step in 1..=1000u64 {
        h.core.handle_leg(at(step * 20), &frame);
        h.core.handle_timeout(at(step * 20));
        if step % 250 == 0 {
            h.core.poll_to_client();
        }
    }
    assert_eq!(h.core.ended(), None, "20 s with a read every 5 s");
}

#[test]
fn asterisk_out_of_reach_ends_a_stream_only_once_its_audio_stops() {
    let frame = [0u8; SLIN_FRAME];
    // Audio keeps coming: ARI being out of reach is not Asterisk being dead.
    let mut h = Harness::sln(false);
    h.core
        .handle_signal(at(0), Signal::AsteriskUnreachable(true));
    for step in 1..=100u64 {
        h.core.handle_leg(at(step * 20), &frame);
        h.core.handle_timeout(at(step * 20));
        h.drain_client();
    }
    assert_eq!(
        h.core.ended(),
        None,
        "2 s of audio while ARI does not answer"
    );

    // Then the audio stops: the stream ends, 1011, LEG_SILENCE after the last frame.
    let mut ms = 2000;
    while h.core.ended().is_none() && ms < 5000 {
        ms += 20;
        h.core.handle_timeout(at(ms));
    }
    let silence = LEG_SILENCE.as_millis() as u64;
    assert!(
        (2000 + silence..=2000 + silence + 20).contains(&ms),
        "ended at {ms} ms"
    );
    assert!(matches!(h.core.ended(), Some(EndReason::Failure(_))));
    assert_eq!(h.close_code(), Some(1011));

    // Audio that stops while Asterisk answers ends nothing; an answer again clears the state.
    let mut h = Harness::sln(false);
    h.core.handle_leg(at(20), &frame);
    h.core
        .handle_signal(at(40), Signal::AsteriskUnreachable(true));
    h.core
        .handle_signal(at(60), Signal::AsteriskUnreachable(false));
    h.core.handle_timeout(at(3000));
    assert_eq!(h.core.ended(), None);
}
