#!/usr/bin/env python3
"""Scale benchmark: 1,000 small torrents seeded by one process, xorrent
beside transmission-daemon, on loopback.

Run it (as root) inside a private network namespace with only loopback:

    flock /tmp/cargo.lock cargo build --release
    scripts/netns-run python3 scripts/scale_bench.py [--rounds 3] [--json out.json]

It refuses to run unless /proc/net/dev lists only `lo`.

One run of this script:
  * makes --torrents (1000) files of --size-kib (1024) random bytes,
    DATA/f0000.bin ..., and a single-file .torrent for each (piece length
    --piece-kib, 256), bencoded here with hashlib; no announce URL unless
    --announce is given (e.g. a dead tracker http://127.0.0.1:1/announce);
  * then, for each round, for each client in turn (the order alternates
    from round to round), with a fresh state/config directory:
      check   start the client on all torrents with the data in place and
              nothing known about it, so every piece is hashed; time from
              spawn until every torrent seeds; then --settle s, then the
              idle CPU over --idle-secs s (utime+stime delta from
              /proc/PID/stat, % of one core); stop it cleanly;
      resume  start it again with the same state/config directory (fast
              resume); time until every torrent seeds; --restart-idle-secs
              of idle CPU (0: skip); stop it.
    Peak anonymous RSS (RssAnon from /proc/PID/status, sampled every
    --sample-ms ms from spawn to exit) per phase; open descriptors
    (/proc/PID/fd) and threads when idle; time from the stop signal to exit.
  * prints medians per client and xorrent / transmission ratios, checks the
    targets (peak anon RSS <= 64 MiB, idle CPU <= 1 % of a core, restart
    <= 5 s) and writes every number as JSON with --json FILE.

Clients:
  xorrent       `xorrent download T0 ... T999 -o DATA --seed --no-dht
                --state-dir S --bind 127.0.0.1 --port 0 --status-interval 5`;
                "all seeding" is the moment its stderr line `seeding all N
                torrents (ready after X.XXs)` shows up (the log is polled
                every 20 ms; the self-reported X.XX is kept too). Stopped
                with SIGINT (resume records are flushed on the way out).
  transmission  transmission-daemon -f -g CONFIG with a settings.json that
                turns off DHT, LPD, PEX, uTP, port forwarding and the
                blocklist, binds peers and RPC to 127.0.0.1, download-dir =
                DATA and watch-dir = a directory holding the 1000 .torrent
                files at start (transmission adds them and renames them
                *.added; a new torrent is always verified). "All seeding"
                is the first RPC torrent-get (polled every --poll-ms ms) in
                which all N torrents report status 6 (seeding). Stopped with
                SIGTERM (it saves its resume files). The restart uses the
                same config directory.

Both clients get the same RLIMIT_NOFILE (--nofile, default 8192: the soft
limit of 1024 common on desktops is below one descriptor per torrent; see
BENCHMARKS.md for what each client does at 1024).

Caveats: the data stays in the page cache (it was just written), so the
full check measures hashing, not the disk. Other processes on the machine
can slow the start phases; the CPU they used during each timed start is
recorded ("foreign cores") but runs are not repeated.
"""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
import benchlib  # noqa: E402
from benchlib import (KiB, MiB, TR_RPC_PORT, BenchError, Procs, Sampler,  # noqa: E402
                      exit_on_signals, fd_count, foreign_cpu_s, git_commit, log, make_corpus,
                      median, proc_cpu_s, require_loopback, set_log_prefix, status_field,
                      tr_settings, version)
from benchlib import Rpc as TrRpc  # noqa: E402  (one connection per call)

set_log_prefix("scale")

SCRIPT = os.path.realpath(__file__)
REPO = os.path.dirname(os.path.dirname(SCRIPT))

CLIENTS = ["xorrent", "transmission"]
ALIASES = {"x": "xorrent", "tr": "transmission", "transmission-daemon": "transmission"}

TARGET_RSS_MIB = 64.0
TARGET_IDLE_PCT = 1.0
TARGET_RESTART_S = 5.0

# ------------------------------------------------------------------ bench --

