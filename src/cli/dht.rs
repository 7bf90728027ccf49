//! `xorrent dht lookup` and `xorrent dht node`: the DHT on its own, for
//! inspection.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use tokio_util::sync::CancellationToken;

use super::PUBLIC_ROUTERS;
use crate::dht::node::{load_state, Dht, DhtConfig};
use crate::metainfo::Torrent;
use crate::types::InfoHash;

#[derive(Subcommand, Debug)]
pub enum DhtCommand {
    /// Look an info-hash up: the peers found and the nodes asked.
    Lookup(LookupArgs),
    /// Run a DHT node until Ctrl-C, printing its table's state.
    Node(NodeArgs),
}

/// Where the node listens and how it joins.
#[derive(Args, Debug)]
pub struct NodeFlags {
    /// Local IPv4 address of the node.
    #[arg(long)]
    pub bind: Option<IpAddr>,
    /// UDP port (0: any free one).
    #[arg(long)]
    pub port: Option<u16>,
    /// A node to join through (repeatable) [default: the public mainline routers].
    #[arg(long = "dht-bootstrap", value_name = "HOST:PORT")]
    pub dht_bootstrap: Vec<String>,
    /// Where the node id and good nodes are kept between runs (none: not kept).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct LookupArgs {
    /// An info-hash in hex, or a .torrent file.
    pub target: String,
    #[command(flatten)]
    pub node: NodeFlags,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct NodeArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    /// Seconds between stats lines.
    #[arg(long, default_value_t = 5, value_name = "SECS")]
    pub stats_interval: u64,
}

async fn start(f: &NodeFlags, default_port: u16, cancel: CancellationToken) -> Result<Dht> {
    let ip = f.bind.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let mut cfg = DhtConfig::new(SocketAddr::new(ip, f.port.unwrap_or(default_port)));
    cfg.bootstrap = if f.dht_bootstrap.is_empty() {
        PUBLIC_ROUTERS.iter().map(|s| s.to_string()).collect()
    } else {
        f.dht_bootstrap.clone()
    };
    if let Some(dir) = &f.state_dir {
        let file = dir.join("dht.json");
        let (id, nodes) = load_state(&file);
        cfg.id = id;
        cfg.nodes = nodes;
        cfg.state_file = Some(file);
    }
    let addr = cfg.bind;
    Dht::start(cfg, cancel)
        .await
        .with_context(|| format!("cannot start a DHT node on {addr}"))
}

pub(super) async fn run(c: DhtCommand, cancel: CancellationToken) -> Result<()> {
    match c {
        DhtCommand::Lookup(a) => lookup(a, cancel).await,
        DhtCommand::Node(a) => node(a, cancel).await,
    }
}

async fn lookup(a: LookupArgs, cancel: CancellationToken) -> Result<()> {
    let ih = match InfoHash::from_hex(&a.target) {
        Some(ih) => ih,
        None => {
            Torrent::from_file(Path::new(&a.target))
                .with_context(|| {
                    format!(
                        "{} is not a 40-digit hex info-hash or a .torrent file",
                        a.target
                    )
                })?
                .info_hash
        }
    };
    let node_cancel = cancel.child_token();
    let dht = start(&a.node, 0, node_cancel.clone()).await?;
    let (mut found, done) = dht.get_peers(ih, None).await;
    let mut peers = Vec::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => bail!("interrupted"),
            p = found.recv() => match p {
                Some(p) => peers.extend(p),
                None => break,
            },
        }
    }
    let stats = done.await.context("the DHT node stopped")?;
    node_cancel.cancel();
    dht.stopped().await;
    if a.json {
        let v = serde_json::json!({
            "info_hash": ih.to_hex(),
            "peers": peers.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            "queries": stats.queries,
            "rounds": stats.rounds,
            "closest": stats.closest.iter().map(|n| serde_json::json!({"id": n.id.to_string(), "addr": n.addr.to_string()})).collect::<Vec<_>>(),
            "elapsed_secs": stats.elapsed.as_secs_f64(),
        });
        out!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for p in &peers {
            out!("{p}");
        }
        eprintln!(
            "{} peers; asked {} nodes in {} rounds, {:.2} s; {} closest nodes answered",
            peers.len(),
            stats.queries,
            stats.rounds,
            stats.elapsed.as_secs_f64(),
            stats.closest.len()
        );
    }
    Ok(())
}

async fn node(a: NodeArgs, cancel: CancellationToken) -> Result<()> {
    let node_cancel = cancel.child_token();
    let dht = start(&a.node, 6881, node_cancel.clone()).await?;
    eprintln!("dht node up: {} id {}", dht.local_addr(), dht.id());
    let every = Duration::from_secs(a.stats_interval.max(1));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
        if let Some(s) = dht.stats().await {
            eprintln!(
                "dht: {} good, {} questionable, {} bad nodes in {} buckets; storing {} peers for {} torrents; queries {} in, {} out",
                s.good, s.questionable, s.bad, s.buckets, s.stored_peers, s.stored_torrents, s.queries_in, s.queries_out
            );
        }
    }
    node_cancel.cancel();
    dht.stopped().await;
    Ok(())
}
