//! `ari-mediastream-cli`: records, plays and listens to call and conference audio through the
//! service's public API (the media stream WebSocket, `encapsulation=sln`), nothing else.
//!
//! Exit status: 0 done, 1 failed (one line on stderr), 2 usage error (clap's own).

mod audio;

use std::fs::File;
use std::io::{BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use futures::{SinkExt, StreamExt};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How much audio `play` sends per message.
const CHUNK: Duration = Duration::from_millis(200);
/// `play` sends this much faster than real time, so the service's queue never runs dry; the
/// service applies backpressure long before this could pile up.
const AHEAD: f64 = 1.1;

/// Records, plays and listens to calls and conferences through ari-mediastream.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Base URL of the service.
    #[arg(
        long,
        env = "MEDIASTREAM_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    url: String,
    /// API key or JWT.
    #[arg(long, env = "MEDIASTREAM_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Records to a mono 16-bit PCM WAV file until --seconds, Ctrl-C or the end of the call or
    /// conference.
    Record {
        #[command(flatten)]
        target: Target,
        #[arg(long, value_enum, default_value_t = Format::Slin)]
        format: Format,
        /// Stop after this many seconds of audio.
        #[arg(long)]
        seconds: Option<f64>,
        /// The WAV file to write.
        out: PathBuf,
    },
    /// Plays a WAV file (PCM 8/16/24/32-bit or 32-bit float, any rate, mono or stereo) into a
    /// call; exits once the whole file has been played.
    Play {
        /// The call to play into.
        #[arg(long)]
        call: String,
        #[arg(long, value_enum, default_value_t = Format::Slin)]
        format: Format,
        /// The WAV file to play.
        input: PathBuf,
    },
    /// Writes raw audio (16-bit little-endian signed linear mono, at the format's rate) to
    /// stdout.
    Listen {
        #[command(flatten)]
        target: Target,
        #[arg(long, value_enum, default_value_t = Format::Slin)]
        format: Format,
    },
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct Target {
    /// A call id.
    #[arg(long)]
    call: Option<String>,
    /// A conference id.
    #[arg(long)]
    conference: Option<String>,
}

impl Target {
    fn resource(&self) -> (&'static str, &str) {
        match (&self.call, &self.conference) {
            (Some(call), _) => ("calls", call),
            (None, Some(conference)) => ("conferences", conference),
            // clap's group makes exactly one of the two required.
            (None, None) => ("calls", ""),
        }
    }
}

/// The audio format on the stream: 16-bit signed linear at a rate. A recording is at that
/// rate; a played file is converted to it.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    /// 8 kHz.
    Slin,
    /// 16 kHz (wideband, where the call carries it).
    Slin16,
    /// 24 kHz.
    Slin24,
    /// 48 kHz.
    Slin48,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Slin => "slin",
            Format::Slin16 => "slin16",
            Format::Slin24 => "slin24",
            Format::Slin48 => "slin48",
        }
    }

    fn rate(self) -> u32 {
        match self {
            Format::Slin => 8000,
            Format::Slin16 => 16_000,
            Format::Slin24 => 24_000,
            Format::Slin48 => 48_000,
        }
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start: {e}")),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(&message),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("ari-mediastream-cli: {}", message.replace('\n', " "));
    ExitCode::from(1)
}

async fn run(cli: Cli) -> Result<(), String> {
    let base = Base {
        url: cli.url,
        token: cli.token,
    };
    match cli.command {
        Command::Record {
            target,
            format,
            seconds,
            out,
        } => record(&base, &target, format, seconds, &out).await,
        Command::Play {
            call,
            format,
            input,
        } => play(&base, &call, format, &input).await,
        Command::Listen { target, format } => listen(&base, &target, format).await,
    }
}

/// Where the service is and how to be let in.
struct Base {
    url: String,
    token: Option<String>,
}

