//! `download` and `seed`: flags into a session, the torrents run, and the
//! report and `--summary-json` at the end.

use super::*;

/// Session-wide settings from the flags.
pub(super) fn session_config(n: &NetArgs, connect_when_complete: bool) -> SessionConfig {
    let engine = EngineConfig {
        max_peers: n.max_peers.into(),
        request_timeout: Duration::from_secs(n.request_timeout.max(1)),
        connect_timeout: Duration::from_secs(n.connect_timeout.max(1)),
        handshake_timeout: Duration::from_secs(n.connect_timeout.max(1)),
        connect_when_complete,
        encryption: n.encryption.into(),
        ..EngineConfig::default()
    };
    SessionConfig {
        port: n.port,
        bind: n.bind,
        dht: n.dht.options(),
        // One torrent: its caps are the process's. Several: each cap
        // holds for the whole session.
        max_upload_rate: n.max_upload_rate,
        max_download_rate: n.max_download_rate,
        max_peers: (usize::from(n.max_peers) * 4).max(200),
        engine,
        numwant: n.numwant,
        tracker_timeout: Duration::from_secs(n.tracker_timeout.max(1)),
        udp_retries: n.udp_retries,
        state_dir: n.dht.dir(),
        resume_every: Duration::from_secs(n.resume_every.max(1)),
        ..SessionConfig::default()
    }
}

pub(super) fn seed_limits(l: &SeedLimitArgs) -> SeedLimits {
    SeedLimits {
        ratio: l.seed_ratio,
        time: l.seed_time,
    }
}

