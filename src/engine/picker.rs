//! Sans-IO piece picker: which blocks to request from which peer, where
//! arriving blocks go, and when a piece is ready to hash.
//!
//! Policy: blocks of partly received pieces first; then a new piece, the
//! rarest among the peer's pieces with a random tie-break; once every
//! missing block is requested, end-game: a block may be requested from a
//! second peer and the losers are cancelled when it arrives.
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
    /// How many connected peers have each piece.
    availability: Vec<u16>,
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
        Picker {
            geo,
            have: Bitfield::new(geo.num_pieces),
            wanted,
            wanted_missing: n,
            availability: vec![0; geo.num_pieces as usize],
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
        }
    }

    pub fn add_availability(&mut self, bits: &Bitfield) {
        for i in bits.iter_ones() {
            self.availability[i as usize] = self.availability[i as usize].saturating_add(1);
        }
    }

    pub fn remove_availability(&mut self, bits: &Bitfield) {
        for i in bits.iter_ones() {
            self.availability[i as usize] = self.availability[i as usize].saturating_sub(1);
        }
    }

    pub fn add_have(&mut self, piece: PieceIndex) {
        if let Some(a) = self.availability.get_mut(piece as usize) {
            *a = a.saturating_add(1);
        }
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
        for (i, slot) in partial.slots.iter_mut().enumerate() {
            if n >= max {
                break;
            }
            if !slot.received && slot.requested.is_empty() {
                slot.requested.push(peer);
                out.push(geo.block(p, i as u32));
                n += 1;
            }
        }
    }

    fn rarest_unstarted(&mut self, peer_has: &Bitfield) -> Option<PieceIndex> {
        let mut best: Option<PieceIndex> = None;
        let mut best_avail = u16::MAX;
        let mut ties = 0u32;
        for p in peer_has.iter_ones() {
            if !self.wanted.get(p)
                || self.have.get(p)
                || self.verifying.get(p)
                || self.partial.contains_key(&p)
            {
                continue;
            }
            let a = self.availability[p as usize];
            if a < best_avail {
                best = Some(p);
                best_avail = a;
                ties = 1;
            } else if a == best_avail {
                // Reservoir sampling: each tie wins with equal probability.
                ties += 1;
                if self.rng.gen_range(0..ties) == 0 {
                    best = Some(p);
                }
            }
        }
        best
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
            for (i, slot) in partial.slots.iter_mut().enumerate() {
                if out.len() >= max {
                    return;
                }
                if !slot.received
                    && slot.requested.len() < ENDGAME_DUPLICATES
                    && !slot.requested.contains(&peer)
                {
                    slot.requested.push(peer);
                    out.push(geo.block(p, i as u32));
                }
            }
        }
    }

    /// Files an arriving block.
    pub fn on_block(
        &mut self,
        peer: PeerKey,
        piece: u32,
        offset: u32,
        data: &[u8],
    ) -> BlockOutcome {
        if !offset.is_multiple_of(BLOCK_LEN) {
            return BlockOutcome::Unrequested;
        }
        let Some(partial) = self.partial.get_mut(&piece) else {
            return BlockOutcome::Unrequested;
        };
        let idx = (offset / BLOCK_LEN) as usize;
        let Some(slot) = partial.slots.get_mut(idx) else {
            return BlockOutcome::Unrequested;
        };
        let want = self.geo.block(piece, idx as u32).len as usize;
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
        if let Some(partial) = self.partial.get_mut(&block.piece) {
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
        self.recycle(buf);
    }

    /// The hash did not match: the piece is fetched again from scratch.
    pub fn piece_failed(&mut self, piece: PieceIndex, buf: AlignedBuf) {
        self.verifying.clear(piece);
        self.unstarted += 1;
        self.recycle(buf);
    }

    fn recycle(&mut self, buf: AlignedBuf) {
        if self.spare.len() < 4 && buf.capacity() >= self.geo.piece_len as usize {
            self.spare.push(buf);
        }
    }

    /// Bytes of verified wanted pieces.
    pub fn verified_bytes(&self) -> u64 {
        let last = self.geo.num_pieces - 1;
        let n = self.wanted.count() - self.wanted_missing;
        self.bytes_of(n, self.wanted.get(last) && self.have.get(last))
    }

    /// Bytes of the wanted pieces: what "done" means for progress and `left`.
    pub fn wanted_bytes(&self) -> u64 {
        let last = self.geo.num_pieces - 1;
        self.bytes_of(self.wanted.count(), self.wanted.get(last))
    }

    /// Bytes of `n` pieces, one of them the short last piece if `with_last`.
    fn bytes_of(&self, n: u32, with_last: bool) -> u64 {
        let mut bytes = u64::from(n) * u64::from(self.geo.piece_len);
        if with_last {
            bytes -= u64::from(self.geo.piece_len - self.geo.piece_size(self.geo.num_pieces - 1));
        }
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        rare.set(2);
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
            p.on_block(2, 3, 0, &data),
            BlockOutcome::Unrequested
        ));
        assert!(matches!(
            p.on_block(1, 3, 0, &data[..50]),
            BlockOutcome::Unrequested
        ));
        match p.on_block(1, 3, 0, &data) {
            BlockOutcome::Stored {
                complete: Some(c), ..
            } => {
                assert_eq!(c.piece, 3);
                assert_eq!(&c.data[..], &data[..]);
                assert_eq!(c.contributors, vec![1]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            p.on_block(1, 3, 0, &data),
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
        match p.on_block(2, blk.piece, blk.offset, &data) {
            BlockOutcome::Stored { cancel, .. } => assert_eq!(cancel, vec![1]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            p.on_block(1, blk.piece, blk.offset, &data),
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
        w.set(1);
        w.set(3);
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
        evens.set(0);
        evens.set(2);
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
        p.mark_have(0);
        assert_eq!(p.verified_bytes(), 0, "unwanted pieces count for nothing");
        p.mark_have(1);
        assert!(!p.is_complete());
        let all = Bitfield::full(g.num_pieces);
        let mut out = Vec::new();
        p.pick(1, &all, 100, &mut out);
        assert_eq!(out.len(), 1);
        let c = match p.on_block(1, 3, 0, &[7u8; 100]) {
            BlockOutcome::Stored {
                complete: Some(c), ..
            } => c,
            other => panic!("{other:?}"),
        };
        p.piece_verified(c.piece, c.data);
        assert!(p.is_complete());
        assert!(!p.have().get(2));
        assert_eq!(p.verified_bytes(), p.wanted_bytes());
    }

    #[test]
    fn a_peer_is_interesting_only_for_a_wanted_piece_we_lack() {
        let g = geo();
        let mut p = Picker::with_wanted(g, odd_pieces(), 1);
        let mut theirs = Bitfield::new(4);
        theirs.set(0);
        theirs.set(2);
        assert!(!p.is_interesting(&theirs), "only unwanted pieces");
        theirs.set(1);
        assert!(p.is_interesting(&theirs));
        p.mark_have(1);
        assert!(!p.is_interesting(&theirs), "the wanted one is had");
        assert!(!p.needs(2) && p.needs(3));
    }

    #[test]
    fn a_failed_piece_is_picked_again() {
        let g = Geometry::new(16_384, 16_384);
        let mut p = Picker::new(g, 1);
        let all = Bitfield::full(1);
        let mut out = Vec::new();
        p.pick(1, &all, 4, &mut out);
        let c = match p.on_block(1, 0, 0, &[0u8; 16_384]) {
            BlockOutcome::Stored {
                complete: Some(c), ..
            } => c,
            other => panic!("{other:?}"),
        };
        out.clear();
        p.pick(1, &all, 4, &mut out);
        assert!(out.is_empty(), "verifying pieces are not picked");
        p.piece_failed(0, c.data);
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
            (0..self.geo.num_pieces)
                .filter(|&p| {
                    self.wanted.get(p)
                        && !self.have.get(p)
                        && !self.verifying.get(p)
                        && !self.partial.contains_key(&p)
                })
                .count() as u32
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
                for i in 0..g.num_pieces {
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
                        assert!(out.iter().all(|b| wanted.get(b.piece)), "seed {seed}");
                        held.extend(out.into_iter().map(|b| (peer, b)));
                    }
                    4..=6 if !held.is_empty() => {
                        let (k, b) = held.swap_remove(rng.gen_range(0..held.len()));
                        if let BlockOutcome::Stored {
                            complete: Some(c), ..
                        } = p.on_block(k, b.piece, b.offset, &vec![0u8; b.len as usize])
                        {
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
            for i in 0..g.num_pieces {
                assert_eq!(p.have().get(i), wanted.get(i), "seed {seed} piece {i}");
            }
        }
    }
}
