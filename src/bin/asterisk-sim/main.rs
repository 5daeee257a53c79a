//! asterisk-sim: a SIMULATED Asterisk and its API clients, to load the service with many
//! two-way media streams on one machine. A load generator (as SIPp is for SIP), not Asterisk:
//! no dialplan, no mixing, no codecs, no jitter; see `bench/README.md`.
//!
//! - `ari`: a small ARI (REST under `/ari`, basic auth, and the `/ari/events` WebSocket) that
//!   answers what the service asks when it starts, opens a stream and tears it down.
//! - `rtp`: Asterisk's RTP side of every externalMedia channel: 50 stamped frames a second
//!   each, and a receiver that checks what comes back.
//! - `clients`: one WebSocket client per call that echoes every frame.
//!
//! The target is the service, or `bare-forwarder` (the floor). The run is bounded: it opens
//! `--streams`, measures `--seconds` after a warm-up, closes everything, prints a report and a
//! JSON line, and exits. Only loopback addresses are used.
//!
//! ```text
//! asterisk-sim --ari-listen 127.0.0.1:18188 --service 127.0.0.1:18080 --token KEY \
//!     --streams 500 --seconds 20 --pid <service pid>
//! ```

mod ari;
mod clients;
mod rtp;
mod stats;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};

use crate::ari::{Ari, call_id};
use crate::clients::Clients;
use crate::rtp::{Engine, Format, Slots};
use crate::stats::{Counts, Hist, ProcSample, machine_busy_s, now_ns, udp_drops};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Target {
    /// ari-mediastream: wait for its ARI event socket before putting calls in the app.
    Service,
    /// bare-forwarder: no event socket; calls exist from the start.
    Floor,
}

#[derive(Debug, Parser)]
#[command(
    name = "asterisk-sim",
    about = "SIMULATED Asterisk (ARI + RTP) and echoing WebSocket clients: a load generator for ari-mediastream"
)]
struct Args {
    /// Where the simulated ARI listens (loopback only).
    #[arg(long, default_value = "127.0.0.1:18188")]
    ari_listen: SocketAddr,
    #[arg(long, default_value = "mediastream")]
    ari_user: String,
    #[arg(long, default_value = "simulation")]
    ari_password: String,
    /// The Stasis application the calls are in (the service's `ari.app`).
    #[arg(long, default_value = "mediastream")]
    app: String,
    /// Address of the simulated Asterisk's RTP socket.
    #[arg(long, default_value = "127.0.0.1")]
    rtp_bind: Ipv4Addr,
    /// The service (or the floor) whose media stream WebSockets the clients open.
    #[arg(long, default_value = "127.0.0.1:18080")]
    service: SocketAddr,
    #[arg(long, default_value = "")]
    token: String,
    #[arg(long, value_enum, default_value = "service")]
    target: Target,
    /// Concurrent two-way streams.
    #[arg(long, default_value_t = 100)]
    streams: usize,
    /// `slin` (sln encapsulation, 320 B) or `ulaw` (160 B).
    #[arg(long, default_value = "slin")]
    format: String,
    /// Streams opened per second.
    #[arg(long, default_value_t = 200)]
    ramp: u64,
    /// Traffic before the measured window.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// The measured window.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Longest wait for all streams to open and carry audio.
    #[arg(long, default_value_t = 90)]
    open_timeout: u64,
    /// The relaying process to measure (CPU, RSS, context switches, syscalls).
    #[arg(long)]
    pid: Option<u32>,
    /// Read that pid from this file instead, once the calls are in (for scripts that start
    /// the relay after the simulation).
    #[arg(long, conflicts_with = "pid")]
    pid_file: Option<std::path::PathBuf>,
    /// Also count every system call of `--pid` over the window with `perf stat`
    /// (`raw_syscalls:sys_enter`; adds a little cost to the measured process).
    #[arg(long)]
    perf_syscalls: bool,
    /// Threads for the WebSocket clients and the ARI (1: a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// A label for the output line (e.g. `before`).
    #[arg(long, default_value = "run")]
    label: String,
    /// Append the report as one JSON line to this file.
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
    /// Append the report as one CSV row to this file (header written when it is new).
    #[arg(long)]
    csv_out: Option<std::path::PathBuf>,
}

fn loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

fn pct(h: &Hist, p: f64) -> Value {
    h.percentile_ms(p)
        .map_or(Value::Null, |v| json!((v * 1000.0).round() / 1000.0))
}

