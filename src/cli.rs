//! Command-line flags, the subcommands' glue, and the progress view.

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand};
use indicatif::{BinaryBytes, HumanDuration, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::engine::EngineConfig;
use crate::magnet::{self, Magnet};
use crate::metainfo::{FileKind, Torrent};
use crate::mse::Encryption;
use crate::session::{DhtOptions, Session, SessionConfig};
use crate::torrent::{
    self, AddTorrent, Report, SeedLimits, Snapshot, Source, Stage, Status, TorrentError,
};

/// `println!` for what a command prints on standard output: a reader
/// that went away (`xorrent info x.torrent | head -1`) ends the program
/// quietly with success, as ripgrep does, instead of a panic.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!($($arg)*))
    };
}

mod args;
mod daemon;
mod dht;
mod download;
mod inspect;
mod trackers;
mod view;

pub use args::*;
use download::*;
use inspect::*;
use view::*;

/// Bytes to standard output, a closed pipe being no error (see `out!`).
fn print_raw(bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    match o.write_all(bytes).and_then(|()| o.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

#[doc(hidden)]
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_fmt(args).and_then(|()| o.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "xorrent",
    version,
    about = "A fast BitTorrent client for the command line"
)]
pub struct Cli {
    /// Log filter for diagnostics on stderr (e.g. `info`, `xorrent=debug`),
    /// with timestamps and sources [default: warnings and errors, as plain
    /// messages].
    #[arg(long, global = true, env = "XORRENT_LOG", value_name = "FILTER")]
    pub log: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Download a torrent (a .torrent file or a magnet link): verifies what
    /// is already in the output directory and fetches the rest from
    /// trackers, the DHT and the peers you name.
    Download(DownloadArgs),
    /// Verify a completed download and serve it to other peers.
    Seed(SeedArgs),
    /// Show what a .torrent file contains.
    Info(InfoArgs),
    /// Make a .torrent file from a file or a directory.
    ///
    /// A directory's files go in sorted by path, compared element by
    /// element, each element byte-wise (so `a/z` comes before `a-b`).
    /// Hidden and empty files are included; symlinks, sockets, FIFOs and
    /// devices below PATH are skipped with a warning, never followed (PATH
    /// itself may be a symlink). Prints the info-hash in hex on stdout.
    Create(CreateArgs),
    /// Run a BitTorrent tracker (HTTP and UDP) until Ctrl-C: for a LAN, a
    /// team, or a test swarm. Prints the announce URLs on stderr.
    Tracker(trackers::TrackerArgs),
    /// Ask trackers for a torrent's seeders, leechers and completed
    /// downloads (HTTP BEP-48 or UDP BEP-15 scrape).
    Scrape(trackers::ScrapeArgs),
    /// The mainline DHT on its own: look an info-hash up, or run a node.
    #[command(subcommand)]
    Dht(dht::DhtCommand),
    /// Run the torrent manager: any number of torrents, kept across
    /// restarts, driven from a web page or any Transmission remote.
    Daemon(daemon::DaemonArgs),
    /// Drive a running daemon (add, list, start, stop, remove, info).
    Remote(daemon::RemoteArgs),
    /// Print a shell completion script, e.g.
    /// `xorrent completions bash > ~/.local/share/bash-completion/completions/xorrent`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g.
    /// `xorrent man > ~/.local/share/man/man1/xorrent.1`.
    Man,
}

/// The bar on screen, if any: log lines are printed above it instead of
/// through it.
static ACTIVE_BAR: std::sync::Mutex<Option<ProgressBar>> = std::sync::Mutex::new(None);

fn set_active_bar(b: Option<ProgressBar>) {
    *ACTIVE_BAR.lock().unwrap_or_else(|e| e.into_inner()) = b;
}

/// A `tracing` writer that keeps log lines from tearing the progress bar.
/// Log events as `warning: what happened key=value`, without time,
/// level column or source: what a user sees when no `--log` is given.
pub struct PlainLog;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for PlainLog
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut w: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let tag = match *event.metadata().level() {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warning",
            _ => "note",
        };
        write!(w, "{tag}: ")?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

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
impl Cli {
    /// Checks what clap's attributes cannot say; a usage error (exit 2,
    /// with the usage line) like clap's own.
    pub fn validate(&self) -> Result<(), clap::Error> {
        if let Command::Download(a) = &self.command {
            let limit = match (&a.limits.seed_ratio, &a.limits.seed_time) {
                (Some(_), _) => Some("--seed-ratio"),
                (None, Some(_)) => Some("--seed-time"),
                (None, None) => None,
            };
            if let (Some(flag), false) = (limit, a.seed) {
                let mut cmd = Cli::command();
                cmd.build();
                let sub = cmd.find_subcommand_mut("download").map(|c| c.clone());
                return Err(sub.unwrap_or(cmd).error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    format!("{flag} limits seeding after the download: add --seed"),
                ));
            }
        }
        Ok(())
    }
}

pub async fn run(cli: Cli, cancel: CancellationToken) -> Result<()> {
    match cli.command {
        Command::Download(a) => download(a, cancel).await,
        Command::Seed(a) => seed(a, cancel).await,
        Command::Info(a) => info(a).await,
        Command::Create(a) => create(a, cancel).await,
        Command::Tracker(a) => trackers::tracker(a, cancel).await,
        Command::Scrape(a) => trackers::scrape(a).await,
        Command::Dht(c) => dht::run(c, cancel).await,
        Command::Daemon(a) => daemon::daemon(a, cancel).await,
        Command::Remote(a) => daemon::remote(a).await,
        Command::Completions { shell } => {
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "xorrent", &mut text);
            print_raw(&text)
        }
        Command::Man => {
            let mut text = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut text)?;
            print_raw(&text)
        }
    }
}

/// Bytes as people read them (KiB, MiB, ...).
fn human_bytes(b: u64) -> String {
    BinaryBytes(b).to_string()
}

/// Exit code for an error: 130 after Ctrl-C, 1 otherwise.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    let interrupted = err.chain().any(|c| {
        let torrent = c
            .downcast_ref::<TorrentError>()
            .or_else(|| c.downcast_ref::<ArcError>().map(|a| &*a.0));
        matches!(
            torrent,
            Some(TorrentError::Interrupted { .. } | TorrentError::MetadataInterrupted)
        ) || c.downcast_ref::<Interrupted>().is_some()
    });
    if interrupted {
        130
    } else {
        1
    }
}

/// Some torrents of a multi-torrent run were interrupted.
#[derive(Debug, thiserror::Error)]
#[error("interrupted: {0} of the torrents did not finish; run the same command again to resume")]
struct Interrupted(usize);

/// What `main` prints for an error: its causes on one line, each once
/// (an I/O error's text often repeats in the error that wraps it).
pub fn error_text(e: &anyhow::Error) -> String {
    chain(e.as_ref())
}

/// An error and its causes on one line, each once.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// An `Arc`ed torrent error as an `std::error::Error` with its causes.
#[derive(Debug)]
struct ArcError(Arc<TorrentError>);

impl std::fmt::Display for ArcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ArcError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.0)
    }
}
