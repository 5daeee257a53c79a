//! `--sip N`: streams on real SIP calls, the kind operators stream.
//!
//! sipp places N PCMU calls into Asterisk's `sipp` endpoint (`asterisk-conf/pjsip.conf`) with
//! the dialled user set to `--app`, so each call enters the service's Stasis application; every
//! call plays a 1000 Hz tone from a pcap of RTP for as long as it lasts, then sipp sends BYE.
//! Once the service lists the calls, one `sln` stream is opened per call; its client echoes
//! every frame back (two-way, like the Echo mode) and counts what it receives during the
//! measured window: frames per second (50 expected), frames carrying the tone, and gaps
//! between frames. The audio is sipp's, not stamped, so loss is counted against 50 frames a
//! second rather than frame by frame.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ari_mediastream::ari::AriClient;
use ari_mediastream::codec::g711::ulaw_encode;
use ari_mediastream::config::AriSettings;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::{Args, CpuWindow, percentile, print_cpu};

/// The pcap the scenario plays, in sipp's working directory (`bench/sip/uac-pcmu.xml`).
const PCAP_NAME: &str = "pcmu-tone.pcap";
const TONE_HZ: f64 = 1000.0;
/// Samples per 20 ms frame at 8 kHz.
const FRAME: usize = 160;

/// A pcap (Ethernet, IPv4, UDP) of `seconds` of RTP PCMU, one 20 ms packet of a 1000 Hz tone
/// every 20 ms. sipp replaces the addresses and ports and keeps the RTP and the timing.
fn tone_pcap(seconds: u64) -> Vec<u8> {
    let payload: Vec<u8> = (0..FRAME)
        .map(|i| {
            let x = (2.0 * std::f64::consts::PI * TONE_HZ * i as f64 / 8000.0).sin();
            ulaw_encode((x * 8000.0) as i16)
        })
        .collect();
    let packets = seconds * 50;
    let mut out = Vec::with_capacity(24 + packets as usize * 230);
    // Global header: magic, version 2.4, UTC offset, accuracy, snaplen, Ethernet.
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    for word in [0u32, 0, 65535, 1] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    for n in 0..packets {
        let mut rtp = Vec::with_capacity(12 + FRAME);
        rtp.extend_from_slice(&[0x80, 0]);
        rtp.extend_from_slice(&(n as u16).to_be_bytes());
        rtp.extend_from_slice(&((n * FRAME as u64) as u32).to_be_bytes());
        rtp.extend_from_slice(&0x5150_0001u32.to_be_bytes());
        rtp.extend_from_slice(&payload);
        let udp_len = 8 + rtp.len();
        let ip_len = 20 + udp_len;
        let mut frame = Vec::with_capacity(14 + ip_len);
        frame.extend_from_slice(&[0; 12]);
        frame.extend_from_slice(&0x0800u16.to_be_bytes());
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&[127, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[127, 0, 0, 1]);
        frame.extend_from_slice(&ip);
        for word in [6000u16, 6000, udp_len as u16, 0] {
            frame.extend_from_slice(&word.to_be_bytes());
        }
        frame.extend_from_slice(&rtp);
        let micros = n * 20_000;
        for word in [
            (micros / 1_000_000) as u32,
            (micros % 1_000_000) as u32,
            frame.len() as u32,
            frame.len() as u32,
        ] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.extend_from_slice(&frame);
    }
    out
}

/// Share of a frame's energy at `TONE_HZ` (Goertzel): near 1 for the pcap's tone.
fn tone_share(samples: &[i16]) -> f64 {
    let k = 2.0 * (2.0 * std::f64::consts::PI * TONE_HZ / 8000.0).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + k * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - k * s1 * s2;
    let energy: f64 = samples.iter().map(|&x| f64::from(x).powi(2)).sum();
    if energy == 0.0 {
        0.0
    } else {
        2.0 * power / (samples.len() as f64 * energy)
    }
}

/// What one stream's client saw during the measured window.
#[derive(Debug, Default)]
struct StreamReport {
    opened: bool,
    frames: u64,
    tone_frames: u64,
    /// Milliseconds between consecutive frames, within the window.
    gaps_ms: Vec<f64>,
    /// The stream ended before the window did.
    ended_early: bool,
}

