#!/usr/bin/env python3
"""Download benchmark: xorrent against libtorrent, aria2 (and rqbit) on loopback.

One run of this script:
  * makes one random single-file payload (default 1 GiB) and a .torrent for it
    with 1 MiB pieces (mktorrent -l 20), announcing to an opentracker on
    127.0.0.1:6969 (whitelisted info-hash);
  * starts one libtorrent seeder (tests/interop/lt_peer.py) on 127.0.0.2:6881;
  * runs the leechers ONE AT A TIME, round-robin (x, lt, aria2, x, lt, ...),
    each on its own loopback address and into a fresh output directory:
      xorrent     127.0.0.3  --peer 127.0.0.2:6881 (also announces)
      libtorrent  127.0.0.4  lt_peer.py --mode leech --peer 127.0.0.2:6881
      aria2       127.0.0.5  via the tracker only (it cannot be given a peer)
      rqbit       127.0.0.6  --initial-peers 127.0.0.2:6881, if on PATH
  * does --warmup untimed downloads first (default 1), then
  * measures per run: wall seconds from spawn to exit, CPU seconds (user+sys,
    from wait4() rusage of the client process incl. its waited-for children),
    peak anonymous RSS (RssAnon of the client and its descendants, sampled
    every ~20 ms), and checks the SHA-1 of the downloaded file (any mismatch,
    non-zero exit or timeout aborts the benchmark);
  * prints medians, ratios to xorrent and the targets check, and optionally
    writes every number as JSON (--json FILE).

Everything that opens a socket runs in a private network namespace with only
loopback: the script re-executes itself under netns-run (scripts/netns-run,
else ../shared/netns-run, else `unshare --net`) unless /proc/net/dev already
lists only `lo`. It therefore needs root: `sudo scripts/bench.py`.
DHT, LSD, UPnP, NAT-PMP and PEX are off in every client.

With --magnet every client starts from the same magnet link instead of the
.torrent (same payload and seeder; libtorrent serves the info dictionary
with ut_metadata, on by default):
  magnet:?xt=urn:btih:<info-hash>&x.pe=127.0.0.2:6881&tr=<tracker, escaped>
      xorrent     `xorrent download MAGNET` (x.pe= and tr=; no --peer)
      libtorrent  tests/interop/lt_magnet.py --magnet MAGNET (x.pe= and tr=)
      aria2       the magnet through the tracker (it ignores x.pe=),
                  --bt-metadata-only=false --bt-save-metadata=false
      rqbit       the magnet with --initial-peers (untested)
Wall time still runs from spawn to exit, so it includes the metadata fetch.
Time to metadata (column "->meta"): for libtorrent, when lt_magnet.py's
`METADATA` line shows up on its stdout; for the others, when the output
file first exists (xorrent creates it right after the metadata arrives;
aria2 only when it starts the follow-up download, about one 1 s tick after
its ut_metadata exchange). Both are sampled every 20 ms from spawn. aria2
logs "Checksum error detected" for that new, empty file
(--check-integrity): harmless. lt_magnet.py differs
from lt_peer.py's leech mode in two ways that cost libtorrent time: it asks
for a block_finished alert per 16 KiB block (to count bytes per peer) and,
once finished, drains alerts for 0.2-1 s before it closes the session.

Caveats: the page cache is not dropped (the seeder's data stays cached, the
clients' writes go through the page cache except where a client uses
O_DIRECT); before each run the script calls sync() and waits until the
machine is quiet (--settle, --idle-threshold, --wait-idle), so one run's
writeback does not land in the next. It also counts the CPU time other
(user-space) processes used during each run (/proc/PID/stat of everything
outside its own process tree, kernel threads excluded); a run where that
exceeds --max-foreign cores is repeated up to --retries times (the discarded
runs stay in the JSON, marked). Right after each client exits it times a
sync() (column "sync"): a client that writes through the page cache leaves
data dirty, and writing it out is not in its wall or CPU time, while a
client using O_DIRECT pays for its writes inside the run. sync() flushes
every filesystem, so other processes' writes can add to it. Seeder and
leecher share the two cores, so wall time is CPU-bound. The libtorrent
leecher's CPU and RSS include its Python interpreter (a few MiB, ~0.1 s).
Phase times (until 5 % / 100 % of the output file has blocks allocated) come
from stat() every 20 ms: approximate, and meaningless for a client that
preallocates its files.
"""

import argparse
import hashlib
import http.client
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from benchlib import BenchError, make_workdir, median, sha1_file  # noqa: E402

SCRIPT = os.path.realpath(__file__)
REPO = os.path.dirname(os.path.dirname(SCRIPT))
NETNS_ENV = "XORRENT_BENCH_IN_NETNS"

TRACKER_IP = "127.0.0.1"
TRACKER_PORT = 6969
SEED_IP = "127.0.0.2"
PEER_PORT = 6881
CLIENT_IPS = {
    "xorrent": "127.0.0.3",
    "libtorrent": "127.0.0.4",
    "aria2": "127.0.0.5",
    "rqbit": "127.0.0.6",
}
ALL_CLIENTS = ["xorrent", "libtorrent", "aria2", "rqbit"]
ALIASES = {"x": "xorrent", "lt": "libtorrent", "aria2c": "aria2", "aria": "aria2"}

# Targets for xorrent.
TARGET_WALL_VS_LT = 0.8
TARGET_WALL_VS_ARIA2 = 0.5
TARGET_CPU_PER_GIB = 2.0
TARGET_RSS_MIB = 32.0

MiB = 1024 * 1024


def log(msg):
    sys.stderr.write("bench: %s\n" % msg)
    sys.stderr.flush()


