//! Fast resume against the real binary: a restart trusts the resume record
//! for files whose size and mtime are unchanged (no data read), re-hashes
//! exactly the pieces of a touched or truncated file, survives SIGKILL at
//! random moments losing only recent pieces, and catches records that
//! claim pieces lying over holes or that are garbage.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;
use rand::Rng;
use sha1::{Digest, Sha1};

const MIB: u64 = 1 << 20;

fn gated() -> bool {
    if !in_netns() {
        eprintln!("SKIPPED: needs scripts/netns-run (a private network namespace)");
        return false;
    }
    true
}

fn read_json(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap()
}

fn u64_at(j: &serde_json::Value, ptr: &str) -> u64 {
    j.pointer(ptr)
        .and_then(|v| v.as_u64())
        .unwrap_or_else(|| panic!("no {ptr} in {j}"))
}

/// SIGINT: the clean stop (first Ctrl-C) that flushes the resume record.
fn sigint(p: &Proc) {
    // SAFETY: kill(2) on our own child's pid touches no memory.
    let r = unsafe { libc::kill(p.pid() as libc::pid_t, libc::SIGINT) };
    assert_eq!(r, 0, "kill -INT {}", p.pid());
}

/// Runs `xorrent seed --seed-time 1s` with no peers: it checks, seeds for a
/// second and exits. Returns the summary and the wall time.
fn seed_once(
    torrent: &Path,
    data: &Path,
    state: &Path,
    summary: &Path,
    ip: Ipv4Addr,
    extra: &[&str],
) -> (serde_json::Value, Duration) {
    let start = Instant::now();
    let mut p = Proc::spawn(
        "xorrent seed",
        xorrent_cmd()
            .arg("seed")
            .arg(torrent)
            .arg(data)
            .arg("--state-dir")
            .arg(state)
            .args([
                "--seed-time",
                "1s",
                "--bind",
                &ip.to_string(),
                "--port",
                "0",
            ])
            .arg("--summary-json")
            .arg(summary)
            .arg("-q")
            .args(extra),
    );
    let st = p.wait_timeout(Duration::from_secs(300));
    assert!(st.success(), "xorrent seed exited with {st}");
    (read_json(summary), start.elapsed())
}

/// A long-running `xorrent seed` on `ip`:6881 (its own state dir), ready
/// once it listens.
fn start_seeder(torrent: &Path, data: &Path, ip: Ipv4Addr, summary: &Path) -> Proc {
    let p = Proc::spawn(
        "xorrent seed (honest)",
        xorrent_cmd()
            .arg("seed")
            .arg(torrent)
            .arg(data)
            .args(["--bind", &ip.to_string(), "--port", "6881", "-q"])
            .arg("--summary-json")
            .arg(summary),
    );
    let addr = SocketAddr::new(ip.into(), 6881);
    let start = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "xorrent seed never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Its check of a few MiB is done by now; the downloader retries anyway.
    std::thread::sleep(Duration::from_millis(300));
    p
}

/// Stops a seeder with SIGINT and returns its summary.
fn stop_seeder(mut p: Proc, summary: &Path) -> serde_json::Value {
    sigint(&p);
    let st = p.wait_timeout(Duration::from_secs(60));
    assert!(st.success(), "seeder exited with {st}");
    read_json(summary)
}

/// `xorrent download` from `peer` into `out`, keeping its resume record in
/// `state`.
fn download_cmd(
    torrent: &Path,
    out: &Path,
    state: &Path,
    ip: Ipv4Addr,
    peer: Ipv4Addr,
    summary: &Path,
    extra: &[&str],
) -> std::process::Command {
    let mut c = xorrent_cmd();
    c.arg("download")
        .arg(torrent)
        .arg("-o")
        .arg(out)
        .arg("--state-dir")
        .arg(state)
        .args(["--bind", &ip.to_string(), "--port", "0"])
        .arg("--peer")
        .arg(format!("{peer}:6881"))
        .arg("--summary-json")
        .arg(summary)
        .arg("-q")
        .args(extra);
    c
}

fn assert_same_bytes(got: &Path, want: &Path) {
    let (g, w) = (std::fs::read(got).unwrap(), std::fs::read(want).unwrap());
    assert_eq!(g.len(), w.len(), "length of {}", got.display());
    assert!(
        Sha1::digest(&g) == Sha1::digest(&w),
        "content of {} differs from {}",
        got.display(),
        want.display()
    );
}

