//! Audio for media tests: tones, G.711, and a Goertzel detector to tell which frequency a
//! stream carries.

use std::f64::consts::PI;

/// `n` samples of a sine at `freq` Hz, 8 kHz, amplitude `amp`, starting at sample `offset`.
pub fn tone(freq: f64, n: usize, offset: usize, amp: f64) -> Vec<i16> {
    tone_at(8000, freq, n, offset, amp)
}

/// The same at `rate` samples per second.
pub fn tone_at(rate: u32, freq: f64, n: usize, offset: usize, amp: f64) -> Vec<i16> {
    (0..n)
        .map(|i| ((2.0 * PI * freq * (offset + i) as f64 / f64::from(rate)).sin() * amp) as i16)
        .collect()
}

/// Power of `freq` in `samples` (8 kHz), normalised by the samples' total energy: near 1 for
/// a pure tone at `freq` (over whole periods), near 0 for anything else.
pub fn tone_share(samples: &[i16], freq: f64) -> f64 {
    tone_share_at(samples, 8000, freq)
}

/// The same for samples at `rate` per second.
pub fn tone_share_at(samples: &[i16], rate: u32, freq: f64) -> f64 {
    let n = samples.len() as f64;
    let k = 2.0 * (2.0 * PI * freq / f64::from(rate)).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + k * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - k * s1 * s2;
    let energy: f64 = samples.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    if energy == 0.0 {
        return 0.0;
    }
    2.0 * power / (n * energy)
}

pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    (samples.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / samples.len() as f64).sqrt()
}

pub fn slin_le(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

pub fn slin_be(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_be_bytes()).collect()
}

pub fn from_le(bytes: &[u8]) -> Vec<i16> {
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

pub fn from_be(bytes: &[u8]) -> Vec<i16> {
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_be_bytes([b[0], b[1]]))
        .collect()
}

/// Describes what a window of audio is: which of `freqs` dominates, and how loud it is.
pub fn describe(samples: &[i16], freqs: &[f64]) -> String {
    let shares: Vec<String> = freqs
        .iter()
        .map(|f| format!("{f} Hz: {:.2}", tone_share(samples, *f)))
        .collect();
    format!("rms {:.0}, {}", rms(samples), shares.join(", "))
}
