//! RTP (RFC 3550) fixed header: parsing a received packet, writing an outgoing one, and the
//! per-stream sender counters (sequence, timestamp, marker).
//!
//! Owns only the wire layout. It must not know about sockets, clocks, jitter or codecs: the
//! payload is handed back as a borrowed slice, and the timestamp advances by whatever sample
//! count the caller says it sent. RTCP is not handled here.

/// Length of the fixed header; the only header length this module writes.
pub const HEADER_LEN: usize = 12;

/// RTP version this module speaks; RFC 3550 defines no other in use.
const VERSION: u8 = 2;

/// The fields of the fixed header a relay needs. CSRCs, extensions and padding are parsed past,
/// not kept: Asterisk does not mix for us and we never forward them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    pub marker: bool,
    /// 7 bits on the wire; `write` keeps only the low 7.
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

/// One parsed packet, borrowing its payload from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    pub header: RtpHeader,
    pub payload: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    #[error("RTP packet shorter than the 12-byte fixed header")]
    TooShort,
    #[error("RTP version {0}, expected 2")]
    BadVersion(u8),
    #[error("RTP CSRC list runs past the end of the packet")]
    BadCsrcCount,
    #[error("RTP header extension runs past the end of the packet")]
    BadExtension,
    #[error("RTP padding count is zero or longer than the payload")]
    BadPadding,
}

/// Parses one packet; CSRCs, a header extension and padding are validated and skipped, the
/// payload is what remains.
pub fn parse(buf: &[u8]) -> Result<RtpPacket<'_>, RtpError> {
    let Some(fixed) = buf.first_chunk::<HEADER_LEN>() else {
        return Err(RtpError::TooShort);
    };
    let version = fixed[0] >> 6;
    if version != VERSION {
        return Err(RtpError::BadVersion(version));
    }
    let has_padding = fixed[0] & 0x20 != 0;
    let has_extension = fixed[0] & 0x10 != 0;
    let csrc_count = usize::from(fixed[0] & 0x0f);
    let header = RtpHeader {
        marker: fixed[1] & 0x80 != 0,
        payload_type: fixed[1] & 0x7f,
        sequence: u16::from_be_bytes([fixed[2], fixed[3]]),
        timestamp: u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
        ssrc: u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]),
    };

    // At most 12 + 15 * 4 + 4 + 65535 * 4 bytes: no overflow on any usize >= 32 bits.
    let mut start = HEADER_LEN + 4 * csrc_count;
    if start > buf.len() {
        return Err(RtpError::BadCsrcCount);
    }
    if has_extension {
        // 16-bit profile id, then the extension length in 32-bit words, not counting this word.
        let Some(ext) = buf.get(start..start + 4) else {
            return Err(RtpError::BadExtension);
        };
        let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        start += 4 + 4 * words;
        if start > buf.len() {
            return Err(RtpError::BadExtension);
        }
    }
    let mut end = buf.len();
    if has_padding {
        // The last octet counts the padding, itself included, so zero is malformed.
        let pad = usize::from(buf[end - 1]);
        if pad == 0 || pad > end - start {
            return Err(RtpError::BadPadding);
        }
        end -= pad;
    }
    Ok(RtpPacket {
        header,
        payload: &buf[start..end],
    })
}

/// Writes a 12-byte header (version 2, no padding/extension/CSRC) followed by `payload` into
/// `out`; returns the length written, or None if `out` is too small.
pub fn write(header: &RtpHeader, payload: &[u8], out: &mut [u8]) -> Option<usize> {
    let len = HEADER_LEN.checked_add(payload.len())?;
    let out = out.get_mut(..len)?;
    let (head, body) = out.split_at_mut(HEADER_LEN);
    head[0] = VERSION << 6;
    head[1] = (u8::from(header.marker) << 7) | (header.payload_type & 0x7f);
    head[2..4].copy_from_slice(&header.sequence.to_be_bytes());
    head[4..8].copy_from_slice(&header.timestamp.to_be_bytes());
    head[8..12].copy_from_slice(&header.ssrc.to_be_bytes());
    body.copy_from_slice(payload);
    Some(len)
}

/// Sender state for one outgoing stream: fixed SSRC, sequence +1 per packet (wrapping),
/// timestamp + samples per packet (wrapping), marker set on the first packet only.
#[derive(Debug, Clone)]
pub struct RtpSender {
    /// Identifies this stream to the receiver for its whole life.
    ssrc: u32,
    /// Sequence number the next packet carries; receivers detect loss and reordering by it.
    sequence: u16,
    /// Sampling-clock time of the first sample of the next packet.
    timestamp: u32,
    /// Fixed per stream: we never switch codec mid-stream.
    payload_type: u8,
    /// True until the first header is handed out: the marker flags the start of a talkspurt,
    /// and we send continuously (silence included), so there is only one.
    first: bool,
}

