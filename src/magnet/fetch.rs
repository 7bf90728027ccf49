//! Fetching a magnet link's info dictionary (BEP-9) before the download
//! can start. Connections here speak just enough of the protocol — the
//! handshake with the BEP-10 bit, the extended handshake and `ut_metadata`
//! — to assemble the dictionary from several peers at once.
//!
//! The bookkeeping (which piece from whom, the size cap, the hash check) is
//! the sans-IO [`super::metadata::Fetch`]. Peers whose data fails the check
//! are disconnected and never dialled again; every address seen is handed
//! on, so the download that follows starts with the whole swarm.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::metadata::{self, MetadataError, Progress};
use crate::extension::{self, ExtHandshake, MetadataMsg};
use crate::mse::Encryption;
use crate::peer::{self, PeerError};
use crate::transport::{self, Dial, DialOpts, Link};
use crate::types::{InfoHash, PeerId};
use crate::wire::{self, Handshake, Message, MAX_FRAME};

/// A connection that sends nothing for this long is closed.
const IDLE: Duration = Duration::from_secs(30);
/// Attempts per address before it is forgotten.
const MAX_ATTEMPTS: u32 = 3;
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Addresses remembered at most.
const MAX_KNOWN: usize = 5_000;
/// The piece count is unknown here: allow the bitfield of the largest
/// torrent whose info dictionary we accept (20 bytes of hash a piece).
const MAX_FRAME_HERE: usize = {
    let bitfield = (metadata::MAX_SIZE / 20 / 8) as usize + 1;
    if bitfield > MAX_FRAME {
        bitfield
    } else {
        MAX_FRAME
    }
};

#[derive(Debug, Clone)]
pub struct FetchConfig {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    /// Local address outgoing connections bind to.
    pub bind_ip: Option<IpAddr>,
    /// Our peer port, told to peers in the extended handshake.
    pub listen_port: u16,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    /// Connections at once.
    pub max_conns: usize,
    pub encryption: Encryption,
}

/// Progress for the "fetching metadata" line.
#[derive(Debug, Default)]
pub struct FetchStatus {
    pub known: AtomicUsize,
    pub connected: AtomicUsize,
    /// Size of the dictionary being assembled (0: not known yet).
    pub size: AtomicU64,
    pub received: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("interrupted while fetching the metadata")]
    Interrupted,
}

/// The verified info dictionary, and every peer address seen meanwhile.
#[derive(Debug)]
pub struct Fetched {
    pub info: Vec<u8>,
    pub peers: Vec<SocketAddr>,
}

type Key = metadata::PeerKey;

