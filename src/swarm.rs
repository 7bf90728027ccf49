//! The connection manager of one torrent: keeps up to `max_peers`
//! connections open from the addresses trackers, the DHT, PEX and the user
//! supply, within the torrent's and the session's caps on half-open
//! connects and on peers, with capped exponential backoff for addresses
//! that fail.
//!
//! When the torrent is full and untried addresses wait, peers that have
//! exchanged nothing lately are closed to make room (turnover), so idle
//! connections cannot keep the real swarm out.
//!
//! A magnet's swarm starts before there is an engine: its connections
//! fetch the metadata ([`MetadataPhase`]) and then go on in the peer loop
//! once the engine runs, with the addresses and their history kept.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, EngineConfig};
use crate::magnet::fetch::MetadataPhase;
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
pub(crate) struct Limits {
    /// Outgoing connects in flight in the whole process.
    pub half_open: Arc<Semaphore>,
    /// Peer connections in the whole process, and their cap.
    pub peers: Arc<AtomicUsize>,
    pub max_peers: usize,
}

impl Limits {
    pub(crate) fn new(max_peers: usize, max_half_open: usize) -> Limits {
        Limits {
            half_open: Arc::new(Semaphore::new(max_half_open.max(1))),
            peers: Arc::new(AtomicUsize::new(0)),
            max_peers: max_peers.max(1),
        }
    }

    /// Whether the process has room for one more peer.
    pub(crate) fn has_room(&self) -> bool {
        self.peers.load(Ordering::Relaxed) < self.max_peers
    }
}

/// A connection counted against the session's peer cap while it lives.
pub(crate) struct PeerSlot(Arc<AtomicUsize>);

