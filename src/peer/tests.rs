//! The peer core against a scripted torrent: one test per row of
//! DESIGN.md's connection-state table, per timer, and per BEP-6/10/11 rule.
//! No sockets, no sleeps: time is passed in.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::state::*;
use super::state::{PEX_EVERY, PEX_FIRST};
use super::PeerError;
use crate::engine::PeerCommand;
use crate::extension::{self, pex_flags, ExtHandshake, MetadataMsg, PexMsg};
use crate::types::{Bitfield, BlockRef, Geometry, InfoHash, PieceIndex, BLOCK_LEN};
use crate::wire::Message;

/// 64 pieces of 4 blocks.
const PIECES: u32 = 64;
const PIECE_LEN: u32 = 4 * BLOCK_LEN;

fn geometry() -> Geometry {
    Geometry::new(u64::from(PIECES) * u64::from(PIECE_LEN), PIECE_LEN)
}

fn ix(raw: u32) -> PieceIndex {
    geometry().piece(raw).unwrap()
}

fn settings() -> Settings {
    Settings {
        geometry: geometry(),
        info_hash: InfoHash([7; 20]),
        private: false,
        request_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(180),
        keepalive_interval: Duration::from_secs(90),
        max_request_len: BLOCK_LEN,
    }
}

fn addr() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(10, 1, 2, 3), 6881))
}

fn remote(fast: bool) -> Remote {
    Remote {
        addr: addr(),
        outgoing: true,
        fast,
        extended: true,
        dht: true,
    }
}

/// The torrent as the core sees it: hands out blocks in order and records
/// every call.
#[derive(Default)]
struct Script {
    /// The peer's pieces.
    has: Option<Bitfield>,
    /// Pieces we have (served to the peer, never requested).
    ours: HashSet<u32>,
    assigned: HashSet<BlockRef>,
    peer_choking: Option<bool>,
    peer_interested: Option<bool>,
    am_interested: Option<bool>,
    wasted: u64,
    pex_view: Vec<(SocketAddr, u8)>,
    pex_added: Vec<SocketAddr>,
    wants_mse: Vec<SocketAddr>,
    listen_port: Option<u16>,
    client: Option<String>,
    dht_pings: Vec<SocketAddr>,
}

impl Script {
    fn has(&self, p: PieceIndex) -> bool {
        self.has.as_ref().is_some_and(|h| h.get(p))
    }
}

impl Torrent for Script {
    fn has_piece(&self, piece: PieceIndex) -> bool {
        self.ours.contains(&piece.get())
    }
    fn on_bitfield(&mut self, has: Bitfield) -> bool {
        self.has = Some(has);
        self.is_interesting()
    }
    fn on_have(&mut self, piece: PieceIndex) -> bool {
        self.has
            .get_or_insert_with(|| Bitfield::new(PIECES))
            .set(piece);
        !self.ours.contains(&piece.get())
    }
    fn is_interesting(&self) -> bool {
        geometry()
            .pieces()
            .any(|p| self.has(p) && !self.ours.contains(&p.get()))
    }
    fn pick(&mut self, max: usize, only: Option<&[PieceIndex]>, out: &mut Vec<BlockRef>) {
        let geo = geometry();
        for p in geo.pieces() {
            if !self.has(p) || self.ours.contains(&p.get()) || only.is_some_and(|o| !o.contains(&p))
            {
                continue;
            }
            for i in 0..geo.blocks_in_piece(p) {
                let b = geo.block(p, i);
                if out.len() < max && self.assigned.insert(b) {
                    out.push(b);
                }
            }
        }
    }
    fn release(&mut self, block: BlockRef) {
        self.assigned.remove(&block);
    }
    fn release_all(&mut self) {
        self.assigned.clear();
    }
    fn peer_choking(&mut self, choking: bool) {
        self.peer_choking = Some(choking);
    }
    fn peer_interested(&mut self, interested: bool) {
        self.peer_interested = Some(interested);
    }
    fn am_interested(&mut self, interested: bool) {
        self.am_interested = Some(interested);
    }
    fn wasted(&mut self, bytes: u64) {
        self.wasted += bytes;
    }
    fn pex_view(&self) -> Vec<(SocketAddr, u8)> {
        self.pex_view.clone()
    }
    fn add_pex_peers(&mut self, addrs: Vec<SocketAddr>) {
        self.pex_added.extend(addrs);
    }
    fn note_wants_mse(&mut self, addr: SocketAddr) {
        self.wants_mse.push(addr);
    }
    fn set_listen_port(&mut self, port: u16) {
        self.listen_port = Some(port);
    }
    fn set_client(&mut self, name: &str) {
        self.client = Some(name.to_string());
    }
    fn dht_ping(&mut self, node: SocketAddr) {
        self.dht_pings.push(node);
    }
}

