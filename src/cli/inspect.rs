//! `info` and `create`.

use super::*;

pub(super) async fn info(a: InfoArgs) -> Result<()> {
    let t = load(&a.torrent).await?;
    if a.magnet {
        out!("{}", Magnet::from_torrent(&t));
    } else if a.json {
        out!("{}", serde_json::to_string_pretty(&info_json(&t))?);
    } else {
        print_info(&t);
    }
    Ok(())
}

/// A torrent from a file, an http(s) URL, or `-` (standard input).
async fn load(arg: &str) -> Result<Torrent> {
    if arg == "-" {
        use std::io::Read;
        let mut data = Vec::new();
        std::io::stdin()
            .lock()
            .take(crate::metainfo::MAX_TORRENT_FILE + 1)
            .read_to_end(&mut data)
            .context("cannot read standard input")?;
        if data.len() as u64 > crate::metainfo::MAX_TORRENT_FILE {
            anyhow::bail!("standard input holds more than a torrent file can be");
        }
        Torrent::from_bytes(&data).context("cannot load the torrent on standard input")
    } else if is_url(arg) {
        let data = fetch_url(arg).await?;
        Torrent::from_bytes(&data).with_context(|| format!("cannot load {arg}"))
    } else {
        Torrent::from_file(std::path::Path::new(arg)).with_context(|| format!("cannot load {arg}"))
    }
}

/// `info --json`.
fn info_json(t: &Torrent) -> serde_json::Value {
    let files: Vec<serde_json::Value> = t
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut v = serde_json::json!({
                "index": i,
                "path": f.path.to_string_lossy(),
                "length": f.length,
                "offset": f.offset,
            });
            match &f.kind {
                FileKind::Regular => {}
                FileKind::Pad => v["pad"] = true.into(),
                FileKind::Symlink { target } => v["symlink"] = target.to_string_lossy().into(),
            }
            v
        })
        .collect();
    serde_json::json!({
        "name": t.name,
        "info_hash": t.info_hash.to_hex(),
        "total_length": t.total_length,
        "payload_length": t.payload_length,
        "piece_length": t.piece_length,
        "num_pieces": t.num_pieces(),
        "private": t.private,
        "multi_file": t.multi_file,
        "trackers": t.trackers,
        "web_seeds": t.web_seeds,
        "http_seeds": t.http_seeds,
        "nodes": t.nodes.iter().map(|(h, p)| format!("{h}:{p}")).collect::<Vec<_>>(),
        "comment": t.comment,
        "created_by": t.created_by,
        "creation_date": t.creation_date,
        "magnet": Magnet::from_torrent(t).to_string(),
        "files": files,
    })
}

/// `info` as text.
fn print_info(t: &Torrent) {
    out!("name:        {}", t.name);
    out!("info hash:   {}", t.info_hash);
    out!(
        "total size:  {} ({} bytes)",
        BinaryBytes(t.payload_length),
        t.payload_length
    );
    out!(
        "pieces:      {} x {} ({} bytes)",
        t.num_pieces(),
        BinaryBytes(u64::from(t.piece_length)),
        t.piece_length
    );
    out!("private:     {}", if t.private { "yes" } else { "no" });
    if let Some(c) = &t.comment {
        out!("comment:     {c}");
    }
    if let Some(c) = &t.created_by {
        out!("created by:  {c}");
    }
    if let Some(d) = t.creation_date {
        out!("created:     {d} (unix time)");
    }
    if t.trackers.is_empty() {
        out!("trackers:    none");
    }
    for (i, tier) in t.trackers.iter().enumerate() {
        out!("tier {:<7} {}", format!("{}:", i + 1), tier.join(", "));
    }
    for w in &t.web_seeds {
        out!("web seed:    {w}");
    }
    for w in &t.http_seeds {
        out!("http seed:   {w}");
    }
    for (h, p) in &t.nodes {
        out!("dht node:    {h}:{p}");
    }
    // Pad files are hidden but keep their index, so the numbers shown are
    // the ones --select and a magnet's so= use.
    let shown: Vec<_> = t
        .files
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.is_pad())
        .collect();
    out!("files:       {}", shown.len());
    for (i, f) in shown {
        let extra = match &f.kind {
            FileKind::Symlink { target } => format!(" -> {}", target.display()),
            _ => String::new(),
        };
        out!("  {i:>5}  {:>12}  {}{}", f.length, f.path.display(), extra);
    }
}

