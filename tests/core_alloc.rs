//! The stream core's hot path allocates nothing per frame once it runs: Asterisk audio out to
//! the client, client audio in, the 20 ms tick and the frame towards Asterisk, in every
//! encapsulation, Twilio's JSON and base64 included. Counted by dhat's global allocator in testing mode. Pure: no sockets, no
//! Asterisk.

use std::time::{Duration, Instant};

use ari_mediastream::codec::rtp::{self, RtpHeader};
use ari_mediastream::domain::{CallId, Encapsulation, Format, Resource};
use ari_mediastream::media::transcode::SampleFormat;
use ari_mediastream::relay::Inbound;
use ari_mediastream::relay::core::{
    CLIENT_PT_L16, CLIENT_PT_ULAW, CoreConfig, StreamCore, StreamSpec,
};
use base64::Engine;
use bytes::Bytes;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Heap blocks allocated so far, by every thread of this binary (it runs one test).
fn allocations() -> u64 {
    dhat::HeapStats::get().total_blocks
}

/// What the client sends each 20 ms in this encapsulation and format.
fn client_frame(encapsulation: Encapsulation, format: Format, seq: u16) -> Inbound {
    if encapsulation == Encapsulation::Twilio {
        let payload = base64::engine::general_purpose::STANDARD.encode([0x55u8; 160]);
        let text = format!(
            r#"{{"event":"media","sequenceNumber":"{seq}","media":{{"track":"outbound","chunk":"{seq}","timestamp":"0","payload":"{payload}"}},"streamSid":"MZ1"}}"#
        );
        return Inbound::Text(text.into());
    }
    Inbound::Binary(client_audio(encapsulation, format, seq))
}

fn client_audio(encapsulation: Encapsulation, format: Format, seq: u16) -> Bytes {
    let payload: Vec<u8> = match format {
        Format::Ulaw => vec![0x55; 160],
        Format::Slin => (0..160i16).flat_map(|i| (i * 50).to_le_bytes()).collect(),
        wide => (0..wide.frame_samples() as i16)
            .flat_map(|i| (i * 50).to_le_bytes())
            .collect(),
    };
    match encapsulation {
        Encapsulation::Sln => Bytes::from(payload),
        Encapsulation::Twilio => unreachable!("text messages, made by client_frame"),
        Encapsulation::Audiosocket => {
            let mut f = vec![0x10, 0x01, 0x40];
            f.extend_from_slice(&payload);
            Bytes::from(f)
        }
        Encapsulation::Rtp => {
            let pt = if format == Format::Ulaw {
                CLIENT_PT_ULAW
            } else {
                CLIENT_PT_L16
            };
            let header = RtpHeader {
                marker: false,
                payload_type: pt,
                sequence: seq,
                timestamp: u32::from(seq) * 160,
                ssrc: 1,
            };
            let mut buf = vec![0; rtp::HEADER_LEN + payload.len()];
            rtp::write(&header, &payload, &mut buf).expect("fits");
            Bytes::from(buf)
        }
    }
}

/// Runs `frames` frames of two-way audio through a core and returns the allocations made
/// during the last `frames - warm_up` of them.
fn steady_state_allocations(
    encapsulation: Encapsulation,
    format: Format,
    leg_format: SampleFormat,
) -> u64 {
    const WARM_UP: u16 = 200;
    const MEASURED: u16 = 2_000;
    let t0 = Instant::now();
    let mut core = StreamCore::new(CoreConfig {
        spec: StreamSpec {
            stream_id: uuid::Uuid::from_u128(1),
            resource: Resource::Call(CallId::parse("alloc").expect("id")),
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
    // Every client message made up front: the WebSocket layer hands them over already built.
    let messages: Vec<Inbound> = (0..WARM_UP + MEASURED)
        .map(|seq| client_frame(encapsulation, format, seq))
        .collect();
    let leg_payload = vec![0x11; 160 * leg_format.sample_bytes()];
    let mut before = 0;
    let mut sent = 0u64;
    for (i, message) in messages.iter().enumerate() {
        if i == usize::from(WARM_UP) {
            before = allocations();
        }
        let now = t0 + Duration::from_millis(20 * i as u64);
        core.handle_leg(now, &leg_payload);
        core.handle_client(now, message);
        core.handle_timeout(now);
        while let Some(frame) = core.poll_to_leg() {
            sent += frame.len() as u64;
        }
        // The driver sends each message and drops it.
        while let Some(message) = core.poll_to_client() {
            drop(message);
        }
    }
    let made = allocations() - before;
    assert!(core.ended().is_none(), "{:?}", core.ended());
    assert!(sent > 0);
    made
}

#[test]
fn the_hot_path_allocates_nothing_per_frame() {
    let _profiler = dhat::Profiler::builder().testing().build();
    // The counter sees an allocation when there is one.
    let before = allocations();
    std::hint::black_box(Box::new(1u64));
    assert_eq!(allocations() - before, 1);
    for (encapsulation, format, leg) in [
        (Encapsulation::Sln, Format::Slin, SampleFormat::SlinBe),
        (Encapsulation::Sln, Format::Ulaw, SampleFormat::SlinBe),
        (Encapsulation::Rtp, Format::Ulaw, SampleFormat::SlinBe),
        (Encapsulation::Rtp, Format::Slin, SampleFormat::SlinBe),
        (
            Encapsulation::Audiosocket,
            Format::Slin,
            SampleFormat::SlinLe,
        ),
        (Encapsulation::Sln, Format::Slin, SampleFormat::Ulaw),
        (Encapsulation::Twilio, Format::Ulaw, SampleFormat::Ulaw),
        (Encapsulation::Twilio, Format::Ulaw, SampleFormat::SlinBe),
    ] {
        let made = steady_state_allocations(encapsulation, format, leg);
        println!(
            "{encapsulation:?}/{format:?} over a {leg:?} leg: {made} allocations in 2000 frames"
        );
        assert_eq!(
            made, 0,
            "{encapsulation:?}/{format:?} over {leg:?}: {made} allocations in 2000 frames"
        );
    }
}
