//! Pure audio conversion for `play`: any PCM or float WAV to 8 kHz mono signed linear.
//!
//! Owns decoding samples to floats, downmixing and resampling. Touches no socket and no clock;
//! the only IO is the `Read` the caller hands to [`load_wav`].

use std::io::Read;

use rubato::audioadapter::Adapter;
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

/// Why a file cannot be played; each says what is wrong with the file, in one line.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("not a readable WAV file: {0}")]
    Wav(#[from] hound::Error),
    #[error("unsupported WAV sample format: {0}")]
    Unsupported(String),
    #[error("the file holds no audio")]
    Empty,
    #[error("cannot resample from {rate} Hz: {message}")]
    Resample { rate: u32, message: String },
}

/// Reads a whole WAV file (8, 16, 24 or 32-bit integer PCM, or 32-bit float, any rate, any
/// number of channels) and returns it as mono floats in [-1, 1] with its sample rate.
pub fn load_wav<R: Read>(input: R) -> Result<(Vec<f32>, u32), AudioError> {
    let mut reader = hound::WavReader::new(input)?;
    let spec = reader.spec();
    let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Int, bits @ (8 | 16 | 24 | 32)) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.map(|s| s as f32 * scale))
                .collect::<Result<_, _>>()?
        }
        (hound::SampleFormat::Float, 32) => reader.samples::<f32>().collect::<Result<_, _>>()?,
        (format, bits) => {
            return Err(AudioError::Unsupported(format!("{bits}-bit {format:?}")));
        }
    };
    let mono = downmix(&interleaved, usize::from(spec.channels));
    if mono.is_empty() {
        return Err(AudioError::Empty);
    }
    Ok((mono, spec.sample_rate))
}

/// The mean of each frame's channels. A trailing partial frame is dropped.
pub fn downmix(interleaved: &[f32], channels: usize) -> Vec<f32> {
    if channels <= 1 {
        return interleaved.to_vec();
    }
    interleaved
        .chunks_exact(channels)
        .map(|frame| frame.iter().sum::<f32>() / channels as f32)
        .collect()
}

/// `mono` at `rate` resampled to `target` Hz (with an anti-aliasing filter, so downsampling a
/// 44.1 kHz file does not fold its highs into the telephone band).
pub fn resample(mono: &[f32], rate: u32, target: u32) -> Result<Vec<f32>, AudioError> {
    if rate == target {
        return Ok(mono.to_vec());
    }
    let fail = |message: String| AudioError::Resample { rate, message };
    let mut resampler = Fft::<f32>::new(rate as usize, target as usize, 1024, 1, FixedSync::Input)
        .map_err(|e| fail(e.to_string()))?;
    let input = InterleavedSlice::new(mono, 1, mono.len()).map_err(|e| fail(e.to_string()))?;
    let output = resampler
        .process_all(&input, mono.len(), None)
        .map_err(|e| fail(e.to_string()))?;
    Ok((0..output.frames())
        .map(|i| output.read_sample(0, i).unwrap_or(0.0))
        .collect())
}

/// A float sample in [-1, 1] as 16-bit signed linear, clipped.
pub fn to_i16(x: f32) -> i16 {
    (x * 32767.0).round().clamp(-32768.0, 32767.0) as i16
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f32::consts::PI;
    use std::io::Cursor;

    fn wav(
        spec: hound::WavSpec,
        write: impl FnOnce(&mut hound::WavWriter<&mut Cursor<Vec<u8>>>),
    ) -> Vec<u8> {
        let mut buf = Cursor::new(Vec::new());
        let mut writer = hound::WavWriter::new(&mut buf, spec).expect("writer");
        write(&mut writer);
        writer.finalize().expect("finalize");
        buf.into_inner()
    }

    #[test]
    fn downmix_averages_channels() {
        assert_eq!(downmix(&[1.0, 0.0, 0.5, 0.5, 0.2], 2), vec![0.5, 0.5]);
        assert_eq!(downmix(&[0.1, 0.2], 1), vec![0.1, 0.2]);
    }

    #[test]
    fn int_formats_scale_to_unit_range() {
        for bits in [8u16, 16, 24, 32] {
            let spec = hound::WavSpec {
                channels: 1,
                sample_rate: 8000,
                bits_per_sample: bits,
                sample_format: hound::SampleFormat::Int,
            };
            let half = 1i32 << (bits - 2);
            let bytes = wav(spec, |w| {
                w.write_sample(half).expect("write");
                w.write_sample(-half).expect("write");
            });
            let (mono, rate) = load_wav(Cursor::new(bytes)).expect("load");
            assert_eq!(rate, 8000);
            assert_eq!(mono, vec![0.5, -0.5], "{bits}-bit");
        }
    }

    #[test]
    fn float_stereo_44k1_becomes_8k_mono_of_the_same_tone() {
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 44_100,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let n = 44_100;
        let bytes = wav(spec, |w| {
            for i in 0..n {
                let s = 0.5 * (2.0 * PI * 600.0 * i as f32 / 44_100.0).sin();
                w.write_sample(s).expect("write");
                w.write_sample(s).expect("write");
            }
        });
        let (mono, rate) = load_wav(Cursor::new(bytes)).expect("load");
        let out = resample(&mono, rate, 8000).expect("resample");
        assert!(
            (out.len() as i64 - 8000).abs() <= 8,
            "{} samples",
            out.len()
        );
        // Correlate with 600 Hz: a pure tone of amplitude 0.5 gives 0.25.
        let (mut re, mut im) = (0.0f64, 0.0f64);
        for (i, &s) in out[800..7200].iter().enumerate() {
            let phase = 2.0 * std::f64::consts::PI * 600.0 * i as f64 / 8000.0;
            re += f64::from(s) * phase.cos();
            im += f64::from(s) * phase.sin();
        }
        let amplitude = 2.0 * (re * re + im * im).sqrt() / 6400.0;
        assert!((amplitude - 0.5).abs() < 0.05, "amplitude {amplitude}");
    }

    #[test]
    fn unsupported_and_empty_files_are_errors() {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        assert!(matches!(
            load_wav(Cursor::new(wav(spec, |_| {}))),
            Err(AudioError::Empty)
        ));
        assert!(matches!(
            load_wav(Cursor::new(b"RIFF....".to_vec())),
            Err(AudioError::Wav(_))
        ));
    }

    #[test]
    fn to_i16_clips() {
        assert_eq!(to_i16(2.0), 32767);
        assert_eq!(to_i16(-2.0), -32768);
        assert_eq!(to_i16(0.0), 0);
    }
}
