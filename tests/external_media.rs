//! External media against a real Asterisk (SPEC §6): audio straight from Asterisk to a host of
//! the test's, over RTP and AudioSocket, started by REST, by a flow action, or by the dialplan.

mod common;

use std::time::{Duration, Instant};

use common::audio::{describe, from_le, rms, tone, tone_share};
use common::listeners::{accept_audiosocket, capture_rtp};
use common::*;
use tokio::net::{TcpListener, UdpSocket};

async fn udp() -> (UdpSocket, String) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr").to_string();
    (socket, addr)
}

/// Waits until the external media `view` shows `terminated` and its Asterisk objects are gone,
/// a second at most for each.
async fn ends_within_a_second(service: &Service, view: &serde_json::Value) {
    let em = view["id"].as_str().expect("id");
    eventually(Duration::from_secs(1), || async {
        service.get(&format!("/v1.0/external_medias/{em}")).await.1["status"] == "terminated"
    })
    .await;
    eventually(Duration::from_secs(1), || async {
        leftovers(service).await.is_empty()
    })
    .await;
}

async fn start(service: &Service, path: &str, body: serde_json::Value) -> serde_json::Value {
    let (status, view) = service.post(path, Some(body)).await;
    assert_eq!(status, 201, "{view}");
    view
}

#[tokio::test]
async fn rtp_external_media_carries_the_call_and_stops_on_delete() {
    let service = Service::start(test_settings()).await;
    let id = call(&service, "tone").await;
    let (listener, host) = udp().await;
    let view = start(
        &service,
        &format!("/v1.0/calls/{id}/external_media"),
        serde_json::json!({"external_host": host}),
    )
    .await;
    assert_eq!(view["status"], "running");
    assert_eq!(view["reference_type"], "call");
    assert_eq!(view["reference_id"], id.as_str());
    assert_eq!(
        (
            view["encapsulation"].as_str(),
            view["transport"].as_str(),
            view["format"].as_str()
        ),
        (Some("rtp"), Some("udp"), Some("ulaw"))
    );
    assert_eq!(
        (
            view["direction_listen"].as_str(),
            view["direction_speak"].as_str()
        ),
        (Some("both"), Some("none"))
    );
    assert!(
        view["channel_id"]
            .as_str()
            .is_some_and(|c| c.starts_with("mediastream-"))
    );
    assert!(view["local_port"].as_u64().is_some(), "{view}");
    let em = view["id"].as_str().expect("id").to_owned();
    let (_, call_view) = service.get(&format!("/v1.0/calls/{id}")).await;
    assert_eq!(call_view["external_media_ids"], serde_json::json!([em]));

    capture_rtp(&listener, Duration::from_millis(800)).await; // the tone starts late
    let capture = capture_rtp(&listener, Duration::from_secs(2)).await;
    let report = describe(&capture.samples, &[1000.0, 600.0]);
    println!(
        "RTP external media: {} packets in 2 s, every {:.2} ms; {report}",
        capture.arrivals.len(),
        capture.mean_interval_ms()
    );
    assert!((90..=110).contains(&capture.arrivals.len()));
    assert!(capture.payload_types.iter().all(|pt| *pt == 0));
    assert!(capture.payload_lens.iter().all(|len| *len == 160));
    assert!(tone_share(&capture.samples, 1000.0) > 0.8, "{report}");

    let stopped = Instant::now();
    let (status, _) = service.delete(&format!("/v1.0/external_medias/{em}")).await;
    assert_eq!(status, 204);
    assert!(
        leftovers(&service).await.is_empty(),
        "gone when DELETE answers"
    );
    let answered = stopped.elapsed();
    capture_rtp(&listener, Duration::from_millis(100)).await; // in flight
    let after = capture_rtp(&listener, Duration::from_millis(900)).await;
    println!(
        "DELETE answered in {answered:?}; packets after: {}",
        after.arrivals.len()
    );
    assert!(after.arrivals.is_empty());
    let (status, view) = service.get(&format!("/v1.0/external_medias/{em}")).await;
    assert_eq!((status, view["status"].as_str()), (200, Some("terminated")));
    assert!(view["terminated"].is_string());
    hangup(&ari().await, &id).await;
    service.stop().await;
}

