//! Sans-IO piece picker: which blocks to request from which peer, where
//! arriving blocks go, and when a piece is ready to hash.
//!
//! Policy: blocks of partly received pieces first; then a new piece, the
//! rarest among the peer's pieces with a random tie-break; once every
//! missing block is requested, end-game: a block may be requested from a
//! second peer and the losers are cancelled when it arrives.
//!
//! The rarest choice does not scan the torrent: `Rarity` keeps every
//! piece ordered by availability, so a pick walks the rarest levels and
//! stops at the first piece the peer has.
//!
//! Only wanted pieces (those of the selected files; all by default) are
//! ever started, and completion means every wanted piece is had. Pieces
//! outside the selection may still be had (resume, shared with a wanted
//! file on disk) and are served, never fetched.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::storage::AlignedBuf;
use crate::types::{Bitfield, BlockRef, Geometry, PieceIndex, BLOCK_LEN};

/// Identifies one connection for the picker's bookkeeping.
pub type PeerKey = u64;

/// Peers that may hold the same block request at once in end-game.
const ENDGAME_DUPLICATES: usize = 2;

#[derive(Debug, Default, Clone)]
struct Slot {
    received: bool,
    /// Peers with an outstanding request for this block.
    requested: Vec<PeerKey>,
    /// Who delivered the stored bytes.
    from: PeerKey,
}

struct Partial {
    buf: AlignedBuf,
    slots: Vec<Slot>,
    received: u32,
}

/// A fully received piece, handed out for hashing.
#[derive(Debug)]
pub struct Complete {
    pub piece: PieceIndex,
    pub data: AlignedBuf,
    pub contributors: Vec<PeerKey>,
}

/// What became of an arriving block.
#[derive(Debug)]
pub enum BlockOutcome {
    /// Not requested from this peer (or already stored): dropped.
    Unrequested,
    /// Stored. `cancel` lists other peers that requested the same block.
    Stored {
        cancel: Vec<PeerKey>,
        complete: Option<Complete>,
    },
}

pub struct Picker {
    geo: Geometry,
    have: Bitfield,
    /// Pieces to fetch; the rest are never picked.
    wanted: Bitfield,
    /// Wanted pieces not had yet: completion is this reaching zero.
    wanted_missing: u32,
    /// How many connected peers have each piece, ordered for picking.
    rarity: Rarity,
    partial: HashMap<PieceIndex, Partial>,
    /// Complete and being hashed/written; not pickable.
    verifying: Bitfield,
    /// Wanted pieces neither had, in progress, nor verifying.
    unstarted: u32,
    rng: StdRng,
    /// Buffers of finished pieces, reused to keep memory flat.
    spare: Vec<AlignedBuf>,
}

impl Picker {
    pub fn new(geo: Geometry, seed: u64) -> Picker {
        Picker::with_wanted(geo, Bitfield::full(geo.num_pieces), seed)
    }

    /// A picker that fetches only the pieces set in `wanted`.
    pub fn with_wanted(geo: Geometry, wanted: Bitfield, seed: u64) -> Picker {
        assert_eq!(
            wanted.len(),
            geo.num_pieces,
            "wanted mask of the wrong size"
        );
        let n = wanted.count();
        let rarity = Rarity::new(&geo, &wanted);
        Picker {
            geo,
            have: Bitfield::new(geo.num_pieces),
            wanted,
            wanted_missing: n,
            rarity,
            partial: HashMap::new(),
            verifying: Bitfield::new(geo.num_pieces),
            unstarted: n,
            rng: StdRng::seed_from_u64(seed),
            spare: Vec::new(),
        }
    }

    pub fn geometry(&self) -> Geometry {
        self.geo
    }

    pub fn have(&self) -> &Bitfield {
        &self.have
    }

    pub fn wanted(&self) -> &Bitfield {
        &self.wanted
    }

    /// Every wanted piece is verified (the unwanted ones may be missing).
    pub fn is_complete(&self) -> bool {
        self.wanted_missing == 0
    }

    pub fn in_progress(&self) -> usize {
        self.partial.len()
    }

    /// Marks a piece we already hold (resume check).
    pub fn mark_have(&mut self, piece: PieceIndex) {
        if self.have.set(piece) && self.wanted.get(piece) {
            self.wanted_missing -= 1;
            if self.partial.remove(&piece).is_none() && !self.verifying.get(piece) {
                self.unstarted -= 1;
            }
            self.verifying.clear(piece);
            self.rarity.set_candidate(piece, false);
        }
    }

    pub fn add_availability(&mut self, bits: &Bitfield) {
        if bits.len() == self.geo.num_pieces && bits.is_full() && self.rarity.add_everywhere() {
            return;
        }
        for i in bits.iter_ones() {
            self.rarity.increment(i);
        }
    }

