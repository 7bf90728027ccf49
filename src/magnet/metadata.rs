//! BEP-9 metadata fetching: assembling a magnet download's info dictionary
//! from peers' `ut_metadata` pieces and checking it against the info-hash.
//!
//! Sans-IO: the caller reports peers' handshakes, rejects and data with the
//! current time, and sends the requests [`Fetch::next_request`] hands out.
//!
//! Peers may disagree about the size, and a liar's size cannot be told from
//! an honest one until the whole is hashed. So one size is assembled at a
//! time (the *attempt*), started from the first peer asking for work; only
//! peers claiming that size are asked. An attempt is dropped, and its stored
//! pieces with it, when:
//! - the hash does not match: every contributor is named to the caller and
//!   forgotten for good, so the next attempt takes its size from the rest;
//! - no connected peer claims its size any more;
//! - it stored nothing for [`STALL_TIMEOUT`] while a peer with another size
//!   wants work (a liar that names a size and then stays silent).
//!
//! Memory follows what arrived, never what a peer claimed: pieces are kept
//! in a map as they come, and the whole is only laid out once every byte is
//! in.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use sha1::{Digest, Sha1};

use crate::types::InfoHash;

/// Bytes in one metadata piece; only the last may be shorter.
pub const PIECE: usize = crate::extension::METADATA_PIECE;
/// Largest info dictionary accepted. Real ones reach about 14 MB (huge
/// torrents with small pieces); 64 MiB leaves room and bounds what a peer
/// can make us hold.
pub const MAX_SIZE: u64 = 64 * 1024 * 1024;
/// Requests outstanding per peer: metadata is small, and two keeps a link
/// busy without letting one slow peer hold most of the pieces.
pub const MAX_OUTSTANDING: usize = 2;
/// After this, a piece asked of one peer may be asked of another.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A peer that rejected a piece is not asked for it again for this long
/// (counted from the request).
pub const REJECT_BACKOFF: Duration = Duration::from_secs(30);
/// An attempt storing nothing for this long yields to a peer claiming
/// another size.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The caller's name for a connection; never reused for another one.
pub type PeerKey = u64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata size {size} is zero or over the {MAX_SIZE}-byte limit")]
    BadSize { size: u64 },
    #[error("peer {peer} contributed to metadata that failed the hash check")]
    Banned { peer: PeerKey },
    /// The assembled metadata did not match. `peers` are the proven liars
    /// (the only contributor), now forgotten; with several contributors
    /// nobody is blamed and the next attempts take one peer at a time.
    #[error("assembled metadata does not match the info-hash (liars: peers {peers:?})")]
    HashMismatch { peers: Vec<PeerKey> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Unrequested, duplicate or malformed; nothing changed.
    Ignored,
    Stored,
    /// The verified info dictionary.
    Done(Vec<u8>),
}

struct Peer {
    size: u64,
    /// Pieces asked of it and when (answered ones are removed).
    asked: Vec<(u32, Instant)>,
    /// Pieces it rejected, with the time they were asked.
    rejected: Vec<(u32, Instant)>,
}

enum Slot {
    Asked { peer: PeerKey, at: Instant },
    Have { data: Vec<u8>, from: PeerKey },
}

/// One size being assembled. Pieces neither asked nor stored have no slot.
struct Attempt {
    size: u64,
    pieces: u32,
    slots: BTreeMap<u32, Slot>,
    stored: u32,
    received: u64,
    last_progress: Instant,
    /// In single-source mode, the one peer this attempt is fetched from.
    owner: Option<PeerKey>,
}

impl Attempt {
    fn new(size: u64, now: Instant) -> Attempt {
        Attempt {
            size,
            pieces: u32::try_from(size.div_ceil(PIECE as u64)).expect("size is capped"),
            slots: BTreeMap::new(),
            stored: 0,
            received: 0,
            last_progress: now,
            owner: None,
        }
    }

    /// Bytes piece `piece` must have; `piece < self.pieces`.
    fn piece_len(&self, piece: u32) -> usize {
        let start = u64::from(piece) * PIECE as u64;
        usize::try_from((self.size - start).min(PIECE as u64)).expect("at most PIECE")
    }

