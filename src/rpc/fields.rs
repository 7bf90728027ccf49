//! `torrent-get` fields, with Transmission's names and JSON types:
//! integers as integers, `wanted` as 0/1, ratios as doubles, -1 for
//! "not available". Expensive parts (peers, pieces, per-file progress)
//! are computed only for a request that names them.

use std::sync::Arc;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::daemon::{unix_now, Daemon, Entry};
use crate::engine::PeerInfo;
use crate::magnet::Magnet;
use crate::metainfo::{FileKind, Torrent as Meta};
use crate::torrent::{Snapshot, Stage};
use crate::types::Bitfield;

/// Transmission's `tr_torrent_activity`.
pub(crate) fn status_code(stage: Stage) -> i64 {
    match stage {
        Stage::Paused | Stage::Done | Stage::Failed => 0,
        Stage::Loading => 1,
        Stage::Checking => 2,
        Stage::Metadata | Stage::Downloading | Stage::Finishing => 4,
        Stage::Seeding => 6,
    }
}

/// What every torrent of one request shares.
pub(crate) struct Context<'a> {
    daemon: &'a Daemon,
    queue: &'a [u64],
    now: u64,
}

impl<'a> Context<'a> {
    pub(crate) fn new(daemon: &'a Daemon, queue: &'a [u64]) -> Context<'a> {
        Context {
            daemon,
            queue,
            now: unix_now(),
        }
    }
}

/// One torrent's answer, computed as fields are asked for.
pub(crate) struct Torrent<'a> {
    ctx: &'a Context<'a>,
    e: &'a Entry,
    snap: Snapshot,
    meta: Option<Arc<Meta>>,
    pieces: Option<Option<Bitfield>>,
    peers: Option<Vec<PeerInfo>>,
    file_done: Option<Vec<u64>>,
}

