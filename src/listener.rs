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

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::swarm::{Limits, PeerSlot};
use crate::types::InfoHash;
use crate::wire::Handshake;

/// Connections allowed to be mid-handshake at once.
pub const MAX_HALF_OPEN: usize = 64;
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
pub struct Registry {
    torrents: Arc<Mutex<HashMap<InfoHash, watch::Sender<Option<Entry>>>>>,
}

impl Registry {
    /// Makes a torrent known before it runs.
    pub fn reserve(&self, ih: InfoHash) {
        self.lock()
            .entry(ih)
            .or_insert_with(|| watch::channel(None).0);
    }

    /// The torrent's run is up: its peers are accepted.
    pub fn add(&self, engine: Arc<Engine>, run: CancellationToken) {
        let ih = engine.info_hash;
        let mut map = self.lock();
        let slot = map.entry(ih).or_insert_with(|| watch::channel(None).0);
        slot.send_replace(Some(Entry { engine, run }));
    }

    /// The run ended (paused, checking again, finished).
    pub fn remove(&self, ih: &InfoHash) {
        if let Some(slot) = self.lock().get(ih) {
            slot.send_replace(None);
        }
    }

    /// The torrent is gone from the session.
    pub fn forget(&self, ih: &InfoHash) {
        self.lock().remove(ih);
    }

    /// Torrents whose run is up.
    pub fn len(&self) -> usize {
        self.lock()
            .values()
            .filter(|s| s.borrow().is_some())
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get(&self, ih: &InfoHash) -> Option<watch::Receiver<Option<Entry>>> {
        self.lock().get(ih).map(|s| s.subscribe())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<InfoHash, watch::Sender<Option<Entry>>>> {
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
pub async fn run(
    listener: TcpListener,
    registry: Registry,
    limits: Limits,
    cancel: CancellationToken,
) {
    let half_open = Arc::new(Mutex::new(HalfOpen::default()));
    let waiting = Arc::new(Semaphore::new(MAX_WAITING));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            r = listener.accept() => {
                let Ok((mut stream, addr)) = r else { continue };
                let admitted = half_open.lock().unwrap_or_else(|e| e.into_inner()).admit(addr.ip());
                let Some((id, evicted)) = admitted else { continue };
                let (registry, cancel, half_open, limits, waiting) = (
                    registry.clone(),
                    cancel.clone(),
                    half_open.clone(),
                    limits.clone(),
                    waiting.clone(),
                );
                tasks.spawn(async move {
                    let mut buf = BytesMut::with_capacity(512);
                    let read = async {
                        loop {
                            match Handshake::decode(&mut buf) {
                                Ok(Some(h)) => return Some(h),
                                Ok(None) => {}
                                Err(_) => return None,
                            }
                            match stream.read_buf(&mut buf).await {
                                Ok(0) | Err(_) => return None,
                                Ok(_) => {}
                            }
                        }
                    };
                    let hs = tokio::select! {
                        h = tokio::time::timeout(HANDSHAKE_TIMEOUT, read) => h.ok().flatten(),
                        _ = evicted.cancelled() => None,
                        _ = cancel.cancelled() => None,
                    };
                    half_open.lock().unwrap_or_else(|e| e.into_inner()).conns.remove(&id);
                    let Some(hs) = hs else { return };
                    let Some(mut slot) = registry.get(&hs.info_hash) else {
                        tracing::debug!(%addr, "incoming peer for an unknown torrent");
                        return;
                    };
                    let current = slot.borrow_and_update().clone();
                    let entry = match current {
                        Some(e) => e,
                        None => {
                            // Checking or paused: wait a little, bounded.
                            let Ok(_permit) = waiting.try_acquire() else {
                                tracing::debug!(%addr, "incoming peer refused: too many waiting");
                                return;
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
                                _ = cancel.cancelled() => None,
                            };
                            let Some(e) = got else {
                                tracing::debug!(%addr, "incoming peer refused: its torrent is not running");
                                return;
                            };
                            e
                        }
                    };
                    let engine = entry.engine;
                    if engine.is_banned(addr.ip())
                        || engine.peers_from(addr.ip()) >= engine.config.max_per_ip
                    {
                        tracing::debug!(%addr, "incoming peer refused: banned or too many from its IP");
                        return;
                    }
                    let full = engine.peer_count() >= engine.config.max_peers || !limits.has_room();
                    if full && engine.evict_idle(1) == 0 {
                        tracing::debug!(%addr, "incoming peer refused: no free slot");
                        return;
                    }
                    let _slot = PeerSlot::take(&limits);
                    let token = entry.run.child_token();
                    let outcome = crate::peer::run(engine, stream, addr, token, Some((hs, buf))).await;
                    tracing::debug!(%addr, result = ?outcome.result, "incoming peer ended");
                });
            }
        }
    }
    tasks.shutdown().await;
}