    /// Frees the pieces `peer` was asked for, so others may take them now.
    fn release(&mut self, peer: PeerKey) {
        self.slots
            .retain(|_, s| !matches!(s, Slot::Asked { peer: p, .. } if *p == peer));
    }
}

/// The metadata fetch of one magnet download.
pub struct Fetch {
    info_hash: InfoHash,
    peers: HashMap<PeerKey, Peer>,
    /// Contributors to a failed attempt; grows only by peers once added.
    banned: HashSet<PeerKey>,
    attempt: Option<Attempt>,
    /// The size, once the metadata is verified.
    done: Option<u64>,
    /// After a mismatch with several contributors: assemble from one peer
    /// at a time, so the next mismatch proves who lied.
    single_source: bool,
}

impl Fetch {
    pub fn new(info_hash: InfoHash) -> Fetch {
        Fetch {
            info_hash,
            peers: HashMap::new(),
            banned: HashSet::new(),
            attempt: None,
            done: None,
            single_source: false,
        }
    }

    /// A peer's extended handshake named this `metadata_size`. On `Err` the
    /// caller stops using the peer for metadata (a known peer is removed).
    /// A changed size drops the peer's outstanding requests.
    pub fn add_peer(&mut self, peer: PeerKey, size: u64) -> Result<(), MetadataError> {
        if self.banned.contains(&peer) {
            return Err(MetadataError::Banned { peer });
        }
        if size == 0 || size > MAX_SIZE {
            self.remove_peer(peer);
            return Err(MetadataError::BadSize { size });
        }
        match self.peers.get_mut(&peer) {
            Some(p) if p.size == size => {}
            Some(p) => {
                p.size = size;
                p.asked.clear();
                p.rejected.clear();
                if let Some(a) = &mut self.attempt {
                    a.release(peer);
                }
            }
            None => {
                let p = Peer {
                    size,
                    asked: Vec::new(),
                    rejected: Vec::new(),
                };
                self.peers.insert(peer, p);
            }
        }
        Ok(())
    }

    /// The peer is gone; its outstanding pieces are free at once.
    pub fn remove_peer(&mut self, peer: PeerKey) {
        if self.peers.remove(&peer).is_some() {
            if let Some(a) = &mut self.attempt {
                a.release(peer);
            }
        }
    }

    /// The next piece to ask `peer` for: the lowest one nobody is fetching
    /// (or whose request timed out) that this peer has not just rejected,
    /// while it has fewer than [`MAX_OUTSTANDING`] requests live.
    pub fn next_request(&mut self, peer: PeerKey, now: Instant) -> Option<u32> {
        if self.done.is_some() {
            return None;
        }
        let size = self.peers.get(&peer)?.size;
        match &self.attempt {
            Some(a) if a.size == size => {}
            Some(a)
                if self.peers.values().any(|p| p.size == a.size)
                    && now.saturating_duration_since(a.last_progress) < STALL_TIMEOUT =>
            {
                // Another size is being assembled and is still in play.
                return None;
            }
            _ => self.start_attempt(size, now),
        }
        if self.single_source {
            let a = self.attempt.as_ref()?;
            match a.owner {
                Some(o) if o == peer => {}
                Some(o)
                    if self.peers.contains_key(&o)
                        && now.saturating_duration_since(a.last_progress) < STALL_TIMEOUT =>
                {
                    return None;
                }
                // The owner left or stalled: its pieces are not trusted
                // with anyone else's.
                Some(_) => self.start_attempt(size, now),
                None => {}
            }
            self.attempt.as_mut()?.owner = Some(peer);
        }
        let a = self.attempt.as_mut()?;
        let p = self.peers.get_mut(&peer)?;

        let live = |at: Instant, limit| now.saturating_duration_since(at) < limit;
        // Requests past their timeout no longer count against the peer
        // (a late answer to one is then ignored).
        p.asked.retain(|&(i, at)| {
            live(at, REQUEST_TIMEOUT) && !matches!(a.slots.get(&i), Some(Slot::Have { .. }))
        });
        p.rejected.retain(|&(_, at)| live(at, REJECT_BACKOFF));
        if p.asked.len() >= MAX_OUTSTANDING {
            return None;
        }
        let piece = (0..a.pieces).find(|i| {
            let free = match a.slots.get(i) {
                None => true,
                Some(Slot::Asked { at, .. }) => !live(*at, REQUEST_TIMEOUT),
                Some(Slot::Have { .. }) => false,
            };
            free && !p.rejected.iter().any(|(r, _)| r == i)
        })?;
        a.slots.insert(piece, Slot::Asked { peer, at: now });
        p.asked.push((piece, now));
        Some(piece)
    }

