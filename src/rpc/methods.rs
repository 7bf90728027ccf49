//! The Transmission RPC methods (rpc-version 16, the protocol of
//! Transmission 3.00): request parsing, dispatch, and the session-level
//! answers. Torrent fields are in `fields`.
//!
//! Every failure is an RPC result string, never a panic or an HTTP error:
//! clients show `result` to their user.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::fields;

mod session;
use crate::daemon::{AddRequest, Daemon, IdOrHash, Ids};
use crate::mse::Encryption;
use crate::types::InfoHash;
use session::*;

pub(crate) const RPC_VERSION: u32 = 16;
pub(crate) const RPC_VERSION_MINIMUM: u32 = 14;
pub(crate) const RPC_VERSION_SEMVER: &str = "5.2.0";

type Args = Map<String, Value>;

/// Answers one request body with the response body.
pub(crate) async fn handle(daemon: &Daemon, body: &[u8]) -> Vec<u8> {
    let req: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return reply(None, Err(format!("invalid JSON request: {e}"))),
    };
    let tag = req.get("tag").cloned();
    let Some(method) = req.get("method").and_then(Value::as_str) else {
        return reply(tag, Err("no method name".into()));
    };
    let empty = Map::new();
    let args = match req.get("arguments") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => return reply(tag, Err("arguments must be an object".into())),
    };
    if method == "torrent-get" {
        return reply(tag, torrent_get(daemon, args));
    }
    reply(tag, call(daemon, method, args).await.map(|a| (a, None)))
}

/// The response's bytes. `torrents`, when given, is the `torrents`
/// argument already serialised: torrent-get writes each torrent as it
/// goes instead of holding all of them as JSON values.
fn reply(tag: Option<Value>, r: Result<(Args, Option<Vec<u8>>), String>) -> Vec<u8> {
    let (args, torrents, result) = match r {
        Ok((a, t)) => (a, t, "success".to_string()),
        Err(e) => (Map::new(), None, e),
    };
    let mut out = Vec::with_capacity(torrents.as_ref().map_or(256, |t| t.len() + 256));
    out.extend_from_slice(b"{\"arguments\":{");
    let mut first = true;
    if let Some(t) = torrents {
        out.extend_from_slice(b"\"torrents\":");
        out.extend_from_slice(&t);
        first = false;
    }
    for (k, v) in &args {
        if !first {
            out.push(b',');
        }
        first = false;
        let _ = serde_json::to_writer(&mut out, k);
        out.push(b':');
        let _ = serde_json::to_writer(&mut out, v);
    }
    out.extend_from_slice(b"},\"result\":");
    let _ = serde_json::to_writer(&mut out, &result);
    // transmission-remote prints nothing for a response without its tag.
    if let Some(t) = tag {
        out.extend_from_slice(b",\"tag\":");
        let _ = serde_json::to_writer(&mut out, &t);
    }
    out.push(b'}');
    out
}

async fn call(d: &Daemon, method: &str, a: &Args) -> Result<Args, String> {
    match method {
        "session-get" => Ok(session_get(d, a)),
        "session-set" => session_set(d, a).await,
        "session-stats" => Ok(session_stats(d)),
        "session-close" => {
            d.cancel_token().cancel();
            Ok(Map::new())
        }
        "torrent-add" => torrent_add(d, a).await,
        "torrent-start" | "torrent-start-now" => {
            for e in d.select(&ids(a)?) {
                d.start_torrent(&e)
                    .await
                    .map_err(|e| super::error_chain(&e))?;
            }
            Ok(Map::new())
        }
        "torrent-stop" => {
            for e in d.select(&ids(a)?) {
                d.stop(&e).await.map_err(|e| super::error_chain(&e))?;
            }
            Ok(Map::new())
        }
        "torrent-verify" => {
            for e in d.select(&ids(a)?) {
                d.verify(&e).await.map_err(|e| super::error_chain(&e))?;
            }
            Ok(Map::new())
        }
        // Announces follow the trackers' intervals; a manual one is not
        // forced, but the call is valid.
        "torrent-reannounce" => {
            ids(a)?;
            Ok(Map::new())
        }
        "torrent-remove" => {
            let delete = opt_bool(a, "delete-local-data")?.unwrap_or(false);
            for e in d.select(&ids(a)?) {
                d.remove(&e, delete)
                    .await
                    .map_err(|e| super::error_chain(&e))?;
            }
            Ok(Map::new())
        }
        "torrent-set" => torrent_set(d, a).await,
        "torrent-set-location" => torrent_set_location(d, a).await,
        "torrent-rename-path" => {
            Err("renaming a torrent's files is not supported by xorrent".into())
        }
        "queue-move-top" | "queue-move-up" | "queue-move-down" | "queue-move-bottom" => {
            let chosen: Vec<u64> = d.select(&ids(a)?).iter().map(|e| e.id).collect();
            d.move_in_queue(&chosen, method.trim_start_matches("queue-move-"));
            Ok(Map::new())
        }
        "free-space" => free_space(a),
        "port-test" => Ok(port_test(d).await),
        "blocklist-update" => Err("no blocklist is configured".into()),
        _ => Err(format!("method name not recognized: {method}")),
    }
}

