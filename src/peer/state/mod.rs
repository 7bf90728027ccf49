//! The per-peer protocol core, sans IO, like `Choker::tick`: it takes
//! messages, engine commands and ticks with the time, asks the torrent
//! ([`Torrent`]) about pieces, and queues the messages to send. The socket
//! task in `peer` only moves bytes and runs what has to wait (rate limits,
//! disk reads, hashing).
//!
//! Outstanding requests have one owner, [`Pipeline`]: it alone adds and
//! removes them, and every change it makes is mirrored to the picker's
//! assignment through [`Torrent::release`]/[`Torrent::release_all`]. Its set
//! is what the remote still owes us, which may differ from the picker's
//! view for a moment (an end-game block that arrived from another peer is
//! unassigned at once; our cancel reaches this peer later).

mod extended;
mod pipeline;
mod upload;

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use super::PeerError;
use crate::engine::PeerCommand;
use crate::types::{Bitfield, BlockRef, Geometry, InfoHash, PieceIndex};
use crate::wire::{self, Message};

pub(crate) use pipeline::Pipeline;
#[cfg(test)]
pub(crate) use {
    extended::{PEX_EVERY, PEX_FIRST},
    pipeline::{MAX_DEPTH, MIN_DEPTH},
    upload::MAX_UPLOAD_QUEUE,
};

/// Allowed-fast pieces we grant a peer (BEP-6 suggests 10).
const ALLOWED_FAST: usize = 10;
/// Allowed-fast pieces we keep from a peer.
const MAX_ALLOWED_IN: usize = 64;
/// Requests a choking fast peer neither served nor rejected are given up
/// after this.
const CHOKED_GRACE: Duration = Duration::from_secs(10);
/// The torrent as one peer connection sees it: the engine in production,
/// a script in the unit tests. Calls are short and never wait.
pub(crate) trait Torrent {
    fn has_piece(&self, piece: PieceIndex) -> bool;
    /// Records the peer's pieces; whether it has any we need.
    fn on_bitfield(&mut self, has: Bitfield) -> bool;
    /// Records a `have`; whether it is a piece we need.
    fn on_have(&mut self, piece: PieceIndex) -> bool;
    /// Whether the peer still has pieces we need.
    fn is_interesting(&self) -> bool;
    /// Assigns up to `max` blocks to the peer (with `only`, from those
    /// pieces), appended to `out`.
    fn pick(&mut self, max: usize, only: Option<&[PieceIndex]>, out: &mut Vec<BlockRef>);
    /// Unassigns one block (rejected, cancelled, given up).
    fn release(&mut self, block: BlockRef);
    fn release_all(&mut self);
    fn peer_choking(&mut self, choking: bool);
    fn peer_interested(&mut self, interested: bool);
    fn am_interested(&mut self, interested: bool);
    /// Block bytes that arrived unrequested.
    fn wasted(&mut self, bytes: u64);
    /// The dialable peers PEX may list, with their BEP-11 flags.
    fn pex_view(&self) -> Vec<(SocketAddr, u8)>;
    fn add_pex_peers(&mut self, addrs: Vec<SocketAddr>);
    /// The address prefers an encrypted connection.
    fn note_wants_mse(&mut self, addr: SocketAddr);
    fn set_listen_port(&mut self, port: u16);
    fn set_client(&mut self, name: &str);
    /// BEP-5: a DHT node to ping.
    fn dht_ping(&mut self, node: SocketAddr);
}

/// What the core needs to know of the torrent and the session.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub geometry: Geometry,
    pub info_hash: InfoHash,
    pub private: bool,
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
    pub keepalive_interval: Duration,
    pub max_request_len: u32,
}

/// The remote's side of the handshake.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Remote {
    pub addr: SocketAddr,
    /// We dialled it: its address accepts connections.
    pub outgoing: bool,
    /// Both sides set the BEP-6 bit.
    pub fast: bool,
    /// The peer set the BEP-10 bit.
    pub extended: bool,
    /// The peer runs a DHT node (BEP-5 bit).
    pub dht: bool,
}

/// What we tell a peer first, after the handshake.
pub(crate) struct Greeting {
    pub have: Bitfield,
    /// Our extended handshake's payload (sent if the peer set the bit).
    pub ext_handshake: Bytes,
    /// Our DHT node's port, if we run one.
    pub dht_port: Option<u16>,
    /// A magnet's metadata phase already sent our first messages on this
    /// connection: the extended handshake goes again (now with what the
    /// metadata tells) and what we have goes as `have`s, since a bitfield
    /// may only come first.
    pub continued: bool,
}

