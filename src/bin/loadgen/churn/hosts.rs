//! The hosts a worker's external medias send to, as a recogniser or recorder would run them: a
//! UDP socket for RTP and a TCP listener for AudioSocket, whose connections are held until
//! Asterisk closes them (those still open at the end are counted as left behind).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// The hosts a worker's external medias send to, held for the whole run.
pub struct Hosts {
    pub udp: UdpSocket,
    pub tcp: SocketAddr,
    /// One message per AudioSocket connection, once it has carried audio.
    pub audio: mpsc::Receiver<()>,
    _accepting: JoinSet<()>,
}

impl Hosts {
    pub async fn bind(connections: Arc<AtomicU64>) -> std::io::Result<Hosts> {
        let udp = UdpSocket::bind("127.0.0.1:0").await?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let tcp = listener.local_addr()?;
        let (tx, audio) = mpsc::channel(16);
        let mut accepting = JoinSet::new();
        accepting.spawn(accept(listener, tx, connections));
        Ok(Hosts {
            udp,
            tcp,
            audio,
            _accepting: accepting,
        })
    }
}

/// Accepts Asterisk's AudioSocket connections and holds each until Asterisk closes it.
async fn accept(listener: TcpListener, audio: mpsc::Sender<()>, connections: Arc<AtomicU64>) {
    let mut held = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.fetch_add(1, Ordering::Relaxed);
                    held.spawn(hold(stream, audio.clone(), connections.clone()));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = held.join_next(), if !held.is_empty() => {}
        }
    }
}

/// Reads AudioSocket frames until the end, telling once when audio has come.
async fn hold(mut stream: TcpStream, audio: mpsc::Sender<()>, connections: Arc<AtomicU64>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut told = false;
    while let Ok(n @ 1..) = stream.read(&mut chunk).await {
        if told {
            continue;
        }
        buf.extend_from_slice(&chunk[..n]);
        while buf.len() >= 3 {
            let len = usize::from(u16::from_be_bytes([buf[1], buf[2]]));
            if buf.len() < 3 + len {
                break;
            }
            if (0x10..=0x18).contains(&buf[0]) {
                let _ = audio.try_send(());
                told = true;
                break;
            }
            buf.drain(..3 + len);
        }
    }
    connections.fetch_sub(1, Ordering::Relaxed);
}
