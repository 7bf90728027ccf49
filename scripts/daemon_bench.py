#!/usr/bin/env python3
"""Daemon benchmark: the Transmission RPC and the web page with 1,000
torrents, `xorrent daemon` beside transmission-daemon 3.00, on loopback.

Run it (as root) inside a private network namespace with only loopback
(the browser runs there too):

    scripts/netns-run python3 scripts/daemon_bench.py [--requests 20] [--loads 5] [--json out.json]

It refuses to run unless /proc/net/dev lists only `lo`. It needs
transmission-daemon, and for the page selenium, /usr/bin/chromium and
/usr/bin/chromedriver (--pages none skips the page); when `python3` has no
selenium the script re-executes itself with /usr/bin/python3 (Debian's).

One run of this script:
  * makes --torrents (1000) random files of --size-kib (1024) KiB and a
    single-file .torrent for each (the corpus of scale_bench.py);
  * starts both daemons at once on a fresh state directory, both with the
    same download dir holding all the data:
      xorrent       `xorrent daemon --download-dir DATA --state-dir S
                    --rpc-bind 127.0.0.1:--x-rpc-port --bind 127.0.0.1 --port 0
                    --no-dht`;
      transmission  `transmission-daemon -f -g CONFIG`, settings.json as in
                    scale_bench.py (no DHT/LPD/PEX/uTP/port mapping, RPC on
                    127.0.0.1:--tr-rpc-port, whitelist off, no watch dir);
    then adds every torrent to each in turn with RPC `torrent-add`
    {metainfo: base64, download-dir: DATA} and waits until all N report
    status 6 (seeding) -- "load s" in the JSON; every piece is verified;
  * after --settle s, idle CPU of each daemon over --idle-secs s (% of a
    core; it is part of the CPU per request below, so compare the two);
  * RPC: for each request kind, for each daemon (order alternates between
    kinds), one keep-alive HTTP connection (http.client, Accept-Encoding
    identity, so neither daemon compresses): the 409 session-id handshake,
    one untimed warm-up request whose answer is checked (result "success",
    N torrents, which requested fields are missing), then --requests (R)
    timed requests:
      latency ms    median and p95 (nearest rank) of the time from sending
                    the request to having read the last body byte;
      bytes         the response body size;
      CPU ms/req    the daemon's utime+stime delta (/proc/PID/stat, 10 ms
                    ticks) over the R requests, / R;
      foreign cores CPU used meanwhile by every process but this script and
                    the two daemons, / wall time (other jobs on the machine).
    Kinds: "all fields" = the 70 torrent-get keys of rpc-version 16
    (rpc-spec 3.00, section 3.3, FULL_FIELDS below); "list" = the 19 fields
    the xorrent page polls every 2 s (LIST_FIELDS). No "ids": all torrents.
    Peak RssAnon of each daemon during the requests is kept too;
  * page (headless Chromium via selenium, --headless=new, a fresh profile
    and browser per load, --loads (5) loads per page, pages interleaved):
      first render ms  from navigation start (performance.timeOrigin) until
                    N rows are in the DOM: a MutationObserver installed
                    before any page script (CDP
                    Page.addScriptToEvaluateOnNewDocument) notes
                    performance.now() when the count of the row selector
                    reaches N; "+frame" is two requestAnimationFrames later
                    (the frame that shows them has been produced);
      bytes (RT)    sum of transferSize (headers + body as sent on the wire)
                    of the navigation and every Resource Timing entry whose
                    responseEnd <= first render: the page, its assets, the
                    RPC calls (409 handshake included) up to the render;
      bytes (CDP)   the same cut by Chrome's own network log: sum of
                    Network.loadingFinished encodedDataLength (performance
                    log) finished by navigation request time + first render;
      requests      responses counted in "bytes (RT)";
      daemon CPU ms that daemon's utime+stime from just before navigation to
                    the render.
    Pages: "x" = xorrent's page at / (rows `#list .torrent`); "tr" =
    transmission's own web UI at /transmission/web/ (rows
    `#torrent_list .torrent`) -- a different page (jQuery, more assets,
    gzip: Chromium sends Accept-Encoding and transmission compresses, xorrent
    does not), shown beside it only for scale;
  * prints medians, xorrent / transmission ratios, the fields each daemon
    left out and fields whose JSON types differ, and writes every number
    (each latency, each load) as JSON with --json FILE.

Caveats: both daemons run during the whole measurement (the other one is
idle, < 1 % of a core, while one is measured); the machine has 2 cores and
other jobs may run -- see "foreign cores". Latency is client-side and
includes JSON transfer over loopback, not the client's parse.
"""

