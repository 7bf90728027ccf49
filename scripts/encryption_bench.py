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
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
import benchlib  # noqa: E402
from benchlib import (MiB, BenchError, Procs, add_client_args, bencode,  # noqa: E402
                      client_table, exit_on_signals, git_commit, has_word, log, make_payload,
                      make_workdir, medians_by_client, parse_client_args, proc_cpu_s,
                      require_loopback, run_measured, set_log_prefix, sha1_file, version)

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
        self.tmp, self.logs, self.xorrent, copies = make_workdir(
            "xorrent-enc-bench-", 2 * a.size + 256 * MiB, a.workdir, a.xorrent,
            {"lt_peer.py": a.lt_peer})
        self.lt_peer = copies["lt_peer.py"]

        self.name = "enc-bench-%dM.bin" % (a.size // MiB)
        self.seed_dir = os.path.join(self.tmp, "seed")
        os.makedirs(self.seed_dir)
        t = time.monotonic()
        self.sha1, pieces = make_payload(os.path.join(self.seed_dir, self.name), a.size, PIECE)
        info = {"length": a.size, "name": self.name, "piece length": PIECE, "pieces": pieces}
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
            while not has_word(path, b"READY"):
                if p.poll() is not None or time.monotonic() > deadline:
                    raise BenchError("the %s seeder did not get ready (see %s)" % (kind, path))
                time.sleep(0.1)
            log("%s seeder ready on %s:%d" % (kind, SEEDERS[kind][0], PORT))

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
        r = run_measured(self.procs, argv, log_path, self.procs.env(home), NOFILE,
                         self.a.timeout)
        seed1 = proc_cpu_s(seeder.pid)
        m = {"client": client, "run": run_no, "wall_s": r.wall_s, "cpu_s": r.cpu_s,
             "user_s": r.user_s, "sys_s": r.sys_s,
             "seeder_cpu_s": (seed1 - seed0) if None not in (seed0, seed1) else None,
             "peak_rss_anon_mib": r.peak_rss_anon_mib, "exit": r.exit}
        problem = None
        got = os.path.join(out, self.name)
        if r.timed_out:
            problem = "timed out after %.0f s" % self.a.timeout
        elif r.exit != 0:
            problem = "exited with %d" % r.exit
        elif client == "libtorrent-rc4" and not has_word(log_path, b"DONE"):
            problem = "exited 0 without printing DONE"
        elif not os.path.isfile(got) or os.path.getsize(got) != self.a.size:
            problem = "output missing or of the wrong size"
        elif sha1_file(got) != self.sha1:
            problem = "SHA-1 mismatch"
        self.results.append(dict(m, error=problem))
        if problem:
            raise BenchError("%s run %d: %s (log %s)" % (client, run_no, problem, log_path))
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
        log("%-14s run %d: wall %6.2f s  cpu %5.2f s  seeder cpu %5.2f s  anon RSS %6.1f MiB"
            % (client, run_no, r.wall_s, r.cpu_s, m["seeder_cpu_s"] or 0, r.peak_rss_anon_mib))

    # -- report
    def summarize(self):
        return medians_by_client(self.results, self.a.clients,
                                 ("wall_s", "cpu_s", "seeder_cpu_s", "peak_rss_anon_mib"))

    def report(self, summ):
        lines = ["%d MiB single file, 1 MiB pieces, libtorrent seeders (RC4 forced / encryption "
                 "disabled); median of %d run(s)" % (self.a.size // MiB, self.a.runs)]
        lines += client_table(summ, self.a.clients, BASE, 15,
                              [("wall s", "wall_s", 7, 2), ("CPU s", "cpu_s", 7, 2),
                               ("seeder s", "seeder_cpu_s", 9, 2),
                               ("anon MiB", "peak_rss_anon_mib", 9, 1)])
        x = summ.get(BASE)
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
    add_client_args(p, CLIENTS, REPO)
    return parse_client_args(p, CLIENTS)


def main():
    args = parse_args()
    set_log_prefix("encryption-bench")
    require_loopback("encryption-bench")
    exit_on_signals()
    return benchlib.run_bench(Bench(args), args.keep)


if __name__ == "__main__":
    sys.exit(main())