/// The one `.resume` file under `state` (None while there is none).
fn resume_file(state: &Path) -> Option<PathBuf> {
    let dir = std::fs::read_dir(state.join("resume")).ok()?;
    let mut found: Vec<PathBuf> = dir
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "resume"))
        .collect();
    assert!(found.len() <= 1, "several records: {found:?}");
    found.pop()
}

#[test]
fn restarting_a_completed_torrent_seeds_without_reading_its_data() {
    if !gated() {
        return;
    }
    let ip = loopback_block();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let file = data_dir.join("big.bin");
    const SIZE: u64 = 1 << 30;
    {
        // Real blocks (not sparse): a random MiB, stamped with its index
        // so no two pieces are alike.
        let block = random_bytes(MIB as usize, 77);
        let mut w =
            std::io::BufWriter::with_capacity(4 << 20, std::fs::File::create(&file).unwrap());
        let mut b = block.clone();
        for i in 0..SIZE / MIB {
            b[..8].copy_from_slice(&i.to_le_bytes());
            w.write_all(&b).unwrap();
        }
        w.into_inner().unwrap().sync_all().unwrap();
    }
    let torrent = dir.path().join("big.torrent");
    let st = xorrent_cmd()
        .arg("create")
        .arg(&file)
        .arg("-o")
        .arg(&torrent)
        .args(["-l", "1M", "--no-creation-date"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "xorrent create failed");
    let pieces = SIZE / MIB;
    let state = dir.path().join("state");

    let (a, ta) = seed_once(
        &torrent,
        &data_dir,
        &state,
        &dir.path().join("a.json"),
        ip(1),
        &[],
    );
    println!(
        "first run: {:.2} s wall, check {:.2} s, {} pieces hashed, {} bytes read",
        ta.as_secs_f64(),
        a["check"]["secs"].as_f64().unwrap_or(-1.0),
        u64_at(&a, "/check/pieces_hashed"),
        u64_at(&a, "/read_bytes"),
    );
    assert_eq!(u64_at(&a, "/check/pieces_hashed"), pieces, "{a}");
    assert_eq!(a["check"]["fast_resume"], false, "{a}");
    assert!(u64_at(&a, "/read_bytes") >= SIZE, "{a}");
    assert!(resume_file(&state).is_some(), "no resume record written");

    let (b, tb) = seed_once(
        &torrent,
        &data_dir,
        &state,
        &dir.path().join("b.json"),
        ip(1),
        &[],
    );
    println!(
        "second run: {:.2} s wall, check {:.3} s, {} pieces hashed, {} bytes read",
        tb.as_secs_f64(),
        b["check"]["secs"].as_f64().unwrap_or(-1.0),
        u64_at(&b, "/check/pieces_hashed"),
        u64_at(&b, "/read_bytes"),
    );
    assert_eq!(u64_at(&b, "/check/pieces_hashed"), 0, "{b}");
    assert_eq!(b["check"]["fast_resume"], true, "{b}");
    assert_eq!(u64_at(&b, "/resumed"), SIZE, "{b}");
    assert!(u64_at(&b, "/read_bytes") < 8 * MIB, "{b}");
}

/// Three files not aligned to the 32 KiB pieces: a = [0, 100000),
/// b = [100000, 400001), c = [400001, 550004).
const PL: u64 = 32 * 1024;
const LENS: [u64; 3] = [100_000, 300_001, 150_003];

fn pieces_over(start: u64, end: u64) -> std::ops::RangeInclusive<u64> {
    start / PL..=(end - 1) / PL
}

#[test]
fn touching_or_truncating_one_file_rechecks_only_that_file() {
    if !gated() {
        return;
    }
    let ip = loopback_block();
    let dir = tempfile::tempdir().unwrap();
    let names = ["a", "b", "c"];
    let contents: Vec<Vec<u8>> = LENS
        .iter()
        .enumerate()
        .map(|(i, &l)| random_bytes(l as usize, 200 + i as u64))
        .collect();
    let files: Vec<(Vec<&str>, Vec<u8>)> = names
        .iter()
        .zip(&contents)
        .map(|(n, d)| (vec![*n], d.clone()))
        .collect();
    let t = make_torrent("tree", &files, PL as usize, None, true);
    let torrent = dir.path().join("tree.torrent");
    std::fs::write(&torrent, &t).unwrap();
    let (data, pristine) = (dir.path().join("data"), dir.path().join("pristine"));
    for root in [&data, &pristine] {
        std::fs::create_dir_all(root.join("tree")).unwrap();
        for (n, d) in names.iter().zip(&contents) {
            std::fs::write(root.join("tree").join(n), d).unwrap();
        }
    }
    let total: u64 = LENS.iter().sum();
    let n_pieces = total.div_ceil(PL);
    let b_start = LENS[0];
    let b_end = LENS[0] + LENS[1];
    let over_b = pieces_over(b_start, b_end);
    let b_pieces = over_b.end() - over_b.start() + 1;
    let b_piece_bytes: u64 = over_b.clone().map(|p| PL.min(total - p * PL)).sum();
    assert_eq!(b_pieces, 10); // pieces 3..=12 of 17
    let state = dir.path().join("state");
    let b = data.join("tree/b");

    let (first, _) = seed_once(
        &torrent,
        &data,
        &state,
        &dir.path().join("1.json"),
        ip(1),
        &[],
    );
    assert_eq!(u64_at(&first, "/check/pieces_hashed"), n_pieces, "{first}");

    // A touch: same bytes, another mtime.
    let mtime = std::fs::metadata(&b).unwrap().modified().unwrap();
    std::fs::File::options()
        .write(true)
        .open(&b)
        .unwrap()
        .set_modified(mtime + Duration::from_secs(7))
        .unwrap();
    let (touched, _) = seed_once(
        &torrent,
        &data,
        &state,
        &dir.path().join("2.json"),
        ip(1),
        &[],
    );
    println!("after touching b: {}", touched["check"]);
    assert_eq!(
        u64_at(&touched, "/check/pieces_hashed"),
        b_pieces,
        "{touched}"
    );
    assert_eq!(touched["check"]["fast_resume"], true, "{touched}");

    // Untouched since that run's record: nothing to hash.
    let (again, _) = seed_once(
        &torrent,
        &data,
        &state,
        &dir.path().join("3.json"),
        ip(1),
        &[],
    );
    assert_eq!(u64_at(&again, "/check/pieces_hashed"), 0, "{again}");

    // Truncate b to half: only its missing part comes back from a seeder.
    std::fs::File::options()
        .write(true)
        .open(&b)
        .unwrap()
        .set_len(LENS[1] / 2)
        .unwrap();
    let seed_summary = dir.path().join("seeder.json");
    let seeder = start_seeder(&torrent, &pristine, ip(2), &seed_summary);
    let summary = dir.path().join("dl.json");
    let mut dl = Proc::spawn(
        "xorrent download",
        &mut download_cmd(&torrent, &data, &state, ip(1), ip(2), &summary, &[]),
    );
    let st = dl.wait_timeout(Duration::from_secs(120));
    assert!(st.success(), "download exited with {st}");
    let j = read_json(&summary);
    println!(
        "after truncating b: check {}, downloaded {} of at most {b_piece_bytes}",
        j["check"],
        u64_at(&j, "/downloaded")
    );
    assert_eq!(u64_at(&j, "/check/pieces_hashed"), b_pieces, "{j}");
    let got = u64_at(&j, "/downloaded");
    assert!(got > 0, "{j}");
    assert!(
        got <= b_piece_bytes,
        "downloaded {got} > {b_piece_bytes}: {j}"
    );
    // b's first half is intact: at most the pieces from its middle on.
    let from_mid = (b_start + LENS[1] / 2) / PL * PL;
    assert!(got <= (over_b.end() + 1) * PL - from_mid, "{j}");
    for n in names {
        assert_same_bytes(&data.join("tree").join(n), &pristine.join("tree").join(n));
    }
    let s = stop_seeder(seeder, &seed_summary);
    assert!(u64_at(&s, "/uploaded") >= got, "{s}");
}

#[test]
fn twenty_kills_lose_at_most_the_pieces_in_flight() {
    if !gated() {
        return;
    }
    let ip = loopback_block();
    let dir = tempfile::tempdir().unwrap();
    const SIZE: u64 = 64 * MIB;
    let data = random_bytes(SIZE as usize, 3);
    let t = make_torrent(
        "payload.bin",
        &[(vec!["payload.bin"], data.clone())],
        256 * 1024,
        None,
        false,
    );
    let torrent = dir.path().join("p.torrent");
    std::fs::write(&torrent, &t).unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("payload.bin"), &data).unwrap();
    drop(data);
    let (out, state) = (dir.path().join("out"), dir.path().join("state"));
    let seed_summary = dir.path().join("seeder.json");
    let seeder = start_seeder(&torrent, &src, ip(2), &seed_summary);
    let summary = dir.path().join("dl.json");
    // 2 MiB/s: 64 MiB take 32 s, longer than twenty runs of 0.3-2.5 s, so
    // every kill lands mid-download (at 8 MiB/s it would end after ~9).
    const RATE: u64 = 2 * MIB;
    let extra = ["--max-download-rate", "2M", "--resume-every", "1"];

    let started = Instant::now();
    let mut rng = rand::thread_rng();
    let mut kills = 0;
    let mut finished_early = false;
    for _ in 0..20 {
        let mut p = Proc::spawn(
            "xorrent download",
            &mut download_cmd(&torrent, &out, &state, ip(1), ip(2), &summary, &extra),
        );
        let wait = Duration::from_secs_f64(rng.gen_range(0.3..2.5));
        std::thread::sleep(wait);
        if let Some(st) = p.child.try_wait().unwrap() {
            assert!(st.success(), "download exited with {st}");
            finished_early = true;
            break;
        }
        p.child.kill().unwrap(); // SIGKILL
        p.child.wait().unwrap();
        kills += 1;
        let have = resume_file(&state)
            .and_then(|f| xorrent::resume::load(&f).ok().flatten())
            .map_or(0, |r| r.have.count());
        println!(
            "kill {kills} after {:.2} s: record has {have} pieces",
            wait.as_secs_f64()
        );
    }
    if !finished_early {
        let mut p = Proc::spawn(
            "xorrent download (last)",
            &mut download_cmd(&torrent, &out, &state, ip(1), ip(2), &summary, &extra),
        );
        let st = p.wait_timeout(Duration::from_secs(180));
        assert!(st.success(), "download exited with {st}");
    }
    let j = read_json(&summary);
    assert_same_bytes(&out.join("payload.bin"), &src.join("payload.bin"));
    let s = stop_seeder(seeder, &seed_summary);
    let uploaded = u64_at(&s, "/uploaded");
    // Each kill loses at most a flush interval's worth of pieces (1 s at
    // the rate) and what was in flight (requests, socket buffers).
    let bound = SIZE + kills * (RATE + 4 * MIB);
    println!(
        "{kills} kills, {:.1} s in all; last run: {}; seeder uploaded {:.1} MiB (bound {:.1} MiB)",
        started.elapsed().as_secs_f64(),
        j["check"],
        uploaded as f64 / MIB as f64,
        bound as f64 / MIB as f64
    );
    assert!(uploaded >= SIZE, "every byte came from this seeder: {s}");
    assert!(
        uploaded <= bound,
        "seeder uploaded {uploaded} > {bound}: {s}"
    );
}