pub(super) fn is_url(arg: &str) -> bool {
    let lower = arg.get(..8).unwrap_or(arg).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

pub(super) async fn source_of(arg: &str) -> Result<Source> {
    Ok(if magnet::is_magnet(arg) {
        let m = Magnet::parse(arg).context("not a usable magnet link")?;
        Source::Magnet(Box::new(m))
    } else if is_url(arg) {
        Source::Bytes(fetch_url(arg).await?)
    } else {
        Source::File(PathBuf::from(arg))
    })
}

pub(super) async fn fetch_url(url: &str) -> Result<Vec<u8>> {
    crate::rpc::methods::fetch_torrent(url)
        .await
        .map_err(anyhow::Error::msg)
}

pub(super) async fn download(a: DownloadArgs, cancel: CancellationToken) -> Result<()> {
    let mut adds = Vec::new();
    for arg in &a.torrents {
        let source = source_of(arg).await?;
        let select = match (&a.select, &source) {
            (Some(FileSelect(r)), _) => Some(r.clone()),
            (None, Source::Magnet(m)) => m.select_only.clone(),
            _ => None,
        };
        let mut add = AddTorrent::new(source, a.output.clone());
        add.select = select;
        add.seed = a.seed.then(|| seed_limits(&a.limits));
        add.save_torrent = a.save_torrent.clone().filter(|_| a.torrents.len() == 1);
        add.peers = a.net.peers.clone();
        add.recheck = a.recheck;
        add.overwrite = a.overwrite;
        add.web_seeds = !a.no_web_seeds;
        adds.push((arg.clone(), add));
    }
    if a.save_torrent.is_some() && a.torrents.len() > 1 {
        anyhow::bail!("--save-torrent names one file: give it with a single torrent");
    }
    let session = Session::start(session_config(&a.net, a.seed), &cancel).await?;
    let mut handles = Vec::new();
    for (arg, add) in adds {
        match session.add(add).await {
            Ok(h) => handles.push((arg, h)),
            Err(crate::session::AddError::Duplicate(_)) => {
                eprintln!("note: {arg} is the same torrent as an earlier argument; added once");
            }
            Err(e) => {
                session.shutdown().await;
                return Err(e).with_context(|| format!("cannot add {arg}"));
            }
        }
    }
    let view = View::start(
        handles.iter().map(|(_, h)| h.status()).collect(),
        a.view.quiet,
        Duration::from_secs(a.view.status_interval.max(1)),
        session.clone(),
    );
    let mut results = Vec::new();
    for (arg, h) in &handles {
        results.push((arg.clone(), h.wait().await));
    }
    session.shutdown().await;
    view.finish().await;
    finish_all(results, &a.view, &view, "done")
}

/// Reports every torrent's outcome; the error names those that failed.
pub(super) fn finish_all(
    results: Vec<(String, Result<Report, Arc<TorrentError>>)>,
    v: &ViewArgs,
    view: &View,
    what: &str,
) -> Result<()> {
    if results.len() == 1 {
        let (arg, r) = results.into_iter().next().expect("one");
        let report = r
            .map_err(|e| anyhow::Error::new(ArcError(e)))
            .with_context(|| {
                format!(
                    "{} of {arg} failed",
                    if what == "done" {
                        "download"
                    } else {
                        "seeding"
                    }
                )
            })?;
        write_summary(std::slice::from_ref(&report), v, view)?;
        print_report(&report, v, view, what);
        return Ok(());
    }
    let mut ok = Vec::new();
    let (mut failed, mut interrupted) = (Vec::new(), 0);
    for (arg, r) in results {
        match r {
            Ok(report) => {
                print_report(&report, v, view, what);
                ok.push(report);
            }
            Err(e) => {
                if matches!(
                    *e,
                    TorrentError::Interrupted { .. } | TorrentError::MetadataInterrupted
                ) {
                    interrupted += 1;
                }
                eprintln!("error: {arg}: {}", chain(&*e));
                failed.push(arg);
            }
        }
    }
    write_summary(&ok, v, view)?;
    if failed.is_empty() {
        return Ok(());
    }
    if interrupted == failed.len() {
        return Err(Interrupted(interrupted).into());
    }
    anyhow::bail!(
        "{} of {} torrents failed: {}",
        failed.len(),
        failed.len() + ok.len(),
        failed.join(", ")
    )
}

pub(super) async fn seed(a: SeedArgs, cancel: CancellationToken) -> Result<()> {
    let loaded = crate::metainfo::Torrent::from_file(&a.torrent)
        .with_context(|| format!("seeding {} failed", a.torrent.display()))?;
    let (root, t) = torrent::locate_content(loaded, &a.path)
        .map_err(anyhow::Error::new)
        .with_context(|| format!("seeding {} failed", a.torrent.display()))?;
    let mut add = AddTorrent::new(Source::Parsed(Box::new(t)), root);
    add.seed = Some(seed_limits(&a.limits));
    add.seed_only = true;
    add.peers = a.net.peers.clone();
    add.recheck = a.recheck;
    let session = Session::start(session_config(&a.net, true), &cancel).await?;
    let h = session.add(add).await?;
    let view = View::start(
        vec![h.status()],
        a.view.quiet,
        Duration::from_secs(a.view.status_interval.max(1)),
        session.clone(),
    );
    let result = h.wait().await;
    session.shutdown().await;
    view.finish().await;
    let report = match result {
        // Ctrl-C during the check is how seeding normally ends.
        Err(e) if matches!(*e, TorrentError::Interrupted { .. }) => return Ok(()),
        r => r
            .map_err(|e| anyhow::Error::new(ArcError(e)))
            .with_context(|| format!("seeding {} failed", a.torrent.display()))?,
    };
    write_summary(std::slice::from_ref(&report), &a.view, &view)?;
    print_report(&report, &a.view, &view, "seeded");
    Ok(())
}

pub(super) fn report_json(report: &Report, view: &View) -> serde_json::Value {
    serde_json::json!({
        "name": report.name,
        "info_hash": report.info_hash,
        "total_bytes": report.total_bytes,
        "torrent_bytes": report.torrent_bytes,
        "downloaded": report.downloaded,
        "resumed": report.resumed,
        "received": report.received,
        "wasted": report.wasted,
        "uploaded": report.uploaded,
        "completed_after_secs": report.completed_after,
        "hash_failures": report.hash_failures,
        "elapsed_secs": view.elapsed().as_secs_f64(),
        "read_bytes": read_bytes(),
        "check": report.check.map(|c| serde_json::json!({
            "fast_resume": c.fast, "pieces_hashed": c.hashed, "secs": c.secs,
        })),
        "peers": report.peers.iter().map(|c| serde_json::json!({
            "addr": c.addr.to_string(), "bytes": c.bytes, "encrypted": c.encrypted,
        })).collect::<Vec<_>>(),
        "banned": report.banned.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
    })
}

/// One torrent: its summary object; several: `{"torrents": [...]}`.
pub(super) fn write_summary(reports: &[Report], v: &ViewArgs, view: &View) -> Result<()> {
    let Some(path) = &v.summary_json else {
        return Ok(());
    };
    let j = match reports {
        [one] => report_json(one, view),
        many => serde_json::json!({
            "torrents": many.iter().map(|r| report_json(r, view)).collect::<Vec<_>>(),
            "elapsed_secs": view.elapsed().as_secs_f64(),
            "read_bytes": read_bytes(),
        }),
    };
    std::fs::write(path, serde_json::to_string_pretty(&j)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Bytes this process read through read(2) and friends (`rchar`).
pub(super) fn read_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
}

pub(super) fn print_report(report: &Report, v: &ViewArgs, view: &View, what: &str) {
    if v.quiet {
        return;
    }
    if what == "seeded" {
        let ratio = report.uploaded as f64 / report.total_bytes.max(1) as f64;
        eprintln!(
            "seeded: {} ({}) for {}: {} uploaded, ratio {ratio:.2}",
            report.name,
            BinaryBytes(report.total_bytes),
            HumanDuration(view.elapsed()),
            BinaryBytes(report.uploaded),
        );
    } else {
        eprintln!(
            "{what}: {} ({}) in {}: {} fetched, {} already present, {} uploaded",
            report.name,
            BinaryBytes(report.total_bytes),
            HumanDuration(view.elapsed()),
            BinaryBytes(report.downloaded),
            BinaryBytes(report.resumed),
            BinaryBytes(report.uploaded),
        );
    }
}
