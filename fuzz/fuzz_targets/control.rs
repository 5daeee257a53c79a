//! Fuzzes `codec::control::parse_control`: it must never panic, and whatever it accepts must
//! hold the documented limits and parse to the same value when written back as JSON.
#![no_main]

use ari_mediastream::codec::control::{ClientControl, parse_control};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(control) = parse_control(text) else {
        return;
    };
    let rewritten = match &control {
        ClientControl::Clear => r#"{"type":"clear"}"#.to_owned(),
        ClientControl::Stop => r#"{"type":"stop"}"#.to_owned(),
        ClientControl::Pause => r#"{"type":"pause"}"#.to_owned(),
        ClientControl::Resume => r#"{"type":"resume"}"#.to_owned(),
        ClientControl::Status => r#"{"type":"status"}"#.to_owned(),
        ClientControl::Mark { name } => {
            let n = name.chars().count();
            assert!((1..=256).contains(&n));
            format!(r#"{{"type":"mark","name":{}}}"#, json_string(name))
        }
        ClientControl::Dtmf { digits } => {
            assert!((1..=32).contains(&digits.len()));
            assert!(digits.bytes().all(|b| b"0123456789*#ABCD".contains(&b)));
            format!(r#"{{"type":"dtmf","digits":{}}}"#, json_string(digits))
        }
    };
    assert_eq!(parse_control(&rewritten), Ok(control));
});

/// A JSON string literal for `s`, escaping only what JSON requires.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