#[tokio::test]
async fn audiosocket_external_media_in_slin_and_slin16() {
    let service = Service::start(test_settings()).await;
    let id = call(&service, "tone").await;
    for (format, rate, bytes) in [("slin", 8000.0, 320usize), ("slin16", 16000.0, 640)] {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let host = listener.local_addr().expect("addr").to_string();
        let path = format!("/v1.0/calls/{id}/external_media");
        let started = start(
            &service,
            &path,
            serde_json::json!({"external_host": host, "encapsulation": "audiosocket", "format": format}),
        );
        let (view, mut peer) = tokio::join!(
            started,
            accept_audiosocket(&listener, Duration::from_secs(5))
        );
        assert_eq!(view["transport"], "tcp");
        let (kind, payload) = peer
            .frame(Duration::from_secs(2))
            .await
            .expect("UUID frame");
        assert_eq!(kind, 0x01);
        let uuid = uuid::Uuid::from_slice(&payload).expect("16 bytes");
        assert_eq!(
            view["audiosocket_uuid"],
            uuid.to_string(),
            "the UUID the resource shows"
        );

        let mut samples = Vec::new();
        let mut kinds = std::collections::BTreeSet::new();
        let mut sizes = std::collections::BTreeSet::new();
        // Two seconds of audio, counted from the first frame (a loaded machine may take a
        // moment to start it).
        let first = peer
            .frame(Duration::from_secs(5))
            .await
            .expect("audio starts");
        let end = Instant::now() + Duration::from_secs(2);
        let mut next = Some(first);
        while Instant::now() < end {
            let (kind, payload) = match next.take() {
                Some(frame) => frame,
                None => peer
                    .frame(Duration::from_secs(2))
                    .await
                    .expect("audio goes on"),
            };
            kinds.insert(kind);
            sizes.insert(payload.len());
            samples.extend(from_le(&payload));
        }
        // Judge the last second; a 16 kHz tone of 1000 Hz reads as 500 Hz at 8 kHz.
        let last = &samples[samples.len() - rate as usize..];
        let seen_as = 1000.0 * 8000.0 / rate;
        println!(
            "AudioSocket {format}: frame kinds {kinds:02x?}, sizes {sizes:?}; rms {:.0}, 1000 Hz share {:.2}",
            rms(last),
            tone_share(last, seen_as)
        );
        assert_eq!(sizes, [bytes].into(), "{format}: 20 ms frames");
        assert!(
            kinds.iter().all(|k| [0x10, 0x12].contains(k)),
            "{format}: audio kinds {kinds:02x?}"
        );
        assert!(tone_share(last, seen_as) > 0.8);
        let em = view["id"].as_str().expect("id");
        assert_eq!(
            service
                .delete(&format!("/v1.0/external_medias/{em}"))
                .await
                .0,
            204
        );
        assert!(
            peer.frame(Duration::from_secs(1)).await.is_none()
                || peer.frame(Duration::from_secs(1)).await.is_none(),
            "Asterisk closes"
        );
    }
    assert!(leftovers(&service).await.is_empty());
    hangup(&ari().await, &id).await;
    service.stop().await;
}

#[tokio::test]
async fn a_host_that_speaks_is_heard_by_the_call() {
    let service = Service::start(test_settings()).await;
    let id = call(&service, "echo").await;
    let (socket, host) = udp().await;
    let view = start(
        &service,
        &format!("/v1.0/calls/{id}/external_media"),
        serde_json::json!({"external_host": host, "direction_speak": "both"}),
    )
    .await;
    let asterisk: std::net::SocketAddr = format!(
        "{}:{}",
        view["local_ip"].as_str().expect("local_ip"),
        view["local_port"].as_u64().expect("local_port")
    )
    .parse()
    .expect("addr");
    // Talk 600 Hz for 3 s from the socket Asterisk sends to; listen meanwhile.
    let talker = async {
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        for i in 0..150u16 {
            ticker.tick().await;
            let samples = tone(600.0, 160, usize::from(i) * 160, 8000.0);
            let mut packet = vec![0x80, 0x00];
            packet.extend_from_slice(&i.to_be_bytes());
            packet.extend_from_slice(&(u32::from(i) * 160).to_be_bytes());
            packet.extend_from_slice(&0x0bad_cafe_u32.to_be_bytes());
            packet.extend(
                samples
                    .iter()
                    .map(|&s| ari_mediastream::codec::g711::ulaw_encode(s)),
            );
            socket.send_to(&packet, asterisk).await.expect("send");
        }
    };
    let listener = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        capture_rtp(&socket, Duration::from_millis(1400)).await
    };
    let ((), heard) = tokio::join!(talker, listener);
    let report = describe(&heard.samples, &[600.0, 1000.0]);
    println!("host speaking into an Echo call: {report}");
    assert!(tone_share(&heard.samples, 600.0) > 0.8, "{report}");
    hangup(&ari().await, &id).await;
    ends_within_a_second(&service, &view).await;
    service.stop().await;
}

