#!/usr/bin/python3
"""A libtorrent (python3-libtorrent 2.0.x) leecher that starts from a magnet link.

Run with Debian's /usr/bin/python3, inside a private network namespace
(scripts/netns-run), e.g.:

  lt_magnet.py --listen 127.0.0.3:6881 --save OUT --timeout 60 \\
      --magnet 'magnet:?xt=urn:btih:HEX&dn=NAME&x.pe=127.0.0.2:6881' \\
      [--peer IP:PORT]... [--pex] [--save-torrent T.torrent] [--seed]

It has no .torrent: the info dictionary comes from peers (BEP-9
ut_metadata, always on). Peers come from the magnet's `x.pe=` entries
(libtorrent adds them with source "resume"), from --peer (connect_peer
once the listen socket is up), from the magnet's `tr=` trackers, and with
--pex from the peers' ut_pex (BEP-11) messages. DHT, LSD, UPnP, NAT-PMP
and uTP are off (session settings as lt_peer.py); PEX is off unless --pex.

Lines on stdout (what a test waits for):
  METADATA <info-hash hex> <seconds> <name>
                          the info dictionary arrived and checked out
                          (after --save-torrent has been written)
  PEER <ip:port> <sources>
                          a connection to a new peer address, once;
                          sources joined by "+": tracker, dht, pex, lsd,
                          resume (x.pe), incoming, or "direct" (--peer)
  FROM <ip:port> <bytes>  payload bytes received from each peer (blocks
                          written, from block_finished alerts), once the
                          download is complete
  DONE <seconds>          every piece is in and verified and the files are
                          closed (the session is gone unless --seed)
With --seed it keeps seeding after DONE (files flushed first) until
SIGTERM/SIGINT or --timeout.

Exit codes: 0 after DONE (with --seed: on the signal or --timeout after
DONE), 1 on --timeout or a signal before DONE, 2 if it cannot listen,
4 on a torrent or file error, 5 on a bad magnet link.
"""

import faulthandler
import argparse
import os
import signal
import sys
import time

import libtorrent as lt

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lt_peer import (endpoint, ip_port, make_session,  # noqa: E402
                     report_new_peers)


# A crash inside libtorrent prints the Python stack on stderr.
faulthandler.enable()

def log(msg):
    sys.stderr.write("lt_magnet: %s\n" % msg)
    sys.stderr.flush()


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", required=True, type=ip_port,
                   help="literal IP:PORT to listen on, e.g. 127.0.0.3:6881")
    p.add_argument("--magnet", required=True, help="the magnet link")
    p.add_argument("--save", required=True, help="save path (data dir)")
    p.add_argument("--timeout", type=float, default=0,
                   help="seconds; 0 = none (default)")
    p.add_argument("--peer", action="append", type=ip_port, default=[],
                   help="IP:PORT to connect to directly (repeatable)")
    p.add_argument("--pex", action="store_true",
                   help="turn ut_pex (BEP-11) on for the torrent")
    p.add_argument("--no-tracker", action="store_true",
                   help="ignore the magnet's tr= trackers")
    p.add_argument("--save-torrent", metavar="FILE",
                   help="write the torrent (from the received info "
                        "dictionary) here before METADATA")
    p.add_argument("--seed", action="store_true",
                   help="keep seeding after DONE until a signal/--timeout")
    p.add_argument("--upload-limit", type=int, default=0,
                   help="upload limit in bytes/s for this torrent (0 = none)")
    p.add_argument("--download-limit", type=int, default=0,
                   help="download limit in bytes/s for this torrent (0 = none)")
    p.add_argument("--verbose", action="store_true",
                   help="log every alert (incl. peer and block events) to stderr")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a libtorrent setting (repeatable)")
    return p.parse_args()


class PeerBook:
    """Which peer addresses were seen (PEER lines) and what each sent.

    Bytes are counted from block_finished alerts: a peer's counters in
    get_peer_info() are gone once it disconnects, and libtorrent closes a
    connection to a seed the moment it becomes one itself.
    """

    def __init__(self):
        self.seen = set()
        self.bytes = {}

    def update(self, handle):
        report_new_peers(handle, self.seen)

    def block(self, alert, ti, handle):
        if endpoint(alert.endpoint) not in self.seen:
            self.update(handle)
        size = min(16384,
                   ti.piece_size(alert.piece_index) - alert.block_index * 16384)
        ep = endpoint(alert.endpoint)
        self.bytes[ep] = self.bytes.get(ep, 0) + size


