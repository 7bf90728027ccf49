//! DHT simulation benchmark: `--nodes` xorrent DHT nodes in one process,
//! each on its own loopback address (`127.1.x.y:6881`), measured on the
//! lookups the issue cares about.
//!
//! Phases, each bounded, and the whole run bounded by `--max-time`:
//! 1. start: `--bootstrap` seed nodes (each knowing the seeds before it),
//!    then every other node with the seeds as its only contacts, all at
//!    once or at `--join-rate` nodes a second;
//! 2. settle: the nodes' stats are sampled every 500 ms until the sum of
//!    good table entries grows by less than 0.5 % in 2 s (at most
//!    `--settle-max`);
//! 3. announce: `--announces` random info-hashes, each from a random node
//!    (get_peers, then announce_peer with port 6881: the stored peer is the
//!    announcing node's own address);
//! 4. lookups: `--lookups` lookups from random nodes, shuffled, at most
//!    `--concurrency` in flight: half find_node for random targets, scored
//!    against the true k closest (all ids are known here), half get_peers
//!    for announced info-hashes, scored on finding the announcing node.
//!
//! The report gives success rates, rounds (seed nodes are round 1),
//! latency, queries per lookup, every query any node sent during the
//! lookup phase per lookup, and the routing tables against the fullest
//! table the ids allow. The exit code is 0 when the targets are
//! met (every announced info-hash found, median rounds ≤ log2(N)/2), 1
//! when not, 2 on an error.
//!
//! It binds thousands of addresses and sends a lot of UDP, so it runs only
//! in a private network namespace (`scripts/netns-run cargo run
//! --release --example dht_sim`): it refuses unless `/proc/net/dev` lists
//! nothing but `lo`.

use std::collections::{HashSet, VecDeque};
use std::error::Error;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use futures::stream::{self, StreamExt};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::time::{sleep, sleep_until, timeout_at, Instant};
use tokio_util::sync::CancellationToken;
use xorrent::dht::krpc::NodeId;
use xorrent::dht::node::{Dht, DhtConfig, DhtStats, LookupStats};
use xorrent::dht::routing::K;
use xorrent::types::InfoHash;

const PORT: u16 = 6881;
const MAX_NODES: usize = 10_000;
const MAX_LOOKUPS: usize = 100_000;
const MAX_ANNOUNCES: usize = 10_000;
const MAX_TIME_S: f64 = 600.0;
/// One lookup (or announce) is given up after this.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Background traffic is measured over this quiet spell.
const IDLE_FOR: Duration = Duration::from_secs(5);
const SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// Settled: the good entries of all tables grew by less than
/// `STABLE_GROWTH` over `STABLE_FOR`.
const STABLE_FOR: Duration = Duration::from_secs(2);
const STABLE_GROWTH: f64 = 0.005;
/// Missed lookups described on stderr.
const MISSES_SHOWN: usize = 5;

#[derive(Parser)]
#[command(
    about = "DHT simulation: many xorrent DHT nodes on loopback (private network namespace only)"
)]
struct Args {
    /// DHT nodes, each on its own 127.1.x.y:6881
    #[arg(long, default_value_t = 500)]
    nodes: usize,
    /// Lookups measured: half find_node (random targets), half get_peers (announced info-hashes)
    #[arg(long, default_value_t = 1000)]
    lookups: usize,
    /// Seed nodes every other node bootstraps from
    #[arg(long, default_value_t = 3)]
    bootstrap: usize,
    /// Info-hashes announced, each from a random node
    #[arg(long, default_value_t = 100)]
    announces: usize,
    /// Lookups (and announces) in flight at once
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Nodes started per second after the seeds (0: all at once)
    #[arg(long, default_value_t = 0.0)]
    join_rate: f64,
    /// Longest wait for the routing tables to settle, in seconds
    #[arg(long, default_value_t = 30.0)]
    settle_max: f64,
    /// Every node's query timeout, in milliseconds
    #[arg(long, default_value_t = 1500)]
    rpc_timeout_ms: u64,
    /// Bound on the whole run, in seconds; a phase still running then is cut short
    #[arg(long, default_value_t = 170.0)]
    max_time: f64,
    /// Seed for node ids, targets and choices [default: random]
    #[arg(long)]
    seed: Option<u64>,
    /// Runtime worker threads
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Print the report as JSON instead of markdown
    #[arg(long)]
    json: bool,
}

