//! `xorrent daemon` (the torrent manager) and `xorrent remote` (its
//! command-line remote, over the same Transmission RPC the web page and
//! transmission-remote use).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::{session_config, NetArgs};
use crate::daemon::{Daemon, DaemonConfig};
use crate::rpc::{self, RpcConfig};

#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// Where torrents' files go unless a request names another directory.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub download_dir: PathBuf,
    /// Serve the web page and the Transmission RPC here.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:9091")]
    pub rpc_bind: SocketAddr,
    /// Require HTTP Basic auth (needed to serve beyond loopback).
    #[arg(long, env = "XORRENT_RPC_AUTH", value_name = "USER:PASS", value_parser = parse_auth)]
    pub rpc_auth: Option<(String, String)>,
    /// A host name the page may be reached by (repeatable); IP addresses
    /// and `localhost` always work. Guards against DNS rebinding.
    #[arg(long = "rpc-host", value_name = "NAME")]
    pub rpc_hosts: Vec<String>,
    /// Add every .torrent file dropped in DIR.
    #[arg(long, value_name = "DIR")]
    pub watch_dir: Option<PathBuf>,
    /// Seed every file or directory put in DIR.
    #[arg(long, value_name = "DIR")]
    pub share_dir: Option<PathBuf>,
    #[command(flatten)]
    pub net: NetArgs,
}

fn parse_auth(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((u, p)) if !u.is_empty() => Ok((u.to_string(), p.to_string())),
        _ => Err("expected USER:PASS".into()),
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(p).with_context(|| format!("cannot create {}", p.display()))?;
    p.canonicalize()
        .with_context(|| format!("cannot resolve {}", p.display()))
}

pub(super) async fn daemon(a: DaemonArgs, cancel: CancellationToken) -> Result<()> {
    let rpc_config = RpcConfig {
        bind: a.rpc_bind,
        auth: a.rpc_auth.clone(),
        hosts: a.rpc_hosts.clone(),
    };
    // Refused before anything starts: an open RPC is a remote shell.
    let listener = rpc::bind(&rpc_config).await?;
    let Some(state_dir) = a.net.dht.dir() else {
        bail!("no state directory: give --state-dir DIR (or set HOME)");
    };
    let config = DaemonConfig {
        download_dir: absolute(&a.download_dir)?,
        state_dir: absolute(&state_dir)?,
        watch_dir: a.watch_dir.as_deref().map(absolute).transpose()?,
        share_dir: a.share_dir.as_deref().map(absolute).transpose()?,
        peers: a.net.peers.clone(),
        session: session_config(&a.net, true),
    };
    let d = Daemon::start(config, &cancel)
        .await
        .context("cannot start the daemon")?;
    let url = format!("http://{}/", listener.local_addr().unwrap_or(a.rpc_bind));
    eprintln!(
        "xorrent daemon: {} torrent(s); web page and Transmission RPC at {url} \
         (peers on port {})",
        d.entries().len(),
        d.session().listen_port()
    );
    let stop = d.cancel_token();
    let server = tokio::spawn(rpc::serve(d.clone(), rpc_config, listener, stop.clone()));
    // Ctrl-C, SIGTERM, or an RPC `session-close`.
    stop.cancelled().await;
    eprintln!("xorrent daemon: stopping");
    d.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    Ok(())
}

#[derive(Args, Debug)]
pub struct RemoteArgs {
    /// The daemon's RPC URL.
    #[arg(
        long,
        env = "XORRENT_URL",
        default_value = "http://127.0.0.1:9091/transmission/rpc"
    )]
    pub url: String,
    /// USER:PASS for a daemon started with --rpc-auth.
    #[arg(long, env = "XORRENT_AUTH", value_parser = parse_auth)]
    pub auth: Option<(String, String)>,
    #[command(subcommand)]
    pub command: RemoteCommand,
}

#[derive(Subcommand, Debug)]
pub enum RemoteCommand {
    /// Add torrents: .torrent files (sent to the daemon), URLs or magnets.
    Add {
        #[arg(required = true, value_name = "FILE|URL|MAGNET")]
        sources: Vec<String>,
        /// Add without starting.
        #[arg(long)]
        paused: bool,
        /// Where the daemon puts the files (a path on its machine).
        #[arg(long, value_name = "DIR")]
        download_dir: Option<PathBuf>,
    },
    /// One line per torrent: id, progress, state, rates, name.
    List,
    /// Start torrents (ids, info-hashes, or `all`).
    Start { ids: Vec<String> },
    /// Stop torrents.
    Stop { ids: Vec<String> },
    /// Remove torrents from the daemon.
    Remove {
        ids: Vec<String>,
        /// Delete their downloaded files too.
        #[arg(long)]
        delete: bool,
    },
    /// Everything about one torrent.
    Info { id: String },
}

