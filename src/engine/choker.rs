//! Sans-IO choker: which peers we upload to (BEP-3 tit-for-tat, the way
//! libtorrent and Transmission run it). Time comes in as `now`; decisions go
//! out as [`ChokeAction`]s that the engine sends as `choke`/`unchoke`.
//!
//! - **Rounds**: every `interval` (the first [`Choker::tick`] runs one at
//!   once) the interested peers are ranked and the best `regular_slots` are
//!   unchoked. Leeching ranks by bytes received from the peer in the last
//!   interval (reciprocity; a choked peer may still send to us). Seeding
//!   hands out turns of [`SEED_TURN_ROUNDS`] rounds so every interested
//!   peer gets one: a peer in its turn keeps its slot, free slots go first
//!   to peers that have waited a turn, then to the fastest others; bytes
//!   sent to the peer order each class. Equal rates go to the peer
//!   unchoked longest ago (never first), then at random.
//! - **Optimistic unchoke**: one more interested, otherwise choked peer,
//!   drawn at random every `optimistic_interval` (newly connected peers
//!   weigh [`NEW_PEER_WEIGHT`]×), so newcomers and choked peers can prove
//!   themselves.
//! - **Snubbing**: a peer we want data from that has unchoked us but sent no
//!   block for `snub_timeout` loses its regular slot (not the optimistic
//!   one) until it sends data again.
//! - **Between rounds** a tick only repairs: slots of peers that left or
//!   lost interest are freed and refilled from the last round's ranking;
//!   nobody is displaced.
//!
//! Uninterested peers are always choked. Actions list only changes, chokes
//! first.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::picker::PeerKey;

/// Rounds a peer keeps its regular slot while seeding before peers that
/// have waited longer go first (30 s at the default interval).
pub(crate) const SEED_TURN_ROUNDS: u32 = 3;

/// Weight of a newly connected peer in the optimistic draw; others weigh 1.
/// Newcomers have no rate yet, so this is their main way in (BEP-3).
pub(crate) const NEW_PEER_WEIGHT: u32 = 3;

#[derive(Debug, Clone)]
pub(crate) struct ChokerConfig {
    /// Peers unchoked for their rate (the optimistic slot is extra).
    pub regular_slots: usize,
    /// Time between ranking rounds.
    pub interval: Duration,
    /// Time between optimistic-unchoke rotations.
    pub optimistic_interval: Duration,
    /// Silence after which a peer that unchoked us counts as snubbing us.
    pub snub_timeout: Duration,
    /// While seeding, a peer unchoked this long without requesting a byte
    /// loses its slot (regular or optimistic) and queues behind the
    /// others. An honest peer requests within a round trip of the unchoke.
    pub seed_idle: Duration,
    /// Seeds the optimistic draw and tie-breaks; fixed in tests.
    pub seed: u64,
}

impl Default for ChokerConfig {
    fn default() -> ChokerConfig {
        ChokerConfig {
            regular_slots: 4,
            interval: Duration::from_secs(10),
            optimistic_interval: Duration::from_secs(30),
            snub_timeout: Duration::from_secs(60),
            seed_idle: Duration::from_secs(2),
            seed: rand::random(),
        }
    }
}

/// Seeding precedence, best first. A regular slot is a turn of
/// [`SEED_TURN_ROUNDS`] rounds; rates only order peers within a class.
/// Comparing rates across classes would starve peers: a choked peer's
/// upload rate is zero because it is choked, so whoever holds the
/// optimistic slot would always win the next free regular one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum SeedClass {
    /// Holds a regular slot and its turn is not over: keeps it.
    InTurn,
    /// Choked for at least a turn, or never unchoked: next in line.
    Due,
    /// The optimistic holder, or choked only recently.
    Other,
    /// Held a regular slot for a full turn: yields to everyone else.
    TurnOver,
}

fn seed_class(p: &Peer, now: Instant, turn: Duration) -> SeedClass {
    let waited = |t: Instant| now.saturating_duration_since(t) >= turn;
    match p.slot {
        Slot::Regular if p.regular_since.is_some_and(waited) => SeedClass::TurnOver,
        Slot::Regular => SeedClass::InTurn,
        Slot::Choked if p.last_unchoked.is_none_or(waited) => SeedClass::Due,
        Slot::Choked | Slot::Optimistic => SeedClass::Other,
    }
}