fn ratio(a: f64, b: f64) -> Value {
    if b > 0.0 {
        json!((a / b * 1e4).round() / 1e4)
    } else {
        Value::Null
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    // The clients and the ARI share one thread by default: fewer wake-ups across threads,
    // and the RTP side has threads of its own.
    let runtime = if args.client_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.client_threads)
            .enable_all()
            .build()
    };
    match runtime {
        Ok(runtime) => runtime.block_on(run(args)),
        Err(e) => {
            eprintln!("asterisk-sim: runtime: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn run(args: Args) -> std::process::ExitCode {
    if !loopback(&args.ari_listen) || !loopback(&args.service) || !args.rtp_bind.is_loopback() {
        eprintln!("asterisk-sim: loopback addresses only");
        return std::process::ExitCode::from(2);
    }
    let Some(format) = Format::parse(&args.format) else {
        eprintln!("asterisk-sim: --format is slin or ulaw");
        return std::process::ExitCode::from(2);
    };
    now_ns();
    // Room for every stream's channel, plus re-creations.
    let slots = Arc::new(Slots::new(args.streams * 2 + 64));
    let engine = match Engine::start(args.rtp_bind, slots.clone()) {
        Ok(engine) => engine,
        Err(e) => {
            eprintln!("asterisk-sim: RTP socket: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let rtp_locals = engine.locals.clone();
    let ari = Arc::new(Ari::new(
        &args.ari_user,
        &args.ari_password,
        slots.clone(),
        rtp_locals.clone(),
        args.streams,
    ));
    let listener = match tokio::net::TcpListener::bind(args.ari_listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("asterisk-sim: ARI listen {}: {e}", args.ari_listen);
            return std::process::ExitCode::from(1);
        }
    };
    let server = {
        let router = ari::router(ari.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router.into_make_service()).await;
        })
    };
    eprintln!(
        "asterisk-sim (SIMULATION): ARI on http://{}/ari, RTP on {} ports of {}, {} streams",
        args.ari_listen,
        rtp_locals.len(),
        args.rtp_bind,
        args.streams
    );

    if args.target == Target::Service {
        let mut up = ari.events_up.subscribe();
        let waited = tokio::time::timeout(Duration::from_secs(60), up.wait_for(|u| *u)).await;
        if !matches!(waited, Ok(Ok(_))) {
            eprintln!("asterisk-sim: no ARI event socket connected within 60 s");
            return std::process::ExitCode::from(1);
        }
    }
    ari.create_calls(&args.app, args.streams);
    // Let the service take the calls in (events, or its reconcile) and settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = match (&args.pid, &args.pid_file) {
        (Some(pid), _) => Some(*pid),
        (None, Some(file)) => read_pid(file).await,
        (None, None) => None,
    };
    let idle = pid.and_then(|p| ProcSample::read(Some(p)));

    // Open the streams at --ramp a second.
    let clients = Arc::new(Clients::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let opening = Instant::now();
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / args.ramp.max(1) as f64));
    for i in 0..args.streams {
        pace.tick().await;
        let url = format!(
            "ws://{}/v1.0/calls/{}/media_stream?encapsulation=sln&format={}&token={}",
            args.service,
            call_id(i),
            args.format,
            args.token
        );
        tasks.spawn(clients::run(
            clients.clone(),
            ari.clone(),
            slots.clone(),
            i,
            url,
            format,
            stop_rx.clone(),
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(args.open_timeout);
    loop {
        let opened = clients.opened.load(Ordering::Relaxed);
        let failed = clients.failed.load(Ordering::Relaxed);
        let flowing = clients.flowing.load(Ordering::Relaxed);
        if (opened + failed) as usize >= args.streams && flowing >= opened {
            break;
        }
        if Instant::now() > deadline {
            eprintln!(
                "asterisk-sim: open timeout: {opened} opened, {failed} failed, {flowing} carrying audio"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let open_s = opening.elapsed().as_secs_f64();
    eprintln!(
        "asterisk-sim: {} streams open in {open_s:.1} s; warm-up {} s, then {} s measured",
        clients.opened.load(Ordering::Relaxed),
        args.warmup,
        args.seconds
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let loaded = pid.and_then(|p| ProcSample::read(Some(p)));
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;

    // The window: set ahead of time so that every thread sees it before it starts.
    let start_ns = now_ns() + 100_000_000;
    let end_ns = start_ns + args.seconds * 1_000_000_000;
    slots.window.set(start_ns, end_ns);
    tokio::time::sleep(Duration::from_nanos(start_ns.saturating_sub(now_ns()))).await;
    let perf = match (args.perf_syscalls, pid) {
        (true, Some(pid)) => PerfSyscalls::start(pid),
        _ => None,
    };
    let p0 = pid.and_then(|p| ProcSample::read(Some(p)));
    let s0 = ProcSample::read(None);
    let m0 = machine_busy_s();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_nanos(end_ns.saturating_sub(now_ns()))).await;
    let p1 = pid.and_then(|p| ProcSample::read(Some(p)));
    let s1 = ProcSample::read(None);
    let m1 = machine_busy_s();
    let syscalls = perf.and_then(PerfSyscalls::finish);
    let window_s = t0.elapsed().as_secs_f64();
    // Frames in flight at the end of the window still count: wait for them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sim_drops = udp_drops(&rtp_locals.iter().map(|a| a.port()).collect());
    let (sent, back) = engine.stop();

    // Close every stream, and time the service's teardown in the simulated Asterisk.
    let _ = stop_tx.send(true);
    let closing = Instant::now();
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    let mut leftovers = ari.leftovers();
    while leftovers != (0, 0) && closing.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        leftovers = ari.leftovers();
    }
    let teardown_s = closing.elapsed().as_secs_f64();
    ari.hang_up_calls();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.abort();

    let streams_ok = clients.flowing.load(Ordering::Relaxed);
    let a2c = &clients.counts;
    let c2a = &back.counts;
    let get = Counts::get;
    let a2c_lost = sent.sent_in_window.saturating_sub(get(&a2c.received));
    let rt_lost = sent.sent_in_window.saturating_sub(get(&c2a.received));
    let relayed = get(&a2c.all) + get(&c2a.all);
    let failures = clients
        .failures
        .lock()
        .map(|f| f.clone())
        .unwrap_or_default();
    let mut row: Vec<(&str, Value)> = vec![
        ("label", json!(args.label)),
        ("target", json!(format!("{:?}", args.target).to_lowercase())),
        ("format", json!(args.format)),
        ("streams", json!(args.streams)),
        ("opened", json!(clients.opened.load(Ordering::Relaxed))),
        ("failed", json!(clients.failed.load(Ordering::Relaxed))),
        ("flowing", json!(streams_ok)),
        ("open_s", json!((open_s * 10.0).round() / 10.0)),
        ("window_s", json!((window_s * 1000.0).round() / 1000.0)),
        ("frames_sent", json!(sent.sent_in_window)),
        ("a2c_received", json!(get(&a2c.received))),
        ("a2c_lost", json!(a2c_lost)),
        ("a2c_dup", json!(get(&a2c.duplicated))),
        ("a2c_ooo", json!(get(&a2c.out_of_order))),
        ("a2c_foreign", json!(get(&a2c.foreign))),
        ("rt_received", json!(get(&c2a.received))),
        ("rt_lost", json!(rt_lost)),
        ("rt_dup", json!(get(&c2a.duplicated))),
        ("rt_ooo", json!(get(&c2a.out_of_order))),
        ("rt_foreign", json!(get(&c2a.foreign))),
        ("c2a_silence", json!(get(&c2a.silence))),
        ("garbage", json!(get(&a2c.garbage) + get(&c2a.garbage))),
        ("a2c_p50_ms", pct(&clients.one_way, 0.5)),
        ("a2c_p99_ms", pct(&clients.one_way, 0.99)),
        ("a2c_p999_ms", pct(&clients.one_way, 0.999)),
        ("a2c_max_ms", json!(clients.one_way.max_ms())),
        ("rtt_p50_ms", pct(&back.round_trip, 0.5)),
        ("rtt_p99_ms", pct(&back.round_trip, 0.99)),
        ("rtt_max_ms", json!(back.round_trip.max_ms())),
        ("c2a_late_p50_ms", pct(&back.lateness, 0.5)),
        ("c2a_late_p99_ms", pct(&back.lateness, 0.99)),
        ("c2a_late_p999_ms", pct(&back.lateness, 0.999)),
        ("c2a_late_max_ms", json!(back.lateness.max_ms())),
        ("relayed_frames", json!(relayed)),
    ];
    if let (Some(p0), Some(p1)) = (p0, p1) {
        let cpu = (p1.cpu_s - p0.cpu_s) / window_s * 100.0;
        let ctx = (p1.voluntary_ctxt + p1.involuntary_ctxt)
            .saturating_sub(p0.voluntary_ctxt + p0.involuntary_ctxt);
        let sys = (p1.syscr + p1.syscw).saturating_sub(p0.syscr + p0.syscw);
        row.extend([
            ("cpu_pct", json!((cpu * 100.0).round() / 100.0)),
            ("cpu_pct_per_stream", ratio(cpu, streams_ok as f64)),
            (
                "vol_ctx_per_frame",
                ratio(
                    p1.voluntary_ctxt.saturating_sub(p0.voluntary_ctxt) as f64,
                    relayed as f64,
                ),
            ),
            (
                "invol_ctx_per_frame",
                ratio(
                    p1.involuntary_ctxt.saturating_sub(p0.involuntary_ctxt) as f64,
                    relayed as f64,
                ),
            ),
            ("ctx_per_frame", ratio(ctx as f64, relayed as f64)),
            ("rw_syscalls_per_frame", ratio(sys as f64, relayed as f64)),
        ]);
    }
    if let Some(n) = syscalls {
        row.push(("syscalls_per_frame", ratio(n as f64, relayed as f64)));
    }
    if let (Some(idle), Some(loaded)) = (idle, loaded) {
        row.extend([
            ("rss_idle_kib", json!(idle.rss_kib)),
            ("rss_loaded_kib", json!(loaded.rss_kib)),
            (
                "rss_kib_per_stream",
                ratio(
                    loaded.rss_kib.saturating_sub(idle.rss_kib) as f64,
                    streams_ok as f64,
                ),
            ),
        ]);
    }
    if let (Some(s0), Some(s1)) = (s0, s1) {
        let sim = s1.cpu_s - s0.cpu_s;
        row.push((
            "sim_cpu_pct",
            json!((sim / window_s * 10_000.0).round() / 100.0),
        ));
        // Everything else the machine ran meanwhile (other work disturbs the figures).
        if let (Some(m0), Some(m1)) = (m0, m1) {
            let relay = match (p0, p1) {
                (Some(p0), Some(p1)) => p1.cpu_s - p0.cpu_s,
                _ => 0.0,
            };
            let other = ((m1 - m0) - sim - relay).max(0.0);
            row.push((
                "other_cpu_pct",
                json!((other / window_s * 1_000.0).round() / 10.0),
            ));
        }
    }
    row.extend([
        (
            "loadavg_1m",
            json!(
                std::fs::read_to_string("/proc/loadavg").ok().and_then(|l| l
                    .split_whitespace()
                    .next()?
                    .parse::<f64>()
                    .ok())
            ),
        ),
        ("sim_udp_drops", json!(sim_drops)),
        ("sim_late_ticks", json!(sent.late_ticks)),
        ("sim_send_errors", json!(sent.send_errors)),
        ("teardown_s", json!((teardown_s * 100.0).round() / 100.0)),
        ("leftover_channels", json!(leftovers.0)),
        ("leftover_bridges", json!(leftovers.1)),
        ("ari_requests", json!(ari.requests.load(Ordering::Relaxed))),
        (
            "ari_unsimulated",
            json!(
                ari.unknown_requests
                    .lock()
                    .map(|l| l.join(" | "))
                    .unwrap_or_default()
            ),
        ),
        (
            "failures",
            json!(
                failures
                    .iter()
                    .map(|(k, v)| format!("{v}x {k}"))
                    .collect::<Vec<_>>()
                    .join(" | ")
            ),
        ),
    ]);

    for (key, value) in &row {
        eprintln!("  {key:<22} {value}");
    }
    let object: serde_json::Map<String, Value> = row
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    let line = Value::Object(object).to_string();
    println!("{line}");
    if let Some(path) = &args.json_out {
        append(path, &format!("{line}\n"));
    }
    if let Some(path) = &args.csv_out {
        let cell = |v: &Value| match v {
            Value::String(s) => format!("\"{}\"", s.replace('"', "'")),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        let mut text = String::new();
        if !path.exists() {
            text += &row.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(",");
            text.push('\n');
        }
        text += &row
            .iter()
            .map(|(_, v)| cell(v))
            .collect::<Vec<_>>()
            .join(",");
        text.push('\n');
        append(path, &text);
    }
    std::process::ExitCode::SUCCESS
}

/// `perf stat` counting a process's system calls between `start` and `finish`.
#[derive(Debug)]
struct PerfSyscalls {
    child: std::process::Child,
    out: std::path::PathBuf,
}

impl PerfSyscalls {
    fn start(pid: u32) -> Option<PerfSyscalls> {
        let out =
            std::env::temp_dir().join(format!("asterisk-sim-perf-{}.csv", std::process::id()));
        let child = std::process::Command::new("perf")
            .args(["stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p"])
            .arg(pid.to_string())
            .arg("-o")
            .arg(&out)
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| eprintln!("asterisk-sim: perf: {e}"))
            .ok()?;
        Some(PerfSyscalls { child, out })
    }

    /// Stops perf (SIGINT makes it print its counts) and reads the count.
    fn finish(mut self) -> Option<u64> {
        let _ = std::process::Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.out).ok()?;
        let _ = std::fs::remove_file(&self.out);
        text.lines()
            .find(|l| l.contains("raw_syscalls:sys_enter"))
            .and_then(|l| l.split(',').next())
            .and_then(|n| n.trim().parse().ok())
    }
}

async fn read_pid(file: &std::path::Path) -> Option<u32> {
    for _ in 0..100 {
        if let Some(pid) = std::fs::read_to_string(file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return Some(pid);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("asterisk-sim: no pid in {}", file.display());
    None
}

fn append(path: &std::path::Path, text: &str) {
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()));
    if let Err(e) = written {
        eprintln!("asterisk-sim: writing {}: {e}", path.display());
    }
}
