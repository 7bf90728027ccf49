//! Identifiers and torrent geometry: piece and block arithmetic, no IO.

use std::fmt;
use std::ops::Range;

/// Bytes in one request (BEP-3: the de-facto 16 KiB block).
pub const BLOCK_LEN: u32 = 16 * 1024;

/// SHA-1 of the bencoded `info` value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InfoHash(pub [u8; 20]);

impl InfoHash {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<InfoHash> {
        let mut out = [0u8; 20];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(InfoHash(out))
    }
}

impl fmt::Debug for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InfoHash({})", self.to_hex())
    }
}

impl fmt::Display for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A 20-byte peer id.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerId(pub [u8; 20]);

impl PeerId {
    /// Azureus style: `-XR0001-` and 12 random bytes, new every run.
    pub fn generate() -> PeerId {
        let mut id = [0u8; 20];
        id[..8].copy_from_slice(b"-XR0001-");
        rand::Rng::fill(&mut rand::thread_rng(), &mut id[8..]);
        PeerId(id)
    }

    /// The id a web seed goes by in the engine: fixed per URL, and marked
    /// so it is never taken for a BitTorrent peer.
    pub fn web_seed(url: &str) -> PeerId {
        use sha1::{Digest, Sha1};
        let mut id = [0u8; 20];
        id.copy_from_slice(&Sha1::digest(url.as_bytes()));
        id[..8].copy_from_slice(WEB_SEED_PREFIX);
        PeerId(id)
    }

    pub fn is_web_seed(&self) -> bool {
        self.0.starts_with(WEB_SEED_PREFIX)
    }
}

const WEB_SEED_PREFIX: &[u8; 8] = b"-WEBSD-\0";

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", String::from_utf8_lossy(&self.0[..8]))
    }
}

/// A piece index checked against the torrent: only [`Geometry`] makes
/// one, and a [`Bitfield`] (sized to the torrent) hands out its own, so
/// it is always below `num_pieces`. Wire messages carry raw `u32`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PieceIndex(u32);

impl PieceIndex {
    pub fn get(self) -> u32 {
        self.0
    }

    pub fn as_usize(self) -> usize {
        self.0 as usize
    }
}

/// Tests name pieces of torrents they build by hand (or past their end).
#[cfg(test)]
impl PieceIndex {
    pub(crate) fn unchecked(raw: u32) -> PieceIndex {
        PieceIndex(raw)
    }
}

impl fmt::Display for PieceIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One block request: piece, offset in the piece, length. The piece is
/// raw: requests come from the wire and go back to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockRef {
    pub piece: u32,
    pub offset: u32,
    pub len: u32,
}

/// The shape of a torrent's byte stream: how it splits into pieces and blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub total_len: u64,
    pub piece_len: u32,
    pub num_pieces: u32,
}

impl Geometry {
    /// `piece_len` must be non-zero and `total_len` must need at most
    /// `u32::MAX` pieces; metainfo validation guarantees both.
    pub fn new(total_len: u64, piece_len: u32) -> Geometry {
        assert!(piece_len > 0, "piece length is validated non-zero");
        let num_pieces = total_len.div_ceil(u64::from(piece_len));
        Geometry {
            total_len,
            piece_len,
            num_pieces: u32::try_from(num_pieces).expect("piece count is validated"),
        }
    }

    /// `raw` as a piece of this torrent, if it is one.
    pub fn piece(&self, raw: u32) -> Option<PieceIndex> {
        (raw < self.num_pieces).then_some(PieceIndex(raw))
    }

    /// Every piece, in order.
    pub fn pieces(&self) -> impl DoubleEndedIterator<Item = PieceIndex> + Clone + use<> {
        (0..self.num_pieces).map(PieceIndex)
    }

    /// The last piece, often short; every torrent has one.
    pub fn last_piece(&self) -> PieceIndex {
        PieceIndex(self.num_pieces - 1)
    }

    pub fn piece_size(&self, piece: PieceIndex) -> u32 {
        if piece.0 + 1 == self.num_pieces {
            let rem = self.total_len - self.piece_offset(piece);
            u32::try_from(rem).expect("the last piece is at most piece_len")
        } else {
            self.piece_len
        }
    }

