//! The Kademlia routing table of BEP-5: k = 8 nodes per bucket, only the
//! bucket holding our own id splits, good / questionable / bad nodes by the
//! 15-minute rule, a replacement cache per bucket, questionable nodes pinged
//! before they are evicted, quiet buckets refreshed. Sans-IO: the caller
//! passes the time and carries out the pings and lookups asked for.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::krpc::{NodeId, NodeInfo};

pub const K: usize = 8;
/// A node silent this long is questionable; a bucket unchanged this long
/// is refreshed.
pub const QUIET: Duration = Duration::from_secs(15 * 60);
/// Unanswered queries in a row that make a node bad.
const MAX_FAILS: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Good,
    Questionable,
    Bad,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub info: NodeInfo,
    /// Last answer to one of our queries.
    last_response: Option<Instant>,
    /// Last query it sent us.
    last_query: Option<Instant>,
    fails: u8,
}

impl Node {
    fn new(info: NodeInfo) -> Node {
        Node {
            info,
            last_response: None,
            last_query: None,
            fails: 0,
        }
    }

    pub fn status(&self, now: Instant) -> Status {
        let recent =
            |t: Option<Instant>| t.is_some_and(|t| now.saturating_duration_since(t) < QUIET);
        if self.fails >= MAX_FAILS {
            Status::Bad
        } else if recent(self.last_response)
            || (self.last_response.is_some() && recent(self.last_query))
        {
            Status::Good
        } else {
            Status::Questionable
        }
    }
}

#[derive(Debug)]
struct Bucket {
    nodes: Vec<Node>,
    /// Candidates for slots freed by bad nodes, newest last.
    replacements: VecDeque<Node>,
    changed: Instant,
}

impl Bucket {
    fn new(now: Instant) -> Bucket {
        Bucket {
            nodes: Vec::with_capacity(K),
            replacements: VecDeque::new(),
            changed: now,
        }
    }
}

/// What the caller should do after an insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Insert {
    /// The node is in the table (added or refreshed).
    Added,
    /// The bucket is full of good nodes; the node waits in the replacement
    /// cache (or was dropped).
    Full,
    /// Full, but these questionable nodes should be pinged: the newcomer
    /// takes the place of one that fails to answer.
    PingFirst(Vec<NodeInfo>),
    /// Our own id or an unusable address.
    Refused,
}

#[derive(Debug)]
pub struct RoutingTable {
    own: NodeId,
    /// Bucket i holds ids sharing exactly i leading bits with ours; the
    /// last one also holds all longer prefixes (it contains our id).
    buckets: Vec<Bucket>,
}

impl RoutingTable {
    pub fn new(own: NodeId, now: Instant) -> RoutingTable {
        RoutingTable {
            own,
            buckets: vec![Bucket::new(now)],
        }
    }

    pub fn own_id(&self) -> NodeId {
        self.own
    }

    fn index(&self, id: &NodeId) -> usize {
        self.own.common_prefix(id).min(self.buckets.len() - 1)
    }

