//! The connection manager of one torrent: keeps up to `max_peers`
//! connections open from the addresses trackers, the DHT, PEX and the user
//! supply, within the torrent's and the session's caps on half-open
//! connects and on peers, with capped exponential backoff for addresses
//! that fail.
//!
//! When the torrent is full and untried addresses wait, peers that have
//! exchanged nothing lately are closed to make room (turnover), so idle
//! connections cannot keep the real swarm out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::peer::{self, Outcome, PeerError};

/// Addresses remembered at most; more are ignored until some are dropped.
const MAX_KNOWN: usize = 5_000;
/// Failed attempts before an address is forgotten.
const MAX_FAILS: u32 = 6;
const RETRY_BASE: Duration = Duration::from_secs(5);
const RETRY_CAP: Duration = Duration::from_secs(300);
/// How often a full torrent looks for idle peers to replace.
const TURNOVER_EVERY: Duration = Duration::from_secs(1);

/// Caps the session shares between its torrents.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Outgoing connects in flight in the whole process.
    pub half_open: Arc<Semaphore>,
    /// Peer connections in the whole process, and their cap.
    pub peers: Arc<AtomicUsize>,
    pub max_peers: usize,
}

impl Limits {
    pub fn new(max_peers: usize, max_half_open: usize) -> Limits {
        Limits {
            half_open: Arc::new(Semaphore::new(max_half_open.max(1))),
            peers: Arc::new(AtomicUsize::new(0)),
            max_peers: max_peers.max(1),
        }
    }

    /// Whether the process has room for one more peer.
    pub fn has_room(&self) -> bool {
        self.peers.load(Ordering::Relaxed) < self.max_peers
    }
}

/// A connection counted against the session's peer cap while it lives.
pub struct PeerSlot(Arc<AtomicUsize>);