/// `ids` as Transmission allows it: absent (all), a number, a hash, a
/// list of both, or `"recently-active"`.
pub(crate) fn ids(a: &Args) -> Result<Ids, String> {
    let one = |v: &Value| -> Result<IdOrHash, String> {
        match v {
            Value::Number(n) => n
                .as_u64()
                .map(IdOrHash::Id)
                .ok_or_else(|| format!("invalid torrent id {n}")),
            Value::String(s) => {
                if let Ok(n) = s.parse::<u64>() {
                    return Ok(IdOrHash::Id(n));
                }
                InfoHash::from_hex(s)
                    .map(IdOrHash::Hash)
                    .ok_or_else(|| format!("invalid torrent id {s:?}"))
            }
            _ => Err("torrent ids are numbers or hash strings".into()),
        }
    };
    match a.get("ids") {
        None | Some(Value::Null) => Ok(Ids::All),
        Some(Value::String(s)) if s == "recently-active" => Ok(Ids::RecentlyActive),
        Some(Value::Array(list)) => Ok(Ids::Some(list.iter().map(one).collect::<Result<_, _>>()?)),
        Some(v) => Ok(Ids::Some(vec![one(v)?])),
    }
}

fn opt_bool(a: &Args, key: &str) -> Result<Option<bool>, String> {
    match a.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        // Some clients send 0/1.
        Some(Value::Number(n)) if n.as_i64().is_some() => Ok(Some(n.as_i64() != Some(0))),
        Some(_) => Err(format!("argument '{key}' must be a boolean")),
    }
}

// Float to integer saturates and drops the fraction, as wanted here.
#[allow(clippy::cast_possible_truncation)]
fn opt_u64(a: &Args, key: &str) -> Result<Option<u64>, String> {
    match a.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| *f >= 0.0 && f.is_finite())
                    .map(|f| f as u64)
            })
            .map(Some)
            .ok_or_else(|| format!("argument '{key}' must be a non-negative number")),
        Some(_) => Err(format!("argument '{key}' must be a number")),
    }
}

fn opt_f64(a: &Args, key: &str) -> Result<Option<f64>, String> {
    match a.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or_else(|| format!("argument '{key}' must be a number")),
        Some(_) => Err(format!("argument '{key}' must be a number")),
    }
}

fn opt_str<'a>(a: &'a Args, key: &str) -> Result<Option<&'a str>, String> {
    match a.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("argument '{key}' must be a string")),
    }
}