class Bench(Procs):
    def __init__(self, args):
        super().__init__()
        self.a = args
        self.results = []
        self.notes = []

    # -- setup
    def setup(self):
        a = self.a
        base = a.workdir or tempfile.gettempdir()
        os.makedirs(base, exist_ok=True)
        need = a.torrents * a.size_kib * KiB * 1.1 + 64 * MiB
        if shutil.disk_usage(base).free < need:
            raise BenchError("%s has too little free space (%.1f GiB needed)" % (base, need / 2**30))
        self.tmp = tempfile.mkdtemp(prefix="xorrent-scale-", dir=base)
        os.chmod(self.tmp, 0o755)
        self.logs = os.path.join(self.tmp, "logs")
        os.makedirs(self.logs)
        log("temp dir %s" % self.tmp)
        self.xorrent = None
        if "xorrent" in a.clients:
            if not os.path.isfile(a.xorrent):
                raise BenchError("no xorrent binary at %s (cargo build --release)" % a.xorrent)
            # A private copy, so a rebuild during the benchmark changes nothing.
            self.xorrent = os.path.join(self.tmp, "xorrent")
            shutil.copy2(a.xorrent, self.xorrent)
        self.tr = shutil.which("transmission-daemon") if "transmission" in a.clients else None
        if "transmission" in a.clients and not self.tr:
            raise BenchError("transmission-daemon not found (apt-get install transmission-daemon)")

        self.data = os.path.join(self.tmp, "data")
        self.tors = os.path.join(self.tmp, "torrents")
        t = time.monotonic()
        self.hashes = make_corpus(self.data, self.tors, a.torrents, a.size_kib * KiB,
                                  a.piece_kib * KiB, a.announce)
        self.torrent_files = [os.path.join(self.tors, "t%04d.torrent" % i)
                              for i in range(a.torrents)]
        log("made %d files of %d KiB and their torrents in %.1f s"
            % (a.torrents, a.size_kib, time.monotonic() - t))
        os.sync()

    # -- one client, one round
    def run_client(self, client, rnd):
        tag = "%s-%d" % (client, rnd)
        home = os.path.join(self.tmp, "home-" + tag)
        os.makedirs(home)
        state = os.path.join(self.tmp, "state-" + tag)
        os.makedirs(state)
        if client == "transmission":
            watch = os.path.join(self.tmp, "watch-" + tag)
            os.makedirs(watch)
            for f in self.torrent_files:
                shutil.copy(f, watch)
            with open(os.path.join(state, "settings.json"), "w") as f:
                json.dump(tr_settings(self.data, watch), f, indent=1)
        res = {"client": client, "round": rnd}
        for phase, idle in (("check", self.a.idle_secs), ("resume", self.a.restart_idle_secs)):
            log("round %d: %s %s" % (rnd, client, phase))
            m = self.phase(client, state, home, os.path.join(self.logs, "%s-%s.log" % (tag, phase)),
                           idle)
            res[phase] = m
            log("  ready %.2f s (self-reported %s), peak anon %.1f MiB, idle CPU %s, fds %s, "
                "stop %s s"
                % (m["ready_s"], "%.2f" % m["self_ready_s"] if m.get("self_ready_s") is not None else "-",
                   m["peak_anon_mib"],
                   "%.3f %%" % m["idle_cpu_pct"] if m.get("idle_cpu_pct") is not None else "-",
                   m.get("fds"), "%.2f" % m["stop_s"] if m["stop_s"] is not None else "-"))
        self.results.append(res)

    def phase(self, client, state, home, log_path, idle_secs):
        a = self.a
        n = a.torrents
        if client == "xorrent":
            argv = ([self.xorrent, "download"] + self.torrent_files +
                    ["-o", self.data, "--seed", "--no-dht", "--state-dir", state,
                     "--bind", "127.0.0.1", "--port", "0", "--status-interval", "5"])
        else:
            argv = [self.tr, "-f", "-g", state]
        ours = {os.getpid()}
        f0 = foreign_cpu_s(ours)
        t0 = time.monotonic()
        p = self.spawn(argv, log_path, self.env(home), a.nofile)
        ours.add(p.pid)
        sampler = Sampler(p.pid, a.sample_ms / 1000.0)
        sampler.start()
        m = {}
        deadline = t0 + a.timeout
        rpc = TrRpc(TR_RPC_PORT)
        seen = 0
        try:
            while True:
                now = time.monotonic()
                if p.poll() is not None:
                    raise BenchError("%s exited (%s) before all torrents seeded; see %s"
                                     % (client, p.returncode, log_path))
                if now > deadline:
                    raise BenchError("%s: not all seeding after %.0f s (%d seen); see %s"
                                     % (client, a.timeout, seen, log_path))
                if client == "xorrent":
                    with open(log_path, "rb") as f:
                        text = f.read().decode("utf-8", "replace")
                    if "seeding all %d torrents" % n in text:
                        m["ready_s"] = now - t0
                        r = re.search(r"seeding all %d torrents \(ready after ([0-9.]+)s\)\n" % n,
                                      text)
                        if r is None:  # the rest of the line is still on its way
                            time.sleep(0.05)
                            with open(log_path, "rb") as f:
                                r = re.search(r"seeding all %d torrents \(ready after "
                                              r"([0-9.]+)s\)" % n,
                                              f.read().decode("utf-8", "replace"))
                        if r:
                            m["self_ready_s"] = float(r.group(1))
                        break
                    time.sleep(0.02)
                else:
                    st = rpc.statuses()
                    if st is not None:
                        seen = sum(1 for s in st if s == 6)
                        if len(st) == n and seen == n:
                            m["ready_s"] = time.monotonic() - t0
                            break
                        if len(st) > n:
                            raise BenchError("transmission lists %d torrents" % len(st))
                    time.sleep(a.poll_ms / 1000.0)
            m["foreign_cores"] = (foreign_cpu_s(ours) - f0) / m["ready_s"]
            m["cpu_to_ready_s"] = proc_cpu_s(p.pid)
            m["anon_at_ready_mib"] = (status_field(p.pid, "RssAnon:") or 0) / 1024.0
            if idle_secs > 0:
                time.sleep(a.settle)
                c0, w0 = proc_cpu_s(p.pid), time.monotonic()
                time.sleep(idle_secs)
                c1, w1 = proc_cpu_s(p.pid), time.monotonic()
                if p.poll() is not None or c0 is None or c1 is None:
                    raise BenchError("%s exited while idle; see %s" % (client, log_path))
                m["idle_wall_s"] = w1 - w0
                m["idle_cpu_s"] = c1 - c0
                m["idle_cpu_pct"] = 100.0 * (c1 - c0) / (w1 - w0)
            if client == "transmission":
                st = rpc.statuses() or []
                m["seeding_at_end"] = sum(1 for s in st if s == 6)
            m["anon_idle_mib"] = (status_field(p.pid, "RssAnon:") or 0) / 1024.0
            m["rss_idle_mib"] = (status_field(p.pid, "VmRSS:") or 0) / 1024.0
            m["fds"] = fd_count(p.pid)
            m["threads"] = status_field(p.pid, "Threads:")
            sig = signal.SIGINT if client == "xorrent" else signal.SIGTERM
            m["stop_s"], m["exit"] = self.stop(p, sig, a.stop_grace)
        finally:
            sampler.stop.set()
            sampler.join()
            if p.poll() is None:
                self.stop(p, signal.SIGKILL, 5)
        m["peak_anon_mib"] = sampler.peak_kib / 1024.0
        m["rss_samples"] = sampler.samples
        return m

    # -- report
    def summary(self, clients):
        keys = [("check", "ready_s"), ("check", "peak_anon_mib"), ("check", "idle_cpu_pct"),
                ("check", "fds"), ("check", "threads"), ("check", "stop_s"),
                ("check", "cpu_to_ready_s"),
                ("resume", "ready_s"), ("resume", "peak_anon_mib"), ("resume", "idle_cpu_pct"),
                ("resume", "cpu_to_ready_s"), ("resume", "stop_s")]
        out = {}
        for c in clients:
            rs = [r for r in self.results if r["client"] == c]
            out[c] = {"%s.%s" % k: median([r[k[0]].get(k[1]) for r in rs]) for k in keys}
            out[c]["peak_anon_mib"] = median([max(r["check"]["peak_anon_mib"],
                                                  r["resume"]["peak_anon_mib"]) for r in rs])
            out[c]["check.self_ready_s"] = median([r["check"].get("self_ready_s") for r in rs])
            out[c]["resume.self_ready_s"] = median([r["resume"].get("self_ready_s") for r in rs])
        return out

    def report(self, clients):
        s = self.summary(clients)

        def fmt(v, d=2):
            return "-" if v is None else ("%.*f" % (d, v))
        rows = [("peak anon RSS MiB (both phases)", "peak_anon_mib", 1),
                ("idle CPU % of a core (after check)", "check.idle_cpu_pct", 3),
                ("idle CPU % of a core (after restart)", "resume.idle_cpu_pct", 3),
                ("start, full check: s to all seeding", "check.ready_s", 2),
                ("  CPU s used by then", "check.cpu_to_ready_s", 2),
                ("restart, fast resume: s to all seeding", "resume.ready_s", 2),
                ("  CPU s used by then", "resume.cpu_to_ready_s", 2),
                ("open fds when idle", "check.fds", 0),
                ("threads when idle", "check.threads", 0),
                ("stop: s from signal to exit", "check.stop_s", 2)]
        print()
        print("| (median of %d) | %s | %s |" % (
            len(self.results) // max(1, len(clients)), " | ".join(clients),
            "xorrent ÷ transmission" if len(clients) == 2 else ""))
        print("|---|" + "---|" * (len(clients) + 1))
        for label, key, d in rows:
            vals = [s[c].get(key) for c in clients]
            ratio = ""
            if len(clients) == 2 and None not in vals and vals[1]:
                ratio = "%.2f" % (vals[0] / vals[1])
            print("| %s | %s | %s |" % (label, " | ".join(fmt(v, d) for v in vals), ratio))
        checks = []
        if "xorrent" in s:
            x = s["xorrent"]
            checks = [
                {"target": "peak anon RSS <= %g MiB" % TARGET_RSS_MIB,
                 "value": x["peak_anon_mib"], "pass": x["peak_anon_mib"] <= TARGET_RSS_MIB},
                {"target": "idle CPU <= %g %% of a core" % TARGET_IDLE_PCT,
                 "value": x["check.idle_cpu_pct"],
                 "pass": None if x["check.idle_cpu_pct"] is None
                 else x["check.idle_cpu_pct"] <= TARGET_IDLE_PCT},
                {"target": "restart (fast resume) <= %g s" % TARGET_RESTART_S,
                 "value": x["resume.ready_s"], "pass": x["resume.ready_s"] <= TARGET_RESTART_S},
            ]
            print()
            for ch in checks:
                print("xorrent %s: %s -> %s" % (ch["target"], fmt(ch["value"], 3),
                                                {True: "met", False: "NOT met", None: "?"}[ch["pass"]]))
        for n in self.notes:
            print("note: " + n)
        return s, checks

    def meta(self):
        a = self.a

        commit = git_commit(REPO)
        return {"torrents": a.torrents, "size_kib": a.size_kib, "piece_kib": a.piece_kib,
                "announce": a.announce, "rounds": a.rounds, "idle_secs": a.idle_secs,
                "nofile": a.nofile, "cpus": os.cpu_count(), "kernel": platform.release(),
                "commit": commit, "xorrent": version([self.xorrent, "--version"]) if self.xorrent else None,
                "transmission": version([self.tr, "--version"]) if self.tr else None}

    def main(self):
        a = self.a
        self.setup()
        for rnd in range(1, a.rounds + 1):
            order = a.clients if rnd % 2 else list(reversed(a.clients))
            for c in order:
                self.run_client(c, rnd)
        summ, checks = self.report(a.clients)
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"meta": self.meta(), "rounds": self.results, "summary": summ,
                           "targets": checks, "notes": self.notes}, f, indent=2)
            log("wrote %s" % a.json)
        return 0


