//! Shared helpers for integration tests: torrents built in memory, child
//! processes that die with the test, and the interop gate.

pub mod daemon;
pub mod fake_peer;
pub mod fake_tracker;
pub mod world;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use sha1::{Digest, Sha1};

pub fn xorrent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_xorrent"))
}

/// `xorrent` with its DHT off, so no test ever asks the public routers;
/// a DHT test sets `XORRENT_NO_DHT=0` and gives loopback bootstrap nodes.
/// Each command gets an empty state directory of its own (under the
/// target dir), so no run reuses another's saved DHT table or cached
/// magnet metadata; a test that wants that passes `--state-dir`.
pub fn xorrent_cmd() -> Command {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let state = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("state-{}-{n}", std::process::id()));
    let mut c = Command::new(xorrent_bin());
    c.env("XORRENT_NO_DHT", "1");
    c.env("XDG_STATE_HOME", state);
    c
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Deterministic pseudo-random bytes (xorshift), cheap to make in bulk.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn bstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(s.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(s);
}

fn bint(out: &mut Vec<u8>, i: u64) {
    out.extend_from_slice(format!("i{i}e").as_bytes());
}

/// A v1 torrent over `files` (path elements, data); single-file when there
/// is one file with one element and `multi` is false.
pub fn make_torrent(
    name: &str,
    files: &[(Vec<&str>, Vec<u8>)],
    piece_len: usize,
    announce: Option<&str>,
    multi: bool,
) -> Vec<u8> {
    let stream: Vec<u8> = files.iter().flat_map(|(_, d)| d.iter().copied()).collect();
    let mut pieces = Vec::new();
    for c in stream.chunks(piece_len) {
        pieces.extend_from_slice(&Sha1::digest(c));
    }
    let mut info = b"d".to_vec();
    if multi {
        bstr(&mut info, b"files");
        info.push(b'l');
        for (path, data) in files {
            info.push(b'd');
            bstr(&mut info, b"length");
            bint(&mut info, data.len() as u64);
            bstr(&mut info, b"path");
            info.push(b'l');
            for e in path {
                bstr(&mut info, e.as_bytes());
            }
            info.extend_from_slice(b"ee");
        }
        info.push(b'e');
    } else {
        bstr(&mut info, b"length");
        bint(&mut info, stream.len() as u64);
    }
    bstr(&mut info, b"name");
    bstr(&mut info, name.as_bytes());
    bstr(&mut info, b"piece length");
    bint(&mut info, piece_len as u64);
    bstr(&mut info, b"pieces");
    bstr(&mut info, &pieces);
    info.push(b'e');
    let mut t = b"d".to_vec();
    if let Some(a) = announce {
        bstr(&mut t, b"announce");
        bstr(&mut t, a.as_bytes());
    }
    bstr(&mut t, b"info");
    t.extend_from_slice(&info);
    t.push(b'e');
    t
}

pub fn sha1_file(path: &Path) -> [u8; 20] {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    Sha1::digest(&data).into()
}

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            child,
            name: name.to_string(),
        }
    }

    /// How the process ended, if it has, without reaping it: for failure
    /// messages (a helper that died explains a silent peer).
    pub fn exit_note(&self) -> Option<String> {
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // WNOWAIT leaves the child waitable for wait_timeout and Drop.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                self.child.id(),
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        let pid = unsafe { info.si_pid() };
        if r != 0 || pid == 0 {
            return None;
        }
        let status = unsafe { info.si_status() };
        Some(match info.si_code {
            libc::CLD_EXITED => format!("exited with code {status}"),
            _ => format!("killed by signal {status}"),
        })
    }

    /// Waits for exit with a deadline; kills and panics on timeout.
    pub fn wait_timeout(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st;
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                panic!("{} did not finish within {limit:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits like [`Proc::wait_timeout`] and returns what the process
    /// wrote to its piped stderr.
    pub fn wait_with_stderr(&mut self, limit: Duration) -> (std::process::ExitStatus, String) {
        let st = self.wait_timeout(limit);
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        (st, err)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first so seeders clean up, then make sure.
        unsafe_kill(self.child.id(), 15);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn unsafe_kill(pid: u32, sig: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// A fresh block of loopback addresses for one test: 127.M.N.1, .2, ...
/// with M from 100 up, so no two tests share an address (or a /24).
/// Every test that binds anything but 127.0.0.1 port 0 takes its
/// addresses from here; only `squat` keeps fixed ones, in 127.0.1-4.x.
pub fn loopback_block() -> impl Fn(u8) -> Ipv4Addr {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let (m, n) = (100 + (n / 250) as u8, 1 + (n % 250) as u8);
    move |host| Ipv4Addr::new(127, m, n, host)
}

/// True inside a network namespace whose only interface is loopback.
/// (/proc/net/dev is per namespace; /sys/class/net is not remounted.)
fn only_loopback_namespace() -> bool {
    match std::fs::read_to_string("/proc/net/dev") {
        Ok(s) => s
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .all(|name| name.trim() == "lo"),
        Err(_) => false,
    }
}

fn have_cmd(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd} >/dev/null 2>&1"))
        .status()
        .is_ok_and(|s| s.success())
}

fn have_libtorrent() -> bool {
    Command::new("/usr/bin/python3")
        .args(["-c", "import libtorrent"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether a test that runs real clients may proceed. Without root, a
/// private network namespace or a client it returns false after printing
/// why; with `XORRENT_REQUIRE_INTEROP=1` it panics instead.
pub fn interop_ready(test: &str, needs: &[&str]) -> bool {
    let mut missing = Vec::new();
    if !only_loopback_namespace() {
        missing.push(
            "a private network namespace with only loopback (run scripts/test as root)".to_string(),
        );
    }
    for n in needs {
        let ok = match *n {
            "libtorrent" => have_libtorrent(),
            other => have_cmd(other),
        };
        if !ok {
            missing.push(format!("`{n}`"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "SKIPPED interop test {test}: missing {}",
        missing.join(", ")
    );
    if std::env::var("XORRENT_REQUIRE_INTEROP").is_ok_and(|v| v == "1") {
        panic!("{msg} (XORRENT_REQUIRE_INTEROP=1 makes this a failure)");
    }
    // Straight to stderr: the test harness would swallow eprintln!.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{msg}");
    false
}

/// Whether sockets may be opened: inside a private namespace, or when the
/// caller is fine with loopback in the host namespace (no root).
pub fn in_netns() -> bool {
    only_loopback_namespace()
}

/// The lines a child writes to one of its pipes, read by a thread as they
/// come: every line so far (for logs in failure messages) and a queue to
/// wait on, so a child that writes a lot never blocks on a full pipe.
pub struct Lines {
    all: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    rx: std::sync::mpsc::Receiver<String>,
}

impl Lines {
    pub fn follow<R: std::io::Read + Send + 'static>(pipe: R) -> Lines {
        use std::io::BufRead;
        let all = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let keep = all.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                keep.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        Lines { all, rx }
    }

    /// The next line (after those already waited past) for which `want`
    /// holds; None if the pipe closes or `limit` passes first.
    pub fn wait_for(&self, limit: Duration, want: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) if want(&l) => return Some(l),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Every line, once the pipe has closed (the child exited) or `limit`
    /// passed.
    pub fn all_after_close(&self, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(_) => {}
                Err(_) => return self.lines(),
            }
        }
    }

    /// Every line read so far.
    pub fn lines(&self) -> Vec<String> {
        self.all.lock().unwrap().clone()
    }

    /// Every line read so far, joined (for assertion messages).
    pub fn text(&self) -> String {
        self.lines().join("\n")
    }
}
