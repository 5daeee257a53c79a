//! Fuzzes the parsing of ARI's event messages (`ari::Event::parse`): whatever Asterisk (or
//! something in its place) sends, parsing never fails nor panics, and an event the service
//! understands carries the `type` it was sent with.
#![no_main]

use ari_mediastream::ari::Event;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let event = Event::parse(text);
    let kind = event.kind().to_owned();
    if !matches!(event, Event::Other { .. }) {
        let sent: serde_json::Value = serde_json::from_str(text).expect("a parsed event is JSON");
        assert_eq!(sent["type"].as_str(), Some(kind.as_str()), "{text}");
    }
});
