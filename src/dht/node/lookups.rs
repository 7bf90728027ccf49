//! Our lookups: each is a [`Task`] driven by the answers (and timeouts)
//! of its queries; a get_peers lookup ends with its announces, then
//! reports to whoever asked.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::{LookupStats, Node, Purpose};
use crate::dht::krpc::{NodeId, NodeInfo, Query, Response};
use crate::dht::lookup::Lookup;
use crate::dht::routing::K;
use crate::types::InfoHash;

pub(super) enum LookupKind {
    GetPeers {
        info_hash: InfoHash,
        announce: Option<u16>,
        peers: mpsc::Sender<Vec<SocketAddr>>,
        done: Option<oneshot::Sender<LookupStats>>,
    },
    FindNode {
        done: Option<oneshot::Sender<LookupStats>>,
    },
    /// The lookup of our own id after bootstrap; when it ends, every
    /// bucket is refreshed once.
    Join,
}

pub(super) struct Task {
    lookup: Lookup,
    kind: LookupKind,
    started: Instant,
    /// Announces sent and still awaited; the task ends when they settle.
    announcing: usize,
    announced: usize,
    finishing: bool,
}

impl Node {
    pub(super) async fn start_lookup(
        &mut self,
        target: NodeId,
        extra: Vec<NodeInfo>,
        kind: LookupKind,
    ) {
        let id = self.add_task(target, extra, kind);
        self.drive(id).await;
    }

    /// A new lookup, first driven by the caller or on the next tick.
    fn add_task(&mut self, target: NodeId, extra: Vec<NodeInfo>, kind: LookupKind) -> u64 {
        let mut seeds = self.table.closest(&target, K * 2, Instant::now());
        seeds.extend(extra);
        let id = self.next_task;
        self.next_task += 1;
        self.tasks.insert(
            id,
            Task {
                lookup: Lookup::new(target, seeds),
                kind,
                started: Instant::now(),
                announcing: 0,
                announced: 0,
                finishing: false,
            },
        );
        id
    }

    pub(super) async fn drive_all(&mut self) {
        let ids: Vec<u64> = self.tasks.keys().copied().collect();
        for id in ids {
            self.drive(id).await;
        }
    }

    /// Sends the lookup's next queries; at the end, its announces; then
    /// reports and forgets it.
    async fn drive(&mut self, id: u64) {
        let Some(task) = self.tasks.get(&id) else {
            return;
        };
        if !task.finishing {
            if !self.ask_next(id).await {
                return;
            }
            self.announce(id).await;
        }
        if self.tasks[&id].announcing > 0 {
            return;
        }
        self.report(id);
    }

    /// Hands found peers on and sends the lookup's next queries; whether
    /// the lookup was done before they were sent.
    async fn ask_next(&mut self, id: u64) -> bool {
        let task = self.tasks.get_mut(&id).expect("still here");
        let asks = task.lookup.next_queries();
        let peers = task.lookup.take_peers();
        let target = task.lookup.target();
        if let LookupKind::GetPeers { peers: tx, .. } = &task.kind {
            if !peers.is_empty() {
                let _ = tx.try_send(peers);
            }
        }
        let get_peers = matches!(task.kind, LookupKind::GetPeers { .. });
        let done = task.lookup.is_done();
        for n in asks {
            let q = if get_peers {
                Query::GetPeers {
                    info_hash: InfoHash(target.0),
                }
            } else {
                Query::FindNode { target }
            };
            if !self
                .query(n.addr.into(), Some(n.id), q, Purpose::Lookup(id))
                .await
            {
                if let Some(t) = self.tasks.get_mut(&id) {
                    t.lookup.on_timeout(&n.id);
                }
            }
        }
        done
    }

    /// Marks the lookup finishing and, for a get_peers that asked for it,
    /// announces to the closest nodes that gave a token.
    async fn announce(&mut self, id: u64) {
        let task = self.tasks.get_mut(&id).expect("still here");
        task.finishing = true;
        let LookupKind::GetPeers {
            info_hash,
            announce: Some(port),
            ..
        } = task.kind
        else {
            return;
        };
        let targets = task.lookup.closest_with_tokens();
        for (n, token) in targets {
            let q = Query::AnnouncePeer {
                info_hash,
                port: if port == 0 { self.local_port() } else { port },
                implied_port: port == 0,
                token,
            };
            if self
                .query(n.addr.into(), Some(n.id), q, Purpose::Announce(id))
                .await
            {
                let t = self.tasks.get_mut(&id).expect("still here");
                t.announcing += 1;
                t.announced += 1;
            }
        }
    }

    /// Forgets a finished lookup and tells whoever asked; the join lookup
    /// instead starts a refresh of every bucket.
    fn report(&mut self, id: u64) {
        let mut task = self.tasks.remove(&id).expect("still here");
        let stats = LookupStats {
            peers: 0,
            queries: task.lookup.queries,
            rounds: task.lookup.rounds,
            closest: task.lookup.closest(),
            announced: task.announced,
            elapsed: task.started.elapsed(),
        };
        match &mut task.kind {
            LookupKind::GetPeers { done, .. } | LookupKind::FindNode { done } => {
                if let Some(d) = done.take() {
                    let _ = d.send(stats);
                }
            }
            LookupKind::Join => {
                for target in self.table.all_targets(Instant::now()) {
                    self.add_task(target, Vec::new(), LookupKind::FindNode { done: None });
                }
            }
        }
    }

    /// An answer to one of the lookup's queries.
    pub(super) async fn on_lookup_response(&mut self, task: u64, r: Response) {
        // We may be among the nodes others know: never ask ourselves.
        let own = self.id();
        let nodes: Vec<NodeInfo> = r.nodes.iter().filter(|n| n.id != own).copied().collect();
        if let Some(tk) = self.tasks.get_mut(&task) {
            tk.lookup.on_response(&r.id, &nodes, &r.values, r.token);
        }
        self.drive(task).await;
    }

    /// One of our announces was answered or gave up.
    pub(super) async fn on_announce_settled(&mut self, task: u64) {
        if let Some(tk) = self.tasks.get_mut(&task) {
            tk.announcing = tk.announcing.saturating_sub(1);
        }
        self.drive(task).await;
    }

    /// A query of ours timed out or drew an error reply; `id` is the node
    /// we asked, when known.
    pub(super) async fn on_query_failed(&mut self, purpose: Purpose, id: Option<NodeId>) {
        match purpose {
            Purpose::Lookup(task) => {
                if let (Some(tk), Some(id)) = (self.tasks.get_mut(&task), id) {
                    tk.lookup.on_timeout(&id);
                }
                self.drive(task).await;
            }
            Purpose::Announce(task) => self.on_announce_settled(task).await,
            Purpose::Ping | Purpose::Bootstrap => {}
        }
    }
}