def main():
    args = parse_args()
    stop = {"sig": None}

    def on_signal(signum, _frame):
        stop["sig"] = signum

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    try:
        atp = lt.parse_magnet_uri(args.magnet)
    except RuntimeError as e:
        log("bad magnet link %r: %s" % (args.magnet, e))
        return 5
    os.makedirs(args.save, exist_ok=True)
    ses = make_session(args.listen, args.set, args.verbose)
    # block_finished alerts count the bytes from each peer
    mask = ses.get_settings()["alert_mask"]
    ses.apply_settings({"alert_mask": mask
                        | lt.alert.category_t.block_progress_notification})

    atp.save_path = os.path.abspath(args.save)
    flags = atp.flags
    flags |= lt.torrent_flags.disable_dht | lt.torrent_flags.disable_lsd
    if args.pex:
        flags &= ~lt.torrent_flags.disable_pex
    else:
        flags |= lt.torrent_flags.disable_pex
    flags &= ~lt.torrent_flags.auto_managed
    flags &= ~lt.torrent_flags.paused
    if args.no_tracker:
        atp.trackers = []
        flags |= lt.torrent_flags.override_trackers
    atp.flags = flags
    log("magnet: info-hash %s, name %r, %d x.pe peers, %d trackers"
        % (atp.info_hashes.v1, atp.name, len(atp.peers), len(atp.trackers)))
    h = ses.add_torrent(atp)
    if args.upload_limit > 0:
        h.set_upload_limit(args.upload_limit)
    if args.download_limit > 0:
        h.set_download_limit(args.download_limit)

    start = time.monotonic()
    deadline = start + args.timeout if args.timeout > 0 else None
    listening = False
    connected_peers = False
    have_metadata = False
    ti = None
    done = False
    book = PeerBook()
    rc = None
    last_report = 0.0

    while rc is None:
        for a in ses.pop_alerts():
            if args.verbose:
                log("%.3f %s: %s" % (time.monotonic() - start, a.what(),
                                     a.message()))
            if isinstance(a, lt.listen_succeeded_alert):
                if a.socket_type == lt.socket_type_t.tcp:
                    listening = True
                    log("listening on %s" % a.message())
            elif isinstance(a, lt.listen_failed_alert):
                log("listen failed: %s" % a.message())
                rc = 2
            elif isinstance(a, lt.metadata_failed_alert):
                # a peer sent an info dictionary whose hash is wrong;
                # libtorrent drops it and asks again
                log("bad metadata: %s" % a.message())
            elif isinstance(a, lt.metadata_received_alert):
                ti = h.torrent_file()
                log("metadata after %.2fs: %s, %d files, %d bytes"
                    % (time.monotonic() - start, ti.name(), ti.num_files(),
                       ti.total_size()))
                if args.save_torrent:
                    ct = lt.create_torrent(ti)
                    with open(args.save_torrent, "wb") as f:
                        f.write(lt.bencode(ct.generate()))
                have_metadata = True
                out("METADATA %s %.2f %s" % (ti.info_hashes().v1,
                                             time.monotonic() - start,
                                             ti.name()))
            elif isinstance(a, (lt.torrent_error_alert, lt.file_error_alert)):
                log("error: %s" % a.message())
                rc = 4
            elif isinstance(a, lt.block_finished_alert):
                book.block(a, ti, h)
            elif isinstance(a, lt.hash_failed_alert):
                log(a.message())
            elif isinstance(a, (lt.tracker_error_alert,
                                lt.tracker_reply_alert)):
                log(a.message())
        if rc is not None:
            break

        now = time.monotonic()
        if listening and not connected_peers:
            for peer in args.peer:
                h.connect_peer(peer)
            connected_peers = True
        book.update(h)
        st = h.status()

        if not done and have_metadata and (st.is_seeding or st.is_finished):
            done = True
            elapsed = now - start
            log("finished in %.2fs" % elapsed)
            # the last block_finished alerts can come after the status
            # says finished
            drain_until = time.monotonic() + 1
            while time.monotonic() < drain_until:
                if ses.wait_for_alert(200) is None:
                    break
                for a in ses.pop_alerts():
                    if isinstance(a, lt.block_finished_alert):
                        book.block(a, ti, h)
            for ep, n in sorted(book.bytes.items()):
                out("FROM %s %d" % (ep, n))
            if not args.seed:
                rc = 0
                break
            h.flush_cache()
            out("DONE %.2f" % elapsed)
        if now - last_report >= 2:
            last_report = now
            log("%s %.1f%% down %.1f MiB/s up %.1f MiB/s peers %d"
                % (st.state, st.progress * 100,
                   st.download_payload_rate / 1048576.0,
                   st.upload_payload_rate / 1048576.0, st.num_peers))

        if stop["sig"] is not None:
            log("signal %d, stopping" % stop["sig"])
            rc = 0 if done else 1
            break
        if deadline is not None and now >= deadline:
            log("timeout after %.1fs" % args.timeout)
            rc = 0 if done else 1
            break
        ses.wait_for_alert(100)

    # Closing the session flushes and closes all files.
    ses.remove_torrent(h)
    del h
    del ses
    if rc == 0 and not args.seed:
        out("DONE %.2f" % (time.monotonic() - start))
    return rc


if __name__ == "__main__":
    sys.exit(main())
