//! Authentication and authorization on the real service (SPEC §3).

mod common;

use std::time::Duration;

use common::*;

async fn status_with(
    service: &Service,
    path: &str,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut req = service.http.get(service.url(path));
    if let Some(t) = token {
        req = req.query(&[("token", t)]);
    }
    service.send(req).await
}

#[tokio::test]
async fn tokens_are_checked_before_anything_else() {
    let ari = ari().await;
    let service = Service::start(test_settings()).await;
    let call = originate(&ari, &service.app, "silence").await;
    let path = format!("/v1.0/calls/{call}");
    eventually(Duration::from_secs(5), || async {
        service.get(&path).await.0 == 200
    })
    .await;

    let (status, body) = status_with(&service, &path, None).await;
    assert_eq!((status, reason(&body)), (401, "AUTHENTICATION_REQUIRED"));
    let (status, body) = status_with(&service, &path, Some("not-a-key")).await;
    assert_eq!((status, reason(&body)), (401, "INVALID_CREDENTIALS"));
    let (status, body) = status_with(&service, &path, Some(&jwt(-120, None))).await;
    assert_eq!((status, reason(&body)), (401, "INVALID_CREDENTIALS"));
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("expired")
    );

    // Bound to another call: forbidden, whether that call exists or not.
    let other = jwt(60, Some("call:someone-else"));
    let (status, body) = status_with(&service, &path, Some(&other)).await;
    assert_eq!((status, reason(&body)), (403, "PERMISSION_DENIED"));
    // Bound to this call: allowed here, and nowhere else.
    let own = jwt(60, Some(&format!("call:{call}")));
    assert_eq!(status_with(&service, &path, Some(&own)).await.0, 200);
    assert_eq!(
        status_with(&service, "/v1.0/calls", Some(&own)).await.0,
        403
    );
    assert_eq!(
        status_with(&service, "/v1.0/conferences", Some(&own))
            .await
            .0,
        403
    );
    // Unbound JWTs and API keys open everything, from the query or the header.
    assert_eq!(
        status_with(&service, &path, Some(&jwt(60, Some("*"))))
            .await
            .0,
        200
    );
    assert_eq!(
        status_with(&service, &path, Some(&jwt(60, None))).await.0,
        200
    );
    assert_eq!(status_with(&service, &path, Some(API_KEY)).await.0, 200);
    let (status, _) = service
        .send(service.http.get(service.url(&path)).bearer_auth(API_KEY))
        .await;
    assert_eq!(status, 200);

    hangup(&ari, &call).await;
    service.stop().await;
}

#[tokio::test]
async fn health_ready_and_metrics_need_no_token() {
    let _ari = ari().await;
    let service = Service::start(test_settings()).await;
    for path in ["/health", "/ready", "/metrics"] {
        let resp = service
            .http
            .get(service.url(path))
            .send()
            .await
            .expect("answer");
        assert_eq!(resp.status(), 200, "{path}");
    }
    service.stop().await;
}

#[tokio::test]
async fn a_conference_token_opens_only_its_conference() {
    let _ari = ari().await;
    let service = Service::start(test_settings()).await;
    let (_, conf) = service.post("/v1.0/conferences", None).await;
    let id = conf["id"].as_str().expect("id").to_owned();
    let own = jwt(60, Some(&format!("conference:{id}")));
    let path = format!("/v1.0/conferences/{id}");
    assert_eq!(status_with(&service, &path, Some(&own)).await.0, 200);
    let (status, body) = service
        .send(
            service
                .http
                .post(service.url("/v1.0/conferences"))
                .bearer_auth(&own),
        )
        .await;
    assert_eq!((status, reason(&body)), (403, "PERMISSION_DENIED"));
    let call_token = jwt(60, Some("call:x"));
    assert_eq!(status_with(&service, &path, Some(&call_token)).await.0, 403);
    service.delete(&path).await;
    service.stop().await;
}

/// A JWT whose header, claims and signing are the test's to choose.
mod forge {
    use base64::Engine;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    pub fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    /// `message.signature`, HS256 over `message` with `secret`.
    pub fn hs256(message: &str, secret: &str) -> String {
        let signature = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(secret.as_bytes()),
            Algorithm::HS256,
        )
        .expect("sign");
        format!("{message}.{signature}")
    }

    /// A header naming `alg`, `claims`, signed HS256 with `secret` whatever `alg` says.
    pub fn with_alg(alg: &str, claims: &serde_json::Value, secret: &str) -> String {
        let header = serde_json::json!({"alg": alg, "typ": "JWT"});
        hs256(
            &format!(
                "{}.{}",
                b64(header.to_string().as_bytes()),
                b64(claims.to_string().as_bytes())
            ),
            secret,
        )
    }

    /// Properly signed with `alg` (an HMAC) and `secret`.
    pub fn signed(alg: Algorithm, claims: &serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(alg),
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("encode")
    }
}