pub(super) async fn create(a: CreateArgs, cancel: CancellationToken) -> Result<()> {
    use crate::metainfo::create::{self as mk, CreateOptions};

    let mut opts = CreateOptions {
        name: a.name.clone(),
        piece_length: a.piece_length,
        trackers: mk::parse_tiers(&a.trackers, &a.tier_sep)?,
        web_seeds: a.web_seeds.clone(),
        private: a.private,
        comment: a.comment.clone(),
        source: a.source.clone(),
        creation_date: (!a.no_creation_date).then(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        }),
        threads: 0,
        exclude: Vec::new(),
    };
    let name = mk::torrent_name(&a.path, opts.name.as_deref())?;
    let output = a
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{name}.torrent")));
    if !a.force && output.symlink_metadata().is_ok() {
        anyhow::bail!(
            "{} already exists (use --force to overwrite it)",
            output.display()
        );
    }
    opts.exclude.push(output.clone());

    let (path, scan_opts) = (a.path.clone(), opts.clone());
    let layout = tokio::task::spawn_blocking(move || mk::scan(&path, &scan_opts))
        .await?
        .with_context(|| format!("cannot make a torrent of {}", a.path.display()))?;
    if !a.quiet {
        for w in &layout.warnings {
            eprintln!("warning: {w}");
        }
    }
    let created = hash_layout(layout, opts, a.quiet, cancel)
        .await?
        .with_context(|| format!("cannot make a torrent of {}", a.path.display()))?;
    write_new(&output, &created.bytes, a.force)
        .with_context(|| format!("cannot write {}", output.display()))?;
    out!("{}", created.info_hash);
    if a.magnet {
        out!("{}", Magnet::from_torrent(&created.torrent));
    }
    if !a.quiet {
        eprintln!(
            "wrote {}: {} ({} in {} file{}, {} pieces of {})",
            output.display(),
            created.name,
            BinaryBytes(created.total),
            created.num_files,
            if created.num_files == 1 { "" } else { "s" },
            created.num_pieces,
            BinaryBytes(u64::from(created.piece_length)),
        );
    }
    Ok(())
}

/// Hashes `layout` off the reactor, with a bar on a terminal; Ctrl-C
/// stops the hashing.
async fn hash_layout(
    layout: crate::metainfo::create::Layout,
    opts: crate::metainfo::create::CreateOptions,
    quiet: bool,
    cancel: CancellationToken,
) -> Result<Result<crate::metainfo::create::Created, crate::metainfo::create::CreateError>> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let total = layout.total;
    let progress = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (p, s) = (progress.clone(), stop.clone());
    let mut job = tokio::task::spawn_blocking(move || layout.hash(&opts, &p, &s));
    let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
        let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        b.set_style(
            ProgressStyle::with_template(
                "hashing {bar:30.cyan/blue} {percent:>3}% {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        set_active_bar(Some(b.clone()));
        b
    });
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let result = loop {
        tokio::select! {
            r = &mut job => break r,
            _ = cancel.cancelled(), if !stop.load(Ordering::Relaxed) => {
                stop.store(true, Ordering::Relaxed);
            }
            _ = tick.tick() => {
                if let Some(b) = &bar {
                    b.set_position(progress.load(Ordering::Relaxed));
                }
            }
        }
    };
    if let Some(b) = bar {
        set_active_bar(None);
        b.set_position(progress.load(Ordering::Relaxed));
        b.finish_and_clear();
    }
    Ok(result?)
}

/// Writes `bytes` to `path`, replacing a file only when `force`: without
/// it a file that appeared while we were hashing is refused.
fn write_new(path: &std::path::Path, bytes: &[u8], force: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true);
    if force {
        o.create(true).truncate(true);
    } else {
        o.create_new(true);
    }
    let mut f = o.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
