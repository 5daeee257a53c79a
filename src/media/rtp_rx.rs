//! Receive-side ordering of the RTP packets a client sends: duplicates dropped, reordering
//! within a small window, 16-bit sequence wrap, and re-synchronisation when a client restarts
//! its sequence.
//!
//! Owns the expected next sequence number, the packets held while an earlier one is missing
//! and the loss and duplicate counts. It must not parse RTP headers (the codec does; this
//! gets the sequence number and payload), know the clock, or decide pacing: what it releases
//! goes to the playout queue, which plays it on the pacer's schedule.

use std::fmt;

/// What [`RtpReorder::push`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Taken: it will come out of [`RtpReorder::drain`] in order.
    Fresh,
    /// Refused: already released or already held.
    Duplicate,
    /// Refused: older than the last released packet (including one already given up as
    /// lost), the first packet of a possible sequence restart not yet confirmed, or no slot
    /// free because `drain` was not called after the previous push.
    TooLate,
}

/// Largest reorder window accepted: 64 packets is 1.28 s at 20 ms, far more than any jitter
/// worth waiting for, and the size of the bitmap that tells duplicates from late packets.
const MAX_WINDOW: usize = 64;
/// Largest payload kept: the most a UDP datagram can carry.
const MAX_PAYLOAD: usize = 65_535;
/// A packet further ahead than this (60 s at 20 ms) is not taken as loss but as a possible
/// sequence restart; the value RFC 3550 appendix A.1 suggests.
const MAX_DROPOUT: i32 = 3000;
/// A packet further behind than this (2 s at 20 ms) is not taken as late but as a possible
/// sequence restart; also from RFC 3550 appendix A.1.
const MAX_MISORDER: i32 = 100;

/// One preallocated packet buffer.
struct Slot {
    used: bool,
    sequence: u16,
    /// Bytes of `buf` in use; at most `buf.len()`.
    len: usize,
    buf: Box<[u8]>,
}

/// Puts a client's RTP payloads back in sequence order.
pub struct RtpReorder {
    /// Most packets held waiting for a missing earlier one before it is given up.
    window: usize,
    /// `window + 1` buffers: after `drain` at most `window` are held, so a push always finds
    /// one free. Allocated once; packets are copied in, never allocated.
    slots: Vec<Slot>,
    /// Sequence number of the next packet to release; `None` until the first packet.
    next: Option<u16>,
    /// Bit `i` set when sequence `next - 1 - i` was released (not skipped): tells a duplicate
    /// of a released packet from a late arrival of one given up as lost.
    released: u64,
    /// The sequence number that would confirm a restart: the one after a packet that landed
    /// far from `next`. A single stray packet does not move the stream; two in a row do.
    restart_probe: Option<u16>,
    lost: u64,
    duplicates: u64,
}

// By hand: the derived form would print every buffer.
impl fmt::Debug for RtpReorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RtpReorder")
            .field("window", &self.window)
            .field("held", &self.held())
            .field("next", &self.next)
            .field("restart_probe", &self.restart_probe)
            .field("lost", &self.lost)
            .field("duplicates", &self.duplicates)
            .finish_non_exhaustive()
    }
}

impl RtpReorder {
    /// `window`: how many packets may be held waiting for a missing earlier one (e.g. 2 = 40
    /// ms; at most 64, and 0 means no reordering: a gap is skipped at once). `max_payload`:
    /// largest payload kept (at most 65535); longer payloads are cut to it.
    pub fn new(window: usize, max_payload: usize) -> RtpReorder {
        let window = window.min(MAX_WINDOW);
        let max_payload = max_payload.min(MAX_PAYLOAD);
        let slots = (0..=window)
            .map(|_| Slot {
                used: false,
                sequence: 0,
                len: 0,
                buf: vec![0; max_payload].into_boxed_slice(),
            })
            .collect();
        RtpReorder {
            window,
            slots,
            next: None,
            released: 0,
            restart_probe: None,
            lost: 0,
            duplicates: 0,
        }
    }

