#!/usr/bin/env python3
"""Announce throughput: xorrent's embedded tracker against opentracker.

    cargo build --release --bin xorrent --example tracker_load
    scripts/netns-run /usr/bin/python3 scripts/tracker_bench.py

Runs only inside a private network namespace with no interface but lo, so
every packet stays on this machine. Starts opentracker on 127.0.0.2 and
`xorrent tracker` on 127.0.0.3 (both port 6969, TCP and UDP, whitelisting
the same generated info-hashes), then runs tracker_load against each, for
each protocol, alternating which server goes first every round. Prints a
markdown table of median announces/s. Servers and the load generator are
pinned to different cores by default so neither steals the other's CPU.
The work runs in a fresh PID namespace whose init is this script, so every
process it started dies with it however it ends, even by SIGKILL (opentracker
drops privileges, which clears PR_SET_PDEATHSIG); on a normal end, an error,
SIGTERM or Ctrl-C the children are stopped first and the table is printed.
"""

import argparse
import ctypes
import json
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

PORT = 6969
ADDRS = {"opentracker": "127.0.0.2", "xorrent": "127.0.0.3"}
PR_SET_PDEATHSIG = 1


class BenchError(Exception):
    pass


def log(msg):
    print("[tracker_bench] " + msg, file=sys.stderr, flush=True)


def supervise():
    """Re-runs this script as PID 1 of a new PID namespace and waits for it."""
    tmp = tempfile.mkdtemp(prefix="tracker_bench.")
    env = dict(os.environ, TRACKER_BENCH_TMP=tmp)
    # --kill-child: if unshare dies, the inner init dies and takes every
    # process of the namespace with it.
    argv = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc",
            sys.executable, os.path.abspath(__file__)] + sys.argv[1:]
    child = subprocess.Popen(argv, env=env, preexec_fn=die_with_parent)
    asked = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: asked.append(time.monotonic()))
    while True:
        try:
            rc = child.wait(timeout=0.2)
            break
        except subprocess.TimeoutExpired:
            pass
        if len(asked) == 1:
            # unshare ignores SIGTERM: pass it to the inner script, which
            # stops its children and prints what it has.
            asked.append(0)
            try:
                with open("/proc/%d/task/%d/children" % (child.pid, child.pid)) as f:
                    for pid in f.read().split():
                        os.kill(int(pid), signal.SIGTERM)
            except OSError:
                child.kill()
        elif asked and time.monotonic() - asked[0] > 10:
            child.kill()
    if rc < 0:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if rc < 0 else rc


def in_private_netns():
    # /proc/net/dev lists this namespace's interfaces after two header lines.
    with open("/proc/net/dev") as f:
        names = [line.split(":")[0].strip() for line in f.readlines()[2:]]
    return [n for n in names if n != "lo"] == []


