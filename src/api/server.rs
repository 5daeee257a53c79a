//! The HTTP server: accepts connections (TLS when configured), bounds what a client may take
//! before its first request is whole, and serves the API over HTTP/1.1 with upgrades.
//!
//! The first request's head is read here, before hyper sees the connection: a connection that
//! sends nothing, or dribbles its head, holds one of `max_pending` places for at most
//! `request_timeout` and is then answered 408; past `max_pending` connections in that phase a
//! new one is answered 429 at once; a head over `max_header_bytes` is answered 431. Later
//! requests on a kept-alive connection have the same bounds from hyper itself.

use crate::codec::http::HeadEnd;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{ErrorBody, Reason};

/// What a client may take before its request is served.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections whose first request head (TLS handshake included) is not complete yet.
    pub max_pending: usize,
    /// Time to send a whole request head, from the connection's start.
    pub request_timeout: Duration,
    /// Largest request head (request line and headers).
    pub max_header_bytes: usize,
}

/// A client's connection as the HTTP server reads it.
#[derive(Debug)]
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// A connection and the bytes already read from it, which are read again first.
#[derive(Debug)]
pub struct Io {
    pub head: Bytes,
    pub conn: Conn,
}

impl AsyncRead for Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.head.is_empty() {
            let n = self.head.len().min(buf.remaining());
            buf.put_slice(&self.head[..n]);
            self.head.advance(n);
            return Poll::Ready(Ok(()));
        }
        match &mut self.conn {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.conn {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.conn {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.conn {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Why a connection was answered before its request reached the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Busy,
    Timeout,
    HeadTooLarge,
}

impl Refusal {
    fn answer(self) -> String {
        let (reason, message) = match self {
            Refusal::Busy => (
                Reason::LimitExceeded,
                "too many connections are still sending their request; try again shortly",
            ),
            Refusal::Timeout => (Reason::RequestTimeout, "the request was not sent in time"),
            Refusal::HeadTooLarge => (
                Reason::HeadersTooLarge,
                "the request line and headers are too large",
            ),
        };
        let status = reason.status();
        let text = status.canonical_reason().unwrap_or_default();
        let status = status.as_u16();
        let body = serde_json::to_string(&ErrorBody::new(reason, message))
            .expect("an error body serialises");
        format!(
            "HTTP/1.1 {status} {text}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        )
    }
}

/// Serves `router` on `listener` until `shutdown`, then lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let pending = Arc::new(Semaphore::new(limits.max_pending));
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let connections = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of descriptors and the like: pause rather than spin.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let Ok(place) = pending.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "refused: too many connections still sending their request");
            connections.spawn(refuse(tcp, tls.is_some(), Refusal::Busy));
            continue;
        };
        let (router, tls, limits) = (router.clone(), tls.clone(), limits.clone());
        let stop = shutdown.clone();
        connections.spawn(async move {
            let io = match first_head(tcp, tls.as_ref(), &limits).await {
                Ok(io) => io,
                Err(refusal) => {
                    tracing::debug!(%peer, ?refusal, "connection refused before its request");
                    return;
                }
            };
            drop(place);
            let service = hyper_util::service::TowerToHyperService::new(router);
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.request_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192))
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            let mut connection = std::pin::pin!(connection);
            // On shutdown, requests in flight finish and kept-alive connections close.
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                _ = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    // Requests in flight finish; upgraded streams live on under the session's own shutdown.
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Reads until the first request head is whole (the TLS handshake first), within the limits;
/// answers and closes the connection if it is not.
async fn first_head(
    tcp: TcpStream,
    tls: Option<&tokio_rustls::TlsAcceptor>,
    limits: &Limits,
) -> Result<Io, Refusal> {
    let deadline = tokio::time::Instant::now() + limits.request_timeout;
    let conn = match tls {
        None => Conn::Plain(tcp),
        Some(acceptor) => match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => Conn::Tls(Box::new(tls)),
            _ => return Err(Refusal::Timeout),
        },
    };
    let mut io = Io {
        head: Bytes::new(),
        conn,
    };
    let mut head = BytesMut::with_capacity(2048);
    let mut end = HeadEnd::default();
    let outcome = tokio::time::timeout_at(deadline, async {
        loop {
            let n = (&mut io)
                .take(8192)
                .read_buf(&mut head)
                .await
                .map_err(|_| None)?;
            if n == 0 {
                return Err(None);
            }
            match end.find(&head) {
                Some(len) if len <= limits.max_header_bytes => return Ok(()),
                Some(_) => return Err(Some(Refusal::HeadTooLarge)),
                None if head.len() > limits.max_header_bytes => {
                    return Err(Some(Refusal::HeadTooLarge));
                }
                None => {}
            }
        }
    })
    .await;
    let refusal = match outcome {
        Ok(Ok(())) => {
            io.head = head.freeze();
            return Ok(io);
        }
        // The client went away: nothing to answer.
        Ok(Err(None)) => return Err(Refusal::Timeout),
        Ok(Err(Some(refusal))) => refusal,
        Err(_) => Refusal::Timeout,
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        io.write_all(refusal.answer().as_bytes()),
    )
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
    Err(refusal)
}

/// Answers a connection the server has no room for, briefly, and closes it.
async fn refuse(mut tcp: TcpStream, tls: bool, refusal: Refusal) {
    // Over TLS an answer would need a handshake first: the connection is just closed.
    if !tls {
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            tcp.write_all(refusal.answer().as_bytes()),
        )
        .await;
    }
    let _ = tcp.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_json_errors_that_close() {
        for (refusal, status) in [
            (Refusal::Busy, "429"),
            (Refusal::Timeout, "408"),
            (Refusal::HeadTooLarge, "431"),
        ] {
            let answer = refusal.answer();
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status} ")),
                "{answer}"
            );
            assert!(answer.contains("connection: close\r\n"));
            let body = answer.split("\r\n\r\n").nth(1).expect("body");
            let json: serde_json::Value = serde_json::from_str(body).expect("json");
            assert_eq!(json["error"]["status"].to_string(), status);
        }
    }
}
