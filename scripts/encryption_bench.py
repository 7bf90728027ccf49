#!/usr/bin/env python3
"""Encryption benchmark: what MSE/RC4 costs xorrent, beside libtorrent and aria2.

Run it (as root) inside a private network namespace with only loopback:

    flock /tmp/cargo.lock cargo build --release
    scripts/netns-run python3 scripts/encryption_bench.py [--runs 3] [--size 1G]

It refuses to run unless /proc/net/dev lists only `lo`.

One run of this script:
  * makes one random single-file payload (--size, default 1 GiB) and its
    .torrent (1 MiB pieces, made here with hashlib), announcing to an
    opentracker on 127.0.0.1:6969 (whitelisted info-hash);
  * starts two libtorrent seeders of it (tests/interop/lt_peer.py):
      rc4    127.0.0.2:6881  in/out_enc_policy 0 (forced), allowed_enc_level 2 (RC4)
      plain  127.0.0.3:6881  in/out_enc_policy 2 (disabled), allowed_enc_level 1
  * runs the leechers one at a time, round-robin, --runs times each, each
    on its own address and into a fresh directory:
      xorrent-rc4    127.0.0.10  --encryption require --peer <rc4 seeder>
      xorrent-plain  127.0.0.11  --encryption disable --peer <plain seeder>
      libtorrent-rc4 127.0.0.12  lt_peer.py --mode leech, forced RC4, --peer <rc4 seeder>
      aria2-rc4      127.0.0.13  --bt-require-crypto=true --bt-min-crypto-level=arc4
                                 (through the tracker: aria2 takes no peer address)
    Every client also hears of both seeders from the tracker; each policy
    leaves it only the one it is meant to use.
  * measures per run: wall seconds from spawn to exit, CPU seconds (user +
    sys from wait4() rusage), the CPU the serving seeder used meanwhile,
    peak anonymous RSS (RssAnon, sampled every 20 ms); checks the SHA-1 of
    the download (a mismatch, non-zero exit or timeout aborts the run);
  * prints medians and ratios: xorrent-rc4 / xorrent-plain (what RC4 costs
    xorrent) and each client / xorrent-rc4; --json FILE keeps every number.

DHT, LSD, UPnP, NAT-PMP and PEX are off in every client. The page cache is
not dropped: the seeders read a cached payload. Seeder and leecher share the
machine's cores, so wall time is CPU-bound; RC4 costs the seeder too (its
CPU column).
"""

import argparse
import hashlib
import http.client
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
import benchlib  # noqa: E402
from benchlib import (MiB, BenchError, Procs, Sampler, bencode, exit_on_signals,  # noqa: E402
                      git_commit, log, median, proc_cpu_s, require_loopback, set_log_prefix,
                      version)

REPO = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
TRACKER = ("127.0.0.1", 6969)
PORT = 6881
PIECE = MiB
SEEDERS = {
    "rc4": ("127.0.0.2", ["in_enc_policy=0", "out_enc_policy=0", "allowed_enc_level=2"]),
    "plain": ("127.0.0.3", ["in_enc_policy=2", "out_enc_policy=2", "allowed_enc_level=1"]),
}
# client: (address, seeder it must use)
CLIENTS = {
    "xorrent-rc4": ("127.0.0.10", "rc4"),
    "xorrent-plain": ("127.0.0.11", "plain"),
    "libtorrent-rc4": ("127.0.0.12", "rc4"),
    "aria2-rc4": ("127.0.0.13", "rc4"),
}
BASE = "xorrent-rc4"
NOFILE = 4096


def parse_size(s):
    mult = {"k": 1024, "m": MiB, "g": 1024 * MiB}
    s = s.strip().lower().rstrip("ib")
    if s and s[-1] in mult:
        return int(float(s[:-1]) * mult[s[-1]])
    return int(s)