#[tokio::test]
async fn a_flow_from_the_dialplan_starts_external_media() {
    let (listener, host) = udp().await;
    let mut settings = test_settings();
    settings.flows.insert(
        "asr".into(),
        vec![
            flow_action(serde_json::json!({"type": "answer"})),
            flow_action(serde_json::json!({"type": "external_media_start", "option": {"external_host": host}})),
        ],
    );
    let service = Service::start(settings).await;
    let ari = ari().await;
    // One half of a Local channel plays 1000 Hz; the other runs Stasis(<app>,flow=asr).
    let near = into_flow(&service.app, "asr", "tone").await;
    let flowing = format!("{near};2");
    eventually(Duration::from_secs(5), || async {
        service
            .get(&format!("/v1.0/calls/{}", flowing.replace(';', "%3B")))
            .await
            .1["external_media_ids"]
            .as_array()
            .is_some_and(|ids| ids.len() == 1)
    })
    .await;
    capture_rtp(&listener, Duration::from_millis(800)).await;
    let capture = capture_rtp(&listener, Duration::from_secs(1)).await;
    let report = describe(&capture.samples, &[1000.0]);
    println!(
        "flow from the dialplan: {} packets in 1 s; {report}",
        capture.arrivals.len()
    );
    assert!(tone_share(&capture.samples, 1000.0) > 0.8, "{report}");

    // external_media_stop as a flow action over REST ends it.
    let path = format!("/v1.0/calls/{}/actions", flowing.replace(';', "%3B"));
    let (status, body) = service
        .post(
            &path,
            Some(serde_json::json!({"type": "external_media_stop"})),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    assert!(leftovers(&service).await.is_empty());
    capture_rtp(&listener, Duration::from_millis(100)).await;
    assert!(
        capture_rtp(&listener, Duration::from_millis(500))
            .await
            .arrivals
            .is_empty()
    );
    hangup(&ari, &near).await;
    service.stop().await;
}

#[tokio::test]
async fn a_failing_action_stops_its_flow() {
    let mut settings = test_settings();
    // 127.0.0.1 is outside the allowed networks: external_media_start fails.
    settings.external_media.allowed_hosts = vec!["10.99.0.0/16".parse().expect("net")];
    let hang_up = serde_json::json!({"type": "hangup"});
    settings.flows.insert(
        "strict".into(),
        vec![
            flow_action(serde_json::json!({"type": "external_media_start", "option": {"external_host": "127.0.0.1:5000"}})),
            flow_action(hang_up.clone()),
        ],
    );
    // The control: the same hangup, with nothing failing before it.
    settings
        .flows
        .insert("plain".into(), vec![flow_action(hang_up)]);
    let service = Service::start(settings).await;
    let ari = ari().await;
    // Asterisk's word, whether or not the call was ever seen in the application: the far half
    // of the Local call, which exists from the originate on, goes with its near half.
    let exists = |id: String| {
        let ari = &ari;
        async move { ari.channel(&id).await.is_ok() }
    };

    let control = into_flow(&service.app, "plain", "silence").await;
    assert!(exists(control.clone()).await, "originated");
    eventually(Duration::from_secs(5), || async {
        !exists(control.clone()).await
    })
    .await;

    let near = into_flow(&service.app, "strict", "silence").await;
    let flowing = format!("{near};2").replace(';', "%3B");
    eventually(Duration::from_secs(5), || async {
        service.get(&format!("/v1.0/calls/{flowing}")).await.0 == 200
    })
    .await;
    // Longer than the control took: the flow stopped at its failing step, so the call stays.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert!(
            exists(near.clone()).await,
            "the flow went on past its failing step"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, call) = service.get(&format!("/v1.0/calls/{flowing}")).await;
    assert_eq!(call["external_media_ids"], serde_json::json!([]));
    hangup(&ari, &near).await;
    service.stop().await;
}