    pub fn piece_offset(&self, piece: PieceIndex) -> u64 {
        u64::from(piece.0) * u64::from(self.piece_len)
    }

    /// The bytes of `piece` in the torrent's stream.
    pub fn piece_span(&self, piece: PieceIndex) -> Range<u64> {
        let start = self.piece_offset(piece);
        start..start + u64::from(self.piece_size(piece))
    }

    pub fn blocks_in_piece(&self, piece: PieceIndex) -> u32 {
        self.piece_size(piece).div_ceil(BLOCK_LEN)
    }

    /// The `n`th block of `piece`.
    pub fn block(&self, piece: PieceIndex, n: u32) -> BlockRef {
        let size = self.piece_size(piece);
        let offset = n * BLOCK_LEN;
        BlockRef {
            piece: piece.0,
            offset,
            len: (size - offset).min(BLOCK_LEN),
        }
    }

    /// Where `block` begins in the torrent's byte stream.
    pub fn block_offset(&self, block: &BlockRef) -> u64 {
        u64::from(block.piece) * u64::from(self.piece_len) + u64::from(block.offset)
    }

    /// The piece of a request/piece triple that lies inside the torrent.
    pub fn block_piece(&self, block: &BlockRef) -> Option<PieceIndex> {
        let piece = self.piece(block.piece)?;
        (u64::from(block.offset) + u64::from(block.len) <= u64::from(self.piece_size(piece)))
            .then_some(piece)
    }

    /// The pieces holding any byte of `bytes`, a non-empty range of the
    /// torrent's byte stream (clamped to the torrent).
    pub fn pieces_over(
        &self,
        bytes: Range<u64>,
    ) -> impl DoubleEndedIterator<Item = PieceIndex> + Clone + use<> {
        debug_assert!(bytes.start < bytes.end);
        let plen = u64::from(self.piece_len);
        let piece = |b: u64| u32::try_from(b / plen).unwrap_or(u32::MAX);
        let end = piece(bytes.end - 1).saturating_add(1).min(self.num_pieces);
        (piece(bytes.start).min(end)..end).map(PieceIndex)
    }

    /// Bytes in a bitfield message for this torrent.
    pub fn bitfield_len(&self) -> usize {
        (self.num_pieces as usize).div_ceil(8)
    }
}

/// A fixed-size set of pieces, laid out like the wire bitfield (MSB first).
#[derive(Clone, PartialEq, Eq)]
pub struct Bitfield {
    bits: Vec<u8>,
    len: u32,
    ones: u32,
}

impl fmt::Debug for Bitfield {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bitfield({}/{})", self.ones, self.len)
    }
}

impl Bitfield {
    pub fn new(len: u32) -> Bitfield {
        Bitfield {
            bits: vec![0; (len as usize).div_ceil(8)],
            len,
            ones: 0,
        }
    }

    pub fn full(len: u32) -> Bitfield {
        let mut b = Bitfield::new(len);
        for i in 0..len {
            b.set(PieceIndex(i));
        }
        b
    }

    /// From wire bytes; `None` if the length is wrong or spare bits are set.
    pub fn from_bytes(bytes: &[u8], len: u32) -> Option<Bitfield> {
        if bytes.len() != (len as usize).div_ceil(8) {
            return None;
        }
        let spare = (8 - len % 8) % 8;
        if spare > 0 {
            let last = *bytes.last()?;
            if last & ((1u8 << spare) - 1) != 0 {
                return None;
            }
        }
        let ones = bytes.iter().map(|b| b.count_ones()).sum();
        Some(Bitfield {
            bits: bytes.to_vec(),
            len,
            ones,
        })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bits
    }

    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn count(&self) -> u32 {
        self.ones
    }

    /// Pieces set both here and in `other`.
    pub fn count_common(&self, other: &Bitfield) -> u32 {
        // Spare bits are never set, so whole bytes can be counted.
        self.bits
            .iter()
            .zip(&other.bits)
            .map(|(a, b)| (a & b).count_ones())
            .sum()
    }

