//! The torrent's actor: its state, the command loop, pausing and the
//! end of the torrent (seed limits, final flush, removal).

use super::*;

pub(super) struct Actor {
    pub(super) session: Arc<Context>,
    pub(super) add: AddTorrent,
    pub(super) info_hash: Arc<OnceLock<InfoHash>>,
    pub(super) status: Arc<Status>,
    pub(super) rates: Arc<RatePair>,
    /// The torrent's token: cancelled on removal or session shutdown.
    pub(super) cancel: CancellationToken,
    pub(super) cmds: mpsc::Receiver<Cmd>,
    pub(super) paused: bool,
    pub(super) torrent: Option<Arc<Torrent>>,
    /// Verified pieces (after the first check).
    pub(super) have: Option<Bitfield>,
    pub(super) wanted: Option<Bitfield>,
    /// Which files storage may create (a selection).
    pub(super) create: Option<Vec<bool>>,
    pub(super) root: PathBuf,
    pub(super) started: tokio::time::Instant,
    pub(super) completed_after: Option<f64>,
    /// A verify was asked for while running.
    pub(super) recheck_next: bool,
}

/// Why a run ended.
pub(super) enum RunEnd {
    /// Complete, and no seeding asked for; or seeding limits reached.
    Finished,
    Paused(oneshot::Sender<()>),
    /// The selection changed: start again with the new wanted pieces.
    Reselect,
    Removed(bool, oneshot::Sender<Result<(), TorrentError>>),
    /// The session is stopping.
    Cancelled,
    Failed(TorrentError),
}

/// The tasks of one run.
pub(super) struct Run {
    pub(super) token: CancellationToken,
    pub(super) peers_tx: mpsc::Sender<Vec<SocketAddr>>,
    pub(super) peers_rx: Option<mpsc::Receiver<Vec<SocketAddr>>>,
    pub(super) engine: Arc<Mutex<Option<Arc<Engine>>>>,
    pub(super) complete_tx: watch::Sender<bool>,
    pub(super) announcer: Option<tokio::task::JoinHandle<()>>,
    pub(super) announcer_stop: CancellationToken,
    pub(super) tasks: Vec<tokio::task::JoinHandle<()>>,
    /// A magnet's swarm started in the metadata phase waits here for the
    /// engine; kept open for the whole run.
    pub(super) engine_tx: Option<watch::Sender<Option<Arc<Engine>>>>,
}

impl Actor {
    pub(super) async fn run(mut self) -> Result<Report, TorrentError> {
        self.paused = self.add.paused;
        self.status.set_stage(Stage::Loading);
        // Fail fast on a bad .torrent, before anything touches the disk.
        self.load_torrent().await?;
        if self.paused {
            self.preview_resume().await;
        }
        loop {
            if self.paused {
                self.status.set_stage(Stage::Paused);
                if let Some(end) = self.wait_paused().await {
                    return self.finish_end(end).await;
                }
            }
            let end = self.run_once().await;
            match end {
                RunEnd::Paused(reply) => {
                    self.paused = true;
                    self.status.set_stage(Stage::Paused);
                    let _ = reply.send(());
                }
                RunEnd::Reselect => {
                    if std::mem::take(&mut self.recheck_next) {
                        self.forget_verified();
                    }
                }
                other => return self.finish_end(other).await,
            }
        }
    }

