//! One run of the actor: metadata, storage and check (in `check`), then
//! the engine with its swarm, announcer, DHT lookups and web seeds.

use super::*;

impl Actor {
    pub(super) async fn run_once(&mut self) -> RunEnd {
        let mut run = self.start_run();
        if self.torrent.is_none() {
            if let Some(end) = self.fetch_metadata(&mut run).await {
                self.stop_run(run).await;
                return end;
            }
        }
        let end = self.run_engine(&mut run).await;
        self.stop_run(run).await;
        end
    }

    pub(super) fn start_run(&mut self) -> Run {
        let token = self.cancel.child_token();
        let (peers_tx, peers_rx) = mpsc::channel(64);
        let mut run = Run {
            token,
            peers_tx,
            peers_rx: Some(peers_rx),
            engine: Arc::new(Mutex::new(None)),
            complete_tx: watch::channel(false).0,
            announcer: None,
            announcer_stop: CancellationToken::new(),
            tasks: Vec::new(),
            engine_tx: None,
        };
        let (ih, private, nodes) = match (&self.torrent, &self.add.source) {
            (Some(t), _) => (t.info_hash, t.private, t.nodes.clone()),
            (None, Source::Magnet(m)) => (m.info_hash, false, Vec::new()),
            (None, _) => unreachable!("only a magnet starts without its metainfo"),
        };
        if let (Some(dht), false) = (&self.session.dht, private) {
            run.tasks.push(tokio::spawn(dht_lookups(
                dht.clone(),
                ih,
                nodes,
                self.session.listen_port,
                run.peers_tx.clone(),
                run.token.clone(),
            )));
        }
        // A magnet announces while it fetches the metadata (`left` a
        // placeholder); a torrent whose size is known waits for its engine.
        if let (None, Source::Magnet(m)) = (&self.torrent, &self.add.source) {
            let trackers = m.trackers.iter().map(|t| vec![t.clone()]).collect();
            self.announce(&mut run, ih, trackers);
        }
        let mut direct = self.add.peers.clone();
        if let Source::Magnet(m) = &self.add.source {
            direct.extend(m.peer_addrs());
        }
        if !direct.is_empty() {
            let _ = run.peers_tx.try_send(direct);
        }
        if let Source::Magnet(m) = &self.add.source {
            // x.pe= may name hosts: resolved in the background.
            let hosts: Vec<String> = m
                .peers
                .iter()
                .filter(|p| p.parse::<SocketAddr>().is_err())
                .cloned()
                .collect();
            let tx = run.peers_tx.clone();
            run.tasks.push(tokio::spawn(async move {
                for h in hosts {
                    let found = tokio::time::timeout(
                        Duration::from_secs(10),
                        tokio::net::lookup_host(h.clone()),
                    )
                    .await;
                    match found {
                        Ok(Ok(addrs)) => {
                            let _ = tx.send(addrs.collect()).await;
                        }
                        _ => tracing::warn!(peer = %h, "cannot resolve magnet peer"),
                    }
                }
            }));
        }
        run
    }

    pub(super) fn announce(&self, run: &mut Run, info_hash: InfoHash, trackers: Vec<Vec<String>>) {
        if trackers.is_empty() {
            return;
        }
        let slot = run.engine.clone();
        let totals = Arc::new(move || match lock(&slot).as_ref() {
            Some(e) => Totals {
                uploaded: e.stats.uploaded.load(Ordering::Relaxed),
                downloaded: e.stats.downloaded.load(Ordering::Relaxed),
                left: e.left(),
            },
            None => Totals {
                uploaded: 0,
                downloaded: 0,
                left: UNKNOWN_LEFT,
            },
        });
        let cfg = &self.session.config;
        let acfg = AnnounceConfig {
            info_hash,
            peer_id: self.session.peer_id,
            port: self.session.listen_port,
            numwant: cfg.numwant,
            timeout: cfg.tracker_timeout,
            udp_retries: cfg.udp_retries,
            bind: cfg.bind,
            peers: run.peers_tx.clone(),
            totals,
            complete: run.complete_tx.subscribe(),
            on_announce: {
                let status = self.status.clone();
                Arc::new(move |r| status.set_announce(r))
            },
            encryption: cfg.engine.encryption,
        };
        run.announcer = Some(tokio::spawn(tracker::run_announcer(
            Tiers::new(trackers),
            acfg,
            run.announcer_stop.clone(),
        )));
    }

