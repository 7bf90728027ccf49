#!/usr/bin/env python3
"""Checks a Transmission-RPC server (rpc-version 16 semantics, as
transmission-daemon 3.00 speaks it) through the `transmission-rpc` Python
library (PyPI `transmission-rpc`, developed against 7.0.12), the way tools
such as Sonarr/Radarr-style scripts and Flexget use it.

  trpc_check.py --host 127.0.0.1 --port P [--user U --password W]
                --torrent FILE --torrent-hash HEX
                --magnet LINK --magnet-hash HEX [--timeout 120]
                [--skip-extras]

The server should hold no torrents when the check starts. The caller makes
sure a peer seeds FILE's data to the server (or the data is already in the
server's download directory), so that it reaches percentDone 1.0 within
--timeout seconds. The magnet's torrent need not be available anywhere.

Steps, each printing `STEP <name> ok`:
  connect         Client(...) (does session-get, handles 409 + auth)
  session         rpc-version >= 15, version starts with a number >= 2.40
  session-stats   session_stats() types          (not with --skip-extras)
  free-space      free_space(download-dir) > 0   (not with --skip-extras)
  add-torrent     add_torrent(bytes of FILE) -> id, name, hash
  add-magnet      add_torrent(LINK) -> id, hash
  add-duplicate   add_torrent(bytes) again -> same id (torrent-duplicate)
  list            get_torrents(): both present, field types sane;
                  get_torrent(hash) works
  wait-complete   percentDone reaches 1.0
  fields          every checked field of the complete torrent (see FIELDS)
  stop            stop_torrent -> status stopped
  start           start_torrent -> status downloading/seeding (or queued)
  remove          remove magnet (keep data), remove FILE's torrent with
                  delete_data=True -> list empty (and the data gone, when
                  the server's download dir is visible here)

Exit status: 0 all steps passed; 1 a step failed (`FAIL <what> ...` on
stdout); 3 transmission-rpc cannot be imported (`SKIP ...`); 2 bad usage.
"""

import argparse
import hashlib
import os
import re
import sys
import time
import warnings

try:
    import transmission_rpc
    from transmission_rpc import Client
except Exception as _e:  # ImportError, or a dependency (requests, typing_extensions>=4.5) missing/too old
    print("SKIP transmission-rpc not installed")
    sys.stderr.write("trpc_check: cannot import transmission_rpc: %s: %s\n" % (type(_e).__name__, _e))
    sys.exit(3)

warnings.simplefilter("ignore", DeprecationWarning)

# status codes (rpc-spec: tr_torrent_activity)
STOPPED, CHECK_WAIT, CHECK, DOWNLOAD_WAIT, DOWNLOAD, SEED_WAIT, SEED = range(7)


class Fail(Exception):
    pass


def step(name):
    print("STEP %s ok" % name, flush=True)


# ---------------------------------------------------------------- bencode

def bdecode(data, i=0, spans=None):
    """Decode bencode at data[i:]; returns (value, end). Records the byte
    span of the top-level "info" value in spans["info"]."""
    c = data[i:i + 1]
    if c == b"i":
        j = data.index(b"e", i)
        return int(data[i + 1:j]), j + 1
    if c == b"l":
        i += 1
        out = []
        while data[i:i + 1] != b"e":
            v, i = bdecode(data, i, None)
            out.append(v)
        return out, i + 1
    if c == b"d":
        i += 1
        out = {}
        while data[i:i + 1] != b"e":
            k, i = bdecode(data, i, None)
            start = i
            v, i = bdecode(data, i, None)
            out[k] = v
            if spans is not None and k == b"info":
                spans["info"] = (start, i)
        return out, i + 1
    if c.isdigit():
        j = data.index(b":", i)
        n = int(data[i:j])
        return data[j + 1:j + 1 + n], j + 1 + n
    raise ValueError("bad bencode at %d" % i)


