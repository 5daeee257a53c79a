//! `media_stream_connect` (SPEC §9.4): the service opens the WebSocket itself, towards a
//! client's server, as Twilio's `<Connect><Stream>` does. The body as written and checked.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::external_media::{FieldError, refuse};
use super::{Encapsulation, Format};

/// The body of `POST .../media_stream_connect`, and the option of the flow action.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = MediaStreamConnectRequest)]
pub struct ConnectBody {
    /// `ws://` or `wss://` URL of the client's server (no credentials in it); its host is
    /// checked against `external_media.allowed_hosts`.
    #[schema(
        value_type = String,
        required = true,
        example = "wss://bot.example.com/media",
        pattern = r"^wss?://[^/?#@\s]+([/?#]\S*)?$"
    )]
    pub url: Option<String>,
    /// Default `twilio`.
    #[schema(value_type = Option<Encapsulation>)]
    pub encapsulation: Option<String>,
    /// Default: the encapsulation's (`ulaw` for rtp and twilio, `slin` for sln and
    /// audiosocket). `twilio` takes `ulaw` only; `audiosocket` anything but `ulaw`.
    #[schema(value_type = Option<Format>)]
    pub format: Option<String>,
    /// `customParameters` of the Twilio `start` message, or query parameters of the URL for
    /// other encapsulations: at most 32, each name and value under 1024 bytes.
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// Text events on the stream, as `events=true` on an inbound stream.
    #[serde(default)]
    pub events: bool,
}

/// Parameters kept at most, and their sizes: they travel in every `start` message.
pub(crate) const MAX_PARAMETERS: usize = 32;
const MAX_PARAMETER_BYTES: usize = 1024;

/// A checked connect request. Its `Debug` leaves out the query and the parameters' values:
/// a client's server often takes its own token there.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectSpec {
    /// The URL as given (shown in the resource).
    pub url: String,
    /// `wss://`.
    pub secure: bool,
    pub host: String,
    pub port: u16,
    /// Path and query of the upgrade request; for encapsulations other than `twilio` the
    /// parameters are appended to the query.
    pub target: String,
    pub encapsulation: Encapsulation,
    pub format: Format,
    pub parameters: BTreeMap<String, String>,
    pub events: bool,
}

impl ConnectSpec {
    /// The URL as given, without its query or fragment: what logs may show.
    pub fn url_for_logs(&self) -> &str {
        let end = self.url.find(['?', '#']).unwrap_or(self.url.len());
        &self.url[..end]
    }
}

