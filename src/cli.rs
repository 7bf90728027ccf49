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

mod daemon;
mod dht;
mod trackers;

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

/// Network flags shared by `download` and `seed`.
#[derive(Args, Debug, Clone)]
pub struct NetArgs {
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
    /// Upload cap in bytes/s; K and M suffixes are KiB/s and MiB/s (0: none).
    #[arg(long, default_value = "0", value_parser = parse_rate, value_name = "RATE")]
    pub max_upload_rate: u64,
    /// Download cap in bytes/s; K and M suffixes are KiB/s and MiB/s (0: none).
    #[arg(long, default_value = "0", value_parser = parse_rate, value_name = "RATE")]
    pub max_download_rate: u64,
    /// Seconds a peer may hold our requests without sending data before
    /// they go to other peers.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub request_timeout: u64,
    /// Seconds to wait for a TCP connect and for the handshake.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub connect_timeout: u64,
    /// Seconds to wait for an HTTP tracker, and before re-sending to a
    /// UDP tracker (BEP-15's 15 s).
    #[arg(long, default_value_t = 15, value_name = "SECS")]
    pub tracker_timeout: u64,
    /// Re-sends to a silent UDP tracker, each after twice the last wait
    /// (1: give up after 15 + 30 s).
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=8))]
    pub udp_retries: u32,
    /// Longest time between two saves of a torrent's resume record
    /// (verified pieces; kept under --state-dir).
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub resume_every: u64,
    /// Message stream encryption (MSE/PE) with peers: `prefer` tries it
    /// first and falls back to plaintext, `require` talks to encrypting
    /// peers only (RC4), `disable` speaks plaintext only.
    #[arg(long, value_enum, default_value_t = EncryptionArg::Prefer, env = "XORRENT_ENCRYPTION")]
    pub encryption: EncryptionArg,
    #[command(flatten)]
    pub dht: DhtArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EncryptionArg {
    Prefer,
    Require,
    Disable,
}

impl From<EncryptionArg> for Encryption {
    fn from(a: EncryptionArg) -> Encryption {
        match a {
            EncryptionArg::Prefer => Encryption::Prefer,
            EncryptionArg::Require => Encryption::Require,
            EncryptionArg::Disable => Encryption::Disable,
        }
    }
}

/// DHT flags shared by `download`, `seed` and `dht`.
#[derive(Args, Debug, Clone)]
pub struct DhtArgs {
    /// Do not use the DHT (private torrents never do).
    #[arg(long, env = "XORRENT_NO_DHT", value_parser = clap::builder::FalseyValueParser::new())]
    pub no_dht: bool,
    /// UDP port of the DHT node [default: the peer port].
    #[arg(long, value_name = "N")]
    pub dht_port: Option<u16>,
    /// A node to join the DHT through (repeatable) [default: the public
    /// mainline routers].
    #[arg(long = "dht-bootstrap", value_name = "HOST:PORT")]
    pub dht_bootstrap: Vec<String>,
    /// Where the DHT node id and good nodes are kept between runs
    /// [default: $XDG_STATE_HOME/xorrent, else ~/.local/state/xorrent].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// What users of the mainline DHT bootstrap from.
pub const PUBLIC_ROUTERS: [&str; 4] = [
    "router.bittorrent.com:6881",
    "dht.transmissionbt.com:6881",
    "router.utorrent.com:6881",
    "dht.libtorrent.org:25401",
];

impl DhtArgs {
    pub fn options(&self) -> Option<DhtOptions> {
        if self.no_dht {
            return None;
        }
        let bootstrap = if self.dht_bootstrap.is_empty() {
            PUBLIC_ROUTERS.iter().map(|s| s.to_string()).collect()
        } else {
            self.dht_bootstrap.clone()
        };
        Some(DhtOptions {
            port: self.dht_port,
            bootstrap,
            state_file: self.dir().map(|d| d.join("dht.json")),
        })
    }

