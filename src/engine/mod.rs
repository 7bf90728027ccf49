//! The torrent coordinator shared by every peer task.
//!
//! State lives in one `Mutex<State>` (picker, peer registry, ban list) that
//! is locked briefly and never across `.await`. Peer tasks call in with
//! arriving blocks; a fully received piece is hashed and written on the
//! blocking pool under `hash_permits`, so a slow disk stalls the peers'
//! reads (backpressure) instead of growing memory. Progress leaves as
//! atomics ([`Stats`]) and a `watch` of the [`Phase`].

pub mod checker;
pub mod choker;
pub mod picker;
pub mod ratelimit;

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
        piece: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write piece {piece}")]
    Write {
        piece: u32,
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
                let at = self.geometry.piece_offset(b.piece) + u64::from(b.offset);
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

    /// The peer told us whether it wants our pieces.
    pub fn peer_interest(&self, key: PeerKey, interested: bool) {
        let mut st = self.state();
        st.choker.set_interested(key, interested);
        if let Some(e) = st.peers.get_mut(&key) {
            e.peer_interested = interested;
        }
    }

    /// Whether we want the peer's pieces (for snubbing).
    pub fn am_interested(&self, key: PeerKey, interested: bool) {
        let mut st = self.state();
        st.choker
            .set_am_interested(key, interested, std::time::Instant::now());
        if let Some(e) = st.peers.get_mut(&key) {
            e.am_interested = interested;
        }
    }

    /// Connected peers at `ip`.
    pub fn peers_from(&self, ip: IpAddr) -> usize {
        self.state().peers.values().filter(|e| e.ip == ip).count()
    }

    /// Connected peers.
    pub fn peer_count(&self) -> usize {
        self.state().peers.len()
    }

    /// Closes up to `n` peers that exchanged nothing lately, to make room:
    /// those neither side wants first, then the longest idle. Returns how
    /// many were closed.
    pub fn evict_idle(&self, n: usize) -> usize {
        let now = Instant::now();
        let st = self.state();
        let mut idle: Vec<(bool, Instant, &PeerEntry)> = st
            .peers
            .values()
            .filter(|e| !e.kill.is_cancelled())
            .filter(|e| {
                let quiet = now.saturating_duration_since(e.last_data) >= IDLE_EVICT;
                let never =
                    !e.exchanged && now.saturating_duration_since(e.connected_at) >= FRESH_GRACE;
                quiet || never
            })
            .map(|e| (e.am_interested || e.peer_interested, e.last_data, e))
            .collect();
        idle.sort_by_key(|&(wanted, last, _)| (wanted, last));
        let mut closed = 0;
        for (_, _, e) in idle.into_iter().take(n) {
            tracing::debug!(addr = %e.addr, "closing an idle peer to make room");
            e.kill.cancel();
            closed += 1;
        }
        closed
    }

    /// Whether the peer chokes us (for snubbing).
    pub fn peer_choking(&self, key: PeerKey, choking: bool) {
        let mut st = self.state();
        st.choker
            .set_peer_choking(key, choking, std::time::Instant::now());
        if let Some(e) = st.peers.get_mut(&key) {
            e.peer_choking = choking;
        }
    }

    /// The peer named its client in its extended handshake.
    pub fn set_client(&self, key: PeerKey, client: &str) {
        if let Some(e) = self.state().peers.get_mut(&key) {
            // Bounded: the name comes from the network.
            e.client = Some(client.chars().take(64).collect());
        }
    }

    /// Per-peer rates from the bytes moved since the last call, `secs`
    /// ago (the session samples once a second).
    pub fn sample_peers(&self, secs: f64) {
        if secs <= 0.0 {
            return;
        }
        for e in self.state().peers.values_mut() {
            let (d, u) = (e.down - e.sampled.0, e.up - e.sampled.1);
            e.rates = ((d as f64 / secs) as u64, (u as f64 / secs) as u64);
            e.sampled = (e.down, e.up);
        }
    }

    /// The connected peers, for a user's view.
    pub fn peer_infos(&self) -> Vec<PeerInfo> {
        let st = self.state();
        let n = f64::from(self.geometry.num_pieces.max(1));
        st.peers
            .iter()
            .map(|(k, e)| PeerInfo {
                addr: e.addr,
                client: e.client.clone(),
                incoming: !e.outgoing,
                encrypted: e.encrypted,
                web_seed: e.peer_id.is_web_seed(),
                progress: f64::from(e.has.count()) / n,
                am_choking: st.choker.is_choking(*k),
                am_interested: e.am_interested,
                peer_choking: e.peer_choking,
                peer_interested: e.peer_interested,
                down_rate: e.rates.0,
                up_rate: e.rates.1,
            })
            .collect()
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
        let done = wanted.iter_ones().filter(|&p| have.get(p)).count() as u32;
        (done, wanted.count())
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

    /// Enters a connected peer; `None` if its address is banned.
    pub fn register(
        &self,
        addr: SocketAddr,
        peer_id: PeerId,
        outgoing: bool,
        encrypted: bool,
        tx: mpsc::Sender<PeerCommand>,
        kill: CancellationToken,
    ) -> Result<PeerKey, Refusal> {
        let mut st = self.state();
        if st.banned.contains(&addr.ip()) {
            return Err(Refusal::Banned);
        }
        // One connection per peer. When both sides dialled at once, each
        // keeps the one the lower peer id opened: the same one.
        let opener = |outgoing: bool| {
            if outgoing {
                self.config.peer_id.0
            } else {
                peer_id.0
            }
        };
        if let Some(old) = st.peers.values().find(|e| e.peer_id == peer_id) {
            if old.outgoing == outgoing || opener(old.outgoing) <= opener(outgoing) {
                return Err(Refusal::Duplicate);
            }
            // Its task unregisters it on the way out.
            old.kill.cancel();
        }
        let key = st.next_key;
        st.next_key += 1;
        st.ips.insert(key, addr.ip());
        if st.met.len() < MAX_REMEMBERED || st.met.contains_key(&addr) {
            st.met.insert(addr, encrypted);
        }
        st.peers.insert(
            key,
            PeerEntry {
                has: Bitfield::new(self.geometry.num_pieces),
                ip: addr.ip(),
                addr,
                peer_id,
                listen: outgoing.then_some(addr),
                outgoing,
                encrypted,
                tx,
                kill,
                connected_at: Instant::now(),
                last_data: Instant::now(),
                exchanged: false,
                peer_interested: false,
                am_interested: false,
                peer_choking: true,
                client: None,
                down: 0,
                up: 0,
                sampled: (0, 0),
                rates: (0, 0),
            },
        );
        st.choker.add_peer(key, std::time::Instant::now());
        self.peer_joined.notify_one();
        self.stats.connected.fetch_add(1, Ordering::Relaxed);
        Ok(key)
    }

    /// A connected peer listens at `addr` (we dialled it, or it named
    /// that port in its extended handshake).
    pub fn connected_to(&self, addr: SocketAddr) -> bool {
        self.state().peers.values().any(|e| e.listen == Some(addr))
    }

    /// An incoming peer named its listening port (extended handshake).
    pub fn set_listen_port(&self, key: PeerKey, port: u16) {
        if let Some(e) = self.state().peers.get_mut(&key) {
            if !e.outgoing && port != 0 {
                e.listen = Some(SocketAddr::new(e.ip, port));
            }
        }
    }

    /// Connected peers others could dial, with BEP-11 flags, leaving out
    /// `except` (the peer the list is for). At most [`PEX_MAX`] * 4.
    pub fn pex_view(&self, except: PeerKey) -> Vec<(SocketAddr, u8)> {
        use crate::extension::pex_flags;
        let st = self.state();
        st.peers
            .iter()
            .filter(|(k, _)| **k != except)
            .filter_map(|(_, e)| {
                let mut flags = 0;
                if e.has.is_full() {
                    flags |= pex_flags::SEED;
                }
                if e.outgoing {
                    flags |= pex_flags::REACHABLE;
                }
                if e.encrypted || e.listen.is_some_and(|l| st.wants_mse.contains(&l)) {
                    flags |= pex_flags::ENCRYPTION;
                }
                e.listen.map(|a| (a, flags))
            })
            .take(PEX_MAX * 4)
            .collect()
    }

    /// Addresses a peer told us about; the swarm dials them within its caps.
    pub fn add_pex_peers(&self, addrs: Vec<SocketAddr>) {
        if let (Some(tx), false) = (self.pex.get(), addrs.is_empty()) {
            // A full channel drops them: PEX repeats every minute.
            let _ = tx.try_send(addrs);
        }
    }

    pub fn unregister(&self, key: PeerKey) {
        let mut st = self.state();
        if let Some(entry) = st.peers.remove(&key) {
            st.picker.remove_availability(&entry.has);
            st.picker.release_all(key);
            st.choker.remove_peer(key);
            self.stats.connected.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Records a peer's bitfield; returns whether it has pieces we need.
    pub fn on_bitfield(&self, key: PeerKey, has: Bitfield) -> bool {
        let mut st = self.state();
        let st = &mut *st;
        let Some(entry) = st.peers.get_mut(&key) else {
            return false;
        };
        st.picker.remove_availability(&entry.has);
        st.picker.add_availability(&has);
        entry.has = has;
        st.picker.is_interesting(&entry.has)
    }

    /// Records a `have`; returns whether that piece is one we want and lack.
    pub fn on_have(&self, key: PeerKey, piece: PieceIndex) -> bool {
        let mut st = self.state();
        let st = &mut *st;
        let Some(entry) = st.peers.get_mut(&key) else {
            return false;
        };
        if entry.has.set(piece) {
            st.picker.add_have(piece);
        }
        st.picker.needs(piece)
    }

    /// Whether the peer still has anything we need.
    pub fn is_interesting(&self, key: PeerKey) -> bool {
        let st = self.state();
        st.peers
            .get(&key)
            .is_some_and(|e| st.picker.is_interesting(&e.has))
    }

    /// Appends up to `max` requests for this peer to `out`; with `only`,
    /// just from those pieces (BEP-6 allowed fast, while choked).
    pub fn pick(&self, key: PeerKey, max: usize, only: Option<&[u32]>, out: &mut Vec<BlockRef>) {
        let mut st = self.state();
        let st = &mut *st;
        let Some(entry) = st.peers.get(&key) else {
            return;
        };
        if st.banned.contains(&entry.ip) {
            // Banned, its task not yet gone: no new requests.
            return;
        }
        match only {
            None => st.picker.pick(key, &entry.has, max, out),
            Some(pieces) => {
                let mut allowed = Bitfield::new(self.geometry.num_pieces);
                for &p in pieces {
                    if entry.has.get(p) {
                        allowed.set(p);
                    }
                }
                if allowed.count() > 0 {
                    st.picker.pick(key, &allowed, max, out);
                }
            }
        }
    }

    pub fn release_all(&self, key: PeerKey) {
        self.state().picker.release_all(key);
    }

    pub fn release(&self, key: PeerKey, block: BlockRef) {
        self.state().picker.release(key, block);
    }

    /// Files an arriving block. Returns whether it was one we asked for.
    /// A completed piece is queued for hashing; this waits only when every
    /// hash worker is busy.
    pub async fn on_block(
        self: &Arc<Self>,
        key: PeerKey,
        piece: u32,
        offset: u32,
        data: &[u8],
    ) -> bool {
        self.stats
            .received
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        let outcome = {
            let mut st = self.state();
            let banned = st.ips.get(&key).is_some_and(|ip| st.banned.contains(ip));
            if banned {
                // Still arriving from a banned peer: never mixed into a piece.
                BlockOutcome::Unrequested
            } else {
                st.picker.on_block(key, piece, offset, data)
            }
        };
        match outcome {
            BlockOutcome::Unrequested => {
                self.stats
                    .wasted
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                false
            }
            BlockOutcome::Stored { cancel, complete } => {
                {
                    let mut st = self.state();
                    if let Some(e) = st.peers.get_mut(&key) {
                        e.last_data = Instant::now();
                        e.exchanged = true;
                        e.down += data.len() as u64;
                    }
                    if let Some(addr) = st.peers.get(&key).map(|e| e.addr) {
                        *st.contributed.entry(addr).or_default() += data.len() as u64;
                    }
                    st.choker
                        .record_download(key, data.len() as u64, std::time::Instant::now());
                }
                if !cancel.is_empty() {
                    let block = BlockRef {
                        piece,
                        offset,
                        len: data.len() as u32,
                    };
                    let st = self.state();
                    for k in cancel {
                        if let Some(e) = st.peers.get(&k) {
                            // A lost cancel only costs a duplicate block.
                            let _ = e.tx.try_send(PeerCommand::Cancel(block));
                        }
                    }
                }
                if let Some(c) = complete {
                    self.verify(c).await;
                }
                true
            }
        }
    }

    async fn verify(self: &Arc<Engine>, c: Complete) {
        let Ok(permit) = self.shared.hash_permits.clone().acquire_owned().await else {
            return;
        };
        let engine = self.clone();
        self.verifying.fetch_add(1, Ordering::SeqCst);
        // Not awaited: the peer goes on reading while the piece is hashed.
        tokio::task::spawn_blocking(move || {
            let expected = engine.piece_hashes[c.piece as usize];
            let ok = <[u8; 20]>::from(Sha1::digest(&*c.data)) == expected;
            let written = if ok {
                let offset = engine.geometry.piece_offset(c.piece);
                engine.storage.write_at(offset, &c.data)
            } else {
                Ok(())
            };
            drop(permit);
            engine.finish_piece(c, ok, written);
            if engine.verifying.fetch_sub(1, Ordering::SeqCst) == 1 {
                engine.verified_all.notify_waiters();
            }
        });
    }

    /// Waits until no piece is being hashed or written, so the verified
    /// set read next is final (a run ending must not lose a piece whose
    /// write is still under way).
    pub async fn settle(&self) {
        loop {
            let woken = self.verified_all.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if self.verifying.load(Ordering::SeqCst) == 0 {
                return;
            }
            woken.await;
        }
    }

    fn finish_piece(&self, c: Complete, ok: bool, written: std::io::Result<()>) {
        let len = c.data.len() as u64;
        if let Err(source) = written {
            let piece = c.piece;
            let err = if source.raw_os_error() == Some(libc::ENOSPC) {
                EngineError::DiskFull { piece, source }
            } else {
                EngineError::Write { piece, source }
            };
            self.state().picker.piece_failed(c.piece, c.data);
            self.fail(err);
            return;
        }
        if ok {
            let mut st = self.state();
            st.picker.piece_verified(c.piece, c.data);
            st.verified_log.push(c.piece);
            let n = st.verified_log.len();
            let complete = st.picker.is_complete();
            drop(st);
            self.stats.downloaded.fetch_add(len, Ordering::Relaxed);
            self.have_count.send_replace(n);
            if complete {
                self.phase.send_if_modified(|p| {
                    if matches!(p, Phase::Running) {
                        *p = Phase::Complete;
                        true
                    } else {
                        false
                    }
                });
            }
        } else {
            self.stats.hash_failures.fetch_add(1, Ordering::Relaxed);
            self.stats.wasted.fetch_add(len, Ordering::Relaxed);
            let mut st = self.state();
            let st = &mut *st;
            st.picker.piece_failed(c.piece, c.data);
            let sole = c.contributors.len() == 1;
            // A piece an already banned address took part in is explained
            // by it: the others who shared it get no strike (otherwise an
            // honest peer sharing the liar's in-flight pieces is banned too).
            let ips: Vec<IpAddr> = c
                .contributors
                .iter()
                .filter_map(|k| st.ips.get(k).copied())
                .collect();
            let liar_known = ips.iter().any(|ip| st.banned.contains(ip));
            for ip in ips {
                if liar_known {
                    continue;
                }
                let strikes = st.strikes.entry(ip).or_insert(0);
                *strikes += if sole { 2 } else { 1 };
                if *strikes >= BAN_STRIKES && st.banned.insert(ip) {
                    tracing::warn!(%ip, "banning peer: it sent data that failed the hash check");
                    for (k, e) in st.peers.iter().filter(|(_, e)| e.ip == ip) {
                        e.kill.cancel();
                        // Its requests go to others now, not when its task ends.
                        st.picker.release_all(*k);
                    }
                }
            }
            tracing::debug!(piece = c.piece, "piece failed its hash check");
        }
    }

    /// Stops the download with an error.
    pub fn fail(&self, err: EngineError) {
        tracing::debug!(error = %err, "engine failed");
        let err = Arc::new(err);
        self.phase.send_if_modified(|p| {
            if matches!(p, Phase::Running) {
                *p = Phase::Failed(err);
                true
            } else {
                false
            }
        });
        self.cancel.cancel();
    }
}
