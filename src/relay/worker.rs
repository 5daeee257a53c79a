//! Media workers: the driver for streams whose Asterisk leg is RTP, built to serve thousands
//! of them per core. Each worker is a thread of its own with a single-threaded runtime, and
//! serves all its streams from one task:
//!
//! - one UDP socket for every stream's leg: Asterisk is given the socket's address as each
//!   channel's `external_host`, and sends from a port of its own per channel
//!   (`UNICASTRTP_LOCAL_PORT`), so the sender's address says which stream a packet is for.
//!   Packets are read many per system call (`recvmmsg`) and each goes to its stream's client
//!   at once;
//! - one 20 ms timer (a `timerfd` on absolute deadlines, so the grid neither drifts nor
//!   inherits the runtime's millisecond rounding): at each tick every stream's frame towards
//!   Asterisk is made and all of them leave in one batch (`sendmmsg`), then each client's
//!   input is read as far as it has arrived;
//! - each client's WebSocket is written from there, without waiting: a client whose socket is
//!   full is simply not written to, and its stream core drops the oldest audio.
//!
//! Compared with a task per stream, the thread wakes once per tick and once per burst of
//! Asterisk's packets instead of once per packet per stream and direction: client sockets are
//! registered with no reactor, so what a client sends wakes nothing; it is read at the next
//! tick, where it would wait for its 20 ms slot anyway.
//!
//! Every decision stays in the stream's [`StreamCore`]; the worker owns the sockets, the timer
//! and the batches, and nothing else.

use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg, setsockopt, sockopt,
};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use nix::time::clock_gettime;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::Inbound;
use super::client::{ClientConn, ClientGone, NonBlocking, Received, StdConn};
use super::core::{EndReason, PTIME, StreamCore};
use super::driver::{Channels, DRAIN, REPORT_EVERY, SessionLink};
use super::stream::{StreamSpec, core_config};
use crate::codec::rtp::{self, RtpSender};
use crate::telemetry::{Metrics, ReasonLabels};

/// Datagrams read or sent per system call.
const BATCH: usize = 64;
/// Largest datagram read: a 20 ms frame is 172 to 652 bytes, anything much larger is not ours.
const MAX_DATAGRAM: usize = 2048;
/// Kernel buffers of a worker's UDP socket: a few ticks of every stream's packets, so that a
/// worker held up for a moment loses nothing (granted in full to root, else up to the
/// system's `rmem_max`/`wmem_max`).
const UDP_BUFFER: usize = 8 * 1024 * 1024;
/// How far ahead of the timer a stream's clock is set, so that each tick finds exactly one
/// frame due however the two clocks' readings fall.
const CLOCK_LEAD: Duration = Duration::from_micros(20);
/// Least time between two reads of the media socket while datagrams keep coming: under load
/// the thread wakes at most 2,000 times a second however many streams it serves, and a
/// datagram waits at most this long. A datagram after a quiet spell is read at once.
const RECEIVE_GAP: Duration = Duration::from_micros(500);

/// What a stream needs of a worker. `C` is the client's connection: as the HTTP server handed
/// it over, then as the worker's thread takes it.
#[derive(Debug)]
pub struct WorkerStream<C = ClientConn> {
    pub spec: StreamSpec,
    /// Asterisk's side of the externalMedia channel: where its RTP comes from and goes to.
    pub peer: SocketAddr,
    /// The payload type Asterisk expects for the channel's format.
    pub leg_payload_type: u8,
    pub client: C,
    pub channels: Channels,
}

struct Attach {
    /// The client socket out of the HTTP runtime's reactor, and what was read past the
    /// upgrade request.
    stream: WorkerStream<StdConn>,
    done: oneshot::Sender<EndReason>,
    span: tracing::Span,
}

