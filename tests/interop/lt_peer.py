#!/usr/bin/python3
"""A libtorrent (python3-libtorrent 2.0.x) peer for loopback interop tests.

Run with Debian's /usr/bin/python3, inside a private network namespace
(shared/netns-run), e.g.:

  lt_peer.py --listen 127.0.0.2:6881 --torrent t.torrent --save /tmp/seed --mode seed
  lt_peer.py --listen 127.0.0.3:6881 --torrent t.torrent --save /tmp/leech \
             --mode leech --timeout 60 --peer 127.0.0.2:6881

seed:  checks the data in --save (or trusts it with --seed-mode), prints READY
       on stdout once the torrent is seeding, the TCP listen socket is up and
       the tracker (if any) answered the first announce (or 10 s passed),
       then runs until SIGTERM/SIGINT (exit 0) or --timeout (exit 0).
       Exits 3 if the data is incomplete (with --seed-mode: as soon as a
       piece fails its lazy check), 2 if it cannot listen.
leech: downloads into --save, prints progress on stderr, closes the session
       (so all data is on disk) and then prints DONE on stdout and exits 0.
       Exits 1 on --timeout, 2 if it cannot listen, 4 on a torrent error.

DHT, LSD, UPnP, NAT-PMP, PEX and uTP are all off; only TCP is used. The
tracker in the .torrent is announced to unless --no-tracker is given.
--pex turns libtorrent's ut_pex (BEP-11) on for the torrent; ut_metadata
(BEP-9) is always on, so a seeder serves the info dictionary to magnet
leechers. A seeder that should stay connected to another seed (for PEX to
list it) needs --set close_redundant_connections=false.
--report-peers prints `PEER <ip:port> <sources>` on stdout the first time
a connection to an address finishes its handshake (sources as in
lt_magnet.py: tracker, pex, resume, incoming, or "direct" for --peer).
"""

import faulthandler
import argparse
import os
import signal
import sys
import time

import libtorrent as lt


# A crash inside libtorrent prints the Python stack on stderr.
faulthandler.enable()

def log(msg):
    sys.stderr.write("lt_peer: %s\n" % msg)
    sys.stderr.flush()


def ip_port(s):
    host, _, port = s.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError("expected IP:PORT, got %r" % s)
    return host, int(port)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", required=True, type=ip_port,
                   help="literal IP:PORT to listen on, e.g. 127.0.0.2:6881")
    p.add_argument("--torrent", required=True, help=".torrent file")
    p.add_argument("--save", required=True, help="save path (data dir)")
    p.add_argument("--mode", required=True, choices=("seed", "leech"))
    p.add_argument("--timeout", type=float, default=0,
                   help="seconds; 0 = none (default)")
    p.add_argument("--peer", action="append", type=ip_port, default=[],
                   help="IP:PORT to connect to directly (repeatable)")
    p.add_argument("--upload-limit", type=int, default=0,
                   help="upload limit in bytes/s for this torrent (0 = none)")
    p.add_argument("--download-limit", type=int, default=0,
                   help="download limit in bytes/s for this torrent (0 = none)")
    p.add_argument("--seed-mode", action="store_true",
                   help="seed: skip the initial hash check (libtorrent "
                        "seed_mode: pieces are verified lazily when first sent)")
    p.add_argument("--no-tracker", action="store_true",
                   help="do not announce to the trackers in the .torrent")
    p.add_argument("--pex", action="store_true",
                   help="turn ut_pex (BEP-11 peer exchange) on for the "
                        "torrent (off by default)")
    p.add_argument("--report-peers", action="store_true",
                   help="print PEER <ip:port> <sources> on stdout for each "
                        "new peer address")
    p.add_argument("--verbose", action="store_true",
                   help="log every alert (incl. peer and block events) to stderr")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a libtorrent setting (repeatable); VALUE "
                        "is parsed as int, true/false, or kept as a string")
    return p.parse_args()


# peer_info source bits and their names (incoming is 0x20 in libtorrent,
# not exported by the 2.0 binding)
SOURCES = (
    (lt.peer_info.tracker, "tracker"),
    (lt.peer_info.dht, "dht"),
    (lt.peer_info.pex, "pex"),
    (lt.peer_info.lsd, "lsd"),
    (lt.peer_info.resume_data, "resume"),
    (0x20, "incoming"),
)


