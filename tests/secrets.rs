//! Secrets never print (SPEC §3, STYLE 15): the service runs as a process of its own with
//! distinctive API keys and JWT secret, at `RUST_LOG=debug`, in text and in JSON; every route is
//! driven, refusals and failures included (wrong and expired tokens, tokens in the query, a
//! media stream opened with `token=`, Twilio's call update with Basic auth, Asterisk refusing a
//! request, an Asterisk that refuses the service's password); then it is stopped and nothing
//! it wrote may hold a key, the secret, a token, a Basic credential or the ARI password.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use base64::Engine;
use common::client::{Enc, open};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: &str = "sk-live-7Q2x9Vb4Lm8Np3Rt6Wy1";
const UNUSED_KEY: &str = "sk-unused-5Hd8Kw2Zq6Yc1Fj0Ge";
const WRONG_KEY: &str = "sk-wrong-3Jt6Nb9Xc2Vd5Ms8Qa";
const SECRET: &str = "jwt-secret-Zr4Wq8Tn2Mv6Kp0Xs3Bd7Hf1Lc5Jg9";
const OTHER_SECRET: &str = "jwt-other-Pe5Ru8Sy1Tb4Vn7Wm0Xk3Yh6Zg9";
const ACCOUNT: &str = "AC00000000000000000000000000000000";
/// Secrets of a client's own, in the URL and parameters of a `media_stream_connect`.
const BOT_KEY: &str = "bot-key-Fq2Lw7Rz4Cx9Dn1Hv6";
const BOT_PARAMETER: &str = "bot-param-Gs3Mk8Tp5Uj0Wb2Ye7";
/// The password of the Asterisk that refuses it (the real one must stay `mediastream`).
const FAKE_ARI_PASSWORD: &str = "ari-pass-Kv4Xn7Qb2Zr9Lt1";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn jwt_with(secret: &str, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode")
}

fn exp_in(secs: i64) -> i64 {
    jsonwebtoken::get_current_timestamp() as i64 + secs
}

/// The service as a process, its output going to files.
struct Process {
    child: Child,
    addr: std::net::SocketAddr,
    app: String,
    out: PathBuf,
    err: PathBuf,
    http: reqwest::Client,
}

