//! A media stream client, as an application would write one: tokio-tungstenite, decoding and
//! encoding each encapsulation by hand from the contract (SPEC §5).

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use super::audio;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enc {
    RtpUlaw,
    RtpSlin,
    SlnSlin,
    SlnUlaw,
    AudioSocket,
    /// `format=slin16` (SPEC §9.1) in each encapsulation.
    RtpSlin16,
    SlnSlin16,
    AudioSocket16,
    /// `format=slin48`, beyond SPEC §9.1.
    RtpSlin48,
    SlnSlin48,
    AudioSocket48,
}

impl Enc {
    pub const ALL: [Enc; 5] = [
        Enc::RtpUlaw,
        Enc::RtpSlin,
        Enc::SlnSlin,
        Enc::SlnUlaw,
        Enc::AudioSocket,
    ];

    pub fn query(self) -> &'static str {
        match self {
            Enc::RtpUlaw => "encapsulation=rtp",
            Enc::RtpSlin => "encapsulation=rtp&format=slin",
            Enc::SlnSlin => "encapsulation=sln",
            Enc::SlnUlaw => "encapsulation=sln&format=ulaw",
            Enc::AudioSocket => "encapsulation=audiosocket",
            Enc::RtpSlin16 => "encapsulation=rtp&format=slin16",
            Enc::SlnSlin16 => "encapsulation=sln&format=slin16",
            Enc::AudioSocket16 => "encapsulation=audiosocket&format=slin16",
            Enc::RtpSlin48 => "encapsulation=rtp&format=slin48",
            Enc::SlnSlin48 => "encapsulation=sln&format=slin48",
            Enc::AudioSocket48 => "encapsulation=audiosocket&format=slin48",
        }
    }

    pub const WIDEBAND: [Enc; 3] = [Enc::RtpSlin16, Enc::SlnSlin16, Enc::AudioSocket16];
    pub const FULLBAND: [Enc; 3] = [Enc::RtpSlin48, Enc::SlnSlin48, Enc::AudioSocket48];

    /// Samples per second.
    pub fn rate(self) -> u32 {
        match self {
            Enc::RtpSlin16 | Enc::SlnSlin16 | Enc::AudioSocket16 => 16_000,
            Enc::RtpSlin48 | Enc::SlnSlin48 | Enc::AudioSocket48 => 48_000,
            _ => 8000,
        }
    }

    /// Samples in 20 ms.
    pub fn frame_samples(self) -> usize {
        self.rate() as usize / 50
    }

    /// Bytes of one binary message carrying 20 ms.
    pub fn frame_len(self) -> usize {
        match self {
            Enc::RtpUlaw => 12 + 160,
            Enc::RtpSlin => 12 + 320,
            Enc::SlnSlin => 320,
            Enc::SlnUlaw => 160,
            Enc::AudioSocket => 3 + 320,
            Enc::RtpSlin16 => 12 + 640,
            Enc::SlnSlin16 => 640,
            Enc::AudioSocket16 => 3 + 640,
            Enc::RtpSlin48 => 12 + 1920,
            Enc::SlnSlin48 => 1920,
            Enc::AudioSocket48 => 3 + 1920,
        }
    }
}

/// What came back when the upgrade was refused.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: serde_json::Value,
}

pub struct MediaClient {
    pub ws: Ws,
    pub enc: Enc,
    seq: u16,
    ts: u32,
    pub texts: Vec<serde_json::Value>,
    /// The AudioSocket UUID frame, when one came.
    pub uuid: Option<uuid::Uuid>,
    pub close: Option<(u16, String)>,
}

/// Opens `ws://addr{path}/media_stream?{enc}&{extra}`.
pub async fn open(
    addr: std::net::SocketAddr,
    path: &str,
    enc: Enc,
    extra: &str,
) -> Result<MediaClient, Refused> {
    let url = format!("ws://{addr}{path}/media_stream?{}&{extra}", enc.query());
    match tokio_tungstenite::connect_async(url).await {
        Ok((ws, _)) => Ok(MediaClient {
            ws,
            enc,
            seq: 1000,
            ts: 0,
            texts: Vec::new(),
            uuid: None,
            close: None,
        }),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let status = resp.status().as_u16();
            let body = resp
                .body()
                .as_ref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(serde_json::Value::Null);
            Err(Refused { status, body })
        }
        Err(e) => panic!("connect: {e}"),
    }
}

