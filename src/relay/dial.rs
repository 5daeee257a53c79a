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
use tungstenite::handshake::derive_accept_key;

use super::client::ClientConn;

/// How long the TCP connection and the upgrade may take, each.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest upgrade response read.
const MAX_RESPONSE: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

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
    let request = request(host, target, &key);
    stream.write_all(request.as_bytes()).await?;
    let mut buf = BytesMut::with_capacity(2048);
    loop {
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(DialError::Invalid("the server closed before answering"));
        }
        match parse_response(&buf, &key)? {
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

/// The upgrade request.
fn request(host: &str, target: &str, key: &str) -> String {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
         User-Agent: ari-mediastream/{}\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// The length of a complete, valid `101` answer in `buf`; `None` while it is incomplete.
fn parse_response(buf: &[u8], key: &str) -> Result<Option<usize>, DialError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let used = match response.parse(buf) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(DialError::Invalid("not an HTTP answer")),
    };
    let status = response.code.unwrap_or(0);
    if status != 101 {
        return Err(DialError::Refused { status });
    }
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let is = |name: &str, value: &str| {
        header(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|token| token.trim().eq_ignore_ascii_case(value))
            })
    };
    if !is("upgrade", "websocket") || !is("connection", "upgrade") {
        return Err(DialError::Invalid(
            "no Upgrade: websocket / Connection: Upgrade",
        ));
    }
    if header("sec-websocket-accept") != Some(derive_accept_key(key.as_bytes()).as_bytes()) {
        return Err(DialError::Invalid(
            "Sec-WebSocket-Accept does not match the key",
        ));
    }
    Ok(Some(used))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    #[test]
    fn a_valid_answer_and_what_follows_it() {
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {ACCEPT}\r\n\r\n\x01\x02hi"
        );
        let used = parse_response(answer.as_bytes(), KEY)
            .expect("valid")
            .expect("complete");
        assert_eq!(&answer.as_bytes()[used..], b"\x01\x02hi");
        assert!(matches!(
            parse_response(&answer.as_bytes()[..20], KEY),
            Ok(None)
        ));
    }

    #[test]
    fn refusals() {
        let not_found = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(
            parse_response(not_found, KEY),
            Err(DialError::Refused { status: 404 })
        ));
        let wrong_key = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                         Connection: Upgrade\r\nSec-WebSocket-Accept: AAAA\r\n\r\n";
        assert!(matches!(
            parse_response(wrong_key.as_bytes(), KEY),
            Err(DialError::Invalid(_))
        ));
        assert!(matches!(
            parse_response(b"SSH-2.0-OpenSSH\r\n\r\n", KEY),
            Err(DialError::Invalid(_))
        ));
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        assert!(request("::1", "/", KEY).contains("Host: [::1]\r\n"));
        assert!(
            request("bot", "/ws?a=1", KEY).starts_with("GET /ws?a=1 HTTP/1.1\r\nHost: bot\r\n")
        );
    }
}
