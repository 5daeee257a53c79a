//! What an external media request asks for (SPEC §6), validated: the REST body and the
//! `external_media_start` flow option share this type, so both refuse the same things with the
//! same message naming the field.

use serde::{Deserialize, Serialize};

/// The body of `POST .../external_media`, as sent. Every field is optional here; validation
/// applies the defaults. The schema (OpenAPI) says what validation accepts.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ExternalMediaRequest)]
pub struct ExternalMediaBody {
    /// `host:port` the audio goes to (`[address]:port` for IPv6). Resolved by the service,
    /// checked against `external_media.allowed_hosts`, and given to Asterisk as an address.
    #[schema(
        value_type = String,
        required = true,
        example = "asr.internal:9092",
        max_length = 261,
        pattern = r"^(\[[0-9A-Fa-f]{0,4}(:[0-9A-Fa-f]{0,4}){2,7}\]|[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})*):(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})$"
    )]
    pub external_host: Option<String>,
    /// Default `rtp`.
    #[schema(value_type = Option<MediaEncapsulation>)]
    pub encapsulation: Option<String>,
    /// Default `udp` for rtp, `tcp` for audiosocket; must match the encapsulation.
    #[schema(value_type = Option<MediaTransport>)]
    pub transport: Option<String>,
    /// Only `client` (Asterisk connects to the host).
    #[schema(value_type = Option<ConnectionType>)]
    pub connection_type: Option<String>,
    /// Default `ulaw` for rtp, `slin` for audiosocket. rtp takes `ulaw` or `slin`;
    /// audiosocket takes `slin` or `slin16` (its frames say slin, so `ulaw` is refused there).
    #[schema(value_type = Option<MediaFormat>)]
    pub format: Option<String>,
    /// What is taken from the call (snoop spy). Default `both`.
    #[schema(value_type = Option<Direction>)]
    pub direction_listen: Option<String>,
    /// What the host may say into the call (snoop whisper). Default `none`. Not both `none`.
    #[schema(value_type = Option<Direction>)]
    pub direction_speak: Option<String>,
}

/// How Asterisk reaches the host: only as a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionType {
    Client,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MediaEncapsulation {
    Rtp,
    Audiosocket,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MediaTransport {
    Udp,
    Tcp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MediaFormat {
    Ulaw,
    Slin,
    Slin16,
}

/// A snoop direction: `in` is what the call sends, `out` what it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = SnoopDirection)]
pub enum Direction {
    In,
    Out,
    Both,
    None,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
            Direction::Both => "both",
            Direction::None => "none",
        }
    }
}

macro_rules! as_str {
    ($t:ty { $($v:ident => $s:literal),* }) => {
        impl $t {
            pub fn as_str(self) -> &'static str {
                match self { $(<$t>::$v => $s),* }
            }
        }
    };
}
as_str!(MediaEncapsulation { Rtp => "rtp", Audiosocket => "audiosocket" });

impl MediaEncapsulation {
    pub const ALL: [MediaEncapsulation; 2] =
        [MediaEncapsulation::Rtp, MediaEncapsulation::Audiosocket];

    /// The transport it goes over.
    pub fn transport(self) -> MediaTransport {
        match self {
            MediaEncapsulation::Rtp => MediaTransport::Udp,
            MediaEncapsulation::Audiosocket => MediaTransport::Tcp,
        }
    }

    /// The formats it carries, its default first. AudioSocket frames say "8 kHz slin" whatever
    /// Asterisk was asked for, so ulaw there would reach the host mislabelled.
    pub fn formats(self) -> &'static [MediaFormat] {
        match self {
            MediaEncapsulation::Rtp => &[MediaFormat::Ulaw, MediaFormat::Slin],
            MediaEncapsulation::Audiosocket => &[MediaFormat::Slin, MediaFormat::Slin16],
        }
    }
}