struct Peer {
    core: PeerState,
    t: Script,
    t0: Instant,
}

impl Peer {
    fn new(fast: bool) -> Peer {
        Peer::with(settings(), remote(fast))
    }

    fn with(settings: Settings, remote: Remote) -> Peer {
        let t0 = Instant::now();
        Peer {
            core: PeerState::new(settings, remote, t0),
            t: Script::default(),
            t0,
        }
    }

    fn at(&self, secs: u64) -> Instant {
        self.t0 + Duration::from_secs(secs)
    }

    fn msg(&mut self, m: Message, secs: u64) -> Result<Option<Action>, PeerError> {
        let now = self.at(secs);
        self.core.on_message(m, now, &mut self.t)
    }

    fn ok(&mut self, m: Message) {
        self.msg(m, 0).expect("accepted");
        self.core.fill(self.t0, &mut self.t);
    }

    fn tick(&mut self, secs: u64) -> Result<(), PeerError> {
        let now = self.at(secs);
        self.core.on_tick(now, &mut self.t)
    }

    fn cmd(&mut self, c: PeerCommand) -> Result<(), PeerError> {
        self.core.on_command(c, self.t0, &mut self.t)
    }

    fn sent(&mut self) -> Vec<Message> {
        self.core.take_outbox()
    }

    fn requests(&mut self) -> Vec<BlockRef> {
        self.sent()
            .into_iter()
            .filter_map(|m| match m {
                Message::Request { piece, offset, len } => Some(BlockRef { piece, offset, len }),
                _ => None,
            })
            .collect()
    }

    /// The peer has every piece and unchoked us; requests are out.
    fn downloading(fast: bool) -> Peer {
        let mut p = Peer::new(fast);
        p.ok(Message::Bitfield(full_bitfield()));
        p.ok(Message::Unchoke);
        p.sent();
        p
    }
}

fn full_bitfield() -> Bytes {
    Bytes::copy_from_slice(Bitfield::full(PIECES).as_bytes())
}

fn piece_msg(b: BlockRef) -> Message {
    Message::Piece {
        piece: b.piece,
        offset: b.offset,
        data: Bytes::from(vec![0u8; b.len as usize]),
    }
}

fn ext(hs: ExtHandshake) -> Message {
    Message::Extended {
        id: extension::HANDSHAKE,
        payload: Bytes::from(hs.encode()),
    }
}

fn with_pex() -> ExtHandshake {
    ExtHandshake {
        m: vec![
            (extension::UT_PEX.into(), 9),
            (extension::UT_METADATA.into(), 3),
        ],
        ..ExtHandshake::default()
    }
}

// ---- The state table: choked -> downloading -> choked ----

#[test]
fn a_choking_peer_gets_interest_but_no_requests() {
    let mut p = Peer::new(false);
    p.ok(Message::Bitfield(full_bitfield()));
    assert_eq!(p.sent(), vec![Message::Interested]);
    assert_eq!(p.t.am_interested, Some(true));
    assert!(matches!(p.core.download(), Download::Choked { .. }));
    assert_eq!(p.core.pipeline().len(), 0);
}

#[test]
fn unchoke_starts_the_pipeline_at_its_starting_depth() {
    let mut p = Peer::new(false);
    p.ok(Message::Bitfield(full_bitfield()));
    p.sent();
    p.ok(Message::Unchoke);
    assert_eq!(p.core.download(), Download::Unchoked);
    assert_eq!(p.t.peer_choking, Some(false));
    let reqs = p.requests();
    assert_eq!(reqs.len(), 64);
    assert_eq!(p.core.pipeline().len(), 64);
    assert_eq!(p.t.assigned.len(), 64);
}

