//! Adding torrents, and starting stored ones: validated, recorded, then
//! launched in the session.

use super::*;

impl Daemon {
    /// Adds a torrent: validated like the CLI does, recorded, then started.
    pub(crate) async fn add(&self, req: AddRequest) -> Result<Added, DaemonError> {
        let (torrent, magnet) = match (&req.metainfo, &req.magnet) {
            (Some(b), _) => (Some(Torrent::from_bytes(b)?), None),
            (None, Some(m)) => (None, Some(Magnet::parse(m)?)),
            (None, None) => return Err(DaemonError::NoSource),
        };
        let ih = torrent
            .as_ref()
            .map(|t| t.info_hash)
            .or(magnet.as_ref().map(|m| m.info_hash))
            .expect("one of them");
        let name = torrent
            .as_ref()
            .map(|t| t.name.clone())
            .or(magnet.as_ref().and_then(|m| m.name.clone()))
            .unwrap_or_else(|| ih.to_hex());
        let _adding = self.inner.adding.lock().await;
        if let Some(e) = self.entries().into_iter().find(|e| e.info_hash() == ih) {
            return Ok(Added {
                id: e.id,
                name: e.name(),
                info_hash: ih,
                duplicate: true,
            });
        }
        let unwanted = unwanted_files(&req, torrent.as_ref().map(|t| t.files.len()))?;
        let paused = req
            .paused
            .unwrap_or(!self.settings().start_added_torrents.unwrap_or(true));
        let record = Record {
            info_hash: ih.to_hex(),
            magnet: req.magnet.clone().filter(|_| torrent.is_none()),
            download_dir: req
                .download_dir
                .clone()
                .unwrap_or_else(|| self.download_dir()),
            paused,
            added: unix_now(),
            order: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
            done: 0,
            unwanted,
            up_limit: None,
            down_limit: None,
            seed_ratio_mode: 0,
            seed_ratio: 2.0,
            labels: req.labels.clone(),
            shared_from: req.shared_from.clone(),
            uploaded_before: 0,
            downloaded_before: 0,
        };
        if !record.download_dir.is_absolute() {
            return Err(DaemonError::NotAbsolute(record.download_dir.clone()));
        }
        match &torrent {
            Some(t) => self
                .inner
                .store
                .put_with_metainfo(&record, &t.to_file_bytes())?,
            None => self.inner.store.put(&record)?,
        }
        self.update_settings(|s| s.files_added += 1)?;
        let source = match (torrent, magnet) {
            (Some(t), _) => Source::Parsed(Box::new(t)),
            (None, Some(m)) => Source::Magnet(Box::new(m)),
            (None, None) => unreachable!("checked above"),
        };
        let entry = self.launch(record, source, None).await?;
        Ok(Added {
            id: entry.id,
            name,
            info_hash: ih,
            duplicate: false,
        })
    }

    /// Brings a stored torrent back.
    pub(super) async fn restore(&self, rec: Record) -> Result<(), DaemonError> {
        let source = self.stored_source(&rec)?;
        self.launch(rec, source, None).await?;
        Ok(())
    }

    /// What to start a stored torrent from: its metainfo, else its magnet.
    pub(super) fn stored_source(&self, rec: &Record) -> Result<Source, DaemonError> {
        Ok(match self.inner.store.metainfo(&rec.info_hash)? {
            Some(bytes) => Source::Bytes(bytes),
            None => match &rec.magnet {
                Some(m) => Source::Magnet(Box::new(Magnet::parse(m)?)),
                None => return Err(DaemonError::NothingStored),
            },
        })
    }

    /// Starts a torrent's actor from its record; `reuse` keeps an id.
    pub(super) async fn launch(
        &self,
        record: Record,
        source: Source,
        reuse: Option<(u64, bool)>,
    ) -> Result<Entry, DaemonError> {
        let (reuse_id, recheck) = reuse.unwrap_or((0, false));
        let mut add = AddTorrent::new(source, record.download_dir.clone());
        add.paused = record.paused;
        add.recheck = recheck;
        add.seed = Some(self.seed_limits(&record));
        add.max_upload_rate = record.up_limit.unwrap_or(0);
        add.max_download_rate = record.down_limit.unwrap_or(0);
        add.peers = self.inner.config.peers.clone();
        if !record.unwanted.is_empty() {
            add.select = Some(wanted_ranges(&record.unwanted, self.file_count(&record)));
        }
        let handle = match self.inner.session.add(add).await {
            Ok(h) => h,
            Err(AddError::Duplicate(h)) => h,
            Err(AddError::Torrent(e)) => return Err(e.into()),
        };
        let mut list = lock(&self.inner.torrents);
        let id = if reuse_id > 0 {
            reuse_id
        } else {
            let mut n = lock(&self.inner.next_id);
            let id = *n;
            *n += 1;
            id
        };
        let entry = Entry { id, handle, record };
        match list.iter_mut().find(|e| e.id == id) {
            Some(e) => *e = entry.clone(),
            None => list.push(entry.clone()),
        }
        Ok(entry)
    }

    pub(super) fn file_count(&self, record: &Record) -> u32 {
        self.inner
            .store
            .metainfo(&record.info_hash)
            .ok()
            .flatten()
            .and_then(|b| Torrent::from_bytes(&b).ok())
            .map_or(0, |t| t.num_files())
    }

    /// The ratio at which a torrent stops seeding (`None`: never).
    pub(super) fn seed_ratio(&self, r: &Record) -> Option<f64> {
        match r.seed_ratio_mode {
            1 => Some(r.seed_ratio),
            2 => None,
            _ => {
                let s = self.settings();
                s.seed_ratio_limited
                    .unwrap_or(false)
                    .then(|| s.seed_ratio_limit.unwrap_or(2.0))
            }
        }
    }

    /// Saves a changed record.
    pub(super) fn save(&self, id: u64, f: impl FnOnce(&mut Record)) -> Result<Record, DaemonError> {
        let rec = {
            let mut list = lock(&self.inner.torrents);
            let Some(e) = list.iter_mut().find(|e| e.id == id) else {
                return Err(DaemonError::NoSuchTorrent(id));
            };
            f(&mut e.record);
            e.record.clone()
        };
        self.inner.store.put(&rec)?;
        Ok(rec)
    }

    pub(super) fn entry(&self, id: u64) -> Option<Entry> {
        lock(&self.inner.torrents)
            .iter()
            .find(|e| e.id == id)
            .cloned()
    }
}