import argparse
import base64
import json
import os
import platform
import shutil
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
import benchlib  # noqa: E402
from benchlib import (KiB, MiB, BenchError, Procs, Rpc, Sampler, descendants,  # noqa: E402
                      exit_on_signals, foreign_cpu_s, git_commit, log, make_corpus, make_workdir,
                      median, p95, proc_cpu_s, require_loopback, set_log_prefix, status_field,
                      tr_settings, version)

set_log_prefix("daemon")

SCRIPT = os.path.realpath(__file__)
REPO = os.path.dirname(os.path.dirname(SCRIPT))
CLIENTS = ["xorrent", "transmission"]
SYSTEM_PY = "/usr/bin/python3"

# rpc-spec 3.00 section 3.3, every torrent-get key (rpc-version 16).
FULL_FIELDS = """activityDate addedDate bandwidthPriority comment corruptEver creator dateCreated
desiredAvailable doneDate downloadDir downloadedEver downloadLimit downloadLimited editDate error
errorString eta etaIdle files fileStats hashString haveUnchecked haveValid honorsSessionLimits id
isFinished isPrivate isStalled labels leftUntilDone magnetLink manualAnnounceTime maxConnectedPeers
metadataPercentComplete name peer-limit peers peersConnected peersFrom peersGettingFromUs
peersSendingToUs percentDone pieces pieceCount pieceSize priorities queuePosition rateDownload
rateUpload recheckProgress secondsDownloading secondsSeeding seedIdleLimit seedIdleMode
seedRatioLimit seedRatioMode sizeWhenDone startDate status trackers trackerStats totalSize
torrentFile uploadedEver uploadLimit uploadLimited uploadRatio wanted webseeds
webseedsSendingToUs""".split()
# What src/web/app.js polls (LIST_FIELDS there).
LIST_FIELDS = """id name hashString status percentDone totalSize sizeWhenDone leftUntilDone
rateDownload rateUpload peersConnected eta uploadRatio error errorString magnetLink addedDate
metadataPercentComplete recheckProgress""".split()
KINDS = [("all fields", FULL_FIELDS), ("list", LIST_FIELDS)]

PAGES = {"x": ("xorrent", "/", "#list .torrent"),
         "tr": ("transmission", "/transmission/web/", "#torrent_list .torrent")}

# Runs before any page script: notes when N rows exist, then two frames on.
HOOK = """
(() => {
  performance.setResourceTimingBufferSize(10000);
  const N = %d, SEL = %s;
  const check = () => {
    if (window.__rowsAt != null) return true;
    if (document.querySelectorAll(SEL).length < N) return false;
    window.__rowsAt = performance.now();
    requestAnimationFrame(() => requestAnimationFrame(() => { window.__frameAt = performance.now(); }));
    return true;
  };
  const mo = new MutationObserver(() => { if (check()) mo.disconnect(); });
  mo.observe(document, {childList: true, subtree: true});
})();
"""
COLLECT = """
return {rowsAt: window.__rowsAt, frameAt: window.__frameAt,
  entries: [...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')]
    .map(e => ({url: e.name, kind: e.initiatorType || e.entryType, end: e.responseEnd,
                transfer: e.transferSize, encoded: e.encodedBodySize, decoded: e.decodedBodySize}))};
"""


