//! The binary as an operator runs it: `--help`, refusals at start-up, SIGTERM.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_ari-mediastream");

/// The binary with only the given environment, in an empty directory (no stray config file).
fn command(env: &[(&str, &str)]) -> Command {
    let dir = std::env::temp_dir().join(unique_id("ms-cli"));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut cmd = Command::new(BIN);
    cmd.env_clear().current_dir(dir).envs(env.iter().copied());
    cmd
}

fn run(env: &[(&str, &str)], args: &[&str]) -> (i32, String) {
    let out = command(env).args(args).output().expect("runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn help_describes_the_options() {
    let (code, text) = run(&[], &["--help"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("--config") && text.contains("--log-format"),
        "{text}"
    );
    assert!(text.contains("MEDIASTREAM__"), "{text}");
}

#[test]
fn a_bad_value_stops_start_up_naming_the_key() {
    let (code, text) = run(
        &[
            ("MEDIASTREAM__ARI__PASSWORD", "p"),
            ("MEDIASTREAM__AUTH__DISABLED", "true"),
            ("MEDIASTREAM__MEDIA__RTP_PORTS", "lots"),
        ],
        &[],
    );
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("media.rtp_ports"), "{text}");
}

#[test]
fn no_auth_setting_stops_start_up() {
    let (code, text) = run(&[("MEDIASTREAM__ARI__PASSWORD", "p")], &[]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("auth.api_keys") && text.contains("auth.disabled"),
        "{text}"
    );
}

#[test]
fn a_missing_or_broken_config_file_stops_start_up() {
    let (code, text) = run(&[], &["--config", "/nonexistent/mediastream.toml"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("mediastream.toml"), "{text}");

    let path = std::env::temp_dir().join(format!("{}.toml", unique_id("broken")));
    std::fs::write(&path, "[media]\njitter_ms = \"forty\"\n").expect("write");
    let (code, text) = run(
        &[("MEDIASTREAM__ARI__PASSWORD", "p")],
        &["--config", path.to_str().expect("path")],
    );
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("jitter_ms"), "{text}");
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let _ari = ari().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let app = unique_app();
    let ari = ari_settings(&app);
    let mut child = command(&[
        ("MEDIASTREAM__ARI__URL", ari.url.as_str()),
        ("MEDIASTREAM__ARI__USERNAME", &ari.username),
        ("MEDIASTREAM__ARI__PASSWORD", ari.password.expose()),
        ("MEDIASTREAM__ARI__APP", &app),
        ("MEDIASTREAM__HTTP__LISTEN", &listen),
        ("MEDIASTREAM__AUTH__API_KEYS", API_KEY),
    ])
    .args(["--log-format", "json"])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn");

    let http = reqwest::Client::new();
    let ready = format!("http://{listen}/ready");
    eventually(Duration::from_secs(20), || async {
        matches!(http.get(&ready).send().await, Ok(r) if r.status() == 200)
    })
    .await;

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let status = tokio::task::spawn_blocking(move || {
        let status = child.wait().expect("wait");
        let mut out = String::new();
        std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut out).ok();
        (status, out)
    });
    let (status, out) = tokio::time::timeout(Duration::from_secs(15), status)
        .await
        .expect("exits within 15 s")
        .expect("join");
    assert!(status.success(), "exit {status:?}: {out}");
    // JSON logs, one object a line, and the token never appears in them.
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.iter().any(|l| l.contains("shutting down")), "{out}");
    for line in &lines {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(!line.contains(API_KEY));
    }
}