#[derive(Serialize, Default)]
struct Dist {
    median: f64,
    p95: f64,
    max: f64,
    mean: f64,
}

#[derive(Serialize, Default)]
struct Tables {
    good_min: usize,
    good_median: usize,
    good_max: usize,
    /// Questionable and bad entries in all tables.
    not_good: usize,
    buckets_median: usize,
    /// Good entries over the fullest table the ids allow (k per bucket,
    /// only the bucket holding the own id split).
    fill_min: f64,
    fill_median: f64,
}

#[derive(Serialize, Default)]
struct Announces {
    count: usize,
    completed: usize,
    /// Nodes that took an announce_peer, per info-hash.
    stored_min: usize,
    stored_median: usize,
    /// Announces whose k closest were the true k closest.
    exact_k: f64,
    seconds: f64,
}

#[derive(Serialize, Default)]
struct Kind {
    lookups: usize,
    completed: usize,
    /// get_peers: the announcing node was among the peers found.
    found: Option<f64>,
    /// The k closest nodes found are the true k closest.
    exact_k: f64,
    /// The closest node found is the true closest.
    nearest: f64,
    /// True k closest among those found, on average (of k).
    overlap_mean: f64,
    rounds: Dist,
    /// From the node's start of the lookup to its end.
    latency_ms: Dist,
    /// From our command to the answer (includes the node's queue).
    wall_ms: Dist,
    queries: Dist,
}

#[derive(Serialize, Default)]
struct Report {
    nodes: usize,
    seeds: usize,
    seed: u64,
    rpc_timeout_ms: u64,
    join_rate: f64,
    concurrency: usize,
    start_s: f64,
    settle_s: f64,
    settled: bool,
    tables_settled: Tables,
    tables_end: Tables,
    /// Queries sent a node a second with no lookups running.
    idle_queries_per_node_s: f64,
    announces: Announces,
    find_node: Kind,
    get_peers: Kind,
    rounds_median: f64,
    rounds_target: f64,
    /// Queries sent by all nodes during the lookup phase, per completed lookup.
    packets_per_lookup: f64,
    /// Queries sent that no node counted as received, during the lookup phase.
    query_loss: f64,
    lookup_phase_s: f64,
    lookups_per_s: f64,
    total_s: f64,
    targets_met: bool,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dht_sim: {e}");
            ExitCode::from(2)
        }
    }
}

fn ensure(ok: bool, msg: &str) -> Result<(), Box<dyn Error>> {
    if ok {
        Ok(())
    } else {
        Err(msg.into())
    }
}

