//! One task per peer connection: handshake, choke/interest state, the
//! request pipeline and timeouts. Bytes go out through a writer task fed by
//! a bounded channel, so a slow remote reader never stops us reading.
//!
//! The pipeline depth follows the measured rate: about half a second of
//! data in flight, between [`MIN_DEPTH`] and [`MAX_DEPTH`] blocks.
//!
//! Extensions, each negotiated in the handshake: BEP-6 fast (have all /
//! none, reject, allowed fast; a choke no longer voids requests), BEP-10
//! extended messages carrying BEP-9 metadata (served from the engine's
//! info dictionary) and BEP-11 PEX (at most one message a minute).

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::engine::picker::PeerKey;
use crate::engine::{Engine, PeerCommand, Refusal, PEX_MAX};
use crate::extension::{self, pex_flags, ExtHandshake, MetadataMsg, PexMsg};
use crate::mse::Encryption;
use crate::transport::{self, Dial, DialOpts, Link, LinkError, Opened, ReadLink, WriteLink};
use crate::types::{Bitfield, BlockRef, BLOCK_LEN};
use crate::wire::{self, Handshake, Message, WireError, MAX_FRAME};

pub const MIN_DEPTH: usize = 16;
/// Most clients drop requests beyond a queue of a few hundred (libtorrent:
/// 500, Transmission: 512 advertised via reqq).
pub const MAX_DEPTH: usize = 250;
const START_DEPTH: usize = 64;
const READ_CHUNK: usize = 256 * 1024;
/// Allowed-fast pieces we grant a peer (BEP-6 suggests 10).
const ALLOWED_FAST: usize = 10;
/// Allowed-fast pieces we keep from a peer.
const MAX_ALLOWED_IN: usize = 64;
/// Requests a choking fast peer neither served nor rejected are given up
/// after this.
const CHOKED_GRACE: Duration = Duration::from_secs(10);
/// The first PEX message goes out this long after the extended handshake,
/// then every `PEX_EVERY` (BEP-11: at most once a minute).
const PEX_FIRST: Duration = Duration::from_secs(3);
const PEX_EVERY: Duration = Duration::from_secs(60);
/// Requests we let a peer queue, as advertised in `reqq`.
const OUR_REQQ: u32 = 500;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("peer is serving another torrent")]
    InfoHashMismatch,
    #[error("connected to ourselves")]
    SelfConnection,
    #[error("peer is banned")]
    Banned,
    #[error("already connected to this peer")]
    Duplicate,
    #[error("closed to make room for another peer")]
    Evicted,
    #[error("connection closed by peer")]
    Closed,
    #[error(transparent)]
    Link(#[from] LinkError),
}

impl From<WireError> for PeerError {
    fn from(e: WireError) -> Self {
        PeerError::Protocol(e.to_string())
    }
}

/// How a connection ended, for the swarm's retry policy.
#[derive(Debug)]
pub struct Outcome {
    /// The handshake completed.
    pub handshaked: bool,
    /// Useful block bytes this connection delivered.
    pub useful_bytes: u64,
    pub result: Result<(), PeerError>,
}

/// Our BitTorrent handshake for `engine`'s torrent.
pub fn our_handshake(engine: &Engine) -> Handshake {
    let mut hs = Handshake::new(engine.info_hash, engine.config.peer_id);
    hs.set(wire::RESERVED_EXTENSION);
    hs.set(wire::RESERVED_FAST);
    if engine.dht.get().is_some() {
        // BEP-5: we run a DHT node.
        hs.set(wire::RESERVED_DHT);
    }
    hs
}

/// Dials `addr` and handshakes as the torrent's encryption policy and
/// what we know of the peer allow; `plain_worked`: plaintext succeeded
/// where MSE failed before.
pub async fn open(
    engine: &Engine,
    addr: SocketAddr,
    plain_worked: bool,
) -> Result<Opened, PeerError> {
    let c = &engine.config;
    let how = Dial::choose(c.encryption, plain_worked, engine.prefers_mse(addr));
    let opts = DialOpts {
        bind_ip: c.bind_ip,
        connect_timeout: c.connect_timeout,
        handshake_timeout: c.handshake_timeout,
    };
    Ok(transport::open(&opts, addr, &our_handshake(engine), how).await?)
}