/// Our side as a downloader: DESIGN.md's "choked" and "downloading"
/// (unchoked; requests flow while we are interested).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Download {
    /// The peer chokes us, since then; only its allowed-fast pieces may be
    /// requested.
    Choked {
        since: Instant,
    },
    Unchoked,
}

/// Work the socket task does for the core because it has to wait.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// A requested block arrived: rate-limit it, give it to the engine,
    /// then call [`PeerState::stored`].
    Store {
        piece: PieceIndex,
        offset: u32,
        data: Bytes,
    },
    /// Send piece `piece` of the info dictionary (BEP-9) under the peer's
    /// extension id `id`.
    Metadata { id: u8, piece: u32 },
}

/// One connection's protocol state after the handshake.
pub(crate) struct PeerState {
    settings: Settings,
    remote: Remote,
    download: Download,
    am_interested: bool,
    pipeline: Pipeline,
    /// Pieces the peer lets us request while it chokes us.
    allowed_in: Vec<PieceIndex>,
    am_choking: bool,
    peer_interested: bool,
    /// Pieces we serve to the peer while choking it.
    allowed_out: Vec<PieceIndex>,
    /// Requests from the peer not yet served, oldest first.
    uploads: VecDeque<BlockRef>,
    /// Blocks handed out by [`PeerState::next_uploads`] are being read.
    uploading: bool,
    /// The peer's ids for ut_metadata and ut_pex, from its extended handshake.
    their_metadata: Option<u8>,
    their_pex: Option<u8>,
    /// Addresses our PEX messages have listed to the peer.
    pex_sent: HashSet<SocketAddr>,
    next_pex: Option<Instant>,
    last_recv: Instant,
    last_sent: Instant,
    /// Messages to send, in order.
    out: Vec<Message>,
}

impl PeerState {
    pub(crate) fn new(settings: Settings, remote: Remote, now: Instant) -> PeerState {
        PeerState {
            settings,
            remote,
            download: Download::Choked { since: now },
            am_interested: false,
            pipeline: Pipeline::new(now),
            allowed_in: Vec::new(),
            am_choking: true,
            peer_interested: false,
            allowed_out: Vec::new(),
            uploads: VecDeque::new(),
            uploading: false,
            their_metadata: None,
            their_pex: None,
            pex_sent: HashSet::new(),
            next_pex: None,
            last_recv: now,
            last_sent: now,
            out: Vec::new(),
        }
    }

    pub(super) fn settings(&self) -> &Settings {
        &self.settings
    }

    pub(super) fn remote(&self) -> &Remote {
        &self.remote
    }

    pub(super) fn send(&mut self, msg: Message, now: Instant) {
        self.out.push(msg);
        self.last_sent = now;
    }

    /// Encodes the queued messages into `buf`; whether there were any.
    pub(crate) fn encode_outbox(&mut self, buf: &mut BytesMut) -> bool {
        if self.out.is_empty() {
            return false;
        }
        for m in self.out.drain(..) {
            m.encode(buf);
        }
        true
    }

