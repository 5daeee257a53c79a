//! The end of a churn: what was left behind, and the report (a human summary and one JSON
//! line, the last of stdout).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use ari_mediastream::ari::AriClient;

use super::super::percentile;
use super::{Ctx, Tally};

/// What the run left behind.
#[derive(Debug, Default, serde::Serialize)]
pub struct Orphans {
    channels: Vec<String>,
    bridges: Vec<String>,
    media_streams: Vec<String>,
    external_medias: Vec<String>,
    audiosocket_connections: u64,
}

impl Orphans {
    pub fn total(&self) -> usize {
        self.channels.len()
            + self.bridges.len()
            + self.media_streams.len()
            + self.external_medias.len()
            + self.audiosocket_connections as usize
    }
}

/// Ids in a service list whose `status` is not `terminated`.
async fn running(ctx: &Ctx, path: &str) -> Result<Vec<String>, reqwest::Error> {
    let items = crate::service_list(&ctx.http, &ctx.url(path), &ctx.args.token).await?;
    Ok(items
        .iter()
        .filter(|v| v["status"] != "terminated")
        .filter_map(|v| v["id"].as_str().map(str::to_owned))
        .collect())
}

pub async fn orphans(ctx: &Ctx, ari: &AriClient) -> Result<Orphans, String> {
    let app = &ctx.args.app;
    Ok(Orphans {
        channels: ari
            .channels()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|c| c.id.starts_with("mediastream-") && c.is_in_stasis_app(app))
            .map(|c| c.id)
            .collect(),
        bridges: ari
            .bridges()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|b| b.id.starts_with("mediastream-") && b.name == *app)
            .map(|b| b.id)
            .collect(),
        media_streams: running(ctx, "/v1.0/media_streams")
            .await
            .map_err(|e| e.to_string())?,
        external_medias: running(ctx, "/v1.0/external_medias")
            .await
            .map_err(|e| e.to_string())?,
        audiosocket_connections: ctx.connections.load(Ordering::Relaxed),
    })
}

/// A process's resident memory and open file descriptors, from /proc.
#[derive(Debug, Clone, Copy)]
pub struct Footprint {
    rss_kib: u64,
    fds: usize,
}

pub fn footprint(pid: u32) -> Option<Footprint> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some(Footprint { rss_kib, fds })
}

fn stats(ms: &mut [f64]) -> serde_json::Value {
    ms.sort_by(f64::total_cmp);
    let round = |v: f64| (v * 10.0).round() / 10.0;
    serde_json::json!({
        "count": ms.len(),
        "p50": round(percentile(ms, 0.5)),
        "p99": round(percentile(ms, 0.99)),
        "max": round(ms.last().copied().unwrap_or(f64::NAN)),
    })
}

/// What a churn did and left: the input of the report.
pub struct Run {
    pub cycles: u64,
    pub calls: usize,
    pub seconds: f64,
    pub tally: Tally,
    pub left: Orphans,
    /// `--pid` processes: VmRSS KiB and fds before and after.
    pub processes: Vec<(u32, Option<Footprint>, Option<Footprint>)>,
}

/// Prints the summary and the JSON line; whether nothing was refused, failed or left behind.
pub fn print(run: &Run) -> bool {
    let Run {
        cycles,
        calls,
        seconds: took,
        tally,
        left,
        processes,
    } = run;
    let mut ms = tally.ms.clone();
    let refused: u64 = tally.refused.values().sum();
    let failed_opens = refused + tally.failed.get("open").copied().unwrap_or(0);
    let failed: u64 = tally.failed.values().sum();
    let mut all: Vec<f64> = ms.values().flatten().copied().collect();
    let mut streams: Vec<f64> = ms
        .iter()
        .filter(|(k, _)| !k.starts_with("external/"))
        .flat_map(|(_, v)| v.iter().copied())
        .collect();
    let mut externals: Vec<f64> = ms
        .iter()
        .filter(|(k, _)| k.starts_with("external/"))
        .flat_map(|(_, v)| v.iter().copied())
        .collect();
    let completed = all.len();
    let all_stats = stats(&mut all);
    let stream_stats = stats(&mut streams);
    let external_stats = stats(&mut externals);
    let by_variant: BTreeMap<&str, serde_json::Value> =
        ms.iter_mut().map(|(k, v)| (*k, stats(v))).collect();
    let processes: Vec<serde_json::Value> = processes
        .iter()
        .map(|(pid, b, a)| {
            serde_json::json!({
                "pid": pid,
                "rss_kib": [b.map(|x| x.rss_kib), a.map(|x| x.rss_kib)],
                "fds": [b.map(|x| x.fds), a.map(|x| x.fds)],
            })
        })
        .collect();

    println!(
        "cycles:         {completed} of {cycles} completed on {} calls in {took:.1} s ({:.1}/s)",
        calls,
        completed as f64 / took
    );
    println!(
        "                {} media streams, {} external medias",
        stream_stats["count"], external_stats["count"]
    );
    println!(
        "failed opens:   {failed_opens} (refused by status: {:?}; other failures: {:?})",
        tally.refused, tally.failed
    );
    for example in &tally.examples {
        println!("  e.g. {example}");
    }
    let show =
        |s: &serde_json::Value| format!("p50 {}  p99 {}  max {}", s["p50"], s["p99"], s["max"]);
    println!("cycle ms:       {}", show(&all_stats));
    println!("  streams       {}", show(&stream_stats));
    println!("  ext. medias   {}", show(&external_stats));
    for (name, s) in &by_variant {
        println!("  {name:<20} {:>6}  {}", s["count"], show(s));
    }
    println!(
        "orphans:        {} ({} channels, {} bridges, {} media streams, {} external medias, {} AudioSocket connections)",
        left.total(),
        left.channels.len(),
        left.bridges.len(),
        left.media_streams.len(),
        left.external_medias.len(),
        left.audiosocket_connections
    );
    for id in left
        .channels
        .iter()
        .chain(&left.bridges)
        .chain(&left.media_streams)
        .chain(&left.external_medias)
        .take(10)
    {
        println!("  left: {id}");
    }
    for p in &processes {
        println!(
            "pid {}:  RSS KiB {} -> {}, fds {} -> {}",
            p["pid"], p["rss_kib"][0], p["rss_kib"][1], p["fds"][0], p["fds"][1]
        );
    }
    let json = serde_json::json!({
        "mode": "churn",
        "cycles": cycles,
        "calls": calls,
        "completed": completed,
        "seconds": (took * 10.0).round() / 10.0,
        "failed_opens": failed_opens,
        "refused": tally.refused.iter().map(|(s, n)| (s.to_string(), n)).collect::<BTreeMap<_, _>>(),
        "failed": tally.failed,
        "cycle_ms": all_stats,
        "stream_cycle_ms": stream_stats,
        "external_media_cycle_ms": external_stats,
        "by_variant": by_variant,
        "orphans": left.total(),
        "orphans_by_kind": left,
        "processes": processes,
    });
    println!("{json}");
    failed == 0 && refused == 0 && left.total() == 0 && completed as u64 == *cycles
}
