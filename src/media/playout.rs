//! The queue of client audio waiting to be sent to Asterisk: re-chunking into 20 ms frames,
//! the jitter pre-buffer, silence fill, `clear` and marks.
//!
//! Owns the bytes the client has sent and not yet played, where the marks sit in that stream,
//! and whether playback is running or pre-buffering. It must not know the clock (the caller's
//! pacer decides when a frame is due and calls [`Playout::pop_frame`]), touch a socket or
//! transcode: bytes arrive already in the outgoing format. It never drops client audio on its
//! own (SPEC §5: backpressure, not loss); only [`Playout::clear`] does.

use std::collections::VecDeque;
use std::fmt;

/// What [`Playout::pop_frame`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Popped {
    /// Client audio (the tail of a segment ended by a mark may be padded with silence).
    Audio,
    /// Silence only: pre-buffering, underrun, or a wrongly sized output buffer.
    Silence,
}

/// A mark and where it sits in the byte stream.
#[derive(Debug)]
struct Mark {
    /// Stream position (bytes ever pushed when the mark was placed); the mark has passed once
    /// every byte before this position has left the queue.
    at: u64,
    name: String,
}

/// Client audio towards Asterisk, played one frame per [`Playout::pop_frame`].
pub struct Playout {
    frame_bytes: usize,
    /// Byte value of silence in the outgoing format, used for fill and padding.
    silence: u8,
    prebuffer_frames: usize,
    /// Backpressure threshold in whole frames; see [`Playout::has_room`].
    max_queued_frames: usize,
    /// Bytes not yet played, frame boundaries every `frame_bytes` from the front. Reserved
    /// once at construction; a ring, so pushing and popping move no memory around.
    queue: VecDeque<u8>,
    /// Marks not yet reported, in stream order.
    marks: VecDeque<Mark>,
    /// Total bytes ever pushed: the stream position of the back of `queue`. The position of
    /// the front follows as `pushed - queue.len()`, so marks need no adjusting when bytes
    /// leave, and `clear` passes them simply by emptying the queue.
    pushed: u64,
    /// False while pre-buffering: at the start and again after an underrun.
    playing: bool,
    /// Pops spent pre-buffering while audio ahead of a pending mark waited; bounds how long a
    /// short segment can sit below the pre-buffer threshold (see [`Playout::pop_frame`]).
    waited: usize,
}

// By hand: the derived form would print every queued byte.
impl fmt::Debug for Playout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Playout")
            .field("frame_bytes", &self.frame_bytes)
            .field("silence", &self.silence)
            .field("prebuffer_frames", &self.prebuffer_frames)
            .field("max_queued_frames", &self.max_queued_frames)
            .field("queued_bytes", &self.queue.len())
            .field("marks", &self.marks)
            .field("pushed", &self.pushed)
            .field("playing", &self.playing)
            .field("waited", &self.waited)
            .finish()
    }
}

/// Frames of room reserved beyond the pre-buffer when a queue is made.
const RESERVED_FRAMES: usize = 6;

/// Marks usually come one per utterance; room for a few avoids growing on the first ones.
const MARKS_RESERVED: usize = 16;

impl Playout {
    /// `frame_bytes`: bytes per 20 ms frame in the outgoing format (160 for ulaw, 320 for
    /// 16-bit slin); 0 is taken as 1.
    /// `silence`: the byte value that encodes silence in that format (0xFF for ulaw, 0x00 for
    /// slin).
    /// `prebuffer_frames`: frames that must be queued before the first audio frame is played
    /// (jitter pre-buffer), and again after the queue runs dry (underrun).
    /// `max_queued_frames`: capacity; [`Playout::has_room`] is false at or past it (the caller
    /// then stops reading the client: backpressure; nothing is ever dropped by `push`). It is
    /// raised to at least `prebuffer_frames` and 1: below that, backpressure would stop the
    /// client before playback could ever start.
    pub fn new(
        frame_bytes: usize,
        silence: u8,
        prebuffer_frames: usize,
        max_queued_frames: usize,
    ) -> Playout {
        let frame_bytes = frame_bytes.max(1);
        let max_queued_frames = max_queued_frames.max(prebuffer_frames).max(1);
        // Room for the pre-buffer and a few frames more: what a client sending in real time
        // keeps queued. A burst beyond it grows the queue once (a ring keeps its capacity), so
        // a stream costs memory for the audio it has actually queued, not for its maximum.
        let queue = VecDeque::with_capacity(
            max_queued_frames
                .min(prebuffer_frames.saturating_add(RESERVED_FRAMES))
                .saturating_add(1)
                .saturating_mul(frame_bytes),
        );
        Playout {
            frame_bytes,
            silence,
            prebuffer_frames,
            max_queued_frames,
            queue,
            marks: VecDeque::with_capacity(MARKS_RESERVED),
            pushed: 0,
            playing: false,
            waited: 0,
        }
    }