/// A change the engine must send to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChokeAction {
    Choke(PeerKey),
    Unchoke(PeerKey),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Choked,
    Regular,
    Optimistic,
}

#[derive(Debug)]
struct Peer {
    connected_at: Instant,
    /// Peer → us.
    interested: bool,
    /// Us → peer: what the peer was last told.
    am_choking: bool,
    /// Us → peer: what we want (applied at the end of a tick).
    slot: Slot,
    am_interested: bool,
    peer_choking: bool,
    /// Since when we have wanted data and been allowed to ask for it; `None`
    /// while we are not interested or choked, when snubbing cannot apply.
    waiting_since: Option<Instant>,
    last_block: Option<Instant>,
    downloaded: u64,
    uploaded: u64,
    /// Counters at the last round; the deltas are the ranking rates.
    down_mark: u64,
    up_mark: u64,
    down_rate: u64,
    up_rate: u64,
    /// Start of the current regular tenure (seeding turns).
    regular_since: Option<Instant>,
    /// When the peer was last choked after being unchoked (round-robin).
    last_unchoked: Option<Instant>,
    /// `uploaded` when the current regular tenure began.
    tenure_mark: u64,
    /// While seeding: it held a slot and asked for nothing; it waits
    /// behind every other peer until it takes data.
    idle: bool,
}

impl Peer {
    fn snubbed(&self, now: Instant, timeout: Duration) -> bool {
        let Some(since) = self.waiting_since else {
            return false;
        };
        let quiet_from = self.last_block.map_or(since, |b| b.max(since));
        now.saturating_duration_since(quiet_from) >= timeout
    }

    fn update_waiting(&mut self, now: Instant) {
        let waiting = self.am_interested && !self.peer_choking;
        self.waiting_since = match (waiting, self.waiting_since) {
            (false, _) => None,
            (true, None) => Some(now),
            (true, since) => since,
        };
    }
}

#[derive(Debug)]
pub(crate) struct Choker {
    config: ChokerConfig,
    /// Ordered so that ticks are deterministic for a given seed.
    peers: BTreeMap<PeerKey, Peer>,
    seeding: bool,
    next_round: Option<Instant>,
    optimistic: Option<PeerKey>,
    next_optimistic: Option<Instant>,
    /// When the optimistic holder got its slot.
    optimistic_since: Option<Instant>,
    rng: StdRng,
}

impl Choker {
    pub(crate) fn new(config: ChokerConfig) -> Choker {
        Choker {
            rng: StdRng::seed_from_u64(config.seed),
            config,
            peers: BTreeMap::new(),
            seeding: false,
            next_round: None,
            optimistic: None,
            next_optimistic: None,
            optimistic_since: None,
        }
    }

    /// Registers a connection: choked both ways, uninterested (BEP-3).
    pub(crate) fn add_peer(&mut self, key: PeerKey, now: Instant) {
        self.peers.insert(
            key,
            Peer {
                connected_at: now,
                interested: false,
                am_choking: true,
                slot: Slot::Choked,
                am_interested: false,
                peer_choking: true,
                waiting_since: None,
                last_block: None,
                downloaded: 0,
                uploaded: 0,
                down_mark: 0,
                up_mark: 0,
                down_rate: 0,
                up_rate: 0,
                regular_since: None,
                last_unchoked: None,
                tenure_mark: 0,
                idle: false,
            },
        );
    }

    /// Forgets a connection; its slot is refilled at the next tick.
    pub(crate) fn remove_peer(&mut self, key: PeerKey) {
        self.peers.remove(&key);
    }

    /// The peer's `interested`/`not interested`.
    pub(crate) fn set_interested(&mut self, key: PeerKey, interested: bool) {
        if let Some(p) = self.peers.get_mut(&key) {
            p.interested = interested;
        }
    }