impl MediaFormat {
    pub const ALL: [MediaFormat; 3] = [MediaFormat::Ulaw, MediaFormat::Slin, MediaFormat::Slin16];
}
as_str!(MediaTransport { Udp => "udp", Tcp => "tcp" });
as_str!(MediaFormat { Ulaw => "ulaw", Slin => "slin", Slin16 => "slin16" });

/// A validated external media request. `external_host` is still a name: it is resolved (and
/// checked against the allow-list) when the media starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalMediaSpec {
    pub host: String,
    pub port: u16,
    pub encapsulation: MediaEncapsulation,
    pub transport: MediaTransport,
    pub format: MediaFormat,
    pub direction_listen: Direction,
    pub direction_speak: Direction,
}

/// A refused field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

pub(crate) fn refuse(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        field,
        message: message.into(),
    }
}

fn direction(
    field: &'static str,
    value: Option<&str>,
    default: Direction,
) -> Result<Direction, FieldError> {
    match value {
        None => Ok(default),
        Some("in") => Ok(Direction::In),
        Some("out") => Ok(Direction::Out),
        Some("both") => Ok(Direction::Both),
        Some("none") => Ok(Direction::None),
        Some(other) => Err(refuse(
            field,
            format!("`{other}` is not in, out, both or none"),
        )),
    }
}

