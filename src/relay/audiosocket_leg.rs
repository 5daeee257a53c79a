//! The Asterisk-facing AudioSocket legs: one listener for the whole service ([`AudioSocketHub`])
//! and one TCP connection per stream ([`AudioSocketLeg`]), owned by the stream's task.
//!
//! Asterisk connects inside the externalMedia request and sends first a UUID frame carrying
//! the externalMedia `data`: the hub hands the connection to the stream that registered that
//! UUID. Towards Asterisk a frame is written whole, header and payload in one write (a payload
//! late behind its header hangs the channel up), and never an empty, UUID, DTMF or error frame.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::codec::audiosocket::{self, Kind};

/// Largest frame accepted from Asterisk: 20 ms at 192 kHz is 7680 bytes.
const MAX_PAYLOAD: usize = 8192;
/// How long a new connection may take to say who it is.
const HELLO_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection from Asterisk, identified, with whatever it sent after its UUID frame.
#[derive(Debug)]
pub struct Identified {
    stream: TcpStream,
    rest: BytesMut,
}

type Waiters = HashMap<uuid::Uuid, oneshot::Sender<Identified>>;

/// The service's one AudioSocket listener.
#[derive(Debug)]
pub struct AudioSocketHub {
    local_addr: SocketAddr,
    waiters: Arc<Mutex<Waiters>>,
}

impl AudioSocketHub {
    /// Binds now (Asterisk connects during the externalMedia request, so the listener must be
    /// up before any) and accepts until `cancel`, each connection in a tracked task.
    pub async fn bind(
        addr: SocketAddr,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> std::io::Result<AudioSocketHub> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let waiters: Arc<Mutex<Waiters>> = Arc::default();
        let accept_waiters = waiters.clone();
        let accept_tracker = tracker.clone();
        tracker.spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    _ = cancel.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            tracing::warn!(error = %e, "AudioSocket accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let waiters = accept_waiters.clone();
                let cancel = cancel.clone();
                accept_tracker.spawn(async move {
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = identify(stream, peer, waiters) => {}
                    }
                });
            }
        });
        Ok(AudioSocketHub {
            local_addr,
            waiters,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Registers `id` before asking Asterisk to connect with it.
    pub fn expect(&self, id: uuid::Uuid) -> oneshot::Receiver<Identified> {
        let (tx, rx) = oneshot::channel();
        lock(&self.waiters).insert(id, tx);
        rx
    }

    pub fn forget(&self, id: uuid::Uuid) {
        lock(&self.waiters).remove(&id);
    }
}

fn lock(waiters: &Mutex<Waiters>) -> std::sync::MutexGuard<'_, Waiters> {
    waiters.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads the first frame; hands the connection over if it is a UUID someone awaits.
async fn identify(mut stream: TcpStream, peer: SocketAddr, waiters: Arc<Mutex<Waiters>>) {
    let mut buf = BytesMut::with_capacity(1024);
    let hello = tokio::time::timeout(HELLO_TIMEOUT, async {
        loop {
            match audiosocket::decode(&buf, MAX_PAYLOAD) {
                Ok(Some((frame, used))) => {
                    let id = (frame.kind == Kind::Uuid)
                        .then(|| audiosocket::uuid_of(&frame))
                        .flatten();
                    return id.map(|id| (id, used));
                }
                Ok(None) => {}
                Err(_) => return None,
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    })
    .await;
    let Ok(Some((id, used))) = hello else {
        tracing::debug!(%peer, "AudioSocket connection without a UUID frame: closed");
        return;
    };
    buf.advance(used);
    let Some(waiter) = lock(&waiters).remove(&id) else {
        tracing::debug!(%peer, %id, "AudioSocket connection for no stream: closed");
        return;
    };
    let _ = waiter.send(Identified { stream, rest: buf });
}

/// One stream's AudioSocket connection with Asterisk.
#[derive(Debug)]
pub struct AudioSocketLeg {
    stream: TcpStream,
    /// Received bytes not yet decoded.
    inbox: BytesMut,
    /// The payload of the frame most recently decoded, returned by `recv`.
    frame: Vec<u8>,
    /// One whole outgoing frame, reused.
    outbox: Vec<u8>,
    /// Frames that were not audio at the leg's rate, or bytes that were not AudioSocket.
    pub malformed: u64,
    /// The rate the channel was asked for (`slin` or `slin16`), in both directions.
    rate_hz: u32,
}

impl AudioSocketLeg {
    pub fn new(identified: Identified, rate_hz: u32) -> AudioSocketLeg {
        let _ = identified.stream.set_nodelay(true);
        AudioSocketLeg {
            stream: identified.stream,
            inbox: identified.rest,
            frame: Vec::with_capacity(MAX_PAYLOAD),
            outbox: Vec::with_capacity(audiosocket::HEADER_LEN + MAX_PAYLOAD),
            malformed: 0,
            rate_hz,
        }
    }

    /// Waits for the next audio payload at the leg's rate. `UnexpectedEof` when Asterisk ends the call
    /// (it closes the connection, or sends a hangup frame). Cancel-safe.
    pub async fn recv(&mut self) -> std::io::Result<&[u8]> {
        loop {
            match audiosocket::decode(&self.inbox, MAX_PAYLOAD) {
                Ok(Some((frame, used))) => {
                    let kind = frame.kind;
                    self.frame.clear();
                    self.frame.extend_from_slice(frame.payload);
                    self.inbox.advance(used);
                    match kind {
                        Kind::Audio { rate_hz } if rate_hz == self.rate_hz => {
                            return Ok(&self.frame);
                        }
                        Kind::Hangup => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                        _ => self.malformed += 1,
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
                }
            }
            if self.stream.read_buf(&mut self.inbox).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Writes one audio frame, header and payload together.
    pub async fn send(&mut self, payload: &[u8]) -> std::io::Result<()> {
        if payload.is_empty() {
            return Ok(());
        }
        self.outbox.clear();
        let kind = Kind::Audio {
            rate_hz: self.rate_hz,
        };
        audiosocket::encode(kind, payload, &mut self.outbox);
        self.stream.write_all(&self.outbox).await
    }
}