    /// Our interest in the peer; snubbing applies only while interested.
    pub(crate) fn set_am_interested(&mut self, key: PeerKey, interested: bool, now: Instant) {
        if let Some(p) = self.peers.get_mut(&key) {
            p.am_interested = interested;
            p.update_waiting(now);
        }
    }

    /// The peer's `choke`/`unchoke` towards us; snubbing applies only
    /// while it lets us request (the snub clock starts here).
    pub(crate) fn set_peer_choking(&mut self, key: PeerKey, choking: bool, now: Instant) {
        if let Some(p) = self.peers.get_mut(&key) {
            p.peer_choking = choking;
            p.update_waiting(now);
        }
    }

    /// Payload bytes received from the peer (a block arrived at `now`).
    pub(crate) fn record_download(&mut self, key: PeerKey, bytes: u64, now: Instant) {
        if let Some(p) = self.peers.get_mut(&key) {
            p.downloaded = p.downloaded.saturating_add(bytes);
            p.last_block = Some(now);
        }
    }

    /// Payload bytes sent to the peer.
    pub(crate) fn record_upload(&mut self, key: PeerKey, bytes: u64) {
        if let Some(p) = self.peers.get_mut(&key) {
            p.uploaded = p.uploaded.saturating_add(bytes);
            p.idle = false;
        }
    }

    /// Switches ranking to upload rates (from the next round on).
    pub(crate) fn set_seeding(&mut self, seeding: bool) {
        self.seeding = seeding;
    }

    #[cfg(test)]
    pub(crate) fn is_snubbed(&self, key: PeerKey, now: Instant) -> bool {
        self.peers
            .get(&key)
            .is_some_and(|p| p.snubbed(now, self.config.snub_timeout))
    }

    /// Whether we choke the peer, as last reported by [`Choker::tick`];
    /// unknown peers are choked.
    pub(crate) fn is_choking(&self, key: PeerKey) -> bool {
        self.peers.get(&key).is_none_or(|p| p.am_choking)
    }

    /// The holder of the optimistic slot.
    #[cfg(test)]
    pub(crate) fn optimistic(&self) -> Option<PeerKey> {
        self.optimistic
    }

    /// Runs a round if one is due, otherwise only frees and refills slots;
    /// rotates the optimistic slot when due. Returns the changes.
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<ChokeAction> {
        if self.next_round.is_none_or(|t| now >= t) {
            self.round(now);
            self.next_round = Some(now + self.config.interval);
        } else {
            self.refill(now);
        }
        self.rotate_optimistic(now);
        self.commit(now)
    }

    /// Re-ranks every eligible peer on the rates of the interval just ended.
    fn round(&mut self, now: Instant) {
        for p in self.peers.values_mut() {
            p.down_rate = p.downloaded - p.down_mark;
            p.up_rate = p.uploaded - p.up_mark;
            p.down_mark = p.downloaded;
            p.up_mark = p.uploaded;
        }
        let ranked = self.ranked(now, |_| true);
        let winners = &ranked[..ranked.len().min(self.config.regular_slots)];
        for (key, p) in &mut self.peers {
            if winners.contains(key) {
                if p.slot != Slot::Regular {
                    p.regular_since = Some(now);
                    p.tenure_mark = p.uploaded;
                }
                p.slot = Slot::Regular;
            } else if p.slot == Slot::Regular {
                p.slot = Slot::Choked;
                p.regular_since = None;
            }
        }
    }

    /// Between rounds: free the slots of peers that lost interest and give
    /// free slots to the best choked peers, displacing nobody.
    fn refill(&mut self, now: Instant) {
        let mut held = 0;
        let (seeding, grace) = (self.seeding, self.config.seed_idle);
        for p in self.peers.values_mut() {
            // A seed's slot held by a peer that requests nothing is wasted
            // (a squatter, or a peer that is done): it goes to the next.
            let idle = seeding
                && p.slot == Slot::Regular
                && p.uploaded == p.tenure_mark
                && p.regular_since
                    .is_some_and(|t| now.saturating_duration_since(t) >= grace);
            if idle {
                p.idle = true;
            }
            if p.slot == Slot::Regular && (!p.interested || idle) {
                p.slot = Slot::Choked;
                p.regular_since = None;
            }
            held += usize::from(p.slot == Slot::Regular);
        }
        let free = self.config.regular_slots.saturating_sub(held);
        if free == 0 {
            return;
        }
        let ranked = self.ranked(now, |p| p.slot == Slot::Choked);
        for key in ranked.into_iter().take(free) {
            let p = self.peers.get_mut(&key).expect("ranked peers exist");
            p.slot = Slot::Regular;
            p.regular_since = Some(now);
            p.tenure_mark = p.uploaded;
        }
    }