    pub fn remove_availability(&mut self, bits: &Bitfield) {
        if bits.len() == self.geo.num_pieces && bits.is_full() && self.rarity.remove_everywhere() {
            return;
        }
        for i in bits.iter_ones() {
            self.rarity.decrement(i);
        }
    }

    pub fn add_have(&mut self, piece: PieceIndex) {
        self.rarity.increment(piece);
    }

    /// Whether `peer_has` holds any wanted piece we lack.
    pub fn is_interesting(&self, peer_has: &Bitfield) -> bool {
        peer_has.iter_ones().any(|i| self.needs(i))
    }

    /// Whether `piece` is wanted and not had yet.
    pub fn needs(&self, piece: PieceIndex) -> bool {
        self.wanted.get(piece) && !self.have.get(piece)
    }

    /// Appends up to `max` block requests for `peer` to `out`.
    pub fn pick(
        &mut self,
        peer: PeerKey,
        peer_has: &Bitfield,
        max: usize,
        out: &mut Vec<BlockRef>,
    ) {
        let start = out.len();
        // 1. Finish pieces already started.
        let mut pieces: Vec<PieceIndex> = self
            .partial
            .keys()
            .copied()
            .filter(|&p| peer_has.get(p))
            .collect();
        pieces.sort_unstable();
        for p in pieces {
            if out.len() - start >= max {
                return;
            }
            self.take_free(peer, p, max - (out.len() - start), out);
        }
        // 2. Start new pieces, rarest first.
        while out.len() - start < max && self.unstarted > 0 {
            let Some(p) = self.rarest_unstarted(peer_has) else {
                break;
            };
            self.start(p);
            self.take_free(peer, p, max - (out.len() - start), out);
        }
        // 3. End-game: everything missing is requested; double up.
        if out.len() == start && self.unstarted == 0 {
            self.endgame(peer, peer_has, max, out);
        }
    }

    fn take_free(&mut self, peer: PeerKey, p: PieceIndex, max: usize, out: &mut Vec<BlockRef>) {
        let geo = self.geo;
        let partial = self.partial.get_mut(&p).expect("caller checked");
        let mut n = 0;
        for (i, slot) in (0..).zip(partial.slots.iter_mut()) {
            if n >= max {
                break;
            }
            if !slot.received && slot.requested.is_empty() {
                slot.requested.push(peer);
                out.push(geo.block(p, i));
                n += 1;
            }
        }
    }

    fn rarest_unstarted(&mut self, peer_has: &Bitfield) -> Option<PieceIndex> {
        self.rarity.rarest(peer_has, &mut self.rng)
    }

    fn start(&mut self, p: PieceIndex) {
        let size = self.geo.piece_size(p) as usize;
        let buf = match self.spare.pop() {
            Some(b) => b.reuse(size),
            None => AlignedBuf::new(size),
        };
        let blocks = self.geo.blocks_in_piece(p) as usize;
        self.partial.insert(
            p,
            Partial {
                buf,
                slots: vec![Slot::default(); blocks],
                received: 0,
            },
        );
        self.rarity.set_candidate(p, false);
        self.unstarted -= 1;
    }

    fn endgame(&mut self, peer: PeerKey, peer_has: &Bitfield, max: usize, out: &mut Vec<BlockRef>) {
        let geo = self.geo;
        let mut pieces: Vec<PieceIndex> = self
            .partial
            .keys()
            .copied()
            .filter(|&p| peer_has.get(p))
            .collect();
        pieces.sort_unstable();
        for p in pieces {
            let partial = self.partial.get_mut(&p).expect("listed above");
            for (i, slot) in (0..).zip(partial.slots.iter_mut()) {
                if out.len() >= max {
                    return;
                }
                if !slot.received
                    && slot.requested.len() < ENDGAME_DUPLICATES
                    && !slot.requested.contains(&peer)
                {
                    slot.requested.push(peer);
                    out.push(geo.block(p, i));
                }
            }
        }
    }

    /// Files an arriving block.
    pub fn on_block(
        &mut self,
        peer: PeerKey,
        piece: PieceIndex,
        offset: u32,
        data: &[u8],
    ) -> BlockOutcome {
        if !offset.is_multiple_of(BLOCK_LEN) {
            return BlockOutcome::Unrequested;
        }
        let Some(partial) = self.partial.get_mut(&piece) else {
            return BlockOutcome::Unrequested;
        };
        let idx = offset / BLOCK_LEN;
        let Some(slot) = partial.slots.get_mut(idx as usize) else {
            return BlockOutcome::Unrequested;
        };
        let want = self.geo.block(piece, idx).len as usize;
        if slot.received || !slot.requested.contains(&peer) || data.len() != want {
            return BlockOutcome::Unrequested;
        }
        partial.buf[offset as usize..offset as usize + want].copy_from_slice(data);
        slot.received = true;
        slot.from = peer;
        let cancel: Vec<PeerKey> = slot.requested.drain(..).filter(|&p| p != peer).collect();
        partial.received += 1;
        let complete = if partial.received as usize == partial.slots.len() {
            let done = self.partial.remove(&piece).expect("present");
            let mut contributors: Vec<PeerKey> = done.slots.iter().map(|s| s.from).collect();
            contributors.sort_unstable();
            contributors.dedup();
            self.verifying.set(piece);
            Some(Complete {
                piece,
                data: done.buf,
                contributors,
            })
        } else {
            None
        };
        BlockOutcome::Stored { cancel, complete }
    }

