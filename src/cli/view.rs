//! The progress view: bars on a terminal, plain lines otherwise.

use super::*;

/// The progress display: indicatif bars on a terminal, plain status lines
/// otherwise, nothing with `--quiet`. It reads only [`Status`] snapshots.
pub(super) struct View {
    task: Option<tokio::task::JoinHandle<()>>,
    stop: CancellationToken,
    started: Instant,
}

impl View {
    pub(super) fn start(
        statuses: Vec<Arc<Status>>,
        quiet: bool,
        interval: Duration,
        session: Session,
    ) -> View {
        let stop = CancellationToken::new();
        let listen = match session.config().bind {
            Some(ip) => SocketAddr::new(ip, session.listen_port()).to_string(),
            None => format!("port {}", session.listen_port()),
        };
        let task = (!quiet).then(|| {
            let s = stop.clone();
            tokio::spawn(async move {
                if std::io::stderr().is_terminal() {
                    bars(statuses, s, listen).await
                } else {
                    lines(statuses, s, interval, listen).await
                }
            })
        });
        View {
            task,
            stop,
            started: Instant::now(),
        }
    }

    pub(super) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub(super) async fn finish(&self) {
        self.stop.cancel();
        if let Some(t) = &self.task {
            while !t.is_finished() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

pub(super) fn peers_text(s: &Snapshot) -> String {
    if s.web_seeds > 0 {
        let swarm = swarm_text(s).map(|t| format!(" {t}")).unwrap_or_default();
        return format!("{}{swarm}", peers_count(s));
    }
    match s.swarm {
        Some((seeds, leeches)) => format!(
            "peers {}/{} (swarm {seeds} seeds, {leeches} leechers)",
            s.connected, s.known
        ),
        None => format!("peers {}/{}", s.connected, s.known),
    }
}

pub(super) fn metadata_text(s: &Snapshot) -> String {
    let (got, size) = s.metadata.unwrap_or_default();
    let progress = if size > 0 {
        format!("{}/{}", BinaryBytes(got), BinaryBytes(size))
    } else {
        "size not known yet".into()
    };
    format!(
        "fetching metadata for {}: {progress}, {}",
        s.name,
        peers_text(s)
    )
}

/// One torrent's bars: metadata, check, then transfer.
#[derive(Default)]
pub(super) struct Bars {
    meta: Option<ProgressBar>,
    check: Option<ProgressBar>,
    dl: Option<ProgressBar>,
    /// The transfer bar shows the seeding style.
    seeding: bool,
}

pub(super) struct Styles {
    check: ProgressStyle,
    dl: ProgressStyle,
    /// A spinner and a message: metadata, seeding.
    text: ProgressStyle,
    /// Columns the prefix takes (several torrents: the name).
    prefix: usize,
    /// Where peers reach us, for the seeding line.
    listen: String,
}

/// The narrowest a bar is drawn; the message gives way first.
pub(super) const MIN_BAR: usize = 12;

impl Styles {
    pub(super) fn new(multi: bool, listen: String) -> Styles {
        let p = if multi { "{prefix:12!} " } else { "" };
        let style = |t: &str| {
            ProgressStyle::with_template(&format!("{p}{t}"))
                .expect("valid template")
                .progress_chars("=> ")
        };
        Styles {
            check: style("checking {wide_bar:.yellow/white} {msg}"),
            dl: style("{spinner:.green} {wide_bar:.cyan/blue} {msg}"),
            text: style("{spinner:.green} {msg}"),
            prefix: if multi { 13 } else { 0 },
            listen,
        }
    }

    /// Columns left for the message after the prefix and `fixed` more.
    pub(super) fn room(&self, fixed: usize) -> usize {
        term_width().saturating_sub(self.prefix + fixed + 1)
    }
}

/// Columns of the terminal stderr is on (80 when it cannot be told).
pub(super) fn term_width() -> usize {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ only writes the winsize it is given.
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 {
        usize::from(ws.ws_col)
    } else {
        80
    }
}

/// `fields` (rank, text) joined by spaces in their order, dropping the
/// least important (highest rank) until the line fits `width` columns.
pub(super) fn fit(fields: &[(u8, String)], width: usize) -> String {
    let mut keep = vec![true; fields.len()];
    let len = |keep: &[bool]| {
        let kept = fields.iter().zip(keep).filter(|(_, k)| **k);
        kept.map(|(f, _)| f.1.chars().count() + 1).sum::<usize>()
    };
    let mut order: Vec<usize> = (0..fields.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(fields[i].0));
    for i in order {
        if len(&keep) <= width + 1 {
            break;
        }
        keep[i] = false;
    }
    let kept: Vec<&str> = fields
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(f, _)| f.1.as_str())
        .collect();
    kept.join(" ")
}

/// `42s`, `3m05s`, `2h07m`, `3d04h`.
pub(super) fn short_duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86400, secs % 86400 / 3600),
    }
}

