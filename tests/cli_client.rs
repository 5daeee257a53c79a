//! The command-line client (`ari-mediastream-cli`, SPEC §10) run as a separate process against
//! the service and a real call: what it records, what the call hears when it plays, and its
//! exit statuses.

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use common::audio::{describe, tone_share, tone_share_at};
use common::client::Enc;
use common::listeners::call_voice;
use common::*;

const CLI: &str = env!("CARGO_BIN_EXE_ari-mediastream-cli");

/// The client pointed at `service`, with the API key in the environment.
fn cli(service: &Service) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(CLI);
    cmd.env("MEDIASTREAM_URL", format!("http://{}", service.addr))
        .env("MEDIASTREAM_TOKEN", API_KEY)
        .kill_on_drop(true);
    cmd
}

async fn run(mut cmd: tokio::process::Command, limit: Duration) -> (Output, Duration) {
    let start = Instant::now();
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .expect("the client finishes in time")
        .expect("the client runs");
    (out, start.elapsed())
}

fn temp_wav(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{}-{name}.wav", unique_id("ms-cli-client")))
}

/// The best `freq` share over half-second windows: where in the capture the tone is does not
/// matter, only that it is clearly there.
fn best_share(samples: &[i16], freq: f64) -> f64 {
    samples
        .windows(4000)
        .step_by(800)
        .map(|w| tone_share(w, freq))
        .fold(0.0, f64::max)
}