#[test]
fn choke_without_fast_releases_every_request() {
    let mut p = Peer::downloading(false);
    p.ok(Message::Choke);
    assert!(matches!(p.core.download(), Download::Choked { .. }));
    assert_eq!(p.t.peer_choking, Some(true));
    assert_eq!(p.core.pipeline().len(), 0);
    assert!(p.t.assigned.is_empty());
    assert!(p.requests().is_empty(), "no requests while choked");
}

#[test]
fn choke_with_fast_keeps_requests_for_the_grace_period_then_releases_them() {
    let mut p = Peer::downloading(true);
    p.ok(Message::AllowedFast(0));
    p.msg(Message::Choke, 1).unwrap();
    assert_eq!(p.core.pipeline().len(), 64, "a fast choke voids nothing");
    p.tick(5).unwrap();
    assert_eq!(p.core.pipeline().len(), 64);
    p.tick(12).unwrap();
    // Piece 0 is allowed fast: its four requests stay.
    assert_eq!(p.core.pipeline().len(), 4);
    assert_eq!(p.t.assigned.len(), 4);
    assert!(p.t.assigned.iter().all(|b| b.piece == 0));
}

#[test]
fn allowed_fast_pieces_are_requested_while_choked() {
    let mut p = Peer::new(true);
    p.ok(Message::Bitfield(full_bitfield()));
    p.ok(Message::AllowedFast(5));
    p.ok(Message::AllowedFast(PIECES + 3)); // out of range: ignored
    let reqs = p.requests();
    assert_eq!(reqs.len(), 4);
    assert!(reqs.iter().all(|b| b.piece == 5));
}

#[test]
fn request_timeout_releases_the_requests_and_drops_the_peer() {
    let mut p = Peer::downloading(false);
    p.tick(29).unwrap();
    let err = p.tick(31).unwrap_err();
    assert!(matches!(
        err,
        PeerError::Timeout("waiting for requested blocks")
    ));
    assert!(p.t.assigned.is_empty());
    assert_eq!(p.core.pipeline().len(), 0);
}

#[test]
fn a_stored_block_restarts_the_request_timer() {
    let mut p = Peer::downloading(false);
    let first = geometry().block(ix(0), 0);
    assert!(matches!(
        p.msg(piece_msg(first), 20).unwrap(),
        Some(Action::Store { .. })
    ));
    p.core.stored(u64::from(BLOCK_LEN), p.at(20));
    p.tick(45).unwrap();
    assert!(p.tick(51).is_err());
}

#[test]
fn a_silent_peer_is_dropped_after_the_idle_timeout() {
    let mut p = Peer::new(false);
    p.tick(170).unwrap();
    p.core.received(p.at(170));
    p.tick(300).unwrap();
    let err = p.tick(351).unwrap_err();
    assert!(matches!(err, PeerError::Timeout("peer went silent")));
}

#[test]
fn keepalive_goes_out_only_after_the_interval_without_sending() {
    let mut p = Peer::new(false);
    p.tick(89).unwrap();
    assert!(p.sent().is_empty());
    p.tick(91).unwrap();
    assert_eq!(p.sent(), vec![Message::KeepAlive]);
    p.tick(100).unwrap();
    assert!(p.sent().is_empty(), "the keep-alive counts as sending");
}

// ---- Protocol violations ----

#[test]
fn have_out_of_range_is_a_protocol_violation() {
    let mut p = Peer::new(false);
    assert!(matches!(
        p.msg(Message::Have(PIECES), 0),
        Err(PeerError::Protocol(_))
    ));
}

#[test]
fn rejects_bitfield_of_the_wrong_length_or_with_spare_bits_set() {
    let mut p = Peer::new(false);
    let short = Bytes::from(vec![0xff; 7]);
    assert!(matches!(
        p.msg(Message::Bitfield(short), 0),
        Err(PeerError::Protocol(_))
    ));
    let g = Geometry::new(10 * u64::from(PIECE_LEN), PIECE_LEN);
    let mut p = Peer::with(
        Settings {
            geometry: g,
            ..settings()
        },
        remote(false),
    );
    let spare = Bytes::from(vec![0xff, 0xff]); // 10 pieces, 6 spare bits set
    assert!(matches!(
        p.msg(Message::Bitfield(spare), 0),
        Err(PeerError::Protocol(_))
    ));
}

#[test]
fn a_late_bitfield_replaces_the_first() {
    let mut p = Peer::new(false);
    p.ok(Message::Bitfield(full_bitfield()));
    p.ok(Message::Bitfield(Bytes::from(vec![0; 8])));
    assert_eq!(p.t.has.as_ref().unwrap().count(), 0);
    assert_eq!(p.sent(), vec![Message::Interested, Message::NotInterested]);
}

