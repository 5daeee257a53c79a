//! Counting for the simulation: the frame stamp, latency histograms, sequence bitsets, and the
//! `/proc` readings of a process.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The simulation's clock: nanoseconds since its first use. Senders and receivers run in the
/// same process, so stamps taken here compare directly.
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// What the simulated Asterisk writes at the start of every frame's payload (16 bytes), so
/// that whoever gets the frame back knows whose it is, which one, and when it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The externalMedia channel (RTP peer) that sent it.
    pub slot: u16,
    pub seq: u32,
    /// [`now_ns`] at the send.
    pub sent_ns: u64,
}

const MAGIC: [u8; 2] = [0x5a, 0xd1];
pub const STAMP_LEN: usize = 16;

impl Stamp {
    /// The stamp as it goes into an RTP payload. For slin these bytes are big-endian 16-bit
    /// samples; the service hands them to the client little-endian, see [`Stamp::decode_le`].
    pub fn encode(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&MAGIC);
        out[2..4].copy_from_slice(&self.slot.to_be_bytes());
        out[4..8].copy_from_slice(&self.seq.to_be_bytes());
        out[8..16].copy_from_slice(&self.sent_ns.to_be_bytes());
    }

    /// Reads a stamp as [`Stamp::encode`] wrote it (RTP side, or μ-law anywhere).
    pub fn decode(buf: &[u8]) -> Option<Stamp> {
        let b = buf.get(..STAMP_LEN)?;
        if b[0..2] != MAGIC {
            return None;
        }
        Some(Stamp {
            slot: u16::from_be_bytes([b[2], b[3]]),
            seq: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            sent_ns: u64::from_be_bytes(b[8..16].try_into().ok()?),
        })
    }

    /// Reads a stamp from slin that was converted to little-endian samples on the way.
    pub fn decode_le(buf: &[u8]) -> Option<Stamp> {
        let b = buf.get(..STAMP_LEN)?;
        let mut swapped = [0u8; STAMP_LEN];
        for (out, pair) in swapped.chunks_exact_mut(2).zip(b.chunks_exact(2)) {
            out[0] = pair[1];
            out[1] = pair[0];
        }
        Stamp::decode(&swapped)
    }
}

/// A latency histogram, shareable between threads: 1 µs buckets up to 100 ms, then 1 ms
/// buckets up to 10 s; values past that land in the last bucket.
#[derive(Debug)]
pub struct Hist {
    fine: Vec<AtomicU64>,
    coarse: Vec<AtomicU64>,
    count: AtomicU64,
    max_ns: AtomicU64,
}

const FINE_BUCKETS: u64 = 100_000;
const COARSE_BUCKETS: u64 = 10_000;

impl Default for Hist {
    fn default() -> Self {
        Hist {
            fine: (0..FINE_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            coarse: (0..COARSE_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
        }
    }
}

impl Hist {
    pub fn record(&self, ns: u64) {
        let us = ns / 1_000;
        if us < FINE_BUCKETS {
            self.fine[us as usize].fetch_add(1, Ordering::Relaxed);
        } else {
            let ms = (ns / 1_000_000).min(COARSE_BUCKETS - 1);
            self.coarse[ms as usize].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The value (in ms) below which `p` of the samples lie, at the bucket's upper edge.
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((count as f64) * p).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, b) in self.fine.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= rank {
                return Some((i as f64 + 1.0) / 1_000.0);
            }
        }
        for (i, b) in self.coarse.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= rank {
                return Some(i as f64 + 1.0);
            }
        }
        Some(self.max_ms())
    }

    pub fn max_ms(&self) -> f64 {
        self.max_ns.load(Ordering::Relaxed) as f64 / 1e6
    }
}

/// Which sequence numbers were seen, to tell new frames from duplicates.
#[derive(Debug, Default)]
pub struct SeqSet {
    words: Vec<u64>,
    /// Highest sequence number seen so far, to count frames that arrive out of order.
    highest: Option<u32>,
}

/// What [`SeqSet::insert`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    New { out_of_order: bool },
    Duplicate,
}

impl SeqSet {
    pub fn insert(&mut self, seq: u32) -> Arrival {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        if self.words[word] & (1 << bit) != 0 {
            return Arrival::Duplicate;
        }
        self.words[word] |= 1 << bit;
        let out_of_order = self.highest.is_some_and(|h| seq < h);
        self.highest = Some(self.highest.map_or(seq, |h| h.max(seq)));
        Arrival::New { out_of_order }
    }
}

