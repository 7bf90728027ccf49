//! `session-get`, `session-set` and `session-stats`.

use super::*;

pub(super) fn session_get(d: &Daemon, a: &Args) -> Args {
    let s = d.settings();
    let cfg = d.config();
    let (up, down) = d.session().rate_limits();
    let kib = |b: u64| b / 1024;
    let mut all = fixed_session_fields();
    let Value::Object(now) = json!({
        "config-dir": cfg.state_dir.to_string_lossy(),
        "dht-enabled": cfg.session.dht.is_some(),
        "download-dir": d.download_dir().to_string_lossy(),
        "download-dir-free-space": free_bytes(&d.download_dir()).map_or(-1, |(f, _)| f as i64),
        // Transmission's words; "tolerated" (plaintext preferred) is the
        // nearest to `disable`.
        "encryption": match cfg.session.engine.encryption {
            Encryption::Prefer => "preferred",
            Encryption::Require => "required",
            Encryption::Disable => "tolerated",
        },
        "incomplete-dir": d.download_dir().to_string_lossy(),
        "peer-limit-global": cfg.session.max_peers,
        "peer-limit-per-torrent": cfg.session.engine.max_peers,
        "peer-port": d.session().listen_port(),
        "rpc-version": RPC_VERSION,
        "rpc-version-minimum": RPC_VERSION_MINIMUM,
        "rpc-version-semver": RPC_VERSION_SEMVER,
        "seedRatioLimit": s.seed_ratio_limit.unwrap_or(2.0),
        "seedRatioLimited": s.seed_ratio_limited.unwrap_or(false),
        "speed-limit-down": s.speed_limit_down.unwrap_or(kib(down)),
        "speed-limit-down-enabled": down > 0,
        "speed-limit-up": s.speed_limit_up.unwrap_or(kib(up)),
        "speed-limit-up-enabled": up > 0,
        "start-added-torrents": s.start_added_torrents.unwrap_or(true),
        "units": {
            "speed-units": ["KiB/s", "MiB/s", "GiB/s", "TiB/s"],
            "speed-bytes": 1024,
            "size-units": ["KiB", "MiB", "GiB", "TiB"],
            "size-bytes": 1024,
            "memory-units": ["KiB", "MiB", "GiB", "TiB"],
            "memory-bytes": 1024
        },
        // Sonarr and Radarr read the leading number and want >= 2.40.
        "version": format!("3.00 (xorrent {})", env!("CARGO_PKG_VERSION")),
    }) else {
        unreachable!("an object literal")
    };
    all.extend(now);
    match a.get("fields").and_then(Value::as_array) {
        Some(want) => {
            let want: Vec<&str> = want.iter().filter_map(Value::as_str).collect();
            all.retain(|k, _| want.contains(&k.as_str()));
            all
        }
        None => all,
    }
}

/// Session fields whose values never change here, most of them for
/// features we do not have.
pub(super) fn fixed_session_fields() -> Args {
    let Value::Object(all) = json!({
        "alt-speed-down": 50,
        "alt-speed-enabled": false,
        "alt-speed-time-begin": 540,
        "alt-speed-time-day": 127,
        "alt-speed-time-enabled": false,
        "alt-speed-time-end": 1020,
        "alt-speed-up": 50,
        "blocklist-enabled": false,
        "blocklist-size": 0,
        "blocklist-url": "",
        "cache-size-mb": 0,
        "download-queue-enabled": false,
        "download-queue-size": 5,
        "idle-seeding-limit": 30,
        "idle-seeding-limit-enabled": false,
        "incomplete-dir-enabled": false,
        "lpd-enabled": false,
        "peer-port-random-on-start": false,
        "pex-enabled": true,
        "port-forwarding-enabled": false,
        "queue-stalled-enabled": false,
        "queue-stalled-minutes": 30,
        "rename-partial-files": false,
        "script-torrent-done-enabled": false,
        "script-torrent-done-filename": "",
        "seed-queue-enabled": false,
        "seed-queue-size": 10,
        "trash-original-torrent-files": false,
        "utp-enabled": false,
    }) else {
        unreachable!("an object literal")
    };
    all
}

pub(super) async fn session_set(d: &Daemon, a: &Args) -> Result<Args, String> {
    let down = opt_u64(a, "speed-limit-down")?;
    let up = opt_u64(a, "speed-limit-up")?;
    let down_on = opt_bool(a, "speed-limit-down-enabled")?;
    let up_on = opt_bool(a, "speed-limit-up-enabled")?;
    let ratio = opt_f64(a, "seedRatioLimit")?;
    let ratio_on = opt_bool(a, "seedRatioLimited")?;
    let start = opt_bool(a, "start-added-torrents")?;
    let dir = opt_str(a, "download-dir")?
        .map(|p| absolute_dir(p, "download-dir"))
        .transpose()?;
    if let Some(r) = ratio {
        if r < 0.0 {
            return Err("seedRatioLimit must not be negative".into());
        }
    }
    d.update_settings(|s| {
        if down.is_some() {
            s.speed_limit_down = down;
        }
        if up.is_some() {
            s.speed_limit_up = up;
        }
        // Setting a limit without the flag, as transmission-remote -d N
        // does not, keeps the flag; an explicit flag wins.
        if down_on.is_some() {
            s.speed_limit_down_enabled = down_on;
        } else if down.is_some() && s.speed_limit_down_enabled.is_none() {
            s.speed_limit_down_enabled = Some(false);
        }
        if up_on.is_some() {
            s.speed_limit_up_enabled = up_on;
        } else if up.is_some() && s.speed_limit_up_enabled.is_none() {
            s.speed_limit_up_enabled = Some(false);
        }
        if ratio.is_some() {
            s.seed_ratio_limit = ratio;
        }
        if ratio_on.is_some() {
            s.seed_ratio_limited = ratio_on;
        }
        if start.is_some() {
            s.start_added_torrents = start;
        }
        if dir.is_some() {
            s.download_dir = dir;
        }
    })
    .map_err(|e| crate::rpc::error_chain(&e))?;
    if ratio.is_some() || ratio_on.is_some() {
        d.apply_default_ratio().await;
    }
    Ok(Map::new())
}

pub(super) fn session_stats(d: &Daemon) -> Args {
    let entries = d.entries();
    let (mut down, mut up, mut active, mut paused) = (0u64, 0u64, 0u64, 0u64);
    let (mut cur_up, mut cur_down) = (0u64, 0u64);
    for e in &entries {
        let s = e.handle.stats();
        down += s.down_rate;
        up += s.up_rate;
        cur_up += s.uploaded;
        cur_down += s.received;
        if s.stage.is_active() {
            active += 1;
        } else {
            paused += 1;
        }
    }
    let st = d.settings();
    let secs = d.uptime().as_secs();
    let json = json!({
        "activeTorrentCount": active,
        "downloadSpeed": down,
        "pausedTorrentCount": paused,
        "torrentCount": entries.len(),
        "uploadSpeed": up,
        "cumulative-stats": {
            "uploadedBytes": st.uploaded_total + cur_up,
            "downloadedBytes": st.downloaded_total + cur_down,
            "filesAdded": st.files_added,
            "sessionCount": st.session_count,
            "secondsActive": st.seconds_active + secs,
        },
        "current-stats": {
            "uploadedBytes": cur_up,
            "downloadedBytes": cur_down,
            "filesAdded": entries.len(),
            "sessionCount": 1,
            "secondsActive": secs,
        },
    });
    match json {
        Value::Object(m) => m,
        _ => unreachable!("an object literal"),
    }
}
