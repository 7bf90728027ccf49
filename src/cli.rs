//! Command-line flags, the subcommands' glue, and the progress view.

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{BinaryBytes, HumanDuration, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::app::{self, AppError, DownloadOptions, Snapshot, Stage, Status};
use crate::engine::EngineConfig;
use crate::metainfo::{FileKind, Torrent};

#[derive(Parser, Debug)]
#[command(
    name = "xorrent",
    version,
    about = "A fast BitTorrent client for the command line"
)]
pub struct Cli {
    /// Log filter for diagnostics on stderr (e.g. `info`, `xorrent=debug`).
    #[arg(long, global = true, env = "XORRENT_LOG", default_value = "warn")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Download a torrent: verifies what is already in the output directory
    /// and fetches the rest from trackers and the peers you name.
    Download(DownloadArgs),
    /// Show what a .torrent file contains.
    Info(InfoArgs),
}

#[derive(Args, Debug)]
pub struct DownloadArgs {
    /// The .torrent file.
    pub torrent: PathBuf,
    /// Directory to save into (the torrent's files go below it).
    #[arg(short, long, default_value = ".")]
    pub output: PathBuf,
    /// TCP port to listen on for peers [default: first free of 6881-6889].
    #[arg(long, env = "XORRENT_PORT")]
    pub port: Option<u16>,
    /// Local IP to listen on and connect from.
    #[arg(long, env = "XORRENT_BIND")]
    pub bind: Option<IpAddr>,
    /// Most peers connected at once.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_peers: u16,
    /// Connect to this peer directly (repeatable); for LANs and tests.
    #[arg(long = "peer", value_name = "IP:PORT")]
    pub peers: Vec<SocketAddr>,
    /// Peers to ask each tracker for.
    #[arg(long, default_value_t = 80)]
    pub numwant: u32,
    /// Print only errors.
    #[arg(short, long)]
    pub quiet: bool,
    /// Seconds a peer may hold our requests without sending data before
    /// they go to other peers.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub request_timeout: u64,
    /// Seconds to wait for a TCP connect and for the handshake.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub connect_timeout: u64,
    /// Write a JSON summary (bytes per peer, resumed and fetched bytes) here
    /// when the download completes.
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
    /// Seconds between status lines when stderr is not a terminal.
    #[arg(long, default_value_t = 5, value_name = "SECS")]
    pub status_interval: u64,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// The .torrent file.
    pub torrent: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The bar on screen, if any: log lines are printed above it instead of
/// through it.
static ACTIVE_BAR: std::sync::Mutex<Option<ProgressBar>> = std::sync::Mutex::new(None);

fn set_active_bar(b: Option<ProgressBar>) {
    *ACTIVE_BAR.lock().unwrap_or_else(|e| e.into_inner()) = b;
}

/// A `tracing` writer that keeps log lines from tearing the progress bar.
pub struct LogWriter;

/// One log record, written out when dropped.
pub struct LogLine(Vec<u8>);

impl std::io::Write for LogLine {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        use std::io::Write;
        let bar = ACTIVE_BAR.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let write = || {
            let _ = std::io::stderr().write_all(&self.0);
        };
        match bar {
            Some(b) => b.suspend(write),
            None => write(),
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;
    fn make_writer(&'a self) -> LogLine {
        LogLine(Vec::new())
    }
}

/// Runs a parsed command. `cancel` fires on Ctrl-C.
pub async fn run(cli: Cli, cancel: CancellationToken) -> Result<()> {
    match cli.command {
        Command::Download(a) => download(a, cancel).await,
        Command::Info(a) => info(a),
    }
}

/// Exit code for an error: 130 after Ctrl-C, 1 otherwise.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    match err.downcast_ref::<AppError>() {
        Some(AppError::Interrupted { .. }) => 130,
        _ => 1,
    }
}