#[test]
fn fast_messages_without_the_fast_bit_are_violations() {
    for m in [
        Message::HaveAll,
        Message::HaveNone,
        Message::Suggest(1),
        Message::AllowedFast(1),
        Message::Reject {
            piece: 0,
            offset: 0,
            len: BLOCK_LEN,
        },
    ] {
        let mut p = Peer::new(false);
        assert!(matches!(p.msg(m, 0), Err(PeerError::Protocol(_))));
    }
}

#[test]
fn requests_too_long_outside_the_torrent_or_flooding_are_violations() {
    let mut p = Peer::new(false);
    let bad = [
        Message::Request {
            piece: 0,
            offset: 0,
            len: BLOCK_LEN + 1,
        },
        Message::Request {
            piece: 0,
            offset: 0,
            len: 0,
        },
        Message::Request {
            piece: PIECES,
            offset: 0,
            len: BLOCK_LEN,
        },
        Message::Request {
            piece: 0,
            offset: PIECE_LEN,
            len: BLOCK_LEN,
        },
    ];
    for m in bad {
        assert!(matches!(p.msg(m, 0), Err(PeerError::Protocol(_))));
    }
    let mut p = Peer::new(false);
    p.t.ours.insert(0);
    p.cmd(PeerCommand::Unchoke).unwrap();
    let req = Message::Request {
        piece: 0,
        offset: 0,
        len: BLOCK_LEN,
    };
    for _ in 0..MAX_UPLOAD_QUEUE {
        p.msg(req.clone(), 0).unwrap();
    }
    assert!(matches!(p.msg(req, 0), Err(PeerError::Protocol(_))));
}

// ---- Blocks, rejects and cancels: one owner for requests ----

#[test]
fn an_unrequested_block_is_wasted_and_a_requested_one_stored_once() {
    let mut p = Peer::downloading(false);
    let stray = geometry().block(ix(PIECES - 1), 0);
    assert_eq!(p.msg(piece_msg(stray), 0).unwrap(), None);
    assert_eq!(p.t.wasted, u64::from(BLOCK_LEN));
    let b = geometry().block(ix(0), 1);
    assert!(
        matches!(p.msg(piece_msg(b), 0).unwrap(), Some(Action::Store { piece, offset, .. }) if piece == ix(0) && offset == BLOCK_LEN)
    );
    assert_eq!(p.core.pipeline().len(), 63);
    assert_eq!(p.msg(piece_msg(b), 0).unwrap(), None);
    assert_eq!(p.t.wasted, 2 * u64::from(BLOCK_LEN));
    let past_the_end = BlockRef { piece: PIECES, ..b };
    assert_eq!(p.msg(piece_msg(past_the_end), 0).unwrap(), None);
    assert_eq!(p.t.wasted, 3 * u64::from(BLOCK_LEN));
}

#[test]
fn a_reject_returns_the_block_to_the_picker() {
    let mut p = Peer::downloading(true);
    let b = geometry().block(ix(0), 2);
    p.ok(Message::Reject {
        piece: b.piece,
        offset: b.offset,
        len: b.len,
    });
    assert_eq!(p.core.pipeline().len(), 63);
    assert!(!p.t.assigned.contains(&b));
    // A second reject for it (cancelled since) changes nothing.
    p.ok(Message::Reject {
        piece: b.piece,
        offset: b.offset,
        len: b.len,
    });
    assert_eq!(p.core.pipeline().len(), 63);
}

#[test]
fn a_cancel_command_cancels_an_outstanding_request_only() {
    let mut p = Peer::downloading(false);
    let b = geometry().block(ix(0), 0);
    p.cmd(PeerCommand::Cancel(b)).unwrap();
    assert_eq!(
        p.sent(),
        vec![Message::Cancel {
            piece: 0,
            offset: 0,
            len: BLOCK_LEN
        }]
    );
    assert_eq!(p.core.pipeline().len(), 63);
    p.cmd(PeerCommand::Cancel(b)).unwrap();
    assert!(p.sent().is_empty(), "not outstanding any more");
}