fn run(args: Args) -> Result<ExitCode, Box<dyn Error>> {
    let ifaces = interfaces().map_err(|e| format!("cannot read /proc/net/dev: {e}"))?;
    ensure(
        ifaces == ["lo"],
        &format!(
            "refusing to run outside a private network namespace (interfaces: {}); \
             use scripts/netns-run",
            ifaces.join(", ")
        ),
    )?;
    ensure((2..=MAX_NODES).contains(&args.nodes), "--nodes 2..=10000")?;
    ensure(
        (1..args.nodes).contains(&args.bootstrap),
        "--bootstrap 1..nodes",
    )?;
    ensure(
        (1..=MAX_ANNOUNCES).contains(&args.announces),
        "--announces 1..=10000",
    )?;
    ensure(args.lookups <= MAX_LOOKUPS, "--lookups up to 100000")?;
    ensure(
        (1..=4096).contains(&args.concurrency),
        "--concurrency 1..=4096",
    )?;
    ensure(
        args.join_rate >= 0.0 && args.join_rate.is_finite(),
        "--join-rate ≥ 0",
    )?;
    ensure(
        (0.0..=MAX_TIME_S).contains(&args.settle_max),
        "--settle-max 0..=600",
    )?;
    ensure(
        (1.0..=MAX_TIME_S).contains(&args.max_time),
        "--max-time 1..=600",
    )?;
    ensure(
        (10..=60_000).contains(&args.rpc_timeout_ms),
        "--rpc-timeout-ms 10..=60000",
    )?;
    ensure((1..=64).contains(&args.threads), "--threads 1..=64")?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()?;
    let cancel = CancellationToken::new();
    let report = rt.block_on(simulate(&args, &cancel));
    cancel.cancel();
    // Dropping the runtime ends the node tasks still winding down.
    drop(rt);
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", markdown(&report));
    }
    Ok(if report.targets_met {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Interface names in /proc/net/dev.
fn interfaces() -> std::io::Result<Vec<String>> {
    let text = std::fs::read_to_string("/proc/net/dev")?;
    Ok(text
        .lines()
        .skip(2)
        .filter_map(|l| l.split_once(':'))
        .map(|(name, _)| name.trim().to_string())
        .collect())
}

/// Node `i` listens on 127.1.(i / 250).(i % 250 + 1):6881.
fn addr(i: usize) -> SocketAddr {
    let ip = Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8);
    SocketAddr::V4(SocketAddrV4::new(ip, PORT))
}

fn secs(from: Instant) -> f64 {
    from.elapsed().as_secs_f64()
}

/// What one measured lookup is.
#[derive(Clone, Copy)]
enum Job {
    Random { origin: usize, target: NodeId },
    Announced { origin: usize, hash: usize },
}

struct Outcome {
    stats: Option<LookupStats>,
    wall: Duration,
    found: bool,
}

async fn simulate(args: &Args, cancel: &CancellationToken) -> Result<Report, Box<dyn Error>> {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(args.max_time);
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut rng = StdRng::seed_from_u64(seed);
    let n = args.nodes;
    let ids: Vec<NodeId> = (0..n).map(|_| NodeId(rng.gen())).collect();
    let mut r = Report {
        nodes: n,
        seeds: args.bootstrap,
        seed,
        rpc_timeout_ms: args.rpc_timeout_ms,
        join_rate: args.join_rate,
        concurrency: args.concurrency,
        rounds_target: (n as f64).log2() / 2.0,
        ..Report::default()
    };
    eprintln!("dht_sim: {n} nodes, {} seeds, seed {seed}", args.bootstrap);

    let nodes = start_nodes(args, &ids, cancel).await?;
    r.start_s = secs(t0);
    eprintln!("dht_sim: started in {:.1} s", r.start_s);

    let ideal: Vec<usize> = (0..n).map(|i| ideal_table(&ids, i)).collect();
    let t = Instant::now();
    let settle_end = (t + Duration::from_secs_f64(args.settle_max)).min(deadline);
    let (settled, snap) = settle(&nodes, settle_end).await;
    r.settle_s = secs(t);
    r.settled = settled;
    r.tables_settled = tables(&snap, &ideal);
    eprintln!(
        "dht_sim: tables {} in {:.1} s: good min {} median {} max {}",
        if settled { "settled" } else { "still growing" },
        r.settle_s,
        r.tables_settled.good_min,
        r.tables_settled.good_median,
        r.tables_settled.good_max
    );

    // Background traffic of a settled network, no lookups running.
    let before = snapshot(&nodes).await;
    let t = Instant::now();
    sleep(IDLE_FOR.min(deadline.saturating_duration_since(t))).await;
    let idle = snapshot(&nodes).await;
    r.idle_queries_per_node_s = (sum(&idle, |s| s.queries_out) - sum(&before, |s| s.queries_out))
        as f64
        / n as f64
        / secs(t).max(1e-9);
    eprintln!(
        "dht_sim: idle: {:.2} queries a node a second",
        r.idle_queries_per_node_s
    );

    // Announces.
    let hashes: Vec<(InfoHash, usize)> = (0..args.announces)
        .map(|_| (InfoHash(rng.gen()), rng.gen_range(0..n)))
        .collect();
    let t = Instant::now();
    let announced: Vec<Option<LookupStats>> = stream::iter(hashes.iter().map(|&(ih, who)| {
        let d = nodes[who].clone();
        async move {
            let until = deadline.min(Instant::now() + LOOKUP_TIMEOUT);
            let (_peers, done) = d.get_peers(ih, Some(PORT)).await;
            timeout_at(until, done).await.ok().and_then(Result::ok)
        }
    }))
    .buffered(args.concurrency)
    .collect()
    .await;
    r.announces = announce_report(&announced, &hashes, &ids, secs(t));
    eprintln!(
        "dht_sim: {} of {} announces done in {:.1} s",
        r.announces.completed, r.announces.count, r.announces.seconds
    );

    // Lookups.
    let mut jobs: Vec<Job> = (0..args.lookups)
        .map(|i| {
            if i < args.lookups / 2 {
                Job::Random {
                    origin: rng.gen_range(0..n),
                    target: NodeId(rng.gen()),
                }
            } else {
                let hash = rng.gen_range(0..hashes.len());
                let mut origin = rng.gen_range(0..n - 1);
                if origin >= hashes[hash].1 {
                    origin += 1;
                }
                Job::Announced { origin, hash }
            }
        })
        .collect();
    jobs.shuffle(&mut rng);
    let before = snapshot(&nodes).await;
    let t = Instant::now();
    let outcomes: Vec<Outcome> = stream::iter(jobs.iter().map(|&job| {
        let (d, want) = match job {
            Job::Random { origin, .. } => (nodes[origin].clone(), None),
            Job::Announced { origin, hash } => {
                let (ih, who) = hashes[hash];
                (nodes[origin].clone(), Some((ih, addr(who))))
            }
        };
        let target = match job {
            Job::Random { target, .. } => target,
            Job::Announced { hash, .. } => NodeId(hashes[hash].0 .0),
        };
        async move {
            let until = deadline.min(Instant::now() + LOOKUP_TIMEOUT);
            match want {
                None => lookup_random(d, target, until).await,
                Some((ih, who)) => lookup_announced(d, ih, who, until).await,
            }
        }
    }))
    .buffered(args.concurrency)
    .collect()
    .await;
    r.lookup_phase_s = secs(t);
    let after = snapshot(&nodes).await;
    r.tables_end = tables(&after, &ideal);

    let sent: u64 = sum(&after, |s| s.queries_out) - sum(&before, |s| s.queries_out);
    let got: u64 = sum(&after, |s| s.queries_in) - sum(&before, |s| s.queries_in);
    r.query_loss = 1.0 - got as f64 / sent.max(1) as f64;
    let completed = outcomes.iter().filter(|o| o.stats.is_some()).count();
    r.packets_per_lookup = sent as f64 / completed.max(1) as f64;
    r.lookups_per_s = completed as f64 / r.lookup_phase_s.max(1e-9);
    eprintln!(
        "dht_sim: {completed} of {} lookups done in {:.1} s",
        jobs.len(),
        r.lookup_phase_s
    );

    let (random, announced_jobs): (Vec<_>, Vec<_>) = jobs
        .iter()
        .zip(&outcomes)
        .partition(|(j, _)| matches!(j, Job::Random { .. }));
    r.find_node = kind_report(&random, &ids, &hashes, &announced);
    r.get_peers = kind_report(&announced_jobs, &ids, &hashes, &announced);
    let mut rounds: Vec<f64> = outcomes
        .iter()
        .filter_map(|o| o.stats.as_ref().map(|s| f64::from(s.rounds)))
        .collect();
    r.rounds_median = dist(&mut rounds).median;
    r.targets_met = r.get_peers.found == Some(1.0)
        && r.get_peers.completed == r.get_peers.lookups
        && completed > 0
        && r.rounds_median <= r.rounds_target;
    r.total_s = secs(t0);
    Ok(r)
}

async fn start_nodes(
    args: &Args,
    ids: &[NodeId],
    cancel: &CancellationToken,
) -> Result<Vec<Dht>, Box<dyn Error>> {
    let seeds = args.bootstrap;
    let t0 = Instant::now();
    let mut nodes = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        if args.join_rate > 0.0 && i > seeds {
            let at = (i - seeds) as f64 / args.join_rate;
            sleep_until(t0 + Duration::from_secs_f64(at)).await;
        }
        let mut c = DhtConfig::new(addr(i));
        c.id = Some(*id);
        c.max_queries_per_ip = 1_000_000;
        c.rpc_timeout = Duration::from_millis(args.rpc_timeout_ms);
        // A seed knows the seeds started before it; everyone else, all seeds.
        c.nodes = (0..i.min(seeds)).map(addr).collect();
        let d = Dht::start(c, cancel.clone())
            .await
            .map_err(|e| format!("cannot start a node on {}: {e}", addr(i)))?;
        nodes.push(d);
    }
    Ok(nodes)
}