def torrent_facts(raw):
    spans = {}
    meta, _ = bdecode(raw, 0, spans)
    info = meta[b"info"]
    s, e = spans["info"]
    name = info[b"name"].decode("utf-8")
    if b"files" in info:
        files = [(name + "/" + "/".join(p.decode("utf-8") for p in f[b"path"]), f[b"length"])
                 for f in info[b"files"]]
    else:
        files = [(name, info[b"length"])]
    trackers = []
    if b"announce-list" in meta:
        for tier in meta[b"announce-list"]:
            trackers.extend(u.decode() for u in tier)
    elif b"announce" in meta:
        trackers.append(meta[b"announce"].decode())
    return {
        "hash": hashlib.sha1(raw[s:e]).hexdigest(),
        "name": name,
        "files": files,
        "total": sum(n for _, n in files),
        "piece_size": info[b"piece length"],
        "piece_count": len(info[b"pieces"]) // 20,
        "private": info.get(b"private", 0) == 1,
        "trackers": trackers,
    }


# ---------------------------------------------------------------- type checks

def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v):
    # Transmission writes a whole double as an integer ("percentDone":1), so
    # fields of type double may arrive as int or float
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_boolish(v):
    return isinstance(v, bool) or (is_int(v) and v in (0, 1))


def need(cond, what, **vals):
    if not cond:
        detail = " ".join("%s=%r" % kv for kv in vals.items())
        raise Fail("%s %s" % (what, detail))


def need_int(obj, key, where, lo=None, hi=None):
    v = obj.get(key, "<missing>") if isinstance(obj, dict) else obj
    need(is_int(v), "%s.%s is not an int" % (where, key), value=v, type=type(v).__name__)
    if lo is not None:
        need(v >= lo, "%s.%s below %r" % (where, key, lo), value=v)
    if hi is not None:
        need(v <= hi, "%s.%s above %r" % (where, key, hi), value=v)
    return v


def need_type(obj, key, where, pred, desc):
    v = obj.get(key, "<missing>")
    need(pred(v), "%s.%s is not %s" % (where, key, desc), value=v, type=type(v).__name__)
    return v


def check_torrent_types(t, where):
    """Types of the fields any torrent (also a magnet without metadata) must
    have right; t is a Torrent from a full get_torrents()."""
    f = t.fields
    for k in ("id", "status", "sizeWhenDone", "leftUntilDone", "totalSize", "rateDownload",
              "rateUpload", "eta", "peersConnected", "peersSendingToUs", "peersGettingFromUs",
              "uploadedEver", "downloadedEver", "error", "addedDate", "doneDate", "pieceCount",
              "pieceSize", "queuePosition", "seedRatioMode"):
        need_int(f, k, where)
    for k in ("name", "hashString", "errorString", "downloadDir", "magnetLink"):
        need_type(f, k, where, lambda v: isinstance(v, str), "a string")
    for k in ("percentDone", "uploadRatio", "seedRatioLimit"):
        need_type(f, k, where, is_num, "a number")
    for k in ("isFinished", "isPrivate"):
        need_type(f, k, where, lambda v: isinstance(v, bool), "a JSON boolean")
    for k in ("files", "fileStats", "wanted", "priorities", "peers", "trackers", "trackerStats", "labels"):
        need_type(f, k, where, lambda v: isinstance(v, list), "a list")
    need(0.0 <= float(f["percentDone"]) <= 1.0, where + ".percentDone outside [0,1]", value=f["percentDone"])
    need(STOPPED <= f["status"] <= SEED, where + ".status not in 0..6", value=f["status"])
    need(len(f["files"]) == len(f["fileStats"]) == len(f["wanted"]) == len(f["priorities"]),
         where + " files/fileStats/wanted/priorities lengths differ",
         files=len(f["files"]), fileStats=len(f["fileStats"]), wanted=len(f["wanted"]),
         priorities=len(f["priorities"]))
    # the library's own accessors must not raise
    try:
        t.status, t.eta, t.added_date, t.done_date, t.get_files(), t.file_stats
        t.trackers, t.tracker_stats, t.seed_ratio_mode, t.seed_ratio_limit, t.upload_ratio
        t.percent_done, t.progress
    except Exception as e:
        raise Fail("%s library accessor raised %r" % (where, e))