struct Shared {
    cfg: FetchConfig,
    fetch: Mutex<metadata::Fetch>,
    done: watch::Sender<Option<Arc<Vec<u8>>>>,
    conns: Mutex<HashMap<Key, (SocketAddr, CancellationToken)>>,
    liars: Mutex<HashSet<SocketAddr>>,
    status: Arc<FetchStatus>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Known {
    busy: bool,
    attempts: u32,
    retry_at: Instant,
}

/// Dials the addresses arriving on `addrs` until the info dictionary is
/// assembled and matches the info-hash, or `cancel` fires.
pub async fn fetch(
    cfg: FetchConfig,
    addrs: &mut mpsc::Receiver<Vec<SocketAddr>>,
    status: Arc<FetchStatus>,
    cancel: &CancellationToken,
) -> Result<Fetched, FetchError> {
    let (done, mut done_rx) = watch::channel(None);
    let shared = Arc::new(Shared {
        fetch: Mutex::new(metadata::Fetch::new(cfg.info_hash)),
        cfg,
        done,
        conns: Mutex::new(HashMap::new()),
        liars: Mutex::new(HashSet::new()),
        status,
    });
    let stop = cancel.child_token();
    let mut known: HashMap<SocketAddr, Known> = HashMap::new();
    let mut tasks: JoinSet<SocketAddr> = JoinSet::new();
    let mut next_key: Key = 1;
    let mut sources_open = true;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        let now = Instant::now();
        let liars = lock(&shared.liars).clone();
        for (addr, k) in known.iter_mut() {
            if tasks.len() >= shared.cfg.max_conns {
                break;
            }
            if k.busy || k.attempts >= MAX_ATTEMPTS || k.retry_at > now || liars.contains(addr) {
                continue;
            }
            k.busy = true;
            k.attempts += 1;
            let (key, addr, sh, kill) = (next_key, *addr, shared.clone(), stop.child_token());
            next_key += 1;
            lock(&shared.conns).insert(key, (addr, kill.clone()));
            tasks.spawn(async move {
                let r = connection(&sh, addr, key, &kill).await;
                if let Err(e) = &r {
                    tracing::debug!(%addr, "metadata peer ended: {e}");
                }
                lock(&sh.fetch).remove_peer(key);
                lock(&sh.conns).remove(&key);
                addr
            });
        }
        shared.status.known.store(known.len(), Ordering::Relaxed);
        shared
            .status
            .connected
            .store(tasks.len(), Ordering::Relaxed);
        tokio::select! {
            _ = cancel.cancelled() => break Err(FetchError::Interrupted),
            r = done_rx.changed() => {
                if r.is_ok() {
                    if let Some(info) = done_rx.borrow_and_update().clone() {
                        break Ok(info);
                    }
                }
            }
            a = addrs.recv(), if sources_open => match a {
                Some(list) => {
                    for a in list {
                        if known.len() < MAX_KNOWN && a.port() != 0 && !a.ip().is_unspecified() {
                            known.entry(a).or_insert(Known { busy: false, attempts: 0, retry_at: now });
                        }
                    }
                }
                // Every source is gone: keep going with what is known.
                None => sources_open = false,
            },
            Some(r) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(addr) = r {
                    if let Some(k) = known.get_mut(&addr) {
                        k.busy = false;
                        k.retry_at = Instant::now() + RETRY_AFTER * k.attempts;
                    }
                }
            }
            _ = tick.tick() => {}
        }
    };
    stop.cancel();
    tasks.shutdown().await;
    let info = result?;
    let liars = lock(&shared.liars).clone();
    let peers = known.into_keys().filter(|a| !liars.contains(a)).collect();
    Ok(Fetched {
        info: info.to_vec(),
        peers,
    })
}