/// Every node's stats; a node that is gone counts as empty.
async fn snapshot(nodes: &[Dht]) -> Vec<DhtStats> {
    futures::future::join_all(nodes.iter().map(Dht::stats))
        .await
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect()
}

fn sum(snap: &[DhtStats], f: impl Fn(&DhtStats) -> u64) -> u64 {
    snap.iter().map(f).sum()
}

/// Samples the tables until their good entries stop growing (and every
/// node has one), or `end`.
async fn settle(nodes: &[Dht], end: Instant) -> (bool, Vec<DhtStats>) {
    let mut history: VecDeque<(Instant, usize)> = VecDeque::new();
    let mut last_print = Instant::now();
    loop {
        let snap = snapshot(nodes).await;
        let now = Instant::now();
        let total: usize = snap.iter().map(|s| s.good).sum();
        let min = snap.iter().map(|s| s.good).min().unwrap_or(0);
        history.push_back((now, total));
        while history.len() > 1 && now - history[1].0 >= STABLE_FOR {
            history.pop_front();
        }
        let (oldest, old_total) = history[0];
        if min > 0
            && now - oldest >= STABLE_FOR
            && total as f64 <= old_total as f64 * (1.0 + STABLE_GROWTH)
        {
            return (true, snap);
        }
        if now >= end {
            return (false, snap);
        }
        if now - last_print >= STABLE_FOR {
            last_print = now;
            eprintln!(
                "dht_sim:   good entries {total} ({:.1} a node, min {min})",
                total as f64 / snap.len() as f64
            );
        }
        sleep(SAMPLE_EVERY.min(end - now)).await;
    }
}

