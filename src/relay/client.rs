//! The client's WebSocket connection as the relay takes it over after the HTTP upgrade: the
//! TCP socket and whatever the HTTP server had read beyond the request. Two ways to run it:
//! as an async `Stream<Inbound>` / `Sink<Outbound>` for a per-stream driver
//! ([`ClientConn::into_async`]), or as a non-blocking WebSocket a media worker reads and
//! writes when it chooses ([`NonBlocking`]).
//!
//! Owns the WebSocket settings (message size limits, buffer sizes) and what the WebSocket
//! library's errors mean for a stream, matched by their type.

use bytes::Bytes;
use futures::{Sink, SinkExt, Stream, StreamExt};
use nix::sys::socket::{setsockopt, sockopt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tungstenite::error::{CapacityError, Error as WsError};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use super::core::MAX_MESSAGE_BYTES;
use super::{Inbound, Outbound};

/// The WebSocket layer refuses messages beyond this (1009); the stream core refuses any over
/// [`MAX_MESSAGE_BYTES`] itself, so that it can close with the right code.
pub const WS_LIMIT: usize = 16 * MAX_MESSAGE_BYTES;
/// Bytes read from the client's socket at a time: a frame is a few hundred bytes, and the
/// library zero-fills its whole read buffer for every read.
const READ_BUFFER: usize = 4096;
/// Most bytes a worker leaves queued for a client whose socket is full; the stream core drops
/// the oldest audio before more piles up here.
const MAX_WRITE_BUFFER: usize = 256 * 1024;
/// The kernel's send buffer for each client socket, set rather than left to autotuning (which
/// grows to megabytes): 64 KiB is over a second of the largest audio frames, after which the
/// stream core's ring drops the oldest audio.
pub const CLIENT_SNDBUF: usize = 64 * 1024;

/// A client's WebSocket connection, not yet read: upgraded by the service's HTTP server, or
/// opened by the service towards the client's server (`media_stream_connect`).
#[derive(Debug)]
pub struct ClientConn {
    stream: TcpStream,
    /// Bytes read past the handshake: the start of the first frames.
    read_ahead: Bytes,
    /// `Server` for an upgraded connection; `Client` for one the service opened (its frames
    /// are masked).
    role: Role,
}

/// A client connection's parts, for a worker on another runtime.
#[derive(Debug)]
pub struct StdConn {
    pub stream: std::net::TcpStream,
    pub read_ahead: Bytes,
    pub role: Role,
}

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(WS_LIMIT))
        .max_frame_size(Some(WS_LIMIT))
        .read_buffer_size(READ_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
}

impl ClientConn {
    pub fn new(stream: TcpStream, read_ahead: Bytes) -> ClientConn {
        ClientConn::with_role(stream, read_ahead, Role::Server)
    }

    /// A connection the service opened to the client's server, after the handshake.
    pub fn outbound(stream: TcpStream, read_ahead: Bytes) -> ClientConn {
        ClientConn::with_role(stream, read_ahead, Role::Client)
    }

    fn with_role(stream: TcpStream, read_ahead: Bytes, role: Role) -> ClientConn {
        let _ = stream.set_nodelay(true);
        let _ = setsockopt(&stream, sockopt::SndBuf, &CLIENT_SNDBUF);
        ClientConn {
            stream,
            read_ahead,
            role,
        }
    }

    /// The connection as an async WebSocket, for a driver that gives the stream a task of
    /// its own.
    pub async fn into_async(
        self,
    ) -> (
        impl Stream<Item = Inbound> + Unpin + Send,
        impl Sink<Outbound> + Unpin + Send,
    ) {
        let socket = WebSocketStream::from_partially_read(
            self.stream,
            self.read_ahead.to_vec(),
            self.role,
            Some(config()),
        )
        .await;
        let (sink, stream) = socket.split();
        let inbound = stream.filter_map(|message| std::future::ready(inbound(message)));
        let outbound =
            sink.with(|message: Outbound| std::future::ready(Ok::<_, WsError>(wire(message))));
        (Box::pin(inbound), Box::pin(outbound))
    }

    /// The parts, for a worker on another runtime: the socket leaves this runtime's reactor.
    pub fn into_std(self) -> std::io::Result<StdConn> {
        Ok(StdConn {
            stream: self.stream.into_std()?,
            read_ahead: self.read_ahead,
            role: self.role,
        })
    }
}