/// Time left at this run's rate; unknown while nothing arrives.
pub(super) fn eta_text(s: &Snapshot) -> String {
    match s.eta() {
        Some(secs) => format!("ETA {}", short_duration(secs)),
        None => "ETA unknown".into(),
    }
}

pub(super) fn swarm_text(s: &Snapshot) -> Option<String> {
    s.swarm
        .map(|(seeds, leeches)| format!("(swarm {seeds} seeds, {leeches} leechers)"))
}

/// `peers 3/40`, with `+ 2 web seeds` when there are any.
pub(super) fn peers_count(s: &Snapshot) -> String {
    if s.web_seeds > 0 {
        format!(
            "peers {}/{} + {} web seeds",
            s.connected, s.known, s.web_seeds
        )
    } else {
        format!("peers {}/{}", s.connected, s.known)
    }
}

/// The transfer line's fields, most important first in rank. Rates are
/// this run's, so resumed data never inflates them.
pub(super) fn download_fields(s: &Snapshot) -> Vec<(u8, String)> {
    let mut f = vec![
        (
            0,
            format!("{:>3.0}%", pct(s.have_bytes, s.total_bytes).floor()),
        ),
        (
            4,
            format!(
                "{}/{}",
                BinaryBytes(s.have_bytes),
                BinaryBytes(s.total_bytes)
            ),
        ),
        (1, format!("↓ {}/s", BinaryBytes(s.down_rate))),
        (2, eta_text(s)),
        (3, peers_count(s)),
    ];
    if s.up_rate > 0 {
        f.push((5, format!("↑ {}/s", BinaryBytes(s.up_rate))));
    }
    if let Some(t) = swarm_text(s) {
        f.push((6, t));
    }
    f
}

pub(super) fn seeding_fields(s: &Snapshot, listen: &str) -> Vec<(u8, String)> {
    let mut f = vec![
        (0, "seeding".to_string()),
        (1, format!("↑ {}/s", BinaryBytes(s.up_rate))),
        (2, format!("ratio {:.2}", s.ratio())),
        (3, format!("{} uploaded", BinaryBytes(s.uploaded))),
        (4, format!("peers {}/{}", s.connected, s.known)),
        (5, format!("listening on {listen}")),
    ];
    if let Some(t) = swarm_text(s) {
        f.push((6, t));
    }
    f
}

