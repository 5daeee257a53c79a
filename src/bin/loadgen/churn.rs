//! `--churn K`: opens and closes media streams and external medias K times against a running
//! service and a real Asterisk, then counts what was refused, what failed and what was left.
//!
//! `--calls C` Local calls (`Local/tone@test`, a 1000 Hz tone) are originated into `--app`;
//! one worker per call runs K/C cycles, one at a time on its call, so the per-call limit is
//! never reached unless something a closed stream held is still counted. A cycle opens a media
//! stream (the encapsulation and format rotate through [`VARIANTS`]), waits for its first audio
//! message, sends a close frame and waits for the server's. Every `--em-every`-th cycle starts
//! an external media instead, alternately RTP to a UDP socket and AudioSocket to a TCP listener
//! the worker holds, waits for its first audio there, and stops it with DELETE. `--rate` caps the
//! cycles a second (all calls together); by default they go as fast as they complete.
//!
//! At the end, orphans are counted (after up to `--settle` seconds while anything is left):
//! the service's `mediastream-` channels and bridges of the app still in Asterisk, streams still
//! listed under `GET /v1.0/media_streams`, external medias not terminated under
//! `GET /v1.0/external_medias`, and AudioSocket connections Asterisk has not closed. Then the
//! calls are hung up (on Ctrl-C or SIGTERM too) and the report printed: a human summary and one
//! JSON line (the last line of stdout); the process exits 1 on any refused or failed cycle or
//! any orphan.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ari_mediastream::ari::AriClient;
use ari_mediastream::ari::rest::OriginateParams;
use ari_mediastream::config::AriSettings;
use tokio::task::JoinSet;

use super::Args;
use cycles::{VARIANTS, external_cycle, stream_cycle};
use hosts::Hosts;
use report::{footprint, orphans};

#[path = "churn/cycles.rs"]
mod cycles;
#[path = "churn/hosts.rs"]
mod hosts;
#[path = "churn/report.rs"]
mod report;