    /// Peers first, then the announcer's `completed`/`stopped`.
    pub(super) async fn stop_run(&mut self, run: Run) {
        run.token.cancel();
        if let Some(ih) = self.info_hash.get() {
            self.session.registry.remove(ih);
        }
        for t in run.tasks {
            let _ = t.await;
        }
        run.announcer_stop.cancel();
        if let Some(a) = run.announcer {
            let _ = tokio::time::timeout(STOP_ANNOUNCE, a).await;
        }
        let engine = lock(&run.engine).take();
        if let Some(e) = engine {
            // Pieces still being written become part of what is kept.
            let _ = tokio::time::timeout(Duration::from_secs(30), e.settle()).await;
            if let Some(h) = &mut self.have {
                *h = e.have_bitfield();
            }
        }
        if let Some(h) = &self.have {
            self.status.set_have_view(h);
        }
        self.flush_resume().await;
    }

    /// Fetches a magnet's info dictionary on the run's peer channel.
    pub(super) async fn fetch_metadata(&mut self, run: &mut Run) -> Option<RunEnd> {
        let Source::Magnet(m) = &self.add.source else {
            return None;
        };
        let m = m.clone();
        self.status.set_stage(Stage::Metadata);
        let fstatus = self
            .status
            .metadata
            .get()
            .map(|(_, f)| f.clone())
            .unwrap_or_default();
        let phase = MetadataPhase::new(
            m.info_hash,
            self.session.config.engine.clone(),
            self.session.dht.is_some(),
            fstatus,
        );
        // The swarm outlives the phase: its connections go on downloading.
        let (engine_tx, engine_rx) = watch::channel(None);
        run.engine_tx = Some(engine_tx);
        run.tasks.push(tokio::spawn(swarm::run_magnet(
            phase.clone(),
            engine_rx,
            self.session.limits.clone(),
            run.peers_rx.take().expect("a fresh run"),
            run.token.clone(),
        )));
        let info = loop {
            tokio::select! {
                info = phase.done() => break info,
                _ = run.token.cancelled() => return Some(RunEnd::Cancelled),
                c = self.cmds.recv() => match c {
                    Some(Cmd::Pause(r)) => return Some(RunEnd::Paused(r)),
                    Some(Cmd::Remove(d, r)) => return Some(RunEnd::Removed(d, r)),
                    Some(Cmd::Select(s, r)) => { let _ = r.send(self.apply_selection(s)); }
                    Some(Cmd::SeedLimits(l)) => self.add.seed = Some(l),
                    Some(Cmd::Resume | Cmd::Verify) => {}
                    None => return Some(RunEnd::Cancelled),
                },
            }
        };
        let mut t = match Torrent::from_info_bytes(&info) {
            Ok(t) => t,
            Err(e) => return Some(RunEnd::Failed(e.into())),
        };
        if t.info_hash != m.info_hash {
            return Some(RunEnd::Failed(TorrentError::MetadataMismatch));
        }
        t.trackers = m.trackers.iter().map(|u| vec![u.clone()]).collect();
        t.web_seeds.clone_from(&m.web_seeds);
        if let Some(p) = self.metadata_cache() {
            // Only a convenience: a failure costs a re-fetch.
            let saved = std::fs::create_dir_all(p.parent().unwrap_or(&p))
                .map_err(|source| TorrentError::SaveTorrent {
                    path: p.clone(),
                    source,
                })
                .and_then(|()| save_torrent(&t, &p));
            if let Err(e) = saved {
                tracing::debug!("metadata not cached: {e}");
            }
        }
        if let Err(e) = self.set_torrent(t) {
            return Some(RunEnd::Failed(e));
        }
        None
    }