def die_with_parent():
    # Also survives exec, but not opentracker's drop to nobody: the PID
    # namespace is what guarantees cleanup.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Procs:
    def __init__(self):
        self.procs = []

    def spawn(self, argv, log_path, cpu=None):
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu)] + argv
        with open(log_path, "wb") as out:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        self.procs.append(p)
        return p

    def kill_all(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 3
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def tail(path, n=15):
    try:
        with open(path, "rb") as f:
            return b"\n".join(f.read().splitlines()[-n:]).decode(errors="replace")
    except OSError:
        return ""


def udp_answers(ip):
    """Whether a BEP-15 connect to ip:PORT gets its reply."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        s.connect((ip, PORT))
        s.send(struct.pack(">QII", 0x41727101980, 0, 7))
        try:
            r = s.recv(64)
        except OSError:
            return False
        return len(r) >= 16 and r[:8] == struct.pack(">II", 0, 7)


def wait_ready(name, proc, log_path, timeout=10):
    ip = ADDRS[name]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError("%s exited with %s:\n%s" % (name, proc.returncode, tail(log_path)))
        try:
            socket.create_connection((ip, PORT), timeout=0.2).close()
            if udp_answers(ip):
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise BenchError("%s did not answer on %s:%d (TCP and UDP) within %d s:\n%s"
                     % (name, ip, PORT, timeout, tail(log_path)))


def start_server(name, a, procs, tmp, whitelist, cpu):
    log_path = os.path.join(tmp, name + ".log")
    ip = ADDRS[name]
    if name == "opentracker":
        # Debian's build chroots to -d, drops to nobody and is whitelist-only;
        # -w is read inside the chroot.
        root = os.path.join(tmp, "ot")
        os.makedirs(root, mode=0o755)
        os.chmod(root, 0o755)
        shutil.copy(whitelist, os.path.join(root, "whitelist"))
        os.chmod(os.path.join(root, "whitelist"), 0o644)
        argv = ["opentracker", "-i", ip, "-p", str(PORT), "-P", str(PORT),
                "-w", "/whitelist", "-d", root]
    else:
        argv = [a.xorrent, "tracker", "--http", "%s:%d" % (ip, PORT),
                "--udp", "%s:%d" % (ip, PORT), "--allow", whitelist]
    log("starting %s: %s" % (name, " ".join(argv)))
    p = procs.spawn(argv, log_path, cpu)
    wait_ready(name, p, log_path)
    return p, log_path


def cpu_seconds(pid):
    """User plus system CPU time of every thread of pid so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_load(a, proto, name, hashes, cpu):
    flag = "--udp" if proto == "udp" else "--http"
    argv = [a.load, flag, "%s:%d" % (ADDRS[name], PORT), "--hashes", hashes,
            "--peers-per-swarm", str(a.peers_per_swarm), "--concurrency", str(a.concurrency),
            "--duration", str(a.duration), "--warmup", str(a.warmup),
            "--threads", str(a.load_threads), "--json"]
    if proto == "http-close":
        argv.append("--http-close")
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu)] + argv
    before = os.times()
    r = subprocess.run(argv, capture_output=True, text=True, preexec_fn=die_with_parent,
                       timeout=a.duration + a.warmup + 15)
    after = os.times()
    try:
        report = json.loads(r.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise BenchError("tracker_load exited %s without a report:\n%s"
                         % (r.returncode, r.stderr[-2000:]))
    # Near 100 % means the generator, not the server, set the pace.
    load_cpu = (after.children_user + after.children_system
                - before.children_user - before.children_system)
    report["load_cpu_pct"] = 100 * load_cpu / (a.duration + a.warmup)
    return report


def median_of(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def fmt(v, spec="%.0f"):
    return spec % v if v is not None else "-"


def table(a, results, protos, servers, notes):
    out = ["| protocol | server | median announces/s | xorrent / opentracker | per round "
           "| p99 ms | server CPU µs/announce | server CPU % | tracker_load CPU % "
           "| errors | timeouts |",
           "|---" * 11 + "|"]
    for proto in protos:
        med = {n: median_of(results.get((proto, n), []), "announces_per_s") for n in servers}
        for name in servers:
            runs = results.get((proto, name), [])
            if not runs:
                out.append("| %s | %s | %s |" % (proto, name, notes.get(name, "not run")) + " |" * 8)
                continue
            ot, xo = med.get("opentracker"), med.get("xorrent")
            ratio = "%.2f" % (xo / ot) if name == "xorrent" and ot and xo is not None else ""
            out.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %d | %d |" % (
                proto, name, fmt(med[name]), ratio,
                " ".join(fmt(r["announces_per_s"]) for r in runs),
                fmt(median_of(runs, "p99_ms"), "%.2f"),
                fmt(median_of(runs, "server_cpu_us_per_announce"), "%.1f"),
                fmt(median_of(runs, "server_cpu_pct")),
                fmt(median_of(runs, "load_cpu_pct")),
                sum(r["errors"] for r in runs), sum(r["timeouts"] for r in runs)))
    pin = ("servers pinned to CPU %d, tracker_load to CPU %d" % (a.server_cpu, a.load_cpu)
           if a.pin else "no CPU pinning")
    out.append("")
    out.append("Load: %d swarms x %d peers, concurrency %d, %g s measured per run after %g s "
               "warm-up, %d rounds (server order alternating), tracker_load with %d thread(s), "
               "%s. Medians over rounds; CPU %% is of one core over warm-up plus run; a "
               "tracker_load CPU %% near 100 means the generator, not the server, set the pace."
               % (a.swarms, a.peers_per_swarm, a.concurrency, a.duration, a.warmup, a.rounds,
                  a.load_threads, pin))
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p.add_argument("--xorrent", default=os.path.join(root, "target/release/xorrent"),
                   help="xorrent binary (has the `tracker` subcommand)")
    p.add_argument("--load", default=os.path.join(root, "target/release/examples/tracker_load"),
                   help="tracker_load binary (cargo build --release --example tracker_load)")
    p.add_argument("--servers", default="opentracker,xorrent")
    p.add_argument("--protocols", default="udp,http,http-close",
                   help="http reuses connections where the server allows; http-close "
                   "opens one per announce, as real clients do")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--swarms", type=int, default=1000)
    p.add_argument("--peers-per-swarm", type=int, default=20)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--load-threads", type=int, default=1)
    p.add_argument("--no-pin", dest="pin", action="store_false",
                   help="let servers and the load generator share every core")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--load-cpu", type=int, default=1)
    p.add_argument("--max-total", type=float, default=290,
                   help="refuse plans longer than this many seconds")
    p.add_argument("--json", help="also write every run's report to this file")
    a = p.parse_args()

    servers = [s for s in a.servers.split(",") if s]
    protos = [s for s in a.protocols.split(",") if s]
    if not set(servers) <= set(ADDRS) or not set(protos) <= {"udp", "http", "http-close"}:
        p.error("servers are opentracker,xorrent; protocols are udp,http,http-close")
    if "xorrent" in servers and not a.xorrent:
        p.error("--xorrent is required unless --servers leaves it out")
    if not in_private_netns():
        sys.exit("tracker_bench: refusing to run outside a private network namespace; "
                 "use /work/shared/netns-run python3 %s ..." % sys.argv[0])
    if not 1 <= a.rounds <= 50 or not 0 < a.duration <= 60 or not 1 <= a.concurrency <= 1024:
        p.error("rounds 1..50, duration up to 60 s, concurrency 1..1024")
    per_run = a.duration + a.warmup + 1.0
    plan = a.rounds * len(protos) * len(servers) * per_run + 20
    if plan > a.max_total:
        p.error("the plan takes ~%.0f s, over --max-total %.0f s" % (plan, a.max_total))
    tmp = os.environ.get("TRACKER_BENCH_TMP")
    if tmp is None or os.getpid() != 1:
        return supervise()
    if a.pin and (shutil.which("taskset") is None or
                  not {a.server_cpu, a.load_cpu} <= os.sched_getaffinity(0)):
        log("cannot pin to CPUs %d and %d; running unpinned" % (a.server_cpu, a.load_cpu))
        a.pin = False
    server_cpu, load_cpu = (a.server_cpu, a.load_cpu) if a.pin else (None, None)

    def interrupted(*_):
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, interrupted)
    procs = Procs()
    started = time.monotonic()
    results, notes, live = {}, {}, {}
    try:
        hashes = os.path.join(tmp, "hashes.txt")
        subprocess.run([a.load, "--write-hashes", hashes, "--swarms", str(a.swarms)], check=True)
        os.chmod(hashes, 0o644)
        for name in servers:
            try:
                live[name] = start_server(name, a, procs, tmp, hashes, server_cpu)
            except (BenchError, OSError) as e:
                notes[name] = "did not start (see log)"
                log("%s did not start: %s" % (name, e))
        for rnd in range(a.rounds):
            for proto in protos:
                order = servers if rnd % 2 == 0 else servers[::-1]
                for name in order:
                    if name not in live:
                        continue
                    if time.monotonic() - started + per_run + 15 > a.max_total:
                        raise BenchError("out of time budget (--max-total %g s)" % a.max_total)
                    proc, log_path = live[name]
                    cpu0 = cpu_seconds(proc.pid)
                    r = run_load(a, proto, name, hashes, load_cpu)
                    if proc.poll() is None:
                        # Warm-up included on both sides of the division.
                        cpu = cpu_seconds(proc.pid) - cpu0
                        r["server_cpu_pct"] = 100 * cpu / (a.duration + a.warmup)
                        n = r["successes_incl_warmup"]
                        r["server_cpu_us_per_announce"] = 1e6 * cpu / n if n else None
                    r["round"] = rnd
                    results.setdefault((proto, name), []).append(r)
                    log("round %d %s %s: %.0f announces/s, %d errors, %d timeouts, "
                        "CPU %% server %.0f load %.0f%s" % (
                            rnd + 1, proto, name, r["announces_per_s"], r["errors"],
                            r["timeouts"], r.get("server_cpu_pct", -1), r["load_cpu_pct"],
                            ", first error: %s" % r["first_error"] if r["first_error"] else ""))
                    if proc.poll() is not None:
                        notes[name] = "exited during the run (code %s)" % proc.returncode
                        log("%s exited:\n%s" % (name, tail(log_path)))
                        del live[name]
    except BenchError as e:
        notes.setdefault("error", str(e))
        log("stopped early: %s" % e)
    except KeyboardInterrupt:
        notes.setdefault("error", "interrupted")
        log("interrupted")
    finally:
        procs.kill_all()
    print(table(a, results, protos, servers, notes))
    if a.json:
        with open(a.json, "w") as f:
            json.dump([dict(r, server=n) for (_, n), runs in results.items() for r in runs], f, indent=1)
    if notes:
        log("kept logs in %s" % tmp)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    log("done in %.0f s" % (time.monotonic() - started))
    return 1 if not results or notes.get("error") == "interrupted" else 0


if __name__ == "__main__":
    sys.exit(main())
