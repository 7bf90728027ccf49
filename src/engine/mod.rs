//! The torrent coordinator shared by every peer task.
//!
//! State lives in one `Mutex<State>` (picker, peer registry, ban list) that
//! is locked briefly and never across `.await`. Peer tasks call in with
//! arriving blocks; a fully received piece is hashed and written on the
//! blocking pool under `hash_permits`, so a slow disk stalls the peers'
//! reads (backpressure) instead of growing memory. Progress leaves as
//! atomics ([`Stats`]) and a `watch` of the [`Phase`].

pub(crate) mod checker;
pub(crate) mod choker;
pub mod picker;
mod pieces;
pub(crate) mod ratelimit;
mod registry;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use sha1::{Digest, Sha1};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::metainfo::Torrent;
use crate::mse::Encryption;
use crate::storage::Storage;
use crate::types::{Bitfield, BlockRef, Geometry, InfoHash, PeerId, PieceIndex};
use choker::{ChokeAction, Choker, ChokerConfig};
use picker::{BlockOutcome, Complete, PeerKey, Picker};
use ratelimit::RatePair;

/// Failed pieces an address may take part in before it is banned.
const BAN_STRIKES: u32 = 3;

/// Tunables; the defaults suit real swarms, tests shorten the timeouts.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub peer_id: PeerId,
    pub max_peers: usize,
    pub max_half_open: usize,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    /// A peer with outstanding requests that delivers nothing for this long
    /// loses its requests and is dropped.
    pub request_timeout: Duration,
    /// A peer that sends nothing at all for this long is dropped.
    pub idle_timeout: Duration,
    pub keepalive_interval: Duration,
    /// Pieces hashed and written at once.
    pub hash_workers: usize,
    /// Listening port announced to peers (0: not listening).
    pub listen_port: u16,
    /// Local address outgoing connections bind to.
    pub bind_ip: Option<IpAddr>,
    /// Largest block a peer may request (16 KiB; at most `wire::MAX_BLOCK`).
    pub max_request_len: u32,
    /// Keep dialling peers after completion (seeding).
    pub connect_when_complete: bool,
    /// Connections to one IP address at most (several clients may share
    /// an address behind a NAT).
    pub max_per_ip: usize,
    /// MSE/PE: try, require or refuse encrypted connections.
    pub encryption: Encryption,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            peer_id: PeerId::generate(),
            max_peers: 50,
            max_half_open: 20,
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(180),
            keepalive_interval: Duration::from_secs(90),
            hash_workers: std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .max(2),
            listen_port: 0,
            bind_ip: None,
            max_request_len: crate::types::BLOCK_LEN,
            connect_when_complete: false,
            max_per_ip: 8,
            encryption: Encryption::default(),
        }
    }
}

/// Where the download stands.
#[derive(Debug, Clone)]
pub enum Phase {
    Running,
    Complete,
    Failed(Arc<EngineError>),
}

/// Why a download cannot go on (a bad peer is never one of these).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("disk full while writing piece {piece}")]
    DiskFull {
        piece: PieceIndex,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write piece {piece}")]
    Write {
        piece: PieceIndex,
        #[source]
        source: std::io::Error,
    },
}

/// What the session shares with every torrent's engine.
#[derive(Debug, Clone)]
pub struct Shared {
    /// Process-wide rate caps, applied after the torrent's own.
    pub rates: Arc<RatePair>,
    /// Pieces hashed and written at once, in the whole process.
    pub hash_permits: Arc<Semaphore>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            rates: Arc::new(RatePair::new(0, 0)),
            hash_permits: Arc::new(Semaphore::new(EngineConfig::default().hash_workers)),
        }
    }
}

/// Everything an engine starts from.
pub struct Setup {
    pub torrent: Arc<Torrent>,
    pub storage: Arc<dyn Storage>,
    /// Pieces already verified.
    pub have: Bitfield,
    /// Pieces to download (`--select`); all without a selection.
    pub wanted: Bitfield,
    pub config: EngineConfig,
    pub shared: Shared,
    /// The torrent's own rate caps.
    pub rates: Arc<RatePair>,
    /// Counters that outlive one run of the torrent (pause/resume).
    pub stats: Arc<Stats>,
    /// Cancelled when the engine fails; the parent of every peer's token.
    pub cancel: CancellationToken,
}