    /// Offers one packet; returns whether it was taken. Duplicates (already released or
    /// already held) and packets older than the last released one are refused. The first
    /// packet sets the starting point. Call [`RtpReorder::drain`] after each push.
    ///
    /// Sequence restarts: a packet more than 3000 ahead or 100 behind is refused, but if the
    /// next packet offered is its successor, the stream re-synchronises on that one (packets
    /// still held from before are dropped and counted lost). This follows RFC 3550 A.1, so a
    /// client restarting its sequence costs one packet instead of stalling.
    pub fn push(&mut self, sequence: u16, payload: &[u8]) -> Accept {
        let next = *self.next.get_or_insert(sequence);
        // Reinterpreting the wrapped difference as signed gives the distance in -32768..32767.
        let delta = i32::from(sequence.wrapping_sub(next) as i16);

        if !(-MAX_MISORDER..=MAX_DROPOUT).contains(&delta) {
            if self.restart_probe != Some(sequence) {
                self.restart_probe = Some(sequence.wrapping_add(1));
                return Accept::TooLate;
            }
            self.resync(sequence);
        } else if delta < 0 {
            // `delta` is in -100..=-1 here, so `age` is in 0..=99.
            let age = u32::try_from(-delta - 1).unwrap_or(u32::MAX);
            let was_released = self
                .released
                .checked_shr(age)
                .is_some_and(|bits| bits & 1 == 1);
            return if was_released {
                self.duplicates = self.duplicates.saturating_add(1);
                Accept::Duplicate
            } else {
                Accept::TooLate
            };
        }

        if self.slots.iter().any(|s| s.used && s.sequence == sequence) {
            self.duplicates = self.duplicates.saturating_add(1);
            return Accept::Duplicate;
        }
        let Some(slot) = self.slots.iter_mut().find(|s| !s.used) else {
            // Only when the caller skipped `drain`: refusing the newcomer keeps the order
            // guarantees intact.
            return Accept::TooLate;
        };
        let n = payload.len().min(slot.buf.len());
        if let (Some(dst), Some(src)) = (slot.buf.get_mut(..n), payload.get(..n)) {
            dst.copy_from_slice(src);
        }
        slot.len = n;
        slot.sequence = sequence;
        slot.used = true;
        // A packet that fits the stream means the earlier stray one was just that.
        self.restart_probe = None;
        Accept::Fresh
    }

    /// Releases the next payloads in sequence order into `out` (called once per payload, in
    /// order): every payload that is next in sequence; and when more than `window` packets
    /// are held, skips the gap (counted in [`RtpReorder::lost`]) and releases the oldest held
    /// ones, so a lost packet does not stall the stream.
    pub fn drain(&mut self, mut out: impl FnMut(&[u8])) {
        let Some(mut next) = self.next else {
            return;
        };
        loop {
            if let Some(slot) = self.slots.iter_mut().find(|s| s.used && s.sequence == next) {
                out(slot.buf.get(..slot.len).unwrap_or_default());
                slot.used = false;
                next = next.wrapping_add(1);
                self.released = (self.released << 1) | 1;
                continue;
            }
            if self.held() <= self.window {
                break;
            }
            // Everything held is ahead of `next` (within MAX_DROPOUT), so the smallest wrapped
            // distance is the oldest held packet.
            let Some(gap) = self
                .slots
                .iter()
                .filter(|s| s.used)
                .map(|s| s.sequence.wrapping_sub(next))
                .min()
            else {
                break;
            };
            self.lost = self.lost.saturating_add(u64::from(gap));
            self.released = self.released.checked_shl(u32::from(gap)).unwrap_or(0);
            next = next.wrapping_add(gap);
        }
        self.next = Some(next);
    }

