//! The request pipeline: the one owner of the requests a peer owes us,
//! and how many to keep in flight.

use std::collections::HashSet;

use tokio::time::Instant;

use super::{Download, PeerState, Torrent};
use crate::types::{BlockRef, PieceIndex, BLOCK_LEN};
use crate::wire::Message;

pub(crate) const MIN_DEPTH: usize = 16;
/// Most clients drop requests beyond a queue of a few hundred (libtorrent:
/// 500, Transmission: 512 advertised via reqq).
pub(crate) const MAX_DEPTH: usize = 250;
const START_DEPTH: usize = 64;
/// Requests are sent once at least this many slots are free (unless none
/// is outstanding), so they go out in batches.
const FILL_BATCH: usize = 8;

/// Requests sent and not yet answered, and how many to keep in flight.
pub(crate) struct Pipeline {
    /// (piece, offset) of each request the peer still owes us.
    pub(super) outstanding: HashSet<(u32, u32)>,
    pub(super) depth: usize,
    /// Our cap, or the peer's `reqq` when smaller.
    pub(super) max_depth: usize,
    /// Block bytes stored since the last tick: the measured rate.
    pub(super) window_bytes: u64,
    /// The last block stored, or when waiting began.
    pub(super) last_block: Instant,
    pub(super) picks: Vec<BlockRef>,
}

impl Pipeline {
    pub(super) fn new(now: Instant) -> Pipeline {
        Pipeline {
            outstanding: HashSet::new(),
            depth: START_DEPTH,
            max_depth: MAX_DEPTH,
            window_bytes: 0,
            last_block: now,
            picks: Vec::new(),
        }
    }

    /// Whether the block was outstanding; it no longer is.
    pub(super) fn answered(&mut self, piece: u32, offset: u32) -> bool {
        self.outstanding.remove(&(piece, offset))
    }

    /// Gives up one request and its assignment.
    pub(super) fn release(&mut self, block: BlockRef, t: &mut impl Torrent) -> bool {
        let had = self.outstanding.remove(&(block.piece, block.offset));
        if had {
            t.release(block);
        }
        had
    }

    pub(super) fn release_all(&mut self, t: &mut impl Torrent) {
        t.release_all();
        self.outstanding.clear();
    }

    /// Caps the depth at the peer's advertised queue length.
    pub(super) fn cap(&mut self, reqq: u32) {
        self.max_depth = (reqq as usize).clamp(MIN_DEPTH, MAX_DEPTH);
        self.depth = self.depth.min(self.max_depth);
    }

    /// About half a second of data in flight, from the last second's rate.
    pub(super) fn adapt(&mut self) {
        let per_sec = self.window_bytes / u64::from(BLOCK_LEN);
        self.window_bytes = 0;
        if per_sec > 0 {
            self.depth = ((per_sec / 2) as usize + MIN_DEPTH).min(self.max_depth);
        }
    }
}

impl PeerState {
    /// Tops the pipeline up to its depth (while choked, from the
    /// allowed-fast pieces only).
    pub(crate) fn fill(&mut self, now: Instant, t: &mut impl Torrent) {
        let choked = matches!(self.download, Download::Choked { .. });
        if !self.am_interested || (choked && self.allowed_in.is_empty()) {
            return;
        }
        let p = &mut self.pipeline;
        let room = p.depth.saturating_sub(p.outstanding.len());
        if room == 0 || (room < FILL_BATCH && !p.outstanding.is_empty()) {
            return;
        }
        if p.outstanding.is_empty() {
            p.last_block = now;
        }
        let mut picks = std::mem::take(&mut p.picks);
        picks.clear();
        let only = choked.then_some(self.allowed_in.as_slice());
        t.pick(room, only, &mut picks);
        for r in &picks {
            self.pipeline.outstanding.insert((r.piece, r.offset));
            self.out.push(Message::Request {
                piece: r.piece,
                offset: r.offset,
                len: r.len,
            });
        }
        if !picks.is_empty() {
            self.last_sent = now;
        }
        self.pipeline.picks = picks;
    }

    /// Requests a choking fast peer neither served nor rejected go to
    /// other peers; those in its allowed-fast set stay.
    pub(super) fn give_up_choked(&mut self, t: &mut impl Torrent) {
        let geo = self.settings.geometry;
        let allowed = &self.allowed_in;
        // Only pieces of the torrent are requested, so `piece` finds each.
        let stale: Vec<(PieceIndex, u32)> = self
            .pipeline
            .outstanding
            .iter()
            .filter_map(|&(p, offset)| Some((geo.piece(p)?, offset)))
            .filter(|(p, _)| !allowed.contains(p))
            .collect();
        for (piece, offset) in stale {
            self.pipeline
                .release(geo.block(piece, offset / BLOCK_LEN), t);
        }
    }
}

#[cfg(test)]
impl Pipeline {
    pub(crate) fn len(&self) -> usize {
        self.outstanding.len()
    }

    pub(crate) fn depth(&self) -> usize {
        self.depth
    }
}