fn opt_indexes(a: &Args, key: &str) -> Result<Option<Vec<u32>>, String> {
    match a.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(l)) => l
            .iter()
            .map(|v| {
                v.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| format!("argument '{key}' must list file indexes"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(format!("argument '{key}' must be an array")),
    }
}

fn opt_labels(a: &Args) -> Result<Option<Vec<String>>, String> {
    match a.get("labels") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(l)) => l
            .iter()
            .map(|v| match v.as_str() {
                Some(s) if !s.contains(',') && s.len() <= 256 => Ok(s.trim().to_string()),
                _ => Err("labels are strings without commas".to_string()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|mut v| {
                v.retain(|s| !s.is_empty());
                v.truncate(64);
                Some(v)
            }),
        Some(_) => Err("argument 'labels' must be an array".into()),
    }
}

fn absolute_dir(p: &str, key: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(p);
    if !path.is_absolute() {
        return Err(format!("{key} must be an absolute path, not {p:?}"));
    }
    Ok(path)
}

fn torrent_get(d: &Daemon, a: &Args) -> Result<(Args, Option<Vec<u8>>), String> {
    let Some(Value::Array(f)) = a.get("fields") else {
        return Err("torrent-get needs a 'fields' array".into());
    };
    let names: Vec<&str> = f.iter().filter_map(Value::as_str).collect();
    let table = match opt_str(a, "format")? {
        None | Some("objects") => false,
        Some("table") => true,
        Some(other) => return Err(format!("unknown format {other:?}")),
    };
    let which = ids(a)?;
    let entries = d.select(&which);
    let queue: Vec<u64> = d.entries().iter().map(|e| e.id).collect();
    let ctx = fields::Context::new(d, &queue);
    let mut out = Vec::with_capacity(256 * entries.len() * names.len().min(20) / 4 + 2);
    out.push(b'[');
    if table {
        let _ = serde_json::to_writer(&mut out, &names);
    }
    for (i, e) in entries.iter().enumerate() {
        if table || i > 0 {
            out.push(b',');
        }
        let mut v = fields::Torrent::new(&ctx, e);
        if table {
            let row: Vec<Value> = names
                .iter()
                .map(|n| v.field(n).unwrap_or(Value::Null))
                .collect();
            let _ = serde_json::to_writer(&mut out, &row);
        } else {
            let mut m = Map::new();
            for n in &names {
                if let Some(val) = v.field(n) {
                    m.insert((*n).to_string(), val);
                }
            }
            let _ = serde_json::to_writer(&mut out, &m);
        }
    }
    out.push(b']');
    let mut extra = Map::new();
    if which == Ids::RecentlyActive {
        extra.insert("removed".into(), json!(d.recently_removed()));
    }
    Ok((extra, Some(out)))
}

/// Biggest .torrent fetched from a URL or read from a path.
const MAX_TORRENT: u64 = crate::metainfo::MAX_TORRENT_FILE;

async fn torrent_add(d: &Daemon, a: &Args) -> Result<Args, String> {
    let mut req = AddRequest {
        paused: opt_bool(a, "paused")?,
        download_dir: opt_str(a, "download-dir")?
            .map(|p| absolute_dir(p, "download-dir"))
            .transpose()?,
        wanted: opt_indexes(a, "files-wanted")?.unwrap_or_default(),
        unwanted: opt_indexes(a, "files-unwanted")?.unwrap_or_default(),
        labels: opt_labels(a)?.unwrap_or_default(),
        ..AddRequest::default()
    };
    if let Some(b64) = opt_str(a, "metainfo")? {
        // Some clients wrap base64 at 76 columns.
        let clean: String = b64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(clean.as_bytes())
            .map_err(|e| {
                format!("invalid or corrupt torrent file: metainfo is not base64 ({e})")
            })?;
        req.metainfo = Some(bytes);
    } else if let Some(name) = opt_str(a, "filename")? {
        let name = name.trim();
        if crate::magnet::is_magnet(name) {
            req.magnet = Some(name.to_string());
        } else if name.starts_with("http://") || name.starts_with("https://") {
            req.metainfo = Some(fetch_torrent(name).await?);
        } else {
            req.metainfo = Some(read_torrent(Path::new(name))?);
        }
    } else {
        return Err("torrent-add needs 'filename' or 'metainfo'".into());
    }
    let added = d.add(req).await.map_err(|e| match e {
        crate::daemon::DaemonError::BadTorrent(e) => {
            format!("invalid or corrupt torrent file: {e}")
        }
        other => other.to_string(),
    })?;
    let mut out = Map::new();
    out.insert(
        if added.duplicate {
            "torrent-duplicate"
        } else {
            "torrent-added"
        }
        .into(),
        json!({
            "id": added.id,
            "name": added.name,
            "hashString": added.info_hash.to_hex(),
        }),
    );
    Ok(out)
}

fn read_torrent(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut data = Vec::new();
    f.take(MAX_TORRENT + 1)
        .read_to_end(&mut data)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if data.len() as u64 > MAX_TORRENT {
        return Err(format!(
            "{} is larger than a torrent file can be",
            path.display()
        ));
    }
    Ok(data)
}

/// A .torrent file from an http(s) URL, at most a torrent's size.
pub(crate) async fn fetch_torrent(url: &str) -> Result<Vec<u8>, String> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| super::error_chain(&e))?;
    let mut resp = client
        .get(url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("cannot fetch {url}: {e}"))?;
    let mut data = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("cannot fetch {url}: {e}"))?
    {
        data.extend_from_slice(&chunk);
        if data.len() as u64 > MAX_TORRENT {
            return Err(format!("{url} is larger than a torrent file can be"));
        }
    }
    Ok(data)
}

