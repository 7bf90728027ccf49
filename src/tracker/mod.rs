//! Tracker clients and the announce loop over BEP-12 tiers.
//!
//! The announcer task owns the tier list. It shuffles each tier once, tries
//! tiers in order and URLs in order within a tier, moves a URL that answers
//! to the front of its tier, and re-announces on the tracker's interval.
//! When every tracker fails it retries with capped, jittered backoff while
//! the download goes on with the peers it already knows.
//!
//! `server` is the embedded tracker (`xorrent tracker`).

pub mod http;
pub mod server;
pub(crate) mod udp;
pub mod udp_wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::seq::SliceRandom;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::mse::Encryption;
use crate::types::{InfoHash, PeerId};
use udp::{UdpClient, UdpConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Started,
    Completed,
    Stopped,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Started => "started",
            Event::Completed => "completed",
            Event::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone)]
pub struct AnnounceRequest {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    pub port: u16,
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
    pub event: Option<Event>,
    pub numwant: u32,
    pub key: u32,
    /// Told to HTTP trackers (`supportcrypto`, `requirecrypto`).
    pub encryption: Encryption,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceResponse {
    pub interval: Duration,
    pub min_interval: Option<Duration>,
    pub peers: Vec<SocketAddr>,
    pub warning: Option<String>,
    pub seeders: Option<u32>,
    pub leechers: Option<u32>,
}

/// One torrent's swarm as a tracker counts it (scrape).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ScrapeStats {
    pub seeders: u32,
    pub completed: u32,
    pub leechers: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    #[error("tracker refused: {0}")]
    Failure(String),
    #[error("HTTP error: {0}")]
    Http(String),
    /// The request failed (URLs left out: they may hold a passkey).
    #[error("HTTP error: {0}")]
    Request(#[source] reqwest::Error),
    #[error("network error: {0}")]
    Net(#[from] std::io::Error),
    #[error("malformed tracker response: {0}")]
    Malformed(#[from] BadResponse),
    #[error("tracker did not answer in time")]
    Timeout,
    #[error("unsupported tracker URL: {0}")]
    Unsupported(String),
}

/// Why a tracker's answer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BadResponse {
    #[error(transparent)]
    Bencode(#[from] crate::bencode::Error),
    #[error(transparent)]
    Fields(#[from] serde_bencode::Error),
    #[error("{0}")]
    Other(String),
}

impl From<&str> for BadResponse {
    fn from(s: &str) -> BadResponse {
        BadResponse::Other(s.to_string())
    }
}

impl From<String> for BadResponse {
    fn from(s: String) -> BadResponse {
        BadResponse::Other(s)
    }
}

/// Transfer totals for the announce, read when it is sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
}

/// What the announcer needs from the rest of the client.
pub struct AnnounceConfig {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    pub port: u16,
    pub numwant: u32,
    /// HTTP timeout, and the first wait before a UDP request is re-sent.
    pub timeout: Duration,
    /// UDP re-sends after the first request (waits double each time).
    pub udp_retries: u32,
    /// Local address announces are sent from.
    pub bind: Option<std::net::IpAddr>,
    /// Sends peers found to the swarm.
    pub peers: mpsc::Sender<Vec<SocketAddr>>,
    pub totals: Arc<dyn Fn() -> Totals + Send + Sync>,
    /// Becomes true once the download completes (sends `completed`).
    pub complete: watch::Receiver<bool>,
    /// Told how each announce round went.
    pub on_announce: Arc<dyn Fn(AnnounceReport) + Send + Sync>,
    pub encryption: Encryption,
}

/// How one announce round went, for a user's view.
#[derive(Debug, Clone)]
pub struct AnnounceReport {
    /// The tracker that answered; `None`: none did.
    pub url: Option<String>,
    pub peers: usize,
    pub seeders: Option<u32>,
    pub leechers: Option<u32>,
    pub at: std::time::SystemTime,
    /// When the next announce is due.
    pub next: std::time::SystemTime,
}

impl AnnounceConfig {
    /// An announce with the totals as they are now.
    fn request(&self, event: Option<Event>, numwant: u32, key: u32) -> AnnounceRequest {
        let totals = (self.totals)();
        AnnounceRequest {
            info_hash: self.info_hash,
            peer_id: self.peer_id,
            port: self.port,
            uploaded: totals.uploaded,
            downloaded: totals.downloaded,
            left: totals.left,
            event,
            numwant,
            key,
            encryption: self.encryption,
        }
    }
}

const RETRY_MIN: Duration = Duration::from_secs(15);
const RETRY_MAX: Duration = Duration::from_secs(600);
/// Lower bound on re-announces, whatever a tracker says.
const INTERVAL_FLOOR: Duration = Duration::from_secs(30);

/// The tracker list in BEP-12 order.
#[derive(Debug, Clone)]
pub struct Tiers {
    tiers: Vec<Vec<String>>,
}

impl Tiers {
    /// Shuffles within each tier (BEP-12).
    pub fn new(mut tiers: Vec<Vec<String>>) -> Tiers {
        let mut rng = rand::thread_rng();
        for t in &mut tiers {
            t.shuffle(&mut rng);
        }
        tiers.retain(|t| !t.is_empty());
        Tiers { tiers }
    }

    pub fn is_empty(&self) -> bool {
        self.tiers.is_empty()
    }

    /// Every URL in the order they are tried.
    pub fn urls(&self) -> impl Iterator<Item = (usize, usize, &str)> {
        self.tiers.iter().enumerate().flat_map(|(t, urls)| {
            urls.iter()
                .enumerate()
                .map(move |(i, u)| (t, i, u.as_str()))
        })
    }

    /// A URL that answered moves to the front of its tier.
    pub fn promote(&mut self, tier: usize, idx: usize) {
        if let Some(t) = self.tiers.get_mut(tier) {
            if idx < t.len() {
                let u = t.remove(idx);
                t.insert(0, u);
            }
        }
    }
}

/// The HTTP and UDP clients behind one call, for one announcer or scrape.
pub struct Clients {
    http: reqwest::Client,
    udp: UdpClient,
    timeout: Duration,
}

impl Clients {
    pub fn new(bind: Option<std::net::IpAddr>, timeout: Duration, udp_retries: u32) -> Clients {
        Clients {
            http: http_client(bind),
            udp: UdpClient::new(
                bind,
                UdpConfig {
                    base: timeout,
                    retries: udp_retries,
                },
            ),
            timeout,
        }
    }

    pub async fn announce(
        &mut self,
        url: &str,
        req: &AnnounceRequest,
    ) -> Result<AnnounceResponse, TrackerError> {
        if url.starts_with("udp://") {
            self.udp.announce(url, req).await
        } else if is_http(url) {
            http::announce(&self.http, url, req, self.timeout).await
        } else {
            Err(TrackerError::Unsupported(url.to_string()))
        }
    }

    /// Stats for `hashes`, in order (UDP: at most 74 per call).
    pub async fn scrape(
        &mut self,
        url: &str,
        hashes: &[InfoHash],
    ) -> Result<Vec<ScrapeStats>, TrackerError> {
        if url.starts_with("udp://") {
            self.udp.scrape(url, hashes).await
        } else if is_http(url) {
            http::scrape(&self.http, url, hashes, self.timeout).await
        } else {
            Err(TrackerError::Unsupported(url.to_string()))
        }
    }
}

fn is_http(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

/// Walks the tiers until one URL answers; returns it and the response.
async fn announce_tiers(
    clients: &mut Clients,
    tiers: &mut Tiers,
    req: &AnnounceRequest,
) -> Option<(String, AnnounceResponse)> {
    let order: Vec<(usize, usize, String)> = tiers
        .urls()
        .map(|(t, i, u)| (t, i, u.to_string()))
        .collect();
    for (t, i, url) in order {
        match clients.announce(&url, req).await {
            Ok(resp) => {
                if let Some(w) = &resp.warning {
                    tracing::warn!(tracker = %url, "tracker warning: {w}");
                }
                tracing::info!(tracker = %url, peers = resp.peers.len(), "announced");
                tiers.promote(t, i);
                return Some((url, resp));
            }
            Err(e) => tracing::warn!(tracker = %url, "announce failed: {e}"),
        }
    }
    None
}

/// The HTTP client for announces. With `bind`, requests leave from that
/// address: trackers record the source address, not what we claim.
pub fn http_client(bind: Option<std::net::IpAddr>) -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("xorrent/", env!("CARGO_PKG_VERSION")))
        .no_proxy()
        // Announces are minutes apart, and trackers (opentracker) close
        // after each reply without saying so: a reused connection would
        // lose the request sent on it (`stopped` right after `completed`).
        .pool_max_idle_per_host(0)
        .local_address(bind)
        .build()
        .unwrap_or_default()
}

/// Announces until `cancel` fires, then sends `stopped` to the tracker that
/// last answered.
pub async fn run_announcer(mut tiers: Tiers, mut cfg: AnnounceConfig, cancel: CancellationToken) {
    if tiers.is_empty() {
        return;
    }
    let mut clients = Clients::new(cfg.bind, cfg.timeout, cfg.udp_retries);
    let key: u32 = rand::random();
    let mut event = Some(Event::Started);
    let mut failures = 0u32;
    let mut working: Option<String> = None;
    let mut completed_sent = *cfg.complete.borrow();
    loop {
        let req = cfg.request(event, cfg.numwant, key);
        let wait = tokio::select! {
            _ = cancel.cancelled() => break,
            r = announce_tiers(&mut clients, &mut tiers, &req) => match r {
                Some((url, resp)) => {
                    failures = 0;
                    let wait = resp.interval.max(resp.min_interval.unwrap_or_default()).max(INTERVAL_FLOOR);
                    let counts = (resp.peers.len(), resp.seeders, resp.leechers);
                    report(&cfg, Some(url.clone()), counts, wait);
                    working = Some(url);
                    if event == Some(Event::Completed) { completed_sent = true; }
                    event = None;
                    let _ = cfg.peers.send(resp.peers).await;
                    wait
                }
                None => {
                    failures += 1;
                    let wait = backoff(failures);
                    report(&cfg, None, (0, None, None), wait);
                    wait
                }
            },
        };
        if wait_or_completed(wait, &mut cfg, &cancel, &mut completed_sent).await {
            event = Some(Event::Completed);
        }
        if cancel.is_cancelled() {
            break;
        }
    }
    // Exit: a pending `completed` first (the download may have finished
    // just before the stop), then `stopped`, each bounded by a timeout.
    let Some(url) = working else { return };
    let mut finals = Vec::new();
    if *cfg.complete.borrow() && !completed_sent {
        finals.push(Event::Completed);
    }
    finals.push(Event::Stopped);
    for ev in finals {
        let req = cfg.request(Some(ev), 0, key);
        let sent = tokio::time::timeout(Duration::from_secs(5), clients.announce(&url, &req));
        match sent.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(tracker = %url, "{} announce failed: {e}", ev.as_str()),
            Err(_) => tracing::debug!(tracker = %url, "{} announce timed out", ev.as_str()),
        }
    }
}

/// Sleeps `wait`, or less: true when the download completes meanwhile
/// (and `completed` is still to be sent). A closed completion channel
/// means it never will.
async fn wait_or_completed(
    wait: Duration,
    cfg: &mut AnnounceConfig,
    cancel: &CancellationToken,
    completed_sent: &mut bool,
) -> bool {
    let sleep = tokio::time::sleep(wait);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return false,
            _ = &mut sleep => return false,
            c = cfg.complete.changed(), if !*completed_sent => {
                if c.is_ok() && *cfg.complete.borrow() {
                    return true;
                }
                if c.is_err() { *completed_sent = true; }
            }
        }
    }
}