def parse_args():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--torrents", type=int, default=1000, help="number of torrents (default 1000)")
    p.add_argument("--size-kib", type=int, default=1024, help="size of each file (default 1024)")
    p.add_argument("--piece-kib", type=int, default=256, help="piece length (default 256)")
    p.add_argument("--announce", default=None,
                   help="announce URL to put in every torrent (default: none)")
    p.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    p.add_argument("--clients", default=",".join(CLIENTS),
                   help="comma list (default %(default)s; aliases x, tr)")
    p.add_argument("--idle-secs", type=float, default=60,
                   help="idle CPU window after the full-check start (default 60)")
    p.add_argument("--restart-idle-secs", type=float, default=0,
                   help="idle CPU window after the restart (default 0: none)")
    p.add_argument("--settle", type=float, default=5,
                   help="seconds between 'all seeding' and the idle window (default 5)")
    p.add_argument("--nofile", type=int, default=8192,
                   help="RLIMIT_NOFILE for both clients (default 8192)")
    p.add_argument("--timeout", type=float, default=300,
                   help="seconds allowed until all seed (default 300)")
    p.add_argument("--stop-grace", type=float, default=60,
                   help="seconds allowed from the stop signal to exit (default 60)")
    p.add_argument("--sample-ms", type=float, default=50, help="RSS sampling period (default 50)")
    p.add_argument("--poll-ms", type=float, default=200,
                   help="transmission RPC poll period (default 200)")
    p.add_argument("--xorrent", default=os.path.join(REPO, "target", "release", "xorrent"))
    p.add_argument("--workdir", help="where the temp dir goes (default $TMPDIR)")
    p.add_argument("--json", help="write every number here")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (data, logs)")
    a = p.parse_args()
    cl = []
    for c in a.clients.split(","):
        c = ALIASES.get(c.strip(), c.strip())
        if c not in CLIENTS:
            p.error("unknown client %r" % c)
        cl.append(c)
    a.clients = cl
    return a


def main():
    args = parse_args()
    require_loopback("scale")
    exit_on_signals()

    return benchlib.run_bench(Bench(args), args.keep)


if __name__ == "__main__":
    sys.exit(main())