/// Counters the UI and trackers read.
#[derive(Debug, Default)]
pub struct Stats {
    /// Bytes of pieces that passed their hash and are on disk, this run.
    pub downloaded: AtomicU64,
    /// Bytes of pieces already verified at start (resume).
    pub resumed: AtomicU64,
    /// Block bytes received, accepted or not.
    pub received: AtomicU64,
    /// Block bytes thrown away (duplicates, unrequested, failed pieces).
    pub wasted: AtomicU64,
    pub uploaded: AtomicU64,
    /// Connected peers, web seeds included.
    pub connected: AtomicUsize,
    pub known: AtomicUsize,
    pub hash_failures: AtomicU64,
    /// Web seeds being fetched from (also in `connected`).
    pub web_seeds: AtomicUsize,
}

/// Orders sent to one peer task.
#[derive(Debug)]
pub enum PeerCommand {
    Cancel(BlockRef),
    Choke,
    Unchoke,
    Disconnect,
}

struct PeerEntry {
    has: Bitfield,
    ip: IpAddr,
    addr: SocketAddr,
    peer_id: PeerId,
    /// Where the peer accepts connections: the address we dialled, or its
    /// IP with the port from its extended handshake (for PEX).
    listen: Option<SocketAddr>,
    outgoing: bool,
    encrypted: bool,
    tx: mpsc::Sender<PeerCommand>,
    /// Cancelled on a ban or an eviction: unlike a command it cannot be
    /// lost to a full channel.
    kill: CancellationToken,
    connected_at: Instant,
    /// Last payload exchanged either way (`connected_at` before any).
    last_data: Instant,
    exchanged: bool,
    peer_interested: bool,
    am_interested: bool,
    peer_choking: bool,
    /// `v` from its extended handshake.
    client: Option<String>,
    /// Block bytes accepted from it and sent to it, and bytes/s over the
    /// last sample (see [`Engine::sample_peers`]).
    down: u64,
    up: u64,
    sampled: (u64, u64),
    rates: (u64, u64),
}

/// One connected peer as a user sees it.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    pub client: Option<String>,
    pub incoming: bool,
    /// The connection runs RC4 (MSE/PE).
    pub encrypted: bool,
    /// An HTTP server (BEP-19), not a BitTorrent peer.
    pub web_seed: bool,
    /// Share of the torrent's pieces it has (0..=1).
    pub progress: f64,
    pub am_choking: bool,
    pub am_interested: bool,
    pub peer_choking: bool,
    pub peer_interested: bool,
    pub down_rate: u64,
    pub up_rate: u64,
}

/// A peer that has exchanged nothing for this long may be closed to make
/// room for another.
const IDLE_EVICT: Duration = Duration::from_secs(10);
/// A peer that never exchanged a byte may be closed after this, but is
/// safe from the very next newcomer.
const FRESH_GRACE: Duration = Duration::from_secs(2);

struct State {
    picker: Picker,
    peers: HashMap<PeerKey, PeerEntry>,
    ips: HashMap<PeerKey, IpAddr>,
    strikes: HashMap<IpAddr, u32>,
    banned: HashSet<IpAddr>,
    /// Verified pieces in the order they completed; peers announce from it.
    verified_log: Vec<PieceIndex>,
    next_key: PeerKey,
    /// Accepted block bytes per remote address, for the summary.
    contributed: HashMap<SocketAddr, u64>,
    /// Addresses that completed a handshake, and whether encrypted.
    met: HashMap<SocketAddr, bool>,
    /// Addresses other peers said want encryption (PEX flag, `e`).
    wants_mse: HashSet<SocketAddr>,
    choker: Choker,
}

/// Addresses remembered for the summary and for encryption hints, at most.
const MAX_REMEMBERED: usize = 10_000;

/// One peer's part in the run, for the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contribution {
    pub addr: SocketAddr,
    /// Accepted block bytes.
    pub bytes: u64,
    pub encrypted: bool,
}

/// Why [`Engine::register`] turned a connection away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Banned,
    /// Another connection to the same peer id stays.
    Duplicate,
}

