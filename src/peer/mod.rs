//! One task per peer connection. The protocol decisions (choke and
//! interest, the request pipeline, timeouts, BEP-6/9/10/11) live in the
//! sans-IO core `state::PeerState`; this task moves bytes: it reads and
//! decodes frames, feeds the core messages, engine commands and a tick a
//! second, runs the core's `state::Action`s (rate limits, hashing, disk
//! reads) and hands its queued messages to a writer task over a bounded
//! channel, so a slow remote reader never stops us reading.
//!
//! The pipeline depth follows the measured rate: about half a second of
//! data in flight, between `MIN_DEPTH` and `MAX_DEPTH`
//! blocks.

pub(crate) mod state;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::state::{Action, Greeting, PeerState, Remote, Settings, Torrent};
use crate::engine::picker::PeerKey;
use crate::engine::{Engine, EngineConfig, PeerCommand, Refusal};
use crate::extension::{self, ExtHandshake, MetadataMsg};
use crate::mse::Encryption;
use crate::transport::{self, Dial, DialOpts, Link, LinkError, Opened, ReadLink, WriteLink};
use crate::types::{Bitfield, BlockRef, InfoHash, PeerId, BLOCK_LEN};
use crate::wire::{self, Handshake, Message, WireError, MAX_FRAME};

const READ_CHUNK: usize = 256 * 1024;
/// Requests we let a peer queue, as advertised in `reqq`.
pub(crate) const OUR_REQQ: u32 = 500;

#[derive(Debug, thiserror::Error)]
pub(crate) enum PeerError {
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
    #[error("peer sent metadata that fails the hash check")]
    BadMetadata,
    #[error("already connected to this peer")]
    Duplicate,
    #[error("closed to make room for another peer")]
    Evicted,
    #[error("connection closed by peer")]
    Closed,
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("protocol violation: {0}")]
    Wire(#[from] WireError),
}

/// How a connection ended, for the swarm's retry policy.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// The handshake completed.
    pub handshaked: bool,
    /// Useful block bytes this connection delivered.
    pub useful_bytes: u64,
    pub result: Result<(), PeerError>,
}

/// Our BitTorrent handshake for `engine`'s torrent.
pub(crate) fn our_handshake(engine: &Engine) -> Handshake {
    handshake(
        engine.info_hash,
        engine.config.peer_id,
        engine.dht.get().is_some(),
    )
}

/// Our handshake: BEP-10 and BEP-6 always, BEP-5 when we run a DHT node.
pub(crate) fn handshake(info_hash: InfoHash, peer_id: PeerId, dht: bool) -> Handshake {
    let mut hs = Handshake::new(info_hash, peer_id);
    hs.set(wire::RESERVED_EXTENSION);
    hs.set(wire::RESERVED_FAST);
    if dht {
        hs.set(wire::RESERVED_DHT);
    }
    hs
}

/// Our extended handshake to a peer at `ip`; `metadata_size` once the
/// info dictionary is known.
pub(crate) fn ext_handshake(
    c: &EngineConfig,
    pex: bool,
    metadata_size: Option<u64>,
    ip: IpAddr,
) -> ExtHandshake {
    ExtHandshake {
        reqq: Some(OUR_REQQ),
        metadata_size,
        encryption: c.encryption != Encryption::Disable,
        ..ExtHandshake::ours(pex, c.listen_port, ip)
    }
}

/// Dials `addr` and handshakes as the torrent's encryption policy and
/// what we know of the peer allow; `plain_worked`: plaintext succeeded
/// where MSE failed before.
pub(crate) async fn open(
    engine: &Engine,
    addr: SocketAddr,
    plain_worked: bool,
) -> Result<Opened, PeerError> {
    let how = Dial::choose(
        engine.config.encryption,
        plain_worked,
        engine.prefers_mse(addr),
    );
    dial(&engine.config, addr, &our_handshake(engine), how).await
}

/// Dials `addr` with the configured bind address and timeouts, and
/// exchanges handshakes (`ours` first) as `how` says.
pub(crate) async fn dial(
    c: &EngineConfig,
    addr: SocketAddr,
    ours: &Handshake,
    how: Dial,
) -> Result<Opened, PeerError> {
    let opts = DialOpts {
        bind_ip: c.bind_ip,
        connect_timeout: c.connect_timeout,
        handshake_timeout: c.handshake_timeout,
    };
    Ok(transport::open(&opts, addr, ours, how).await?)
}

