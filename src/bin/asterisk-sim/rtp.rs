//! The simulated Asterisk's RTP side of every externalMedia channel.
//!
//! As in Asterisk, each channel has a UDP socket of its own: its address is what the channel's
//! externalMedia answer carries as `UNICASTRTP_LOCAL_ADDRESS`/`_PORT`, it sends to the
//! `external_host` the service named, and it takes only what comes from there (strictrtp).
//! The service may therefore tell channels apart by their address, as it must with Asterisk.
//!
//! Two plain threads, no runtime:
//! - the sender wakes every 1 ms on an absolute deadline and sends one frame for each channel
//!   whose phase (slot number mod 20) is due, so each channel sends every 20 ms and the load is
//!   spread over the period as Asterisk's per-channel timers spread it;
//! - the receiver waits on every channel's socket at once (epoll) and timestamps each datagram
//!   with `Instant::now()` right after `recv_from` returns (no kernel timestamps: its own
//!   scheduling delay is included, so lateness figures are upper bounds).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use nix::sys::time::TimeValLike;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ari_mediastream::codec::rtp::{self, RtpHeader};

use crate::stats::{Arrival, Counts, Hist, STAMP_LEN, SeqSet, Stamp, now_ns};

pub const PTIME_NS: u64 = 20_000_000;

/// The measured window, in [`now_ns`] time: frames stamped in it are counted.
#[derive(Debug)]
pub struct Window {
    start: AtomicU64,
    end: AtomicU64,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            start: AtomicU64::new(u64::MAX),
            end: AtomicU64::new(u64::MAX),
        }
    }
}

impl Window {
    pub fn set(&self, start: u64, end: u64) {
        self.end.store(end, Ordering::Relaxed);
        self.start.store(start, Ordering::Relaxed);
    }

    pub fn contains(&self, t: u64) -> bool {
        t >= self.start.load(Ordering::Relaxed) && t < self.end.load(Ordering::Relaxed)
    }
}

/// The audio format of one channel, as the service asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Format {
    /// PT 10, 320 B of big-endian 16-bit samples.
    Slin = 0,
    /// PT 0, 160 B of μ-law.
    Ulaw = 1,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "slin" => Some(Format::Slin),
            "ulaw" => Some(Format::Ulaw),
            _ => None,
        }
    }

    fn payload_type(self) -> u8 {
        match self {
            Format::Slin => 10,
            Format::Ulaw => 0,
        }
    }

    pub fn payload_len(self) -> usize {
        match self {
            Format::Slin => 320,
            Format::Ulaw => 160,
        }
    }
}

/// What the ARI side tells the RTP threads about one externalMedia channel.
#[derive(Debug, Default)]
pub struct Slot {
    /// Sending while the channel shares a bridge with a call.
    pub active: AtomicBool,
    /// The service's address (`external_host`): IPv4 in the high bits, port in the low 16.
    dest: AtomicU64,
    format: AtomicU8,
}

impl Slot {
    pub fn set_dest(&self, dest: SocketAddrV4, format: Format) {
        let packed = (u64::from(u32::from(*dest.ip())) << 16) | u64::from(dest.port());
        self.dest.store(packed, Ordering::Relaxed);
        self.format.store(format as u8, Ordering::Relaxed);
    }

    fn dest(&self) -> SocketAddrV4 {
        let packed = self.dest.load(Ordering::Relaxed);
        SocketAddrV4::new(Ipv4Addr::from((packed >> 16) as u32), packed as u16)
    }

    fn format(&self) -> Format {
        if self.format.load(Ordering::Relaxed) == Format::Ulaw as u8 {
            Format::Ulaw
        } else {
            Format::Slin
        }
    }
}

/// State shared by the ARI side (which creates channels) and the RTP threads.
#[derive(Debug)]
pub struct Slots {
    pub slots: Vec<Slot>,
    /// Slots handed out so far.
    pub allocated: AtomicU32,
    pub window: Window,
}

impl Slots {
    pub fn new(capacity: usize) -> Slots {
        Slots {
            slots: (0..capacity).map(|_| Slot::default()).collect(),
            allocated: AtomicU32::new(0),
            window: Window::default(),
        }
    }

    /// A fresh slot for a channel whose service side is `dest`, or None when all are used.
    pub fn allocate(&self, dest: SocketAddrV4, format: Format) -> Option<usize> {
        let slot = self.allocated.fetch_add(1, Ordering::Relaxed) as usize;
        let s = self.slots.get(slot)?;
        s.set_dest(dest, format);
        Some(slot)
    }

    pub fn release(&self, slot: usize) {
        self.slots[slot].active.store(false, Ordering::Relaxed);
    }
}

/// What the sender did.
#[derive(Debug, Default)]
pub struct SendReport {
    /// Frames stamped inside the window.
    pub sent_in_window: u64,
    pub sent_total: u64,
    pub send_errors: u64,
    /// Ticks that started more than 1 ms late (the simulation was behind).
    pub late_ticks: u64,
}