/// The most entries node `i`'s table can hold: k per bucket, where only
/// the bucket holding its own id splits (so it ends once the ids sharing
/// at least its prefix fit in one bucket).
fn ideal_table(ids: &[NodeId], i: usize) -> usize {
    let mut by_prefix = [0usize; 161];
    for (j, id) in ids.iter().enumerate() {
        if j != i {
            by_prefix[ids[i].common_prefix(id)] += 1;
        }
    }
    let mut rest = ids.len() - 1;
    let mut total = 0;
    for count in by_prefix.iter().take(160) {
        if rest <= K {
            break;
        }
        total += (*count).min(K);
        rest -= count;
    }
    (total + rest).max(1)
}

fn tables(snap: &[DhtStats], ideal: &[usize]) -> Tables {
    let mut good: Vec<usize> = snap.iter().map(|s| s.good).collect();
    good.sort_unstable();
    let mut buckets: Vec<usize> = snap.iter().map(|s| s.buckets).collect();
    buckets.sort_unstable();
    let mut fill: Vec<f64> = snap
        .iter()
        .zip(ideal)
        .map(|(s, &i)| s.good as f64 / i as f64)
        .collect();
    let fill_median = dist(&mut fill).median;
    let mid = good.len() / 2;
    Tables {
        good_min: good.first().copied().unwrap_or(0),
        good_median: good.get(mid).copied().unwrap_or(0),
        good_max: good.last().copied().unwrap_or(0),
        not_good: snap.iter().map(|s| s.questionable + s.bad).sum(),
        buckets_median: buckets.get(mid).copied().unwrap_or(0),
        fill_min: fill.first().copied().unwrap_or(0.0),
        fill_median,
    }
}

/// The true k closest ids to `target`, `origin` left out (a lookup never
/// lists the node running it).
fn true_closest(ids: &[NodeId], origin: usize, target: &NodeId) -> Vec<NodeId> {
    let mut v: Vec<NodeId> = ids
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != origin)
        .map(|(_, id)| *id)
        .collect();
    let k = K.min(v.len());
    if k < v.len() {
        v.select_nth_unstable_by_key(k, |id| id.distance(target));
        v.truncate(k);
    }
    v.sort_unstable_by_key(|id| id.distance(target));
    v
}

async fn lookup_random(d: Dht, target: NodeId, until: Instant) -> Outcome {
    let t = Instant::now();
    let stats = timeout_at(until, d.find_node(target)).await.ok().flatten();
    Outcome {
        stats,
        wall: t.elapsed(),
        found: false,
    }
}

async fn lookup_announced(d: Dht, ih: InfoHash, who: SocketAddr, until: Instant) -> Outcome {
    let t = Instant::now();
    let (mut peers, mut done) = d.get_peers(ih, None).await;
    let mut seen = HashSet::new();
    let stats = loop {
        tokio::select! {
            Some(p) = peers.recv() => seen.extend(p),
            r = &mut done => break r.ok(),
            _ = sleep_until(until) => break None,
        }
    };
    while let Ok(p) = peers.try_recv() {
        seen.extend(p);
    }
    Outcome {
        stats,
        wall: t.elapsed(),
        found: seen.contains(&who),
    }
}

