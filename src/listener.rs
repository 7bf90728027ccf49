//! The session's peer listener: accepts TCP connections, reads the
//! handshake, and hands the connection to the running torrent whose
//! info-hash it names.
//!
//! Slots cannot be squatted: connections mid-handshake are capped, and
//! when the cap is reached the oldest one is closed (an honest peer sends
//! its handshake at once, a squatter never does); each has a deadline;
//! a full torrent makes room by closing a peer that exchanged nothing
//! lately, else refuses the newcomer; one IP gets a bounded share.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::mse::{self, Encryption};
use crate::swarm::{Limits, PeerSlot};
use crate::transport;
use crate::types::InfoHash;

/// Connections allowed to be mid-handshake at once.
pub(crate) const MAX_HALF_OPEN: usize = 64;
/// Of which from one IP address.
const MAX_HALF_OPEN_PER_IP: usize = 8;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct Entry {
    engine: Arc<Engine>,
    /// The torrent's current run: peers get child tokens of it.
    run: CancellationToken,
}

/// The session's torrents as the listener sees them: each slot holds the
/// current run, or `None` while the torrent is checking or paused (a peer
/// arriving then waits a little for the run to start).
#[derive(Default, Clone)]
pub(crate) struct Registry {
    torrents: Arc<Mutex<Torrents>>,
}

#[derive(Default)]
struct Torrents {
    slots: HashMap<InfoHash, watch::Sender<Option<Entry>>>,
    /// `H("req2", info-hash)` → info-hash, to find an MSE peer's torrent
    /// with one lookup.
    by_req2: HashMap<[u8; 20], InfoHash>,
}

impl Torrents {
    fn slot(&mut self, ih: InfoHash) -> &watch::Sender<Option<Entry>> {
        if !self.slots.contains_key(&ih) {
            self.by_req2.insert(mse::req2(&ih), ih);
        }
        self.slots
            .entry(ih)
            .or_insert_with(|| watch::channel(None).0)
    }
}

impl Registry {
    /// Makes a torrent known before it runs.
    pub(crate) fn reserve(&self, ih: InfoHash) {
        self.lock().slot(ih);
    }

    /// The torrent's run is up: its peers are accepted.
    pub(crate) fn add(&self, engine: Arc<Engine>, run: CancellationToken) {
        let ih = engine.info_hash;
        let mut map = self.lock();
        map.slot(ih).send_replace(Some(Entry { engine, run }));
    }

    /// The run ended (paused, checking again, finished).
    pub(crate) fn remove(&self, ih: &InfoHash) {
        if let Some(slot) = self.lock().slots.get(ih) {
            slot.send_replace(None);
        }
    }

    /// The torrent is gone from the session.
    pub(crate) fn forget(&self, ih: &InfoHash) {
        let mut map = self.lock();
        map.slots.remove(ih);
        map.by_req2.remove(&mse::req2(ih));
    }

    /// Torrents whose run is up.
    pub(crate) fn len(&self) -> usize {
        self.lock()
            .slots
            .values()
            .filter(|s| s.borrow().is_some())
            .count()
    }

    fn get(&self, ih: &InfoHash) -> Option<watch::Receiver<Option<Entry>>> {
        self.lock().slots.get(ih).map(|s| s.subscribe())
    }

    /// The torrent an MSE peer's obfuscated key names.
    fn by_req2(&self, req2: &[u8; 20]) -> Option<InfoHash> {
        self.lock().by_req2.get(req2).copied()
    }

    fn lock(&self) -> MutexGuard<'_, Torrents> {
        self.torrents.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Peers waiting for their torrent's run to start, at most.
const MAX_WAITING: usize = 64;
/// How long such a peer may wait.
const WAIT_FOR_RUN: Duration = Duration::from_secs(10);

/// Connections being handshaken, oldest first.
#[derive(Default)]
struct HalfOpen {
    next: u64,
    conns: BTreeMap<u64, (IpAddr, CancellationToken)>,
}

impl HalfOpen {
    /// Admits a connection, closing the oldest when full; `None` if its IP
    /// already has its share.
    fn admit(&mut self, ip: IpAddr) -> Option<(u64, CancellationToken)> {
        if self.conns.values().filter(|(i, _)| *i == ip).count() >= MAX_HALF_OPEN_PER_IP {
            return None;
        }
        if self.conns.len() >= MAX_HALF_OPEN {
            if let Some((_, (_, oldest))) = self.conns.pop_first() {
                oldest.cancel();
            }
        }
        let id = self.next;
        self.next += 1;
        let token = CancellationToken::new();
        self.conns.insert(id, (ip, token.clone()));
        Some((id, token))
    }
}

/// Accepts until `cancel` fires.
pub(crate) async fn run(
    listener: TcpListener,
    registry: Registry,
    limits: Limits,
    encryption: Encryption,
    cancel: CancellationToken,
) {
    let ctx = Incoming {
        registry,
        limits,
        encryption,
        cancel,
        half_open: Arc::new(Mutex::new(HalfOpen::default())),
        waiting: Arc::new(Semaphore::new(MAX_WAITING)),
    };
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = ctx.cancel.cancelled() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            r = listener.accept() => {
                let Ok((stream, addr)) = r else { continue };
                let _ = stream.set_nodelay(true);
                let admitted = ctx.half_open().admit(addr.ip());
                let Some((id, evicted)) = admitted else { continue };
                tasks.spawn(ctx.clone().serve(stream, addr, id, evicted));
            }
        }
    }
    tasks.shutdown().await;
}