    /// `--state-dir`, else the XDG state directory.
    pub fn dir(&self) -> Option<PathBuf> {
        self.state_dir.clone().or_else(|| {
            std::env::var_os("XDG_STATE_HOME")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
                .map(|d| d.join("xorrent"))
        })
    }
}

/// Output flags shared by `download` and `seed`.
#[derive(Args, Debug, Clone)]
pub struct ViewArgs {
    /// Print only errors.
    #[arg(short, long)]
    pub quiet: bool,
    /// Write a JSON summary (bytes per peer, resumed, fetched and uploaded
    /// bytes) here when done.
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
    /// Seconds between status lines when stderr is not a terminal.
    #[arg(long, default_value_t = 5, value_name = "SECS")]
    pub status_interval: u64,
}

/// When seeding stops by itself.
#[derive(Args, Debug, Clone)]
pub struct SeedLimitArgs {
    /// Stop seeding once uploaded bytes reach R times the torrent's size.
    #[arg(long, value_name = "R")]
    pub seed_ratio: Option<f64>,
    /// Stop seeding after this long (e.g. 90s, 30m, 2h, 1h30m).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub seed_time: Option<Duration>,
}

#[derive(Args, Debug)]
pub struct DownloadArgs {
    /// The .torrent file, or a magnet link ("magnet:?xt=urn:btih:...").
    /// Several run together in one session (one port, one DHT node).
    #[arg(value_name = "FILE.torrent|MAGNET", required = true)]
    pub torrents: Vec<String>,
    /// Hash all data on disk, even where the resume record vouches for it.
    #[arg(long)]
    pub recheck: bool,
    /// Write over existing files that match no piece of the torrent (by
    /// default the download stops rather than replace a file xorrent did
    /// not write).
    #[arg(long)]
    pub overwrite: bool,
    /// Ignore the torrent's web seeds (BEP-19 `url-list`, a magnet's `ws=`).
    #[arg(long)]
    pub no_web_seeds: bool,
    /// Also write the torrent's metainfo here (for a magnet: once fetched).
    #[arg(long, value_name = "FILE")]
    pub save_torrent: Option<PathBuf>,
    /// Directory to save into (the torrent's files go below it).
    #[arg(short, long, default_value = ".")]
    pub output: PathBuf,
    /// Download only these files: 0-based indexes as `xorrent info` lists
    /// them, with ranges (`0,2,4-6`). Pad files count in the numbering
    /// (BEP-53, like a magnet's `so=`, which this overrides). Files that
    /// no wanted piece touches are not created.
    #[arg(long, value_name = "INDEXES", value_parser = parse_select)]
    pub select: Option<FileSelect>,
    /// Keep seeding after the download completes (until Ctrl-C or a limit).
    #[arg(long)]
    pub seed: bool,
    #[command(flatten)]
    pub limits: SeedLimitArgs,
    #[command(flatten)]
    pub net: NetArgs,
    #[command(flatten)]
    pub view: ViewArgs,
}

#[derive(Args, Debug)]
pub struct SeedArgs {
    /// The .torrent file.
    pub torrent: PathBuf,
    /// Directory holding the content as `download -o PATH` writes it
    /// (PATH/NAME), or the content file or directory itself.
    pub path: PathBuf,
    /// Hash all data, even where the resume record vouches for it.
    #[arg(long)]
    pub recheck: bool,
    #[command(flatten)]
    pub limits: SeedLimitArgs,
    #[command(flatten)]
    pub net: NetArgs,
    #[command(flatten)]
    pub view: ViewArgs,
}

/// `--select`'s file indexes (a newtype, so clap takes one value).
#[derive(Debug, Clone)]
pub struct FileSelect(Vec<std::ops::RangeInclusive<u32>>);

fn parse_select(s: &str) -> Result<FileSelect, String> {
    let ranges = magnet::parse_file_indexes(s)?;
    if ranges.is_empty() {
        return Err("no file index given (try 0,2,4-6)".into());
    }
    Ok(FileSelect(ranges))
}

/// Bytes/s with an optional K/M/G suffix, `B`/`iB` optional (binary
/// units either way, as aria2 reads them), `/s` optional.
fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim().trim_end_matches("/s").trim_end_matches("/S");
    let lower = t.to_ascii_lowercase();
    let (num, mult) = [
        ("gib", 1u64 << 30),
        ("mib", 1 << 20),
        ("kib", 1 << 10),
        ("gb", 1 << 30),
        ("mb", 1 << 20),
        ("kb", 1 << 10),
        ("g", 1 << 30),
        ("m", 1 << 20),
        ("k", 1 << 10),
        ("b", 1),
    ]
    .iter()
    .find_map(|(suf, m)| lower.strip_suffix(suf).map(|n| (n.trim().to_string(), *m)))
    .unwrap_or((lower.clone(), 1));
    let v: f64 = num
        .parse()
        .map_err(|_| format!("not a rate: {s:?} (try 20M or 512K)"))?;
    if !(0.0..=1e15).contains(&v) {
        return Err(format!("rate out of range: {s:?}"));
    }
    Ok((v * mult as f64) as u64)
}

/// `90`, `90s`, `30m`, `2h`, `1h30m`, `1d`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("not a duration: {s:?} (try 90s, 30m or 2h)");
    if let Ok(secs) = s.trim().parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(err()),
        };
        let n: u64 = num.parse().map_err(|_| err())?;
        total = total
            .checked_add(n.checked_mul(unit).ok_or_else(err)?)
            .ok_or_else(err)?;
        num.clear();
    }
    if !num.is_empty() {
        return Err(err());
    }
    Ok(Duration::from_secs(total))
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// The .torrent file, an http(s) URL of one, or `-` for standard input.
    #[arg(value_name = "FILE.torrent|URL|-")]
    pub torrent: String,
    /// Print JSON instead of text.
    #[arg(long, conflicts_with = "magnet")]
    pub json: bool,
    /// Print only the torrent's magnet link.
    #[arg(long)]
    pub magnet: bool,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The file or directory to share.
    pub path: PathBuf,
    /// Where to write the .torrent [default: NAME.torrent in the current
    /// directory].
    #[arg(short, long, value_name = "FILE.torrent")]
    pub output: Option<PathBuf>,
    /// Tracker announce URL (repeatable). Each -t is its own tier (BEP-12);
    /// URLs joined by the tier separator in one -t share a tier:
    /// -t "udp://a:80,udp://b:80".
    #[arg(short = 't', long = "tracker", value_name = "URL")]
    pub trackers: Vec<String>,
    /// Separator between URLs of one tier inside a -t value.
    #[arg(long, default_value = ",", value_name = "SEP")]
    pub tier_sep: String,
    /// `auto` (the smallest power of two giving at most 2500 pieces,
    /// 16 KiB to 16 MiB) or a power of two from 16 KiB to 16 MiB: 262144,
    /// 256K, 256KiB, 1M, 1MiB (K = KiB = 1024).
    #[arg(short = 'l', long, default_value = "auto", value_name = "auto|SIZE")]
    pub piece_length: crate::metainfo::create::PieceLength,
    /// Mark the torrent private (BEP-27: trackers only, no DHT or PEX).
    #[arg(short, long)]
    pub private: bool,
    /// A comment stored in the torrent.
    #[arg(short, long, value_name = "TEXT")]
    pub comment: Option<String>,
    /// A web seed URL (BEP-19 `url-list`; repeatable).
    #[arg(short = 'w', long = "web-seed", value_name = "URL")]
    pub web_seeds: Vec<String>,
    /// `source` in the info dictionary (changes the info-hash; private
    /// trackers use it for cross-seeding).
    #[arg(short, long, value_name = "TEXT")]
    pub source: Option<String>,
    /// The torrent's name [default: the last element of PATH].
    #[arg(short, long)]
    pub name: Option<String>,
    /// Leave out `creation date` (identical input gives identical files).
    #[arg(long)]
    pub no_creation_date: bool,
    /// Also print the magnet link.
    #[arg(short, long)]
    pub magnet: bool,
    /// Overwrite the output file if it exists.
    #[arg(short, long)]
    pub force: bool,
    /// Print only errors (and the results on stdout): no progress bar, no
    /// warnings.
    #[arg(short, long)]
    pub quiet: bool,
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

