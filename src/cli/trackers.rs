//! `xorrent tracker` (the embedded tracker) and `xorrent scrape`.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::parse_duration;
use crate::metainfo::Torrent;
use crate::tracker::server::{StoreConfig, Tracker, TrackerOptions};
use crate::tracker::{Clients, ScrapeStats};
use crate::types::InfoHash;

#[derive(Args, Debug)]
pub struct TrackerArgs {
    /// Serve HTTP `/announce` and `/scrape` here (with neither --http nor
    /// --udp: both on 0.0.0.0:6969).
    #[arg(long, value_name = "IP:PORT")]
    pub http: Option<SocketAddr>,
    /// Serve UDP announces and scrapes (BEP-15) here.
    #[arg(long, value_name = "IP:PORT")]
    pub udp: Option<SocketAddr>,
    /// Re-announce interval given to clients (e.g. 30m, 90s).
    #[arg(long, default_value = "30m", value_parser = parse_duration, value_name = "DURATION")]
    pub interval: Duration,
    /// Forget a peer after this many intervals without an announce.
    #[arg(long, default_value_t = 2, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub expire_after: u32,
    /// Track only the info-hashes in FILE (40 hex digits a line; `#` starts a comment).
    #[arg(long, value_name = "FILE")]
    pub allow: Option<PathBuf>,
    /// Peers given when a client does not say how many it wants.
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub default_numwant: u32,
    /// Most peers given in one answer.
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub max_numwant: u32,
    /// Most torrents tracked at once.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub max_torrents: usize,
    /// Most peers listed for one torrent.
    #[arg(long, default_value_t = 20_000, value_name = "N")]
    pub max_peers_per_torrent: usize,
    /// Most peers listed in all (about 100 bytes each).
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    pub max_peers: usize,
    /// Print torrents, peers and announces/s on stderr this often (e.g. 10s).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub stats: Option<Duration>,
}

/// Reads an allow-list: one hex info-hash a line.
pub(super) fn read_allow_list(path: &Path) -> Result<HashSet<InfoHash>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read allow-list {}", path.display()))?;
    let mut set = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        match InfoHash::from_hex(line) {
            Some(h) => set.insert(h),
            None => bail!(
                "{}:{}: not a 40-digit hex info-hash: {line:?}",
                path.display(),
                n + 1
            ),
        };
    }
    Ok(set)
}

pub(super) async fn tracker(a: TrackerArgs, cancel: CancellationToken) -> Result<()> {
    let (http, udp) = match (a.http, a.udp) {
        (None, None) => {
            let any = SocketAddr::from(([0, 0, 0, 0], 6969));
            (Some(any), Some(any))
        }
        other => other,
    };
    let allow = a.allow.as_deref().map(read_allow_list).transpose()?;
    let store = StoreConfig {
        interval: a.interval.max(Duration::from_secs(1)),
        peer_ttl: a.interval.max(Duration::from_secs(1)) * a.expire_after,
        default_numwant: a.default_numwant.min(a.max_numwant),
        max_numwant: a.max_numwant,
        max_swarms: a.max_torrents,
        max_peers_per_swarm: a.max_peers_per_torrent,
        max_peers: a.max_peers,
        allow,
    };
    let t = Tracker::bind(TrackerOptions {
        http,
        udp,
        store,
        stats: a.stats,
        clock: None,
    })
    .await
    .context("cannot open the tracker's sockets")?;
    if let Some(h) = t.http_addr() {
        eprintln!("tracker: http://{h}/announce");
    }
    if let Some(u) = t.udp_addr() {
        eprintln!("tracker: udp://{u}/announce");
    }
    t.run(cancel).await;
    eprintln!("tracker: stopped");
    Ok(())
}

#[derive(Args, Debug)]
pub struct ScrapeArgs {
    /// A .torrent file, or an info-hash in hex.
    pub target: String,
    /// Tracker to ask (repeatable) [default: every tracker the torrent names].
    #[arg(short = 't', long = "tracker", value_name = "URL")]
    pub trackers: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Local IP to send from.
    #[arg(long)]
    pub bind: Option<IpAddr>,
    /// Seconds to wait for an HTTP tracker, and before re-sending over UDP.
    #[arg(long, default_value_t = 15, value_name = "SECS")]
    pub tracker_timeout: u64,
    /// Re-sends to a silent UDP tracker.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=8))]
    pub udp_retries: u32,
}

pub(super) async fn scrape(a: ScrapeArgs) -> Result<()> {
    let (ih, mut urls) = match InfoHash::from_hex(&a.target) {
        Some(ih) => (ih, Vec::new()),
        None => {
            let t = Torrent::from_file(Path::new(&a.target)).with_context(|| {
                format!(
                    "cannot load {} (not a .torrent file or a 40-digit hex info-hash)",
                    a.target
                )
            })?;
            (t.info_hash, t.trackers.into_iter().flatten().collect())
        }
    };
    if !a.trackers.is_empty() {
        urls = a.trackers.clone();
    }
    if urls.is_empty() {
        bail!("no tracker to ask: give one with --tracker URL");
    }
    let timeout = Duration::from_secs(a.tracker_timeout.max(1));
    let asks = urls.iter().map(|url| async move {
        let mut c = Clients::new(a.bind, timeout, a.udp_retries);
        (url, c.scrape(url, &[ih]).await)
    });
    let results: Vec<(&String, Result<Vec<ScrapeStats>, _>)> =
        futures::future::join_all(asks).await;
    let mut ok = 0;
    let mut json = Vec::new();
    for (url, r) in &results {
        match r.as_ref().map(|v| v.first().copied().unwrap_or_default()) {
            Ok(s) => {
                ok += 1;
                if a.json {
                    json.push(serde_json::json!({
                        "tracker": url, "seeders": s.seeders,
                        "leechers": s.leechers, "completed": s.completed,
                    }));
                } else {
                    out!(
                        "{url}: {} seeders, {} leechers, {} completed",
                        s.seeders,
                        s.leechers,
                        s.completed
                    );
                }
            }
            Err(e) => {
                if a.json {
                    json.push(serde_json::json!({"tracker": url, "error": e.to_string()}));
                } else {
                    out!("{url}: error: {e}");
                }
            }
        }
    }
    if a.json {
        let v = serde_json::json!({"info_hash": ih.to_hex(), "trackers": json});
        out!("{}", serde_json::to_string_pretty(&v)?);
    }
    if ok == 0 {
        bail!("no tracker answered the scrape");
    }
    Ok(())
}