    /// `peer` rejected `piece`: another peer may take it at once, and this
    /// one is not asked for it for [`REJECT_BACKOFF`]. A reject for a piece
    /// not asked of it is ignored.
    pub fn on_reject(&mut self, peer: PeerKey, piece: u32) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let Some(pos) = p.asked.iter().position(|&(i, _)| i == piece) else {
            return;
        };
        let (_, at) = p.asked.swap_remove(pos);
        p.rejected.push((piece, at));
        if let Some(a) = &mut self.attempt {
            if matches!(a.slots.get(&piece), Some(Slot::Asked { peer: q, .. }) if *q == peer) {
                a.slots.remove(&piece);
            }
        }
    }

    /// A `ut_metadata` data message. Anything not asked of this peer, for
    /// another size, out of range, of the wrong length (every piece is
    /// [`PIECE`] bytes but the last) or already stored is
    /// [`Progress::Ignored`]. The last piece triggers the hash check; on a
    /// mismatch every contributor is named and forgotten, and the fetch
    /// starts over with the remaining peers.
    pub fn on_data(
        &mut self,
        peer: PeerKey,
        piece: u32,
        total_size: u64,
        data: &[u8],
        now: Instant,
    ) -> Result<Progress, MetadataError> {
        let (Some(a), Some(p)) = (self.attempt.as_mut(), self.peers.get_mut(&peer)) else {
            return Ok(Progress::Ignored);
        };
        let Some(pos) = p.asked.iter().position(|&(i, _)| i == piece) else {
            return Ok(Progress::Ignored);
        };
        // Answered, whatever becomes of it.
        p.asked.swap_remove(pos);
        let fits = total_size == a.size && piece < a.pieces && data.len() == a.piece_len(piece);
        match a.slots.get(&piece) {
            Some(Slot::Have { .. }) => return Ok(Progress::Ignored),
            Some(Slot::Asked { peer: q, .. }) if !fits && *q == peer => {
                a.slots.remove(&piece);
                return Ok(Progress::Ignored);
            }
            _ if !fits => return Ok(Progress::Ignored),
            _ => {}
        }
        a.slots.insert(
            piece,
            Slot::Have {
                data: data.to_vec(),
                from: peer,
            },
        );
        a.stored += 1;
        a.received += data.len() as u64;
        a.last_progress = now;
        if a.stored < a.pieces {
            return Ok(Progress::Stored);
        }

        let a = self.attempt.take().expect("checked above");
        for p in self.peers.values_mut() {
            p.asked.clear();
            p.rejected.clear();
        }
        // Every byte has arrived: laying the whole out now allocates no
        // more than was received.
        let mut info = Vec::with_capacity(usize::try_from(a.received).expect("held in memory"));
        let mut from = Vec::new();
        for slot in a.slots.into_values() {
            if let Slot::Have { data, from: f } = slot {
                info.extend_from_slice(&data);
                from.push(f);
            }
        }
        if Sha1::digest(&info)[..] == self.info_hash.0[..] {
            self.done = Some(a.size);
            return Ok(Progress::Done(info));
        }
        from.sort_unstable();
        from.dedup();
        if from.len() > 1 {
            // Honest peers may be among them: blame nobody yet.
            self.single_source = true;
            return Err(MetadataError::HashMismatch { peers: Vec::new() });
        }
        for f in &from {
            self.peers.remove(f);
            self.banned.insert(*f);
        }
        Err(MetadataError::HashMismatch { peers: from })
    }

    /// The size being assembled (or assembled), for progress display.
    pub fn size(&self) -> Option<u64> {
        self.done.or(self.attempt.as_ref().map(|a| a.size))
    }

    /// Bytes stored towards the current attempt.
    pub fn received(&self) -> u64 {
        self.done
            .or(self.attempt.as_ref().map(|a| a.received))
            .unwrap_or(0)
    }

    pub fn is_done(&self) -> bool {
        self.done.is_some()
    }

    fn start_attempt(&mut self, size: u64, now: Instant) {
        self.attempt = Some(Attempt::new(size, now));
        for p in self.peers.values_mut() {
            p.asked.clear();
            p.rejected.clear();
        }
    }

    /// Heap bytes held for piece data.
    #[cfg(test)]
    fn held_bytes(&self) -> usize {
        self.attempt.as_ref().map_or(0, |a| {
            a.slots
                .values()
                .map(|s| match s {
                    Slot::Have { data, .. } => data.capacity(),
                    Slot::Asked { .. } => 0,
                })
                .sum()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IGNORED: Result<Progress, MetadataError> = Ok(Progress::Ignored);

    /// Any bytes do: the fetcher only hashes them.
    fn info(len: usize) -> (Vec<u8>, InfoHash) {
        let bytes: Vec<u8> = (0..len)
            .map(|i| u8::try_from(i * 7 % 251).unwrap())
            .collect();
        let hash = InfoHash(Sha1::digest(&bytes).into());
        (bytes, hash)
    }

    fn piece(info: &[u8], i: u32) -> &[u8] {
        crate::extension::metadata_piece(info, i).unwrap()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn fetches_from_two_honest_peers() {
        let (bytes, hash) = info(2 * PIECE + 7232);
        let size = bytes.len() as u64;
        let t = Instant::now();
        let mut f = Fetch::new(hash);
        f.add_peer(1, size).unwrap();
        f.add_peer(2, size).unwrap();
        assert_eq!(f.next_request(1, t), Some(0));
        assert_eq!(f.next_request(1, t), Some(1));
        assert_eq!(f.next_request(1, t), None, "two outstanding per peer");
        assert_eq!(f.next_request(2, t), Some(2));
        assert_eq!(f.next_request(2, t), None, "each piece from one peer");
        assert_eq!(f.size(), Some(size));

        let r = f.on_data(2, 2, size, piece(&bytes, 2), t).unwrap();
        assert_eq!(r, Progress::Stored);
        assert_eq!(f.received(), 7232);
        let r = f.on_data(1, 0, size, piece(&bytes, 0), t).unwrap();
        assert_eq!(r, Progress::Stored);
        let r = f.on_data(1, 1, size, piece(&bytes, 1), t).unwrap();
        assert_eq!(r, Progress::Done(bytes.clone()));
        assert!(f.is_done());
        assert_eq!(f.received(), size);
        assert_eq!(f.next_request(2, t), None);
        let r = f.on_data(2, 0, size, piece(&bytes, 0), t).unwrap();
        assert_eq!(r, Progress::Ignored);
    }

    #[test]
    fn a_liar_is_named_and_forgotten_then_the_honest_peer_completes() {
        let (bytes, hash) = info(PIECE + 100);
        let size = bytes.len() as u64;
        let t = Instant::now();
        let mut f = Fetch::new(hash);
        f.add_peer(9, size).unwrap();
        f.add_peer(1, size).unwrap();
        assert_eq!(f.next_request(9, t), Some(0));
        assert_eq!(f.next_request(9, t), Some(1));
        assert_eq!(f.next_request(1, t), None);
        let junk = vec![0u8; PIECE];
        assert_eq!(f.on_data(9, 0, size, &junk, t), Ok(Progress::Stored));
        assert_eq!(
            f.on_data(9, 1, size, &junk[..100], t),
            Err(MetadataError::HashMismatch { peers: vec![9] })
        );
        assert_eq!(f.received(), 0, "the failed attempt is gone");
        assert_eq!(f.next_request(9, t), None);
        assert_eq!(f.add_peer(9, size), Err(MetadataError::Banned { peer: 9 }));

        assert_eq!(f.next_request(1, t), Some(0));
        assert_eq!(f.next_request(1, t), Some(1));
        f.on_data(1, 1, size, piece(&bytes, 1), t).unwrap();
        let r = f.on_data(1, 0, size, piece(&bytes, 0), t).unwrap();
        assert_eq!(r, Progress::Done(bytes));
    }

    #[test]
    fn a_mismatch_of_several_contributors_goes_one_peer_at_a_time() {
        let (bytes, hash) = info(PIECE + 100);
        let size = bytes.len() as u64;
        let t = Instant::now();
        let mut f = Fetch::new(hash);
        f.add_peer(1, size).unwrap();
        f.add_peer(2, size).unwrap();
        assert_eq!(f.next_request(2, t), Some(0));
        assert_eq!(f.next_request(1, t), Some(1));
        f.on_data(2, 0, size, &vec![1; PIECE], t).unwrap();
        // Either could have lied: nobody is blamed yet.
        assert_eq!(
            f.on_data(1, 1, size, piece(&bytes, 1), t),
            Err(MetadataError::HashMismatch { peers: vec![] })
        );
        // Now one peer at a time: the liar (2) takes the attempt alone...
        assert_eq!(f.next_request(2, t), Some(0));
        assert_eq!(f.next_request(1, t), None);
        assert_eq!(f.next_request(2, t), Some(1));
        f.on_data(2, 0, size, &vec![1; PIECE], t).unwrap();
        assert_eq!(
            f.on_data(2, 1, size, piece(&bytes, 1), t),
            Err(MetadataError::HashMismatch { peers: vec![2] })
        );
        assert_eq!(f.add_peer(2, size), Err(MetadataError::Banned { peer: 2 }));
        // ...and the honest one completes alone.
        assert_eq!(f.next_request(1, t), Some(0));
        assert_eq!(f.next_request(1, t), Some(1));
        f.on_data(1, 1, size, piece(&bytes, 1), t).unwrap();
        let r = f.on_data(1, 0, size, piece(&bytes, 0), t).unwrap();
        assert_eq!(r, Progress::Done(bytes));
    }

    #[test]
    fn in_single_source_mode_a_silent_owner_yields_after_a_stall() {
        let (bytes, hash) = info(PIECE + 100);
        let size = bytes.len() as u64;
        let t = Instant::now();
        let mut f = Fetch::new(hash);
        f.add_peer(1, size).unwrap();
        f.add_peer(2, size).unwrap();
        f.next_request(1, t);
        f.next_request(2, t);
        f.on_data(1, 0, size, &vec![1; PIECE], t).unwrap();
        let _ = f.on_data(2, 1, size, piece(&bytes, 1), t);
        assert_eq!(f.next_request(1, t), Some(0));
        assert_eq!(f.next_request(2, t), None);
        let later = t + STALL_TIMEOUT + secs(1);
        assert_eq!(f.next_request(2, later), Some(0));
    }

    #[test]
    fn a_liar_claiming_another_size_does_not_block_honest_peers() {
        let (bytes, hash) = info(3 * PIECE);
        let size = bytes.len() as u64;
        let t = Instant::now();
        let mut f = Fetch::new(hash);
        f.add_peer(9, 100).unwrap();
        f.add_peer(1, size).unwrap();
        assert_eq!(f.next_request(9, t), Some(0));
        assert_eq!(f.size(), Some(100), "the first size is tried first");
        assert_eq!(f.next_request(1, t), None, "another size waits");
        assert_eq!(
            f.on_data(9, 0, 100, &[0; 100], t),
            Err(MetadataError::HashMismatch { peers: vec![9] })
        );
        for i in 0..3 {
            assert_eq!(f.next_request(1, t), Some(i));
            let r = f.on_data(1, i, size, piece(&bytes, i), t).unwrap();
            if i < 2 {
                assert_eq!(r, Progress::Stored);
            } else {
                assert_eq!(r, Progress::Done(bytes.clone()));
            }
        }
    }

    #[test]
    fn a_silent_peer_s_size_yields_after_a_stall_or_when_it_leaves() {
        let (bytes, hash) = info(500);
        let size = bytes.len() as u64;
        let t = Instant::now();
        let mut f = Fetch::new(hash);
        f.add_peer(9, 100).unwrap();
        f.add_peer(1, size).unwrap();
        assert_eq!(f.next_request(9, t), Some(0));
        assert_eq!(f.next_request(1, t + secs(20)), None);
        assert_eq!(f.next_request(1, t + STALL_TIMEOUT), Some(0));
        assert_eq!(f.size(), Some(size));
        assert_eq!(
            f.on_data(9, 0, 100, &[0; 100], t + STALL_TIMEOUT),
            IGNORED,
            "data for the abandoned size"
        );

        let mut f = Fetch::new(hash);
        f.add_peer(9, 100).unwrap();
        f.add_peer(1, size).unwrap();
        assert_eq!(f.next_request(9, t), Some(0));
        assert_eq!(f.next_request(1, t), None);
        f.remove_peer(9);
        assert_eq!(f.next_request(1, t), Some(0));
        let r = f.on_data(1, 0, size, &bytes, t).unwrap();
        assert_eq!(r, Progress::Done(bytes));
    }

    #[test]
    fn refuses_a_size_of_zero_or_over_the_cap() {
        let mut f = Fetch::new(InfoHash([0; 20]));
        assert_eq!(f.add_peer(1, 0), Err(MetadataError::BadSize { size: 0 }));
        assert_eq!(
            f.add_peer(1, MAX_SIZE + 1),
            Err(MetadataError::BadSize { size: MAX_SIZE + 1 })
        );
        assert_eq!(f.next_request(1, Instant::now()), None);
        f.add_peer(1, MAX_SIZE).unwrap();
        assert_eq!(
            f.add_peer(1, u64::MAX),
            Err(MetadataError::BadSize { size: u64::MAX })
        );
        assert_eq!(f.next_request(1, Instant::now()), None, "dropped");
    }

    #[test]
    fn a_rejected_piece_goes_to_another_peer_and_returns_after_the_backoff() {
        let (bytes, hash) = info(1000);
        let size = bytes.len() as u64;
        let t = Instant::now();
        let mut f = Fetch::new(hash);
        f.add_peer(1, size).unwrap();
        f.add_peer(2, size).unwrap();
        assert_eq!(f.next_request(1, t), Some(0));
        f.on_reject(1, 0);
        assert_eq!(f.next_request(1, t + secs(1)), None);
        assert_eq!(f.next_request(2, t + secs(1)), Some(0));
        f.on_reject(2, 0);
        f.on_reject(2, 0); // a second reject for it changes nothing
        assert_eq!(f.next_request(1, t + REJECT_BACKOFF), Some(0));
        let r = f.on_data(1, 0, size, &bytes, t + REJECT_BACKOFF).unwrap();
        assert_eq!(r, Progress::Done(bytes));
    }

    #[test]
    fn a_timed_out_request_is_reassigned() {
        let (bytes, hash) = info(1000);
        let size = bytes.len() as u64;
        let t = Instant::now();
        let mut f = Fetch::new(hash);
        f.add_peer(1, size).unwrap();
        f.add_peer(2, size).unwrap();
        assert_eq!(f.next_request(1, t), Some(0));
        assert_eq!(f.next_request(2, t + secs(5)), None);
        assert_eq!(f.next_request(2, t + REQUEST_TIMEOUT), Some(0));
        assert_eq!(f.next_request(1, t + REQUEST_TIMEOUT), None, "nothing left");
        let r = f.on_data(2, 0, size, &bytes, t + REQUEST_TIMEOUT).unwrap();
        assert_eq!(r, Progress::Done(bytes));
    }

    #[test]
    fn a_late_answer_to_a_timed_out_request_still_counts() {
        let (bytes, hash) = info(1000);
        let size = bytes.len() as u64;
        let t = Instant::now();
        let mut f = Fetch::new(hash);
        f.add_peer(1, size).unwrap();
        f.add_peer(2, size).unwrap();
        assert_eq!(f.next_request(1, t), Some(0));
        assert_eq!(f.next_request(2, t + REQUEST_TIMEOUT), Some(0));
        let r = f.on_data(1, 0, size, &bytes, t + secs(11)).unwrap();
        assert_eq!(r, Progress::Done(bytes.clone()));
        assert_eq!(f.on_data(2, 0, size, &bytes, t + secs(12)), IGNORED);
    }

    #[test]
    fn every_piece_but_the_last_is_16_kib_and_the_last_has_its_exact_length() {
        let (bytes, hash) = info(PIECE + 100);
        let size = bytes.len() as u64;
        let t = Instant::now();
        let mut f = Fetch::new(hash);
        f.add_peer(1, size).unwrap();
        assert_eq!(f.next_request(1, t), Some(0));
        assert_eq!(f.next_request(1, t), Some(1));
        assert_eq!(f.on_data(1, 0, size, &bytes[..100], t), IGNORED);
        assert_eq!(f.on_data(1, 1, size, &bytes[..101], t), IGNORED);
        assert_eq!(f.received(), 0);
        // Both requests were answered (badly), so both pieces are free again.
        assert_eq!(f.next_request(1, t), Some(0));
        assert_eq!(f.next_request(1, t), Some(1));
        let r = f.on_data(1, 1, size, &bytes[PIECE..], t).unwrap();
        assert_eq!(r, Progress::Stored);
        let r = f.on_data(1, 0, size, &bytes[..PIECE], t).unwrap();
        assert_eq!(r, Progress::Done(bytes));
    }

    #[test]
    fn unrequested_or_foreign_data_is_ignored() {
        let (bytes, hash) = info(2 * PIECE);
        let size = bytes.len() as u64;
        let t = Instant::now();
        let mut f = Fetch::new(hash);
        assert_eq!(f.on_data(1, 0, size, piece(&bytes, 0), t), IGNORED);
        f.add_peer(1, size).unwrap();
        f.add_peer(2, size).unwrap();
        assert_eq!(f.next_request(1, t), Some(0));
        let p0 = piece(&bytes, 0);
        assert_eq!(f.on_data(2, 0, size, p0, t), IGNORED, "asked of 1");
        assert_eq!(f.on_data(1, 1, size, p0, t), IGNORED, "not asked");
        assert_eq!(f.on_data(3, 0, size, p0, t), IGNORED, "unknown");
        assert_eq!(f.on_data(1, 0, size + 1, p0, t), IGNORED, "size");
        assert_eq!(f.next_request(1, t), Some(0), "freed by the bad answer");
        assert_eq!(f.on_data(1, 0, size, p0, t), Ok(Progress::Stored));
        assert_eq!(f.received(), PIECE as u64);
    }

    #[test]
    fn holds_only_the_bytes_received_even_for_the_largest_claimed_size() {
        let t = Instant::now();
        let mut f = Fetch::new(InfoHash([0; 20]));
        f.add_peer(1, MAX_SIZE).unwrap();
        assert_eq!(f.next_request(1, t), Some(0));
        assert_eq!(f.held_bytes(), 0);
        let r = f.on_data(1, 0, MAX_SIZE, &[5; PIECE], t).unwrap();
        assert_eq!(r, Progress::Stored);
        assert_eq!(f.received(), PIECE as u64);
        assert!(f.held_bytes() <= PIECE, "held {}", f.held_bytes());
        assert_eq!(f.attempt.as_ref().unwrap().slots.len(), 1);
    }

    #[test]
    fn removing_a_peer_frees_its_requests() {
        let (bytes, hash) = info(3 * PIECE);
        let size = bytes.len() as u64;
        let t = Instant::now();
        let mut f = Fetch::new(hash);
        f.add_peer(1, size).unwrap();
        f.add_peer(2, size).unwrap();
        assert_eq!(f.next_request(1, t), Some(0));
        assert_eq!(f.next_request(1, t), Some(1));
        f.remove_peer(1);
        assert_eq!(f.next_request(2, t), Some(0));
        assert_eq!(f.next_request(2, t), Some(1));
        assert_eq!(f.on_data(1, 2, size, piece(&bytes, 2), t), IGNORED);
    }
}