/// Session-wide settings from the flags.
fn session_config(n: &NetArgs, connect_when_complete: bool) -> SessionConfig {
    let engine = EngineConfig {
        max_peers: n.max_peers.into(),
        request_timeout: Duration::from_secs(n.request_timeout.max(1)),
        connect_timeout: Duration::from_secs(n.connect_timeout.max(1)),
        handshake_timeout: Duration::from_secs(n.connect_timeout.max(1)),
        connect_when_complete,
        encryption: n.encryption.into(),
        ..EngineConfig::default()
    };
    SessionConfig {
        port: n.port,
        bind: n.bind,
        dht: n.dht.options(),
        // One torrent: its caps are the process's. Several: each cap
        // holds for the whole session.
        max_upload_rate: n.max_upload_rate,
        max_download_rate: n.max_download_rate,
        max_peers: (usize::from(n.max_peers) * 4).max(200),
        engine,
        numwant: n.numwant,
        tracker_timeout: Duration::from_secs(n.tracker_timeout.max(1)),
        udp_retries: n.udp_retries,
        state_dir: n.dht.dir(),
        resume_every: Duration::from_secs(n.resume_every.max(1)),
        ..SessionConfig::default()
    }
}

fn seed_limits(l: &SeedLimitArgs) -> SeedLimits {
    SeedLimits {
        ratio: l.seed_ratio,
        time: l.seed_time,
    }
}

