//! One iterative Kademlia lookup (find_node or get_peers), sans-IO: it
//! says whom to ask next, the caller sends the queries and reports answers
//! and timeouts. At most α queries are in flight; the lookup converges on
//! the k closest nodes that answered, collecting peers and write tokens on
//! the way.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;

use super::krpc::{NodeId, NodeInfo};
use super::routing::K;

pub(crate) const ALPHA: usize = 3;
/// Candidates kept (closest first); farther ones are never asked.
const MAX_CANDIDATES: usize = 64;
/// Peers collected by one lookup.
const MAX_PEERS: usize = 2000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Fresh,
    Asked,
    Answered,
    Failed,
}

#[derive(Debug, Clone)]
struct Candidate {
    info: NodeInfo,
    state: State,
    /// Hops from the seed nodes: a seed is asked in round 1.
    round: u32,
    token: Option<Vec<u8>>,
}

#[derive(Debug)]
pub(crate) struct Lookup {
    target: NodeId,
    candidates: BTreeMap<[u8; 20], Candidate>,
    in_flight: usize,
    peers: Vec<SocketAddr>,
    seen_peers: HashSet<SocketAddr>,
    /// Queries sent and rounds reached, for statistics.
    pub queries: u32,
    pub rounds: u32,
}

impl Lookup {
    pub(crate) fn new(target: NodeId, seeds: impl IntoIterator<Item = NodeInfo>) -> Lookup {
        let mut l = Lookup {
            target,
            candidates: BTreeMap::new(),
            in_flight: 0,
            peers: Vec::new(),
            seen_peers: HashSet::new(),
            queries: 0,
            rounds: 0,
        };
        for s in seeds {
            l.add(s, 1);
        }
        l
    }

    pub(crate) fn target(&self) -> NodeId {
        self.target
    }

    fn add(&mut self, info: NodeInfo, round: u32) {
        let d = info.id.distance(&self.target);
        if self.candidates.contains_key(&d) {
            return;
        }
        if self.candidates.len() >= MAX_CANDIDATES {
            // Keep the closest: drop the farthest unasked one if the new
            // node beats it.
            let far = self
                .candidates
                .iter()
                .rev()
                .find(|(_, c)| c.state == State::Fresh)
                .map(|(k, _)| *k);
            match far {
                Some(k) if k > d => {
                    self.candidates.remove(&k);
                }
                _ => return,
            }
        }
        self.candidates.insert(
            d,
            Candidate {
                info,
                state: State::Fresh,
                round,
                token: None,
            },
        );
    }

    /// The k closest candidates that have not failed, closest first.
    fn best(&self) -> impl Iterator<Item = &Candidate> {
        self.candidates
            .values()
            .filter(|c| c.state != State::Failed)
            .take(K)
    }

    /// Nodes to query now (marked as asked); empty when the α slots are
    /// busy or nothing worth asking is left.
    pub(crate) fn next_queries(&mut self) -> Vec<NodeInfo> {
        let room = ALPHA.saturating_sub(self.in_flight);
        let picks: Vec<[u8; 20]> = self
            .candidates
            .iter()
            .filter(|(_, c)| c.state != State::Failed)
            .take(K)
            .filter(|(_, c)| c.state == State::Fresh)
            .take(room)
            .map(|(k, _)| *k)
            .collect();
        let mut out = Vec::with_capacity(picks.len());
        for k in picks {
            let c = self.candidates.get_mut(&k).expect("picked from the map");
            c.state = State::Asked;
            self.rounds = self.rounds.max(c.round);
            out.push(c.info);
            self.queries += 1;
        }
        self.in_flight += out.len();
        out
    }

    fn find(&mut self, id: &NodeId) -> Option<&mut Candidate> {
        let d = id.distance(&self.target);
        self.candidates
            .get_mut(&d)
            .filter(|c| c.state == State::Asked)
    }

    /// `from` answered: its closer nodes become candidates, its peers are
    /// collected, its token kept for announcing.
    pub(crate) fn on_response(
        &mut self,
        from: &NodeId,
        nodes: &[NodeInfo],
        values: &[SocketAddr],
        token: Option<Vec<u8>>,
    ) {
        let Some(c) = self.find(from) else {
            return;
        };
        c.state = State::Answered;
        c.token = token;
        let round = c.round + 1;
        self.in_flight -= 1;
        for n in nodes {
            self.add(*n, round);
        }
        for p in values {
            if self.peers.len() < MAX_PEERS && self.seen_peers.insert(*p) {
                self.peers.push(*p);
            }
        }
    }

    pub(crate) fn on_timeout(&mut self, id: &NodeId) {
        if let Some(c) = self.find(id) {
            c.state = State::Failed;
            self.in_flight -= 1;
        }
    }

