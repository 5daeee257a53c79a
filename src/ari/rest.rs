//! A thin typed client for ARI's REST resources. One method per Asterisk operation; no state
//! beyond the connection pool and a bound on requests in flight, no retries (callers decide).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

use super::model::{Bridge, Channel};
use crate::config::AriSettings;
use crate::secret::Secret;

/// An ARI call that did not succeed. Keeps Asterisk's own status and message.
#[derive(Debug, thiserror::Error)]
pub enum AriError {
    /// Asterisk could not be reached or did not answer in time.
    #[error("Asterisk is unreachable: {0}")]
    Unavailable(#[source] reqwest::Error),
    /// Asterisk answered with an error status.
    #[error("Asterisk answered {status}: {message}")]
    Status { status: StatusCode, message: String },
    /// Asterisk's answer broke off.
    #[error("Asterisk's answer could not be read: {0}")]
    Decode(#[source] reqwest::Error),
    /// Asterisk answered 2xx with a body that is not what ARI documents.
    #[error("Asterisk's answer is not what ARI documents: {0}")]
    Unreadable(#[source] serde_json::Error),
    /// An id that cannot be one path segment (empty, `.` or `..`: a URL would resolve it to
    /// another resource). Refused before anything is sent.
    #[error("`{0}` cannot be an ARI id")]
    InvalidId(String),
}

/// What an [`AriError`] means for the caller, so that callers match on meaning rather than on
/// status numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AriErrorKind {
    /// 404: the channel or bridge does not exist (any more).
    NotFound,
    /// 409, 412, 422: the object exists but is in the wrong state for this, e.g. a channel not
    /// in Stasis, or a bridge id already taken.
    WrongState,
    /// 500: Asterisk tried and could not, e.g. it could not connect to an AudioSocket host.
    Failed,
    /// Anything else: unreachable, another status, an unreadable answer.
    Other,
}

impl AriError {
    /// Asterisk did not answer at all (refused, reset, timed out): not an error it gave.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, AriError::Unavailable(_))
    }

    /// Worth trying again a little later: Asterisk did not answer (or not in time), its answer
    /// broke off, or it answered that it could not now (5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            AriError::Unavailable(_) | AriError::Decode(_) => true,
            AriError::Status { status, .. } => status.is_server_error(),
            AriError::Unreadable(_) | AriError::InvalidId(_) => false,
        }
    }

    pub fn kind(&self) -> AriErrorKind {
        let AriError::Status { status, .. } = self else {
            return AriErrorKind::Other;
        };
        match *status {
            StatusCode::NOT_FOUND => AriErrorKind::NotFound,
            StatusCode::CONFLICT
            | StatusCode::PRECONDITION_FAILED
            | StatusCode::UNPROCESSABLE_ENTITY => AriErrorKind::WrongState,
            StatusCode::INTERNAL_SERVER_ERROR => AriErrorKind::Failed,
            _ => AriErrorKind::Other,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.kind() == AriErrorKind::NotFound
    }
}

/// Arguments of `POST /channels/externalMedia`.
#[derive(Debug, Clone)]
pub struct ExternalMediaParams<'a> {
    pub channel_id: &'a str,
    pub app: &'a str,
    pub external_host: &'a str,
    pub encapsulation: &'a str,
    pub transport: &'a str,
    pub format: &'a str,
    pub direction: &'a str,
    /// For AudioSocket: the UUID Asterisk sends first on the TCP connection.
    pub data: Option<&'a str>,
}

/// Arguments of `POST /channels` (originate), used by tests and tools: the new channel goes
/// into `app`, or, with `app` empty, runs `extension`@`context`.
#[derive(Debug, Clone, Default)]
pub struct OriginateParams<'a> {
    pub endpoint: &'a str,
    pub app: &'a str,
    pub extension: Option<&'a str>,
    pub context: Option<&'a str>,
    pub app_args: Option<&'a str>,
    pub channel_id: Option<&'a str>,
    /// Channel variables, set on the originated channel.
    pub variables: &'a [(&'a str, &'a str)],
    /// The formats the new channel may carry, e.g. `slin16` for a wideband call.
    pub formats: Option<&'a str>,
}

