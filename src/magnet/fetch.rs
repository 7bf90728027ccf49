//! A magnet link's metadata phase (BEP-9) on the swarm's own connections.
//!
//! Until the info dictionary is known, the swarm (`swarm::run_magnet`)
//! dials as for a download and runs each connection through
//! [`MetadataPhase::connection`]: our extended handshake (and `have none`
//! with the fast extension, so our first message is the one BEP-6 asks
//! for), then `ut_metadata` requests. Everything else the peer says is
//! kept. Once the dictionary is verified and the engine runs, the
//! connection goes on in the peer loop (`peer::run`) with those messages,
//! so the download starts on the connections that fetched the metadata.
//!
//! The bookkeeping (which piece from whom, the size cap, the hash check) is
//! the sans-IO [`super::metadata::Fetch`]. Peers whose data fails the check
//! are disconnected with [`PeerError::BadMetadata`], which the swarm never
//! dials again.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::metadata::{self, MetadataError, Progress};
use crate::engine::{Engine, EngineConfig};
use crate::extension::{self, ExtHandshake, MetadataMsg};
use crate::peer::{self, PeerError};
use crate::transport::{Dial, Link, Opened};
use crate::types::InfoHash;
use crate::wire::{self, Handshake, Message, MAX_FRAME};

/// A connection that sends nothing for this long while the metadata is
/// fetched is closed.
const IDLE: Duration = Duration::from_secs(30);
/// Connections during the metadata phase at most.
pub(crate) const MAX_CONNS: usize = 30;
/// Messages kept from one peer for the peer loop: a bitfield and a few
/// `have`s are normal; a flood is not.
const MAX_KEPT: usize = 10_000;
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

/// Progress for the "fetching metadata" line.
#[derive(Debug, Default)]
pub(crate) struct FetchStatus {
    pub known: AtomicUsize,
    pub connected: AtomicUsize,
    /// Size of the dictionary being assembled (0: not known yet).
    pub size: AtomicU64,
    pub received: AtomicU64,
}

type Key = metadata::PeerKey;

/// One magnet's metadata phase, shared by its connections.
pub(crate) struct MetadataPhase {
    info_hash: InfoHash,
    /// Dial and handshake settings, as the engine will have them.
    config: EngineConfig,
    /// We run a DHT node (the BEP-5 bit in our handshake).
    dht: bool,
    fetch: Mutex<metadata::Fetch>,
    done: watch::Sender<Option<Arc<Vec<u8>>>>,
    conns: Mutex<HashMap<Key, (SocketAddr, CancellationToken)>>,
    liars: Mutex<HashSet<SocketAddr>>,
    status: Arc<FetchStatus>,
    next_key: AtomicU64,
}