impl<'a> Torrent<'a> {
    pub(crate) fn new(ctx: &'a Context<'a>, e: &'a Entry) -> Torrent<'a> {
        Torrent {
            ctx,
            e,
            snap: e.handle.stats(),
            meta: e.handle.meta().map(|(t, _)| t),
            pieces: None,
            peers: None,
            file_done: None,
        }
    }

    fn pieces(&mut self) -> Option<&Bitfield> {
        if self.pieces.is_none() {
            self.pieces = Some(self.e.handle.pieces());
        }
        self.pieces.as_ref().and_then(|p| p.as_ref())
    }

    fn peers(&mut self) -> &[PeerInfo] {
        if self.peers.is_none() {
            self.peers = Some(self.e.handle.peers());
        }
        self.peers.as_deref().unwrap_or_default()
    }

    /// Verified bytes of each file.
    fn file_done(&mut self) -> Vec<u64> {
        if let Some(f) = &self.file_done {
            return f.clone();
        }
        let out = match (self.meta.clone(), self.pieces().cloned()) {
            (Some(t), Some(have)) => bytes_per_file(&t, &have),
            (Some(t), None) => vec![0; t.files.len()],
            _ => Vec::new(),
        };
        self.file_done = Some(out.clone());
        out
    }

    fn total_size(&self) -> u64 {
        self.meta.as_ref().map_or(0, |t| t.total_length)
    }

    fn size_when_done(&self) -> u64 {
        self.snap.total_bytes
    }

    fn have_valid(&self) -> u64 {
        self.snap.have_bytes.min(self.size_when_done())
    }

    fn left(&self) -> u64 {
        self.size_when_done().saturating_sub(self.have_valid())
    }

    fn percent_done(&self) -> f64 {
        match self.size_when_done() {
            0 => 0.0,
            n => self.have_valid() as f64 / n as f64,
        }
    }

    fn ratio(&self) -> f64 {
        let up = self.e.uploaded_ever();
        let down = self.e.downloaded_ever();
        let base = if down > 0 { down } else { self.have_valid() };
        if base == 0 {
            -1.0
        } else {
            up as f64 / base as f64
        }
    }

    fn eta(&self) -> i64 {
        if self.left() == 0 || !self.snap.stage.is_active() {
            return -1;
        }
        self.snap.eta().map_or(-2, |s| s as i64)
    }

    fn magnet(&self) -> String {
        match &self.meta {
            Some(t) => Magnet::from_torrent(t).to_string(),
            None => self
                .e
                .record
                .magnet
                .clone()
                .unwrap_or_else(|| format!("magnet:?xt=urn:btih:{}", self.e.record.info_hash)),
        }
    }

    fn trackers(&self) -> Vec<(usize, String)> {
        match &self.meta {
            Some(t) => t
                .trackers
                .iter()
                .enumerate()
                .flat_map(|(tier, urls)| urls.iter().map(move |u| (tier, u.clone())))
                .collect(),
            None => self
                .e
                .record
                .magnet
                .as_deref()
                .and_then(|m| Magnet::parse(m).ok())
                .map(|m| m.trackers.into_iter().enumerate().collect())
                .unwrap_or_default(),
        }
    }

    fn error(&self) -> (i64, String) {
        match &self.snap.error {
            Some(e) if self.snap.stage == Stage::Failed => (3, super::error_chain(&**e)),
            _ => (0, String::new()),
        }
    }

    /// The value of one field; `None` for a name we do not know (left out,
    /// as Transmission does).
    pub(crate) fn field(&mut self, name: &str) -> Option<Value> {
        self.progress_field(name)
            .or_else(|| self.sources_field(name))
            .or_else(|| self.metainfo_field(name))
            .or_else(|| self.files_field(name))
            .or_else(|| self.settings_field(name))
    }

    /// Identity, state and transfer progress.
    fn progress_field(&mut self, name: &str) -> Option<Value> {
        let e = self.e;
        let s = &self.snap;
        Some(match name {
            "id" => json!(e.id),
            "name" => json!(if s.name.is_empty() {
                e.name()
            } else {
                s.name.clone()
            }),
            "hashString" => json!(e.record.info_hash),
            "status" => json!(status_code(s.stage)),
            "error" => json!(self.error().0),
            "errorString" => json!(self.error().1),
            "percentDone" => json!(self.percent_done()),
            "percentComplete" => json!(match self.total_size() {
                0 => 0.0,
                n => s.have_bytes.min(n) as f64 / n as f64,
            }),
            "metadataPercentComplete" => json!(match s.metadata {
                Some((got, size)) if size > 0 => got as f64 / size as f64,
                Some(_) => 0.0,
                None => 1.0,
            }),
            "recheckProgress" => json!(if s.stage == Stage::Checking && s.check_total > 0 {
                s.check_done as f64 / s.check_total as f64
            } else {
                0.0
            }),
            "sizeWhenDone" => json!(self.size_when_done()),
            "leftUntilDone" => json!(self.left()),
            "desiredAvailable" => json!(self.left()),
            "totalSize" => json!(self.total_size()),
            "haveValid" => json!(self.have_valid()),
            "haveUnchecked" => json!(0),
            "corruptEver" => json!(0),
            "rateDownload" => json!(s.down_rate),
            "rateUpload" => json!(s.up_rate),
            "eta" => json!(self.eta()),
            "etaIdle" => json!(-1),
            "uploadedEver" => json!(e.uploaded_ever()),
            "downloadedEver" => json!(e.downloaded_ever()),
            "uploadRatio" => json!(self.ratio()),
            _ => return None,
        })
    }

    /// Peers, web seeds and trackers.
    fn sources_field(&mut self, name: &str) -> Option<Value> {
        let s = &self.snap;
        Some(match name {
            "peersConnected" => json!(s.connected),
            "peersSendingToUs" => json!(self
                .peers()
                .iter()
                .filter(|p| p.down_rate > 0 && !p.web_seed)
                .count()),
            "peersGettingFromUs" => {
                json!(self.peers().iter().filter(|p| p.up_rate > 0).count())
            }
            "webseedsSendingToUs" => json!(self
                .peers()
                .iter()
                .filter(|p| p.down_rate > 0 && p.web_seed)
                .count()),
            "peersFrom" => {
                let (mut inc, mut out) = (0, 0);
                for p in self.peers().iter().filter(|p| !p.web_seed) {
                    if p.incoming {
                        inc += 1;
                    } else {
                        out += 1;
                    }
                }
                json!({"fromCache": 0, "fromDht": 0, "fromIncoming": inc, "fromLpd": 0,
                       "fromLtep": 0, "fromPex": 0, "fromTracker": out})
            }
            "peers" => {
                let list: Vec<Value> = self.peers().iter().map(peer_json).collect();
                json!(list)
            }
            "trackers" => json!(self
                .trackers()
                .iter()
                .enumerate()
                .map(|(id, (tier, url))| json!({
                    "announce": url,
                    "id": id,
                    "scrape": scrape_url(url),
                    "sitename": sitename(url),
                    "tier": tier,
                }))
                .collect::<Vec<_>>()),
            "trackerList" => {
                let mut text = String::new();
                let mut last = None;
                for (tier, url) in self.trackers() {
                    if last.is_some_and(|t| t != tier) {
                        text.push('\n');
                    }
                    text.push_str(&url);
                    text.push('\n');
                    last = Some(tier);
                }
                json!(text)
            }
            "trackerStats" => json!(self.tracker_stats()),
            "webseeds" => json!(self
                .meta
                .as_ref()
                .map(|t| t.web_seeds.clone())
                .unwrap_or_default()),
            _ => return None,
        })
    }

    /// Dates, the metainfo's own fields and the pieces.
    fn metainfo_field(&mut self, name: &str) -> Option<Value> {
        let e = self.e;
        let s = &self.snap;
        Some(match name {
            "downloadDir" => json!(e.record.download_dir.to_string_lossy()),
            "addedDate" => json!(e.record.added),
            "doneDate" => json!(e.record.done),
            "startDate" => json!(e.record.added),
            "activityDate" => json!(if s.down_rate > 0 || s.up_rate > 0 {
                self.ctx.now
            } else {
                e.record.done.max(e.record.added)
            }),
            "editDate" => json!(0),
            "dateCreated" => json!(self
                .meta
                .as_ref()
                .and_then(|t| t.creation_date)
                .unwrap_or(0)),
            "comment" => json!(self
                .meta
                .as_ref()
                .and_then(|t| t.comment.clone())
                .unwrap_or_default()),
            "creator" => json!(self
                .meta
                .as_ref()
                .and_then(|t| t.created_by.clone())
                .unwrap_or_default()),
            "isFinished" => json!(s.stage == Stage::Done),
            "isPrivate" => json!(self.meta.as_ref().is_some_and(|t| t.private)),
            "isStalled" => json!(false),
            "magnetLink" => json!(self.magnet()),
            "torrentFile" => json!(self
                .ctx
                .daemon
                .torrent_file(&e.info_hash())
                .to_string_lossy()),
            "pieceCount" => json!(self.meta.as_ref().map_or(0, |t| t.num_pieces())),
            "pieceSize" => json!(self.meta.as_ref().map_or(0, |t| t.piece_length)),
            "pieces" => {
                let b = self
                    .pieces()
                    .map(|b| b.as_bytes().to_vec())
                    .unwrap_or_default();
                json!(base64::engine::general_purpose::STANDARD.encode(b))
            }
            "availability" => {
                let geo = self.meta.as_ref().map(|t| t.geometry());
                let have = self.pieces().cloned();
                json!(geo
                    .iter()
                    .flat_map(|g| g.pieces())
                    .map(|p| if have.as_ref().is_some_and(|h| h.get(p)) {
                        -1
                    } else {
                        0
                    })
                    .collect::<Vec<i64>>())
            }
            _ => return None,
        })
    }

    /// The files and their selection.
    fn files_field(&mut self, name: &str) -> Option<Value> {
        let e = self.e;
        let num_files = self.meta.as_ref().map_or(0, |t| t.num_files());
        Some(match name {
            "file-count" => json!(num_files),
            "files" => {
                let done = self.file_done();
                let files = self.meta.as_ref().map(|t| {
                    t.files
                        .iter()
                        .zip(done)
                        .map(|(f, d)| {
                            json!({
                                "bytesCompleted": d,
                                "length": f.length,
                                "name": f.path.to_string_lossy(),
                            })
                        })
                        .collect::<Vec<_>>()
                });
                json!(files.unwrap_or_default())
            }
            "fileStats" => {
                let done = self.file_done();
                let stats: Vec<Value> = (0u32..)
                    .zip(&done)
                    .map(|(i, d)| {
                        json!({
                            "bytesCompleted": d,
                            "wanted": !e.record.unwanted.contains(&i),
                            "priority": 0,
                        })
                    })
                    .collect();
                json!(stats)
            }
            "wanted" => json!((0..num_files)
                .map(|i| i32::from(!e.record.unwanted.contains(&i)))
                .collect::<Vec<_>>()),
            "priorities" => json!(vec![0; num_files as usize]),
            _ => return None,
        })
    }

    /// Labels, queue, limits and the fields we answer with defaults.
    fn settings_field(&mut self, name: &str) -> Option<Value> {
        let e = self.e;
        Some(match name {
            "labels" => json!(e.record.labels),
            "queuePosition" => json!(self.ctx.queue.iter().position(|&i| i == e.id).unwrap_or(0)),
            "seedRatioLimit" => json!(e.record.seed_ratio),
            "seedRatioMode" => json!(e.record.seed_ratio_mode),
            "seedIdleLimit" => json!(30),
            "seedIdleMode" => json!(0),
            "uploadLimit" => json!(e.record.up_limit.unwrap_or(100 * 1024) / 1024),
            "uploadLimited" => json!(e.record.up_limit.is_some()),
            "downloadLimit" => json!(e.record.down_limit.unwrap_or(100 * 1024) / 1024),
            "downloadLimited" => json!(e.record.down_limit.is_some()),
            "honorsSessionLimits" => json!(true),
            "bandwidthPriority" => json!(0),
            "peer-limit" | "maxConnectedPeers" => {
                json!(self.ctx.daemon.config().session.engine.max_peers)
            }
            "manualAnnounceTime" => json!(-1),
            "secondsDownloading" | "secondsSeeding" => json!(0),
            "primary-mime-type" => json!("application/octet-stream"),
            "group" => json!(""),
            _ => return None,
        })
    }

    fn tracker_stats(&self) -> Vec<Value> {
        let last = self.e.handle.last_announce();
        let secs = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        };
        self.trackers()
            .iter()
            .enumerate()
            .map(|(id, (tier, url))| {
                let mine = last
                    .as_ref()
                    .filter(|a| a.url.as_deref() == Some(url.as_str()) || a.url.is_none());
                let ok = mine.is_some_and(|a| a.url.is_some());
                let count = |v: Option<u32>| v.map_or(-1, i64::from);
                json!({
                    "announce": url,
                    "announceState": if self.snap.stage.is_active() { 1 } else { 0 },
                    "downloadCount": -1,
                    "hasAnnounced": mine.is_some(),
                    "hasScraped": false,
                    "host": sitename(url),
                    "id": id,
                    "isBackup": false,
                    "lastAnnouncePeerCount": mine.map_or(0, |a| a.peers),
                    "lastAnnounceResult": match mine {
                        Some(_) if ok => "Success",
                        Some(_) => "No tracker answered",
                        None => "",
                    },
                    "lastAnnounceStartTime": mine.map_or(0, |a| secs(a.at)),
                    "lastAnnounceSucceeded": ok,
                    "lastAnnounceTime": mine.map_or(0, |a| secs(a.at)),
                    "lastAnnounceTimedOut": false,
                    "lastScrapeResult": "",
                    "lastScrapeStartTime": 0,
                    "lastScrapeSucceeded": false,
                    "lastScrapeTime": 0,
                    "lastScrapeTimedOut": false,
                    "leecherCount": count(mine.and_then(|a| a.leechers)),
                    "nextAnnounceTime": mine.map_or(0, |a| secs(a.next)),
                    "nextScrapeTime": 0,
                    "scrape": scrape_url(url),
                    "scrapeState": 0,
                    "seederCount": count(mine.and_then(|a| a.seeders)),
                    "sitename": sitename(url),
                    "tier": tier,
                })
            })
            .collect()
    }
}