/// A Transmission RPC client: the session-id handshake and auth.
struct Client {
    http: reqwest::Client,
    url: String,
    auth: Option<(String, String)>,
    session_id: Option<String>,
}

impl Client {
    async fn call(&mut self, method: &str, arguments: Value) -> Result<Value> {
        let body = json!({"method": method, "arguments": arguments, "tag": 1});
        for _ in 0..2 {
            let mut req = self
                .http
                .post(&self.url)
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&body)?);
            if let Some((u, p)) = &self.auth {
                req = req.basic_auth(u, Some(p));
            }
            if let Some(id) = &self.session_id {
                req = req.header(rpc::SESSION_HEADER, id);
            }
            let resp = req
                .send()
                .await
                .with_context(|| format!("cannot reach the daemon at {}", self.url))?;
            match resp.status().as_u16() {
                409 => {
                    self.session_id = resp
                        .headers()
                        .get(rpc::SESSION_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    continue;
                }
                401 => bail!("the daemon refused the credentials (give --auth USER:PASS)"),
                200 => {}
                s => bail!("the daemon answered HTTP {s}"),
            }
            let bytes = resp
                .bytes()
                .await
                .context("cannot read the daemon's answer")?;
            let v: Value =
                serde_json::from_slice(&bytes).context("the daemon's answer is not JSON")?;
            return match v.get("result").and_then(Value::as_str) {
                Some("success") => Ok(v.get("arguments").cloned().unwrap_or(Value::Null)),
                Some(err) => bail!("{method}: {err}"),
                None => bail!("{method}: the answer has no result"),
            };
        }
        bail!("the daemon kept refusing the session id")
    }
}

fn ids_arg(ids: &[String]) -> Result<Value> {
    if ids.is_empty() {
        bail!("name the torrents: ids, info-hashes, or `all`");
    }
    if ids.iter().any(|i| i == "all") {
        return Ok(Value::Null);
    }
    let mut out = Vec::new();
    for i in ids.iter().flat_map(|s| s.split(',')) {
        match i.parse::<u64>() {
            Ok(n) => out.push(json!(n)),
            Err(_) if i.len() == 40 && i.bytes().all(|b| b.is_ascii_hexdigit()) => {
                out.push(json!(i))
            }
            Err(_) => bail!("{i:?} is not a torrent id or info-hash"),
        }
    }
    Ok(Value::Array(out))
}

fn with_ids(ids: Value, mut args: Value) -> Value {
    if !ids.is_null() {
        args["ids"] = ids;
    }
    args
}

fn size(b: u64) -> String {
    super::human_bytes(b)
}

pub(super) async fn remote(a: RemoteArgs) -> Result<()> {
    let mut c = Client {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?,
        url: a.url.clone(),
        auth: a.auth.clone(),
        session_id: None,
    };
    match a.command {
        RemoteCommand::Add {
            sources,
            paused,
            download_dir,
        } => add(&mut c, sources, paused, download_dir).await?,
        RemoteCommand::List => list(&mut c).await?,
        RemoteCommand::Start { ids } => {
            c.call("torrent-start", with_ids(ids_arg(&ids)?, json!({})))
                .await?;
        }
        RemoteCommand::Stop { ids } => {
            c.call("torrent-stop", with_ids(ids_arg(&ids)?, json!({})))
                .await?;
        }
        RemoteCommand::Remove { ids, delete } => {
            c.call(
                "torrent-remove",
                with_ids(ids_arg(&ids)?, json!({"delete-local-data": delete})),
            )
            .await?;
        }
        RemoteCommand::Info { id } => info(&mut c, id).await?,
    }
    Ok(())
}