/// The remote handshake names our torrent and is not our own.
pub fn check_handshake(
    theirs: &Handshake,
    info_hash: &crate::types::InfoHash,
    peer_id: &crate::types::PeerId,
) -> Result<(), PeerError> {
    if theirs.info_hash != *info_hash {
        return Err(PeerError::InfoHashMismatch);
    }
    if theirs.peer_id == *peer_id {
        return Err(PeerError::SelfConnection);
    }
    Ok(())
}

pub fn failed(e: PeerError) -> Outcome {
    Outcome {
        handshaked: false,
        useful_bytes: 0,
        result: Err(e),
    }
}

/// Runs a connection whose remote handshake (`theirs`, with the bytes
/// that followed it) has been read; for an incoming one ours is sent
/// first.
pub async fn run(
    engine: Arc<Engine>,
    mut link: Link,
    addr: SocketAddr,
    cancel: CancellationToken,
    theirs: Handshake,
    buf: BytesMut,
    outgoing: bool,
) -> Outcome {
    if !outgoing {
        if let Err(e) = link.write_all(&mut our_handshake(&engine).encode()).await {
            return failed(PeerError::Io(e));
        }
    }
    if let Err(e) = check_handshake(&theirs, &engine.info_hash, &engine.config.peer_id) {
        return failed(e);
    }
    let encrypted = link.encrypted();
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let kill = CancellationToken::new();
    let key = match engine.register(
        addr,
        theirs.peer_id,
        outgoing,
        encrypted,
        cmd_tx,
        kill.clone(),
    ) {
        Ok(key) => key,
        Err(Refusal::Banned) => return failed(PeerError::Banned),
        Err(Refusal::Duplicate) => return failed(PeerError::Duplicate),
    };
    // Unregisters even if the task is aborted mid-way.
    let _registered = Registered(engine.clone(), key);
    let (rd, wr) = link.into_split();
    let (out_tx, out_rx) = mpsc::channel(64);
    let writer = tokio::spawn(write_loop(wr, out_rx));
    let mut conn = Conn {
        outgoing,
        dht_peer: theirs.has(wire::RESERVED_DHT),
        fast: theirs.has(wire::RESERVED_FAST),
        ext_peer: theirs.has(wire::RESERVED_EXTENSION),
        their_metadata: None,
        their_pex: None,
        max_depth: MAX_DEPTH,
        allowed_in: Vec::new(),
        allowed_out: Vec::new(),
        choked_at: Instant::now(),
        pex_sent: HashSet::new(),
        next_pex: None,
        addr,
        engine: engine.clone(),
        key,
        out: out_tx,
        peer_choking: true,
        am_interested: false,
        outstanding: HashSet::new(),
        depth: START_DEPTH,
        window_bytes: 0,
        useful_bytes: 0,
        last_recv: Instant::now(),
        last_block: Instant::now(),
        last_sent: Instant::now(),
        picks: Vec::new(),
        am_choking: true,
        peer_interested: false,
        uploads: VecDeque::new(),
        upload_job: None,
    };
    let result = conn.run(rd, buf, cmd_rx, &cancel, &kill).await;
    drop(conn.out);
    writer.abort();
    tracing::debug!(%addr, ?result, "peer disconnected");
    Outcome {
        handshaked: true,
        useful_bytes: conn.useful_bytes,
        result,
    }
}

/// A registration with the engine, undone on drop.
struct Registered(Arc<Engine>, PeerKey);

impl Drop for Registered {
    fn drop(&mut self) {
        self.0.unregister(self.1);
    }
}