impl Bars {
    pub(super) fn update(&mut self, s: &Snapshot, st: &Styles, multi: &indicatif::MultiProgress) {
        let add = |len: Option<u64>, style: &ProgressStyle| {
            let b = multi.add(ProgressBar::new(len.unwrap_or(0)));
            if len.is_none() {
                b.set_length(0);
            }
            b.set_style(style.clone());
            b.set_prefix(s.name.clone());
            b
        };
        match s.stage {
            Stage::Loading => {}
            Stage::Metadata => {
                let b = self.meta.get_or_insert_with(|| {
                    let b = add(None, &st.text);
                    b.enable_steady_tick(Duration::from_millis(120));
                    b
                });
                let text = metadata_text(s);
                b.set_message(text.chars().take(st.room(2)).collect::<String>());
            }
            Stage::Checking => {
                if let Some(m) = self.meta.take() {
                    m.finish_and_clear();
                }
                let b = self
                    .check
                    .get_or_insert_with(|| add(Some(s.check_total), &st.check));
                b.set_length(s.check_total);
                b.set_position(s.check_done);
                let fields = [
                    (
                        0,
                        format!("{:>3.0}%", pct(s.check_done, s.check_total).floor()),
                    ),
                    (
                        1,
                        format!(
                            "{}/{}",
                            BinaryBytes(s.check_done),
                            BinaryBytes(s.check_total)
                        ),
                    ),
                ];
                b.set_message(fit(&fields, st.room(9 + 1 + MIN_BAR)));
            }
            _ => {
                if let Some(m) = self.meta.take() {
                    m.finish_and_clear();
                }
                if let Some(c) = self.check.take() {
                    c.set_position(s.check_total);
                    c.finish();
                }
                let b = self
                    .dl
                    .get_or_insert_with(|| add(Some(s.total_bytes), &st.dl));
                b.set_prefix(s.name.clone());
                b.set_length(s.total_bytes);
                b.set_position(s.have_bytes);
                let seeding = s.stage == Stage::Seeding;
                if seeding != self.seeding {
                    self.seeding = seeding;
                    b.set_style(if seeding { &st.text } else { &st.dl }.clone());
                }
                let msg = match s.stage {
                    Stage::Seeding => fit(&seeding_fields(s, &st.listen), st.room(2)),
                    Stage::Paused => "paused".into(),
                    Stage::Failed => "failed".into(),
                    Stage::Done => "done".into(),
                    _ => fit(&download_fields(s), st.room(2 + 1 + MIN_BAR)),
                };
                b.set_message(msg);
            }
        }
    }

    pub(super) fn abandon(&mut self) {
        for b in [self.meta.take(), self.check.take(), self.dl.take()]
            .into_iter()
            .flatten()
        {
            b.abandon();
        }
    }
}

pub(super) async fn bars(statuses: Vec<Arc<Status>>, stop: CancellationToken, listen: String) {
    let many = statuses.len() > 1;
    let styles = Styles::new(many, listen);
    let multi = indicatif::MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let mut bars: Vec<Bars> = statuses.iter().map(|_| Bars::default()).collect();
    let total = many.then(|| {
        let b = multi.add(ProgressBar::new(0));
        b.set_style(ProgressStyle::with_template("{msg}").expect("valid template"));
        b
    });
    // Log lines go above the bars rather than through them.
    let anchor = multi.add(ProgressBar::hidden());
    set_active_bar(Some(anchor.clone()));
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        let stopping = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tick.tick() => false,
        };
        let snaps: Vec<Snapshot> = statuses.iter().map(|s| s.snapshot()).collect();
        for (b, s) in bars.iter_mut().zip(&snaps) {
            b.update(s, &styles, &multi);
        }
        if let Some(t) = &total {
            t.set_message(total_text(&snaps));
        }
        if stopping {
            set_active_bar(None);
            bars.iter_mut().for_each(Bars::abandon);
            if let Some(t) = total {
                t.abandon();
            }
            // Dropping them draws them a last time, with the cursor left
            // at the end of the last: what follows starts a line of its own.
            drop(bars);
            drop(anchor);
            drop(multi);
            eprintln!();
            return;
        }
    }
}