#[derive(Debug)]
struct Handle {
    local_addr: SocketAddr,
    /// Streams running on the worker.
    load: AtomicUsize,
    commands: mpsc::UnboundedSender<Attach>,
    /// Joined on drop: by then the commands are closed and every stream has ended.
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The service's media workers, one per core unless configured otherwise.
#[derive(Debug)]
pub struct Workers {
    workers: Vec<Handle>,
}

impl Workers {
    /// Binds each worker's UDP socket on the first free ports of `ports` and starts it. A
    /// worker ends its streams with 1001 when `shutdown` fires, and stops once the `Workers`
    /// are dropped and its last stream has ended.
    pub fn start(
        count: usize,
        ip: IpAddr,
        ports: RangeInclusive<u16>,
        shutdown: CancellationToken,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Workers> {
        let mut free = ports;
        let mut workers = Vec::with_capacity(count);
        for index in 0..count.max(1) {
            let socket = bind_in(ip, &mut free)?;
            let local_addr = socket.local_addr()?;
            let (commands, inbox) = mpsc::unbounded_channel();
            let shutdown = shutdown.clone();
            let metrics = metrics.clone();
            let thread = std::thread::Builder::new()
                .name(format!("media-worker-{index}"))
                .spawn(move || serve(socket, inbox, shutdown, metrics))?;
            workers.push(Handle {
                local_addr,
                load: AtomicUsize::new(0),
                commands,
                thread: Some(thread),
            });
        }
        Ok(Workers { workers })
    }

    /// A worker for a new stream: the least loaded. (Packing streams on few workers, to let the
    /// others sleep, cost more than it saved when measured: one thread then takes every
    /// datagram's wake-up.)
    pub fn choose(&self) -> usize {
        self.workers
            .iter()
            .enumerate()
            .min_by_key(|(_, w)| w.load.load(Ordering::Relaxed))
            .map_or(0, |(i, _)| i)
    }

    /// The address Asterisk must send worker `index`'s streams to.
    pub fn local_addr(&self, index: usize) -> SocketAddr {
        self.workers[index % self.workers.len()].local_addr
    }

    /// Runs a stream on worker `index` until it ends; returns why.
    pub async fn run(&self, index: usize, stream: WorkerStream) -> EndReason {
        let gone = || EndReason::Failure("the media worker stopped".into());
        let (done, ended) = oneshot::channel();
        let client = match stream.client.into_std() {
            Ok(client) => client,
            Err(e) => return EndReason::Failure(format!("taking over the client socket: {e}")),
        };
        let attach = Attach {
            stream: WorkerStream {
                client,
                spec: stream.spec,
                peer: stream.peer,
                leg_payload_type: stream.leg_payload_type,
                channels: stream.channels,
            },
            done,
            span: tracing::Span::current(),
        };
        let worker = &self.workers[index % self.workers.len()];
        if worker.commands.send(attach).is_err() {
            return gone();
        }
        let _running = Running::on(&worker.load);
        ended.await.unwrap_or_else(|_| gone())
    }
}

/// A stream counted in its worker's load while it runs (also if its task is dropped).
struct Running<'a>(&'a AtomicUsize);

impl<'a> Running<'a> {
    fn on(load: &'a AtomicUsize) -> Running<'a> {
        load.fetch_add(1, Ordering::Relaxed);
        Running(load)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            // Closing the channel lets the worker stop once its streams have ended.
            let (closed, _) = mpsc::unbounded_channel();
            drop(std::mem::replace(&mut worker.commands, closed));
            if let Some(thread) = worker.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// Binds a UDP socket on the first free port left in `ports`, and moves past it.
fn bind_in(ip: IpAddr, ports: &mut RangeInclusive<u16>) -> std::io::Result<std::net::UdpSocket> {
    for port in ports.clone() {
        *ports = port.saturating_add(1)..=*ports.end();
        match std::net::UdpSocket::bind(SocketAddr::new(ip, port)) {
            Ok(socket) => {
                socket.set_nonblocking(true)?;
                if setsockopt(&socket, sockopt::RcvBufForce, &UDP_BUFFER).is_err() {
                    let _ = setsockopt(&socket, sockopt::RcvBuf, &UDP_BUFFER);
                }
                if setsockopt(&socket, sockopt::SndBufForce, &UDP_BUFFER).is_err() {
                    let _ = setsockopt(&socket, sockopt::SndBuf, &UDP_BUFFER);
                }
                return Ok(socket);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no free port left in media.rtp_ports for a media worker",
    ))
}

/// A worker thread's life.
fn serve(
    socket: std::net::UdpSocket,
    inbox: mpsc::UnboundedReceiver<Attach>,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "a media worker could not start its runtime");
            return;
        }
    };
    runtime.block_on(async move {
        match Worker::new(socket, metrics) {
            Ok(worker) => worker.run(inbox, shutdown).await,
            Err(e) => tracing::error!(error = %e, "a media worker could not start"),
        }
    });
}

/// One stream served by a worker.
struct Entry {
    core: StreamCore,
    client: NonBlocking,
    peer: SocketAddr,
    leg: RtpSender,
    /// RTP timestamp step of one frame towards Asterisk.
    frame_samples: u32,
    session: SessionLink,
    /// Told why the stream ended, once.
    done: Option<oneshot::Sender<EndReason>>,
    /// The client's socket was full at the last write.
    blocked: bool,
    /// When the stream ended: its farewell has until then plus [`DRAIN`].
    ended_at: Option<Instant>,
    span: tracing::Span,
}

impl Entry {
    /// Hands the client what the core has for it, as far as its socket takes it now.
    fn write_client(&mut self) {
        if self.blocked {
            match self.client.flush() {
                Ok(true) => self.blocked = false,
                Ok(false) => return,
                Err(ClientGone) => return self.client_gone(),
            }
        }
        let mut wrote = false;
        while let Some(message) = self.core.poll_to_client() {
            wrote = true;
            if !self.client.queue(message) {
                return self.client_gone();
            }
        }
        if wrote {
            match self.client.flush() {
                Ok(all) => self.blocked = !all,
                Err(ClientGone) => self.client_gone(),
            }
        }
    }

