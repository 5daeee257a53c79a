//! Fuzzes `codec::rtp::parse`: it must never panic, the payload must lie inside the packet,
//! and a packet without CSRCs, extension or padding must survive parse -> write -> parse.
#![no_main]

use ari_mediastream::codec::rtp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = rtp::parse(data) else {
        return;
    };
    assert!(rtp::HEADER_LEN + packet.payload.len() <= data.len());

    let mut out = vec![0; rtp::HEADER_LEN + packet.payload.len()];
    let n =
        rtp::write(&packet.header, packet.payload, &mut out).expect("buffer is exactly big enough");
    assert_eq!(n, out.len());
    let again = rtp::parse(&out).expect("what we write must parse");
    assert_eq!(again, packet);

    // Only the plain form re-encodes to the very same bytes.
    let plain = data[0] & 0x3f == 0;
    if plain {
        assert_eq!(&out[..], data);
    }
});