/// Tells `on_announce` how an announce went: the tracker that answered
/// (none: all failed), peers/seeders/leechers, and when the next is due.
fn report(
    cfg: &AnnounceConfig,
    url: Option<String>,
    (peers, seeders, leechers): (usize, Option<u32>, Option<u32>),
    wait: Duration,
) {
    let now = std::time::SystemTime::now();
    (cfg.on_announce)(AnnounceReport {
        url,
        peers,
        seeders,
        leechers,
        at: now,
        next: now + wait,
    });
}

/// 15 s, 30 s, 60 s ... capped at 10 minutes, with ±25 % jitter.
pub fn backoff(failures: u32) -> Duration {
    let base = RETRY_MIN
        .saturating_mul(1 << failures.saturating_sub(1).min(10))
        .min(RETRY_MAX);
    let jitter = 0.75 + rand::random::<f64>() * 0.5;
    base.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= Duration::from_secs(19));
        assert!(backoff(3) >= Duration::from_secs(45));
        assert!(backoff(30) <= Duration::from_secs(750));
    }

    #[test]
    fn promotes_the_answering_tracker_within_its_tier() {
        let mut t = Tiers {
            tiers: vec![vec!["a".into()], vec!["b".into(), "c".into()]],
        };
        t.promote(1, 1);
        let order: Vec<&str> = t.urls().map(|(_, _, u)| u).collect();
        assert_eq!(order, ["a", "c", "b"]);
    }
}