fn peer_json(p: &PeerInfo) -> Value {
    // Transmission's flag letters, the ones we can know.
    let mut flags = String::new();
    if !p.peer_choking && p.am_interested {
        flags.push('D');
    } else if p.am_interested {
        flags.push('d');
    }
    if !p.am_choking && p.peer_interested {
        flags.push('U');
    } else if p.peer_interested {
        flags.push('u');
    }
    if p.encrypted {
        flags.push('E');
    }
    if p.incoming {
        flags.push('I');
    }
    // An HTTP server names no client: say what it is.
    let client = if p.web_seed {
        "web seed"
    } else {
        p.client.as_deref().unwrap_or_default()
    };
    json!({
        "address": p.addr.ip().to_string(),
        "clientName": client,
        "clientIsChoked": p.am_choking,
        "clientIsInterested": p.am_interested,
        "flagStr": flags,
        "isDownloadingFrom": !p.peer_choking && p.am_interested,
        "isEncrypted": p.encrypted,
        "isIncoming": p.incoming,
        "isUploadingTo": !p.am_choking && p.peer_interested,
        "isUTP": false,
        "peerIsChoked": p.am_choking,
        "peerIsInterested": p.peer_interested,
        "port": p.addr.port(),
        "progress": p.progress,
        "rateToClient": p.down_rate,
        "rateToPeer": p.up_rate,
    })
}