    /// Appends client audio of any length (already in the outgoing format); whole frames are
    /// cut from the stream of bytes, a partial frame waits for more. Never drops anything: if
    /// the caller pushes past what is reserved, the queue grows, once, and keeps that
    /// capacity.
    pub fn push(&mut self, bytes: &[u8]) {
        self.queue.extend(bytes);
        self.pushed = self.pushed.saturating_add(len_u64(bytes.len()));
    }

    /// A mark placed after everything pushed so far: reported by `pop_frame` once the last
    /// byte before it has been played (immediately on the next pop if nothing is queued before
    /// it).
    ///
    /// A mark also ends a segment, so the audio before it is not left waiting for more that
    /// may never come: if the queue runs dry with only part of a frame before the mark, that
    /// part is played padded with silence; and audio stuck below the pre-buffer threshold in
    /// front of a mark starts after `prebuffer_frames` pops anyway.
    pub fn push_mark(&mut self, name: String) {
        self.marks.push_back(Mark {
            at: self.pushed,
            name,
        });
    }

    /// Drops everything queued (including a partial frame) now; returns the number of whole
    /// frames dropped. Marks still pending count as passed and are reported by the next
    /// `pop_frame`, so a client waiting on a mark is not left hanging. Audio pushed afterwards
    /// is pre-buffered again, like a fresh start.
    pub fn clear(&mut self) -> usize {
        let frames = self.queued_frames();
        self.queue.clear();
        self.playing = false;
        self.waited = 0;
        frames
    }

    /// Writes exactly one frame into `out`: audio when playing and a whole frame is queued,
    /// else silence. `out.len()` must equal `frame_bytes`; if not, `out` is filled with
    /// silence, nothing is consumed and `Silence` is returned. Appends to `marks` the names of
    /// the marks this pop passed, in order.
    ///
    /// Playback starts once `prebuffer_frames` whole frames are queued, or, when a mark is
    /// pending, once the audio in front of it has waited `prebuffer_frames` pops. A pop that
    /// finds no whole frame while playing is an underrun: it writes silence and pre-buffering
    /// starts over. The partial frame then left waits for more bytes, unless a mark follows
    /// it (see [`Playout::push_mark`]).
    pub fn pop_frame(&mut self, out: &mut [u8], marks: &mut Vec<String>) -> Popped {
        let popped = if out.len() == self.frame_bytes {
            self.play_into(out)
        } else {
            out.fill(self.silence);
            Popped::Silence
        };
        let front = self.front_position();
        while self.marks.front().is_some_and(|m| m.at <= front) {
            if let Some(mark) = self.marks.pop_front() {
                marks.push(mark.name);
            }
        }
        popped
    }

    /// Whole frames queued (not counting a partial one).
    pub fn queued_frames(&self) -> usize {
        self.queue.len() / self.frame_bytes
    }

    /// Whether the caller may read more from the client: false at or past `max_queued_frames`.
    pub fn has_room(&self) -> bool {
        self.queued_frames() < self.max_queued_frames
    }

    /// True until `prebuffer_frames` are queued, and again after an underrun or a `clear`.
    pub fn is_prebuffering(&self) -> bool {
        !self.playing
    }

    /// Fills `out` (exactly `frame_bytes` long) according to the playback state.
    fn play_into(&mut self, out: &mut [u8]) -> Popped {
        let queued = self.queue.len();
        let front = self.front_position();
        // Bytes queued in front of the nearest pending mark, if any; at most `queued`.
        let before_mark = self.marks.iter().find(|m| m.at > front).map(|m| {
            usize::try_from(m.at - front)
                .unwrap_or(usize::MAX)
                .min(queued)
        });

        if !self.playing {
            let segment_waited = before_mark.is_some() && self.waited >= self.prebuffer_frames;
            if self.queued_frames() >= self.prebuffer_frames || segment_waited {
                self.playing = true;
                self.waited = 0;
            } else {
                if before_mark.is_some() {
                    self.waited = self.waited.saturating_add(1);
                }
                out.fill(self.silence);
                return Popped::Silence;
            }
        }

        if queued >= self.frame_bytes {
            self.take_into(out);
            return Popped::Audio;
        }
        if let Some(n) = before_mark {
            // Only part of a frame is left, and a mark ends it: play it padded rather than
            // hold the mark until the client sends more.
            let (audio, pad) = out.split_at_mut(n);
            self.take_into(audio);
            pad.fill(self.silence);
            return Popped::Audio;
        }
        self.playing = false;
        self.waited = 0;
        out.fill(self.silence);
        Popped::Silence
    }