#[test]
fn a_stale_cancel_command_also_unassigns_the_block() {
    // The block was reassigned to us after the engine sent the cancel: the
    // picker must not keep listing us for a request we just cancelled.
    let mut p = Peer::downloading(false);
    let b = geometry().block(ix(0), 0);
    assert!(p.t.assigned.contains(&b));
    p.cmd(PeerCommand::Cancel(b)).unwrap();
    assert!(!p.t.assigned.contains(&b));
}

// ---- Pipeline depth ----

#[test]
fn pipeline_depth_follows_the_measured_rate() {
    let mut p = Peer::downloading(false);
    assert_eq!(p.core.pipeline().depth(), 64);
    p.core.stored(200 * u64::from(BLOCK_LEN), p.at(1));
    p.tick(1).unwrap();
    assert_eq!(p.core.pipeline().depth(), 116);
    p.core.stored(2000 * u64::from(BLOCK_LEN), p.at(2));
    p.tick(2).unwrap();
    assert_eq!(p.core.pipeline().depth(), MAX_DEPTH);
    // A quiet second keeps the depth.
    p.tick(3).unwrap();
    assert_eq!(p.core.pipeline().depth(), MAX_DEPTH);
}

#[test]
fn the_peers_reqq_caps_the_pipeline() {
    let mut p = Peer::new(false);
    p.ok(ext(ExtHandshake {
        reqq: Some(20),
        ..ExtHandshake::default()
    }));
    assert_eq!(p.core.pipeline().depth(), 20);
    p.ok(Message::Bitfield(full_bitfield()));
    p.ok(Message::Unchoke);
    assert_eq!(p.requests().len(), 20);
    let mut p = Peer::new(false);
    p.ok(ext(ExtHandshake {
        reqq: Some(1),
        ..ExtHandshake::default()
    }));
    assert_eq!(p.core.pipeline().depth(), MIN_DEPTH);
}

#[test]
fn requests_go_out_in_batches() {
    let mut p = Peer::downloading(false);
    let geo = geometry();
    for i in 0..3 {
        let b = geo.block(ix(0), i);
        p.msg(piece_msg(b), 0).unwrap();
    }
    p.core.fill(p.t0, &mut p.t);
    assert!(p.requests().is_empty(), "three free slots wait for more");
    for i in 0..8 {
        let b = geo.block(ix(1 + i / 4), i % 4);
        p.msg(piece_msg(b), 0).unwrap();
    }
    p.core.fill(p.t0, &mut p.t);
    assert_eq!(p.requests().len(), 11);
}

// ---- Interest ----

#[test]
fn interest_ends_when_the_peer_has_nothing_we_need_and_nothing_is_owed() {
    let mut p = Peer::new(false);
    p.ok(Message::Have(3));
    assert_eq!(p.sent(), vec![Message::Interested]);
    p.t.ours.insert(3);
    p.tick(1).unwrap();
    assert_eq!(p.sent(), vec![Message::NotInterested]);
    assert_eq!(p.t.am_interested, Some(false));
}

#[test]
fn the_peers_interest_is_recorded() {
    let mut p = Peer::new(false);
    p.ok(Message::Interested);
    assert!(p.core.peer_interested());
    assert_eq!(p.t.peer_interested, Some(true));
    p.ok(Message::NotInterested);
    assert_eq!(p.t.peer_interested, Some(false));
}

// ---- Uploads ----

#[test]
fn requests_while_choking_are_void_and_a_fast_peer_is_told() {
    let req = Message::Request {
        piece: 1,
        offset: 0,
        len: BLOCK_LEN,
    };
    let mut p = Peer::new(false);
    p.t.ours.insert(1);
    p.ok(req.clone());
    assert!(p.sent().is_empty());
    assert_eq!(p.core.next_uploads(), None);
    let mut p = Peer::new(true);
    p.t.ours.insert(1);
    p.ok(req);
    assert_eq!(
        p.sent(),
        vec![Message::Reject {
            piece: 1,
            offset: 0,
            len: BLOCK_LEN
        }]
    );
}

#[test]
fn a_request_for_a_piece_we_lack_is_refused() {
    let mut p = Peer::new(true);
    p.cmd(PeerCommand::Unchoke).unwrap();
    p.sent();
    p.ok(Message::Request {
        piece: 1,
        offset: 0,
        len: BLOCK_LEN,
    });
    assert_eq!(
        p.sent(),
        vec![Message::Reject {
            piece: 1,
            offset: 0,
            len: BLOCK_LEN
        }]
    );
}

