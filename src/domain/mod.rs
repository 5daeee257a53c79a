//! Identities and small value types shared by every layer. No behaviour beyond validation.

use std::fmt;

pub mod connect;
pub mod external_media;
pub mod flow;

/// The prefix of every Asterisk object the service creates for itself (snoop and externalMedia
/// channels, private bridges). Such objects are never reported as calls or conferences, and a
/// restart removes the ones a previous run left behind.
pub const INTERNAL_PREFIX: &str = "mediastream-";

/// Why an id from a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    #[error("`{0}` is not a valid id: 1 to 128 characters of letters, digits, `.`, `_`, `-`, `;`")]
    Shape(String),
    /// `.` and `..`: in a URL they are steps to another path, whatever their encoding.
    #[error("`{0}` is not a valid id: `.` and `..` are path steps, not ids")]
    PathStep(String),
}

fn check_id(s: &str) -> Result<(), InvalidId> {
    if matches!(s, "." | "..") {
        return Err(InvalidId::PathStep(s.to_owned()));
    }
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b';'));
    if ok {
        Ok(())
    } else {
        Err(InvalidId::Shape(s.chars().take(140).collect()))
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, InvalidId> {
                check_id(s)?;
                Ok(Self(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Whether the service created this object for its own use.
            pub fn is_internal(&self) -> bool {
                self.0.starts_with(INTERNAL_PREFIX)
            }
        }

        /// Lets maps keyed by the id be read with the `&str` of an Asterisk object.
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A call: the ARI id of an Asterisk channel.
    CallId
);
id_type!(
    /// A conference: the ARI id of an Asterisk mixing bridge.
    ConferenceId
);

/// What a token or a request is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Resource {
    Call(CallId),
    Conference(ConferenceId),
}

impl Resource {
    /// `reference_type` and `reference_id`, as resources attached to this one show it.
    pub fn reference(&self) -> (ReferenceType, String) {
        match self {
            Resource::Call(id) => (ReferenceType::Call, id.to_string()),
            Resource::Conference(id) => (ReferenceType::Conference, id.to_string()),
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Call(id) => write!(f, "call:{id}"),
            Resource::Conference(id) => write!(f, "conference:{id}"),
        }
    }
}

/// What a resource attached to a call or conference is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReferenceType {
    Call,
    Conference,
}

/// How audio is wrapped on the client's WebSocket.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Encapsulation {
    /// One RTP packet per binary message.
    Rtp,
    /// Raw audio, no header.
    Sln,
    /// AudioSocket frames.
    Audiosocket,
    /// Twilio Media Streams: JSON text messages, μ-law in base64.
    Twilio,
}

impl Encapsulation {
    pub const ALL: [Encapsulation; 4] = [
        Encapsulation::Rtp,
        Encapsulation::Sln,
        Encapsulation::Audiosocket,
        Encapsulation::Twilio,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Encapsulation::Rtp => "rtp",
            Encapsulation::Sln => "sln",
            Encapsulation::Audiosocket => "audiosocket",
            Encapsulation::Twilio => "twilio",
        }
    }

    pub fn default_format(self) -> Format {
        match self {
            Encapsulation::Rtp | Encapsulation::Twilio => Format::Ulaw,
            Encapsulation::Sln | Encapsulation::Audiosocket => Format::Slin,
        }
    }

    /// Whether the client may ask for `format` with this encapsulation.
    pub fn allows(self, format: Format) -> bool {
        match self {
            Encapsulation::Audiosocket => format != Format::Ulaw,
            Encapsulation::Twilio => format == Format::Ulaw,
            Encapsulation::Rtp | Encapsulation::Sln => true,
        }
    }
}

impl std::str::FromStr for Encapsulation {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "rtp" => Ok(Encapsulation::Rtp),
            "sln" => Ok(Encapsulation::Sln),
            "audiosocket" => Ok(Encapsulation::Audiosocket),
            "twilio" => Ok(Encapsulation::Twilio),
            _ => Err(()),
        }
    }
}

/// The audio format a client chose: 8 kHz μ-law, or 16-bit signed linear at 8, 16, 24 or
/// 48 kHz.
// slin24 and slin48 go beyond SPEC §9.1: Asterisk carries them over AudioSocket.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Ulaw,
    Slin,
    Slin16,
    Slin24,
    Slin48,
}

impl Format {
    pub const ALL: [Format; 5] = [
        Format::Ulaw,
        Format::Slin,
        Format::Slin16,
        Format::Slin24,
        Format::Slin48,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Ulaw => "ulaw",
            Format::Slin => "slin",
            Format::Slin16 => "slin16",
            Format::Slin24 => "slin24",
            Format::Slin48 => "slin48",
        }
    }

    /// Samples per second.
    pub fn sample_rate(self) -> u32 {
        match self {
            Format::Ulaw | Format::Slin => 8000,
            Format::Slin16 => 16_000,
            Format::Slin24 => 24_000,
            Format::Slin48 => 48_000,
        }
    }

    /// Signed linear above 8 kHz.
    pub fn is_wideband(self) -> bool {
        self.sample_rate() > 8000
    }

    /// Samples in one 20 ms frame.
    pub fn frame_samples(self) -> usize {
        (self.sample_rate() * PTIME_MS / 1000) as usize
    }
}

impl std::str::FromStr for Format {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "ulaw" => Ok(Format::Ulaw),
            "slin" => Ok(Format::Slin),
            "slin16" => Ok(Format::Slin16),
            "slin24" => Ok(Format::Slin24),
            "slin48" => Ok(Format::Slin48),
            _ => Err(()),
        }
    }
}

/// Milliseconds of audio per frame.
pub const PTIME_MS: u32 = 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_asterisk_shapes() {
        for ok in [
            "1732551234.17",
            "652af662-eb45-11ee-b1a5-6fde165f9226",
            "mediastream-snoop-1",
            "ext-1;2",
            "a",
            "...",
            ".a",
            "a..",
        ] {
            assert!(CallId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn ids_refuse_what_could_escape_a_url_or_log() {
        let long = "x".repeat(129);
        for bad in ["", "a/b", "a b", "a?b", "..%2f", "é", "a\nb", long.as_str()] {
            assert!(CallId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn path_steps_are_not_ids() {
        for step in [".", ".."] {
            let e = CallId::parse(step).expect_err(step);
            assert_eq!(e, InvalidId::PathStep(step.to_owned()));
            assert!(e.to_string().contains("path steps"), "{e}");
            assert!(ConferenceId::parse(step).is_err(), "{step}");
        }
        assert!(CallId::parse(&"x".repeat(128)).is_ok());
    }

    #[test]
    fn internal_ids_are_recognised() {
        assert!(
            ConferenceId::parse("mediastream-bridge-1")
                .expect("id")
                .is_internal()
        );
        assert!(!ConferenceId::parse("conf-1").expect("id").is_internal());
    }

    #[test]
    fn resources_print_as_token_claims() {
        let call = Resource::Call(CallId::parse("c1").expect("id"));
        assert_eq!(call.to_string(), "call:c1");
    }
}