class Bench:
    def __init__(self, args):
        self.a = args
        self.procs = Procs()
        self.results = []
        self.tmp = None

    def kill_all(self):
        self.procs.kill_all()

    # -- setup
    def setup(self):
        a = self.a
        base = a.workdir or tempfile.gettempdir()
        need = 2 * a.size + 256 * MiB
        if shutil.disk_usage(base).free < need:
            raise BenchError("%s has less than the %.1f GiB free this needs" % (base, need / 2**30))
        self.tmp = tempfile.mkdtemp(prefix="xorrent-enc-bench-", dir=base)
        os.chmod(self.tmp, 0o755)
        self.logs = os.path.join(self.tmp, "logs")
        os.makedirs(self.logs)
        log("temp dir %s" % self.tmp)
        if not os.path.isfile(a.xorrent):
            raise BenchError("no xorrent binary at %s (cargo build --release)" % a.xorrent)
        # Private copies: a rebuild during the benchmark changes nothing.
        self.xorrent = os.path.join(self.tmp, "xorrent")
        shutil.copy2(a.xorrent, self.xorrent)
        self.lt_peer = os.path.join(self.tmp, "lt_peer.py")
        shutil.copy2(a.lt_peer, self.lt_peer)

        self.name = "enc-bench-%dM.bin" % (a.size // MiB)
        self.seed_dir = os.path.join(self.tmp, "seed")
        os.makedirs(self.seed_dir)
        t = time.monotonic()
        whole = hashlib.sha1()
        pieces = []
        piece = hashlib.sha1()
        in_piece = 0
        with open(os.path.join(self.seed_dir, self.name), "wb") as f:
            left = a.size
            while left:
                b = os.urandom(min(PIECE - in_piece, left))
                f.write(b)
                whole.update(b)
                piece.update(b)
                in_piece += len(b)
                left -= len(b)
                if in_piece == PIECE or not left:
                    pieces.append(piece.digest())
                    piece, in_piece = hashlib.sha1(), 0
        self.sha1 = whole.hexdigest()
        info = {"length": a.size, "name": self.name, "piece length": PIECE,
                "pieces": b"".join(pieces)}
        self.info_hash = hashlib.sha1(bencode(info)).hexdigest()
        self.torrent = os.path.join(self.tmp, "bench.torrent")
        with open(self.torrent, "wb") as f:
            f.write(bencode({"announce": "http://%s:%d/announce" % TRACKER, "info": info}))
        log("made %d MiB payload and torrent in %.1f s (info-hash %s)"
            % (a.size // MiB, time.monotonic() - t, self.info_hash))

    def start_swarm(self):
        ot = os.path.join(self.tmp, "ot")
        os.makedirs(ot)
        os.chmod(ot, 0o755)
        with open(os.path.join(ot, "whitelist"), "w") as f:
            f.write(self.info_hash + "\n")
        os.chmod(os.path.join(ot, "whitelist"), 0o644)
        self.procs.spawn(["opentracker", "-i", TRACKER[0], "-p", str(TRACKER[1]), "-P",
                          str(TRACKER[1]), "-d", ot, "-w", "/whitelist"],
                         os.path.join(self.logs, "opentracker.log"),
                         self.procs.env(self.tmp), NOFILE)
        deadline = time.monotonic() + 10
        while True:
            try:
                c = http.client.HTTPConnection(*TRACKER, timeout=1)
                c.request("GET", "/stats")
                c.getresponse().read()
                c.close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise BenchError("opentracker did not start")
                time.sleep(0.05)
        self.seeders = {}
        for kind, (ip, settings) in SEEDERS.items():
            home = os.path.join(self.tmp, "home-seed-" + kind)
            os.makedirs(home)
            argv = [self.a.lt_python, self.lt_peer, "--listen", "%s:%d" % (ip, PORT),
                    "--torrent", self.torrent, "--save", self.seed_dir, "--mode", "seed"]
            for s in settings:
                argv += ["--set", s]
            path = os.path.join(self.logs, "seed-%s.log" % kind)
            self.seeders[kind] = (self.procs.spawn(argv, path, self.procs.env(home), NOFILE), path)
        deadline = time.monotonic() + 60 + self.a.size / (50 * MiB)
        for kind, (p, path) in self.seeders.items():
            while not self.has_word(path, b"READY"):
                if p.poll() is not None or time.monotonic() > deadline:
                    raise BenchError("the %s seeder did not get ready (see %s)" % (kind, path))
                time.sleep(0.1)
            log("%s seeder ready on %s:%d" % (kind, SEEDERS[kind][0], PORT))

    @staticmethod
    def has_word(path, word):
        try:
            with open(path, "rb") as f:
                return word in f.read().split()
        except OSError:
            return False

    # -- clients
    def argv(self, client, out):
        ip, kind = CLIENTS[client]
        seed = "%s:%d" % (SEEDERS[kind][0], PORT)
        if client.startswith("xorrent"):
            policy = "require" if kind == "rc4" else "disable"
            return [self.xorrent, "download", self.torrent, "-o", out, "--bind", ip,
                    "--port", str(PORT), "-q", "--no-dht", "--peer", seed,
                    "--encryption", policy]
        if client == "libtorrent-rc4":
            argv = [self.a.lt_python, self.lt_peer, "--listen", "%s:%d" % (ip, PORT),
                    "--torrent", self.torrent, "--save", out, "--mode", "leech",
                    "--timeout", str(self.a.timeout), "--peer", seed]
            for s in SEEDERS["rc4"][1]:
                argv += ["--set", s]
            return argv
        return ["aria2c", "--no-conf", "--dir=" + out, "--interface=" + ip,
                "--listen-port=%d" % PORT, "--enable-dht=false", "--enable-dht6=false",
                "--bt-enable-lpd=false", "--enable-peer-exchange=false", "--disable-ipv6=true",
                "--seed-time=0", "--check-integrity=true", "--file-allocation=none",
                "--bt-require-crypto=true", "--bt-min-crypto-level=arc4",
                "--summary-interval=0", "--console-log-level=warn", "--enable-color=false",
                self.torrent]

    def run_one(self, client, run_no):
        tag = "%s-%d" % (client, run_no)
        out = os.path.join(self.tmp, "out-" + tag)
        home = os.path.join(self.tmp, "home-" + tag)
        os.makedirs(out)
        os.makedirs(home)
        log_path = os.path.join(self.logs, tag + ".log")
        argv = self.argv(client, out)
        os.sync()
        time.sleep(1)
        seeder = self.seeders[CLIENTS[client][1]][0]
        seed0 = proc_cpu_s(seeder.pid)
        t0 = time.monotonic()
        p = self.procs.spawn(argv, log_path, self.procs.env(home), NOFILE)
        rss = Sampler(p.pid, 0.02)
        rss.start()
        timed_out = False
        try:
            while True:
                pid, status, ru = os.wait4(p.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() - t0 > self.a.timeout:
                    timed_out = True
                    os.killpg(p.pid, signal.SIGKILL)
                time.sleep(0.02)
        finally:
            rss.stop.set()
            rss.join()
        wall = time.monotonic() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        self.procs.stop(p, signal.SIGKILL, 1)
        seed1 = proc_cpu_s(seeder.pid)
        m = {"client": client, "run": run_no, "wall_s": wall,
             "cpu_s": ru.ru_utime + ru.ru_stime, "user_s": ru.ru_utime, "sys_s": ru.ru_stime,
             "seeder_cpu_s": (seed1 - seed0) if None not in (seed0, seed1) else None,
             "peak_rss_anon_mib": rss.peak_kib / 1024.0, "exit": p.returncode}
        problem = None
        got = os.path.join(out, self.name)
        if timed_out:
            problem = "timed out after %.0f s" % self.a.timeout
        elif p.returncode != 0:
            problem = "exited with %d" % p.returncode
        elif client == "libtorrent-rc4" and not self.has_word(log_path, b"DONE"):
            problem = "exited 0 without printing DONE"
        elif not os.path.isfile(got) or os.path.getsize(got) != self.a.size:
            problem = "output missing or of the wrong size"
        else:
            h = hashlib.sha1()
            with open(got, "rb") as f:
                for b in iter(lambda: f.read(4 * MiB), b""):
                    h.update(b)
            if h.hexdigest() != self.sha1:
                problem = "SHA-1 mismatch"
        self.results.append(dict(m, error=problem))
        if problem:
            raise BenchError("%s run %d: %s (log %s)" % (client, run_no, problem, log_path))
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
        log("%-14s run %d: wall %6.2f s  cpu %5.2f s  seeder cpu %5.2f s  anon RSS %6.1f MiB"
            % (client, run_no, wall, m["cpu_s"], m["seeder_cpu_s"] or 0, m["peak_rss_anon_mib"]))

    # -- report
    def summarize(self):
        summ = {}
        for c in self.a.clients:
            rs = [r for r in self.results if r["client"] == c and not r["error"]]
            if rs:
                summ[c] = {k: median([r[k] for r in rs])
                           for k in ("wall_s", "cpu_s", "seeder_cpu_s", "peak_rss_anon_mib")}
                summ[c]["runs"] = len(rs)
        return summ

    def report(self, summ):
        lines = ["%d MiB single file, 1 MiB pieces, libtorrent seeders (RC4 forced / encryption "
                 "disabled); median of %d run(s)" % (self.a.size // MiB, self.a.runs)]
        hdr = "%-15s %7s %7s %9s %9s %7s %7s" % ("client", "wall s", "CPU s", "seeder s",
                                                  "anon MiB", "wall/x", "CPU/x")
        lines += [hdr, "-" * len(hdr)]
        x = summ.get(BASE)
        for c in self.a.clients:
            s = summ.get(c)
            if s is None:
                continue

            def ratio(k):
                return "%.2f" % (s[k] / x[k]) if x and x[k] else "-"
            lines.append("%-15s %7.2f %7.2f %9.2f %9.1f %7s %7s"
                         % (c, s["wall_s"], s["cpu_s"], s["seeder_cpu_s"] or 0,
                            s["peak_rss_anon_mib"], ratio("wall_s"), ratio("cpu_s")))
        lines.append("(wall/x, CPU/x: each client / %s)" % BASE)
        plain = summ.get("xorrent-plain")
        if x and plain:
            lines.append("what RC4 costs xorrent (xorrent-rc4 / xorrent-plain): wall %.2fx, "
                         "CPU %.2fx, seeder CPU %.2fx"
                         % (x["wall_s"] / plain["wall_s"], x["cpu_s"] / plain["cpu_s"],
                            (x["seeder_cpu_s"] or 0) / (plain["seeder_cpu_s"] or 1)))
        print("\n".join(lines))
        sys.stdout.flush()

    def main(self):
        a = self.a
        for tool in ("opentracker", a.lt_python) + (("aria2c",) if "aria2-rc4" in a.clients
                                                    else ()):
            if not shutil.which(tool):
                raise BenchError("%s not found" % tool)
        self.setup()
        self.start_swarm()
        total = a.runs * len(a.clients)
        k = 0
        for r in range(1, a.runs + 1):
            for c in a.clients:
                k += 1
                log("[%d/%d] %s run %d" % (k, total, c, r))
                self.run_one(c, r)
        for kind, (p, _) in self.seeders.items():
            if p.poll() is not None:
                raise BenchError("the %s seeder died (exit %s)" % (kind, p.returncode))
        summ = self.summarize()
        self.report(summ)
        if a.json:
            meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "kernel": platform.release(),
                    "cpus": os.cpu_count(), "size_bytes": a.size, "runs": a.runs,
                    "git_head": git_commit(REPO), "info_hash": self.info_hash,
                    "xorrent_version": version([self.xorrent, "--version"]),
                    "libtorrent_version": version([a.lt_python, "-c", "import libtorrent; "
                                                   "print(libtorrent.__version__)"]),
                    "aria2_version": version(["aria2c", "--version"])}
            with open(a.json, "w") as f:
                json.dump({"meta": meta, "runs": self.results, "summary": summ}, f, indent=2)
            log("wrote %s" % a.json)
        return 0


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="1G", help="payload size, e.g. 1G, 64M (default 1G)")
    p.add_argument("--runs", type=int, default=3, help="runs per client (default 3)")
    p.add_argument("--clients", default=",".join(CLIENTS),
                   help="comma list, in round-robin order (default %(default)s)")
    p.add_argument("--timeout", type=float, default=300, help="seconds per run (default 300)")
    p.add_argument("--json", metavar="FILE", help="write every number as JSON here")
    p.add_argument("--workdir", help="make the temp dir under this dir (default: $TMPDIR or /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (payload, logs)")
    p.add_argument("--xorrent", default=os.path.join(REPO, "target", "release", "xorrent"),
                   help="xorrent binary (default: target/release/xorrent; copied first)")
    p.add_argument("--lt-peer", default=os.path.join(REPO, "tests", "interop", "lt_peer.py"))
    p.add_argument("--lt-python", default="/usr/bin/python3",
                   help="python with the libtorrent module (default /usr/bin/python3)")
    a = p.parse_args()
    try:
        a.size = parse_size(a.size)
    except ValueError:
        p.error("--size: expected a number with an optional K, M or G suffix")
    if a.size < MiB or a.runs < 1:
        p.error("--size must be at least 1M and --runs at least 1")
    a.clients = [c.strip() for c in a.clients.split(",") if c.strip()]
    for c in a.clients:
        if c not in CLIENTS:
            p.error("unknown client %r (known: %s)" % (c, ", ".join(CLIENTS)))
    if a.json:
        a.json = os.path.abspath(a.json)
    a.xorrent = os.path.abspath(a.xorrent)
    return a


def main():
    args = parse_args()
    set_log_prefix("encryption-bench")
    require_loopback("encryption-bench")
    exit_on_signals()
    return benchlib.run_bench(Bench(args), args.keep)


if __name__ == "__main__":
    sys.exit(main())
