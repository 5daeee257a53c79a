//! A TCP proxy between the service and Asterisk's HTTP server that a test can use to cut the
//! ARI event socket while Asterisk stays up: `cut` closes the event WebSocket connections and
//! refuses new ones until `restore`; REST requests pass all along. Or the other way round:
//! `refuse_rest` closes the REST connections and refuses new ones until `restore_rest`, as
//! Asterisk does past its HTTP session limit, while the event socket passes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct AriProxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    cut: bool,
    /// Fires to close the event connections open now.
    sockets: CancellationToken,
    refusing_rest: bool,
    /// REST connections refused so far.
    refused_rest: u64,
    /// Fires to close the REST connections open now.
    rest: CancellationToken,
}

impl AriProxy {
    /// A proxy in front of the tests' Asterisk (`MEDIASTREAM_TEST_ARI_URL`, plain http).
    pub async fn in_front_of_asterisk() -> AriProxy {
        let upstream: SocketAddr = super::ari_upstream()
            .parse()
            .expect("MEDIASTREAM_TEST_ARI_URL names an IP address and port");
        AriProxy::start(upstream).await
    }

    /// Test settings whose `ari.url` is this proxy.
    pub fn settings(&self) -> ari_mediastream::config::Settings {
        let mut settings = super::test_settings();
        settings.ari.url = format!("http://{}", self.addr).parse().expect("url");
        settings
    }

    async fn start(upstream: SocketAddr) -> AriProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let proxy = AriProxy {
            addr: listener.local_addr().expect("addr"),
            state: Arc::default(),
        };
        let state = proxy.state.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve(client, upstream, state.clone()));
            }
        });
        proxy
    }

    pub fn cut(&self) {
        let mut state = self.state.lock().expect("lock");
        state.cut = true;
        state.sockets.cancel();
        state.sockets = CancellationToken::new();
    }

    pub fn restore(&self) {
        self.state.lock().expect("lock").cut = false;
    }

    pub fn refuse_rest(&self) {
        let mut state = self.state.lock().expect("lock");
        state.refusing_rest = true;
        state.rest.cancel();
        state.rest = CancellationToken::new();
    }

    pub fn restore_rest(&self) {
        self.state.lock().expect("lock").refusing_rest = false;
    }

    /// REST connections refused so far.
    pub fn refused_rest(&self) -> u64 {
        self.state.lock().expect("lock").refused_rest
    }
}

async fn serve(mut client: TcpStream, upstream: SocketAddr, state: Arc<Mutex<State>>) {
    // The request line says whether this is the event socket.
    let mut head = vec![0u8; 4096];
    let mut len = 0;
    while !head[..len].windows(2).any(|w| w == b"\r\n") {
        match client.read(&mut head[len..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => len += n,
        }
        if len == head.len() {
            return;
        }
    }
    let events = head[..len].starts_with(b"GET /ari/events");
    let closed = {
        let mut state = state.lock().expect("lock");
        if events && state.cut {
            return;
        }
        if !events && state.refusing_rest {
            state.refused_rest += 1;
            return;
        }
        if events {
            state.sockets.clone()
        } else {
            state.rest.clone()
        }
    };
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    if server.write_all(&head[..len]).await.is_err() {
        return;
    }
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = closed.cancelled() => {}
    }
}