#[tokio::test]
async fn record_writes_two_seconds_of_the_call_tone() {
    let service = Service::start(test_settings()).await;
    let call = call(&service, "tone").await;
    let out = temp_wav("record");

    let mut cmd = cli(&service);
    cmd.args(["record", "--call", &call, "--seconds", "2"])
        .arg(&out);
    let (output, took) = run(cmd, Duration::from_secs(15)).await;
    assert!(
        output.status.success(),
        "record failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let mut reader = hound::WavReader::open(&out).expect("a valid WAV");
    let spec = reader.spec();
    assert_eq!(
        (
            spec.channels,
            spec.sample_rate,
            spec.bits_per_sample,
            spec.sample_format
        ),
        (1, 8000, 16, hound::SampleFormat::Int)
    );
    let samples: Vec<i16> = reader
        .samples::<i16>()
        .map(|s| s.expect("sample"))
        .collect();
    let seconds = samples.len() as f64 / 8000.0;
    let share = tone_share(&samples[5600..], 1000.0);
    println!(
        "record: {seconds:.3} s of audio in {took:?}; 1000 Hz share after 0.7 s {share:.3}; {}",
        describe(&samples[5600..], &[600.0, 1000.0])
    );
    assert!((1.8..=2.2).contains(&seconds), "{seconds} s recorded");
    assert!(share > 0.8, "1000 Hz share {share}");
    let _ = std::fs::remove_file(&out);
}

/// `--format slin16` on a wideband call: a 16 kHz WAV holding the call's 5000 Hz tone, and a
/// 5000 Hz file played into a wideband `Echo()` call heard back whole.
#[tokio::test]
async fn wideband_record_and_play() {
    let service = Service::start(test_settings()).await;
    let call = call_with(&service, "tone16", Some("slin16")).await;
    let out = temp_wav("record16");
    let mut cmd = cli(&service);
    cmd.args([
        "record",
        "--call",
        &call,
        "--format",
        "slin16",
        "--seconds",
        "2",
    ])
    .arg(&out);
    let (output, _) = run(cmd, Duration::from_secs(15)).await;
    assert!(
        output.status.success(),
        "record failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut reader = hound::WavReader::open(&out).expect("a valid WAV");
    assert_eq!(reader.spec().sample_rate, 16_000);
    let samples: Vec<i16> = reader
        .samples::<i16>()
        .map(|s| s.expect("sample"))
        .collect();
    let seconds = samples.len() as f64 / 16_000.0;
    let share = tone_share_at(&samples[samples.len() / 2..], 16_000, 5000.0);
    println!("record --format slin16: {seconds:.3} s at 16 kHz; 5000 Hz share {share:.3}");
    assert!((1.8..=2.2).contains(&seconds), "{seconds} s recorded");
    assert!(share > 0.9, "5000 Hz share {share}");
    let _ = std::fs::remove_file(&out);

    let echo = call_with(&service, "echo", Some("slin16")).await;
    let input = temp_wav("play16");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 44_100,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(&input, spec).expect("create");
    for i in 0..(44_100 * 3 / 2) {
        let s = 10_000.0 * (2.0 * std::f32::consts::PI * 5000.0 * i as f32 / 44_100.0).sin();
        writer.write_sample(s as i16).expect("write");
    }
    writer.finalize().expect("finalize");
    let mut ear = call_voice(&service, &echo, "slin16").await;
    let mut cmd = cli(&service);
    cmd.args(["play", "--call", &echo, "--format", "slin16"])
        .arg(&input);
    let (heard, (output, _)) = tokio::join!(
        ear.listen(Duration::from_secs(4)),
        run(cmd, Duration::from_secs(15))
    );
    assert!(
        output.status.success(),
        "play failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let best = heard
        .windows(8000)
        .step_by(1600)
        .map(|w| tone_share_at(w, 16_000, 5000.0))
        .fold(0.0, f64::max);
    println!("play --format slin16 into echo: best 5000 Hz share {best:.3}");
    assert!(best > 0.8, "5000 Hz share {best}");
    drop(ear);
    let _ = std::fs::remove_file(&input);
    service.stop().await;
}

#[tokio::test]
async fn play_into_an_echo_call_is_heard_and_exits_after_the_file() {
    let service = Service::start(test_settings()).await;
    let call = call(&service, "echo").await;

    // 1.5 s of 600 Hz, 44.1 kHz stereo float: every conversion the client makes.
    let input = temp_wav("play");
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 44_100,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut writer = hound::WavWriter::create(&input, spec).expect("create");
    for i in 0..(44_100 * 3 / 2) {
        let s = 0.4 * (2.0 * std::f32::consts::PI * 600.0 * i as f32 / 44_100.0).sin();
        writer.write_sample(s).expect("write");
        writer.write_sample(s).expect("write");
    }
    writer.finalize().expect("finalize");

    // The call's own voice: what it sends back of what it heard, never the client's audio
    // straight from the bridge.
    let mut ear = call_voice(&service, &call, "slin").await;
    let mut cmd = cli(&service);
    cmd.args(["play", "--call", &call]).arg(&input);
    let (samples, (output, took)) = tokio::join!(
        ear.listen(Duration::from_secs(4)),
        run(cmd, Duration::from_secs(15))
    );
    assert!(
        output.status.success(),
        "play failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let share = best_share(&samples, 600.0);
    println!(
        "play: exited after {took:?}; the call sent back {:.2} s, best 600 Hz share {share:.3}; {}",
        samples.len() as f64 / 8000.0,
        describe(&samples, &[600.0, 1000.0])
    );
    assert!(
        took >= Duration::from_millis(1400) && took <= Duration::from_secs(4),
        "play took {took:?} for 1.5 s of audio"
    );
    assert!(share > 0.8, "600 Hz share {share}");
    drop(ear);

    // The control: a call that sends back nothing of what it hears (silence), played the same
    // file, sends no tone. What the ear heard above came from the call.
    let quiet = common::call(&service, "silence").await;
    let mut ear = call_voice(&service, &quiet, "slin").await;
    let mut cmd = cli(&service);
    cmd.args(["play", "--call", &quiet]).arg(&input);
    let (samples, (output, _)) = tokio::join!(
        ear.listen(Duration::from_secs(3)),
        run(cmd, Duration::from_secs(15))
    );
    assert!(output.status.success());
    let share = best_share(&samples, 600.0);
    println!("play into a silent call: best 600 Hz share {share:.3}");
    assert!(share < 0.2, "the silent call sent a tone back: {share}");
    let _ = std::fs::remove_file(&input);
}

#[tokio::test]
async fn record_a_conference() {
    let service = Service::start(test_settings()).await;
    // A conference of a 1000 Hz call and a 600 Hz one: the recording holds both.
    let a = common::call(&service, "tone").await;
    let b = common::call(&service, "play-600").await;
    let conference = conference_with(&service, &[&a, &b]).await;
    let out = temp_wav("record-conference");
    let mut cmd = cli(&service);
    cmd.args(["record", "--conference", &conference, "--seconds", "2"])
        .arg(&out);
    let (output, _) = run(cmd, Duration::from_secs(15)).await;
    assert!(output.status.success(), "{output:?}");
    let samples: Vec<i16> = hound::WavReader::open(&out)
        .expect("a valid WAV")
        .samples::<i16>()
        .map(|s| s.expect("sample"))
        .collect();
    let seconds = samples.len() as f64 / 8000.0;
    let tail = &samples[samples.len().min(5600)..];
    let (low, high) = (tone_share(tail, 600.0), tone_share(tail, 1000.0));
    println!("record --conference: {seconds:.2} s; 600 Hz {low:.2}, 1000 Hz {high:.2}");
    assert!((1.8..=2.2).contains(&seconds), "{seconds} s recorded");
    assert!(
        low > 0.2 && high > 0.2,
        "both calls: 600 Hz {low}, 1000 Hz {high}"
    );
    assert!(low + high > 0.8, "little but the two tones: {}", low + high);
    let _ = std::fs::remove_file(&out);
    let (status, _) = service
        .delete(&format!("/v1.0/conferences/{conference}"))
        .await;
    assert_eq!(status, 204);
    finish(service, &[&a, &b]).await;
}

#[tokio::test]
async fn failures_and_usage_errors_have_their_exit_status() {
    let service = Service::start(test_settings()).await;
    // Right after /ready the service still refuses streams with 503 until it has removed a
    // previous run's leftovers; this test is about the client, so it starts once a stream on an
    // unknown call gets its 404.
    eventually(Duration::from_secs(10), || async {
        let refused = common::client::open(
            service.addr,
            "/v1.0/calls/no-such-call",
            Enc::SlnSlin,
            &format!("token={API_KEY}"),
        )
        .await;
        matches!(refused, Err(r) if r.status == 404)
    })
    .await;
    let out = temp_wav("unknown");

    let mut cmd = cli(&service);
    cmd.args(["record", "--call", "no-such-call", "--seconds", "1"])
        .arg(&out);
    let (output, _) = run(cmd, Duration::from_secs(10)).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("unknown call: {:?} {stderr:?}", output.status.code());
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr:?}");
    assert!(stderr.contains("no such call"), "{stderr:?}");

    let mut cmd = cli(&service);
    cmd.env("MEDIASTREAM_TOKEN", "wrong-token")
        .args(["listen", "--call", "anything"]);
    let (output, _) = run(cmd, Duration::from_secs(10)).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("refused token: {:?} {stderr:?}", output.status.code());
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr.contains("token refused"), "{stderr:?}");

    for args in [
        vec!["record", "out.wav"],
        vec!["record", "--call", "a", "--conference", "b", "out.wav"],
        vec!["record", "--call", "a", "--format", "slin12", "out.wav"],
        vec!["play", "--call", "a"],
        vec!["nonsense"],
    ] {
        let mut cmd = cli(&service);
        cmd.args(&args);
        let (output, _) = run(cmd, Duration::from_secs(10)).await;
        assert_eq!(output.status.code(), Some(2), "{args:?}");
    }

    let bad = temp_wav("bad");
    std::fs::write(&bad, b"not a wav file").expect("write");
    let mut cmd = cli(&service);
    cmd.args(["play", "--call", "anything"]).arg(&bad);
    let (output, _) = run(cmd, Duration::from_secs(10)).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("bad file: {:?} {stderr:?}", output.status.code());
    assert_eq!(output.status.code(), Some(1));
    let _ = std::fs::remove_file(&bad);
    assert!(!out.exists(), "no file for a refused stream");
}

/// Samples of a finished recording, which must be a valid 8 kHz mono 16-bit WAV.
fn read_recording(path: &std::path::Path) -> Vec<i16> {
    let mut reader = hound::WavReader::open(path).expect("a valid WAV");
    assert_eq!(reader.spec().sample_rate, 8000);
    reader
        .samples::<i16>()
        .map(|s| s.expect("sample"))
        .collect()
}

/// Waits until the recording in progress has more than `bytes` on disk.
async fn grows_past(path: &std::path::Path, bytes: u64) {
    eventually(Duration::from_secs(10), || async {
        std::fs::metadata(path).is_ok_and(|m| m.len() > bytes)
    })
    .await;
}

#[tokio::test]
async fn record_ends_with_a_valid_file_on_ctrl_c_and_on_hangup() {
    let service = Service::start(test_settings()).await;

    // Ctrl-C.
    let call_a = call(&service, "tone").await;
    let out = temp_wav("ctrl-c");
    let mut cmd = cli(&service);
    cmd.args(["record", "--call", &call_a]).arg(&out);
    let mut child = cmd.spawn().expect("spawn");
    grows_past(&out, 16_000).await;
    let pid = child.id().expect("pid").to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits after Ctrl-C")
        .expect("wait");
    let samples = read_recording(&out);
    let share = tone_share(&samples[5600..], 1000.0);
    println!(
        "Ctrl-C: {status}, {:.2} s recorded, 1000 Hz share {share:.3}",
        samples.len() as f64 / 8000.0
    );
    assert!(status.success());
    assert!(samples.len() > 8000, "{} samples", samples.len());
    assert!(share > 0.8, "1000 Hz share {share}");
    let _ = std::fs::remove_file(&out);

    // The call hangs up: the service closes with 1000 and the client exits 0.
    let call_b = call(&service, "tone").await;
    let out = temp_wav("hangup");
    let mut cmd = cli(&service);
    cmd.args(["record", "--call", &call_b]).arg(&out);
    let child = cmd.spawn().expect("spawn");
    grows_past(&out, 16_000).await;
    let hung_up = Instant::now();
    hangup(&ari().await, &call_b).await;
    let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("exits after the hangup")
        .expect("wait");
    let samples = read_recording(&out);
    println!(
        "hangup: {} {:?} after the hangup, {:.2} s recorded",
        output.status,
        hung_up.elapsed(),
        samples.len() as f64 / 8000.0
    );
    assert!(output.status.success());
    assert!(samples.len() > 8000, "{} samples", samples.len());
    let _ = std::fs::remove_file(&out);
}

#[tokio::test]
async fn listen_writes_the_call_as_raw_audio_to_stdout_until_the_call_ends() {
    let service = Service::start(test_settings()).await;
    let call = call(&service, "tone").await;
    let mut cmd = cli(&service);
    cmd.args(["listen", "--call", &call])
        .stdout(std::process::Stdio::piped());
    let child = cmd.spawn().expect("the client runs");
    // Once its stream runs, two seconds of the call, then the hangup.
    eventually(Duration::from_secs(5), || async {
        let (_, list) = service.get("/v1.0/media_streams").await;
        list["result"].as_array().is_some_and(|l| !l.is_empty())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    hangup(&ari().await, &call).await;
    let output = tokio::time::timeout(Duration::from_secs(5), child.wait_with_output())
        .await
        .expect("it ends with the call")
        .expect("output");
    assert!(output.status.success(), "{output:?}");
    // 16-bit little-endian samples at 8 kHz: about two seconds of them.
    let samples: Vec<i16> = output
        .stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let seconds = samples.len() as f64 / 8000.0;
    let share = best_share(&samples, 1000.0);
    println!("listen: {seconds:.2} s of audio, best 1000 Hz share {share:.3}");
    assert!((1.8..=2.6).contains(&seconds), "{seconds} s");
    assert!(share > 0.8, "the call's tone: {share}");
    service.stop().await;
}