async fn run_stream(
    args: Arc<Args>,
    call: String,
    window: (tokio::time::Instant, tokio::time::Instant),
) -> StreamReport {
    let mut report = StreamReport::default();
    let url = format!(
        "ws://{}/v1.0/calls/{call}/media_stream?encapsulation=sln&token={}",
        args.service, args.token
    );
    let Ok((ws, _)) = tokio_tungstenite::connect_async(url).await else {
        return report;
    };
    report.opened = true;
    let (start, end) = window;
    let (mut sink, mut stream) = ws.split();
    let mut last: Option<tokio::time::Instant> = None;
    loop {
        let message = tokio::select! {
            _ = tokio::time::sleep_until(end) => break,
            m = stream.next() => m,
        };
        let bytes = match message {
            Some(Ok(Message::Binary(bytes))) => bytes,
            Some(Ok(_)) => continue,
            _ => {
                report.ended_early = true;
                break;
            }
        };
        let now = tokio::time::Instant::now();
        if now >= start {
            report.frames += 1;
            let samples: Vec<i16> = bytes
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect();
            if tone_share(&samples) > 0.5 {
                report.tone_frames += 1;
            }
            if let Some(last) = last {
                report.gaps_ms.push((now - last).as_secs_f64() * 1000.0);
            }
            last = Some(now);
        }
        // Two-way: the caller hears its own tone back.
        if sink.send(Message::Binary(bytes)).await.is_err() {
            report.ended_early = true;
            break;
        }
    }
    let _ = sink.close().await;
    report
}

/// Ids of the service's calls that came in over PJSIP.
async fn sip_calls(http: &reqwest::Client, args: &Args) -> Result<Vec<String>, reqwest::Error> {
    let url = format!("http://{}/v1.0/calls", args.service);
    let calls = crate::service_list(http, &url, &args.token).await?;
    Ok(calls
        .iter()
        .filter(|c| c["name"].as_str().is_some_and(|n| n.starts_with("PJSIP/")))
        .filter_map(|c| c["id"].as_str().map(str::to_owned))
        .collect())
}