#[tokio::test]
async fn what_an_external_media_hears_follows_its_listen_direction() {
    let service = Service::start(test_settings()).await;
    // The call sends 600 Hz (its far end plays it) and is sent nothing.
    let id = call(&service, "play-600").await;
    for (listen, hears_the_tone) in [("in", true), ("out", false), ("both", true)] {
        let (listener, host) = udp().await;
        let view = start(
            &service,
            &format!("/v1.0/calls/{id}/external_media"),
            serde_json::json!({"external_host": host, "direction_listen": listen, "direction_speak": "none"}),
        )
        .await;
        assert_eq!(view["direction_listen"], listen);
        capture_rtp(&listener, Duration::from_millis(800)).await;
        let capture = capture_rtp(&listener, Duration::from_secs(1)).await;
        let share = tone_share(&capture.samples, 600.0);
        println!(
            "direction_listen {listen}: {} packets, rms {:.0}, 600 Hz share {share:.2}",
            capture.arrivals.len(),
            rms(&capture.samples)
        );
        if hears_the_tone {
            assert!(share > 0.8, "{listen}: {share}");
        } else {
            assert!(
                rms(&capture.samples) < 50.0,
                "{listen}: rms {}",
                rms(&capture.samples)
            );
        }
        let em = view["id"].as_str().expect("id");
        let (status, _) = service.delete(&format!("/v1.0/external_medias/{em}")).await;
        assert!(status == 200 || status == 204, "{status}");
    }
    hangup(&ari().await, &id).await;
    service.stop().await;
}

#[tokio::test]
async fn an_unknown_flow_leaves_the_call_alone() {
    let service = Service::start(test_settings()).await;
    let ari = ari().await;
    let near = into_flow(&service.app, "nope", "tone").await;
    let far = format!("/v1.0/calls/{near}%3B2");
    eventually(Duration::from_secs(5), || async {
        service.get(&far).await.0 == 200
    })
    .await;
    let (_, view) = service.get(&far).await;
    assert_eq!(view["external_media_ids"], serde_json::json!([]));
    assert_eq!(view["state"], "Up", "still there, untouched");
    hangup(&ari, &near).await;
    service.stop().await;
}

#[tokio::test]
async fn flow_actions_over_rest() {
    let service = Service::start(test_settings()).await;
    let id = call(&service, "tone").await;
    let (listener, host) = udp().await;
    let path = format!("/v1.0/calls/{id}/actions");
    let (status, view) = service
        .post(&path, Some(serde_json::json!({"type": "external_media_start", "option": {"external_host": host}})))
        .await;
    assert_eq!(status, 201, "{view}");
    capture_rtp(&listener, Duration::from_millis(800)).await;
    let capture = capture_rtp(&listener, Duration::from_secs(1)).await;
    assert!(tone_share(&capture.samples, 1000.0) > 0.8);
    let em = view["id"].as_str().expect("id");
    let (status, _) = service
        .post(&path, Some(serde_json::json!({"type": "external_media_stop", "option": {"external_media_id": em}})))
        .await;
    assert_eq!(status, 204);
    assert!(leftovers(&service).await.is_empty());
    // answer on an answered call is fine; hangup ends the call.
    assert_eq!(
        service
            .post(&path, Some(serde_json::json!({"type": "answer"})))
            .await
            .0,
        204
    );
    assert_eq!(
        service
            .post(&path, Some(serde_json::json!({"type": "hangup"})))
            .await
            .0,
        204
    );
    eventually(Duration::from_secs(2), || async {
        service.get(&format!("/v1.0/calls/{id}")).await.0 == 404
    })
    .await;
    service.stop().await;
}

#[tokio::test]
async fn conference_external_media_hears_the_conference_and_ends_with_it() {
    let service = Service::start(test_settings()).await;
    let member = call(&service, "tone").await;
    let conf = conference_with(&service, &[&member]).await;
    let (listener, host) = udp().await;
    let view = start(
        &service,
        &format!("/v1.0/conferences/{conf}/external_media"),
        serde_json::json!({"external_host": host}),
    )
    .await;
    assert_eq!(view["reference_type"], "conference");
    capture_rtp(&listener, Duration::from_millis(800)).await;
    let capture = capture_rtp(&listener, Duration::from_secs(1)).await;
    let report = describe(&capture.samples, &[1000.0]);
    println!("conference external media: {report}");
    assert!(tone_share(&capture.samples, 1000.0) > 0.8, "{report}");
    let (_, conf_view) = service.get(&format!("/v1.0/conferences/{conf}")).await;
    assert_eq!(
        conf_view["external_media_ids"].as_array().map(Vec::len),
        Some(1)
    );

    assert_eq!(
        service.delete(&format!("/v1.0/conferences/{conf}")).await.0,
        204
    );
    ends_within_a_second(&service, &view).await;
    hangup(&ari().await, &member).await;
    service.stop().await;
}

