#!/usr/bin/python3
"""A network of libtorrent (python3-libtorrent 2.0.x) DHT nodes in one process.

Run with Debian's /usr/bin/python3, inside a private network namespace
(shared/netns-run), e.g.:

  lt_dht.py --listen 127.0.5.10:6881 --count 20 [--bootstrap IP:PORT]...
            [--watch IP:PORT]... [--seed T.torrent --save DIR]
            [--leech T.torrent --save DIR] [--timeout S]

Starts --count libtorrent sessions, one per loopback address: the first on
--listen, the next ones on the following addresses (127.0.5.10, .11, ...,
all on the same port). Each session's DHT listens on its UDP port; TCP
peers on the same port. Every session knows every other one
(`add_dht_node`) and each --bootstrap node; there are no routers (nothing
public is ever asked). LSD, UPnP, NAT-PMP, PEX and uTP are off.

Settings a loopback DHT needs (see shared/INTEROP.md): literal
listen_interfaces, dht_restrict_routing_ips and dht_restrict_search_ips
off (else one node per /24 survives in each table), dht_block_ratelimit
and dht_upload_rate_limit raised (else an address is banned after ~50
packets in 10 s).

Lines on stdout (what a test waits for):
  NODE <ip:port> <id hex>    once per session, at start
  READY <min> <max>          once every session has >= --min-nodes live
                             nodes in its routing table (min/max of them)
  SEEN <ip:port> <id hex> <n> <of>
                             a --watch address is in n of the <of>
                             sessions' routing tables (printed whenever n
                             changes; <id hex> is the id they know it by,
                             "-" while n is 0)
  STORED <node> <info-hash hex> <peer>
                             session <node> (ip:port) accepted an
                             announce_peer: <peer> (ip:port) has the
                             torrent; from any announcer, xorrent included
  PEERS <n>                  a DHT lookup of the --seed/--leech session
                             found n > 0 peers (libtorrent says nothing
                             about lookups that find none)
  DONE                       the --leech download is complete and its files
                             are closed
With --seed, session 0 seeds the torrent from --save (checked first; exit 3
if the data is incomplete) and announces it on the DHT once READY, then
every --announce-every seconds. With --leech, session 0 adds the torrent at
READY and looks it up (get_peers + announce_peer) every --announce-every
seconds until done. The torrent's own trackers are never used.

Runs until SIGTERM/SIGINT (exit 0) or --timeout (exit 1 while a --leech is
not DONE, else 0). Exit 2 if a session cannot listen, 4 on a torrent or
file error. Routing table sizes go to stderr every few seconds.
"""

import faulthandler
import argparse
import ipaddress
import os
import signal
import sys
import time
import warnings

import libtorrent as lt

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lt_peer import ip_port, parse_setting  # noqa: E402


# A crash inside libtorrent prints the Python stack on stderr.
faulthandler.enable()

def log(msg):
    sys.stderr.write("lt_dht: %s\n" % msg)
    sys.stderr.flush()


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", required=True, type=ip_port,
                   help="IPv4:PORT of the first session; the others take "
                        "the following addresses, same port")
    p.add_argument("--count", type=int, default=20,
                   help="number of sessions (default 20)")
    p.add_argument("--bootstrap", action="append", type=ip_port, default=[],
                   help="a DHT node every session adds (repeatable)")
    p.add_argument("--watch", action="append", type=ip_port, default=[],
                   help="report whether this node is in the routing tables "
                        "(repeatable)")
    p.add_argument("--min-nodes", type=int, default=0,
                   help="live nodes each table needs for READY "
                        "(default: min(count - 1, 8))")
    p.add_argument("--seed", metavar="TORRENT",
                   help="session 0 seeds this torrent from --save")
    p.add_argument("--leech", metavar="TORRENT",
                   help="session 0 downloads this torrent into --save")
    p.add_argument("--save", help="data dir for --seed / --leech")
    p.add_argument("--announce-every", type=float, default=3,
                   help="seconds between DHT announces of --seed/--leech "
                        "(default 3)")
    p.add_argument("--timeout", type=float, default=0,
                   help="seconds; 0 = none (default)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a libtorrent setting in every session "
                        "(repeatable)")
    a = p.parse_args()
    if a.seed and a.leech:
        p.error("--seed and --leech are exclusive")
    if (a.seed or a.leech) and not a.save:
        p.error("--seed/--leech need --save")
    if a.count < 1:
        p.error("--count must be >= 1")
    if not a.min_nodes:
        a.min_nodes = min(a.count - 1, 8)
    return a