impl RtpSender {
    /// `first_sequence` and `first_timestamp` should be random (RFC 3550 §5.1) — the caller
    /// chooses them because this module has no source of randomness.
    pub fn new(ssrc: u32, first_sequence: u16, first_timestamp: u32, payload_type: u8) -> Self {
        RtpSender {
            ssrc,
            sequence: first_sequence,
            timestamp: first_timestamp,
            payload_type: payload_type & 0x7f,
            first: true,
        }
    }

    /// The header for the next packet carrying `samples` samples, and advances.
    pub fn next_header(&mut self, samples: u32) -> RtpHeader {
        let header = RtpHeader {
            marker: self.first,
            payload_type: self.payload_type,
            sequence: self.sequence,
            timestamp: self.timestamp,
            ssrc: self.ssrc,
        };
        self.first = false;
        self.sequence = self.sequence.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(samples);
        header
    }

    /// Leaves out `packets` packets of `samples` samples in all, as a sender that dropped
    /// them does: the receiver sees the gap in sequence numbers and timestamps.
    pub fn skip(&mut self, packets: u16, samples: u32) {
        self.sequence = self.sequence.wrapping_add(packets);
        self.timestamp = self.timestamp.wrapping_add(samples);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header() -> RtpHeader {
        RtpHeader {
            marker: true,
            payload_type: 0,
            sequence: 0x1234,
            timestamp: 0xdead_beef,
            ssrc: 0x0102_0304,
        }
    }

    fn written(h: &RtpHeader, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0; HEADER_LEN + payload.len()];
        let n = write(h, payload, &mut out).unwrap();
        assert_eq!(n, out.len());
        out
    }

    #[test]
    fn a_skip_leaves_its_gap_in_sequence_and_timestamp() {
        let mut sender = RtpSender::new(7, u16::MAX, u32::MAX - 100, 0);
        let first = sender.next_header(160);
        sender.skip(2, 320);
        let next = sender.next_header(160);
        assert!(first.marker && !next.marker);
        assert_eq!(next.sequence, first.sequence.wrapping_add(3));
        assert_eq!(next.timestamp, first.timestamp.wrapping_add(480));
    }

    #[test]
    fn round_trip() {
        let payload = [0xffu8; 160];
        let buf = written(&header(), &payload);
        let p = parse(&buf).unwrap();
        assert_eq!(p.header, header());
        assert_eq!(p.payload, &payload[..]);
    }

    #[test]
    fn writes_known_bytes() {
        let buf = written(&header(), &[0xaa]);
        assert_eq!(
            buf,
            [
                0x80, 0x80, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 0xaa
            ]
        );
    }

    #[test]
    fn empty_payload_round_trips() {
        let buf = written(&header(), &[]);
        assert_eq!(parse(&buf).unwrap().payload, &[] as &[u8]);
    }

    #[test]
    fn write_refuses_small_buffer_and_allows_larger() {
        let mut out = [0u8; HEADER_LEN + 3];
        assert_eq!(write(&header(), &[1, 2, 3, 4], &mut out), None);
        assert_eq!(write(&header(), &[1, 2], &mut out), Some(HEADER_LEN + 2));
        assert_eq!(write(&header(), &[], &mut out[..11]), None);
    }

    #[test]
    fn write_keeps_seven_bits_of_payload_type() {
        let mut h = header();
        h.payload_type = 0xff;
        h.marker = false;
        let buf = written(&h, &[]);
        assert_eq!(buf[1], 0x7f);
        assert_eq!(parse(&buf).unwrap().header.payload_type, 0x7f);
    }

    #[test]
    fn too_short() {
        for n in 0..HEADER_LEN {
            assert_eq!(parse(&vec![0x80; n]), Err(RtpError::TooShort));
        }
    }

    #[test]
    fn bad_version() {
        let mut buf = written(&header(), &[1]);
        for v in [0u8, 1, 3] {
            buf[0] = (buf[0] & 0x3f) | (v << 6);
            assert_eq!(parse(&buf), Err(RtpError::BadVersion(v)));
        }
    }

    #[test]
    fn csrcs_are_skipped() {
        let mut buf = written(&header(), &[]);
        buf[0] |= 2;
        buf.extend_from_slice(&[9; 8]);
        buf.extend_from_slice(&[7, 7]);
        assert_eq!(parse(&buf).unwrap().payload, &[7, 7]);
    }

    #[test]
    fn csrc_count_past_end() {
        let mut buf = written(&header(), &[0; 7]);
        buf[0] |= 2;
        assert_eq!(parse(&buf), Err(RtpError::BadCsrcCount));
        buf.push(0);
        assert_eq!(parse(&buf).unwrap().payload, &[] as &[u8]);
    }

    #[test]
    fn extension_is_skipped() {
        let mut buf = written(&header(), &[]);
        buf[0] |= 0x10;
        buf.extend_from_slice(&[0xbe, 0xde, 0, 2]);
        buf.extend_from_slice(&[1; 8]);
        buf.extend_from_slice(&[5, 6, 7]);
        let p = parse(&buf).unwrap();
        assert_eq!(p.payload, &[5, 6, 7]);
        assert_eq!(p.header, header());
    }

