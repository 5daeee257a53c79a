//! Fuzzes `codec::audiosocket::decode` over a whole byte stream: it must never panic, must
//! consume at least a header per frame, and every frame must re-encode to the bytes it came from.
#![no_main]

use ari_mediastream::codec::audiosocket::{self, Kind};
use libfuzzer_sys::fuzz_target;

const MAX_PAYLOAD: usize = 8192;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let mut out = Vec::new();
    while let Ok(Some((frame, used))) = audiosocket::decode(rest, MAX_PAYLOAD) {
        assert!(used >= audiosocket::HEADER_LEN && used <= rest.len());
        assert_eq!(used, audiosocket::HEADER_LEN + frame.payload.len());
        assert!(frame.payload.len() <= MAX_PAYLOAD);
        match frame.kind {
            Kind::Uuid => assert!(audiosocket::uuid_of(&frame).is_some()),
            Kind::Dtmf => assert_eq!(frame.payload.len(), 1),
            Kind::Audio { .. } => assert_eq!(frame.payload.len() % 2, 0),
            Kind::Hangup | Kind::Error => {}
        }

        out.clear();
        audiosocket::encode(frame.kind, frame.payload, &mut out);
        assert_eq!(&out[..], &rest[..used]);
        rest = &rest[used..];
    }
});