/// A connection whose metadata phase is over, for the peer loop.
pub(crate) struct Handover {
    pub engine: Arc<Engine>,
    pub link: Link,
    pub theirs: Handshake,
    /// Bytes read and not yet decoded.
    pub buf: BytesMut,
    /// What the peer said meanwhile (its extended handshake, bitfield,
    /// `have`s, chokes, requests), in order.
    pub kept: Vec<Message>,
    /// Metadata bytes it delivered.
    pub metadata_bytes: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MetadataPhase {
    pub(crate) fn new(
        info_hash: InfoHash,
        config: EngineConfig,
        dht: bool,
        status: Arc<FetchStatus>,
    ) -> Arc<MetadataPhase> {
        Arc::new(MetadataPhase {
            info_hash,
            config,
            dht,
            fetch: Mutex::new(metadata::Fetch::new(info_hash)),
            done: watch::channel(None).0,
            conns: Mutex::new(HashMap::new()),
            liars: Mutex::new(HashSet::new()),
            status,
            next_key: AtomicU64::new(1),
        })
    }

    pub(crate) fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub(crate) fn status(&self) -> &FetchStatus {
        &self.status
    }

    pub(crate) fn max_conns(&self) -> usize {
        self.config.max_peers.min(MAX_CONNS)
    }

    /// The verified info dictionary, once there is one.
    pub(crate) async fn done(&self) -> Arc<Vec<u8>> {
        let mut rx = self.done.subscribe();
        loop {
            if let Some(info) = rx.borrow_and_update().clone() {
                return info;
            }
            // `self` holds the sender, so the channel stays open.
            let _ = rx.changed().await;
        }
    }

    fn is_done(&self) -> bool {
        self.done.borrow().is_some()
    }

    /// Dials `addr` and handshakes.
    pub(crate) async fn open(
        &self,
        addr: SocketAddr,
        plain_worked: bool,
    ) -> Result<Opened, PeerError> {
        // The bits the peer loop relies on later are set now.
        let ours = peer::handshake(self.info_hash, self.config.peer_id, self.dht);
        let how = Dial::choose(self.config.encryption, plain_worked, false);
        peer::dial(&self.config, addr, &ours, how).await
    }

    /// Fetches metadata over one opened connection, then keeps it until
    /// the engine runs and hands it over. Ends early when the peer cannot
    /// help (no `ut_metadata`, a size out of bounds), lies, goes silent,
    /// or `cancel` fires.
    pub(crate) async fn connection(
        &self,
        opened: Opened,
        addr: SocketAddr,
        engine: watch::Receiver<Option<Arc<Engine>>>,
        cancel: &CancellationToken,
    ) -> Result<Handover, PeerError> {
        let Opened {
            mut link,
            theirs,
            mut buf,
            ..
        } = opened;
        peer::check_handshake(&theirs, &self.info_hash, &self.config.peer_id)?;
        if !theirs.has(wire::RESERVED_EXTENSION) {
            return Err(protocol("no extension protocol, so no metadata"));
        }
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let kill = cancel.child_token();
        lock(&self.conns).insert(key, (addr, kill.clone()));
        let _gone = Gone(self, key);
        self.greet(&mut link, &theirs, addr).await?;
        let mut c = Conn {
            key,
            their_id: None,
            kept: Vec::new(),
            metadata_bytes: 0,
        };
        let engine = self
            .exchange(&mut c, &mut link, &mut buf, engine, &kill, addr)
            .await?;
        Ok(Handover {
            engine,
            link,
            theirs,
            buf,
            kept: c.kept,
            metadata_bytes: c.metadata_bytes,
        })
    }

    /// Our first messages: the extended handshake, and `have none` to a
    /// fast peer (one of the three first messages BEP-6 asks for).
    async fn greet(
        &self,
        link: &mut Link,
        theirs: &Handshake,
        addr: SocketAddr,
    ) -> Result<(), PeerError> {
        // PEX is offered before the metadata says whether the torrent is
        // private (as libtorrent does): a client that did not see it in the
        // first extended handshake may never take it up. The peer loop
        // withdraws it for a private torrent and sends no PEX of its own.
        let ours = peer::ext_handshake(&self.config, true, None, addr.ip());
        let mut first = BytesMut::new();
        Message::Extended {
            id: extension::HANDSHAKE,
            payload: Bytes::from(ours.encode()),
        }
        .encode(&mut first);
        if theirs.has(wire::RESERVED_FAST) {
            Message::HaveNone.encode(&mut first);
        }
        Ok(link.write_all(&mut first).await?)
    }

    /// Requests pieces and reads until the dictionary is verified, then
    /// (still reading) until the engine runs; returns the engine.
    async fn exchange(
        &self,
        c: &mut Conn,
        link: &mut Link,
        buf: &mut BytesMut,
        mut engine: watch::Receiver<Option<Arc<Engine>>>,
        kill: &CancellationToken,
        addr: SocketAddr,
    ) -> Result<Arc<Engine>, PeerError> {
        let mut done = self.done.subscribe();
        let (mut last_recv, mut last_sent) = (Instant::now(), Instant::now());
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            while let Some(msg) = wire::decode_message(buf, MAX_FRAME_HERE)? {
                self.on_message(c, msg)?;
            }
            let finished = done.borrow_and_update().is_some();
            if finished {
                if let Some(engine) = engine.borrow_and_update().clone() {
                    return Ok(engine);
                }
            } else if let Some(id) = c.their_id {
                if self.request_more(c.key, id, link).await? {
                    last_sent = Instant::now();
                }
            }
            tokio::select! {
                _ = kill.cancelled() => {
                    return Err(if lock(&self.liars).contains(&addr) {
                        PeerError::BadMetadata
                    } else {
                        PeerError::Closed
                    });
                }
                n = link.read_buf(buf) => {
                    if n? == 0 {
                        return Err(PeerError::Closed);
                    }
                    last_recv = Instant::now();
                }
                _ = done.changed(), if !finished => {}
                r = engine.changed(), if finished => {
                    if r.is_err() {
                        return Err(PeerError::Closed);
                    }
                }
                _ = tick.tick() => {
                    // Waiting for the engine (the data check may take a
                    // while) is not the peer's silence.
                    if !finished && last_recv.elapsed() > IDLE {
                        return Err(PeerError::Timeout("fetching metadata: peer went silent"));
                    }
                    if last_sent.elapsed() >= self.config.keepalive_interval {
                        link.write_all(&mut [0u8; 4]).await?;
                        last_sent = Instant::now();
                    }
                }
            }
        }
    }

