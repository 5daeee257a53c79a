//! The `ari-mediastream` binary: parse the command line, load and validate the settings, set up
//! logging, serve until SIGTERM or SIGINT, drain, exit 0.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use ari_mediastream::config::Settings;
use ari_mediastream::telemetry::{self, LogFormat};

/// Streams Asterisk call and conference audio to API clients over WebSocket.
///
/// Settings come from built-in defaults, then the TOML file, then environment variables
/// MEDIASTREAM__SECTION__KEY (for example MEDIASTREAM__ARI__URL).
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// TOML configuration file [default: mediastream.toml, if present]
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Log line format; the level follows RUST_LOG (default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Instead of serving: ask the service running with this configuration whether it is
    /// ready (`GET /ready` on `http.listen`), and exit 0 if it is, 1 if not. For container
    /// healthchecks, without curl in the image.
    #[arg(long)]
    check_ready: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("ari-mediastream: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check_ready {
        return check_ready(&settings);
    }
    telemetry::init_tracing(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ari-mediastream: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(settings))
}

/// `GET /ready` on the service this configuration describes: on loopback when it listens on
/// every address, over HTTPS when it serves TLS (its certificate is not checked: this is the
/// same host asking itself).
fn check_ready(settings: &Settings) -> ExitCode {
    let mut addr = settings.http.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let scheme = if settings.http.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{addr}/ready");
    let ready = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()
        .and_then(|rt| {
            rt.block_on(async {
                let client = reqwest::Client::builder()
                    .timeout(std::time::Duration::from_secs(3))
                    .tls_danger_accept_invalid_certs(true)
                    .build()
                    .ok()?;
                client.get(&url).send().await.ok()
            })
        })
        .is_some_and(|response| response.status() == 200);
    if ready {
        ExitCode::SUCCESS
    } else {
        eprintln!("ari-mediastream: {url} is not ready");
        ExitCode::FAILURE
    }
}

async fn serve(settings: Settings) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(settings.http.listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(listen = %settings.http.listen, error = %e, "http.listen: cannot bind");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    // The signal cancels the token and the service drains: its end is awaited either way.
    let run = ari_mediastream::run(settings, listener, shutdown.clone());
    tokio::pin!(run);
    let ran = tokio::select! {
        ran = &mut run => ran,
        () = signal(shutdown) => run.await,
    };
    match ran {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
    }
}

/// Fires `shutdown` on SIGTERM or SIGINT.
async fn signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    shutdown.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
    shutdown.cancel();
}
