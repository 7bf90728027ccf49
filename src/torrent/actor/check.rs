//! The start-up check of a run: storage opened (read-only first when the
//! files are not ours), the fast-resume record judged, and the rest of
//! what is on disk hashed under the session's hashing budget.

use super::*;

impl Actor {
    /// Opens the storage and, on the first run, checks what is on disk.
    pub(super) async fn prepare(&mut self, run: &Run) -> Result<Arc<FileStorage>, RunEnd> {
        let t = self.torrent.clone().expect("metainfo known");
        let complete_have = self
            .have
            .as_ref()
            .zip(self.wanted.as_ref())
            .is_some_and(|(h, w)| w.iter_ones().all(|p| h.get(p)));
        let writable = !self.add.seed_only && !complete_have;
        // Files we did not write are looked at read-only first: opening
        // them for writing already sets their length.
        let guard = writable && self.have.is_none() && !self.add.overwrite && !self.wrote_here();
        let mut storage = open_storage(&t, &self.root, writable && !guard, self.create.clone())
            .await
            .map_err(RunEnd::Failed)?;
        if self.have.is_none() {
            let have = self.check(&t, &storage, &run.token).await?;
            if guard {
                if let Some(path) = unrelated_file(&t, &storage, &have) {
                    return Err(RunEnd::Failed(TorrentError::Unrelated { path }));
                }
                storage = open_storage(&t, &self.root, true, self.create.clone())
                    .await
                    .map_err(RunEnd::Failed)?;
            }
            if self.add.seed_only {
                let bad = t.num_pieces() - have.count();
                if bad > 0 {
                    return Err(RunEnd::Failed(TorrentError::BadData {
                        bad,
                        total: t.num_pieces(),
                        path: self.root.join(
                            t.files[0]
                                .path
                                .components()
                                .next()
                                .map_or(PathBuf::new(), |c| PathBuf::from(c.as_os_str())),
                        ),
                    }));
                }
            }
            let geo = t.geometry();
            let resumed: u64 = have.iter_ones().map(|p| u64::from(geo.piece_size(p))).sum();
            self.status.stats.resumed.store(resumed, Ordering::Relaxed);
            self.status.set_have_view(&have);
            self.have = Some(have);
            if self.status.check_report().is_some_and(|c| c.hashed > 0) {
                // What was just hashed is kept at once: a crash before the
                // next flush must not cost the same hashing again.
                self.flush_resume().await;
            }
        }
        Ok(storage)
    }

    /// Fast resume: pieces the record vouches for (files unchanged, no
    /// holes) are trusted; the rest of what is on disk is hashed.
    async fn check(
        &mut self,
        t: &Arc<Torrent>,
        storage: &Arc<FileStorage>,
        cancel: &CancellationToken,
    ) -> Result<Bitfield, RunEnd> {
        let started = Instant::now();
        let n = t.num_pieces();
        let mut trusted = Bitfield::new(n);
        let mut only: Option<Bitfield> = None;
        let record = match (&self.resume_path(), self.add.recheck) {
            (Some(p), false) => match resume::load(p) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("resume record ignored: {e}");
                    None
                }
            },
            _ => None,
        };
        if let Some(rec) = record {
            let (t2, root) = (t.clone(), self.root.clone());
            let judged = tokio::task::spawn_blocking(move || {
                let stamps = resume::stamp_files(&root, &t2);
                resume::trusted(&rec, &t2, &root, &stamps).map(|mut trust| {
                    resume::drop_holes(&root, &t2, &mut trust.have, &mut trust.recheck);
                    trust
                })
            })
            .await
            .map_err(|e| RunEnd::Failed(TorrentError::Task(e)))?;
            match judged {
                Ok(trust) => {
                    trusted = trust.have;
                    only = Some(trust.recheck);
                }
                Err(why) => tracing::warn!("resume record ignored: {why}"),
            }
        }
        let need_hash = match &only {
            Some(o) => o.count() > 0,
            None => storage.has_existing_data(),
        };
        let mut have = trusted;
        let mut hashed = 0;
        if need_hash {
            hashed = only.as_ref().map_or(n, |o| o.count());
            let found = self.hash_check(t, storage, cancel, only).await?;
            for p in found.iter_ones() {
                have.set(p);
            }
        }
        let report = CheckReport {
            fast: have.count() > 0 && hashed < n,
            hashed,
            secs: started.elapsed().as_secs_f64(),
        };
        tracing::debug!(
            torrent = %t.name,
            hashed,
            verified = have.count(),
            secs = report.secs,
            "start-up check"
        );
        *lock(&self.status.check) = Some(report);
        Ok(have)
    }

    async fn hash_check(
        &self,
        t: &Arc<Torrent>,
        storage: &Arc<FileStorage>,
        cancel: &CancellationToken,
        only: Option<Bitfield>,
    ) -> Result<Bitfield, RunEnd> {
        let geo = t.geometry();
        self.status.set_stage(Stage::Checking);
        let total = match &only {
            Some(o) => o.iter_ones().map(|p| u64::from(geo.piece_size(p))).sum(),
            None => geo.total_len,
        };
        self.status.check_total.store(total, Ordering::Relaxed);
        self.status.check_done.store(0, Ordering::Relaxed);
        let (st, t, s) = (self.status.clone(), t.clone(), storage.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let threads = self.session.config.engine.hash_workers;
        // The session's hashing budget: one check at a time per permit.
        let permits = self.session.shared.hash_permits.clone();
        let _permit = tokio::select! {
            p = permits.acquire_owned() => p.ok(),
            _ = cancel.cancelled() => return Err(RunEnd::Cancelled),
        };
        let check = tokio::task::spawn_blocking(move || {
            checker::check(
                &*s,
                geo,
                &t.piece_hashes,
                threads,
                &st.check_done,
                &stop2,
                only.as_ref(),
            )
        });
        tokio::select! {
            h = check => h.map_err(|e| RunEnd::Failed(TorrentError::Task(e))),
            _ = cancel.cancelled() => {
                stop.store(true, Ordering::Relaxed);
                Err(RunEnd::Cancelled)
            }
        }
    }
}