pub struct Engine {
    pub info_hash: InfoHash,
    pub geometry: Geometry,
    piece_hashes: Vec<[u8; 20]>,
    storage: Arc<dyn Storage>,
    state: Mutex<State>,
    pub stats: Arc<Stats>,
    pub config: EngineConfig,
    shared: Shared,
    rates: Arc<RatePair>,
    phase: watch::Sender<Phase>,
    have_count: watch::Sender<usize>,
    /// Wakes the choker when the first peer arrives.
    peer_joined: tokio::sync::Notify,
    /// Pieces being hashed and written, and a wake-up when none are.
    verifying: AtomicUsize,
    verified_all: tokio::sync::Notify,
    pub cancel: CancellationToken,
    /// Set when a DHT node runs: its UDP port (sent in BEP-5 `port`
    /// messages) and where peers' DHT nodes go to be pinged.
    pub dht: OnceLock<(u16, mpsc::Sender<SocketAddr>)>,
    /// Where addresses learnt from peers (PEX) go: the swarm.
    pub pex: OnceLock<mpsc::Sender<Vec<SocketAddr>>>,
    /// The info dictionary as in the .torrent, served to peers (BEP-9).
    pub info_bytes: Arc<[u8]>,
    /// Private torrents (BEP-27) exchange no peers.
    pub private: bool,
}

/// Peers listed in one PEX message at most (BEP-11 suggests 50).
pub const PEX_MAX: usize = 50;

impl Engine {
    pub fn new(setup: Setup) -> Arc<Engine> {
        let Setup {
            torrent,
            storage,
            have,
            wanted,
            config,
            shared,
            rates,
            stats,
            cancel,
        } = setup;
        let geometry = torrent.geometry();
        let mut picker = Picker::with_wanted(geometry, wanted, rand::random());
        let mut log = Vec::new();
        for p in have.iter_ones() {
            picker.mark_have(p);
            log.push(p);
        }
        let complete = picker.is_complete();
        let (phase, _) = watch::channel(if complete {
            Phase::Complete
        } else {
            Phase::Running
        });
        let (have_count, _) = watch::channel(log.len());
        Arc::new(Engine {
            info_hash: torrent.info_hash,
            geometry,
            piece_hashes: torrent.piece_hashes.clone(),
            storage,
            state: Mutex::new(State {
                picker,
                peers: HashMap::new(),
                ips: HashMap::new(),
                strikes: HashMap::new(),
                banned: HashSet::new(),
                verified_log: log,
                next_key: 1,
                contributed: HashMap::new(),
                met: HashMap::new(),
                wants_mse: HashSet::new(),
                choker: Choker::new(ChokerConfig::default()),
            }),
            stats,
            shared,
            rates,
            config,
            phase,
            have_count,
            peer_joined: tokio::sync::Notify::new(),
            verifying: AtomicUsize::new(0),
            verified_all: tokio::sync::Notify::new(),
            dht: OnceLock::new(),
            pex: OnceLock::new(),
            info_bytes: Arc::from(torrent.info_bytes.as_slice()),
            private: torrent.private,
            cancel,
        })
    }

    /// Waits until `n` bytes may be sent: the torrent's cap, then the
    /// session's.
    pub async fn acquire_upload(&self, n: u64) {
        self.rates.up.acquire(n).await;
        self.shared.rates.up.acquire(n).await;
    }

    /// Waits until `n` received bytes may be taken in.
    pub async fn acquire_download(&self, n: u64) {
        self.rates.down.acquire(n).await;
        self.shared.rates.down.acquire(n).await;
    }

    pub fn has_piece(&self, piece: PieceIndex) -> bool {
        self.state().picker.have().get(piece)
    }

    /// Reads verified blocks for upload. Blocking: call off the reactor.
    pub fn read_blocks(
        &self,
        blocks: &[BlockRef],
    ) -> std::io::Result<Vec<(BlockRef, bytes::Bytes)>> {
        blocks
            .iter()
            .map(|b| {
                let mut buf = vec![0u8; b.len as usize];
                let at = self.geometry.block_offset(b);
                self.storage.read_at(at, &mut buf)?;
                Ok((*b, bytes::Bytes::from(buf)))
            })
            .collect()
    }

