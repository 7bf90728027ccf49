//! What a torrent shows the UI: [`Status`] (atomics and small locks the
//! actor writes) and the [`Snapshot`] read from it.

use super::*;

/// Progress shared with the UI; everything is read through [`Status::snapshot`].
#[derive(Default)]
pub struct Status {
    pub(super) stage: Mutex<Option<Stage>>,
    pub(super) check_done: AtomicU64,
    pub(super) check_total: AtomicU64,
    /// Name, wanted bytes, pieces.
    pub(super) torrent: Mutex<Option<(String, u64, u32)>>,
    pub(super) engine: Mutex<Option<Arc<Engine>>>,
    /// How the last announce round went.
    pub(super) announce: Mutex<Option<AnnounceReport>>,
    /// Verified pieces as last known (a run's end, a paused torrent's
    /// resume record); a running engine's own bitfield is newer.
    pub(super) have_view: Mutex<Option<Bitfield>>,
    /// A magnet's name (or info-hash) and its metadata fetch.
    pub(super) metadata: OnceLock<(String, Arc<FetchStatus>)>,
    pub(super) stats: Arc<Stats>,
    pub(super) error: Mutex<Option<Arc<TorrentError>>>,
    /// Rates from the session's sampling.
    pub(super) rates: Mutex<Rates>,
    /// How the last check went: (fast, seconds, bytes read).
    pub(super) check: Mutex<Option<CheckReport>>,
    /// The metainfo, the output directory and the resume record's path,
    /// once known: removal works even after the actor ended.
    pub(super) meta: Mutex<Option<Placed>>,
}

/// A torrent, where its files go, and where its resume record is.
type Placed = (Arc<Torrent>, PathBuf, Option<PathBuf>);

/// How the start-up check went, for the summary.
#[derive(Debug, Clone, Copy)]
pub struct CheckReport {
    /// The resume record let some pieces go unhashed.
    pub fast: bool,
    /// Pieces hashed.
    pub hashed: u32,
    pub secs: f64,
}

#[derive(Default)]
pub(super) struct Rates {
    pub(super) last: Option<(Instant, u64, u64)>,
    pub(super) down: f64,
    pub(super) up: f64,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A consistent-enough copy of the counters at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub stage: Stage,
    pub name: String,
    /// Bytes of the wanted pieces.
    pub total_bytes: u64,
    pub num_pieces: u32,
    pub check_done: u64,
    pub check_total: u64,
    /// Verified bytes, resumed ones included.
    pub have_bytes: u64,
    /// Bytes verified this run.
    pub downloaded: u64,
    pub received: u64,
    pub uploaded: u64,
    /// Connected peers (web seeds not counted).
    pub connected: usize,
    pub known: usize,
    /// Web seeds being fetched from.
    pub web_seeds: usize,
    /// (seeders, leechers) as a tracker last reported them.
    pub swarm: Option<(u32, u32)>,
    /// While fetching a magnet's metadata: bytes received and the size
    /// (0 until a peer names it).
    pub metadata: Option<(u64, u64)>,
    /// Bytes/s over the last few seconds.
    pub down_rate: u64,
    pub up_rate: u64,
    pub error: Option<Arc<TorrentError>>,
}

impl Snapshot {
    /// Seconds to completion at the current rate; `None` when unknown.
    pub fn eta(&self) -> Option<u64> {
        let left = self.total_bytes.saturating_sub(self.have_bytes);
        if left == 0 {
            return Some(0);
        }
        (self.down_rate > 0).then(|| left.div_ceil(self.down_rate))
    }

    /// Uploaded over the torrent's wanted size.
    pub fn ratio(&self) -> f64 {
        if self.total_bytes == 0 {
            0.0
        } else {
            self.uploaded as f64 / self.total_bytes as f64
        }
    }
}

impl Status {
    pub fn new() -> Arc<Status> {
        Arc::new(Status::default())
    }

