//! The ARI event WebSocket, kept connected.
//!
//! One task owns the socket. It connects, forwards every event in order, and on any loss
//! reconnects with capped exponential backoff. Consumers see [`StreamItem::Connected`] after
//! each (re)connect, which is their cue to reconcile with Asterisk's REST view, and
//! [`StreamItem::Disconnected`] when the socket is lost.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, http::HeaderValue};
use tokio_util::sync::CancellationToken;

use super::model::Event;
use super::rest::AriClient;
use crate::telemetry::Metrics;

#[derive(Debug)]
pub enum StreamItem {
    Connected,
    Event(Box<Event>),
    Disconnected,
}

/// Backoff between connection attempts: doubles from `initial` up to `max`, and starts over
/// after a connection that worked.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Everything the event task needs.
#[derive(Debug)]
pub struct EventStream {
    pub ari: AriClient,
    pub app: String,
    pub metrics: Arc<Metrics>,
    /// `true` while connected: `/ready` reads it.
    pub connected: watch::Sender<bool>,
    /// Consumers. Unbounded on purpose: Asterisk drops a reader that lags 100 ms, so this task
    /// must never wait on a consumer; consumers only update memory, and a reconnect resyncs.
    pub out: mpsc::UnboundedSender<StreamItem>,
}

impl EventStream {
    /// Runs until `cancel` fires or the consumer goes away.
    pub async fn run(self, cancel: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut ever_connected = false;
        loop {
            let attempt = tokio::select! {
                _ = cancel.cancelled() => return,
                attempt = self.connect() => attempt,
            };
            match attempt {
                Ok(socket) => {
                    backoff.reset();
                    if ever_connected {
                        self.metrics.ari_reconnects.inc();
                    }
                    ever_connected = true;
                    tracing::info!(app = %self.app, "ARI event socket connected");
                    self.set_connected(true);
                    if self.out.send(StreamItem::Connected).is_err() {
                        return;
                    }
                    let ended = self.read(socket, &cancel).await;
                    self.set_connected(false);
                    if self.out.send(StreamItem::Disconnected).is_err() {
                        return;
                    }
                    match ended {
                        ReadEnd::Cancelled => return,
                        ReadEnd::Lost(reason) => {
                            tracing::warn!(app = %self.app, %reason, "ARI event socket lost")
                        }
                    }
                }
                Err(e) => {
                    self.metrics.ari_connect_failures.inc();
                    tracing::warn!(app = %self.app, error = %e, "ARI event socket: connect failed");
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    fn set_connected(&self, up: bool) {
        self.connected.send_replace(up);
        self.metrics.ari_connected.set(i64::from(up));
    }

    async fn connect(&self) -> Result<Socket, tungstenite::Error> {
        let mut request = self
            .ari
            .events_url(&self.app)
            .as_str()
            .into_client_request()?;
        let mut auth = HeaderValue::from_str(self.ari.basic_auth_header().expose())
            .map_err(|e| tungstenite::Error::HttpFormat(e.into()))?;
        // The request's Debug (in a library's log or an error) shows it as `Sensitive`.
        auth.set_sensitive(true);
        request.headers_mut().insert("Authorization", auth);
        let url = self.ari.events_url(&self.app);
        let tls = self.ari.tls();
        let connect = async {
            let (host, port) = match url.host() {
                Some(url::Host::Domain(name)) => (name.to_owned(), url.port_or_known_default()),
                Some(url::Host::Ipv4(ip)) => (ip.to_string(), url.port_or_known_default()),
                Some(url::Host::Ipv6(ip)) => (ip.to_string(), url.port_or_known_default()),
                None => (String::new(), None),
            };
            let port = port.ok_or(tungstenite::Error::Url(
                tungstenite::error::UrlError::UnableToConnect(url.to_string()),
            ))?;
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let io: Box<dyn Io> = match tls {
                None => Box::new(tcp),
                Some(tls) => {
                    let name = rustls::pki_types::ServerName::try_from(host.clone())
                        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                    let tls = tokio_rustls::TlsConnector::from(tls)
                        .connect(name, tcp)
                        .await?;
                    Box::new(tls)
                }
            };
            tokio_tungstenite::client_async(request, io).await
        };
        match tokio::time::timeout(Duration::from_secs(5), connect).await {
            Ok(result) => Ok(result?.0),
            Err(_) => Err(tungstenite::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connect timed out",
            ))),
        }
    }

    async fn read(&self, mut socket: Socket, cancel: &CancellationToken) -> ReadEnd {
        loop {
            let message = tokio::select! {
                _ = cancel.cancelled() => {
                    let _ = socket.close(None).await;
                    return ReadEnd::Cancelled;
                }
                message = socket.next() => message,
            };
            match message {
                Some(Ok(tungstenite::Message::Text(text))) => {
                    self.metrics.ari_events.inc();
                    let event = Event::parse(&text);
                    tracing::trace!(kind = event.kind(), "ARI event");
                    if self.out.send(StreamItem::Event(Box::new(event))).is_err() {
                        return ReadEnd::Cancelled;
                    }
                }
                // Pings are answered by the library as they are read.
                Some(Ok(tungstenite::Message::Close(frame))) => {
                    return ReadEnd::Lost(format!("closed by Asterisk: {frame:?}"));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return ReadEnd::Lost(e.to_string()),
                None => return ReadEnd::Lost("end of stream".into()),
            }
        }
    }
}

/// The event socket's connection: TCP, or TLS for an `https://` Asterisk.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

type Socket = tokio_tungstenite::WebSocketStream<Box<dyn Io>>;

enum ReadEnd {
    Cancelled,
    Lost(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let delays: Vec<_> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
    }
}