async fn torrent_set(d: &Daemon, a: &Args) -> Result<Args, String> {
    let entries = d.select(&ids(a)?);
    let wanted = opt_indexes(a, "files-wanted")?;
    let unwanted = opt_indexes(a, "files-unwanted")?;
    let up = opt_u64(a, "uploadLimit")?;
    let up_on = opt_bool(a, "uploadLimited")?;
    let down = opt_u64(a, "downloadLimit")?;
    let down_on = opt_bool(a, "downloadLimited")?;
    let ratio = opt_f64(a, "seedRatioLimit")?;
    let ratio_mode = opt_u64(a, "seedRatioMode")?
        .map(|m| u8::try_from(m).ok().filter(|&m| m <= 2))
        .map(|m| m.ok_or("seedRatioMode is 0, 1 or 2"))
        .transpose()?;
    let labels = opt_labels(a)?;
    for e in entries {
        if wanted.is_some() || unwanted.is_some() {
            d.set_wanted(&e, wanted.as_deref(), unwanted.as_deref())
                .await
                .map_err(|e| super::error_chain(&e))?;
        }
        // KiB/s as Transmission counts them; a limit applies once enabled.
        let cap = |limit: Option<u64>, on: Option<bool>, cur: Option<u64>| -> Option<Option<u64>> {
            match (limit, on) {
                (_, Some(false)) => Some(None),
                (Some(l), Some(true)) => Some(Some(l.saturating_mul(1024))),
                (None, Some(true)) => Some(Some(cur.unwrap_or(100 * 1024))),
                (Some(l), None) if cur.is_some() => Some(Some(l.saturating_mul(1024))),
                _ => None,
            }
        };
        let u = cap(up, up_on, e.record.up_limit);
        let dn = cap(down, down_on, e.record.down_limit);
        if u.is_some() || dn.is_some() {
            d.set_limits(&e, u, dn)
                .map_err(|e| super::error_chain(&e))?;
        }
        if ratio.is_some() || ratio_mode.is_some() || labels.is_some() {
            let labels = labels.clone();
            d.set_record(&e, |r| {
                if let Some(x) = ratio {
                    r.seed_ratio = x.max(0.0);
                }
                if let Some(m) = ratio_mode {
                    r.seed_ratio_mode = m;
                }
                if let Some(l) = labels {
                    r.labels = l;
                }
            })
            .await
            .map_err(|e| super::error_chain(&e))?;
        }
    }
    Ok(Map::new())
}

async fn torrent_set_location(d: &Daemon, a: &Args) -> Result<Args, String> {
    let Some(loc) = opt_str(a, "location")? else {
        return Err("torrent-set-location needs 'location'".into());
    };
    let dir = absolute_dir(loc, "location")?;
    let moving = opt_bool(a, "move")?.unwrap_or(false);
    for e in d.select(&ids(a)?) {
        d.set_location(&e, &dir, moving)
            .await
            .map_err(|e| super::error_chain(&e))?;
    }
    Ok(Map::new())
}

fn free_bytes(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a zeroed out-parameter.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let unit = st.f_frsize as u64;
    Some((
        (st.f_bavail as u64).saturating_mul(unit),
        (st.f_blocks as u64).saturating_mul(unit),
    ))
}

fn free_space(a: &Args) -> Result<Args, String> {
    let Some(p) = opt_str(a, "path")? else {
        return Err("free-space needs 'path'".into());
    };
    let (free, total) =
        free_bytes(Path::new(p)).ok_or_else(|| format!("cannot read free space of {p:?}"))?;
    let mut m = Map::new();
    m.insert("path".into(), p.into());
    m.insert("size-bytes".into(), free.into());
    m.insert("total_size".into(), total.into());
    Ok(m)
}

/// Checked from here (no outside service is contacted): is the peer port
/// accepting connections?
async fn port_test(d: &Daemon) -> Args {
    let port = d.session().listen_port();
    let ip = d
        .config()
        .session
        .bind
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    let open = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        tokio::net::TcpStream::connect((ip, port)),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    let mut m = Map::new();
    m.insert("port-is-open".into(), open.into());
    m
}
