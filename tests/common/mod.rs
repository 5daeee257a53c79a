//! Shared by the integration tests: a real Asterisk (from `MEDIASTREAM_TEST_ARI_URL`, which
//! `scripts/test` sets after starting the sandbox), the service running in-process on an
//! ephemeral port with its own Stasis application, and small HTTP helpers.
//!
//! No test here skips when Asterisk is missing: it fails and says how to provide one.
#![allow(dead_code)]

pub mod audio;
pub mod client;
pub mod listeners;
pub mod proxy;
pub mod tap;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ari_mediastream::ari::AriClient;
use ari_mediastream::ari::rest::OriginateParams;
use ari_mediastream::config::{AriSettings, Settings};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const API_KEY: &str = "test-api-key-0123456789";
pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdef0123";

pub fn ari_url() -> String {
    std::env::var("MEDIASTREAM_TEST_ARI_URL").unwrap_or_else(|_| "http://127.0.0.1:18088".into())
}

/// `host:port` of the tests' Asterisk, for proxies put in front of it.
pub fn ari_upstream() -> String {
    let url: reqwest::Url = ari_url()
        .parse()
        .expect("MEDIASTREAM_TEST_ARI_URL is a URL");
    format!(
        "{}:{}",
        url.host_str().expect("host"),
        url.port_or_known_default().expect("port")
    )
}

pub fn ari_settings(app: &str) -> AriSettings {
    AriSettings {
        url: ari_url()
            .parse()
            .expect("MEDIASTREAM_TEST_ARI_URL is a URL"),
        username: std::env::var("MEDIASTREAM_TEST_ARI_USER")
            .unwrap_or_else(|_| "mediastream".into()),
        password: std::env::var("MEDIASTREAM_TEST_ARI_PASSWORD")
            .unwrap_or_else(|_| "mediastream".into())
            .into(),
        app: app.into(),
        ca_file: None,
    }
}

/// A direct ARI client for the test's own setup and checks; fails the test if Asterisk is not
/// there.
pub async fn ari() -> AriClient {
    let client = AriClient::new(&ari_settings("unused"));
    if let Err(e) = client.asterisk_info().await {
        panic!(
            "no Asterisk at {} ({e}). Run the tests with scripts/test (as root it starts the \
             sandbox), or point MEDIASTREAM_TEST_ARI_URL at an Asterisk 22 configured from \
             asterisk-conf/",
            ari_url()
        );
    }
    client
}