    /// Runs the engine until the run ends.
    pub(super) async fn run_engine(&mut self, run: &mut Run) -> RunEnd {
        let storage = match self.prepare(run).await {
            Ok(s) => s,
            Err(e) => return e,
        };
        let (engine, was_complete) = self.start_engine(run, &storage);
        let mut phase = engine.phase();
        let mut flush = tokio::time::interval(self.session.config.resume_every);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        flush.tick().await;
        let mut flushed_at = engine.have_count();
        let mut seed_since: Option<tokio::time::Instant> =
            was_complete.then(tokio::time::Instant::now);
        let mut seed_tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            let p = phase.borrow_and_update().clone();
            match p {
                Phase::Complete if seed_since.is_none() => {
                    if let Err(e) = self.finish_storage(&storage).await {
                        return RunEnd::Failed(e);
                    }
                    if self.completed_after.is_none() {
                        self.completed_after = Some(self.started.elapsed().as_secs_f64());
                    }
                    self.have = Some(engine.have_bitfield());
                    self.flush_resume().await;
                    let _ = run.complete_tx.send(true);
                    if self.add.seed.is_none() && !self.add.seed_only {
                        self.status.set_stage(Stage::Done);
                        return RunEnd::Finished;
                    }
                    self.status.set_stage(Stage::Seeding);
                    seed_since = Some(tokio::time::Instant::now());
                }
                Phase::Complete
                    if was_complete && self.add.seed.is_none() && !self.add.seed_only =>
                {
                    self.status.set_stage(Stage::Done);
                    return RunEnd::Finished;
                }
                Phase::Failed(e) => {
                    *lock(&self.status.error) = Some(Arc::new(TorrentError::Engine(e.clone())));
                    return RunEnd::Failed(TorrentError::Engine(e));
                }
                _ => {}
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return RunEnd::Cancelled,
                r = phase.changed() => if r.is_err() { return RunEnd::Cancelled },
                c = self.cmds.recv() => if let Some(end) = self.on_command(c) {
                    return end;
                },
                // Only while pieces arrive: an idle seed costs no wake-ups.
                _ = flush.tick(), if seed_since.is_none() => {
                    let n = engine.have_count();
                    if n != flushed_at {
                        flushed_at = n;
                        self.have = Some(engine.have_bitfield());
                        self.flush_resume().await;
                    }
                }
                _ = seed_tick.tick(), if seed_since.is_some() && self.has_seed_limits() => {
                    if self.seed_limits_reached(&engine, seed_since) {
                        return RunEnd::Finished;
                    }
                }
            }
        }
    }

    /// A command while the engine runs; `Some` ends the run.
    fn on_command(&mut self, c: Option<Cmd>) -> Option<RunEnd> {
        match c {
            Some(Cmd::Pause(r)) => Some(RunEnd::Paused(r)),
            Some(Cmd::Remove(d, r)) => Some(RunEnd::Removed(d, r)),
            Some(Cmd::Select(s, r)) => {
                let res = self.apply_selection(s);
                let ok = res.is_ok();
                let _ = r.send(res);
                ok.then_some(RunEnd::Reselect)
            }
            Some(Cmd::Resume) => None,
            // Checked on the next seed tick.
            Some(Cmd::SeedLimits(l)) => {
                self.add.seed = Some(l);
                None
            }
            // Pieces in flight settle first, then all is hashed.
            Some(Cmd::Verify) => {
                self.recheck_next = true;
                Some(RunEnd::Reselect)
            }
            None => Some(RunEnd::Cancelled),
        }
    }

    /// The run's engine and the tasks around it (swarm, web seeds,
    /// choker, announcer); whether the torrent was complete at the start.
    fn start_engine(&mut self, run: &mut Run, storage: &Arc<FileStorage>) -> (Arc<Engine>, bool) {
        let t = self.torrent.clone().expect("metainfo known");
        let have = self.have.clone().expect("checked");
        let wanted = self.wanted.clone().expect("selection applied");
        let mut config = self.session.config.engine.clone();
        config.connect_when_complete = self.add.seed.is_some() || self.add.seed_only;
        let engine = Engine::new(Setup {
            torrent: t.clone(),
            storage: storage.clone() as Arc<dyn Storage>,
            have,
            wanted,
            config,
            shared: self.session.shared.clone(),
            rates: self.rates.clone(),
            stats: self.status.stats.clone(),
            cancel: run.token.clone(),
        });
        let was_complete = engine.is_complete();
        *lock(&run.engine) = Some(engine.clone());
        *lock(&self.status.engine) = Some(engine.clone());
        self.status.set_stage(if was_complete {
            Stage::Seeding
        } else {
            Stage::Downloading
        });
        if let (Some(dht), Some(pings), false) =
            (&self.session.dht, &self.session.dht_pings, t.private)
        {
            // Before any peer connects, so handshakes carry the DHT bit.
            let _ = engine.dht.set((dht.local_addr().port(), pings.clone()));
        }
        if !t.private {
            let _ = engine.pex.set(run.peers_tx.clone());
        }
        match &run.engine_tx {
            // The magnet's swarm hands its connections over.
            Some(tx) => {
                tx.send_replace(Some(engine.clone()));
            }
            None => {
                let rx = run.peers_rx.take().expect("taken once a run");
                run.tasks.push(tokio::spawn(swarm::run(
                    engine.clone(),
                    self.session.limits.clone(),
                    rx,
                    Vec::new(),
                    run.token.clone(),
                )));
            }
        }
        if self.add.web_seeds && !was_complete {
            self.start_web_seeds(run, &engine, &t);
        }
        run.tasks
            .push(tokio::spawn(engine.clone().run_choker(run.token.clone())));
        self.session.registry.add(engine.clone(), run.token.clone());
        run.complete_tx.send_replace(was_complete);
        if run.announcer.is_none() {
            self.announce(run, t.info_hash, t.trackers.clone());
        }
        (engine, was_complete)
    }
}