    /// Interested, non-snubbed peers passing `filter`, best first.
    fn ranked(&mut self, now: Instant, filter: impl Fn(&Peer) -> bool) -> Vec<PeerKey> {
        let seed_turn = self.config.interval * SEED_TURN_ROUNDS;
        let mut ranked: Vec<_> = self
            .peers
            .iter()
            .filter(|(_, p)| p.interested && !p.snubbed(now, self.config.snub_timeout))
            .filter(|(_, p)| filter(p))
            .map(|(&key, p)| {
                let (class, rate) = if self.seeding {
                    (seed_class(p, now, seed_turn), p.up_rate)
                } else {
                    (SeedClass::InTurn, p.down_rate)
                };
                // Round-robin on ties: choked before unchoked, then the one
                // unchoked longest ago (`None`, never, sorts first).
                let waited = (p.slot != Slot::Choked, p.last_unchoked);
                (key, (self.seeding && p.idle, class, Reverse(rate), waited))
            })
            .collect();
        // Shuffle, then a stable sort: remaining ties fall at random rather
        // than always to the lowest key.
        ranked.shuffle(&mut self.rng);
        ranked.sort_by_key(|&(_, rank)| rank);
        ranked.into_iter().map(|(key, _)| key).collect()
    }

    /// Vacates the optimistic slot if its holder left, lost interest or was
    /// promoted, and draws a new holder when vacant or due.
    fn rotate_optimistic(&mut self, now: Instant) {
        let (seeding, grace, since) = (self.seeding, self.config.seed_idle, self.optimistic_since);
        if let Some(key) = self.optimistic {
            // While seeding, a holder that asks for nothing gives way early.
            let idle = |p: &Peer| {
                seeding
                    && p.uploaded == p.tenure_mark
                    && since.is_some_and(|t| now.saturating_duration_since(t) >= grace)
            };
            match self.peers.get_mut(&key) {
                Some(p) if p.slot == Slot::Optimistic && idle(p) => {
                    p.idle = true;
                    p.slot = Slot::Choked;
                    self.optimistic = None;
                    self.next_optimistic = None;
                }
                Some(p) if p.slot == Slot::Optimistic && p.interested => {}
                Some(p) => {
                    if p.slot == Slot::Optimistic {
                        p.slot = Slot::Choked;
                    }
                    self.optimistic = None;
                }
                None => self.optimistic = None,
            }
        }
        let due = self.next_optimistic.is_none_or(|t| now >= t);
        if self.optimistic.is_some() && !due {
            return;
        }
        // The holder is not a candidate (its slot is not `Choked`), so a
        // rotation always moves the slot when anyone else can take it.
        let candidates: Vec<(PeerKey, u32)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.interested && p.slot == Slot::Choked)
            .map(|(&key, p)| {
                let new =
                    now.saturating_duration_since(p.connected_at) < self.config.optimistic_interval;
                (key, if new { NEW_PEER_WEIGHT } else { 1 })
            })
            .collect();
        let total: u32 = candidates.iter().map(|&(_, w)| w).sum();
        if total == 0 {
            if self.optimistic.is_some() {
                // Nobody else wants it: the holder keeps the slot a while.
                self.next_optimistic = Some(now + self.config.optimistic_interval);
            }
            return;
        }
        let mut pick = self.rng.gen_range(0..total);
        let chosen = candidates
            .iter()
            .find(|&&(_, w)| {
                let hit = pick < w;
                pick = pick.saturating_sub(w);
                hit
            })
            .map(|&(key, _)| key)
            .expect("pick is below the total weight");
        if let Some(old) = self.optimistic.take() {
            if let Some(p) = self.peers.get_mut(&old) {
                p.slot = Slot::Choked;
            }
        }
        if let Some(p) = self.peers.get_mut(&chosen) {
            p.slot = Slot::Optimistic;
            p.tenure_mark = p.uploaded;
        }
        self.optimistic = Some(chosen);
        self.optimistic_since = Some(now);
        self.next_optimistic = Some(now + self.config.optimistic_interval);
    }

    /// Turns the wanted slots into actions for the peers whose state changes.
    fn commit(&mut self, now: Instant) -> Vec<ChokeAction> {
        let mut chokes = Vec::new();
        let mut unchokes = Vec::new();
        for (&key, p) in &mut self.peers {
            let choke = p.slot == Slot::Choked;
            if choke == p.am_choking {
                continue;
            }
            p.am_choking = choke;
            if choke {
                p.last_unchoked = Some(now);
                chokes.push(ChokeAction::Choke(key));
            } else {
                unchokes.push(ChokeAction::Unchoke(key));
            }
        }
        // Chokes first: free upload capacity before granting it.
        chokes.append(&mut unchokes);
        chokes
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn config(seed: u64) -> ChokerConfig {
        ChokerConfig {
            seed,
            ..ChokerConfig::default()
        }
    }

    /// A choker with interested peers `keys`, connected at `t0`.
    fn choker(
        config: ChokerConfig,
        keys: impl IntoIterator<Item = PeerKey>,
        t0: Instant,
    ) -> Choker {
        let mut c = Choker::new(config);
        for k in keys {
            c.add_peer(k, t0);
            c.set_interested(k, true);
        }
        c
    }

    fn unchoked(c: &Choker) -> HashSet<PeerKey> {
        c.peers
            .keys()
            .copied()
            .filter(|&k| !c.is_choking(k))
            .collect()
    }

    fn regular(c: &Choker) -> HashSet<PeerKey> {
        let mut set = unchoked(c);
        if let Some(o) = c.optimistic() {
            set.remove(&o);
        }
        set
    }

    #[test]
    fn slots_go_to_the_fastest_uploaders_to_us_while_leeching() {
        let t0 = Instant::now();
        let mut c = choker(config(1), 1..=6, t0);
        for k in 1..=6 {
            c.record_download(k, k * 1000, t0);
            c.record_upload(k, (7 - k) * 5000);
        }
        c.tick(t0);
        assert_eq!(regular(&c), HashSet::from([3, 4, 5, 6]));
        assert!(matches!(c.optimistic(), Some(1 | 2)));

        // Rates are per interval: the old leaders go quiet, 1 and 2 speed up.
        for k in [1, 2] {
            c.record_download(k, 50_000, t0 + 5 * SEC);
        }
        for k in [3, 4] {
            c.record_download(k, 100, t0 + 5 * SEC);
        }
        c.tick(t0 + 10 * SEC);
        assert_eq!(regular(&c), HashSet::from([1, 2, 3, 4]));
    }

    #[test]
    fn slots_go_by_upload_rate_while_seeding() {
        let t0 = Instant::now();
        let mut c = choker(config(2), 1..=6, t0);
        c.set_seeding(true);
        for k in 1..=6 {
            c.record_upload(k, k * 1000);
            c.record_download(k, (7 - k) * 5000, t0);
        }
        c.tick(t0);
        assert_eq!(regular(&c), HashSet::from([3, 4, 5, 6]));
    }

    #[test]
    fn every_interested_peer_gets_a_turn_while_seeding() {
        let t0 = Instant::now();
        for seed in 0..20 {
            let cfg = ChokerConfig {
                regular_slots: 2,
                ..config(seed)
            };
            let mut c = choker(cfg, 1..=8, t0);
            c.set_seeding(true);
            let mut served = HashSet::new();
            let mut choked_for = [0u32; 9];
            for round in 0..40 {
                c.tick(t0 + round * 10 * SEC);
                assert_eq!(regular(&c).len(), 2);
                if round < 10 {
                    served.extend(unchoked(&c));
                }
                for k in 1..=8 {
                    let n = &mut choked_for[usize::try_from(k).unwrap()];
                    *n = if c.is_choking(k) { *n + 1 } else { 0 };
                    // 2 regular slots in 3-round turns plus the optimistic
                    // slot: the other 7 peers are served within 9 rounds.
                    assert!(*n <= 9, "seed {seed}: peer {k} choked for {n} rounds");
                }
                // Unchoked peers download, higher keys faster: rate alone
                // would keep the same two (or promote the optimistic one).
                for k in unchoked(&c) {
                    c.record_upload(k, 10_000 * k);
                }
            }
            assert_eq!(
                served,
                (1..=8).collect(),
                "seed {seed}: all within 10 rounds"
            );
        }
    }

    #[test]
    fn exactly_one_optimistic_unchoke_rotates_every_30_s_and_not_before() {
        let t0 = Instant::now();
        let mut c = choker(config(4), 1..=10, t0);
        let mut last = None;
        for step in 0..=9 {
            let now = t0 + step * 10 * SEC;
            // Peers 7..=10 are steadily the fastest: the regular set is fixed.
            for k in 7..=10 {
                c.record_download(k, 10_000, now);
            }
            c.tick(now);
            assert_eq!(unchoked(&c).len(), 5, "four regular plus one optimistic");
            let opt = c.optimistic().expect("an optimistic unchoke");
            assert!(!(7..=10).contains(&opt));
            if step % 3 == 0 {
                assert_ne!(Some(opt), last, "rotates at {step}0 s");
            } else {
                assert_eq!(Some(opt), last, "holds at {step}0 s");
            }
            last = Some(opt);
        }
    }

    #[test]
    fn newly_connected_peers_are_three_times_as_likely_to_be_optimistic() {
        let t0 = Instant::now();
        let now = t0 + 3600 * SEC;
        let mut new_chosen = 0;
        for seed in 0..600 {
            let cfg = ChokerConfig {
                regular_slots: 0,
                ..config(seed)
            };
            let mut c = choker(cfg, 1..=3, t0);
            c.add_peer(4, now - 5 * SEC);
            c.set_interested(4, true);
            c.tick(now);
            new_chosen += u32::from(c.optimistic() == Some(4));
        }
        // Weight 3 against 1+1+1: a half, where equal weights give a quarter.
        assert!((250..350).contains(&new_chosen), "{new_chosen} of 600");
    }

    #[test]
    fn uninterested_peers_are_not_unchoked_into_regular_slots() {
        let t0 = Instant::now();
        let mut c = choker(config(5), [1], t0);
        for k in 2..=4 {
            c.add_peer(k, t0);
            c.record_download(k, 1_000_000, t0);
        }
        assert_eq!(c.tick(t0), vec![ChokeAction::Unchoke(1)]);
        assert_eq!(c.optimistic(), None, "no interested peer is left for it");

        // Losing interest gives the slot up at the next tick.
        c.set_interested(1, false);
        assert_eq!(c.tick(t0 + SEC), vec![ChokeAction::Choke(1)]);
    }

    #[test]
    fn a_snubbed_peer_loses_its_regular_slot_and_regains_it_after_sending_data() {
        let t0 = Instant::now();
        let mut c = choker(config(6), [1, 2], t0);
        for k in [1, 2] {
            c.set_am_interested(k, true, t0);
            c.set_peer_choking(k, false, t0);
            c.record_download(k, 16_384, t0);
        }
        c.tick(t0);
        assert_eq!(regular(&c), HashSet::from([1, 2]));
        // Peer 2 keeps sending; peer 1 goes quiet.
        for s in 1..=5 {
            c.record_download(2, 16_384, t0 + s * 10 * SEC);
            c.tick(t0 + s * 10 * SEC);
        }
        assert!(!c.is_snubbed(1, t0 + 59 * SEC));
        assert_eq!(regular(&c), HashSet::from([1, 2]), "still regular at 50 s");

        c.record_download(2, 16_384, t0 + 60 * SEC);
        c.tick(t0 + 60 * SEC);
        assert!(c.is_snubbed(1, t0 + 60 * SEC));
        assert_eq!(
            regular(&c),
            HashSet::from([2]),
            "lost its slot though one is free"
        );
        assert_eq!(c.optimistic(), Some(1), "it may still be optimistic");

        c.record_download(1, 16_384, t0 + 65 * SEC);
        assert!(!c.is_snubbed(1, t0 + 65 * SEC));
        c.tick(t0 + 70 * SEC);
        assert_eq!(regular(&c), HashSet::from([1, 2]));
    }

    #[test]
    fn a_peer_that_chokes_us_is_not_snubbing() {
        let t0 = Instant::now();
        let mut c = choker(config(7), [1], t0);
        c.set_am_interested(1, true, t0);
        assert!(!c.is_snubbed(1, t0 + 600 * SEC), "it never unchoked us");
        c.set_peer_choking(1, false, t0 + 601 * SEC);
        assert!(
            !c.is_snubbed(1, t0 + 660 * SEC),
            "the clock starts at the unchoke"
        );
        assert!(c.is_snubbed(1, t0 + 661 * SEC));
        c.set_am_interested(1, false, t0 + 661 * SEC);
        assert!(
            !c.is_snubbed(1, t0 + 661 * SEC),
            "we no longer want anything"
        );
    }

    #[test]
    fn removal_frees_a_slot_at_the_next_tick() {
        let t0 = Instant::now();
        let mut c = choker(config(8), 1..=6, t0);
        for k in 3..=6 {
            c.record_download(k, 1000 * k, t0);
        }
        c.tick(t0);
        let opt = c.optimistic().unwrap();
        let waiting = if opt == 1 { 2 } else { 1 };
        assert!(c.is_choking(waiting));

        c.remove_peer(6);
        assert_eq!(c.tick(t0 + SEC), vec![ChokeAction::Unchoke(waiting)]);
        assert_eq!(regular(&c), HashSet::from([3, 4, 5, waiting]));
    }

    #[test]
    fn tick_before_the_interval_elapses_changes_nothing() {
        let t0 = Instant::now();
        let mut c = choker(config(9), 1..=6, t0);
        for k in 3..=6 {
            c.record_download(k, 1000 * k, t0);
        }
        c.tick(t0);
        let opt = c.optimistic().unwrap();
        let waiting = if opt == 1 { 2 } else { 1 };
        // The choked peer becomes by far the fastest, but must wait for the
        // next round.
        c.record_download(waiting, 1_000_000, t0 + SEC);
        for s in 1..10 {
            assert_eq!(c.tick(t0 + s * SEC), vec![]);
        }
        let actions = c.tick(t0 + 10 * SEC);
        assert!(
            actions.contains(&ChokeAction::Unchoke(waiting)),
            "{actions:?}"
        );
    }

    #[test]
    fn actions_only_list_changes() {
        let t0 = Instant::now();
        let mut c = choker(config(10), 1..=4, t0);
        for k in 1..=4 {
            c.record_download(k, 1000, t0);
        }
        let first = c.tick(t0);
        assert_eq!(first, (1..=4).map(ChokeAction::Unchoke).collect::<Vec<_>>());
        for k in 1..=4 {
            c.record_download(k, 1000, t0 + 5 * SEC);
        }
        assert_eq!(c.tick(t0 + 10 * SEC), vec![], "same ranking, same state");

        // A newcomer takes the free optimistic slot at once.
        c.add_peer(5, t0 + 11 * SEC);
        c.set_interested(5, true);
        assert_eq!(c.tick(t0 + 11 * SEC), vec![ChokeAction::Unchoke(5)]);
        for k in 1..=3 {
            c.record_download(k, 1000, t0 + 15 * SEC);
        }
        c.record_download(5, 5000, t0 + 15 * SEC);
        let actions = c.tick(t0 + 20 * SEC);
        // 5 is promoted, 4 drops out of the regular set into the vacated
        // optimistic slot: everyone stays unchoked, so nothing to send.
        assert_eq!(actions, vec![]);
        assert_eq!(c.optimistic(), Some(4));
        assert_eq!(regular(&c), HashSet::from([1, 2, 3, 5]));
    }
}