fn announce_report(
    done: &[Option<LookupStats>],
    hashes: &[(InfoHash, usize)],
    ids: &[NodeId],
    seconds: f64,
) -> Announces {
    let mut stored: Vec<f64> = Vec::new();
    let mut exact = 0;
    for (s, (ih, who)) in done.iter().zip(hashes) {
        let Some(s) = s else { continue };
        stored.push(s.announced as f64);
        let truth = true_closest(ids, *who, &NodeId(ih.0));
        exact += usize::from(s.closest.iter().map(|n| n.id).eq(truth));
    }
    let completed = stored.len();
    let d = dist(&mut stored);
    Announces {
        count: hashes.len(),
        completed,
        stored_min: stored.first().copied().unwrap_or(0.0) as usize,
        stored_median: d.median as usize,
        exact_k: exact as f64 / completed.max(1) as f64,
        seconds,
    }
}

fn kind_report(
    runs: &[(&Job, &Outcome)],
    ids: &[NodeId],
    hashes: &[(InfoHash, usize)],
    announced: &[Option<LookupStats>],
) -> Kind {
    let mut rounds = Vec::new();
    let mut latency = Vec::new();
    let mut wall = Vec::new();
    let mut queries = Vec::new();
    let (mut found, mut exact, mut nearest, mut overlap) = (0, 0, 0, 0);
    let mut misses = 0;
    let mut get_peers = false;
    for (job, o) in runs {
        let Some(s) = &o.stats else { continue };
        let (origin, target) = match **job {
            Job::Random { origin, target } => (origin, target),
            Job::Announced { origin, hash } => {
                get_peers = true;
                (origin, NodeId(hashes[hash].0 .0))
            }
        };
        let truth = true_closest(ids, origin, &target);
        let got: Vec<NodeId> = s.closest.iter().map(|n| n.id).collect();
        exact += usize::from(got == truth);
        nearest += usize::from(got.first() == truth.first());
        overlap += got.iter().filter(|g| truth.contains(g)).count();
        found += usize::from(o.found);
        rounds.push(f64::from(s.rounds));
        latency.push(s.elapsed.as_secs_f64() * 1e3);
        wall.push(o.wall.as_secs_f64() * 1e3);
        queries.push(f64::from(s.queries));
        if let Job::Announced { hash, .. } = **job {
            if !o.found && misses < MISSES_SHOWN {
                misses += 1;
                describe_miss(hash, s, &got, &truth, announced);
            }
        }
    }
    let completed = rounds.len();
    let rate = |x: usize| x as f64 / completed.max(1) as f64;
    Kind {
        lookups: runs.len(),
        completed,
        found: get_peers.then(|| rate(found)),
        exact_k: rate(exact),
        nearest: rate(nearest),
        overlap_mean: rate(overlap),
        rounds: dist(&mut rounds),
        latency_ms: dist(&mut latency),
        wall_ms: dist(&mut wall),
        queries: dist(&mut queries),
    }
}

fn describe_miss(
    hash: usize,
    s: &LookupStats,
    got: &[NodeId],
    truth: &[NodeId],
    announced: &[Option<LookupStats>],
) {
    let stored: Vec<NodeId> = announced[hash]
        .as_ref()
        .map(|a| a.closest.iter().map(|n| n.id).collect())
        .unwrap_or_default();
    eprintln!(
        "dht_sim: miss: info-hash #{hash}: announced to {} nodes, {} of them among the lookup's \
         {} closest, {} of the true k; {} queries, {} rounds",
        announced[hash].as_ref().map_or(0, |a| a.announced),
        stored.iter().filter(|x| got.contains(x)).count(),
        got.len(),
        stored.iter().filter(|x| truth.contains(x)).count(),
        s.queries,
        s.rounds
    );
}

/// Median and 95th percentile by nearest rank; sorts `v`.
fn dist(v: &mut [f64]) -> Dist {
    if v.is_empty() {
        return Dist::default();
    }
    v.sort_by(f64::total_cmp);
    let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    Dist {
        median: rank(0.5),
        p95: rank(0.95),
        max: v[v.len() - 1],
        mean: v.iter().sum::<f64>() / v.len() as f64,
    }
}

fn pct(x: f64) -> String {
    format!("{:.1} %", x * 100.0)
}

fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(
        w,
        "## xorrent DHT simulation: {} nodes, {} seeds (seed {})\n",
        r.nodes, r.seeds, r.seed
    );
    let _ = writeln!(w, "| network | |\n|---|---|");
    let join = if r.join_rate > 0.0 {
        format!("{} nodes/s", r.join_rate)
    } else {
        "all at once".into()
    };
    let _ = writeln!(
        w,
        "| start ({join}), rpc timeout | {:.1} s, {} ms |",
        r.start_s, r.rpc_timeout_ms
    );
    let _ = writeln!(
        w,
        "| settle | {:.1} s{} |",
        r.settle_s,
        if r.settled { "" } else { " (still growing)" }
    );
    for (name, t) in [("settled", &r.tables_settled), ("at end", &r.tables_end)] {
        let _ = writeln!(
            w,
            "| good nodes per table, {name}: min / median / max | {} / {} / {} ({} not good in all) |",
            t.good_min, t.good_median, t.good_max, t.not_good
        );
        let _ = writeln!(
            w,
            "| table fill vs. fullest possible, {name}: min / median | {} / {} (median {} buckets) |",
            pct(t.fill_min),
            pct(t.fill_median),
            t.buckets_median
        );
    }
    let a = &r.announces;
    let _ = writeln!(
        w,
        "| announces done | {} / {} in {:.1} s |",
        a.completed, a.count, a.seconds
    );
    let _ = writeln!(
        w,
        "| nodes storing each announce: min / median | {} / {} (true k closest: {}) |",
        a.stored_min,
        a.stored_median,
        pct(a.exact_k)
    );
    let _ = writeln!(
        w,
        "| lookup phase | {:.1} s, {:.0} lookups/s, {} in flight |",
        r.lookup_phase_s, r.lookups_per_s, r.concurrency
    );
    let _ = writeln!(
        w,
        "| queries sent by all nodes per lookup | {:.1} ({} unreceived) |",
        r.packets_per_lookup,
        pct(r.query_loss.max(0.0))
    );
    let _ = writeln!(w, "| run time | {:.1} s |\n", r.total_s);

    let (f, g) = (&r.find_node, &r.get_peers);
    let _ = writeln!(
        w,
        "| lookups | find_node (random target) | get_peers (announced) |\n|---|---|---|"
    );
    let _ = writeln!(
        w,
        "| completed | {} / {} | {} / {} |",
        f.completed, f.lookups, g.completed, g.lookups
    );
    let _ = writeln!(
        w,
        "| announcing node found | – | {} |",
        g.found.map_or("–".into(), pct)
    );
    let _ = writeln!(
        w,
        "| k closest = true k closest | {} | {} |",
        pct(f.exact_k),
        pct(g.exact_k)
    );
    let _ = writeln!(
        w,
        "| closest = true closest | {} | {} |",
        pct(f.nearest),
        pct(g.nearest)
    );
    let _ = writeln!(
        w,
        "| true k closest found (mean of {K}) | {:.2} | {:.2} |",
        f.overlap_mean, g.overlap_mean
    );
    let row = |w: &mut String, name: &str, a: &Dist, b: &Dist, prec: usize| {
        let _ = writeln!(
            w,
            "| {name}: median / p95 / max | {:.p$} / {:.p$} / {:.p$} | {:.p$} / {:.p$} / {:.p$} |",
            a.median,
            a.p95,
            a.max,
            b.median,
            b.p95,
            b.max,
            p = prec
        );
    };
    row(w, "rounds", &f.rounds, &g.rounds, 0);
    row(w, "latency ms (node)", &f.latency_ms, &g.latency_ms, 1);
    row(w, "latency ms (caller)", &f.wall_ms, &g.wall_ms, 1);
    row(w, "queries", &f.queries, &g.queries, 0);
    let _ = writeln!(
        w,
        "| queries: mean | {:.1} | {:.1} |\n",
        f.queries.mean, g.queries.mean
    );

    let mark = |ok: bool| if ok { "met" } else { "**missed**" };
    let found = g.found.unwrap_or(0.0);
    let _ = writeln!(w, "| target | measured | |\n|---|---|---|");
    let _ = writeln!(
        w,
        "| 100 % of announced info-hashes found | {} of {} | {} |",
        pct(found * g.completed as f64 / g.lookups.max(1) as f64),
        g.lookups,
        mark(found == 1.0 && g.completed == g.lookups && g.lookups > 0)
    );
    let _ = writeln!(
        w,
        "| median rounds ≤ log2(N)/2 = {:.2} | {:.0} | {} |",
        r.rounds_target,
        r.rounds_median,
        mark(r.rounds_median <= r.rounds_target)
    );
    s
}