#[test]
fn a_record_claiming_missing_pieces_is_caught() {
    if !gated() {
        return;
    }
    let ip = loopback_block();
    let dir = tempfile::tempdir().unwrap();
    const SIZE: u64 = 16 * MIB;
    const PIECE: u64 = 256 * 1024;
    let n = (SIZE / PIECE) as u32;
    let data = random_bytes(SIZE as usize, 4);
    let t = make_torrent(
        "payload.bin",
        &[(vec!["payload.bin"], data.clone())],
        PIECE as usize,
        None,
        false,
    );
    let torrent = dir.path().join("p.torrent");
    std::fs::write(&torrent, &t).unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("payload.bin"), &data).unwrap();
    let (out, state) = (dir.path().join("out"), dir.path().join("state"));
    let seed_summary = dir.path().join("seeder.json");
    let seeder = start_seeder(&torrent, &src, ip(2), &seed_summary);
    let summary = dir.path().join("dl.json");

    // Stop cleanly at about 40%, seen through the record saved each second.
    let mut p = Proc::spawn(
        "xorrent download (stopped)",
        &mut download_cmd(
            &torrent,
            &out,
            &state,
            ip(1),
            ip(2),
            &summary,
            &["--max-download-rate", "4M", "--resume-every", "1"],
        ),
    );
    let start = Instant::now();
    loop {
        let have = resume_file(&state)
            .and_then(|f| xorrent::resume::load(&f).ok().flatten())
            .map_or(0, |r| r.have.count());
        if have * 10 >= n * 4 {
            break;
        }
        assert!(
            p.child.try_wait().unwrap().is_none(),
            "download ended before 40%"
        );
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no 40% record within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    sigint(&p);
    let st = p.wait_timeout(Duration::from_secs(60));
    assert!(!st.success(), "an interrupted download reports failure");

    let path = resume_file(&state).expect("record after the stop");
    let mut rec = xorrent::resume::load(&path).unwrap().expect("a record");
    let had = rec.have.count();
    println!("stopped with {had} of {n} pieces");
    assert!(had < n, "the download finished before it was stopped");
    rec.have = xorrent::types::Bitfield::full(n);
    xorrent::resume::save(&path, &rec).unwrap();
    assert_eq!(
        xorrent::resume::load(&path).unwrap().unwrap().have.count(),
        n
    );

    let mut p = Proc::spawn(
        "xorrent download (lied to)",
        &mut download_cmd(&torrent, &out, &state, ip(1), ip(2), &summary, &[]),
    );
    let st = p.wait_timeout(Duration::from_secs(120));
    assert!(st.success(), "download exited with {st}");
    let j = read_json(&summary);
    println!(
        "after the lie: check {}, downloaded {}",
        j["check"], j["downloaded"]
    );
    assert_same_bytes(&out.join("payload.bin"), &src.join("payload.bin"));
    let got = u64_at(&j, "/downloaded");
    assert!(got > 0, "{j}");
    assert!(got <= SIZE - u64::from(had) * PIECE, "{j}");
    let hashed = u64_at(&j, "/check/pieces_hashed");
    assert!(hashed >= u64::from(n - had), "{j}");
    let _ = stop_seeder(seeder, &seed_summary);
}

