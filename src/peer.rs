//! One task per peer connection: handshake, choke/interest state, the
//! request pipeline and timeouts. Bytes go out through a writer task fed by
//! a bounded channel, so a slow remote reader never stops us reading.
//!
//! The pipeline depth follows the measured rate: about half a second of
//! data in flight, between [`MIN_DEPTH`] and [`MAX_DEPTH`] blocks.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;

use crate::engine::picker::PeerKey;
use crate::engine::{Engine, PeerCommand};
use crate::types::{Bitfield, BlockRef, BLOCK_LEN};
use crate::wire::{self, Handshake, Message, WireError, MAX_FRAME};

pub const MIN_DEPTH: usize = 16;
/// Most clients drop requests beyond a queue of a few hundred (libtorrent:
/// 500, Transmission: 512 advertised via reqq).
pub const MAX_DEPTH: usize = 250;
const START_DEPTH: usize = 64;
const READ_CHUNK: usize = 256 * 1024;

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
    #[error("connection closed by peer")]
    Closed,
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

/// Dials `addr` (from `--bind` when set), with the connect timeout.
pub async fn connect(engine: &Engine, addr: SocketAddr) -> Result<TcpStream, PeerError> {
    let connect = async {
        let sock = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = engine.config.bind_ip {
            if ip.is_ipv4() == addr.is_ipv4() {
                sock.bind(SocketAddr::new(ip, 0))?;
            }
        }
        sock.connect(addr).await
    };
    match timeout(engine.config.connect_timeout, connect).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(PeerError::Io(e)),
        Err(_) => Err(PeerError::Timeout("connecting")),
    }
}

pub fn failed(e: PeerError) -> Outcome {
    Outcome {
        handshaked: false,
        useful_bytes: 0,
        result: Err(e),
    }
}