    /// Gives back blocks `peer` had requested (choke, timeout, disconnect).
    pub fn release_all(&mut self, peer: PeerKey) {
        for partial in self.partial.values_mut() {
            for slot in &mut partial.slots {
                slot.requested.retain(|&p| p != peer);
            }
        }
    }

    /// Gives back one block (the peer rejected it or we cancelled it).
    pub fn release(&mut self, peer: PeerKey, block: BlockRef) {
        let partial = self
            .geo
            .piece(block.piece)
            .and_then(|p| self.partial.get_mut(&p));
        if let Some(partial) = partial {
            if let Some(slot) = partial.slots.get_mut((block.offset / BLOCK_LEN) as usize) {
                slot.requested.retain(|&p| p != peer);
            }
        }
    }

    /// The hash matched and the data is on disk.
    pub fn piece_verified(&mut self, piece: PieceIndex, buf: AlignedBuf) {
        self.verifying.clear(piece);
        if self.have.set(piece) && self.wanted.get(piece) {
            self.wanted_missing -= 1;
        }
        self.rarity.set_candidate(piece, false);
        self.recycle(buf);
    }

    /// The hash did not match: the piece is fetched again from scratch.
    pub fn piece_failed(&mut self, piece: PieceIndex, buf: AlignedBuf) {
        self.verifying.clear(piece);
        self.unstarted += 1;
        if self.needs(piece) && !self.partial.contains_key(&piece) {
            self.rarity.set_candidate(piece, true);
        }
        self.recycle(buf);
    }

    fn recycle(&mut self, buf: AlignedBuf) {
        if self.spare.len() < 4 && buf.capacity() >= self.geo.piece_len as usize {
            self.spare.push(buf);
        }
    }

    /// Bytes of verified wanted pieces.
    pub fn verified_bytes(&self) -> u64 {
        let last = self.geo.last_piece();
        let n = self.wanted.count() - self.wanted_missing;
        self.bytes_of(n, self.wanted.get(last) && self.have.get(last))
    }

    /// Bytes of the wanted pieces: what "done" means for progress and `left`.
    pub fn wanted_bytes(&self) -> u64 {
        let last = self.geo.last_piece();
        self.bytes_of(self.wanted.count(), self.wanted.get(last))
    }

    /// Bytes of `n` pieces, one of them the short last piece if `with_last`.
    fn bytes_of(&self, n: u32, with_last: bool) -> u64 {
        let mut bytes = u64::from(n) * u64::from(self.geo.piece_len);
        if with_last {
            bytes -= u64::from(self.geo.piece_len - self.geo.piece_size(self.geo.last_piece()));
        }
        bytes
    }
}

/// Every piece ordered by availability, so that the rarest candidate a peer
/// has is found without scanning the torrent (libtorrent's layout).
///
/// Level `a`, the pieces `a` connected peers have, is the slice
/// `order[start[a]..start[a + 1]]`: first its candidates (wanted and
/// neither had, started nor verifying) up to `split[a]`, then the others.
/// Every piece stays in `order`, so a piece changes level or candidacy by
/// at most three swaps at level and split boundaries: O(1), whatever the
/// piece count.
struct Rarity {
    /// Peers having each piece, saturating like the counts it replaced.
    avail: Vec<u16>,
    /// A permutation of the pieces, sorted by `avail`.
    order: Vec<PieceIndex>,
    /// Each piece's index in `order`.
    pos: Vec<u32>,
    /// Where each level begins, then one entry for the end of `order`.
    /// Levels are added as availability grows; an empty lowest level goes
    /// when a seeder leaves.
    start: Vec<u32>,
    /// Where each level's non-candidates begin.
    split: Vec<u32>,
}

impl Rarity {
    /// All pieces at availability 0; the `candidates` first.
    fn new(geo: &Geometry, candidates: &Bitfield) -> Rarity {
        let n = geo.num_pieces;
        let mut order: Vec<PieceIndex> = candidates.iter_ones().collect();
        let split = candidates.count();
        order.extend(geo.pieces().filter(|&p| !candidates.get(p)));
        let mut pos = vec![0u32; n as usize];
        for (i, &p) in (0..).zip(&order) {
            pos[p.as_usize()] = i;
        }
        Rarity {
            avail: vec![0; n as usize],
            order,
            pos,
            start: vec![0, n],
            split: vec![split],
        }
    }