impl Base {
    /// Opens `encapsulation=sln&format={format}&events=true` on
    /// `/v1.0/{kind}/{id}/media_stream`.
    async fn open(&self, kind: &str, id: &str, format: Format) -> Result<Ws, String> {
        if id.is_empty() || id == "." || id == ".." {
            return Err(format!("not a valid id: {id:?}"));
        }
        let base = self.url.trim_end_matches('/');
        let ws_base = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            return Err(format!("--url must start with http:// or https://: {base}"));
        };
        let mut url = format!(
            "{ws_base}/v1.0/{kind}/{}/media_stream?encapsulation=sln&format={}&events=true",
            segment(id),
            format.name()
        );
        if let Some(token) = &self.token {
            url.push_str("&token=");
            url.extend(form_urlencoded::byte_serialize(token.as_bytes()));
        }
        let what = if kind == "calls" {
            "call"
        } else {
            "conference"
        };
        match tokio_tungstenite::connect_async(url).await {
            Ok((ws, _)) => Ok(ws),
            Err(tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let reason = response
                    .body()
                    .as_deref()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
                    .and_then(|v| v["error"]["reason"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                Err(match status {
                    404 => format!("no such {what}: {id} (404 {reason})"),
                    401 | 403 => format!("token refused ({status} {reason})"),
                    _ => format!("the service refused the stream ({status} {reason})"),
                })
            }
            Err(e) => Err(format!("cannot reach the service at {base}: {e}")),
        }
    }
}

/// `id` percent-encoded as one path segment.
fn segment(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Why a receiving stream ended without an error.
enum End {
    /// The call or conference ended (or the service closed normally).
    Closed,
    /// Enough audio, or Ctrl-C.
    Done,
}

/// Reads the stream, handing each block of samples to `sink` until it returns `false`, the
/// deadline passes, Ctrl-C, or the service closes. Closes the stream politely when it is the
/// one ending it.
async fn receive(
    ws: &mut Ws,
    deadline: Option<Instant>,
    mut sink: impl FnMut(&[i16]) -> Result<bool, String>,
) -> Result<End, String> {
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let end = loop {
        let timeout = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut ctrl_c => break End::Done,
            () = timeout => break End::Done,
            msg = ws.next() => match msg {
                Some(Ok(Message::Binary(bytes))) => {
                    let samples: Vec<i16> = bytes
                        .chunks_exact(2)
                        .map(|b| i16::from_le_bytes([b[0], b[1]]))
                        .collect();
                    if !sink(&samples)? {
                        break End::Done;
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    return match frame {
                        Some(f) if f.code != CloseCode::Normal => Err(format!(
                            "the service closed the stream ({} {})",
                            u16::from(f.code),
                            f.reason
                        )),
                        _ => Ok(End::Closed),
                    };
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("the stream failed: {e}")),
                None => return Ok(End::Closed),
            },
        }
    };
    close(ws).await;
    Ok(end)
}

/// Sends a normal close and waits briefly for the service's, so it tears the stream down now.
async fn close(ws: &mut Ws) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    if ws.close(Some(frame)).await.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
    }
}

async fn record(
    base: &Base,
    target: &Target,
    format: Format,
    seconds: Option<f64>,
    out: &Path,
) -> Result<(), String> {
    if let Some(s) = seconds
        && !(s.is_finite() && s > 0.0)
    {
        return Err(format!("--seconds must be a positive number: {s}"));
    }
    let (kind, id) = target.resource();
    let mut ws = base.open(kind, id, format).await?;
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: format.rate(),
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(out, spec)
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    // Stop on the amount of audio received; the wall-clock deadline only guards against a
    // stream that goes quiet.
    let limit = seconds.map(|s| (s * f64::from(format.rate())).round() as u64);
    let deadline = seconds.map(|s| Instant::now() + Duration::from_secs_f64(s + 2.0));
    let mut written = 0u64;
    let received = receive(&mut ws, deadline, |samples| {
        let take = match limit {
            Some(limit) => samples.len().min((limit - written) as usize),
            None => samples.len(),
        };
        for &s in &samples[..take] {
            writer
                .write_sample(s)
                .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
        }
        written += take as u64;
        Ok(limit.is_none_or(|limit| written < limit))
    })
    .await;
    // The file stays valid whatever ended the recording.
    writer
        .finalize()
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    received.map(|_| ())
}