def session_settings(ip, port, overrides):
    s = {
        "listen_interfaces": "%s:%d" % (ip, port),
        "outgoing_interfaces": ip,
        "enable_dht": True,
        "dht_bootstrap_nodes": "",
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_block_ratelimit": 1000000,
        "dht_upload_rate_limit": 10000000,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        # TCP peers only; the UDP socket stays open for the DHT
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "allow_multiple_connections_per_ip": True,
        # twenty sessions in one process: few threads each
        "aio_threads": 1,
        "hashing_threads": 1,
        "connection_speed": 100,
        "peer_connect_timeout": 3,
        "min_reconnect_time": 1,
        "alert_mask": (lt.alert.category_t.error_notification
                       | lt.alert.category_t.status_notification
                       | lt.alert.category_t.storage_notification
                       | lt.alert.category_t.dht_notification
                       | lt.alert.category_t.tracker_notification),
        "user_agent": "lt_dht/" + lt.__version__,
    }
    s.update(dict(parse_setting(kv) for kv in overrides))
    return s


def node_id(ses):
    """The session's DHT node id, hex (from its saved DHT state)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        st = ses.dht_state()
    ids = st.get(b"node-id") or []
    if isinstance(ids, bytes):
        ids = [ids]
    # each entry: 20-byte id followed by the address it is valid for
    return ids[0][:20].hex() if ids else None


def add_torrent(ses, path, save):
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(path)
    atp.save_path = os.path.abspath(save)
    atp.trackers = []
    flags = atp.flags
    flags |= lt.torrent_flags.override_trackers
    flags |= lt.torrent_flags.disable_lsd | lt.torrent_flags.disable_pex
    flags &= ~lt.torrent_flags.disable_dht
    flags &= ~lt.torrent_flags.auto_managed
    flags &= ~lt.torrent_flags.paused
    atp.flags = flags
    return ses.add_torrent(atp)


def main():
    args = parse_args()
    stop = {"sig": None}

    def on_signal(signum, _frame):
        stop["sig"] = signum

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    first_ip = ipaddress.IPv4Address(args.listen[0])
    port = args.listen[1]
    addrs = [(str(first_ip + i), port) for i in range(args.count)]
    sessions = [lt.session(session_settings(ip, p, args.set))
                for ip, p in addrs]
    start = time.monotonic()
    deadline = start + args.timeout if args.timeout > 0 else None

    for i, ses in enumerate(sessions):
        for j, a in enumerate(addrs):
            if j != i:
                ses.add_dht_node(a)
        for b in args.bootstrap:
            ses.add_dht_node(b)

    handle = None
    if args.seed or args.leech:
        os.makedirs(args.save, exist_ok=True)
    if args.seed:
        # added at once, so the data is checked while the tables fill
        handle = add_torrent(sessions[0], args.seed, args.save)

    ids = [None] * len(sessions)
    listening = [False] * len(sessions)
    live = [0] * len(sessions)
    # per watched address: the sessions whose table has it, and its id
    seen = {w: (-1, None) for w in args.watch}
    in_table = {w: {} for w in args.watch}
    ready = False
    checked = args.seed is None
    last_query = 0.0
    last_report = 0.0
    last_announce = None
    done = False
    rc = None

    while rc is None:
        now = time.monotonic()
        for i, ses in enumerate(sessions):
            for a in ses.pop_alerts():
                if isinstance(a, lt.listen_succeeded_alert):
                    if a.socket_type == lt.socket_type_t.udp:
                        listening[i] = True
                elif isinstance(a, lt.listen_failed_alert):
                    log("session %s: listen failed: %s"
                        % (addrs[i][0], a.message()))
                    rc = 2
                elif isinstance(a, lt.dht_live_nodes_alert):
                    live[i] = a.num_nodes
                    for w in args.watch:
                        in_table[w].pop(i, None)
                    for n in a.nodes:
                        ep = tuple(n["endpoint"])
                        if ep in in_table:
                            in_table[ep][i] = str(n["nid"])
                elif isinstance(a, (lt.torrent_error_alert,
                                    lt.file_error_alert)):
                    log("error: %s" % a.message())
                    rc = 4
                elif isinstance(a, lt.torrent_checked_alert):
                    checked = True
                elif isinstance(a, lt.dht_reply_alert):
                    # the get_peers part of a torrent's DHT announce found
                    # peers (not posted when it finds none)
                    out("PEERS %d" % a.num_peers)
                elif isinstance(a, lt.dht_announce_alert):
                    out("STORED %s:%d %s %s:%d"
                        % (addrs[i][0], addrs[i][1], a.info_hash,
                           a.ip, a.port))
                elif isinstance(a, lt.dht_bootstrap_alert):
                    log("session %s: DHT bootstrapped" % addrs[i][0])
        if rc is not None:
            break

        for i, ses in enumerate(sessions):
            if ids[i] is None and listening[i]:
                ids[i] = node_id(ses)
                if ids[i]:
                    out("NODE %s:%d %s" % (addrs[i][0], addrs[i][1], ids[i]))

        if now - last_query >= 0.5 and all(ids):
            last_query = now
            for i, ses in enumerate(sessions):
                ses.dht_live_nodes(lt.sha1_hash(bytes.fromhex(ids[i])))

        for w in args.watch:
            have = in_table[w]
            n = len(have)
            nid = next(iter(have.values())) if have else None
            if (n, nid) != seen[w]:
                seen[w] = (n, nid)
                out("SEEN %s:%d %s %d %d"
                    % (w[0], w[1], nid or "-", n, len(sessions)))

        if not ready and all(ids) and min(live) >= args.min_nodes:
            ready = True
            log("tables ready after %.2fs" % (now - start))
            out("READY %d %d" % (min(live), max(live)))
            if args.leech:
                handle = add_torrent(sessions[0], args.leech, args.save)

        if handle is not None and ready and checked:
            st = handle.status()
            if args.seed and not st.is_seeding:
                log("data in %s is incomplete (%.1f%%), cannot seed"
                    % (args.save, st.progress * 100))
                rc = 3
                break
            if args.leech and not done and (st.is_seeding or st.is_finished):
                log("download finished after %.2fs" % (now - start))
                # every piece passed its hash check after it was written;
                # removing the torrent closes the files
                sessions[0].remove_torrent(handle)
                handle = None
                done = True
                out("DONE")
            elif (last_announce is None
                  or now - last_announce >= args.announce_every):
                last_announce = now
                handle.force_dht_announce()

        if now - last_report >= 5:
            last_report = now
            log("%.1fs: live nodes per table min %d max %d"
                % (now - start, min(live), max(live)))
            if handle is not None and args.leech:
                st = handle.status()
                log("leech %s %.1f%% peers %d"
                    % (st.state, st.progress * 100, st.num_peers))

        if stop["sig"] is not None:
            log("signal %d, stopping" % stop["sig"])
            rc = 0
            break
        if deadline is not None and now >= deadline:
            log("timeout after %.1fs" % args.timeout)
            rc = 1 if args.leech and not done else 0
            break
        sessions[0].wait_for_alert(100)

    for ses in sessions:
        ses.pause()
    del handle
    del sessions
    return rc


if __name__ == "__main__":
    sys.exit(main())
