//! A TCP proxy in front of Asterisk that keeps the request line of every HTTP request the
//! service sends, for tests that check what Asterisk was asked.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::ari_upstream;

/// Keeps the request line of every HTTP request sent through it (REST and the event socket's
/// upgrade).
pub struct Tap {
    pub url: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Tap {
    pub async fn start() -> Tap {
        let upstream = ari_upstream();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = lines.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                tokio::spawn(relay(client, server, seen.clone()));
            }
        });
        Tap { url, lines }
    }

    /// The request lines seen since the last take.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.lines.lock().expect("lock"))
    }
}

/// Copies both ways; what goes to Asterisk is split into lines and request lines are kept.
async fn relay(client: TcpStream, server: TcpStream, seen: Arc<Mutex<Vec<String>>>) {
    let (mut client_rd, mut client_wr) = client.into_split();
    let (mut server_rd, mut server_wr) = server.into_split();
    let up = async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut line = Vec::new();
        loop {
            let n = match client_rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            for &b in &buf[..n] {
                if b == b'\n' {
                    let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                    let method = text.split(' ').next().unwrap_or("");
                    if text.ends_with(" HTTP/1.1")
                        && ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
                            .contains(&method)
                    {
                        seen.lock().expect("lock").push(text);
                    }
                    line.clear();
                } else if line.len() < 8192 {
                    line.push(b);
                }
            }
            if server_wr.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_wr.shutdown().await;
    };
    let down = async move {
        let _ = tokio::io::copy(&mut server_rd, &mut client_wr).await;
        let _ = client_wr.shutdown().await;
    };
    tokio::join!(up, down);
}
