"""Helpers shared by bench.py, scale_bench.py, daemon_bench.py,
webseed_bench.py and encryption_bench.py (import only).

Everything here is plain stdlib: the loopback-only guard, a benchmark's
temp dir, a corpus of single-file torrents and one large random payload,
/proc CPU and RSS sampling, the CPU other processes used meanwhile, process
spawning and stopping, one timed and sampled run of a client, median/p95, a
table of medians per client, the command-line options the client-vs-client
benchmarks share, and a small Transmission RPC client (409 session-id
handshake; optional keep-alive).
"""

import hashlib
import http.client
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

KiB = 1024
MiB = 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")

TR_RPC_PORT = 9091
TR_PEER_PORT = 51413

_prefix = ["bench"]


def set_log_prefix(p):
    _prefix[0] = p


def log(msg):
    sys.stderr.write("%s: %s\n" % (_prefix[0], msg))
    sys.stderr.flush()


class BenchError(Exception):
    pass


def only_loopback():
    """True when /proc/net/dev lists no interface but `lo`."""
    with open("/proc/net/dev") as f:
        names = [ln.split(":", 1)[0].strip() for ln in f.readlines()[2:] if ":" in ln]
    return names == ["lo"]


def require_loopback(prog):
    # Hard rule: nothing these benchmarks start may reach another machine.
    if not only_loopback():
        raise SystemExit("%s: /proc/net/dev lists interfaces other than lo; refusing to run "
                         "(use: scripts/netns-run python3 %s ...)" % (prog, sys.argv[0]))


def exit_on_signals():
    """SIGTERM/SIGHUP become SystemExit, so `finally:` blocks kill the clients."""
    def on_term(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)


def make_workdir(prefix, need, base, xorrent, others=None):
    """A fresh temp dir `prefix`* under `base` ($TMPDIR when None), made only
    when `need` bytes are free there, with a `logs` dir and private copies of
    the xorrent binary and of `others` ({name in the dir: source}). Returns
    (dir, logs dir, the xorrent copy, {name: copy})."""
    base = base or tempfile.gettempdir()
    os.makedirs(base, exist_ok=True)
    free = shutil.disk_usage(base).free
    if free < need:
        raise BenchError("%s has %.1f GiB free, the benchmark needs %.1f GiB"
                         % (base, free / 2**30, need / 2**30))
    if not os.path.isfile(xorrent):
        raise BenchError("no xorrent binary at %s (cargo build --release)" % xorrent)
    others = others or {}
    for name, src in others.items():
        if not os.path.isfile(src):
            raise BenchError("no %s at %s" % (name, src))
    tmp = tempfile.mkdtemp(prefix=prefix, dir=base)
    try:
        # Servers that drop root (lighttpd, opentracker) must read what is in it.
        os.chmod(tmp, 0o755)
        logs = os.path.join(tmp, "logs")
        os.makedirs(logs)
        log("temp dir %s" % tmp)
        # Private copies: a rebuild during the benchmark changes nothing.
        copies = {}
        for name, src in [("xorrent", xorrent)] + list(others.items()):
            copies[name] = os.path.join(tmp, name)
            shutil.copy2(src, copies[name])
    except BaseException:
        # The caller learns of the dir only from our return value.
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp, logs, copies.pop("xorrent"), copies


# --------------------------------------------------------------- torrents --

def bencode(v):
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, list):
        return b"l" + b"".join(bencode(x) for x in v) + b"e"
    if isinstance(v, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, x) for k, x in v.items())
        return b"d" + b"".join(bencode(k) + bencode(x) for k, x in items) + b"e"
    raise TypeError(type(v))


def make_corpus(data_dir, tor_dir, n, size, piece, announce):
    """n random files DATA/f0000.bin ... and their single-file torrents
    TORRENTS/t0000.torrent ...; returns the info-hashes (hex)."""
    os.makedirs(data_dir)
    os.makedirs(tor_dir)
    hashes = []
    for i in range(n):
        name = "f%04d.bin" % i
        body = os.urandom(size)
        with open(os.path.join(data_dir, name), "wb") as f:
            f.write(body)
        pieces = b"".join(hashlib.sha1(body[o:o + piece]).digest()
                          for o in range(0, size, piece))
        info = {"length": size, "name": name, "piece length": piece, "pieces": pieces}
        meta = {"info": info}
        if announce:
            meta["announce"] = announce
        with open(os.path.join(tor_dir, "t%04d.torrent" % i), "wb") as f:
            f.write(bencode(meta))
        hashes.append(hashlib.sha1(bencode(info)).hexdigest())
    return hashes