#[test]
fn unchoked_requests_are_read_in_batches_of_sixteen() {
    let mut p = Peer::new(false);
    p.t.ours.insert(0);
    p.t.ours.insert(1);
    p.t.ours.insert(2);
    p.t.ours.insert(3);
    p.t.ours.insert(4);
    p.cmd(PeerCommand::Unchoke).unwrap();
    assert_eq!(p.sent(), vec![Message::Unchoke]);
    let geo = geometry();
    for piece in 0..5 {
        for i in 0..4 {
            let b = geo.block(ix(piece), i);
            p.ok(Message::Request {
                piece,
                offset: b.offset,
                len: b.len,
            });
        }
    }
    let first = p.core.next_uploads().unwrap();
    assert_eq!(first.len(), 16);
    assert_eq!(first[0], geo.block(ix(0), 0));
    assert_eq!(p.core.next_uploads(), None, "one read at a time");
    assert!(p.core.uploads_read(p.t0));
    assert_eq!(p.core.next_uploads().unwrap().len(), 4);
}

#[test]
fn blocks_read_after_choking_a_plain_peer_are_not_sent() {
    let mut p = Peer::new(false);
    p.t.ours.insert(0);
    p.cmd(PeerCommand::Unchoke).unwrap();
    p.ok(Message::Request {
        piece: 0,
        offset: 0,
        len: BLOCK_LEN,
    });
    p.ok(Message::Request {
        piece: 0,
        offset: BLOCK_LEN,
        len: BLOCK_LEN,
    });
    assert_eq!(p.core.next_uploads().unwrap().len(), 2);
    p.cmd(PeerCommand::Choke).unwrap();
    assert!(!p.core.uploads_read(p.t0));
}

#[test]
fn choking_a_fast_peer_rejects_its_queue_but_serves_allowed_fast_pieces() {
    let mut p = Peer::new(true);
    let have = Bitfield::full(PIECES);
    for q in 0..PIECES {
        p.t.ours.insert(q);
    }
    p.core.start(
        Greeting {
            have,
            ext_handshake: Bytes::new(),
            dht_port: None,
            continued: false,
        },
        p.t0,
    );
    let allowed: Vec<u32> = p
        .sent()
        .into_iter()
        .filter_map(|m| match m {
            Message::AllowedFast(q) => Some(q),
            _ => None,
        })
        .collect();
    assert_eq!(allowed.len(), 10);
    let other = (0..PIECES).find(|q| !allowed.contains(q)).unwrap();
    p.cmd(PeerCommand::Unchoke).unwrap();
    p.ok(Message::Request {
        piece: allowed[0],
        offset: 0,
        len: BLOCK_LEN,
    });
    p.ok(Message::Request {
        piece: other,
        offset: 0,
        len: BLOCK_LEN,
    });
    p.sent();
    p.cmd(PeerCommand::Choke).unwrap();
    assert_eq!(
        p.sent(),
        vec![
            Message::Choke,
            Message::Reject {
                piece: other,
                offset: 0,
                len: BLOCK_LEN
            }
        ]
    );
    assert_eq!(
        p.core.next_uploads().unwrap(),
        vec![BlockRef {
            piece: allowed[0],
            offset: 0,
            len: BLOCK_LEN
        }]
    );
    assert!(
        p.core.uploads_read(p.t0),
        "a fast peer gets what we did not reject"
    );
    // Allowed-fast requests are accepted while choking.
    p.ok(Message::Request {
        piece: allowed[1],
        offset: 0,
        len: BLOCK_LEN,
    });
    assert!(p.sent().is_empty());
    assert_eq!(p.core.next_uploads().unwrap().len(), 1);
}

#[test]
fn a_cancelled_queued_request_is_dropped_and_a_fast_peer_gets_a_reject() {
    for fast in [false, true] {
        let mut p = Peer::new(fast);
        p.t.ours.insert(0);
        p.cmd(PeerCommand::Unchoke).unwrap();
        p.ok(Message::Request {
            piece: 0,
            offset: 0,
            len: BLOCK_LEN,
        });
        p.sent();
        p.ok(Message::Cancel {
            piece: 0,
            offset: 0,
            len: BLOCK_LEN,
        });
        let expect = if fast {
            vec![Message::Reject {
                piece: 0,
                offset: 0,
                len: BLOCK_LEN,
            }]
        } else {
            vec![]
        };
        assert_eq!(p.sent(), expect);
        assert_eq!(p.core.next_uploads(), None);
    }
}