/// Why a metadata connection ended (logged).
#[derive(Debug, thiserror::Error)]
enum End {
    #[error(transparent)]
    Peer(#[from] PeerError),
    #[error("{0}")]
    Refused(&'static str),
    #[error("timed out: peer went silent")]
    Silent,
    #[error("stopped")]
    Killed,
}

impl From<std::io::Error> for End {
    fn from(e: std::io::Error) -> End {
        End::Peer(PeerError::Io(e))
    }
}

/// One peer: handshakes, then asks it for pieces of the dictionary.
async fn connection(
    sh: &Shared,
    addr: SocketAddr,
    key: Key,
    kill: &CancellationToken,
) -> Result<(), End> {
    let cfg = &sh.cfg;
    let mut hs = Handshake::new(cfg.info_hash, cfg.peer_id);
    hs.set(wire::RESERVED_EXTENSION);
    let opts = DialOpts {
        bind_ip: cfg.bind_ip,
        connect_timeout: cfg.connect_timeout,
        handshake_timeout: cfg.handshake_timeout,
    };
    let how = Dial::choose(cfg.encryption, false, false);
    let opened = tokio::select! {
        o = transport::open(&opts, addr, &hs, how) => o.map_err(PeerError::from)?,
        _ = kill.cancelled() => return Err(End::Killed),
    };
    let (mut stream, theirs, mut buf) = (opened.link, opened.theirs, opened.buf);
    peer::check_handshake(&theirs, &cfg.info_hash, &cfg.peer_id)?;
    if !theirs.has(wire::RESERVED_EXTENSION) {
        return Err(End::Refused("no extension protocol"));
    }
    // No PEX before the metadata says whether the torrent is private.
    let ours = ExtHandshake::ours(false, cfg.listen_port, addr.ip());
    send(
        &mut stream,
        Message::Extended {
            id: extension::HANDSHAKE,
            payload: Bytes::from(ours.encode()),
        },
    )
    .await?;

    let mut their_id: Option<u8> = None;
    let mut last_recv = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        while let Some(msg) = wire::decode_message(&mut buf, MAX_FRAME_HERE)
            .map_err(|_| End::Refused("malformed message"))?
        {
            let Message::Extended { id, payload } = msg else {
                continue;
            };
            if id == extension::HANDSHAKE {
                let Ok(h) = ExtHandshake::decode(&payload) else {
                    return Err(End::Refused("malformed extended handshake"));
                };
                let (Some(id), Some(size)) = (h.id(extension::UT_METADATA), h.metadata_size) else {
                    return Err(End::Refused("no metadata to offer"));
                };
                if lock(&sh.fetch).add_peer(key, size).is_err() {
                    return Err(End::Refused("metadata size out of bounds"));
                }
                their_id = Some(id);
            } else if id == extension::OUR_UT_METADATA {
                on_metadata(sh, key, &payload)?;
            }
        }
        if let Some(id) = their_id {
            request_more(sh, key, id, &mut stream).await?;
        }
        tokio::select! {
            _ = kill.cancelled() => return Err(End::Killed),
            n = stream.read_buf(&mut buf) => {
                if n? == 0 {
                    return Err(End::Refused("closed"));
                }
                last_recv = Instant::now();
            }
            _ = tick.tick() => {
                if last_recv.elapsed() > IDLE {
                    return Err(End::Silent);
                }
            }
        }
    }
}

fn on_metadata(sh: &Shared, key: Key, payload: &Bytes) -> Result<(), End> {
    let Ok(msg) = MetadataMsg::decode(payload) else {
        return Ok(());
    };
    let mut f = lock(&sh.fetch);
    match msg {
        MetadataMsg::Request { .. } => {}
        MetadataMsg::Reject { piece } => f.on_reject(key, piece),
        MetadataMsg::Data {
            piece,
            total_size,
            data,
        } => match f.on_data(key, piece, total_size, &data, std::time::Instant::now()) {
            Ok(Progress::Done(info)) => {
                sh.status
                    .received
                    .store(info.len() as u64, Ordering::Relaxed);
                sh.done.send_replace(Some(Arc::new(info)));
            }
            Ok(Progress::Stored | Progress::Ignored) => {
                sh.status
                    .size
                    .store(f.size().unwrap_or(0), Ordering::Relaxed);
                sh.status.received.store(f.received(), Ordering::Relaxed);
            }
            Err(MetadataError::HashMismatch { peers }) => {
                drop(f);
                if peers.is_empty() {
                    tracing::warn!(
                        "metadata from several peers failed the hash check; fetching from one peer at a time"
                    );
                } else {
                    tracing::warn!(
                        "metadata from a peer failed the hash check; dropping it, asking others"
                    );
                }
                let conns = lock(&sh.conns);
                let mut liars = lock(&sh.liars);
                for p in &peers {
                    if let Some((addr, kill)) = conns.get(p) {
                        liars.insert(*addr);
                        kill.cancel();
                    }
                }
                sh.status.received.store(0, Ordering::Relaxed);
                if peers.contains(&key) {
                    return Err(End::Refused("sent metadata that fails the hash check"));
                }
            }
            Err(_) => {}
        },
    }
    Ok(())
}

async fn request_more(sh: &Shared, key: Key, their_id: u8, stream: &mut Link) -> Result<(), End> {
    let pieces: Vec<u32> = {
        let mut f = lock(&sh.fetch);
        let now = std::time::Instant::now();
        std::iter::from_fn(|| f.next_request(key, now))
            .take(8)
            .collect()
    };
    for piece in pieces {
        send(
            stream,
            Message::Extended {
                id: their_id,
                payload: Bytes::from(MetadataMsg::Request { piece }.encode()),
            },
        )
        .await?;
    }
    Ok(())
}

async fn send(stream: &mut Link, m: Message) -> Result<(), End> {
    let mut b = BytesMut::new();
    m.encode(&mut b);
    stream.write_all(&mut b).await?;
    Ok(())
}