    pub fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.nodes.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// (good, questionable, bad) counts.
    pub fn health(&self, now: Instant) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for n in self.buckets.iter().flat_map(|b| &b.nodes) {
            match n.status(now) {
                Status::Good => c.0 += 1,
                Status::Questionable => c.1 += 1,
                Status::Bad => c.2 += 1,
            }
        }
        c
    }

    fn find_mut(&mut self, id: &NodeId) -> Option<&mut Node> {
        let i = self.index(id);
        self.buckets[i].nodes.iter_mut().find(|n| n.info.id == *id)
    }

    pub fn contains(&self, id: &NodeId) -> bool {
        let i = self.index(id);
        self.buckets[i].nodes.iter().any(|n| n.info.id == *id)
    }

    /// A node answered one of our queries.
    pub fn on_response(&mut self, info: NodeInfo, now: Instant) -> Insert {
        self.insert(info, now, true)
    }

    /// A node queried us. It is only listed once it has answered a query
    /// of ours (a query's source could be spoofed), so an unknown node's
    /// insert asks the caller to ping it first when there is room.
    pub fn on_query(&mut self, info: NodeInfo, now: Instant) -> Insert {
        if let Some(n) = self.find_mut(&info.id) {
            if n.info.addr == info.addr {
                n.last_query = Some(now);
            }
            return Insert::Added;
        }
        if info.id == self.own || !self.has_room(&info.id, now) {
            // Pinging a node that cannot be listed anyway would make two
            // nodes with full buckets ping each other forever.
            return Insert::Full;
        }
        Insert::PingFirst(vec![info])
    }

    /// Whether a new node with this id could be listed: its bucket has a
    /// free slot, can split, or holds a node that is not good.
    fn has_room(&self, id: &NodeId, now: Instant) -> bool {
        let i = self.index(id);
        let b = &self.buckets[i];
        b.nodes.len() < K
            || (i == self.buckets.len() - 1 && self.buckets.len() < 160)
            || b.nodes.iter().any(|n| n.status(now) != Status::Good)
    }

    /// A query to `id` went unanswered: after two in a row it is bad, and
    /// a replacement (if any) takes its place.
    pub fn on_timeout(&mut self, id: &NodeId, now: Instant) {
        let i = self.index(id);
        let b = &mut self.buckets[i];
        let Some(pos) = b.nodes.iter().position(|n| n.info.id == *id) else {
            b.replacements.retain(|n| n.info.id != *id);
            return;
        };
        let n = &mut b.nodes[pos];
        n.fails = n.fails.saturating_add(1);
        if n.status(now) == Status::Bad {
            if let Some(r) = b.replacements.pop_back() {
                b.nodes[pos] = r;
                b.changed = now;
            }
        }
    }

    fn insert(&mut self, info: NodeInfo, now: Instant, responded: bool) -> Insert {
        if info.id == self.own || info.addr.port() == 0 || info.addr.ip().is_unspecified() {
            return Insert::Refused;
        }
        loop {
            let i = self.index(&info.id);
            let last = i == self.buckets.len() - 1;
            let b = &mut self.buckets[i];
            if let Some(n) = b.nodes.iter_mut().find(|n| n.info.id == info.id) {
                // A known id at a new address is not moved: that is how
                // a spoofer would hijack an entry.
                if n.info.addr == info.addr && responded {
                    n.last_response = Some(now);
                    n.fails = 0;
                    b.changed = now;
                }
                return Insert::Added;
            }
            let mut node = Node::new(info);
            if responded {
                node.last_response = Some(now);
            }
            if b.nodes.len() < K {
                b.nodes.push(node);
                b.changed = now;
                return Insert::Added;
            }
            if let Some(pos) = b.nodes.iter().position(|n| n.status(now) == Status::Bad) {
                b.nodes[pos] = node;
                b.changed = now;
                return Insert::Added;
            }
            if last && self.buckets.len() < 160 {
                self.split(now);
                continue;
            }
            let b = &mut self.buckets[i];
            if responded {
                b.replacements.retain(|n| n.info.id != info.id);
                if b.replacements.len() == K {
                    b.replacements.pop_front();
                }
                b.replacements.push_back(node);
            }
            let questionable: Vec<NodeInfo> = b
                .nodes
                .iter()
                .filter(|n| n.status(now) == Status::Questionable)
                .map(|n| n.info)
                .collect();
            return if questionable.is_empty() {
                Insert::Full
            } else {
                Insert::PingFirst(questionable)
            };
        }
    }

    /// Splits the last bucket: nodes sharing one more bit with us move on.
    fn split(&mut self, now: Instant) {
        let depth = self.buckets.len() - 1;
        let own = self.own;
        let last = self.buckets.last_mut().expect("at least one bucket");
        let (stay, go): (Vec<Node>, Vec<Node>) = last
            .nodes
            .drain(..)
            .partition(|n| own.common_prefix(&n.info.id) == depth);
        let (rstay, rgo): (VecDeque<Node>, VecDeque<Node>) = last
            .replacements
            .drain(..)
            .partition(|n| own.common_prefix(&n.info.id) == depth);
        last.nodes = stay;
        last.replacements = rstay;
        let mut next = Bucket::new(now);
        next.nodes = go;
        next.replacements = rgo;
        self.buckets.push(next);
    }

    /// Up to `n` usable nodes closest to `target`, closest first.
    pub fn closest(&self, target: &NodeId, n: usize, now: Instant) -> Vec<NodeInfo> {
        let mut all: Vec<&Node> = self
            .buckets
            .iter()
            .flat_map(|b| &b.nodes)
            .filter(|x| x.status(now) != Status::Bad)
            .collect();
        all.sort_by_key(|x| x.info.id.distance(target));
        all.into_iter().take(n).map(|x| x.info).collect()
    }

    /// Good nodes, for saving across runs.
    pub fn good_nodes(&self, now: Instant) -> Vec<NodeInfo> {
        self.buckets
            .iter()
            .flat_map(|b| &b.nodes)
            .filter(|n| n.status(now) == Status::Good)
            .map(|n| n.info)
            .collect()
    }

    /// Random targets inside each bucket unchanged for 15 minutes; the
    /// caller looks them up (find_node), which refreshes the bucket.
    pub fn refresh_targets(&mut self, now: Instant) -> Vec<NodeId> {
        let own = self.own;
        let n = self.buckets.len();
        let mut out = Vec::new();
        for (i, b) in self.buckets.iter_mut().enumerate() {
            if now.saturating_duration_since(b.changed) >= QUIET {
                b.changed = now;
                out.push(random_in_bucket(&own, i, i == n - 1));
            }
        }
        out
    }
}