    fn is_candidate(&self, p: PieceIndex) -> bool {
        self.pos[p.as_usize()] < self.split[usize::from(self.avail[p.as_usize()])]
    }

    fn swap(&mut self, i: u32, j: u32) {
        let (a, b) = (self.order[i as usize], self.order[j as usize]);
        self.order[i as usize] = b;
        self.order[j as usize] = a;
        self.pos[a.as_usize()] = j;
        self.pos[b.as_usize()] = i;
    }

    /// Moves `p` into or out of its level's candidates.
    fn set_candidate(&mut self, p: PieceIndex, candidate: bool) {
        if self.is_candidate(p) == candidate {
            return;
        }
        let a = usize::from(self.avail[p.as_usize()]);
        if candidate {
            self.swap(self.pos[p.as_usize()], self.split[a]);
            self.split[a] += 1;
        } else {
            self.swap(self.pos[p.as_usize()], self.split[a] - 1);
            self.split[a] -= 1;
        }
    }

    /// A seeder arrived: every level moves up one without reordering, under
    /// a new empty level 0. False (nothing done) if a count could saturate.
    fn add_everywhere(&mut self) -> bool {
        if self.split.len() > usize::from(u16::MAX) {
            return false;
        }
        self.avail.iter_mut().for_each(|a| *a += 1);
        self.start.insert(0, 0);
        self.split.insert(0, 0);
        true
    }

    /// A seeder left: every level moves down one. False (nothing done) if
    /// some piece is at availability 0, which stays there.
    fn remove_everywhere(&mut self) -> bool {
        if self.split.len() < 2 || self.start[1] != 0 {
            return false;
        }
        self.avail.iter_mut().for_each(|a| *a -= 1);
        self.start.remove(0);
        self.split.remove(0);
        true
    }

    /// One more peer has `p`: it becomes the first piece of the next level.
    fn increment(&mut self, p: PieceIndex) {
        let a = usize::from(self.avail[p.as_usize()]);
        if a == usize::from(u16::MAX) {
            return;
        }
        if a + 1 == self.split.len() {
            let end = u32::try_from(self.order.len()).expect("one entry per piece");
            self.split.push(end);
            self.start.push(end);
        }
        let candidate = self.is_candidate(p);
        let last = self.start[a + 1] - 1;
        if candidate {
            // Via the last candidate's slot, keeping level `a`'s split.
            let c = self.split[a] - 1;
            self.swap(self.pos[p.as_usize()], c);
            self.swap(c, last);
            self.split[a] -= 1;
        } else {
            self.swap(self.pos[p.as_usize()], last);
        }
        self.start[a + 1] -= 1;
        if !candidate {
            // The level begins with its candidates: step past them.
            let c = self.split[a + 1] - 1;
            self.swap(last, c);
            self.split[a + 1] -= 1;
        }
        self.avail[p.as_usize()] += 1;
    }

    /// One peer fewer has `p`: it becomes the last piece of the level below.
    fn decrement(&mut self, p: PieceIndex) {
        let a = usize::from(self.avail[p.as_usize()]);
        if a == 0 {
            return;
        }
        let candidate = self.is_candidate(p);
        let first = self.start[a];
        if candidate {
            self.swap(self.pos[p.as_usize()], first);
        } else {
            // Via the first non-candidate's slot, keeping level `a`'s split.
            let s = self.split[a];
            self.swap(self.pos[p.as_usize()], s);
            self.swap(s, first);
            self.split[a] += 1;
        }
        self.start[a] += 1;
        if candidate {
            // The level ends with its non-candidates: step before them.
            let s = self.split[a - 1];
            self.swap(first, s);
            self.split[a - 1] += 1;
        }
        self.avail[p.as_usize()] -= 1;
    }

    /// A candidate in `peer_has` of the lowest availability, random among
    /// equals so that peers spread over the rarest pieces.
    fn rarest(&self, peer_has: &Bitfield, rng: &mut StdRng) -> Option<PieceIndex> {
        for a in 0..self.split.len() {
            let level = &self.order[self.start[a] as usize..self.split[a] as usize];
            let found = if level.len() <= EXACT_LEVEL {
                exact_choice(level, peer_has, rng)
            } else {
                // From a random offset, wrapping: for a peer with most
                // pieces this ends within a few steps.
                let len = u32::try_from(level.len()).expect("one entry per piece");
                let offset = rng.gen_range(0..len);
                let (before, after) = level.split_at(offset as usize);
                after
                    .iter()
                    .chain(before)
                    .copied()
                    .find(|&p| peer_has.get(p))
            };
            if found.is_some() {
                return found;
            }
        }
        None
    }
}