pub async fn run(args: Arc<Args>, calls: usize) -> Result<(), Box<dyn std::error::Error>> {
    let rate = args.sip_rate.max(1);
    let ramp = args.ramp.max(1);
    // Every call must outlast the window: all calls placed, listed, streams opened, one
    // second of settling (as in the Echo mode), the window, and a margin. The last call
    // placed ends `calls / rate` seconds after the first.
    let placing = calls as f64 / rate as f64;
    let hold = placing + calls as f64 / ramp as f64 + 1.0 + args.seconds as f64 + 5.0;
    let hold_ms = (hold * 1000.0).ceil() as u64;

    let workdir = match &args.sip_workdir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("loadgen-sip-{}", std::process::id())),
    };
    std::fs::create_dir_all(&workdir)?;
    std::fs::write(workdir.join(PCAP_NAME), tone_pcap(hold.ceil() as u64 + 1))?;
    // sipp looks for the pcap next to the scenario.
    let scenario = workdir.join("scenario.xml");
    std::fs::copy(&args.sip_scenario, &scenario)
        .map_err(|e| format!("--sip-scenario {}: {e}", args.sip_scenario.display()))?;

    let sipp_args: Vec<String> = vec![
        args.sip_target.to_string(),
        "-sf".into(),
        scenario.display().to_string(),
        "-s".into(),
        args.app.clone(),
        "-i".into(),
        args.sip_target.ip().to_string(),
        "-mi".into(),
        args.sip_target.ip().to_string(),
        "-m".into(),
        calls.to_string(),
        "-l".into(),
        calls.to_string(),
        "-r".into(),
        rate.to_string(),
        "-d".into(),
        hold_ms.to_string(),
        "-nostdin".into(),
        "-trace_err".into(),
        "-error_file".into(),
        "sipp-errors.log".into(),
    ];
    eprintln!(
        "in {}: {} {}",
        workdir.display(),
        args.sipp.display(),
        sipp_args.join(" ")
    );
    let log = std::fs::File::create(workdir.join("sipp-screen.log"))?;
    let mut sipp = tokio::process::Command::new(&args.sipp)
        .args(&sipp_args)
        .current_dir(&workdir)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", args.sipp.display()))?;
    let placed_at = Instant::now();

    // Wait for the calls to enter the application and the service to list them.
    let http = reqwest::Client::new();
    let deadline = placed_at + Duration::from_secs_f64(placing + 15.0);
    let mut ids = Vec::new();
    loop {
        match sip_calls(&http, &args).await {
            Ok(found) => ids = found,
            Err(e) => eprintln!("GET /v1.0/calls: {e}"),
        }
        if ids.len() >= calls || Instant::now() >= deadline {
            break;
        }
        if let Ok(Some(status)) = sipp.try_wait() {
            eprintln!("sipp exited early ({status}); see {}", workdir.display());
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    ids.truncate(calls);
    eprintln!(
        "{} of {calls} SIP calls in {} after {:.1} s",
        ids.len(),
        args.app,
        placed_at.elapsed().as_secs_f64()
    );

    let opening = Duration::from_secs_f64(ids.len() as f64 / ramp as f64);
    let start = tokio::time::Instant::now() + opening + Duration::from_secs(1);
    let end = start + Duration::from_secs(args.seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for id in &ids {
        tasks.spawn(run_stream(args.clone(), id.clone(), (start, end)));
        tokio::time::sleep(Duration::from_secs_f64(1.0 / ramp as f64)).await;
    }
    eprintln!(
        "{} streams open; measuring for {} s",
        ids.len(),
        args.seconds
    );
    // Besides the given processes: sipp and this load generator, which share the machine
    // (the last two).
    let sipp_pid = sipp.id().unwrap_or(0);
    let pids: Vec<u32> = args
        .pids
        .iter()
        .copied()
        .chain([sipp_pid, std::process::id()])
        .collect();
    tokio::time::sleep_until(start).await;
    let window = CpuWindow::open(&pids);
    let measuring = Instant::now();
    tokio::time::sleep_until(end).await;
    let (cpu_used, machine) = window.close(&pids);
    let measured_for = measuring.elapsed().as_secs_f64();
    let mut reports = Vec::new();
    while let Some(result) = tasks.join_next().await {
        if let Ok(r) = result {
            reports.push(r);
        }
    }

    // sipp ends every call itself (BYE) when its hold is over; past a margin, it is stopped
    // and whatever it left is hung up through ARI.
    let sipp_deadline = placed_at + Duration::from_secs_f64(placing + hold + 15.0);
    let sipp_status = tokio::time::timeout(
        sipp_deadline.saturating_duration_since(Instant::now()),
        sipp.wait(),
    )
    .await;
    let sipp_status = match sipp_status {
        Ok(status) => status
            .map(|s| s.to_string())
            .unwrap_or_else(|e| e.to_string()),
        Err(_) => {
            let _ = sipp.kill().await;
            "killed: its calls outlasted the hold".to_owned()
        }
    };
    let ari = AriClient::new(&AriSettings {
        url: args.ari_url.parse()?,
        username: args.ari_user.clone(),
        password: args.ari_password.clone().into(),
        app: args.app.clone(),
        ca_file: None,
    });
    let mut left = 0;
    if let Ok(channels) = ari.channels().await {
        for c in channels.iter().filter(|c| c.name.starts_with("PJSIP/sipp")) {
            left += 1;
            let _ = ari.hangup(&c.id).await;
        }
    }

    let opened = reports.iter().filter(|r| r.opened).count();
    let ended_early = reports.iter().filter(|r| r.ended_early).count();
    let frames: u64 = reports.iter().map(|r| r.frames).sum();
    let tone: u64 = reports.iter().map(|r| r.tone_frames).sum();
    let mut per_stream: Vec<f64> = reports
        .iter()
        .filter(|r| r.opened)
        .map(|r| r.frames as f64 / args.seconds as f64)
        .collect();
    per_stream.sort_by(f64::total_cmp);
    let mut gaps: Vec<f64> = reports.iter().flat_map(|r| r.gaps_ms.clone()).collect();
    gaps.sort_by(f64::total_cmp);
    let expected = opened as f64 * 50.0 * args.seconds as f64;
    println!("sip calls:      {} of {calls} in the app", ids.len());
    println!(
        "streams:        {opened} open ({} failed to open, {ended_early} ended early)",
        ids.len() - opened
    );
    println!(
        "frames:         {frames} received of {expected:.0} expected at 50/s ({:.3}% missing), {:.1}% carrying the {TONE_HZ} Hz tone",
        if expected > 0.0 {
            100.0 * (expected - frames as f64).max(0.0) / expected
        } else {
            0.0
        },
        if frames > 0 {
            100.0 * tone as f64 / frames as f64
        } else {
            0.0
        },
    );
    println!(
        "frames/s each:  min {:.2}  p50 {:.2}  max {:.2}",
        per_stream.first().copied().unwrap_or(f64::NAN),
        percentile(&per_stream, 0.5),
        per_stream.last().copied().unwrap_or(f64::NAN),
    );
    println!(
        "frame gap ms:   p50 {:.1}  p99 {:.1}  max {:.1}",
        percentile(&gaps, 0.5),
        percentile(&gaps, 0.99),
        gaps.last().copied().unwrap_or(f64::NAN),
    );
    println!(
        "cpu:            the last two are sipp ({sipp_pid}) and this load generator ({})",
        std::process::id()
    );
    print_cpu(&pids, cpu_used, machine, measured_for);
    println!("sipp:           {sipp_status}; {left} SIP channels were left and hung up");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcap_has_fifty_tone_packets_a_second() {
        let pcap = tone_pcap(2);
        let packet = 16 + 14 + 20 + 8 + 12 + FRAME;
        assert_eq!(pcap.len(), 24 + 100 * packet);
        assert_eq!(&pcap[..4], &0xa1b2_c3d4u32.to_le_bytes());
        // The second packet's record header says 20 ms.
        let second = 24 + packet;
        assert_eq!(&pcap[second + 4..second + 8], &20_000u32.to_le_bytes());
        let payload = &pcap[24 + packet - FRAME..24 + packet];
        let samples: Vec<i16> = payload
            .iter()
            .map(|b| ari_mediastream::codec::g711::ulaw_decode(*b))
            .collect();
        assert!(tone_share(&samples) > 0.9);
    }
}