fn is_url(arg: &str) -> bool {
    let lower = arg.get(..8).unwrap_or(arg).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

async fn source_of(arg: &str) -> Result<Source> {
    Ok(if magnet::is_magnet(arg) {
        let m = Magnet::parse(arg).context("not a usable magnet link")?;
        Source::Magnet(Box::new(m))
    } else if is_url(arg) {
        Source::Bytes(fetch_url(arg).await?)
    } else {
        Source::File(PathBuf::from(arg))
    })
}

async fn fetch_url(url: &str) -> Result<Vec<u8>> {
    crate::rpc::methods::fetch_torrent(url)
        .await
        .map_err(anyhow::Error::msg)
}

async fn download(a: DownloadArgs, cancel: CancellationToken) -> Result<()> {
    let mut adds = Vec::new();
    for arg in &a.torrents {
        let source = source_of(arg).await?;
        let select = match (&a.select, &source) {
            (Some(FileSelect(r)), _) => Some(r.clone()),
            (None, Source::Magnet(m)) => m.select_only.clone(),
            _ => None,
        };
        let mut add = AddTorrent::new(source, a.output.clone());
        add.select = select;
        add.seed = a.seed.then(|| seed_limits(&a.limits));
        add.save_torrent = a.save_torrent.clone().filter(|_| a.torrents.len() == 1);
        add.peers = a.net.peers.clone();
        add.recheck = a.recheck;
        add.overwrite = a.overwrite;
        add.web_seeds = !a.no_web_seeds;
        adds.push((arg.clone(), add));
    }
    if a.save_torrent.is_some() && a.torrents.len() > 1 {
        anyhow::bail!("--save-torrent names one file: give it with a single torrent");
    }
    let session = Session::start(session_config(&a.net, a.seed), &cancel).await?;
    let mut handles = Vec::new();
    for (arg, add) in adds {
        match session.add(add).await {
            Ok(h) => handles.push((arg, h)),
            Err(crate::session::AddError::Duplicate(_)) => {
                eprintln!("note: {arg} is the same torrent as an earlier argument; added once");
            }
            Err(e) => {
                session.shutdown().await;
                return Err(e).with_context(|| format!("cannot add {arg}"));
            }
        }
    }
    let view = View::start(
        handles.iter().map(|(_, h)| h.status()).collect(),
        a.view.quiet,
        Duration::from_secs(a.view.status_interval.max(1)),
        session.clone(),
    );
    let mut results = Vec::new();
    for (arg, h) in &handles {
        results.push((arg.clone(), h.wait().await));
    }
    session.shutdown().await;
    view.finish().await;
    finish_all(results, &a.view, &view, "done")
}

/// Reports every torrent's outcome; the error names those that failed.
fn finish_all(
    results: Vec<(String, Result<Report, Arc<TorrentError>>)>,
    v: &ViewArgs,
    view: &View,
    what: &str,
) -> Result<()> {
    if results.len() == 1 {
        let (arg, r) = results.into_iter().next().expect("one");
        let report = r
            .map_err(|e| anyhow::Error::new(ArcError(e)))
            .with_context(|| {
                format!(
                    "{} of {arg} failed",
                    if what == "done" {
                        "download"
                    } else {
                        "seeding"
                    }
                )
            })?;
        write_summary(std::slice::from_ref(&report), v, view)?;
        print_report(&report, v, view, what);
        return Ok(());
    }
    let mut ok = Vec::new();
    let (mut failed, mut interrupted) = (Vec::new(), 0);
    for (arg, r) in results {
        match r {
            Ok(report) => {
                print_report(&report, v, view, what);
                ok.push(report);
            }
            Err(e) => {
                if matches!(
                    *e,
                    TorrentError::Interrupted { .. } | TorrentError::MetadataInterrupted
                ) {
                    interrupted += 1;
                }
                eprintln!("error: {arg}: {}", chain(&*e));
                failed.push(arg);
            }
        }
    }
    write_summary(&ok, v, view)?;
    if failed.is_empty() {
        return Ok(());
    }
    if interrupted == failed.len() {
        return Err(Interrupted(interrupted).into());
    }
    anyhow::bail!(
        "{} of {} torrents failed: {}",
        failed.len(),
        failed.len() + ok.len(),
        failed.join(", ")
    )
}

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

async fn seed(a: SeedArgs, cancel: CancellationToken) -> Result<()> {
    let loaded = crate::metainfo::Torrent::from_file(&a.torrent)
        .with_context(|| format!("seeding {} failed", a.torrent.display()))?;
    let (root, t) = torrent::locate_content(loaded, &a.path)
        .map_err(anyhow::Error::new)
        .with_context(|| format!("seeding {} failed", a.torrent.display()))?;
    let mut add = AddTorrent::new(Source::Parsed(Box::new(t)), root);
    add.seed = Some(seed_limits(&a.limits));
    add.seed_only = true;
    add.peers = a.net.peers.clone();
    add.recheck = a.recheck;
    let session = Session::start(session_config(&a.net, true), &cancel).await?;
    let h = session.add(add).await?;
    let view = View::start(
        vec![h.status()],
        a.view.quiet,
        Duration::from_secs(a.view.status_interval.max(1)),
        session.clone(),
    );
    let result = h.wait().await;
    session.shutdown().await;
    view.finish().await;
    let report = match result {
        // Ctrl-C during the check is how seeding normally ends.
        Err(e) if matches!(*e, TorrentError::Interrupted { .. }) => return Ok(()),
        r => r
            .map_err(|e| anyhow::Error::new(ArcError(e)))
            .with_context(|| format!("seeding {} failed", a.torrent.display()))?,
    };
    write_summary(std::slice::from_ref(&report), &a.view, &view)?;
    print_report(&report, &a.view, &view, "seeded");
    Ok(())
}

fn report_json(report: &Report, view: &View) -> serde_json::Value {
    serde_json::json!({
        "name": report.name,
        "info_hash": report.info_hash,
        "total_bytes": report.total_bytes,
        "torrent_bytes": report.torrent_bytes,
        "downloaded": report.downloaded,
        "resumed": report.resumed,
        "received": report.received,
        "wasted": report.wasted,
        "uploaded": report.uploaded,
        "completed_after_secs": report.completed_after,
        "hash_failures": report.hash_failures,
        "elapsed_secs": view.elapsed().as_secs_f64(),
        "read_bytes": read_bytes(),
        "check": report.check.map(|c| serde_json::json!({
            "fast_resume": c.fast, "pieces_hashed": c.hashed, "secs": c.secs,
        })),
        "peers": report.peers.iter().map(|c| serde_json::json!({
            "addr": c.addr.to_string(), "bytes": c.bytes, "encrypted": c.encrypted,
        })).collect::<Vec<_>>(),
        "banned": report.banned.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
    })
}

/// One torrent: its summary object; several: `{"torrents": [...]}`.
fn write_summary(reports: &[Report], v: &ViewArgs, view: &View) -> Result<()> {
    let Some(path) = &v.summary_json else {
        return Ok(());
    };
    let j = match reports {
        [one] => report_json(one, view),
        many => serde_json::json!({
            "torrents": many.iter().map(|r| report_json(r, view)).collect::<Vec<_>>(),
            "elapsed_secs": view.elapsed().as_secs_f64(),
            "read_bytes": read_bytes(),
        }),
    };
    std::fs::write(path, serde_json::to_string_pretty(&j)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Bytes this process read through read(2) and friends (`rchar`).
fn read_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
}

fn print_report(report: &Report, v: &ViewArgs, view: &View, what: &str) {
    if v.quiet {
        return;
    }
    if what == "seeded" {
        let ratio = report.uploaded as f64 / report.total_bytes.max(1) as f64;
        eprintln!(
            "seeded: {} ({}) for {}: {} uploaded, ratio {ratio:.2}",
            report.name,
            BinaryBytes(report.total_bytes),
            HumanDuration(view.elapsed()),
            BinaryBytes(report.uploaded),
        );
    } else {
        eprintln!(
            "{what}: {} ({}) in {}: {} fetched, {} already present, {} uploaded",
            report.name,
            BinaryBytes(report.total_bytes),
            HumanDuration(view.elapsed()),
            BinaryBytes(report.downloaded),
            BinaryBytes(report.resumed),
            BinaryBytes(report.uploaded),
        );
    }
}

/// The progress display: indicatif bars on a terminal, plain status lines
/// otherwise, nothing with `--quiet`. It reads only [`Status`] snapshots.
struct View {
    task: Option<tokio::task::JoinHandle<()>>,
    stop: CancellationToken,
    started: Instant,
}

impl View {
    fn start(
        statuses: Vec<Arc<Status>>,
        quiet: bool,
        interval: Duration,
        session: Session,
    ) -> View {
        let stop = CancellationToken::new();
        let listen = match session.config().bind {
            Some(ip) => SocketAddr::new(ip, session.listen_port()).to_string(),
            None => format!("port {}", session.listen_port()),
        };
        let task = (!quiet).then(|| {
            let s = stop.clone();
            tokio::spawn(async move {
                if std::io::stderr().is_terminal() {
                    bars(statuses, s, listen).await
                } else {
                    lines(statuses, s, interval, listen).await
                }
            })
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

    async fn finish(&self) {
        self.stop.cancel();
        if let Some(t) = &self.task {
            while !t.is_finished() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

fn peers_text(s: &Snapshot) -> String {
    if s.web_seeds > 0 {
        let swarm = swarm_text(s).map(|t| format!(" {t}")).unwrap_or_default();
        return format!("{}{swarm}", peers_count(s));
    }
    match s.swarm {
        Some((seeds, leeches)) => format!(
            "peers {}/{} (swarm {seeds} seeds, {leeches} leechers)",
            s.connected, s.known
        ),
        None => format!("peers {}/{}", s.connected, s.known),
    }
}

fn metadata_text(s: &Snapshot) -> String {
    let (got, size) = s.metadata.unwrap_or_default();
    let progress = if size > 0 {
        format!("{}/{}", BinaryBytes(got), BinaryBytes(size))
    } else {
        "size not known yet".into()
    };
    format!(
        "fetching metadata for {}: {progress}, {}",
        s.name,
        peers_text(s)
    )
}

/// One torrent's bars: metadata, check, then transfer.
#[derive(Default)]
struct Bars {
    meta: Option<ProgressBar>,
    check: Option<ProgressBar>,
    dl: Option<ProgressBar>,
    /// The transfer bar shows the seeding style.
    seeding: bool,
}

struct Styles {
    check: ProgressStyle,
    dl: ProgressStyle,
    /// A spinner and a message: metadata, seeding.
    text: ProgressStyle,
    /// Columns the prefix takes (several torrents: the name).
    prefix: usize,
    /// Where peers reach us, for the seeding line.
    listen: String,
}

/// The narrowest a bar is drawn; the message gives way first.
const MIN_BAR: usize = 12;

impl Styles {
    fn new(multi: bool, listen: String) -> Styles {
        let p = if multi { "{prefix:12!} " } else { "" };
        let style = |t: &str| {
            ProgressStyle::with_template(&format!("{p}{t}"))
                .expect("valid template")
                .progress_chars("=> ")
        };
        Styles {
            check: style("checking {wide_bar:.yellow/white} {msg}"),
            dl: style("{spinner:.green} {wide_bar:.cyan/blue} {msg}"),
            text: style("{spinner:.green} {msg}"),
            prefix: if multi { 13 } else { 0 },
            listen,
        }
    }

    /// Columns left for the message after the prefix and `fixed` more.
    fn room(&self, fixed: usize) -> usize {
        term_width().saturating_sub(self.prefix + fixed + 1)
    }
}

/// Columns of the terminal stderr is on (80 when it cannot be told).
fn term_width() -> usize {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ only writes the winsize it is given.
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 {
        usize::from(ws.ws_col)
    } else {
        80
    }
}

/// `fields` (rank, text) joined by spaces in their order, dropping the
/// least important (highest rank) until the line fits `width` columns.
fn fit(fields: &[(u8, String)], width: usize) -> String {
    let mut keep = vec![true; fields.len()];
    let len = |keep: &[bool]| {
        let kept = fields.iter().zip(keep).filter(|(_, k)| **k);
        kept.map(|(f, _)| f.1.chars().count() + 1).sum::<usize>()
    };
    let mut order: Vec<usize> = (0..fields.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(fields[i].0));
    for i in order {
        if len(&keep) <= width + 1 {
            break;
        }
        keep[i] = false;
    }
    let kept: Vec<&str> = fields
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(f, _)| f.1.as_str())
        .collect();
    kept.join(" ")
}

/// `42s`, `3m05s`, `2h07m`, `3d04h`.
fn short_duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86400, secs % 86400 / 3600),
    }
}

/// Time left at this run's rate; unknown while nothing arrives.
fn eta_text(s: &Snapshot) -> String {
    match s.eta() {
        Some(secs) => format!("ETA {}", short_duration(secs)),
        None => "ETA unknown".into(),
    }
}

fn swarm_text(s: &Snapshot) -> Option<String> {
    s.swarm
        .map(|(seeds, leeches)| format!("(swarm {seeds} seeds, {leeches} leechers)"))
}

/// `peers 3/40`, with `+ 2 web seeds` when there are any.
fn peers_count(s: &Snapshot) -> String {
    if s.web_seeds > 0 {
        format!(
            "peers {}/{} + {} web seeds",
            s.connected, s.known, s.web_seeds
        )
    } else {
        format!("peers {}/{}", s.connected, s.known)
    }
}

/// The transfer line's fields, most important first in rank. Rates are
/// this run's, so resumed data never inflates them.
fn download_fields(s: &Snapshot) -> Vec<(u8, String)> {
    let mut f = vec![
        (
            0,
            format!("{:>3.0}%", pct(s.have_bytes, s.total_bytes).floor()),
        ),
        (
            4,
            format!(
                "{}/{}",
                BinaryBytes(s.have_bytes),
                BinaryBytes(s.total_bytes)
            ),
        ),
        (1, format!("↓ {}/s", BinaryBytes(s.down_rate))),
        (2, eta_text(s)),
        (3, peers_count(s)),
    ];
    if s.up_rate > 0 {
        f.push((5, format!("↑ {}/s", BinaryBytes(s.up_rate))));
    }
    if let Some(t) = swarm_text(s) {
        f.push((6, t));
    }
    f
}

fn seeding_fields(s: &Snapshot, listen: &str) -> Vec<(u8, String)> {
    let mut f = vec![
        (0, "seeding".to_string()),
        (1, format!("↑ {}/s", BinaryBytes(s.up_rate))),
        (2, format!("ratio {:.2}", s.ratio())),
        (3, format!("{} uploaded", BinaryBytes(s.uploaded))),
        (4, format!("peers {}/{}", s.connected, s.known)),
        (5, format!("listening on {listen}")),
    ];
    if let Some(t) = swarm_text(s) {
        f.push((6, t));
    }
    f
}

impl Bars {
    fn update(&mut self, s: &Snapshot, st: &Styles, multi: &indicatif::MultiProgress) {
        let add = |len: Option<u64>, style: &ProgressStyle| {
            let b = multi.add(ProgressBar::new(len.unwrap_or(0)));
            if len.is_none() {
                b.set_length(0);
            }
            b.set_style(style.clone());
            b.set_prefix(s.name.clone());
            b
        };
        match s.stage {
            Stage::Loading => {}
            Stage::Metadata => {
                let b = self.meta.get_or_insert_with(|| {
                    let b = add(None, &st.text);
                    b.enable_steady_tick(Duration::from_millis(120));
                    b
                });
                let text = metadata_text(s);
                b.set_message(text.chars().take(st.room(2)).collect::<String>());
            }
            Stage::Checking => {
                if let Some(m) = self.meta.take() {
                    m.finish_and_clear();
                }
                let b = self
                    .check
                    .get_or_insert_with(|| add(Some(s.check_total), &st.check));
                b.set_length(s.check_total);
                b.set_position(s.check_done);
                let fields = [
                    (
                        0,
                        format!("{:>3.0}%", pct(s.check_done, s.check_total).floor()),
                    ),
                    (
                        1,
                        format!(
                            "{}/{}",
                            BinaryBytes(s.check_done),
                            BinaryBytes(s.check_total)
                        ),
                    ),
                ];
                b.set_message(fit(&fields, st.room(9 + 1 + MIN_BAR)));
            }
            _ => {
                if let Some(m) = self.meta.take() {
                    m.finish_and_clear();
                }
                if let Some(c) = self.check.take() {
                    c.set_position(s.check_total);
                    c.finish();
                }
                let b = self
                    .dl
                    .get_or_insert_with(|| add(Some(s.total_bytes), &st.dl));
                b.set_prefix(s.name.clone());
                b.set_length(s.total_bytes);
                b.set_position(s.have_bytes);
                let seeding = s.stage == Stage::Seeding;
                if seeding != self.seeding {
                    self.seeding = seeding;
                    b.set_style(if seeding { &st.text } else { &st.dl }.clone());
                }
                let msg = match s.stage {
                    Stage::Seeding => fit(&seeding_fields(s, &st.listen), st.room(2)),
                    Stage::Paused => "paused".into(),
                    Stage::Failed => "failed".into(),
                    Stage::Done => "done".into(),
                    _ => fit(&download_fields(s), st.room(2 + 1 + MIN_BAR)),
                };
                b.set_message(msg);
            }
        }
    }

    fn abandon(&mut self) {
        for b in [self.meta.take(), self.check.take(), self.dl.take()]
            .into_iter()
            .flatten()
        {
            b.abandon();
        }
    }
}

async fn bars(statuses: Vec<Arc<Status>>, stop: CancellationToken, listen: String) {
    let many = statuses.len() > 1;
    let styles = Styles::new(many, listen);
    let multi = indicatif::MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let mut bars: Vec<Bars> = statuses.iter().map(|_| Bars::default()).collect();
    let total = many.then(|| {
        let b = multi.add(ProgressBar::new(0));
        b.set_style(ProgressStyle::with_template("{msg}").expect("valid template"));
        b
    });
    // Log lines go above the bars rather than through them.
    let anchor = multi.add(ProgressBar::hidden());
    set_active_bar(Some(anchor.clone()));
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        let stopping = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tick.tick() => false,
        };
        let snaps: Vec<Snapshot> = statuses.iter().map(|s| s.snapshot()).collect();
        for (b, s) in bars.iter_mut().zip(&snaps) {
            b.update(s, &styles, &multi);
        }
        if let Some(t) = &total {
            t.set_message(total_text(&snaps));
        }
        if stopping {
            set_active_bar(None);
            bars.iter_mut().for_each(Bars::abandon);
            if let Some(t) = total {
                t.abandon();
            }
            // Dropping them draws them a last time, with the cursor left
            // at the end of the last: what follows starts a line of its own.
            drop(bars);
            drop(anchor);
            drop(multi);
            eprintln!();
            return;
        }
    }
}

/// The total line of a multi-torrent run.
fn total_text(snaps: &[Snapshot]) -> String {
    let count = |st: Stage| snaps.iter().filter(|s| s.stage == st).count();
    let (have, total): (u64, u64) = snaps
        .iter()
        .fold((0, 0), |(h, t), s| (h + s.have_bytes, t + s.total_bytes));
    let (down, up): (u64, u64) = snaps
        .iter()
        .fold((0, 0), |(d, u), s| (d + s.down_rate, u + s.up_rate));
    let peers: usize = snaps.iter().map(|s| s.connected).sum();
    format!(
        "total: {} torrents ({} downloading, {} seeding, {} done, {} failed) {}/{} down {}/s up {}/s peers {peers}",
        snaps.len(),
        count(Stage::Downloading) + count(Stage::Metadata) + count(Stage::Checking),
        count(Stage::Seeding),
        count(Stage::Done),
        count(Stage::Failed),
        BinaryBytes(have),
        BinaryBytes(total),
        BinaryBytes(down),
        BinaryBytes(up),
    )
}

/// A status line; `named` puts the torrent's name in (several torrents).
fn line_for(s: &Snapshot, named: bool, listen: &str) -> Option<String> {
    let name = if named {
        format!(" {}", s.name)
    } else {
        String::new()
    };
    Some(match s.stage {
        Stage::Loading => return None,
        Stage::Metadata => metadata_text(s),
        Stage::Seeding => format!(
            "seeding{name}: ↑ {}/s, ratio {:.2}, {} uploaded, {}, listening on {listen}",
            BinaryBytes(s.up_rate),
            s.ratio(),
            BinaryBytes(s.uploaded),
            peers_text(s)
        ),
        Stage::Checking => format!(
            "checking{name}: {:.1}% of {}",
            pct(s.check_done, s.check_total),
            BinaryBytes(s.check_total)
        ),
        Stage::Paused => format!("paused{name}"),
        Stage::Failed | Stage::Done => return None,
        Stage::Downloading | Stage::Finishing => format!(
            "downloading{name}: {:.1}% {}/{} {}/s {} {}",
            pct(s.have_bytes, s.total_bytes),
            BinaryBytes(s.have_bytes),
            BinaryBytes(s.total_bytes),
            BinaryBytes(s.down_rate),
            eta_text(s),
            peers_text(s)
        ),
    })
}

async fn lines(
    statuses: Vec<Arc<Status>>,
    stop: CancellationToken,
    interval: Duration,
    listen: String,
) {
    let started = Instant::now();
    let mut all_seeding_said = false;
    let mut tick = tokio::time::interval(interval);
    let mut fast = tokio::time::interval(Duration::from_millis(100));
    tick.tick().await;
    loop {
        // The quick look only until "seeding all" is said: an idle
        // process with many torrents wakes once per interval.
        let watching = !all_seeding_said && statuses.len() > 1;
        let due = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => true,
            _ = fast.tick(), if watching => false,
        };
        let snaps: Vec<Snapshot> = statuses.iter().map(|s| s.snapshot()).collect();
        // Said once, as soon as it holds: scripts wait for it.
        if !all_seeding_said && snaps.len() > 1 && snaps.iter().all(|s| s.stage == Stage::Seeding) {
            all_seeding_said = true;
            eprintln!(
                "seeding all {} torrents (ready after {:.2}s)",
                snaps.len(),
                started.elapsed().as_secs_f64()
            );
        }
        if !due {
            continue;
        }
        if snaps.len() > 1 {
            // A line each while they fit on a screen, then the total.
            if snaps.len() <= 10 {
                snaps
                    .iter()
                    .filter_map(|s| line_for(s, true, &listen))
                    .for_each(|l| eprintln!("{l}"));
            }
            eprintln!("{}", total_text(&snaps));
            continue;
        }
        if let Some(l) = snaps.first().and_then(|s| line_for(s, false, &listen)) {
            eprintln!("{l}");
        }
    }
}

fn pct(a: u64, b: u64) -> f64 {
    if b == 0 {
        100.0
    } else {
        a as f64 * 100.0 / b as f64
    }
}

async fn info(a: InfoArgs) -> Result<()> {
    let t = if a.torrent == "-" {
        use std::io::Read;
        let mut data = Vec::new();
        std::io::stdin()
            .lock()
            .take(crate::metainfo::MAX_TORRENT_FILE + 1)
            .read_to_end(&mut data)
            .context("cannot read standard input")?;
        if data.len() as u64 > crate::metainfo::MAX_TORRENT_FILE {
            anyhow::bail!("standard input holds more than a torrent file can be");
        }
        Torrent::from_bytes(&data).context("cannot load the torrent on standard input")
    } else if is_url(&a.torrent) {
        let data = fetch_url(&a.torrent).await?;
        Torrent::from_bytes(&data).with_context(|| format!("cannot load {}", a.torrent))
    } else {
        Torrent::from_file(std::path::Path::new(&a.torrent))
            .with_context(|| format!("cannot load {}", a.torrent))
    }?;
    if a.magnet {
        out!("{}", Magnet::from_torrent(&t));
        return Ok(());
    }
    if a.json {
        let files: Vec<serde_json::Value> = t
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let mut v = serde_json::json!({
                    "index": i,
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
            "magnet": Magnet::from_torrent(&t).to_string(),
            "files": files,
        });
        out!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    out!("name:        {}", t.name);
    out!("info hash:   {}", t.info_hash);
    out!(
        "total size:  {} ({} bytes)",
        BinaryBytes(t.payload_length),
        t.payload_length
    );
    out!(
        "pieces:      {} x {} ({} bytes)",
        t.num_pieces(),
        BinaryBytes(u64::from(t.piece_length)),
        t.piece_length
    );
    out!("private:     {}", if t.private { "yes" } else { "no" });
    if let Some(c) = &t.comment {
        out!("comment:     {c}");
    }
    if let Some(c) = &t.created_by {
        out!("created by:  {c}");
    }
    if let Some(d) = t.creation_date {
        out!("created:     {d} (unix time)");
    }
    if t.trackers.is_empty() {
        out!("trackers:    none");
    }
    for (i, tier) in t.trackers.iter().enumerate() {
        out!("tier {:<7} {}", format!("{}:", i + 1), tier.join(", "));
    }
    for w in &t.web_seeds {
        out!("web seed:    {w}");
    }
    for w in &t.http_seeds {
        out!("http seed:   {w}");
    }
    for (h, p) in &t.nodes {
        out!("dht node:    {h}:{p}");
    }
    // Pad files are hidden but keep their index, so the numbers shown are
    // the ones --select and a magnet's so= use.
    let shown: Vec<_> = t
        .files
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.is_pad())
        .collect();
    out!("files:       {}", shown.len());
    for (i, f) in shown {
        let extra = match &f.kind {
            FileKind::Symlink { target } => format!(" -> {}", target.display()),
            _ => String::new(),
        };
        out!("  {i:>5}  {:>12}  {}{}", f.length, f.path.display(), extra);
    }
    Ok(())
}

async fn create(a: CreateArgs, cancel: CancellationToken) -> Result<()> {
    use crate::metainfo::create::{self as mk, CreateOptions};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let mut opts = CreateOptions {
        name: a.name.clone(),
        piece_length: a.piece_length,
        trackers: mk::parse_tiers(&a.trackers, &a.tier_sep)?,
        web_seeds: a.web_seeds.clone(),
        private: a.private,
        comment: a.comment.clone(),
        source: a.source.clone(),
        creation_date: (!a.no_creation_date).then(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        }),
        threads: 0,
        exclude: Vec::new(),
    };
    let name = mk::torrent_name(&a.path, opts.name.as_deref())?;
    let output = a
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{name}.torrent")));
    if !a.force && output.symlink_metadata().is_ok() {
        anyhow::bail!(
            "{} already exists (use --force to overwrite it)",
            output.display()
        );
    }
    opts.exclude.push(output.clone());

    let (path, scan_opts) = (a.path.clone(), opts.clone());
    let layout = tokio::task::spawn_blocking(move || mk::scan(&path, &scan_opts))
        .await?
        .with_context(|| format!("cannot make a torrent of {}", a.path.display()))?;
    if !a.quiet {
        for w in &layout.warnings {
            eprintln!("warning: {w}");
        }
    }
    let total = layout.total;
    let progress = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (p, s) = (progress.clone(), stop.clone());
    let mut job = tokio::task::spawn_blocking(move || layout.hash(&opts, &p, &s));
    let bar = (!a.quiet && std::io::stderr().is_terminal()).then(|| {
        let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        b.set_style(
            ProgressStyle::with_template(
                "hashing {bar:30.cyan/blue} {percent:>3}% {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        set_active_bar(Some(b.clone()));
        b
    });
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let result = loop {
        tokio::select! {
            r = &mut job => break r,
            _ = cancel.cancelled(), if !stop.load(Ordering::Relaxed) => {
                stop.store(true, Ordering::Relaxed);
            }
            _ = tick.tick() => {
                if let Some(b) = &bar {
                    b.set_position(progress.load(Ordering::Relaxed));
                }
            }
        }
    };
    if let Some(b) = bar {
        set_active_bar(None);
        b.set_position(progress.load(Ordering::Relaxed));
        b.finish_and_clear();
    }
    let created =
        result?.with_context(|| format!("cannot make a torrent of {}", a.path.display()))?;

    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut o = std::fs::OpenOptions::new();
        o.write(true);
        if a.force {
            o.create(true).truncate(true);
        } else {
            // Refuse a file that appeared while we were hashing.
            o.create_new(true);
        }
        let mut f = o.open(&output)?;
        f.write_all(&created.bytes)?;
        f.sync_all()
    };
    write().with_context(|| format!("cannot write {}", output.display()))?;
    out!("{}", created.info_hash);
    if a.magnet {
        out!("{}", Magnet::from_torrent(&created.torrent));
    }
    if !a.quiet {
        eprintln!(
            "wrote {}: {} ({} in {} file{}, {} pieces of {})",
            output.display(),
            created.name,
            BinaryBytes(created.total),
            created.num_files,
            if created.num_files == 1 { "" } else { "s" },
            created.num_pieces,
            BinaryBytes(u64::from(created.piece_length)),
        );
    }
    Ok(())
}