/// The remote handshake names our torrent and is not our own.
pub(crate) fn check_handshake(
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

pub(crate) fn failed(e: PeerError) -> Outcome {
    Outcome {
        handshaked: false,
        useful_bytes: 0,
        result: Err(e),
    }
}

/// Runs a connection whose remote handshake (`theirs`, with the bytes
/// that followed it) has been read; for an incoming one ours is sent
/// first. `earlier`: the connection comes from a magnet's metadata phase,
/// which greeted the peer already and kept these messages from it.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    engine: Arc<Engine>,
    mut link: Link,
    addr: SocketAddr,
    cancel: CancellationToken,
    theirs: Handshake,
    buf: BytesMut,
    outgoing: bool,
    earlier: Option<Vec<Message>>,
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
    let remote = Remote {
        addr,
        outgoing,
        fast: theirs.has(wire::RESERVED_FAST),
        extended: theirs.has(wire::RESERVED_EXTENSION),
        dht: theirs.has(wire::RESERVED_DHT),
    };
    let mut conn = Conn {
        state: PeerState::new(settings(&engine), remote, Instant::now()),
        engine: engine.clone(),
        key,
        out: out_tx,
        useful_bytes: 0,
        upload_job: None,
    };
    let result = conn.run(rd, buf, earlier, cmd_rx, &cancel, &kill).await;
    drop(conn.out);
    writer.abort();
    tracing::debug!(%addr, ?result, "peer disconnected");
    Outcome {
        handshaked: true,
        useful_bytes: conn.useful_bytes,
        result,
    }
}

fn settings(engine: &Engine) -> Settings {
    let c = &engine.config;
    Settings {
        geometry: engine.geometry,
        info_hash: engine.info_hash,
        private: engine.private,
        request_timeout: c.request_timeout,
        idle_timeout: c.idle_timeout,
        keepalive_interval: c.keepalive_interval,
        max_request_len: c.max_request_len,
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

/// The socket side of one connection: the core, and what it cannot do
/// without waiting.
struct Conn {
    state: PeerState,
    engine: Arc<Engine>,
    key: PeerKey,
    out: mpsc::Sender<Bytes>,
    /// Useful block bytes delivered, for the swarm's retry policy.
    useful_bytes: u64,
    /// Blocks being read (and rate-limited) for the peer.
    upload_job: Option<UploadJob>,
}

type UploadJob = Pin<Box<dyn Future<Output = std::io::Result<Vec<(BlockRef, Bytes)>>> + Send>>;

/// The engine as one peer's core sees it.
struct EngineView<'a> {
    engine: &'a Engine,
    key: PeerKey,
}

impl Torrent for EngineView<'_> {
    fn has_piece(&self, piece: crate::types::PieceIndex) -> bool {
        self.engine.has_piece(piece)
    }
    fn on_bitfield(&mut self, has: Bitfield) -> bool {
        self.engine.on_bitfield(self.key, has)
    }
    fn on_have(&mut self, piece: crate::types::PieceIndex) -> bool {
        self.engine.on_have(self.key, piece)
    }
    fn is_interesting(&self) -> bool {
        self.engine.is_interesting(self.key)
    }
    fn pick(
        &mut self,
        max: usize,
        only: Option<&[crate::types::PieceIndex]>,
        out: &mut Vec<BlockRef>,
    ) {
        self.engine.pick(self.key, max, only, out);
    }
    fn release(&mut self, block: BlockRef) {
        self.engine.release(self.key, block);
    }
    fn release_all(&mut self) {
        self.engine.release_all(self.key);
    }
    fn peer_choking(&mut self, choking: bool) {
        self.engine.peer_choking(self.key, choking);
    }
    fn peer_interested(&mut self, interested: bool) {
        self.engine.peer_interest(self.key, interested);
    }
    fn am_interested(&mut self, interested: bool) {
        self.engine.am_interested(self.key, interested);
    }
    fn wasted(&mut self, bytes: u64) {
        self.engine.stats.wasted.fetch_add(bytes, Ordering::Relaxed);
    }
    fn pex_view(&self) -> Vec<(SocketAddr, u8)> {
        self.engine.pex_view(self.key)
    }
    fn add_pex_peers(&mut self, addrs: Vec<SocketAddr>) {
        self.engine.add_pex_peers(addrs);
    }
    fn note_wants_mse(&mut self, addr: SocketAddr) {
        self.engine.note_wants_mse(addr);
    }
    fn set_listen_port(&mut self, port: u16) {
        self.engine.set_listen_port(self.key, port);
    }
    fn set_client(&mut self, name: &str) {
        self.engine.set_client(self.key, name);
    }
    fn dht_ping(&mut self, node: SocketAddr) {
        // A full queue just skips this one.
        if let Some((_, nodes)) = self.engine.dht.get() {
            let _ = nodes.try_send(node);
        }
    }
}

impl Conn {
    /// Sends what the core has queued.
    async fn flush(&mut self) -> Result<(), PeerError> {
        let mut b = BytesMut::new();
        if !self.state.encode_outbox(&mut b) {
            return Ok(());
        }
        self.send_bytes(b).await
    }

    // `&mut`: a shared `Conn` is not `Sync` (the upload job is not).
    async fn send_bytes(&mut self, b: BytesMut) -> Result<(), PeerError> {
        self.out
            .send(b.freeze())
            .await
            .map_err(|_| PeerError::Closed)
    }