# ---------------------------------------------------------------- netns --

def only_loopback():
    """True when /proc/net/dev lists no interface but `lo`."""
    with open("/proc/net/dev") as f:
        names = [ln.split(":", 1)[0].strip() for ln in f.readlines()[2:] if ":" in ln]
    return names == ["lo"]


def ensure_netns():
    if only_loopback():
        return
    if os.environ.get(NETNS_ENV):
        raise SystemExit("bench: re-executed under netns-run, but /proc/net/dev "
                         "still lists interfaces other than lo; refusing to run")
    if os.geteuid() != 0:
        raise SystemExit("bench: needs root to make a private network namespace "
                         "(run it as `sudo %s ...`)" % sys.argv[0])
    cands = [os.path.join(REPO, "scripts", "netns-run"),
             os.path.join(os.path.dirname(REPO), "shared", "netns-run"),
             "/work/shared/netns-run"]
    argv = [sys.executable, SCRIPT] + sys.argv[1:]
    os.environ[NETNS_ENV] = "1"
    for c in cands:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            os.execv(c, [c] + argv)
    unshare = shutil.which("unshare")
    if not unshare:
        raise SystemExit("bench: no netns-run and no unshare(1) found")
    os.execv(unshare, [unshare, "--net", "sh", "-c",
                       'ip link set lo up || exit 125; exec "$@"', "netns-run"] + argv)


# ------------------------------------------------------------ processes --

class Procs:
    """Every process the benchmark starts, each in its own process group."""

    def __init__(self):
        self.live = []

    def spawn(self, argv, log_path, env, cwd=None, stdout_path=None):
        out = open(stdout_path or log_path, "ab")
        err = out if stdout_path is None else open(log_path, "ab")
        try:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=err, env=env, cwd=cwd,
                                 start_new_session=True, close_fds=True)
        finally:
            out.close()
            if err is not out:
                err.close()
        self.live.append(p)
        return p

    def kill(self, p, grace=3.0):
        """SIGTERM the process group, SIGKILL it after `grace` seconds."""
        if p.returncode is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
            except ChildProcessError:
                pass
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if p.returncode is None:
            try:
                p.wait(timeout=5)
            except (subprocess.TimeoutExpired, ChildProcessError):
                pass
        if p in self.live:
            self.live.remove(p)

    def kill_all(self):
        for p in list(reversed(self.live)):
            self.kill(p)


