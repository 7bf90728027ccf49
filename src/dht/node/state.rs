//! The node's saved state: its id and good nodes (JSON), written on exit
//! and every 10 minutes, read at the next start.

use std::net::SocketAddr;
use std::time::Instant;

use super::Node;
use crate::dht::krpc::NodeId;

impl Node {
    /// Writes the id and good nodes (JSON) for the next run.
    pub(super) fn save(&self) {
        let Some(path) = &self.cfg.state_file else {
            return;
        };
        let nodes: Vec<String> = self
            .table
            .good_nodes(Instant::now())
            .iter()
            .map(|n| format!("{} {}", n.addr, n.id))
            .collect();
        let v = serde_json::json!({"id": self.id().to_string(), "nodes": nodes});
        let tmp = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&tmp, serde_json::to_vec_pretty(&v)?)?;
            std::fs::rename(&tmp, path)
        };
        if let Err(e) = write() {
            tracing::warn!("cannot save DHT state to {}: {e}", path.display());
        }
    }
}

/// A saved state: the node id and the nodes to ping at start. A missing
/// or unreadable file is a fresh start, never an error.
pub fn load_state(path: &std::path::Path) -> (Option<NodeId>, Vec<SocketAddr>) {
    let Ok(bytes) = std::fs::read(path) else {
        return (None, Vec::new());
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        tracing::warn!("ignoring unreadable DHT state {}", path.display());
        return (None, Vec::new());
    };
    let id = v["id"].as_str().and_then(|s| {
        let mut b = [0u8; 20];
        hex::decode_to_slice(s, &mut b).ok().map(|_| NodeId(b))
    });
    let nodes = v["nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str()?.split(' ').next()?.parse().ok())
                .take(1000)
                .collect()
        })
        .unwrap_or_default();
    (id, nodes)
}