#[tokio::test]
async fn bad_requests_are_refused_and_leave_nothing() {
    let mut settings = test_settings();
    settings.limits.max_streams_per_resource = 1;
    let service = Service::start(settings).await;
    let id = call(&service, "tone").await;
    let path = format!("/v1.0/calls/{id}/external_media");
    for (body, field) in [
        (serde_json::json!({}), "external_host"),
        (
            serde_json::json!({"external_host": "no-port"}),
            "external_host",
        ),
        (
            serde_json::json!({"external_host": "127.0.0.1:5000", "encapsulation": "rtp", "transport": "tcp"}),
            "transport",
        ),
        (
            serde_json::json!({"external_host": "127.0.0.1:5000", "format": "opus"}),
            "format",
        ),
        (
            serde_json::json!({"external_host": "127.0.0.1:5000", "direction_listen": "none", "direction_speak": "none"}),
            "direction_listen",
        ),
        (
            serde_json::json!({"external_host": "does-not-resolve.invalid:5000"}),
            "external_host",
        ),
        (
            serde_json::json!({"external_host": "127.0.0.1:5000", "colour": "blue"}),
            "colour",
        ),
    ] {
        let (status, err) = service.post(&path, Some(body.clone())).await;
        assert_eq!((status, reason(&err)), (400, "INVALID_ARGUMENT"), "{body}");
        let message = err["error"]["message"].as_str().expect("message");
        assert!(message.contains(field), "{body}: {message}");
    }
    let (status, err) = service
        .post(
            "/v1.0/calls/no-such-call/external_media",
            Some(serde_json::json!({"external_host": "127.0.0.1:5000"})),
        )
        .await;
    assert_eq!((status, reason(&err)), (404, "CALL_NOT_FOUND"));
    for bad in ["not-a-uuid", "00000000-0000-0000-0000-000000000000"] {
        let (status, err) = service.get(&format!("/v1.0/external_medias/{bad}")).await;
        assert!(
            matches!(
                (status, reason(&err)),
                (400, "INVALID_ARGUMENT") | (404, "EXTERNAL_MEDIA_NOT_FOUND")
            ),
            "{bad}: {err}"
        );
    }

    // Nothing listens on this port: Asterisk cannot connect, and says so at once.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let asked = Instant::now();
    let (status, err) = service
        .post(
            &path,
            Some(serde_json::json!({"external_host": closed, "encapsulation": "audiosocket"})),
        )
        .await;
    println!(
        "unreachable AudioSocket host: {status} in {:?}: {err}",
        asked.elapsed()
    );
    assert_eq!((status, reason(&err)), (400, "INVALID_ARGUMENT"));
    assert!(asked.elapsed() < Duration::from_secs(5));
    assert!(leftovers(&service).await.is_empty(), "nothing left behind");

    // The per-call limit counts external medias too.
    let (_socket, host) = udp().await;
    start(&service, &path, serde_json::json!({"external_host": host})).await;
    let (status, err) = service
        .post(&path, Some(serde_json::json!({"external_host": host})))
        .await;
    assert_eq!((status, reason(&err)), (429, "LIMIT_EXCEEDED"));
    let refused = common::client::open(
        service.addr,
        &format!("/v1.0/calls/{id}"),
        common::client::Enc::SlnSlin,
        &format!("token={API_KEY}"),
    )
    .await
    .err()
    .expect("429");
    assert_eq!(
        refused.status, 429,
        "streams and external medias share the limit"
    );

    assert_eq!(service.delete(&path).await.0, 204);
    assert!(leftovers(&service).await.is_empty());
    hangup(&ari().await, &id).await;
    service.stop().await;
}

#[tokio::test]
async fn hosts_outside_the_allow_list_are_forbidden() {
    let mut settings = test_settings();
    settings.external_media.allowed_hosts = vec!["10.0.0.0/8".parse().expect("net")];
    let service = Service::start(settings).await;
    let id = call(&service, "tone").await;
    // The IPv4-mapped IPv6 form of the same address is the same address.
    for host in [
        "127.0.0.1:5000",
        "[::ffff:127.0.0.1]:5000",
        "localhost:5000",
    ] {
        let (status, err) = service
            .post(
                &format!("/v1.0/calls/{id}/external_media"),
                Some(serde_json::json!({"external_host": host})),
            )
            .await;
        assert_eq!(
            (status, reason(&err)),
            (403, "PERMISSION_DENIED"),
            "{host}: {err}"
        );
    }
    assert!(leftovers(&service).await.is_empty());
    hangup(&ari().await, &id).await;
    service.stop().await;
}
