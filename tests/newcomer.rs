//! What a new user trips over (issue 15): a magnet with `--peer`, `seed`
//! naming the content file, a closed pipe, causes printed once, honest
//! progress, one connection per peer, files that are not ours, signals,
//! flag checks, URLs and standard input, completions and the man page,
//! and aria2 magnets through our tracker (in tests/tracker_interop.rs).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::world::*;
use crate::common::*;

fn fixture(name: &str) -> PathBuf {
    repo().join("fixtures/conformance/torrents").join(name)
}

/// A single-file torrent of `len` random bytes named `name`, its data in
/// `data/`, no tracker.
fn untracked(w: &World, name: &str, len: usize, seed: u64) -> (PathBuf, PathBuf) {
    let data = w.path("data");
    std::fs::create_dir_all(&data).unwrap();
    let content = random_bytes(len, seed);
    let t = make_torrent(name, &[(vec![name], content.clone())], 16384, None, false);
    std::fs::write(data.join(name), content).unwrap();
    let path = w.path(&format!("{name}.torrent"));
    std::fs::write(&path, t).unwrap();
    (path, data)
}

/// `xorrent seed` on `host`:6881; returns once it accepts connections.
fn seed(w: &World, torrent: &Path, data: &Path, host: u8, extra: &[&str]) -> (Proc, Lines) {
    let addr = SocketAddr::new((w.ip)(host).into(), 6881);
    let mut p = Proc::spawn(
        "xorrent seed",
        xorrent_cmd()
            .arg("seed")
            .arg(torrent)
            .arg(data)
            .args(["--bind", &addr.ip().to_string(), "--port", "6881"])
            .args(["--status-interval", "1"])
            .args(extra)
            .stderr(Stdio::piped()),
    );
    let err = Lines::follow(p.child.stderr.take().unwrap());
    let start = Instant::now();
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Some(note) = p.exit_note() {
            panic!("xorrent seed {note}:\n{}", err.text());
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "seed never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (p, err)
}

/// `xorrent download WHAT -o OUT --peer <host 2>:6881 --bind <host 3>`
/// with `extra`; its exit status and stderr.
fn fetch(w: &World, what: &str, out: &Path, extra: &[&str]) -> (std::process::ExitStatus, String) {
    let mut p = Proc::spawn(
        "xorrent download",
        xorrent_cmd()
            .args(["download", what, "-o"])
            .arg(out)
            .args(["--peer", &format!("{}:6881", (w.ip)(2))])
            .args(["--bind", &(w.ip)(3).to_string()])
            .args(extra)
            .stderr(Stdio::piped()),
    );
    p.wait_with_stderr(Duration::from_secs(30))
}

// ------------------------------------------------------------- 1: magnet --

/// A first run (empty state directory) of a magnet with `--peer` and no
/// DHT: the peer is asked for the metadata and the download completes.
#[test]
fn a_magnet_with_peer_downloads_on_a_first_run() {
    if !interop_ready("a_magnet_with_peer_downloads_on_a_first_run", &[]) {
        return;
    }
    let w = World::new();
    let (t, data) = untracked(&w, "m.bin", 300_000, 81);
    let (_seed, _) = seed(&w, &t, &data, 2, &[]);
    let link = format!("magnet:?xt=urn:btih:{}&dn=m.bin", info_hash(&t));
    let out = w.path("out");
    let (st, err) = fetch(&w, &link, &out, &["--no-dht"]);
    assert!(st.success(), "{st}: {err}");
    assert_eq!(
        sha1_file(&out.join("m.bin")),
        sha1_file(&data.join("m.bin"))
    );
}

// ------------------------------------------------ 2: seed the file itself --

#[test]
fn seed_accepts_the_content_file_itself_as_path() {
    if !interop_ready("seed_accepts_the_content_file_itself_as_path", &[]) {
        return;
    }
    let w = World::new();
    let (t, data) = untracked(&w, "content.bin", 500_000, 82);
    // A different file name than the torrent's: PATH is the file itself.
    let renamed = w.path("renamed.bin");
    std::fs::rename(data.join("content.bin"), &renamed).unwrap();
    let (_seed, log) = seed(&w, &t, &renamed, 2, &[]);
    let out = w.path("out");
    let (st, err) = fetch(&w, &t.display().to_string(), &out, &[]);
    assert!(st.success(), "{st}: {err}\nseed:\n{}", log.text());
    assert_eq!(sha1_file(&out.join("content.bin")), sha1_file(&renamed));
}

// ---------------------------------------------------------- 3: broken pipe --

/// `xorrent info x.torrent | head -1`: quiet success, like ripgrep.
#[test]
fn a_closed_stdout_ends_quietly_with_success() {
    for args in [
        vec![
            "info".to_string(),
            fixture("sample.torrent").display().to_string(),
        ],
        vec![
            "info".into(),
            "--json".into(),
            fixture("anacrolix-23516C72685E8DB0C8F15553382A927F185C4F01.torrent")
                .display()
                .to_string(),
        ],
        vec!["completions".into(), "bash".into()],
        vec!["man".into()],
    ] {
        let mut p = xorrent_cmd()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Read one byte, then close our end, as `head -c1` does.
        let mut stdout = p.stdout.take().unwrap();
        let mut one = [0u8; 1];
        stdout.read_exact(&mut one).unwrap();
        drop(stdout);
        let out = p.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {}: {err}", out.status);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// `create --magnet ... | head -0`: the torrent is written, the closed
/// pipe ends the program quietly.
#[test]
fn create_into_a_closed_pipe_writes_the_torrent_and_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f.bin");
    std::fs::write(&src, random_bytes(50_000, 91)).unwrap();
    let t = dir.path().join("f.torrent");
    let mut p = xorrent_cmd()
        .arg("create")
        .arg(&src)
        .arg("-o")
        .arg(&t)
        .arg("--magnet")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(p.stdout.take());
    let out = p.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {err}", out.status);
    assert!(!err.contains("panicked"), "{err}");
    assert!(xorrent::metainfo::Torrent::from_file(&t).is_ok());
}

// ------------------------------------------------------ 4: causes once --

#[test]
fn an_io_error_names_its_cause_once() {
    let out = xorrent_cmd()
        .args(["info", "/no/such/file.torrent"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
}

// ------------------------------------------------------ 12: flag checks --

#[test]
fn seed_limits_without_seed_are_a_usage_error() {
    for flag in [["--seed-ratio", "2"], ["--seed-time", "1h"]] {
        let out = xorrent_cmd()
            .args(["download", "x.torrent"])
            .args(flag)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag[0]) && err.contains("--seed"), "{err}");
    }
}

#[test]
fn sizes_and_rates_take_b_ib_and_bare_suffixes() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f.bin");
    std::fs::write(&src, random_bytes(100_000, 83)).unwrap();
    for (i, len) in ["32K", "32KB", "32KiB", "32kib"].iter().enumerate() {
        let t = dir.path().join(format!("{i}.torrent"));
        let out = xorrent_cmd()
            .arg("create")
            .arg(&src)
            .arg("-o")
            .arg(&t)
            .args(["--piece-length", len])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{len}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(
            &xorrent_cmd()
                .arg("info")
                .arg("--json")
                .arg(&t)
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        assert_eq!(v["piece_length"], 32768, "{len}");
    }
    // A rate is checked when the flags are parsed: a bad one is refused
    // before anything else happens, a good one is not.
    for (rate, ok) in [
        ("3MB", true),
        ("3MiB", true),
        ("3M", true),
        ("3 MB/s", true),
        ("3X", false),
    ] {
        let out = xorrent_cmd()
            .args(["download", "/no/such.torrent", "--max-download-rate", rate])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        if ok {
            assert_eq!(out.status.code(), Some(1), "{rate}: {err}");
            assert!(err.contains("no/such.torrent"), "{rate}: {err}");
        } else {
            assert_eq!(out.status.code(), Some(2), "{rate}: {err}");
        }
    }
}

// ----------------------------------------------- 13: URLs, standard input --

#[test]
fn info_reads_standard_input() {
    let bytes = std::fs::read(fixture("sample.torrent")).unwrap();
    let mut p = xorrent_cmd()
        .args(["info", "--json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    p.stdin.take().unwrap().write_all(&bytes).unwrap();
    let out = p.wait_with_output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let want: serde_json::Value = serde_json::from_slice(
        &xorrent_cmd()
            .args(["info", "--json"])
            .arg(fixture("sample.torrent"))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(v, want);
}

/// Serves `body` once per connection as an HTTP response, `count` times.
fn serve(body: Vec<u8>, count: usize) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().take(count) {
            let mut s = s.unwrap();
            let mut req = [0u8; 4096];
            let _ = s.read(&mut req);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/x-bittorrent\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    addr
}

#[test]
fn info_and_download_take_an_http_link_to_a_torrent() {
    if !interop_ready("info_and_download_take_an_http_link_to_a_torrent", &[]) {
        return;
    }
    let w = World::new();
    let (t, data) = untracked(&w, "u.bin", 200_000, 84);
    let http = serve(std::fs::read(&t).unwrap(), 2);
    let url = format!("http://{http}/files/u.torrent");
    let out = xorrent_cmd()
        .args(["info", "--json", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["info_hash"], info_hash(&t));

    let (_seed, _) = seed(&w, &t, &data, 2, &[]);
    let dir = w.path("out");
    let (st, err) = fetch(&w, &url, &dir, &[]);
    assert!(st.success(), "{st}: {err}");
    assert_eq!(
        sha1_file(&dir.join("u.bin")),
        sha1_file(&data.join("u.bin"))
    );
}

// ------------------------------------------- 14: completions, man page --

#[test]
fn completions_and_the_man_page_are_printed() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef xorrent"),
        ("fish", "complete -c xorrent"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = xorrent_cmd().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(marker),
            "{shell}: {}",
            &text[..text.len().min(300)]
        );
        assert!(
            text.contains("download") && text.contains("encryption"),
            "{shell}"
        );
    }
    let out = xorrent_cmd().arg("man").output().unwrap();
    assert!(out.status.success());
    let man = String::from_utf8_lossy(&out.stdout);
    assert!(
        man.starts_with(".ie") || man.contains(".TH xorrent"),
        "{}",
        &man[..200]
    );
    assert!(man.contains("download"));
}

// ----------------------------------------------- 10: files that are not ours --

/// A file of the torrent's name that xorrent did not write and that
/// matches no piece stops the download before it is touched; the same
/// file with `--overwrite` is replaced; a file that partly matches is
/// resumed without the flag.
#[test]
fn an_unrelated_file_is_not_clobbered_without_overwrite() {
    if !interop_ready("an_unrelated_file_is_not_clobbered_without_overwrite", &[]) {
        return;
    }
    let w = World::new();
    let (t, data) = untracked(&w, "c.bin", 400_000, 85);
    let (_seed, _) = seed(&w, &t, &data, 2, &[]);
    let out = w.path("out");
    std::fs::create_dir_all(&out).unwrap();
    let theirs = random_bytes(123_456, 86);
    std::fs::write(out.join("c.bin"), &theirs).unwrap();
    let run = |extra: &[&str]| fetch(&w, &t.display().to_string(), &out, extra);
    let (st, err) = run(&[]);
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(
        err.contains("c.bin") && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(out.join("c.bin")).unwrap(),
        theirs,
        "left as it was"
    );

    // Partly right (the first half of the real data): resumed, no flag.
    let real = std::fs::read(data.join("c.bin")).unwrap();
    std::fs::write(out.join("c.bin"), &real[..200_000]).unwrap();
    let (st, err) = run(&[]);
    assert!(st.success(), "{err}");
    assert_eq!(
        sha1_file(&out.join("c.bin")),
        sha1_file(&data.join("c.bin"))
    );

    std::fs::write(out.join("c.bin"), &theirs).unwrap();
    let (st, err) = run(&["--overwrite"]);
    assert!(st.success(), "{err}");
    assert_eq!(
        sha1_file(&out.join("c.bin")),
        sha1_file(&data.join("c.bin"))
    );
}

// ----------------------------------------------------------- 11: SIGTERM --

/// SIGTERM stops like Ctrl-C, with the same exit code, in each phase:
/// fetching metadata and downloading (130: not done), seeding (0).
#[test]
fn sigterm_and_ctrl_c_end_each_phase_alike() {
    if !interop_ready("sigterm_and_ctrl_c_end_each_phase_alike", &[]) {
        return;
    }
    let w = World::new();
    let (t, data) = untracked(&w, "s.bin", 4_000_000, 87);
    let (_seed, _) = seed(&w, &t, &data, 2, &["--max-upload-rate", "200K"]);
    let peer = format!("{}:6881", (w.ip)(2));
    let nobody = format!("{}:6881", (w.ip)(9));
    let link = format!("magnet:?xt=urn:btih:{}", info_hash(&t));
    let mut host = 10;
    for sig in [2, 15] {
        // (what, arguments, the line that says the phase began, exit code)
        let cases: [(&str, Vec<String>, &str, i32); 3] = [
            (
                "metadata",
                vec![link.clone(), "--peer".into(), nobody.clone()],
                "fetching metadata",
                130,
            ),
            (
                "download",
                vec![t.display().to_string(), "--peer".into(), peer.clone()],
                "downloading",
                130,
            ),
            (
                "seeding",
                vec![
                    t.display().to_string(),
                    "--seed".into(),
                    "--peer".into(),
                    peer.clone(),
                    "--max-download-rate".into(),
                    "0".into(),
                ],
                "seeding",
                0,
            ),
        ];
        for (what, args, phase, code) in cases {
            host += 1;
            // Seeding: a fresh copy of the data, so nothing is downloaded.
            let out = w.path(&format!("out-{host}"));
            if what == "seeding" {
                std::fs::create_dir_all(&out).unwrap();
                std::fs::copy(data.join("s.bin"), out.join("s.bin")).unwrap();
            }
            let mut p = Proc::spawn(
                "xorrent download",
                xorrent_cmd()
                    .arg("download")
                    .args(&args)
                    .arg("-o")
                    .arg(&out)
                    .args([
                        "--bind",
                        &(w.ip)(host).to_string(),
                        "--status-interval",
                        "1",
                    ])
                    .stderr(Stdio::piped()),
            );
            let err = Lines::follow(p.child.stderr.take().unwrap());
            assert!(
                err.wait_for(Duration::from_secs(30), |l| l.starts_with(phase))
                    .is_some(),
                "{what}: never reached {phase:?}:\n{}",
                err.text()
            );
            unsafe_kill(p.pid(), sig);
            let st = p.wait_timeout(Duration::from_secs(20));
            assert_eq!(
                st.code(),
                Some(code),
                "{what} after signal {sig}:\n{}",
                err.text()
            );
            assert!(!err.text().contains("panicked"), "{}", err.text());
        }
    }
}

// ------------------------------------------------ 5, 7: honest progress --

/// The status lines of a run: rates count only this run's transfers (a
/// resumed half does not inflate them), ETA is unknown while nothing
/// arrives, and seeding speaks of uploads.
#[test]
fn status_lines_count_this_run_and_seeding_speaks_of_uploads() {
    if !interop_ready("status_lines_count_this_run", &[]) {
        return;
    }
    let w = World::new();
    let (t, data) = untracked(&w, "r.bin", 3_000_000, 88);
    // Nobody to download from yet: rate 0, ETA unknown.
    let out = w.path("out");
    std::fs::create_dir_all(&out).unwrap();
    let real = std::fs::read(data.join("r.bin")).unwrap();
    std::fs::write(out.join("r.bin"), &real[..2_000_000]).unwrap();
    let run = |peer: &str, host: u8| {
        let mut p = Proc::spawn(
            "xorrent download",
            xorrent_cmd()
                .arg("download")
                .arg(&t)
                .arg("-o")
                .arg(&out)
                .args(["--peer", peer, "--status-interval", "1"])
                .args(["--bind", &(w.ip)(host).to_string()])
                .stderr(Stdio::piped()),
        );
        let err = Lines::follow(p.child.stderr.take().unwrap());
        (p, err)
    };
    let (mut p, err) = run(&format!("{}:6881", (w.ip)(9)), 3);
    let line = err
        .wait_for(Duration::from_secs(20), |l| l.starts_with("downloading:"))
        .expect("a status line");
    assert!(line.contains(" 0 B/s ETA unknown"), "{line}");
    unsafe_kill(p.pid(), 2);
    assert_eq!(p.wait_timeout(Duration::from_secs(20)).code(), Some(130));

    // Now from a seeder capped at 256 KiB/s: two thirds are on disk.
    let (mut s, slog) = seed(&w, &t, &data, 2, &["--max-upload-rate", "256K"]);
    let (mut p, err) = run(&format!("{}:6881", (w.ip)(2)), 4);
    let st = p.wait_timeout(Duration::from_secs(60));
    assert!(st.success(), "{}", err.text());
    let rates: Vec<f64> = err
        .lines()
        .iter()
        .filter(|l| l.starts_with("downloading:"))
        .filter_map(|l| rate_kib(l))
        .collect();
    assert!(
        rates.iter().all(|&r| r < 400.0),
        "rates above the seeder's 256 KiB/s cap: {rates:?}\n{}",
        err.text()
    );
    let seeding = slog
        .wait_for(Duration::from_secs(10), |l| {
            l.starts_with("seeding:") && l.contains("ratio")
        })
        .expect("a seeding line");
    assert!(
        seeding.contains(&format!("listening on {}:6881", (w.ip)(2))) && seeding.contains('↑'),
        "{seeding}"
    );
    unsafe_kill(s.pid(), 2);
    assert!(s.wait_timeout(Duration::from_secs(20)).success());
    let said = slog.all_after_close(Duration::from_secs(5));
    assert!(
        said.iter()
            .any(|l| l.starts_with("seeded: r.bin") && l.contains("uploaded, ratio")),
        "{said:?}"
    );
}

/// The rate in a `downloading:` line, in KiB/s.
fn rate_kib(line: &str) -> Option<f64> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let i = words.iter().position(|w| w.ends_with("/s"))?;
    let n: f64 = words.get(i.checked_sub(1)?)?.parse().ok()?;
    Some(match words[i] {
        "GiB/s" => n * 1024.0 * 1024.0,
        "MiB/s" => n * 1024.0,
        "KiB/s" => n,
        _ => n / 1024.0,
    })
}

// ----------------------------------------------- 8: one connection a peer --

/// Two processes that dial each other keep one connection between them.
#[test]
fn a_peer_that_dials_back_is_counted_once() {
    if !interop_ready("a_peer_that_dials_back_is_counted_once", &[]) {
        return;
    }
    let w = World::new();
    let (t, data) = untracked(&w, "d.bin", 2_000_000, 89);
    let (a_ip, b_ip) = ((w.ip)(2), (w.ip)(3));
    let summary = w.path("b.json");
    let out = w.path("out");
    // B first, dialling A (not up yet: it retries), then A dialling B.
    let mut b = Proc::spawn(
        "xorrent download",
        xorrent_cmd()
            .arg("download")
            .arg(&t)
            .arg("-o")
            .arg(&out)
            .args(["--peer", &format!("{a_ip}:6881"), "--port", "6881"])
            .args(["--bind", &b_ip.to_string(), "--summary-json"])
            .arg(&summary)
            .stderr(Stdio::piped()),
    );
    std::thread::sleep(Duration::from_millis(300));
    let (_a, _) = seed(
        &w,
        &t,
        &data,
        2,
        &[
            "--peer",
            &format!("{b_ip}:6881"),
            "--max-upload-rate",
            "300K",
        ],
    );
    let (st, err) = b.wait_with_stderr(Duration::from_secs(60));
    assert!(st.success(), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let from_a: Vec<&serde_json::Value> = v["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["addr"].as_str().unwrap().starts_with(&format!("{a_ip}:")))
        .collect();
    assert_eq!(from_a.len(), 1, "{v}");
}

// -------------------------------------------------- 6: the terminal width --

/// ANSI escape sequences (cursor moves, clearing) as line breaks.
fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            out.push('\n');
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// On an 80-column terminal (a pty from `script`) no line of the bars is
/// longer than the terminal, while checking, downloading and seeding.
#[test]
fn the_bars_fit_an_80_column_terminal() {
    if !interop_ready("the_bars_fit_an_80_column_terminal", &["script", "stty"]) {
        return;
    }
    let w = World::new();
    let (t, data) = untracked(&w, "a-rather-long-file-name-for-the-bar.bin", 3_000_000, 90);
    let name = "a-rather-long-file-name-for-the-bar.bin";
    let (_seed, _) = seed(&w, &t, &data, 2, &["--max-upload-rate", "1M"]);
    let out = w.path("out");
    std::fs::create_dir_all(&out).unwrap();
    // A third on disk: a check bar first.
    let real = std::fs::read(data.join(name)).unwrap();
    std::fs::write(out.join(name), &real[..1_000_000]).unwrap();
    let cmd = format!(
        "stty cols 80 rows 24; exec {} download {} -o {} --peer {}:6881 --bind {} --seed --seed-time 3s",
        xorrent_bin().display(),
        t.display(),
        out.display(),
        (w.ip)(2),
        (w.ip)(3),
    );
    let mut p = Proc::spawn(
        "script",
        Command::new("script")
            .args(["-qfec", &cmd, "/dev/null"])
            .envs(
                xorrent_cmd()
                    .get_envs()
                    .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    let mut raw = Vec::new();
    let mut stdout = p.child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let _ = stdout.read_to_end(&mut raw);
        raw
    });
    let st = p.wait_timeout(Duration::from_secs(60));
    let raw = reader.join().unwrap();
    let text = strip_ansi(&String::from_utf8_lossy(&raw));
    assert!(st.success(), "{st}: {text}");
    let segments: Vec<&str> = text.split(['\r', '\n']).filter(|l| !l.is_empty()).collect();
    for needle in ["checking", "ETA", "seeding"] {
        assert!(
            segments.iter().any(|l| l.contains(needle)),
            "no {needle:?} in {segments:#?}"
        );
    }
    // The closing report is prose the terminal may wrap; the bars may not.
    let long: Vec<&&str> = segments
        .iter()
        .filter(|l| l.chars().count() > 80 && !l.starts_with("done: "))
        .collect();
    assert!(long.is_empty(), "lines wider than 80 columns: {long:#?}");
}