    /// Moves the first `out.len()` queued bytes into `out` (callers ensure that many are
    /// queued; if not, the rest of `out` is left as it was).
    fn take_into(&mut self, out: &mut [u8]) {
        let n = out.len().min(self.queue.len());
        let (a, b) = self.queue.as_slices();
        let from_a = n.min(a.len());
        let from_b = n - from_a;
        let (to_a, rest) = out.split_at_mut(from_a);
        to_a.copy_from_slice(&a[..from_a]);
        if let (Some(dst), Some(src)) = (rest.get_mut(..from_b), b.get(..from_b)) {
            dst.copy_from_slice(src);
        }
        self.queue.drain(..n);
    }

    /// Stream position of the first queued byte: everything before it has been played or
    /// cleared.
    fn front_position(&self) -> u64 {
        self.pushed.saturating_sub(len_u64(self.queue.len()))
    }
}

fn len_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLIN: usize = 320;
    const ULAW: usize = 160;

    /// Bytes that differ from their neighbours and from silence, so any reordering, loss or
    /// duplication shows.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 + 1).collect()
    }

    fn pop(p: &mut Playout) -> (Popped, Vec<u8>, Vec<String>) {
        let mut out = vec![0xAA; p.frame_bytes];
        let mut marks = Vec::new();
        let popped = p.pop_frame(&mut out, &mut marks);
        (popped, out, marks)
    }

    #[test]
    fn odd_chunks_come_out_as_exact_frames_in_order() {
        let input = pattern(SLIN * 40);
        let mut p = Playout::new(SLIN, 0x00, 0, 100);
        let sizes = [7, 333, 1, 320, 319, 2, 1000, 5];
        let mut offset = 0;
        let mut output = Vec::new();
        for size in sizes.iter().cycle() {
            if offset == input.len() {
                break;
            }
            let end = (offset + size).min(input.len());
            p.push(&input[offset..end]);
            offset = end;
            while p.queued_frames() > 0 {
                let (popped, frame, _) = pop(&mut p);
                assert_eq!(popped, Popped::Audio);
                assert_eq!(frame.len(), SLIN);
                output.extend_from_slice(&frame);
            }
        }
        assert_eq!(output, input);
    }

    #[test]
    fn prebuffer_holds_audio_until_enough_is_queued() {
        let mut p = Playout::new(ULAW, 0xFF, 3, 50);
        assert!(p.is_prebuffering());
        p.push(&pattern(ULAW * 2 + 10));
        for _ in 0..5 {
            let (popped, frame, _) = pop(&mut p);
            assert_eq!(popped, Popped::Silence);
            assert!(frame.iter().all(|&b| b == 0xFF));
        }
        assert_eq!(p.queued_frames(), 2);
        p.push(&pattern(ULAW - 10));
        assert_eq!(p.queued_frames(), 3);
        for _ in 0..3 {
            assert_eq!(pop(&mut p).0, Popped::Audio);
            assert!(!p.is_prebuffering());
        }
    }

    #[test]
    fn underrun_plays_silence_then_prebuffers_again() {
        let mut p = Playout::new(ULAW, 0xFF, 2, 50);
        p.push(&pattern(ULAW * 2));
        assert_eq!(pop(&mut p).0, Popped::Audio);
        assert_eq!(pop(&mut p).0, Popped::Audio);
        // Dry: silence, and back to pre-buffering.
        assert_eq!(pop(&mut p).0, Popped::Silence);
        assert!(p.is_prebuffering());
        // One frame is not enough any more.
        p.push(&pattern(ULAW));
        assert_eq!(pop(&mut p).0, Popped::Silence);
        p.push(&pattern(ULAW));
        assert_eq!(pop(&mut p).0, Popped::Audio);
        assert_eq!(pop(&mut p).0, Popped::Audio);
    }

    #[test]
    fn refilled_before_the_next_pop_is_not_an_underrun() {
        let mut p = Playout::new(ULAW, 0xFF, 2, 50);
        p.push(&pattern(ULAW * 2));
        assert_eq!(pop(&mut p).0, Popped::Audio);
        assert_eq!(pop(&mut p).0, Popped::Audio);
        p.push(&pattern(ULAW));
        assert_eq!(pop(&mut p).0, Popped::Audio);
        assert!(!p.is_prebuffering());
    }

    #[test]
    fn partial_frame_waits_for_more_when_dry() {
        let input = pattern(SLIN + 100 + SLIN);
        let mut p = Playout::new(SLIN, 0x00, 0, 50);
        p.push(&input[..SLIN + 100]);
        assert_eq!(pop(&mut p).1, input[..SLIN]);
        // 100 bytes left: not padded, not dropped.
        assert_eq!(pop(&mut p).0, Popped::Silence);
        assert_eq!(pop(&mut p).0, Popped::Silence);
        p.push(&input[SLIN + 100..]);
        assert_eq!(pop(&mut p).1, input[SLIN..2 * SLIN]);
        // The last 100 bytes wait again; the next push completes their frame.
        assert_eq!(p.queued_frames(), 0);
        assert_eq!(pop(&mut p).0, Popped::Silence);
        let more = pattern(SLIN - 100);
        p.push(&more);
        let (popped, frame, _) = pop(&mut p);
        assert_eq!(popped, Popped::Audio);
        assert_eq!(frame[..100], input[2 * SLIN..]);
        assert_eq!(frame[100..], more);
    }

    #[test]
    fn clear_drops_everything_and_passes_pending_marks() {
        let mut p = Playout::new(SLIN, 0x00, 1, 50);
        p.push(&pattern(SLIN * 3 + 17));
        assert_eq!(pop(&mut p).0, Popped::Audio);
        p.push_mark("end".to_string());
        assert_eq!(p.clear(), 2);
        assert_eq!(p.queued_frames(), 0);
        assert!(p.is_prebuffering());
        let (popped, frame, marks) = pop(&mut p);
        assert_eq!(popped, Popped::Silence);
        assert!(frame.iter().all(|&b| b == 0));
        assert_eq!(marks, ["end"]);
        // The partial frame went too: new audio starts on a frame boundary.
        let fresh = pattern(SLIN);
        p.push(&fresh);
        assert_eq!(pop(&mut p).1, fresh);
        assert_eq!(p.clear(), 0);
    }

    #[test]
    fn marks_are_reported_at_the_pop_that_passes_them() {
        let mut p = Playout::new(SLIN, 0x00, 0, 50);
        p.push(&pattern(SLIN * 2));
        p.push_mark("a".to_string());
        p.push(&pattern(SLIN));
        p.push_mark("b".to_string());
        p.push_mark("c".to_string());
        let (_, _, marks) = pop(&mut p);
        assert!(marks.is_empty());
        let (_, _, marks) = pop(&mut p);
        assert_eq!(marks, ["a"]);
        let (popped, _, marks) = pop(&mut p);
        assert_eq!(popped, Popped::Audio);
        assert_eq!(marks, ["b", "c"]);
        assert!(pop(&mut p).2.is_empty());
    }

    #[test]
    fn mark_inside_a_frame_passes_when_that_frame_plays() {
        let mut p = Playout::new(SLIN, 0x00, 0, 50);
        p.push(&pattern(SLIN + 10));
        p.push_mark("m".to_string());
        p.push(&pattern(SLIN - 10));
        assert!(pop(&mut p).2.is_empty());
        assert_eq!(pop(&mut p).2, ["m"]);
    }

    #[test]
    fn mark_with_nothing_queued_is_reported_on_the_next_pop() {
        let mut p = Playout::new(SLIN, 0x00, 3, 50);
        p.push_mark("now".to_string());
        let (popped, _, marks) = pop(&mut p);
        assert_eq!(popped, Popped::Silence);
        assert_eq!(marks, ["now"]);
        assert!(pop(&mut p).2.is_empty());
    }

    #[test]
    fn partial_frame_before_a_mark_is_padded_when_dry() {
        let input = pattern(SLIN + 100);
        let mut p = Playout::new(SLIN, 0x00, 0, 50);
        p.push(&input);
        p.push_mark("done".to_string());
        assert_eq!(pop(&mut p).1, input[..SLIN]);
        let (popped, frame, marks) = pop(&mut p);
        assert_eq!(popped, Popped::Audio);
        assert_eq!(frame[..100], input[SLIN..]);
        assert!(frame[100..].iter().all(|&b| b == 0));
        assert_eq!(marks, ["done"]);
        assert_eq!(pop(&mut p).0, Popped::Silence);
    }

    #[test]
    fn padding_stops_at_the_mark_and_keeps_what_follows() {
        let input = pattern(150);
        let mut p = Playout::new(SLIN, 0x00, 0, 50);
        p.push(&input[..100]);
        p.push_mark("m".to_string());
        p.push(&input[100..]);
        let (popped, frame, marks) = pop(&mut p);
        assert_eq!(popped, Popped::Audio);
        assert_eq!(frame[..100], input[..100]);
        assert!(frame[100..].iter().all(|&b| b == 0));
        assert_eq!(marks, ["m"]);
        // The 50 bytes after the mark wait for more, as any partial frame does.
        assert_eq!(pop(&mut p).0, Popped::Silence);
        let rest = pattern(SLIN - 50);
        p.push(&rest);
        let (popped, frame, _) = pop(&mut p);
        assert_eq!(popped, Popped::Audio);
        assert_eq!(frame[..50], input[100..]);
        assert_eq!(frame[50..], rest);
    }

    #[test]
    fn short_segment_before_a_mark_does_not_wait_forever_for_the_prebuffer() {
        let mut p = Playout::new(ULAW, 0xFF, 3, 50);
        p.push(&pattern(ULAW));
        p.push_mark("short".to_string());
        // It waits as long as the pre-buffer would have delayed it, then plays.
        for _ in 0..3 {
            let (popped, _, marks) = pop(&mut p);
            assert_eq!(popped, Popped::Silence);
            assert!(marks.is_empty());
        }
        let (popped, _, marks) = pop(&mut p);
        assert_eq!(popped, Popped::Audio);
        assert_eq!(marks, ["short"]);
        assert_eq!(pop(&mut p).0, Popped::Silence);
        assert!(p.is_prebuffering());
    }

    #[test]
    fn has_room_until_capacity() {
        let mut p = Playout::new(ULAW, 0xFF, 2, 4);
        for _ in 0..3 {
            p.push(&pattern(ULAW));
            assert!(p.has_room());
        }
        p.push(&pattern(ULAW - 1));
        assert!(p.has_room(), "a partial frame does not count");
        p.push(&pattern(1));
        assert!(!p.has_room());
        // Past capacity: still taken, never dropped.
        p.push(&pattern(ULAW * 3));
        assert_eq!(p.queued_frames(), 7);
        for _ in 0..4 {
            assert_eq!(pop(&mut p).0, Popped::Audio);
        }
        assert!(p.has_room());
    }

    #[test]
    fn capacity_is_never_below_the_prebuffer() {
        let mut p = Playout::new(ULAW, 0xFF, 5, 2);
        for _ in 0..4 {
            p.push(&pattern(ULAW));
            assert!(p.has_room());
        }
        p.push(&pattern(ULAW));
        assert!(!p.has_room());
        assert_eq!(pop(&mut p).0, Popped::Audio);
    }

    #[test]
    fn ten_second_burst_plays_one_frame_per_pop() {
        let frames = 500;
        let input = pattern(SLIN * frames);
        let mut p = Playout::new(SLIN, 0x00, 3, 600);
        p.push(&input);
        p.push_mark("tts-done".to_string());
        let mut out = vec![0; SLIN];
        let mut marks = Vec::new();
        for i in 0..frames {
            assert_eq!(p.pop_frame(&mut out, &mut marks), Popped::Audio);
            assert_eq!(out, input[i * SLIN..(i + 1) * SLIN]);
            assert_eq!(p.queued_frames(), frames - i - 1);
            assert_eq!(marks.is_empty(), i + 1 < frames);
        }
        assert_eq!(marks, ["tts-done"]);
        assert_eq!(p.pop_frame(&mut out, &mut marks), Popped::Silence);
    }

    #[test]
    fn wrong_output_size_writes_silence_and_consumes_nothing() {
        let mut p = Playout::new(ULAW, 0xFF, 0, 50);
        p.push(&pattern(ULAW));
        let mut marks = Vec::new();
        let mut short = [0u8; 100];
        assert_eq!(p.pop_frame(&mut short, &mut marks), Popped::Silence);
        assert!(short.iter().all(|&b| b == 0xFF));
        let mut long = [0u8; 200];
        assert_eq!(p.pop_frame(&mut long, &mut marks), Popped::Silence);
        assert!(long.iter().all(|&b| b == 0xFF));
        assert_eq!(p.pop_frame(&mut [], &mut marks), Popped::Silence);
        assert_eq!(p.queued_frames(), 1);
        assert_eq!(pop(&mut p).0, Popped::Audio);
    }

    #[test]
    fn degenerate_settings_do_not_panic() {
        let mut p = Playout::new(0, 0x00, 0, 0);
        assert!(p.has_room());
        p.push(&[1, 2, 3]);
        assert_eq!(p.queued_frames(), 3);
        let mut out = [0u8; 1];
        let mut marks = Vec::new();
        assert_eq!(p.pop_frame(&mut out, &mut marks), Popped::Audio);
        assert_eq!(out, [1]);
        p.push(&[]);
        assert_eq!(p.clear(), 2);
    }
}
