//! What a remote asks of a torrent: stop, start, verify, remove, file
//! selection, location, queue order, limits.

use super::*;

impl Daemon {
    pub(crate) async fn stop(&self, e: &Entry) -> Result<(), DaemonError> {
        self.save(e.id, |r| r.paused = true)?;
        e.handle.pause().await;
        Ok(())
    }

    /// Starts a paused torrent, or one whose actor ended (finished its
    /// seeding, or failed): that one is started afresh with the same id.
    pub(crate) async fn start_torrent(&self, e: &Entry) -> Result<(), DaemonError> {
        self.save(e.id, |r| r.paused = false)?;
        match e.handle.stats().stage {
            Stage::Done | Stage::Failed => self.relaunch(e.id, false).await,
            _ => {
                e.handle.resume().await;
                Ok(())
            }
        }
    }

    pub(crate) async fn verify(&self, e: &Entry) -> Result<(), DaemonError> {
        match e.handle.stats().stage {
            Stage::Done | Stage::Failed => self.relaunch(e.id, true).await,
            _ => {
                e.handle.verify().await;
                Ok(())
            }
        }
    }

    /// Stops the actor, keeps its byte counts, starts a new one.
    pub(super) async fn relaunch(&self, id: u64, recheck: bool) -> Result<(), DaemonError> {
        let Some(e) = self.entry(id) else {
            return Ok(());
        };
        let s = e.handle.stats();
        self.inner.session.forget(&e.info_hash()).await;
        self.save(id, |r| {
            r.uploaded_before += s.uploaded;
            r.downloaded_before += s.received;
        })?;
        self.relaunch_forgotten(id, recheck).await
    }

    /// Starts a new actor for a torrent whose old one is gone.
    pub(super) async fn relaunch_forgotten(
        &self,
        id: u64,
        recheck: bool,
    ) -> Result<(), DaemonError> {
        let Some(rec) = self.entry(id).map(|e| e.record) else {
            return Ok(());
        };
        let source = self.stored_source(&rec)?;
        self.launch(rec, source, Some((id, recheck))).await?;
        Ok(())
    }

    /// Removes a torrent (with `delete`, its files too). The record goes
    /// last: a crash in between brings the torrent back, never loses it
    /// silently.
    pub(crate) async fn remove(&self, e: &Entry, delete: bool) -> Result<(), DaemonError> {
        let r = self.inner.session.remove(&e.info_hash(), delete).await;
        lock(&self.inner.torrents).retain(|x| x.id != e.id);
        lock(&self.inner.removed).push((e.id, Instant::now()));
        self.inner.store.delete(&e.record.info_hash)?;
        if let Some(p) = &e.record.shared_from {
            folders::forget_shared(self, p);
        }
        r.map_err(DaemonError::from)
    }

    /// `files-wanted` / `files-unwanted`; an empty list means every file.
    pub(crate) async fn set_wanted(
        &self,
        e: &Entry,
        wanted: Option<&[u32]>,
        unwanted: Option<&[u32]>,
    ) -> Result<(), DaemonError> {
        let Some((t, _)) = e.handle.meta() else {
            return Err(DaemonError::NoMetadata);
        };
        let n = t.num_files();
        let every = |l: &[u32]| -> Vec<u32> {
            if l.is_empty() {
                (0..n).collect()
            } else {
                l.to_vec()
            }
        };
        let (w, u) = (wanted.map(every), unwanted.map(every));
        if let Some(bad) = w.iter().chain(u.iter()).flatten().find(|&&i| i >= n) {
            return Err(DaemonError::NoSuchFile {
                index: *bad,
                count: n as usize,
            });
        }
        let mut set = e.record.unwanted.clone();
        set.retain(|i| !w.as_ref().is_some_and(|w| w.contains(i)));
        set.extend(u.iter().flatten().copied());
        set.sort_unstable();
        set.dedup();
        if set.len() >= n as usize {
            return Err(DaemonError::NothingWanted);
        }
        if set == e.record.unwanted {
            return Ok(());
        }
        let sel = (!set.is_empty()).then(|| wanted_ranges(&set, n));
        e.handle.set_selection(sel).await?;
        self.save(e.id, |r| r.unwanted = set)?;
        Ok(())
    }

