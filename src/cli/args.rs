//! The flags of each subcommand (clap derive) and their value parsers.

use super::*;

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
pub struct FileSelect(pub(super) Vec<std::ops::RangeInclusive<u32>>);

pub(super) fn parse_select(s: &str) -> Result<FileSelect, String> {
    let ranges = magnet::parse_file_indexes(s)?;
    if ranges.is_empty() {
        return Err("no file index given (try 0,2,4-6)".into());
    }
    Ok(FileSelect(ranges))
}

/// Bytes/s with an optional K/M/G suffix, `B`/`iB` optional (binary
/// units either way, as aria2 reads them), `/s` optional.
// The value is range-checked; the cast only drops a fraction of a byte.
#[allow(clippy::cast_possible_truncation)]
pub(super) fn parse_rate(s: &str) -> Result<u64, String> {
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
pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
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