/// What the receiver heard back from the service.
#[derive(Debug, Default)]
pub struct RecvReport {
    pub counts: Counts,
    /// Round trip: sent by the RTP peer → service → client echo → service → RTP peer.
    pub round_trip: Hist,
    /// Per channel, how late each frame from the service arrives against a 20 ms grid.
    pub lateness: Hist,
    pub recv_errors: u64,
    /// Datagrams from an address other than the channel's `external_host`.
    pub unknown_source: u64,
}

pub struct Engine {
    /// Each slot's socket address, for its externalMedia answer.
    pub locals: Vec<SocketAddrV4>,
    sender: std::thread::JoinHandle<SendReport>,
    receiver: std::thread::JoinHandle<RecvReport>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("sockets", &self.locals.len())
            .finish()
    }
}

/// Kernel buffers of each channel's socket: a few hundred frames, enough to ride out the
/// receiver's scheduling gaps (the kernel caps them at net.core.rmem_max/wmem_max).
const CHANNEL_BUFFER: usize = 256 * 1024;

impl Engine {
    /// Binds a socket for every slot of `slots`, then starts the sender and the receiver.
    pub fn start(bind: Ipv4Addr, slots: Arc<Slots>) -> std::io::Result<Engine> {
        let mut sockets = Vec::with_capacity(slots.slots.len());
        let mut locals = Vec::with_capacity(slots.slots.len());
        for _ in 0..slots.slots.len() {
            let socket = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )?;
            socket.set_recv_buffer_size(CHANNEL_BUFFER)?;
            socket.set_send_buffer_size(CHANNEL_BUFFER)?;
            socket.bind(&SocketAddr::V4(SocketAddrV4::new(bind, 0)).into())?;
            socket.set_nonblocking(true)?;
            let socket: UdpSocket = socket.into();
            match socket.local_addr()? {
                SocketAddr::V4(a) => locals.push(a),
                SocketAddr::V6(_) => unreachable!("bound to an IPv4 address"),
            }
            sockets.push(socket);
        }
        let sockets = Arc::new(sockets);
        let stop = Arc::new(AtomicBool::new(false));
        let sender = {
            let (slots, stop, sockets) = (slots.clone(), stop.clone(), sockets.clone());
            std::thread::Builder::new()
                .name("sim-rtp-send".into())
                .spawn(move || send_loop(&sockets, &slots, &stop))?
        };
        let receiver = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("sim-rtp-recv".into())
                .spawn(move || recv_loop(&sockets, &slots, &stop))?
        };
        Ok(Engine {
            locals,
            sender,
            receiver,
            stop,
        })
    }

    pub fn stop(self) -> (SendReport, RecvReport) {
        self.stop.store(true, Ordering::Relaxed);
        (
            self.sender.join().unwrap_or_default(),
            self.receiver.join().unwrap_or_default(),
        )
    }
}

struct TxState {
    seq: u32,
    rtp_seq: u16,
    rtp_ts: u32,
    ssrc: u32,
}

fn send_loop(sockets: &[UdpSocket], slots: &Slots, stop: &AtomicBool) -> SendReport {
    let mut report = SendReport::default();
    let mut tx: Vec<TxState> = (0..slots.slots.len())
        .map(|_| {
            let r = uuid::Uuid::new_v4().as_u128();
            TxState {
                seq: 0,
                rtp_seq: r as u16,
                rtp_ts: (r >> 16) as u32,
                ssrc: (r >> 48) as u32,
            }
        })
        .collect();
    let mut packet = [0u8; 12 + 320];
    let mut payload = [0x11u8; 320];
    let start = Instant::now();
    let mut tick: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let deadline = start + Duration::from_millis(tick);
        let now = Instant::now();
        if deadline > now {
            std::thread::sleep(deadline - now);
        } else if now - deadline > Duration::from_millis(1) {
            report.late_ticks += 1;
        }
        let phase = (tick % 20) as usize;
        let allocated = (slots.allocated.load(Ordering::Relaxed) as usize).min(tx.len());
        for i in (phase..allocated).step_by(20) {
            let slot = &slots.slots[i];
            if !slot.active.load(Ordering::Relaxed) {
                continue;
            }
            let format = slot.format();
            let state = &mut tx[i];
            let sent_ns = now_ns();
            let len = format.payload_len();
            Stamp {
                slot: i as u16,
                seq: state.seq,
                sent_ns,
            }
            .encode(&mut payload[..STAMP_LEN]);
            let header = RtpHeader {
                marker: false,
                payload_type: format.payload_type(),
                sequence: state.rtp_seq,
                timestamp: state.rtp_ts,
                ssrc: state.ssrc,
            };
            let Some(n) = rtp::write(&header, &payload[..len], &mut packet) else {
                continue;
            };
            state.seq += 1;
            state.rtp_seq = state.rtp_seq.wrapping_add(1);
            state.rtp_ts = state.rtp_ts.wrapping_add(160);
            match sockets[i].send_to(&packet[..n], slot.dest()) {
                Ok(_) => {
                    report.sent_total += 1;
                    if slots.window.contains(sent_ns) {
                        report.sent_in_window += 1;
                    }
                }
                Err(_) => report.send_errors += 1,
            }
        }
        tick += 1;
    }
    report
}

