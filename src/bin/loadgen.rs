//! Load generator: many two-way media streams through a running service and a real Asterisk,
//! with a report of what came back.
//!
//! Each stream is a call whose far end runs `Echo()` (`Local/echo@test`). The client sends one
//! 20 ms slin frame every 20 ms, each stamped with its stream and sequence number in its first
//! samples; Echo returns it byte for byte, so the report can count every frame that did not
//! come back and time every round trip (client → service → Asterisk → Echo → Asterisk →
//! service → client, including the service's jitter pre-buffer).
//!
//! ```text
//! ari-mediastream-loadgen --service 127.0.0.1:8080 --token KEY --ari-url http://127.0.0.1:18088 \
//!     --app mediastream --streams 200 --seconds 30
//! ```
//!
//! With `--sip N` the calls are real SIP calls instead, placed by sipp (see [`sip`]). With
//! `--churn K` it opens and closes streams and external medias K times and counts what is left
//! (see [`churn`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ari_mediastream::ari::AriClient;
use ari_mediastream::ari::rest::OriginateParams;
use ari_mediastream::config::AriSettings;
use clap::Parser;

// The crate root of a binary looks for modules beside it, in src/bin/.
#[path = "loadgen/churn.rs"]
mod churn;
#[path = "loadgen/sip.rs"]
mod sip;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Parser)]
#[command(about = "Two-way media stream load against a running ari-mediastream and Asterisk")]
struct Args {
    /// The service's HTTP address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    service: SocketAddr,
    /// An API key of the service.
    #[arg(long)]
    token: String,
    #[arg(long, default_value = "http://127.0.0.1:18088")]
    ari_url: String,
    #[arg(long, default_value = "mediastream")]
    ari_user: String,
    #[arg(long, default_value = "mediastream")]
    ari_password: String,
    /// The service's Stasis application (calls are originated into it).
    #[arg(long, default_value = "mediastream")]
    app: String,
    /// Concurrent streams.
    #[arg(long, default_value_t = 50)]
    streams: usize,
    /// How long every stream sends, after all are open.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Streams opened per second while ramping up.
    #[arg(long, default_value_t = 50)]
    ramp: u64,
    /// Processes whose CPU use over the sending period to report (the service, Asterisk).
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// Real SIP calls instead of Local channels: sipp places this many PCMU calls into
    /// Asterisk's `sipp` endpoint, each entering `--app`, and one stream is opened per call
    /// (`--streams` is ignored).
    #[arg(long, value_name = "CALLS")]
    sip: Option<usize>,
    /// Asterisk's PJSIP transport (`ASTERISK_SIP_PORT` of the sandbox).
    #[arg(long, default_value = "127.0.0.1:15060")]
    sip_target: SocketAddr,
    /// Calls sipp places per second.
    #[arg(long, default_value_t = 20)]
    sip_rate: u64,
    #[arg(long, default_value = "sipp")]
    sipp: std::path::PathBuf,
    #[arg(long, default_value = "bench/sip/uac-pcmu.xml")]
    sip_scenario: std::path::PathBuf,
    /// Where the pcap, sipp's output and its error log go (default: a new directory in /tmp).
    #[arg(long)]
    sip_workdir: Option<std::path::PathBuf>,
    /// Churn instead of load: this many cycles of opening and closing a stream (or an external
    /// media), spread over `--calls` calls, then a count of what was left behind. Exits 1 on
    /// any refused or failed cycle or anything left.
    #[arg(long, value_name = "CYCLES")]
    churn: Option<u64>,
    /// Churn: calls (`Local/tone@test`), each with one stream at a time.
    #[arg(long, default_value_t = 16)]
    calls: usize,
    /// Churn: every this many cycles on a call, an external media instead of a stream
    /// (alternately RTP and AudioSocket); 0 for none.
    #[arg(long, default_value_t = 10)]
    em_every: u64,
    /// Churn: cycles a second, all calls together, at most (0: as fast as they go).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Churn: seconds to wait at the end, while anything is left, for the service to remove
    /// it (it tries removals Asterisk refused again) before counting orphans.
    #[arg(long, default_value_t = 20.0)]
    settle: f64,
}