    /// Queued messages, taken (for tests).
    #[cfg(test)]
    pub(crate) fn take_outbox(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.out)
    }

    /// Our extended handshake, what we have, the allowed-fast set we grant
    /// and our DHT port, in that order.
    pub(crate) fn start(&mut self, greeting: Greeting, now: Instant) {
        let Greeting {
            have,
            ext_handshake,
            dht_port,
            continued,
        } = greeting;
        let fast = self.remote.fast;
        if self.remote.extended {
            self.send(
                Message::Extended {
                    id: crate::extension::HANDSHAKE,
                    payload: ext_handshake,
                },
                now,
            );
        }
        if continued {
            for p in have.iter_ones() {
                self.send(Message::Have(p.get()), now);
            }
        } else if fast && have.is_full() {
            self.send(Message::HaveAll, now);
        } else if fast && have.count() == 0 {
            self.send(Message::HaveNone, now);
        } else if have.count() > 0 {
            self.send(
                Message::Bitfield(Bytes::copy_from_slice(have.as_bytes())),
                now,
            );
        }
        if let (true, IpAddr::V4(ip)) = (fast, self.remote.addr.ip()) {
            let geo = self.settings.geometry;
            let set =
                wire::allowed_fast_set(ip, &self.settings.info_hash, geo.num_pieces, ALLOWED_FAST);
            self.allowed_out = set
                .into_iter()
                .filter_map(|p| geo.piece(p))
                .filter(|&p| have.get(p))
                .collect();
            for p in self.allowed_out.clone() {
                self.send(Message::AllowedFast(p.get()), now);
            }
        }
        if let (true, Some(port)) = (self.remote.dht, dht_port) {
            self.send(Message::Port(port), now);
        }
    }

    /// Bytes arrived.
    pub(crate) fn received(&mut self, now: Instant) {
        self.last_recv = now;
    }

    /// Pieces the engine verified since the last call: `have`s to send.
    pub(crate) fn verified(&mut self, pieces: Vec<PieceIndex>, now: Instant) {
        for p in pieces {
            self.send(Message::Have(p.get()), now);
        }
    }

    /// A block handed out in [`Action::Store`] has been taken by the engine.
    pub(crate) fn stored(&mut self, bytes: u64, now: Instant) {
        self.pipeline.last_block = now;
        self.pipeline.window_bytes += bytes;
    }

    pub(crate) fn on_message(
        &mut self,
        msg: Message,
        now: Instant,
        t: &mut impl Torrent,
    ) -> Result<Option<Action>, PeerError> {
        match msg {
            Message::KeepAlive => {}
            Message::Choke => {
                t.peer_choking(true);
                if self.download == Download::Unchoked {
                    self.download = Download::Choked { since: now };
                    // Without the fast extension a choke discards our
                    // requests; with it, each is served or rejected.
                    if !self.remote.fast {
                        self.pipeline.release_all(t);
                    }
                }
            }
            Message::Unchoke => {
                t.peer_choking(false);
                self.download = Download::Unchoked;
                self.pipeline.last_block = now;
            }
            Message::Interested | Message::NotInterested => {
                self.peer_interested = matches!(msg, Message::Interested);
                t.peer_interested(self.peer_interested);
            }
            Message::Have(_) | Message::Bitfield(_) | Message::HaveAll | Message::HaveNone => {
                self.on_availability(msg, now, t)?;
            }
            Message::Piece {
                piece,
                offset,
                data,
            } => {
                // Only pieces of the torrent were requested.
                let requested = self.settings.geometry.piece(piece);
                let Some(piece) = requested.filter(|_| self.pipeline.answered(piece, offset))
                else {
                    // Unrequested or cancelled: dropped, never stored.
                    t.wasted(data.len() as u64);
                    return Ok(None);
                };
                return Ok(Some(Action::Store {
                    piece,
                    offset,
                    data,
                }));
            }
            Message::Request { piece, offset, len } => {
                self.on_request(piece, offset, len, now, t)?
            }
            Message::Cancel { piece, offset, len } => {
                self.on_cancel(BlockRef { piece, offset, len }, now)
            }
            Message::Reject { .. } | Message::AllowedFast(_) | Message::Suggest(_) => {
                self.on_fast(msg, t)?;
            }
            Message::Extended { id, payload } => return Ok(self.on_extended(id, &payload, now, t)),
            Message::Port(port) => {
                // BEP-5: ping the peer's DHT node; it joins our table if it
                // answers.
                if port != 0 {
                    t.dht_ping(SocketAddr::new(self.remote.addr.ip(), port));
                }
            }
            Message::Unknown(_) => {}
        }
        Ok(None)
    }

    /// `have`, `bitfield` and BEP-6 `have all`/`have none`: what the peer
    /// has, and whether we want any of it.
    fn on_availability(
        &mut self,
        msg: Message,
        now: Instant,
        t: &mut impl Torrent,
    ) -> Result<(), PeerError> {
        let geo = self.settings.geometry;
        let num_pieces = geo.num_pieces;
        match msg {
            Message::Have(p) => {
                let Some(p) = geo.piece(p) else {
                    return Err(PeerError::Protocol(format!(
                        "have for piece {p} out of range"
                    )));
                };
                if t.on_have(p) {
                    self.set_interested(true, now, t);
                }
            }
            Message::Bitfield(bytes) => {
                let bits = Bitfield::from_bytes(&bytes, num_pieces).ok_or_else(|| {
                    PeerError::Protocol(format!(
                        "bitfield of {} bytes is malformed for {num_pieces} pieces",
                        bytes.len(),
                    ))
                })?;
                let interesting = t.on_bitfield(bits);
                self.set_interested(interesting, now, t);
            }
            Message::HaveAll | Message::HaveNone => {
                self.need_fast(&msg)?;
                let bits = if msg == Message::HaveAll {
                    Bitfield::full(num_pieces)
                } else {
                    Bitfield::new(num_pieces)
                };
                let interesting = t.on_bitfield(bits);
                self.set_interested(interesting, now, t);
            }
            _ => {}
        }
        Ok(())
    }

    /// BEP-6 `reject`, `allowed fast` and `suggest`.
    fn on_fast(&mut self, msg: Message, t: &mut impl Torrent) -> Result<(), PeerError> {
        self.need_fast(&msg)?;
        let geo = self.settings.geometry;
        match msg {
            Message::Reject { piece, offset, len } => {
                // A reject for a block we cancelled since is expected.
                self.pipeline.release(BlockRef { piece, offset, len }, t);
            }
            Message::AllowedFast(p) => {
                // Out of range or past our cap: ignored.
                if let Some(p) = geo.piece(p) {
                    if self.allowed_in.len() < MAX_ALLOWED_IN && !self.allowed_in.contains(&p) {
                        self.allowed_in.push(p);
                    }
                }
            }
            // A hint only: the picker's order is kept.
            Message::Suggest(_) => {}
            _ => {}
        }
        Ok(())
    }

    fn need_fast(&self, msg: &Message) -> Result<(), PeerError> {
        if self.remote.fast {
            Ok(())
        } else {
            Err(PeerError::Protocol(format!(
                "{msg:?} without the fast extension"
            )))
        }
    }

    /// An order from the engine. A closed command channel reads as
    /// `Disconnect`.
    pub(crate) fn on_command(
        &mut self,
        cmd: PeerCommand,
        now: Instant,
        t: &mut impl Torrent,
    ) -> Result<(), PeerError> {
        match cmd {
            PeerCommand::Cancel(b) => {
                // The command names a block, not a request: if its piece
                // failed and we asked for the block again since, this
                // cancel is stale and the picker still lists us for it.
                // Releasing it keeps the two in step (a no-op for a
                // current cancel: the engine unassigned it already).
                if self.pipeline.release(b, t) {
                    self.send(
                        Message::Cancel {
                            piece: b.piece,
                            offset: b.offset,
                            len: b.len,
                        },
                        now,
                    );
                }
            }
            PeerCommand::Choke => {
                if !self.am_choking {
                    self.am_choking = true;
                    self.send(Message::Choke, now);
                    self.void_uploads(now);
                }
            }
            PeerCommand::Unchoke => {
                if self.am_choking {
                    self.am_choking = false;
                    self.send(Message::Unchoke, now);
                }
            }
            PeerCommand::Disconnect => return Err(PeerError::Banned),
        }
        Ok(())
    }

    fn set_interested(&mut self, want: bool, now: Instant, t: &mut impl Torrent) {
        if want != self.am_interested {
            self.am_interested = want;
            t.am_interested(want);
            self.send(
                if want {
                    Message::Interested
                } else {
                    Message::NotInterested
                },
                now,
            );
        }
    }

    /// Once a second: pipeline depth, the timers, PEX, interest, then
    /// [`PeerState::fill`].
    pub(crate) fn on_tick(&mut self, now: Instant, t: &mut impl Torrent) -> Result<(), PeerError> {
        self.pipeline.adapt();
        if let Download::Choked { since } = self.download {
            if self.remote.fast
                && !self.pipeline.outstanding.is_empty()
                && now - since > CHOKED_GRACE
            {
                self.give_up_choked(t);
                self.pipeline.last_block = now;
            }
        }
        if self.next_pex.is_some_and(|at| now >= at) {
            self.next_pex = Some(now + extended::PEX_EVERY);
            self.send_pex(now, t);
        }
        if !self.pipeline.outstanding.is_empty()
            && now - self.pipeline.last_block > self.settings.request_timeout
        {
            self.pipeline.release_all(t);
            return Err(PeerError::Timeout("waiting for requested blocks"));
        }
        if now - self.last_recv > self.settings.idle_timeout {
            return Err(PeerError::Timeout("peer went silent"));
        }
        if now - self.last_sent > self.settings.keepalive_interval {
            self.send(Message::KeepAlive, now);
        }
        if self.am_interested && self.pipeline.outstanding.is_empty() && !t.is_interesting() {
            self.set_interested(false, now, t);
        }
        self.fill(now, t);
        Ok(())
    }

    pub(super) fn remote_addr(&self) -> SocketAddr {
        self.remote.addr
    }

    pub(super) fn pipeline_mut(&mut self) -> &mut Pipeline {
        &mut self.pipeline
    }
}

/// What the unit tests observe.
#[cfg(test)]
impl PeerState {
    pub(crate) fn download(&self) -> Download {
        self.download
    }

    pub(crate) fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    pub(crate) fn am_choking(&self) -> bool {
        self.am_choking
    }

    pub(crate) fn peer_interested(&self) -> bool {
        self.peer_interested
    }
}