    fn on_message(&self, c: &mut Conn, msg: Message) -> Result<(), PeerError> {
        match msg {
            Message::Extended {
                id: extension::HANDSHAKE,
                ref payload,
            } => {
                if c.their_id.is_none() && !self.is_done() {
                    let h = ExtHandshake::decode(payload)
                        .map_err(|_| protocol("malformed extended handshake"))?;
                    let (Some(id), Some(size)) = (h.id(extension::UT_METADATA), h.metadata_size)
                    else {
                        return Err(protocol("no metadata to offer"));
                    };
                    if lock(&self.fetch).add_peer(c.key, size).is_err() {
                        return Err(protocol("metadata size out of bounds"));
                    }
                    c.their_id = Some(id);
                }
                c.keep(msg)
            }
            Message::Extended {
                id: extension::OUR_UT_METADATA,
                ref payload,
            } => match MetadataMsg::decode(payload) {
                // Answered by the peer loop, which has the dictionary.
                Ok(MetadataMsg::Request { .. }) => c.keep(msg),
                Ok(m) => self.on_metadata(c, m),
                Err(_) => Ok(()),
            },
            // Nothing was requested yet; keep-alives are only noted.
            Message::Piece { .. } | Message::KeepAlive => Ok(()),
            _ => c.keep(msg),
        }
    }

    fn on_metadata(&self, c: &mut Conn, msg: MetadataMsg) -> Result<(), PeerError> {
        let mut f = lock(&self.fetch);
        let (piece, total_size, data) = match msg {
            MetadataMsg::Reject { piece } => {
                f.on_reject(c.key, piece);
                return Ok(());
            }
            MetadataMsg::Request { .. } => return Ok(()),
            MetadataMsg::Data {
                piece,
                total_size,
                data,
            } => (piece, total_size, data),
        };
        let status = &self.status;
        match f.on_data(c.key, piece, total_size, &data, std::time::Instant::now()) {
            Ok(Progress::Done(info)) => {
                c.metadata_bytes += data.len() as u64;
                status.received.store(info.len() as u64, Ordering::Relaxed);
                self.done.send_replace(Some(Arc::new(info)));
            }
            Ok(Progress::Stored) => {
                c.metadata_bytes += data.len() as u64;
                status.size.store(f.size().unwrap_or(0), Ordering::Relaxed);
                status.received.store(f.received(), Ordering::Relaxed);
            }
            Ok(Progress::Ignored) => {}
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
                let conns = lock(&self.conns);
                let mut liars = lock(&self.liars);
                for p in &peers {
                    if let Some((addr, kill)) = conns.get(p) {
                        liars.insert(*addr);
                        kill.cancel();
                    }
                }
                status.received.store(0, Ordering::Relaxed);
                if peers.contains(&c.key) {
                    return Err(PeerError::BadMetadata);
                }
            }
            Err(_) => {}
        }
        Ok(())
    }

    /// Sends the requests the fetch hands this peer; whether there were any.
    async fn request_more(&self, key: Key, their_id: u8, link: &mut Link) -> std::io::Result<bool> {
        let pieces: Vec<u32> = {
            let mut f = lock(&self.fetch);
            let now = std::time::Instant::now();
            std::iter::from_fn(|| f.next_request(key, now))
                .take(8)
                .collect()
        };
        if pieces.is_empty() {
            return Ok(false);
        }
        let mut b = BytesMut::new();
        for piece in pieces {
            Message::Extended {
                id: their_id,
                payload: Bytes::from(MetadataMsg::Request { piece }.encode()),
            }
            .encode(&mut b);
        }
        link.write_all(&mut b).await?;
        Ok(true)
    }
}

/// One connection's part of the phase.
struct Conn {
    key: Key,
    /// The peer's id for `ut_metadata`, once its extended handshake came.
    their_id: Option<u8>,
    kept: Vec<Message>,
    metadata_bytes: u64,
}

impl Conn {
    fn keep(&mut self, msg: Message) -> Result<(), PeerError> {
        if self.kept.len() >= MAX_KEPT {
            return Err(protocol("too many messages before the metadata"));
        }
        self.kept.push(msg);
        Ok(())
    }
}

/// Forgets a connection when it ends or is handed over.
struct Gone<'a>(&'a MetadataPhase, Key);

impl Drop for Gone<'_> {
    fn drop(&mut self) {
        lock(&self.0.fetch).remove_peer(self.1);
        lock(&self.0.conns).remove(&self.1);
    }
}

fn protocol(why: &str) -> PeerError {
    PeerError::Protocol(why.to_string())
}