    /// Nothing in flight and the k closest live candidates have all
    /// answered (or there is nobody left to ask).
    pub(crate) fn is_done(&self) -> bool {
        self.in_flight == 0 && self.best().all(|c| c.state == State::Answered)
    }

    /// Peers found so far; drains them.
    pub(crate) fn take_peers(&mut self) -> Vec<SocketAddr> {
        std::mem::take(&mut self.peers)
    }

    /// The k closest nodes that answered, with their write tokens.
    pub(crate) fn closest_with_tokens(&self) -> Vec<(NodeInfo, Vec<u8>)> {
        self.candidates
            .values()
            .filter(|c| c.state == State::Answered)
            .filter_map(|c| c.token.clone().map(|t| (c.info, t)))
            .take(K)
            .collect()
    }

    /// The k closest nodes that answered.
    pub(crate) fn closest(&self) -> Vec<NodeInfo> {
        self.candidates
            .values()
            .filter(|c| c.state == State::Answered)
            .map(|c| c.info)
            .take(K)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::net::SocketAddrV4;

    fn info(id: NodeId, n: u32) -> NodeInfo {
        NodeInfo {
            id,
            addr: SocketAddrV4::new(
                [127, 0, n.to_be_bytes()[2], n.to_be_bytes()[3]].into(),
                6881,
            ),
        }
    }

    /// A simulated network: every node's routing table holds all others
    /// that fit (k per bucket), inserted in random order.
    fn network(n: u32) -> (Vec<NodeInfo>, HashMap<NodeId, Vec<NodeInfo>>) {
        use crate::dht::routing::RoutingTable;
        use rand::seq::SliceRandom;
        let t = std::time::Instant::now();
        let nodes: Vec<NodeInfo> = (0..n).map(|i| info(NodeId::random(), i)).collect();
        let mut known = HashMap::new();
        for me in &nodes {
            let mut rt = RoutingTable::new(me.id, t);
            let mut others = nodes.clone();
            others.shuffle(&mut rand::thread_rng());
            for o in others {
                let _ = rt.on_response(o, t);
            }
            known.insert(me.id, rt.closest(&me.id, usize::MAX, t));
        }
        (nodes, known)
    }

    fn answer(
        known: &HashMap<NodeId, Vec<NodeInfo>>,
        who: &NodeId,
        target: &NodeId,
    ) -> Vec<NodeInfo> {
        let mut t = known[who].clone();
        t.sort_by_key(|o| o.id.distance(target));
        t.truncate(8);
        t
    }

    #[test]
    fn converges_on_the_true_closest_nodes() {
        let (nodes, known) = network(500);
        for _ in 0..20 {
            let target = NodeId::random();
            let seeds = nodes[..3].to_vec();
            let mut l = Lookup::new(target, seeds);
            let mut steps = 0;
            while !l.is_done() {
                let asks = l.next_queries();
                assert!(!asks.is_empty(), "stuck with nothing in flight");
                assert!(asks.len() <= ALPHA);
                for a in asks {
                    l.on_response(&a.id, &answer(&known, &a.id, &target), &[], Some(vec![1]));
                }
                steps += 1;
                assert!(steps < 200);
            }
            let mut truth: Vec<NodeInfo> = nodes.clone();
            truth.sort_by_key(|o| o.id.distance(&target));
            let got: Vec<NodeId> = l.closest().iter().map(|n| n.id).collect();
            let want: Vec<NodeId> = truth[..K].iter().map(|n| n.id).collect();
            assert_eq!(got, want);
            assert_eq!(l.closest_with_tokens().len(), K);
            assert!(l.rounds <= 9, "rounds {}", l.rounds);
        }
    }

    #[test]
    fn timeouts_free_slots_and_collect_peers_once() {
        let target = NodeId::random();
        let seeds: Vec<NodeInfo> = (0..5).map(|i| info(NodeId::random(), i)).collect();
        let mut l = Lookup::new(target, seeds.clone());
        let first = l.next_queries();
        assert_eq!(first.len(), ALPHA);
        assert!(l.next_queries().is_empty(), "α in flight");
        l.on_timeout(&first[0].id);
        let peer: SocketAddr = "127.0.0.9:1".parse().unwrap();
        l.on_response(&first[1].id, &[], &[peer, peer], None);
        // An answer from a node never asked is ignored.
        l.on_response(
            &NodeId::random(),
            &[],
            &["127.0.0.8:1".parse().unwrap()],
            None,
        );
        assert_eq!(l.take_peers(), [peer]);
        assert_eq!(l.next_queries().len(), 2);
        assert!(!l.is_done());
    }
}
