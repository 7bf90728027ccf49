//! Piece picker at scale: time per `pick` that starts a new piece, and per
//! whole-bitfield availability change, at 1,000, 100,000 and 2,000,000
//! pieces.
//!
//! `cargo bench --bench picker --offline` (add `-- --quick` for shorter
//! runs). Each torrent has 16 KiB pieces (one block each) and the
//! availability of 20 peers with random bitfields (each piece with
//! probability 1/2) plus 3 seeders. Picks come from a seeder and from a peer
//! with a random half of the pieces, `max` = 1 block, so every timed call
//! starts exactly one piece. Batches of 16 picks are timed; between batches
//! (untimed) the blocks arrive and the pieces fail their hash, which puts
//! them back unstarted, so the picker's state is the same for every batch
//! and at most 16 piece buffers exist at once.

use std::hint::black_box;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use xorrent::engine::picker::{BlockOutcome, Picker};
use xorrent::types::{Bitfield, BlockRef, Geometry};

const PIECE_LEN: u32 = 16_384;
const RANDOM_PEERS: usize = 20;
const SEEDERS: usize = 3;
const BATCH: usize = 16;

fn random_half(geo: &Geometry, rng: &mut StdRng) -> Bitfield {
    let mut b = Bitfield::new(geo.num_pieces);
    for i in geo.pieces() {
        if rng.gen_bool(0.5) {
            b.set(i);
        }
    }
    b
}

/// Runs `batch` (which returns how many operations it timed and their
/// time) until `budget` is spent, at least twice; nanoseconds per operation.
fn measure(budget: Duration, mut batch: impl FnMut() -> (usize, Duration)) -> f64 {
    let (mut ops, mut spent, mut rounds) = (0usize, Duration::ZERO, 0);
    let wall = Instant::now();
    while rounds < 2 || (wall.elapsed() < budget && spent < budget) {
        let (n, t) = batch();
        ops += n;
        spent += t;
        rounds += 1;
    }
    spent.as_nanos() as f64 / ops as f64
}

/// Times `BATCH` picks by `peer_has`, each starting one new piece, then
/// (untimed) fails those pieces so they are unstarted again.
fn pick_batch(p: &mut Picker, peer_has: &Bitfield, block: &[u8]) -> (usize, Duration) {
    let geo = p.geometry();
    let mut picked: Vec<BlockRef> = Vec::with_capacity(BATCH);
    let mut out = Vec::with_capacity(1);
    let t = Instant::now();
    for _ in 0..BATCH {
        out.clear();
        p.pick(1, black_box(peer_has), 1, &mut out);
        picked.extend_from_slice(&out);
    }
    let spent = t.elapsed();
    assert_eq!(picked.len(), BATCH, "every pick starts a piece");
    for b in picked {
        let piece = geo.piece(b.piece).expect("picked from the torrent");
        match p.on_block(1, piece, b.offset, &block[..b.len as usize]) {
            BlockOutcome::Stored {
                complete: Some(c), ..
            } => p.piece_failed(c.piece, c.data),
            other => panic!("{other:?}"),
        }
    }
    (BATCH, spent)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let budget = Duration::from_millis(if quick { 300 } else { 2_000 });
    let block = vec![0u8; PIECE_LEN as usize];
    println!(
        "{:>10}  {:>14}  {:>14}  {:>16}  {:>16}",
        "pieces", "pick seeder ns", "pick half ns", "avail seeder µs", "avail half µs"
    );
    for n in [1_000u32, 100_000, 2_000_000] {
        let mut rng = StdRng::seed_from_u64(u64::from(n));
        let geo = Geometry::new(u64::from(n) * u64::from(PIECE_LEN), PIECE_LEN);
        let mut p = Picker::new(geo, 1);
        let seeder = Bitfield::full(n);
        for _ in 0..RANDOM_PEERS {
            p.add_availability(&random_half(&geo, &mut rng));
        }
        for _ in 0..SEEDERS {
            p.add_availability(&seeder);
        }
        let half = random_half(&geo, &mut rng);

        let seeder_ns = measure(budget, || pick_batch(&mut p, &seeder, &block));
        let half_ns = measure(budget, || pick_batch(&mut p, &half, &block));

        // A peer connecting and leaving: its whole bitfield in and out.
        let avail = |p: &mut Picker, bits: &Bitfield| {
            measure(budget, || {
                let t = Instant::now();
                p.add_availability(black_box(bits));
                p.remove_availability(black_box(bits));
                (2, t.elapsed())
            })
        };
        let avail_seeder_us = avail(&mut p, &seeder) / 1e3;
        let avail_half_us = avail(&mut p, &half) / 1e3;
        println!(
            "{n:>10}  {seeder_ns:>14.0}  {half_ns:>14.0}  {avail_seeder_us:>16.1}  {avail_half_us:>16.1}"
        );
    }
}