/// A fresh Stasis application name: Asterisk keeps one event socket per name, so every service
/// under test gets its own.
pub fn unique_app() -> String {
    format!(
        "mstest-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

pub fn unique_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Settings for a service under test: the test Asterisk, a fresh app, an API key and a JWT secret.
pub fn test_settings() -> Settings {
    let mut s = Settings::defaults_without_auth("unused");
    s.ari = ari_settings(&unique_app());
    s.auth.disabled = false;
    s.auth.api_keys = vec![API_KEY.into()];
    s.auth.jwt_secret = Some(JWT_SECRET.into());
    s.http.listen = "127.0.0.1:0".parse().expect("addr");
    // Services run side by side in one test binary: each takes a free AudioSocket port.
    s.media.audiosocket_port = 0;
    s
}

/// [`test_settings`] with the given Asterisk-facing transport.
pub fn with_transport(transport: ari_mediastream::config::AsteriskTransport) -> Settings {
    let mut s = test_settings();
    s.media.asterisk_transport = transport;
    s
}

/// The service, running in this process until dropped.
pub struct Service {
    pub addr: SocketAddr,
    pub app: String,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Service {
    /// Starts with `settings` and waits until `/ready` answers 200.
    pub async fn start(settings: Settings) -> Service {
        let service = Service::start_unready(settings).await;
        service.wait_ready(true).await;
        service
    }

    /// Starts without waiting for Asterisk.
    pub async fn start_unready(settings: Settings) -> Service {
        let listener = tokio::net::TcpListener::bind(settings.http.listen)
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = settings.ari.app.clone();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(ari_mediastream::run(settings, listener, shutdown.clone()));
        Service {
            addr,
            app,
            http: reqwest::Client::new(),
            shutdown,
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `GET path` with the API key.
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.send(self.http.get(self.url(path)).bearer_auth(API_KEY))
            .await
    }

    pub async fn post(
        &self,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = self.http.post(self.url(path)).bearer_auth(API_KEY);
        if let Some(body) = body {
            req = req.json(&body);
        }
        self.send(req).await
    }

    pub async fn delete(&self, path: &str) -> (u16, serde_json::Value) {
        self.send(self.http.delete(self.url(path)).bearer_auth(API_KEY))
            .await
    }

    /// Sends and returns the status and the JSON body (`null` when empty).
    pub async fn send(&self, req: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
        let resp = req.send().await.expect("the service answers");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!(
                    "status {status}: body is not JSON: {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        (status, body)
    }

    pub async fn ready(&self) -> bool {
        matches!(
            self.http.get(self.url("/ready")).send().await,
            Ok(r) if r.status() == 200
        )
    }

    pub async fn wait_ready(&self, want: bool) {
        eventually(Duration::from_secs(20), || async {
            self.ready().await == want
        })
        .await;
    }

    /// A metric's value from `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        text.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == name).then(|| v.parse().ok()).flatten()
            })
            .unwrap_or(0.0)
    }

    /// Stops the service and waits for it to drain.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("the service drains within 10 s")
                .expect("the service task did not panic")
                .expect("the service ended cleanly");
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Waits until `check` holds, polling every 50 ms; fails the test after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A call in `app`: `Local/<exten>@test`, whose far end runs the `test` dialplan context.
pub async fn originate(ari: &AriClient, app: &str, exten: &str) -> String {
    originate_with(ari, app, exten, None).await
}

/// The same, carrying only `formats` (e.g. `slin16` for a wideband call).
pub async fn originate_with(
    ari: &AriClient,
    app: &str,
    exten: &str,
    formats: Option<&str>,
) -> String {
    let id = unique_id("call");
    ari.originate(&OriginateParams {
        endpoint: &format!("Local/{exten}@test"),
        app,
        channel_id: Some(&id),
        formats,
        ..OriginateParams::default()
    })
    .await
    .expect("originate");
    id
}

/// A Local channel whose near half runs `exten` (e.g. `tone`, 1000 Hz) and whose far half runs
/// `Stasis(<app>,flow=<flow>)`, as a dialplan sends a call into a flow; the near half's id
/// (the far half's is `<id>;2`).
pub async fn into_flow(app: &str, flow: &str, exten: &str) -> String {
    let near = unique_id("flow");
    let args = format!("flow={flow}");
    ari()
        .await
        .originate(&OriginateParams {
            endpoint: "Local/stasis@test",
            extension: Some(exten),
            context: Some("test"),
            channel_id: Some(&near),
            variables: &[("MS_APP", app), ("MS_ARGS", &args)],
            ..OriginateParams::default()
        })
        .await
        .expect("originate");
    near
}

/// A flow action written as JSON, as the configuration holds it.
pub fn flow_action(json: serde_json::Value) -> ari_mediastream::domain::flow::FlowAction {
    serde_json::from_value::<ari_mediastream::domain::flow::ActionBody>(json)
        .expect("an action")
        .validate()
        .expect("a valid action")
}

/// The end of a test: hangs `calls` up, waits until the service has left nothing in
/// Asterisk, stops it.
pub async fn finish(service: Service, calls: &[&str]) {
    let ari = ari().await;
    for call in calls {
        hangup(&ari, call).await;
    }
    eventually(Duration::from_secs(2), || async {
        leftovers(&service).await.is_empty()
    })
    .await;
    service.stop().await;
}

/// Hangs a channel up, ignoring one that is already gone.
pub async fn hangup(ari: &AriClient, id: &str) {
    match ari.hangup(id).await {
        Ok(()) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => panic!("hangup {id}: {e}"),
    }
}

/// An HS256 token with the test secret.
pub fn jwt(exp_in_secs: i64, resource: Option<&str>) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let mut claims = serde_json::json!({ "exp": now + exp_in_secs });
    if let Some(r) = resource {
        claims["resource"] = r.into();
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("encode")
}

/// The `reason` of an error body.
pub fn reason(body: &serde_json::Value) -> &str {
    body["error"]["reason"].as_str().unwrap_or("<no reason>")
}

/// A call in the service's app whose far end runs `exten`, known to the service.
pub async fn call(service: &Service, exten: &str) -> String {
    call_with(service, exten, None).await
}

/// The same, carrying only `formats`.
pub async fn call_with(service: &Service, exten: &str, formats: Option<&str>) -> String {
    let ari = ari().await;
    let id = originate_with(&ari, &service.app, exten, formats).await;
    eventually(Duration::from_secs(5), || async {
        service.get(&format!("/v1.0/calls/{id}")).await.0 == 200
    })
    .await;
    id
}

pub async fn stream(service: &Service, call: &str, enc: client::Enc) -> client::MediaClient {
    match client::open(
        service.addr,
        &format!("/v1.0/calls/{call}"),
        enc,
        &format!("token={API_KEY}"),
    )
    .await
    {
        Ok(c) => c,
        Err(r) => panic!("refused {}: {}", r.status, r.body),
    }
}

/// The service's own channels and bridges still in Asterisk for this service's app.
pub async fn leftovers(service: &Service) -> Vec<String> {
    leftovers_of(&service.app).await
}

/// The `mediastream-` channels and bridges of the application `app` in Asterisk.
pub async fn leftovers_of(app: &str) -> Vec<String> {
    let ari = ari().await;
    let mut ids: Vec<String> = ari
        .channels()
        .await
        .expect("channels")
        .into_iter()
        .filter(|c| c.id.starts_with("mediastream-") && c.is_in_stasis_app(app))
        .map(|c| c.id)
        .collect();
    ids.extend(
        ari.bridges()
            .await
            .expect("bridges")
            .into_iter()
            .filter(|b| b.id.starts_with("mediastream-") && b.name == app)
            .map(|b| b.id),
    );
    ids
}

/// A stream on a call with `events=true`.
pub async fn stream_with_events(
    service: &Service,
    call: &str,
    enc: client::Enc,
) -> client::MediaClient {
    match client::open(
        service.addr,
        &format!("/v1.0/calls/{call}"),
        enc,
        &format!("events=true&token={API_KEY}"),
    )
    .await
    {
        Ok(c) => c,
        Err(r) => panic!("refused {}: {}", r.status, r.body),
    }
}

/// A conference made through the service, holding `calls`; its id.
pub async fn conference_with(service: &Service, calls: &[&str]) -> String {
    let (status, conf) = service.post("/v1.0/conferences", None).await;
    assert_eq!(status, 201, "{conf}");
    let conf = conf["id"].as_str().expect("id").to_owned();
    for call in calls {
        let (status, body) = service
            .post(&format!("/v1.0/conferences/{conf}/calls/{call}"), None)
            .await;
        assert_eq!(status, 204, "{body}");
    }
    conf
}