/// Requests in flight at once, at most. Asterisk's HTTP server serves at most `sessionlimit`
/// connections (100 by default), the event socket and other ARI clients included; past it,
/// requests fail as if Asterisk were down. A burst (thousands of streams ending together) waits
/// its turn instead.
pub const MAX_REQUESTS_IN_FLIGHT: usize = 32;

#[derive(Clone, Debug)]
pub struct AriClient {
    http: reqwest::Client,
    /// One permit per request in flight, held until its answer has been read.
    in_flight: std::sync::Arc<tokio::sync::Semaphore>,
    /// `<ari.url>/ari/`, always ending in a slash so that joins append.
    base: reqwest::Url,
    username: String,
    password: Secret,
    /// For an `https://` Asterisk: the system's roots and `ari.ca_file`, shared by REST and the
    /// event socket.
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl AriClient {
    pub fn new(settings: &AriSettings) -> AriClient {
        let mut base = settings.url.clone();
        let path = format!("{}/ari/", base.path().trim_end_matches('/'));
        base.set_path(&path);
        // The configuration has read `ari.ca_file` already: it cannot fail here.
        let tls = (base.scheme() == "https").then(|| {
            crate::tls::client_config(settings.ca_file.as_deref())
                .expect("ari.ca_file was checked with the configuration")
        });
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(MAX_REQUESTS_IN_FLIGHT);
        if let Some(tls) = &tls {
            builder = builder.tls_backend_preconfigured(rustls::ClientConfig::clone(tls));
        }
        let http = builder
            .build()
            .expect("a client with a rustls configuration always builds");
        AriClient {
            http,
            in_flight: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_REQUESTS_IN_FLIGHT)),
            base,
            username: settings.username.clone(),
            password: settings.password.clone(),
            tls,
        }
    }

    /// The TLS settings for an `https://` Asterisk (the event socket uses them too).
    pub fn tls(&self) -> Option<std::sync::Arc<rustls::ClientConfig>> {
        self.tls.clone()
    }

    /// The `ws://…/ari/events` URL for `app`, without credentials.
    pub fn events_url(&self, app: &str) -> reqwest::Url {
        let mut url = self.base.join("events").expect("constant path joins");
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme)
            .expect("ws and wss are valid schemes");
        url.query_pairs_mut()
            .append_pair("app", app)
            .append_pair("subscribeAll", "false");
        url
    }

    /// The `Authorization` header value for the events WebSocket.
    pub fn basic_auth_header(&self) -> Secret {
        use base64::Engine;
        let raw = format!("{}:{}", self.username, self.password.expose());
        Secret::new(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        ))
    }

    /// `<ari.url>/ari/<segments>`, each segment percent-encoded as one segment. An id that a
    /// URL would read as a step (`.`, `..`) or as nothing (empty) is refused: encoding cannot
    /// save it, since URLs read `%2E%2E` as `..` too.
    pub fn url(&self, segments: &[&str]) -> Result<reqwest::Url, AriError> {
        let mut path = String::new();
        for (i, segment) in segments.iter().enumerate() {
            if matches!(*segment, "" | "." | "..") {
                return Err(AriError::InvalidId((*segment).to_owned()));
            }
            if i > 0 {
                path.push('/');
            }
            path.push_str(&seg(segment));
        }
        let url = self
            .base
            .join(&path)
            .map_err(|_| AriError::InvalidId(segments.join("/")))?;
        // What the checks above make true; a request that would go anywhere else is not sent.
        let depth = |u: &reqwest::Url| u.path_segments().map_or(0, Iterator::count);
        if !url.path().starts_with(self.base.path())
            || depth(&url) != depth(&self.base) - 1 + segments.len()
        {
            return Err(AriError::InvalidId(segments.join("/")));
        }
        Ok(url)
    }

    fn request(
        &self,
        method: Method,
        segments: &[&str],
    ) -> Result<reqwest::RequestBuilder, AriError> {
        let url = self.url(segments)?;
        Ok(self
            .http
            .request(method, url)
            .basic_auth(&self.username, Some(self.password.expose())))
    }

    /// Sends a request and reads its whole answer, within the bound on requests in flight.
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<bytes::Bytes, AriError> {
        // The semaphore is never closed: acquiring fails only if it were.
        let _permit = self.in_flight.acquire().await.ok();
        let resp = req.send().await.map_err(AriError::Unavailable)?;
        let status = resp.status();
        if status.is_success() {
            return resp.bytes().await.map_err(AriError::Decode);
        }
        let body = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or(body);
        Err(AriError::Status { status, message })
    }

    async fn json<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T, AriError> {
        let body = self.send(req).await?;
        serde_json::from_slice(&body).map_err(AriError::Unreadable)
    }

    async fn empty(&self, req: reqwest::RequestBuilder) -> Result<(), AriError> {
        self.send(req).await.map(drop)
    }

    pub async fn asterisk_info(&self) -> Result<serde_json::Value, AriError> {
        self.json(self.request(Method::GET, &["asterisk", "info"])?)
            .await
    }

    pub async fn channels(&self) -> Result<Vec<Channel>, AriError> {
        self.json(self.request(Method::GET, &["channels"])?).await
    }

    pub async fn channel(&self, id: &str) -> Result<Channel, AriError> {
        self.json(self.request(Method::GET, &["channels", id])?)
            .await
    }

    pub async fn answer(&self, id: &str) -> Result<(), AriError> {
        self.empty(self.request(Method::POST, &["channels", id, "answer"])?)
            .await
    }

    pub async fn hangup(&self, id: &str) -> Result<(), AriError> {
        self.empty(self.request(Method::DELETE, &["channels", id])?)
            .await
    }

    pub async fn send_dtmf(&self, id: &str, dtmf: &str) -> Result<(), AriError> {
        self.empty(
            self.request(Method::POST, &["channels", id, "dtmf"])?
                .query(&[("dtmf", dtmf)]),
        )
        .await
    }

    /// Starts a snoop channel on `id` that enters `app`.
    pub async fn snoop(
        &self,
        id: &str,
        snoop_id: &str,
        app: &str,
        spy: &str,
        whisper: &str,
    ) -> Result<Channel, AriError> {
        self.json(
            self.request(Method::POST, &["channels", id, "snoop", snoop_id])?
                .query(&[("app", app), ("spy", spy), ("whisper", whisper)]),
        )
        .await
    }

    pub async fn external_media(&self, p: &ExternalMediaParams<'_>) -> Result<Channel, AriError> {
        let mut query = vec![
            ("channelId", p.channel_id),
            ("app", p.app),
            ("external_host", p.external_host),
            ("encapsulation", p.encapsulation),
            ("transport", p.transport),
            ("connection_type", "client"),
            ("format", p.format),
            ("direction", p.direction),
        ];
        if let Some(data) = p.data {
            query.push(("data", data));
        }
        self.json(
            self.request(Method::POST, &["channels", "externalMedia"])?
                .query(&query),
        )
        .await
    }

    pub async fn originate(&self, p: &OriginateParams<'_>) -> Result<Channel, AriError> {
        let mut query = vec![("endpoint", p.endpoint)];
        if !p.app.is_empty() {
            query.push(("app", p.app));
        }
        if let Some(extension) = p.extension {
            query.extend([("extension", extension), ("priority", "1")]);
        }
        if let Some(context) = p.context {
            query.push(("context", context));
        }
        if let Some(args) = p.app_args {
            query.push(("appArgs", args));
        }
        if let Some(id) = p.channel_id {
            query.push(("channelId", id));
        }
        if let Some(formats) = p.formats {
            query.push(("formats", formats));
        }
        let variables: serde_json::Map<String, serde_json::Value> = p
            .variables
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        self.json(
            self.request(Method::POST, &["channels"])?
                .query(&query)
                .json(&serde_json::json!({ "variables": variables })),
        )
        .await
    }

    pub async fn bridges(&self) -> Result<Vec<Bridge>, AriError> {
        self.json(self.request(Method::GET, &["bridges"])?).await
    }

    pub async fn bridge(&self, id: &str) -> Result<Bridge, AriError> {
        self.json(self.request(Method::GET, &["bridges", id])?)
            .await
    }

    /// Creates a mixing bridge with the given id.
    pub async fn create_bridge(&self, id: &str, name: &str) -> Result<Bridge, AriError> {
        self.json(self.request(Method::POST, &["bridges"])?.query(&[
            ("type", "mixing"),
            ("bridgeId", id),
            ("name", name),
        ]))
        .await
    }

    pub async fn destroy_bridge(&self, id: &str) -> Result<(), AriError> {
        self.empty(self.request(Method::DELETE, &["bridges", id])?)
            .await
    }

    pub async fn add_channel(&self, bridge: &str, channel: &str) -> Result<(), AriError> {
        self.empty(
            self.request(Method::POST, &["bridges", bridge, "addChannel"])?
                .query(&[("channel", channel)]),
        )
        .await
    }

    pub async fn remove_channel(&self, bridge: &str, channel: &str) -> Result<(), AriError> {
        self.empty(
            self.request(Method::POST, &["bridges", bridge, "removeChannel"])?
                .query(&[("channel", channel)]),
        )
        .await
    }

    /// Subscribes `app` to an event source; `bridge:` alone means every bridge.
    pub async fn subscribe(&self, app: &str, source: &str) -> Result<(), AriError> {
        self.empty(
            self.request(Method::POST, &["applications", app, "subscription"])?
                .query(&[("eventSource", source)]),
        )
        .await
    }
}