impl PeerSlot {
    pub fn take(limits: &Limits) -> PeerSlot {
        limits.peers.fetch_add(1, Ordering::Relaxed);
        PeerSlot(limits.peers.clone())
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Known {
    busy: bool,
    fails: u32,
    retry_at: Instant,
    dead: bool,
    /// Never dialled yet: worth making room for.
    fresh: bool,
    /// The encrypted handshake failed and plaintext then worked: dial it
    /// in plaintext (under `prefer`).
    plain_worked: bool,
}

/// Runs the connection manager on the channel peer sources feed until
/// `cancel` fires; `initial` addresses are dialled first.
pub async fn run(
    engine: Arc<Engine>,
    limits: Limits,
    mut rx: mpsc::Receiver<Vec<SocketAddr>>,
    initial: Vec<SocketAddr>,
    cancel: CancellationToken,
) {
    let mut known: HashMap<SocketAddr, Known> = HashMap::new();
    let mut tasks: JoinSet<(SocketAddr, Outcome, bool)> = JoinSet::new();
    let half_open = Arc::new(AtomicUsize::new(0));
    let mut next_turnover = Instant::now();
    learn(&mut known, initial, Instant::now());
    loop {
        let now = Instant::now();
        let dialling = engine.config.connect_when_complete || !engine.is_complete();
        let mut wake: Option<Instant> = None;
        if dialling {
            let full = tasks.len() >= engine.config.max_peers || !limits.has_room();
            if full && now >= next_turnover && known.values().any(|k| k.fresh && !k.busy) {
                next_turnover = now + TURNOVER_EVERY;
                let waiting = known.values().filter(|k| k.fresh && !k.busy).count();
                engine.evict_idle(waiting);
            }
            // Never-dialled addresses first, then those that failed least:
            // room made by turnover must not go back to the peers just
            // closed.
            let mut order: Vec<(bool, u32, SocketAddr)> = Vec::new();
            if tasks.len() < engine.config.max_peers && limits.has_room() {
                for (addr, k) in &known {
                    if k.busy || k.dead {
                        continue;
                    }
                    if k.retry_at > now {
                        wake = Some(wake.map_or(k.retry_at, |w| w.min(k.retry_at)));
                        continue;
                    }
                    order.push((!k.fresh, k.fails, *addr));
                }
                order.sort_unstable_by_key(|&(stale, fails, _)| (stale, fails));
            }
            for (_, _, addr) in order {
                if tasks.len() >= engine.config.max_peers
                    || !limits.has_room()
                    || half_open.load(Ordering::Relaxed) >= engine.config.max_half_open
                {
                    break;
                }
                let Some(k) = known.get_mut(&addr) else {
                    continue;
                };
                if engine.is_banned(addr.ip()) {
                    continue;
                }
                if engine.peers_from(addr.ip()) >= engine.config.max_per_ip {
                    continue;
                }
                // It dialled us already: a second connection would only be
                // refused as a duplicate.
                if engine.connected_to(addr) {
                    continue;
                }
                k.busy = true;
                k.fresh = false;
                let plain_worked = k.plain_worked;
                let (engine, addr, cancel, half_open, limits) = (
                    engine.clone(),
                    addr,
                    cancel.child_token(),
                    half_open.clone(),
                    limits.clone(),
                );
                half_open.fetch_add(1, Ordering::Relaxed);
                tasks.spawn(async move {
                    let permit = tokio::select! {
                        p = limits.half_open.clone().acquire_owned() => p.ok(),
                        _ = cancel.cancelled() => None,
                    };
                    let opened = match permit {
                        Some(_) => peer::open(&engine, addr, plain_worked).await,
                        None => Err(PeerError::Closed),
                    };
                    drop(permit);
                    half_open.fetch_sub(1, Ordering::Relaxed);
                    match opened {
                        Ok(o) => {
                            let _slot = PeerSlot::take(&limits);
                            let outcome =
                                peer::run(engine, o.link, addr, cancel, o.theirs, o.buf, true)
                                    .await;
                            (addr, outcome, o.fell_back)
                        }
                        Err(e) => (addr, peer::failed(e), false),
                    }
                });
            }
            // Full now (perhaps filled just above): come back for turnover.
            let full = tasks.len() >= engine.config.max_peers || !limits.has_room();
            if full && known.values().any(|k| k.fresh && !k.busy) {
                wake = Some(wake.map_or(next_turnover, |w| w.min(next_turnover)));
            }
        }
        engine.stats.known.store(known.len(), Ordering::Relaxed);
        // Sleep until something can change: an address, a finished
        // connection, a retry coming due, or (while full) a turnover.
        let wake = wake.map(|w| w.max(now + Duration::from_millis(50)));
        let sleep = async {
            match wake {
                Some(t) => tokio::time::sleep_until(t).await,
                // Another torrent may free a session slot: look again.
                None if dialling && known.values().any(|k| !k.busy && !k.dead) => {
                    tokio::time::sleep(Duration::from_secs(5)).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            addrs = rx.recv() => match addrs {
                Some(addrs) => learn(&mut known, addrs, now),
                None => {
                    // Every source is gone; keep the connections we have.
                    if tasks.is_empty() { cancel.cancelled().await; break; }
                }
            },
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                let Ok((addr, outcome, fell_back)) = done else { continue };
                if let Some(k) = known.get_mut(&addr) {
                    k.plain_worked |= fell_back && outcome.handshaked;
                    settle(k, &outcome);
                }
                if let Err(e) = &outcome.result {
                    tracing::debug!(%addr, error = %e, handshaked = outcome.handshaked, "peer ended");
                }
            }
            _ = sleep => {}
        }
    }
    // Peers see the token and end on their own; a straggler is aborted.
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(2), drain)
        .await
        .is_err()
    {
        tasks.shutdown().await;
    }
}

fn learn(known: &mut HashMap<SocketAddr, Known>, addrs: Vec<SocketAddr>, now: Instant) {
    for a in addrs {
        if known.len() >= MAX_KNOWN || a.port() == 0 || a.ip().is_unspecified() {
            continue;
        }
        known.entry(a).or_insert(Known {
            busy: false,
            fails: 0,
            retry_at: now,
            dead: false,
            fresh: true,
            plain_worked: false,
        });
    }
}

/// Decides when (and whether) to dial an address again.
fn settle(k: &mut Known, outcome: &Outcome) {
    k.busy = false;
    if matches!(
        outcome.result,
        Err(PeerError::InfoHashMismatch | PeerError::SelfConnection | PeerError::Banned)
    ) {
        k.dead = true;
        return;
    }
    if outcome.useful_bytes > 0 {
        k.fails = 0;
    } else {
        k.fails += 1;
    }
    if k.fails >= MAX_FAILS {
        k.dead = true;
        return;
    }
    let backoff = RETRY_BASE
        .saturating_mul(1 << k.fails.min(8))
        .min(RETRY_CAP);
    let jitter = Duration::from_millis(rand::random::<u64>() % 1000);
    k.retry_at = Instant::now() + backoff / 2 + jitter;
}