/// Why a cycle did not complete.
#[derive(Debug)]
enum Failure {
    /// The service answered the open with this HTTP status.
    Refused(u16, String),
    /// Anything else, by kind: `open`, `no_audio`, `no_close`, `stop`.
    Failed(&'static str, String),
}

/// Everything the workers count.
#[derive(Debug, Default)]
struct Tally {
    /// Cycle times in milliseconds, by variant (`external/rtp`, `external/audiosocket` for
    /// external medias).
    ms: BTreeMap<&'static str, Vec<f64>>,
    refused: BTreeMap<u16, u64>,
    failed: BTreeMap<&'static str, u64>,
    /// The first few failures in words, for the summary.
    examples: Vec<String>,
}

/// What every worker shares.
struct Ctx {
    args: Arc<Args>,
    http: reqwest::Client,
    tally: Mutex<Tally>,
    done: AtomicU64,
    /// AudioSocket connections from Asterisk not yet closed by it.
    connections: Arc<AtomicU64>,
}

impl Ctx {
    fn record(&self, name: &'static str, result: Result<Duration, Failure>) {
        self.done.fetch_add(1, Ordering::Relaxed);
        let mut tally = self.tally.lock().expect("tally");
        let example = match result {
            Ok(took) => {
                tally
                    .ms
                    .entry(name)
                    .or_default()
                    .push(took.as_secs_f64() * 1000.0);
                return;
            }
            Err(Failure::Refused(status, body)) => {
                *tally.refused.entry(status).or_default() += 1;
                format!("{name}: refused {status} {body}")
            }
            Err(Failure::Failed(kind, why)) => {
                *tally.failed.entry(kind).or_default() += 1;
                format!("{name}: {kind}: {why}")
            }
        };
        if tally.examples.len() < 10 {
            tally.examples.push(example);
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.args.service)
    }
}

async fn worker(ctx: Arc<Ctx>, index: usize, call: String, cycles: u64) {
    let mut hosts = match Hosts::bind(ctx.connections.clone()).await {
        Ok(hosts) => hosts,
        Err(e) => {
            for _ in 0..cycles {
                ctx.record("external/rtp", Err(Failure::Failed("open", e.to_string())));
            }
            return;
        }
    };
    let every = ctx.args.em_every;
    // With --rate, each call's cycles start on a grid: the calls together make `rate` a second.
    let period = (ctx.args.rate > 0.0)
        .then(|| Duration::from_secs_f64(ctx.args.calls.max(1) as f64 / ctx.args.rate));
    let mut next = tokio::time::Instant::now();
    for n in 0..cycles {
        if let Some(period) = period {
            tokio::time::sleep_until(next).await;
            next += period;
        }
        if every > 0 && (n + 1) % every == 0 {
            let audiosocket = ((n + 1) / every).is_multiple_of(2);
            let name = if audiosocket {
                "external/audiosocket"
            } else {
                "external/rtp"
            };
            let result = external_cycle(&ctx, &call, &mut hosts, audiosocket).await;
            ctx.record(name, result);
        } else {
            let variant = VARIANTS[(index + n as usize) % VARIANTS.len()];
            let result = stream_cycle(&ctx, &call, variant).await;
            ctx.record(variant.name, result);
        }
    }
}

/// Runs the churn; `Ok(true)` when nothing was refused, failed or left behind.
pub async fn run(args: Arc<Args>, cycles: u64) -> Result<bool, Box<dyn std::error::Error>> {
    let ari = AriClient::new(&AriSettings {
        url: args.ari_url.parse()?,
        username: args.ari_user.clone(),
        password: args.ari_password.clone().into(),
        app: args.app.clone(),
        ca_file: None,
    });
    let ctx = Arc::new(Ctx {
        args: args.clone(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()?,
        tally: Mutex::default(),
        done: AtomicU64::new(0),
        connections: Arc::default(),
    });
    let calls_wanted = args.calls.max(1);
    eprintln!(
        "churn: {cycles} cycles on {calls_wanted} Local/tone@test calls in {}",
        args.app
    );
    let mut calls = Vec::with_capacity(calls_wanted);
    for i in 0..calls_wanted {
        let id = format!("churn-{}-{i}", std::process::id());
        let originated = ari
            .originate(&OriginateParams {
                endpoint: "Local/tone@test",
                app: &args.app,
                channel_id: Some(&id),
                ..OriginateParams::default()
            })
            .await;
        match originated {
            Ok(_) => calls.push(id),
            Err(e) => eprintln!("originate {id}: {e}"),
        }
    }
    // The calls are hung up however the churn ends, before anything is printed (a reader of
    // the report that goes away must not leave them behind).
    let result = tokio::select! {
        run = churn(&ctx, &ari, &calls, cycles) => Some(run),
        _ = crate::interrupted() => None,
    };
    hang_up(&ari, &calls).await;
    match result {
        Some(run) => Ok(report::print(&run?)),
        None => {
            eprintln!("churn: interrupted; its calls are hung up");
            std::process::exit(130);
        }
    }
}

/// Hangs the calls up, trying again for a while those Asterisk does not answer for (an
/// overwhelmed Asterisk refuses connections for a time).
async fn hang_up(ari: &AriClient, calls: &[String]) {
    let mut left: Vec<&String> = calls.iter().collect();
    for _ in 0..30 {
        let mut failed = Vec::new();
        for id in left {
            match ari.hangup(id).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(_) => failed.push(id),
            }
        }
        left = failed;
        if left.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!("churn: could not hang up {left:?}");
}

async fn churn(
    ctx: &Arc<Ctx>,
    ari: &AriClient,
    calls: &[String],
    cycles: u64,
) -> Result<report::Run, Box<dyn std::error::Error>> {
    let args = &ctx.args;
    if calls.is_empty() {
        return Err("no call could be originated".into());
    }
    // The service must know every call before its first stream.
    let deadline = Instant::now() + Duration::from_secs(15);
    for id in calls {
        loop {
            let known = ctx
                .http
                .get(ctx.url(&format!("/v1.0/calls/{id}")))
                .bearer_auth(&args.token)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if known {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!("the service does not list call {id} after 15 s").into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let before: Vec<_> = args.pids.iter().map(|p| footprint(*p)).collect();

    let started = Instant::now();
    let mut workers = JoinSet::new();
    let share = cycles / calls.len() as u64;
    let extra = cycles % calls.len() as u64;
    for (i, call) in calls.iter().enumerate() {
        let n = share + u64::from((i as u64) < extra);
        workers.spawn(worker(ctx.clone(), i, call.clone(), n));
    }
    let mut progress = tokio::time::interval(Duration::from_secs(10));
    progress.tick().await;
    loop {
        tokio::select! {
            joined = workers.join_next() => if joined.is_none() { break },
            _ = progress.tick() => {
                let tally = ctx.tally.lock().expect("tally");
                eprintln!(
                    "churn: {} of {cycles} cycles after {:.0} s; refused {:?}, failed {:?}",
                    ctx.done.load(Ordering::Relaxed),
                    started.elapsed().as_secs_f64(),
                    tally.refused,
                    tally.failed,
                );
            }
        }
    }
    let took = started.elapsed().as_secs_f64();

    // Teardown takes up to a second after the last close: wait for it, then count.
    let settle_until = Instant::now() + Duration::from_secs_f64(args.settle);
    let left = loop {
        let late = Instant::now() >= settle_until;
        match orphans(ctx, ari).await {
            Ok(left) if left.total() == 0 || late => break left,
            Err(e) if late => return Err(format!("counting what was left: {e}").into()),
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    let after: Vec<_> = args.pids.iter().map(|p| footprint(*p)).collect();

    let tally = std::mem::take(&mut *ctx.tally.lock().expect("tally"));
    let processes: Vec<_> = args
        .pids
        .iter()
        .zip(before.into_iter().zip(after))
        .map(|(pid, (before, after))| (*pid, before, after))
        .collect();
    Ok(report::Run {
        cycles,
        calls: calls.len(),
        seconds: took,
        tally,
        left,
        processes,
    })
}