def source_names(src):
    names = [n for bit, n in SOURCES if src & bit]
    return "+".join(names) if names else "direct"


def endpoint(ep):
    return "%s:%d" % (ep[0], ep[1])


def report_new_peers(handle, seen):
    """Prints `PEER <ip:port> <sources>` for each connected peer address
    not in `seen` (and adds it) once its handshake is done."""
    for p in handle.get_peer_info():
        if p.flags & (lt.peer_info.connecting | lt.peer_info.handshake):
            continue
        ep = endpoint(p.ip)
        if ep not in seen:
            seen.add(ep)
            sys.stdout.write("PEER %s %s\n" % (ep, source_names(p.source)))
            sys.stdout.flush()


def parse_setting(kv):
    key, sep, val = kv.partition("=")
    if not sep:
        raise SystemExit("--set expects KEY=VALUE, got %r" % kv)
    if val.lower() in ("true", "false"):
        return key, val.lower() == "true"
    try:
        return key, int(val, 0)
    except ValueError:
        return key, val


def make_session(listen, overrides, verbose=False):
    host, port = listen
    iface = "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)
    settings = {
        "listen_interfaces": iface,
        "outgoing_interfaces": host,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "dht_bootstrap_nodes": "",
        # TCP only: otherwise libtorrent tries uTP first and a TCP-only peer
        # is reached seconds later.
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "allow_multiple_connections_per_ip": True,
        # loopback performance
        "send_buffer_watermark": 8 * 1024 * 1024,
        "send_buffer_low_watermark": 1024 * 1024,
        "send_buffer_watermark_factor": 150,
        "max_queued_disk_bytes": 16 * 1024 * 1024,
        "max_out_request_queue": 1500,
        "max_peer_recv_buffer_size": 8 * 1024 * 1024,
        "send_not_sent_low_watermark": 512 * 1024,
        "connection_speed": 500,
        "unchoke_slots_limit": -1,
        "request_timeout": 10,
        "peer_connect_timeout": 3,
        "min_reconnect_time": 1,
        "connections_limit": 500,
        "stop_tracker_timeout": 1,
        "alert_mask": (lt.alert.category_t.error_notification
                       | lt.alert.category_t.status_notification
                       | lt.alert.category_t.storage_notification
                       | lt.alert.category_t.tracker_notification),
        "user_agent": "lt_peer/" + lt.__version__,
    }
    if verbose:
        settings["alert_mask"] |= (lt.alert.category_t.peer_notification
                                   | lt.alert.category_t.connect_notification
                                   | lt.alert.category_t.block_progress_notification
                                   | lt.alert.category_t.piece_progress_notification)
    settings.update(dict(parse_setting(kv) for kv in overrides))
    return lt.session(settings)


