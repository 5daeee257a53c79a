//! Hosts an external media sends to, as a speech recogniser or recorder would run them: a UDP
//! RTP receiver and a TCP AudioSocket server.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use super::audio;

/// What an RTP receiver got in a window.
#[derive(Debug, Default)]
pub struct RtpCapture {
    pub payload_types: Vec<u8>,
    pub payload_lens: Vec<usize>,
    pub arrivals: Vec<Instant>,
    pub samples: Vec<i16>,
    /// Where the packets came from (Asterisk's side).
    pub from: Option<SocketAddr>,
}

impl RtpCapture {
    /// Mean interval between packets, in milliseconds.
    pub fn mean_interval_ms(&self) -> f64 {
        if self.arrivals.len() < 2 {
            return f64::NAN;
        }
        let span = self.arrivals[self.arrivals.len() - 1].duration_since(self.arrivals[0]);
        span.as_secs_f64() * 1000.0 / (self.arrivals.len() - 1) as f64
    }
}

/// Receives RTP for `window`, decoding μ-law (PT 0) and big-endian slin (PT 10, 11) to samples.
pub async fn capture_rtp(socket: &UdpSocket, window: Duration) -> RtpCapture {
    let mut capture = RtpCapture::default();
    let mut buf = [0u8; 2048];
    let end = Instant::now() + window;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        let Ok(Ok((len, from))) = tokio::time::timeout(left, socket.recv_from(&mut buf)).await
        else {
            break;
        };
        let packet = ari_mediastream::codec::rtp::parse(&buf[..len]).expect("RTP from Asterisk");
        capture.from = Some(from);
        capture.arrivals.push(Instant::now());
        capture.payload_types.push(packet.header.payload_type);
        capture.payload_lens.push(packet.payload.len());
        match packet.header.payload_type {
            0 => capture.samples.extend(
                packet
                    .payload
                    .iter()
                    .map(|&b| ari_mediastream::codec::g711::ulaw_decode(b)),
            ),
            _ => capture.samples.extend(audio::from_be(packet.payload)),
        }
    }
    capture
}

/// An AudioSocket connection from Asterisk, read frame by frame.
pub struct AudioSocketPeer {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

/// Accepts the next connection within `limit`.
pub async fn accept_audiosocket(listener: &TcpListener, limit: Duration) -> AudioSocketPeer {
    let (stream, _) = tokio::time::timeout(limit, listener.accept())
        .await
        .expect("Asterisk connects")
        .expect("accept");
    AudioSocketPeer {
        stream,
        buf: Vec::new(),
    }
}

impl AudioSocketPeer {
    /// The next frame: kind and payload; `None` at end of stream or after `limit`.
    pub async fn frame(&mut self, limit: Duration) -> Option<(u8, Vec<u8>)> {
        let end = Instant::now() + limit;
        loop {
            if self.buf.len() >= 3 {
                let len = usize::from(u16::from_be_bytes([self.buf[1], self.buf[2]]));
                if self.buf.len() >= 3 + len {
                    let kind = self.buf[0];
                    let payload = self.buf[3..3 + len].to_vec();
                    self.buf.drain(..3 + len);
                    return Some((kind, payload));
                }
            }
            let left = end.checked_duration_since(Instant::now())?;
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout(left, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// What a call itself sends, and only that: its `in` direction through a snoop, carried by an
/// AudioSocket external media to a server of the test's. Audio played into the call is heard
/// here only if the call sends it back (an `Echo()` call does), never straight from the
/// bridge, as a second stream on the call would hear it.
pub struct CallVoice {
    peer: AudioSocketPeer,
    /// Keeps the port: Asterisk connected once.
    _listener: TcpListener,
}

/// Starts a [`CallVoice`] on `call` in `format` (`slin` or `slin16`).
pub async fn call_voice(service: &super::Service, call: &str, format: &str) -> CallVoice {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let host = listener.local_addr().expect("addr").to_string();
    let body = serde_json::json!({
        "external_host": host,
        "encapsulation": "audiosocket",
        "format": format,
        "direction_listen": "in",
        "direction_speak": "none",
    });
    let path = format!("/v1.0/calls/{call}/external_media");
    let ((status, view), mut peer) = tokio::join!(
        service.post(&path, Some(body)),
        accept_audiosocket(&listener, Duration::from_secs(5))
    );
    assert_eq!(status, 201, "{view}");
    let (kind, _) = peer
        .frame(Duration::from_secs(2))
        .await
        .expect("the UUID frame");
    assert_eq!(kind, 0x01, "an AudioSocket stream opens with its UUID");
    CallVoice {
        peer,
        _listener: listener,
    }
}

impl CallVoice {
    /// The call's audio for `window`.
    pub async fn listen(&mut self, window: Duration) -> Vec<i16> {
        let end = Instant::now() + window;
        let mut samples = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.peer.frame(left).await {
                Some((kind, payload)) if kind >= 0x10 => {
                    samples.extend(audio::from_le(&payload));
                }
                Some(_) => {}
                None => break,
            }
        }
        samples
    }
}
