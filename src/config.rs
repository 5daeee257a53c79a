//! Settings: loaded once at start-up from built-in defaults, an optional TOML file and
//! `MEDIASTREAM__SECTION__KEY` environment variables, then validated into types.
//!
//! Nothing else in the crate reads the environment or a configuration file. A bad value is a
//! [`ConfigError`] that names its key, so the operator sees which line to fix.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::Path;

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::domain::flow::{ActionBody, FlowAction};
use crate::secret::Secret;

/// The validated configuration the service runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub ari: AriSettings,
    pub http: HttpSettings,
    pub media: MediaSettings,
    pub auth: AuthSettings,
    pub limits: LimitSettings,
    pub external_media: ExternalMediaSettings,
    pub twilio: TwilioSettings,
    /// Action lists by name, run when a call enters the application with `flow=<name>`.
    pub flows: BTreeMap<String, Vec<FlowAction>>,
}

/// What `encapsulation=twilio` streams say of themselves (SPEC §9.2).
#[derive(Debug, Clone)]
pub struct TwilioSettings {
    /// The `accountSid` reported in `start` and `stop`.
    pub account_sid: String,
}

#[derive(Debug, Clone)]
pub struct AriSettings {
    /// Base URL of Asterisk's HTTP server, without the `/ari` suffix.
    pub url: reqwest::Url,
    pub username: String,
    pub password: Secret,
    /// Stasis application name. Asterisk keeps one event socket per name: two services with the
    /// same name would steal each other's events.
    pub app: String,
    /// A private CA (PEM) trusted for an `https://` Asterisk, beside the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    /// PEM certificate chain and key: the service serves HTTPS and WSS itself.
    pub tls: Option<HttpTls>,
    /// Connections whose request head (and TLS handshake) is not complete yet; past it, 429.
    pub max_pending_upgrades: usize,
    /// Time to send a whole request head; past it, 408.
    pub request_timeout: std::time::Duration,
    /// Largest request head; past it, 431.
    pub max_header_bytes: usize,
    /// Longest query string; past it, 414.
    pub max_query_bytes: usize,
    /// Largest request body; past it, 413.
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct HttpTls {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

#[derive(Debug, Clone)]
pub struct MediaSettings {
    pub bind_ip: IpAddr,
    /// Given to Asterisk as `external_host`; differs from `bind_ip` behind NAT or in containers.
    pub advertise_ip: IpAddr,
    pub rtp_ports: RangeInclusive<u16>,
    /// 0 picks a free port at start-up (tests run several services side by side).
    pub audiosocket_port: u16,
    pub asterisk_transport: AsteriskTransport,
    pub jitter_ms: u32,
    pub max_queue_ms: u32,
    /// Media worker threads serving RTP legs; each binds one port of `rtp_ports`.
    pub workers: usize,
    /// A private CA (PEM) trusted for `wss://` servers of `media_stream_connect`, beside the
    /// system's roots.
    pub connect_ca_file: Option<std::path::PathBuf>,
}

/// Which externalMedia transport the service asks Asterisk for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AsteriskTransport {
    Rtp,
    Audiosocket,
    /// RTP for the `rtp` and `sln` encapsulations, AudioSocket for `audiosocket`.
    Auto,
}

/// Secrets are [`Secret`]s: this prints, and stays out of logs and panics, whole.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    pub api_keys: Vec<Secret>,
    pub jwt_secret: Option<Secret>,
    pub disabled: bool,
}

#[derive(Debug, Clone)]
pub struct LimitSettings {
    pub max_streams: usize,
    pub max_streams_per_resource: usize,
}

#[derive(Debug, Clone)]
pub struct ExternalMediaSettings {
    /// Networks an `external_host` may resolve into; empty allows any.
    pub allowed_hosts: Vec<IpNet>,
    /// How long a terminated external media stays readable before it is forgotten.
    pub retention: std::time::Duration,
}

/// An IPv4 or IPv6 network in CIDR notation (`10.0.0.0/8`, `::1/128`; a bare address is a host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an IP network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}` has a prefix length outside 0..={max}"))?,
        };
        Ok(IpNet { addr, prefix })
    }
}