/// Verified bytes in each file, from the verified pieces.
pub(crate) fn bytes_per_file(t: &Meta, have: &Bitfield) -> Vec<u64> {
    let geo = t.geometry();
    t.files
        .iter()
        .map(|f| {
            if f.length == 0 || f.kind == FileKind::Pad {
                return if f.kind == FileKind::Pad { f.length } else { 0 };
            }
            let (start, end) = (f.offset, f.offset + f.length);
            // `have.get` is false past the last piece.
            geo.pieces_over(start..end)
                .filter(|&p| have.get(p))
                .map(|p| {
                    let ps = geo.piece_offset(p);
                    let pe = ps + u64::from(geo.piece_size(p));
                    pe.min(end) - ps.max(start)
                })
                .sum()
        })
        .collect()
}

fn sitename(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default()
}

/// BEP-48's convention: `.../announce` → `.../scrape`.
fn scrape_url(url: &str) -> String {
    match url.rfind("/announce") {
        Some(i) if url.starts_with("http") => {
            format!("{}/scrape{}", &url[..i], &url[i + "/announce".len()..])
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrape_urls_follow_the_announce_convention() {
        assert_eq!(
            scrape_url("http://t.example/announce?k=1"),
            "http://t.example/scrape?k=1"
        );
        assert_eq!(scrape_url("udp://t.example:80"), "");
    }

    #[test]
    fn a_web_seed_is_listed_as_one_and_a_peer_by_its_client() {
        let mut p = PeerInfo {
            addr: "127.0.0.2:8080".parse().unwrap(),
            client: None,
            incoming: false,
            encrypted: false,
            web_seed: true,
            progress: 1.0,
            am_choking: true,
            am_interested: true,
            peer_choking: false,
            peer_interested: false,
            down_rate: 0,
            up_rate: 0,
        };
        assert_eq!(peer_json(&p)["clientName"], "web seed");
        p.web_seed = false;
        assert_eq!(peer_json(&p)["clientName"], "");
        p.client = Some("libtorrent/2.0.10".into());
        assert_eq!(peer_json(&p)["clientName"], "libtorrent/2.0.10");
    }
}
