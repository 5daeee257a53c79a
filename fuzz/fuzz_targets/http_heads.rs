//! Fuzzes the HTTP/1.1 heads the service reads itself (`codec::http`): where a client's
//! request head ends, found as the bytes arrive in pieces of any size, must be where it ends
//! in the whole; and a server's answer to the service's WebSocket upgrade must never panic,
//! and is taken only as a complete `101` whose accept key matches.
#![no_main]

use ari_mediastream::codec::http::{HeadEnd, UpgradeError, upgrade_response};
use libfuzzer_sys::fuzz_target;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

fuzz_target!(|data: &[u8]| {
    // The first byte cuts the rest into reads of its size (1 to 256 bytes).
    let Some((&step, input)) = data.split_first() else {
        return;
    };
    let step = usize::from(step) + 1;
    let whole = input
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4);
    let mut end = HeadEnd::default();
    let mut found = None;
    let mut read = 0;
    while read < input.len() && found.is_none() {
        read = (read + step).min(input.len());
        found = end.find(&input[..read]);
    }
    assert_eq!(found, whole, "pieces of {step}");

    match upgrade_response(input, KEY) {
        Ok(Some(used)) => {
            assert!(used <= input.len());
            let head = String::from_utf8_lossy(&input[..used]).to_ascii_lowercase();
            assert!(head.contains("101"), "{head}");
            assert!(head.contains(&ACCEPT.to_ascii_lowercase()), "{head}");
        }
        Ok(None) => {}
        Err(UpgradeError::Refused { status }) => assert_ne!(status, 101),
        Err(UpgradeError::Invalid(_)) => {}
    }
});