def check_fields(t, facts, args, torrent_id):
    """The complete torrent, field by field, read through the Torrent object."""
    w = "torrent"
    f = t.fields
    check_torrent_types(t, w)
    now = time.time()

    need(t.id == torrent_id, "id differs from torrent-add's", id=t.id, expected=torrent_id)
    need(t.name == facts["name"], "name differs from the .torrent's", name=t.name, expected=facts["name"])
    need(t.hash_string == args.torrent_hash.lower(), "hashString is not the lowercase info-hash",
         hashString=t.hash_string, expected=args.torrent_hash.lower())
    need(f["status"] in (SEED_WAIT, SEED), "status of a complete, running torrent is not seed-wait/seeding",
         status=f["status"], status_str=str(t.status))
    need(t.percent_done == 1.0, "percentDone is not 1", percentDone=f["percentDone"])
    need(t.total_size == facts["total"], "totalSize differs from the .torrent", totalSize=t.total_size,
         expected=facts["total"])
    need(t.size_when_done == facts["total"], "sizeWhenDone != total size with all files wanted",
         sizeWhenDone=t.size_when_done, expected=facts["total"])
    need(t.left_until_done == 0, "leftUntilDone of a complete torrent is not 0", leftUntilDone=t.left_until_done)
    need(t.rate_download >= 0 and t.rate_upload >= 0, "negative rate",
         rateDownload=t.rate_download, rateUpload=t.rate_upload)
    need(f["eta"] >= -2, "eta below -2", eta=f["eta"])
    need(t.peers_connected >= 0 and 0 <= t.peers_sending_to_us <= t.peers_connected
         and 0 <= t.peers_getting_from_us <= t.peers_connected, "peer counts inconsistent",
         peersConnected=t.peers_connected, peersSendingToUs=t.peers_sending_to_us,
         peersGettingFromUs=t.peers_getting_from_us)
    need(t.uploaded_ever >= 0 and t.downloaded_ever >= 0, "negative uploadedEver/downloadedEver",
         uploadedEver=t.uploaded_ever, downloadedEver=t.downloaded_ever)
    ratio = t.upload_ratio
    need(ratio >= 0 or ratio in (-1.0, -2.0), "uploadRatio neither >= 0 nor -1 (n/a) / -2 (inf)", uploadRatio=ratio)
    need(0 <= t.error <= 3, "error not in 0..3", error=t.error)
    need(t.error != 3, "torrent has a local error", error=t.error, errorString=t.error_string)
    need(t.error == 0 or t.error_string != "", "error set but errorString empty", error=t.error)
    need(t.download_dir.startswith("/"), "downloadDir is not an absolute path", downloadDir=t.download_dir)
    added = f["addedDate"]
    need(now - 7 * 86400 < added <= now + 60, "addedDate not a recent unix time", addedDate=added, now=int(now))
    done = f["doneDate"]
    need(done == 0 or added - 60 <= done <= now + 60, "doneDate neither 0 nor between addedDate and now",
         doneDate=done, addedDate=added)
    need(t.is_private == facts["private"], "isPrivate differs from the .torrent", isPrivate=t.is_private,
         expected=facts["private"])
    ml = t.magnet_link
    need(ml.startswith("magnet:?xt=urn:btih:") and args.torrent_hash.lower() in ml.lower(),
         "magnetLink is not a magnet for the info-hash", magnetLink=ml)

    files = f["files"]
    need(len(files) == len(facts["files"]), "files count differs from the .torrent", files=len(files),
         expected=len(facts["files"]))
    for i, (fe, (ename, elen)) in enumerate(zip(files, facts["files"])):
        need(isinstance(fe, dict) and isinstance(fe.get("name"), str), "files[%d].name is not a string" % i, entry=fe)
        need(fe["name"] == ename, "files[%d].name differs (Transmission: \"<torrent name>/<path>\" for "
             "multi-file torrents)" % i, name=fe["name"], expected=ename)
        need_int(fe, "length", "files[%d]" % i)
        need_int(fe, "bytesCompleted", "files[%d]" % i)
        need(fe["length"] == elen and fe["bytesCompleted"] == elen, "files[%d] length/bytesCompleted wrong" % i,
             length=fe["length"], bytesCompleted=fe["bytesCompleted"], expected=elen)
    for i, fs in enumerate(t.file_stats):
        need_int(fs.fields, "bytesCompleted", "fileStats[%d]" % i)
        need_type(fs.fields, "wanted", "fileStats[%d]" % i, is_boolish, "a boolean (or 0/1)")
        need_int(fs.fields, "priority", "fileStats[%d]" % i, -1, 1)
        need(fs.bytes_completed == facts["files"][i][1] and bool(fs.wanted),
             "fileStats[%d] not complete and wanted" % i, entry=fs.fields)
    for i, v in enumerate(t.wanted):
        need(is_boolish(v) and bool(v), "wanted[%d] is not a true 0/1 or boolean" % i, value=v)
    for i, v in enumerate(f["priorities"]):
        need(is_int(v) and -1 <= v <= 1, "priorities[%d] is not an int in -1..1" % i, value=v)
    lib_files = t.get_files()
    need(len(lib_files) == len(facts["files"]), "get_files() length wrong", n=len(lib_files))
    for lf in lib_files:
        need(lf.selected is True and lf.size == lf.completed, "get_files() entry not selected/complete",
             file=tuple(lf))

    for i, p in enumerate(t.peers):
        where = "peers[%d]" % i
        need(isinstance(p, dict), where + " is not an object", value=p)
        # the keys transmission-remote -pi needs (it skips a peer missing any)
        need_type(p, "address", where, lambda v: isinstance(v, str), "a string")
        need_type(p, "clientName", where, lambda v: isinstance(v, str), "a string")
        need_type(p, "flagStr", where, lambda v: isinstance(v, str), "a string")
        need_type(p, "progress", where, is_num, "a number")
        need_int(p, "rateToClient", where, 0)
        need_int(p, "rateToPeer", where, 0)
        need_int(p, "port", where, 0, 65535)

    trackers = t.trackers
    need(len(trackers) == len(facts["trackers"]), "trackers count differs from the .torrent",
         trackers=[x.fields for x in trackers], expected=facts["trackers"])
    for i, tr in enumerate(trackers):
        where = "trackers[%d]" % i
        need_int(tr.fields, "id", where, 0)
        need_int(tr.fields, "tier", where, 0)
        need_type(tr.fields, "announce", where, lambda v: isinstance(v, str), "a string")
        need_type(tr.fields, "scrape", where, lambda v: isinstance(v, str), "a string")
    need(sorted(x.announce for x in trackers) == sorted(facts["trackers"]), "tracker announce URLs differ",
         got=[x.announce for x in trackers], expected=facts["trackers"])
    stats = t.tracker_stats
    need(len(stats) == len(trackers), "trackerStats count != trackers count", trackerStats=len(stats),
         trackers=len(trackers))
    for i, ts in enumerate(stats):
        where = "trackerStats[%d]" % i
        # every key transmission-remote -it reads (it skips a tracker missing any)
        for k in ("downloadCount", "id", "announceState", "scrapeState", "lastAnnouncePeerCount",
                  "lastAnnounceStartTime", "lastAnnounceTime", "lastScrapeStartTime", "lastScrapeTime",
                  "leecherCount", "nextAnnounceTime", "nextScrapeTime", "seederCount", "tier"):
            need_int(ts.fields, k, where)
        for k in ("hasAnnounced", "hasScraped", "isBackup", "lastAnnounceSucceeded", "lastAnnounceTimedOut",
                  "lastScrapeSucceeded", "lastScrapeTimedOut"):
            need_type(ts.fields, k, where, lambda v: isinstance(v, bool), "a JSON boolean")
        for k in ("host", "announce", "scrape", "lastAnnounceResult", "lastScrapeResult"):
            need_type(ts.fields, k, where, lambda v: isinstance(v, str), "a string")
        need(0 <= ts.announce_state <= 3 and 0 <= ts.scrape_state <= 3, where + " announceState/scrapeState "
             "not in 0..3", announceState=ts.announce_state, scrapeState=ts.scrape_state)

    need(t.piece_count == facts["piece_count"], "pieceCount differs from the .torrent", pieceCount=t.piece_count,
         expected=facts["piece_count"])
    need(t.piece_size == facts["piece_size"], "pieceSize differs from the .torrent", pieceSize=t.piece_size,
         expected=facts["piece_size"])
    need(all(isinstance(x, str) for x in t.labels), "labels are not all strings", labels=t.labels)
    need(t.queue_position >= 0, "queuePosition negative", queuePosition=t.queue_position)
    need(t.seed_ratio_limit >= 0, "seedRatioLimit negative", seedRatioLimit=f["seedRatioLimit"])
    need(f["seedRatioMode"] in (0, 1, 2), "seedRatioMode not in 0..2", seedRatioMode=f["seedRatioMode"])


