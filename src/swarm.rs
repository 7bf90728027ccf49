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

/// What one dial task reports: the address, how the connection went, and
/// whether it fell back to plaintext.
type Dialled = (SocketAddr, Outcome, bool);

/// Runs the connection manager on the channel peer sources feed until
/// `cancel` fires; `initial` addresses are dialled first.
pub async fn run(
    engine: Arc<Engine>,
    limits: Limits,
    mut rx: mpsc::Receiver<Vec<SocketAddr>>,
    initial: Vec<SocketAddr>,
    cancel: CancellationToken,
) {
    let mut s = Swarm {
        engine,
        limits,
        known: HashMap::new(),
        tasks: JoinSet::new(),
        half_open: Arc::new(AtomicUsize::new(0)),
        next_turnover: Instant::now(),
        cancel: cancel.clone(),
    };
    learn(&mut s.known, initial, Instant::now());
    loop {
        let now = Instant::now();
        let dialling = s.engine.config.connect_when_complete || !s.engine.is_complete();
        let wake = if dialling { s.dial(now) } else { None };
        s.engine.stats.known.store(s.known.len(), Ordering::Relaxed);
        // Sleep until something can change: an address, a finished
        // connection, a retry coming due, or (while full) a turnover.
        let wake = wake.map(|w| w.max(now + Duration::from_millis(50)));
        let may_dial = dialling && s.known.values().any(|k| !k.busy && !k.dead);
        let sleep = async {
            match wake {
                Some(t) => tokio::time::sleep_until(t).await,
                // Another torrent may free a session slot: look again.
                None if may_dial => tokio::time::sleep(Duration::from_secs(5)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            addrs = rx.recv() => match addrs {
                Some(addrs) => learn(&mut s.known, addrs, now),
                None => {
                    // Every source is gone; keep the connections we have.
                    if s.tasks.is_empty() { cancel.cancelled().await; break; }
                }
            },
            Some(done) = s.tasks.join_next(), if !s.tasks.is_empty() => {
                if let Ok(done) = done {
                    finished(&mut s.known, done);
                }
            }
            _ = sleep => {}
        }
    }
    // Peers see the token and end on their own; a straggler is aborted.
    let drain = async { while s.tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(2), drain)
        .await
        .is_err()
    {
        s.tasks.shutdown().await;
    }
}

/// One torrent's dialling state.
struct Swarm {
    engine: Arc<Engine>,
    limits: Limits,
    known: HashMap<SocketAddr, Known>,
    tasks: JoinSet<Dialled>,
    half_open: Arc<AtomicUsize>,
    next_turnover: Instant,
    cancel: CancellationToken,
}

impl Swarm {
    fn full(&self) -> bool {
        self.tasks.len() >= self.engine.config.max_peers || !self.limits.has_room()
    }

    fn fresh_waiting(&self) -> bool {
        self.known.values().any(|k| k.fresh && !k.busy)
    }

    /// Dials what it may now; returns when to look again (a retry coming
    /// due, or a turnover while full).
    fn dial(&mut self, now: Instant) -> Option<Instant> {
        let mut wake: Option<Instant> = None;
        if self.full() && now >= self.next_turnover && self.fresh_waiting() {
            self.next_turnover = now + TURNOVER_EVERY;
            let waiting = self.known.values().filter(|k| k.fresh && !k.busy).count();
            self.engine.evict_idle(waiting);
        }
        // Never-dialled addresses first, then those that failed least:
        // room made by turnover must not go back to the peers just closed.
        let mut order: Vec<(bool, u32, SocketAddr)> = Vec::new();
        if !self.full() {
            for (addr, k) in &self.known {
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
            if self.full()
                || self.half_open.load(Ordering::Relaxed) >= self.engine.config.max_half_open
            {
                break;
            }
            let e = &self.engine;
            // A peer that dialled us already would only be refused as a
            // duplicate.
            if e.is_banned(addr.ip())
                || e.peers_from(addr.ip()) >= e.config.max_per_ip
                || e.connected_to(addr)
            {
                continue;
            }
            let Some(k) = self.known.get_mut(&addr) else {
                continue;
            };
            k.busy = true;
            k.fresh = false;
            let plain_worked = k.plain_worked;
            self.spawn_dial(addr, plain_worked);
        }
        // Full now (perhaps filled just above): come back for turnover.
        if self.full() && self.fresh_waiting() {
            wake = Some(wake.map_or(self.next_turnover, |w| w.min(self.next_turnover)));
        }
        wake
    }

    /// One connection attempt and, once open, the peer's whole life.
    fn spawn_dial(&mut self, addr: SocketAddr, plain_worked: bool) {
        let (engine, cancel, half_open, limits) = (
            self.engine.clone(),
            self.cancel.child_token(),
            self.half_open.clone(),
            self.limits.clone(),
        );
        half_open.fetch_add(1, Ordering::Relaxed);
        self.tasks.spawn(async move {
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
                        peer::run(engine, o.link, addr, cancel, o.theirs, o.buf, true).await;
                    (addr, outcome, o.fell_back)
                }
                Err(e) => (addr, peer::failed(e), false),
            }
        });
    }
}

/// Files a finished connection's outcome against its address.
fn finished(known: &mut HashMap<SocketAddr, Known>, (addr, outcome, fell_back): Dialled) {
    if let Some(k) = known.get_mut(&addr) {
        k.plain_worked |= fell_back && outcome.handshaked;
        settle(k, &outcome);
    }
    if let Err(e) = &outcome.result {
        tracing::debug!(%addr, error = %e, handshaked = outcome.handshaked, "peer ended");
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