#[test]
fn choke_and_unchoke_commands_are_sent_once_each() {
    let mut p = Peer::new(false);
    assert!(p.core.am_choking());
    p.cmd(PeerCommand::Choke).unwrap();
    assert!(p.sent().is_empty(), "already choking");
    p.cmd(PeerCommand::Unchoke).unwrap();
    p.cmd(PeerCommand::Unchoke).unwrap();
    assert_eq!(p.sent(), vec![Message::Unchoke]);
    assert!(matches!(
        p.cmd(PeerCommand::Disconnect),
        Err(PeerError::Banned)
    ));
}

// ---- The greeting ----

#[test]
fn the_greeting_is_ext_handshake_then_pieces_then_allowed_fast_then_port() {
    let mut p = Peer::new(true);
    let mut have = Bitfield::new(PIECES);
    have.set(ix(1));
    let payload = Bytes::from_static(b"d1:md11:ut_metadatai1eee");
    p.core.start(
        Greeting {
            have: have.clone(),
            ext_handshake: payload.clone(),
            dht_port: Some(7000),
            continued: false,
        },
        p.t0,
    );
    let sent = p.sent();
    assert_eq!(
        sent[0],
        Message::Extended {
            id: extension::HANDSHAKE,
            payload
        }
    );
    assert_eq!(
        sent[1],
        Message::Bitfield(Bytes::copy_from_slice(have.as_bytes()))
    );
    // Only piece 1 is ours, so at most it is granted.
    assert!(sent[2..sent.len() - 1]
        .iter()
        .all(|m| *m == Message::AllowedFast(1)));
    assert_eq!(sent.last(), Some(&Message::Port(7000)));
}

#[test]
fn after_a_metadata_phase_the_greeting_sends_haves_never_a_bitfield() {
    let mut p = Peer::new(true);
    let mut have = Bitfield::new(PIECES);
    have.set(ix(1));
    have.set(ix(3));
    let payload = Bytes::from_static(b"d1:md6:ut_pexi2eee");
    p.core.start(
        Greeting {
            have,
            ext_handshake: payload.clone(),
            dht_port: None,
            continued: true,
        },
        p.t0,
    );
    let sent = p.sent();
    assert_eq!(
        sent[..3],
        [
            Message::Extended {
                id: extension::HANDSHAKE,
                payload
            },
            Message::Have(1),
            Message::Have(3),
        ]
    );
    assert!(sent.iter().all(|m| !matches!(
        m,
        Message::Bitfield(_) | Message::HaveAll | Message::HaveNone
    )));
}

#[test]
fn a_fast_peer_hears_have_all_or_have_none_and_a_plain_one_a_bitfield_or_nothing() {
    let cases = [
        (true, Bitfield::full(PIECES), Some(Message::HaveAll)),
        (true, Bitfield::new(PIECES), Some(Message::HaveNone)),
        (false, Bitfield::new(PIECES), None),
    ];
    for (fast, have, first) in cases {
        let mut p = Peer::with(
            settings(),
            Remote {
                extended: false,
                dht: false,
                ..remote(fast)
            },
        );
        p.core.start(
            Greeting {
                have,
                ext_handshake: Bytes::new(),
                dht_port: None,
                continued: false,
            },
            p.t0,
        );
        assert_eq!(p.sent().into_iter().next(), first);
    }
}

#[test]
fn new_pieces_are_announced_with_have() {
    let mut p = Peer::new(false);
    p.core.verified(vec![ix(4), ix(9)], p.t0);
    assert_eq!(p.sent(), vec![Message::Have(4), Message::Have(9)]);
}

#[test]
fn a_port_message_pings_the_peers_dht_node() {
    let mut p = Peer::new(false);
    p.ok(Message::Port(7001));
    p.ok(Message::Port(0));
    assert_eq!(p.t.dht_pings, vec![SocketAddr::new(addr().ip(), 7001)]);
}

// ---- BEP-10/9/11 ----