def wait_for(what, timeout, fn):
    """Polls fn() -> (done, values) until done; FAIL with the last values."""
    deadline = time.monotonic() + timeout
    while True:
        done, vals = fn()
        if done:
            return vals
        if time.monotonic() >= deadline:
            raise Fail("%s within %gs; last: %s" % (what, timeout, vals))
        time.sleep(0.5)


def run(args):
    raw = open(args.torrent, "rb").read()
    facts = torrent_facts(raw)
    need(facts["hash"] == args.torrent_hash.lower(), "usage: --torrent-hash is not the info-hash of --torrent",
         computed=facts["hash"], given=args.torrent_hash)
    magnet_hash = args.magnet_hash.lower()

    try:
        c = Client(host=args.host, port=args.port, username=args.user, password=args.password,
                   timeout=args.http_timeout)
    except Exception as e:
        raise Fail("connect: %s: %s" % (type(e).__name__, e))
    step("connect")

    s = c.get_session()
    rv = s.fields.get("rpc-version")
    need(is_int(rv) and rv >= 15, "session rpc-version missing, not an int or < 15", rpc_version=rv)
    rvm = s.fields.get("rpc-version-minimum")
    need(is_int(rvm) and rvm <= rv, "session rpc-version-minimum missing/not an int/above rpc-version",
         rpc_version_minimum=rvm)
    ver = s.fields.get("version")
    need(isinstance(ver, str), "session version is not a string", version=ver)
    m = re.match(r"(\d+)\.(\d+)", ver)
    if not m:
        raise Fail("session version does not start with MAJOR.MINOR version=%r" % ver)
    major, minor = int(m.group(1)), int(m.group(2))
    need((major, minor) >= (2, 40), "session version below 2.40 (Sonarr refuses it)", version=ver)
    for k in ("download-dir", "config-dir", "encryption"):
        need_type(s.fields, k, "session", lambda v: isinstance(v, str), "a string")
    for k in ("peer-port", "peer-limit-global", "peer-limit-per-torrent", "speed-limit-down", "speed-limit-up",
              "alt-speed-down", "alt-speed-up", "download-queue-size", "seed-queue-size", "cache-size-mb"):
        need_int(s.fields, k, "session")
    for k in ("speed-limit-down-enabled", "speed-limit-up-enabled", "alt-speed-enabled", "seedRatioLimited",
              "start-added-torrents", "dht-enabled", "pex-enabled", "download-queue-enabled"):
        need_type(s.fields, k, "session", lambda v: isinstance(v, bool), "a JSON boolean")
    need_type(s.fields, "seedRatioLimit", "session", is_num, "a number")
    download_dir = s.download_dir
    step("session")

    if not args.skip_extras:
        st = c.session_stats()
        for k in ("activeTorrentCount", "pausedTorrentCount", "torrentCount", "downloadSpeed", "uploadSpeed"):
            need_int(st.fields, k, "session-stats", 0)
        for part in ("cumulative-stats", "current-stats"):
            need(isinstance(st.fields.get(part), dict), "session-stats.%s is not an object" % part,
                 value=st.fields.get(part))
            for k in ("uploadedBytes", "downloadedBytes", "filesAdded", "sessionCount", "secondsActive"):
                need_int(st.fields[part], k, "session-stats." + part, 0)
        need(st.torrent_count == 0, "the server already has torrents (start it empty)", torrentCount=st.torrent_count)
        step("session-stats")
        free = c.free_space(download_dir)
        need(is_int(free) and free > 0, "free_space(download-dir) is not a positive int (path must be "
             "echoed back exactly)", free=free, path=download_dir)
        step("free-space")

    added = c.add_torrent(raw)
    need(is_int(added.id) and added.id > 0, "torrent-added id is not a positive int", id=added.id)
    need(added.hash_string == facts["hash"], "torrent-added hashString wrong", hashString=added.fields.get("hashString"))
    need(added.name == facts["name"], "torrent-added name wrong", name=added.fields.get("name"))
    tid = added.id
    step("add-torrent")

    madded = c.add_torrent(args.magnet)
    need(is_int(madded.id) and madded.id > 0 and madded.id != tid, "magnet torrent-added id wrong", id=madded.id)
    need(madded.hash_string == magnet_hash, "magnet torrent-added hashString wrong",
         hashString=madded.fields.get("hashString"), expected=magnet_hash)
    need(isinstance(madded.fields.get("name"), str), "magnet torrent-added name is not a string",
         name=madded.fields.get("name"))
    mid = madded.id
    step("add-magnet")

    dup = c.add_torrent(raw)
    need(dup.id == tid and dup.hash_string == facts["hash"], "adding the .torrent again did not answer the "
         "same torrent (torrent-duplicate)", id=dup.id, expected=tid)
    step("add-duplicate")

    ts = c.get_torrents()
    by_hash = {}
    for t in ts:
        h = t.fields.get("hashString")
        need(h not in by_hash, "torrent listed twice", hashString=h)
        by_hash[h] = t
    need(set(by_hash) == {facts["hash"], magnet_hash}, "get_torrents() does not list exactly the two torrents",
         got=sorted(by_hash), expected=sorted([facts["hash"], magnet_hash]))
    need(by_hash[facts["hash"]].id == tid and by_hash[magnet_hash].id == mid, "ids in the list differ from "
         "torrent-add's", ids={h: t.id for h, t in by_hash.items()})
    for h, t in by_hash.items():
        check_torrent_types(t, "list[%s]" % h[:8])
    mt = by_hash[magnet_hash]
    need(mt.name != "", "magnet torrent has an empty name")
    need(mt.fields["magnetLink"].lower().startswith("magnet:?xt=urn:btih:" + magnet_hash),
         "magnet torrent's magnetLink wrong", magnetLink=mt.fields["magnetLink"])
    missing = sorted(k for k in transmission_rpc.constants.get_torrent_arguments(c.get_session().rpc_version)
                     if k not in by_hash[facts["hash"]].fields)
    if missing:
        print("NOTE fields requested by transmission-rpc but not returned: %s" % ", ".join(missing), flush=True)
    # ids as a hash string, and only some fields
    th = c.get_torrent(facts["hash"], arguments=["name", "percentDone"])
    need(th.id == tid and th.name == facts["name"], "get_torrent(hash) answered the wrong torrent",
         fields=th.fields)
    step("list")

    def progress():
        t = c.get_torrent(tid, arguments=["id", "percentDone", "status", "leftUntilDone", "error",
                                          "errorString", "peersConnected", "rateDownload"])
        return float(t.fields["percentDone"]) == 1.0 and t.fields["leftUntilDone"] == 0, t.fields
    last = [0.0]

    def progress_logged():
        done, vals = progress()
        if time.monotonic() - last[0] > 10:
            last[0] = time.monotonic()
            print("WAIT %s" % vals, flush=True)
        return done, vals
    wait_for("torrent not complete", args.timeout, progress_logged)
    # a finished torrent may pass through seed-wait; let the status settle
    wait_for("complete torrent not seeding", 20,
             lambda: (lambda t: (t.fields["status"] in (SEED_WAIT, SEED), t.fields))(
                 c.get_torrent(tid, arguments=["status"])))
    step("wait-complete")

    t = c.get_torrent(tid)
    check_fields(t, facts, args, tid)
    step("fields")

    c.stop_torrent(tid)
    wait_for("torrent not stopped", 15,
             lambda: (lambda t: (t.fields["status"] == STOPPED and t.stopped, t.fields))(
                 c.get_torrent(tid, arguments=["status", "isFinished"])))
    step("stop")

    c.start_torrent(tid)
    wait_for("torrent not downloading/seeding again", 20,
             lambda: (lambda t: (t.fields["status"] in (DOWNLOAD_WAIT, DOWNLOAD, SEED_WAIT, SEED), t.fields))(
                 c.get_torrent(tid, arguments=["status", "percentDone"])))
    step("start")

    data_path = os.path.join(t.download_dir, facts["name"])
    data_was_here = os.path.exists(data_path)
    c.remove_torrent(mid, delete_data=False)
    c.remove_torrent(tid, delete_data=True)
    wait_for("torrents still listed after torrent-remove", 15,
             lambda: (lambda l: (len(l) == 0, [(x.id, x.hash_string) for x in l]))(
                 c.get_torrents(arguments=["id", "hashString"])))
    if data_was_here:
        wait_for("data not deleted by remove_torrent(delete_data=True)", 15,
                 lambda: (not os.path.exists(data_path), {"path": data_path}))
    step("remove")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--torrent", required=True, help=".torrent file whose data a seeder provides")
    p.add_argument("--torrent-hash", required=True, help="its info-hash, 40 hex digits")
    p.add_argument("--magnet", required=True, help="magnet link of another torrent")
    p.add_argument("--magnet-hash", required=True, help="its info-hash, 40 hex digits")
    p.add_argument("--timeout", type=float, default=120, help="seconds to wait for the download (default 120)")
    p.add_argument("--http-timeout", type=float, default=30, help="per-request timeout (default 30)")
    p.add_argument("--skip-extras", action="store_true", help="skip the session-stats and free-space steps")
    args = p.parse_args()
    print("INFO transmission-rpc %s" % getattr(transmission_rpc, "__version__", _lib_version()), flush=True)
    try:
        run(args)
    except Fail as e:
        print("FAIL %s" % e, flush=True)
        return 1
    except Exception as e:  # the library raised: a protocol error in the server's answer
        print("FAIL %s: %s" % (type(e).__name__, e), flush=True)
        resp = getattr(e, "response", None) or getattr(e, "raw_response", None)
        if resp is not None:
            print("FAIL response: %r" % (resp,), flush=True)
        return 1
    print("ALL OK", flush=True)
    return 0


def _lib_version():
    try:
        from importlib.metadata import version
        return version("transmission-rpc")
    except Exception:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
