//! The HTTP/1.1 heads the service reads and writes itself, outside the HTTP server's own
//! parsing: where a client's request head ends (the server bounds it before handing the
//! connection on), and the WebSocket upgrade the service makes towards a client's server
//! (RFC 6455 §4.1): the request written, the `101` answer checked.
//!
//! Pure: parses borrowed bytes, never panics on input, knows no socket.

use tungstenite::handshake::derive_accept_key;

/// Headers read in an upgrade answer at most.
const MAX_HEADERS: usize = 64;

/// Where a request head ends (its empty line), found as the bytes arrive: each call looks only
/// at what arrived since the last, so a head trickling in a byte at a time costs no more than
/// one that arrives whole.
#[derive(Debug, Default, Clone)]
pub struct HeadEnd {
    /// Bytes already looked at.
    scanned: usize,
}

impl HeadEnd {
    /// The length of the whole head (up to and including `\r\n\r\n`) once `buf` holds it.
    /// `buf` only grows between calls: it is the same buffer, read into.
    pub fn find(&mut self, buf: &[u8]) -> Option<usize> {
        // The end may straddle what was looked at and what is new.
        let from = self.scanned.saturating_sub(3).min(buf.len());
        self.scanned = buf.len();
        buf.get(from..)?
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|at| from + at + 4)
    }
}

/// Why an upgrade answer is not the one asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeError {
    #[error("the upgrade was refused: HTTP {status}")]
    Refused { status: u16 },
    #[error("the upgrade answer is not valid: {0}")]
    Invalid(&'static str),
}

/// The upgrade request for `target` (path and query) on `host`, with the client's `key`.
pub fn upgrade_request(host: &str, target: &str, key: &str) -> String {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
         User-Agent: ari-mediastream/{}\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// The length of a complete, valid `101` answer to `key` in `buf`; `None` while it is
/// incomplete.
pub fn upgrade_response(buf: &[u8], key: &str) -> Result<Option<usize>, UpgradeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let used = match response.parse(buf) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(UpgradeError::Invalid("not an HTTP answer")),
    };
    let status = response.code.unwrap_or(0);
    if status != 101 {
        return Err(UpgradeError::Refused { status });
    }
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let is = |name: &str, value: &str| {
        header(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|token| token.trim().eq_ignore_ascii_case(value))
            })
    };
    if !is("upgrade", "websocket") || !is("connection", "upgrade") {
        return Err(UpgradeError::Invalid(
            "no Upgrade: websocket / Connection: Upgrade",
        ));
    }
    if header("sec-websocket-accept") != Some(derive_accept_key(key.as_bytes()).as_bytes()) {
        return Err(UpgradeError::Invalid(
            "Sec-WebSocket-Accept does not match the key",
        ));
    }
    Ok(Some(used))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    #[test]
    fn a_head_ends_at_the_empty_line_however_it_arrives() {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody";
        assert_eq!(HeadEnd::default().find(head), Some(27));
        // A byte at a time, the end straddling reads.
        let mut end = HeadEnd::default();
        let found: Vec<Option<usize>> = (1..=head.len()).map(|n| end.find(&head[..n])).collect();
        assert_eq!(found.iter().position(Option::is_some), Some(26));
        assert_eq!(found[26], Some(27));
        assert_eq!(HeadEnd::default().find(b"GET / HTTP/1.1\r\n"), None);
        assert_eq!(HeadEnd::default().find(b""), None);
    }

    #[test]
    fn a_valid_answer_and_what_follows_it() {
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {ACCEPT}\r\n\r\n\x01\x02hi"
        );
        let used = upgrade_response(answer.as_bytes(), KEY)
            .expect("valid")
            .expect("complete");
        assert_eq!(&answer.as_bytes()[used..], b"\x01\x02hi");
        assert_eq!(upgrade_response(&answer.as_bytes()[..20], KEY), Ok(None));
    }

    #[test]
    fn refusals() {
        let not_found = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            upgrade_response(not_found, KEY),
            Err(UpgradeError::Refused { status: 404 })
        );
        let wrong_key = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                         Connection: Upgrade\r\nSec-WebSocket-Accept: AAAA\r\n\r\n";
        assert!(matches!(
            upgrade_response(wrong_key.as_bytes(), KEY),
            Err(UpgradeError::Invalid(_))
        ));
        assert!(matches!(
            upgrade_response(b"SSH-2.0-OpenSSH\r\n\r\n", KEY),
            Err(UpgradeError::Invalid(_))
        ));
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        assert!(upgrade_request("::1", "/", KEY).contains("Host: [::1]\r\n"));
        assert!(
            upgrade_request("bot", "/ws?a=1", KEY)
                .starts_with("GET /ws?a=1 HTTP/1.1\r\nHost: bot\r\n")
        );
    }
}
