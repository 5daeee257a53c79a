//! The API clients of the simulation: one WebSocket per call that echoes every binary frame
//! back (the definition of a two-way stream), timing each frame's trip from the
//! simulated Asterisk's RTP socket to here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::ari::Ari;
use crate::rtp::{Format, Slots};
use crate::stats::{Arrival, Counts, Hist, SeqSet, Stamp, now_ns};

#[derive(Debug, Default)]
pub struct Clients {
    /// Asterisk → client direction.
    pub counts: Counts,
    /// RTP sent by the simulated Asterisk → binary message read here.
    pub one_way: Hist,
    pub opened: AtomicU64,
    /// Got their first frame.
    pub flowing: AtomicU64,
    pub failed: AtomicU64,
    /// Why streams failed to open or ended early, counted.
    pub failures: std::sync::Mutex<BTreeMap<String, u64>>,
}

impl Clients {
    fn fail(&self, why: String) {
        *self
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(why)
            .or_default() += 1;
    }
}

/// One client, for call `index`: open (retrying while the service is not ready), echo until
/// `stop`, close.
pub async fn run(
    clients: Arc<Clients>,
    ari: Arc<Ari>,
    slots: Arc<Slots>,
    index: usize,
    url: String,
    format: Format,
    mut stop: watch::Receiver<bool>,
) {
    let mut attempts = 0;
    let mut ws = loop {
        attempts += 1;
        // tungstenite zero-fills `read_buffer_size` bytes on every read (128 KiB by default):
        // a 320-byte frame needs far less.
        let config = tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096);
        match tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true).await {
            Ok((ws, _)) => break ws,
            Err(tungstenite::Error::Http(resp))
                if resp.status().as_u16() == 503 && attempts < 40 =>
            {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => {
                clients.failed.fetch_add(1, Ordering::Relaxed);
                clients.fail(match e {
                    tungstenite::Error::Http(resp) => format!("open: HTTP {}", resp.status()),
                    other => format!("open: {other}"),
                });
                return;
            }
        }
    };
    clients.opened.fetch_add(1, Ordering::Relaxed);
    let c = &clients.counts;
    let mut seen = SeqSet::default();
    let mut flowing = false;
    loop {
        let message = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            m = ws.next() => m,
        };
        match message {
            Some(Ok(Message::Binary(bytes))) => {
                let received = now_ns();
                if !flowing {
                    flowing = true;
                    clients.flowing.fetch_add(1, Ordering::Relaxed);
                }
                let in_window = slots.window.contains(received);
                if in_window {
                    c.all.fetch_add(1, Ordering::Relaxed);
                }
                let stamp = match format {
                    Format::Slin => Stamp::decode_le(&bytes),
                    Format::Ulaw => Stamp::decode(&bytes),
                };
                let mine = ari.call_slot[index].load(Ordering::Relaxed);
                match stamp {
                    Some(s) if u32::from(s.slot) + 1 != mine => {
                        c.foreign.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(s) if slots.window.contains(s.sent_ns) => match seen.insert(s.seq) {
                        Arrival::Duplicate => {
                            c.duplicated.fetch_add(1, Ordering::Relaxed);
                        }
                        Arrival::New { out_of_order } => {
                            c.received.fetch_add(1, Ordering::Relaxed);
                            if out_of_order {
                                c.out_of_order.fetch_add(1, Ordering::Relaxed);
                            }
                            clients.one_way.record(received.saturating_sub(s.sent_ns));
                        }
                    },
                    Some(_) => {}
                    None if bytes.iter().all(|b| *b == bytes[0]) => {
                        if in_window {
                            c.silence.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    None => {
                        c.garbage.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if ws.send(Message::Binary(bytes)).await.is_err() {
                    clients.fail("echo: send failed".into());
                    return;
                }
            }
            Some(Ok(Message::Close(frame))) => {
                clients.fail(format!(
                    "closed by the service: {}",
                    frame.map_or("no code".into(), |f| f.code.to_string())
                ));
                return;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                clients.fail(format!("read: {e}"));
                return;
            }
            None => {
                clients.fail("closed without a close frame".into());
                return;
            }
        }
    }
    // The end of the run: close and wait for the service's close frame.
    let _ = ws.close(None).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(m)) = ws.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}