async fn download(a: DownloadArgs, cancel: CancellationToken) -> Result<()> {
    let engine = EngineConfig {
        max_peers: a.max_peers.into(),
        request_timeout: Duration::from_secs(a.request_timeout.max(1)),
        connect_timeout: Duration::from_secs(a.connect_timeout.max(1)),
        handshake_timeout: Duration::from_secs(a.connect_timeout.max(1)),
        ..EngineConfig::default()
    };
    let opts = DownloadOptions {
        torrent: a.torrent.clone(),
        output: a.output.clone(),
        port: a.port,
        bind: a.bind,
        peers: a.peers.clone(),
        engine,
        numwant: a.numwant,
        tracker_timeout: Duration::from_secs(15),
    };
    let status = Status::new();
    let view = View::start(
        status.clone(),
        a.quiet,
        Duration::from_secs(a.status_interval.max(1)),
    );
    let result = app::download(opts, status, cancel).await;
    view.finish(result.is_ok()).await;
    let report = result.with_context(|| format!("download of {} failed", a.torrent.display()))?;
    if let Some(path) = &a.summary_json {
        let v = serde_json::json!({
            "name": report.name,
            "info_hash": report.info_hash,
            "total_bytes": report.total_bytes,
            "downloaded": report.downloaded,
            "resumed": report.resumed,
            "received": report.received,
            "wasted": report.wasted,
            "hash_failures": report.hash_failures,
            "elapsed_secs": view.elapsed().as_secs_f64(),
            "peers": report.peers.iter().map(|(a, b)| serde_json::json!({"addr": a.to_string(), "bytes": b})).collect::<Vec<_>>(),
            "banned": report.banned.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if !a.quiet {
        eprintln!(
            "done: {} ({}) in {}: {} fetched, {} already present",
            report.name,
            BinaryBytes(report.total_bytes),
            HumanDuration(view.elapsed()),
            BinaryBytes(report.downloaded),
            BinaryBytes(report.resumed),
        );
    }
    Ok(())
}

/// The progress display: indicatif bars on a terminal, plain status lines
/// otherwise, nothing with `--quiet`. It reads only [`Status`] snapshots.
struct View {
    task: Option<tokio::task::JoinHandle<()>>,
    stop: CancellationToken,
    started: Instant,
}

impl View {
    fn start(status: Arc<Status>, quiet: bool, interval: Duration) -> View {
        let stop = CancellationToken::new();
        let task = (!quiet).then(|| {
            let s = stop.clone();
            if std::io::stderr().is_terminal() {
                tokio::spawn(bars(status, s))
            } else {
                tokio::spawn(lines(status, s, interval))
            }
        });
        View {
            task,
            stop,
            started: Instant::now(),
        }
    }

    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    async fn finish(&self, _ok: bool) {
        self.stop.cancel();
        if let Some(t) = &self.task {
            while !t.is_finished() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

fn peers_text(s: &Snapshot) -> String {
    format!("peers {}/{}", s.connected, s.known)
}

async fn bars(status: Arc<Status>, stop: CancellationToken) {
    let check_style = ProgressStyle::with_template(
        "checking {bar:30.yellow/white} {percent:>3}% {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}",
    )
    .expect("valid template")
    .progress_chars("=> ");
    let dl_style = ProgressStyle::with_template(
        "{spinner:.green} {bar:30.cyan/blue} {percent:>3}% {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
    )
    .expect("valid template")
    .progress_chars("=> ");
    let mut check: Option<ProgressBar> = None;
    let mut dl: Option<ProgressBar> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        let stopping = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tick.tick() => false,
        };
        let s = status.snapshot();
        match s.stage {
            Stage::Loading => {}
            Stage::Checking => {
                let b = check.get_or_insert_with(|| {
                    let b = ProgressBar::with_draw_target(
                        Some(s.check_total),
                        ProgressDrawTarget::stderr(),
                    );
                    b.set_style(check_style.clone());
                    b
                });
                b.set_position(s.check_done);
            }
            _ => {
                if let Some(c) = check.take() {
                    c.set_position(s.check_total);
                    c.finish();
                }
                let b = dl.get_or_insert_with(|| {
                    let b = ProgressBar::with_draw_target(
                        Some(s.total_bytes),
                        ProgressDrawTarget::stderr(),
                    );
                    b.set_style(dl_style.clone());
                    b.set_position(s.have_bytes);
                    b.reset_eta();
                    set_active_bar(Some(b.clone()));
                    b
                });
                b.set_position(s.have_bytes);
                b.set_message(peers_text(&s));
            }
        }
        if stopping {
            set_active_bar(None);
            if let Some(b) = check.take() {
                b.abandon();
            }
            if let Some(b) = dl.take() {
                b.abandon();
            }
            return;
        }
    }
}

async fn lines(status: Arc<Status>, stop: CancellationToken, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    let mut last = (Instant::now(), 0u64);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let s = status.snapshot();
        let now = Instant::now();
        let line = match s.stage {
            Stage::Loading => continue,
            Stage::Checking => format!(
                "checking: {:.1}% of {}",
                pct(s.check_done, s.check_total),
                BinaryBytes(s.check_total)
            ),
            _ => {
                let rate = (s.have_bytes.saturating_sub(last.1)) as f64
                    / (now - last.0).as_secs_f64().max(0.001);
                last = (now, s.have_bytes);
                format!(
                    "downloading: {:.1}% {}/{} {}/s {}",
                    pct(s.have_bytes, s.total_bytes),
                    BinaryBytes(s.have_bytes),
                    BinaryBytes(s.total_bytes),
                    BinaryBytes(rate as u64),
                    peers_text(&s)
                )
            }
        };
        eprintln!("{line}");
    }
}

fn pct(a: u64, b: u64) -> f64 {
    if b == 0 {
        100.0
    } else {
        a as f64 * 100.0 / b as f64
    }
}

fn info(a: InfoArgs) -> Result<()> {
    let t = Torrent::from_file(&a.torrent)
        .with_context(|| format!("cannot load {}", a.torrent.display()))?;
    if a.json {
        let files: Vec<serde_json::Value> = t
            .files
            .iter()
            .map(|f| {
                let mut v = serde_json::json!({
                    "path": f.path.to_string_lossy(),
                    "length": f.length,
                    "offset": f.offset,
                });
                match &f.kind {
                    FileKind::Regular => {}
                    FileKind::Pad => v["pad"] = true.into(),
                    FileKind::Symlink { target } => v["symlink"] = target.to_string_lossy().into(),
                }
                v
            })
            .collect();
        let v = serde_json::json!({
            "name": t.name,
            "info_hash": t.info_hash.to_hex(),
            "total_length": t.total_length,
            "payload_length": t.payload_length,
            "piece_length": t.piece_length,
            "num_pieces": t.num_pieces(),
            "private": t.private,
            "multi_file": t.multi_file,
            "trackers": t.trackers,
            "web_seeds": t.web_seeds,
            "http_seeds": t.http_seeds,
            "nodes": t.nodes.iter().map(|(h, p)| format!("{h}:{p}")).collect::<Vec<_>>(),
            "comment": t.comment,
            "created_by": t.created_by,
            "creation_date": t.creation_date,
            "files": files,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("name:        {}", t.name);
    println!("info hash:   {}", t.info_hash);
    println!(
        "total size:  {} ({} bytes)",
        BinaryBytes(t.payload_length),
        t.payload_length
    );
    println!(
        "pieces:      {} x {} ({} bytes)",
        t.num_pieces(),
        BinaryBytes(u64::from(t.piece_length)),
        t.piece_length
    );
    println!("private:     {}", if t.private { "yes" } else { "no" });
    if let Some(c) = &t.comment {
        println!("comment:     {c}");
    }
    if let Some(c) = &t.created_by {
        println!("created by:  {c}");
    }
    if let Some(d) = t.creation_date {
        println!("created:     {d} (unix time)");
    }
    if t.trackers.is_empty() {
        println!("trackers:    none");
    }
    for (i, tier) in t.trackers.iter().enumerate() {
        println!("tier {:<7} {}", format!("{}:", i + 1), tier.join(", "));
    }
    for w in &t.web_seeds {
        println!("web seed:    {w}");
    }
    for w in &t.http_seeds {
        println!("http seed:   {w}");
    }
    for (h, p) in &t.nodes {
        println!("dht node:    {h}:{p}");
    }
    let shown: Vec<_> = t.files.iter().filter(|f| !f.is_pad()).collect();
    println!("files:       {}", shown.len());
    for f in shown {
        let extra = match &f.kind {
            FileKind::Symlink { target } => format!(" -> {}", target.display()),
            _ => String::new(),
        };
        println!("  {:>12}  {}{}", f.length, f.path.display(), extra);
    }
    Ok(())
}