/// Runs an established TCP connection: handshake, then the message loop.
/// For an incoming connection the listener has already read the remote
/// handshake (`incoming`, with any bytes that followed it).
pub async fn run(
    engine: Arc<Engine>,
    mut stream: TcpStream,
    addr: SocketAddr,
    cancel: CancellationToken,
    incoming: Option<(Handshake, BytesMut)>,
) -> Outcome {
    let _ = stream.set_nodelay(true);
    let mut hs = Handshake::new(engine.info_hash, engine.config.peer_id);
    if engine.dht.get().is_some() {
        // BEP-5: we run a DHT node.
        hs.reserved[7] |= 0x01;
    }
    let (theirs, buf) = match incoming {
        Some((theirs, buf)) => {
            if let Err(e) = stream.write_all(&hs.encode()).await {
                return failed(PeerError::Io(e));
            }
            (theirs, buf)
        }
        None => {
            let mut buf = BytesMut::with_capacity(READ_CHUNK);
            let handshake = async {
                stream.write_all(&hs.encode()).await?;
                loop {
                    if let Some(theirs) = Handshake::decode(&mut buf)? {
                        return Ok::<_, PeerError>(theirs);
                    }
                    if stream.read_buf(&mut buf).await? == 0 {
                        return Err(PeerError::Closed);
                    }
                }
            };
            match timeout(engine.config.handshake_timeout, handshake).await {
                Ok(Ok(h)) => (h, buf),
                Ok(Err(e)) => return failed(e),
                Err(_) => return failed(PeerError::Timeout("waiting for the handshake")),
            }
        }
    };
    if theirs.info_hash != engine.info_hash {
        return failed(PeerError::InfoHashMismatch);
    }
    if theirs.peer_id == engine.config.peer_id {
        return failed(PeerError::SelfConnection);
    }
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let kill = CancellationToken::new();
    let Some(key) = engine.register(addr, cmd_tx, kill.clone()) else {
        return failed(PeerError::Banned);
    };
    let (rd, wr) = stream.into_split();
    let (out_tx, out_rx) = mpsc::channel(64);
    let writer = tokio::spawn(write_loop(wr, out_rx));
    let mut conn = Conn {
        dht_peer: theirs.reserved[7] & 0x01 != 0,
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
    engine.unregister(key);
    drop(conn.out);
    writer.abort();
    tracing::debug!(%addr, ?result, "peer disconnected");
    Outcome {
        handshaked: true,
        useful_bytes: conn.useful_bytes,
        result,
    }
}

/// Writes queued frames, coalescing whatever is waiting into one write.
async fn write_loop(mut wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Bytes>) -> std::io::Result<()> {
    let mut batch = BytesMut::new();
    while let Some(first) = rx.recv().await {
        batch.extend_from_slice(&first);
        while batch.len() < READ_CHUNK {
            match rx.try_recv() {
                Ok(b) => batch.extend_from_slice(&b),
                Err(_) => break,
            }
        }
        wr.write_all(&batch).await?;
        batch.clear();
    }
    let _ = wr.shutdown().await;
    Ok(())
}

struct Conn {
    /// The peer runs a DHT node (BEP-5 reserved bit).
    dht_peer: bool,
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
        mut rd: tokio::net::tcp::OwnedReadHalf,
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
        if have.count() > 0 {
            self.send(&[Message::Bitfield(Bytes::copy_from_slice(have.as_bytes()))])
                .await?;
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
                _ = kill.cancelled() => return Err(PeerError::Banned),
                cmd = cmds.recv() => match cmd {
                    Some(PeerCommand::Cancel(b)) => {
                        if self.outstanding.remove(&(b.piece, b.offset)) {
                            self.send(&[Message::Cancel { piece: b.piece, offset: b.offset, len: b.len }]).await?;
                        }
                    }
                    Some(PeerCommand::Choke) => {
                        if !self.am_choking {
                            self.am_choking = true;
                            // The peer re-requests after the next unchoke.
                            self.uploads.clear();
                            self.send(&[Message::Choke]).await?;
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

    /// Starts reading the next queued blocks, if any and allowed.
    fn start_upload(&mut self) {
        if self.upload_job.is_some() || self.am_choking || self.uploads.is_empty() {
            return;
        }
        let n = self.uploads.len().min(UPLOAD_BATCH);
        let blocks: Vec<BlockRef> = self.uploads.drain(..n).collect();
        let engine = self.engine.clone();
        self.upload_job = Some(Box::pin(async move {
            let total: u64 = blocks.iter().map(|b| u64::from(b.len)).sum();
            engine.upload_limiter().acquire(total).await;
            let e = engine.clone();
            tokio::task::spawn_blocking(move || e.read_blocks(&blocks))
                .await
                .map_err(std::io::Error::other)?
        }));
    }

    async fn finish_upload(&mut self, blocks: Vec<(BlockRef, Bytes)>) -> Result<(), PeerError> {
        if self.am_choking {
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
    fn on_request(&mut self, piece: u32, offset: u32, len: u32) -> Result<(), PeerError> {
        let engine = &self.engine;
        if len == 0 || len > engine.config.max_request_len {
            return Err(PeerError::Protocol(format!("request for {len} bytes")));
        }
        if !engine.geometry.contains(piece, offset, len) {
            return Err(PeerError::Protocol(format!(
                "request outside the torrent: piece {piece} offset {offset} length {len}"
            )));
        }
        if self.am_choking || !engine.has_piece(piece) {
            // Choked requests are void (BEP-3); unhad pieces are refused.
            return Ok(());
        }
        if self.uploads.len() >= MAX_UPLOAD_QUEUE {
            return Err(PeerError::Protocol("request flood".into()));
        }
        self.uploads.push_back(BlockRef { piece, offset, len });
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
                    // Without the fast extension a choke discards our requests.
                    engine.release_all(self.key);
                    self.outstanding.clear();
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
                engine.download_limiter().acquire(data.len() as u64).await;
                self.last_block = Instant::now();
                self.window_bytes += data.len() as u64;
                if engine.on_block(self.key, piece, offset, &data).await {
                    self.useful_bytes += data.len() as u64;
                }
            }
            Message::Request { piece, offset, len } => self.on_request(piece, offset, len)?,
            Message::Cancel { piece, offset, len } => {
                self.uploads
                    .retain(|r| !(r.piece == piece && r.offset == offset && r.len == len));
            }
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

    /// Tops the pipeline up to `depth` requests.
    async fn fill(&mut self) -> Result<(), PeerError> {
        if self.peer_choking || !self.am_interested {
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
        self.engine.pick(self.key, room, &mut picks);
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
        let cfg = &self.engine.config;
        // About half a second of data in flight.
        let per_sec = self.window_bytes / u64::from(BLOCK_LEN);
        self.window_bytes = 0;
        if per_sec > 0 {
            self.depth = ((per_sec / 2) as usize + MIN_DEPTH).min(MAX_DEPTH);
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
