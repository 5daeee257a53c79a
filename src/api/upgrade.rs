//! The WebSocket upgrade (RFC 6455 §4.2), done here rather than by axum's extractor so that
//! the relay gets the client's TCP socket itself, with whatever the server read past the
//! request: a media worker reads and writes thousands of client sockets from one task, which
//! an async WebSocket type owned by a task of its own would not allow.

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Version, header};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_util::task::TaskTracker;

use super::server::{Conn, Io};
use crate::relay::client::ClientConn;

/// A request that asks for a WebSocket: checked, not yet answered.
#[derive(Debug)]
pub struct Upgrade {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
}

/// Why a request is not a WebSocket upgrade this service can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this route takes a WebSocket upgrade (HTTP/1.1 GET with Upgrade: websocket)")]
pub struct NotAnUpgrade;

impl axum::response::IntoResponse for NotAnUpgrade {
    fn into_response(self) -> Response {
        super::ApiError::invalid_argument(self.to_string()).into_response()
    }
}

fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = NotAnUpgrade;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, NotAnUpgrade> {
        let headers = &parts.headers;
        let asks = parts.method == Method::GET
            && parts.version == Version::HTTP_11
            && header_has(headers, header::CONNECTION, "upgrade")
            && header_has(headers, header::UPGRADE, "websocket")
            && headers
                .get(header::SEC_WEBSOCKET_VERSION)
                .is_some_and(|v| v == "13");
        let key = headers.get(header::SEC_WEBSOCKET_KEY).cloned();
        match (asks, key) {
            (true, Some(key)) => Ok(Upgrade {
                key,
                on_upgrade: parts.extensions.remove::<OnUpgrade>().ok_or(NotAnUpgrade)?,
            }),
            _ => Err(NotAnUpgrade),
        }
    }
}

impl Upgrade {
    /// Answers 101 and, once the connection has switched, runs `serve` with the client's
    /// connection in a task of its own, tracked by `tasks` (the service's drain waits for it).
    pub fn respond<F, Fut>(self, tasks: &TaskTracker, serve: F) -> Response
    where
        F: FnOnce(ClientConn) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let accept = tungstenite::handshake::derive_accept_key(self.key.as_bytes());
        let on_upgrade = self.on_upgrade;
        tasks.spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(e) => {
                    tracing::debug!(error = %e, "the WebSocket upgrade did not complete");
                    return;
                }
            };
            let parts = match upgraded.downcast::<TokioIo<Io>>() {
                Ok(parts) => parts,
                Err(_) => {
                    return tracing::error!("an upgraded connection is not the server's: closed");
                }
            };
            let Io { head, conn } = parts.io.into_inner();
            // What was read past the request, in order: the rest of the server's own read-ahead,
            // then hyper's.
            let read_ahead = if head.is_empty() {
                parts.read_buf
            } else {
                let mut both = BytesMut::from(&head[..]);
                both.extend_from_slice(&parts.read_buf);
                Bytes::from(both)
            };
            let client = match conn {
                Conn::Plain(tcp) => ClientConn::new(tcp, read_ahead),
                Conn::Tls(tls) => {
                    match crate::relay::client::plaintext(
                        *tls,
                        &tokio_util::task::TaskTracker::new(),
                    )
                    .await
                    {
                        Ok(plain) => ClientConn::new(plain, read_ahead),
                        Err(e) => return tracing::warn!(error = %e, "no loopback for a TLS stream"),
                    }
                }
            };
            serve(client).await
        });
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        response
    }
}
