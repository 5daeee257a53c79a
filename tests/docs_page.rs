//! `GET /docs` in a real browser: headless Chromium (Debian's `chromium`, which
//! `scripts/chromium` installs when it is missing and the test runs as root) loads the page from
//! the service running in-process, with every host but the service's unreachable, and the DOM it
//! renders lists every operation of `/openapi.json`. A screenshot is written under `target/` and
//! its path printed.
//!
//! No test here skips when Chromium is missing: it fails and says how to provide it.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

/// The browser, installed by `scripts/chromium` if need be; fails the test if there is none.
fn chromium() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/chromium");
    let output = std::process::Command::new(&script)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(
        output.status.success() && !path.is_empty(),
        "no Chromium: {}. Install Debian's `chromium` (scripts/chromium does it as root), or set \
         CHROMIUM to a Chromium or Chrome binary",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    path
}

/// Where this test writes what it leaves for people to look at.
fn out_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("docs-page");
    std::fs::create_dir_all(&dir).expect("target/docs-page");
    dir
}

/// Runs headless Chromium on `url` with `args`; its standard output. Only the service's
/// address resolves or connects: a page that needed anything from elsewhere would not render.
async fn browse(browser: &str, url: &str, args: &[String]) -> String {
    let profile = tempfile_dir();
    let mut command = tokio::process::Command::new(browser);
    command
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=15000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(90), command.output())
        .await
        .expect("Chromium finishes within 90 s")
        .expect("Chromium runs");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        output.status.success(),
        "Chromium failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A fresh profile directory for one browser run.
fn tempfile_dir() -> PathBuf {
    let dir = out_dir().join(format!("profile-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("profile dir");
    dir
}

/// Every operation of the document, as Swagger UI shows them: (`GET`, `/v1.0/calls`).
fn operations(document: &serde_json::Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in ["get", "put", "post", "delete", "patch"] {
            if item.get(method).is_some() {
                found.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    found
}

/// The operations Swagger UI rendered: each is a block whose summary holds its method and
/// its path (`data-path`).
fn rendered(dom: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for block in dom.split("opblock-summary-method\">").skip(1) {
        let method = block.split('<').next().unwrap_or_default().to_owned();
        let path = block
            .split("data-path=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default()
            .replace("&amp;", "&");
        found.push((method, path));
    }
    found
}

#[tokio::test]
async fn the_docs_page_renders_every_route() {
    let browser = chromium();
    // The page and the document need nothing from Asterisk: the service is not waited for.
    let service = Service::start_unready(test_settings()).await;

    // Both routes are public.
    let document: serde_json::Value = service
        .http
        .get(service.url("/openapi.json"))
        .send()
        .await
        .expect("/openapi.json")
        .json()
        .await
        .expect("JSON");
    assert_eq!(document["openapi"], "3.1.0");
    let page = service
        .http
        .get(service.url("/docs"))
        .send()
        .await
        .expect("/docs");
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .expect("ascii");
    assert!(policy.contains("default-src 'self'"), "{policy}");

    let url = service.url("/docs");
    let dom = browse(&browser, &url, &["--dump-dom".to_owned()]).await;
    let want = operations(&document);
    let got = rendered(&dom);
    println!(
        "the page rendered {} operations of the document's {}:",
        got.len(),
        want.len()
    );
    for (method, path) in &got {
        println!("  {method:<6} {path}");
    }
    assert!(
        dom.contains("ari-mediastream"),
        "the document's title is on the page"
    );
    for operation in &want {
        assert!(
            got.contains(operation),
            "{} {} is not on the page; it shows {got:?}",
            operation.0,
            operation.1
        );
    }
    assert!(
        got.contains(&("GET".into(), "/v1.0/calls/{id}/media_stream".into())),
        "the media stream WebSocket route is on the page"
    );

    let screenshot = out_dir().join("docs.png");
    let _ = std::fs::remove_file(&screenshot);
    browse(
        &browser,
        &url,
        &[
            "--window-size=1280,4000".to_owned(),
            format!("--screenshot={}", screenshot.display()),
        ],
    )
    .await;
    let size = std::fs::metadata(&screenshot)
        .unwrap_or_else(|e| panic!("no screenshot at {}: {e}", screenshot.display()))
        .len();
    assert!(size > 10_000, "a screenshot of a rendered page: {size} B");
    println!("screenshot: {} ({size} B)", screenshot.display());
    service.stop().await;
}
