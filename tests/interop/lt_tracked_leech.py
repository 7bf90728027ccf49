#!/usr/bin/python3
"""A libtorrent leecher that reports its tracker traffic and stops cleanly.

Run with Debian's /usr/bin/python3 inside a private network namespace:

  lt_tracked_leech.py --listen 127.0.0.4:6881 --torrent t.torrent --save OUT \
                      [--timeout 120] [--set KEY=VALUE]...

Unlike `lt_peer.py --mode leech` (which closes the session the moment the
download is done, so whether libtorrent's `stopped` announce still goes out
is a race with its `completed` one) this helper behaves like a user who
finishes, keeps the client open a while, then quits:

  1. downloads into --save (same session settings as lt_peer.py: DHT, LSD,
     UPnP, NAT-PMP, PEX and uTP off);
  2. once finished, waits for the tracker's reply to the `completed`
     announce, flushes the files and prints DONE on stdout, then keeps
     seeding;
  3. on SIGTERM/SIGINT removes the torrent, waits until libtorrent queues
     the `stopped` announce plus one second (closing the session at once
     closes its UDP socket, and a UDP `stopped` can be lost), closes the
     session (which waits up to `stop_tracker_timeout` for HTTP requests
     still open) and exits 0.

Every announce libtorrent sends is printed on stdout as
`ANNOUNCE <event> <url>` (event: started, completed, stopped or none), and
every reply as `REPLY <url>`, so a test can see exactly what it sent.
Exit codes: 0 after a clean stop, 1 on --timeout before DONE, 2 if it
cannot listen, 4 on a torrent or file error, 5 if no `stopped` announce
went out within 5 s of the signal.
"""

import faulthandler
import argparse
import os
import signal
import sys
import time

import libtorrent as lt

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lt_peer import ip_port, log, make_session  # noqa: E402

EVENTS = ("completed", "started", "stopped", "paused")


# A crash inside libtorrent prints the Python stack on stderr.
faulthandler.enable()

def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def event_name(alert):
    # "... sending announce (started)"; no parenthesis for a plain announce
    msg = alert.message()
    for e in EVENTS:
        if msg.endswith("(%s)" % e):
            return e
    return "none"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", required=True, type=ip_port)
    p.add_argument("--torrent", required=True)
    p.add_argument("--save", required=True)
    p.add_argument("--timeout", type=float, default=120,
                   help="seconds to finish the download (default 120)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()

    stop = {"sig": None}

    def on_signal(signum, _frame):
        stop["sig"] = signum

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    os.makedirs(args.save, exist_ok=True)
    ses = make_session(args.listen, args.set)
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(args.torrent)
    atp.save_path = os.path.abspath(args.save)
    flags = atp.flags
    flags |= lt.torrent_flags.disable_dht | lt.torrent_flags.disable_lsd
    flags |= lt.torrent_flags.disable_pex
    flags &= ~lt.torrent_flags.auto_managed
    flags &= ~lt.torrent_flags.paused
    atp.flags = flags
    h = ses.add_torrent(atp)

    start = time.monotonic()
    completed_sent = False
    done = False
    removing = False
    stopped_sent = False
    rc = None
    last_report = 0.0

    while rc is None:
        for a in ses.pop_alerts():
            if isinstance(a, lt.tracker_announce_alert):
                ev = event_name(a)
                out("ANNOUNCE %s %s" % (ev, a.tracker_url()))
                if ev == "completed":
                    completed_sent = True
                if ev == "stopped":
                    # the alert comes as the request is queued: keep the
                    # session (and its UDP socket) open a moment so the
                    # packet really leaves before the session closes
                    stopped_sent = time.monotonic()
            elif isinstance(a, lt.tracker_reply_alert):
                out("REPLY %s" % a.tracker_url())
                if completed_sent and not done:
                    # the tracker has recorded `completed`: flush, then DONE
                    h.flush_cache()
                    done = True
                    log("finished in %.2fs" % (time.monotonic() - start))
                    out("DONE")
            elif isinstance(a, (lt.tracker_error_alert,
                                lt.tracker_warning_alert)):
                log(a.message())
            elif isinstance(a, lt.listen_failed_alert):
                log("listen failed: %s" % a.message())
                rc = 2
            elif isinstance(a, (lt.torrent_error_alert, lt.file_error_alert)):
                log("error: %s" % a.message())
                rc = 4
        if rc is not None:
            break
        now = time.monotonic()
        if removing:
            if stopped_sent and now - stopped_sent >= 1:
                rc = 0
                break
            if now - removing > 5:
                log("the stopped announce was never sent")
                rc = 5
                break
        elif stop["sig"] is not None:
            log("signal %d, stopping" % stop["sig"])
            ses.remove_torrent(h)
            removing = now
        elif not done and now - start > args.timeout:
            log("timeout after %.1fs" % args.timeout)
            rc = 1
            break
        elif not done and now - last_report >= 1:
            last_report = now
            st = h.status()
            log("%s %.1f%% peers %d" % (st.state, st.progress * 100,
                                         st.num_peers))
        ses.wait_for_alert(100)

    # The session's destructor waits up to stop_tracker_timeout for the
    # `stopped` announce to be answered.
    del h
    del ses
    return rc


if __name__ == "__main__":
    sys.exit(main())