    fn greeting(&self, continued: bool) -> Greeting {
        let e = &self.engine;
        let mut hs = ext_handshake(
            &e.config,
            !e.private,
            Some(e.info_bytes.len() as u64),
            self.state.remote().addr.ip(),
        );
        if continued && e.private {
            // The metadata phase offered PEX before it knew; id 0 withdraws it.
            hs.m.push((extension::UT_PEX.to_string(), 0));
        }
        Greeting {
            have: e.have_bitfield(),
            ext_handshake: Bytes::from(hs.encode()),
            dht_port: e.dht.get().map(|(port, _)| *port),
            continued,
        }
    }

    async fn run(
        &mut self,
        mut rd: ReadLink,
        mut buf: BytesMut,
        earlier: Option<Vec<Message>>,
        mut cmds: mpsc::Receiver<PeerCommand>,
        cancel: &CancellationToken,
        kill: &CancellationToken,
    ) -> Result<(), PeerError> {
        let engine = self.engine.clone();
        let max_frame = MAX_FRAME.max(engine.geometry.bitfield_len() + 1);
        let mut haves = engine.have_updates();
        let mut have_cursor = *haves.borrow_and_update();
        let greeting = self.greeting(earlier.is_some());
        self.state.start(greeting, Instant::now());
        self.flush().await?;
        for msg in earlier.into_iter().flatten() {
            self.handle(&engine, msg).await?;
        }
        // Messages may have arrived in the same segment as the handshake.
        self.read_messages(&mut buf, max_frame).await?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // Branches run to completion once chosen, so a piece being
                // handed to the hasher is never dropped half-way.
                _ = cancel.cancelled() => return Ok(()),
                _ = kill.cancelled() => {
                    return Err(if engine.is_banned(self.state.remote().addr.ip()) { PeerError::Banned } else { PeerError::Evicted });
                }
                cmd = cmds.recv() => {
                    let cmd = cmd.unwrap_or(PeerCommand::Disconnect);
                    let mut t = EngineView { engine: &engine, key: self.key };
                    self.state.on_command(cmd, Instant::now(), &mut t)?;
                }
                res = async { self.upload_job.as_mut().expect("guarded").await }, if self.upload_job.is_some() => {
                    self.upload_job = None;
                    self.finish_upload(res?).await?;
                }
                changed = haves.changed() => {
                    if changed.is_err() { return Ok(()); }
                    let new = engine.verified_since(have_cursor);
                    have_cursor += new.len();
                    self.state.verified(new, Instant::now());
                }
                n = rd.read_buf(&mut buf) => {
                    if n? == 0 { return Err(PeerError::Closed); }
                    self.state.received(Instant::now());
                    self.read_messages(&mut buf, max_frame).await?;
                    if buf.capacity() - buf.len() < BLOCK_LEN as usize {
                        buf.reserve(READ_CHUNK);
                    }
                }
                _ = tick.tick() => {
                    let mut t = EngineView { engine: &engine, key: self.key };
                    self.state.on_tick(Instant::now(), &mut t)?;
                }
            }
            self.flush().await?;
            self.start_upload();
        }
    }

    /// Feeds the core every whole message in `buf`, then tops the pipeline up.
    async fn read_messages(
        &mut self,
        buf: &mut BytesMut,
        max_frame: usize,
    ) -> Result<(), PeerError> {
        let engine = self.engine.clone();
        while let Some(msg) = wire::decode_message(buf, max_frame)? {
            self.handle(&engine, msg).await?;
        }
        let mut t = EngineView {
            engine: &engine,
            key: self.key,
        };
        self.state.fill(Instant::now(), &mut t);
        Ok(())
    }

    /// Feeds the core one message and runs what it asks for.
    async fn handle(&mut self, engine: &Arc<Engine>, msg: Message) -> Result<(), PeerError> {
        if !matches!(msg, Message::Piece { .. }) {
            tracing::trace!(key = self.key, ?msg, "received");
        }
        let mut t = EngineView {
            engine,
            key: self.key,
        };
        match self.state.on_message(msg, Instant::now(), &mut t)? {
            None => {}
            Some(Action::Store {
                piece,
                offset,
                data,
            }) => {
                let len = data.len() as u64;
                engine.acquire_download(len).await;
                self.state.stored(len, Instant::now());
                if engine.on_block(self.key, piece, offset, &data).await {
                    self.useful_bytes += len;
                }
            }
            Some(Action::Metadata { id, piece }) => self.serve_metadata(id, piece).await?,
        }
        Ok(())
    }

    /// BEP-9: a piece of our info dictionary, through the upload limiter.
    async fn serve_metadata(&mut self, id: u8, piece: u32) -> Result<(), PeerError> {
        let info = self.engine.info_bytes.clone();
        let reply = match extension::metadata_piece(&info, piece) {
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
        let payload = Bytes::from(reply.encode());
        self.state
            .send(Message::Extended { id, payload }, Instant::now());
        self.flush().await
    }

    /// Starts reading the next queued blocks, if any and allowed.
    fn start_upload(&mut self) {
        if self.upload_job.is_some() {
            return;
        }
        let Some(blocks) = self.state.next_uploads() else {
            return;
        };
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
        if !self.state.uploads_read(Instant::now()) {
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
        // What the core queued before goes first.
        self.flush().await?;
        self.send_bytes(b).await
    }
}