def main():
    args = parse_args()
    stop = {"sig": None}

    def on_signal(signum, _frame):
        stop["sig"] = signum

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    os.makedirs(args.save, exist_ok=True)
    ti = lt.torrent_info(args.torrent)
    ses = make_session(args.listen, args.set, args.verbose)

    atp = lt.add_torrent_params()
    atp.ti = ti
    atp.save_path = os.path.abspath(args.save)
    flags = atp.flags
    flags |= lt.torrent_flags.disable_dht | lt.torrent_flags.disable_lsd
    if args.pex:
        flags &= ~lt.torrent_flags.disable_pex
    else:
        flags |= lt.torrent_flags.disable_pex
    flags &= ~lt.torrent_flags.auto_managed
    flags &= ~lt.torrent_flags.paused
    if args.mode == "seed" and args.seed_mode:
        flags |= lt.torrent_flags.seed_mode
    atp.flags = flags
    if args.no_tracker:
        atp.trackers = []
        atp.flags |= lt.torrent_flags.override_trackers
    h = ses.add_torrent(atp)
    if args.upload_limit > 0:
        # a per-torrent limit also applies to loopback/LAN peers, which the
        # session-wide limit exempts (they are in the local peer class)
        h.set_upload_limit(args.upload_limit)
    if args.download_limit > 0:
        h.set_download_limit(args.download_limit)

    start = time.monotonic()
    deadline = start + args.timeout if args.timeout > 0 else None
    listening = False
    connected_peers = False
    ready = False
    checked = False
    # READY waits for the first tracker response (reply or error, at most
    # 10 s) so a leecher started after READY finds this seed at the tracker.
    announced = args.no_tracker or not ti.trackers()
    seeding_since = None
    rc = None
    last_report = 0.0
    seen_peers = set()

    while rc is None:
        for a in ses.pop_alerts():
            if args.verbose:
                log("%.3f %s: %s" % (time.monotonic() - start, a.what(), a.message()))
            if isinstance(a, lt.listen_succeeded_alert):
                if a.socket_type == lt.socket_type_t.tcp:
                    listening = True
                    log("listening on %s" % a.message())
            elif isinstance(a, lt.torrent_checked_alert):
                checked = True
                log("checked after %.2fs" % (time.monotonic() - start))
            elif isinstance(a, lt.listen_failed_alert):
                log("listen failed: %s" % a.message())
                rc = 2
            elif isinstance(a, (lt.torrent_error_alert, lt.file_error_alert,
                                lt.hash_failed_alert)):
                log("error: %s" % a.message())
                if not isinstance(a, lt.hash_failed_alert):
                    rc = 4
            elif isinstance(a, (lt.tracker_error_alert,
                                lt.tracker_warning_alert,
                                lt.tracker_reply_alert)):
                log(a.message())
                if not isinstance(a, lt.tracker_warning_alert):
                    announced = True
        if rc is not None:
            break

        st = h.status()
        now = time.monotonic()
        if args.report_peers:
            report_new_peers(h, seen_peers)
        if listening and not connected_peers and st.state not in (
                lt.torrent_status.checking_files,
                lt.torrent_status.checking_resume_data):
            for peer in args.peer:
                h.connect_peer(peer)
            connected_peers = True

        if args.mode == "seed":
            if st.is_seeding and seeding_since is None:
                seeding_since = now
            if (not ready and listening and st.is_seeding
                    and (announced or now - seeding_since > 10)):
                ready = True
                log("seeding after %.2fs" % (now - start))
                sys.stdout.write("READY\n")
                sys.stdout.flush()
            elif (ready and not st.is_seeding and st.state
                  == lt.torrent_status.downloading):
                # with --seed-mode a piece failed its lazy hash check:
                # libtorrent rechecked everything and stopped seeding
                log("no longer seeding (%.1f%%): data in %s is bad"
                    % (st.progress * 100, args.save))
                rc = 3
                break
            elif not ready and checked and not st.is_seeding:
                log("data in %s is incomplete (%.1f%%), cannot seed"
                    % (args.save, st.progress * 100))
                rc = 3
                break
            if ready and now - last_report >= 5:
                last_report = now
                log("seeding: uploaded %d bytes, %d peers, %.1f MiB/s"
                    % (st.total_payload_upload, st.num_peers,
                       st.upload_payload_rate / 1048576.0))
        else:
            if st.is_seeding or st.is_finished:
                log("finished in %.2fs" % (now - start))
                rc = 0
                break
            if now - last_report >= 1:
                last_report = now
                log("%s %.1f%% down %.1f MiB/s peers %d"
                    % (st.state, st.progress * 100,
                       st.download_payload_rate / 1048576.0, st.num_peers))

        if stop["sig"] is not None:
            log("signal %d, stopping" % stop["sig"])
            rc = 0 if args.mode == "seed" else 1
            break
        if deadline is not None and now >= deadline:
            log("timeout after %.1fs" % args.timeout)
            rc = 0 if args.mode == "seed" else 1
            break
        ses.wait_for_alert(100)

    # Closing the session flushes and closes all files.
    ses.remove_torrent(h)
    del h
    del ses
    if args.mode == "leech" and rc == 0:
        sys.stdout.write("DONE\n")
        sys.stdout.flush()
    return rc


if __name__ == "__main__":
    sys.exit(main())
