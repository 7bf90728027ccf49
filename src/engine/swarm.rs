//! The connection manager: keeps up to `max_peers` connections open from
//! the addresses trackers and the user supply, with a cap on half-open
//! connects and capped exponential backoff for addresses that fail.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Engine;
use crate::peer::{self, Outcome, PeerError};

/// Addresses remembered at most; more are ignored until some are dropped.
const MAX_KNOWN: usize = 5_000;
/// Failed attempts before an address is forgotten.
const MAX_FAILS: u32 = 6;
const RETRY_BASE: Duration = Duration::from_secs(5);
const RETRY_CAP: Duration = Duration::from_secs(300);

/// Feeds peer addresses to a running swarm.
#[derive(Clone)]
pub struct SwarmHandle {
    tx: mpsc::Sender<Vec<SocketAddr>>,
}

impl SwarmHandle {
    /// Adds addresses; waits only if the swarm is far behind.
    pub async fn add(&self, addrs: Vec<SocketAddr>) {
        let _ = self.tx.send(addrs).await;
    }

    /// The raw channel, for sources that must not know the engine.
    pub fn sender(&self) -> mpsc::Sender<Vec<SocketAddr>> {
        self.tx.clone()
    }
}

#[derive(Debug)]
struct Known {
    busy: bool,
    fails: u32,
    retry_at: Instant,
    dead: bool,
}

/// Starts the connection manager on the channel peer sources feed (`tx`
/// goes to PEX too); it ends when `cancel` fires.
pub fn spawn(
    engine: Arc<Engine>,
    tx: mpsc::Sender<Vec<SocketAddr>>,
    rx: mpsc::Receiver<Vec<SocketAddr>>,
    cancel: CancellationToken,
) -> (SwarmHandle, tokio::task::JoinHandle<()>) {
    let _ = engine.pex.set(tx.clone());
    let task = tokio::spawn(run(engine, rx, cancel));
    (SwarmHandle { tx }, task)
}

async fn run(
    engine: Arc<Engine>,
    mut rx: mpsc::Receiver<Vec<SocketAddr>>,
    cancel: CancellationToken,
) {
    let mut known: HashMap<SocketAddr, Known> = HashMap::new();
    let mut tasks: JoinSet<(SocketAddr, Outcome)> = JoinSet::new();
    let half_open = Arc::new(AtomicUsize::new(0));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Open connections while there is room.
        let now = Instant::now();
        if engine.config.connect_when_complete || !engine.is_complete() {
            for (addr, k) in known.iter_mut() {
                if tasks.len() >= engine.config.max_peers
                    || half_open.load(Ordering::Relaxed) >= engine.config.max_half_open
                {
                    break;
                }
                if k.busy || k.dead || k.retry_at > now || engine.is_banned(addr.ip()) {
                    continue;
                }
                k.busy = true;
                let (engine, addr, cancel, half_open) = (
                    engine.clone(),
                    *addr,
                    cancel.child_token(),
                    half_open.clone(),
                );
                half_open.fetch_add(1, Ordering::Relaxed);
                tasks.spawn(async move {
                    let stream = peer::connect(&engine, addr).await;
                    half_open.fetch_sub(1, Ordering::Relaxed);
                    let outcome = match stream {
                        Ok(s) => peer::run(engine, s, addr, cancel, None).await,
                        Err(e) => peer::failed(e),
                    };
                    (addr, outcome)
                });
            }
        }
        engine.stats.known.store(known.len(), Ordering::Relaxed);
        tokio::select! {
            _ = cancel.cancelled() => break,
            addrs = rx.recv() => {
                let Some(addrs) = addrs else { continue };
                for a in addrs {
                    if known.len() >= MAX_KNOWN || a.port() == 0 || a.ip().is_unspecified() {
                        continue;
                    }
                    known.entry(a).or_insert(Known { busy: false, fails: 0, retry_at: now, dead: false });
                }
            }
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                let Ok((addr, outcome)) = done else { continue };
                if let Some(k) = known.get_mut(&addr) {
                    settle(k, &outcome);
                }
                if let Err(e) = &outcome.result {
                    tracing::debug!(%addr, error = %e, handshaked = outcome.handshaked, "peer ended");
                }
            }
            _ = tick.tick() => {}
        }
    }
    tasks.shutdown().await;
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