def parse_size(s):
    """Bytes from "1G", "64M", "512k" (binary units, "iB"/"B" optional) or
    a plain number; ValueError otherwise."""
    mult = {"k": KiB, "m": MiB, "g": 1024 * MiB}
    s = s.strip().lower().rstrip("ib")
    if s and s[-1] in mult:
        return int(float(s[:-1]) * mult[s[-1]])
    return int(s)


def make_payload(path, size, piece):
    """`size` random bytes written to `path`; returns (SHA-1 of the whole,
    hex; the SHA-1s of its `piece`-byte pieces, concatenated)."""
    whole = hashlib.sha1()
    pieces = []
    h = hashlib.sha1()
    in_piece = 0
    with open(path, "wb") as f:
        left = size
        while left:
            b = os.urandom(min(piece - in_piece, left))
            f.write(b)
            whole.update(b)
            h.update(b)
            in_piece += len(b)
            left -= len(b)
            if in_piece == piece or not left:
                pieces.append(h.digest())
                h, in_piece = hashlib.sha1(), 0
    return whole.hexdigest(), b"".join(pieces)


def sha1_file(path):
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(4 * MiB), b""):
            h.update(b)
    return h.hexdigest()


def has_word(path, word):
    """True when the file holds `word` (bytes) between whitespace."""
    try:
        with open(path, "rb") as f:
            return word in f.read().split()
    except OSError:
        return False


# ------------------------------------------------------------------ /proc --