/// Frame counters of one direction, shareable between threads.
#[derive(Debug, Default)]
pub struct Counts {
    /// Frames stamped inside the measured window and received once.
    pub received: AtomicU64,
    pub duplicated: AtomicU64,
    pub out_of_order: AtomicU64,
    /// Stamped frames of another stream.
    pub foreign: AtomicU64,
    /// Frames with no stamp received in the window: silence (the service's pacer had nothing).
    pub silence: AtomicU64,
    /// Frames with no stamp that are not silence either.
    pub garbage: AtomicU64,
    /// Every frame received, stamped in the window or not (the relayed-frame count).
    pub all: AtomicU64,
}

impl Counts {
    pub fn get(v: &AtomicU64) -> u64 {
        v.load(Ordering::Relaxed)
    }
}

/// One reading of a process's counters in `/proc`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    /// utime + stime, seconds.
    pub cpu_s: f64,
    pub rss_kib: u64,
    /// Summed over every thread.
    pub voluntary_ctxt: u64,
    pub involuntary_ctxt: u64,
    /// `/proc/<pid>/io`: read- and write-family system calls (not sendto/recvfrom/sendmsg).
    pub syscr: u64,
    pub syscw: u64,
}

fn status_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

impl ProcSample {
    /// Reads `pid` (`None`: this process). None if it is gone.
    pub fn read(pid: Option<u32>) -> Option<ProcSample> {
        let dir = pid.map_or("/proc/self".to_owned(), |p| format!("/proc/{p}"));
        let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
        let mut sample = ProcSample {
            cpu_s: ticks / 100.0,
            rss_kib: status_field(&status, "VmRSS:").unwrap_or(0),
            ..ProcSample::default()
        };
        if let Ok(tasks) = std::fs::read_dir(format!("{dir}/task")) {
            for task in tasks.flatten() {
                let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
                    continue;
                };
                sample.voluntary_ctxt +=
                    status_field(&status, "voluntary_ctxt_switches:").unwrap_or(0);
                sample.involuntary_ctxt +=
                    status_field(&status, "nonvoluntary_ctxt_switches:").unwrap_or(0);
            }
        }
        if let Ok(io) = std::fs::read_to_string(format!("{dir}/io")) {
            sample.syscr = status_field(&io, "syscr:").unwrap_or(0);
            sample.syscw = status_field(&io, "syscw:").unwrap_or(0);
        }
        Some(sample)
    }
}

/// CPU seconds the whole machine has been busy (all cores, `/proc/stat`; iowait counts as
/// idle), to tell how much else ran during a window.
pub fn machine_busy_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    Some(busy as f64 / 100.0)
}

/// Datagrams the kernel dropped on the simulation's UDP socket bound to `port`
/// (`/proc/net/udp`, last column): a full receive buffer on the simulation's side.
/// Datagrams the kernel dropped on the sockets bound to `ports`, from /proc/net/udp.
pub fn udp_drops(ports: &std::collections::HashSet<u16>) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/udp").ok()?;
    let drops = table.lines().skip(1).filter_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (_, port) = fields.get(1)?.rsplit_once(':')?;
        let port = u16::from_str_radix(port, 16).ok()?;
        if ports.contains(&port) {
            fields.last()?.parse::<u64>().ok()
        } else {
            None
        }
    });
    Some(drops.sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_both_byte_orders() {
        let stamp = Stamp {
            slot: 1999,
            seq: 70_000,
            sent_ns: 123_456_789_012,
        };
        let mut buf = [0u8; 32];
        stamp.encode(&mut buf);
        assert_eq!(Stamp::decode(&buf), Some(stamp));
        for pair in buf.chunks_exact_mut(2) {
            pair.swap(0, 1);
        }
        assert_eq!(Stamp::decode_le(&buf), Some(stamp));
        assert_eq!(Stamp::decode(&[0u8; 32]), None);
    }

    #[test]
    fn percentiles_come_from_the_right_bucket() {
        let h = Hist::default();
        for us in 1..=100 {
            h.record(us * 1_000);
        }
        assert_eq!(h.percentile_ms(0.5), Some(0.051));
        h.record(250_000_000);
        assert_eq!(h.percentile_ms(1.0), Some(251.0));
    }

    #[test]
    fn seqset_finds_duplicates_and_reordering() {
        let mut s = SeqSet::default();
        assert_eq!(
            s.insert(5),
            Arrival::New {
                out_of_order: false
            }
        );
        assert_eq!(s.insert(3), Arrival::New { out_of_order: true });
        assert_eq!(s.insert(5), Arrival::Duplicate);
    }
}
