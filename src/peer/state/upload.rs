//! The upload side: a peer's requests checked, queued, voided on a choke
//! and handed out in batches to be read from disk.

use std::collections::VecDeque;

use tokio::time::Instant;

use super::{PeerState, Torrent};
use crate::peer::PeerError;
use crate::types::BlockRef;
use crate::wire::Message;

/// Pending requests a peer may queue before it counts as a flood.
pub(crate) const MAX_UPLOAD_QUEUE: usize = 4096;
/// Blocks read from disk in one go for one peer.
const UPLOAD_BATCH: usize = 16;

impl PeerState {
    /// Queues a peer's request after checking it against the torrent.
    pub(super) fn on_request(
        &mut self,
        piece: u32,
        offset: u32,
        len: u32,
        now: Instant,
        t: &mut impl Torrent,
    ) -> Result<(), PeerError> {
        if len == 0 || len > self.settings.max_request_len {
            return Err(PeerError::Protocol(format!("request for {len} bytes")));
        }
        let block = BlockRef { piece, offset, len };
        let Some(index) = self.settings.geometry.block_piece(&block) else {
            return Err(PeerError::Protocol(format!(
                "request outside the torrent: piece {piece} offset {offset} length {len}"
            )));
        };
        let choked = self.am_choking && !self.allowed_out.contains(&index);
        if choked || !t.has_piece(index) {
            // Choked requests are void (BEP-3); unhad pieces are refused.
            // A fast peer is told so.
            if self.remote.fast {
                self.send(reject(&block), now);
            }
            return Ok(());
        }
        if self.uploads.len() >= MAX_UPLOAD_QUEUE {
            return Err(PeerError::Protocol("request flood".into()));
        }
        self.uploads.push_back(block);
        Ok(())
    }

    /// The peer withdrew a request: dropped from the queue, and a fast
    /// peer is told with a reject.
    pub(super) fn on_cancel(&mut self, block: BlockRef, now: Instant) {
        let before = self.uploads.len();
        self.uploads.retain(|r| *r != block);
        if self.remote.fast && self.uploads.len() < before {
            self.send(reject(&block), now);
        }
    }

    /// We choked the peer: its queued requests are void (BEP-3), and a
    /// fast peer gets a reject for each, but allowed-fast ones are still
    /// served (every request gets exactly one answer).
    pub(super) fn void_uploads(&mut self, now: Instant) {
        if !self.remote.fast {
            // The peer re-requests after the next unchoke.
            self.uploads.clear();
            return;
        }
        let allowed = &self.allowed_out;
        let (keep, void): (VecDeque<BlockRef>, VecDeque<BlockRef>) = self
            .uploads
            .drain(..)
            .partition(|r| allowed.iter().any(|p| p.get() == r.piece));
        self.uploads = keep;
        for r in &void {
            self.send(reject(r), now);
        }
    }

    /// The next blocks to read from disk for the peer, when none are being
    /// read and we may send.
    pub(crate) fn next_uploads(&mut self) -> Option<Vec<BlockRef>> {
        if self.uploading || (self.am_choking && !self.remote.fast) || self.uploads.is_empty() {
            return None;
        }
        let n = self.uploads.len().min(UPLOAD_BATCH);
        self.uploading = true;
        Some(self.uploads.drain(..n).collect())
    }

    /// The blocks from [`PeerState::next_uploads`] are read; whether to
    /// send them (not if we choked a peer without the fast extension
    /// meanwhile: a fast peer gets what it asked for, or a reject).
    pub(crate) fn uploads_read(&mut self, now: Instant) -> bool {
        self.uploading = false;
        if self.am_choking && !self.remote.fast {
            return false;
        }
        self.last_sent = now;
        true
    }
}

pub(super) fn reject(r: &BlockRef) -> Message {
    Message::Reject {
        piece: r.piece,
        offset: r.offset,
        len: r.len,
    }
}