/// The total line of a multi-torrent run.
pub(super) fn total_text(snaps: &[Snapshot]) -> String {
    let count = |st: Stage| snaps.iter().filter(|s| s.stage == st).count();
    let (have, total): (u64, u64) = snaps
        .iter()
        .fold((0, 0), |(h, t), s| (h + s.have_bytes, t + s.total_bytes));
    let (down, up): (u64, u64) = snaps
        .iter()
        .fold((0, 0), |(d, u), s| (d + s.down_rate, u + s.up_rate));
    let peers: usize = snaps.iter().map(|s| s.connected).sum();
    format!(
        "total: {} torrents ({} downloading, {} seeding, {} done, {} failed) {}/{} down {}/s up {}/s peers {peers}",
        snaps.len(),
        count(Stage::Downloading) + count(Stage::Metadata) + count(Stage::Checking),
        count(Stage::Seeding),
        count(Stage::Done),
        count(Stage::Failed),
        BinaryBytes(have),
        BinaryBytes(total),
        BinaryBytes(down),
        BinaryBytes(up),
    )
}

/// A status line; `named` puts the torrent's name in (several torrents).
pub(super) fn line_for(s: &Snapshot, named: bool, listen: &str) -> Option<String> {
    let name = if named {
        format!(" {}", s.name)
    } else {
        String::new()
    };
    Some(match s.stage {
        Stage::Loading => return None,
        Stage::Metadata => metadata_text(s),
        Stage::Seeding => format!(
            "seeding{name}: ↑ {}/s, ratio {:.2}, {} uploaded, {}, listening on {listen}",
            BinaryBytes(s.up_rate),
            s.ratio(),
            BinaryBytes(s.uploaded),
            peers_text(s)
        ),
        Stage::Checking => format!(
            "checking{name}: {:.1}% of {}",
            pct(s.check_done, s.check_total),
            BinaryBytes(s.check_total)
        ),
        Stage::Paused => format!("paused{name}"),
        Stage::Failed | Stage::Done => return None,
        Stage::Downloading | Stage::Finishing => format!(
            "downloading{name}: {:.1}% {}/{} {}/s {} {}",
            pct(s.have_bytes, s.total_bytes),
            BinaryBytes(s.have_bytes),
            BinaryBytes(s.total_bytes),
            BinaryBytes(s.down_rate),
            eta_text(s),
            peers_text(s)
        ),
    })
}

pub(super) async fn lines(
    statuses: Vec<Arc<Status>>,
    stop: CancellationToken,
    interval: Duration,
    listen: String,
) {
    let started = Instant::now();
    let mut all_seeding_said = false;
    let mut tick = tokio::time::interval(interval);
    let mut fast = tokio::time::interval(Duration::from_millis(100));
    tick.tick().await;
    loop {
        // The quick look only until "seeding all" is said: an idle
        // process with many torrents wakes once per interval.
        let watching = !all_seeding_said && statuses.len() > 1;
        let due = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => true,
            _ = fast.tick(), if watching => false,
        };
        let snaps: Vec<Snapshot> = statuses.iter().map(|s| s.snapshot()).collect();
        // Said once, as soon as it holds: scripts wait for it.
        if !all_seeding_said && snaps.len() > 1 && snaps.iter().all(|s| s.stage == Stage::Seeding) {
            all_seeding_said = true;
            eprintln!(
                "seeding all {} torrents (ready after {:.2}s)",
                snaps.len(),
                started.elapsed().as_secs_f64()
            );
        }
        if !due {
            continue;
        }
        if snaps.len() > 1 {
            // A line each while they fit on a screen, then the total.
            if snaps.len() <= 10 {
                snaps
                    .iter()
                    .filter_map(|s| line_for(s, true, &listen))
                    .for_each(|l| eprintln!("{l}"));
            }
            eprintln!("{}", total_text(&snaps));
            continue;
        }
        if let Some(l) = snaps.first().and_then(|s| line_for(s, false, &listen)) {
            eprintln!("{l}");
        }
    }
}

pub(super) fn pct(a: u64, b: u64) -> f64 {
    if b == 0 {
        100.0
    } else {
        a as f64 * 100.0 / b as f64
    }
}