impl Process {
    fn spawn(log_format: &str, ari_url: &str, ari_password: &str) -> Process {
        let addr: std::net::SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr");
        let app = unique_app();
        let dir = std::env::temp_dir().join(format!("ms-secrets-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (out, err) = (dir.join("stdout"), dir.join("stderr"));
        let settings = ari_settings(&app);
        let keys = format!("{KEY},{UNUSED_KEY}");
        let child = Command::new(env!("CARGO_BIN_EXE_ari-mediastream"))
            .env_clear()
            .envs([
                ("RUST_LOG", "debug"),
                ("MEDIASTREAM__ARI__URL", ari_url),
                ("MEDIASTREAM__ARI__USERNAME", &settings.username),
                ("MEDIASTREAM__ARI__PASSWORD", ari_password),
                ("MEDIASTREAM__ARI__APP", &app),
                ("MEDIASTREAM__HTTP__LISTEN", &addr.to_string()),
                ("MEDIASTREAM__MEDIA__AUDIOSOCKET_PORT", "0"),
                ("MEDIASTREAM__AUTH__API_KEYS", &keys),
                ("MEDIASTREAM__AUTH__JWT_SECRET", SECRET),
            ])
            .args(["--log-format", log_format])
            .stdout(std::fs::File::create(&out).expect("stdout file"))
            .stderr(std::fs::File::create(&err).expect("stderr file"))
            .spawn()
            .expect("spawn the service");
        Process {
            child,
            addr,
            app,
            out,
            err,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn wait_answering(&self) {
        eventually(Duration::from_secs(20), || async {
            self.http.get(self.url("/health")).send().await.is_ok()
        })
        .await;
    }

    async fn wait_ready(&self) {
        eventually(Duration::from_secs(20), || async {
            matches!(self.http.get(self.url("/ready")).send().await, Ok(r) if r.status() == 200)
        })
        .await;
    }

    /// Sends and returns the status and the body as text.
    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, String) {
        let resp = req.send().await.expect("the service answers");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    async fn get(&self, path: &str, token: &str) -> (u16, String) {
        self.send(self.http.get(self.url(path)).bearer_auth(token))
            .await
    }

    async fn json(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        self.send(
            self.http
                .request(method.parse().expect("method"), self.url(path))
                .bearer_auth(KEY)
                .header("content-type", "application/json")
                .body(body.to_owned()),
        )
        .await
    }

    /// SIGTERM, then waits for a clean exit; returns everything the process wrote.
    fn stop(mut self) -> String {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "SIGTERM sent");
        let start = std::time::Instant::now();
        let exit = loop {
            if let Some(exit) = self.child.try_wait().expect("wait") {
                break exit;
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = self.child.kill();
                panic!("the service did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(exit.success(), "the service exits 0 on SIGTERM: {exit}");
        let output = read(&self.out) + &read(&self.err);
        if let Some(dir) = self.out.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
        output
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).expect("log file")
}

/// Asserts that `output` holds none of `secrets`, naming the first line that does.
fn assert_none_in(output: &str, secrets: &[(&str, String)]) {
    for (what, secret) in secrets {
        assert!(!secret.is_empty(), "{what}");
        if let Some(line) = output.lines().find(|l| l.contains(secret.as_str())) {
            panic!("{what} is in the service's output: {line}");
        }
    }
}

/// Drives every route of the service, with good and bad credentials; returns what must never
/// be printed.
async fn drive(p: &Process) -> Vec<(&'static str, String)> {
    let ari = ari().await;
    let good_jwt = jwt_with(SECRET, serde_json::json!({"exp": exp_in(300)}));
    let expired_jwt = jwt_with(SECRET, serde_json::json!({"exp": exp_in(-300)}));
    let foreign_jwt = jwt_with(OTHER_SECRET, serde_json::json!({"exp": exp_in(300)}));

    for path in ["/health", "/ready", "/metrics"] {
        assert_eq!(p.send(p.http.get(p.url(path))).await.0, 200, "{path}");
    }
    // Calls: the key and a JWT, in the header and in the query; wrong, expired and foreign
    // tokens, in both.
    let call = originate(&ari, &p.app, "tone").await;
    let call_path = format!("/v1.0/calls/{call}");
    eventually(Duration::from_secs(5), || async {
        p.get(&call_path, KEY).await.0 == 200
    })
    .await;
    let call_jwt = jwt_with(
        SECRET,
        serde_json::json!({"exp": exp_in(300), "resource": format!("call:{call}")}),
    );
    for (token, want) in [
        (KEY, 200),
        (good_jwt.as_str(), 200),
        (call_jwt.as_str(), 200),
        (WRONG_KEY, 401),
        (expired_jwt.as_str(), 401),
        (foreign_jwt.as_str(), 401),
    ] {
        assert_eq!(p.get(&call_path, token).await.0, want, "header");
        let (status, _) = p
            .send(p.http.get(p.url(&call_path)).query(&[("token", token)]))
            .await;
        assert_eq!(status, want, "query");
    }
    assert_eq!(p.get("/v1.0/calls", KEY).await.0, 200);
    assert_eq!(p.get("/v1.0/calls", &call_jwt).await.0, 403);
    assert_eq!(p.send(p.http.get(p.url("/v1.0/calls"))).await.0, 401);
    assert_eq!(p.get("/v1.0/calls/unknown-call", KEY).await.0, 404);
    assert_eq!(p.get("/v1.0/calls/a%2Fb", KEY).await.0, 400);

    // Conferences, with a call going in and out.
    let (status, conf) = p.json("POST", "/v1.0/conferences", r#"{"name":"c"}"#).await;
    assert_eq!(status, 201, "{conf}");
    let conf: serde_json::Value = serde_json::from_str(&conf).expect("json");
    let conf = conf["id"].as_str().expect("id").to_owned();
    let conf_path = format!("/v1.0/conferences/{conf}");
    assert_eq!(p.get("/v1.0/conferences", KEY).await.0, 200);
    assert_eq!(p.get(&conf_path, KEY).await.0, 200);
    let member = originate(&ari, &p.app, "silence").await;
    eventually(Duration::from_secs(5), || async {
        p.get(&format!("/v1.0/calls/{member}"), KEY).await.0 == 200
    })
    .await;
    let member_path = format!("{conf_path}/calls/{member}");
    assert_eq!(p.json("POST", &member_path, "").await.0, 204);
    assert_eq!(p.json("DELETE", &member_path, "").await.0, 204);
    // Asterisk refuses: the call is no longer in the conference.
    assert_eq!(p.json("DELETE", &member_path, "").await.0, 409);

    // Bad bodies.
    for (path, body) in [
        ("/v1.0/conferences".to_owned(), "{not json"),
        (
            format!("{call_path}/external_media"),
            r#"{"external_host": 5}"#,
        ),
        (format!("{call_path}/actions"), r#"{"type": "dance"}"#),
        (
            format!("{call_path}/media_stream_connect"),
            r#"{"url": "http://x"}"#,
        ),
        (format!("{conf_path}/external_media"), "[]"),
    ] {
        assert_eq!(p.json("POST", &path, body).await.0, 400, "{path} {body}");
    }

    // External media: one that works, one Asterisk cannot start (nothing listens).
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("udp");
    let host = udp.local_addr().expect("addr");
    let (status, em) = p
        .json(
            "POST",
            &format!("{call_path}/external_media"),
            &format!(r#"{{"external_host": "{host}"}}"#),
        )
        .await;
    assert_eq!(status, 201, "{em}");
    let em: serde_json::Value = serde_json::from_str(&em).expect("json");
    let em_path = format!("/v1.0/external_medias/{}", em["id"].as_str().expect("id"));
    assert_eq!(p.get("/v1.0/external_medias", KEY).await.0, 200);
    assert_eq!(p.get(&em_path, KEY).await.0, 200);
    assert_eq!(p.json("DELETE", &em_path, "").await.0, 204);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let (status, body) = p
        .json(
            "POST",
            &format!("{call_path}/external_media"),
            &format!(r#"{{"external_host": "{closed}", "encapsulation": "audiosocket"}}"#),
        )
        .await;
    assert_eq!(status, 400, "Asterisk cannot reach the host: {body}");
    assert_eq!(
        p.json("DELETE", &format!("{conf_path}/external_media"), "")
            .await
            .0,
        204
    );

    // A media_stream_connect to a server that is not there, with a key in its URL and a
    // parameter of the client's own.
    let (status, body) = p
        .json(
            "POST",
            &format!("{call_path}/media_stream_connect"),
            &format!(
                r#"{{"url": "ws://{closed}/bot?key={BOT_KEY}", "parameters": {{"auth": "{BOT_PARAMETER}"}}}}"#
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(body.contains("terminated"), "{body}");

    // Media streams opened with the token in the query: the key, then the call's JWT.
    for token in [KEY, call_jwt.as_str()] {
        let mut client = match open(
            p.addr,
            &call_path,
            Enc::SlnSlin,
            &format!("events=true&token={token}"),
        )
        .await
        {
            Ok(client) => client,
            Err(refused) => panic!("refused {}: {}", refused.status, refused.body),
        };
        let (samples, _) = client.listen(Duration::from_millis(300)).await;
        assert!(!samples.is_empty(), "audio flows");
        assert_eq!(p.get("/v1.0/media_streams", KEY).await.0, 200);
        client.close().await;
    }
    for (token, want) in [(WRONG_KEY, 401), (expired_jwt.as_str(), 401)] {
        let refused = open(p.addr, &call_path, Enc::SlnSlin, &format!("token={token}"))
            .await
            .err()
            .expect("refused");
        assert_eq!(refused.status, want);
    }
    assert_eq!(
        p.json(
            "POST",
            &format!("{call_path}/actions"),
            r#"{"type": "answer"}"#
        )
        .await
        .0,
        204
    );

    // Twilio's call update: a wrong token, then the key, then a JWT (on a call of its own).
    let twilio = |call: &str| p.url(&format!("/2010-04-01/Accounts/{ACCOUNT}/Calls/{call}.json"));
    let (status, _) = p
        .send(
            p.http
                .post(twilio(&call))
                .basic_auth(ACCOUNT, Some(WRONG_KEY))
                .header("content-type", "application/x-www-form-urlencoded")
                .body("Status=completed"),
        )
        .await;
    assert_eq!(status, 401);
    let (status, body) = p
        .send(
            p.http
                .post(twilio(&call))
                .basic_auth(ACCOUNT, Some(KEY))
                .header("content-type", "application/x-www-form-urlencoded")
                .body("Status=completed"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let second = originate(&ari, &p.app, "silence").await;
    eventually(Duration::from_secs(5), || async {
        p.get(&format!("/v1.0/calls/{second}"), KEY).await.0 == 200
    })
    .await;
    let (status, body) = p
        .send(
            p.http
                .post(twilio(&second))
                .basic_auth(ACCOUNT, Some(&good_jwt))
                .header("content-type", "application/x-www-form-urlencoded")
                .body("Status=canceled"),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    assert_eq!(p.json("DELETE", &conf_path, "").await.0, 204);
    hangup(&ari, &member).await;

    let signature = |token: &str| token.rsplit('.').next().expect("signature").to_owned();
    vec![
        ("the API key", KEY.to_owned()),
        ("the unused API key", UNUSED_KEY.to_owned()),
        ("the wrong key", WRONG_KEY.to_owned()),
        ("the JWT secret", SECRET.to_owned()),
        ("the other JWT secret", OTHER_SECRET.to_owned()),
        ("a JWT", good_jwt.clone()),
        ("a JWT's signature", signature(&good_jwt)),
        ("the call's JWT", call_jwt.clone()),
        ("the call's JWT's signature", signature(&call_jwt)),
        ("an expired JWT", expired_jwt.clone()),
        ("a foreign JWT", foreign_jwt.clone()),
        ("Basic auth with the key", b64(&format!("{ACCOUNT}:{KEY}"))),
        (
            "Basic auth with the wrong key",
            b64(&format!("{ACCOUNT}:{WRONG_KEY}")),
        ),
        (
            "Basic auth with a JWT",
            b64(&format!("{ACCOUNT}:{good_jwt}")),
        ),
        ("the ARI credentials", "mediastream:mediastream".to_owned()),
        ("ARI's Basic auth", b64("mediastream:mediastream")),
        ("the client's key in its URL", BOT_KEY.to_owned()),
        ("the client's parameter", BOT_PARAMETER.to_owned()),
    ]
}

async fn no_secret_printed(log_format: &str) {
    let _ari = ari().await;
    let settings = ari_settings("unused");
    let p = Process::spawn(log_format, &ari_url(), settings.password.expose());
    p.wait_ready().await;
    let secrets = drive(&p).await;
    let output = p.stop();
    // The output is what it should be: debug lines, requests logged, in the format asked.
    assert!(output.contains("http request"), "debug lines: {output}");
    assert!(output.contains("DEBUG"), "debug lines: {output}");
    if log_format == "json" {
        for line in output.lines().filter(|l| !l.trim().is_empty()) {
            assert!(
                serde_json::from_str::<serde_json::Value>(line).is_ok(),
                "not JSON: {line}"
            );
        }
    }
    assert_none_in(&output, &secrets);
    println!(
        "{log_format}: {} lines, {} bytes, none of {} secrets",
        output.lines().count(),
        output.len(),
        secrets.len()
    );
}

#[tokio::test]
async fn no_secret_in_text_logs() {
    no_secret_printed("text").await;
}

#[tokio::test]
async fn no_secret_in_json_logs() {
    no_secret_printed("json").await;
}

/// An "Asterisk" that answers 401 to everything, as one given a wrong password does, and says
/// whether it was sent `credential`.
async fn refusing_asterisk(credential: String) -> (String, tokio::sync::watch::Receiver<bool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (seen_tx, seen) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            if String::from_utf8_lossy(&request).contains(&credential) {
                seen_tx.send_replace(true);
            }
            let body = r#"{"message":"Authentication required"}"#;
            let answer = format!(
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"Asterisk REST Interface\"\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(answer.as_bytes()).await;
            let _ = socket.shutdown().await;
        }
    });
    (url, seen)
}

#[tokio::test]
async fn no_secret_when_asterisk_refuses_the_password() {
    let basic = b64(&format!("mediastream:{FAKE_ARI_PASSWORD}"));
    for format in ["text", "json"] {
        let (url, mut seen) = refusing_asterisk(format!("Basic {basic}")).await;
        let p = Process::spawn(format, &url, FAKE_ARI_PASSWORD);
        p.wait_answering().await;
        tokio::time::timeout(Duration::from_secs(10), seen.wait_for(|s| *s))
            .await
            .expect("the service tried its password")
            .expect("watch");
        // Not ready; what needs Asterisk fails, what does not still answers.
        assert_eq!(p.send(p.http.get(p.url("/ready"))).await.0, 503);
        let (status, body) = p.get("/v1.0/calls/some-call", KEY).await;
        assert_eq!(status, 503, "{body}");
        let (status, _) = p
            .send(
                p.http
                    .get(p.url("/v1.0/conferences/some-conf"))
                    .query(&[("token", KEY)]),
            )
            .await;
        assert_eq!(status, 503);
        assert_eq!(p.json("POST", "/v1.0/conferences", "").await.0, 503);
        let (status, _) = p
            .send(
                p.http
                    .post(p.url(&format!(
                        "/2010-04-01/Accounts/{ACCOUNT}/Calls/some-call.json"
                    )))
                    .basic_auth(ACCOUNT, Some(KEY))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body("Status=completed"),
            )
            .await;
        assert_eq!(status, 503);
        // The event socket fails again and again (with backoff).
        eventually(Duration::from_secs(10), || async {
            read(&p.out).matches("connect failed").count() >= 3
        })
        .await;
        let output = p.stop();
        assert!(
            output.contains("Asterisk request failed") && output.contains("connect failed"),
            "the failures are logged: {output}"
        );
        assert_none_in(
            &output,
            &[
                ("the ARI password", FAKE_ARI_PASSWORD.to_owned()),
                ("ARI's Basic auth", basic.clone()),
                ("the API key", KEY.to_owned()),
                ("the unused API key", UNUSED_KEY.to_owned()),
                ("the JWT secret", SECRET.to_owned()),
                ("Basic auth with the key", b64(&format!("{ACCOUNT}:{KEY}"))),
            ],
        );
        println!(
            "{format}, Asterisk refusing: {} lines",
            output.lines().count()
        );
    }
}