def proc_cpu_s(pid):
    """utime+stime of a live process (all its threads), in seconds."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
        fields = st[st.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, ValueError, IndexError):
        return None


def status_field(pid, field):
    try:
        with open("/proc/%d/status" % pid) as f:
            for ln in f:
                if ln.startswith(field):
                    return int(ln.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def fd_count(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return None


def foreign_cpu_s(ours):
    """CPU seconds (utime+stime+cutime+cstime) of every user-space process
    outside `ours` (kernel threads left out)."""
    total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) in ours:
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
            fields = st[st.rindex(")") + 2:].split()
            if int(fields[6]) & 0x00200000 or int(fields[1]) == 2 or int(d) == 2:
                continue
            total += sum(int(x) for x in fields[11:15])
        except (OSError, ValueError, IndexError):
            continue
    return total / CLK_TCK


def descendants(root):
    """pids of every live process below `root` (a browser's many helpers)."""
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    st = f.read()
                kids.setdefault(int(st[st.rindex(")") + 2:].split()[1]), []).append(int(d))
            except (OSError, ValueError, IndexError):
                continue
    out, todo = set(), [root]
    while todo:
        for k in kids.get(todo.pop(), []):
            if k not in out:
                out.add(k)
                todo.append(k)
    return out


class Sampler(threading.Thread):
    """Peak RssAnon of one process, every `period` s until stopped."""

    def __init__(self, pid, period):
        super().__init__(daemon=True)
        self.pid, self.period = pid, period
        self.stop = threading.Event()
        self.peak_kib = 0
        self.samples = 0

    def run(self):
        while not self.stop.is_set():
            a = status_field(self.pid, "RssAnon:")
            if a is not None:
                self.samples += 1
                self.peak_kib = max(self.peak_kib, a)
            self.stop.wait(self.period)


# ------------------------------------------------------------------ stats --

def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def p95(xs):
    """Nearest-rank 95th percentile (with 20 samples: the 19th smallest)."""
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    return xs[max(0, -(-95 * len(xs) // 100) - 1)]


def medians_by_client(results, clients, keys):
    """{client: {key: median over its runs without an error, "runs": n}}
    for each of `clients` with such a run; `results` are dicts with
    "client" and "error"."""
    summ = {}
    for c in clients:
        rs = [r for r in results if r["client"] == c and not r["error"]]
        if rs:
            summ[c] = {k: median([r[k] for r in rs]) for k in keys}
            summ[c]["runs"] = len(rs)
    return summ


def client_table(summ, clients, base, name_width, cols,
                 ratios=(("wall/x", "wall_s"), ("CPU/x", "cpu_s"))):
    """The lines of a table of `summ` (see medians_by_client), one row per
    client in `clients` order: its name, each (title, key, width, decimals)
    of `cols` (None shows as 0), then each (title, key) of `ratios` as the
    client's value over `base`'s ("-" without one), 7 wide."""
    hdr = "%-*s" % (name_width, "client")
    hdr += "".join(" %*s" % (w, title) for title, _, w, _ in cols)
    hdr += "".join(" %7s" % title for title, _ in ratios)
    lines = [hdr, "-" * len(hdr)]
    x = summ.get(base)
    for c in clients:
        s = summ.get(c)
        if s is None:
            continue
        row = "%-*s" % (name_width, c)
        row += "".join(" %*.*f" % (w, dp, s[k] or 0) for _, k, w, dp in cols)
        row += "".join(" %7s" % ("%.2f" % (s[k] / x[k]) if x and x[k] else "-")
                       for _, k in ratios)
        lines.append(row)
    return lines


# -------------------------------------------------------------- processes --

class Procs:
    """Children started in their own session, so a stop takes their helpers too."""

    def __init__(self):
        self.live = []

    def spawn(self, argv, log_path, env, nofile):
        def limits():
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            hard = nofile if hard == resource.RLIM_INFINITY or hard < nofile else hard
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))

        with open(log_path, "ab") as out:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                 env=env, start_new_session=True, close_fds=True,
                                 preexec_fn=limits)
        self.live.append(p)
        return p

    def stop(self, p, sig, grace):
        """Sends `sig`, waits up to `grace` s for the exit (then SIGKILLs the
        group); returns (seconds to exit or None, exit code)."""
        t = time.monotonic()
        try:
            os.kill(p.pid, sig)
        except ProcessLookupError:
            pass
        took = None
        try:
            p.wait(timeout=grace)
            took = time.monotonic() - t
        except subprocess.TimeoutExpired:
            log("pid %d did not exit %.0f s after signal %d; killing it" % (p.pid, grace, sig))
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        p.wait()
        if p in self.live:
            self.live.remove(p)
        return took, p.returncode

    def kill_all(self):
        for p in list(self.live):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            p.wait()
        self.live = []

    def env(self, home):
        # No proxy, no XORRENT_*/TR_* settings from the caller's shell.
        env = {k: v for k, v in os.environ.items()
               if not (k.lower().endswith("_proxy") or k.startswith("XORRENT_")
                       or k.startswith("TR_"))}
        env["HOME"] = home
        env["XDG_CONFIG_HOME"] = os.path.join(home, ".config")
        env["XDG_STATE_HOME"] = os.path.join(home, ".local", "state")
        env["LC_ALL"] = "C"
        return env


class Measured:
    """One run of a client: wall seconds from spawn to exit, CPU seconds
    from wait4() rusage (its waited-for children included), peak RssAnon,
    exit code, and whether it was killed for taking too long."""

    def __init__(self, wall_s, ru, peak_kib, exit, timed_out):
        self.wall_s = wall_s
        self.user_s, self.sys_s = ru.ru_utime, ru.ru_stime
        self.cpu_s = self.user_s + self.sys_s
        self.peak_rss_anon_mib = peak_kib / 1024.0
        self.exit = exit
        self.timed_out = timed_out


def run_measured(procs, argv, log_path, env, nofile, timeout, rss_period=0.02):
    """Runs `argv` to its end (its process group SIGKILLed after `timeout`
    s), sampling RssAnon every `rss_period` s; returns a Measured."""
    t0 = time.monotonic()
    p = procs.spawn(argv, log_path, env, nofile)
    rss = Sampler(p.pid, rss_period)
    rss.start()
    timed_out = False
    try:
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - t0 > timeout:
                timed_out = True
                os.killpg(p.pid, signal.SIGKILL)
            time.sleep(0.02)
    finally:
        rss.stop.set()
        rss.join()
    wall = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    procs.stop(p, signal.SIGKILL, 1)
    return Measured(wall, ru, rss.peak_kib, p.returncode, timed_out)


def version(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return None


def git_commit(repo):
    try:
        return subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return None


# ------------------------------------------------------------ transmission --

class Rpc:
    """Transmission RPC client (also xorrent's). keepalive=False opens one
    connection per call (a daemon still starting just refuses it);
    keepalive=True keeps one http.client connection, as a remote would."""

    def __init__(self, port, keepalive=False, host="127.0.0.1"):
        self.host, self.port, self.keepalive = host, port, keepalive
        self.sid = ""
        self.conn = None

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def post(self, body, timeout=10):
        """One POST on the kept connection: (seconds from sending the request
        to the last body byte read, HTTP status, body bytes). Reconnects once
        if the server closed an idle connection."""
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
            try:
                t0 = time.perf_counter()
                self.conn.request("POST", "/transmission/rpc", body,
                                  {"X-Transmission-Session-Id": self.sid,
                                   "Content-Type": "application/json"})
                r = self.conn.getresponse()
                data = r.read()
                took = time.perf_counter() - t0
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt:
                    raise
                continue
            if r.status == 409:
                self.sid = r.getheader("X-Transmission-Session-Id", "")
            if r.will_close:
                self.close()
            return took, r.status, data

    def call(self, method, arguments, timeout=10):
        body = json.dumps({"method": method, "arguments": arguments})
        for _ in range(3):
            if self.keepalive:
                _, status, data = self.post(body, timeout)
            else:
                c = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
                try:
                    c.request("POST", "/transmission/rpc", body,
                              {"X-Transmission-Session-Id": self.sid,
                               "Content-Type": "application/json"})
                    r = c.getresponse()
                    data, status = r.read(), r.status
                    if status == 409:
                        self.sid = r.getheader("X-Transmission-Session-Id", "")
                finally:
                    c.close()
            if status == 409:
                continue
            if status != 200:
                raise BenchError("transmission RPC %s: HTTP %d" % (method, status))
            return json.loads(data)
        raise BenchError("transmission RPC: no session id")

    def statuses(self):
        """Status of every torrent, or None while the RPC server is not up."""
        try:
            r = self.call("torrent-get", {"fields": ["id", "status"]})
        except (OSError, http.client.HTTPException):
            return None
        return [t["status"] for t in r["arguments"]["torrents"]]


def tr_settings(data_dir, watch_dir, rpc_port=TR_RPC_PORT):
    """transmission-daemon settings.json: no DHT/LPD/PEX/uTP/port mapping,
    peers and RPC on loopback only, no queues or limits; watch_dir None
    turns the watch directory off."""
    return {
        "dht-enabled": False,
        "lpd-enabled": False,
        "pex-enabled": False,
        "utp-enabled": False,
        "port-forwarding-enabled": False,
        "blocklist-enabled": False,
        "peer-port": TR_PEER_PORT,
        "peer-port-random-on-start": False,
        "bind-address-ipv4": "127.0.0.1",
        "bind-address-ipv6": "::1",
        "rpc-enabled": True,
        "rpc-bind-address": "127.0.0.1",
        "rpc-port": rpc_port,
        "rpc-authentication-required": False,
        "rpc-whitelist-enabled": False,
        "rpc-host-whitelist-enabled": False,
        "download-dir": data_dir,
        "incomplete-dir-enabled": False,
        "watch-dir-enabled": watch_dir is not None,
        "watch-dir": watch_dir or data_dir,
        "start-added-torrents": True,
        "trash-original-torrent-files": False,
        "download-queue-enabled": False,
        "seed-queue-enabled": False,
        "queue-stalled-enabled": False,
        "ratio-limit-enabled": False,
        "idle-seeding-limit-enabled": False,
        "speed-limit-up-enabled": False,
        "speed-limit-down-enabled": False,
        "alt-speed-enabled": False,
        "message-level": 1,
    }


def add_client_args(p, clients, repo):
    """The options of a benchmark that runs `clients` (name: anything) one
    after another on one payload: size, runs, clients, timeout, JSON,
    temp dir, binaries."""
    p.add_argument("--size", default="1G", help="payload size, e.g. 1G, 64M (default 1G)")
    p.add_argument("--runs", type=int, default=3, help="runs per client (default 3)")
    p.add_argument("--clients", default=",".join(clients),
                   help="comma list, in round-robin order (default %(default)s)")
    p.add_argument("--timeout", type=float, default=300, help="seconds per run (default 300)")
    p.add_argument("--json", metavar="FILE", help="write every number as JSON here")
    p.add_argument("--workdir", help="make the temp dir under this dir (default: $TMPDIR or /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (payload, logs)")
    p.add_argument("--xorrent", default=os.path.join(repo, "target", "release", "xorrent"),
                   help="xorrent binary (default: target/release/xorrent; copied first)")
    p.add_argument("--lt-peer", default=os.path.join(repo, "tests", "interop", "lt_peer.py"))
    p.add_argument("--lt-python", default="/usr/bin/python3",
                   help="python with the libtorrent module (default /usr/bin/python3)")


def parse_client_args(p, clients):
    """Parses what add_client_args added: --size in bytes, --clients a
    checked list, paths absolute."""
    a = p.parse_args()
    try:
        a.size = parse_size(a.size)
    except ValueError:
        p.error("--size: expected a number with an optional K, M or G suffix")
    if a.size < MiB or a.runs < 1:
        p.error("--size must be at least 1M and --runs at least 1")
    a.clients = [c.strip() for c in a.clients.split(",") if c.strip()]
    for c in a.clients:
        if c not in clients:
            p.error("unknown client %r (known: %s)" % (c, ", ".join(clients)))
    if a.json:
        a.json = os.path.abspath(a.json)
    a.xorrent = os.path.abspath(a.xorrent)
    return a


def run_bench(bench, keep):
    """Runs bench.main() and always cleans up: its processes are killed and
    its temp dir removed (unless keep). Returns the exit code."""
    rc = 1
    try:
        rc = bench.main()
    except BenchError as e:
        log("FAILED: %s" % e)
    except KeyboardInterrupt:
        log("interrupted")
        rc = 130
    except SystemExit as e:
        log("terminated by a signal")
        rc = e.code
    finally:
        bench.kill_all()
        tmp = getattr(bench, "tmp", None)
        if tmp:
            if keep:
                log("kept %s" % tmp)
            else:
                shutil.rmtree(tmp, ignore_errors=True)
    return rc