impl RoutingTable {
    /// A random target in every bucket (after bootstrap: the lookup of
    /// our own id fills the near buckets, these fill the far ones).
    pub fn all_targets(&mut self, now: Instant) -> Vec<NodeId> {
        let n = self.buckets.len();
        let own = self.own;
        self.buckets
            .iter_mut()
            .enumerate()
            .map(|(i, b)| {
                b.changed = now;
                random_in_bucket(&own, i, i == n - 1)
            })
            .collect()
    }
}

/// A random id sharing exactly `depth` leading bits with `own` (at least
/// `depth` for the last bucket).
pub fn random_in_bucket(own: &NodeId, depth: usize, last: bool) -> NodeId {
    let mut id = NodeId::random();
    for bit in 0..depth.min(160) {
        let (byte, mask) = (bit / 8, 0x80u8 >> (bit % 8));
        id.0[byte] = (id.0[byte] & !mask) | (own.0[byte] & mask);
    }
    if !last && depth < 160 {
        let (byte, mask) = (depth / 8, 0x80u8 >> (depth % 8));
        id.0[byte] = (id.0[byte] & !mask) | (!own.0[byte] & mask);
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddrV4;

    fn node(id: NodeId, port: u16) -> NodeInfo {
        NodeInfo {
            id,
            addr: SocketAddrV4::new([127, 0, 0, 2].into(), port),
        }
    }

    /// An id sharing exactly `depth` bits with `own`.
    fn at_depth(own: &NodeId, depth: usize) -> NodeId {
        random_in_bucket(own, depth, false)
    }

    #[test]
    fn only_our_bucket_splits() {
        let t = Instant::now();
        let own = NodeId([0; 20]);
        let mut rt = RoutingTable::new(own, t);
        // Eight far nodes (first bit differs) fill bucket 0 alone.
        for p in 0..8 {
            assert_eq!(
                rt.on_response(node(at_depth(&own, 0), p + 1), t),
                Insert::Added
            );
        }
        assert_eq!(rt.bucket_count(), 1);
        // A ninth near node splits: the far ones stay in bucket 0.
        assert_eq!(
            rt.on_response(node(at_depth(&own, 5), 100), t),
            Insert::Added
        );
        assert_eq!(rt.bucket_count(), 2);
        // Bucket 0 is full of good nodes and no longer ours: no split.
        assert_eq!(
            rt.on_response(node(at_depth(&own, 0), 200), t),
            Insert::Full
        );
        assert_eq!(rt.bucket_count(), 2);
        assert_eq!(rt.len(), 9);
        assert_eq!(rt.on_response(node(own, 1), t), Insert::Refused);
    }

    #[test]
    fn questionable_nodes_are_pinged_then_replaced() {
        let t0 = Instant::now();
        let own = NodeId([0; 20]);
        let mut rt = RoutingTable::new(own, t0);
        let _ = rt.on_response(node(at_depth(&own, 7), 999), t0);
        let far: Vec<NodeId> = (0..8).map(|_| at_depth(&own, 0)).collect();
        for (p, id) in (1..).zip(&far) {
            let _ = rt.on_response(node(*id, p), t0);
        }
        let newcomer = node(at_depth(&own, 0), 500);
        let t1 = t0 + QUIET + Duration::from_secs(1);
        // 15 minutes later all are questionable: ping them first.
        let Insert::PingFirst(ping) = rt.on_response(newcomer, t1) else {
            panic!("expected pings")
        };
        assert_eq!(ping.len(), 8);
        // One answers (good again), one fails twice (bad): the newcomer
        // from the replacement cache takes its place.
        let _ = rt.on_response(node(far[0], 1), t1);
        rt.on_timeout(&far[1], t1);
        assert!(rt.contains(&far[1]));
        rt.on_timeout(&far[1], t1);
        assert!(!rt.contains(&far[1]));
        assert!(rt.contains(&newcomer.id));
        assert_eq!(rt.health(t1), (2, 7, 0));
    }

    #[test]
    fn queries_alone_do_not_list_a_node() {
        let t = Instant::now();
        let own = NodeId::random();
        let mut rt = RoutingTable::new(own, t);
        let n = node(at_depth(&own, 3), 7);
        assert_eq!(rt.on_query(n, t), Insert::PingFirst(vec![n]));
        assert!(rt.is_empty());
        rt.on_response(n, t);
        // Good as long as it answered once and keeps querying us.
        let later = t + QUIET + Duration::from_secs(60);
        assert_eq!(
            rt.on_query(n, later - Duration::from_secs(30)),
            Insert::Added
        );
        assert_eq!(rt.health(later), (1, 0, 0));
        // A known id claimed from another address is not moved.
        let mut spoof = n;
        spoof.addr.set_port(8);
        rt.on_response(spoof, later);
        assert_eq!(rt.closest(&n.id, 1, later)[0].addr.port(), 7);
    }

    #[test]
    fn queriers_for_a_full_bucket_are_not_pinged() {
        let t = Instant::now();
        let own = NodeId([0; 20]);
        let mut rt = RoutingTable::new(own, t);
        let _ = rt.on_response(node(at_depth(&own, 7), 999), t);
        for p in 0..8 {
            let _ = rt.on_response(node(at_depth(&own, 0), p + 1), t);
        }
        // Bucket 0 is full of good nodes: a ping could not list the querier.
        let far = node(at_depth(&own, 0), 300);
        assert_eq!(rt.on_query(far, t), Insert::Full);
        // Our own bucket can still split.
        let near = node(at_depth(&own, 9), 301);
        assert_eq!(rt.on_query(near, t), Insert::PingFirst(vec![near]));
        // Once bucket 0's nodes go quiet, there is room again.
        let later = t + QUIET + Duration::from_secs(1);
        assert_eq!(rt.on_query(far, later), Insert::PingFirst(vec![far]));
    }

    #[test]
    fn closest_is_sorted_by_xor_distance() {
        let t = Instant::now();
        let own = NodeId::random();
        let mut rt = RoutingTable::new(own, t);
        for p in 0..200u16 {
            let _ = rt.on_response(node(NodeId::random(), p + 1), t);
        }
        let target = NodeId::random();
        let c = rt.closest(&target, 8, t);
        assert_eq!(c.len(), 8);
        assert!(c
            .windows(2)
            .all(|w| w[0].id.distance(&target) <= w[1].id.distance(&target)));
        // Nothing in the table is closer than the eighth.
        let worst = c[7].id.distance(&target);
        let all = rt.closest(&target, usize::MAX, t);
        assert_eq!(
            all.iter()
                .filter(|n| n.id.distance(&target) < worst)
                .count(),
            7
        );
    }

    #[test]
    fn quiet_buckets_are_refreshed_with_targets_inside_them() {
        let t0 = Instant::now();
        let own = NodeId::random();
        let mut rt = RoutingTable::new(own, t0);
        for p in 0..40u16 {
            let _ = rt.on_response(node(NodeId::random(), p + 1), t0);
        }
        assert!(rt.refresh_targets(t0 + Duration::from_secs(60)).is_empty());
        let t1 = t0 + QUIET;
        let targets = rt.refresh_targets(t1);
        assert_eq!(targets.len(), rt.bucket_count());
        let n = rt.bucket_count();
        for (i, id) in targets.iter().enumerate() {
            let cp = own.common_prefix(id);
            if i == n - 1 {
                assert!(cp >= i);
            } else {
                assert_eq!(cp, i);
            }
        }
        assert!(
            rt.refresh_targets(t1).is_empty(),
            "refreshed once per quiet period"
        );
    }
}