    /// While paused: waits for resume, removal or shutdown.
    pub(super) async fn wait_paused(&mut self) -> Option<RunEnd> {
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return Some(RunEnd::Cancelled),
                c = self.cmds.recv() => match c {
                    Some(Cmd::Resume) => { self.paused = false; return None; }
                    Some(Cmd::Pause(r)) => { let _ = r.send(()); }
                    Some(Cmd::Select(s, r)) => { let _ = r.send(self.apply_selection(s)); }
                    Some(Cmd::Remove(d, r)) => return Some(RunEnd::Removed(d, r)),
                    Some(Cmd::Verify) => self.forget_verified(),
                    Some(Cmd::SeedLimits(l)) => self.add.seed = Some(l),
                    None => return Some(RunEnd::Cancelled),
                },
            }
        }
    }

    /// The next start hashes everything (`torrent-verify`).
    pub(super) fn forget_verified(&mut self) {
        self.have = None;
        self.add.recheck = true;
    }

    pub(super) async fn finish_end(self, end: RunEnd) -> Result<Report, TorrentError> {
        match end {
            RunEnd::Finished => Ok(self.report()),
            RunEnd::Cancelled => {
                if let (Some(t), Some(h)) = (&self.torrent, &self.have) {
                    let wanted = self
                        .wanted
                        .clone()
                        .unwrap_or_else(|| Bitfield::full(t.num_pieces()));
                    let done = wanted.count_common(h);
                    if done == wanted.count() {
                        return Ok(self.report());
                    }
                    return Err(TorrentError::Interrupted {
                        have: done,
                        total: wanted.count(),
                    });
                }
                if matches!(self.add.source, Source::Magnet(_)) && self.torrent.is_none() {
                    return Err(TorrentError::MetadataInterrupted);
                }
                Err(TorrentError::Interrupted { have: 0, total: 0 })
            }
            RunEnd::Removed(delete, reply) => {
                let r = self.delete(delete).await;
                self.status.set_stage(Stage::Done);
                let _ = reply.send(r);
                Err(TorrentError::Removed)
            }
            RunEnd::Failed(e) => {
                self.status.set_stage(Stage::Failed);
                Err(e)
            }
            RunEnd::Paused(_) | RunEnd::Reselect => unreachable!("handled by the loop"),
        }
    }

    pub(super) fn report(&self) -> Report {
        let st = &self.status.stats;
        let engine = lock(&self.status.engine).clone();
        let t = self.torrent.as_deref();
        let total = match (&self.wanted, t) {
            (Some(w), Some(t)) => select::piece_bytes(t, w),
            (None, Some(t)) => t.total_length,
            _ => 0,
        };
        Report {
            name: t.map(|t| t.name.clone()).unwrap_or_default(),
            info_hash: self.info_hash.get().map(|h| h.to_hex()).unwrap_or_default(),
            total_bytes: total,
            torrent_bytes: t.map_or(0, |t| t.total_length),
            downloaded: st.downloaded.load(Ordering::Relaxed),
            resumed: st.resumed.load(Ordering::Relaxed),
            received: st.received.load(Ordering::Relaxed),
            wasted: st.wasted.load(Ordering::Relaxed),
            hash_failures: st.hash_failures.load(Ordering::Relaxed),
            uploaded: st.uploaded.load(Ordering::Relaxed),
            completed_after: self.completed_after,
            peers: engine
                .as_ref()
                .map(|e| e.contributions())
                .unwrap_or_default(),
            banned: engine.as_ref().map(|e| e.banned()).unwrap_or_default(),
            check: self.status.check_report(),
        }
    }

    /// Reads the metainfo (or a magnet's cached metadata).
    pub(super) async fn load_torrent(&mut self) -> Result<(), TorrentError> {
        let t = match &self.add.source {
            Source::File(path) => {
                let p = path.clone();
                Some(
                    tokio::task::spawn_blocking(move || Torrent::from_file(&p))
                        .await
                        .map_err(TorrentError::Task)??,
                )
            }
            Source::Bytes(b) => Some(Torrent::from_bytes(b)?),
            Source::Parsed(t) => Some((**t).clone()),
            Source::Magnet(m) => {
                let name = m.name.clone().unwrap_or_else(|| m.info_hash.to_hex());
                let _ = self
                    .status
                    .metadata
                    .set((name, Arc::new(FetchStatus::default())));
                self.metadata_cache().and_then(|p| cached_metadata(&p, m))
            }
        };
        if let Some(t) = t {
            self.set_torrent(t)?;
        }
        Ok(())
    }

    /// A torrent that starts paused shows the progress its resume record
    /// vouches for, without hashing anything (the check runs on resume).
    pub(super) async fn preview_resume(&self) {
        let (Some(t), Some(path)) = (self.torrent.clone(), self.resume_path()) else {
            return;
        };
        let root = self.root.clone();
        let judged = tokio::task::spawn_blocking(move || {
            let rec = resume::load(&path).ok().flatten()?;
            let stamps = resume::stamp_files(&root, &t);
            let mut trust = resume::trusted(&rec, &t, &root, &stamps).ok()?;
            resume::drop_holes(&root, &t, &mut trust.have, &mut trust.recheck);
            let geo = t.geometry();
            let bytes: u64 = trust
                .have
                .iter_ones()
                .map(|p| u64::from(geo.piece_size(p)))
                .sum();
            Some((trust.have, bytes))
        })
        .await;
        if let Ok(Some((have, bytes))) = judged {
            self.status.stats.resumed.store(bytes, Ordering::Relaxed);
            self.status.set_have_view(&have);
        }
    }

    pub(super) fn metadata_cache(&self) -> Option<PathBuf> {
        let ih = self.info_hash.get()?;
        let dir = self.session.config.state_dir.as_ref()?;
        Some(
            dir.join("metadata")
                .join(format!("{}.torrent", ih.to_hex())),
        )
    }

    /// One task per distinct web seed of the torrent and of its magnet.
    pub(super) fn start_web_seeds(&self, run: &mut Run, engine: &Arc<Engine>, t: &Arc<Torrent>) {
        let mut bases: Vec<String> = t.web_seeds.clone();
        if let Source::Magnet(m) = &self.add.source {
            bases.extend(m.web_seeds.iter().cloned());
        }
        let mut seen = std::collections::HashSet::new();
        bases.retain(|b| seen.insert(b.clone()));
        if bases.is_empty() {
            return;
        }
        let http = crate::webseed::client(self.session.config.bind);
        for base in bases.into_iter().take(MAX_WEB_SEEDS) {
            let (engine, t, http, token) =
                (engine.clone(), t.clone(), http.clone(), run.token.clone());
            run.tasks.push(tokio::spawn(async move {
                if let Err(e) = crate::webseed::run(engine, t, base.clone(), http, token).await {
                    tracing::warn!("web seed {base} dropped: {e}");
                }
            }));
        }
    }

    /// A resume record says an earlier run downloaded into this root.
    pub(super) fn wrote_here(&self) -> bool {
        self.resume_path()
            .and_then(|p| resume::load(&p).ok().flatten())
            .is_some_and(|r| r.is_for(&self.root))
    }

    pub(super) fn resume_path(&self) -> Option<PathBuf> {
        let ih = self.info_hash.get()?;
        let dir = self.session.config.state_dir.as_ref()?;
        Some(dir.join("resume").join(format!("{}.resume", ih.to_hex())))
    }

    /// Adopts the metainfo: checks the selection (a bad index is an error
    /// before anything is written) and saves `--save-torrent`.
    pub(super) fn set_torrent(&mut self, t: Torrent) -> Result<(), TorrentError> {
        let _ = self.info_hash.set(t.info_hash);
        self.session.registry.reserve(t.info_hash);
        if let Some(path) = &self.add.save_torrent {
            save_torrent(&t, path)?;
        }
        self.root = self.add.output.clone();
        let t = Arc::new(t);
        self.torrent = Some(t.clone());
        *lock(&self.status.meta) = Some((t.clone(), self.root.clone(), self.resume_path()));
        let sel = self.add.select.clone();
        self.apply_selection(sel)?;
        let wanted = self.wanted.as_ref().expect("set by apply_selection");
        *lock(&self.status.torrent) = Some((
            t.name.clone(),
            select::piece_bytes(&t, wanted),
            t.num_pieces(),
        ));
        Ok(())
    }

    pub(super) fn apply_selection(
        &mut self,
        sel: Option<Vec<RangeInclusive<u32>>>,
    ) -> Result<(), TorrentError> {
        let Some(t) = &self.torrent else {
            self.add.select = sel;
            return Ok(());
        };
        let (wanted, create) = match &sel {
            Some(ranges) => {
                let files = select::select_files(t, ranges)?;
                let wanted = select::wanted_pieces(t, &files);
                let create = select::files_to_create(t, &files, &wanted);
                (wanted, Some(create))
            }
            None => (Bitfield::full(t.num_pieces()), None),
        };
        *lock(&self.status.torrent) = Some((
            t.name.clone(),
            select::piece_bytes(t, &wanted),
            t.num_pieces(),
        ));
        self.add.select = sel;
        self.wanted = Some(wanted);
        self.create = create;
        Ok(())
    }

    /// One run: from start (or resume) until pause, completion, removal,
    /// failure or shutdown.
    pub(super) fn has_seed_limits(&self) -> bool {
        self.add
            .seed
            .is_some_and(|l| l.ratio.is_some() || l.time.is_some())
    }

    pub(super) fn seed_limits_reached(
        &self,
        engine: &Engine,
        since: Option<tokio::time::Instant>,
    ) -> bool {
        let Some(limits) = self.add.seed else {
            return false;
        };
        if let Some(r) = limits.ratio {
            let total = engine.wanted_bytes();
            if engine.stats.uploaded.load(Ordering::Relaxed) as f64 >= r * total as f64 {
                return true;
            }
        }
        limits
            .time
            .zip(since)
            .is_some_and(|(t, s)| s.elapsed() >= t)
    }

    pub(super) async fn finish_storage(
        &self,
        storage: &Arc<FileStorage>,
    ) -> Result<(), TorrentError> {
        self.status.set_stage(Stage::Finishing);
        let s = storage.clone();
        tokio::task::spawn_blocking(move || s.finish())
            .await
            .map_err(TorrentError::Task)?
            .map_err(|source| TorrentError::Storage {
                path: self.root.clone(),
                source,
            })
    }

    /// Writes the resume record: the verified pieces, made durable first.
    pub(super) async fn flush_resume(&self) {
        let (Some(path), Some(t), Some(have)) = (self.resume_path(), &self.torrent, &self.have)
        else {
            return;
        };
        if self.add.seed_only && have.count() < t.num_pieces() {
            return;
        }
        let (t, have, root) = (t.clone(), have.clone(), self.root.clone());
        let wanted = self.wanted.clone();
        let create = self.create.clone();
        let writable = !self.add.seed_only;
        let r = tokio::task::spawn_blocking(
            move || -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
                // Durable data before the record that vouches for it.
                if writable {
                    sync_files(&root, &t, create.as_deref())?;
                }
                let stamps = resume::stamp_files(&root, &t);
                let completed = wanted.is_some_and(|w| w.iter_ones().all(|p| have.get(p)));
                let rec = resume::ResumeRecord::new(&t, &root, &have, stamps, completed);
                resume::save(&path, &rec)?;
                Ok(())
            },
        )
        .await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("cannot save the resume record: {e}"),
            Err(e) => tracing::warn!("cannot save the resume record: {e}"),
        }
    }

    /// Removal: the resume record goes; with `delete`, the torrent's own
    /// files too (never anything outside its directory).
    pub(super) async fn delete(&self, delete: bool) -> Result<(), TorrentError> {
        if let Some(p) = self.resume_path() {
            let _ = std::fs::remove_file(p);
        }
        let Some(t) = self.torrent.clone() else {
            return Ok(());
        };
        remove_files(t, self.root.clone(), None, delete).await
    }
}

mod check;
mod run;
