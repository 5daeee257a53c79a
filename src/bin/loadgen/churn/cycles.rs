//! One cycle of the churn: a media stream opened, heard, closed; or an external media started,
//! heard at its host, stopped. Each returns how long it took or why it failed, and nothing else.

use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio_tungstenite::tungstenite::{self, Message};

use super::hosts::Hosts;
use super::{Ctx, Failure};

/// How long an open, the first audio, or the server's close may take before the cycle fails.
const OPEN_LIMIT: Duration = Duration::from_secs(10);
const AUDIO_LIMIT: Duration = Duration::from_secs(5);
const CLOSE_LIMIT: Duration = Duration::from_secs(5);

/// What a client receives as audio in one encapsulation.
#[derive(Debug, Clone, Copy)]
enum AudioMessage {
    /// Any binary message (`rtp`, `sln`).
    Binary,
    /// An AudioSocket audio frame (kinds 0x10-0x18), not the UUID frame before it.
    AudioSocketFrame,
    /// A Twilio `media` event.
    TwilioMedia,
}

#[derive(Debug, Clone, Copy)]
pub struct Variant {
    pub name: &'static str,
    query: &'static str,
    audio: AudioMessage,
}

/// The streams a cycle opens, in turn: every encapsulation, narrowband and wideband formats.
pub const VARIANTS: [Variant; 8] = [
    Variant {
        name: "rtp/ulaw",
        query: "encapsulation=rtp",
        audio: AudioMessage::Binary,
    },
    Variant {
        name: "sln/slin",
        query: "encapsulation=sln",
        audio: AudioMessage::Binary,
    },
    Variant {
        name: "audiosocket/slin",
        query: "encapsulation=audiosocket",
        audio: AudioMessage::AudioSocketFrame,
    },
    Variant {
        name: "twilio/ulaw",
        query: "encapsulation=twilio",
        audio: AudioMessage::TwilioMedia,
    },
    Variant {
        name: "rtp/slin",
        query: "encapsulation=rtp&format=slin",
        audio: AudioMessage::Binary,
    },
    Variant {
        name: "sln/ulaw",
        query: "encapsulation=sln&format=ulaw",
        audio: AudioMessage::Binary,
    },
    Variant {
        name: "audiosocket/slin16",
        query: "encapsulation=audiosocket&format=slin16",
        audio: AudioMessage::AudioSocketFrame,
    },
    Variant {
        name: "sln/slin16",
        query: "encapsulation=sln&format=slin16",
        audio: AudioMessage::Binary,
    },
];

impl AudioMessage {
    fn is_audio(self, message: &Message) -> bool {
        match (self, message) {
            (AudioMessage::Binary, Message::Binary(_)) => true,
            (AudioMessage::AudioSocketFrame, Message::Binary(b)) => {
                b.first().is_some_and(|k| (0x10..=0x18).contains(k))
            }
            (AudioMessage::TwilioMedia, Message::Text(t)) => {
                serde_json::from_str::<serde_json::Value>(t).is_ok_and(|v| v["event"] == "media")
            }
            _ => false,
        }
    }
}

/// One media stream: open, first audio, client close, server close.
pub async fn stream_cycle(ctx: &Ctx, call: &str, variant: Variant) -> Result<Duration, Failure> {
    let url = format!(
        "ws://{}/v1.0/calls/{call}/media_stream?{}&token={}",
        ctx.args.service, variant.query, ctx.args.token
    );
    let started = Instant::now();
    let mut ws = match tokio::time::timeout(OPEN_LIMIT, tokio_tungstenite::connect_async(url)).await
    {
        Err(_) => return Err(Failure::Failed("open", "no answer in 10 s".into())),
        Ok(Err(tungstenite::Error::Http(response))) => {
            let body = response
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
                .into_owned();
            return Err(Failure::Refused(response.status().as_u16(), body));
        }
        Ok(Err(e)) => return Err(Failure::Failed("open", e.to_string())),
        Ok(Ok((ws, _))) => ws,
    };
    let first_audio = tokio::time::timeout(AUDIO_LIMIT, async {
        loop {
            match ws.next().await {
                Some(Ok(m)) if variant.audio.is_audio(&m) => return Ok(()),
                Some(Ok(Message::Close(frame))) => return Err(format!("closed first: {frame:?}")),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("ended".into()),
            }
        }
    })
    .await;
    match first_audio {
        Err(_) => return Err(Failure::Failed("no_audio", "none in 5 s".into())),
        Ok(Err(why)) => return Err(Failure::Failed("no_audio", why)),
        Ok(Ok(())) => {}
    }
    let _ = ws.close(None).await;
    // Audio in flight comes first, then the server's close frame, then the end.
    let server_closed = tokio::time::timeout(CLOSE_LIMIT, async {
        let mut closed = false;
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Close(_)) => closed = true,
                Ok(_) => {}
                Err(e) if !closed => return Err(e.to_string()),
                Err(_) => break,
            }
        }
        if closed {
            Ok(())
        } else {
            Err("the connection ended without a close frame".to_owned())
        }
    })
    .await;
    match server_closed {
        Ok(Ok(())) => Ok(started.elapsed()),
        Ok(Err(why)) => Err(Failure::Failed("no_close", why)),
        Err(_) => Err(Failure::Failed("no_close", "none in 5 s".into())),
    }
}

/// One external media: start, first audio at the host, DELETE.
pub async fn external_cycle(
    ctx: &Ctx,
    call: &str,
    hosts: &mut Hosts,
    audiosocket: bool,
) -> Result<Duration, Failure> {
    // What an earlier one left in flight is not this one's audio.
    let mut scratch = [0u8; 2048];
    while hosts.udp.try_recv(&mut scratch).is_ok() {}
    while hosts.audio.try_recv().is_ok() {}
    let body = if audiosocket {
        serde_json::json!({"external_host": hosts.tcp.to_string(), "encapsulation": "audiosocket", "format": "slin"})
    } else {
        serde_json::json!({"external_host": hosts.udp.local_addr().map_err(|e| Failure::Failed("open", e.to_string()))?.to_string()})
    };
    let started = Instant::now();
    let response = ctx
        .http
        .post(ctx.url(&format!("/v1.0/calls/{call}/external_media")))
        .bearer_auth(&ctx.args.token)
        .json(&body)
        .send()
        .await
        .map_err(|e| Failure::Failed("open", e.to_string()))?;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    if status != 201 {
        return Err(Failure::Refused(status, text));
    }
    let view: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Failure::Failed("open", e.to_string()))?;
    let id = view["id"].as_str().unwrap_or_default().to_owned();
    let heard = if audiosocket {
        tokio::time::timeout(AUDIO_LIMIT, hosts.audio.recv())
            .await
            .is_ok_and(|m| m.is_some())
    } else {
        tokio::time::timeout(AUDIO_LIMIT, hosts.udp.recv(&mut scratch))
            .await
            .is_ok_and(|r| r.is_ok())
    };
    let stopped = ctx
        .http
        .delete(ctx.url(&format!("/v1.0/external_medias/{id}")))
        .bearer_auth(&ctx.args.token)
        .send()
        .await
        .map(|r| r.status().as_u16());
    if !heard {
        return Err(Failure::Failed("no_audio", format!("external media {id}")));
    }
    match stopped {
        Ok(204) => Ok(started.elapsed()),
        Ok(status) => Err(Failure::Failed("stop", format!("DELETE {id}: {status}"))),
        Err(e) => Err(Failure::Failed("stop", e.to_string())),
    }
}