    pub fn record_upload(&self, key: PeerKey, bytes: u64) {
        self.stats.uploaded.fetch_add(bytes, Ordering::Relaxed);
        let mut st = self.state();
        st.choker.record_upload(key, bytes);
        if let Some(e) = st.peers.get_mut(&key) {
            e.last_data = Instant::now();
            e.exchanged = true;
            e.up += bytes;
        }
    }

    /// Runs the choker until `cancel` fires: each second it applies what
    /// the choker decides (it re-ranks on its own 10 s / 30 s schedule).
    pub async fn run_choker(self: Arc<Self>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Idle torrents cost no wake-ups: sleep until a peer joins.
            if self.peer_count() == 0 {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = self.peer_joined.notified() => {}
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let mut st = self.state();
            let seeding = st.picker.is_complete();
            st.choker.set_seeding(seeding);
            let actions = st.choker.tick(std::time::Instant::now());
            for a in actions {
                let (key, cmd) = match a {
                    ChokeAction::Choke(k) => (k, PeerCommand::Choke),
                    ChokeAction::Unchoke(k) => (k, PeerCommand::Unchoke),
                };
                if let Some(e) = st.peers.get(&key) {
                    // Full channel: the next round repeats the decision.
                    let _ = e.tx.try_send(cmd);
                }
            }
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug; keep serving regardless.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn phase(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    pub fn have_updates(&self) -> watch::Receiver<usize> {
        self.have_count.subscribe()
    }

    pub fn is_complete(&self) -> bool {
        self.state().picker.is_complete()
    }

    /// Pieces verified so far (unwanted ones found on disk included).
    pub fn have_count(&self) -> u32 {
        self.state().picker.have().count()
    }

    pub fn have_bitfield(&self) -> Bitfield {
        self.state().picker.have().clone()
    }

    /// Verified pieces from position `from` of the completion log.
    pub fn verified_since(&self, from: usize) -> Vec<PieceIndex> {
        let st = self.state();
        st.verified_log.get(from..).unwrap_or_default().to_vec()
    }

    /// Wanted bytes still missing (for the tracker's `left`).
    pub fn left(&self) -> u64 {
        let st = self.state();
        st.picker.wanted_bytes() - st.picker.verified_bytes()
    }

    /// Bytes of the wanted pieces (the whole torrent without a selection).
    /// (verified, all) counts of the wanted pieces.
    pub fn wanted_progress(&self) -> (u32, u32) {
        let st = self.state();
        let (wanted, have) = (st.picker.wanted(), st.picker.have());
        (wanted.count_common(have), wanted.count())
    }

    pub fn wanted_bytes(&self) -> u64 {
        self.state().picker.wanted_bytes()
    }

    /// Every peer that completed a handshake (and any that delivered
    /// bytes), largest contribution first.
    pub fn contributions(&self) -> Vec<Contribution> {
        let st = self.state();
        let mut v: Vec<Contribution> = st
            .met
            .iter()
            .map(|(a, e)| Contribution {
                addr: *a,
                bytes: st.contributed.get(a).copied().unwrap_or(0),
                encrypted: *e,
            })
            .collect();
        for (a, b) in &st.contributed {
            if !st.met.contains_key(a) {
                v.push(Contribution {
                    addr: *a,
                    bytes: *b,
                    encrypted: false,
                });
            }
        }
        v.sort_by_key(|c| std::cmp::Reverse(c.bytes));
        v
    }

    /// A peer told us `addr` wants encrypted connections.
    pub fn note_wants_mse(&self, addr: SocketAddr) {
        let mut st = self.state();
        if st.wants_mse.len() < MAX_REMEMBERED {
            st.wants_mse.insert(addr);
        }
    }

    pub fn prefers_mse(&self, addr: SocketAddr) -> bool {
        self.state().wants_mse.contains(&addr)
    }

    pub fn banned(&self) -> Vec<IpAddr> {
        self.state().banned.iter().copied().collect()
    }

    pub fn is_banned(&self, ip: IpAddr) -> bool {
        self.state().banned.contains(&ip)
    }
}