/// Writes queued frames, coalescing whatever is waiting into one write.
async fn write_loop(mut wr: WriteLink, mut rx: mpsc::Receiver<Bytes>) -> std::io::Result<()> {
    let mut batch = BytesMut::new();
    while let Some(first) = rx.recv().await {
        batch.extend_from_slice(&first);
        while batch.len() < READ_CHUNK {
            match rx.try_recv() {
                Ok(b) => batch.extend_from_slice(&b),
                Err(_) => break,
            }
        }
        wr.write_all(&mut batch).await?;
        batch.clear();
    }
    let _ = wr.shutdown().await;
    Ok(())
}

struct Conn {
    /// We dialled it: its address accepts connections.
    outgoing: bool,
    /// The peer runs a DHT node (BEP-5 reserved bit).
    dht_peer: bool,
    /// Both sides set the BEP-6 bit.
    fast: bool,
    /// The peer set the BEP-10 bit.
    ext_peer: bool,
    /// The peer's ids for ut_metadata and ut_pex, from its extended handshake.
    their_metadata: Option<u8>,
    their_pex: Option<u8>,
    /// Pipeline cap: ours, or the peer's `reqq` when smaller.
    max_depth: usize,
    /// Pieces the peer lets us request while it chokes us.
    allowed_in: Vec<u32>,
    /// Pieces we serve to the peer while choking it.
    allowed_out: Vec<u32>,
    choked_at: Instant,
    /// Addresses our PEX messages have listed to the peer.
    pex_sent: HashSet<SocketAddr>,
    next_pex: Option<Instant>,
    addr: SocketAddr,
    engine: Arc<Engine>,
    key: PeerKey,
    out: mpsc::Sender<Bytes>,
    peer_choking: bool,
    am_interested: bool,
    /// (piece, offset) of requests sent and not yet answered.
    outstanding: HashSet<(u32, u32)>,
    depth: usize,
    window_bytes: u64,
    useful_bytes: u64,
    last_recv: Instant,
    last_block: Instant,
    last_sent: Instant,
    picks: Vec<BlockRef>,
    am_choking: bool,
    peer_interested: bool,
    /// Requests from the peer not yet served, oldest first.
    uploads: VecDeque<BlockRef>,
    /// Blocks being read (and rate-limited) for the peer.
    upload_job: Option<UploadJob>,
}

type UploadJob = Pin<Box<dyn Future<Output = std::io::Result<Vec<(BlockRef, Bytes)>>> + Send>>;

/// Pending requests a peer may queue before it counts as a flood.
pub const MAX_UPLOAD_QUEUE: usize = 4096;
/// Blocks read from disk in one go for one peer.
const UPLOAD_BATCH: usize = 16;

impl Conn {
    async fn send(&mut self, msgs: &[Message]) -> Result<(), PeerError> {
        let mut b = BytesMut::new();
        for m in msgs {
            m.encode(&mut b);
        }
        self.last_sent = Instant::now();
        self.out
            .send(b.freeze())
            .await
            .map_err(|_| PeerError::Closed)
    }