impl std::fmt::Debug for ConnectSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectSpec")
            .field("url", &self.url_for_logs())
            .field("encapsulation", &self.encapsulation)
            .field("format", &self.format)
            .field("parameters", &self.parameters.keys().collect::<Vec<_>>())
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl ConnectBody {
    pub fn validate(&self) -> Result<ConnectSpec, FieldError> {
        let given = self
            .url
            .as_deref()
            .ok_or_else(|| refuse("url", "is required (ws:// or wss://)"))?;
        let mut url = url::Url::parse(given)
            .map_err(|e| refuse("url", format!("`{given}` is not a URL: {e}")))?;
        let secure = match url.scheme() {
            "ws" => false,
            "wss" => true,
            other => return Err(refuse("url", format!("scheme `{other}` is not ws or wss"))),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refuse("url", "credentials in the URL are not accepted"));
        }
        url.set_fragment(None);
        let host = match url.host() {
            Some(url::Host::Domain(name)) => name.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(refuse("url", "has no host")),
        };
        let port = url
            .port_or_known_default()
            .filter(|p| *p != 0)
            .ok_or_else(|| refuse("url", "has no port"))?;
        let encapsulation: Encapsulation = match self.encapsulation.as_deref() {
            None => Encapsulation::Twilio,
            Some(e) => e.parse().map_err(|()| {
                refuse(
                    "encapsulation",
                    format!("`{e}` is not rtp, sln, audiosocket or twilio"),
                )
            })?,
        };
        let format = match self.format.as_deref() {
            None => encapsulation.default_format(),
            Some(f) => f.parse().map_err(|()| {
                refuse(
                    "format",
                    format!("`{f}` is not ulaw, slin, slin16, slin24 or slin48"),
                )
            })?,
        };
        if !encapsulation.allows(format) {
            return Err(refuse(
                "format",
                format!(
                    "{} is not allowed with encapsulation {}",
                    format.as_str(),
                    encapsulation.as_str()
                ),
            ));
        }
        if self.parameters.len() > MAX_PARAMETERS
            || self
                .parameters
                .iter()
                .any(|(k, v)| k.len() + v.len() > MAX_PARAMETER_BYTES)
        {
            return Err(refuse(
                "parameters",
                format!("at most {MAX_PARAMETERS}, each under {MAX_PARAMETER_BYTES} bytes"),
            ));
        }
        if encapsulation != Encapsulation::Twilio && !self.parameters.is_empty() {
            url.query_pairs_mut().extend_pairs(&self.parameters);
        }
        let target = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        Ok(ConnectSpec {
            url: given.to_owned(),
            secure,
            host,
            port,
            target,
            encapsulation,
            format,
            parameters: self.parameters.clone(),
            events: self.events,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> Result<ConnectSpec, FieldError> {
        serde_json::from_value::<ConnectBody>(json)
            .expect("body")
            .validate()
    }

    #[test]
    fn defaults_are_twilio_over_the_urls_port() {
        let s = spec(serde_json::json!({"url": "ws://bot.internal:8765/ws?x=1"})).expect("ok");
        assert_eq!(
            (s.secure, s.host.as_str(), s.port, s.target.as_str()),
            (false, "bot.internal", 8765, "/ws?x=1")
        );
        assert_eq!(
            (s.encapsulation, s.format, s.events),
            (Encapsulation::Twilio, Format::Ulaw, false)
        );
        let s = spec(serde_json::json!({"url": "wss://[::1]/media"})).expect("ok");
        assert_eq!((s.secure, s.host.as_str(), s.port), (true, "::1", 443));
    }

    #[test]
    fn debug_leaves_out_the_query_and_parameter_values() {
        let s = spec(
            serde_json::json!({"url": "wss://bot:8765/ws?key=bot-key-31d7#f",
            "parameters": {"auth": "param-secret-8a2f"}}),
        )
        .expect("ok");
        assert_eq!(s.url_for_logs(), "wss://bot:8765/ws");
        let shown = format!("{s:?}");
        assert!(!shown.contains("bot-key-31d7"), "{shown}");
        assert!(!shown.contains("param-secret-8a2f"), "{shown}");
        assert!(
            shown.contains("wss://bot:8765/ws") && shown.contains("auth"),
            "{shown}"
        );
    }

    #[test]
    fn parameters_go_in_the_query_except_for_twilio() {
        let params = serde_json::json!({"lang": "en us", "bot": "a"});
        let s = spec(
            serde_json::json!({"url": "ws://h/p", "encapsulation": "sln",
            "format": "slin16", "parameters": params}),
        )
        .expect("ok");
        assert_eq!(s.target, "/p?bot=a&lang=en+us");
        let s = spec(serde_json::json!({"url": "ws://h/p", "parameters": params})).expect("ok");
        assert_eq!(s.target, "/p");
        assert_eq!(s.parameters.len(), 2);
    }

    #[test]
    fn refusals_name_the_field() {
        for (body, field) in [
            (serde_json::json!({}), "url"),
            (serde_json::json!({"url": "http://h/"}), "url"),
            (serde_json::json!({"url": "ws://u:p@h/"}), "url"),
            (serde_json::json!({"url": "not a url"}), "url"),
            (
                serde_json::json!({"url": "ws://h/", "encapsulation": "x"}),
                "encapsulation",
            ),
            (
                serde_json::json!({"url": "ws://h/", "format": "slin16"}),
                "format",
            ),
            (
                serde_json::json!({"url": "ws://h/", "encapsulation": "audiosocket", "format": "ulaw"}),
                "format",
            ),
        ] {
            assert_eq!(
                spec(body.clone()).expect_err("refused").field,
                field,
                "{body}"
            );
        }
    }
}
