//! Verifies data already on disk against the piece hashes, on all cores.
//! Used to resume a download and before seeding.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use sha1::{Digest, Sha1};

use crate::storage::Storage;
use crate::types::{Bitfield, Geometry};

/// Hashes every piece readable from `storage` (only those in `only`, when
/// given); returns the ones that match. `progress` counts bytes examined;
/// setting `stop` ends the check early (pieces not reached count as
/// missing). Blocking: call off the reactor.
pub(crate) fn check(
    storage: &dyn Storage,
    geo: Geometry,
    hashes: &[[u8; 20]],
    threads: usize,
    progress: &AtomicU64,
    stop: &AtomicBool,
    only: Option<&Bitfield>,
) -> Bitfield {
    let next = AtomicU32::new(0);
    let have = Mutex::new(Bitfield::new(geo.num_pieces));
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                let mut buf = Vec::new();
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let Some(p) = geo.piece(next.fetch_add(1, Ordering::Relaxed)) else {
                        return;
                    };
                    if only.is_some_and(|o| !o.get(p)) {
                        continue;
                    }
                    let size = geo.piece_size(p) as usize;
                    let offset = geo.piece_offset(p);
                    if storage.known_missing(offset, size) {
                        progress.fetch_add(size as u64, Ordering::Relaxed);
                        continue;
                    }
                    buf.resize(size, 0);
                    let ok = storage.read_at(offset, &mut buf).is_ok()
                        && <[u8; 20]>::from(Sha1::digest(&buf)) == hashes[p.as_usize()];
                    if ok {
                        have.lock().unwrap_or_else(|e| e.into_inner()).set(p);
                    }
                    progress.fetch_add(size as u64, Ordering::Relaxed);
                }
            });
        }
    });
    have.into_inner().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    #[test]
    fn finds_exactly_the_pieces_that_match() {
        let geo = Geometry::new(40_000, 16_384);
        let data: Vec<u8> = (0..40_000u32).map(|i| (i * 7).to_le_bytes()[0]).collect();
        let hashes: Vec<[u8; 20]> = data
            .chunks(16_384)
            .map(|c| Sha1::digest(c).into())
            .collect();
        let mut damaged = data.clone();
        damaged[20_000] ^= 1;
        let s = MemStorage::from_vec(damaged);
        let progress = AtomicU64::new(0);
        let have = check(
            &s,
            geo,
            &hashes,
            2,
            &progress,
            &AtomicBool::new(false),
            None,
        );
        let has = |i| have.get(geo.piece(i).unwrap());
        assert!(has(0) && !has(1) && has(2));
        assert_eq!(progress.load(Ordering::Relaxed), 40_000);
    }
}