    #[test]
    fn extension_after_csrcs_is_skipped() {
        let mut buf = written(&header(), &[]);
        buf[0] |= 0x10 | 1;
        buf.extend_from_slice(&[9; 4]);
        buf.extend_from_slice(&[0xbe, 0xde, 0, 1, 1, 1, 1, 1, 42]);
        assert_eq!(parse(&buf).unwrap().payload, &[42]);
    }

    #[test]
    fn extension_header_missing() {
        for extra in 0..4 {
            let mut buf = written(&header(), &vec![0; extra]);
            buf[0] |= 0x10;
            assert_eq!(parse(&buf), Err(RtpError::BadExtension));
        }
    }

    #[test]
    fn extension_body_past_end() {
        let mut buf = written(&header(), &[]);
        buf[0] |= 0x10;
        buf.extend_from_slice(&[0xbe, 0xde, 0, 2]);
        buf.extend_from_slice(&[1; 7]);
        assert_eq!(parse(&buf), Err(RtpError::BadExtension));
        buf.push(1);
        assert_eq!(parse(&buf).unwrap().payload, &[] as &[u8]);
    }

    #[test]
    fn padding_is_stripped() {
        let mut buf = written(&header(), &[1, 2, 3, 0, 0, 3]);
        buf[0] |= 0x20;
        assert_eq!(parse(&buf).unwrap().payload, &[1, 2, 3]);
    }

    #[test]
    fn padding_may_take_the_whole_payload() {
        let mut buf = written(&header(), &[0, 2]);
        buf[0] |= 0x20;
        assert_eq!(parse(&buf).unwrap().payload, &[] as &[u8]);
    }

    #[test]
    fn padding_zero_is_refused() {
        let mut buf = written(&header(), &[1, 0]);
        buf[0] |= 0x20;
        assert_eq!(parse(&buf), Err(RtpError::BadPadding));
    }

    #[test]
    fn padding_longer_than_payload_is_refused() {
        let mut buf = written(&header(), &[1, 3]);
        buf[0] |= 0x20;
        assert_eq!(parse(&buf), Err(RtpError::BadPadding));
    }

    #[test]
    fn padding_with_no_payload_is_refused() {
        // The padding count would have to come from the fixed header itself.
        let mut buf = written(&header(), &[]);
        buf[0] |= 0x20;
        buf[11] = 1;
        assert_eq!(parse(&buf), Err(RtpError::BadPadding));
    }

    #[test]
    fn padding_cannot_eat_the_extension() {
        let mut buf = written(&header(), &[]);
        buf[0] |= 0x30;
        buf.extend_from_slice(&[0xbe, 0xde, 0, 0, 1, 5]);
        assert_eq!(parse(&buf), Err(RtpError::BadPadding));
    }

    #[test]
    fn sender_sequence_timestamp_marker() {
        let mut s = RtpSender::new(7, 10, 1000, 0);
        let a = s.next_header(160);
        let b = s.next_header(160);
        let c = s.next_header(80);
        assert_eq!(
            a,
            RtpHeader {
                marker: true,
                payload_type: 0,
                sequence: 10,
                timestamp: 1000,
                ssrc: 7
            }
        );
        assert_eq!(
            (b.marker, b.sequence, b.timestamp, b.ssrc),
            (false, 11, 1160, 7)
        );
        assert_eq!((c.marker, c.sequence, c.timestamp), (false, 12, 1320));
        assert_eq!(s.next_header(160).timestamp, 1400);
    }

    #[test]
    fn sender_wraps() {
        let mut s = RtpSender::new(1, u16::MAX, u32::MAX - 100, 8);
        let a = s.next_header(160);
        let b = s.next_header(160);
        assert_eq!((a.sequence, a.timestamp), (u16::MAX, u32::MAX - 100));
        assert_eq!((b.sequence, b.timestamp), (0, 59));
        assert!(a.marker && !b.marker);
        assert_eq!(b.payload_type, 8);
    }

    #[test]
    fn sender_marker_only_first_across_many() {
        let mut s = RtpSender::new(1, 0, 0, 0);
        assert!(s.next_header(160).marker);
        for _ in 0..70_000 {
            assert!(!s.next_header(160).marker);
        }
    }

    fn any_header() -> impl Strategy<Value = RtpHeader> {
        (
            any::<bool>(),
            0u8..128,
            any::<u16>(),
            any::<u32>(),
            any::<u32>(),
        )
            .prop_map(
                |(marker, payload_type, sequence, timestamp, ssrc)| RtpHeader {
                    marker,
                    payload_type,
                    sequence,
                    timestamp,
                    ssrc,
                },
            )
    }

    proptest! {
        #[test]
        fn prop_round_trip(h in any_header(), payload in proptest::collection::vec(any::<u8>(), 0..400)) {
            let buf = written(&h, &payload);
            let p = parse(&buf).unwrap();
            prop_assert_eq!(p.header, h);
            prop_assert_eq!(p.payload, &payload[..]);
        }

        #[test]
        fn prop_parse_never_panics_and_payload_is_inside(buf in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(p) = parse(&buf) {
                prop_assert!(p.payload.len() + HEADER_LEN <= buf.len());
            }
        }
    }
}
