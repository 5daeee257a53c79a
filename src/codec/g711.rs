//! G.711 μ-law (ITU-T G.711) and 16-bit sample layout helpers.
//!
//! Owns the sample conversions between μ-law bytes and signed linear 16-bit PCM in either byte
//! order. The encoder is the classic bias-0x84 algorithm Asterisk and SoX use (no MIL-STD zero
//! trap, which Asterisk also leaves off), so audio round-trips through Asterisk bit-exactly.
//! It must not resample, mix, buffer or allocate beyond growing the caller's `out`.

/// μ-law for linear 0; what to send when there is nothing to say.
pub const ULAW_SILENCE: u8 = 0xFF;

/// Added before finding the segment so that every segment starts at a power of two.
const BIAS: i32 = 0x84;
/// Largest magnitude that still fits after adding `BIAS` to 15 bits.
const CLIP: i32 = 32635;

/// Decoding is a lookup: it runs for every sample of every call.
static DECODE: [i16; 256] = decode_table();

const fn decode_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = decode_slow(i as u8);
        i += 1;
    }
    table
}

const fn decode_slow(byte: u8) -> i16 {
    // Bytes are sent inverted so that silence-heavy streams have many one bits (line density).
    let u = !byte;
    let exponent = (u >> 4) & 0x07;
    let mantissa = (u & 0x0F) as i32;
    let magnitude = (((mantissa << 3) + BIAS) << exponent) - BIAS;
    // At most 32124, so the cast cannot truncate.
    if u & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

pub fn ulaw_encode(sample: i16) -> u8 {
    // i32 so that -32768 has a magnitude instead of overflowing.
    let sample = i32::from(sample);
    let sign: u8 = if sample < 0 { 0x80 } else { 0 };
    let magnitude = sample.abs().min(CLIP) + BIAS;
    // magnitude is in 132..=32767, so its top bit is bit 7..=14 and the exponent is 0..=7.
    let exponent = (31 - magnitude.leading_zeros()).saturating_sub(7).min(7);
    let mantissa = ((magnitude >> (exponent + 3)) & 0x0F) as u8;
    !(sign | ((exponent as u8) << 4) | mantissa)
}

pub fn ulaw_decode(byte: u8) -> i16 {
    DECODE[usize::from(byte)]
}

/// Each appends to `out` (the caller reuses `out` across frames; no other allocation).
pub fn ulaw_to_slin_le(ulaw: &[u8], out: &mut Vec<u8>) {
    out.reserve(ulaw.len() * 2);
    for &b in ulaw {
        out.extend_from_slice(&ulaw_decode(b).to_le_bytes());
    }
}

/// Appends big-endian samples, the order RTP's L16 payload uses.
pub fn ulaw_to_slin_be(ulaw: &[u8], out: &mut Vec<u8>) {
    out.reserve(ulaw.len() * 2);
    for &b in ulaw {
        out.extend_from_slice(&ulaw_decode(b).to_be_bytes());
    }
}

/// Appends one μ-law byte per little-endian sample; a trailing odd byte is ignored.
pub fn slin_le_to_ulaw(slin: &[u8], out: &mut Vec<u8>) {
    out.reserve(slin.len() / 2);
    for pair in slin.chunks_exact(2) {
        out.push(ulaw_encode(i16::from_le_bytes([pair[0], pair[1]])));
    }
}

/// Appends one μ-law byte per big-endian sample; a trailing odd byte is ignored.
pub fn slin_be_to_ulaw(slin: &[u8], out: &mut Vec<u8>) {
    out.reserve(slin.len() / 2);
    for pair in slin.chunks_exact(2) {
        out.push(ulaw_encode(i16::from_be_bytes([pair[0], pair[1]])));
    }
}

/// Swaps the bytes of every 16-bit sample in place (little-endian <-> big-endian); a trailing
/// odd byte is left alone.
pub fn swap16_in_place(buf: &mut [u8]) {
    for pair in buf.chunks_exact_mut(2) {
        pair.swap(0, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(ulaw_encode(0), ULAW_SILENCE);
        assert_eq!(ulaw_decode(ULAW_SILENCE), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(ulaw_encode(-1), 0x7F);
        // A few entries of the classic Sun/SoX table.
        assert_eq!(ulaw_decode(0x01), -31100);
        assert_eq!(ulaw_decode(0x7E), -8);
        assert_eq!(ulaw_decode(0xFE), 8);
        assert_eq!(ulaw_decode(0x70), -120);
        assert_eq!(ulaw_decode(0xF0), 120);
        assert_eq!(ulaw_encode(1000), 0xCE);
        assert_eq!(ulaw_encode(-1000), 0x4E);
    }

    #[test]
    fn table_matches_formula() {
        for b in 0..=u8::MAX {
            assert_eq!(ulaw_decode(b), decode_slow(b));
        }
    }

    #[test]
    fn decode_is_odd_symmetric() {
        for b in 0..0x80u8 {
            assert_eq!(ulaw_decode(b), -ulaw_decode(b | 0x80));
        }
    }

    #[test]
    fn quantisation_error_is_within_half_a_step() {
        for x in i16::MIN..=i16::MAX {
            let byte = ulaw_encode(x);
            let y = i32::from(ulaw_decode(byte));
            let exponent = u32::from((!byte >> 4) & 0x07);
            // Each segment's step is 2^(exponent+3); decode returns the middle of the step.
            let half_step = 1i32 << (exponent + 2);
            let clipped = i32::from(x).clamp(-CLIP, CLIP);
            assert!(
                (clipped - y).abs() <= half_step,
                "x={x} byte={byte:#04x} y={y}"
            );
        }
    }

    #[test]
    fn encode_is_monotonic() {
        let mut last = ulaw_decode(ulaw_encode(i16::MIN));
        for x in i16::MIN..=i16::MAX {
            let y = ulaw_decode(ulaw_encode(x));
            assert!(y >= last, "x={x}");
            last = y;
        }
    }

    #[test]
    fn encode_decode_is_identity_except_negative_zero() {
        for b in 0..=u8::MAX {
            let again = ulaw_encode(ulaw_decode(b));
            if b == 0x7F {
                // Both 0x7F and 0xFF decode to 0, which encodes as 0xFF.
                assert_eq!(again, 0xFF);
            } else {
                assert_eq!(again, b, "byte {b:#04x}");
            }
        }
    }

    #[test]
    fn layout_helpers() {
        let ulaw = [0xFF, 0x80, 0x00, 0xCE];
        let mut le = vec![0xAA];
        ulaw_to_slin_le(&ulaw, &mut le);
        let mut expected_le = vec![0xAA];
        for s in [0i16, 32124, -32124, ulaw_decode(0xCE)] {
            expected_le.extend_from_slice(&s.to_le_bytes());
        }
        assert_eq!(le, expected_le);

        let mut be = Vec::new();
        ulaw_to_slin_be(&ulaw, &mut be);
        let mut swapped = le[1..].to_vec();
        swap16_in_place(&mut swapped);
        assert_eq!(be, swapped);

        let mut back = vec![0x55];
        slin_le_to_ulaw(&le[1..], &mut back);
        slin_be_to_ulaw(&be, &mut back);
        assert_eq!(back, [0x55, 0xFF, 0x80, 0x00, 0xCE, 0xFF, 0x80, 0x00, 0xCE]);
    }

    #[test]
    fn trailing_odd_byte() {
        let mut out = Vec::new();
        slin_le_to_ulaw(&[0, 0, 0x12], &mut out);
        slin_be_to_ulaw(&[0x12], &mut out);
        assert_eq!(out, [0xFF]);

        let mut buf = [1, 2, 3, 4, 5];
        swap16_in_place(&mut buf);
        assert_eq!(buf, [2, 1, 4, 3, 5]);
        swap16_in_place(&mut []);
    }

    #[test]
    fn slin_byte_orders() {
        let mut out = Vec::new();
        slin_le_to_ulaw(&1000i16.to_le_bytes(), &mut out);
        slin_be_to_ulaw(&1000i16.to_be_bytes(), &mut out);
        assert_eq!(out, [0xCE, 0xCE]);
    }
}