/// Why the configuration was refused. The message always names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration key `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// The environment variable prefix: `MEDIASTREAM__ARI__URL` sets `ari.url`.
pub const ENV_PREFIX: &str = "MEDIASTREAM";

/// What the layers deserialize into before validation. Every field has a default.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Raw {
    ari: RawAri,
    http: RawHttp,
    media: RawMedia,
    auth: RawAuth,
    limits: RawLimits,
    external_media: RawExternalMedia,
    twilio: RawTwilio,
    /// Flow definitions: `[[flows.<name>]]` tables of `type` and `option`.
    flows: BTreeMap<String, Vec<ActionBody>>,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawAri {
    url: String,
    username: String,
    password: Option<Secret>,
    app: String,
    ca_file: Option<String>,
}

impl Default for RawAri {
    fn default() -> Self {
        RawAri {
            url: "http://127.0.0.1:8088".into(),
            username: "mediastream".into(),
            password: None,
            app: "mediastream".into(),
            ca_file: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawHttp {
    listen: String,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    max_pending_upgrades: usize,
    request_timeout_ms: u64,
    max_header_bytes: usize,
    max_query_bytes: usize,
    max_body_bytes: usize,
}

impl Default for RawHttp {
    fn default() -> Self {
        RawHttp {
            listen: "0.0.0.0:8080".into(),
            tls_cert: None,
            tls_key: None,
            max_pending_upgrades: 256,
            request_timeout_ms: 10_000,
            max_header_bytes: 16 * 1024,
            max_query_bytes: 4096,
            max_body_bytes: 64 * 1024,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawMedia {
    bind_ip: String,
    advertise_ip: Option<String>,
    rtp_ports: String,
    audiosocket_port: u16,
    asterisk_transport: AsteriskTransport,
    jitter_ms: u32,
    max_queue_ms: u32,
    /// 0: one per core.
    workers: usize,
    connect_ca_file: Option<String>,
}

impl Default for RawMedia {
    fn default() -> Self {
        RawMedia {
            bind_ip: "127.0.0.1".into(),
            advertise_ip: None,
            rtp_ports: "40000-40999".into(),
            audiosocket_port: 9093,
            asterisk_transport: AsteriskTransport::Auto,
            jitter_ms: 40,
            max_queue_ms: 10_000,
            workers: 0,
            connect_ca_file: None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawAuth {
    api_keys: Vec<Secret>,
    jwt_secret: Option<Secret>,
    disabled: bool,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawLimits {
    max_streams: usize,
    max_streams_per_resource: usize,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_streams: 2000,
            max_streams_per_resource: 5,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawExternalMedia {
    allowed_hosts: Vec<String>,
    retention_secs: u64,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawTwilio {
    account_sid: String,
}

impl Default for RawTwilio {
    fn default() -> Self {
        RawTwilio {
            account_sid: "AC00000000000000000000000000000000".into(),
        }
    }
}

impl Default for RawExternalMedia {
    fn default() -> Self {
        RawExternalMedia {
            allowed_hosts: Vec::new(),
            retention_secs: 300,
        }
    }
}

impl Settings {
    /// Loads the layers: defaults, then `file` (required when given, else `mediastream.toml` if
    /// it exists), then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Settings::load_from(file, env)
    }

    /// Like [`Settings::load`], with the environment given (tests pass their own).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder();
        builder = match file {
            Some(path) => builder.add_source(config::File::from(path).required(true)),
            None => builder.add_source(config::File::with_name("mediastream.toml").required(false)),
        };
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("auth.api_keys")
                .with_list_parse_key("external_media.allowed_hosts")
                .try_parsing(true)
                .source(Some(env)),
        );
        let raw: Raw = builder.build()?.try_deserialize()?;
        Settings::validate(raw)
    }

    /// The built-in defaults with the given ARI password and `auth.disabled`: a base for tests
    /// and examples, which then set what they need.
    pub fn defaults_without_auth(ari_password: &str) -> Settings {
        let raw = Raw {
            ari: RawAri {
                password: Some(ari_password.into()),
                ..RawAri::default()
            },
            auth: RawAuth {
                disabled: true,
                ..RawAuth::default()
            },
            ..Raw::default()
        };
        Settings::validate(raw).expect("built-in defaults are valid")
    }

    /// Every section checked on its own (each function below names the keys it checks), then
    /// put together.
    fn validate(raw: Raw) -> Result<Settings, ConfigError> {
        Ok(Settings {
            ari: validate_ari(raw.ari)?,
            http: validate_http(raw.http)?,
            media: validate_media(raw.media)?,
            twilio: validate_twilio(raw.twilio)?,
            auth: validate_auth(raw.auth)?,
            limits: validate_limits(raw.limits)?,
            external_media: validate_external_media(raw.external_media)?,
            flows: validate_flows(&raw.flows)?,
        })
    }
}

fn validate_ari(ari: RawAri) -> Result<AriSettings, ConfigError> {
    let url: reqwest::Url = ari
        .url
        .parse()
        // Not echoed: a URL that does not parse may still hold a password.
        .map_err(|e| invalid("ari.url", format!("is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("ari.url", "must start with http:// or https://"));
    }
    if url.host_str().is_none() {
        return Err(invalid("ari.url", "has no host"));
    }
    // The URL is logged at start-up and appears in connection errors: credentials go in
    // ari.username and ari.password, which never print.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "ari.url",
            "must not hold credentials: set ari.username and ari.password",
        ));
    }
    let password = ari
        .password
        .ok_or_else(|| invalid("ari.password", "is required (the ARI user's password)"))?;
    if ari.username.is_empty() {
        return Err(invalid("ari.username", "must not be empty"));
    }
    if ari.app.is_empty()
        || !ari
            .app
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(invalid(
            "ari.app",
            "must be letters, digits, `-` or `_` (it is used in dialplan and URLs)",
        ));
    }
    let ari_ca_file = ari.ca_file.map(std::path::PathBuf::from);
    if let Some(path) = &ari_ca_file {
        crate::tls::certificates(path).map_err(|e| invalid("ari.ca_file", e.to_string()))?;
    }
    Ok(AriSettings {
        url,
        username: ari.username,
        password,
        app: ari.app,
        ca_file: ari_ca_file,
    })
}

fn validate_http(http: RawHttp) -> Result<HttpSettings, ConfigError> {
    let listen = http.listen.parse().map_err(|_| {
        invalid(
            "http.listen",
            format!("`{}` is not an address:port", http.listen),
        )
    })?;

    let http_tls = match (http.tls_cert, http.tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            let tls = HttpTls {
                cert: cert.into(),
                key: key.into(),
            };
            crate::tls::server_config(&tls.cert, &tls.key)
                .map_err(|e| invalid("http.tls_cert", e.to_string()))?;
            Some(tls)
        }
        _ => {
            return Err(invalid(
                "http.tls_cert",
                "http.tls_cert and http.tls_key go together",
            ));
        }
    };
    if !(1..=100_000).contains(&http.max_pending_upgrades) {
        return Err(invalid(
            "http.max_pending_upgrades",
            "must be within 1..=100000",
        ));
    }
    if !(100..=600_000).contains(&http.request_timeout_ms) {
        return Err(invalid(
            "http.request_timeout_ms",
            "must be within 100..=600000",
        ));
    }
    if !(1024..=1024 * 1024).contains(&http.max_header_bytes) {
        return Err(invalid(
            "http.max_header_bytes",
            "must be within 1024..=1048576",
        ));
    }
    if !(256..=http.max_header_bytes).contains(&http.max_query_bytes) {
        return Err(invalid(
            "http.max_query_bytes",
            "must be at least 256 and at most http.max_header_bytes",
        ));
    }
    if !(1024..=64 * 1024 * 1024).contains(&http.max_body_bytes) {
        return Err(invalid(
            "http.max_body_bytes",
            "must be within 1024..=67108864",
        ));
    }
    Ok(HttpSettings {
        listen,
        tls: http_tls,
        max_pending_upgrades: http.max_pending_upgrades,
        request_timeout: std::time::Duration::from_millis(http.request_timeout_ms),
        max_header_bytes: http.max_header_bytes,
        max_query_bytes: http.max_query_bytes,
        max_body_bytes: http.max_body_bytes,
    })
}

fn validate_media(media: RawMedia) -> Result<MediaSettings, ConfigError> {
    let bind_ip: IpAddr = media.bind_ip.parse().map_err(|_| {
        invalid(
            "media.bind_ip",
            format!("`{}` is not an IP address", media.bind_ip),
        )
    })?;
    let advertise_ip = match media.advertise_ip {
        None => bind_ip,
        Some(s) => s
            .parse()
            .map_err(|_| invalid("media.advertise_ip", format!("`{s}` is not an IP address")))?,
    };
    if advertise_ip.is_unspecified() {
        return Err(invalid(
            "media.advertise_ip",
            "must be an address Asterisk can send to (set it when bind_ip is 0.0.0.0)",
        ));
    }
    let rtp_ports = parse_port_range(&media.rtp_ports).ok_or_else(|| {
        invalid(
            "media.rtp_ports",
            format!(
                "`{}` is not a range like 40000-40999 within 1024-65535",
                media.rtp_ports
            ),
        )
    })?;
    let workers = match media.workers {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let ports = usize::from(rtp_ports.end() - rtp_ports.start()) + 1;
    if workers > 64 || workers > ports {
        return Err(invalid(
            "media.workers",
            "must be at most 64 and at most the number of ports in media.rtp_ports",
        ));
    }
    let connect_ca_file = media.connect_ca_file.map(std::path::PathBuf::from);
    if let Some(path) = &connect_ca_file {
        crate::tls::certificates(path)
            .map_err(|e| invalid("media.connect_ca_file", e.to_string()))?;
    }
    if !(20..=1000).contains(&media.jitter_ms) {
        return Err(invalid("media.jitter_ms", "must be within 20..=1000"));
    }
    if media.max_queue_ms < media.jitter_ms || media.max_queue_ms > 600_000 {
        return Err(invalid(
            "media.max_queue_ms",
            "must be at least media.jitter_ms and at most 600000",
        ));
    }
    Ok(MediaSettings {
        bind_ip,
        advertise_ip,
        rtp_ports,
        audiosocket_port: media.audiosocket_port,
        asterisk_transport: media.asterisk_transport,
        jitter_ms: media.jitter_ms,
        max_queue_ms: media.max_queue_ms,
        workers,
        connect_ca_file,
    })
}

fn validate_twilio(twilio: RawTwilio) -> Result<TwilioSettings, ConfigError> {
    let sid = &twilio.account_sid;
    if !(2..=64).contains(&sid.len()) || !sid.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(invalid(
            "twilio.account_sid",
            "must be 2 to 64 letters and digits",
        ));
    }
    Ok(TwilioSettings {
        account_sid: twilio.account_sid,
    })
}

fn validate_auth(raw: RawAuth) -> Result<AuthSettings, ConfigError> {
    let auth = AuthSettings {
        api_keys: raw
            .api_keys
            .into_iter()
            .map(|k| Secret::new(k.expose().trim()))
            .filter(|k| !k.is_empty())
            .collect(),
        jwt_secret: raw.jwt_secret.filter(|s| !s.is_empty()),
        disabled: raw.disabled,
    };
    if let Some(short) = auth.api_keys.iter().find(|k| k.len() < 16) {
        return Err(invalid(
            "auth.api_keys",
            format!(
                "a key of {} characters is too easy to guess: use at least 16",
                short.len()
            ),
        ));
    }
    if auth.jwt_secret.as_ref().is_some_and(|s| s.len() < 32) {
        return Err(invalid(
            "auth.jwt_secret",
            "must be at least 32 characters for HS256",
        ));
    }
    if auth.api_keys.is_empty() && auth.jwt_secret.is_none() && !auth.disabled {
        return Err(invalid(
            "auth",
            "no way to authenticate: set auth.api_keys or auth.jwt_secret, or auth.disabled = true to run without authentication",
        ));
    }
    Ok(auth)
}

fn validate_limits(limits: RawLimits) -> Result<LimitSettings, ConfigError> {
    if limits.max_streams == 0 {
        return Err(invalid("limits.max_streams", "must be at least 1"));
    }
    if limits.max_streams_per_resource == 0 {
        return Err(invalid(
            "limits.max_streams_per_resource",
            "must be at least 1",
        ));
    }
    Ok(LimitSettings {
        max_streams: limits.max_streams,
        max_streams_per_resource: limits.max_streams_per_resource,
    })
}

fn validate_external_media(
    external_media: RawExternalMedia,
) -> Result<ExternalMediaSettings, ConfigError> {
    let allowed_hosts = external_media
        .allowed_hosts
        .iter()
        .map(|s| s.parse::<IpNet>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("external_media.allowed_hosts", e))?;

    if external_media.retention_secs > 7 * 24 * 3600 {
        return Err(invalid(
            "external_media.retention_secs",
            "must be at most a week (604800)",
        ));
    }
    Ok(ExternalMediaSettings {
        allowed_hosts,
        retention: std::time::Duration::from_secs(external_media.retention_secs),
    })
}

fn validate_flows(
    raw: &BTreeMap<String, Vec<ActionBody>>,
) -> Result<BTreeMap<String, Vec<FlowAction>>, ConfigError> {
    let mut flows = BTreeMap::new();
    for (name, actions) in raw {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid(
                "flows",
                format!("flow name `{name}`: letters, digits, `-` or `_`"),
            ));
        }
        let actions = actions
            .iter()
            .enumerate()
            .map(|(i, action)| {
                action
                    .validate()
                    .map_err(|e| invalid("flows", format!("flows.{name}[{i}]: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        flows.insert(name.clone(), actions);
    }
    Ok(flows)
}

/// `"40000-40999"`: both ends included, at least two ports, not in the privileged range.
fn parse_port_range(s: &str) -> Option<RangeInclusive<u16>> {
    let (lo, hi) = s.split_once('-')?;
    let lo: u16 = lo.trim().parse().ok()?;
    let hi: u16 = hi.trim().parse().ok()?;
    (lo >= 1024 && hi > lo).then_some(lo..=hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::load_from(None, env(pairs))
    }

    const BASE: [(&str, &str); 2] = [
        ("MEDIASTREAM__ARI__PASSWORD", "secret"),
        ("MEDIASTREAM__AUTH__DISABLED", "true"),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        BASE.iter().chain(extra).copied().collect()
    }

    #[test]
    fn defaults_match_the_contract() {
        let s = load(&BASE).expect("valid");
        assert_eq!(s.ari.url.as_str(), "http://127.0.0.1:8088/");
        assert_eq!(s.ari.username, "mediastream");
        assert_eq!(s.ari.app, "mediastream");
        assert_eq!(s.http.listen, "0.0.0.0:8080".parse().expect("addr"));
        assert_eq!(s.media.bind_ip, "127.0.0.1".parse::<IpAddr>().expect("ip"));
        assert_eq!(s.media.advertise_ip, s.media.bind_ip);
        assert_eq!(s.media.rtp_ports, 40000..=40999);
        assert_eq!(s.media.audiosocket_port, 9093);
        assert_eq!(s.media.asterisk_transport, AsteriskTransport::Auto);
        assert_eq!(s.media.jitter_ms, 40);
        assert_eq!(s.media.max_queue_ms, 10_000);
        assert_eq!(s.limits.max_streams, 2000);
        assert_eq!(s.limits.max_streams_per_resource, 5);
        assert!(s.external_media.allowed_hosts.is_empty());
    }

    #[test]
    fn environment_overrides_nested_keys_and_lists() {
        let s = load(&with(&[
            ("MEDIASTREAM__ARI__URL", "http://10.1.2.3:18088"),
            ("MEDIASTREAM__MEDIA__RTP_PORTS", "20000-20099"),
            ("MEDIASTREAM__MEDIA__ASTERISK_TRANSPORT", "audiosocket"),
            (
                "MEDIASTREAM__AUTH__API_KEYS",
                "0123456789abcdef,fedcba9876543210",
            ),
            (
                "MEDIASTREAM__EXTERNAL_MEDIA__ALLOWED_HOSTS",
                "10.0.0.0/8,::1",
            ),
            ("UNRELATED", "ignored"),
        ]))
        .expect("valid");
        assert_eq!(s.ari.url.host_str(), Some("10.1.2.3"));
        assert_eq!(s.media.rtp_ports, 20000..=20099);
        assert_eq!(s.media.asterisk_transport, AsteriskTransport::Audiosocket);
        assert_eq!(s.auth.api_keys.len(), 2);
        assert_eq!(s.external_media.allowed_hosts.len(), 2);
    }

    #[test]
    fn a_toml_file_is_a_layer_below_the_environment() {
        let dir = std::env::temp_dir().join(format!("ms-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("mediastream.toml");
        std::fs::write(
            &path,
            "[ari]\npassword = \"p\"\napp = \"fromfile\"\n[auth]\ndisabled = true\n[http]\nlisten = \"127.0.0.1:9000\"\n",
        )
        .expect("write");
        let s = Settings::load_from(
            Some(&path),
            env(&[("MEDIASTREAM__HTTP__LISTEN", "127.0.0.1:9001")]),
        )
        .expect("valid");
        assert_eq!(s.ari.app, "fromfile");
        assert_eq!(s.http.listen.port(), 9001);
        std::fs::remove_dir_all(dir).ok();
    }

    fn error_of(extra: &[(&'static str, &'static str)]) -> String {
        load(&with(extra)).expect_err("must be refused").to_string()
    }

    #[test]
    fn bad_values_name_their_key() {
        for (key, value, named) in [
            ("MEDIASTREAM__ARI__URL", "ftp://x", "ari.url"),
            ("MEDIASTREAM__ARI__URL", "not a url", "ari.url"),
            ("MEDIASTREAM__ARI__URL", "http://u:p@pbx:8088", "ari.url"),
            ("MEDIASTREAM__ARI__APP", "a b", "ari.app"),
            ("MEDIASTREAM__HTTP__LISTEN", "localhost", "http.listen"),
            ("MEDIASTREAM__MEDIA__BIND_IP", "300.1.1.1", "media.bind_ip"),
            ("MEDIASTREAM__MEDIA__RTP_PORTS", "5000", "media.rtp_ports"),
            (
                "MEDIASTREAM__MEDIA__RTP_PORTS",
                "100-200",
                "media.rtp_ports",
            ),
            (
                "MEDIASTREAM__MEDIA__AUDIOSOCKET_PORT",
                "70000",
                "audiosocket_port",
            ),
            ("MEDIASTREAM__MEDIA__JITTER_MS", "5", "media.jitter_ms"),
            (
                "MEDIASTREAM__MEDIA__ASTERISK_TRANSPORT",
                "sip",
                "asterisk_transport",
            ),
            (
                "MEDIASTREAM__LIMITS__MAX_STREAMS",
                "0",
                "limits.max_streams",
            ),
            ("MEDIASTREAM__AUTH__API_KEYS", "short", "auth.api_keys"),
            ("MEDIASTREAM__AUTH__JWT_SECRET", "short", "auth.jwt_secret"),
            (
                "MEDIASTREAM__EXTERNAL_MEDIA__ALLOWED_HOSTS",
                "10.0.0.0/33",
                "external_media.allowed_hosts",
            ),
        ] {
            let message = error_of(&[(key, value)]);
            assert!(message.contains(named), "{key}={value}: {message}");
        }
    }

    #[test]
    fn flows_are_read_from_toml_and_validated() {
        let dir = std::env::temp_dir().join(format!("ms-flows-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("flows.toml");
        let good = "[ari]\npassword = \"p\"\n[auth]\ndisabled = true\n\
            [[flows.asr]]\ntype = \"answer\"\n\
            [[flows.asr]]\ntype = \"external_media_start\"\n\
            option = { external_host = \"127.0.0.1:9000\", encapsulation = \"audiosocket\" }\n";
        std::fs::write(&path, good).expect("write");
        let s = Settings::load_from(Some(&path), Vec::new()).expect("valid");
        assert_eq!(s.flows["asr"].len(), 2);
        assert_eq!(s.flows["asr"][0], FlowAction::Answer);

        let bad = good.replace("127.0.0.1:9000", "nowhere");
        std::fs::write(&path, bad).expect("write");
        let message = Settings::load_from(Some(&path), Vec::new())
            .expect_err("refused")
            .to_string();
        assert!(
            message.contains("flows.asr[1]: option.external_host"),
            "{message}"
        );
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn unknown_keys_are_refused() {
        let message = error_of(&[("MEDIASTREAM__MEDIA__JITTER", "40")]);
        assert!(message.contains("jitter"), "{message}");
    }

    #[test]
    fn no_auth_setting_refuses_to_start() {
        let message = load(&[("MEDIASTREAM__ARI__PASSWORD", "p")])
            .expect_err("refused")
            .to_string();
        assert!(message.contains("auth.disabled"), "{message}");
        assert!(
            load(&[
                ("MEDIASTREAM__ARI__PASSWORD", "p"),
                (
                    "MEDIASTREAM__AUTH__JWT_SECRET",
                    "0123456789abcdef0123456789abcdef"
                ),
            ])
            .is_ok()
        );
    }

    #[test]
    fn the_ari_password_is_required() {
        let message = load(&[("MEDIASTREAM__AUTH__DISABLED", "true")])
            .expect_err("refused")
            .to_string();
        assert!(message.contains("ari.password"), "{message}");
    }

    #[test]
    fn secrets_are_not_in_debug_output() {
        let s = load(&[
            ("MEDIASTREAM__ARI__PASSWORD", "ari-password-7f3c1e"),
            (
                "MEDIASTREAM__AUTH__API_KEYS",
                "supersecretkey-0123456789,otherkey-9876543210",
            ),
            (
                "MEDIASTREAM__AUTH__JWT_SECRET",
                "jwt-secret-5b2d9a-0123456789abcdef",
            ),
        ])
        .expect("valid");
        assert_eq!(s.ari.password.expose(), "ari-password-7f3c1e");
        assert_eq!(s.auth.api_keys.len(), 2);
        for shown in [format!("{s:?}"), format!("{s:#?}")] {
            for secret in ["7f3c1e", "supersecretkey", "otherkey", "5b2d9a"] {
                assert!(!shown.contains(secret), "{secret} in {shown}");
            }
            assert!(shown.contains("[redacted]"), "{shown}");
        }
    }

    #[test]
    fn a_refused_ari_url_is_not_echoed() {
        let message = error_of(&[("MEDIASTREAM__ARI__URL", "http://u:pw-9d8e7f@pbx:8088")]);
        assert!(!message.contains("pw-9d8e7f"), "{message}");
        let message = error_of(&[("MEDIASTREAM__ARI__URL", "http//u:pw-9d8e7f@")]);
        assert!(!message.contains("pw-9d8e7f"), "{message}");
    }

    #[test]
    fn networks_contain_their_addresses() {
        let net: IpNet = "10.1.0.0/16".parse().expect("net");
        assert!(net.contains("10.1.200.3".parse().expect("ip")));
        assert!(!net.contains("10.2.0.1".parse().expect("ip")));
        assert!(!net.contains("::1".parse().expect("ip")));
        let any: IpNet = "0.0.0.0/0".parse().expect("net");
        assert!(any.contains("192.0.2.1".parse().expect("ip")));
        let host: IpNet = "::1".parse().expect("net");
        assert!(host.contains("::1".parse().expect("ip")));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
    }
}