/// Percent-encodes one path segment.
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(url: &str) -> AriClient {
        AriClient::new(&AriSettings {
            url: url.parse().expect("url"),
            username: "u".into(),
            password: "p".into(),
            app: "a".into(),
            ca_file: None,
        })
    }

    #[test]
    fn failures_are_classified_by_meaning() {
        let status = |code: u16| AriError::Status {
            status: StatusCode::from_u16(code).expect("status"),
            message: String::new(),
        };
        assert_eq!(status(404).kind(), AriErrorKind::NotFound);
        for code in [409, 412, 422] {
            assert_eq!(status(code).kind(), AriErrorKind::WrongState, "{code}");
        }
        assert_eq!(status(500).kind(), AriErrorKind::Failed);
        for code in [400, 401, 503] {
            assert_eq!(status(code).kind(), AriErrorKind::Other, "{code}");
        }
        for code in [500, 503] {
            assert!(status(code).is_transient(), "{code}");
        }
        for code in [400, 404, 409, 422] {
            assert!(!status(code).is_transient(), "{code}");
        }
        assert!(!AriError::InvalidId("..".into()).is_transient());
    }

    #[tokio::test]
    async fn an_unanswered_request_is_worth_trying_again() {
        // Nothing listens on the discard port.
        let e = client("http://127.0.0.1:9")
            .hangup("c1")
            .await
            .expect_err("refused");
        assert!(e.is_unreachable() && e.is_transient(), "{e}");
    }

    #[test]
    fn urls_keep_a_path_prefix_and_map_the_scheme() {
        let c = client("http://127.0.0.1:8088");
        assert_eq!(
            c.events_url("ms").as_str(),
            "ws://127.0.0.1:8088/ari/events?app=ms&subscribeAll=false"
        );
        let c = client("https://pbx.example/asterisk/");
        assert_eq!(
            c.events_url("ms").as_str(),
            "wss://pbx.example/asterisk/ari/events?app=ms&subscribeAll=false"
        );
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(seg("abc-1.2_x~"), "abc-1.2_x~");
        assert_eq!(seg("a;2/../b"), "a%3B2%2F..%2Fb");
        assert_eq!(seg("%2E%2E"), "%252E%252E");
        assert_eq!(seg("a?b#c d\\e\0"), "a%3Fb%23c%20d%5Ce%00");
        assert_eq!(seg("é"), "%C3%A9");
        // Everything outside RFC 3986's unreserved characters is encoded.
        for b in 0..=255u8 {
            let unreserved = b.is_ascii_alphanumeric() || b"-._~".contains(&b);
            let one = String::from_utf8_lossy(&[b]).into_owned();
            assert_eq!(seg(&one) == one, unreserved, "byte {b:#04x}");
        }
    }

    #[test]
    fn every_id_stays_one_segment_under_ari() {
        for base in ["http://127.0.0.1:8088", "https://pbx.example/asterisk/"] {
            let c = client(base);
            let prefix = c.base.as_str().to_owned();
            for id in [
                "1732551234.17",
                "...",
                "a/b",
                "../..",
                "%2E%2E",
                "%2e",
                ".%2e",
                "a?b",
                "a#b",
                "a\\b",
                "\0",
                "/",
                "é",
                ";",
            ] {
                let url = c.url(&["channels", id]).expect(id);
                let rest = url.as_str().strip_prefix(&prefix).expect("under /ari/");
                assert_eq!(rest, format!("channels/{}", seg(id)), "{id:?}");
                assert_eq!(url.query(), None, "{id:?}");
                assert_eq!(url.fragment(), None, "{id:?}");
                let url = c.url(&["bridges", id, "addChannel"]).expect(id);
                assert_eq!(
                    url.path_segments().expect("segments").nth_back(1),
                    Some(seg(id).as_str()),
                    "{id:?}"
                );
            }
            for id in ["", ".", ".."] {
                assert!(
                    matches!(c.url(&["channels", id]), Err(AriError::InvalidId(_))),
                    "{id:?}"
                );
                assert!(c.url(&["bridges", id, "addChannel"]).is_err(), "{id:?}");
                assert!(c.url(&["channels", "c1", "snoop", id]).is_err(), "{id:?}");
            }
        }
    }

    #[tokio::test]
    async fn a_refused_id_is_never_sent() {
        // Nothing listens on port 9: a request that went out would fail as Unavailable.
        let c = client("http://127.0.0.1:9");
        for id in [".", ".."] {
            assert!(matches!(c.channel(id).await, Err(AriError::InvalidId(_))));
            assert!(matches!(c.hangup(id).await, Err(AriError::InvalidId(_))));
            assert!(matches!(c.bridge(id).await, Err(AriError::InvalidId(_))));
            assert!(matches!(
                c.add_channel(id, "c1").await,
                Err(AriError::InvalidId(_))
            ));
        }
    }

    #[test]
    fn the_event_socket_query_is_encoded() {
        let c = client("http://127.0.0.1:8088");
        assert_eq!(
            c.events_url("a&subscribeAll=true#x").as_str(),
            "ws://127.0.0.1:8088/ari/events?app=a%26subscribeAll%3Dtrue%23x&subscribeAll=false"
        );
    }

    #[test]
    fn basic_auth_is_base64() {
        assert_eq!(
            client("http://h").basic_auth_header().expose(),
            "Basic dTpw"
        );
    }

    #[test]
    fn the_password_never_prints() {
        let c = AriClient::new(&AriSettings {
            url: "http://127.0.0.1:8088".parse().expect("url"),
            username: "user".into(),
            password: "ari-pass-4e8b2c".into(),
            app: "a".into(),
            ca_file: None,
        });
        let shown = format!(
            "{c:?} {:?} {}",
            c.basic_auth_header(),
            c.basic_auth_header()
        );
        assert!(!shown.contains("4e8b2c"), "{shown}");
        // Nor its Basic form: base64 of `user:ari-pass-4e8b2c`.
        assert!(!shown.contains("dXNlcjphcmktcGFzcy00ZThiMmM"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
    }
}