/// What every incoming connection's task shares.
#[derive(Clone)]
struct Incoming {
    registry: Registry,
    limits: Limits,
    encryption: Encryption,
    cancel: CancellationToken,
    half_open: Arc<Mutex<HalfOpen>>,
    /// Bounds the connections waiting for their torrent to run.
    waiting: Arc<Semaphore>,
}

impl Incoming {
    fn half_open(&self) -> MutexGuard<'_, HalfOpen> {
        self.half_open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One incoming connection: its handshake (half-open slot `id`, closed
    /// early when `evicted`), the torrent it names, then the peer's life.
    async fn serve(
        self,
        stream: tokio::net::TcpStream,
        addr: std::net::SocketAddr,
        id: u64,
        evicted: CancellationToken,
    ) {
        let lookup = |h: &[u8; 20]| self.registry.by_req2(h);
        let read = transport::handshake_in(stream, self.encryption, lookup);
        let got = tokio::select! {
            h = tokio::time::timeout(HANDSHAKE_TIMEOUT, read) => h.ok(),
            _ = evicted.cancelled() => None,
            _ = self.cancel.cancelled() => None,
        };
        self.half_open().conns.remove(&id);
        let (link, hs, buf) = match got {
            Some(Ok(x)) => x,
            Some(Err(e)) => {
                tracing::debug!(%addr, error = %e, "incoming handshake failed");
                return;
            }
            None => return,
        };
        let Some(entry) = self.running(&hs.info_hash, addr).await else {
            return;
        };
        let engine = entry.engine;
        if engine.is_banned(addr.ip()) || engine.peers_from(addr.ip()) >= engine.config.max_per_ip {
            tracing::debug!(%addr, "incoming peer refused: banned or too many from its IP");
            return;
        }
        let full = engine.peer_count() >= engine.config.max_peers || !self.limits.has_room();
        if full && engine.evict_idle(1) == 0 {
            tracing::debug!(%addr, "incoming peer refused: no free slot");
            return;
        }
        let _slot = PeerSlot::take(&self.limits);
        let token = entry.run.child_token();
        let encrypted = link.encrypted();
        tracing::debug!(%addr, encrypted, "incoming peer handshaken");
        let outcome = crate::peer::run(engine, link, addr, token, hs, buf, false, None).await;
        tracing::debug!(%addr, result = ?outcome.result, "incoming peer ended");
    }

    /// The running torrent `ih` names; while it is checking or paused the
    /// connection waits a little (bounded in number and time).
    async fn running(&self, ih: &InfoHash, addr: std::net::SocketAddr) -> Option<Entry> {
        let Some(mut slot) = self.registry.get(ih) else {
            tracing::debug!(%addr, "incoming peer for an unknown torrent");
            return None;
        };
        if let Some(e) = slot.borrow_and_update().clone() {
            return Some(e);
        }
        let Ok(_permit) = self.waiting.try_acquire() else {
            tracing::debug!(%addr, "incoming peer refused: too many waiting");
            return None;
        };
        let up = async {
            loop {
                if slot.changed().await.is_err() {
                    return None;
                }
                if let Some(e) = slot.borrow_and_update().clone() {
                    return Some(e);
                }
            }
        };
        let got = tokio::select! {
            e = tokio::time::timeout(WAIT_FOR_RUN, up) => e.ok().flatten(),
            _ = self.cancel.cancelled() => None,
        };
        if got.is_none() {
            tracing::debug!(%addr, "incoming peer refused: its torrent is not running");
        }
        got
    }
}