/// CPU seconds a process has used so far (user + system), from /proc.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// CPU seconds the whole machine has been busy so far (all cores, every process), from
/// /proc/stat: the machine may be shared with other work, which this shows.
/// CPU seconds used over a window: by each process of a list, and by the whole machine.
struct CpuWindow {
    before: Vec<Option<f64>>,
    machine_before: Option<f64>,
}

impl CpuWindow {
    fn open(pids: &[u32]) -> CpuWindow {
        CpuWindow {
            before: pids.iter().map(|p| cpu_seconds(*p)).collect(),
            machine_before: machine_busy_seconds(),
        }
    }

    /// Per process (in the order of `pids`), and for the machine.
    fn close(self, pids: &[u32]) -> (Vec<Option<f64>>, Option<f64>) {
        let used = pids
            .iter()
            .zip(&self.before)
            .map(|(p, before)| Some(cpu_seconds(*p)? - (*before)?))
            .collect();
        let machine = machine_busy_seconds()
            .zip(self.machine_before)
            .map(|(a, b)| a - b);
        (used, machine)
    }
}

fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal: all but idle and iowait.
    let busy: f64 = fields
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    Some(busy / 100.0)
}

/// A frame's stamp is 24 bits (4 of magic, 6 of stream number, 14 of sequence number), each
/// as the sign of a block of [`BLOCK`] loud samples: slow enough (under 700 Hz) to pass the
/// filters and μ-law conversions a call may put on the way.
const MAGIC: [bool; 4] = [true, false, true, true];
const BLOCK: usize = 6;
const BITS: usize = 24;
const LOUD: i16 = 8000;
const STREAM_BITS: u32 = 6;
const SEQ_BITS: u32 = 14;

#[derive(Default)]
struct Totals {
    sent: AtomicU64,
    received: AtomicU64,
    foreign: AtomicU64,
    failed_streams: AtomicU64,
}

/// One 20 ms frame of 16-bit LE slin: the stamp, then a quiet tone.
fn frame(stream: u32, seq: u32) -> Vec<u8> {
    let mut samples = [0i16; 160];
    let bits = MAGIC
        .iter()
        .copied()
        .chain((0..STREAM_BITS).rev().map(|b| (stream >> b) & 1 == 1))
        .chain((0..SEQ_BITS).rev().map(|b| (seq >> b) & 1 == 1));
    for (block, bit) in bits.enumerate() {
        for s in &mut samples[block * BLOCK..(block + 1) * BLOCK] {
            *s = if bit { LOUD } else { -LOUD };
        }
    }
    for (i, s) in samples.iter_mut().enumerate().skip(BITS * BLOCK) {
        *s = (((i as f64) * 0.7).sin() * 1000.0) as i16;
    }
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// Finds stamps in received audio. Asterisk may re-cut frames on the way and scale them, so
/// the stamp is searched at any offset, across message boundaries.
#[derive(Default)]
struct StampFinder {
    samples: Vec<i16>,
}

impl StampFinder {
    const SPAN: usize = BITS * BLOCK;

    /// The bits at offset `i`, if every block there is loud and of one sign.
    fn bits_at(&self, i: usize) -> Option<[bool; BITS]> {
        let mut bits = [false; BITS];
        for (k, bit) in bits.iter_mut().enumerate() {
            let mid = &self.samples[i + k * BLOCK + 1..i + k * BLOCK + BLOCK - 1];
            let positive = mid[0] > 0;
            if mid
                .iter()
                .any(|s| s.unsigned_abs() < (LOUD / 4) as u16 || (*s > 0) != positive)
            {
                return None;
            }
            *bit = positive;
        }
        (bits[..MAGIC.len()] == MAGIC).then_some(bits)
    }

    fn push(&mut self, bytes: &[u8], mut found: impl FnMut(u32, u32)) {
        self.samples.extend(
            bytes
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]])),
        );
        let mut keep_from = self.samples.len().saturating_sub(Self::SPAN - 1);
        let mut i = 0;
        while i + Self::SPAN <= self.samples.len() {
            match self.bits_at(i) {
                Some(bits) => {
                    let number = |range: std::ops::Range<usize>| {
                        bits[range]
                            .iter()
                            .fold(0u32, |n, b| (n << 1) | u32::from(*b))
                    };
                    let stream_end = MAGIC.len() + STREAM_BITS as usize;
                    found(number(MAGIC.len()..stream_end), number(stream_end..BITS));
                    i += Self::SPAN;
                    keep_from = keep_from.max(i);
                }
                None => i += 1,
            }
        }
        self.samples.drain(..keep_from.min(self.samples.len()));
    }
}

