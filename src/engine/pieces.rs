//! Pieces: what a peer has, which blocks it is asked for, and arriving
//! blocks through hashing and writing to the verdict on the piece.

use super::*;

impl Engine {
    /// Records a peer's bitfield; returns whether it has pieces we need.
    pub fn on_bitfield(&self, key: PeerKey, has: Bitfield) -> bool {
        let mut st = self.state();
        let st = &mut *st;
        let Some(entry) = st.peers.get_mut(&key) else {
            return false;
        };
        st.picker.remove_availability(&entry.has);
        st.picker.add_availability(&has);
        entry.has = has;
        st.picker.is_interesting(&entry.has)
    }

    /// Records a `have`; returns whether that piece is one we want and lack.
    pub fn on_have(&self, key: PeerKey, piece: PieceIndex) -> bool {
        let mut st = self.state();
        let st = &mut *st;
        let Some(entry) = st.peers.get_mut(&key) else {
            return false;
        };
        if entry.has.set(piece) {
            st.picker.add_have(piece);
        }
        st.picker.needs(piece)
    }

    /// Whether the peer still has anything we need.
    pub fn is_interesting(&self, key: PeerKey) -> bool {
        let st = self.state();
        st.peers
            .get(&key)
            .is_some_and(|e| st.picker.is_interesting(&e.has))
    }

    /// Appends up to `max` requests for this peer to `out`; with `only`,
    /// just from those pieces (BEP-6 allowed fast, while choked).
    pub fn pick(
        &self,
        key: PeerKey,
        max: usize,
        only: Option<&[PieceIndex]>,
        out: &mut Vec<BlockRef>,
    ) {
        let mut st = self.state();
        let st = &mut *st;
        let Some(entry) = st.peers.get(&key) else {
            return;
        };
        if st.banned.contains(&entry.ip) {
            // Banned, its task not yet gone: no new requests.
            return;
        }
        match only {
            None => st.picker.pick(key, &entry.has, max, out),
            Some(pieces) => {
                let mut allowed = Bitfield::new(self.geometry.num_pieces);
                for &p in pieces {
                    if entry.has.get(p) {
                        allowed.set(p);
                    }
                }
                if allowed.count() > 0 {
                    st.picker.pick(key, &allowed, max, out);
                }
            }
        }
    }

    pub fn release_all(&self, key: PeerKey) {
        self.state().picker.release_all(key);
    }

    pub fn release(&self, key: PeerKey, block: BlockRef) {
        self.state().picker.release(key, block);
    }

    /// Files an arriving block. Returns whether it was one we asked for.
    /// A completed piece is queued for hashing; this waits only when every
    /// hash worker is busy.
    pub async fn on_block(
        self: &Arc<Self>,
        key: PeerKey,
        piece: PieceIndex,
        offset: u32,
        data: &[u8],
    ) -> bool {
        self.stats
            .received
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        let outcome = {
            let mut st = self.state();
            let banned = st.ips.get(&key).is_some_and(|ip| st.banned.contains(ip));
            if banned {
                // Still arriving from a banned peer: never mixed into a piece.
                BlockOutcome::Unrequested
            } else {
                st.picker.on_block(key, piece, offset, data)
            }
        };
        match outcome {
            BlockOutcome::Unrequested => {
                self.stats
                    .wasted
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                false
            }
            BlockOutcome::Stored { cancel, complete } => {
                {
                    let mut st = self.state();
                    if let Some(e) = st.peers.get_mut(&key) {
                        e.last_data = Instant::now();
                        e.exchanged = true;
                        e.down += data.len() as u64;
                    }
                    if let Some(addr) = st.peers.get(&key).map(|e| e.addr) {
                        *st.contributed.entry(addr).or_default() += data.len() as u64;
                    }
                    st.choker
                        .record_download(key, data.len() as u64, std::time::Instant::now());
                }
                if !cancel.is_empty() {
                    let block = BlockRef {
                        piece: piece.get(),
                        offset,
                        len: u32::try_from(data.len()).expect("the picker took it as a block"),
                    };
                    let st = self.state();
                    for k in cancel {
                        if let Some(e) = st.peers.get(&k) {
                            // A lost cancel only costs a duplicate block.
                            let _ = e.tx.try_send(PeerCommand::Cancel(block));
                        }
                    }
                }
                if let Some(c) = complete {
                    self.verify(c).await;
                }
                true
            }
        }
    }

    /// Queues a complete piece for hashing, waiting for a hash permit.
    /// Cancel-safe: dropped while waiting (its task aborted, a web seed
    /// killed), the piece goes back to the picker instead of staying
    /// "verifying" for ever.
    pub(super) async fn verify(self: &Arc<Engine>, c: Complete) {
        let mut waiting = Unhashed(self, Some(c));
        let Ok(permit) = self.shared.hash_permits.clone().acquire_owned().await else {
            return;
        };
        let c = waiting.1.take().expect("taken once");
        let engine = self.clone();
        self.verifying.fetch_add(1, Ordering::SeqCst);
        // Not awaited: the peer goes on reading while the piece is hashed.
        tokio::task::spawn_blocking(move || {
            let expected = engine.piece_hashes[c.piece.as_usize()];
            let ok = <[u8; 20]>::from(Sha1::digest(&*c.data)) == expected;
            let written = if ok {
                let offset = engine.geometry.piece_offset(c.piece);
                engine.storage.write_at(offset, &c.data)
            } else {
                Ok(())
            };
            drop(permit);
            engine.finish_piece(c, ok, written);
            if engine.verifying.fetch_sub(1, Ordering::SeqCst) == 1 {
                engine.verified_all.notify_waiters();
            }
        });
    }