async fn add(
    c: &mut Client,
    sources: Vec<String>,
    paused: bool,
    dir: Option<PathBuf>,
) -> Result<()> {
    for s in sources {
        let mut args = json!({"paused": paused});
        if let Some(d) = &dir {
            args["download-dir"] = json!(d);
        }
        let p = Path::new(&s);
        if !crate::magnet::is_magnet(&s) && !s.contains("://") {
            let bytes = std::fs::read(p).with_context(|| format!("cannot read {s}"))?;
            args["metainfo"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
        } else {
            args["filename"] = json!(s);
        }
        let r = c.call("torrent-add", args).await?;
        let (what, t) = match (r.get("torrent-added"), r.get("torrent-duplicate")) {
            (Some(t), _) => ("added", t),
            (None, Some(t)) => ("already there", t),
            _ => bail!("torrent-add: unexpected answer {r}"),
        };
        out!(
            "{what}: {} {} {}",
            t["id"],
            t["hashString"].as_str().unwrap_or(""),
            t["name"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

async fn list(c: &mut Client) -> Result<()> {
    let r = c
        .call(
            "torrent-get",
            json!({"fields": ["id", "name", "status", "percentDone", "sizeWhenDone",
                              "rateDownload", "rateUpload", "eta", "uploadRatio",
                              "error", "errorString"]}),
        )
        .await?;
    out!(
        "{:>4}  {:>6}  {:>10}  {:<11}  {:>10}  {:>10}  {:>6}  Name",
        "ID",
        "Done",
        "Size",
        "Status",
        "Down",
        "Up",
        "Ratio"
    );
    for t in r["torrents"].as_array().into_iter().flatten() {
        let status = status_text(&t["status"], &t["error"]);
        out!(
            "{:>4}  {:>5.1}%  {:>10}  {:<11}  {:>8}/s  {:>8}/s  {:>6}  {}",
            t["id"],
            t["percentDone"].as_f64().unwrap_or(0.0) * 100.0,
            size(t["sizeWhenDone"].as_u64().unwrap_or(0)),
            status,
            size(t["rateDownload"].as_u64().unwrap_or(0)),
            size(t["rateUpload"].as_u64().unwrap_or(0)),
            ratio_text(t["uploadRatio"].as_f64().unwrap_or(-1.0)),
            t["name"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

async fn info(c: &mut Client, id: String) -> Result<()> {
    let r = c
        .call(
            "torrent-get",
            with_ids(
                ids_arg(&[id])?,
                json!({"fields": ["id", "name", "hashString", "status", "error",
                                  "errorString", "percentDone", "sizeWhenDone", "totalSize",
                                  "leftUntilDone", "rateDownload", "rateUpload", "eta",
                                  "peersConnected", "uploadedEver", "downloadedEver",
                                  "uploadRatio", "downloadDir", "magnetLink", "pieceCount",
                                  "pieceSize", "files", "wanted"]}),
            ),
        )
        .await?;
    let Some(t) = r["torrents"].as_array().and_then(|l| l.first()) else {
        bail!("no such torrent");
    };
    let s = |k: &str| t[k].as_str().unwrap_or("").to_string();
    let n = |k: &str| t[k].as_u64().unwrap_or(0);
    out!("Name: {}", s("name"));
    out!("Id: {}", t["id"]);
    out!("Hash: {}", s("hashString"));
    out!("Magnet: {}", s("magnetLink"));
    out!("Location: {}", s("downloadDir"));
    out!("State: {}", status_text(&t["status"], &t["error"]));
    if !s("errorString").is_empty() {
        out!("Error: {}", s("errorString"));
    }
    out!(
        "Progress: {:.1}% of {} ({} left)",
        t["percentDone"].as_f64().unwrap_or(0.0) * 100.0,
        size(n("sizeWhenDone")),
        size(n("leftUntilDone"))
    );
    out!(
        "Rates: {}/s down, {}/s up; peers {}",
        size(n("rateDownload")),
        size(n("rateUpload")),
        n("peersConnected")
    );
    out!(
        "Totals: {} down, {} up, ratio {}",
        size(n("downloadedEver")),
        size(n("uploadedEver")),
        ratio_text(t["uploadRatio"].as_f64().unwrap_or(-1.0))
    );
    out!("Pieces: {} x {}", n("pieceCount"), size(n("pieceSize")));
    let wanted = t["wanted"].as_array().cloned().unwrap_or_default();
    for (i, f) in t["files"].as_array().into_iter().flatten().enumerate() {
        let w = wanted.get(i).and_then(Value::as_i64).unwrap_or(1) != 0;
        out!(
            "  {i:>3}: {:>5.1}% {:>10} {} {}",
            pct(f["bytesCompleted"].as_u64(), f["length"].as_u64()),
            size(f["length"].as_u64().unwrap_or(0)),
            if w { " " } else { "-" },
            f["name"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

fn pct(done: Option<u64>, len: Option<u64>) -> f64 {
    match (done, len) {
        (Some(d), Some(l)) if l > 0 => d as f64 * 100.0 / l as f64,
        _ => 100.0,
    }
}

fn ratio_text(r: f64) -> String {
    if r < 0.0 {
        "None".into()
    } else {
        format!("{r:.2}")
    }
}

fn status_text(status: &Value, error: &Value) -> &'static str {
    if error.as_i64().unwrap_or(0) != 0 {
        return "Error";
    }
    match status.as_i64().unwrap_or(0) {
        0 => "Stopped",
        1 => "Check wait",
        2 => "Verifying",
        3 => "Queued",
        4 => "Downloading",
        5 => "Seed wait",
        6 => "Seeding",
        _ => "Unknown",
    }
}