    pub fn is_full(&self) -> bool {
        self.ones == self.len
    }

    /// Whether `piece` is set; false past the end (a bitfield of another
    /// length).
    pub fn get(&self, piece: PieceIndex) -> bool {
        let i = piece.0;
        i < self.len && self.bits[(i / 8) as usize] & (0x80 >> (i % 8)) != 0
    }

    /// Sets `piece`; returns whether it was newly set.
    pub fn set(&mut self, piece: PieceIndex) -> bool {
        let i = piece.0;
        if i >= self.len || self.get(piece) {
            return false;
        }
        self.bits[(i / 8) as usize] |= 0x80 >> (i % 8);
        self.ones += 1;
        true
    }

    pub fn clear(&mut self, piece: PieceIndex) {
        if self.get(piece) {
            let i = piece.0;
            self.bits[(i / 8) as usize] &= !(0x80 >> (i % 8));
            self.ones -= 1;
        }
    }

    /// The pieces set, in order. A bitfield is sized to its torrent, so
    /// these are its pieces.
    pub fn iter_ones(&self) -> impl Iterator<Item = PieceIndex> + '_ {
        (0..self.len).map(PieceIndex).filter(|&p| self.get(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_piece_and_block_are_short() {
        let g = Geometry::new(100_000, 32_768);
        assert_eq!(g.num_pieces, 4);
        let last = g.piece(3).unwrap();
        assert_eq!(g.piece_size(last), 100_000 - 3 * 32_768);
        assert_eq!(g.blocks_in_piece(last), 1);
        assert_eq!(g.block(PieceIndex(0), 1).offset, 16_384);
        assert_eq!(g.block(last, 0).len, 1_696);
        let req = |piece, len| BlockRef {
            piece,
            offset: 0,
            len,
        };
        assert_eq!(g.block_piece(&req(3, 1_696)), Some(last));
        assert_eq!(g.block_piece(&req(3, 1_697)), None);
        assert_eq!(g.block_piece(&req(4, 1)), None);
        assert_eq!(g.piece(4), None);
        assert_eq!(
            g.pieces().map(PieceIndex::get).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
    }

    #[test]
    fn a_byte_range_covers_the_pieces_it_touches() {
        let g = Geometry::new(100_000, 32_768);
        let over = |r| g.pieces_over(r).map(PieceIndex::get).collect::<Vec<_>>();
        assert_eq!(over(0..1), [0]);
        assert_eq!(over(32_767..32_769), [0, 1]);
        assert_eq!(over(32_768..65_536), [1]);
        assert_eq!(over(0..100_000), [0, 1, 2, 3]);
        assert_eq!(over(99_999..200_000), [3], "clamped to the torrent");
    }

    #[test]
    fn counts_pieces_set_in_both_bitfields() {
        let mut a = Bitfield::new(10);
        let mut b = Bitfield::new(10);
        for i in [0, 3, 9] {
            a.set(PieceIndex(i));
        }
        for i in [3, 8, 9] {
            b.set(PieceIndex(i));
        }
        assert_eq!(a.count_common(&b), 2);
    }

    #[test]
    fn rejects_bitfield_with_spare_bits_set() {
        assert!(Bitfield::from_bytes(&[0xff, 0x80], 9).is_some());
        assert!(Bitfield::from_bytes(&[0xff, 0xc0], 9).is_none());
        assert!(Bitfield::from_bytes(&[0xff], 9).is_none());
        assert!(Bitfield::from_bytes(&[0xff, 0x80, 0], 9).is_none());
    }

    #[test]
    fn bitfield_counts_ones() {
        let mut b = Bitfield::new(10);
        assert!(b.set(PieceIndex(9)));
        assert!(!b.set(PieceIndex(9)));
        assert!(!b.set(PieceIndex(10)));
        assert_eq!(b.count(), 1);
        assert_eq!(b.as_bytes(), &[0, 0x40]);
        b.clear(PieceIndex(9));
        assert_eq!(b.count(), 0);
    }
}
