//! A secret as a type: the ARI password, API keys, the JWT secret. `Debug` and `Display` print
//! `[redacted]`, so no struct that holds one can leak it by being logged, formatted into an
//! error or shown by a panic; reading it takes an explicit [`Secret::expose`].
//!
//! It owns only that, and comparison in constant time: it never logs, and it does not try to
//! scrub memory.

use std::fmt;

use subtle::ConstantTimeEq;

/// A string that never prints.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, to be put where it is needed (a header, a key), never in a log.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Its length in bytes: configuration checks a minimum without reading the secret.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether `candidate` is this secret, in time that does not depend on where they first
    /// differ. Their lengths may show; their contents do not.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(candidate).into()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s:#?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(vec![s.clone()])), "Some([[redacted]])");
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    #[test]
    fn matches_only_itself() {
        let s = Secret::new("key-0123456789abcdef");
        assert!(s.matches(b"key-0123456789abcdef"));
        for other in [
            &b"key-0123456789abcdeX"[..],
            b"key-0123456789abcde",
            b"key-0123456789abcdef0",
            b"",
        ] {
            assert!(!s.matches(other), "{other:?}");
        }
    }

    #[test]
    fn deserializes_from_a_plain_string() {
        let s: Secret = serde_json::from_str("\"abc\"").expect("secret");
        assert_eq!(s.expose(), "abc");
    }
}
