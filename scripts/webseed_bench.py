#!/usr/bin/env python3
"""Web seed benchmark: xorrent downloading from a BEP-19 web seed, beside aria2 and libtorrent.

Run it (as root) inside a private network namespace with only loopback:

    flock /tmp/cargo.lock cargo build --release
    scripts/netns-run python3 scripts/webseed_bench.py [--runs 3] [--size 1G]

It refuses to run unless /proc/net/dev lists only `lo`. It needs Debian's
lighttpd (/usr/sbin/lighttpd), aria2 and python3-libtorrent.

One run of this script:
  * makes one random single-file payload (--size, default 1 GiB) in a `www`
    dir and its .torrent (1 MiB pieces, made here with hashlib) with no
    tracker and a `url-list` of one URL, http://127.0.0.2:8080/ (a single-
    file torrent's URL ending in `/` is a directory: the client appends the
    file name);
  * serves `www` with lighttpd on 127.0.0.2:8080 and seeds it with one
    libtorrent seeder (tests/interop/lt_peer.py, --no-tracker) on
    127.0.0.3:6881;
  * runs the downloaders one at a time, round-robin, --runs times each, each
    on its own address and into a fresh directory:
      xorrent-web        127.0.0.10  the web seed alone (no --peer)
      aria2-web          127.0.0.11  aria2c fetching the file's plain HTTP URL:
                                     aria2 as an HTTP downloader (its defaults:
                                     one connection per server)
      aria2-torrent-web  127.0.0.12  aria2c with the .torrent: the url-list as
                                     its only source
      libtorrent-web     127.0.0.13  lt_peer.py --mode leech, no --peer
      xorrent-both       127.0.0.14  web seed + --peer <seeder>
      xorrent-seeder     127.0.0.15  --peer <seeder> --no-web-seeds
  * measures per run: wall seconds from spawn to exit, CPU seconds (user +
    sys from wait4() rusage), the CPU lighttpd and the seeder used meanwhile,
    the bytes lighttpd served (from its access log), peak anonymous RSS
    (RssAnon, sampled every 20 ms); checks the SHA-1 of
    the download (a mismatch, non-zero exit or timeout aborts the run);
  * prints medians, each client / xorrent-web, and two lines the issue asks
    for: xorrent-web / aria2-web (target: at most 1.00 in wall time) and
    xorrent-both / xorrent-seeder; --json FILE keeps every number.

DHT, LSD, UPnP, NAT-PMP and PEX are off in every client. The page cache is
not dropped: lighttpd and the seeder read a cached payload. Servers and
downloader share the machine's cores, so wall time is CPU-bound. aria2 with
a .torrent spends about 2 s on its own timers (start-up, the seeding check
after the last piece) whatever the size: it matters only for small --size.
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
import time

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
import benchlib  # noqa: E402
from benchlib import (MiB, BenchError, Procs, add_client_args, bencode,  # noqa: E402
                      client_table, exit_on_signals, git_commit, has_word, log, make_payload,
                      make_workdir, medians_by_client, parse_client_args, proc_cpu_s,
                      require_loopback, run_measured, set_log_prefix, sha1_file, version)

REPO = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
WEB = ("127.0.0.2", 8080)
WEB_URL = "http://%s:%d/" % WEB
SEEDER = ("127.0.0.3", 6881)
PORT = 6881
PIECE = MiB
LIGHTTPD = "lighttpd"
# client: address
CLIENTS = {
    "xorrent-web": "127.0.0.10",
    "aria2-web": "127.0.0.11",
    "aria2-torrent-web": "127.0.0.12",
    "libtorrent-web": "127.0.0.13",
    "xorrent-both": "127.0.0.14",
    "xorrent-seeder": "127.0.0.15",
}
BASE = "xorrent-web"
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
            "xorrent-webseed-bench-", 2 * a.size + 256 * MiB, a.workdir, a.xorrent,
            {"lt_peer.py": a.lt_peer})
        self.lt_peer = copies["lt_peer.py"]

        self.name = "webseed-bench-%dM.bin" % (a.size // MiB)
        self.www = os.path.join(self.tmp, "www")
        os.makedirs(self.www)
        # lighttpd may drop root for www-data: it must be able to read www.
        os.chmod(self.www, 0o755)
        t = time.monotonic()
        path = os.path.join(self.www, self.name)
        self.sha1, pieces = make_payload(path, a.size, PIECE)
        os.chmod(path, 0o644)
        info = {"length": a.size, "name": self.name, "piece length": PIECE, "pieces": pieces}
        self.info_hash = hashlib.sha1(bencode(info)).hexdigest()
        self.torrent = os.path.join(self.tmp, "bench.torrent")
        # No announce key: the web seed (and, where named, the seeder) are the only sources.
        with open(self.torrent, "wb") as f:
            f.write(bencode({"info": info, "url-list": [WEB_URL]}))
        log("made %d MiB payload and torrent in %.1f s (info-hash %s)"
            % (a.size // MiB, time.monotonic() - t, self.info_hash))

    def start_servers(self):
        # The access log tells how many bytes each run took from the web seed.
        self.access_log = os.path.join(self.logs, "lighttpd-access.log")
        conf = os.path.join(self.tmp, "lighttpd.conf")
        with open(conf, "w") as f:
            f.write('server.document-root = "%s"\n'
                    'server.bind = "%s"\n'
                    'server.port = %d\n'
                    'server.errorlog = "%s"\n'
                    'mimetype.assign = ( "" => "application/octet-stream" )\n'
                    'server.modules += ( "mod_accesslog" )\n'
                    'accesslog.filename = "%s"\n'
                    % (self.www, WEB[0], WEB[1], os.path.join(self.logs, "lighttpd-error.log"),
                       self.access_log))
        path = os.path.join(self.logs, "lighttpd.log")
        home = os.path.join(self.tmp, "home-lighttpd")
        os.makedirs(home)
        self.web = self.procs.spawn([self.lighttpd, "-D", "-f", conf], path,
                                    self.procs.env(home), NOFILE)
        deadline = time.monotonic() + 10
        while True:
            try:
                c = http.client.HTTPConnection(*WEB, timeout=1)
                c.request("HEAD", "/" + self.name)
                r = c.getresponse()
                r.read()
                c.close()
                if r.status != 200 or r.getheader("Content-Length") != str(self.a.size):
                    raise BenchError("lighttpd answered HEAD /%s with %d, Content-Length %s "
                                     "(see %s)" % (self.name, r.status,
                                                   r.getheader("Content-Length"), path))
                break
            except OSError:
                if self.web.poll() is not None or time.monotonic() > deadline:
                    raise BenchError("lighttpd did not start (see %s and lighttpd-error.log)"
                                     % path)
                time.sleep(0.05)
        log("lighttpd serving %s%s" % (WEB_URL, self.name))

        home = os.path.join(self.tmp, "home-seed")
        os.makedirs(home)
        argv = [self.a.lt_python, self.lt_peer, "--listen", "%s:%d" % SEEDER,
                "--torrent", self.torrent, "--save", self.www, "--mode", "seed", "--no-tracker"]
        self.seed_log = os.path.join(self.logs, "seed.log")
        self.seeder = self.procs.spawn(argv, self.seed_log, self.procs.env(home), NOFILE)
        deadline = time.monotonic() + 60 + self.a.size / (50 * MiB)
        while not has_word(self.seed_log, b"READY"):
            if self.seeder.poll() is not None or time.monotonic() > deadline:
                raise BenchError("the seeder did not get ready (see %s)" % self.seed_log)
            time.sleep(0.1)
        log("seeder ready on %s:%d" % SEEDER)

    # -- clients
    def argv(self, client, out):
        ip = CLIENTS[client]
        seed = "%s:%d" % SEEDER
        if client.startswith("xorrent"):
            argv = [self.xorrent, "download", self.torrent, "-o", out, "--bind", ip,
                    "--port", str(PORT), "-q", "--no-dht"]
            if client != "xorrent-web":
                argv += ["--peer", seed]
            if client == "xorrent-seeder":
                argv.append("--no-web-seeds")
            return argv
        if client == "libtorrent-web":
            return [self.a.lt_python, self.lt_peer, "--listen", "%s:%d" % (ip, PORT),
                    "--torrent", self.torrent, "--save", out, "--mode", "leech",
                    "--no-tracker", "--timeout", str(self.a.timeout)]
        argv = ["aria2c", "--no-conf", "--dir=" + out, "--interface=" + ip,
                "--file-allocation=none", "--summary-interval=0", "--console-log-level=warn",
                "--enable-color=false", "--check-certificate=false"]
        if client == "aria2-web":
            return argv + [WEB_URL + self.name]
        return argv + ["--listen-port=%d" % PORT, "--enable-dht=false", "--enable-dht6=false",
                       "--bt-enable-lpd=false", "--enable-peer-exchange=false",
                       "--disable-ipv6=true", "--seed-time=0", self.torrent]

    def web_bytes(self):
        """Body bytes lighttpd has logged sending (%b, the 10th field of its
        default access log format) since the log began."""
        n = 0
        try:
            with open(self.access_log, "rb") as f:
                for ln in f:
                    b = ln.split()[9:10]
                    n += int(b[0]) if b and b[0].isdigit() else 0
        except OSError:
            pass
        return n

    def serve_cpu(self):
        """CPU seconds lighttpd and the seeder have used so far."""
        xs = [proc_cpu_s(self.web.pid), proc_cpu_s(self.seeder.pid)]
        return None if None in xs else sum(xs)

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
        serve0, web0 = self.serve_cpu(), self.web_bytes()
        r = run_measured(self.procs, argv, log_path, self.procs.env(home), NOFILE,
                         self.a.timeout)
        serve1 = self.serve_cpu()
        # lighttpd writes its access log out every few seconds, and on SIGHUP
        # (when it reopens its logs).
        os.kill(self.web.pid, signal.SIGHUP)
        time.sleep(0.3)
        web = self.web_bytes() - web0
        m = {"client": client, "run": run_no, "wall_s": r.wall_s, "cpu_s": r.cpu_s,
             "user_s": r.user_s, "sys_s": r.sys_s,
             "serve_cpu_s": (serve1 - serve0) if None not in (serve0, serve1) else None,
             "peak_rss_anon_mib": r.peak_rss_anon_mib, "web_mib": web / MiB, "exit": r.exit}
        problem = None
        got = os.path.join(out, self.name)
        if r.timed_out:
            problem = "timed out after %.0f s" % self.a.timeout
        elif r.exit != 0:
            problem = "exited with %d" % r.exit
        elif client == "libtorrent-web" and not has_word(log_path, b"DONE"):
            problem = "exited 0 without printing DONE"
        elif not os.path.isfile(got) or os.path.getsize(got) != self.a.size:
            problem = "output %s missing or of the wrong size" % got
        elif sha1_file(got) != self.sha1:
            problem = "SHA-1 mismatch"
        self.results.append(dict(m, error=problem))
        if problem:
            # The temp dir goes unless --keep: quote the log's end here.
            with open(log_path, "rb") as f:
                tail = f.read().decode("utf-8", "replace").strip().splitlines()[-8:]
            raise BenchError("%s run %d: %s (log %s, lighttpd's beside it%s); it ends:\n  %s"
                             % (client, run_no, problem, log_path,
                                "" if self.a.keep else ", kept only with --keep",
                                "\n  ".join(tail) or "(empty)"))
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
        log("%-17s run %d: wall %6.2f s  cpu %5.2f s  serve cpu %5.2f s  anon RSS %6.1f MiB  "
            "from web seed %6.1f MiB" % (client, run_no, r.wall_s, r.cpu_s, m["serve_cpu_s"] or 0,
                                         m["peak_rss_anon_mib"], m["web_mib"]))

    # -- report
    def summarize(self):
        return medians_by_client(self.results, self.a.clients,
                                 ("wall_s", "cpu_s", "serve_cpu_s", "peak_rss_anon_mib",
                                  "web_mib"))

    def report(self, summ):
        lines = ["%d MiB single file, 1 MiB pieces, lighttpd web seed (url-list) and one "
                 "libtorrent seeder; median of %d run(s)" % (self.a.size // MiB, self.a.runs)]
        lines += client_table(summ, self.a.clients, BASE, 18,
                              [("wall s", "wall_s", 7, 2), ("CPU s", "cpu_s", 7, 2),
                               ("serve s", "serve_cpu_s", 8, 2),
                               ("anon MiB", "peak_rss_anon_mib", 9, 1),
                               ("web MiB", "web_mib", 8, 1)])
        x = summ.get(BASE)
        lines.append("(wall/x, CPU/x: each client / %s; serve s: CPU lighttpd + seeder used "
                     "meanwhile; web MiB: body bytes lighttpd logged sending)" % BASE)
        aria = summ.get("aria2-web")
        if x and aria:
            lines.append("xorrent from the web seed vs aria2 as an HTTP downloader: wall %.2fx, "
                         "CPU %.2fx (xorrent-web / aria2-web; target: wall <= 1.00)"
                         % (x["wall_s"] / aria["wall_s"], x["cpu_s"] / aria["cpu_s"]))
        both, alone = summ.get("xorrent-both"), summ.get("xorrent-seeder")
        if both and alone:
            lines.append("web seed + seeder vs seeder alone (xorrent): wall %.2fx, CPU %.2fx "
                         "(xorrent-both / xorrent-seeder)"
                         % (both["wall_s"] / alone["wall_s"], both["cpu_s"] / alone["cpu_s"]))
        print("\n".join(lines))
        sys.stdout.flush()

    def main(self):
        a = self.a
        # Debian puts lighttpd in /usr/sbin, which a non-login PATH may lack.
        self.lighttpd = shutil.which(LIGHTTPD) or shutil.which(LIGHTTPD, path="/usr/sbin:/sbin")
        if not self.lighttpd:
            raise BenchError("lighttpd not found on PATH or in /usr/sbin "
                             "(apt-get install lighttpd)")
        tools = [a.lt_python] + (["aria2c"] if any(c.startswith("aria2") for c in a.clients)
                                 else [])
        for tool in tools:
            if not shutil.which(tool):
                raise BenchError("%s not found" % tool)
        self.setup()
        self.start_servers()
        total = a.runs * len(a.clients)
        k = 0
        for r in range(1, a.runs + 1):
            for c in a.clients:
                k += 1
                log("[%d/%d] %s run %d" % (k, total, c, r))
                self.run_one(c, r)
        for what, p in (("lighttpd", self.web), ("the seeder", self.seeder)):
            if p.poll() is not None:
                raise BenchError("%s died (exit %s)" % (what, p.returncode))
        summ = self.summarize()
        self.report(summ)
        if a.json:
            meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "kernel": platform.release(),
                    "cpus": os.cpu_count(), "size_bytes": a.size, "runs": a.runs,
                    "git_head": git_commit(REPO), "info_hash": self.info_hash,
                    "xorrent_version": version([self.xorrent, "--version"]),
                    "libtorrent_version": version([a.lt_python, "-c", "import libtorrent; "
                                                   "print(libtorrent.__version__)"]),
                    "aria2_version": version(["aria2c", "--version"]),
                    "lighttpd_version": version([self.lighttpd, "-v"])}
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
    set_log_prefix("webseed-bench")
    require_loopback("webseed-bench")
    exit_on_signals()
    return benchlib.run_bench(Bench(args), args.keep)


if __name__ == "__main__":
    sys.exit(main())