/// Looks the torrent up on the DHT (announcing our listen port) now, again
/// after 5 minutes, then every 15; found peers go to the swarm. The
/// torrent's own `nodes` are pinged first, so they can join our table.
pub(super) async fn dht_lookups(
    dht: crate::dht::node::Dht,
    info_hash: InfoHash,
    nodes: Vec<(String, u16)>,
    listen_port: u16,
    peers: mpsc::Sender<Vec<SocketAddr>>,
    cancel: CancellationToken,
) {
    for (host, port) in nodes.iter().take(16) {
        if let Ok(mut addrs) = tokio::net::lookup_host((host.as_str(), *port)).await {
            if let Some(a) = addrs.find(|a| a.is_ipv4()) {
                dht.ping(a).await;
            }
        }
    }
    // implied_port when the DHT shares the peer port: right behind a NAT.
    let announce = if dht.local_addr().port() == listen_port {
        0
    } else {
        listen_port
    };
    let mut wait = DHT_FIRST_AGAIN;
    loop {
        let (mut found, done) = dht.get_peers(info_hash, Some(announce)).await;
        let mut total = 0;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                p = found.recv() => match p {
                    Some(p) => {
                        total += p.len();
                        let _ = peers.send(p).await;
                    }
                    None => break,
                },
            }
        }
        if let Ok(stats) = done.await {
            tracing::info!(
                peers = total,
                queries = stats.queries,
                announced = stats.announced,
                "DHT lookup done"
            );
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = DHT_EVERY;
    }
}