    /// Packets skipped as lost.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Packets refused as duplicates.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    fn held(&self) -> usize {
        self.slots.iter().filter(|s| s.used).count()
    }

    /// Starts the stream over at `sequence`, dropping what the old one left held.
    fn resync(&mut self, sequence: u16) {
        for slot in self.slots.iter_mut().filter(|s| s.used) {
            slot.used = false;
            self.lost = self.lost.saturating_add(1);
        }
        self.next = Some(sequence);
        self.released = 0;
        self.restart_probe = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A payload that names its sequence number, so the order of release is visible.
    fn payload(sequence: u16) -> [u8; 2] {
        sequence.to_be_bytes()
    }

    fn push(r: &mut RtpReorder, sequence: u16) -> Accept {
        r.push(sequence, &payload(sequence))
    }

    fn drain(r: &mut RtpReorder) -> Vec<u16> {
        let mut got = Vec::new();
        r.drain(|p| got.push(u16::from_be_bytes([p[0], p[1]])));
        got
    }

    /// Pushes each packet and drains after it, as the relay does; returns all released.
    fn feed(r: &mut RtpReorder, sequences: &[u16]) -> Vec<u16> {
        let mut got = Vec::new();
        for &s in sequences {
            push(r, s);
            got.extend(drain(r));
        }
        got
    }

    #[test]
    fn in_order_packets_pass_straight_through() {
        let mut r = RtpReorder::new(2, 320);
        for s in 1000..1010 {
            assert_eq!(push(&mut r, s), Accept::Fresh);
            assert_eq!(drain(&mut r), [s]);
        }
        assert_eq!(r.lost(), 0);
        assert_eq!(r.duplicates(), 0);
    }

    #[test]
    fn payload_bytes_are_kept_exactly() {
        let mut r = RtpReorder::new(2, 320);
        let a: Vec<u8> = (0..=255).chain(0..64).collect();
        let b = [7u8; 160];
        let c = [9u8; 1];
        r.push(1, &a);
        r.push(3, &c);
        r.push(2, &b);
        let mut got = Vec::new();
        r.drain(|p| got.push(p.to_vec()));
        assert_eq!(got, [a, b.to_vec(), c.to_vec()]);
    }

    #[test]
    fn swapped_pair_is_put_back_in_order() {
        let mut r = RtpReorder::new(2, 320);
        assert_eq!(feed(&mut r, &[10, 11]), [10, 11]);
        assert_eq!(push(&mut r, 13), Accept::Fresh);
        assert!(drain(&mut r).is_empty());
        assert_eq!(push(&mut r, 12), Accept::Fresh);
        assert_eq!(drain(&mut r), [12, 13]);
        assert_eq!(r.lost(), 0);
    }

    #[test]
    fn duplicates_of_released_and_held_packets_are_refused() {
        let mut r = RtpReorder::new(2, 320);
        assert_eq!(feed(&mut r, &[1, 2]), [1, 2]);
        assert_eq!(push(&mut r, 2), Accept::Duplicate);
        assert_eq!(push(&mut r, 1), Accept::Duplicate);
        assert_eq!(push(&mut r, 4), Accept::Fresh);
        assert_eq!(push(&mut r, 4), Accept::Duplicate);
        assert!(drain(&mut r).is_empty());
        assert_eq!(r.duplicates(), 3);
        assert_eq!(feed(&mut r, &[3]), [3, 4]);
    }

    #[test]
    fn first_packet_sets_the_start() {
        let mut r = RtpReorder::new(2, 320);
        assert_eq!(feed(&mut r, &[500]), [500]);
        assert_eq!(push(&mut r, 499), Accept::TooLate);
        assert_eq!(r.duplicates(), 0);
    }

    #[test]
    fn packet_older_than_the_last_released_is_too_late() {
        let mut r = RtpReorder::new(2, 320);
        feed(&mut r, &[10, 11, 12]);
        assert_eq!(push(&mut r, 5), Accept::TooLate);
        assert_eq!(push(&mut r, 9), Accept::TooLate);
        assert!(drain(&mut r).is_empty());
        assert_eq!(r.duplicates(), 0);
    }

    #[test]
    fn loss_longer_than_the_window_is_skipped() {
        let mut r = RtpReorder::new(2, 320);
        assert_eq!(feed(&mut r, &[1]), [1]);
        // 2 is lost: 3 and 4 wait for it (the window), 5 gives up on it.
        assert_eq!(feed(&mut r, &[3, 4]), Vec::<u16>::new());
        assert_eq!(feed(&mut r, &[5]), [3, 4, 5]);
        assert_eq!(r.lost(), 1);
        // When it finally comes it is too late, not a duplicate.
        assert_eq!(push(&mut r, 2), Accept::TooLate);
        assert_eq!(feed(&mut r, &[6]), [6]);
    }

    #[test]
    fn skipping_releases_the_oldest_and_keeps_waiting_for_later_gaps() {
        let mut r = RtpReorder::new(2, 320);
        feed(&mut r, &[1]);
        // 2 and 4 missing; 3, 5, 6 held: 2 is given up, 3 released, then 4 may still come.
        assert_eq!(feed(&mut r, &[3, 5, 6]), [3]);
        assert_eq!(r.lost(), 1);
        assert_eq!(feed(&mut r, &[4]), [4, 5, 6]);
        assert_eq!(r.lost(), 1);
    }

    #[test]
    fn a_burst_of_losses_is_counted() {
        let mut r = RtpReorder::new(2, 320);
        feed(&mut r, &[100]);
        assert_eq!(feed(&mut r, &[150, 151, 152]), [150, 151, 152]);
        assert_eq!(r.lost(), 49);
    }

    #[test]
    fn zero_window_skips_gaps_at_once() {
        let mut r = RtpReorder::new(0, 320);
        assert_eq!(feed(&mut r, &[1, 3, 2, 4]), [1, 3, 4]);
        assert_eq!(r.lost(), 1);
    }

    #[test]
    fn sequence_wraps_at_65535() {
        let mut r = RtpReorder::new(2, 320);
        assert_eq!(
            feed(&mut r, &[65533, 65534, 65535, 0, 1]),
            [65533, 65534, 65535, 0, 1]
        );
        // Reordered across the wrap.
        let mut r = RtpReorder::new(2, 320);
        assert_eq!(feed(&mut r, &[65534, 0, 65535, 1]), [65534, 65535, 0, 1]);
        // Lost across the wrap.
        let mut r = RtpReorder::new(2, 320);
        assert_eq!(feed(&mut r, &[65534, 0, 1, 2]), [65534, 0, 1, 2]);
        assert_eq!(r.lost(), 1);
        assert_eq!(push(&mut r, 65535), Accept::TooLate);
        assert_eq!(push(&mut r, 0), Accept::Duplicate);
    }

    #[test]
    fn huge_jump_forward_resynchronises() {
        let mut r = RtpReorder::new(2, 320);
        assert_eq!(feed(&mut r, &[100, 101, 102]), [100, 101, 102]);
        // The client restarts its sequence far ahead: the first packet alone is not trusted,
        // its successor confirms the restart.
        assert_eq!(push(&mut r, 40_000), Accept::TooLate);
        assert!(drain(&mut r).is_empty());
        assert_eq!(push(&mut r, 40_001), Accept::Fresh);
        assert_eq!(drain(&mut r), [40_001]);
        assert_eq!(
            feed(&mut r, &[40_002, 40_004, 40_003]),
            [40_002, 40_003, 40_004]
        );
        assert_eq!(r.lost(), 0);
        // The old stream's packets are now far behind.
        assert_eq!(push(&mut r, 103), Accept::TooLate);
    }

    #[test]
    fn huge_jump_backward_resynchronises() {
        let mut r = RtpReorder::new(2, 320);
        feed(&mut r, &[30_000, 30_001]);
        assert_eq!(push(&mut r, 5), Accept::TooLate);
        assert_eq!(push(&mut r, 6), Accept::Fresh);
        assert_eq!(feed(&mut r, &[7, 8]), [6, 7, 8]);
    }

    #[test]
    fn restart_drops_what_the_old_stream_left_held() {
        let mut r = RtpReorder::new(2, 320);
        feed(&mut r, &[1, 3]);
        assert_eq!(feed(&mut r, &[20_000, 20_001]), [20_001]);
        assert_eq!(r.lost(), 1);
    }

    #[test]
    fn a_single_stray_packet_does_not_move_the_stream() {
        let mut r = RtpReorder::new(2, 320);
        feed(&mut r, &[10]);
        assert_eq!(push(&mut r, 50_000), Accept::TooLate);
        assert_eq!(feed(&mut r, &[11, 12]), [11, 12]);
        // The probe was cleared by the in-sequence packets.
        assert_eq!(push(&mut r, 50_001), Accept::TooLate);
        assert_eq!(feed(&mut r, &[13]), [13]);
        assert_eq!(r.lost(), 0);
    }

    #[test]
    fn long_payloads_are_cut_to_max_payload() {
        let mut r = RtpReorder::new(2, 4);
        assert_eq!(r.push(1, &[1, 2, 3, 4, 5, 6]), Accept::Fresh);
        let mut got = Vec::new();
        r.drain(|p| got.push(p.to_vec()));
        assert_eq!(got, [vec![1, 2, 3, 4]]);
    }

    #[test]
    fn pushing_without_draining_never_overflows() {
        let mut r = RtpReorder::new(2, 320);
        push(&mut r, 0);
        assert_eq!(push(&mut r, 2), Accept::Fresh);
        assert_eq!(push(&mut r, 3), Accept::Fresh);
        // Three slots taken (0 not yet drained): the fourth is refused, order is kept.
        assert_eq!(push(&mut r, 4), Accept::TooLate);
        assert_eq!(drain(&mut r), [0]);
        assert_eq!(feed(&mut r, &[1]), [1, 2, 3]);
        assert_eq!(r.lost(), 0);
    }

    #[test]
    fn drain_before_any_packet_releases_nothing() {
        let mut r = RtpReorder::new(2, 320);
        assert!(drain(&mut r).is_empty());
        let mut r = RtpReorder::new(usize::MAX, usize::MAX);
        assert_eq!(feed(&mut r, &[1, 2]), [1, 2]);
    }

    #[test]
    fn long_random_reordering_within_the_window_loses_nothing() {
        // Swap neighbours pseudo-randomly (displacement at most one), across several wraps.
        let mut r = RtpReorder::new(2, 320);
        let mut order: Vec<u16> = (0..200_000u32).map(|i| (i % 65_536) as u16).collect();
        let mut state: u64 = 1;
        let mut i = 0;
        while i + 1 < order.len() {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            if (state >> 40).is_multiple_of(3) {
                order.swap(i, i + 1);
                i += 2;
            } else {
                i += 1;
            }
        }
        let got = feed(&mut r, &order);
        assert_eq!(got.len(), 200_000);
        assert!(
            got.iter()
                .zip(&got[1..])
                .all(|(a, b)| b.wrapping_sub(*a) == 1)
        );
        assert_eq!(r.lost(), 0);
        assert_eq!(r.duplicates(), 0);
    }
}
