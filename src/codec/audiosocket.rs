//! AudioSocket framing (Asterisk `res_audiosocket`): a TCP byte stream of frames, each
//! `kind: u8`, `length: u16` big-endian, then `length` payload bytes.
//!
//! Owns the frame layout and the per-kind length rules. It must not read from or write to the
//! socket, buffer the stream, or interpret audio: `decode` looks at whatever bytes the caller
//! has gathered and says how many it consumed, and `encode` appends to the caller's buffer.

use uuid::Uuid;

/// Kind byte plus the 16-bit length.
pub const HEADER_LEN: usize = 3;

/// Length of a UUID frame's payload: the binary UUID, not its text form.
const UUID_LEN: usize = 16;

/// Sample rates of the signed-linear kinds 0x10..=0x18, indexed by `kind - 0x10`.
const AUDIO_RATES_HZ: [u32; 9] = [
    8_000, 12_000, 16_000, 24_000, 32_000, 44_100, 48_000, 96_000, 192_000,
];
const AUDIO_FIRST: u8 = 0x10;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 0x00: the peer is ending the call; payload normally empty.
    Hangup,
    /// 0x01: the 16-byte call UUID Asterisk sends first.
    Uuid,
    /// 0x03: one DTMF digit as an ASCII byte.
    Dtmf,
    /// 0x10..=0x18: signed linear 16-bit little-endian mono at `rate_hz`.
    Audio { rate_hz: u32 },
    /// 0xff: an error code from Asterisk.
    Error,
}

impl Kind {
    /// The kind for a signed-linear rate, or None when AudioSocket has no kind byte for it.
    pub fn audio(rate_hz: u32) -> Option<Kind> {
        AUDIO_RATES_HZ
            .contains(&rate_hz)
            .then_some(Kind::Audio { rate_hz })
    }

    pub fn from_byte(b: u8) -> Option<Kind> {
        match b {
            0x00 => Some(Kind::Hangup),
            0x01 => Some(Kind::Uuid),
            0x03 => Some(Kind::Dtmf),
            0xff => Some(Kind::Error),
            _ => {
                let rate_hz = *AUDIO_RATES_HZ.get(usize::from(b.checked_sub(AUDIO_FIRST)?))?;
                Some(Kind::Audio { rate_hz })
            }
        }
    }

    /// The kind byte. `Audio` with a rate AudioSocket cannot express (build it with
    /// [`Kind::audio`] to rule that out) is a programming error: it trips a debug assertion and
    /// in release writes 0x10 (8 kHz), the only rate this service sends.
    pub fn to_byte(self) -> u8 {
        match self {
            Kind::Hangup => 0x00,
            Kind::Uuid => 0x01,
            Kind::Dtmf => 0x03,
            Kind::Error => 0xff,
            Kind::Audio { rate_hz } => {
                let index = AUDIO_RATES_HZ.iter().position(|&r| r == rate_hz);
                debug_assert!(index.is_some(), "no AudioSocket kind for {rate_hz} Hz");
                // The index is below 9, so the cast and the addition cannot overflow.
                AUDIO_FIRST + index.unwrap_or(0) as u8
            }
        }
    }
}

/// One frame, borrowing its payload from the caller's receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: Kind,
    pub payload: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AudioSocketError {
    #[error("unknown AudioSocket frame kind 0x{0:02x}")]
    UnknownKind(u8),
    #[error("AudioSocket frame payload of {len} bytes exceeds the limit of {max}")]
    TooLong { len: usize, max: usize },
    #[error("AudioSocket frame kind 0x{kind:02x} cannot have a {len}-byte payload")]
    BadLength { kind: u8, len: usize },
}

/// Decodes one frame from the front of `buf`: Ok(None) when `buf` holds only part of a frame
/// (not an error), Ok(Some((frame, consumed_bytes))) otherwise. `max_payload` bounds the length
/// field (callers pass e.g. 8192).
///
/// Every check that depends only on the header runs before the payload is required, so a peer
/// announcing a bad frame is refused at once instead of making the caller wait and buffer.
/// An error leaves the stream unsynchronised: the caller should drop the connection.
pub fn decode(
    buf: &[u8],
    max_payload: usize,
) -> Result<Option<(Frame<'_>, usize)>, AudioSocketError> {
    let Some(&[kind_byte, len_hi, len_lo]) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let kind = Kind::from_byte(kind_byte).ok_or(AudioSocketError::UnknownKind(kind_byte))?;
    let len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
    if len > max_payload {
        return Err(AudioSocketError::TooLong {
            len,
            max: max_payload,
        });
    }
    let length_ok = match kind {
        Kind::Uuid => len == UUID_LEN,
        Kind::Dtmf => len == 1,
        // Half a sample would shift every later sample by a byte.
        Kind::Audio { .. } => len % 2 == 0,
        Kind::Hangup | Kind::Error => true,
    };
    if !length_ok {
        return Err(AudioSocketError::BadLength {
            kind: kind_byte,
            len,
        });
    }
    let end = HEADER_LEN + len;
    let Some(payload) = buf.get(HEADER_LEN..end) else {
        return Ok(None);
    };
    Ok(Some((Frame { kind, payload }, end)))
}

