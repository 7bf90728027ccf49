//! Process-wide settings: plain data, read by the session when it starts
//! and by each torrent (through `torrent::Context`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::engine::EngineConfig;

/// Where the DHT node listens and how it joins.
#[derive(Debug, Clone, Default)]
pub struct DhtOptions {
    /// UDP port [default: the peer listen port].
    pub port: Option<u16>,
    /// `host:port` nodes asked first.
    pub bootstrap: Vec<String>,
    /// Saved node id and nodes (read at start, written on exit).
    pub state_file: Option<PathBuf>,
}

/// Process-wide settings.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub port: Option<u16>,
    pub bind: Option<IpAddr>,
    /// The DHT; `None` turns it off (private torrents never use it).
    pub dht: Option<DhtOptions>,
    /// Global caps in bytes/s (0: none).
    pub max_upload_rate: u64,
    pub max_download_rate: u64,
    /// Peer connections in all torrents together.
    pub max_peers: usize,
    /// Outgoing connects in flight in all torrents together.
    pub max_half_open: usize,
    /// Defaults for every torrent's engine (timeouts, per-torrent caps).
    pub engine: EngineConfig,
    pub numwant: u32,
    /// HTTP tracker timeout, and the first wait before a UDP re-send.
    pub tracker_timeout: Duration,
    /// UDP tracker re-sends (waits double each time).
    pub udp_retries: u32,
    /// Resume records and fetched metadata live here (`None`: nowhere).
    pub state_dir: Option<PathBuf>,
    /// Longest time between two resume-record flushes of a downloading
    /// torrent.
    pub resume_every: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            port: None,
            bind: None,
            dht: None,
            max_upload_rate: 0,
            max_download_rate: 0,
            max_peers: 500,
            max_half_open: 64,
            engine: EngineConfig::default(),
            numwant: 80,
            tracker_timeout: Duration::from_secs(15),
            udp_retries: 1,
            state_dir: None,
            resume_every: Duration::from_secs(30),
        }
    }
}