#[test]
fn a_corrupt_record_is_ignored_with_a_message() {
    if !gated() {
        return;
    }
    let ip = loopback_block();
    let dir = tempfile::tempdir().unwrap();
    const PIECE: usize = 32 * 1024;
    let data = random_bytes(40 * PIECE + 123, 5);
    let t = make_torrent(
        "payload.bin",
        &[(vec!["payload.bin"], data.clone())],
        PIECE,
        None,
        false,
    );
    let torrent = dir.path().join("p.torrent");
    std::fs::write(&torrent, &t).unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("payload.bin"), &data).unwrap();
    let state = dir.path().join("state");
    let n = 41;

    let (a, _) = seed_once(
        &torrent,
        &src,
        &state,
        &dir.path().join("a.json"),
        ip(1),
        &[],
    );
    assert_eq!(u64_at(&a, "/check/pieces_hashed"), n, "{a}");
    let rec = resume_file(&state).expect("a record");
    std::fs::write(&rec, b"{\"record\": garbage \x00\xff").unwrap();

    let summary = dir.path().join("b.json");
    let mut p = Proc::spawn(
        "xorrent seed",
        xorrent_cmd()
            .arg("seed")
            .arg(&torrent)
            .arg(&src)
            .arg("--state-dir")
            .arg(&state)
            .args([
                "--seed-time",
                "1s",
                "--bind",
                &ip(1).to_string(),
                "--port",
                "0",
            ])
            .arg("--summary-json")
            .arg(&summary)
            .stderr(Stdio::piped()),
    );
    let (st, err) = p.wait_with_stderr(Duration::from_secs(120));
    assert!(st.success(), "seed exited with {st}: {err}");
    let j = read_json(&summary);
    assert_eq!(u64_at(&j, "/check/pieces_hashed"), n, "{j}");
    assert_eq!(j["check"]["fast_resume"], false, "{j}");
    assert!(
        err.contains("resume record ignored"),
        "stderr does not mention the record: {err}"
    );
    println!(
        "stderr: {}",
        err.lines().find(|l| l.contains("resume")).unwrap()
    );
    // The full check wrote a good record again.
    let (c, _) = seed_once(
        &torrent,
        &src,
        &state,
        &dir.path().join("c.json"),
        ip(1),
        &[],
    );
    assert_eq!(u64_at(&c, "/check/pieces_hashed"), 0, "{c}");
}