/// Appends one whole frame (header and payload) to `out`.
///
/// The length field is 16 bits, so a payload longer than 65535 bytes (65534 for audio, to stay
/// whole samples) is truncated to that; 20 ms of audio is at most 7680 bytes, so callers never
/// come near it.
pub fn encode(kind: Kind, payload: &[u8], out: &mut Vec<u8>) {
    let max = match kind {
        Kind::Audio { .. } => usize::from(u16::MAX) - 1,
        _ => usize::from(u16::MAX),
    };
    let payload = &payload[..payload.len().min(max)];
    // Cannot fail: just bounded to u16::MAX.
    let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
    out.reserve(HEADER_LEN + payload.len());
    out.push(kind.to_byte());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
}

/// The 16 payload bytes of a UUID frame as a uuid::Uuid (uuid crate is a dependency).
pub fn uuid_of(frame: &Frame<'_>) -> Option<Uuid> {
    if frame.kind != Kind::Uuid {
        return None;
    }
    Uuid::from_slice(frame.payload).ok()
}

/// The digit of a DTMF frame, if it is one of `0-9 * # A-D` (lower-case letters are upper-cased).
/// `decode` only checks the length, so a garbage byte is refused here, where the digit is used.
pub fn dtmf_of(frame: &Frame<'_>) -> Option<char> {
    if frame.kind != Kind::Dtmf {
        return None;
    }
    let &[b] = frame.payload else {
        return None;
    };
    let c = char::from(b.to_ascii_uppercase());
    matches!(c, '0'..='9' | '*' | '#' | 'A'..='D').then_some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 8192;

    fn all_kinds() -> Vec<Kind> {
        let mut kinds = vec![Kind::Hangup, Kind::Uuid, Kind::Dtmf, Kind::Error];
        kinds.extend(
            AUDIO_RATES_HZ
                .iter()
                .map(|&rate_hz| Kind::Audio { rate_hz }),
        );
        kinds
    }

    fn sample_payload(kind: Kind) -> Vec<u8> {
        match kind {
            Kind::Hangup => vec![],
            Kind::Uuid => (1..=16).collect(),
            Kind::Dtmf => b"5".to_vec(),
            Kind::Audio { rate_hz } => (0..(rate_hz / 50 * 2)).map(|i| i as u8).collect(),
            Kind::Error => vec![0x02],
        }
    }

    #[test]
    fn kind_bytes() {
        let expected: [(u8, Kind); 13] = [
            (0x00, Kind::Hangup),
            (0x01, Kind::Uuid),
            (0x03, Kind::Dtmf),
            (0x10, Kind::Audio { rate_hz: 8_000 }),
            (0x11, Kind::Audio { rate_hz: 12_000 }),
            (0x12, Kind::Audio { rate_hz: 16_000 }),
            (0x13, Kind::Audio { rate_hz: 24_000 }),
            (0x14, Kind::Audio { rate_hz: 32_000 }),
            (0x15, Kind::Audio { rate_hz: 44_100 }),
            (0x16, Kind::Audio { rate_hz: 48_000 }),
            (0x17, Kind::Audio { rate_hz: 96_000 }),
            (0x18, Kind::Audio { rate_hz: 192_000 }),
            (0xff, Kind::Error),
        ];
        for (b, k) in expected {
            assert_eq!(Kind::from_byte(b), Some(k));
            assert_eq!(k.to_byte(), b);
        }
        let known: Vec<u8> = expected.iter().map(|(b, _)| *b).collect();
        for b in 0..=u8::MAX {
            if !known.contains(&b) {
                assert_eq!(Kind::from_byte(b), None, "0x{b:02x}");
            }
        }
    }

    #[test]
    fn audio_constructor() {
        assert_eq!(Kind::audio(8000), Some(Kind::Audio { rate_hz: 8000 }));
        assert_eq!(Kind::audio(44_100), Some(Kind::Audio { rate_hz: 44_100 }));
        assert_eq!(Kind::audio(11_025), None);
    }

    #[test]
    fn round_trip_every_kind() {
        for kind in all_kinds() {
            let payload = sample_payload(kind);
            let mut out = Vec::new();
            encode(kind, &payload, &mut out);
            assert_eq!(out.len(), HEADER_LEN + payload.len());
            let (frame, used) = decode(&out, MAX).unwrap().unwrap();
            assert_eq!(used, out.len());
            assert_eq!(frame.kind, kind);
            assert_eq!(frame.payload, &payload[..]);
        }
    }

    #[test]
    fn known_bytes() {
        let mut out = vec![0xee];
        encode(Kind::Audio { rate_hz: 8000 }, &[1, 2, 3, 4], &mut out);
        encode(Kind::Hangup, &[], &mut out);
        assert_eq!(out, [0xee, 0x10, 0, 4, 1, 2, 3, 4, 0, 0, 0]);
    }

    #[test]
    fn incomplete_at_every_split_is_none() {
        for kind in all_kinds() {
            let mut out = Vec::new();
            encode(kind, &sample_payload(kind), &mut out);
            for cut in 0..out.len() {
                assert_eq!(decode(&out[..cut], MAX), Ok(None), "{kind:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn two_frames_back_to_back() {
        let id = Uuid::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let mut out = Vec::new();
        encode(Kind::Uuid, id.as_bytes(), &mut out);
        encode(Kind::Audio { rate_hz: 8000 }, &[0; 320], &mut out);
        out.extend_from_slice(&[0x10, 0x01]); // start of a third frame

        let (first, n1) = decode(&out, MAX).unwrap().unwrap();
        assert_eq!(n1, 19);
        assert_eq!(uuid_of(&first), Some(id));
        let (second, n2) = decode(&out[n1..], MAX).unwrap().unwrap();
        assert_eq!(n2, 323);
        assert_eq!(second.kind, Kind::Audio { rate_hz: 8000 });
        assert_eq!(second.payload.len(), 320);
        assert_eq!(decode(&out[n1 + n2..], MAX), Ok(None));
    }

    #[test]
    fn unknown_kind() {
        assert_eq!(
            decode(&[0x02, 0, 0], MAX),
            Err(AudioSocketError::UnknownKind(0x02))
        );
        assert_eq!(
            decode(&[0x19, 0, 0], MAX),
            Err(AudioSocketError::UnknownKind(0x19))
        );
    }

    #[test]
    fn too_long_is_refused_before_the_payload_arrives() {
        assert_eq!(
            decode(&[0x10, 0xff, 0xfe], MAX),
            Err(AudioSocketError::TooLong {
                len: 0xfffe,
                max: MAX
            })
        );
        let mut at_limit = vec![0x10, 0x20, 0x00];
        assert_eq!(decode(&at_limit, MAX), Ok(None));
        at_limit.resize(HEADER_LEN + MAX, 0);
        assert!(decode(&at_limit, MAX).unwrap().is_some());
        assert_eq!(
            decode(&[0x00, 0, 1], 0),
            Err(AudioSocketError::TooLong { len: 1, max: 0 })
        );
    }

    #[test]
    fn bad_lengths_are_refused_from_the_header() {
        let cases = [
            (0x01, 15),
            (0x01, 17),
            (0x01, 0),
            (0x03, 0),
            (0x03, 2),
            (0x10, 1),
            (0x18, 161),
        ];
        for (kind, len) in cases {
            let [hi, lo] = (len as u16).to_be_bytes();
            assert_eq!(
                decode(&[kind, hi, lo], MAX),
                Err(AudioSocketError::BadLength { kind, len }),
                "kind 0x{kind:02x} len {len}"
            );
        }
    }

    #[test]
    fn hangup_and_error_take_any_length() {
        assert!(decode(&[0x00, 0, 2, 9, 9], MAX).unwrap().is_some());
        assert!(decode(&[0xff, 0, 0], MAX).unwrap().is_some());
    }

    #[test]
    fn uuid_of_only_uuid_frames() {
        let bytes = [7u8; 16];
        let uuid = Frame {
            kind: Kind::Uuid,
            payload: &bytes,
        };
        assert_eq!(uuid_of(&uuid), Some(Uuid::from_bytes(bytes)));
        assert_eq!(
            uuid_of(&Frame {
                kind: Kind::Error,
                payload: &bytes
            }),
            None
        );
        assert_eq!(
            uuid_of(&Frame {
                kind: Kind::Uuid,
                payload: &bytes[..15]
            }),
            None
        );
    }

    #[test]
    fn dtmf_digits() {
        let digit = |b: u8| {
            dtmf_of(&Frame {
                kind: Kind::Dtmf,
                payload: &[b],
            })
        };
        assert_eq!(digit(b'7'), Some('7'));
        assert_eq!(digit(b'#'), Some('#'));
        assert_eq!(digit(b'b'), Some('B'));
        assert_eq!(digit(b'E'), None);
        assert_eq!(digit(0xc3), None);
        assert_eq!(
            dtmf_of(&Frame {
                kind: Kind::Hangup,
                payload: b"1"
            }),
            None
        );
        assert_eq!(
            dtmf_of(&Frame {
                kind: Kind::Dtmf,
                payload: b"12"
            }),
            None
        );
    }

    #[test]
    fn encode_truncates_to_the_length_field() {
        let big = vec![1u8; 70_000];
        let mut out = Vec::new();
        encode(Kind::Error, &big, &mut out);
        assert_eq!(&out[..3], &[0xff, 0xff, 0xff]);
        assert_eq!(out.len(), HEADER_LEN + 65_535);
        out.clear();
        encode(Kind::Audio { rate_hz: 8000 }, &big, &mut out);
        assert_eq!(out.len(), HEADER_LEN + 65_534);
        let (frame, _) = decode(&out, usize::MAX).unwrap().unwrap();
        assert_eq!(frame.payload.len(), 65_534);
    }
}
