//! bare-forwarder: the benchmark's floor. Not the service: the least a relay can do to move one
//! two-way stream between an RTP externalMedia channel and a WebSocket, written plainly, so
//! that the service's cost can be given as a multiple of it.
//!
//! It accepts the service's WebSocket URL (`GET /v1.0/calls/{id}/media_stream?format=slin|ulaw`,
//! any token), and per stream, in one task:
//! - binds a UDP socket, asks ARI for an externalMedia channel sending to it, creates a mixing
//!   bridge and adds the call and the channel (REST only: no event socket, no waiting for
//!   `StasisStart`, no retries; the simulated Asterisk allows that, a real one may not);
//! - forwards each RTP payload to the client as one binary message (slin byte-swapped to
//!   little-endian), and each client message to Asterisk as one RTP packet, at once: no
//!   pacing, no jitter buffer, no re-chunking, no controls;
//! - on close, hangs up the channel and destroys the bridge.
//!
//! ```text
//! bare-forwarder --listen 127.0.0.1:18081 --ari-url http://127.0.0.1:18188 --ari-password simulation
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ari_mediastream::codec::rtp::{self, RtpHeader};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use clap::Parser;
use tokio::net::UdpSocket;

#[derive(Debug, Parser)]
#[command(about = "Bare RTP <-> WebSocket forwarder: the floor of the media relay benchmark")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:18081")]
    listen: SocketAddr,
    #[arg(long, default_value = "http://127.0.0.1:18188")]
    ari_url: String,
    #[arg(long, default_value = "mediastream")]
    ari_user: String,
    #[arg(long, default_value = "simulation")]
    ari_password: String,
    #[arg(long, default_value = "mediastream")]
    app: String,
    /// Address of the Asterisk-facing UDP sockets.
    #[arg(long, default_value = "127.0.0.1")]
    bind_ip: IpAddr,
}

#[derive(Debug)]
struct Forwarder {
    args: Args,
    http: reqwest::Client,
}

impl Forwarder {
    async fn ari(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<serde_json::Value, String> {
        let resp = self
            .http
            .request(method, format!("{}/ari/{path}", self.args.ari_url))
            .basic_auth(&self.args.ari_user, Some(&self.args.ari_password))
            .query(query)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("{path}: {}", resp.status()));
        }
        Ok(resp.json().await.unwrap_or(serde_json::Value::Null))
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .expect("--listen can be bound");
    let forwarder = Arc::new(Forwarder {
        args,
        http: reqwest::Client::new(),
    });
    let app = axum::Router::new()
        .route("/v1.0/calls/{id}/media_stream", get(upgrade))
        .with_state(forwarder);
    axum::serve(listener, app).await.expect("serve");
}

async fn upgrade(
    State(f): State<Arc<Forwarder>>,
    Path(call): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let slin = q.get("format").map(String::as_str) != Some("ulaw");
    // tungstenite zero-fills `read_buffer_size` bytes on every read (128 KiB by default); the
    // library's advice for many connections is a small buffer.
    ws.read_buffer_size(4096)
        .on_upgrade(move |socket| async move {
            if let Err(e) = stream(&f, &call, slin, socket).await {
                eprintln!("bare-forwarder: call {call}: {e}");
            }
        })
}

async fn stream(f: &Forwarder, call: &str, slin: bool, ws: WebSocket) -> Result<(), String> {
    let udp = UdpSocket::bind((f.args.bind_ip, 0))
        .await
        .map_err(|e| e.to_string())?;
    let local = udp.local_addr().map_err(|e| e.to_string())?.to_string();
    let id = uuid::Uuid::new_v4().simple();
    let em = format!("mediastream-em-{id}");
    let bridge = format!("mediastream-br-{id}");
    let created = f
        .ari(
            reqwest::Method::POST,
            "channels/externalMedia",
            &[
                ("channelId", em.as_str()),
                ("app", f.args.app.as_str()),
                ("external_host", local.as_str()),
                ("encapsulation", "rtp"),
                ("transport", "udp"),
                ("connection_type", "client"),
                ("format", if slin { "slin" } else { "ulaw" }),
                ("direction", "both"),
            ],
        )
        .await?;
    let vars = &created["channelvars"];
    let peer: SocketAddr = format!(
        "{}:{}",
        vars["UNICASTRTP_LOCAL_ADDRESS"]
            .as_str()
            .unwrap_or_default(),
        vars["UNICASTRTP_LOCAL_PORT"].as_str().unwrap_or_default()
    )
    .parse()
    .map_err(|_| "externalMedia gave no RTP address".to_string())?;
    let post = reqwest::Method::POST;
    let tied = async {
        f.ari(
            post.clone(),
            "bridges",
            &[
                ("type", "mixing"),
                ("bridgeId", &bridge),
                ("name", &f.args.app),
            ],
        )
        .await?;
        f.ari(
            post.clone(),
            &format!("bridges/{bridge}/addChannel"),
            &[("channel", call)],
        )
        .await?;
        f.ari(
            post.clone(),
            &format!("bridges/{bridge}/addChannel"),
            &[("channel", &em)],
        )
        .await
    }
    .await;
    let relayed = match tied {
        Ok(_) => relay(udp, peer, slin, ws).await,
        Err(e) => Err(e),
    };
    let _ = f
        .ari(reqwest::Method::DELETE, &format!("channels/{em}"), &[])
        .await;
    let _ = f
        .ari(reqwest::Method::DELETE, &format!("bridges/{bridge}"), &[])
        .await;
    relayed
}

/// Moves frames both ways until the client goes.
async fn relay(
    udp: UdpSocket,
    peer: SocketAddr,
    slin: bool,
    mut ws: WebSocket,
) -> Result<(), String> {
    let ssrc = uuid::Uuid::new_v4().as_u128() as u32;
    let (mut seq, mut ts) = (0u16, 0u32);
    let mut buf = [0u8; 2048];
    let mut out = [0u8; 2048];
    loop {
        tokio::select! {
            got = udp.recv_from(&mut buf) => {
                let (len, from) = got.map_err(|e| e.to_string())?;
                if from != peer {
                    continue;
                }
                let Ok(packet) = rtp::parse(&buf[..len]) else { continue };
                let mut payload = packet.payload.to_vec();
                if slin {
                    payload.chunks_exact_mut(2).for_each(|s| s.swap(0, 1));
                }
                if ws.send(Message::Binary(payload.into())).await.is_err() {
                    return Ok(());
                }
            }
            message = ws.recv() => match message {
                Some(Ok(Message::Binary(mut data))) => {
                    let mut data = std::mem::take(&mut data).to_vec();
                    if slin {
                        data.chunks_exact_mut(2).for_each(|s| s.swap(0, 1));
                    }
                    let header = RtpHeader {
                        marker: false,
                        payload_type: if slin { 10 } else { 0 },
                        sequence: seq,
                        timestamp: ts,
                        ssrc,
                    };
                    seq = seq.wrapping_add(1);
                    ts = ts.wrapping_add(if slin { data.len() as u32 / 2 } else { data.len() as u32 });
                    if let Some(n) = rtp::write(&header, &data, &mut out) {
                        let _ = udp.send_to(&out[..n], peer).await;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Ok(()),
                Some(Ok(_)) => {}
            },
        }
    }
}