class Bench(Procs):
    def __init__(self, args):
        super().__init__()
        self.a = args
        self.notes = []
        self.d = {}  # client -> {"p": Popen, "port": rpc port, ...}
        self.out = {"load": {}, "idle": {}, "rpc": {}, "web": {}, "fields": {}}

    def note(self, msg):
        log("note: " + msg)
        self.notes.append(msg)

    # -- setup
    def setup(self):
        a = self.a
        self.tmp, self.logs, self.xorrent, _ = make_workdir(
            "xorrent-daemon-", a.torrents * a.size_kib * KiB * 1.1 + 256 * MiB, a.workdir,
            a.xorrent)
        self.tr = shutil.which("transmission-daemon")
        if not self.tr:
            raise BenchError("transmission-daemon not found (apt-get install transmission-daemon)")
        self.data = os.path.join(self.tmp, "data")
        tors = os.path.join(self.tmp, "torrents")
        t = time.monotonic()
        self.hashes = make_corpus(self.data, tors, a.torrents, a.size_kib * KiB,
                                  a.piece_kib * KiB, None)
        self.metainfo = []
        for i in range(a.torrents):
            with open(os.path.join(tors, "t%04d.torrent" % i), "rb") as f:
                self.metainfo.append(base64.b64encode(f.read()).decode())
        log("made %d files of %d KiB and their torrents in %.1f s"
            % (a.torrents, a.size_kib, time.monotonic() - t))
        os.sync()

    def start(self, client):
        a = self.a
        home = os.path.join(self.tmp, "home-" + client)
        state = os.path.join(self.tmp, "state-" + client)
        os.makedirs(home)
        os.makedirs(state)
        if client == "xorrent":
            port = a.x_rpc_port
            argv = [self.xorrent, "daemon", "--download-dir", self.data, "--state-dir", state,
                    "--rpc-bind", "127.0.0.1:%d" % port, "--bind", "127.0.0.1", "--port", "0",
                    "--no-dht"]
        else:
            port = a.tr_rpc_port
            with open(os.path.join(state, "settings.json"), "w") as f:
                json.dump(tr_settings(self.data, None, port), f, indent=1)
            argv = [self.tr, "-f", "-g", state]
        log_path = os.path.join(self.logs, client + ".log")
        p = self.spawn(argv, log_path, self.env(home), a.nofile)
        self.d[client] = {"p": p, "port": port, "log": log_path}
        deadline = time.monotonic() + 30
        while Rpc(port).statuses() is None:
            if p.poll() is not None or time.monotonic() > deadline:
                raise BenchError("%s RPC did not come up; see %s" % (client, log_path))
            time.sleep(0.1)

    def load(self, client):
        """Adds every torrent over one connection, then waits for all to seed."""
        a, d = self.a, self.d[client]
        rpc = Rpc(d["port"], keepalive=True)
        t0 = time.monotonic()
        for i, m in enumerate(self.metainfo):
            r = rpc.call("torrent-add", {"metainfo": m, "download-dir": self.data}, timeout=60)
            if r.get("result") != "success" or "torrent-added" not in r.get("arguments", {}):
                raise BenchError("%s torrent-add #%d: %s" % (client, i, json.dumps(r)[:300]))
        added = time.monotonic() - t0
        rpc.close()
        poll = Rpc(d["port"])
        seen = 0
        while True:
            if d["p"].poll() is not None:
                raise BenchError("%s exited; see %s" % (client, d["log"]))
            if time.monotonic() - t0 > a.timeout:
                raise BenchError("%s: %d of %d seeding after %.0f s" % (client, seen, a.torrents,
                                                                       a.timeout))
            st = poll.statuses() or []
            seen = sum(1 for s in st if s == 6)
            if len(st) == a.torrents and seen == a.torrents:
                break
            time.sleep(0.2)
        m = {"add_s": added, "seeding_s": time.monotonic() - t0,
             "anon_mib": (status_field(d["p"].pid, "RssAnon:") or 0) / 1024.0}
        self.out["load"][client] = m
        log("%s: %d added in %.1f s, all seeding after %.1f s, anon RSS %.1f MiB"
            % (client, a.torrents, added, m["seeding_s"], m["anon_mib"]))

    def pids(self):
        return {os.getpid()} | {d["p"].pid for d in self.d.values()}

    def idle(self):
        time.sleep(self.a.settle)
        c0 = {c: proc_cpu_s(d["p"].pid) for c, d in self.d.items()}
        w0 = time.monotonic()
        time.sleep(self.a.idle_secs)
        w = time.monotonic() - w0
        for c, d in self.d.items():
            self.out["idle"][c] = 100.0 * (proc_cpu_s(d["p"].pid) - c0[c]) / w
        log("idle CPU %% of a core: %s" % ", ".join("%s %.2f" % kv for kv in self.out["idle"].items()))

    # -- RPC
    def rpc_kind(self, client, kind, fields):
        a, d = self.a, self.d[client]
        pid = d["p"].pid
        body = json.dumps({"method": "torrent-get", "arguments": {"fields": fields}})
        rpc = Rpc(d["port"], keepalive=True)
        for _ in range(3):  # the 409 handshake, then the checked warm-up
            _, status, data = rpc.post(body, timeout=120)
            if status != 409:
                break
        if status != 200:
            raise BenchError("%s torrent-get: HTTP %d" % (client, status))
        r = json.loads(data)
        ts = r.get("arguments", {}).get("torrents", [])
        if r.get("result") != "success" or len(ts) != a.torrents:
            raise BenchError("%s torrent-get (%s): result %r, %d torrents"
                             % (client, kind, r.get("result"), len(ts)))
        missing = sorted({f for t in ts for f in fields if f not in t}, key=fields.index)
        extra = sorted({k for t in ts for k in t if k not in fields})
        if kind == "all fields":
            self.out["fields"][client] = {"missing": missing, "extra": extra}
            d["full"] = {t.get("hashString"): t for t in ts}
        sampler = Sampler(pid, 0.02)
        sampler.start()
        ours = self.pids()
        f0, c0, w0 = foreign_cpu_s(ours), proc_cpu_s(pid), time.monotonic()
        lat, sizes = [], set()
        try:
            for _ in range(a.requests):
                took, status, data = rpc.post(body, timeout=120)
                if status != 200:
                    raise BenchError("%s torrent-get: HTTP %d" % (client, status))
                lat.append(took * 1000.0)
                sizes.add(len(data))
        finally:
            sampler.stop.set()
            sampler.join()
            rpc.close()
        w = time.monotonic() - w0
        m = {"latency_ms": lat, "median_ms": median(lat), "p95_ms": p95(lat),
             "bytes": max(sizes), "bytes_varied": len(sizes) > 1,
             "cpu_ms_per_req": 1000.0 * (proc_cpu_s(pid) - c0) / a.requests,
             "foreign_cores": (foreign_cpu_s(ours) - f0) / w,
             "peak_anon_mib": sampler.peak_kib / 1024.0,
             "missing": missing, "extra": extra}
        self.out["rpc"].setdefault(kind, {})[client] = m
        log("%s %s: median %.1f ms, p95 %.1f ms, %d bytes, %.1f CPU ms/req, foreign %.2f cores%s"
            % (client, kind, m["median_ms"], m["p95_ms"], m["bytes"], m["cpu_ms_per_req"],
               m["foreign_cores"], "; missing: " + " ".join(missing) if missing else ""))

    def type_diffs(self):
        """Fields both daemons answer with different JSON types (same torrent)."""
        x, t = self.d["xorrent"].get("full"), self.d["transmission"].get("full")
        if not x or not t:
            return {}

        def kind(v):  # 1 and 1.0 are the same JSON number (transmission prints 1.0 as 1)
            return {bool: "bool", int: "number", float: "number", str: "string", list: "array",
                    dict: "object", type(None): "null"}[type(v)]
        out = {}
        for h, xt in x.items():
            tt = t.get(h)
            for f in FULL_FIELDS:
                if tt and f in xt and f in tt and kind(xt[f]) != kind(tt[f]):
                    out.setdefault(f, set()).add("%s vs %s" % (kind(xt[f]), kind(tt[f])))
        return {f: sorted(v) for f, v in out.items()}

    # -- page
    def web_load(self, page, i):
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
        client, path, sel = PAGES[page]
        d = self.d[client]
        url = "http://127.0.0.1:%d%s" % (d["port"], path)
        opts = Options()
        opts.binary_location = "/usr/bin/chromium"
        for o in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--window-size=1280,800", "--no-first-run", "--disable-extensions",
                  "--disable-sync", "--disable-background-networking",
                  "--disable-component-update", "--disable-default-apps",
                  "--user-data-dir=" + os.path.join(self.tmp, "profile-%s-%d" % (page, i))):
            opts.add_argument(o)
        opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
        drv = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        try:
            drv.execute_cdp_cmd("Network.enable", {})
            drv.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument",
                                {"source": HOOK % (self.a.torrents, json.dumps(sel))})
            drv.get_log("performance")  # drop about:blank's events
            ours = self.pids() | descendants(os.getpid())
            f0, c0, w0 = foreign_cpu_s(ours), proc_cpu_s(d["p"].pid), time.monotonic()
            drv.get(url)
            r = None
            while time.monotonic() - w0 < self.a.page_timeout:
                r = drv.execute_script(COLLECT)
                if r["rowsAt"] is not None and r["frameAt"] is not None:
                    break
                time.sleep(0.05)
            # The daemon's CPU until the render: page, assets and first polls.
            cpu = proc_cpu_s(d["p"].pid) - c0
            ours |= descendants(os.getpid())
            foreign = (foreign_cpu_s(ours) - f0) / (time.monotonic() - w0)
            perf = drv.get_log("performance")
            rows = drv.execute_script("return document.querySelectorAll(%s).length" % json.dumps(sel))
        finally:
            drv.quit()
        if r is None or r["rowsAt"] is None:
            raise BenchError("%s page: %s rows of %d after %.0f s"
                             % (client, rows, self.a.torrents, self.a.page_timeout))
        cut = r["rowsAt"]
        used = [e for e in r["entries"] if e["end"] <= cut]
        zero = [e["url"] for e in used if not e["transfer"]]
        # CDP: requestWillBeSent of the document marks navigation start in its clock.
        nav_ts, done = None, []
        for e in perf:
            msg = json.loads(e["message"])["message"]
            p = msg.get("params", {})
            if msg["method"] == "Network.requestWillBeSent" and nav_ts is None \
                    and p.get("type") == "Document":
                nav_ts = p["timestamp"]
            elif msg["method"] == "Network.loadingFinished":
                done.append((p["timestamp"], p["encodedDataLength"]))
        cdp = None
        if nav_ts is not None:
            cdp = sum(n for ts, n in done if ts <= nav_ts + cut / 1000.0)
        m = {"render_ms": cut, "frame_ms": r["frameAt"], "rows": rows,
             "bytes_rt": sum(e["transfer"] for e in used),
             "body_bytes_rt": sum(e["encoded"] for e in used),
             "decoded_bytes_rt": sum(e["decoded"] for e in used),
             "requests": len(used), "zero_transfer": zero, "bytes_cdp": cdp,
             "daemon_cpu_ms": 1000.0 * cpu, "foreign_cores": foreign,
             "resources": [e for e in r["entries"]]}
        log("page %s #%d: %d rows at %.0f ms (+frame %.0f), %d bytes RT / %s CDP in %d requests, "
            "daemon CPU %.0f ms" % (page, i, rows, cut, r["frameAt"], m["bytes_rt"], cdp,
                                   len(used), m["daemon_cpu_ms"]))
        if zero:
            self.note("%s page load %d: transferSize 0 for %s" % (page, i, ", ".join(zero)))
        return m

    # -- report
    def report(self):
        o, cl = self.out, CLIENTS

        def fmt(v, dp):
            return "-" if v is None else "%.*f" % (dp, v)
        rows = []
        for kind, fields in KINDS:
            r = o["rpc"].get(kind, {})
            lab = "torrent-get %s (%d), %d torrents" % (kind, len(fields), self.a.torrents)
            for label, key, dp in (("latency median ms", "median_ms", 1),
                                   ("latency p95 ms", "p95_ms", 1),
                                   ("response bytes", "bytes", 0),
                                   ("daemon CPU ms / request", "cpu_ms_per_req", 1),
                                   ("foreign cores meanwhile", "foreign_cores", 2)):
                rows.append(("%s: %s" % (lab, label), [r.get(c, {}).get(key) for c in cl], dp))
        rows.append(("daemon peak anon RSS MiB during the requests",
                     [max([r.get(c, {}).get("peak_anon_mib") or 0 for r in o["rpc"].values()])
                      for c in cl], 1))
        rows.append(("daemon idle CPU % of a core (both running)", [o["idle"].get(c) for c in cl], 2))
        rows.append(("load: s from first torrent-add to all seeding",
                     [o["load"].get(c, {}).get("seeding_s") for c in cl], 1))
        summ = {"rows": {}}
        for label, vals, dp in rows:
            summ["rows"][label] = dict(zip(cl, vals))
        web = {}
        for page, loads in o["web"].items():
            web[page] = {k: median([m[k] for m in loads])
                         for k in ("render_ms", "frame_ms", "bytes_rt", "bytes_cdp",
                                   "body_bytes_rt", "requests", "daemon_cpu_ms", "foreign_cores")}
        summ["web"] = web
        print()
        print("| RPC, median of %d requests | xorrent | transmission 3.00 | xorrent ÷ transmission |"
              % self.a.requests)
        print("|---|---|---|---|")
        for label, vals, dp in rows:
            ratio = "%.2f" % (vals[0] / vals[1]) if None not in vals and vals[1] else ""
            print("| %s | %s | %s | %s |" % (label, fmt(vals[0], dp), fmt(vals[1], dp), ratio))
        if web:
            print()
            print("| page, %d torrents, median of %d loads | xorrent page (/) | transmission web UI "
                  "(different page) | ratio |" % (self.a.torrents, self.a.loads))
            print("|---|---|---|---|")
            for label, key, dp in (("first render: ms to all rows in the DOM", "render_ms", 0),
                                   ("  ... and two frames later, ms", "frame_ms", 0),
                                   ("bytes transferred to first render (Resource Timing)",
                                    "bytes_rt", 0),
                                   ("bytes transferred to first render (CDP Network)",
                                    "bytes_cdp", 0),
                                   ("  body bytes as sent (encodedBodySize)", "body_bytes_rt", 0),
                                   ("HTTP responses to first render", "requests", 0),
                                   ("daemon CPU ms to first render", "daemon_cpu_ms", 0),
                                   ("foreign cores meanwhile", "foreign_cores", 2)):
                vals = [web.get(p, {}).get(key) for p in ("x", "tr")]
                ratio = "%.2f" % (vals[0] / vals[1]) if None not in vals and vals[1] else ""
                print("| %s | %s | %s | %s |" % (label, fmt(vals[0], dp), fmt(vals[1], dp), ratio))
        print()
        for c in cl:
            f = o["fields"].get(c, {})
            print("%s left out of the %d fields: %s" % (c, len(FULL_FIELDS),
                                                        " ".join(f.get("missing", [])) or "none"))
            if f.get("extra"):
                print("%s also sent unrequested: %s" % (c, " ".join(f["extra"])))
        td = self.type_diffs()
        summ["type_diffs"] = td
        if td:
            print("JSON types that differ (xorrent vs transmission): " +
                  "; ".join("%s %s" % (f, ", ".join(v)) for f, v in td.items()))
        for n in self.notes:
            print("note: " + n)
        return summ

    def meta(self):
        a = self.a
        return {"torrents": a.torrents, "size_kib": a.size_kib, "piece_kib": a.piece_kib,
                "requests": a.requests, "loads": a.loads, "pages": a.pages,
                "full_fields": FULL_FIELDS, "list_fields": LIST_FIELDS,
                "cpus": os.cpu_count(), "kernel": platform.release(), "commit": git_commit(REPO),
                "xorrent": version([self.xorrent, "--version"]),
                "transmission": version([self.tr, "--version"]),
                "chromium": version(["/usr/bin/chromium", "--version"]) if a.pages else None}

    def main(self):
        a = self.a
        self.setup()
        for c in CLIENTS:
            self.start(c)
        for c in CLIENTS:  # one at a time: each verifies its pieces at full speed
            self.load(c)
        self.idle()
        for k, (kind, fields) in enumerate(KINDS):
            for c in (CLIENTS if k % 2 == 0 else CLIENTS[::-1]):
                self.rpc_kind(c, kind, fields)
        for i in range(1, a.loads + 1 if a.pages else 1):
            for page in a.pages:
                self.out["web"].setdefault(page, []).append(self.web_load(page, i))
        summ = self.report()
        for c in CLIENTS:
            d = self.d[c]
            stop_s, rc = self.stop(d["p"], signal.SIGINT if c == "xorrent" else signal.SIGTERM,
                                   a.stop_grace)
            self.out["load"][c].update(stop_s=stop_s, exit=rc)
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"meta": self.meta(), "summary": summ, "results": self.out,
                           "notes": self.notes}, f, indent=2)
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
    p.add_argument("--requests", "-R", type=int, default=20,
                   help="timed torrent-get requests per kind and daemon (default 20)")
    p.add_argument("--loads", type=int, default=5, help="page loads per page (default 5)")
    p.add_argument("--pages", default="x,tr",
                   help="pages to load: x (xorrent), tr (transmission web UI), none "
                        "(default %(default)s)")
    p.add_argument("--settle", type=float, default=5,
                   help="seconds between 'all seeding' and the idle window (default 5)")
    p.add_argument("--idle-secs", type=float, default=5, help="idle CPU window (default 5)")
    p.add_argument("--x-rpc-port", type=int, default=9092, help="xorrent RPC port (default 9092)")
    p.add_argument("--tr-rpc-port", type=int, default=9091,
                   help="transmission RPC port (default 9091)")
    p.add_argument("--nofile", type=int, default=8192,
                   help="RLIMIT_NOFILE for both daemons (default 8192)")
    p.add_argument("--timeout", type=float, default=600,
                   help="seconds allowed from the first add until all seed (default 600)")
    p.add_argument("--page-timeout", type=float, default=120,
                   help="seconds allowed for one page to show every row (default 120)")
    p.add_argument("--stop-grace", type=float, default=60,
                   help="seconds allowed from the stop signal to exit (default 60)")
    p.add_argument("--xorrent", default=os.path.join(REPO, "target", "release", "xorrent"))
    p.add_argument("--workdir", help="where the temp dir goes (default $TMPDIR)")
    p.add_argument("--json", help="write every number here")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (data, logs)")
    a = p.parse_args()
    a.pages = [] if a.pages == "none" else [x.strip() for x in a.pages.split(",")]
    for x in a.pages:
        if x not in PAGES:
            p.error("unknown page %r" % x)
    return a


def main():
    args = parse_args()
    require_loopback("daemon")
    if args.pages and sys.executable != SYSTEM_PY and os.path.exists(SYSTEM_PY):
        try:
            import selenium  # noqa: F401
        except ImportError:  # Debian's selenium lives in the system python only
            os.execv(SYSTEM_PY, [SYSTEM_PY, SCRIPT] + sys.argv[1:])
    exit_on_signals()
    return benchlib.run_bench(Bench(args), args.keep)


if __name__ == "__main__":
    sys.exit(main())