    pub(super) fn set_announce(&self, r: AnnounceReport) {
        let mut a = lock(&self.announce);
        // A failed round keeps the counts the last answer gave.
        if let (None, Some(old)) = (&r.url, a.as_ref()) {
            let (seeders, leechers) = (old.seeders, old.leechers);
            *a = Some(AnnounceReport {
                seeders,
                leechers,
                ..r
            });
        } else {
            *a = Some(r);
        }
    }

    pub(super) fn set_have_view(&self, have: &Bitfield) {
        *lock(&self.have_view) = Some(have.clone());
    }

    pub(super) fn set_stage(&self, s: Stage) {
        *lock(&self.stage) = Some(s);
    }

    pub(super) fn stage(&self) -> Stage {
        lock(&self.stage).unwrap_or(Stage::Loading)
    }

    /// Takes a rate sample (the session calls this about once a second).
    pub fn sample(&self) {
        let now = Instant::now();
        let (down, up) = (
            self.stats.received.load(Ordering::Relaxed),
            self.stats.uploaded.load(Ordering::Relaxed),
        );
        let mut r = lock(&self.rates);
        if let Some((t, d0, u0)) = r.last {
            let dt = now.saturating_duration_since(t).as_secs_f64();
            if dt >= 0.2 {
                // An average over about five seconds.
                let a = (dt / 5.0).min(1.0);
                r.down += a * ((down.saturating_sub(d0)) as f64 / dt - r.down);
                r.up += a * ((up.saturating_sub(u0)) as f64 / dt - r.up);
                r.last = Some((now, down, up));
                if let Some(e) = lock(&self.engine).as_ref() {
                    e.sample_peers(dt);
                }
            }
        } else {
            r.last = Some((now, down, up));
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let stage = self.stage();
        let (mut name, total_bytes, num_pieces) = lock(&self.torrent).clone().unwrap_or_default();
        let mut metadata = None;
        let (mut connected, mut known) = (0, 0);
        if let (Stage::Metadata, Some((n, f))) = (stage, self.metadata.get()) {
            name.clone_from(n);
            metadata = Some((
                f.received.load(Ordering::Relaxed),
                f.size.load(Ordering::Relaxed),
            ));
            connected = f.connected.load(Ordering::Relaxed);
            known = f.known.load(Ordering::Relaxed);
        } else if name.is_empty() {
            if let Some((n, _)) = self.metadata.get() {
                name.clone_from(n);
            }
        }
        let st = &self.stats;
        let downloaded = st.downloaded.load(Ordering::Relaxed);
        let web_seeds = st.web_seeds.load(Ordering::Relaxed);
        if stage != Stage::Metadata {
            connected = st
                .connected
                .load(Ordering::Relaxed)
                .saturating_sub(web_seeds);
            known = st.known.load(Ordering::Relaxed);
        }
        let rates = lock(&self.rates);
        Snapshot {
            stage,
            name,
            total_bytes,
            num_pieces,
            check_done: self.check_done.load(Ordering::Relaxed),
            check_total: self.check_total.load(Ordering::Relaxed),
            have_bytes: st.resumed.load(Ordering::Relaxed) + downloaded,
            downloaded,
            received: st.received.load(Ordering::Relaxed),
            uploaded: st.uploaded.load(Ordering::Relaxed),
            connected,
            known,
            web_seeds,
            swarm: lock(&self.announce)
                .as_ref()
                .and_then(|a| a.seeders.zip(a.leechers)),
            metadata,
            down_rate: whole(rates.down),
            up_rate: whole(rates.up),
            error: lock(&self.error).clone(),
        }
    }

    pub fn check_report(&self) -> Option<CheckReport> {
        *lock(&self.check)
    }
}

/// Whole bytes per second: float to integer saturates, and a fraction of a
/// byte is noise.
#[allow(clippy::cast_possible_truncation)]
fn whole(rate: f64) -> u64 {
    rate.max(0.0) as u64
}
