//! Keeping the table alive: bootstrap (and its retries while the table is
//! empty), refreshing quiet buckets, and expiring our unanswered queries.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::lookups::LookupKind;
use super::{Node, Purpose};
use crate::dht::krpc::Query;

impl Node {
    /// Asks the routers and known nodes for the nodes near our own id.
    pub(super) async fn bootstrap(&mut self) {
        self.last_bootstrap = Instant::now();
        let mut addrs: Vec<SocketAddr> = self.cfg.nodes.clone();
        for host in self.cfg.bootstrap.clone() {
            match tokio::net::lookup_host(host.as_str()).await {
                Ok(found) => addrs.extend(found.filter(SocketAddr::is_ipv4)),
                Err(e) => tracing::warn!("DHT bootstrap {host}: {e}"),
            }
        }
        addrs.sort();
        addrs.dedup();
        let own = self.id();
        for a in addrs {
            let q = Query::FindNode { target: own };
            self.query(a, None, q, Purpose::Bootstrap).await;
        }
    }

    /// Routers may have been down or not up yet: while the table is
    /// empty, bootstrap again, each wait twice the last (up to 5 min).
    pub(super) async fn retry_bootstrap(&mut self, now: Instant) {
        if self.table.is_empty() && now.duration_since(self.last_bootstrap) >= self.rebootstrap {
            self.rebootstrap = (self.rebootstrap * 2).min(Duration::from_secs(300));
            self.self_lookup = false;
            self.bootstrap().await;
        }
    }

    /// Our queries unanswered for `rpc_timeout` count as failed.
    pub(super) async fn expire_rpcs(&mut self, now: Instant) {
        let limit = self.cfg.rpc_timeout;
        let expired: Vec<u16> = self
            .pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.sent) >= limit)
            .map(|(t, _)| *t)
            .collect();
        for t in expired {
            let p = self.pending.remove(&t).expect("listed above");
            if let Some(id) = p.id {
                self.table.on_timeout(&id, now);
            }
            self.on_query_failed(p.purpose, p.id).await;
        }
    }

    pub(super) async fn refresh(&mut self, now: Instant) {
        for target in self.table.refresh_targets(now) {
            self.start_lookup(target, Vec::new(), LookupKind::FindNode { done: None })
                .await;
        }
    }
}