async fn listen(base: &Base, target: &Target, format: Format) -> Result<(), String> {
    let (kind, id) = target.resource();
    let mut ws = base.open(kind, id, format).await?;
    let mut stdout = std::io::stdout().lock();
    let mut bytes = Vec::new();
    let received = receive(&mut ws, None, |samples| {
        bytes.clear();
        bytes.extend(samples.iter().flat_map(|s| s.to_le_bytes()));
        match stdout.write_all(&bytes).and_then(|()| stdout.flush()) {
            Ok(()) => Ok(true),
            // The reader went away (`| head`): a normal way to stop listening.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
            Err(e) => Err(format!("cannot write to stdout: {e}")),
        }
    })
    .await?;
    let (End::Closed | End::Done) = received;
    Ok(())
}

async fn play(base: &Base, call: &str, format: Format, input: &Path) -> Result<(), String> {
    let rate = format.rate();
    let file = File::open(input).map_err(|e| format!("cannot open {}: {e}", input.display()))?;
    let samples = audio::load_wav(BufReader::new(file))
        .and_then(|(mono, from)| audio::resample(&mono, from, rate))
        .map_err(|e| format!("{}: {e}", input.display()))?;
    let pcm: Vec<u8> = samples
        .iter()
        .flat_map(|&s| audio::to_i16(s).to_le_bytes())
        .collect();
    let chunk_bytes = (rate as usize * CHUNK.as_millis() as usize / 1000) * 2;
    let chunks: Vec<&[u8]> = pcm.chunks(chunk_bytes).collect();
    let total_ms = samples.len() as u64 * 1000 / u64::from(rate);

    let mut ws = base.open("calls", call, format).await?;
    let progress = progress_bar(total_ms);
    let start = Instant::now();
    let pace = CHUNK.div_f64(AHEAD);
    let mut next = 0usize;
    let mut marked = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let result = loop {
        let due = start + pace * next as u32;
        tokio::select! {
            _ = &mut ctrl_c => {
                close(&mut ws).await;
                break Err("interrupted".to_owned());
            }
            () = tokio::time::sleep_until(due), if !marked => {
                let sent = if let Some(chunk) = chunks.get(next) {
                    next += 1;
                    ws.send(Message::Binary(chunk.to_vec().into())).await
                } else {
                    marked = true;
                    ws.send(Message::text(r#"{"type":"mark","name":"end"}"#)).await
                };
                if let Err(e) = sent {
                    break Err(format!("the stream failed: {e}"));
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let event: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    if event["type"] == "mark" && event["name"] == "end" {
                        progress.set_position(total_ms);
                        close(&mut ws).await;
                        break Ok(());
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    break Err(match frame {
                        Some(f) if f.code != CloseCode::Normal => format!(
                            "the service closed the stream ({} {})",
                            u16::from(f.code),
                            f.reason
                        ),
                        _ => "the call ended before the file was played".to_owned(),
                    });
                }
                Some(Ok(_)) => {
                    // Audio from the call; show how far playout has got, at most what was sent.
                    let played = start.elapsed().as_millis() as u64;
                    progress.set_position(played.min(next as u64 * CHUNK.as_millis() as u64).min(total_ms));
                }
                Some(Err(e)) => break Err(format!("the stream failed: {e}")),
                None => break Err("the call ended before the file was played".to_owned()),
            },
        }
    };
    progress.finish_and_clear();
    result
}

/// A bar in milliseconds of audio, drawn only when stderr is a terminal.
fn progress_bar(total_ms: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total_ms), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {msg} {elapsed_precise} / {len}ms played")
    {
        bar.set_style(style);
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_one_segment() {
        assert_eq!(segment("abc-1.2_3~"), "abc-1.2_3~");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