def read_proc_field(pid, name, field):
    try:
        with open("/proc/%d/%s" % (pid, name)) as f:
            for ln in f:
                if ln.startswith(field):
                    return int(ln.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def descendants(root):
    """PIDs of all descendants of `root` (scans /proc)."""
    parent = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                s = f.read()
            parent[int(d)] = int(s[s.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    out, frontier = [], [root]
    while frontier:
        kids = [p for p, pp in parent.items() if pp in frontier]
        out.extend(kids)
        frontier = kids
    return out


# Not benchlib.Sampler: that one watches one process's RssAnon and nothing else.
class Sampler(threading.Thread):
    """Samples RssAnon (sum over the process tree) and the output file's
    allocated bytes every `period` s; kills the process group when the
    deadline passes."""

    def __init__(self, pid, t0, deadline, payload, out_file, period=0.02, watch=None):
        super().__init__(daemon=True)
        self.pid, self.t0, self.deadline = pid, t0, deadline
        self.payload, self.out_file, self.period = payload, out_file, period
        # (path, word): note when `word` first appears in the file at `path`
        self.watch = watch
        self.t_file = None
        self.t_word = None
        self.stop = threading.Event()
        self.peak_anon_kib = 0
        self.samples = 0
        self.t_5pct = None
        self.t_100pct = None
        self.timed_out = False

    def run(self):
        tree = [self.pid]
        last_scan = 0.0
        while not self.stop.is_set():
            now = time.monotonic()
            if now - last_scan >= 0.2:
                tree = [self.pid] + descendants(self.pid)
                last_scan = now
            anon = 0
            for p in tree:
                a = read_proc_field(p, "status", "RssAnon:")
                if a is not None:
                    anon += a
            exists = True
            try:
                alloc = os.stat(self.out_file).st_blocks * 512
            except OSError:
                alloc = 0
                exists = False
            self.samples += 1
            if anon > self.peak_anon_kib:
                self.peak_anon_kib = anon
            t = time.monotonic() - self.t0
            if self.t_file is None and exists:
                self.t_file = t
            if self.watch is not None and self.t_word is None:
                try:
                    with open(self.watch[0], "rb") as f:
                        if self.watch[1] in f.read().split():
                            self.t_word = t
                except OSError:
                    pass
            if self.t_5pct is None and alloc >= 0.05 * self.payload:
                self.t_5pct = t
            if self.t_100pct is None and alloc >= self.payload:
                self.t_100pct = t
            if now >= self.deadline and not self.timed_out:
                self.timed_out = True
                try:
                    os.killpg(self.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                self.deadline = now + 5  # then SIGKILL
            elif self.timed_out and now >= self.deadline:
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.deadline = float("inf")
            self.stop.wait(self.period)


def measure(procs, argv, log_path, env, payload, out_file, timeout, cwd=None,
            stdout_path=None, watch=None):
    """Runs argv to its exit; returns the measurements (dict). With `watch`
    (path, word) it also notes when the output file first exists and when
    `word` first appears in `path` ("t_file_s", "t_word_s")."""
    t0 = time.monotonic()
    p = procs.spawn(argv, log_path, env, cwd=cwd, stdout_path=stdout_path)
    sampler = Sampler(p.pid, t0, t0 + timeout, payload, out_file,
                      watch=(watch if watch and watch[0] else None))
    sampler.start()
    try:
        while True:
            try:
                _, status, ru = os.wait4(p.pid, 0)
                break
            except InterruptedError:
                continue
        t1 = time.monotonic()
        p.returncode = os.waitstatus_to_exitcode(status)
    finally:
        sampler.stop.set()
        sampler.join()
        # Anything the client left behind in its process group goes too.
        procs.kill(p, grace=0)
    m = {
        "exit": p.returncode,
        "timed_out": sampler.timed_out,
        "wall_s": t1 - t0,
        "user_s": ru.ru_utime,
        "sys_s": ru.ru_stime,
        "cpu_s": ru.ru_utime + ru.ru_stime,
        "peak_rss_anon_mib": sampler.peak_anon_kib / 1024.0,
        "ru_maxrss_mib": ru.ru_maxrss / 1024.0,
        "rss_samples": sampler.samples,
        "t_5pct_s": sampler.t_5pct,
        "t_100pct_s": sampler.t_100pct,
    }
    if watch is not None:
        m["t_file_s"] = sampler.t_file
        m["t_word_s"] = sampler.t_word
    return m


# --------------------------------------------------------------- helpers --

def bdecode_info_span(data):
    """(start, end) of the bencoded `info` value in a .torrent."""
    def skip(i):
        c = data[i:i + 1]
        if c == b"i":
            return data.index(b"e", i) + 1
        if c in (b"l", b"d"):
            i += 1
            while data[i:i + 1] != b"e":
                i = skip(i)
            return i + 1
        colon = data.index(b":", i)
        return colon + 1 + int(data[i:colon])

    if data[:1] != b"d":
        raise BenchError("torrent is not a bencoded dict")
    i = 1
    while data[i:i + 1] != b"e":
        colon = data.index(b":", i)
        key_end = colon + 1 + int(data[i:colon])
        key = data[colon + 1:key_end]
        val_end = skip(key_end)
        if key == b"info":
            return key_end, val_end
        i = val_end
    raise BenchError("torrent has no info dict")


def make_payload(path, size):
    h = hashlib.sha1()
    with open(path, "wb") as f:
        left = size
        while left:
            b = os.urandom(min(4 * MiB, left))
            f.write(b)
            h.update(b)
            left -= len(b)
    return h.hexdigest()


def tail(path, n=25):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join("    | " + ln for ln in lines[-n:])
    except OSError:
        return "    (no log)"


def clean_env(home):
    env = {k: v for k, v in os.environ.items()
           if not (k.lower().endswith("_proxy") or k.startswith("XORRENT_")
                   or k.startswith("RQBIT_") or k == NETNS_ENV)}
    env["HOME"] = home
    env["XDG_CONFIG_HOME"] = os.path.join(home, ".config")
    env["XDG_CACHE_HOME"] = os.path.join(home, ".cache")
    env["XDG_DATA_HOME"] = os.path.join(home, ".local", "share")
    env["LC_ALL"] = "C"
    return env


def cmd_version(argv):
    try:
        r = subprocess.run(argv, capture_output=True, timeout=20, text=True)
        out = (r.stdout or r.stderr).strip().splitlines()
        return out[0] if out else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def wait_tracker(deadline):
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection(TRACKER_IP, TRACKER_PORT, timeout=1)
            c.request("GET", "/stats")
            r = c.getresponse()
            r.read()
            c.close()
            return
        except OSError:
            time.sleep(0.05)
    raise BenchError("opentracker did not answer on %s:%d" % (TRACKER_IP, TRACKER_PORT))


def wait_line(proc, path, word, deadline):
    while time.monotonic() < deadline:
        try:
            with open(path, "rb") as f:
                if word.encode() in f.read().split():
                    return
        except OSError:
            pass
        if proc.poll() is not None:
            raise BenchError("%s exited (%s) before printing %s" % (path, proc.returncode, word))
        time.sleep(0.05)
    raise BenchError("no %s in %s before the deadline" % (word, path))


CLK_TCK = os.sysconf("SC_CLK_TCK")


def machine_busy_s():
    """CPU seconds all cores spent busy since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest is inside user)
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / CLK_TCK


def proc_cpu_s(pid):
    """utime+stime of a live process, in seconds (None if it is gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
        fields = st[st.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, ValueError, IndexError):
        return None


def other_procs_cpu_s():
    """CPU seconds (utime+stime+cutime+cstime) of every user-space process
    that is not this benchmark or one of its descendants, by PID. Kernel
    threads are left out: their work (writeback, block I/O, softirq) is
    mostly caused by the clients themselves."""
    stats = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
            fields = st[st.rindex(")") + 2:].split()
            stats[int(d)] = (int(fields[1]), int(fields[6]),
                             sum(int(x) for x in fields[11:15]))
        except (OSError, ValueError, IndexError):
            continue
    ours = {os.getpid()}
    frontier = [os.getpid()]
    while frontier:
        kids = [p for p, (pp, _, _) in stats.items() if pp in frontier]
        ours.update(kids)
        frontier = kids
    PF_KTHREAD = 0x00200000
    return sum(t for p, (pp, flags, t) in stats.items()
               if p not in ours and p != 2 and pp != 2 and not flags & PF_KTHREAD) / CLK_TCK


def self_cpu_s():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# ----------------------------------------------------------------- bench --

class Bench:
    def __init__(self, args):
        self.a = args
        self.procs = Procs()
        self.results = []
        self.notes = []

    # -- setup
    def setup(self):
        a = self.a
        others = {"lt_peer.py": a.lt_peer}
        if a.magnet:
            # beside lt_peer.py, which it imports
            others["lt_magnet.py"] = a.lt_magnet
        self.tmp, self.logs, self.xorrent, copies = make_workdir(
            "xorrent-bench-", 2 * a.size + 256 * MiB, a.workdir, a.xorrent, others)
        self.lt_peer = copies["lt_peer.py"]
        self.lt_magnet = copies.get("lt_magnet.py")

        name = "xorrent-bench-%dM.bin" % (a.size // MiB)
        self.seed_dir = os.path.join(self.tmp, "seed")
        os.makedirs(self.seed_dir)
        self.src = os.path.join(self.seed_dir, name)
        t = time.monotonic()
        self.sha1 = make_payload(self.src, a.size)
        log("made %d MiB of random data in %.1f s (sha1 %s)"
            % (a.size // MiB, time.monotonic() - t, self.sha1))

        self.torrent = os.path.join(self.tmp, "bench.torrent")
        r = subprocess.run(["mktorrent", "-a", "http://%s:%d/announce" % (TRACKER_IP, TRACKER_PORT),
                            "-l", "20", "-t", "2", "-d", "-o", self.torrent, self.src],
                           capture_output=True, timeout=600)
        if r.returncode != 0:
            raise BenchError("mktorrent failed: %s" % r.stderr.decode(errors="replace"))
        with open(self.torrent, "rb") as f:
            data = f.read()
        s, e = bdecode_info_span(data)
        self.info_hash = hashlib.sha1(data[s:e]).hexdigest()
        self.name = name
        log("torrent %s, info-hash %s" % (self.torrent, self.info_hash))
        if a.magnet:
            self.magnet = "magnet:?xt=urn:btih:%s&x.pe=%s:%d&tr=%s" % (
                self.info_hash, SEED_IP, PEER_PORT,
                urllib.parse.quote("http://%s:%d/announce" % (TRACKER_IP, TRACKER_PORT),
                                   safe=""))
            log("magnet %s" % self.magnet)

    def start_swarm(self):
        ot = os.path.join(self.tmp, "ot")
        os.makedirs(ot)
        os.chmod(ot, 0o755)
        with open(os.path.join(ot, "whitelist"), "w") as f:
            f.write(self.info_hash + "\n")
        os.chmod(os.path.join(ot, "whitelist"), 0o644)
        env = clean_env(self.tmp)
        self.tracker = self.procs.spawn(
            ["opentracker", "-i", TRACKER_IP, "-p", str(TRACKER_PORT), "-P", str(TRACKER_PORT),
             "-d", ot, "-w", "/whitelist"],
            os.path.join(self.logs, "opentracker.log"), env)
        wait_tracker(time.monotonic() + 10)

        home = os.path.join(self.tmp, "home-seed")
        os.makedirs(home)
        out = os.path.join(self.logs, "seed.out")
        self.seeder = self.procs.spawn(
            [self.a.lt_python, self.lt_peer, "--listen", "%s:%d" % (SEED_IP, PEER_PORT),
             "--torrent", self.torrent, "--save", self.seed_dir, "--mode", "seed"],
            os.path.join(self.logs, "seed.log"), clean_env(home), stdout_path=out)
        t = time.monotonic()
        wait_line(self.seeder, out, "READY", t + 60 + self.a.size / (50 * MiB))
        log("libtorrent seeder ready on %s:%d after %.1f s" % (SEED_IP, PEER_PORT, time.monotonic() - t))

    # -- clients
    def client_argv(self, client, out, home):
        """The client's command line, from the .torrent or (--magnet) from
        the magnet link; xorrent and aria2 then find the seeder through the
        link alone."""
        ip = CLIENT_IPS[client]
        seed = "%s:%d" % (SEED_IP, PEER_PORT)
        magnet = self.a.magnet
        source = self.magnet if magnet else self.torrent
        if client == "xorrent":
            argv = [self.xorrent, "download", source, "-o", out, "--bind", ip,
                    "--port", str(PEER_PORT), "-q", "--no-dht"]
            return argv if magnet else argv + ["--peer", seed]
        if client == "libtorrent":
            if magnet:
                return [self.a.lt_python, self.lt_magnet, "--listen", "%s:%d" % (ip, PEER_PORT),
                        "--magnet", self.magnet, "--save", out,
                        "--timeout", str(self.a.timeout)]
            return [self.a.lt_python, self.lt_peer, "--listen", "%s:%d" % (ip, PEER_PORT),
                    "--torrent", self.torrent, "--save", out, "--mode", "leech",
                    "--timeout", str(self.a.timeout), "--peer", seed]
        if client == "aria2":
            metadata = ["--bt-metadata-only=false", "--bt-save-metadata=false"] if magnet else []
            return (["aria2c", "--no-conf", "--dir=" + out, "--interface=" + ip,
                     "--listen-port=%d" % PEER_PORT,
                     "--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false",
                     "--enable-peer-exchange=false", "--disable-ipv6=true", "--seed-time=0"]
                    + metadata
                    + ["--check-integrity=true", "--file-allocation=none",
                       "--summary-interval=0", "--console-log-level=warn", "--enable-color=false",
                       source])
        if client == "rqbit":
            # LSD and UPnP off, like every client in a test.
            return [self.rqbit, "--disable-dht", "--disable-dht-persistence",
                    "--disable-upnp-port-forward", "--disable-lsd",
                    "--listen-ip", ip, "--listen-port", str(PEER_PORT),
                    "download", "--disable-http-api", "-o", out, "--exit-on-finish",
                    "--initial-peers", seed, source]
        raise AssertionError(client)

    def wait_idle(self):
        """sync(), then wait until the machine's CPU use (apart from this
        benchmark, whose processes are idle between runs) stays below
        --idle-threshold for one --settle window, for at most --wait-idle s.
        Returns the busy fraction (in cores) of the last window."""
        os.sync()
        deadline = time.monotonic() + self.a.wait_idle
        warned = False
        while True:
            b0 = machine_busy_s()
            time.sleep(self.a.settle)
            busy = (machine_busy_s() - b0) / self.a.settle
            if busy <= self.a.idle_threshold or time.monotonic() >= deadline:
                if busy > self.a.idle_threshold:
                    log("machine still busy (%.2f cores) after waiting %.0f s; running anyway"
                        % (busy, self.a.wait_idle))
                return busy
            if not warned:
                log("machine busy (%.2f cores in use): waiting up to %.0f s for it to quieten"
                    % (busy, self.a.wait_idle))
                warned = True

    def run_one(self, client, run_no):
        if run_no == 0:
            self.attempt(client, 0, 0)["warmup"] = True
            return
        for attempt in range(self.a.retries + 1):
            m = self.attempt(client, run_no, attempt)
            if not m["disturbed"] or attempt == self.a.retries:
                break
            m["discarded"] = True
            log("%s run %d: other processes used %.2f CPU s during the run; discarding it "
                "and running it again" % (client, run_no, m["foreign_cpu_s"]))
        if m["disturbed"]:
            self.notes.append("%s run %d kept although other processes used %.2f CPU s during it"
                              % (client, run_no, m["foreign_cpu_s"]))

    def attempt(self, client, run_no, attempt):
        tag = ("%s-%d" % (client, run_no) if run_no else "%s-warmup" % client) + \
            (".%d" % attempt if attempt else "")
        out = os.path.join(self.tmp, "out-" + tag)
        home = os.path.join(self.tmp, "home-" + tag)
        os.makedirs(out)
        os.makedirs(home)
        log_path = os.path.join(self.logs, tag + ".log")
        stdout_path = os.path.join(self.logs, tag + ".out") if client == "libtorrent" else None
        argv = self.client_argv(client, out, home)
        # Let the previous run's writeback finish before the clock starts.
        idle_before = self.wait_idle()
        other0 = other_procs_cpu_s()
        busy0, seed0, self0 = machine_busy_s(), proc_cpu_s(self.seeder.pid), self_cpu_s()
        watch = None
        if self.a.magnet:
            watch = (stdout_path, b"METADATA")
        m = measure(self.procs, argv, log_path, clean_env(home), self.a.size,
                    os.path.join(out, self.name), self.a.timeout, cwd=home,
                    stdout_path=stdout_path, watch=watch)
        busy1, seed1, self1 = machine_busy_s(), proc_cpu_s(self.seeder.pid), self_cpu_s()
        other1 = other_procs_cpu_s()
        # Data the client left dirty in the page cache: time to write it out.
        t = time.monotonic()
        os.sync()
        m["sync_after_s"] = time.monotonic() - t
        seeder_cpu = (seed1 - seed0) if seed0 is not None and seed1 is not None else 0.0
        foreign = other1 - other0
        kernel = (busy1 - busy0) - m["cpu_s"] - seeder_cpu - (self1 - self0) - foreign
        m.update({"client": client, "run": run_no, "attempt": attempt,
                  "seeder_cpu_s": seeder_cpu, "bench_cpu_s": self1 - self0,
                  "machine_busy_s": busy1 - busy0, "foreign_cpu_s": foreign,
                  "kernel_cpu_s": kernel,
                  "busy_cores_before": idle_before,
                  "disturbed": foreign > self.a.max_foreign * m["wall_s"] + 0.05})
        problem = None
        if m["timed_out"]:
            problem = "timed out after %.0f s" % self.a.timeout
        elif m["exit"] != 0:
            problem = "exited with %s" % m["exit"]
        elif client == "libtorrent":
            with open(stdout_path, "rb") as f:
                if b"DONE" not in f.read().split():
                    problem = "exited 0 without printing DONE"
        got = os.path.join(out, self.name)
        if problem is None:
            if not os.path.isfile(got):
                problem = "no output file %s" % got
            elif os.path.getsize(got) != self.a.size:
                problem = "output is %d bytes, expected %d" % (os.path.getsize(got), self.a.size)
            else:
                h = sha1_file(got)
                m["sha1_ok"] = h == self.sha1
                if h != self.sha1:
                    problem = "SHA-1 MISMATCH: got %s, want %s" % (h, self.sha1)
        if problem is None and self.a.magnet:
            problem = self.magnet_times(client, m, log_path, stdout_path)
        if problem is not None:
            m["error"] = problem
            self.results.append(m)
            raise BenchError("%s run %d: %s\n  argv: %s\n  log %s:\n%s%s"
                             % (client, run_no, problem, " ".join(argv), log_path, tail(log_path),
                                ("\n  stdout %s:\n%s" % (stdout_path, tail(stdout_path)))
                                if stdout_path else ""))
        self.results.append(m)
        if not self.a.keep_output:
            shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)

        def f(x):
            return "-" if x is None else "%.2f" % x
        log("%-10s run %s: wall %6.2f s  cpu %5.2f s (user %.2f sys %.2f)  anon RSS %6.1f MiB  "
            "%s5%%@%s 100%%@%s  seeder cpu %.2f  kernel %.2f  other procs %.2f  sync %.2f s  "
            "sha1 ok"
            % (client, run_no or "warm-up", m["wall_s"], m["cpu_s"], m["user_s"], m["sys_s"],
               m["peak_rss_anon_mib"],
               ("meta@%s " % f(m["t_meta_s"])) if self.a.magnet else "",
               f(m["t_5pct_s"]), f(m["t_100pct_s"]),
               seeder_cpu, kernel, foreign, m["sync_after_s"]))
        return m

    def magnet_times(self, client, m, log_path, stdout_path):
        """Fills in the time to metadata (t_meta_s, from spawn) of a magnet
        run, and for libtorrent the times lt_magnet.py reported itself
        (from its own start, after the interpreter and session are up).
        Returns a problem or None."""
        m["t_meta_s"] = m.get("t_file_s")
        if client != "libtorrent":
            return None
        m["t_meta_s"] = m.get("t_word_s")
        with open(stdout_path, "rb") as f:
            out = f.read().decode("utf-8", "replace").splitlines()
        with open(log_path, "rb") as f:
            err = f.read().decode("utf-8", "replace").splitlines()
        for ln in out:
            w = ln.split()
            if w[:1] == ["METADATA"] and len(w) >= 3:
                if w[1] != self.info_hash:
                    return "METADATA for %s, expected %s" % (w[1], self.info_hash)
                m["lt_metadata_self_s"] = float(w[2])
            elif w[:1] == ["DONE"] and len(w) >= 2:
                m["lt_done_self_s"] = float(w[1])
        for ln in err:
            if ln.startswith("lt_magnet: finished in "):
                m["lt_finished_self_s"] = float(ln.split()[3].rstrip("s"))
        if "lt_metadata_self_s" not in m:
            return "exited 0 without printing METADATA"
        return None

    # -- report
    def summarize(self, clients):
        summ = {}
        for c in clients:
            rs = [r for r in self.results
                  if r["client"] == c and "error" not in r and not r.get("discarded")
                  and not r.get("warmup")]
            if not rs:
                continue
            walls = [r["wall_s"] for r in rs]
            summ[c] = {
                "runs": len(rs),
                "wall_s": median(walls),
                "wall_min_s": min(walls),
                "wall_max_s": max(walls),
                "cpu_s": median([r["cpu_s"] for r in rs]),
                "peak_rss_anon_mib": median([r["peak_rss_anon_mib"] for r in rs]),
                "peak_rss_anon_max_mib": max(r["peak_rss_anon_mib"] for r in rs),
                "ru_maxrss_mib": median([r["ru_maxrss_mib"] for r in rs]),
                "t_5pct_s": median([r["t_5pct_s"] for r in rs]),
                "t_100pct_s": median([r["t_100pct_s"] for r in rs]),
                "phase_5_to_100_s": median([r["t_100pct_s"] - r["t_5pct_s"] for r in rs
                                            if None not in (r["t_5pct_s"], r["t_100pct_s"])]),
                "phase_tail_s": median([r["wall_s"] - r["t_100pct_s"] for r in rs
                                        if r["t_100pct_s"] is not None]),
                "seeder_cpu_s": median([r["seeder_cpu_s"] for r in rs]),
                "foreign_cpu_s": median([r["foreign_cpu_s"] for r in rs]),
                "kernel_cpu_s": median([r["kernel_cpu_s"] for r in rs]),
                "sync_after_s": median([r["sync_after_s"] for r in rs]),
                "disturbed_runs": sum(1 for r in rs if r["disturbed"]),
            }
            if self.a.magnet:
                summ[c].update({
                    "t_meta_s": median([r.get("t_meta_s") for r in rs]),
                    "phase_meta_to_5_s": median([r["t_5pct_s"] - r["t_meta_s"] for r in rs
                                                 if r["t_5pct_s"] is not None
                                                 and r.get("t_meta_s") is not None]),
                    "lt_metadata_self_s": median([r.get("lt_metadata_self_s") for r in rs]),
                    "lt_finished_self_s": median([r.get("lt_finished_self_s") for r in rs]),
                    "lt_done_self_s": median([r.get("lt_done_self_s") for r in rs]),
                })
        return summ

    def targets(self, summ):
        gib = self.a.size / 2**30
        x = summ.get("xorrent")
        checks = []
        if x is None:
            return checks

        def add(name, value, limit, unit=""):
            checks.append({"target": name, "value": value, "limit": limit,
                           "pass": None if value is None else value <= limit})

        lt = summ.get("libtorrent")
        add("xorrent wall <= %.1fx libtorrent" % TARGET_WALL_VS_LT,
            x["wall_s"] / lt["wall_s"] if lt else None, TARGET_WALL_VS_LT)
        ar = summ.get("aria2")
        add("xorrent wall <= %.1fx aria2" % TARGET_WALL_VS_ARIA2,
            x["wall_s"] / ar["wall_s"] if ar else None, TARGET_WALL_VS_ARIA2)
        add("xorrent CPU <= %.1f s per GiB" % TARGET_CPU_PER_GIB, x["cpu_s"] / gib, TARGET_CPU_PER_GIB)
        add("xorrent anon RSS <= %.0f MiB" % TARGET_RSS_MIB, x["peak_rss_anon_mib"], TARGET_RSS_MIB)
        return checks

    def report(self, clients):
        summ = self.summarize(clients)
        x = summ.get("xorrent")
        lines = []
        lines.append("%d MiB single file, 1 MiB pieces, one libtorrent seeder; median of %d run(s) "
                     "per client after %d warm-up download(s)"
                     % (self.a.size // MiB, self.a.runs, self.a.warmup))
        if self.a.magnet:
            lines.append("every client started from the magnet link %s" % self.magnet)
        hdr = ("%-11s %7s %15s %7s %9s %8s %7s %7s"
               % ("client", "wall s", "wall min-max", "CPU s", "anon MiB", "wall/x", "CPU/x", "RSS/x"))
        lines.append(hdr)
        lines.append("-" * len(hdr))
        for c in clients:
            s = summ.get(c)
            if s is None:
                continue

            def ratio(k):
                if not x or not x[k]:
                    return "-"
                return "%.2f" % (s[k] / x[k])
            lines.append("%-11s %7.2f %15s %7.2f %9.1f %8s %7s %7s"
                         % (c, s["wall_s"], "%.2f-%.2f" % (s["wall_min_s"], s["wall_max_s"]),
                            s["cpu_s"], s["peak_rss_anon_mib"],
                            ratio("wall_s"), ratio("cpu_s"), ratio("peak_rss_anon_mib")))
        lines.append("")
        lines.append("phases (median s; ->5% and ->100% of the output file's blocks allocated, "
                     "sampled every 20 ms)")
        lines.append("CPU s used meanwhile by the seeder, by the kernel outside processes (irq, "
                     "kworkers) and by")
        lines.append("other processes; sync = s for sync() right after exit (data the client "
                     "left dirty):")
        lines.append("  %-11s %6s %7s %10s %6s %6s %6s %6s %9s"
                     % ("client", "->5%", "5->100%", "100%->exit", "seeder", "kernel", "others",
                        "sync", "disturbed"))
        for c in clients:
            s = summ.get(c)
            if s is None:
                continue

            def f(x):
                return "-" if x is None else "%.2f" % x
            lines.append("  %-11s %6s %7s %10s %6.2f %6.2f %6.2f %6.2f %9s"
                         % (c, f(s["t_5pct_s"]), f(s["phase_5_to_100_s"]), f(s["phase_tail_s"]),
                            s["seeder_cpu_s"], s["kernel_cpu_s"], s["foreign_cpu_s"],
                            s["sync_after_s"], "%d/%d" % (s["disturbed_runs"], s["runs"])))
        lines.append("")
        if self.a.magnet:
            self.report_magnet(clients, summ, lines)
        checks = self.targets(summ)
        lines.append("targets:")
        for ch in checks:
            if ch["value"] is None:
                lines.append("  n/a   %s (client not run)" % ch["target"])
            else:
                lines.append("  %-5s %s: %.3f" % ("PASS" if ch["pass"] else "FAIL",
                                                 ch["target"], ch["value"]))
        for n in self.notes:
            lines.append("note: " + n)
        print("\n".join(lines))
        sys.stdout.flush()
        return summ, checks

    def report_magnet(self, clients, summ, lines):
        def f(x):
            return "-" if x is None else "%.2f" % x
        lines.append("magnet (median s from spawn): ->meta = metadata in (libtorrent: its "
                     "METADATA line; others:")
        lines.append("the output file exists), meta->5% = from then to 5% of the blocks "
                     "allocated, after meta = wall - ->meta:")
        lines.append("  %-11s %6s %9s %11s %8s" % ("client", "->meta", "meta->5%", "after meta",
                                                   "meta/x"))
        x = summ.get("xorrent")
        for c in clients:
            s = summ.get(c)
            if s is None:
                continue
            after = None if s["t_meta_s"] is None else s["wall_s"] - s["t_meta_s"]
            ratio = ("%.2f" % (s["t_meta_s"] / x["t_meta_s"])
                     if x and x["t_meta_s"] and s["t_meta_s"] is not None else "-")
            lines.append("  %-11s %6s %9s %11s %8s" % (c, f(s["t_meta_s"]),
                                                       f(s["phase_meta_to_5_s"]), f(after), ratio))
        lt = summ.get("libtorrent")
        if lt and lt["lt_metadata_self_s"] is not None:
            lines.append("lt_magnet.py's own clock (from after its session is up): METADATA %s, "
                         "finished %s, DONE %s (DONE - finished = alert drain and session close)"
                         % (f(lt["lt_metadata_self_s"]), f(lt["lt_finished_self_s"]),
                            f(lt["lt_done_self_s"])))
        lines.append("")

    def meta(self):
        def git(*args):
            try:
                r = subprocess.run(["git", "-C", REPO] + list(args), capture_output=True,
                                   text=True, timeout=10)
                return r.stdout.strip() if r.returncode == 0 else None
            except (OSError, subprocess.TimeoutExpired):
                return None
        h = hashlib.sha256()
        with open(self.xorrent, "rb") as f:
            h.update(f.read())
        m = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "size_bytes": self.a.size,
            "piece_bytes": MiB,
            "runs_per_client": self.a.runs,
            "warmup_runs": self.a.warmup,
            "timeout_s": self.a.timeout,
            "settle_s": self.a.settle,
            "info_hash": self.info_hash,
            "payload_sha1": self.sha1,
            "git_head": git("rev-parse", "HEAD"),
            "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
            "xorrent_binary": self.a.xorrent,
            "xorrent_sha256": h.hexdigest(),
            "xorrent_mtime": time.strftime("%Y-%m-%dT%H:%M:%S",
                                           time.localtime(os.path.getmtime(self.a.xorrent))),
            "xorrent_version": cmd_version([self.xorrent, "--version"]),
            "libtorrent_version": cmd_version([self.a.lt_python, "-c",
                                               "import libtorrent; print(libtorrent.__version__)"]),
            "aria2_version": cmd_version(["aria2c", "--version"]),
            "rqbit_version": cmd_version([self.rqbit, "--version"]) if self.rqbit else None,
            "page_cache_dropped": False,
            "notes": self.notes,
        }
        if self.a.magnet:
            m["magnet"] = self.magnet
        return m

    def main(self):
        a = self.a
        clients = a.clients
        self.rqbit = None
        if "rqbit" in clients:
            self.rqbit = a.rqbit or shutil.which("rqbit")
            if not self.rqbit:
                self.notes.append("rqbit skipped: not on PATH (give --rqbit PATH)")
                log(self.notes[-1])
                clients = [c for c in clients if c != "rqbit"]
        if "aria2" in clients and not shutil.which("aria2c"):
            raise BenchError("aria2c not found (apt-get install aria2)")
        for tool in ("opentracker", "mktorrent"):
            if not shutil.which(tool):
                raise BenchError("%s not found (apt-get install %s)" % (tool, tool))
        self.setup()
        self.start_swarm()
        # Untimed warm-up downloads: the seeder's first pass over its data
        # (mmap page faults) and other first-run effects land here.
        for i in range(a.warmup):
            c = clients[i % len(clients)]
            log("warm-up %d/%d: %s (not counted)" % (i + 1, a.warmup, c))
            self.run_one(c, 0)
        total = a.runs * len(clients)
        k = 0
        for r in range(1, a.runs + 1):
            for c in clients:
                k += 1
                log("[%d/%d] %s run %d" % (k, total, c, r))
                self.run_one(c, r)
        if self.seeder.poll() is not None:
            raise BenchError("the seeder died (exit %s)" % self.seeder.returncode)
        summ, checks = self.report(clients)
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"meta": self.meta(), "runs": self.results, "summary": summ,
                           "targets": checks}, f, indent=2)
            log("wrote %s" % a.json)
        if a.check_targets and any(ch["pass"] is False for ch in checks):
            return 2
        return 0


def parse_args():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mib", type=int, default=1024, help="payload size in MiB (default 1024)")
    p.add_argument("--runs", type=int, default=5, help="runs per client (default 5)")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed warm-up downloads before the runs, taking the clients in "
                        "turn (default 1)")
    p.add_argument("--clients", default=",".join(ALL_CLIENTS),
                   help="comma list, in round-robin order (default %(default)s; "
                        "aliases x, lt)")
    p.add_argument("--timeout", type=float, default=120, help="seconds per leecher run (default 120)")
    p.add_argument("--settle", type=float, default=1.0,
                   help="seconds of quiet to wait for after sync() before each run "
                        "(default 1.0)")
    p.add_argument("--idle-threshold", type=float, default=0.15,
                   help="machine CPU use (in cores) under which it counts as quiet "
                        "(default 0.15)")
    p.add_argument("--wait-idle", type=float, default=120,
                   help="longest wait for a quiet machine before a run, in s (default 120)")
    p.add_argument("--max-foreign", type=float, default=0.10,
                   help="a run is disturbed when other processes used more than this many "
                        "cores on average during it (default 0.10)")
    p.add_argument("--retries", type=int, default=2,
                   help="times a disturbed run is repeated (default 2)")
    p.add_argument("--json", metavar="FILE", help="write the raw results as JSON here")
    p.add_argument("--workdir", help="make the temp dir under this dir (default: $TMPDIR or /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (payload, logs)")
    p.add_argument("--keep-output", action="store_true",
                   help="do not delete each run's output (needs size x runs x clients of disk)")
    p.add_argument("--check-targets", action="store_true", help="exit 2 when a target is missed")
    p.add_argument("--xorrent", default=os.path.join(REPO, "target", "release", "xorrent"),
                   help="xorrent binary (default: target/release/xorrent; it is copied first)")
    p.add_argument("--lt-peer", default=os.path.join(REPO, "tests", "interop", "lt_peer.py"),
                   help="libtorrent helper (default: tests/interop/lt_peer.py)")
    p.add_argument("--magnet", action="store_true",
                   help="every client starts from a magnet link (x.pe= the seeder, tr= the "
                        "tracker) instead of the .torrent")
    p.add_argument("--lt-magnet", default=os.path.join(REPO, "tests", "interop", "lt_magnet.py"),
                   help="libtorrent magnet helper for --magnet (default: "
                        "tests/interop/lt_magnet.py)")
    p.add_argument("--lt-python", default="/usr/bin/python3",
                   help="python with the libtorrent module (default /usr/bin/python3)")
    p.add_argument("--rqbit", help="rqbit binary (default: rqbit on PATH, else skipped)")
    a = p.parse_args()
    a.size = a.size_mib * MiB
    if a.size_mib < 1 or a.runs < 1 or a.warmup < 0 or a.retries < 0:
        p.error("--size-mib and --runs must be positive")
    cl = []
    for c in a.clients.split(","):
        c = ALIASES.get(c.strip().lower(), c.strip().lower())
        if c not in ALL_CLIENTS:
            p.error("unknown client %r (known: %s)" % (c, ", ".join(ALL_CLIENTS)))
        if c not in cl:
            cl.append(c)
    a.clients = cl
    if a.json:
        a.json = os.path.abspath(a.json)
    a.xorrent = os.path.abspath(a.xorrent)
    return a


def main():
    args = parse_args()
    ensure_netns()

    def on_term(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    b = Bench(args)
    rc = 1
    try:
        rc = b.main()
    except BenchError as e:
        log("FAILED: %s" % e)
        rc = 1
    except KeyboardInterrupt:
        log("interrupted")
        rc = 130
    except SystemExit as e:
        log("terminated by a signal")
        rc = e.code
    finally:
        b.procs.kill_all()
        tmp = getattr(b, "tmp", None)
        if tmp:
            if args.keep:
                log("kept %s" % tmp)
            else:
                shutil.rmtree(tmp, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