/// What a message or an error from the client's WebSocket means for the stream; `None` for
/// what the library answers itself (pings, pongs).
pub fn inbound(message: Result<Message, WsError>) -> Option<Inbound> {
    Some(match message {
        Ok(Message::Binary(bytes)) => Inbound::Binary(bytes),
        Ok(Message::Text(text)) => Inbound::Text(text),
        Ok(Message::Close(_)) => Inbound::Close,
        Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => return None,
        Err(WsError::Capacity(CapacityError::MessageTooLong { .. })) => Inbound::TooLarge,
        Err(WsError::Utf8(_)) => Inbound::Malformed("a text message that is not UTF-8".into()),
        // The connection is gone or broke the protocol: as good as closed.
        Err(_) => Inbound::Close,
    })
}

/// A message for the client as the WebSocket library takes it.
pub fn wire(message: Outbound) -> Message {
    match message {
        Outbound::Binary(bytes) => Message::Binary(bytes),
        Outbound::Text(text) => Message::Text(text),
        Outbound::Close { code, reason } => Message::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        })),
    }
}

/// A client WebSocket that never waits: reads and writes go as far as the socket allows now
/// and report `WouldBlock` past that, keeping partial frames for the next try. For a worker
/// that serves many streams from one task and reads each client when it chooses.
///
/// The socket is a plain non-blocking one, registered with no reactor: data arriving from the
/// client wakes no thread. The worker tries each client once per 20 ms tick instead, which
/// costs one system call a tick where a wake-up per message would cost a context switch.
#[derive(Debug)]
pub struct NonBlocking {
    ws: WebSocket<std::net::TcpStream>,
}

/// The client's connection is closed or broken: nothing more can be written to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the client's connection is gone")]
pub struct ClientGone;

/// What a non-blocking read gave.
#[derive(Debug)]
pub enum Received {
    Message(Inbound),
    /// Nothing more for now.
    WouldBlock,
}

impl NonBlocking {
    /// Takes over a socket.
    pub fn new(conn: StdConn) -> std::io::Result<NonBlocking> {
        conn.stream.set_nonblocking(true)?;
        Ok(NonBlocking {
            ws: WebSocket::from_partially_read(
                conn.stream,
                conn.read_ahead.to_vec(),
                conn.role,
                Some(config()),
            ),
        })
    }

    /// The next message from the client, if one has arrived whole.
    pub fn read(&mut self) -> Received {
        loop {
            match self.ws.read() {
                Err(WsError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return Received::WouldBlock;
                }
                result => {
                    if let Some(message) = inbound(result) {
                        return Received::Message(message);
                    }
                }
            }
        }
    }

    /// Queues a message; written by [`NonBlocking::flush`]. `false` when the client is gone
    /// or its queue is full.
    pub fn queue(&mut self, message: Outbound) -> bool {
        match self.ws.write(wire(message)) {
            Ok(()) => true,
            Err(WsError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => true,
            Err(_) => false,
        }
    }

    /// Writes what is queued. `Ok(true)` when all of it went, `Ok(false)` when the socket is
    /// full (the rest stays queued).
    pub fn flush(&mut self) -> Result<bool, ClientGone> {
        match self.ws.flush() {
            Ok(()) => Ok(true),
            Err(WsError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
            Err(_) => Err(ClientGone),
        }
    }
}

/// A loopback connection carrying the plaintext of `tls` both ways, for the relay, which
/// reads and writes plain sockets without waiting: TLS ends in a task of `tracker`, which
/// stops when either side closes (a peer that stops sending but keeps its socket open must
/// not keep the task).
pub async fn plaintext<S>(
    tls: S,
    tracker: &tokio_util::task::TaskTracker,
) -> std::io::Result<TcpStream>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
    let near = TcpStream::connect(listener.local_addr()?).await?;
    let (far, _) = listener.accept().await?;
    let _ = far.set_nodelay(true);
    tracker.spawn(async move {
        let (mut tls_in, mut tls_out) = tokio::io::split(tls);
        let (mut far_in, mut far_out) = far.into_split();
        tokio::select! {
            _ = tokio::io::copy(&mut tls_in, &mut far_out) => {}
            _ = tokio::io::copy(&mut far_in, &mut tls_out) => {}
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), tls_out.shutdown()).await;
    });
    Ok(near)
}
