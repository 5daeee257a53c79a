//! Sample layouts and conversion between them: μ-law, 16-bit little-endian and big-endian
//! signed linear. Pure; appends to the caller's buffer.

use crate::codec::g711;

/// How samples are laid out in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleFormat {
    Ulaw,
    SlinLe,
    SlinBe,
}

impl SampleFormat {
    /// Bytes per sample.
    pub fn sample_bytes(self) -> usize {
        match self {
            SampleFormat::Ulaw => 1,
            SampleFormat::SlinLe | SampleFormat::SlinBe => 2,
        }
    }

    /// The byte that encodes silence (every byte of a silent frame).
    pub fn silence(self) -> u8 {
        match self {
            SampleFormat::Ulaw => g711::ULAW_SILENCE,
            SampleFormat::SlinLe | SampleFormat::SlinBe => 0,
        }
    }
}

/// Appends `input`, in `from`, to `out` in `to`. A trailing odd byte of linear input is dropped.
pub fn convert(from: SampleFormat, to: SampleFormat, input: &[u8], out: &mut Vec<u8>) {
    use SampleFormat::*;
    match (from, to) {
        (Ulaw, Ulaw) => out.extend_from_slice(input),
        (SlinLe, SlinLe) | (SlinBe, SlinBe) => {
            out.extend_from_slice(&input[..input.len() & !1]);
        }
        (SlinLe, SlinBe) | (SlinBe, SlinLe) => {
            let start = out.len();
            out.extend_from_slice(&input[..input.len() & !1]);
            g711::swap16_in_place(&mut out[start..]);
        }
        (Ulaw, SlinLe) => g711::ulaw_to_slin_le(input, out),
        (Ulaw, SlinBe) => g711::ulaw_to_slin_be(input, out),
        (SlinLe, Ulaw) => g711::slin_le_to_ulaw(input, out),
        (SlinBe, Ulaw) => g711::slin_be_to_ulaw(input, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SampleFormat::*;

    #[test]
    fn every_pair_round_trips_through_linear() {
        let samples: Vec<i16> = (0..160)
            .map(|i| ((i as f32 * 0.3).sin() * 8000.0) as i16)
            .collect();
        let le: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        for via in [Ulaw, SlinLe, SlinBe] {
            let mut mid = Vec::new();
            convert(SlinLe, via, &le, &mut mid);
            assert_eq!(mid.len(), 160 * via.sample_bytes());
            let mut back = Vec::new();
            convert(via, SlinLe, &mid, &mut back);
            for (a, b) in le.chunks(2).zip(back.chunks(2)) {
                let (a, b) = (
                    i16::from_le_bytes([a[0], a[1]]),
                    i16::from_le_bytes([b[0], b[1]]),
                );
                // μ-law keeps about 3% of the magnitude; linear is exact.
                assert!((i32::from(a) - i32::from(b)).abs() <= i32::from(a).abs() / 16 + 8);
            }
        }
    }

    #[test]
    fn endianness_swaps_and_odd_bytes_are_dropped() {
        let mut out = Vec::new();
        convert(SlinLe, SlinBe, &[1, 2, 3, 4, 5], &mut out);
        assert_eq!(out, [2, 1, 4, 3]);
        assert_eq!(Ulaw.silence(), 0xFF);
        assert_eq!(SlinBe.silence(), 0);
    }
}