    async fn run(
        &mut self,
        mut rd: ReadLink,
        mut buf: BytesMut,
        mut cmds: mpsc::Receiver<PeerCommand>,
        cancel: &CancellationToken,
        kill: &CancellationToken,
    ) -> Result<(), PeerError> {
        let engine = self.engine.clone();
        let geo = engine.geometry;
        let max_frame = MAX_FRAME.max(geo.bitfield_len() + 1);
        let mut haves = engine.have_updates();
        let mut have_cursor = *haves.borrow_and_update();
        let have = engine.have_bitfield();
        if self.ext_peer {
            self.send_ext_handshake().await?;
        }
        if self.fast && have.is_full() {
            self.send(&[Message::HaveAll]).await?;
        } else if self.fast && have.count() == 0 {
            self.send(&[Message::HaveNone]).await?;
        } else if have.count() > 0 {
            self.send(&[Message::Bitfield(Bytes::copy_from_slice(have.as_bytes()))])
                .await?;
        }
        if let (true, std::net::IpAddr::V4(ip)) = (self.fast, self.addr.ip()) {
            let set = wire::allowed_fast_set(ip, &engine.info_hash, geo.num_pieces, ALLOWED_FAST);
            self.allowed_out = set.into_iter().filter(|&p| have.get(p)).collect();
            let msgs: Vec<Message> = self
                .allowed_out
                .iter()
                .map(|&p| Message::AllowedFast(p))
                .collect();
            if !msgs.is_empty() {
                self.send(&msgs).await?;
            }
        }
        if let (true, Some((port, _))) = (self.dht_peer, engine.dht.get()) {
            self.send(&[Message::Port(*port)]).await?;
        }
        // Messages may have arrived in the same segment as the handshake.
        while let Some(msg) = wire::decode_message(&mut buf, max_frame)? {
            self.handle(msg).await?;
        }
        self.fill().await?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // Branches run to completion once chosen, so a piece being
                // handed to the hasher is never dropped half-way.
                _ = cancel.cancelled() => return Ok(()),
                _ = kill.cancelled() => {
                    return Err(if engine.is_banned(self.addr.ip()) { PeerError::Banned } else { PeerError::Evicted });
                }
                cmd = cmds.recv() => match cmd {
                    Some(PeerCommand::Cancel(b)) => {
                        if self.outstanding.remove(&(b.piece, b.offset)) {
                            // The command names a block, not a request: if
                            // its piece failed and we asked for the block
                            // again since, this cancel is stale and the
                            // picker still lists us for it. Give it back so
                            // `outstanding` and the picker agree (a no-op
                            // for a current cancel: the slot was drained).
                            self.engine.release(self.key, b);
                            self.send(&[Message::Cancel { piece: b.piece, offset: b.offset, len: b.len }]).await?;
                        }
                    }
                    Some(PeerCommand::Choke) => {
                        if !self.am_choking {
                            self.am_choking = true;
                            self.send(&[Message::Choke]).await?;
                            if self.fast {
                                // Every request gets exactly one answer:
                                // allowed-fast ones are still served.
                                let allowed = std::mem::take(&mut self.allowed_out);
                                let (keep, drop): (VecDeque<BlockRef>, VecDeque<BlockRef>) =
                                    self.uploads.drain(..).partition(|r| allowed.contains(&r.piece));
                                self.allowed_out = allowed;
                                self.uploads = keep;
                                let msgs: Vec<Message> = drop.iter().map(reject).collect();
                                if !msgs.is_empty() {
                                    self.send(&msgs).await?;
                                }
                            } else {
                                // The peer re-requests after the next unchoke.
                                self.uploads.clear();
                            }
                        }
                    }
                    Some(PeerCommand::Unchoke) => {
                        if self.am_choking {
                            self.am_choking = false;
                            self.send(&[Message::Unchoke]).await?;
                        }
                    }
                    Some(PeerCommand::Disconnect) | None => return Err(PeerError::Banned),
                },
                res = async { self.upload_job.as_mut().expect("guarded").await }, if self.upload_job.is_some() => {
                    self.upload_job = None;
                    self.finish_upload(res?).await?;
                }
                changed = haves.changed() => {
                    if changed.is_err() { return Ok(()); }
                    let new = engine.verified_since(have_cursor);
                    have_cursor += new.len();
                    let msgs: Vec<Message> = new.into_iter().map(Message::Have).collect();
                    if !msgs.is_empty() { self.send(&msgs).await?; }
                }
                n = rd.read_buf(&mut buf) => {
                    if n? == 0 { return Err(PeerError::Closed); }
                    self.last_recv = Instant::now();
                    while let Some(msg) = wire::decode_message(&mut buf, max_frame)? {
                        self.handle(msg).await?;
                    }
                    if buf.capacity() - buf.len() < BLOCK_LEN as usize {
                        buf.reserve(READ_CHUNK);
                    }
                    self.fill().await?;
                }
                _ = tick.tick() => self.on_tick().await?,
            }
            self.start_upload();
        }
    }

    /// Starts reading the next queued blocks, if any and allowed. While we
    /// choke a fast peer the queue holds only allowed-fast requests.
    fn start_upload(&mut self) {
        if self.upload_job.is_some() || (self.am_choking && !self.fast) || self.uploads.is_empty() {
            return;
        }
        let n = self.uploads.len().min(UPLOAD_BATCH);
        let blocks: Vec<BlockRef> = self.uploads.drain(..n).collect();
        let engine = self.engine.clone();
        self.upload_job = Some(Box::pin(async move {
            let total: u64 = blocks.iter().map(|b| u64::from(b.len)).sum();
            engine.acquire_upload(total).await;
            let e = engine.clone();
            tokio::task::spawn_blocking(move || e.read_blocks(&blocks))
                .await
                .map_err(std::io::Error::other)?
        }));
    }

    async fn finish_upload(&mut self, blocks: Vec<(BlockRef, Bytes)>) -> Result<(), PeerError> {
        // A fast peer gets the blocks it asked for (or a reject) regardless.
        if self.am_choking && !self.fast {
            return Ok(());
        }
        let mut b = BytesMut::new();
        let mut sent = 0u64;
        for (r, data) in blocks {
            sent += data.len() as u64;
            Message::Piece {
                piece: r.piece,
                offset: r.offset,
                data,
            }
            .encode(&mut b);
        }
        self.engine.record_upload(self.key, sent);
        self.last_sent = Instant::now();
        self.out
            .send(b.freeze())
            .await
            .map_err(|_| PeerError::Closed)
    }

    /// Queues a peer's request after checking it against the torrent.
    async fn on_request(&mut self, piece: u32, offset: u32, len: u32) -> Result<(), PeerError> {
        let engine = &self.engine;
        if len == 0 || len > engine.config.max_request_len {
            return Err(PeerError::Protocol(format!("request for {len} bytes")));
        }
        if !engine.geometry.contains(piece, offset, len) {
            return Err(PeerError::Protocol(format!(
                "request outside the torrent: piece {piece} offset {offset} length {len}"
            )));
        }
        let block = BlockRef { piece, offset, len };
        let choked = self.am_choking && !self.allowed_out.contains(&piece);
        if choked || !engine.has_piece(piece) {
            // Choked requests are void (BEP-3); unhad pieces are refused.
            // A fast peer is told so.
            if self.fast {
                self.send(&[reject(&block)]).await?;
            }
            return Ok(());
        }
        if self.uploads.len() >= MAX_UPLOAD_QUEUE {
            return Err(PeerError::Protocol("request flood".into()));
        }
        self.uploads.push_back(block);
        Ok(())
    }

    async fn handle(&mut self, msg: Message) -> Result<(), PeerError> {
        let engine = self.engine.clone();
        if !matches!(msg, Message::Piece { .. }) {
            tracing::trace!(key = self.key, ?msg, "received");
        }
        match msg {
            Message::KeepAlive => {}
            Message::Choke => {
                engine.peer_choking(self.key, true);
                if !self.peer_choking {
                    self.peer_choking = true;
                    self.choked_at = Instant::now();
                    // Without the fast extension a choke discards our
                    // requests; with it, each is served or rejected.
                    if !self.fast {
                        engine.release_all(self.key);
                        self.outstanding.clear();
                    }
                }
            }
            Message::Unchoke => {
                engine.peer_choking(self.key, false);
                self.peer_choking = false;
                self.last_block = Instant::now();
            }
            Message::Interested | Message::NotInterested => {
                self.peer_interested = matches!(msg, Message::Interested);
                engine.peer_interest(self.key, self.peer_interested);
            }
            Message::Have(p) => {
                if p >= engine.geometry.num_pieces {
                    return Err(PeerError::Protocol(format!(
                        "have for piece {p} out of range"
                    )));
                }
                if engine.on_have(self.key, p) {
                    self.set_interested(true).await?;
                }
            }
            Message::Bitfield(bytes) => {
                let bits =
                    Bitfield::from_bytes(&bytes, engine.geometry.num_pieces).ok_or_else(|| {
                        PeerError::Protocol(format!(
                            "bitfield of {} bytes is malformed for {} pieces",
                            bytes.len(),
                            engine.geometry.num_pieces
                        ))
                    })?;
                let interesting = engine.on_bitfield(self.key, bits);
                self.set_interested(interesting).await?;
            }
            Message::Piece {
                piece,
                offset,
                data,
            } => {
                if !self.outstanding.remove(&(piece, offset)) {
                    // Unrequested or cancelled: dropped, never stored.
                    engine
                        .stats
                        .wasted
                        .fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    return Ok(());
                }
                engine.acquire_download(data.len() as u64).await;
                self.last_block = Instant::now();
                self.window_bytes += data.len() as u64;
                if engine.on_block(self.key, piece, offset, &data).await {
                    self.useful_bytes += data.len() as u64;
                }
            }
            Message::Request { piece, offset, len } => self.on_request(piece, offset, len).await?,
            Message::Cancel { piece, offset, len } => {
                let before = self.uploads.len();
                self.uploads
                    .retain(|r| !(r.piece == piece && r.offset == offset && r.len == len));
                if self.fast && self.uploads.len() < before {
                    self.send(&[reject(&BlockRef { piece, offset, len })])
                        .await?;
                }
            }
            Message::HaveAll | Message::HaveNone => {
                self.need_fast(&msg)?;
                let n = engine.geometry.num_pieces;
                let bits = if msg == Message::HaveAll {
                    Bitfield::full(n)
                } else {
                    Bitfield::new(n)
                };
                let interesting = engine.on_bitfield(self.key, bits);
                self.set_interested(interesting).await?;
            }
            Message::Reject { piece, offset, len } => {
                self.need_fast(&msg)?;
                // A reject for a block we cancelled since is expected.
                if self.outstanding.remove(&(piece, offset)) {
                    engine.release(self.key, BlockRef { piece, offset, len });
                }
            }
            Message::AllowedFast(p) => {
                self.need_fast(&msg)?;
                if p < engine.geometry.num_pieces
                    && self.allowed_in.len() < MAX_ALLOWED_IN
                    && !self.allowed_in.contains(&p)
                {
                    self.allowed_in.push(p);
                }
            }
            // A hint only: the picker's order is kept.
            Message::Suggest(_) => self.need_fast(&msg)?,
            Message::Extended { id, payload } => self.on_extended(id, payload).await?,
            Message::Port(port) => {
                // BEP-5: ping the peer's DHT node; it joins our table if it
                // answers. A full queue just skips this one.
                if let (Some((_, nodes)), true) = (self.engine.dht.get(), port != 0) {
                    let _ = nodes.try_send(SocketAddr::new(self.addr.ip(), port));
                }
            }
            Message::Unknown(_) => {}
        }
        Ok(())
    }

    fn need_fast(&self, msg: &Message) -> Result<(), PeerError> {
        if self.fast {
            Ok(())
        } else {
            Err(PeerError::Protocol(format!(
                "{msg:?} without the fast extension"
            )))
        }
    }

    async fn send_ext_handshake(&mut self) -> Result<(), PeerError> {
        let e = &self.engine;
        let hs = ExtHandshake {
            reqq: Some(OUR_REQQ),
            metadata_size: Some(e.info_bytes.len() as u64),
            encryption: e.config.encryption != Encryption::Disable,
            ..ExtHandshake::ours(!e.private, e.config.listen_port, self.addr.ip())
        };
        let payload = Bytes::from(hs.encode());
        self.send(&[Message::Extended {
            id: extension::HANDSHAKE,
            payload,
        }])
        .await
    }

    /// BEP-10 messages; malformed payloads and unknown ids are ignored
    /// (extensions are optional for both sides).
    async fn on_extended(&mut self, id: u8, payload: Bytes) -> Result<(), PeerError> {
        match id {
            extension::HANDSHAKE => {
                let Ok(hs) = ExtHandshake::decode(&payload) else {
                    return Ok(());
                };
                self.their_metadata = hs.id(extension::UT_METADATA);
                self.their_pex = if self.engine.private {
                    None
                } else {
                    hs.id(extension::UT_PEX)
                };
                if let Some(q) = hs.reqq {
                    self.max_depth = (q as usize).clamp(MIN_DEPTH, MAX_DEPTH);
                    self.depth = self.depth.min(self.max_depth);
                }
                if hs.encryption {
                    let listen = hs.listen_port.map(|p| SocketAddr::new(self.addr.ip(), p));
                    if let Some(a) = listen.or(self.outgoing.then_some(self.addr)) {
                        self.engine.note_wants_mse(a);
                    }
                }
                if let Some(p) = hs.listen_port {
                    self.engine.set_listen_port(self.key, p);
                }
                if let Some(v) = &hs.client {
                    self.engine.set_client(self.key, v);
                }
                if self.their_pex.is_some() && self.next_pex.is_none() {
                    self.next_pex = Some(Instant::now() + PEX_FIRST);
                }
            }
            extension::OUR_UT_METADATA => {
                let Ok(MetadataMsg::Request { piece }) = MetadataMsg::decode(&payload) else {
                    return Ok(());
                };
                let Some(their) = self.their_metadata else {
                    return Ok(());
                };
                let info = self.engine.info_bytes.clone();
                let reply = match crate::metadata::piece_of(&info, piece) {
                    Some(data) => {
                        self.engine.acquire_upload(data.len() as u64).await;
                        MetadataMsg::Data {
                            piece,
                            total_size: info.len() as u64,
                            data: Bytes::copy_from_slice(data),
                        }
                    }
                    None => MetadataMsg::Reject { piece },
                };
                self.send(&[Message::Extended {
                    id: their,
                    payload: Bytes::from(reply.encode()),
                }])
                .await?;
            }
            extension::OUR_UT_PEX if !self.engine.private => {
                let Ok(pex) = PexMsg::decode(&payload) else {
                    return Ok(());
                };
                let addrs: Vec<SocketAddr> = pex
                    .added
                    .into_iter()
                    .filter(|(a, _)| *a != self.addr)
                    .take(PEX_MAX)
                    .map(|(a, flags)| {
                        if flags & pex_flags::ENCRYPTION != 0 {
                            self.engine.note_wants_mse(a);
                        }
                        a
                    })
                    .collect();
                self.engine.add_pex_peers(addrs);
            }
            _ => {}
        }
        Ok(())
    }

    /// Tells the peer which peers joined and left since the last message.
    async fn send_pex(&mut self) -> Result<(), PeerError> {
        let Some(id) = self.their_pex else {
            return Ok(());
        };
        let view: HashMap<SocketAddr, u8> = self
            .engine
            .pex_view(self.key)
            .into_iter()
            .filter(|(a, _)| *a != self.addr)
            .collect();
        let added: Vec<(SocketAddr, u8)> = view
            .iter()
            .filter(|(a, _)| !self.pex_sent.contains(a))
            .map(|(a, f)| (*a, *f))
            .take(PEX_MAX)
            .collect();
        let dropped: Vec<SocketAddr> = self
            .pex_sent
            .iter()
            .filter(|a| !view.contains_key(a))
            .copied()
            .take(PEX_MAX)
            .collect();
        if added.is_empty() && dropped.is_empty() {
            return Ok(());
        }
        for (a, _) in &added {
            self.pex_sent.insert(*a);
        }
        for a in &dropped {
            self.pex_sent.remove(a);
        }
        let payload = Bytes::from(PexMsg { added, dropped }.encode());
        self.send(&[Message::Extended { id, payload }]).await
    }

    async fn set_interested(&mut self, want: bool) -> Result<(), PeerError> {
        if want != self.am_interested {
            self.am_interested = want;
            self.engine.am_interested(self.key, want);
            let m = if want {
                Message::Interested
            } else {
                Message::NotInterested
            };
            self.send(&[m]).await?;
        }
        Ok(())
    }

    /// Tops the pipeline up to `depth` requests (while choked, from the
    /// allowed-fast pieces only).
    async fn fill(&mut self) -> Result<(), PeerError> {
        if !self.am_interested || (self.peer_choking && self.allowed_in.is_empty()) {
            return Ok(());
        }
        let room = self.depth.saturating_sub(self.outstanding.len());
        // Batch: wait until a useful number of slots is free.
        if room == 0 || (room < 8 && !self.outstanding.is_empty()) {
            return Ok(());
        }
        if self.outstanding.is_empty() {
            self.last_block = Instant::now();
        }
        let mut picks = std::mem::take(&mut self.picks);
        picks.clear();
        let only = self.peer_choking.then_some(self.allowed_in.as_slice());
        self.engine.pick(self.key, room, only, &mut picks);
        if !picks.is_empty() {
            let mut b = BytesMut::with_capacity(picks.len() * 17);
            for r in &picks {
                self.outstanding.insert((r.piece, r.offset));
                Message::Request {
                    piece: r.piece,
                    offset: r.offset,
                    len: r.len,
                }
                .encode(&mut b);
            }
            self.last_sent = Instant::now();
            self.out
                .send(b.freeze())
                .await
                .map_err(|_| PeerError::Closed)?;
        }
        self.picks = picks;
        Ok(())
    }

    async fn on_tick(&mut self) -> Result<(), PeerError> {
        let now = Instant::now();
        let engine = self.engine.clone();
        let cfg = &engine.config;
        // About half a second of data in flight.
        let per_sec = self.window_bytes / u64::from(BLOCK_LEN);
        self.window_bytes = 0;
        if per_sec > 0 {
            self.depth = ((per_sec / 2) as usize + MIN_DEPTH).min(self.max_depth);
        }
        if self.peer_choking
            && self.fast
            && !self.outstanding.is_empty()
            && now - self.choked_at > CHOKED_GRACE
        {
            // Neither served nor rejected: give them to other peers.
            let allowed = &self.allowed_in;
            let stale: Vec<(u32, u32)> = self
                .outstanding
                .iter()
                .filter(|(p, _)| !allowed.contains(p))
                .copied()
                .collect();
            for (piece, offset) in stale {
                self.outstanding.remove(&(piece, offset));
                let block = self.engine.geometry.block(piece, offset / BLOCK_LEN);
                self.engine.release(self.key, block);
            }
            self.last_block = now;
        }
        if self.next_pex.is_some_and(|t| now >= t) {
            self.next_pex = Some(now + PEX_EVERY);
            self.send_pex().await?;
        }
        if !self.outstanding.is_empty() && now - self.last_block > cfg.request_timeout {
            self.engine.release_all(self.key);
            self.outstanding.clear();
            return Err(PeerError::Timeout("waiting for requested blocks"));
        }
        if now - self.last_recv > cfg.idle_timeout {
            return Err(PeerError::Timeout("peer went silent"));
        }
        if now - self.last_sent > cfg.keepalive_interval {
            self.send(&[Message::KeepAlive]).await?;
        }
        if self.am_interested
            && self.outstanding.is_empty()
            && !self.engine.is_interesting(self.key)
        {
            self.set_interested(false).await?;
        }
        self.fill().await
    }
}

fn reject(r: &BlockRef) -> Message {
    Message::Reject {
        piece: r.piece,
        offset: r.offset,
        len: r.len,
    }
}