impl PeerSlot {
    pub(crate) fn take(limits: &Limits) -> PeerSlot {
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
pub(crate) async fn run(
    engine: Arc<Engine>,
    limits: Limits,
    rx: mpsc::Receiver<Vec<SocketAddr>>,
    initial: Vec<SocketAddr>,
    cancel: CancellationToken,
) {
    let mut s = Swarm::new(Host::Engine(engine), None, limits, cancel);
    learn(&mut s.known, initial, Instant::now());
    s.run(rx).await;
}

/// Runs a magnet's connection manager: its connections fetch the metadata
/// for `phase`, then serve the engine `engine` names once it runs.
pub(crate) async fn run_magnet(
    phase: Arc<MetadataPhase>,
    engine: watch::Receiver<Option<Arc<Engine>>>,
    limits: Limits,
    rx: mpsc::Receiver<Vec<SocketAddr>>,
    cancel: CancellationToken,
) {
    Swarm::new(Host::Metadata(phase), Some(engine), limits, cancel)
        .run(rx)
        .await;
}

/// Whom the connections serve.
#[derive(Clone)]
enum Host {
    Engine(Arc<Engine>),
    /// A magnet before its engine runs.
    Metadata(Arc<MetadataPhase>),
}

impl Host {
    fn config(&self) -> &EngineConfig {
        match self {
            Host::Engine(e) => &e.config,
            Host::Metadata(m) => m.config(),
        }
    }

    fn max_peers(&self) -> usize {
        match self {
            Host::Engine(e) => e.config.max_peers,
            Host::Metadata(m) => m.max_conns(),
        }
    }
}

/// One torrent's dialling state.
struct Swarm {
    host: Host,
    /// A magnet's engine, once it runs; `None` when it runs from the start.
    engine_rx: Option<watch::Receiver<Option<Arc<Engine>>>>,
    limits: Limits,
    known: HashMap<SocketAddr, Known>,
    tasks: JoinSet<Dialled>,
    half_open: Arc<AtomicUsize>,
    next_turnover: Instant,
    cancel: CancellationToken,
}

impl Swarm {
    fn new(
        host: Host,
        engine_rx: Option<watch::Receiver<Option<Arc<Engine>>>>,
        limits: Limits,
        cancel: CancellationToken,
    ) -> Swarm {
        Swarm {
            host,
            engine_rx,
            limits,
            known: HashMap::new(),
            tasks: JoinSet::new(),
            half_open: Arc::new(AtomicUsize::new(0)),
            next_turnover: Instant::now(),
            cancel,
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Vec<SocketAddr>>) {
        let cancel = self.cancel.clone();
        loop {
            let now = Instant::now();
            let dialling = match &self.host {
                Host::Engine(e) => e.config.connect_when_complete || !e.is_complete(),
                Host::Metadata(_) => true,
            };
            let wake = if dialling { self.dial(now) } else { None };
            self.report();
            // Sleep until something can change: an address, a finished
            // connection, a retry coming due, (while full) a turnover, or
            // a magnet's engine starting.
            let wake = wake.map(|w| w.max(now + Duration::from_millis(50)));
            let may_dial = dialling && self.known.values().any(|k| !k.busy && !k.dead);
            let sleep = async {
                match wake {
                    Some(t) => tokio::time::sleep_until(t).await,
                    // Another torrent may free a session slot: look again.
                    None if may_dial => tokio::time::sleep(Duration::from_secs(5)).await,
                    None => std::future::pending().await,
                }
            };
            let waiting_engine = matches!(self.host, Host::Metadata(_));
            let engine_started = async {
                match self.engine_rx.as_mut() {
                    Some(rx) if waiting_engine => loop {
                        if let Some(e) = rx.borrow_and_update().clone() {
                            break e;
                        }
                        if rx.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    },
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                addrs = rx.recv() => match addrs {
                    Some(addrs) => learn(&mut self.known, addrs, now),
                    None => {
                        // Every source is gone; keep the connections we have.
                        if self.tasks.is_empty() { cancel.cancelled().await; break; }
                    }
                },
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    if let Ok(done) = done {
                        finished(&mut self.known, done);
                    }
                }
                e = engine_started => self.host = Host::Engine(e),
                _ = sleep => {}
            }
        }
        // Peers see the token and end on their own; a straggler is aborted.
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(2), drain)
            .await
            .is_err()
        {
            self.tasks.shutdown().await;
        }
    }

    /// Counts for the status line.
    fn report(&self) {
        match &self.host {
            Host::Engine(e) => e.stats.known.store(self.known.len(), Ordering::Relaxed),
            Host::Metadata(m) => {
                let status = m.status();
                status.known.store(self.known.len(), Ordering::Relaxed);
                status.connected.store(self.tasks.len(), Ordering::Relaxed);
            }
        }
    }

    fn full(&self) -> bool {
        self.tasks.len() >= self.host.max_peers() || !self.limits.has_room()
    }

    fn fresh_waiting(&self) -> bool {
        self.known.values().any(|k| k.fresh && !k.busy)
    }

    /// Dials what it may now; returns when to look again (a retry coming
    /// due, or a turnover while full).
    fn dial(&mut self, now: Instant) -> Option<Instant> {
        let mut wake: Option<Instant> = None;
        if let Host::Engine(e) = &self.host {
            if self.full() && now >= self.next_turnover && self.fresh_waiting() {
                self.next_turnover = now + TURNOVER_EVERY;
                let waiting = self.known.values().filter(|k| k.fresh && !k.busy).count();
                e.evict_idle(waiting);
            }
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
                || self.half_open.load(Ordering::Relaxed) >= self.host.config().max_half_open
            {
                break;
            }
            // A peer that dialled us already would only be refused as a
            // duplicate. (Before a magnet's engine runs, nobody can dial
            // us for it, and `known` holds one entry an address.)
            if let Host::Engine(e) = &self.host {
                if e.is_banned(addr.ip())
                    || e.peers_from(addr.ip()) >= e.config.max_per_ip
                    || e.connected_to(addr)
                {
                    continue;
                }
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
        if self.full() && self.fresh_waiting() && matches!(self.host, Host::Engine(_)) {
            wake = Some(wake.map_or(self.next_turnover, |w| w.min(self.next_turnover)));
        }
        wake
    }

    /// One connection attempt and, once open, the peer's whole life.
    fn spawn_dial(&mut self, addr: SocketAddr, plain_worked: bool) {
        let (cancel, half_open, limits) = (
            self.cancel.child_token(),
            self.half_open.clone(),
            self.limits.clone(),
        );
        let host = self.host.clone();
        let engine_rx = self.engine_rx.clone();
        half_open.fetch_add(1, Ordering::Relaxed);
        self.tasks.spawn(async move {
            let permit = tokio::select! {
                p = limits.half_open.clone().acquire_owned() => p.ok(),
                _ = cancel.cancelled() => None,
            };
            let opened = match (permit.is_some(), &host) {
                (false, _) => Err(PeerError::Closed),
                (true, Host::Engine(e)) => peer::open(e, addr, plain_worked).await,
                (true, Host::Metadata(m)) => m.open(addr, plain_worked).await,
            };
            drop(permit);
            half_open.fetch_sub(1, Ordering::Relaxed);
            let o = match opened {
                Ok(o) => o,
                Err(e) => return (addr, peer::failed(e), false),
            };
            let _slot = PeerSlot::take(&limits);
            let fell_back = o.fell_back;
            let outcome = match host {
                Host::Engine(e) => {
                    peer::run(e, o.link, addr, cancel, o.theirs, o.buf, true, None).await
                }
                Host::Metadata(m) => {
                    let rx = engine_rx.expect("a magnet's swarm has an engine channel");
                    match m.connection(o, addr, rx, &cancel).await {
                        Ok(h) => {
                            tracing::debug!(%addr, kept = h.kept.len(), "metadata connection handed over");
                            let mut outcome = peer::run(
                                h.engine,
                                h.link,
                                addr,
                                cancel,
                                h.theirs,
                                h.buf,
                                true,
                                Some(h.kept),
                            )
                            .await;
                            outcome.useful_bytes += h.metadata_bytes;
                            outcome
                        }
                        Err(e) => Outcome {
                            handshaked: true,
                            useful_bytes: 0,
                            result: Err(e),
                        },
                    }
                }
            };
            (addr, outcome, fell_back)
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
        Err(PeerError::InfoHashMismatch
            | PeerError::SelfConnection
            | PeerError::Banned
            | PeerError::BadMetadata)
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