/// Opens a media stream on `path` with `token` in the query: the refusal's status and body, or
/// 101 (the stream is closed at once).
async fn upgrade_with(service: &Service, path: &str, token: &str) -> (u16, serde_json::Value) {
    let token: String = form_urlencoded::byte_serialize(token.as_bytes()).collect();
    match common::client::open(
        service.addr,
        path,
        common::client::Enc::SlnSlin,
        &format!("token={token}"),
    )
    .await
    {
        Ok(mut client) => {
            let _ = futures::SinkExt::close(&mut client.ws).await;
            (101, serde_json::Value::Null)
        }
        Err(refused) => (refused.status, refused.body),
    }
}

#[tokio::test]
async fn every_bad_jwt_is_refused_on_rest_and_on_the_upgrade() {
    use jsonwebtoken::Algorithm;
    let ari = ari().await;
    let service = Service::start(test_settings()).await;
    let call = originate(&ari, &service.app, "silence").await;
    let call_path = format!("/v1.0/calls/{call}");
    eventually(Duration::from_secs(5), || async {
        service.get(&call_path).await.0 == 200
    })
    .await;
    let (_, conf) = service.post("/v1.0/conferences", None).await;
    let conf = conf["id"].as_str().expect("id").to_owned();
    let conf_path = format!("/v1.0/conferences/{conf}");

    let live = serde_json::json!({"exp": forge::now() + 300});
    let good = forge::signed(Algorithm::HS256, &live, JWT_SECRET);
    let (head, rest) = good.split_once('.').expect("header");
    let (claims, signature) = rest.split_once('.').expect("claims");
    let not_hs256 = "the token is not signed with HS256";
    let refused: Vec<(&str, String, &str)> = vec![
        (
            "HS384",
            forge::signed(Algorithm::HS384, &live, JWT_SECRET),
            not_hs256,
        ),
        (
            "HS512",
            forge::signed(Algorithm::HS512, &live, JWT_SECRET),
            not_hs256,
        ),
        (
            "RS256 header, HS256 signature",
            forge::with_alg("RS256", &live, JWT_SECRET),
            not_hs256,
        ),
        (
            "alg none, empty signature",
            format!("{}.{claims}.", forge::b64(br#"{"alg":"none","typ":"JWT"}"#)),
            not_hs256,
        ),
        (
            "alg none, HS256 signature",
            forge::with_alg("none", &live, JWT_SECRET),
            not_hs256,
        ),
        (
            "no exp",
            forge::signed(
                Algorithm::HS256,
                &serde_json::json!({"resource": "*"}),
                JWT_SECRET,
            ),
            "the token has no `exp` claim",
        ),
        (
            "exp as a string",
            forge::signed(
                Algorithm::HS256,
                &serde_json::json!({"exp": (forge::now() + 300).to_string()}),
                JWT_SECRET,
            ),
            "the token is not valid",
        ),
        (
            "past exp",
            forge::signed(
                Algorithm::HS256,
                &serde_json::json!({"exp": forge::now() - 60}),
                JWT_SECRET,
            ),
            "the token has expired",
        ),
        (
            "claims changed after signing",
            format!(
                "{head}.{}.{signature}",
                forge::b64(
                    serde_json::json!({"exp": forge::now() + 300, "resource": "*"})
                        .to_string()
                        .as_bytes()
                )
            ),
            "the token's signature does not match",
        ),
        (
            "signature altered",
            format!(
                "{head}.{claims}.{}{}",
                if signature.starts_with('A') { "B" } else { "A" },
                &signature[1..]
            ),
            "the token's signature does not match",
        ),
        (
            "signature cut short",
            // 41 characters of base64 can never decode (a length of 4n+1), whatever the
            // signature is; 39 would decode when its last bits happen to be zero.
            format!("{head}.{claims}.{}", &signature[..signature.len() - 2]),
            "the token is not valid",
        ),
        (
            "signature removed",
            format!("{head}.{claims}."),
            "the token's signature does not match",
        ),
        (
            "another secret",
            forge::signed(
                Algorithm::HS256,
                &live,
                "another-secret-0123456789abcdef0123",
            ),
            "the token's signature does not match",
        ),
        (
            "two segments",
            format!("{head}.{claims}"),
            "the token is not valid",
        ),
        (
            "four segments",
            format!("{good}.{signature}"),
            "the token is not valid",
        ),
        (
            "header not base64",
            forge::hs256(&format!("@@@.{claims}"), JWT_SECRET),
            "the token is not valid",
        ),
        (
            "claims not base64",
            forge::hs256(&format!("{head}.!!!"), JWT_SECRET),
            "the token is not valid",
        ),
        (
            "claims not JSON",
            forge::hs256(&format!("{head}.{}", forge::b64(b"not json")), JWT_SECRET),
            "the token is not valid",
        ),
        (
            "claims a JSON array",
            forge::hs256(&format!("{head}.{}", forge::b64(b"[1,2]")), JWT_SECRET),
            "the token is not valid",
        ),
        (
            "resource claim of an unknown kind",
            forge::signed(
                Algorithm::HS256,
                &serde_json::json!({"exp": forge::now() + 300, "resource": "channel:x"}),
                JWT_SECRET,
            ),
            "the token's resource claim is not valid",
        ),
        (
            "resource claim with a path step",
            forge::signed(
                Algorithm::HS256,
                &serde_json::json!({"exp": forge::now() + 300, "resource": "call:.."}),
                JWT_SECRET,
            ),
            "the token's resource claim is not valid",
        ),
        ("empty", "".into(), ""),
    ];
    for (what, token, why) in &refused {
        let want = if token.is_empty() {
            (401, "AUTHENTICATION_REQUIRED")
        } else {
            (401, "INVALID_CREDENTIALS")
        };
        let (status, body) = status_with(&service, &call_path, Some(token)).await;
        assert_eq!((status, reason(&body)), want, "{what}, query: {body}");
        assert_eq!(body["error"]["status"], 401, "{what}");
        if !why.is_empty() {
            assert_eq!(body["error"]["message"], *why, "{what}");
        }
        let (status, body) = service
            .send(service.http.get(service.url(&call_path)).bearer_auth(token))
            .await;
        assert_eq!((status, reason(&body)), want, "{what}, header: {body}");
        let (status, body) = upgrade_with(&service, &call_path, token).await;
        assert_eq!((status, reason(&body)), want, "{what}, upgrade: {body}");
        if !why.is_empty() {
            assert_eq!(body["error"]["message"], *why, "{what}, upgrade");
        }
        println!("{what}: {status} {} ({why})", reason(&body));
    }

    // Valid tokens bound to something else: 403, on REST and on the upgrade.
    let for_call = |id: &str| {
        forge::signed(
            Algorithm::HS256,
            &serde_json::json!({"exp": forge::now() + 300, "resource": format!("call:{id}")}),
            JWT_SECRET,
        )
    };
    let other_call = for_call("someone-else");
    let own_call = for_call(&call);
    let forbidden: Vec<(&str, &str, String)> = vec![
        ("another call's token", "GET", call_path.clone()),
        ("a call's token on a conference", "GET", conf_path.clone()),
        (
            "a call's token on a conference",
            "DELETE",
            conf_path.clone(),
        ),
        (
            "a call's token on the call list",
            "GET",
            "/v1.0/calls".into(),
        ),
        (
            "a call's token on the conference list",
            "GET",
            "/v1.0/conferences".into(),
        ),
        (
            "a call's token creating a conference",
            "POST",
            "/v1.0/conferences".into(),
        ),
        (
            "a call's token on the external media list",
            "GET",
            "/v1.0/external_medias".into(),
        ),
        (
            "a call's token on the media stream list",
            "GET",
            "/v1.0/media_streams".into(),
        ),
        (
            "a call's token adding a call to a conference",
            "POST",
            format!("{conf_path}/calls/{call}"),
        ),
    ];
    for (what, method, path) in &forbidden {
        let token = if *what == "another call's token" {
            &other_call
        } else {
            &own_call
        };
        let req = service
            .http
            .request(method.parse().expect("method"), service.url(path))
            .bearer_auth(token);
        let (status, body) = service.send(req).await;
        assert_eq!(
            (status, reason(&body)),
            (403, "PERMISSION_DENIED"),
            "{what}: {method} {path}: {body}"
        );
        println!("{what}, {method} {path}: {status} {}", reason(&body));
    }
    for (what, path, token) in [
        ("another call's token", &call_path, &other_call),
        ("a call's token on a conference", &conf_path, &own_call),
    ] {
        let (status, body) = upgrade_with(&service, path, token).await;
        assert_eq!(
            (status, reason(&body)),
            (403, "PERMISSION_DENIED"),
            "{what}, upgrade: {body}"
        );
        println!("{what}, upgrade: {status} {}", reason(&body));
    }

    // And the call's own token opens the call, on REST and as a stream.
    assert_eq!(
        status_with(&service, &call_path, Some(&own_call)).await.0,
        200
    );
    assert_eq!(upgrade_with(&service, &call_path, &own_call).await.0, 101);
    assert_eq!(upgrade_with(&service, &call_path, &good).await.0, 101);

    service.delete(&conf_path).await;
    finish(service, &[&call]).await;
}