async fn run_stream(
    args: Arc<Args>,
    index: u32,
    call: String,
    start_at: tokio::time::Instant,
    totals: Arc<Totals>,
) -> Vec<f64> {
    let url = format!(
        "ws://{}/v1.0/calls/{call}/media_stream?encapsulation=sln&token={}",
        args.service, args.token
    );
    let Ok((ws, _)) = tokio_tungstenite::connect_async(url).await else {
        totals.failed_streams.fetch_add(1, Ordering::Relaxed);
        return Vec::new();
    };
    let (mut sink, mut stream) = ws.split();
    let frames = args.seconds * 50;
    let sent_at: Arc<std::sync::Mutex<Vec<Option<Instant>>>> =
        Arc::new(std::sync::Mutex::new(vec![None; frames as usize]));
    let sender = {
        let sent_at = sent_at.clone();
        let totals = totals.clone();
        async move {
            tokio::time::sleep_until(start_at).await;
            let mut ticker = tokio::time::interval(Duration::from_millis(20));
            for seq in 0..frames as u32 {
                ticker.tick().await;
                if let Ok(mut s) = sent_at.lock() {
                    s[seq as usize] = Some(Instant::now());
                }
                if sink
                    .send(Message::Binary(frame(index, seq).into()))
                    .await
                    .is_err()
                {
                    return sink;
                }
                totals.sent.fetch_add(1, Ordering::Relaxed);
            }
            sink
        }
    };
    let receiver = async {
        let mut rtts = Vec::with_capacity(frames as usize);
        let mut finder = StampFinder::default();
        let end = start_at + Duration::from_secs(args.seconds) + Duration::from_secs(2);
        loop {
            let message = tokio::select! {
                _ = tokio::time::sleep_until(end) => break,
                m = stream.next() => m,
            };
            match message {
                Some(Ok(Message::Binary(bytes))) => finder.push(&bytes, |stream_no, seq| {
                    if stream_no != index % (1 << STREAM_BITS) {
                        totals.foreign.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    // The sequence number wraps every 2^14 frames (5.5 minutes): take the latest
                    // frame sent with it.
                    let sent = sent_at.lock().ok().and_then(|s| {
                        (seq as usize..s.len())
                            .step_by(1 << SEQ_BITS)
                            .filter_map(|i| s[i].map(|at| (i, at)))
                            .next_back()
                    });
                    let sent = sent.map(|(_, at)| at);
                    if let Some(sent) = sent {
                        rtts.push(sent.elapsed().as_secs_f64() * 1000.0);
                        totals.received.fetch_add(1, Ordering::Relaxed);
                    }
                }),
                Some(Ok(_)) => {}
                _ => break,
            }
        }
        rtts
    };
    let (mut sink, rtts) = tokio::join!(sender, receiver);
    let _ = sink.close().await;
    rtts
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Prints each process's CPU use: `used` seconds (None: unreadable) over `over` seconds, then
/// the whole machine's (`machine` busy seconds).
fn print_cpu(pids: &[u32], used: Vec<Option<f64>>, machine: Option<f64>, over: f64) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if let Some(busy) = machine {
        println!(
            "cpu machine:    {:.1}% of one core ({cores} cores), all processes, others' included",
            100.0 * busy / over
        );
    }
    for (pid, used) in pids.iter().zip(used) {
        match used {
            Some(used) => println!(
                "cpu pid {pid}:   {:.1}% of one core while sending ({used:.2} s in {over:.1} s)",
                100.0 * used / over,
            ),
            None => println!("cpu pid {pid}:   not readable"),
        }
    }
}

/// The `result` items of one of the service's list routes (`GET url`).
async fn service_list(
    http: &reqwest::Client,
    url: &str,
    token: &str,
) -> Result<Vec<serde_json::Value>, reqwest::Error> {
    let mut body: serde_json::Value = http
        .get(url)
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(match body["result"].take() {
        serde_json::Value::Array(items) => items,
        _ => Vec::new(),
    })
}

/// Ctrl-C or SIGTERM.
async fn interrupted() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[tokio::main]
async fn main() {
    let args = Arc::new(Args::parse());
    if let Some(cycles) = args.churn {
        match churn::run(args.clone(), cycles).await {
            Ok(true) => return,
            Ok(false) => std::process::exit(1),
            Err(e) => {
                eprintln!("loadgen: {e}");
                std::process::exit(2);
            }
        }
    }
    if let Some(calls) = args.sip {
        // Interrupted, the run is dropped, and with it sipp (killed on drop): a signal's
        // default action would leave sipp placing calls.
        let result = tokio::select! {
            result = sip::run(args.clone(), calls) => Some(result),
            _ = interrupted() => None,
        };
        match result {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                eprintln!("loadgen: {e}");
                std::process::exit(1);
            }
            None => {
                eprintln!("loadgen: interrupted; sipp is stopped");
                std::process::exit(130);
            }
        }
        return;
    }
    let ari = AriClient::new(&AriSettings {
        url: args.ari_url.parse().expect("--ari-url is a URL"),
        username: args.ari_user.clone(),
        password: args.ari_password.clone().into(),
        app: args.app.clone(),
        ca_file: None,
    });
    eprintln!("originating {} echo calls into {}", args.streams, args.app);
    let mut calls = Vec::with_capacity(args.streams);
    for i in 0..args.streams {
        let id = format!("loadgen-{}-{i}", std::process::id());
        match ari
            .originate(&OriginateParams {
                endpoint: "Local/echo@test",
                app: &args.app,
                channel_id: Some(&id),
                ..OriginateParams::default()
            })
            .await
        {
            Ok(_) => calls.push(id),
            Err(e) => eprintln!("originate {id}: {e}"),
        }
    }
    // Give the service a moment to see the calls enter its application.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let totals = Arc::new(Totals::default());
    let ramp = Duration::from_secs_f64(calls.len() as f64 / args.ramp.max(1) as f64);
    let start_at = tokio::time::Instant::now() + ramp + Duration::from_secs(1);
    let mut tasks = tokio::task::JoinSet::new();
    let opened = Instant::now();
    for (i, call) in calls.iter().enumerate() {
        tasks.spawn(run_stream(
            args.clone(),
            i as u32,
            call.clone(),
            start_at,
            totals.clone(),
        ));
        tokio::time::sleep(Duration::from_secs_f64(1.0 / args.ramp.max(1) as f64)).await;
    }
    eprintln!(
        "{} streams opening over {:?}; sending for {} s",
        calls.len(),
        opened.elapsed(),
        args.seconds
    );
    tokio::time::sleep_until(start_at).await;
    let window = CpuWindow::open(&args.pids);
    let sending = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let (cpu_used, machine) = window.close(&args.pids);
    let sent_for = sending.elapsed().as_secs_f64();
    let mut rtts = Vec::new();
    while let Some(result) = tasks.join_next().await {
        if let Ok(r) = result {
            rtts.extend(r);
        }
    }
    for id in &calls {
        let _ = ari.hangup(id).await;
    }
    rtts.sort_by(f64::total_cmp);
    let sent = totals.sent.load(Ordering::Relaxed);
    let received = totals.received.load(Ordering::Relaxed);
    println!(
        "streams:        {} ({} failed to open)",
        calls.len(),
        totals.failed_streams.load(Ordering::Relaxed)
    );
    println!("frames sent:    {sent}");
    println!(
        "frames echoed:  {received} ({:.3}% lost)",
        if sent == 0 {
            0.0
        } else {
            100.0 * (sent.saturating_sub(received)) as f64 / sent as f64
        }
    );
    println!(
        "foreign frames: {} (another stream's audio: must be 0)",
        totals.foreign.load(Ordering::Relaxed)
    );
    println!(
        "round trip ms:  p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}  (includes media.jitter_ms of pre-buffer and Asterisk both ways)",
        percentile(&rtts, 0.5),
        percentile(&rtts, 0.9),
        percentile(&rtts, 0.99),
        rtts.last().copied().unwrap_or(f64::NAN),
    );
    print_cpu(&args.pids, cpu_used, machine, sent_for);
}