/// Levels this small are sampled exactly uniformly (reservoir sampling in
/// piece order, as small torrents always picked): the offset scan favours
/// pieces that follow runs the peer lacks, a skew that is worst in a small
/// level.
const EXACT_LEVEL: usize = 16;

fn exact_choice(level: &[PieceIndex], peer_has: &Bitfield, rng: &mut StdRng) -> Option<PieceIndex> {
    // Filled from the front; the filler is never read.
    let mut mine = [*level.first()?; EXACT_LEVEL];
    let mut n = 0;
    for &p in level.iter().filter(|&&p| peer_has.get(p)) {
        mine[n] = p;
        n += 1;
    }
    let mine = &mut mine[..n];
    mine.sort_unstable();
    let mut best = None;
    for (ties, &p) in (1u32..).zip(mine.iter()) {
        if ties == 1 || rng.gen_range(0..ties) == 0 {
            best = Some(p);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ix(raw: u32) -> PieceIndex {
        PieceIndex::unchecked(raw)
    }

    fn geo() -> Geometry {
        // 4 pieces of 2 blocks, the last one a short single block.
        Geometry::new(3 * 32_768 + 100, 32_768)
    }

    #[test]
    fn finishes_partial_pieces_before_starting_new_ones() {
        let g = geo();
        let mut p = Picker::new(g, 1);
        let all = Bitfield::full(g.num_pieces);
        p.add_availability(&all);
        let mut out = Vec::new();
        p.pick(1, &all, 1, &mut out);
        let first = out[0].piece;
        out.clear();
        p.pick(2, &all, 1, &mut out);
        assert_eq!(out[0].piece, first, "second block of the started piece");
        assert_eq!(out[0].offset, BLOCK_LEN);
    }

    #[test]
    fn picks_the_rarest_piece_first() {
        let g = geo();
        let mut p = Picker::new(g, 7);
        let all = Bitfield::full(g.num_pieces);
        p.add_availability(&all);
        p.add_availability(&all);
        let mut rare = Bitfield::new(g.num_pieces);
        rare.set(ix(2));
        p.remove_availability(&rare);
        let mut out = Vec::new();
        p.pick(1, &all, 1, &mut out);
        assert_eq!(out[0].piece, 2);
    }

    #[test]
    fn random_tie_break_spreads_first_picks() {
        let g = Geometry::new(64 * 16_384, 16_384);
        let all = Bitfield::full(g.num_pieces);
        let firsts: std::collections::HashSet<u32> = (0..20)
            .map(|seed| {
                let mut p = Picker::new(g, seed);
                let mut out = Vec::new();
                p.pick(1, &all, 1, &mut out);
                out[0].piece
            })
            .collect();
        assert!(firsts.len() > 5, "{firsts:?}");
    }

    #[test]
    fn completes_a_piece_and_ignores_unrequested_blocks() {
        let g = geo();
        let mut p = Picker::new(g, 1);
        let all = Bitfield::full(g.num_pieces);
        let mut out = Vec::new();
        p.pick(1, &all, 100, &mut out);
        assert_eq!(out.len(), 7);
        let last = *out.iter().find(|b| b.piece == 3).unwrap();
        let data = vec![9u8; last.len as usize];
        assert!(matches!(
            p.on_block(2, ix(3), 0, &data),
            BlockOutcome::Unrequested
        ));
        assert!(matches!(
            p.on_block(1, ix(3), 0, &data[..50]),
            BlockOutcome::Unrequested
        ));
        match p.on_block(1, ix(3), 0, &data) {
            BlockOutcome::Stored {
                complete: Some(c), ..
            } => {
                assert_eq!(c.piece, ix(3));
                assert_eq!(&c.data[..], &data[..]);
                assert_eq!(c.contributors, vec![1]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            p.on_block(1, ix(3), 0, &data),
            BlockOutcome::Unrequested
        ));
    }

    #[test]
    fn endgame_duplicates_requests_and_cancels_the_loser() {
        let g = geo();
        let mut p = Picker::new(g, 1);
        let all = Bitfield::full(g.num_pieces);
        let mut a = Vec::new();
        p.pick(1, &all, 100, &mut a);
        let mut b = Vec::new();
        p.pick(2, &all, 100, &mut b);
        assert_eq!(b.len(), a.len(), "end-game requests every block again");
        let blk = b[0];
        let data = vec![0u8; blk.len as usize];
        match p.on_block(2, ix(blk.piece), blk.offset, &data) {
            BlockOutcome::Stored { cancel, .. } => assert_eq!(cancel, vec![1]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            p.on_block(1, ix(blk.piece), blk.offset, &data),
            BlockOutcome::Unrequested
        ));
    }

    #[test]
    fn released_blocks_go_to_other_peers() {
        let g = geo();
        let mut p = Picker::new(g, 1);
        let all = Bitfield::full(g.num_pieces);
        let mut a = Vec::new();
        p.pick(1, &all, 2, &mut a);
        p.release_all(1);
        let mut b = Vec::new();
        p.pick(2, &all, 2, &mut b);
        assert_eq!(a, b);
    }

    /// Pieces 1 and 3 of `geo()` wanted.
    fn odd_pieces() -> Bitfield {
        let mut w = Bitfield::new(4);
        w.set(ix(1));
        w.set(ix(3));
        w
    }

    #[test]
    fn pick_never_returns_a_block_of_an_unwanted_piece() {
        let g = geo();
        let mut p = Picker::with_wanted(g, odd_pieces(), 3);
        let all = Bitfield::full(g.num_pieces);
        p.add_availability(&all);
        let mut out = Vec::new();
        p.pick(1, &all, 100, &mut out);
        let pieces: Vec<u32> = out.iter().map(|b| b.piece).collect();
        assert_eq!(pieces, vec![1, 1, 3], "{out:?}");
        // End-game doubles up on wanted blocks only.
        let mut again = Vec::new();
        p.pick(2, &all, 100, &mut again);
        assert_eq!(again, out);
        // A peer with only unwanted pieces gets nothing.
        let mut evens = Bitfield::new(4);
        evens.set(ix(0));
        evens.set(ix(2));
        let mut none = Vec::new();
        p.pick(3, &evens, 100, &mut none);
        assert!(none.is_empty(), "{none:?}");
    }

    #[test]
    fn completes_when_every_wanted_piece_is_verified_with_others_missing() {
        let g = geo();
        let mut p = Picker::with_wanted(g, odd_pieces(), 1);
        assert!(!p.is_complete());
        assert_eq!(p.wanted_bytes(), 32_768 + 100);
        p.mark_have(ix(0));
        assert_eq!(p.verified_bytes(), 0, "unwanted pieces count for nothing");
        p.mark_have(ix(1));
        assert!(!p.is_complete());
        let all = Bitfield::full(g.num_pieces);
        let mut out = Vec::new();
        p.pick(1, &all, 100, &mut out);
        assert_eq!(out.len(), 1);
        let c = match p.on_block(1, ix(3), 0, &[7u8; 100]) {
            BlockOutcome::Stored {
                complete: Some(c), ..
            } => c,
            other => panic!("{other:?}"),
        };
        p.piece_verified(c.piece, c.data);
        assert!(p.is_complete());
        assert!(!p.have().get(ix(2)));
        assert_eq!(p.verified_bytes(), p.wanted_bytes());
    }

    #[test]
    fn a_peer_is_interesting_only_for_a_wanted_piece_we_lack() {
        let g = geo();
        let mut p = Picker::with_wanted(g, odd_pieces(), 1);
        let mut theirs = Bitfield::new(4);
        theirs.set(ix(0));
        theirs.set(ix(2));
        assert!(!p.is_interesting(&theirs), "only unwanted pieces");
        theirs.set(ix(1));
        assert!(p.is_interesting(&theirs));
        p.mark_have(ix(1));
        assert!(!p.is_interesting(&theirs), "the wanted one is had");
        assert!(!p.needs(ix(2)) && p.needs(ix(3)));
    }

    #[test]
    fn a_failed_piece_is_picked_again() {
        let g = Geometry::new(16_384, 16_384);
        let mut p = Picker::new(g, 1);
        let all = Bitfield::full(1);
        let mut out = Vec::new();
        p.pick(1, &all, 4, &mut out);
        let c = match p.on_block(1, ix(0), 0, &[0u8; 16_384]) {
            BlockOutcome::Stored {
                complete: Some(c), ..
            } => c,
            other => panic!("{other:?}"),
        };
        out.clear();
        p.pick(1, &all, 4, &mut out);
        assert!(out.is_empty(), "verifying pieces are not picked");
        p.piece_failed(ix(0), c.data);
        p.pick(2, &all, 4, &mut out);
        assert_eq!(out.len(), 1);
    }
}

#[cfg(test)]
mod model {
    use super::*;
    use rand::Rng;

    impl Picker {
        fn counted_unstarted(&self) -> u32 {
            self.geo
                .pieces()
                .filter(|&p| {
                    self.wanted.get(p)
                        && !self.have.get(p)
                        && !self.verifying.get(p)
                        && !self.partial.contains_key(&p)
                })
                .count()
                .try_into()
                .unwrap()
        }
    }

    /// Random peers request, deliver, fail and leave; the bookkeeping stays
    /// consistent, only wanted blocks are requested, and the wanted pieces
    /// always complete once peers behave. Odd seeds want a random subset.
    #[test]
    fn random_operations_keep_the_counts_consistent_and_never_stall() {
        for seed in 0..200u64 {
            let g = Geometry::new(9 * 32_768 + 5_000, 32_768);
            let mut rng = StdRng::seed_from_u64(seed);
            let mut wanted = Bitfield::full(g.num_pieces);
            if seed % 2 == 1 {
                for i in g.pieces() {
                    if rng.gen_bool(0.5) {
                        wanted.clear(i);
                    }
                }
            }
            let mut p = Picker::with_wanted(g, wanted.clone(), seed);
            let all = Bitfield::full(g.num_pieces);
            let mut held: Vec<(PeerKey, BlockRef)> = Vec::new();
            let mut verifying: Vec<Complete> = Vec::new();
            let mut steps = 0;
            while !p.is_complete() {
                steps += 1;
                assert!(steps < 10_000, "seed {seed}: stalled");
                let peer = rng.gen_range(1..4u64);
                match rng.gen_range(0..10) {
                    0..=3 => {
                        let mut out = Vec::new();
                        p.pick(peer, &all, rng.gen_range(1..6), &mut out);
                        assert!(
                            out.iter().all(|b| wanted.get(g.piece(b.piece).unwrap())),
                            "seed {seed}"
                        );
                        held.extend(out.into_iter().map(|b| (peer, b)));
                    }
                    4..=6 if !held.is_empty() => {
                        let (k, b) = held.swap_remove(rng.gen_range(0..held.len()));
                        if let BlockOutcome::Stored {
                            complete: Some(c), ..
                        } = p.on_block(
                            k,
                            g.piece(b.piece).unwrap(),
                            b.offset,
                            &vec![0u8; b.len as usize],
                        ) {
                            verifying.push(c);
                        }
                    }
                    7 if !verifying.is_empty() => {
                        let c = verifying.swap_remove(0);
                        if rng.gen_bool(0.3) {
                            p.piece_failed(c.piece, c.data);
                        } else {
                            p.piece_verified(c.piece, c.data);
                        }
                    }
                    8 => {
                        p.release_all(peer);
                        held.retain(|(k, _)| *k != peer);
                    }
                    _ => {}
                }
                assert_eq!(
                    p.unstarted,
                    p.counted_unstarted(),
                    "seed {seed} step {steps}"
                );
                // Whenever nothing is held or verifying, some peer can get work.
                if held.is_empty() && verifying.is_empty() && !p.is_complete() {
                    let mut out = Vec::new();
                    p.pick(9, &all, 1, &mut out);
                    assert!(
                        !out.is_empty(),
                        "seed {seed} step {steps}: nothing to request"
                    );
                    p.release_all(9);
                }
            }
            for i in g.pieces() {
                assert_eq!(p.have().get(i), wanted.get(i), "seed {seed} piece {i}");
            }
        }
    }
}

#[cfg(test)]
mod rarity {
    use super::*;
    use rand::Rng;

    impl Picker {
        /// Panics unless `rarity` is a sorted permutation whose candidates
        /// are exactly the unstarted wanted pieces, with `counts` as levels.
        fn check_rarity(&self, counts: &[u32]) {
            let r = &self.rarity;
            let n = self.geo.num_pieces;
            assert_eq!(r.order.len(), n as usize);
            for (i, &p) in (0u32..).zip(&r.order) {
                assert_eq!(r.pos[p.as_usize()], i, "position of {p}");
            }
            assert_eq!(r.start.len(), r.split.len() + 1);
            assert_eq!((r.start[0], *r.start.last().unwrap()), (0, n));
            for a in 0..r.split.len() {
                assert!(r.start[a] <= r.split[a] && r.split[a] <= r.start[a + 1]);
                for i in r.start[a]..r.start[a + 1] {
                    assert_eq!(usize::from(r.avail[r.order[i as usize].as_usize()]), a);
                }
            }
            for p in self.geo.pieces() {
                assert_eq!(u32::from(r.avail[p.as_usize()]), counts[p.as_usize()]);
                let unstarted =
                    self.needs(p) && !self.verifying.get(p) && !self.partial.contains_key(&p);
                assert_eq!(r.is_candidate(p), unstarted, "piece {p}");
            }
            let candidates: u32 = (0..r.split.len()).map(|a| r.split[a] - r.start[a]).sum();
            assert_eq!(candidates, self.unstarted);
        }
    }

    fn random_bits(g: &Geometry, rng: &mut StdRng) -> Bitfield {
        let density = rng.gen_range(0.0..=1.0);
        let mut b = Bitfield::new(g.num_pieces);
        for i in g.pieces() {
            if rng.gen_bool(density) {
                b.set(i);
            }
        }
        b
    }

    /// Random peers come and go, announce pieces and deliver, pieces fail,
    /// verify or turn up on disk; after each step `check` sees the picker,
    /// the per-piece peer counts, and a random peer's bitfield.
    fn random_steps(seeds: u64, mut check: impl FnMut(&mut Picker, &[u32], &Bitfield)) {
        for seed in 0..seeds {
            let mut rng = StdRng::seed_from_u64(seed);
            let n = rng.gen_range(1..60);
            let g = Geometry::new(u64::from(n) * 16_384 - 1, 16_384);
            let mut wanted = Bitfield::full(n);
            if seed % 2 == 1 {
                wanted = random_bits(&g, &mut rng);
            }
            let mut p = Picker::with_wanted(g, wanted, seed);
            let mut peers: Vec<Bitfield> = Vec::new();
            let mut counts = vec![0u32; n as usize];
            let mut verifying: Vec<Complete> = Vec::new();
            for _ in 0..300 {
                match rng.gen_range(0..9) {
                    0 | 8 => {
                        // Some seeders: whole levels move at once.
                        let b = match rng.gen_bool(0.5) {
                            true => random_bits(&g, &mut rng),
                            false => Bitfield::full(n),
                        };
                        b.iter_ones().for_each(|i| counts[i.as_usize()] += 1);
                        p.add_availability(&b);
                        peers.push(b);
                    }
                    1 if !peers.is_empty() => {
                        let b = peers.swap_remove(rng.gen_range(0..peers.len()));
                        b.iter_ones().for_each(|i| counts[i.as_usize()] -= 1);
                        p.remove_availability(&b);
                    }
                    2 if !peers.is_empty() => {
                        let k = rng.gen_range(0..peers.len());
                        let i = g.piece(rng.gen_range(0..n)).unwrap();
                        if peers[k].set(i) {
                            counts[i.as_usize()] += 1;
                            p.add_have(i);
                        }
                    }
                    3 | 4 => {
                        // Whole pieces are delivered at once or not at all.
                        let has = random_bits(&g, &mut rng);
                        let mut out = Vec::new();
                        p.pick(1, &has, rng.gen_range(1..4), &mut out);
                        if rng.gen_bool(0.5) {
                            for b in out {
                                let data = vec![0u8; b.len as usize];
                                if let BlockOutcome::Stored {
                                    complete: Some(c), ..
                                } = p.on_block(1, g.piece(b.piece).unwrap(), b.offset, &data)
                                {
                                    verifying.push(c);
                                }
                            }
                        } else {
                            p.release_all(1);
                        }
                    }
                    5 if !verifying.is_empty() => {
                        let c = verifying.swap_remove(rng.gen_range(0..verifying.len()));
                        if rng.gen_bool(0.5) {
                            p.piece_failed(c.piece, c.data);
                        } else {
                            p.piece_verified(c.piece, c.data);
                        }
                    }
                    6 => {
                        let i = g.piece(rng.gen_range(0..n)).unwrap();
                        if !verifying.iter().any(|c| c.piece == i) {
                            p.mark_have(i);
                        }
                    }
                    _ => {}
                }
                let has = random_bits(&g, &mut rng);
                check(&mut p, &counts, &has);
            }
        }
    }

    #[test]
    fn levels_stay_sorted_and_candidates_exact_through_random_changes() {
        random_steps(300, |p, counts, _| p.check_rarity(counts));
    }

    #[test]
    fn a_new_piece_is_as_rare_as_the_rarest_candidate_the_peer_has() {
        random_steps(300, |p, counts, has| {
            let rarest = p
                .geo
                .pieces()
                .filter(|&i| has.get(i) && p.rarity.is_candidate(i))
                .map(|i| counts[i.as_usize()])
                .min();
            let got = p.rarity.rarest(has, &mut p.rng);
            if let Some(i) = got {
                assert!(has.get(i) && p.rarity.is_candidate(i), "piece {i}");
            }
            assert_eq!(got.map(|i| counts[i.as_usize()]), rarest);
        });
    }

    #[test]
    fn availability_saturates_and_steps_back_from_the_top() {
        let g = Geometry::new(3 * 16_384, 16_384);
        let mut p = Picker::new(g, 1);
        let one_piece = g.piece(1).unwrap();
        for _ in 0..=u16::MAX {
            p.add_have(one_piece);
        }
        let mut counts = vec![0, u32::from(u16::MAX), 0];
        p.check_rarity(&counts);
        let mut one = Bitfield::new(3);
        one.set(one_piece);
        p.remove_availability(&one);
        counts[1] -= 1;
        p.check_rarity(&counts);
        // Seeders: one piece by one at the top level, whole levels below.
        let all = Bitfield::full(3);
        for _ in 0..2 {
            p.add_availability(&all);
        }
        counts = vec![2, u32::from(u16::MAX), 2];
        p.check_rarity(&counts);
        p.remove_availability(&all);
        counts = vec![1, u32::from(u16::MAX) - 1, 1];
        p.check_rarity(&counts);
        let mut out = Vec::new();
        p.pick(1, &Bitfield::full(3), 1, &mut out);
        assert_ne!(out[0].piece, 1, "the common piece comes last");
    }
}