#[derive(Default)]
struct RxState {
    /// The last packet's RTP sequence number, and its extended (unwrapped) count from the
    /// channel's first packet: its place `k` on the 20 ms grid.
    last: Option<(u16, i64)>,
    /// Receive time minus the frame's place on the grid (k × 20 ms), per packet in the window.
    offsets: Vec<i64>,
    seen: SeqSet,
}

fn recv_loop(sockets: &[UdpSocket], slots: &Slots, stop: &AtomicBool) -> RecvReport {
    use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

    let mut report = RecvReport::default();
    let mut rx: Vec<RxState> = (0..slots.slots.len()).map(|_| RxState::default()).collect();
    let epoll = match Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC) {
        Ok(epoll) => epoll,
        Err(_) => {
            report.recv_errors += 1;
            return report;
        }
    };
    for (slot, socket) in sockets.iter().enumerate() {
        // The kernel stamps each datagram as it arrives: the sender's timing, not this
        // thread's scheduling (on loopback, the moment the service sent it).
        if setsockopt(socket, sockopt::ReceiveTimestampns, &true).is_err() {
            report.recv_errors += 1;
        }
        let event = EpollEvent::new(EpollFlags::EPOLLIN, slot as u64);
        if epoll.add(socket.as_fd(), event).is_err() {
            report.recv_errors += 1;
        }
    }
    let mut events = vec![EpollEvent::empty(); 256];
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let ready = match epoll.wait(&mut events, EpollTimeout::from(50u16)) {
            Ok(n) => n,
            Err(_) => continue,
        };
        for event in &events[..ready] {
            let slot = event.data() as usize;
            loop {
                let (len, from, received) = match recv_stamped(&sockets[slot], &mut buf) {
                    Ok(got) => got,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        report.recv_errors += 1;
                        break;
                    }
                };
                if from != Some(SocketAddr::V4(slots.slots[slot].dest())) {
                    report.unknown_source += 1;
                    continue;
                }
                receive(
                    &mut report,
                    &mut rx[slot],
                    slot,
                    slots,
                    &buf[..len],
                    received,
                );
            }
        }
    }
    // Lateness against each channel's own grid, anchored on its earliest frame: the grid is
    // where frames would be if none were ever late.
    for state in &rx {
        let Some(anchor) = state.offsets.iter().min() else {
            continue;
        };
        for offset in &state.offsets {
            report.lateness.record((offset - anchor) as u64);
        }
    }
    report
}

/// One datagram from the service on `slot`'s socket, received at `received`.
fn receive(
    report: &mut RecvReport,
    state: &mut RxState,
    slot: usize,
    slots: &Slots,
    datagram: &[u8],
    received: u64,
) {
    let c = &report.counts;
    let Ok(packet) = rtp::parse(datagram) else {
        c.garbage.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let seq = packet.header.sequence;
    let ext = match state.last {
        None => 0,
        Some((last, ext)) => ext + i64::from(seq.wrapping_sub(last) as i16),
    };
    state.last = Some((seq, ext));
    let in_window = slots.window.contains(received);
    if in_window {
        c.all.fetch_add(1, Ordering::Relaxed);
        state.offsets.push(received as i64 - ext * PTIME_NS as i64);
    }
    match Stamp::decode(packet.payload) {
        Some(stamp) if usize::from(stamp.slot) != slot => {
            c.foreign.fetch_add(1, Ordering::Relaxed);
        }
        Some(stamp) => {
            if slots.window.contains(stamp.sent_ns) {
                match state.seen.insert(stamp.seq) {
                    Arrival::Duplicate => {
                        c.duplicated.fetch_add(1, Ordering::Relaxed);
                    }
                    Arrival::New { out_of_order } => {
                        c.received.fetch_add(1, Ordering::Relaxed);
                        if out_of_order {
                            c.out_of_order.fetch_add(1, Ordering::Relaxed);
                        }
                        report
                            .round_trip
                            .record(received.saturating_sub(stamp.sent_ns));
                    }
                }
            }
        }
        None if packet.payload.iter().all(|b| *b == packet.payload[0]) => {
            if in_window {
                c.silence.fetch_add(1, Ordering::Relaxed);
            }
        }
        None => {
            c.garbage.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Receives one datagram with the kernel's arrival stamp, turned into [`now_ns`] time: the
/// stamp is on the wall clock, so its age (wall clock now minus stamp) is taken from now.
/// Without a stamp, the time of the read.
fn recv_stamped(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> std::io::Result<(usize, Option<SocketAddr>, u64)> {
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let msg = recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .map_err(std::io::Error::from)?;
    let now = now_ns();
    let from = msg
        .address
        .and_then(|a| a.as_sockaddr_in().map(|v4| SocketAddr::V4((*v4).into())));
    let mut received = now;
    if let Ok(mut cmsgs) = msg.cmsgs()
        && let Some(ControlMessageOwned::ScmTimestampns(stamp)) = cmsgs.next()
    {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        let age = (wall - stamp.num_nanoseconds()).max(0) as u64;
        received = now.saturating_sub(age);
    }
    Ok((msg.bytes, from, received))
}