/// Splits `host:port` (`[v6]:port` for IPv6 literals).
fn host_port(value: &str) -> Result<(String, u16), FieldError> {
    let bad = || refuse("external_host", format!("`{value}` is not host:port"));
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (host, port) = rest.split_once("]:").ok_or_else(bad)?;
        (host, port)
    } else {
        let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
        // `2001:db8::1:5060` could be either: an IPv6 address needs its brackets.
        if host.contains(':') {
            return Err(refuse(
                "external_host",
                format!("`{value}`: write an IPv6 address as [address]:port"),
            ));
        }
        (host, port)
    };
    let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?;
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && (host.parse::<std::net::IpAddr>().is_ok()
            || host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }));
    if !host_ok {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

impl ExternalMediaBody {
    /// Applies the defaults and checks every field, in the order of SPEC §6.
    pub fn validate(&self) -> Result<ExternalMediaSpec, FieldError> {
        let (host, port) = host_port(
            self.external_host
                .as_deref()
                .ok_or_else(|| refuse("external_host", "is required (host:port)"))?,
        )?;
        let encapsulation = match self.encapsulation.as_deref() {
            None | Some("rtp") => MediaEncapsulation::Rtp,
            Some("audiosocket") => MediaEncapsulation::Audiosocket,
            Some(other) => {
                return Err(refuse(
                    "encapsulation",
                    format!("`{other}` is not rtp or audiosocket"),
                ));
            }
        };
        let expected = encapsulation.transport();
        let transport = match self.transport.as_deref() {
            None => expected,
            Some("udp") => MediaTransport::Udp,
            Some("tcp") => MediaTransport::Tcp,
            Some(other) => return Err(refuse("transport", format!("`{other}` is not udp or tcp"))),
        };
        if transport != expected {
            return Err(refuse(
                "transport",
                format!("{} goes over {}", encapsulation.as_str(), expected.as_str()),
            ));
        }
        match self.connection_type.as_deref() {
            None | Some("client") => {}
            Some(other) => {
                return Err(refuse(
                    "connection_type",
                    format!("`{other}` is not client"),
                ));
            }
        }
        let format = match self.format.as_deref() {
            None => encapsulation.formats()[0],
            Some(name) => {
                let Some(format) = MediaFormat::ALL.into_iter().find(|f| f.as_str() == name) else {
                    return Err(refuse(
                        "format",
                        format!("`{name}` is not ulaw, slin or slin16"),
                    ));
                };
                if !encapsulation.formats().contains(&format) {
                    return Err(refuse(
                        "format",
                        match encapsulation {
                            MediaEncapsulation::Audiosocket => {
                                "AudioSocket carries slin or slin16, not ulaw"
                            }
                            MediaEncapsulation::Rtp => "slin16 goes over audiosocket only",
                        },
                    ));
                }
                format
            }
        };
        let direction_listen = direction(
            "direction_listen",
            self.direction_listen.as_deref(),
            Direction::Both,
        )?;
        let direction_speak = direction(
            "direction_speak",
            self.direction_speak.as_deref(),
            Direction::None,
        )?;
        if direction_listen == Direction::None && direction_speak == Direction::None {
            return Err(refuse(
                "direction_listen",
                "and direction_speak cannot both be none",
            ));
        }
        Ok(ExternalMediaSpec {
            host,
            port,
            encapsulation,
            transport,
            format,
            direction_listen,
            direction_speak,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: serde_json::Value) -> Result<ExternalMediaSpec, FieldError> {
        serde_json::from_value::<ExternalMediaBody>(json)
            .expect("shape")
            .validate()
    }

    #[test]
    fn defaults_follow_the_contract() {
        let spec = body(serde_json::json!({"external_host": "10.0.0.5:4000"})).expect("valid");
        assert_eq!(
            spec,
            ExternalMediaSpec {
                host: "10.0.0.5".into(),
                port: 4000,
                encapsulation: MediaEncapsulation::Rtp,
                transport: MediaTransport::Udp,
                format: MediaFormat::Ulaw,
                direction_listen: Direction::Both,
                direction_speak: Direction::None,
            }
        );
        let spec = body(serde_json::json!({"external_host": "asr.example:9092", "encapsulation": "audiosocket"})).expect("valid");
        assert_eq!(
            (spec.transport, spec.format),
            (MediaTransport::Tcp, MediaFormat::Slin)
        );
        let spec = body(serde_json::json!({"external_host": "[::1]:9", "encapsulation": "audiosocket", "format": "slin16"})).expect("valid");
        assert_eq!(
            (spec.host.as_str(), spec.format),
            ("::1", MediaFormat::Slin16)
        );
    }

    #[test]
    fn every_refusal_names_its_field() {
        for (json, field) in [
            (serde_json::json!({}), "external_host"),
            (
                serde_json::json!({"external_host": "nohost"}),
                "external_host",
            ),
            (serde_json::json!({"external_host": "h:0"}), "external_host"),
            (
                serde_json::json!({"external_host": "h:70000"}),
                "external_host",
            ),
            (
                serde_json::json!({"external_host": "a b:1"}),
                "external_host",
            ),
            (
                serde_json::json!({"external_host": "2001:db8::1:5060"}),
                "external_host",
            ),
            (
                serde_json::json!({"external_host": "h:1", "encapsulation": "sip"}),
                "encapsulation",
            ),
            (
                serde_json::json!({"external_host": "h:1", "transport": "tcp"}),
                "transport",
            ),
            (
                serde_json::json!({"external_host": "h:1", "encapsulation": "audiosocket", "transport": "udp"}),
                "transport",
            ),
            (
                serde_json::json!({"external_host": "h:1", "connection_type": "server"}),
                "connection_type",
            ),
            (
                serde_json::json!({"external_host": "h:1", "format": "opus"}),
                "format",
            ),
            (
                serde_json::json!({"external_host": "h:1", "format": "slin16"}),
                "format",
            ),
            (
                serde_json::json!({"external_host": "h:1", "encapsulation": "audiosocket", "format": "ulaw"}),
                "format",
            ),
            (
                serde_json::json!({"external_host": "h:1", "direction_listen": "up"}),
                "direction_listen",
            ),
            (
                serde_json::json!({"external_host": "h:1", "direction_listen": "none"}),
                "direction_listen",
            ),
        ] {
            let e = body(json.clone()).expect_err("refused");
            assert_eq!(e.field, field, "{json}: {e}");
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(
            serde_json::from_value::<ExternalMediaBody>(
                serde_json::json!({"external_hots": "h:1"})
            )
            .is_err()
        );
    }
}