    /// Waits until no piece is being hashed or written, so the verified
    /// set read next is final (a run ending must not lose a piece whose
    /// write is still under way).
    pub async fn settle(&self) {
        loop {
            let woken = self.verified_all.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if self.verifying.load(Ordering::SeqCst) == 0 {
                return;
            }
            woken.await;
        }
    }

    pub(super) fn finish_piece(&self, c: Complete, ok: bool, written: std::io::Result<()>) {
        let len = c.data.len() as u64;
        if let Err(source) = written {
            let piece = c.piece;
            let err = if source.raw_os_error() == Some(libc::ENOSPC) {
                EngineError::DiskFull { piece, source }
            } else {
                EngineError::Write { piece, source }
            };
            self.state().picker.piece_failed(c.piece, c.data);
            self.fail(err);
            return;
        }
        if ok {
            let mut st = self.state();
            st.picker.piece_verified(c.piece, c.data);
            st.verified_log.push(c.piece);
            let n = st.verified_log.len();
            let complete = st.picker.is_complete();
            drop(st);
            self.stats.downloaded.fetch_add(len, Ordering::Relaxed);
            self.have_count.send_replace(n);
            if complete {
                self.phase.send_if_modified(|p| {
                    if matches!(p, Phase::Running) {
                        *p = Phase::Complete;
                        true
                    } else {
                        false
                    }
                });
            }
        } else {
            self.stats.hash_failures.fetch_add(1, Ordering::Relaxed);
            self.stats.wasted.fetch_add(len, Ordering::Relaxed);
            let mut st = self.state();
            let st = &mut *st;
            st.picker.piece_failed(c.piece, c.data);
            let sole = c.contributors.len() == 1;
            // A piece an already banned address took part in is explained
            // by it: the others who shared it get no strike (otherwise an
            // honest peer sharing the liar's in-flight pieces is banned too).
            let ips: Vec<IpAddr> = c
                .contributors
                .iter()
                .filter_map(|k| st.ips.get(k).copied())
                .collect();
            let liar_known = ips.iter().any(|ip| st.banned.contains(ip));
            for ip in ips {
                if liar_known {
                    continue;
                }
                let strikes = st.strikes.entry(ip).or_insert(0);
                *strikes += if sole { 2 } else { 1 };
                if *strikes >= BAN_STRIKES && st.banned.insert(ip) {
                    tracing::warn!(%ip, "banning peer: it sent data that failed the hash check");
                    for (k, e) in st.peers.iter().filter(|(_, e)| e.ip == ip) {
                        e.kill.cancel();
                        // Its requests go to others now, not when its task ends.
                        st.picker.release_all(*k);
                    }
                }
            }
            tracing::debug!(piece = c.piece.get(), "piece failed its hash check");
        }
    }

    /// Stops the download with an error.
    pub fn fail(&self, err: EngineError) {
        tracing::debug!(error = %err, "engine failed");
        let err = Arc::new(err);
        self.phase.send_if_modified(|p| {
            if matches!(p, Phase::Running) {
                *p = Phase::Failed(err);
                true
            } else {
                false
            }
        });
        self.cancel.cancel();
    }
}

/// A complete piece not yet handed to the hasher; refetched if dropped.
struct Unhashed<'a>(&'a Engine, Option<Complete>);

impl Drop for Unhashed<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.1.take() {
            self.0.state().picker.piece_failed(c.piece, c.data);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::bencode::Dict;
    use crate::storage::MemStorage;

    const PIECE: usize = 16 * 1024;

    /// A one-piece torrent's engine with no free hash permit, and a peer
    /// that has the piece.
    fn engine_without_permits(data: &[u8]) -> (Arc<Engine>, PeerKey) {
        let mut info = Dict::new();
        info.int("length", data.len() as i64)
            .bytes("name", "x")
            .int("piece length", PIECE as i64)
            .bytes("pieces", Sha1::digest(data));
        let mut t = Dict::new();
        t.dict("info", &info);
        let torrent = Arc::new(Torrent::from_bytes(&t.finish()).unwrap());
        let n = torrent.geometry().num_pieces;
        let engine = Engine::new(Setup {
            storage: Arc::new(MemStorage::new(data.len())),
            have: Bitfield::new(n),
            wanted: Bitfield::full(n),
            config: EngineConfig::default(),
            shared: Shared {
                hash_permits: Arc::new(Semaphore::new(0)),
                ..Shared::default()
            },
            rates: Arc::new(RatePair::new(0, 0)),
            stats: Arc::new(Stats::default()),
            cancel: CancellationToken::new(),
            torrent,
        });
        let (tx, _rx) = mpsc::channel(8);
        let addr: SocketAddr = "127.0.0.2:6881".parse().unwrap();
        let key = engine
            .register(
                addr,
                PeerId([1; 20]),
                true,
                false,
                tx,
                CancellationToken::new(),
            )
            .unwrap();
        engine.on_bitfield(key, Bitfield::full(n));
        (engine, key)
    }

    #[tokio::test]
    async fn a_piece_dropped_while_waiting_for_the_hasher_is_fetched_again() {
        let data = vec![7u8; PIECE];
        let (engine, key) = engine_without_permits(&data);
        let mut picks = Vec::new();
        engine.pick(key, 8, None, &mut picks);
        assert_eq!(picks.len(), 1);
        let b = picks[0];
        {
            let piece = engine.geometry.piece(b.piece).unwrap();
            let store = engine.on_block(key, piece, b.offset, &data);
            tokio::pin!(store);
            // No permit: the piece waits for the hasher; then its task is
            // cancelled.
            assert!(futures::poll!(store.as_mut()).is_pending());
        }
        let mut again = Vec::new();
        engine.pick(key, 8, None, &mut again);
        assert_eq!(again, vec![b], "the piece is picked again");
    }
}