    /// `torrent-set-location`: the torrent's files now live in `dir`
    /// (moved there with `moving`, else looked for there).
    pub(crate) async fn set_location(
        &self,
        e: &Entry,
        dir: &std::path::Path,
        moving: bool,
    ) -> Result<(), DaemonError> {
        if dir == e.record.download_dir {
            return Ok(());
        }
        let ih = e.info_hash();
        let meta = e.handle.meta();
        let s = e.handle.stats();
        self.inner.session.forget(&ih).await;
        if let (true, Some((t, old))) = (moving, &meta) {
            std::fs::create_dir_all(dir).map_err(|source| DaemonError::Dir {
                path: dir.to_path_buf(),
                source,
            })?;
            // The torrent's top-level entries: its directory, or its file.
            let mut tops: Vec<PathBuf> = t
                .files
                .iter()
                .filter_map(|f| f.path.components().next())
                .map(|c| PathBuf::from(c.as_os_str()))
                .collect();
            tops.dedup();
            for top in tops {
                let from = old.join(&top);
                if from.symlink_metadata().is_ok() {
                    std::fs::rename(&from, dir.join(&top)).map_err(|source| DaemonError::Dir {
                        path: from.clone(),
                        source,
                    })?;
                }
            }
        }
        let dir = dir.to_path_buf();
        self.save(e.id, |r| {
            r.download_dir = dir;
            r.uploaded_before += s.uploaded;
            r.downloaded_before += s.received;
        })?;
        self.relaunch_forgotten(e.id, false).await
    }

    /// Moves torrents in the list (Transmission's queue order).
    pub(crate) fn move_in_queue(&self, ids: &[u64], how: &str) {
        let mut list = lock(&self.inner.torrents);
        let chosen = |e: &Entry| ids.contains(&e.id);
        match how {
            "top" | "bottom" => {
                let (mut picked, mut rest): (Vec<Entry>, Vec<Entry>) =
                    list.drain(..).partition(chosen);
                if how == "top" {
                    picked.append(&mut rest);
                    *list = picked;
                } else {
                    rest.append(&mut picked);
                    *list = rest;
                }
            }
            "up" => {
                for i in 1..list.len() {
                    if chosen(&list[i]) && !chosen(&list[i - 1]) {
                        list.swap(i, i - 1);
                    }
                }
            }
            _ => {
                for i in (0..list.len().saturating_sub(1)).rev() {
                    if chosen(&list[i]) && !chosen(&list[i + 1]) {
                        list.swap(i, i + 1);
                    }
                }
            }
        }
    }

    /// The torrent's own caps (bytes/s; `None`: off).
    pub(crate) fn set_limits(
        &self,
        e: &Entry,
        up: Option<Option<u64>>,
        down: Option<Option<u64>>,
    ) -> Result<(), DaemonError> {
        let rec = self.save(e.id, |r| {
            if let Some(u) = up {
                r.up_limit = u;
            }
            if let Some(d) = down {
                r.down_limit = d;
            }
        })?;
        e.handle
            .set_rate_limits(rec.up_limit.unwrap_or(0), rec.down_limit.unwrap_or(0));
        Ok(())
    }

    /// Seed ratio, labels: kept; the seed limits apply at once.
    pub(crate) async fn set_record(
        &self,
        e: &Entry,
        f: impl FnOnce(&mut Record),
    ) -> Result<(), DaemonError> {
        let rec = self.save(e.id, f)?;
        e.handle.set_seed_limits(self.seed_limits(&rec)).await;
        Ok(())
    }

    /// The session's default ratio changed: torrents that follow it learn.
    pub(crate) async fn apply_default_ratio(&self) {
        for e in self.entries() {
            if e.record.seed_ratio_mode == 0 {
                e.handle.set_seed_limits(self.seed_limits(&e.record)).await;
            }
        }
    }

    pub(super) fn seed_limits(&self, r: &Record) -> SeedLimits {
        SeedLimits {
            ratio: self.seed_ratio(r),
            time: None,
        }
    }
}