#[test]
fn the_extended_handshake_records_port_client_and_encryption() {
    let mut p = Peer::new(false);
    p.ok(ext(ExtHandshake {
        listen_port: Some(5000),
        client: Some("Other 1.0".into()),
        encryption: true,
        ..ExtHandshake::default()
    }));
    assert_eq!(p.t.listen_port, Some(5000));
    assert_eq!(p.t.client.as_deref(), Some("Other 1.0"));
    assert_eq!(p.t.wants_mse, vec![SocketAddr::new(addr().ip(), 5000)]);
}

#[test]
fn metadata_requests_are_served_on_the_peers_id_only_after_its_handshake() {
    let mut p = Peer::new(false);
    let req = || Message::Extended {
        id: extension::OUR_UT_METADATA,
        payload: Bytes::from(MetadataMsg::Request { piece: 2 }.encode()),
    };
    assert_eq!(p.msg(req(), 0).unwrap(), None);
    p.ok(ext(with_pex()));
    assert_eq!(
        p.msg(req(), 0).unwrap(),
        Some(Action::Metadata { id: 3, piece: 2 })
    );
}

#[test]
fn malformed_extended_messages_are_ignored() {
    let mut p = Peer::new(false);
    for id in [
        extension::HANDSHAKE,
        extension::OUR_UT_METADATA,
        extension::OUR_UT_PEX,
        77,
    ] {
        let m = Message::Extended {
            id,
            payload: Bytes::from_static(b"garbage"),
        };
        assert_eq!(p.msg(m, 0).unwrap(), None);
    }
}

fn other(n: u8) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(10, 0, 0, n), 6881))
}

#[test]
fn pex_goes_out_three_seconds_after_the_handshake_then_every_minute_with_changes() {
    let mut p = Peer::new(false);
    p.t.pex_view = vec![(other(1), pex_flags::REACHABLE), (addr(), 0)];
    p.ok(ext(with_pex()));
    p.sent();
    p.tick(PEX_FIRST.as_secs() - 1).unwrap();
    assert!(p.sent().is_empty());
    p.tick(PEX_FIRST.as_secs()).unwrap();
    let sent = p.sent();
    let [Message::Extended { id: 9, payload }] = sent.as_slice() else {
        panic!("one PEX message, got {sent:?}");
    };
    let pex = PexMsg::decode(payload).unwrap();
    assert_eq!(
        pex.added,
        vec![(other(1), pex_flags::REACHABLE)],
        "never the peer itself"
    );
    // Nothing changed: nothing sent at the next slot.
    let next = PEX_FIRST + PEX_EVERY;
    p.t.pex_view = vec![(other(2), 0)];
    p.tick(next.as_secs() - 1).unwrap();
    assert!(p.sent().is_empty(), "at most one message a minute");
    p.tick(next.as_secs()).unwrap();
    let sent = p.sent();
    let [Message::Extended { payload, .. }] = sent.as_slice() else {
        panic!("one PEX message, got {sent:?}");
    };
    let pex = PexMsg::decode(payload).unwrap();
    assert_eq!(pex.added, vec![(other(2), 0)]);
    assert_eq!(pex.dropped, vec![other(1)]);
}

#[test]
fn received_pex_adds_peers_and_notes_encryption() {
    let mut p = Peer::new(false);
    let msg = PexMsg {
        added: vec![
            (other(1), pex_flags::ENCRYPTION),
            (other(2), 0),
            (addr(), 0),
        ],
        dropped: vec![],
    };
    p.ok(Message::Extended {
        id: extension::OUR_UT_PEX,
        payload: Bytes::from(msg.encode()),
    });
    assert_eq!(p.t.pex_added, vec![other(1), other(2)]);
    assert_eq!(p.t.wants_mse, vec![other(1)]);
}

#[test]
fn a_private_torrent_neither_sends_nor_takes_pex() {
    let mut p = Peer::with(
        Settings {
            private: true,
            ..settings()
        },
        remote(false),
    );
    p.t.pex_view = vec![(other(1), 0)];
    p.ok(ext(with_pex()));
    p.tick(100).unwrap();
    assert!(p
        .sent()
        .iter()
        .all(|m| !matches!(m, Message::Extended { .. })));
    let msg = PexMsg {
        added: vec![(other(2), 0)],
        dropped: vec![],
    };
    p.ok(Message::Extended {
        id: extension::OUR_UT_PEX,
        payload: Bytes::from(msg.encode()),
    });
    assert!(p.t.pex_added.is_empty());
}