    fn client_gone(&mut self) {
        self.core.end(EndReason::Client);
        // Nothing more can reach it.
        while self.core.poll_to_client().is_some() {}
        self.blocked = false;
    }

    /// Reads what the client has sent, as far as the stream takes input now.
    fn read_client(&mut self, now: Instant) {
        while self.core.wants_client() {
            match self.client.read() {
                Received::Message(message) => self.core.handle_client(now, &message),
                Received::WouldBlock => break,
            }
        }
    }

    /// Once ended: reports why (once) and says whether the entry can go: the client has
    /// answered the farewell's close frame, or the farewell has had its time.
    fn finished(&mut self, now: Instant) -> bool {
        let Some(reason) = self.core.ended().cloned() else {
            return false;
        };
        let ended_at = *self.ended_at.get_or_insert(now);
        if let Some(done) = self.done.take() {
            self.session.report(&mut self.core);
            let _ = done.send(reason);
        }
        self.write_client();
        if now >= ended_at + DRAIN {
            return true;
        }
        if self.blocked || self.core.has_client_output() {
            return false;
        }
        // The close frame is out: wait for the client's (the closing handshake), so that the
        // connection ends cleanly rather than with a reset that could lose the close frame.
        loop {
            match self.client.read() {
                Received::Message(Inbound::Close) => return true,
                Received::Message(_) => {}
                Received::WouldBlock => return false,
            }
        }
    }
}

/// Datagrams read in one system call: their buffers, and where each came from.
struct RecvBatch {
    bufs: Box<[[u8; MAX_DATAGRAM]]>,
    headers: MultiHeaders<SockaddrStorage>,
    /// Sender and length of each datagram of the last read.
    got: Vec<(Option<SocketAddr>, usize)>,
}

/// Datagrams waiting to be sent in one system call.
struct SendBatch {
    bufs: Box<[[u8; MAX_DATAGRAM]]>,
    lens: Vec<usize>,
    to: Vec<Option<SockaddrStorage>>,
    headers: MultiHeaders<SockaddrStorage>,
}

/// The 20 ms timer, as the reactor takes it.
struct Timer(TimerFd);

impl AsRawFd for Timer {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Waits for `timer` to expire; returns how many times it has since it was last read (more
/// than one after a stall).
async fn wait(timer: &AsyncFd<Timer>, period: Duration) -> u32 {
    loop {
        let Ok(mut guard) = timer.readable().await else {
            // A timer cannot fail once armed; should it, fall back to the runtime's.
            tokio::time::sleep(period).await;
            return 1;
        };
        let mut count = [0u8; 8];
        match guard.try_io(|fd| {
            nix::unistd::read(&fd.get_ref().0, &mut count).map_err(std::io::Error::from)
        }) {
            Ok(Ok(8)) => return u32::try_from(u64::from_ne_bytes(count)).unwrap_or(1).max(1),
            Ok(_) => return 1,
            Err(_would_block) => continue,
        }
    }
}

/// Arms `timer` to expire once, `after` from now.
fn arm(timer: &AsyncFd<Timer>, after: Duration) -> nix::Result<()> {
    let after = after.max(Duration::from_micros(1));
    timer.get_ref().0.set(
        Expiration::OneShot(TimeSpec::from_duration(after)),
        TimerSetTimeFlags::empty(),
    )
}

/// A timer on the monotonic clock, read through the reactor.
fn new_timer() -> std::io::Result<AsyncFd<Timer>> {
    let fd = TimerFd::new(
        ClockId::CLOCK_MONOTONIC,
        TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
    )?;
    register(Timer(fd))
}

/// Registers the timer with the reactor. The safe constructor is deprecated because it cannot
/// stop the file descriptor being closed while registered; here the registration owns the
/// timer, which owns its descriptor, so nothing else can close it.
#[allow(deprecated)]
fn register(timer: Timer) -> std::io::Result<AsyncFd<Timer>> {
    AsyncFd::with_interest(timer, Interest::READABLE)
}

impl SendBatch {
    /// Sends the batch, as much as the kernel takes now; the rest is counted and dropped (a
    /// frame late by a tick is worth less than the next one on time).
    fn flush(&mut self, udp: &tokio::net::UdpSocket, unsent: &mut u64) {
        let send = self;
        let fd = udp.as_raw_fd();
        let mut from = 0;
        while from < send.lens.len() {
            let (bufs, lens, to) = (&send.bufs[from..], &send.lens[from..], &send.to[from..]);
            let headers = &mut send.headers;
            let sent = udp.try_io(Interest::WRITABLE, || {
                let slices: [[IoSlice<'_>; 1]; BATCH] = std::array::from_fn(|i| {
                    [IoSlice::new(&bufs[i][..lens.get(i).copied().unwrap_or(0)])]
                });
                sendmmsg(
                    fd,
                    headers,
                    &slices[..lens.len()],
                    to,
                    [],
                    MsgFlags::empty(),
                )
                .map(Iterator::count)
                .map_err(std::io::Error::from)
            });
            match sent {
                Ok(n) if n > 0 => from += n,
                _ => {
                    *unsent += (send.lens.len() - from) as u64;
                    break;
                }
            }
        }
        send.lens.clear();
        send.to.clear();
    }
}

struct Worker {
    udp: tokio::net::UdpSocket,
    /// The 20 ms grid.
    timer: AsyncFd<Timer>,
    /// Ends a pause in reading the media socket (see [`RECEIVE_GAP`]).
    nap: AsyncFd<Timer>,
    /// The instant of the timer's next tick (the grid on which every stream's clock runs).
    next_tick: Instant,
    streams: Vec<Option<Entry>>,
    /// Free places in `streams`.
    vacant: Vec<usize>,
    /// Which stream each Asterisk address feeds.
    by_peer: HashMap<SocketAddr, usize>,
    recv: RecvBatch,
    send: SendBatch,
    /// Streams with new audio for their client during this read.
    touched: Vec<usize>,
    /// When the worker's own counters are next added to the metrics.
    next_report: Instant,
    /// Datagrams from no known stream, and sends the kernel refused, since the last report.
    foreign: u64,
    unsent: u64,
    metrics: Arc<Metrics>,
}

impl Worker {
    fn new(socket: std::net::UdpSocket, metrics: Arc<Metrics>) -> std::io::Result<Worker> {
        let udp = tokio::net::UdpSocket::from_std(socket)?;
        let timer = new_timer()?;
        // Instant is CLOCK_MONOTONIC too: read both together to place the grid in each.
        let mono = clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)?;
        let next_tick = Instant::now() + PTIME;
        let first = mono + TimeSpec::from_duration(PTIME);
        timer.get_ref().0.set(
            Expiration::IntervalDelayed(first, TimeSpec::from_duration(PTIME)),
            TimerSetTimeFlags::TFD_TIMER_ABSTIME,
        )?;
        let batch = || vec![[0u8; MAX_DATAGRAM]; BATCH].into_boxed_slice();
        Ok(Worker {
            udp,
            timer,
            nap: new_timer()?,
            next_tick,
            streams: Vec::new(),
            vacant: Vec::new(),
            by_peer: HashMap::new(),
            recv: RecvBatch {
                bufs: batch(),
                headers: MultiHeaders::preallocate(BATCH, None),
                got: Vec::with_capacity(BATCH),
            },
            send: SendBatch {
                bufs: batch(),
                lens: Vec::with_capacity(BATCH),
                to: Vec::with_capacity(BATCH),
                headers: MultiHeaders::preallocate(BATCH, None),
            },
            touched: Vec::new(),
            next_report: Instant::now() + REPORT_EVERY,
            foreign: 0,
            unsent: 0,
            metrics,
        })
    }

    async fn run(
        mut self,
        mut inbox: mpsc::UnboundedReceiver<Attach>,
        shutdown: CancellationToken,
    ) {
        let mut open = true;
        // While set, the media socket is read when the nap timer fires rather than as soon as
        // a datagram arrives (see [`RECEIVE_GAP`]).
        let mut napping = false;
        let mut last_receive = Instant::now();
        // Every place in `streams` is either taken or vacant: no scan needed on each wake-up.
        while open || self.streams.len() > self.vacant.len() {
            tokio::select! {
                biased;
                ticks = wait(&self.timer, PTIME) => {
                    let now = Instant::now();
                    self.next_tick += PTIME * ticks;
                    self.tick(now, shutdown.is_cancelled());
                }
                _ = wait(&self.nap, RECEIVE_GAP), if napping => {
                    napping = false;
                    last_receive = Instant::now();
                    self.receive(last_receive);
                }
                ready = self.udp.readable(), if !napping => {
                    let now = Instant::now();
                    let since = now.duration_since(last_receive);
                    if ready.is_ok() && since >= RECEIVE_GAP {
                        last_receive = now;
                        self.receive(now);
                    } else if arm(&self.nap, RECEIVE_GAP - since).is_ok() {
                        // Datagrams keep coming: let more arrive, then read them together.
                        napping = true;
                    } else {
                        self.receive(now);
                    }
                }
                attach = inbox.recv(), if open => match attach {
                    Some(attach) => self.attach(attach),
                    None => open = false,
                },
            }
        }
    }

    fn attach(&mut self, attach: Attach) {
        let Attach { stream, done, span } = attach;
        let WorkerStream {
            spec,
            peer,
            leg_payload_type,
            client,
            channels,
        } = stream;
        let client = match NonBlocking::new(client) {
            Ok(client) => client,
            Err(e) => {
                let _ = done.send(EndReason::Failure(format!("client socket: {e}")));
                return;
            }
        };
        let now = Instant::now();
        // The stream's clock runs on this worker's timer grid.
        let mut clock_start = self
            .next_tick
            .checked_sub(CLOCK_LEAD)
            .unwrap_or(self.next_tick);
        while clock_start < now {
            clock_start += PTIME;
        }
        let seed = uuid::Uuid::new_v4().as_u128();
        let frame_samples = spec.format.frame_samples() as u32;
        let entry = Entry {
            core: StreamCore::new(core_config(spec, now, clock_start)),
            frame_samples,
            client,
            peer,
            leg: RtpSender::new(
                seed as u32,
                (seed >> 32) as u16,
                (seed >> 48) as u32,
                leg_payload_type,
            ),
            session: SessionLink::new(channels, self.metrics.clone(), now),
            done: Some(done),
            blocked: false,
            ended_at: None,
            span,
        };
        let index = match self.vacant.pop() {
            Some(index) => {
                self.streams[index] = Some(entry);
                index
            }
            None => {
                self.streams.push(Some(entry));
                self.streams.len() - 1
            }
        };
        if let Some(previous) = self.by_peer.insert(peer, index) {
            // Asterisk reuses an address only once its channel has gone: the older stream is
            // over in all but name.
            tracing::warn!(%peer, previous, "a media address was taken over");
        }
        if let Some(entry) = self.streams[index].as_mut() {
            entry.write_client();
        }
    }

    /// One tick of the 20 ms clock: every stream's frame towards Asterisk first, all in
    /// batches, then each stream's client input, session word and output.
    fn tick(&mut self, now: Instant, shutting_down: bool) {
        for index in 0..self.streams.len() {
            let Some(entry) = self.streams[index].as_mut() else {
                continue;
            };
            if shutting_down {
                entry.core.end(EndReason::Shutdown);
            }
            entry.core.handle_timeout(now);
            while let Some(frame) = entry.core.poll_to_leg() {
                let header = entry.leg.next_header(entry.frame_samples);
                let slot = self.send.lens.len();
                match rtp::write(&header, frame, &mut self.send.bufs[slot]) {
                    Some(len) => {
                        self.send.lens.push(len);
                        self.send.to.push(Some(SockaddrStorage::from(entry.peer)));
                    }
                    None => self.unsent += 1,
                }
                if self.send.lens.len() == BATCH {
                    self.send.flush(&self.udp, &mut self.unsent);
                }
            }
        }
        self.send.flush(&self.udp, &mut self.unsent);

        for index in 0..self.streams.len() {
            let Some(entry) = self.streams[index].as_mut() else {
                continue;
            };
            entry.session.take_signals(&mut entry.core, now);
            entry.read_client(now);
            entry.session.give_actions(&mut entry.core);
            entry.write_client();
            entry.session.report_due(&mut entry.core, now);
            if entry.finished(now) {
                self.remove(index);
            }
        }
        if now >= self.next_report {
            self.next_report = now + REPORT_EVERY;
            self.report();
        }
    }

    fn remove(&mut self, index: usize) {
        if let Some(entry) = self.streams[index].take() {
            if self.by_peer.get(&entry.peer) == Some(&index) {
                self.by_peer.remove(&entry.peer);
            }
            let _enter = entry.span.enter();
            tracing::debug!(reason = ?entry.core.ended(), "stream left its media worker");
            self.vacant.push(index);
        }
    }

    /// Reads every datagram waiting and hands each to its stream; then writes to the clients
    /// that got audio.
    fn receive(&mut self, now: Instant) {
        loop {
            let got = self.read_batch();
            let count = got.len();
            for i in 0..count {
                let (from, len) = self.recv.got[i];
                let index = from.and_then(|from| self.by_peer.get(&from).copied());
                let Some(entry) = index
                    .and_then(|i| self.streams.get_mut(i))
                    .and_then(Option::as_mut)
                else {
                    self.foreign += 1;
                    continue;
                };
                match rtp::parse(&self.recv.bufs[i][..len]) {
                    Ok(packet) => {
                        entry.core.handle_leg(now, packet.payload);
                        if let Some(index) = index {
                            self.touched.push(index);
                        }
                    }
                    Err(_) => entry.session.bad_leg_packets(1),
                }
            }
            if count < BATCH {
                break;
            }
        }
        for index in std::mem::take(&mut self.touched) {
            if let Some(entry) = self.streams[index].as_mut() {
                entry.write_client();
            }
        }
    }

    /// One `recvmmsg`: fills `recv.got` (empty when nothing is waiting).
    fn read_batch(&mut self) -> &[(Option<SocketAddr>, usize)] {
        let recv = &mut self.recv;
        recv.got.clear();
        let fd = self.udp.as_raw_fd();
        let (bufs, headers, got) = (&mut recv.bufs, &mut recv.headers, &mut recv.got);
        let result = self.udp.try_io(Interest::READABLE, || {
            let mut free = bufs.iter_mut();
            let mut slices: [[IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| {
                [IoSliceMut::new(
                    free.next().map(|b| &mut b[..]).unwrap_or_default(),
                )]
            });
            let results = recvmmsg(fd, headers, slices.iter_mut(), MsgFlags::empty(), None)
                .map_err(std::io::Error::from)?;
            for message in results {
                let from = message
                    .address
                    .and_then(|a: SockaddrStorage| socket_addr(&a));
                got.push((from, message.bytes));
            }
            Ok(())
        });
        if let Err(e) = result
            && e.kind() != std::io::ErrorKind::WouldBlock
        {
            tracing::warn!(error = %e, "reading the media socket failed");
        }
        &self.recv.got
    }

    fn report(&mut self) {
        let drops = |reason, n: &mut u64| {
            let n = std::mem::take(n);
            if n > 0 {
                self.metrics
                    .stream_drops
                    .get_or_create(&ReasonLabels { reason })
                    .inc_by(n);
            }
        };
        drops("unknown_source", &mut self.foreign);
        drops("leg_send_failed", &mut self.unsent);
    }
}

fn socket_addr(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::from(std::net::SocketAddrV4::from(*v4)));
    }
    address
        .as_sockaddr_in6()
        .map(|v6| SocketAddr::from(std::net::SocketAddrV6::from(*v6)))
}
