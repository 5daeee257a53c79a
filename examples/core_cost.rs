//! The stream core's cost per frame, in instructions: one stream's core runs 20,000 frames of
//! two-way audio (Asterisk's frame in, the client's frame in, the 20 ms tick, the frame out to
//! Asterisk, the message out to the client) in the encapsulation named by the first argument
//! (`sln`, `rtp`, `audiosocket`, `twilio`). Meant to run under
//! `valgrind --tool=callgrind`, which counts instructions the same way on a busy machine as on
//! an idle one (`bench/core-cost` does, for each encapsulation).

use std::time::{Duration, Instant};

use ari_mediastream::codec::rtp::{self, RtpHeader};
use ari_mediastream::domain::{CallId, Encapsulation, Format, Resource};
use ari_mediastream::media::transcode::SampleFormat;
use ari_mediastream::relay::Inbound;
use ari_mediastream::relay::core::{CLIENT_PT_L16, CoreConfig, StreamCore, StreamSpec};
use base64::Engine;
use bytes::Bytes;

const FRAMES: u64 = 20_000;

fn main() {
    let name = std::env::args().nth(1).unwrap_or_else(|| "sln".into());
    let (encapsulation, format, leg_format) = match name.as_str() {
        "sln" => (Encapsulation::Sln, Format::Slin, SampleFormat::SlinBe),
        "rtp" => (Encapsulation::Rtp, Format::Slin, SampleFormat::SlinBe),
        "audiosocket" => (
            Encapsulation::Audiosocket,
            Format::Slin,
            SampleFormat::SlinLe,
        ),
        "twilio" => (Encapsulation::Twilio, Format::Ulaw, SampleFormat::Ulaw),
        other => {
            eprintln!("core_cost: `{other}`: sln, rtp, audiosocket or twilio");
            std::process::exit(2);
        }
    };
    let t0 = Instant::now();
    let mut core = StreamCore::new(CoreConfig {
        spec: StreamSpec {
            stream_id: uuid::Uuid::from_u128(1),
            resource: Resource::Call(CallId::parse("cost").expect("a valid id")),
            encapsulation,
            format,
            events: true,
            leg_format,
            jitter_ms: 40,
            max_queue_ms: 10_000,
            expires_at: None,
            parameters: Default::default(),
            account_sid: "AC1".into(),
        },
        expires_at: None,
        clock_start: t0,
        seed: 42,
    });
    let slin: Vec<u8> = (0..160i16).flat_map(|i| (i * 50).to_le_bytes()).collect();
    let messages: Vec<Inbound> = (0..FRAMES as u16)
        .map(|seq| client_frame(encapsulation, &slin, seq))
        .collect();
    let leg = vec![0x11u8; 160 * leg_format.sample_bytes()];
    let sent = run(&mut core, t0, &messages, &leg);
    println!(
        "{name}: {FRAMES} frames, {sent} bytes to Asterisk, ended: {:?}",
        core.ended()
    );
}

/// The frames, and nothing else: what `bench/core-cost` counts (`--toggle-collect`).
#[inline(never)]
fn run(core: &mut StreamCore, t0: Instant, messages: &[Inbound], leg: &[u8]) -> u64 {
    let mut sent = 0u64;
    for (i, message) in messages.iter().enumerate() {
        let now = t0 + Duration::from_millis(20 * i as u64);
        core.handle_leg(now, leg);
        core.handle_client(now, message);
        core.handle_timeout(now);
        while let Some(frame) = core.poll_to_leg() {
            sent += frame.len() as u64;
        }
        while let Some(message) = core.poll_to_client() {
            drop(message);
        }
    }
    sent
}

/// What the client sends each 20 ms.
fn client_frame(encapsulation: Encapsulation, slin: &[u8], seq: u16) -> Inbound {
    match encapsulation {
        Encapsulation::Sln => Inbound::Binary(Bytes::copy_from_slice(slin)),
        Encapsulation::Audiosocket => {
            let mut frame = vec![0x10, 0x01, 0x40];
            frame.extend_from_slice(slin);
            Inbound::Binary(Bytes::from(frame))
        }
        Encapsulation::Rtp => {
            let header = RtpHeader {
                marker: false,
                payload_type: CLIENT_PT_L16,
                sequence: seq,
                timestamp: u32::from(seq) * 160,
                ssrc: 1,
            };
            let be: Vec<u8> = slin.chunks(2).flat_map(|s| [s[1], s[0]]).collect();
            let mut packet = vec![0; rtp::HEADER_LEN + be.len()];
            rtp::write(&header, &be, &mut packet);
            Inbound::Binary(Bytes::from(packet))
        }
        Encapsulation::Twilio => {
            let payload = base64::engine::general_purpose::STANDARD.encode([0x55u8; 160]);
            Inbound::Text(
                format!(
                    r#"{{"event":"media","sequenceNumber":"{seq}","media":{{"payload":"{payload}"}},"streamSid":"MZ1"}}"#
                )
                .into(),
            )
        }
    }
}