impl MediaClient {
    /// Decodes one binary message to samples, checking its shape against the contract.
    pub fn decode(&mut self, bytes: &[u8]) -> Vec<i16> {
        match self.enc {
            Enc::RtpSlin16 | Enc::RtpSlin48 => {
                let packet = ari_mediastream::codec::rtp::parse(bytes).expect("an RTP packet");
                let pt = if self.enc == Enc::RtpSlin16 { 97 } else { 99 };
                assert_eq!(packet.header.payload_type, pt);
                assert_eq!(packet.payload.len(), self.enc.frame_samples() * 2);
                audio::from_be(packet.payload)
            }
            Enc::SlnSlin16 | Enc::SlnSlin48 => {
                assert_eq!(bytes.len(), self.enc.frame_samples() * 2);
                audio::from_le(bytes)
            }
            Enc::RtpUlaw | Enc::RtpSlin => {
                let packet = ari_mediastream::codec::rtp::parse(bytes).expect("an RTP packet");
                if self.enc == Enc::RtpUlaw {
                    assert_eq!(packet.header.payload_type, 0);
                    assert_eq!(packet.payload.len(), 160);
                    packet
                        .payload
                        .iter()
                        .map(|&b| ari_mediastream::codec::g711::ulaw_decode(b))
                        .collect()
                } else {
                    assert_eq!(packet.header.payload_type, 96);
                    assert_eq!(packet.payload.len(), 320);
                    audio::from_be(packet.payload)
                }
            }
            Enc::SlnSlin => {
                assert_eq!(bytes.len(), 320);
                audio::from_le(bytes)
            }
            Enc::SlnUlaw => {
                assert_eq!(bytes.len(), 160);
                bytes
                    .iter()
                    .map(|&b| ari_mediastream::codec::g711::ulaw_decode(b))
                    .collect()
            }
            Enc::AudioSocket | Enc::AudioSocket16 | Enc::AudioSocket48 => {
                let (frame, used) = ari_mediastream::codec::audiosocket::decode(bytes, 65535)
                    .expect("an AudioSocket frame")
                    .expect("a whole frame");
                assert_eq!(used, bytes.len(), "one frame a message");
                use ari_mediastream::codec::audiosocket::Kind;
                match frame.kind {
                    Kind::Uuid => {
                        assert!(self.uuid.is_none(), "one UUID frame");
                        self.uuid = ari_mediastream::codec::audiosocket::uuid_of(&frame);
                        Vec::new()
                    }
                    Kind::Audio { rate_hz } if rate_hz == self.enc.rate() => {
                        assert!(self.uuid.is_some(), "the UUID frame comes first");
                        assert_eq!(frame.payload.len(), self.enc.frame_samples() * 2);
                        audio::from_le(frame.payload)
                    }
                    other => panic!("unexpected frame {other:?}"),
                }
            }
        }
    }

    /// Reads for `window`: the samples heard, in order, and how many audio messages carried them.
    pub async fn listen(&mut self, window: Duration) -> (Vec<i16>, usize) {
        let end = Instant::now() + window;
        let mut samples = Vec::new();
        let mut messages = 0;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => break,
                Ok(Some(Ok(Message::Binary(b)))) => {
                    let s = self.decode(&b);
                    if !s.is_empty() {
                        messages += 1;
                        samples.extend(s);
                    }
                }
                Ok(Some(Ok(Message::Text(t)))) => {
                    self.texts
                        .push(serde_json::from_str(&t).expect("events are JSON"));
                }
                Ok(Some(Ok(Message::Close(frame)))) => {
                    self.close = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                    break;
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_)) | None) => break,
            }
        }
        (samples, messages)
    }

    /// Waits for the server's close frame (reading and discarding audio); its code.
    pub async fn closed(&mut self, limit: Duration) -> Option<(u16, String)> {
        let end = Instant::now() + limit;
        while self.close.is_none() {
            let left = end.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => return None,
                Ok(Some(Ok(Message::Close(frame)))) => {
                    self.close = Some(frame.map_or((1005, String::new()), |f| {
                        (u16::from(f.code), f.reason.to_string())
                    }));
                }
                Ok(Some(Ok(Message::Text(t)))) => {
                    self.texts.push(serde_json::from_str(&t).expect("JSON"))
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_)) | None) => return self.close.clone(),
            }
        }
        self.close.clone()
    }

    /// Encodes 20 ms (`frame_samples`) as one message of the stream's
    /// encapsulation.
    pub fn encode_frame(&mut self, samples: &[i16]) -> Vec<u8> {
        use ari_mediastream::codec::g711::ulaw_encode;
        let mut out = Vec::new();
        match self.enc {
            Enc::RtpUlaw | Enc::RtpSlin | Enc::RtpSlin16 | Enc::RtpSlin48 => {
                let (pt, payload) = match self.enc {
                    Enc::RtpUlaw => (
                        0u8,
                        samples.iter().map(|&s| ulaw_encode(s)).collect::<Vec<u8>>(),
                    ),
                    Enc::RtpSlin => (96u8, audio::slin_be(samples)),
                    Enc::RtpSlin16 => (97u8, audio::slin_be(samples)),
                    _ => (99u8, audio::slin_be(samples)),
                };
                out.extend_from_slice(&[0x80, pt]);
                out.extend_from_slice(&self.seq.to_be_bytes());
                out.extend_from_slice(&self.ts.to_be_bytes());
                out.extend_from_slice(&0x1234_5678u32.to_be_bytes());
                out.extend_from_slice(&payload);
                self.seq = self.seq.wrapping_add(1);
                self.ts = self.ts.wrapping_add(samples.len() as u32);
            }
            Enc::SlnSlin | Enc::SlnSlin16 | Enc::SlnSlin48 => out = audio::slin_le(samples),
            Enc::SlnUlaw => out = samples.iter().map(|&s| ulaw_encode(s)).collect(),
            Enc::AudioSocket | Enc::AudioSocket16 | Enc::AudioSocket48 => {
                let payload = audio::slin_le(samples);
                out.push(match self.enc {
                    Enc::AudioSocket => 0x10,
                    Enc::AudioSocket16 => 0x12,
                    _ => 0x16,
                });
                out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
                out.extend_from_slice(&payload);
            }
        }
        out
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws
            .send(Message::Binary(bytes.into()))
            .await
            .expect("send");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    /// Closes from the client side.
    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(CloseFrame {
                code: 1000u16.into(),
                reason: "done".into(),
            }))
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}
