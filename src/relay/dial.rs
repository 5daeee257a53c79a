//! Opening a WebSocket towards a client's server (`media_stream_connect`, SPEC §9.4): TCP
//! (and TLS for `wss://`), then the HTTP/1.1 upgrade (RFC 6455 §4.1) written and checked here,
//! so that the relay gets a plain socket and the bytes read past the response, as it does for
//! an upgraded one.
//!
//! The relay reads and writes plain sockets without waiting (media workers), so TLS ends in a
//! task of its own, which carries the plaintext to the relay over a loopback connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::task::TaskTracker;
use tungstenite::handshake::client::generate_key;

use super::client::ClientConn;
use crate::codec::http::{self, UpgradeError};

/// How long the TCP connection and the upgrade may take, each.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest upgrade response read.
const MAX_RESPONSE: usize = 16 * 1024;

/// Why the client's server could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{addr} did not answer within {DIAL_TIMEOUT:?}")]
    Timeout { addr: SocketAddr },
    #[error("the upgrade was refused: HTTP {status}")]
    Refused { status: u16 },
    #[error("the upgrade answer is not valid: {0}")]
    Invalid(&'static str),
    #[error("TLS with {host}: {source}")]
    Tls {
        host: String,
        source: std::io::Error,
    },
    #[error("`{0}` is not a valid TLS server name")]
    ServerName(String),
    #[error("the connection failed during the upgrade: {0}")]
    Io(#[from] std::io::Error),
}

/// Opens WebSockets to clients' servers.
#[derive(Clone)]
pub struct Dialer {
    tls: tokio_rustls::TlsConnector,
    /// Runs the TLS tasks.
    tracker: TaskTracker,
}

/// Where to connect and what to ask for.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub addr: SocketAddr,
    /// The URL's host: the `Host` header, and the name the server's certificate must carry.
    pub host: &'a str,
    /// Path and query.
    pub path: &'a str,
    pub secure: bool,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer").finish_non_exhaustive()
    }
}

impl Dialer {
    pub fn new(tls: Arc<rustls::ClientConfig>, tracker: TaskTracker) -> Dialer {
        Dialer {
            tls: tokio_rustls::TlsConnector::from(tls),
            tracker,
        }
    }

    /// Connects and upgrades `GET {path}`.
    pub async fn dial(&self, target: Target<'_>) -> Result<ClientConn, DialError> {
        let addr = target.addr;
        let tcp = match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr)).await {
            Err(_) => return Err(DialError::Timeout { addr }),
            Ok(Err(source)) => return Err(DialError::Connect { addr, source }),
            Ok(Ok(stream)) => stream,
        };
        let _ = tcp.set_nodelay(true);
        let handshake = async {
            if !target.secure {
                let (tcp, rest) = upgrade(tcp, target.host, target.path).await?;
                return Ok(ClientConn::outbound(tcp, rest));
            }
            let name = rustls::pki_types::ServerName::try_from(target.host.to_owned())
                .map_err(|_| DialError::ServerName(target.host.to_owned()))?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|source| DialError::Tls {
                    host: target.host.to_owned(),
                    source,
                })?;
            let (tls, rest) = upgrade(tls, target.host, target.path).await?;
            let plain = super::client::plaintext(tls, &self.tracker).await?;
            Ok(ClientConn::outbound(plain, rest))
        };
        match tokio::time::timeout(DIAL_TIMEOUT, handshake).await {
            Err(_) => Err(DialError::Timeout { addr }),
            Ok(result) => result,
        }
    }
}

/// Sends the upgrade request on `stream` and checks the answer: the stream and the bytes
/// that followed the answer.
async fn upgrade<S>(mut stream: S, host: &str, target: &str) -> Result<(S, Bytes), DialError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let key = generate_key();
    let request = http::upgrade_request(host, target, &key);
    stream.write_all(request.as_bytes()).await?;
    let mut buf = BytesMut::with_capacity(2048);
    loop {
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(DialError::Invalid("the server closed before answering"));
        }
        match http::upgrade_response(&buf, &key)? {
            Some(used) => {
                let rest: Bytes = buf.split_off(used).freeze();
                return Ok((stream, rest));
            }
            None if buf.len() >= MAX_RESPONSE => {
                return Err(DialError::Invalid("the answer's headers are too long"));
            }
            None => {}
        }
    }
}

impl From<UpgradeError> for DialError {
    fn from(e: UpgradeError) -> DialError {
        match e {
            UpgradeError::Refused { status } => DialError::Refused { status },
            UpgradeError::Invalid(why) => DialError::Invalid(why),
        }
    }
}
